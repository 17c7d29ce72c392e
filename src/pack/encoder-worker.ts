/**
 * The encoder pool's worker: compresses (or decides not to) and seals one chunk record per message.
 * It holds only the data-encryption subkey, passed in `workerData`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { AeadCipher } from "../codec/aead.js";
import { compressChunk } from "../codec/compress.js";
import { recordAad, RECORD_KIND_CHUNK } from "./format.js";
import type { EncodeReply, EncodeRequest, EncoderWorkerData } from "./encoder.js";

const data = workerData as EncoderWorkerData;
const cipher = new AeadCipher(data.key);
const port = parentPort!;

port.on("message", (req: EncodeRequest) => {
  try {
    const plain = new Uint8Array(req.data);
    const c = compressChunk(plain, data.level);
    const sealed = cipher.seal(c.bytes, recordAad(RECORD_KIND_CHUNK, c.method, new Uint8Array(req.chunkId)));
    const out = new Uint8Array(sealed.length);
    out.set(sealed);
    const reply: EncodeReply = { seq: req.seq, method: c.method, sealed: out.buffer };
    port.postMessage(reply, [out.buffer]);
  } catch (err) {
    const reply: EncodeReply = { seq: req.seq, error: (err as Error).message };
    port.postMessage(reply);
  }
});
