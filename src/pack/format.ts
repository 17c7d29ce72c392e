/**
 * The pack blob, format version 1: many sealed records back to back, then their sealed index, then a
 * fixed 16-byte trailer. Self-describing: with the repository key, the pack alone yields every
 * record's id, kind, compression method, place and lengths (the chunk index can be rebuilt from the
 * packs). Documented byte by byte in docs/FORMATS.md ("Packs"); integers are little-endian.
 *
 * ```
 * record*  sealedIndex  trailer(16)
 * record      = AEAD(data-encryption).seal(storedBytes, "STWR" ‖ kind u8 ‖ method u8 ‖ id[32])
 * sealedIndex = AEAD(index-encryption).seal(index, "STWI" ‖ packId[16])
 * index       = version u8 (1) ‖ packId[16] ‖ count u32 ‖ count × (kind u8 ‖ method u8 ‖ id[32] ‖
 *               offset u32 ‖ storedLength u32 ‖ rawLength u32)
 * trailer     = sealedIndexLength u32 ‖ format version u32 (1) ‖ "STWPACK1"
 * ```
 *
 * Records sit at offset 0 onwards in index order with no gaps, and the index starts where the last
 * record ends; readers check this. The record's associated data binds the ciphertext to its kind,
 * method and id, so a record cannot be served under another id or decompressed with another method;
 * the index's binds it to the pack id (the blob key names the pack), so an index cannot be moved to
 * another pack. The trailer is not authenticated, but everything it points at is: a damaged length
 * makes the index fail authentication, and a damaged version field is told from a newer format by
 * trying version 1 (as the sealed-chunk version byte is, src/codec/aead.ts).
 *
 * Errors: damage, truncation, a wrong key or a moved index are `STOWAGE_INTEGRITY` naming the pack
 * (and, for a record, the chunk id and offset); a newer trailer or index version, an unknown record
 * kind or compression method are `STOWAGE_FORMAT_VERSION`. Nothing unverified is ever returned.
 */
import { aeadCipher, SEALED_OVERHEAD } from "../codec/aead.js";
import { decompressChunk } from "../codec/compress.js";
import type { RepositoryKeys } from "../codec/keys.js";
import type { BlobBackend } from "../backend/backend.js";
import { isStowageError, StowageError } from "../errors.js";
import { secureRandomBytes } from "../util/random.js";

/** Pack format version written in the trailer. */
export const PACK_FORMAT_VERSION = 1;
/** Version byte at the start of the (plaintext) index. */
export const PACK_INDEX_VERSION = 1;
export const PACK_MAGIC = "STWPACK1";
/** Every pack blob key starts with this (see {@link packBlobKey}). */
export const PACK_PREFIX = "packs/";
export const PACK_TRAILER_BYTES = 16;
export const PACK_ID_BYTES = 16;
/** version u8 ‖ pack id ‖ count u32. */
export const PACK_INDEX_HEADER_BYTES = 1 + PACK_ID_BYTES + 4;
/** kind u8 ‖ method u8 ‖ id[32] ‖ offset u32 ‖ storedLength u32 ‖ rawLength u32. */
export const PACK_INDEX_ENTRY_BYTES = 1 + 1 + 32 + 4 + 4 + 4;
/** Largest pack written (offsets are u32, so readers would cope with up to 4 GiB). */
export const MAX_PACK_BYTES = 1 << 30;
/** Largest plaintext record (the compressor's limit). */
export const MAX_RAW_LENGTH = 1 << 30;
/** The tail fetched first by {@link readPackIndex}: trailer and index in one GET for up to ~1400 entries. */
export const DEFAULT_TAIL_GUESS = 64 * 1024;

/** Record kinds (*persisted*). */
export const RECORD_KIND_CHUNK = 1;
/** A metadata record travelling in a pack (issue 7); its id is any 32 bytes the writer chooses. */
export const RECORD_KIND_METADATA = 2;
export type RecordKind = typeof RECORD_KIND_CHUNK | typeof RECORD_KIND_METADATA;

const RECORD_AAD_MAGIC = Buffer.from("STWR", "ascii");
const INDEX_AAD_MAGIC = Buffer.from("STWI", "ascii");
const MAGIC_BYTES = Buffer.from(PACK_MAGIC, "ascii");
const ID_BYTES = 32;
const U32_MAX = 0xffff_ffff;
const PACK_ID_RE = /^[0-9a-f]{32}$/;

