/**
 * The encoder pool's worker: compresses (or decides not to) and seals chunk records, and keeps the
 * running MD5 of streams fed to it (messages of one stream arrive, and are handled, in order).
 * It holds only the data-encryption subkey, passed in `workerData`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createHash, type Hash } from "node:crypto";
import { AeadCipher } from "../codec/aead.js";
import { compressChunk, decompressChunk } from "../codec/compress.js";
import { recordAad, RECORD_KIND_CHUNK, type RecordKind } from "./format.js";
import type { EncodeReply, EncodeRequest, EncoderWorkerData } from "./encoder.js";

const data = workerData as EncoderWorkerData;
const cipher = new AeadCipher(data.key);
const port = parentPort!;

const digests = new Map<number, Hash>();

function md5Of(stream: number): Hash {
  let h = digests.get(stream);
  if (h === undefined) {
    h = createHash("md5");
    digests.set(stream, h);
  }
  return h;
}

/**
 * The bytes as an ArrayBuffer to transfer: their own when they span all of it (large results
 * do), else a copy (a small one may be a slice of Node's shared pool, or a view into another).
 */
function transferable(bytes: Uint8Array): ArrayBuffer {
  const b = bytes.buffer;
  if (b instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === b.byteLength) return b;
  return Uint8Array.from(bytes).buffer;
}

port.on("message", (req: EncodeRequest) => {
  try {
    switch (req.type) {
      case "encode": {
        const plain = new Uint8Array(req.data);
        if (req.md5Stream !== undefined) md5Of(req.md5Stream).update(plain);
        const c = compressChunk(plain, data.level);
        const sealed = cipher.seal(c.bytes, recordAad(RECORD_KIND_CHUNK, c.method, new Uint8Array(req.chunkId)));
        const out = transferable(sealed);
        const reply: EncodeReply = { seq: req.seq, method: c.method, sealed: out };
        port.postMessage(reply, [out]);
        return;
      }
      case "open": {
        // Errors are reported by message only: the caller opens the record again itself to throw
        // the precise error (see RecordEncoder#openRecord).
        const stored = cipher.open(new Uint8Array(req.sealed), recordAad(req.kind as RecordKind, req.method, new Uint8Array(req.id)));
        const out = transferable(decompressChunk(req.method, stored, req.rawLength));
        port.postMessage({ seq: req.seq, plain: out } satisfies EncodeReply, [out]);
        return;
      }
      case "md5": {
        md5Of(req.stream).update(new Uint8Array(req.data));
        port.postMessage({ seq: req.seq, ok: true } satisfies EncodeReply);
        return;
      }
      case "md5-final": {
        const d = (digests.get(req.stream) ?? createHash("md5")).digest();
        digests.delete(req.stream);
        const out = new Uint8Array(d);
        port.postMessage({ seq: req.seq, digest: out.buffer } satisfies EncodeReply, [out.buffer]);
        return;
      }
      case "md5-abort":
        digests.delete(req.stream);
        port.postMessage({ seq: req.seq, ok: true } satisfies EncodeReply);
        return;
    }
  } catch (err) {
    const reply: EncodeReply = { seq: req.seq, error: (err as Error).message };
    port.postMessage(reply);
  }
});
