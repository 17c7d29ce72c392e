/**
 * The metadata journal (docs/RECOVERY.md, DESIGN.md decision 10): every object-store transaction
 * that changes the namespace (buckets, versions, multipart uploads and parts) is also written as one
 * *journal entry*: the rows it put or deleted, in logical form, under a dense journal index taken in
 * the same transaction (1, 2, 3, ... in commit order). The entry is sealed as a metadata record (pack
 * record kind 2) and travels in the packs of the cloud tier (journal-shipper.ts), so the bucket
 * alone (with the key) is enough to rebuild the namespace: replay the entries in index order into an
 * empty metadata store, up to the first missing index.
 *
 * A plain put into a `cloud` bucket also writes a *put intent* — the version it is about to commit,
 * with a sequence reserved in advance — into the same packer flush as its data, before its
 * transaction; it is acknowledged once that flush and its local commit are done, and its entry
 * (which names the intent as resolved) follows in a later pack without the put waiting. Recovery
 * applies the intents no replayed entry resolved. So a small put costs one PUT, not two.
 *
 * Entries are row-level ("version V is now this", "version S of key K is gone"), not operations:
 * replaying one needs no other state, so replay is deterministic and idempotent (a put overwrites,
 * a delete of a missing row does nothing) and an entry may be applied twice. Chunk records, pack
 * records, reference counts, counters and the outbox are not journaled: they are rebuilt from the
 * packs' own indexes and from the manifests.
 */
import { StowageError } from "../errors.js";
import { compressChunk } from "../codec/compress.js";
import type { BucketRecord, ManifestEntry, MetaTx, ObjectVersion, PartRecord, UploadRecord } from "../meta/types.js";
import { fillSecureRandom } from "../util/random.js";

/** Plaintext of a journal entry record: magic, version byte, then UTF-8 JSON `{s, t, o, i?}`. */
export const JOURNAL_MAGIC = "STWJ";
/** Plaintext of an intent record: magic, version byte, then UTF-8 JSON `{s, t, v}`. */
export const INTENT_MAGIC = "STWI";
/** Version 2: dense journal indexes and put intents (version 1, sequence-ordered, was experimental). */
export const JOURNAL_VERSION = 2;

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
  /**
   * The journal index: dense (1, 2, 3, ...) and in commit order, taken in the transaction
   * (MetaTx.appendJournal). Replay applies entries in index order and stops at the first gap.
   */
  index: number;
  /** ms since the epoch, when the transaction ran. */
  time: number;
  ops: JournalOp[];
  /** Hex ids of the put intents this transaction resolved (committed, or cancelled when `ops` is empty). */
  intents?: string[];
  /**
   * Written by `stowage recover` (shipped when the recovered repository first opens): the recovered
   * history continues after index `recovered`, skipping the entries between it and this one (left
   * by the lost gateway after a gap; never acknowledged). Its ops are the rows recovery applied
   * from unresolved intents; its intents, every intent recovery judged.
   */
  recovered?: number;
  /**
   * Written when a store opens: every put intent with a sequence below this one that no entry
   * before this one resolved belongs to a put that never committed (its gateway stopped first):
   * void. (The store moves its sequence counter past anything the last run may have reserved.)
   */
  restart?: number;
}

/**
 * A put intent: the version a plain put will commit, sealed into the same pack flush as the put's
 * data *before* its transaction runs, so that the put is acknowledged without waiting for its
 * journal entry (which follows lazily). Recovery applies an intent that no replayed entry resolved.
 */
export interface PutIntent {
  /** The 32-byte record id (hex): `"STWI"`, 4 zero bytes, the version sequence (u64 BE), 16 random bytes. */
  id: string;
  /**
   * The version as the put will commit it (its sequence reserved before the transaction). Its
   * `versionId` is the one it gets if its bucket is versioned when it commits ("null" otherwise).
   */
  version: ObjectVersion;
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
  // Methods are bound once (a transaction calls them thousands of times in a large rename).
  const bound = new Map<PropertyKey, unknown>();
  const proxy = new Proxy(tx, {
    get(target, prop): unknown {
      if (typeof prop === "string" && Object.prototype.hasOwnProperty.call(own, prop)) return own[prop as keyof MetaTx];
      const known = bound.get(prop);
      if (known !== undefined) return known;
      const v: unknown = Reflect.get(target, prop);
      if (typeof v !== "function") return v;
      const f = (v as (...args: unknown[]) => unknown).bind(target);
      bound.set(prop, f);
      return f;
    },
  });
  return { tx: proxy, ops };
}