/** One entry of a pack index: where a record is and how to open it. */
export interface PackIndexEntry {
  kind: RecordKind;
  /** Compression method byte (src/codec/compress.ts). */
  method: number;
  /** 32 bytes: the chunk id, or the writer's id of a metadata record. */
  id: Buffer;
  /** Offset of the sealed record in the pack blob. */
  offset: number;
  /** Bytes of the sealed record. */
  storedLength: number;
  /** Plaintext length (after decompression). */
  rawLength: number;
}

/** A sealed record ready to go into a pack (see {@link sealRecord}). */
export interface SealedRecord {
  kind: RecordKind;
  method: number;
  id: Uint8Array;
  rawLength: number;
  sealed: Uint8Array;
}

/** The body of a pack, as parts to pass to `BlobBackend.put`, and its index. */
export interface EncodedPack {
  parts: Uint8Array[];
  entries: PackIndexEntry[];
  /** Bytes of the whole blob. */
  size: number;
}

export interface PackTrailer {
  sealedIndexLength: number;
  version: number;
}

export interface PackIndex {
  packId: string;
  entries: PackIndexEntry[];
  /** Bytes of the whole blob. */
  size: number;
}

function integrity(packId: string | undefined, what: string): StowageError {
  return new StowageError("STOWAGE_INTEGRITY", `pack ${packId ?? "(unknown id)"}: ${what}`);
}

function invalid(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", what);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** A fresh pack id: 16 random bytes as 32 lowercase hex digits. */
export function newPackId(): string {
  return secureRandomBytes(PACK_ID_BYTES).toString("hex");
}

export function isPackId(id: string): boolean {
  return typeof id === "string" && PACK_ID_RE.test(id);
}

function checkPackId(id: string): void {
  if (!isPackId(id)) throw invalid(`pack id must be 32 lowercase hex digits, got ${JSON.stringify(id)}`);
}

/** The 16 bytes of a pack id. */
export function packIdBytes(id: string): Buffer {
  checkPackId(id);
  return Buffer.from(id, "hex");
}

/** `packs/<first 2 hex digits>/<id>`: the prefix spreads packs over 256 key ranges. */
export function packBlobKey(id: string): string {
  checkPackId(id);
  return `packs/${id.slice(0, 2)}/${id}`;
}

/** The pack id named by a blob key's last segment (as written by {@link packBlobKey}). */
export function packIdFromBlobKey(blobKey: string): string {
  const last = blobKey.slice(blobKey.lastIndexOf("/") + 1);
  if (!isPackId(last)) throw invalid(`blob key ${JSON.stringify(blobKey)} does not name a pack`);
  return last;
}

function checkKind(kind: number): asserts kind is RecordKind {
  if (kind !== RECORD_KIND_CHUNK && kind !== RECORD_KIND_METADATA) throw invalid(`record kind ${kind} is not 1 or 2`);
}

function checkId(id: Uint8Array): void {
  if (!(id instanceof Uint8Array) || id.length !== ID_BYTES) throw invalid("a record id must be 32 bytes");
}

function checkMethod(method: number): void {
  if (!Number.isInteger(method) || method < 0 || method > 255) throw invalid(`compression method ${method} is not a byte`);
}

/** The associated data of a record: `"STWR" ‖ kind ‖ method ‖ id`. */
export function recordAad(kind: RecordKind, method: number, id: Uint8Array): Buffer {
  const aad = Buffer.allocUnsafe(4 + 2 + ID_BYTES);
  RECORD_AAD_MAGIC.copy(aad, 0);
  aad[4] = kind;
  aad[5] = method;
  aad.set(id, 6);
  return aad;
}

/** The associated data of a pack index: `"STWI" ‖ pack id bytes`. */
export function indexAad(packId: string): Buffer {
  return Buffer.concat([INDEX_AAD_MAGIC, packIdBytes(packId)]);
}

/** Seals the stored (compressed or raw) bytes of one record with the data-encryption key. */
export function sealRecord(keys: RepositoryKeys, kind: RecordKind, method: number, id: Uint8Array, stored: Uint8Array): Uint8Array {
  checkKind(kind);
  checkMethod(method);
  checkId(id);
  if (!(stored instanceof Uint8Array)) throw invalid("stored bytes must be a Uint8Array");
  return aeadCipher(keys, "data-encryption").seal(stored, recordAad(kind, method, id));
}

/** Bytes of the sealed index of a pack holding `count` records. */
export function sealedIndexLength(count: number): number {
  return PACK_INDEX_HEADER_BYTES + count * PACK_INDEX_ENTRY_BYTES + SEALED_OVERHEAD;
}

/** Bytes of a pack holding `count` records of `recordBytes` sealed bytes in all. */
export function packSize(recordBytes: number, count: number): number {
  return recordBytes + sealedIndexLength(count) + PACK_TRAILER_BYTES;
}

/** The plaintext index of `entries`. */
export function encodeIndex(packId: string, entries: readonly PackIndexEntry[]): Buffer {
  const buf = Buffer.allocUnsafe(PACK_INDEX_HEADER_BYTES + entries.length * PACK_INDEX_ENTRY_BYTES);
  buf[0] = PACK_INDEX_VERSION;
  packIdBytes(packId).copy(buf, 1);
  buf.writeUInt32LE(entries.length, 1 + PACK_ID_BYTES);
  let pos = PACK_INDEX_HEADER_BYTES;
  for (const e of entries) {
    buf[pos] = e.kind;
    buf[pos + 1] = e.method;
    buf.set(e.id, pos + 2);
    buf.writeUInt32LE(e.offset, pos + 34);
    buf.writeUInt32LE(e.storedLength, pos + 38);
    buf.writeUInt32LE(e.rawLength, pos + 42);
    pos += PACK_INDEX_ENTRY_BYTES;
  }
  return buf;
}

export function encodeTrailer(sealedIndexLen: number): Buffer {
  const t = Buffer.allocUnsafe(PACK_TRAILER_BYTES);
  t.writeUInt32LE(sealedIndexLen, 0);
  t.writeUInt32LE(PACK_FORMAT_VERSION, 4);
  MAGIC_BYTES.copy(t, 8);
  return t;
}

/**
 * Lays out a pack: the records in the given order from offset 0, the sealed index, the trailer.
 * The records' bytes are not copied (`parts` references them).
 */
export function encodePack(keys: RepositoryKeys, packId: string, records: readonly SealedRecord[]): EncodedPack {
  checkPackId(packId);
  const entries: PackIndexEntry[] = [];
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const r of records) {
    checkKind(r.kind);
    checkMethod(r.method);
    checkId(r.id);
    if (!Number.isInteger(r.rawLength) || r.rawLength < 0 || r.rawLength > MAX_RAW_LENGTH) throw invalid(`raw length ${r.rawLength} out of range`);
    if (r.sealed.length < SEALED_OVERHEAD) throw invalid("a sealed record is shorter than the AEAD overhead");
    entries.push({ kind: r.kind, method: r.method, id: Buffer.from(r.id), offset, storedLength: r.sealed.length, rawLength: r.rawLength });
    parts.push(r.sealed);
    offset += r.sealed.length;
    if (offset > MAX_PACK_BYTES) throw invalid(`pack ${packId} would exceed ${MAX_PACK_BYTES} bytes`);
  }
  const sealedIndex = aeadCipher(keys, "index-encryption").seal(encodeIndex(packId, entries), indexAad(packId));
  const size = offset + sealedIndex.length + PACK_TRAILER_BYTES;
  if (size > MAX_PACK_BYTES) throw invalid(`pack ${packId} would exceed ${MAX_PACK_BYTES} bytes`);
  parts.push(sealedIndex, encodeTrailer(sealedIndex.length));
  return { parts, entries, size };
}

