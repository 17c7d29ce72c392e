/**
 * The embedded metadata store: {@link MetadataStore} on Stowage's own LSM-tree kv store.
 *
 * Every record is one kv row (a version is two: a small header row for listings and a manifest
 * row). The first key byte names the record family; the layout and the value encodings are in
 * docs/FORMATS.md, "Metadata (object store) records". In short:
 *
 *   B bucket                              bucket record         0x01|0x02 ‖ JSON
 *   V bucket 00 key 00 be64(MAX - seq)    version header        0x01 ‖ JSON
 *   M bucket 00 key 00 be64(MAX - seq)    version manifest      0x01 ‖ binary manifest
 *   X bucket 00 key 00 versionId 00 be64  versionId index       0x01
 *   C chunkId(32)                         chunk record          0x01 ‖ binary
 *   P packId(16)                          pack record           0x01|0x02 ‖ JSON
 *   U bucket 00 key 00 uploadId           upload record         0x01 ‖ JSON
 *   W bucket 00 uploadId                  upload → key index    0x01 ‖ key
 *   R uploadId 00 be32(partNumber)        part record           0x01 ‖ binary
 *   O be64(n)                             outbox event n        0x01 ‖ JSON
 *   J be64(n)                             journal entry n,      0x01 ‖ entry bytes
 *                                         not yet shipped
 *   S "format" | "sequence" | "counters" | "outbox" | "journal"   singletons
 *
 * Versions of one key are contiguous and newest first, so the current version is the first row
 * of its key, and `listCurrent` moves to the next key with one cursor re-seek (to
 * `V bucket 00 key 01`), never reading a key's older versions.
 *
 * Transactions are serialized by a mutex. A transaction buffers its writes in an ordered overlay
 * (row key → value or tombstone); its point reads merge the overlay over the committed rows, its
 * listings read committed rows without the overlay. Commit is one synced `kv.batch`, pipelined:
 * the mutex is released once the batch is applied, and the next transaction reads the rows of
 * those before it even before they are durable (`pending` reads); readers outside transactions
 * see durable rows only (see `transaction`).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { StowageError } from "../errors.js";
import { EVENT_KINDS, type EventKind, type EventValue, type StowageEvent } from "../events/types.js";
import { KIND_VALUE, MAX_SEQUENCE, TRAILER_SIZE } from "../kv/format.js";
import { Memtable } from "../kv/memtable.js";
import { openKv, type BatchOperation, type Kv, type KvCursor, type KvOptions, type KvStats, type Snapshot } from "../kv/index.js";
import type {
  BucketRecord,
  ChunkRecord,
  Counters,
  ListOptions,
  Durability,
  ManifestEntry,
  MetaTx,
  MetadataStore,
  ObjectVersion,
  OutboxEvent,
  PackRecord,
  PackState,
  PartRecord,
  UploadRecord,
  VersionHeader,
  VersionListOptions,
  Versioning,
} from "./types.js";

// ---------------------------------------------------------------------------------------------
// Record families, format constants

/** First key byte of each record family (*persisted*). */
const F_BUCKET = 0x42; // B
const F_CHUNK = 0x43; // C
const F_JOURNAL = 0x4a; // J
const F_MANIFEST = 0x4d; // M
const F_OUTBOX = 0x4f; // O
const F_PACK = 0x50; // P
const F_PART = 0x52; // R
const F_SINGLETON = 0x53; // S
const F_UPLOAD = 0x55; // U
const F_VERSION = 0x56; // V
const F_UPLOAD_BY_ID = 0x57; // W
const F_VERSION_BY_ID = 0x58; // X

/** The format byte every value starts with. */
const RECORD_V1 = 1;
/**
 * Bucket and pack records using a field an older build would misread (a `local`-durability bucket,
 * a pack not yet uploaded) are written with this format byte, so that such a build refuses them
 * (STOWAGE_FORMAT_VERSION) rather than treating write-back data as durable in the cloud.
 */
const RECORD_V2 = 2;
/** Pack records of packs holding metadata (journal) records (field `j`); see docs/RECOVERY.md. */
const RECORD_V3 = 3;
/** Value of the `S format` row: version byte, then this magic. */
const FORMAT_MAGIC = "stowage/meta";

const SEQ_MAX = Number.MAX_SAFE_INTEGER;
const TWO_32 = 2 ** 32;
const CHUNK_ID_BYTES = 32;
const PACK_ID_BYTES = 16;
const EMPTY_RECORD = Buffer.of(RECORD_V1);

const KEY_FORMAT = Buffer.from([F_SINGLETON, ...Buffer.from("format")]);
const KEY_SEQUENCE = Buffer.from([F_SINGLETON, ...Buffer.from("sequence")]);
const KEY_COUNTERS = Buffer.from([F_SINGLETON, ...Buffer.from("counters")]);
const KEY_OUTBOX = Buffer.from([F_SINGLETON, ...Buffer.from("outbox")]);
const KEY_JOURNAL = Buffer.from([F_SINGLETON, ...Buffer.from("journal")]);
const OUTBOX_ID = /^outbox-(0|[1-9][0-9]{0,15})$/;

const COUNTER_FIELDS = ["backendPuts", "backendBytesWritten", "plainPuts", "ingestedBytes"] as const;

type Row = [key: Buffer, value: Buffer];

// ---------------------------------------------------------------------------------------------
// Errors and argument checks

function corrupt(row: Uint8Array, what: string): StowageError {
  return new StowageError(
    "STOWAGE_KV_CORRUPTION",
    `metadata record ${Buffer.from(row).toString("hex")} cannot be decoded: ${what}`,
  );
}

function invalid(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", what);
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** UTF-8 bytes of a bucket name or object key; NUL and lone surrogates are refused. */
function nameBytes(s: string, what: string): Buffer {
  if (typeof s !== "string") throw new StowageError("STOWAGE_INVALID_NAME", `${what} must be a string`);
  if (s.includes("\0")) throw new StowageError("STOWAGE_INVALID_NAME", `${what} must not contain NUL: ${JSON.stringify(s)}`);
  if (LONE_SURROGATE.test(s)) {
    throw new StowageError("STOWAGE_INVALID_NAME", `${what} is not well-formed Unicode: ${JSON.stringify(s)}`);
  }
  return Buffer.from(s, "utf8");
}

/** UTF-8 bytes of a version id or upload id (no NUL). */
function idBytes(s: string, what: string): Buffer {
  if (typeof s !== "string" || s.includes("\0") || LONE_SURROGATE.test(s)) {
    throw invalid(`${what} must be a well-formed string without NUL: ${JSON.stringify(s)}`);
  }
  return Buffer.from(s, "utf8");
}

function checkUint(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0) throw invalid(`${what} must be a non-negative integer, got ${v}`);
  return v;
}

function chunkIdBytes(id: Uint8Array): Buffer {
  if (!(id instanceof Uint8Array) || id.length !== CHUNK_ID_BYTES) {
    throw invalid(`a chunk id is ${CHUNK_ID_BYTES} bytes`);
  }
  return Buffer.from(id.buffer, id.byteOffset, id.length);
}

function packIdBytes(id: string): Buffer {
  if (typeof id !== "string" || !/^[0-9a-f]{32}$/.test(id)) {
    throw invalid(`a pack id is 32 lowercase hex characters, got ${JSON.stringify(id)}`);
  }
  return Buffer.from(id, "hex");
}

// ---------------------------------------------------------------------------------------------
// Keys

function cat(...parts: (Uint8Array | number)[]): Buffer {
  let n = 0;
  for (const p of parts) n += typeof p === "number" ? 1 : p.length;
  const out = Buffer.allocUnsafe(n);
  let o = 0;
  for (const p of parts) {
    if (typeof p === "number") out[o++] = p;
    else {
      out.set(p, o);
      o += p.length;
    }
  }
  return out;
}

/** `family ‖ bucket ‖ 00` */
function bucketPrefix(family: number, bucket: string): Buffer {
  return cat(family, nameBytes(bucket, "bucket name"), 0);
}

/** `family ‖ bucket ‖ 00 ‖ key ‖ 00`: the prefix of every row of one object key. */
function objectPrefix(family: number, bucket: string, key: string): Buffer {
  return cat(family, nameBytes(bucket, "bucket name"), 0, nameBytes(key, "object key"), 0);
}

/** Big-endian `MAX_SAFE_INTEGER - seq`: newer versions sort first. */
function seqSuffix(seq: number): Buffer {
  const inv = SEQ_MAX - seq;
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(Math.floor(inv / TWO_32), 0);
  b.writeUInt32BE(inv >>> 0, 4);
  return b;
}

function seqFromSuffix(row: Buffer): number {
  const n = row.length;
  return SEQ_MAX - (row.readUInt32BE(n - 8) * TWO_32 + row.readUInt32BE(n - 4));
}

