/**
 * The POSIX view of an object store (docs/FS.md): a path-based file-system API that the FUSE and
 * WebDAV front ends stand on. Every bucket is a top-level directory and every object a file; what
 * a file system writes is an object to S3 and the other way round.
 *
 * Data: writes go to per-file dirty ranges in memory (bounded: a file is flushed when its dirty
 * bytes pass `maxDirtyPerFile`, the largest file when all pass `maxDirtyBytes`); fsync and release
 * flush through composition (src/store/compose.ts), which stores only the bytes written and makes
 * them durable as the bucket's policy says. Close-to-open consistency: release makes a file's
 * writes visible to every reader (S3 included); open sees everything released (or put) before it.
 * Handles of one file in one StowageFs share its dirty bytes, so they see each other's writes at
 * once.
 *
 * Namespace changes (create, mkdir, unlink, rmdir, rename, symlink) commit in one metadata
 * transaction each, with their checks inside it (src/store/compose.ts, commitNamespace).
 */
import { createHash, type Hash } from "node:crypto";
import type { MetaReader, ObjectVersion, VersionHeader, ManifestEntry } from "../meta/types.js";
import { composeObject, commitNamespace, waitJournal, type ComposeEdit, type ComposeOptions, type ComposeResult, type NamespacePlan, type NamespaceResult, type ObjectRef } from "../store/compose.js";
import { readManifest } from "../store/read.js";
import type { ObjectStore } from "../store/store.js";
import { DirtyRanges } from "./dirty.js";
import { FsError, toFsError } from "./errors.js";
import {
  DIRECTORY_CONTENT_TYPE,
  META_GID,
  META_INO,
  META_MODE,
  META_MTIME,
  META_RDEV,
  META_UID,
  ROOT_INO,
  SPECIAL_CONTENT_TYPES,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  baseName,
  dirPrefix,
  hashIno,
  isSpecialMode,
  mtimeValue,
  parentOf,
  parsePath,
  statOf,
  typeOfMode,
  validBucketName,
  validName,
  type AttrDefaults,
  type EntryType,
  type FsPath,
  type Stat,
} from "./names.js";

export interface StowageFsOptions {
  /** Owner of entries that record none (default: this process's). */
  uid?: number;
  gid?: number;
  /** Permission bits of files and directories that record none. Default 0644 / 0755. */
  fileMode?: number;
  dirMode?: number;
  /** Dirty bytes of one file before it is flushed on a write. Default 32 MiB. */
  maxDirtyPerFile?: number;
  /** Dirty bytes of all files before the largest is flushed. Default 128 MiB. */
  maxDirtyBytes?: number;
  /** Size statfs reports. Default 1 PiB. */
  capacityBytes?: number;
  /** Clock, for tests. */
  now?: () => number;
  /**
   * When a change is acknowledged. Default (false): every operation returns once it is durable as
   * the bucket's policy says (the S3 contract; what WebDAV uses). True (the FUSE mount): data is
   * still stored durably before a flush returns, but namespace and attribute changes (create,
   * mkdir, unlink, rename, chmod, ...) return once committed to the local metadata store; their
   * journal entries reach the cloud within about a second, and `fsync`, `flush`/`release` (close)
   * and {@link StowageFs.syncMetadata} wait for every change made before them — the contract of a
   * local file system, where a rename is durable after fsync, and what makes creating many small
   * files fast.
   */
  lazyMetadata?: boolean;
}

export const O_ACCMODE = 3;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;

export interface DirEntry {
  name: string;
  type: EntryType;
  ino: number;
  /** The entry's attributes as getattr would give them (from the same listing: no extra lookup for files). */
  stat: Stat;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

/** Who a new entry belongs to. */
export interface Owner {
  uid: number;
  gid: number;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeMs?: number;
  size?: number;
}

/** What the view knows of an entry. */
type Entry =
  | { kind: "root" }
  | { kind: "bucket"; created: number }
  /**
   * A directory; `marker` is its marker object when it has one (else it is implied by keys under it,
   * and `seen` is the last-modified time of the first of them, which its times show).
   */
  | { kind: "dir"; marker: VersionHeader | undefined; seen?: number }
  /** `special`: a FIFO, device node or socket (mknod): an empty object with its mode. */
  | { kind: "file" | "symlink" | "special"; version: ObjectVersion };

/** Files, symlinks and special files: what is not a directory. */
function isLeaf(e: Entry): e is Extract<Entry, { version: ObjectVersion }> {
  return e.kind === "file" || e.kind === "symlink" || e.kind === "special";
}

/** One open file, shared by its handles. */
class OpenFile {
  /** The version reads start from (what was current at open, or the last flush). */
  base: { size: number; manifest: ManifestEntry[] };
  size: number;
  /** The smallest size the file was cut to since the last flush began (base bytes past it are gone). */
  truncLow: number | undefined;
  dirty = new DirtyRanges();
  /** What a running flush is storing (still read from until the flush ends). */
  flushing: { dirty: DirtyRanges; truncLow: number | undefined } | undefined;
  mtimeMs: number | undefined;
  attrs: SetAttr = {};
  handles = 0;
  unlinked = false;
  /** The file's attributes when it was unlinked (or replaced by a rename): what fstat shows after. */
  lastStat: Stat | undefined;
  chain: Promise<void> = Promise.resolve();
  /** MD5 of the content while it has been written sequentially from 0 (then it is the ETag). */
  seq: { hash: Hash; pos: number } | undefined;

