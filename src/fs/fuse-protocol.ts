/**
 * The FUSE kernel protocol (linux/fuse.h, version 7.x) as far as Stowage speaks it: request
 * opcodes, the fixed-size structures it reads and writes, and their encoders. Little-endian, as
 * the kernel writes them on every architecture Node runs on. Only the layouts are here; what the
 * requests mean to Stowage is src/fs/fuse.ts.
 */

export const FUSE_KERNEL_VERSION = 7;
/** The protocol minor version this implementation is written against (Linux 5.x: max_pages, flags2 absent). */
export const FUSE_KERNEL_MINOR = 31;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
} as const;

/** INIT flags (fuse_init_in/out.flags). */
export const Init = {
  ASYNC_READ: 1 << 0,
  ATOMIC_O_TRUNC: 1 << 3,
  BIG_WRITES: 1 << 5,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
} as const;

/** SETATTR's `valid` bits. */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
} as const;

export const GETATTR_FH = 1;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;
export const INIT_OUT_SIZE = 64;
export const KSTATFS_SIZE = 80;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function readInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: b.readBigUInt64LE(16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** A 64-bit field the protocol uses for sizes and offsets: exact up to 2^53. */
export function u64(b: Buffer, at: number): number {
  return Number(b.readBigUInt64LE(at));
}

/** NUL-terminated strings packed one after another (names in LOOKUP, SYMLINK, RENAME, ...). */
export function cstrings(b: Buffer, at: number, count: number): string[] {
  const out: string[] = [];
  let p = at;
  for (let i = 0; i < count; i++) {
    const end = b.indexOf(0, p);
    if (end < 0) throw new RangeError("FUSE request: unterminated name");
    out.push(b.toString("utf8", p, end));
    p = end + 1;
  }
  return out;
}

export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  blksize: number;
  /** Device number (character and block device nodes). */
  rdev: number;
}

function writeTime(b: Buffer, secAt: number, nsecAt: number, ms: number): void {
  const sec = Math.floor(ms / 1000);
  b.writeBigUInt64LE(BigInt(Math.max(0, sec)), secAt);
  b.writeUInt32LE(Math.max(0, Math.min(999_999_999, Math.round((ms - sec * 1000) * 1e6))), nsecAt);
}

export function writeAttr(b: Buffer, at: number, a: Attr): void {
  b.writeBigUInt64LE(BigInt(a.ino), at);
  b.writeBigUInt64LE(BigInt(a.size), at + 8);
  b.writeBigUInt64LE(BigInt(a.blocks), at + 16);
  writeTime(b, at + 24, at + 48, a.atimeMs);
  writeTime(b, at + 32, at + 52, a.mtimeMs);
  writeTime(b, at + 40, at + 56, a.ctimeMs);
  b.writeUInt32LE(a.mode >>> 0, at + 60);
  b.writeUInt32LE(a.nlink, at + 64);
  b.writeUInt32LE(a.uid >>> 0, at + 68);
  b.writeUInt32LE(a.gid >>> 0, at + 72);
  b.writeUInt32LE(a.rdev >>> 0, at + 76);
  b.writeUInt32LE(a.blksize, at + 80);
  b.writeUInt32LE(0, at + 84); // flags
}

/** Splits a cache lifetime in seconds into the protocol's seconds + nanoseconds. */
function writeValid(b: Buffer, secAt: number, nsecAt: number, seconds: number): void {
  const s = Math.floor(seconds);
  b.writeBigUInt64LE(BigInt(s), secAt);
  b.writeUInt32LE(Math.round((seconds - s) * 1e9), nsecAt);
}

export function entryOut(nodeid: bigint, attr: Attr, validSeconds: number): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  b.writeBigUInt64LE(nodeid, 0);
  b.writeBigUInt64LE(0n, 8); // generation: node ids are never reused within a mount
  writeValid(b, 16, 32, validSeconds); // entry_valid
  writeValid(b, 24, 36, validSeconds); // attr_valid
  writeAttr(b, 40, attr);
  return b;
}

export function attrOut(attr: Attr, validSeconds: number): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  writeValid(b, 0, 8, validSeconds);
  writeAttr(b, 16, attr);
  return b;
}

export function openOut(fh: number, openFlags: number): Buffer {
  const b = Buffer.alloc(OPEN_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(fh), 0);
  b.writeUInt32LE(openFlags, 8);
  return b;
}

export interface InitReply {
  flags: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
  maxBackground: number;
}

export function initOut(r: InitReply): Buffer {
  const b = Buffer.alloc(INIT_OUT_SIZE);
  b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  b.writeUInt32LE(FUSE_KERNEL_MINOR, 4);
  b.writeUInt32LE(r.maxReadahead, 8);
  b.writeUInt32LE(r.flags >>> 0, 12);
  b.writeUInt16LE(r.maxBackground, 16);
  b.writeUInt16LE(Math.floor((r.maxBackground * 3) / 4), 18); // congestion_threshold
  b.writeUInt32LE(r.maxWrite, 20);
  b.writeUInt32LE(1, 24); // time_gran: nanoseconds
  b.writeUInt16LE(r.maxPages, 28);
  return b;
}

export interface Kstatfs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export function statfsOut(s: Kstatfs): Buffer {
  const b = Buffer.alloc(KSTATFS_SIZE);
  b.writeBigUInt64LE(BigInt(s.blocks), 0);
  b.writeBigUInt64LE(BigInt(s.bfree), 8);
  b.writeBigUInt64LE(BigInt(s.bavail), 16);
  b.writeBigUInt64LE(BigInt(s.files), 24);
  b.writeBigUInt64LE(BigInt(s.ffree), 32);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.frsize, 48);
  return b;
}

export function writeOut(size: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(size, 0);
  return b;
}

/** DT_* types of directory entries. */
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

/** Size of one fuse_dirent with its name, padded to 8 bytes. */
export function direntSize(nameBytes: number): number {
  return (24 + nameBytes + 7) & ~7;
}

/** Writes one fuse_dirent at `at`; `off` is the offset the kernel hands back to continue after it. */
export function writeDirent(b: Buffer, at: number, ino: number, off: number, type: number, name: Buffer): number {
  b.writeBigUInt64LE(BigInt(ino), at);
  b.writeBigUInt64LE(BigInt(off), at + 8);
  b.writeUInt32LE(name.length, at + 16);
  b.writeUInt32LE(type, at + 20);
  name.copy(b, at + 24);
  const size = direntSize(name.length);
  b.fill(0, at + 24 + name.length, at + size);
  return size;
}

/** Size of one fuse_direntplus (an entry_out, then a dirent), 8-byte aligned. */
export function direntPlusSize(nameBytes: number): number {
  return ENTRY_OUT_SIZE + direntSize(nameBytes);
}

/**
 * Writes one fuse_direntplus at `at`: the entry (node 0 for `.` and `..`, which the kernel then
 * leaves alone) and the dirent. Returns its size.
 */
export function writeDirentPlus(b: Buffer, at: number, nodeid: bigint, attr: Attr | undefined, validSeconds: number, ino: number, off: number, type: number, name: Buffer): number {
  if (attr === undefined) b.fill(0, at, at + ENTRY_OUT_SIZE);
  else entryOut(nodeid, attr, validSeconds).copy(b, at);
  return ENTRY_OUT_SIZE + writeDirent(b, at + ENTRY_OUT_SIZE, ino, off, type, name);
}

export function outHeader(len: number, error: number, unique: bigint): Buffer {
  const b = Buffer.alloc(OUT_HEADER_SIZE);
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
  return b;
}