/**
 * Parses the last 16 bytes of a pack. Bad length or magic, or version 0, are `STOWAGE_INTEGRITY`;
 * a version above {@link PACK_FORMAT_VERSION} is `STOWAGE_FORMAT_VERSION` (see {@link readPackIndex}
 * for telling a damaged version field from a newer pack).
 */
export function parsePackTrailer(last16: Uint8Array, packId?: string): PackTrailer {
  if (!(last16 instanceof Uint8Array) || last16.length !== PACK_TRAILER_BYTES) {
    throw integrity(packId, `truncated: the trailer needs ${PACK_TRAILER_BYTES} bytes, got ${last16?.length ?? 0}`);
  }
  const b = Buffer.from(last16.buffer, last16.byteOffset, last16.byteLength);
  if (!b.subarray(8).equals(MAGIC_BYTES)) throw integrity(packId, "not a pack (bad trailer magic), or truncated");
  const sealedIndexLen = b.readUInt32LE(0);
  const version = b.readUInt32LE(4);
  if (version === 0) throw integrity(packId, "trailer format version 0");
  if (version > PACK_FORMAT_VERSION) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      `pack ${packId ?? "(unknown id)"}: format version ${version} is unknown to this build (${PACK_FORMAT_VERSION}): written by a newer Stowage, or damaged`,
    );
  }
  if (sealedIndexLen < sealedIndexLength(0)) throw integrity(packId, `sealed index length ${sealedIndexLen} is too small`);
  return { sealedIndexLength: sealedIndexLen, version };
}