  constructor(
    public path: FsPath,
    version: { size: number; manifest: ManifestEntry[] } | undefined,
  ) {
    this.base = version === undefined ? { size: 0, manifest: [] } : { size: version.size, manifest: version.manifest };
    this.size = this.base.size;
    if (this.size === 0) this.seq = { hash: createHash("md5"), pos: 0 };
  }

  get bucket(): string {
    return this.path.bucket!;
  }

  get dirtyBytes(): number {
    return this.dirty.bytes;
  }

  get needsFlush(): boolean {
    return !this.dirty.empty || this.truncLow !== undefined || this.size !== this.base.size || Object.keys(this.attrs).length > 0 || this.mtimeMs !== undefined;
  }
}

interface Handle {
  file: OpenFile;
  flags: number;
}

export class StowageFs {
  readonly store: ObjectStore;
  readonly #d: AttrDefaults;
  readonly #maxDirtyPerFile: number;
  readonly #maxDirtyBytes: number;
  readonly #capacity: number;
  readonly #now: () => number;
  readonly #lazy: boolean;
  /** The highest journal index of a lazily acknowledged change (0: none). */
  #pendingJournal = 0;
  /** When this view was made: the root directory's times. */
  readonly #started: number;
  /** Open files by path. */
  readonly #files = new Map<string, OpenFile>();
  readonly #handles = new Map<number, Handle>();
  #nextFh = 1;
  #statfsCache: { at: number; used: number } | undefined;

  constructor(store: ObjectStore, options: StowageFsOptions = {}) {
    this.store = store;
    this.#d = {
      uid: options.uid ?? process.getuid?.() ?? 0,
      gid: options.gid ?? process.getgid?.() ?? 0,
      fileMode: options.fileMode ?? 0o644,
      dirMode: options.dirMode ?? 0o755,
    };
    this.#maxDirtyPerFile = options.maxDirtyPerFile ?? 32 * 1024 * 1024;
    this.#maxDirtyBytes = options.maxDirtyBytes ?? 128 * 1024 * 1024;
    this.#capacity = options.capacityBytes ?? 2 ** 50;
    this.#now = options.now ?? Date.now;
    this.#started = this.#now();
    this.#lazy = options.lazyMetadata === true;
  }