function checkSequence(seq: number): number {
  if (!Number.isSafeInteger(seq) || seq < 0) throw invalid(`a version sequence must be a non-negative integer, got ${seq}`);
  return seq;
}

/** The smallest key greater than every key having `p` as prefix, or undefined if none. */
function prefixEnd(p: Buffer): Buffer | undefined {
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i] !== 0xff) {
      const out = Buffer.from(p.subarray(0, i + 1));
      out[i]! += 1;
      return out;
    }
  }
  return undefined;
}

/**
 * Splits a version row key `F bucket 00 key 00 seq8` (after `skip` bytes of known prefix) into the
 * key bytes and the sequence.
 */
function splitVersionRow(row: Buffer, skip: number): { key: string; seq: number } {
  if (row.length < skip + 9 || row[row.length - 9] !== 0) throw corrupt(row, "malformed version key");
  return { key: row.toString("utf8", skip, row.length - 9), seq: seqFromSuffix(row) };
}

// ---------------------------------------------------------------------------------------------
// Values: binary helpers

class ByteWriter {
  private buf = Buffer.allocUnsafe(64);
  private pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(b: number): this {
    this.room(1);
    this.buf[this.pos++] = b;
    return this;
  }

  varint(v: number): this {
    this.room(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  raw(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  bytes(b: Uint8Array): this {
    return this.varint(b.length).raw(b);
  }

  done(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

class ByteReader {
  pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly row: Buffer,
  ) {}

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.buf.length) throw corrupt(this.row, "truncated varint");
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (result > SEQ_MAX) throw corrupt(this.row, "varint out of range");
        return result;
      }
      mul *= 128;
    }
    throw corrupt(this.row, "overlong varint");
  }

  raw(n: number): Buffer {
    if (this.pos + n > this.buf.length) throw corrupt(this.row, "truncated value");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  bytes(): Buffer {
    return this.raw(this.varint());
  }

  end(): void {
    if (this.pos !== this.buf.length) throw corrupt(this.row, `${this.buf.length - this.pos} trailing bytes`);
  }
}

/** The payload after the format byte; versions above `max` fail with STOWAGE_FORMAT_VERSION. */
function payload(row: Buffer, value: Buffer, max = RECORD_V1): Buffer {
  if (value.length === 0) throw corrupt(row, "empty value");
  if (value[0]! < RECORD_V1 || value[0]! > max) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      `metadata record ${row.toString("hex")} has format version ${value[0]}; this build reads version${max === RECORD_V1 ? "" : "s"} ${RECORD_V1}${max === RECORD_V1 ? "" : `..${max}`} of it`,
    );
  }
  return value.subarray(1);
}

// ---------------------------------------------------------------------------------------------
// Values: JSON helpers

type Json = Record<string, unknown>;

function jsonValue(o: Json, version = RECORD_V1): Buffer {
  return cat(version, Buffer.from(JSON.stringify(o), "utf8"));
}

function parseJson(row: Buffer, value: Buffer, maxVersion = RECORD_V1): Json {
  const body = payload(row, value, maxVersion);
  let o: unknown;
  try {
    o = JSON.parse(body.toString("utf8"));
  } catch {
    throw corrupt(row, "invalid JSON");
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw corrupt(row, "JSON value is not an object");
  return o as Json;
}

function jStr(o: Json, k: string, row: Buffer): string {
  const v = o[k];
  if (typeof v !== "string") throw corrupt(row, `field ${k} is not a string`);
  return v;
}

function jNum(o: Json, k: string, row: Buffer): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isFinite(v)) throw corrupt(row, `field ${k} is not a number`);
  return v;
}

function jBool(o: Json, k: string, row: Buffer): boolean {
  const v = o[k];
  if (typeof v !== "boolean") throw corrupt(row, `field ${k} is not a boolean`);
  return v;
}

