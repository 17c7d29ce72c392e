/**
 * Metadata checkpoints (docs/RECOVERY.md): a sealed snapshot of the whole namespace (buckets,
 * versions with manifests, multipart uploads and parts) as of one journal index, uploaded to the
 * cloud tier as `checkpoints/<index, 16 hex>-<8 random hex>`. Recovery starts from the newest
 * readable checkpoint and replays only the journal after it; gc drops the journal records the
 * oldest kept checkpoint covers (see coveredBy), and old checkpoints beyond the newest
 * KEEP_CHECKPOINTS.
 *
 * Blob layout (docs/FORMATS.md, "Checkpoints"): a plaintext header — ascii "STWC", version byte 1,
 * u64 BE journal index, u64 BE time (ms), u64 BE intent floor, u32 BE frame count — then frames,
 * each a u32 BE length and an AEAD-sealed payload (metadata-encryption subkey; AAD: "STWC" ‖ index ‖
 * frame number ‖ frame count, so frames cannot be reordered, dropped or moved between checkpoints).
 * Frame 0: JSON `{resolved: [intent id hex...]}`. Frames 1..: the zstd-compressed JSON-lines
 * namespace rows (journal ops), cut into pieces of at most FRAME_BYTES.
 */
import { randomBytes } from "node:crypto";
import { aeadCipher } from "../codec/aead.js";
import { compressChunk, decompressChunk } from "../codec/compress.js";
import type { RepositoryKeys } from "../codec/keys.js";
import type { BlobBackend } from "../backend/backend.js";
import { StowageError, isStowageError } from "../errors.js";
import type { MetaReader } from "../meta/types.js";
import { indexOfRecordId, opIn, opOut, sequenceOfIntentId, type JournalOp } from "./journal.js";

export const CHECKPOINT_PREFIX = "checkpoints/";
export const CHECKPOINT_MAGIC = "STWC";
export const CHECKPOINT_VERSION = 1;
/** Checkpoints gc keeps (the newest ones); the journal records the oldest of them covers are dropped. */
export const KEEP_CHECKPOINTS = 2;
const HEADER_BYTES = 4 + 1 + 8 + 8 + 8 + 4;
const FRAME_BYTES = 4 * 1024 * 1024;

export interface CheckpointHeader {
  key: string;
  /** Every journal entry up to this index is reflected. */
  index: number;
  time: number;
  /** Intents with a sequence below this were resolved (or void) by the entries up to `index`. */
  intentFloor: number;
}

export interface Checkpoint extends CheckpointHeader {
  /** Intents at or above the floor that entries up to `index` resolved. */
  resolved: string[];
  ops: JournalOp[];
}

function damaged(key: string, what: string): StowageError {
  return new StowageError("STOWAGE_INTEGRITY", `checkpoint ${key}: ${what}`);
}

function aad(index: number, frame: number, frames: number): Buffer {
  const b = Buffer.alloc(4 + 8 + 4 + 4);
  b.write(CHECKPOINT_MAGIC, 0, "ascii");
  b.writeBigUInt64BE(BigInt(index), 4);
  b.writeUInt32BE(frame, 12);
  b.writeUInt32BE(frames, 16);
  return b;
}

/** The blob key of a new checkpoint at `index`. */
export function checkpointKey(index: number): string {
  return `${CHECKPOINT_PREFIX}${index.toString(16).padStart(16, "0")}-${randomBytes(4).toString("hex")}`;
}

/** The journal index in a checkpoint key, or undefined when the key is not one. */
export function indexOfCheckpointKey(key: string): number | undefined {
  const m = /^checkpoints\/([0-9a-f]{16})-[0-9a-f]{8}$/.exec(key);
  return m === null ? undefined : parseInt(m[1]!, 16);
}

/** Reads the namespace rows of `r` as journal ops (buckets first, then versions, uploads, parts). */
export async function namespaceOps(r: MetaReader): Promise<JournalOp[]> {
  const ops: JournalOp[] = [];
  const buckets = await r.listBuckets();
  for (const b of buckets) ops.push({ op: "bucket", bucket: b });
  for (const b of buckets) {
    for await (const h of r.listVersions(b.name)) {
      const v = await r.getVersion(b.name, h.key, h.versionId);
      if (v !== undefined) ops.push({ op: "version", version: v });
    }
    for await (const u of r.listUploads(b.name)) {
      ops.push({ op: "upload", upload: u });
      for await (const p of r.listParts(u.uploadId)) ops.push({ op: "part", part: p });
    }
  }
  return ops;
}