  /** Runs an operation, turning store errors into errno-style FsErrors. */
  #journalMode(): ComposeOptions["journal"] {
    return this.#lazy ? { mode: "lazy", onEntry: (i) => (this.#pendingJournal = Math.max(this.#pendingJournal, i)) } : undefined;
  }

  #compose(bucket: string, key: string, edits: readonly ComposeEdit[], options: ComposeOptions = {}): Promise<ComposeResult> {
    const journal = this.#journalMode();
    return composeObject(this.store, bucket, key, edits, journal === undefined ? options : { ...options, journal });
  }

  #namespace(plan: Parameters<typeof commitNamespace>[1]): Promise<NamespaceResult> {
    const journal = this.#journalMode();
    return commitNamespace(this.store, plan, journal === undefined ? {} : { journal });
  }

  /** Waits until every change acknowledged so far is durable as the buckets' policies say (fsync of a directory). */
  async syncMetadata(): Promise<void> {
    if (this.#pendingJournal > 0) await waitJournal(this.store, this.#pendingJournal);
  }

  async #op<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toFsError(err, what);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Looking things up

  /** What `p` is, read through `r` (the store, or a transaction). */
  async #entry(r: MetaReader, p: FsPath): Promise<Entry | undefined> {
    if (p.bucket === undefined) return { kind: "root" };
    if (!validBucketName(p.bucket)) return undefined;
    const b = await r.getBucket(p.bucket);
    if (b === undefined) return undefined;
    if (p.key === "") return { kind: "bucket", created: b.created };
    // A directory shadows an object of the same name (docs/FS.md).
    const marker = await r.getCurrent(p.bucket, p.key + "/");
    if (marker !== undefined && !marker.deleteMarker) return { kind: "dir", marker };
    for await (const h of r.listCurrent(p.bucket, { prefix: p.key + "/" })) {
      if (!h.deleteMarker) return { kind: "dir", marker: undefined, seen: h.lastModified };
    }
    const v = await r.getCurrent(p.bucket, p.key);
    if (v === undefined || v.deleteMarker) return undefined;
    const mode = Number(v.userMetadata[META_MODE] ?? S_IFREG);
    return { kind: typeOfMode(mode) === "symlink" ? "symlink" : isSpecialMode(mode) ? "special" : "file", version: v };
  }

  /** True when any current object has a key starting with `prefix`, other than those in `except`. */
  async #hasAny(r: MetaReader, bucket: string, prefix: string, except?: (key: string) => boolean): Promise<boolean> {
    for await (const h of r.listCurrent(bucket, { prefix })) {
      if (h.deleteMarker) continue;
      if (except?.(h.key) === true) continue;
      return true;
    }
    return false;
  }

  async #mustBeDir(r: MetaReader, p: FsPath): Promise<void> {
    const e = await this.#entry(r, p);
    if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
    if (isLeaf(e)) throw new FsError("ENOTDIR", `${p.path} is not a directory`);
  }

  #statOfEntry(p: FsPath, e: Entry): Stat {
    switch (e.kind) {
      case "root":
        return { ...statOf("", "", undefined, true, this.#d, this.#started), ino: ROOT_INO };
      case "bucket":
        return { ...statOf(p.bucket!, "", undefined, true, this.#d, e.created), ino: hashIno(p.bucket!, "") };
      case "dir":
        return statOf(p.bucket!, p.key, e.marker, true, this.#d, e.seen);
      default: {
        const s = statOf(p.bucket!, p.key, e.version, false, this.#d);
        const f = this.#files.get(p.path);
        if (f !== undefined) this.#applyOpen(s, f);
        return s;
      }
    }
  }

  #applyOpen(s: Stat, f: OpenFile): void {
    s.size = f.size;
    s.blocks = Math.ceil(f.size / 512);
    if (f.mtimeMs !== undefined) s.mtimeMs = s.atimeMs = f.mtimeMs;
    if (f.attrs.mtimeMs !== undefined) s.mtimeMs = s.atimeMs = f.attrs.mtimeMs;
    if (f.attrs.mode !== undefined) s.mode = (s.mode & ~0o7777) | (f.attrs.mode & 0o7777);
    if (f.attrs.uid !== undefined) s.uid = f.attrs.uid;
    if (f.attrs.gid !== undefined) s.gid = f.attrs.gid;
  }

  async getattr(path: string): Promise<Stat> {
    return this.#op(`getattr ${path}`, async () => {
      const p = parsePath(path);
      const e = await this.#entry(this.store.meta, p);
      if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
      return this.#statOfEntry(p, e);
    });
  }

  /**
   * fstat(2): the attributes of the file open as `fh` — also after it was unlinked or replaced by a
   * rename (its handles keep reading and writing it until the last is closed; then it is gone).
   */
  async fgetattr(fh: number): Promise<Stat> {
    return this.#op("fgetattr", async () => {
      const f = this.#handle(fh).file;
      if (!f.unlinked) return this.getattr(f.path.path);
      const s: Stat = { ...(f.lastStat ?? statOf(f.bucket, f.path.key, undefined, false, this.#d, this.#now())), nlink: 0 };
      this.#applyOpen(s, f);
      return s;
    });
  }

  /** fchmod/fchown/futimens through `fh`; an unlinked file keeps them in memory only. */
  async fsetattr(fh: number, attrs: SetAttr): Promise<void> {
    return this.#op("fsetattr", async () => {
      const f = this.#handle(fh).file;
      if (!f.unlinked) return this.setattr(f.path.path, attrs);
      const { size, ...rest } = attrs;
      if (size !== undefined) this.#truncateOpen(f, size);
      f.attrs = { ...f.attrs, ...rest };
    });
  }

  /** An open file whose name is gone: its handles go on with what they hold; it is never stored again. */
  #orphan(f: OpenFile, version: ObjectVersion | undefined): void {
    f.unlinked = true;
    f.lastStat = version === undefined ? undefined : statOf(f.bucket, f.path.key, version, false, this.#d);
    this.#files.delete(f.path.path);
  }

  /** lookup is getattr by path (the front ends keep the path of each node). */
  lookup(path: string): Promise<Stat> {
    return this.getattr(path);
  }

  async readdir(path: string): Promise<DirEntry[]> {
    return this.#op(`readdir ${path}`, async () => {
      const p = parsePath(path);
      const meta = this.store.meta;
      if (p.bucket === undefined) {
        return (await meta.listBuckets()).map((b) => {
          const stat = { ...statOf(b.name, "", undefined, true, this.#d, b.created), ino: hashIno(b.name, "") };
          return { name: b.name, type: "dir" as const, ino: stat.ino, stat };
        });
      }
      await this.#mustBeDir(meta, p);
      const prefix = dirPrefix(p.key);
      const out = new Map<string, DirEntry>();
      let token: string | undefined;
      do {
        const page = await this.store.listObjects(p.bucket, { prefix, delimiter: "/", ...(token === undefined ? {} : { continuationToken: token }) });
        for (const o of page.objects) {
          if (o.key === prefix) continue;
          const name = o.key.slice(prefix.length);
          if (!validName(name) || out.has(name)) continue;
          const s = statOf(p.bucket, o.key, o, false, this.#d);
          const f = this.#files.get(`${p.path}/${name}`);
          if (f !== undefined) this.#applyOpen(s, f);
          out.set(name, { name, type: typeOfMode(s.mode), ino: s.ino, stat: s });
        }
        for (const cp of page.commonPrefixes) {
          const name = cp.slice(prefix.length, -1);
          if (!validName(name)) continue;
          const key = cp.slice(0, -1);
          const marker = await meta.getCurrent(p.bucket, cp);
          let seen: number | undefined;
          if (marker === undefined || marker.deleteMarker) {
            // An implied directory shows the time of its first key (as getattr does).
            for await (const h of meta.listCurrent(p.bucket, { prefix: cp })) {
              if (h.deleteMarker) continue;
              seen = h.lastModified;
              break;
            }
          }
          const s = statOf(p.bucket, key, marker?.deleteMarker === false ? marker : undefined, true, this.#d, seen);
          out.set(name, { name, type: "dir", ino: s.ino, stat: s });
        }
        token = page.isTruncated ? page.nextContinuationToken : undefined;
      } while (token !== undefined);
      return [...out.values()];
    });
  }

  async statfs(): Promise<StatFs> {
    return this.#op("statfs", async () => {
      const now = this.#now();
      if (this.#statfsCache === undefined || now - this.#statfsCache.at > 10_000) {
        let used = 0;
        for await (const pk of this.store.meta.listPacks()) used += pk.size;
        this.#statfsCache = { at: now, used };
      }
      const bsize = 4096;
      const blocks = Math.floor(this.#capacity / bsize);
      const usedBlocks = Math.ceil(this.#statfsCache.used / bsize);
      const bfree = Math.max(0, blocks - usedBlocks);
      return { bsize, frsize: bsize, blocks, bfree, bavail: bfree, files: 2 ** 32, ffree: 2 ** 32, namemax: 255 };
    });
  }

  // ------------------------------------------------------------------------------------------
  // Directories

  /** A new entry's attributes, as user metadata. */
  #newAttrs(mode: number, ino: number, owner?: Owner): Record<string, string> {
    return {
      [META_MODE]: String(mode),
      [META_UID]: String(owner?.uid ?? this.#d.uid),
      [META_GID]: String(owner?.gid ?? this.#d.gid),
      [META_MTIME]: mtimeValue(this.#now()),
      [META_INO]: String(ino),
    };
  }

  /** Checks that `p` can be created: its parent is a directory and nothing has its name. */
  async #checkCreatable(r: MetaReader, p: FsPath): Promise<void> {
    await this.#mustBeDir(r, parentOf(p));
    if ((await this.#entry(r, p)) !== undefined) throw new FsError("EEXIST", `${p.path} exists`);
  }

  /**
   * When removing `removed` would leave the implied directory `parent` empty, its marker (so
   * directories do not vanish with their last entry, as they would in S3's flat namespace).
   */
  async #keepParent(r: MetaReader, parent: FsPath, removed: (key: string) => boolean): Promise<NamespacePlan["empties"]> {
    if (parent.bucket === undefined || parent.key === "") return [];
    const marker = await r.getCurrent(parent.bucket, parent.key + "/");
    if (marker !== undefined && !marker.deleteMarker) return [];
    if (await this.#hasAny(r, parent.bucket, parent.key + "/", removed)) return [];
    return [{ bucket: parent.bucket, key: parent.key + "/", contentType: DIRECTORY_CONTENT_TYPE, userMetadata: { ...this.#newAttrs(S_IFDIR | this.#d.dirMode, hashIno(parent.bucket, parent.key)) } }];
  }

  /** mkdir(2); `owner` of the new directory defaults to the view's (the FUSE front end passes the caller's). */
  async mkdir(path: string, mode = 0o755, owner?: Owner): Promise<void> {
    return this.#op(`mkdir ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined) throw new FsError("EEXIST", "/ exists");
      if (p.key === "") {
        if (!validBucketName(p.bucket)) throw new FsError("EINVAL", `${p.bucket} cannot be a bucket name (docs/FS.md)`);
        await this.store.createBucket(p.bucket);
        return;
      }
      await this.#namespace(async (tx, newId) => {
        await this.#checkCreatable(tx, p);
        return { empties: [{ bucket: p.bucket!, key: p.key + "/", contentType: DIRECTORY_CONTENT_TYPE, userMetadata: this.#newAttrs(S_IFDIR | (mode & 0o7777), await newId(), owner) }] };
      });
    });
  }

  async rmdir(path: string): Promise<void> {
    return this.#op(`rmdir ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined) throw new FsError("EPERM", "cannot remove /");
      if (p.key === "") {
        await this.store.deleteBucket(p.bucket);
        return;
      }
      const marker = p.key + "/";
      await this.#namespace(async (tx) => {
        const e = await this.#entry(tx, p);
        if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
        if (e.kind !== "dir") throw new FsError("ENOTDIR", `${p.path} is not a directory`);
        if (await this.#hasAny(tx, p.bucket!, marker, (k) => k === marker)) throw new FsError("ENOTEMPTY", `${p.path} is not empty`);
        return {
          deletes: [{ bucket: p.bucket!, key: marker }],
          empties: await this.#keepParent(tx, parentOf(p), (k) => k === marker),
        };
      });
    });
  }

  // ------------------------------------------------------------------------------------------
  // Files: open, read, write, flush

  #handle(fh: number): Handle {
    const h = this.#handles.get(fh);
    if (h === undefined) throw new FsError("EBADF", `no open file ${fh}`);
    return h;
  }

  #register(p: FsPath, version: { size: number; manifest: ManifestEntry[] } | undefined, flags: number): number {
    let f = this.#files.get(p.path);
    if (f === undefined) {
      f = new OpenFile(p, version);
      this.#files.set(p.path, f);
    } else if (!f.needsFlush && f.flushing === undefined && version !== undefined) {
      // Close-to-open: a file opened again sees what is current now.
      f.base = { size: version.size, manifest: version.manifest };
      f.size = version.size;
      f.seq = f.size === 0 ? { hash: createHash("md5"), pos: 0 } : undefined;
    }
    f.handles++;
    const fh = this.#nextFh++;
    this.#handles.set(fh, { file: f, flags });
    return fh;
  }

  /** Opens (or with O_CREAT creates) a regular file; returns a handle. */
  async open(path: string, flags = O_RDONLY, mode = 0o644, owner?: Owner): Promise<number> {
    return this.#op(`open ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined || p.key === "") throw new FsError("EISDIR", `${p.path} is a directory`);
      const e = await this.#entry(this.store.meta, p);
      if (e === undefined && (flags & O_CREAT) !== 0) return this.#create(p, flags, mode, owner);
      if (e !== undefined && (flags & O_CREAT) !== 0 && (flags & O_EXCL) !== 0) throw new FsError("EEXIST", `${p.path} exists`);
      if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
      if (e.kind === "special") throw new FsError("ENXIO", `${p.path} is a special file (open it through a mount)`);
      if (e.kind !== "file" && e.kind !== "symlink") throw new FsError("EISDIR", `${p.path} is a directory`);
      const fh = this.#register(p, e.version, flags);
      if ((flags & O_TRUNC) !== 0 && (flags & O_ACCMODE) !== O_RDONLY) await this.ftruncate(fh, 0);
      return fh;
    });
  }

  /** create(2): O_CREAT | O_WRONLY | O_TRUNC, plus `flags`. */
  create(path: string, mode = 0o644, flags = O_RDWR, owner?: Owner): Promise<number> {
    return this.open(path, flags | O_CREAT | O_TRUNC, mode, owner);
  }

  async #create(p: FsPath, flags: number, mode: number, owner: Owner | undefined): Promise<number> {
    let existed = false;
    const r = await this.#compose(p.bucket!, p.key, [], {
      check: async (tx, current) => {
        // Created meanwhile (by S3 or another handle): O_EXCL fails, otherwise it is opened.
        existed = current !== undefined;
        if (existed) {
          if ((flags & O_EXCL) !== 0) throw new FsError("EEXIST", `${p.path} exists`);
          return;
        }
        await this.#checkCreatable(tx, p);
      },
      userMetadata: async (cur, newId) => (existed ? cur : this.#newAttrs(S_IFREG | (mode & 0o7777), await newId(), owner)),
    });
    return this.#register(p, { size: r.version.size, manifest: r.manifest }, flags);
  }

  /** What a read of `fh` covers: the file, the end of the range, and where the stored bytes end. */
  #readRange(fh: number, offset: number, length: number): { f: OpenFile; end: number; stored: number } {
    const { file: f, flags } = this.#handle(fh);
    if ((flags & O_ACCMODE) === O_WRONLY) throw new FsError("EBADF", "file not open for reading");
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new FsError("EINVAL", "bad offset or length");
    const end = Math.min(offset + length, f.size);
    // Past `stored` the base version's bytes are gone (cut by a truncate not yet flushed).
    const stored = Math.min(f.base.size, f.truncLow ?? Infinity, f.flushing?.truncLow ?? Infinity);
    return { f, end, stored };
  }

  async read(fh: number, offset: number, length: number): Promise<Buffer> {
    return this.#op("read", async () => {
      const { f, end, stored } = this.#readRange(fh, offset, length);
      if (end <= offset) return Buffer.alloc(0);
      const out = Buffer.alloc(end - offset);
      const limit = Math.min(stored, end);
      if (limit > offset) {
        let pos = offset;
        for await (const b of readManifest(this.store.meta, this.store.reader, f.base.manifest, { start: offset, end: limit }, f.path.path)) {
          b.copy(out, pos - offset);
          pos += b.length;
        }
      }
      f.flushing?.dirty.overlay(out, offset, f.truncLow ?? Infinity);
      f.dirty.overlay(out, offset);
      return out;
    });
  }

  /**
   * read(2) as pieces: where nothing written is pending in the range, the chunks' own bytes
   * (subarrays shared with the chunk cache: read-only) without copying them into one buffer — the
   * FUSE front end writes them out with one writev. Otherwise one piece, as {@link read}.
   */
  async readv(fh: number, offset: number, length: number): Promise<Buffer[]> {
    return this.#op("read", async () => {
      const { f, end, stored } = this.#readRange(fh, offset, length);
      if (end <= offset) return [];
      if (end > stored || f.dirty.overlaps(offset, end) || f.flushing?.dirty.overlaps(offset, end) === true) return [await this.read(fh, offset, length)];
      const out: Buffer[] = [];
      for await (const b of readManifest(this.store.meta, this.store.reader, f.base.manifest, { start: offset, end }, f.path.path)) out.push(b);
      return out;
    });
  }

  /**
   * pwrite(2) through handle `fh`. The bytes are copied, unless `options.owned`: then the view keeps
   * `data` itself until it is stored (the caller hands it over and must not change it; the FUSE
   * front end does, saving a copy of every write).
   */
  async write(fh: number, offset: number, data: Uint8Array, options: { owned?: boolean } = {}): Promise<number> {
    return this.#op("write", async () => {
      const { file: f, flags } = this.#handle(fh);
      if ((flags & O_ACCMODE) === O_RDONLY) throw new FsError("EBADF", "file not open for writing");
      if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError("EINVAL", "bad offset");
      const at = (flags & O_APPEND) !== 0 ? f.size : offset;
      if (f.seq !== undefined && f.seq.pos === at && at === f.size) {
        f.seq.hash.update(data);
        f.seq.pos += data.length;
      } else if (data.length > 0) f.seq = undefined;
      if (f.unlinked && f.dirtyBytes + data.length > this.#maxDirtyPerFile) {
        // Nothing stores an unlinked file's bytes: they stay in memory, within the per-file bound.
        throw new FsError("ENOSPC", `${f.path.path} was unlinked: it keeps at most ${this.#maxDirtyPerFile} written bytes (in memory)`);
      }
      f.dirty.write(at, data, options.owned === true);
      f.size = Math.max(f.size, at + data.length);
      f.mtimeMs = this.#now();
      if (f.dirtyBytes >= this.#maxDirtyPerFile) {
        // Double buffering: the file's dirty bytes are stored in the background while the next
        // ones collect; a writer waits only when it fills a buffer before the previous is stored.
        if (f.flushing !== undefined) await f.chain;
        this.#flush(f).catch(() => undefined); // a failed flush puts its bytes back: fsync/close retries and reports
      } else await this.#bound();
      return data.length;
    });
  }

  /** Keeps the dirty bytes of all open files under the bound by flushing the largest. */
  async #bound(): Promise<void> {
    let total = 0;
    let largest: OpenFile | undefined;
    for (const f of this.#files.values()) {
      total += f.dirtyBytes;
      if (largest === undefined || f.dirtyBytes > largest.dirtyBytes) largest = f;
    }
    if (total > this.#maxDirtyBytes && largest !== undefined) await this.#flush(largest);
  }

  async ftruncate(fh: number, size: number): Promise<void> {
    return this.#op("ftruncate", async () => {
      const { file: f, flags } = this.#handle(fh);
      if ((flags & O_ACCMODE) === O_RDONLY) throw new FsError("EBADF", "file not open for writing");
      this.#truncateOpen(f, size);
    });
  }

  #truncateOpen(f: OpenFile, size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new FsError("EINVAL", `bad size ${size}`);
    if (size < f.size) {
      f.dirty.truncate(size);
      f.truncLow = Math.min(f.truncLow ?? Infinity, size);
    }
    f.size = size;
    if (size === 0) f.seq = { hash: createHash("md5"), pos: 0 };
    else if (f.seq !== undefined && f.seq.pos !== size) f.seq = undefined;
    f.mtimeMs = this.#now();
  }

  async truncate(path: string, size: number): Promise<void> {
    return this.#op(`truncate ${path}`, async () => {
      const p = parsePath(path);
      const f = this.#files.get(p.path);
      if (f !== undefined) {
        this.#truncateOpen(f, size);
        await this.#flush(f);
        return;
      }
      const e = await this.#entry(this.store.meta, p);
      if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
      if (e.kind !== "file") throw new FsError(e.kind === "symlink" || e.kind === "special" ? "EINVAL" : "EISDIR", `${p.path} is not a regular file`);
      await this.#compose(p.bucket!, p.key, [{ kind: "truncate", size }], { userMetadata: (m) => ({ ...m, [META_MTIME]: mtimeValue(this.#now()) }) });
    });
  }

  /** Stores the file's dirty bytes as a new version (one at a time per file). */
  #flush(f: OpenFile): Promise<void> {
    const run = f.chain.then(() => this.#flushNow(f));
    f.chain = run.catch(() => undefined);
    return run;
  }

  async #flushNow(f: OpenFile): Promise<void> {
    if (f.unlinked || !f.needsFlush) return;
    const dirty = f.dirty;
    const truncLow = f.truncLow;
    const size = f.size;
    const mtimeMs = f.mtimeMs;
    const attrs = f.attrs;
    const md5 = f.seq !== undefined && f.seq.pos === size ? f.seq.hash.copy().digest("hex") : undefined;
    f.flushing = { dirty, truncLow };
    f.dirty = new DirtyRanges();
    f.truncLow = undefined;
    f.mtimeMs = undefined;
    f.attrs = {};
    const edits: ComposeEdit[] = [];
    if (truncLow !== undefined) edits.push({ kind: "truncate", size: truncLow });
    for (const r of dirty.ranges) edits.push({ kind: "write", offset: r.start, data: r.pieces });
    const natural = Math.max(truncLow ?? f.base.size, dirty.end);
    if (size !== natural) edits.push({ kind: "truncate", size });
    try {
      const r = await this.#compose(f.bucket, f.path.key, edits, {
        ...(md5 === undefined ? {} : { md5 }),
        userMetadata: async (m, newId) => {
          const out = { ...m };
          if (out[META_INO] === undefined) out[META_INO] = String(await newId());
          if (out[META_MODE] === undefined) out[META_MODE] = String(S_IFREG | this.#d.fileMode);
          if (mtimeMs !== undefined) out[META_MTIME] = mtimeValue(mtimeMs);
          if (attrs.mtimeMs !== undefined) out[META_MTIME] = mtimeValue(attrs.mtimeMs);
          if (attrs.mode !== undefined) out[META_MODE] = String((Number(out[META_MODE]) & ~0o7777) | (attrs.mode & 0o7777));
          if (attrs.uid !== undefined) out[META_UID] = String(attrs.uid);
          if (attrs.gid !== undefined) out[META_GID] = String(attrs.gid);
          return out;
        },
      });
      f.base = { size: r.version.size, manifest: r.manifest };
      f.flushing = undefined;
    } catch (err) {
      // Put the bytes back under what was written since, so a later flush retries them.
      if (f.truncLow !== undefined) dirty.truncate(f.truncLow);
      dirty.absorb(f.dirty);
      f.dirty = dirty;
      f.truncLow = truncLow === undefined ? f.truncLow : Math.min(truncLow, f.truncLow ?? Infinity);
      f.mtimeMs ??= mtimeMs;
      f.attrs = { ...attrs, ...f.attrs };
      f.flushing = undefined;
      throw err;
    }
  }

  async fsync(fh: number): Promise<void> {
    return this.#op("fsync", async () => {
      await this.#flush(this.#handle(fh).file);
      await this.syncMetadata();
    });
  }

  /** flush(2) of a handle (close of one descriptor): makes the writes visible, as release does. */
  async flush(fh: number): Promise<void> {
    return this.#op("flush", async () => {
      const h = this.#handle(fh);
      await this.#flush(h.file);
      if ((h.flags & O_ACCMODE) !== O_RDONLY) await this.syncMetadata();
    });
  }

  async release(fh: number): Promise<void> {
    return this.#op("release", async () => {
      const h = this.#handle(fh);
      const f = h.file;
      try {
        await this.#flush(f);
        // close of a descriptor that could write: what it did (its create too) is durable after it.
        if ((h.flags & O_ACCMODE) !== O_RDONLY) await this.syncMetadata();
      } finally {
        this.#handles.delete(fh);
        f.handles--;
        if (f.handles === 0 && this.#files.get(f.path.path) === f && !f.needsFlush) this.#files.delete(f.path.path);
      }
    });
  }

  /** Flushes every open file (unmount, shutdown). */
  async flushAll(): Promise<void> {
    await Promise.all([...this.#files.values()].map((f) => this.#flush(f)));
  }

  // ------------------------------------------------------------------------------------------
  // Attributes

  async setattr(path: string, attrs: SetAttr): Promise<void> {
    return this.#op(`setattr ${path}`, async () => {
      const p = parsePath(path);
      if (attrs.size !== undefined) await this.truncate(path, attrs.size);
      const { size: _s, ...rest } = attrs;
      if (Object.keys(rest).length === 0) return;
      const f = this.#files.get(p.path);
      if (f !== undefined) {
        f.attrs = { ...f.attrs, ...rest };
        await this.#flush(f);
        return;
      }
      const e = await this.#entry(this.store.meta, p);
      if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
      if (e.kind === "root" || e.kind === "bucket") return; // buckets keep no attributes
      const apply = (m: Record<string, string>, type: number): Record<string, string> => {
        const out = { ...m };
        const mode = Number(out[META_MODE] ?? type | (type === S_IFDIR ? this.#d.dirMode : this.#d.fileMode));
        if (rest.mode !== undefined) out[META_MODE] = String((mode & ~0o7777) | (rest.mode & 0o7777));
        if (rest.uid !== undefined) out[META_UID] = String(rest.uid);
        if (rest.gid !== undefined) out[META_GID] = String(rest.gid);
        if (rest.mtimeMs !== undefined) out[META_MTIME] = mtimeValue(rest.mtimeMs);
        return out;
      };
      if (e.kind === "dir") {
        if (e.marker !== undefined) {
          await this.#compose(p.bucket!, p.key + "/", [], { userMetadata: (m) => apply(m, S_IFDIR) });
        } else {
          const base = { ...this.#newAttrs(S_IFDIR | this.#d.dirMode, hashIno(p.bucket!, p.key)) };
          await this.#namespace(async () => ({ empties: [{ bucket: p.bucket!, key: p.key + "/", contentType: DIRECTORY_CONTENT_TYPE, userMetadata: apply(base, S_IFDIR) }] }));
        }
        return;
      }
      await this.#compose(p.bucket!, p.key, [], {
        userMetadata: (m) => apply({ ...m, [META_INO]: m[META_INO] ?? String(hashIno(p.bucket!, p.key)) }, e.kind === "symlink" ? S_IFLNK : S_IFREG),
        // (a special file's mode is always recorded, so its type stays)
      });
    });
  }

  // ------------------------------------------------------------------------------------------
  // Symlinks

  async symlink(target: string, path: string, owner?: Owner): Promise<void> {
    return this.#op(`symlink ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined || p.key === "") throw new FsError("EEXIST", `${p.path} exists`);
      if (target.length === 0) throw new FsError("ENOENT", "empty symlink target");
      await this.#compose(p.bucket, p.key, [{ kind: "write", offset: 0, data: [Buffer.from(target, "utf8")] }], {
        contentType: "application/octet-stream",
        check: async (tx) => this.#checkCreatable(tx, p),
        userMetadata: async (_m, newId) => this.#newAttrs(S_IFLNK | 0o777, await newId(), owner),
      });
    });
  }

  /**
   * mknod(2) of a FIFO, character or block device, or socket (`mode` carries the type): an empty
   * object whose metadata holds the mode (and `rdev` for devices). Regular files are made by
   * create/open and directories by mkdir; other types are EINVAL. Only the mount gives such a file
   * its meaning (a FIFO opened there is a pipe of the kernel's); the mount is `nodev`, so a device
   * node never opens a device.
   */
  async mknod(path: string, mode: number, rdev = 0, owner?: Owner): Promise<void> {
    return this.#op(`mknod ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined || p.key === "") throw new FsError("EEXIST", `${p.path} exists`);
      if (!isSpecialMode(mode)) throw new FsError("EINVAL", `mknod makes FIFOs, devices and sockets (mode ${mode.toString(8)})`);
      if (!Number.isSafeInteger(rdev) || rdev < 0 || rdev > 0xffffffff) throw new FsError("EINVAL", `bad device number ${rdev}`);
      const type = mode & S_IFMT;
      await this.#compose(p.bucket, p.key, [], {
        contentType: SPECIAL_CONTENT_TYPES[type] ?? "application/octet-stream",
        check: async (tx) => this.#checkCreatable(tx, p),
        userMetadata: async (_m, newId) => ({
          ...this.#newAttrs(type | (mode & 0o7777), await newId(), owner),
          ...(type === S_IFCHR || type === S_IFBLK ? { [META_RDEV]: String(rdev) } : {}),
        }),
      });
    });
  }

  async readlink(path: string): Promise<string> {
    return this.#op(`readlink ${path}`, async () => {
      const p = parsePath(path);
      const e = await this.#entry(this.store.meta, p);
      if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
      if (e.kind !== "symlink") throw new FsError("EINVAL", `${p.path} is not a symbolic link`);
      const parts: Buffer[] = [];
      for await (const b of readManifest(this.store.meta, this.store.reader, e.version.manifest, { start: 0, end: e.version.size }, p.path)) parts.push(Buffer.from(b));
      return Buffer.concat(parts).toString("utf8");
    });
  }

  // ------------------------------------------------------------------------------------------
  // unlink and rename

  async unlink(path: string): Promise<void> {
    return this.#op(`unlink ${path}`, async () => {
      const p = parsePath(path);
      if (p.bucket === undefined || p.key === "") throw new FsError("EISDIR", `${p.path} is a directory`);
      const f = this.#files.get(p.path);
      if (f !== undefined) await f.chain;
      let removed: ObjectVersion | undefined;
      await this.#namespace(async (tx) => {
        const e = await this.#entry(tx, p);
        if (e === undefined) throw new FsError("ENOENT", `${p.path} does not exist`);
        if (!isLeaf(e)) throw new FsError("EISDIR", `${p.path} is a directory`);
        removed = e.version;
        return { deletes: [{ bucket: p.bucket!, key: p.key }], empties: await this.#keepParent(tx, parentOf(p), (k) => k === p.key) };
      });
      if (f !== undefined) this.#orphan(f, removed);
    });
  }

  /**
   * rename(2): a file over a file (replacing it), a directory over an empty directory, in one
   * transaction. Directories move with every key under them (cost: metadata rows per entry, no
   * data). `noReplace`: EEXIST when the target exists (RENAME_NOREPLACE).
   */
  async rename(from: string, to: string, options: { noReplace?: boolean } = {}): Promise<void> {
    return this.#op(`rename ${from} ${to}`, async () => {
      const src = parsePath(from);
      const dst = parsePath(to);
      if (src.path === dst.path) return;
      if (src.bucket === undefined || dst.bucket === undefined) throw new FsError("EBUSY", "cannot rename /");
      if (src.key === "" || dst.key === "") throw new FsError("EXDEV", "buckets cannot be renamed, nor a directory made into a bucket (docs/FS.md)");
      if (src.bucket === dst.bucket && dst.key.startsWith(src.key + "/")) throw new FsError("EINVAL", `cannot move ${src.path} into itself`);
      // Make what open files hold visible first; they follow the rename.
      const affected = [...this.#files.values()].filter((f) => f.path.path === src.path || f.path.path.startsWith(src.path + "/") || f.path.path === dst.path);
      await Promise.all(affected.map((f) => this.#flush(f)));
      let replaced: ObjectVersion | undefined;
      await this.#namespace(async (tx) => {
        const s = await this.#entry(tx, src);
        if (s === undefined) throw new FsError("ENOENT", `${src.path} does not exist`);
        await this.#mustBeDir(tx, parentOf(dst));
        const d = await this.#entry(tx, dst);
        if (d !== undefined && options.noReplace === true) throw new FsError("EEXIST", `${dst.path} exists`);
        replaced = d !== undefined && isLeaf(d) ? d.version : undefined;
        const removedFromSrcParent = new Set<string>();
        const plan: NamespacePlan = { deletes: [], moves: [], empties: [] };
        const to = (key: string): ObjectRef => ({ bucket: dst.bucket!, key });
        if (isLeaf(s)) {
          if (d !== undefined && !isLeaf(d)) throw new FsError("EISDIR", `${dst.path} is a directory`);
          const m = s.version.userMetadata;
          plan.moves!.push({ from: { bucket: src.bucket!, key: src.key }, to: to(dst.key), userMetadata: { ...m, [META_INO]: m[META_INO] ?? String(hashIno(src.bucket!, src.key)) } });
          removedFromSrcParent.add(src.key);
        } else {
          if (d !== undefined && isLeaf(d)) throw new FsError("ENOTDIR", `${dst.path} is not a directory`);
          if (d !== undefined) {
            const dm = dst.key + "/";
            if (await this.#hasAny(tx, dst.bucket!, dm, (k) => k === dm)) throw new FsError("ENOTEMPTY", `${dst.path} is not empty`);
            if (d.kind === "dir" && d.marker !== undefined) plan.deletes!.push({ bucket: dst.bucket!, key: dm });
          }
          const prefix = src.key + "/";
          let marker = false;
          for await (const h of tx.listCurrent(src.bucket!, { prefix })) {
            if (h.deleteMarker) continue;
            const rest = h.key.slice(prefix.length);
            if (rest === "") {
              marker = true;
              const m = h.userMetadata;
              plan.moves!.push({ from: { bucket: src.bucket!, key: h.key }, to: to(dst.key + "/"), userMetadata: { ...m, [META_INO]: m[META_INO] ?? String(hashIno(src.bucket!, src.key)) } });
            } else plan.moves!.push({ from: { bucket: src.bucket!, key: h.key }, to: to(dst.key + "/" + rest) });
            removedFromSrcParent.add(h.key);
          }
          if (!marker) {
            // An implied directory gets a marker where it goes, keeping its inode number.
            plan.empties!.push({ bucket: dst.bucket!, key: dst.key + "/", contentType: DIRECTORY_CONTENT_TYPE, userMetadata: this.#newAttrs(S_IFDIR | this.#d.dirMode, hashIno(src.bucket!, src.key)) });
          }
        }
        const srcParent = parentOf(src);
        const dstParent = parentOf(dst);
        if (!(srcParent.bucket === dstParent.bucket && srcParent.key === dstParent.key) && !(dst.bucket === srcParent.bucket && (dst.key === srcParent.key || dst.key.startsWith(srcParent.key + "/")))) {
          plan.empties!.push(...((await this.#keepParent(tx, srcParent, (k) => removedFromSrcParent.has(k))) ?? []));
        }
        return plan;
      });
      // Open files follow their paths.
      for (const f of affected) {
        if (this.#files.get(f.path.path) !== f) continue;
        this.#files.delete(f.path.path);
        if (f.path.path === dst.path && f.path.path !== src.path) {
          this.#orphan(f, replaced); // replaced by the rename
          continue;
        }
        const np = parsePath(dst.path + f.path.path.slice(src.path.length));
        f.path = np;
        this.#files.set(np.path, f);
      }
    });
  }

  /** The name of the last segment of a path (for front ends). */
  static baseName(path: string): string {
    return baseName(parsePath(path));
  }
}