/** Applies an entry's rows to `tx` (replay). Idempotent. */
export function applyEntry(tx: MetaTx, entry: JournalEntry): void {
  tx.observeJournal(entry.index);
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

export type Wire = Record<string, unknown>;

export function opOut(o: JournalOp): Wire {
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

export function opIn(raw: unknown): JournalOp {
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

function header(magic: string): Buffer {
  return Buffer.concat([Buffer.from(magic, "ascii"), Buffer.from([JOURNAL_VERSION])]);
}

/** The plaintext of an entry's record. */
export function encodeEntry(entry: JournalEntry): Buffer {
  const wire: Wire = { s: entry.index, t: entry.time, o: entry.ops.map(opOut) };
  if (entry.intents !== undefined && entry.intents.length > 0) wire.i = entry.intents;
  if (entry.recovered !== undefined) wire.r = entry.recovered;
  if (entry.restart !== undefined) wire.x = entry.restart;
  return Buffer.concat([header(JOURNAL_MAGIC), Buffer.from(JSON.stringify(wire), "utf8")]);
}

/** The plaintext of an intent's record. */
export function encodeIntent(intent: PutIntent): Buffer {
  const v = intent.version;
  return Buffer.concat([header(INTENT_MAGIC), Buffer.from(JSON.stringify({ s: v.sequence, t: v.lastModified, v: { ...v, manifest: manifestOut(v.manifest) } }), "utf8")]);
}

function body(plain: Uint8Array, magic: string): Wire {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (b.length < 5 || b.toString("ascii", 0, 4) !== magic) throw damaged("bad magic");
  if (b[4] !== JOURNAL_VERSION) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      b[4]! < JOURNAL_VERSION
        ? `journal record version ${b[4]} was written by an experimental build and is not read any more`
        : `journal record version ${b[4]} is newer than this build reads (${JOURNAL_VERSION})`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(b.toString("utf8", 5));
  } catch {
    throw damaged("body is not JSON");
  }
  return obj(parsed, "entry");
}

export function decodeEntry(plain: Uint8Array): JournalEntry {
  const o = body(plain, JOURNAL_MAGIC);
  if (typeof o.s !== "number" || !Number.isSafeInteger(o.s) || o.s < 1 || typeof o.t !== "number" || !Array.isArray(o.o)) throw damaged("bad entry fields");
  const entry: JournalEntry = { index: o.s, time: o.t, ops: o.o.map(opIn) };
  if (o.i !== undefined) {
    if (!Array.isArray(o.i) || !o.i.every((x) => typeof x === "string" && /^[0-9a-f]{64}$/.test(x))) throw damaged("bad intent list");
    entry.intents = o.i as string[];
  }
  if (o.r !== undefined) {
    if (typeof o.r !== "number" || !Number.isSafeInteger(o.r) || o.r < 0 || o.r >= entry.index) throw damaged("bad recovery mark");
    entry.recovered = o.r;
  }
  if (o.x !== undefined) {
    if (typeof o.x !== "number" || !Number.isSafeInteger(o.x) || o.x < 0) throw damaged("bad restart mark");
    entry.restart = o.x;
  }
  return entry;
}

export function decodeIntent(plain: Uint8Array, id: Uint8Array): PutIntent {
  const o = body(plain, INTENT_MAGIC);
  const v = obj(o.v, "version");
  if (typeof v.bucket !== "string" || typeof v.key !== "string" || typeof v.sequence !== "number" || v.sequence !== o.s || typeof v.size !== "number") throw damaged("bad intent fields");
  return { id: Buffer.from(id).toString("hex"), version: { ...(v as unknown as ObjectVersion), manifest: manifestIn(v.manifest) } };
}

function recordId(magic: string, n: number): Buffer {
  const id = Buffer.alloc(32);
  id.write(magic, 0, "ascii");
  id.writeBigUInt64BE(BigInt(n), 8);
  fillSecureRandom(id, 16, 16);
  return id;
}

function numberOf(id: Uint8Array, magic: string): number | undefined {
  const b = Buffer.from(id.buffer, id.byteOffset, id.byteLength);
  if (b.length !== 32 || b.toString("ascii", 0, 4) !== magic) return undefined;
  return Number(b.readBigUInt64BE(8));
}

/** The 32-byte record id of an entry: `"STWJ"`, 4 zero bytes, the index (u64 BE), 16 random bytes. */
export function entryRecordId(index: number): Buffer {
  return recordId(JOURNAL_MAGIC, index);
}

/** A new intent id for a version with this sequence. */
export function intentRecordId(sequence: number): Buffer {
  return recordId(INTENT_MAGIC, sequence);
}

/** The journal index in an entry record id, or undefined when the id is not one. */
export function indexOfRecordId(id: Uint8Array): number | undefined {
  return numberOf(id, JOURNAL_MAGIC);
}

/** The version sequence in an intent record id, or undefined when the id is not one. */
export function sequenceOfIntentId(id: Uint8Array): number | undefined {
  return numberOf(id, INTENT_MAGIC);
}

/** True when a metadata record id names a put intent. */
export function isIntentRecordId(id: Uint8Array): boolean {
  return numberOf(id, INTENT_MAGIC) !== undefined;
}

export interface MetadataRecordInput {
  kind: 2;
  chunkId: Buffer;
  method: number;
  rawLength: number;
  stored: Uint8Array;
}

function sealable(id: Buffer, plain: Buffer, level: number | undefined): MetadataRecordInput {
  const z = compressChunk(plain, level === undefined ? {} : { level });
  return { kind: 2, chunkId: id, method: z.method, rawLength: plain.length, stored: z.bytes };
}

/** The record the packer takes for an entry's plaintext (compressed when it pays). */
export function journalRecord(index: number, plain: Buffer, level?: number): MetadataRecordInput {
  return sealable(entryRecordId(index), plain, level);
}

/** The record the packer takes for an intent (its id is the intent's). */
export function intentRecord(intent: PutIntent, level?: number): MetadataRecordInput {
  return sealable(Buffer.from(intent.id, "hex"), encodeIntent(intent), level);
}

/** Decodes a metadata record's plaintext (authenticated and decompressed by openRecord): an entry or an intent. */
export function decodeMetadataRecord(id: Uint8Array, plain: Uint8Array): { entry: JournalEntry } | { intent: PutIntent } {
  if (isIntentRecordId(id)) return { intent: decodeIntent(plain, id) };
  return { entry: decodeEntry(plain) };
}
