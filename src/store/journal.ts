/**
 * The metadata journal (docs/RECOVERY.md, DESIGN.md decision 10): every object-store transaction
 * that changes the namespace (buckets, versions, multipart uploads and parts) is also written as one
 * *journal entry*: the rows it put or deleted, in logical form, under a repository-wide sequence
 * number taken in the same transaction. The entry is sealed as a metadata record (pack record kind
 * 2) and travels in the packs of the cloud tier, so the bucket alone (with the key) is enough to
 * rebuild the namespace: replay the entries in sequence order into an empty metadata store.
 *
 * Entries are row-level ("version V is now this", "version S of key K is gone"), not operations:
 * replaying one needs no other state, so replay is deterministic and idempotent (a put overwrites,
 * a delete of a missing row does nothing) and an entry may be applied twice. Chunk records, pack
 * records, reference counts, counters and the outbox are not journaled: they are rebuilt from the
 * packs' own indexes and from the manifests.
 */
import { randomBytes } from "node:crypto";
import { StowageError } from "../errors.js";
import { compressChunk, decompressChunk } from "../codec/compress.js";
import type { BucketRecord, ManifestEntry, MetaTx, ObjectVersion, PartRecord, UploadRecord } from "../meta/types.js";

/** Plaintext of a journal record: magic, version byte, then UTF-8 JSON `{s, t, o}`. */
export const JOURNAL_MAGIC = "STWJ";
export const JOURNAL_VERSION = 1;

export type JournalOp =
  | { op: "bucket"; bucket: BucketRecord }
  | { op: "bucket-delete"; name: string }
  | { op: "version"; version: ObjectVersion }
  | { op: "version-delete"; bucket: string; key: string; sequence: number }
  | { op: "upload"; upload: UploadRecord }
  | { op: "upload-delete"; bucket: string; uploadId: string }
  | { op: "part"; part: PartRecord }
  | { op: "part-delete"; uploadId: string; partNumber: number };

export interface JournalEntry {
  /** Repository-wide sequence, taken in the transaction: replay order. */
  sequence: number;
  /** ms since the epoch, when the transaction ran. */
  time: number;
  ops: JournalOp[];
}

/**
 * Wraps `tx` so that its namespace writes are also recorded, in order, in the returned `ops`.
 * Reads and the other writes go straight to `tx`.
 */