/**
 * Authenticates and decodes a sealed pack index. With `recordsLength` (the bytes before the index),
 * also checks that the records fill exactly that span. Records must lie back to back from offset 0.
 */
export function openPackIndex(keys: RepositoryKeys, packId: string, sealedIndex: Uint8Array, recordsLength?: number): PackIndexEntry[] {
  checkPackId(packId);
  let plain: Uint8Array;
  try {
    plain = aeadCipher(keys, "index-encryption").open(sealedIndex, indexAad(packId));
  } catch (err) {
    throw asDamage(err, `pack ${packId}: index`);
  }
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (b.length < PACK_INDEX_HEADER_BYTES) throw integrity(packId, `index of ${b.length} bytes is truncated`);
  const version = b[0]!;
  if (version === 0) throw integrity(packId, "index version 0");
  if (version > PACK_INDEX_VERSION) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      `pack ${packId}: index version ${version} is unknown to this build (${PACK_INDEX_VERSION}): written by a newer Stowage`,
    );
  }
  if (!b.subarray(1, 1 + PACK_ID_BYTES).equals(packIdBytes(packId))) throw integrity(packId, "the index names another pack");
  const count = b.readUInt32LE(1 + PACK_ID_BYTES);
  if (b.length !== PACK_INDEX_HEADER_BYTES + count * PACK_INDEX_ENTRY_BYTES) {
    throw integrity(packId, `index of ${b.length} bytes does not hold ${count} entries`);
  }
  const entries: PackIndexEntry[] = [];
  let expected = 0;
  for (let i = 0, pos = PACK_INDEX_HEADER_BYTES; i < count; i++, pos += PACK_INDEX_ENTRY_BYTES) {
    const kind = b[pos]!;
    if (kind !== RECORD_KIND_CHUNK && kind !== RECORD_KIND_METADATA) {
      throw new StowageError("STOWAGE_FORMAT_VERSION", `pack ${packId}: record kind ${kind} (entry ${i}) is unknown to this build: written by a newer Stowage`);
    }
    const entry: PackIndexEntry = {
      kind,
      method: b[pos + 1]!,
      id: Buffer.from(b.subarray(pos + 2, pos + 34)),
      offset: b.readUInt32LE(pos + 34),
      storedLength: b.readUInt32LE(pos + 38),
      rawLength: b.readUInt32LE(pos + 42),
    };
    if (entry.offset !== expected) throw integrity(packId, `entry ${i} at offset ${entry.offset}, expected ${expected}`);
    if (entry.storedLength < SEALED_OVERHEAD) throw integrity(packId, `entry ${i} has stored length ${entry.storedLength}`);
    if (entry.rawLength > MAX_RAW_LENGTH) throw integrity(packId, `entry ${i} has raw length ${entry.rawLength}`);
    expected += entry.storedLength;
    if (expected > U32_MAX) throw integrity(packId, `entry ${i} ends past 4 GiB`);
    entries.push(entry);
  }
  if (recordsLength !== undefined && expected !== recordsLength) {
    throw integrity(packId, `records end at ${expected} but the index starts at ${recordsLength}`);
  }
  return entries;
}

/**
 * An AEAD failure inside a version-1 pack, with `context` prefixed. Pack version 1 seals everything
 * with sealed-chunk version 1, so an unknown sealed version there is damage (a misplaced slice, a
 * flipped byte), not a newer writer: a newer sealing would come with a newer pack version.
 */
function asDamage(err: unknown, context: string): unknown {
  if (isStowageError(err, "STOWAGE_INTEGRITY") || isStowageError(err, "STOWAGE_FORMAT_VERSION")) {
    return new StowageError("STOWAGE_INTEGRITY", `${context}: ${err.message}`, { cause: err });
  }
  return err;
}

/** Re-throws an integrity or version error with `context` prefixed; other errors unchanged. */
function rewrap(err: unknown, context: string): unknown {
  if (isStowageError(err, "STOWAGE_INTEGRITY") || isStowageError(err, "STOWAGE_FORMAT_VERSION")) {
    return new StowageError(err.code, `${context}: ${err.message}`, { cause: err });
  }
  return err;
}

/** What {@link openRecord} needs to know about a record (a {@link PackIndexEntry} fits). */
export interface RecordRef {
  kind: RecordKind;
  method: number;
  id: Uint8Array;
  offset: number;
  storedLength: number;
  rawLength: number;
}

/**
 * Authenticates, decrypts and decompresses one sealed record; returns its plaintext, exactly
 * `rawLength` bytes. Failures name the pack (when given), the record id and its offset.
 */