/** The blob of a checkpoint (key chosen by the caller with checkpointKey). */
export function encodeCheckpoint(keys: RepositoryKeys, c: Omit<Checkpoint, "key">, level?: number): Buffer[] {
  const lines = c.ops.map((o) => JSON.stringify(opOut(o))).join("\n");
  const z = compressChunk(Buffer.from(lines, "utf8"), level === undefined ? {} : { level });
  const body = Buffer.concat([Buffer.from([z.method]), Buffer.alloc(8), z.bytes]);
  body.writeBigUInt64BE(BigInt(lines.length === 0 ? 0 : Buffer.byteLength(lines, "utf8")), 1);
  const pieces: Buffer[] = [Buffer.from(JSON.stringify({ resolved: c.resolved }), "utf8")];
  for (let off = 0; off < body.length; off += FRAME_BYTES) pieces.push(body.subarray(off, off + FRAME_BYTES));
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(CHECKPOINT_MAGIC, 0, "ascii");
  header[4] = CHECKPOINT_VERSION;
  header.writeBigUInt64BE(BigInt(c.index), 5);
  header.writeBigUInt64BE(BigInt(c.time), 13);
  header.writeBigUInt64BE(BigInt(c.intentFloor), 21);
  header.writeUInt32BE(pieces.length, 29);
  const cipher = aeadCipher(keys, "metadata-encryption");
  const out: Buffer[] = [header];
  pieces.forEach((p, i) => {
    const sealed = cipher.seal(p, aad(c.index, i, pieces.length));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(sealed.length);
    out.push(len, Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength));
  });
  return out;
}

function parseHeader(key: string, b: Buffer): CheckpointHeader & { frames: number } {
  if (b.length < HEADER_BYTES || b.toString("ascii", 0, 4) !== CHECKPOINT_MAGIC) throw damaged(key, "bad magic or truncated header");
  if (b[4] !== CHECKPOINT_VERSION) throw new StowageError("STOWAGE_FORMAT_VERSION", `checkpoint ${key} has version ${b[4]}; this build reads ${CHECKPOINT_VERSION}`);
  const index = Number(b.readBigUInt64BE(5));
  if (indexOfCheckpointKey(key) !== index) throw damaged(key, `its header names journal index ${index}`);
  return { key, index, time: Number(b.readBigUInt64BE(13)), intentFloor: Number(b.readBigUInt64BE(21)), frames: b.readUInt32BE(29) };
}

/** Reads and authenticates a whole checkpoint. Damage is STOWAGE_INTEGRITY naming the key. */
export async function readCheckpoint(backend: BlobBackend, keys: RepositoryKeys, key: string): Promise<Checkpoint> {
  const blob = await backend.get(key);
  const h = parseHeader(key, blob);
  const cipher = aeadCipher(keys, "metadata-encryption");
  const frames: Buffer[] = [];
  let pos = HEADER_BYTES;
  for (let i = 0; i < h.frames; i++) {
    if (pos + 4 > blob.length) throw damaged(key, `truncated at frame ${i} of ${h.frames}`);
    const len = blob.readUInt32BE(pos);
    if (pos + 4 + len > blob.length) throw damaged(key, `truncated in frame ${i} of ${h.frames}`);
    let plain: Uint8Array;
    try {
      plain = cipher.open(blob.subarray(pos + 4, pos + 4 + len), aad(h.index, i, h.frames));
    } catch {
      throw damaged(key, `frame ${i} fails authentication (corrupt, or another repository's key)`);
    }
    frames.push(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength));
    pos += 4 + len;
  }
  if (pos !== blob.length || frames.length < 1) throw damaged(key, "trailing bytes or no frames");
  let resolved: string[];
  let ops: JournalOp[];
  try {
    const f0 = JSON.parse(frames[0]!.toString("utf8")) as { resolved?: unknown };
    if (!Array.isArray(f0.resolved) || !f0.resolved.every((x) => typeof x === "string")) throw new Error("resolved");
    resolved = f0.resolved as string[];
    const body = Buffer.concat(frames.slice(1));
    const rawLength = Number(body.readBigUInt64BE(1));
    const text = rawLength === 0 ? "" : Buffer.from(decompressChunk(body[0]!, body.subarray(9), rawLength)).toString("utf8");
    ops = text === "" ? [] : text.split("\n").map((l) => opIn(JSON.parse(l)));
  } catch (err) {
    if (isStowageError(err, "STOWAGE_FORMAT_VERSION")) throw err;
    throw damaged(key, `body does not decode (${(err as Error).message})`);
  }
  return { key, index: h.index, time: h.time, intentFloor: h.intentFloor, resolved, ops };
}

/** The checkpoints in the bucket by key (index order, oldest first); headers unread. */
export async function listCheckpoints(backend: BlobBackend): Promise<Array<{ key: string; index: number; size: number }>> {
  const out: Array<{ key: string; index: number; size: number }> = [];
  for await (const b of backend.list(CHECKPOINT_PREFIX)) {
    const index = indexOfCheckpointKey(b.key);
    if (index !== undefined) out.push({ key: b.key, index, size: b.size });
  }
  return out.sort((a, b) => a.index - b.index || (a.key < b.key ? -1 : 1));
}

/**
 * What a checkpoint lets gc drop: journal entries up to its index, and intents below its floor or
 * resolved by those entries. (gc uses the oldest checkpoint it keeps.)
 */
export interface Coverage {
  index: number;
  intentFloor: number;
  resolved: ReadonlySet<string>;
}

export function coverageOf(c: Checkpoint): Coverage {
  return { index: c.index, intentFloor: c.intentFloor, resolved: new Set(c.resolved) };
}

/** True when a journal record (by its id) is no longer needed once `c` exists. */
export function isCovered(c: Coverage, id: Uint8Array): boolean {
  const index = indexOfRecordId(id);
  if (index !== undefined) return index <= c.index;
  const seq = sequenceOfIntentId(id);
  if (seq === undefined) return false;
  return seq < c.intentFloor || c.resolved.has(Buffer.from(id).toString("hex"));
}
