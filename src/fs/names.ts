/**
 * The namespace of the POSIX view (docs/FS.md): how a path maps to a bucket and an object key, how
 * attributes live in an object's user metadata, and inode numbers.
 *
 * `/` lists the buckets; `/bucket/a/b` is the object `a/b` of `bucket`; a directory `/bucket/a` is
 * the marker object `a/` and/or any key under `a/` (implied). Keys the view cannot show (empty
 * segments, `.` or `..` segments, segments over 255 bytes) are hidden from it, not changed.
 */
import { createHash } from "node:crypto";
import { bucketNameProblem } from "../store/names.js";
import type { VersionHeader } from "../meta/types.js";
import { FsError } from "./errors.js";

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
/** Special files (mknod): a FIFO, a character or block device, a socket. Empty objects with their mode. */
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFSOCK = 0o140000;

/** Longest name of one path segment (bytes of UTF-8), as Linux's NAME_MAX. */
export const NAME_MAX = 255;
/** Longest object key (S3's). */
export const KEY_MAX = 1024;

/** User-metadata names of the attributes (the ones s3fs and rclone use, so their objects read the same). */
export const META_MODE = "mode";
export const META_UID = "uid";
export const META_GID = "gid";
/** Seconds since the epoch, decimal with a fraction (rclone's form). */
export const META_MTIME = "mtime";
/** The inode number, once one was assigned (files and directories made or renamed through the view). */
export const META_INO = "stowage-ino";
/** The device number of a character or block device node (Linux's encoding, decimal). */
export const META_RDEV = "rdev";

/** Content types of special files' objects (freedesktop.org's shared MIME names). */
export const SPECIAL_CONTENT_TYPES: Readonly<Record<number, string>> = {
  [S_IFIFO]: "inode/fifo",
  [S_IFCHR]: "inode/chardevice",
  [S_IFBLK]: "inode/blockdevice",
  [S_IFSOCK]: "inode/socket",
};

export const DIRECTORY_CONTENT_TYPE = "application/x-directory";

export interface FsPath {
  /** Absent for the root. */
  bucket?: string;
  /** The object key ("" for a bucket's root directory), without a trailing slash. */
  key: string;
  /** Normalized path, `/bucket/key`. */
  path: string;
}

/** True when `name` can be one segment of a path in the view. */
export function validName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\u0000") && Buffer.byteLength(name, "utf8") <= NAME_MAX;
}

/** Parses an absolute path; `.`/`..` segments and empty names are EINVAL, over-long ones ENAMETOOLONG. */
export function parsePath(path: string): FsPath {
  if (typeof path !== "string" || !path.startsWith("/")) throw new FsError("EINVAL", `not an absolute path: ${JSON.stringify(path)}`);
  const parts = path.split("/").slice(1);
  if (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
  if (parts.length === 0) return { key: "", path: "/" };
  for (const p of parts) {
    if (p === "" || p === "." || p === ".." || p.includes("\u0000")) throw new FsError("EINVAL", `invalid path ${JSON.stringify(path)}`);
    if (Buffer.byteLength(p, "utf8") > NAME_MAX) throw new FsError("ENAMETOOLONG", `a name in ${JSON.stringify(path.slice(0, 80))} is longer than ${NAME_MAX} bytes`);
  }
  const [bucket, ...rest] = parts;
  const key = rest.join("/");
  // A directory's marker is `key/`: keep room for the slash.
  if (Buffer.byteLength(key, "utf8") + 1 > KEY_MAX) throw new FsError("ENAMETOOLONG", `path ${JSON.stringify(path.slice(0, 80))} is longer than an object key may be`);
  return { bucket: bucket!, key, path: "/" + parts.join("/") };
}

/** The parent of a parsed path (the root's parent is the root). */
export function parentOf(p: FsPath): FsPath {
  if (p.bucket === undefined) return p;
  if (p.key === "") return { key: "", path: "/" };
  const i = p.key.lastIndexOf("/");
  const key = i < 0 ? "" : p.key.slice(0, i);
  return { bucket: p.bucket, key, path: key === "" ? `/${p.bucket}` : `/${p.bucket}/${key}` };
}

export function baseName(p: FsPath): string {
  if (p.bucket === undefined) return "";
  if (p.key === "") return p.bucket;
  return p.key.slice(p.key.lastIndexOf("/") + 1);
}

/** True when a top-level name can be a bucket. */
export function validBucketName(name: string): boolean {
  return bucketNameProblem(name) === undefined;
}

/** The key prefix of a directory's entries ("" for a bucket root). */
export function dirPrefix(key: string): string {
  return key === "" ? "" : key + "/";
}

/**
 * The inode number of an entry with no recorded one: from its bucket and key, in [2^52, 2^53), so
 * it never meets an assigned one (those come from the version sequence, far below 2^52).
 */
export function hashIno(bucket: string, key: string): number {
  const h = createHash("sha256").update(bucket).update("\u0000").update(key).digest();
  // 52 bits.
  const hi = h.readUInt32BE(0) & 0xfffff;
  const lo = h.readUInt32BE(4);
  return 2 ** 52 + hi * 2 ** 32 + lo;
}

export const ROOT_INO = 1;

export interface Stat {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  blksize: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Device number of a character or block device node (0 otherwise). */
  rdev: number;
}

export type EntryType = "file" | "dir" | "symlink" | "fifo" | "char" | "block" | "socket";

export function typeOfMode(mode: number): EntryType {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFSOCK:
      return "socket";
    default:
      return "file";
  }
}

