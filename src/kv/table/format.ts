/**
 * The sorted-table (SST) file layout, version 1:
 *
 *   data block*  [filter block]  properties block  index block  footer
 *
 * Every block is followed by a 5-byte trailer: compression type (uint8, 0 = none, the only one)
 * and fixed32 crc32 over the block bytes plus the type byte. A BlockHandle {offset, size} names a
 * block's contents; `size` excludes the trailer.
 *
 * Footer (the last 64 bytes of the file; all integers little-endian):
 *    0 fixed64 index offset      8 fixed64 index size
 *   16 fixed64 filter offset    24 fixed64 filter size       (0, 0 when there is no filter)
 *   32 fixed64 properties offset 40 fixed64 properties size
 *   48 fixed32 format version (1)
 *   52 fixed32 crc32 of footer bytes [0, 52)
 *   56 magic "STWKVSST" (8 ASCII bytes)
 *
 * Properties block: varint numEntries, varint numDeletions, varint minSeq, varint maxSeq,
 * varint dataBytes, varint-length-prefixed smallest internal key, then largest; nothing after.
 * (The file size is not stored; a reader takes it from the file.)
 */
import { ByteReader, ByteWriter, crc32, getFixed32, getFixed64, putFixed32, putFixed64 } from "../coding.js";
import { StowageError, corruption } from "../../errors.js";
import type { RandomAccessFile } from "../fs.js";

export const TABLE_FORMAT_VERSION = 1;
export const FOOTER_SIZE = 64;
/** Bytes of the footer covered by its crc. */
export const FOOTER_CRC_COVERED = 52;
export const TABLE_MAGIC: Uint8Array = new TextEncoder().encode("STWKVSST");
export const BLOCK_TRAILER_SIZE = 5;
export const COMPRESSION_NONE = 0;

export interface BlockHandle {
  offset: number;
  size: number;
}

export interface Footer {
  index: BlockHandle;
  /** { offset: 0, size: 0 } when the table has no filter. */
  filter: BlockHandle;
  properties: BlockHandle;
}

export interface TableProperties {
  /** Entries (puts and deletions). */
  numEntries: number;
  /** The first internal key (empty for an empty table). */
  smallest: Uint8Array;
  /** The last internal key (empty for an empty table). */
  largest: Uint8Array;
  minSeq: number;
  maxSeq: number;
  /** Entries of kind KIND_DELETE. */
  numDeletions: number;
  /** Bytes of data blocks, trailers included (= offset of the first non-data block). */
  dataBytes: number;
  /** Size of the whole file. */
  fileSize: number;
}

export function hasFilter(footer: Footer): boolean {
  return footer.filter.size !== 0 || footer.filter.offset !== 0;
}

export function encodeFooter(f: Footer, version = TABLE_FORMAT_VERSION): Uint8Array {
  const out = new Uint8Array(FOOTER_SIZE);
  putFixed64(out, 0, f.index.offset);
  putFixed64(out, 8, f.index.size);
  putFixed64(out, 16, f.filter.offset);
  putFixed64(out, 24, f.filter.size);
  putFixed64(out, 32, f.properties.offset);
  putFixed64(out, 40, f.properties.size);
  putFixed32(out, 48, version);
  putFixed32(out, 52, crc32(out.subarray(0, FOOTER_CRC_COVERED)));
  out.set(TABLE_MAGIC, 56);
  return out;
}

/**
 * Decodes and checks the footer `buf` (64 bytes read at `footerOffset` of `file`). Wrong magic,
 * a bad crc or handles outside the file are corruption; another version is
 * STOWAGE_KV_FORMAT_VERSION.
 */
export function decodeFooter(buf: Uint8Array, file: string, footerOffset: number): Footer {
  if (buf.length < FOOTER_SIZE) throw corruption(file, footerOffset, "truncated table footer");
  for (let i = 0; i < TABLE_MAGIC.length; i++) {
    if (buf[56 + i] !== TABLE_MAGIC[i]) throw corruption(file, footerOffset + 56, "bad table magic");
  }
  if (getFixed32(buf, 52) !== crc32(buf.subarray(0, FOOTER_CRC_COVERED))) {
    throw corruption(file, footerOffset, "table footer checksum mismatch");
  }
  const version = getFixed32(buf, 48);
  if (version !== TABLE_FORMAT_VERSION) {
    throw new StowageError(
      "STOWAGE_KV_FORMAT_VERSION",
      `table ${file} has format version ${version}; this build reads version ${TABLE_FORMAT_VERSION}`,
      { file, offset: footerOffset + 48 },
    );
  }
  const handle = (at: number, what: string, optional: boolean): BlockHandle => {
    const h = { offset: getFixed64(buf, at), size: getFixed64(buf, at + 8) };
    if (optional && h.offset === 0 && h.size === 0) return h;
    if (h.offset + h.size + BLOCK_TRAILER_SIZE > footerOffset) {
      throw corruption(file, footerOffset + at, `${what} handle (${h.offset}, ${h.size}) lies outside the table`);
    }
    return h;
  };
  return {
    index: handle(0, "index", false),
    filter: handle(16, "filter", true),
    properties: handle(32, "properties", false),
  };
}

/** crc32 over block contents plus the compression type byte that follows them. */
export function blockChecksum(blockAndType: Uint8Array): number {
  return crc32(blockAndType);
}

/**
 * Reads the block of `size` content bytes at `offset` with its trailer and returns its contents
 * (a Uint8Array view of the read buffer). Checks the crc when `verify`; a short read or an unknown
 * compression type is corruption.
 */
export function readBlock(file: RandomAccessFile, offset: number, size: number, verify: boolean): Uint8Array {
  const buf = file.read(offset, size + BLOCK_TRAILER_SIZE);
  if (buf.length < size + BLOCK_TRAILER_SIZE) throw corruption(file.path, offset, "block extends past end of file");
  if (verify && getFixed32(buf, size + 1) !== crc32(buf.subarray(0, size + 1))) {
    throw corruption(file.path, offset, `block checksum mismatch (block of ${size} bytes)`);
  }
  if (buf[size] !== COMPRESSION_NONE) {
    throw corruption(file.path, offset + size, `unknown block compression type ${buf[size]}`);
  }
  // A plain Uint8Array view (not a Buffer): keeps element access monomorphic and makes the
  // views handed out later cheap to create.
  return new Uint8Array(buf.buffer, buf.byteOffset, size);
}

export function encodeProperties(p: TableProperties): Uint8Array {
  const w = new ByteWriter(64 + p.smallest.length + p.largest.length);
  w.varint(p.numEntries);
  w.varint(p.numDeletions);
  w.varint(p.minSeq);
  w.varint(p.maxSeq);
  w.varint(p.dataBytes);
  w.lengthPrefixed(p.smallest);
  w.lengthPrefixed(p.largest);
  return w.take();
}

/** Decodes a properties block read at `offset`; `fileSize` is filled in by the caller's knowledge. */
export function decodeProperties(buf: Uint8Array, file: string, offset: number, fileSize: number): TableProperties {
  const r = new ByteReader(buf, (off, what) => corruption(file, offset + off, `properties block: ${what}`));
  const numEntries = r.varint();
  const numDeletions = r.varint();
  const minSeq = r.varint();
  const maxSeq = r.varint();
  const dataBytes = r.varint();
  const smallest = r.lengthPrefixed().slice();
  const largest = r.lengthPrefixed().slice();
  if (!r.done) throw corruption(file, offset + r.off, "properties block: trailing bytes");
  return { numEntries, smallest, largest, minSeq, maxSeq, numDeletions, dataBytes, fileSize };
}