export function openRecord(keys: RepositoryKeys, entry: RecordRef, sealedBytes: Uint8Array, packId?: string): Buffer {
  const where = `pack ${packId ?? "(unknown id)"}: ${entry.kind === RECORD_KIND_METADATA ? "metadata record" : "chunk"} ${hex(entry.id)} at offset ${entry.offset}`;
  if (sealedBytes.length !== entry.storedLength) {
    throw new StowageError("STOWAGE_INTEGRITY", `${where}: truncated (${sealedBytes.length} of ${entry.storedLength} bytes)`);
  }
  let stored: Uint8Array;
  try {
    stored = aeadCipher(keys, "data-encryption").open(sealedBytes, recordAad(entry.kind, entry.method, entry.id));
  } catch (err) {
    throw asDamage(err, where);
  }
  try {
    // The method is authenticated: an unknown one is a newer writer (STOWAGE_FORMAT_VERSION).
    const plain = decompressChunk(entry.method, stored, entry.rawLength);
    return Buffer.isBuffer(plain) ? plain : Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  } catch (err) {
    throw rewrap(err, where);
  }
}

/** The "not found" error of a missing pack blob, naming the pack. */
export function packNotFound(err: unknown, packId: string, blobKey: string, location: string): unknown {
  if (isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) {
    return new StowageError("STOWAGE_BACKEND_NOT_FOUND", `pack ${packId} (${blobKey}) is missing from ${location}`, { cause: err });
  }
  return err;
}

/**
 * Reads and authenticates the index of the pack at `blobKey` (whose last segment is the pack id).
 * One ranged GET of the tail (the last {@link DEFAULT_TAIL_GUESS} bytes, or the whole pack when
 * smaller), a second one only when the index is larger; a HEAD first only when `size` is not given.
 */
export async function readPackIndex(backend: BlobBackend, keys: RepositoryKeys, blobKey: string, size?: number): Promise<PackIndex> {
  const packId = packIdFromBlobKey(blobKey);
  const get = async (offset: number, length: number): Promise<Buffer> => {
    try {
      return await backend.get(blobKey, { offset, length });
    } catch (err) {
      throw packNotFound(err, packId, blobKey, backend.location);
    }
  };
  if (size === undefined) {
    const info = await backend.head(blobKey);
    if (info === undefined) {
      throw new StowageError("STOWAGE_BACKEND_NOT_FOUND", `pack ${packId} (${blobKey}) is missing from ${backend.location}`);
    }
    size = info.size;
  }
  if (!Number.isSafeInteger(size) || size < 0) throw invalid(`pack size ${size} is not a byte count`);
  if (size < PACK_TRAILER_BYTES + sealedIndexLength(0)) throw integrity(packId, `truncated: ${size} bytes`);
  if (size > U32_MAX) throw integrity(packId, `${size} bytes is larger than any pack`);
  const tailLength = Math.min(size, DEFAULT_TAIL_GUESS);
  let tail = await get(size - tailLength, tailLength);
  if (tail.length !== tailLength) throw integrity(packId, `truncated: expected ${size} bytes, read ${size - tailLength + tail.length}`);
  const trailerBytes = tail.subarray(tail.length - PACK_TRAILER_BYTES);
  let trailer: PackTrailer;
  try {
    trailer = parsePackTrailer(trailerBytes, packId);
  } catch (err) {
    if (!isStowageError(err, "STOWAGE_FORMAT_VERSION")) throw err;
    // A damaged version field, or a newer pack? If the rest reads as version 1, it was damage.
    const len = trailerBytes.readUInt32LE(0);
    if (len >= sealedIndexLength(0) && len + PACK_TRAILER_BYTES <= tail.length) {
      const start = tail.length - PACK_TRAILER_BYTES - len;
      try {
        openPackIndex(keys, packId, tail.subarray(start, start + len), size - PACK_TRAILER_BYTES - len);
      } catch {
        throw err;
      }
      throw integrity(packId, `damaged trailer version field (${trailerBytes.readUInt32LE(4)})`);
    }
    throw err;
  }
  const indexLen = trailer.sealedIndexLength;
  if (indexLen + PACK_TRAILER_BYTES > size) throw integrity(packId, `sealed index of ${indexLen} bytes does not fit in ${size} bytes`);
  const need = indexLen + PACK_TRAILER_BYTES;
  if (need > tail.length) {
    const more = await get(size - need, need - tail.length);
    if (more.length !== need - tail.length) throw integrity(packId, "truncated while reading the index");
    tail = Buffer.concat([more, tail]);
  }
  const start = tail.length - need;
  const entries = openPackIndex(keys, packId, tail.subarray(start, start + indexLen), size - need);
  return { packId, entries, size };
}