/** True for the file types mknod makes (FIFO, devices, socket). */
export function isSpecialMode(mode: number): boolean {
  const t = mode & S_IFMT;
  return t === S_IFIFO || t === S_IFCHR || t === S_IFBLK || t === S_IFSOCK;
}

function num(s: string | undefined): number | undefined {
  if (s === undefined || s.trim() === "") return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

export interface AttrDefaults {
  uid: number;
  gid: number;
  fileMode: number;
  dirMode: number;
}

/** The attributes of an object (a file, a symlink, or a directory marker when `dir`). */
export function statOf(bucket: string, key: string, v: VersionHeader | undefined, dir: boolean, d: AttrDefaults, fallbackTime = 0): Stat {
  const m = v?.userMetadata ?? {};
  const recorded = num(m[META_MODE]);
  let mode: number;
  if (dir) mode = S_IFDIR | ((recorded ?? d.dirMode) & 0o7777);
  else if (recorded !== undefined && ((recorded & S_IFMT) === S_IFLNK || isSpecialMode(recorded))) mode = (recorded & S_IFMT) | (recorded & 0o7777);
  else mode = S_IFREG | ((recorded ?? d.fileMode) & 0o7777);
  const t = mode & S_IFMT;
  const rdev = t === S_IFCHR || t === S_IFBLK ? (num(m[META_RDEV]) ?? 0) : 0;
  const ctime = v?.lastModified ?? fallbackTime;
  const mtime = parseMtime(m[META_MTIME]) ?? ctime;
  const size = dir ? 0 : (v?.size ?? 0);
  const ino = num(m[META_INO]);
  return {
    ino: ino !== undefined && Number.isSafeInteger(ino) && ino > 0 ? ino : hashIno(bucket, key),
    mode,
    nlink: 1,
    uid: num(m[META_UID]) ?? d.uid,
    gid: num(m[META_GID]) ?? d.gid,
    size,
    blocks: Math.ceil(size / 512),
    blksize: 4096,
    atimeMs: mtime,
    mtimeMs: mtime,
    ctimeMs: ctime,
    rdev: Number.isSafeInteger(rdev) && rdev >= 0 && rdev <= 0xffffffff ? rdev : 0,
  };
}

/**
 * `mtime` metadata from ms: seconds with a fraction (rclone's form), to the microsecond, truncated —
 * never rounded up across a millisecond or second, which tools that compare whole units (rsync,
 * make) would see as a change. Whole milliseconds keep three decimals.
 */
export function mtimeValue(ms: number): string {
  if (!(ms >= 0)) return (ms / 1000).toFixed(3);
  const sec = Math.floor(ms / 1000);
  const us = Math.min(999_999, Math.floor((ms - sec * 1000) * 1000 + 1e-3));
  const frac = String(us).padStart(6, "0");
  return `${sec}.${us % 1000 === 0 ? frac.slice(0, 3) : frac}`;
}

/** ms from `mtime` metadata (digits parsed exactly to the microsecond; other numbers rounded to the ms). */
export function parseMtime(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const m = /^(\d{1,15})(?:\.(\d{1,9}))?$/.exec(s.trim());
  if (m === null) {
    const n = num(s);
    return n === undefined ? undefined : Math.round(n * 1000);
  }
  return Number(m[1]) * 1000 + Number((m[2] ?? "").padEnd(6, "0").slice(0, 6)) / 1000;
}