export function recordingTx(tx: MetaTx): { tx: MetaTx; ops: JournalOp[] } {
  const ops: JournalOp[] = [];
  const own: Partial<MetaTx> = {
    putBucket: (b) => {
      tx.putBucket(b);
      ops.push({ op: "bucket", bucket: { ...b } });
    },
    deleteBucket: (name) => {
      tx.deleteBucket(name);
      ops.push({ op: "bucket-delete", name });
    },
    putVersion: (v) => {
      tx.putVersion(v);
      ops.push({ op: "version", version: v });
    },
    deleteVersion: (bucket, key, sequence) => {
      tx.deleteVersion(bucket, key, sequence);
      ops.push({ op: "version-delete", bucket, key, sequence });
    },
    putUpload: (u) => {
      tx.putUpload(u);
      ops.push({ op: "upload", upload: u });
    },
    deleteUpload: (bucket, uploadId) => {
      tx.deleteUpload(bucket, uploadId);
      ops.push({ op: "upload-delete", bucket, uploadId });
    },
    putPart: (p) => {
      tx.putPart(p);
      ops.push({ op: "part", part: p });
    },
    deletePart: (uploadId, partNumber) => {
      tx.deletePart(uploadId, partNumber);
      ops.push({ op: "part-delete", uploadId, partNumber });
    },
  };
  const proxy = new Proxy(tx, {
    get(target, prop): unknown {
      if (typeof prop === "string" && Object.prototype.hasOwnProperty.call(own, prop)) return own[prop as keyof MetaTx];
      const v: unknown = Reflect.get(target, prop);
      return typeof v === "function" ? (v as (...args: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { tx: proxy, ops };
}

/** Applies an entry's rows to `tx` (replay). Idempotent. */
export function applyEntry(tx: MetaTx, entry: JournalEntry): void {
  tx.observeSequence(entry.sequence);
  for (const o of entry.ops) {
    switch (o.op) {
      case "bucket":
        tx.putBucket(o.bucket);
        break;
      case "bucket-delete":
        tx.deleteBucket(o.name);
        break;
      case "version":
        tx.putVersion(o.version);
        break;
      case "version-delete":
        tx.deleteVersion(o.bucket, o.key, o.sequence);
        break;
      case "upload":
        tx.putUpload(o.upload);
        break;
      case "upload-delete":
        tx.deleteUpload(o.bucket, o.uploadId);
        break;
      case "part":
        tx.putPart(o.part);
        break;
      case "part-delete":
        tx.deletePart(o.uploadId, o.partNumber);
        break;
    }
  }
}

// ------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------

function manifestOut(m: readonly ManifestEntry[]): string {
  const b = Buffer.allocUnsafe(m.length * 40);
  m.forEach((e, i) => {
    e.chunkId.copy(b, i * 40);
    b.writeUInt32LE(e.offset, i * 40 + 32);
    b.writeUInt32LE(e.length, i * 40 + 36);
  });
  return b.toString("base64");
}

function manifestIn(s: unknown): ManifestEntry[] {
  if (typeof s !== "string") throw damaged("manifest is not a string");
  const b = Buffer.from(s, "base64");
  if (b.length % 40 !== 0) throw damaged("manifest length");
  const out: ManifestEntry[] = [];
  for (let i = 0; i < b.length; i += 40) out.push({ chunkId: Buffer.from(b.subarray(i, i + 32)), offset: b.readUInt32LE(i + 32), length: b.readUInt32LE(i + 36) });
  return out;
}

function damaged(what: string): StowageError {
  return new StowageError("STOWAGE_INTEGRITY", `journal record: ${what}`);
}

type Wire = Record<string, unknown>;

function opOut(o: JournalOp): Wire {
  switch (o.op) {
    case "version":
      return { op: o.op, version: { ...o.version, manifest: manifestOut(o.version.manifest) } };
    case "part":
      return { op: o.op, part: { ...o.part, manifest: manifestOut(o.part.manifest) } };
    default:
      return o as unknown as Wire;
  }
}

const OPS = new Set(["bucket", "bucket-delete", "version", "version-delete", "upload", "upload-delete", "part", "part-delete"]);

function obj(v: unknown, what: string): Wire {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw damaged(`${what} is not an object`);
  return v as Wire;
}

function opIn(raw: unknown): JournalOp {
  const o = obj(raw, "op");
  if (typeof o.op !== "string" || !OPS.has(o.op)) throw new StowageError("STOWAGE_FORMAT_VERSION", `journal record: unknown operation ${JSON.stringify(o.op)} (written by a newer build)`);
  if (o.op === "version") {
    const v = obj(o.version, "version");
    return { op: "version", version: { ...(v as unknown as ObjectVersion), manifest: manifestIn(v.manifest) } };
  }
  if (o.op === "part") {
    const p = obj(o.part, "part");
    return { op: "part", part: { ...(p as unknown as PartRecord), manifest: manifestIn(p.manifest) } };
  }
  // The remaining shapes hold only names, numbers and plain records; the metadata store checks them when applied.
  return o as unknown as JournalOp;
}

/** The plaintext of an entry's record. */
export function encodeEntry(entry: JournalEntry): Buffer {
  const body = Buffer.from(JSON.stringify({ s: entry.sequence, t: entry.time, o: entry.ops.map(opOut) }), "utf8");
  return Buffer.concat([Buffer.from(JOURNAL_MAGIC, "ascii"), Buffer.from([JOURNAL_VERSION]), body]);
}

export function decodeEntry(plain: Uint8Array): JournalEntry {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (b.length < 5 || b.toString("ascii", 0, 4) !== JOURNAL_MAGIC) throw damaged("bad magic");
  if (b[4] !== JOURNAL_VERSION) throw new StowageError("STOWAGE_FORMAT_VERSION", `journal record version ${b[4]} is newer than this build reads (${JOURNAL_VERSION})`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(b.toString("utf8", 5));
  } catch {
    throw damaged("body is not JSON");
  }
  const o = obj(parsed, "entry");
  if (typeof o.s !== "number" || !Number.isSafeInteger(o.s) || typeof o.t !== "number" || !Array.isArray(o.o)) throw damaged("bad entry fields");
  return { sequence: o.s, time: o.t, ops: o.o.map(opIn) };
}

/** The 32-byte record id of an entry: `"STWJ"`, 4 zero bytes, the sequence (u64 BE), 16 random bytes. */
export function entryRecordId(sequence: number): Buffer {
  const id = Buffer.alloc(32);
  id.write(JOURNAL_MAGIC, 0, "ascii");
  id.writeBigUInt64BE(BigInt(sequence), 8);
  randomBytes(16).copy(id, 16);
  return id;
}

/** The sequence in a journal record id, or undefined when the id is not one. */
export function sequenceOfRecordId(id: Uint8Array): number | undefined {
  const b = Buffer.from(id.buffer, id.byteOffset, id.byteLength);
  if (b.length !== 32 || b.toString("ascii", 0, 4) !== JOURNAL_MAGIC) return undefined;
  return Number(b.readBigUInt64BE(8));
}

/** The record the packer takes for an entry (compressed when it pays). */
export function journalRecord(entry: JournalEntry, level?: number): { kind: 2; chunkId: Buffer; method: number; rawLength: number; stored: Uint8Array } {
  const plain = encodeEntry(entry);
  const z = compressChunk(plain, level === undefined ? {} : { level });
  return { kind: 2, chunkId: entryRecordId(entry.sequence), method: z.method, rawLength: plain.length, stored: z.bytes };
}

/** Opens a journal record's plaintext (already authenticated and decompressed by openRecord). */
export function readJournalRecord(method: number, stored: Uint8Array, rawLength: number): JournalEntry {
  return decodeEntry(decompressChunk(method, stored, rawLength));
}