function jStrMap(o: Json, k: string, row: Buffer): Record<string, string> {
  const v = o[k];
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw corrupt(row, `field ${k} is not an object`);
  const out: Record<string, string> = {};
  for (const [mk, mv] of Object.entries(v)) {
    if (typeof mv !== "string") throw corrupt(row, `field ${k}.${mk} is not a string`);
    // defineProperty: a key such as "__proto__" stays an ordinary own property.
    Object.defineProperty(out, mk, { value: mv, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Record codecs

function encodeBucket(b: BucketRecord): Buffer {
  if (b.durability === "local") return jsonValue({ c: b.created, v: b.versioning, d: "local" }, RECORD_V2);
  return jsonValue({ c: b.created, v: b.versioning });
}

const VERSIONINGS: readonly Versioning[] = ["unversioned", "enabled", "suspended"];
const DURABILITIES: readonly Durability[] = ["cloud", "local"];

function decodeBucket(name: string, row: Buffer, value: Buffer): BucketRecord {
  const o = parseJson(row, value, RECORD_V2);
  const versioning = jStr(o, "v", row);
  if (!(VERSIONINGS as readonly string[]).includes(versioning)) throw corrupt(row, `unknown versioning ${versioning}`);
  const b: BucketRecord = { name, created: jNum(o, "c", row), versioning: versioning as Versioning };
  if (o.d !== undefined) {
    const d = jStr(o, "d", row);
    if (d !== "local") throw corrupt(row, `unknown durability ${d}`);
    if (value[0] !== RECORD_V2) throw corrupt(row, "a local-durability bucket record must be format version 2");
    b.durability = "local";
  }
  return b;
}

function encodeHeader(v: VersionHeader): Buffer {
  const o: Json = {
    v: v.versionId,
    d: v.deleteMarker,
    s: v.size,
    e: v.etag,
    t: v.contentType,
    m: v.userMetadata,
    l: v.lastModified,
  };
  if (v.partSizes !== undefined) o.p = v.partSizes;
  if (v.headers !== undefined && Object.keys(v.headers).length > 0) o.h = v.headers;
  if (v.tags !== undefined && Object.keys(v.tags).length > 0) o.g = v.tags;
  if (v.checksum !== undefined) o.k = [v.checksum.algorithm, v.checksum.value];
  return jsonValue(o);
}

function decodeHeader(bucket: string, key: string, sequence: number, row: Buffer, value: Buffer): VersionHeader {
  const o = parseJson(row, value);
  const h: VersionHeader = {
    bucket,
    key,
    versionId: jStr(o, "v", row),
    sequence,
    deleteMarker: jBool(o, "d", row),
    size: jNum(o, "s", row),
    etag: jStr(o, "e", row),
    contentType: jStr(o, "t", row),
    userMetadata: jStrMap(o, "m", row),
    lastModified: jNum(o, "l", row),
  };
  if (o.p !== undefined) {
    const p = o.p;
    if (!Array.isArray(p) || !p.every((x) => typeof x === "number")) throw corrupt(row, "field p is not a number array");
    h.partSizes = p as number[];
  }
  if (o.h !== undefined) h.headers = jStrMap(o, "h", row);
  if (o.g !== undefined) h.tags = jStrMap(o, "g", row);
  if (o.k !== undefined) {
    const k = o.k;
    if (!Array.isArray(k) || k.length !== 2 || typeof k[0] !== "string" || typeof k[1] !== "string") throw corrupt(row, "field k is not a checksum pair");
    h.checksum = { algorithm: k[0], value: k[1] };
  }
  return h;
}

function writeManifest(w: ByteWriter, manifest: readonly ManifestEntry[]): ByteWriter {
  w.varint(manifest.length);
  for (const e of manifest) {
    w.raw(chunkIdBytes(e.chunkId));
    w.varint(checkUint(e.offset, "a manifest entry's offset"));
    w.varint(checkUint(e.length, "a manifest entry's length"));
  }
  return w;
}

function readManifest(r: ByteReader): ManifestEntry[] {
  const n = r.varint();
  const out: ManifestEntry[] = [];
  for (let i = 0; i < n; i++) {
    const chunkId = Buffer.from(r.raw(CHUNK_ID_BYTES));
    const offset = r.varint();
    const length = r.varint();
    out.push({ chunkId, offset, length });
  }
  return out;
}

function encodeManifest(manifest: readonly ManifestEntry[]): Buffer {
  return writeManifest(new ByteWriter().byte(RECORD_V1), manifest).done();
}

function decodeManifest(row: Buffer, value: Buffer): ManifestEntry[] {
  const r = new ByteReader(payload(row, value), row);
  const m = readManifest(r);
  r.end();
  return m;
}

function encodeChunk(c: ChunkRecord): Buffer {
  if (!Number.isInteger(c.method) || c.method < 0 || c.method > 255) throw invalid(`a compression method is a byte, got ${c.method}`);
  return new ByteWriter()
    .byte(RECORD_V1)
    .raw(packIdBytes(c.packId))
    .varint(checkUint(c.offset, "a chunk's offset"))
    .varint(checkUint(c.storedLength, "a chunk's stored length"))
    .varint(checkUint(c.rawLength, "a chunk's raw length"))
    .byte(c.method)
    .varint(checkUint(c.refs, "a chunk's reference count"))
    .done();
}

function decodeChunk(row: Buffer, value: Buffer): ChunkRecord {
  const r = new ByteReader(payload(row, value), row);
  const packId = r.raw(PACK_ID_BYTES).toString("hex");
  const offset = r.varint();
  const storedLength = r.varint();
  const rawLength = r.varint();
  const method = r.raw(1)[0]!;
  const refs = r.varint();
  r.end();
  return { packId, offset, storedLength, rawLength, method, refs };
}

const PACK_STATES: readonly PackState[] = ["live", "retired"];

function encodePack(p: PackRecord): Buffer {
  const o: Json = { b: p.blobKey, s: p.size, e: p.entries, c: p.created, st: p.state };
  if (p.retiredAt !== undefined) o.r = p.retiredAt;
  if (p.uploaded === false) o.u = false;
  if (p.journal !== undefined && p.journal > 0) {
    // Format 3: the pack holds metadata (journal) records, which a build that reads only 1 and 2
    // would not know to keep when it recycles the pack: it must refuse the record instead.
    o.j = checkUint(p.journal, "pack journal bytes");
    return jsonValue(o, RECORD_V3);
  }
  if (p.uploaded === false) return jsonValue(o, RECORD_V2);
  return jsonValue(o);
}

function decodePack(id: string, row: Buffer, value: Buffer): PackRecord {
  const o = parseJson(row, value, RECORD_V3);
  const state = jStr(o, "st", row);
  if (!(PACK_STATES as readonly string[]).includes(state)) throw corrupt(row, `unknown pack state ${state}`);
  const p: PackRecord = {
    id,
    blobKey: jStr(o, "b", row),
    size: jNum(o, "s", row),
    entries: jNum(o, "e", row),
    created: jNum(o, "c", row),
    state: state as PackState,
  };
  if (o.r !== undefined) p.retiredAt = jNum(o, "r", row);
  if (o.u !== undefined) {
    if (jBool(o, "u", row) || value[0] === RECORD_V1) throw corrupt(row, "field u must be false, in a format version 2 or 3 record");
    p.uploaded = false;
  }
  if (o.j !== undefined) {
    if (value[0] !== RECORD_V3) throw corrupt(row, "field j must be in a format version 3 record");
    p.journal = jNum(o, "j", row);
  } else if (value[0] === RECORD_V3) throw corrupt(row, "a format version 3 pack record without field j");
  return p;
}

function encodeOutboxEvent(e: OutboxEvent, time: number): Buffer {
  if (!(EVENT_KINDS as readonly string[]).includes(e.kind)) throw invalid(`unknown event kind ${JSON.stringify(e.kind)}`);
  if (typeof e.key !== "string") throw invalid("an event key must be a string");
  const d: Record<string, EventValue> = {};
  for (const [k, v] of Object.entries(e.data)) {
    if (typeof v !== "string" && typeof v !== "boolean" && !(typeof v === "number" && Number.isFinite(v))) {
      throw invalid(`event data field ${k} must be a string, a finite number or a boolean`);
    }
    Object.defineProperty(d, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return jsonValue({ k: e.kind, y: e.key, t: time, d });
}

function decodeOutboxEvent(n: number, row: Buffer, value: Buffer): StowageEvent {
  const o = parseJson(row, value);
  const kind = jStr(o, "k", row);
  if (!(EVENT_KINDS as readonly string[]).includes(kind)) {
    throw new StowageError("STOWAGE_FORMAT_VERSION", `outbox event ${n} has kind ${JSON.stringify(kind)}, unknown to this build`);
  }
  const raw = o.d;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw corrupt(row, "field d is not an object");
  const data: Record<string, EventValue> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean") throw corrupt(row, `field d.${k} is not a string, number or boolean`);
    Object.defineProperty(data, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return { id: `outbox-${n}`, kind: kind as EventKind, key: jStr(o, "y", row), time: jNum(o, "t", row), data };
}

function outboxKey(n: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b[0] = F_OUTBOX;
  b.writeUInt32BE(Math.floor(n / TWO_32), 1);
  b.writeUInt32BE(n >>> 0, 5);
  return b;
}

function outboxSeq(row: Buffer): number {
  if (row.length !== 9 || row[0] !== F_OUTBOX) throw corrupt(row, "malformed outbox key");
  return row.readUInt32BE(1) * TWO_32 + row.readUInt32BE(5);
}

function journalKey(n: number): Buffer {
  const b = outboxKey(n);
  b[0] = F_JOURNAL;
  return b;
}

function journalIndexOf(row: Buffer): number {
  if (row.length !== 9 || row[0] !== F_JOURNAL) throw corrupt(row, "malformed journal key");
  return row.readUInt32BE(1) * TWO_32 + row.readUInt32BE(5);
}

function encodeJournalState(last: number): Buffer {
  return new ByteWriter().byte(RECORD_V1).varint(last).done();
}

function decodeJournalState(row: Buffer, value: Buffer): number {
  const r = new ByteReader(payload(row, value), row);
  const last = r.varint();
  r.end();
  return last;
}

/** The outbox sequence: the last id handed out, and how many events the outbox holds. */
interface OutboxState {
  last: number;
  count: number;
}

function encodeOutboxState(s: OutboxState): Buffer {
  return new ByteWriter().byte(RECORD_V1).varint(s.last).varint(s.count).done();
}

function decodeOutboxState(row: Buffer, value: Buffer): OutboxState {
  const r = new ByteReader(payload(row, value), row);
  const last = r.varint();
  const count = r.varint();
  r.end();
  return { last, count };
}

function encodeUpload(u: UploadRecord): Buffer {
  const o: Json = { i: u.initiated, t: u.contentType, m: u.userMetadata };
  if (u.headers !== undefined && Object.keys(u.headers).length > 0) o.h = u.headers;
  if (u.tags !== undefined && Object.keys(u.tags).length > 0) o.g = u.tags;
  return jsonValue(o);
}

function decodeUpload(bucket: string, key: string, uploadId: string, row: Buffer, value: Buffer): UploadRecord {
  const o = parseJson(row, value);
  return {
    bucket,
    key,
    uploadId,
    initiated: jNum(o, "i", row),
    contentType: jStr(o, "t", row),
    userMetadata: jStrMap(o, "m", row),
    ...(o.h === undefined ? {} : { headers: jStrMap(o, "h", row) }),
    ...(o.g === undefined ? {} : { tags: jStrMap(o, "g", row) }),
  };
}

function encodePart(p: PartRecord): Buffer {
  const w = new ByteWriter()
    .byte(RECORD_V1)
    .varint(checkUint(p.size, "a part's size"))
    .varint(checkUint(p.lastModified, "a part's lastModified"))
    .bytes(Buffer.from(p.etag, "utf8"));
  return writeManifest(w, p.manifest).done();
}

function decodePart(uploadId: string, partNumber: number, row: Buffer, value: Buffer): PartRecord {
  const r = new ByteReader(payload(row, value), row);
  const size = r.varint();
  const lastModified = r.varint();
  const etag = r.bytes().toString("utf8");
  const manifest = readManifest(r);
  r.end();
  return { uploadId, partNumber, size, etag, lastModified, manifest };
}

function encodeCounters(c: Counters): Buffer {
  const w = new ByteWriter().byte(RECORD_V1);
  for (const f of COUNTER_FIELDS) w.varint(c[f]);
  return w.done();
}

function decodeCounters(row: Buffer, value: Buffer): Counters {
  const r = new ByteReader(payload(row, value), row);
  const c = zeroCounters();
  for (const f of COUNTER_FIELDS) c[f] = r.varint();
  r.end();
  return c;
}

function zeroCounters(): Counters {
  return { backendPuts: 0, backendBytesWritten: 0, plainPuts: 0, ingestedBytes: 0 };
}

function encodeSequence(last: number): Buffer {
  return new ByteWriter().byte(RECORD_V1).varint(last).done();
}

function decodeSequence(row: Buffer, value: Buffer): number {
  const r = new ByteReader(payload(row, value), row);
  const v = r.varint();
  r.end();
  return v;
}

// ---------------------------------------------------------------------------------------------
// Row sources: committed rows, and a transaction's overlay merged over them

/** Read statistics, for tests and metrics. */
export interface MetaReadStats {
  /** Rows read from the kv store (point reads that found a row, and cursor positions visited). */
  rowsRead: number;
  /** Cursor re-seeks made by listings to skip a key's older versions. */
  seeks: number;
}

interface Rows {
  get(key: Buffer): Buffer | undefined;
  /** Visible rows with `lo <= key < hi` (`hi` undefined: no upper bound), ascending. */
  scan(lo: Buffer, hi: Buffer | undefined): Generator<Row, void, undefined>;
}

class CommittedRows implements Rows {
  private readonly point: { pending: boolean };

  /**
   * `pending`: also rows of transactions committed but not yet durable (for transactions, which
   * build on them; see KvMetadataStore.transaction).
   */
  constructor(
    private readonly kv: Kv,
    private readonly stats: MetaReadStats,
    private readonly pending: boolean,
  ) {
    this.point = { pending };
  }

  get(key: Buffer): Buffer | undefined {
    const v = this.kv.getSync(key, this.point);
    if (v !== undefined) this.stats.rowsRead++;
    return v;
  }

  *scan(lo: Buffer, hi: Buffer | undefined): Generator<Row, void, undefined> {
    const c = this.kv.cursor(hi === undefined ? { gte: lo, pending: this.pending } : { gte: lo, lt: hi, pending: this.pending });
    try {
      for (c.seekToFirst(); c.valid(); c.next()) {
        this.stats.rowsRead++;
        yield [c.key(), c.value()];
      }
    } finally {
      c.close();
    }
  }
}

/**
 * A transaction's pending writes: row key → value, or null for a deletion. Point reads go to a
 * map; range reads walk a skip list of the keys (the kv store's memtable, used for its order
 * only), so a transaction that alternates writes and scans (a directory rename moving 100,000
 * objects does one of each per object) costs O(log n) per step, not a re-sort.
 */
class Overlay {
  private readonly map = new Map<string, { key: Buffer; value: Buffer | null }>();
  private readonly order = new Memtable(64 * 1024);
  private seq = 0;

  set(key: Buffer, value: Buffer | null): void {
    const s = key.toString("latin1");
    const cur = this.map.get(s);
    if (cur !== undefined) cur.value = value;
    else {
      this.map.set(s, { key, value });
      this.order.add(++this.seq, KIND_VALUE, key, EMPTY);
    }
  }

  /** The pending value (null: deleted), or undefined when the transaction has not touched the row. */
  lookup(key: Buffer): Buffer | null | undefined {
    return this.map.get(key.toString("latin1"))?.value;
  }

  /**
   * Pending rows with `lo <= key < hi`, ascending: the keys pending when the range began (rows
   * added while iterating are not visited), each with its value when it is reached.
   */
  *range(lo: Buffer, hi: Buffer | undefined): Generator<{ key: Buffer; value: Buffer | null }, void, undefined> {
    if (this.map.size === 0) return;
    const o = this.order;
    const limit = this.seq;
    // Every key is in the list once; the largest trailer sorts first among equal user keys.
    for (let n = o.findGreaterOrEqual(lo, lo.length, MAX_TRAILER); n !== -1; n = o.nextOf(n)) {
      if (Math.floor(o.trailerOf(n) / 256) > limit) continue;
      const ik = o.keyOf(n);
      const uk = Buffer.from(ik.buffer, ik.byteOffset, ik.length - TRAILER_SIZE);
      if (hi !== undefined && Buffer.compare(uk, hi) >= 0) return;
      yield this.map.get(uk.toString("latin1"))!;
    }
  }

  ops(): BatchOperation[] {
    const out: BatchOperation[] = [];
    for (const { key, value } of this.map.values()) {
      out.push(value === null ? { type: "del", key } : { type: "put", key, value });
    }
    return out;
  }
}

const EMPTY = new Uint8Array(0);
const MAX_TRAILER = MAX_SEQUENCE * 256 + 255;

class TxRows implements Rows {
  constructor(
    private readonly base: Rows,
    private readonly overlay: Overlay,
  ) {}

  get(key: Buffer): Buffer | undefined {
    const o = this.overlay.lookup(key);
    if (o !== undefined) return o ?? undefined;
    return this.base.get(key);
  }

  *scan(lo: Buffer, hi: Buffer | undefined): Generator<Row, void, undefined> {
    const pending = this.overlay.range(lo, hi);
    const base = this.base.scan(lo, hi);
    try {
      let b = base.next();
      let p = pending.next();
      while (true) {
        const o = p.done === true ? undefined : p.value;
        if (b.done === true) {
          if (o === undefined) return;
          p = pending.next();
          if (o.value !== null) yield [o.key, o.value];
          continue;
        }
        const c = o === undefined ? -1 : Buffer.compare(b.value[0], o.key);
        if (c < 0) {
          yield b.value;
          b = base.next();
        } else {
          if (c === 0) b = base.next();
          p = pending.next();
          if (o!.value !== null) yield [o!.key, o!.value];
        }
      }
    } finally {
      base.return(undefined);
      pending.return(undefined);
    }
  }
}

function firstRow(rows: Rows, prefix: Buffer): Row | undefined {
  for (const r of rows.scan(prefix, prefixEnd(prefix))) return r;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Point reads over a row source (shared by the store and its transactions)

class RecordReads {
  constructor(readonly rows: Rows) {}

  bucket(name: string): BucketRecord | undefined {
    const k = cat(F_BUCKET, nameBytes(name, "bucket name"));
    const v = this.rows.get(k);
    return v === undefined ? undefined : decodeBucket(name, k, v);
  }

  /** The header stored at an exact sequence. */
  headerAt(bucket: string, key: string, seq: number): VersionHeader | undefined {
    const k = cat(objectPrefix(F_VERSION, bucket, key), seqSuffix(seq));
    const v = this.rows.get(k);
    return v === undefined ? undefined : decodeHeader(bucket, key, seq, k, v);
  }

  private withManifest(h: VersionHeader): ObjectVersion {
    const k = cat(objectPrefix(F_MANIFEST, h.bucket, h.key), seqSuffix(h.sequence));
    const v = this.rows.get(k);
    if (v === undefined) throw corrupt(k, `manifest row of ${h.bucket}/${h.key}@${h.versionId} is missing`);
    return { ...h, manifest: decodeManifest(k, v) };
  }

  current(bucket: string, key: string): ObjectVersion | undefined {
    const p = objectPrefix(F_VERSION, bucket, key);
    const r = firstRow(this.rows, p);
    if (r === undefined) return undefined;
    if (r[0].length !== p.length + 8) throw corrupt(r[0], "malformed version key");
    return this.withManifest(decodeHeader(bucket, key, seqFromSuffix(r[0]), r[0], r[1]));
  }

  version(bucket: string, key: string, versionId: string): ObjectVersion | undefined {
    const p = cat(objectPrefix(F_VERSION_BY_ID, bucket, key), idBytes(versionId, "version id"), 0);
    const r = firstRow(this.rows, p);
    if (r === undefined) return undefined;
    if (r[0].length !== p.length + 8) throw corrupt(r[0], "malformed version id index key");
    const h = this.headerAt(bucket, key, seqFromSuffix(r[0]));
    if (h === undefined) throw corrupt(r[0], "version id index names a missing version");
    return this.withManifest(h);
  }

  versionsOfKey(bucket: string, key: string): VersionHeader[] {
    const p = objectPrefix(F_VERSION, bucket, key);
    const out: VersionHeader[] = [];
    for (const [k, v] of this.rows.scan(p, prefixEnd(p))) {
      if (k.length !== p.length + 8) throw corrupt(k, "malformed version key");
      out.push(decodeHeader(bucket, key, seqFromSuffix(k), k, v));
    }
    return out;
  }

  hasContent(bucket: string): boolean {
    return (
      firstRow(this.rows, bucketPrefix(F_VERSION, bucket)) !== undefined ||
      firstRow(this.rows, bucketPrefix(F_UPLOAD, bucket)) !== undefined
    );
  }

  chunk(id: Uint8Array): ChunkRecord | undefined {
    const k = cat(F_CHUNK, chunkIdBytes(id));
    const v = this.rows.get(k);
    return v === undefined ? undefined : decodeChunk(k, v);
  }

  pack(id: string): PackRecord | undefined {
    if (typeof id !== "string" || !/^[0-9a-f]{32}$/.test(id)) return undefined;
    const k = cat(F_PACK, packIdBytes(id));
    const v = this.rows.get(k);
    return v === undefined ? undefined : decodePack(id, k, v);
  }

  /** The object key an upload belongs to (from the `W` index). */
  uploadKey(bucket: string, uploadId: string): string | undefined {
    const k = cat(bucketPrefix(F_UPLOAD_BY_ID, bucket), idBytes(uploadId, "upload id"));
    const v = this.rows.get(k);
    return v === undefined ? undefined : payload(k, v).toString("utf8");
  }

  upload(bucket: string, uploadId: string): UploadRecord | undefined {
    const key = this.uploadKey(bucket, uploadId);
    if (key === undefined) return undefined;
    const k = cat(objectPrefix(F_UPLOAD, bucket, key), idBytes(uploadId, "upload id"));
    const v = this.rows.get(k);
    if (v === undefined) throw corrupt(k, `upload ${uploadId} is indexed but its record is missing`);
    return decodeUpload(bucket, key, uploadId, k, v);
  }

  part(uploadId: string, partNumber: number): PartRecord | undefined {
    if (!Number.isInteger(partNumber) || partNumber < 0 || partNumber >= TWO_32) return undefined;
    const k = partKey(uploadId, partNumber);
    const v = this.rows.get(k);
    return v === undefined ? undefined : decodePart(uploadId, partNumber, k, v);
  }

  counters(): Counters {
    const v = this.rows.get(KEY_COUNTERS);
    return v === undefined ? zeroCounters() : decodeCounters(KEY_COUNTERS, v);
  }
}

function partKey(uploadId: string, partNumber: number): Buffer {
  const n = Buffer.allocUnsafe(4);
  n.writeUInt32BE(partNumber, 0);
  return cat(F_PART, idBytes(uploadId, "upload id"), 0, n);
}

// ---------------------------------------------------------------------------------------------
// The store

const txScope = new AsyncLocalStorage<KvMetadataStore>();

/** Hands out sequence numbers; only used under the transaction lock. */
class SequenceAllocator {
  /** The next number to hand out. */
  private nextValue: number;

  constructor(last: number) {
    this.nextValue = last + 1;
    this.persisted = last;
  }

  /** The last number a committed batch recorded (numbers above it may be reused after a crash). */
  persisted: number;

  take(): number {
    return this.nextValue++;
  }

  /** True when numbers were handed out (e.g. reserved outside a transaction) since the last persisted one. */
  get dirty(): boolean {
    return this.last > this.persisted;
  }

  /** A version written with `seq` (not necessarily from take()): never hand it out later. True if that moved the counter. */
  observe(seq: number): boolean {
    if (seq < this.nextValue) return false;
    this.nextValue = seq + 1;
    return true;
  }

  get last(): number {
    return this.nextValue - 1;
  }
}

export interface KvMetadataStoreOptions {
  /** Options of the underlying kv store. */
  kv?: KvOptions;
}

/** Opens (creating if needed) the metadata store kept in a kv store in `dir`. */
export async function openKvMetadataStore(dir: string, options: KvMetadataStoreOptions = {}): Promise<KvMetadataStore> {
  const kv = await openKv(dir, options.kv);
  try {
    return await KvMetadataStore.fromKv(kv);
  } catch (err) {
    await kv.close().catch(() => undefined);
    throw err;
  }
}

export class KvMetadataStore implements MetadataStore {
  private readonly stats: MetaReadStats = { rowsRead: 0, seeks: 0 };
  private readonly committed: CommittedRows;
  /** What transactions read: committed rows, durable or not yet. */
  private readonly txRows: CommittedRows;
  private readonly txReads: RecordReads;
  private readonly reads: RecordReads;
  /** Transactions run one at a time: each waits for the previous one's promise. */
  private tail: Promise<void> = Promise.resolve();
  private closing = false;
  private closed = false;
  private readonly sequence: SequenceAllocator;
  /** The committed outbox sequence and size. */
  private outbox: OutboxState;
  /** No outbox event below this number exists any more (listOutbox starts here). */
  private outboxFloor = 0;
  /** The last journal index handed out (committed; transactions build on it). */
  private journalLast: number;
  /** The last journal index whose transaction is durable (what readers outside transactions see). */
  private journalDurable: number;

  private constructor(
    private readonly kv: Kv,
    lastSequence: number,
    outbox: OutboxState,
    journalLast: number,
  ) {
    this.committed = new CommittedRows(kv, this.stats, false);
    this.txRows = new CommittedRows(kv, this.stats, true);
    this.reads = new RecordReads(this.committed);
    this.txReads = new RecordReads(this.txRows);
    this.sequence = new SequenceAllocator(lastSequence);
    this.outbox = outbox;
    this.journalLast = journalLast;
    this.journalDurable = journalLast;
  }

  /** Uses an open kv store (the store closes it on {@link close}). Checks or writes the format row. */
  static async fromKv(kv: Kv): Promise<KvMetadataStore> {
    const fmt = kv.getSync(KEY_FORMAT);
    if (fmt === undefined) {
      await kv.put(KEY_FORMAT, cat(RECORD_V1, Buffer.from(FORMAT_MAGIC)), { sync: true });
    } else {
      const body = payload(KEY_FORMAT, fmt);
      if (body.toString("latin1") !== FORMAT_MAGIC) throw corrupt(KEY_FORMAT, "not a Stowage metadata store");
    }
    const seqRow = kv.getSync(KEY_SEQUENCE);
    const last = seqRow === undefined ? 0 : decodeSequence(KEY_SEQUENCE, seqRow);
    const outboxRow = kv.getSync(KEY_OUTBOX);
    const outbox = outboxRow === undefined ? { last: 0, count: 0 } : decodeOutboxState(KEY_OUTBOX, outboxRow);
    const journalRow = kv.getSync(KEY_JOURNAL);
    const journalLast = journalRow === undefined ? 0 : decodeJournalState(KEY_JOURNAL, journalRow);
    return new KvMetadataStore(kv, last, outbox, journalLast);
  }

  /** Rows read and re-seeks made so far (cumulative; for tests and metrics). */
  readStats(): MetaReadStats {
    return { ...this.stats };
  }

  /** Statistics of the underlying kv store. */
  kvStats(): KvStats {
    return this.kv.stats();
  }

  // ------------------------------------------------------------------ transactions

  /**
   * Runs `fn` under the transaction lock, then commits what it wrote as one synced batch.
   *
   * Pipelined: the lock is released as soon as the batch is in the kv store's memtable, and the
   * commit resolves once it is durable. The next transaction reads it meanwhile (`pending` reads)
   * and its batch joins the same log sync, so concurrent transactions share fsyncs instead of
   * taking one each in turn. Readers outside transactions see a commit only once it is durable.
   * A transaction that wrote nothing resolves once everything it could have read is durable,
   * since its answer may rest on it (see docs/ARCHITECTURE.md, "Metadata transactions").
   */
  async transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T> {
    if (txScope.getStore() === this) {
      throw invalid("transaction() called inside a transaction of the same store (it would wait for itself)");
    }
    this.checkOpen();
    const release = await this.lock();
    let result: T;
    let durable: Promise<void>;
    let journal: number | undefined;
    try {
      // Transactions queued before close() still run: close() waits for them.
      if (this.closed) throw new StowageError("STOWAGE_KV_CLOSED", "the metadata store is closed");
      const tx = new KvMetaTx(this, this.txRows, this.sequence, this.outbox, this.journalLast);
      let committed = false;
      try {
        result = await txScope.run(this, () => fn(tx));
        tx.finish();
        const ops = tx.commitOps();
        if (ops.length > 0) {
          let written!: Promise<void>;
          await new Promise<void>((applied, failed) => {
            written = this.kv.batch(ops, { sync: true, onApplied: applied });
            written.catch(failed);
          });
          durable = written;
        } else {
          durable = this.kv.settled();
        }
        committed = true;
        if (tx.sequenceWritten !== undefined) this.sequence.persisted = Math.max(this.sequence.persisted, tx.sequenceWritten);
        if (tx.outboxTouched) this.outbox = { ...tx.outbox };
        // Deleting the oldest events moves the floor listOutbox starts from past them.
        while (tx.outboxDeleted.has(this.outboxFloor)) this.outboxFloor++;
        if (tx.journalTouched) this.journalLast = journal = tx.journalLast;
      } finally {
        tx.finish();
        if (!committed && tx.sequenceUsed) await this.persistSequence().catch(() => undefined);
      }
    } finally {
      release();
    }
    // A failed sync fails this batch and every later one: the kv store is read-only from then on.
    await durable;
    if (journal !== undefined && journal > this.journalDurable) this.journalDurable = journal;
    return result;
  }

  /** Records the sequence counter alone (after an aborted transaction used numbers). */
  private async persistSequence(): Promise<void> {
    const last = this.sequence.last;
    await this.kv.put(KEY_SEQUENCE, encodeSequence(last), { sync: true });
    this.sequence.persisted = Math.max(this.sequence.persisted, last);
  }

  /**
   * A fresh sequence number handed out outside a transaction (e.g. for a version whose journal
   * intent is written before its transaction runs). It is persisted with the next committed
   * transaction; a transaction that writes a version with it does so.
   */
  reserveSequence(): number {
    this.checkOpen();
    return this.sequence.take();
  }

  async journalIndex(): Promise<number> {
    return this.journalDurable;
  }

  async *listJournal(): AsyncIterable<{ index: number; entry: Buffer }> {
    const c = this.cursor(Buffer.of(F_JOURNAL));
    try {
      for (c.seekToFirst(); c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        yield { index: journalIndexOf(row), entry: Buffer.from(payload(row, c.value())) };
      }
    } finally {
      c.close();
    }
  }

  private lock(): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const prev = this.tail;
    this.tail = prev.then(() => mine);
    return prev.then(() => release);
  }

  private checkOpen(): void {
    if (this.closing || this.closed) throw new StowageError("STOWAGE_KV_CLOSED", "the metadata store is closed");
  }

  /** Waits for running and queued transactions, then closes the kv store. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) {
      await this.lock().then((release) => release());
      return;
    }
    this.closing = true;
    const release = await this.lock();
    try {
      await this.kv.close();
      this.closed = true;
    } finally {
      release();
    }
  }

  // ------------------------------------------------------------------ point reads (committed)

  async getBucket(name: string): Promise<BucketRecord | undefined> {
    return this.pointReads().bucket(name);
  }

  async listBuckets(): Promise<BucketRecord[]> {
    const out: BucketRecord[] = [];
    const lo = Buffer.of(F_BUCKET);
    for (const [k, v] of this.rowsForListing().scan(lo, prefixEnd(lo))) {
      out.push(decodeBucket(k.toString("utf8", 1), k, v));
    }
    return out;
  }

  async getCurrent(bucket: string, key: string): Promise<ObjectVersion | undefined> {
    return this.pointReads().current(bucket, key);
  }

  async getVersion(bucket: string, key: string, versionId: string): Promise<ObjectVersion | undefined> {
    return this.pointReads().version(bucket, key, versionId);
  }

  async versionsOfKey(bucket: string, key: string): Promise<VersionHeader[]> {
    return this.pointReads().versionsOfKey(bucket, key);
  }

  async bucketHasContent(bucket: string): Promise<boolean> {
    return this.pointReads().hasContent(bucket);
  }

  async getChunk(chunkId: Uint8Array): Promise<ChunkRecord | undefined> {
    return this.pointReads().chunk(chunkId);
  }

  async getPack(id: string): Promise<PackRecord | undefined> {
    return this.pointReads().pack(id);
  }

  async getUpload(bucket: string, uploadId: string): Promise<UploadRecord | undefined> {
    return this.pointReads().upload(bucket, uploadId);
  }

  async getPart(uploadId: string, partNumber: number): Promise<PartRecord | undefined> {
    return this.pointReads().part(uploadId, partNumber);
  }

  async getCounters(): Promise<Counters> {
    return this.pointReads().counters();
  }

  async outboxSize(): Promise<number> {
    return this.outbox.count;
  }

  async listOutbox(limit: number): Promise<StowageEvent[]> {
    const out: StowageEvent[] = [];
    if (!(limit > 0)) return out;
    const c = this.cursor(Buffer.of(F_OUTBOX));
    try {
      // Start past the events known to be gone: the relay deletes from the front, and a scan from
      // the first key would step over every deletion still in the tree (most of its cost).
      for (c.seek(outboxKey(this.outboxFloor)); c.valid() && out.length < limit; c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        out.push(decodeOutboxEvent(outboxSeq(row), row, c.value()));
      }
    } finally {
      c.close();
    }
    // Events are numbered in commit order (transactions are serial), so none below the first seen appears later.
    const first = out[0];
    if (first !== undefined) this.outboxFloor = Math.max(this.outboxFloor, Number(first.id.slice("outbox-".length)));
    return out;
  }

  // ------------------------------------------------------------------ listings (committed)
  //
  // Each listing reads through one kv cursor, which sees the store as of the moment the listing
  // started (the cursor pins that sequence), however long the caller takes between rows.

  /** A cursor over rows starting with `prefix`. */
  private cursor(prefix: Buffer, snapshot?: Snapshot): KvCursor {
    return this.kv.cursor(snapshot === undefined ? { prefix, pending: this.inTransaction() } : { prefix, snapshot });
  }

  /**
   * True inside one of this store's transactions: its listings (which go through the store's own
   * listing methods) must see the transactions committed before it, durable or not yet.
   */
  private inTransaction(): boolean {
    return txScope.getStore() === this;
  }

  /**
   * Point reads on the store: inside a transaction (code that reads the store directly instead of
   * through its tx), with the transactions not yet durable, like the tx's own reads.
   */
  private pointReads(): RecordReads {
    return this.inTransaction() ? this.txReads : this.reads;
  }

  /** The rows a listing reads: with the transactions not yet durable inside a transaction. */
  private rowsForListing(): CommittedRows {
    return this.inTransaction() ? this.txRows : this.committed;
  }

  /** A cursor over one bucket's rows of `family` under `options.prefix`, positioned after `options.after`. */
  private listingCursor(family: number, bucket: string, options: ListOptions): KvCursor {
    const base = bucketPrefix(family, bucket);
    const prefix = options.prefix === undefined ? base : cat(base, nameBytes(options.prefix, "prefix"));
    const c = this.cursor(prefix);
    if (options.after !== undefined) c.seek(KvMetadataStore.afterKeyTarget(base, options.after));
    else c.seekToFirst();
    return c;
  }

  /** Lower bound for `after`: the first row of any key strictly greater than `after`. */
  private static afterKeyTarget(base: Buffer, after: string): Buffer {
    return cat(base, nameBytes(after, "after"), 1);
  }

  async *listCurrent(bucket: string, options: ListOptions = {}): AsyncIterable<VersionHeader> {
    const limit = options.limit ?? Infinity;
    if (limit <= 0) return;
    const base = bucketPrefix(F_VERSION, bucket);
    const c = this.listingCursor(F_VERSION, bucket, options);
    try {
      let n = 0;
      while (c.valid()) {
        const row = c.key();
        this.stats.rowsRead++;
        const { key, seq } = splitVersionRow(row, base.length);
        yield decodeHeader(bucket, key, seq, row, c.value());
        if (++n >= limit) return;
        // Skip the key's older versions with one seek: `... key 00 seq` < `... key 01` <= next key.
        this.stats.seeks++;
        c.seek(cat(row.subarray(0, row.length - 9), 1));
      }
    } finally {
      c.close();
    }
  }

  async *listVersions(bucket: string, options: VersionListOptions = {}): AsyncIterable<VersionHeader> {
    const base = bucketPrefix(F_VERSION, bucket);
    const prefix = options.prefix === undefined ? base : cat(base, nameBytes(options.prefix, "prefix"));
    const limit = options.limit ?? Infinity;
    if (limit <= 0) return;
    let start: Buffer | undefined;
    if (options.afterKey !== undefined) {
      start = KvMetadataStore.afterKeyTarget(base, options.afterKey);
      if (options.afterVersionId !== undefined) {
        // Resume just after that version's row; if it is gone, after the whole key.
        const p = cat(objectPrefix(F_VERSION_BY_ID, bucket, options.afterKey), idBytes(options.afterVersionId, "version id"), 0);
        const r = firstRow(this.rowsForListing(), p);
        if (r !== undefined && r[0].length === p.length + 8) {
          start = cat(objectPrefix(F_VERSION, bucket, options.afterKey), r[0].subarray(r[0].length - 8), 0);
        }
      }
    }
    const c = this.cursor(prefix);
    try {
      if (start !== undefined) c.seek(start);
      else c.seekToFirst();
      let n = 0;
      for (; c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        const { key, seq } = splitVersionRow(row, base.length);
        yield decodeHeader(bucket, key, seq, row, c.value());
        if (++n >= limit) return;
      }
    } finally {
      c.close();
    }
  }

  async *listChunks(): AsyncIterable<[chunkId: Buffer, record: ChunkRecord]> {
    const c = this.cursor(Buffer.of(F_CHUNK));
    try {
      for (c.seekToFirst(); c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        if (row.length !== 1 + CHUNK_ID_BYTES) throw corrupt(row, "malformed chunk key");
        yield [Buffer.from(row.subarray(1)), decodeChunk(row, c.value())];
      }
    } finally {
      c.close();
    }
  }

  async *listPacks(): AsyncIterable<PackRecord> {
    const c = this.cursor(Buffer.of(F_PACK));
    try {
      for (c.seekToFirst(); c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        if (row.length !== 1 + PACK_ID_BYTES) throw corrupt(row, "malformed pack key");
        yield decodePack(row.toString("hex", 1), row, c.value());
      }
    } finally {
      c.close();
    }
  }

  async *listUploads(bucket: string, options: ListOptions = {}): AsyncIterable<UploadRecord> {
    const limit = options.limit ?? Infinity;
    if (limit <= 0) return;
    const base = bucketPrefix(F_UPLOAD, bucket);
    const c = this.listingCursor(F_UPLOAD, bucket, options);
    try {
      let n = 0;
      for (; c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        const sep = row.indexOf(0, base.length);
        if (sep < 0) throw corrupt(row, "malformed upload key");
        const key = row.toString("utf8", base.length, sep);
        const uploadId = row.toString("utf8", sep + 1);
        yield decodeUpload(bucket, key, uploadId, row, c.value());
        if (++n >= limit) return;
      }
    } finally {
      c.close();
    }
  }

  async *listParts(uploadId: string): AsyncIterable<PartRecord> {
    const prefix = cat(F_PART, idBytes(uploadId, "upload id"), 0);
    const c = this.cursor(prefix);
    try {
      for (c.seekToFirst(); c.valid(); c.next()) {
        const row = c.key();
        this.stats.rowsRead++;
        if (row.length !== prefix.length + 4) throw corrupt(row, "malformed part key");
        yield decodePart(uploadId, row.readUInt32BE(prefix.length), row, c.value());
      }
    } finally {
      c.close();
    }
  }

  async *listManifests(): AsyncIterable<{ owner: string; manifest: ManifestEntry[] }> {
    const snapshot = this.kv.snapshot({ pending: this.inTransaction() });
    try {
      const versions = this.cursor(Buffer.of(F_VERSION), snapshot);
      try {
        for (versions.seekToFirst(); versions.valid(); versions.next()) {
          const row = versions.key();
          this.stats.rowsRead++;
          const sep = row.indexOf(0, 1);
          if (sep < 0) throw corrupt(row, "malformed version key");
          const bucket = row.toString("utf8", 1, sep);
          const { key, seq } = splitVersionRow(row, sep + 1);
          const h = decodeHeader(bucket, key, seq, row, versions.value());
          const mk = Buffer.from(row);
          mk[0] = F_MANIFEST;
          const mv = this.kv.getSync(mk, { snapshot });
          if (mv === undefined) throw corrupt(mk, `manifest row of ${bucket}/${key}@${h.versionId} is missing`);
          this.stats.rowsRead++;
          yield { owner: `${bucket}/${key}@${h.versionId}`, manifest: decodeManifest(mk, mv) };
        }
      } finally {
        versions.close();
      }
      const parts = this.cursor(Buffer.of(F_PART), snapshot);
      try {
        for (parts.seekToFirst(); parts.valid(); parts.next()) {
          const row = parts.key();
          this.stats.rowsRead++;
          const sep = row.length - 5;
          if (sep < 1 || row[sep] !== 0) throw corrupt(row, "malformed part key");
          const uploadId = row.toString("utf8", 1, sep);
          const partNumber = row.readUInt32BE(sep + 1);
          const p = decodePart(uploadId, partNumber, row, parts.value());
          yield { owner: `upload ${uploadId} part ${partNumber}`, manifest: p.manifest };
        }
      } finally {
        parts.close();
      }
    } finally {
      snapshot.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transactions

class KvMetaTx implements MetaTx {
  private readonly overlay = new Overlay();
  private readonly reads: RecordReads;
  private counterDelta: Counters | undefined;
  private finished = false;
  /** True once the transaction took (or observed) a sequence number. */
  sequenceUsed = false;
  /** The outbox sequence and size as this transaction leaves them. */
  readonly outbox: OutboxState;
  /** True once the transaction appended or deleted outbox events. */
  outboxTouched = false;
  /** Outbox events this transaction deletes. */
  readonly outboxDeleted = new Set<number>();
  /** The sequence counter value commitOps() recorded, if it did. */
  sequenceWritten: number | undefined;
  /** The last journal index as this transaction leaves it. */
  journalLast: number;
  /** True once the transaction appended journal entries or observed an index. */
  journalTouched = false;

  constructor(
    private readonly store: KvMetadataStore,
    committed: Rows,
    private readonly sequence: SequenceAllocator,
    outbox: OutboxState,
    journalLast: number,
  ) {
    this.reads = new RecordReads(new TxRows(committed, this.overlay));
    this.outbox = { ...outbox };
    this.journalLast = journalLast;
  }

  finish(): void {
    this.finished = true;
  }

  private check(): void {
    if (this.finished) throw invalid("the transaction is finished; its object cannot be used any more");
  }

  /** Everything the transaction writes, as one batch. */
  commitOps(): BatchOperation[] {
    const ops = this.overlay.ops();
    if (this.counterDelta !== undefined) {
      ops.push({ type: "put", key: KEY_COUNTERS, value: encodeCounters(this.countersWithDelta()) });
    }
    if (this.sequenceUsed || (ops.length > 0 && this.sequence.dirty)) {
      this.sequenceWritten = this.sequence.last;
      ops.push({ type: "put", key: KEY_SEQUENCE, value: encodeSequence(this.sequenceWritten) });
    }
    if (this.journalTouched) {
      ops.push({ type: "put", key: KEY_JOURNAL, value: encodeJournalState(this.journalLast) });
    }
    if (this.outboxTouched) {
      ops.push({ type: "put", key: KEY_OUTBOX, value: encodeOutboxState(this.outbox) });
    }
    return ops;
  }

  // ------------------------------------------------------------------ reads (own writes visible)

  async getBucket(name: string): Promise<BucketRecord | undefined> {
    this.check();
    return this.reads.bucket(name);
  }

  async getCurrent(bucket: string, key: string): Promise<ObjectVersion | undefined> {
    this.check();
    return this.reads.current(bucket, key);
  }

  async getVersion(bucket: string, key: string, versionId: string): Promise<ObjectVersion | undefined> {
    this.check();
    return this.reads.version(bucket, key, versionId);
  }

  async versionsOfKey(bucket: string, key: string): Promise<VersionHeader[]> {
    this.check();
    return this.reads.versionsOfKey(bucket, key);
  }

  async bucketHasContent(bucket: string): Promise<boolean> {
    this.check();
    return this.reads.hasContent(bucket);
  }

  async getChunk(chunkId: Uint8Array): Promise<ChunkRecord | undefined> {
    this.check();
    return this.reads.chunk(chunkId);
  }

  async getPack(id: string): Promise<PackRecord | undefined> {
    this.check();
    return this.reads.pack(id);
  }

  async getUpload(bucket: string, uploadId: string): Promise<UploadRecord | undefined> {
    this.check();
    return this.reads.upload(bucket, uploadId);
  }

  async getPart(uploadId: string, partNumber: number): Promise<PartRecord | undefined> {
    this.check();
    return this.reads.part(uploadId, partNumber);
  }

  async getCounters(): Promise<Counters> {
    this.check();
    return this.countersWithDelta();
  }

  async outboxSize(): Promise<number> {
    this.check();
    return this.outbox.count;
  }

  listOutbox(limit: number): Promise<StowageEvent[]> {
    this.check();
    return this.store.listOutbox(limit);
  }

  /** The committed counters plus this transaction's additions. */
  private countersWithDelta(): Counters {
    const c = this.reads.counters();
    if (this.counterDelta !== undefined) for (const f of COUNTER_FIELDS) c[f] += this.counterDelta[f];
    return c;
  }

  // ------------------------------------------------------------------ listings (committed state)

  listBuckets(): Promise<BucketRecord[]> {
    this.check();
    return this.store.listBuckets();
  }

  listCurrent(bucket: string, options?: ListOptions): AsyncIterable<VersionHeader> {
    this.check();
    return this.store.listCurrent(bucket, options);
  }

  listVersions(bucket: string, options?: VersionListOptions): AsyncIterable<VersionHeader> {
    this.check();
    return this.store.listVersions(bucket, options);
  }

  listChunks(): AsyncIterable<[chunkId: Buffer, record: ChunkRecord]> {
    this.check();
    return this.store.listChunks();
  }

  listPacks(): AsyncIterable<PackRecord> {
    this.check();
    return this.store.listPacks();
  }

  listUploads(bucket: string, options?: ListOptions): AsyncIterable<UploadRecord> {
    this.check();
    return this.store.listUploads(bucket, options);
  }

  listParts(uploadId: string): AsyncIterable<PartRecord> {
    this.check();
    return this.store.listParts(uploadId);
  }

  listManifests(): AsyncIterable<{ owner: string; manifest: ManifestEntry[] }> {
    this.check();
    return this.store.listManifests();
  }

  // ------------------------------------------------------------------ writes

  putBucket(bucket: BucketRecord): void {
    this.check();
    if (!VERSIONINGS.includes(bucket.versioning)) throw invalid(`unknown versioning ${String(bucket.versioning)}`);
    if (bucket.durability !== undefined && !DURABILITIES.includes(bucket.durability)) throw invalid(`unknown durability ${String(bucket.durability)}`);
    this.overlay.set(cat(F_BUCKET, nameBytes(bucket.name, "bucket name")), encodeBucket(bucket));
  }

  deleteBucket(name: string): void {
    this.check();
    this.overlay.set(cat(F_BUCKET, nameBytes(name, "bucket name")), null);
  }

  putVersion(version: ObjectVersion): void {
    this.check();
    const { bucket, key } = version;
    const seq = checkSequence(version.sequence);
    const vid = idBytes(version.versionId, "version id");
    const suffix = seqSuffix(seq);
    const header = encodeHeader(version);
    const manifest = encodeManifest(version.manifest);
    const old = this.reads.headerAt(bucket, key, seq);
    if (old !== undefined && old.versionId !== version.versionId) {
      this.overlay.set(cat(objectPrefix(F_VERSION_BY_ID, bucket, key), idBytes(old.versionId, "version id"), 0, suffix), null);
    }
    this.overlay.set(cat(objectPrefix(F_VERSION, bucket, key), suffix), header);
    this.overlay.set(cat(objectPrefix(F_MANIFEST, bucket, key), suffix), manifest);
    this.overlay.set(cat(objectPrefix(F_VERSION_BY_ID, bucket, key), vid, 0, suffix), EMPTY_RECORD);
    if (this.sequence.observe(seq)) this.sequenceUsed = true;
  }

  deleteVersion(bucket: string, key: string, sequence: number): void {
    this.check();
    const seq = checkSequence(sequence);
    const old = this.reads.headerAt(bucket, key, seq);
    if (old === undefined) return;
    const suffix = seqSuffix(seq);
    this.overlay.set(cat(objectPrefix(F_VERSION, bucket, key), suffix), null);
    this.overlay.set(cat(objectPrefix(F_MANIFEST, bucket, key), suffix), null);
    this.overlay.set(cat(objectPrefix(F_VERSION_BY_ID, bucket, key), idBytes(old.versionId, "version id"), 0, suffix), null);
  }

  putChunk(chunkId: Uint8Array, record: ChunkRecord): void {
    this.check();
    this.overlay.set(cat(F_CHUNK, chunkIdBytes(chunkId)), encodeChunk(record));
  }

  deleteChunk(chunkId: Uint8Array): void {
    this.check();
    this.overlay.set(cat(F_CHUNK, chunkIdBytes(chunkId)), null);
  }

  async addRefs(manifest: readonly ManifestEntry[], delta: 1 | -1): Promise<void> {
    this.check();
    if (delta !== 1 && delta !== -1) throw invalid(`addRefs delta must be 1 or -1, got ${String(delta)}`);
    // Compute every new count first: on an error nothing of this call is applied.
    const updated = new Map<string, { id: Buffer; record: ChunkRecord }>();
    for (const e of manifest) {
      const id = chunkIdBytes(e.chunkId);
      const hex = id.toString("hex");
      let u = updated.get(hex);
      if (u === undefined) {
        const record = this.reads.chunk(id);
        if (record === undefined) {
          throw new StowageError("STOWAGE_INTEGRITY", `a manifest references chunk ${hex}, which has no chunk record`);
        }
        u = { id, record };
        updated.set(hex, u);
      }
      u.record.refs += delta;
      if (u.record.refs < 0) {
        throw new StowageError("STOWAGE_INTEGRITY", `the reference count of chunk ${hex} would go negative`);
      }
    }
    for (const { id, record } of updated.values()) this.overlay.set(cat(F_CHUNK, id), encodeChunk(record));
  }

  putPack(pack: PackRecord): void {
    this.check();
    if (!PACK_STATES.includes(pack.state)) throw invalid(`unknown pack state ${String(pack.state)}`);
    if (pack.uploaded !== undefined && typeof pack.uploaded !== "boolean") throw invalid("a pack's uploaded flag is a boolean");
    this.overlay.set(cat(F_PACK, packIdBytes(pack.id)), encodePack(pack));
  }

  deletePack(id: string): void {
    this.check();
    this.overlay.set(cat(F_PACK, packIdBytes(id)), null);
  }

  putUpload(upload: UploadRecord): void {
    this.check();
    const { bucket, key, uploadId } = upload;
    const uid = idBytes(uploadId, "upload id");
    const oldKey = this.reads.uploadKey(bucket, uploadId);
    if (oldKey !== undefined && oldKey !== key) this.overlay.set(cat(objectPrefix(F_UPLOAD, bucket, oldKey), uid), null);
    this.overlay.set(cat(objectPrefix(F_UPLOAD, bucket, key), uid), encodeUpload(upload));
    this.overlay.set(cat(bucketPrefix(F_UPLOAD_BY_ID, bucket), uid), cat(RECORD_V1, nameBytes(key, "object key")));
  }

  deleteUpload(bucket: string, uploadId: string): void {
    this.check();
    const key = this.reads.uploadKey(bucket, uploadId);
    if (key === undefined) return;
    const uid = idBytes(uploadId, "upload id");
    this.overlay.set(cat(objectPrefix(F_UPLOAD, bucket, key), uid), null);
    this.overlay.set(cat(bucketPrefix(F_UPLOAD_BY_ID, bucket), uid), null);
  }

  putPart(part: PartRecord): void {
    this.check();
    const n = part.partNumber;
    if (!Number.isInteger(n) || n < 0 || n >= TWO_32) throw invalid(`a part number is a 32-bit unsigned integer, got ${n}`);
    this.overlay.set(partKey(part.uploadId, n), encodePart(part));
  }

  deletePart(uploadId: string, partNumber: number): void {
    this.check();
    if (!Number.isInteger(partNumber) || partNumber < 0 || partNumber >= TWO_32) return;
    this.overlay.set(partKey(uploadId, partNumber), null);
  }

  addCounters(delta: Partial<Counters>): void {
    this.check();
    for (const f of COUNTER_FIELDS) {
      const d = delta[f];
      if (d !== undefined) checkUint(d, `counter ${f}`);
    }
    const acc = (this.counterDelta ??= zeroCounters());
    for (const f of COUNTER_FIELDS) acc[f] += delta[f] ?? 0;
  }

  async nextSequence(): Promise<number> {
    this.check();
    this.sequenceUsed = true;
    return this.sequence.take();
  }

  observeSequence(seq: number): void {
    this.check();
    if (this.sequence.observe(checkSequence(seq))) this.sequenceUsed = true;
  }

  appendEvent(event: OutboxEvent): string {
    this.check();
    const time = event.time ?? Date.now();
    if (!Number.isFinite(time)) throw invalid("an event time must be a finite number");
    const value = encodeOutboxEvent(event, time);
    const n = this.outbox.last + 1;
    if (n > SEQ_MAX) throw invalid("the outbox sequence is exhausted");
    this.overlay.set(outboxKey(n), value);
    this.outbox.last = n;
    this.outbox.count++;
    this.outboxTouched = true;
    return `outbox-${n}`;
  }

  appendJournal(encode: (index: number) => Uint8Array): number {
    this.check();
    const n = this.journalLast + 1;
    if (n > SEQ_MAX) throw invalid("the journal index is exhausted");
    const bytes = encode(n);
    this.overlay.set(journalKey(n), cat(EMPTY_RECORD, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)));
    this.journalLast = n;
    this.journalTouched = true;
    return n;
  }

  deleteJournal(indexes: readonly number[]): void {
    this.check();
    for (const n of indexes) {
      if (!Number.isSafeInteger(n) || n < 1) throw invalid(`not a journal index: ${n}`);
      this.overlay.set(journalKey(n), null);
    }
  }

  observeJournal(index: number): void {
    this.check();
    if (!Number.isSafeInteger(index) || index < 0) throw invalid(`not a journal index: ${index}`);
    if (index > this.journalLast) {
      this.journalLast = index;
      this.journalTouched = true;
    }
  }

  async journalIndex(): Promise<number> {
    this.check();
    return this.journalLast;
  }

  listJournal(): AsyncIterable<{ index: number; entry: Buffer }> {
    this.check();
    return this.store.listJournal();
  }

  deleteOutbox(ids: readonly string[]): void {
    this.check();
    for (const id of ids) {
      const m = typeof id === "string" ? OUTBOX_ID.exec(id) : null;
      if (m === null) throw invalid(`not an outbox event id: ${JSON.stringify(id)}`);
      const n = Number(m[1]);
      if (n > SEQ_MAX) continue;
      const k = outboxKey(n);
      if (this.reads.rows.get(k) === undefined) continue;
      this.overlay.set(k, null);
      this.outboxDeleted.add(n);
      this.outbox.count--;
      this.outboxTouched = true;
    }
  }
}
