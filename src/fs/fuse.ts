/**
 * The FUSE front end (docs/FS.md): a StowageFs mounted as a Linux file system, speaking the FUSE
 * kernel protocol on /dev/fuse directly (src/fs/fuse-protocol.ts) — no libfuse, no native addon.
 *
 * - Mounting: this process opens /dev/fuse and runs util-linux `mount -i -t fuse.stowage -o fd=3,...`
 *   with the descriptor as the child's fd 3, so the mount needs root (CAP_SYS_ADMIN). (The unprivileged
 *   route, fusermount, hands the descriptor back over a Unix socket with SCM_RIGHTS, which Node cannot
 *   receive.) A stale mount left by a crashed process is detached first.
 * - Requests are read one at a time on a libuv thread (a blocking read on the device) and answered
 *   out of order as each finishes, so many are in flight at once. Replies are written synchronously
 *   (a copy into the kernel; never blocks).
 * - Node ids are this session's own (a counter; a node is a name in a parent node, forgotten when the
 *   kernel forgets it); `st_ino` is Stowage's stable inode number (64 bits).
 * - Writes of up to 1 MiB per request (max_pages), no kernel write-back cache: every write reaches
 *   StowageFs's dirty buffers, flush/fsync/release store them (close-to-open consistency).
 * - No request has a timeout (a "hard" mount): an operation that cannot reach the bucket waits
 *   rather than fail while it may still land later.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, read, writevSync } from "node:fs";
import { realpath, stat, writeFile } from "node:fs/promises";
import { StowageError } from "../errors.js";
import { FsError, toFsError } from "./errors.js";
import { O_CREAT, O_EXCL, type StowageFs, type DirEntry, type Owner, type SetAttr } from "./fs.js";
import {
  DT_DIR,
  DT_BLK,
  DT_CHR,
  DT_FIFO,
  DT_LNK,
  DT_SOCK,
  direntPlusSize,
  writeDirentPlus,
  DT_REG,
  Fattr,
  GETATTR_FH,
  IN_HEADER_SIZE,
  Init,
  Op,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  attrOut,
  cstrings,
  direntSize,
  entryOut,
  initOut,
  openOut,
  outHeader,
  readInHeader,
  statfsOut,
  u64,
  writeDirent,
  writeOut,
  type Attr,
  type InHeader,
  type Kstatfs,
} from "./fuse-protocol.js";
import { S_IFMT, S_IFREG, type Stat } from "./names.js";

export interface FuseMountOptions {
  /** Show only this bucket at the mount point (else `/` lists the buckets). */
  bucket?: string;
  /** Let other users use the mount. */
  allowOther?: boolean;
  /** Seconds the kernel may cache attributes and names, including "no such name" (default 1). */
  attrTimeout?: number;
  /** Reports each failed operation (EIO ones are bugs or outages; the others are answers). */
  onError?: (err: FsError, op: string) => void;
  /** Traces every request on stderr. */
  debug?: boolean;
}

export interface FuseMount {
  readonly mountpoint: string;
  /** Flushes open files, unmounts (lazily when the mount is busy) and ends the session. */
  unmount(): Promise<void>;
  /** Resolves when the session ends (unmounted, also by someone else's `umount`). */
  readonly closed: Promise<void>;
}

/**
 * The StowageFs settings of a mount: a local file system's acknowledgements (docs/FS.md), and 64 MiB
 * of dirty bytes per file stored at a time (fewer flushes, each a durability wait and a version
 * commit: sequential writes 63-75 -> 84-86 MB/s here), at most 256 MiB in all.
 */
export const MOUNT_FS_OPTIONS = Object.freeze({ lazyMetadata: true, maxDirtyPerFile: 64 * 1024 * 1024, maxDirtyBytes: 256 * 1024 * 1024 });

/** Largest write the kernel hands over at once (max_pages = 256). */
export const FUSE_MAX_WRITE = 1024 * 1024;
const READ_BUFFER = FUSE_MAX_WRITE + 64 * 1024;

const ERRNO_ENOSYS = 38;

class Node {
  lookups = 0;
  readonly children = new Map<string, Node>();
  detached = false;
  /** StowageFs handles open on this node (so that an unlinked file still answers getattr). */
  readonly handles = new Set<number>();
  constructor(
    readonly id: bigint,
    public parent: Node | undefined,
    public name: string,
  ) {}
}

function attrOf(s: Stat): Attr {
  return {
    ino: s.ino,
    size: s.size,
    blocks: s.blocks,
    atimeMs: s.atimeMs,
    mtimeMs: s.mtimeMs,
    ctimeMs: s.ctimeMs,
    mode: s.mode,
    nlink: s.nlink,
    uid: s.uid,
    gid: s.gid,
    blksize: s.blksize,
    rdev: s.rdev,
  };
}

/** New entries belong to the process that makes them (as on any local file system). */
function owner(h: InHeader): Owner {
  return { uid: h.uid, gid: h.gid };
}

const DIRENT_TYPES: Readonly<Record<DirEntry["type"], number>> = { file: DT_REG, dir: DT_DIR, symlink: DT_LNK, fifo: DT_FIFO, char: DT_CHR, block: DT_BLK, socket: DT_SOCK };

function direntType(e: DirEntry): number {
  return DIRENT_TYPES[e.type];
}

/** One mounted session: the node table and the request dispatch. */
class FuseSession {
  readonly #fs: StowageFs;
  readonly #root: Node;
  readonly #rootPath: string;
  readonly #nodes = new Map<bigint, Node>();
  #nextNode = 2n;
  /** Open directories: their listing as of opendir (`.` and `..` carry no attributes). */
  readonly #dirs = new Map<number, { node: Node; list: Array<{ name: Buffer; ino: number; type: number; attr?: Attr }> }>();
  #nextDir = 1;
  readonly #valid: number;
  readonly #options: FuseMountOptions;
  #fd: number;
  #ended = false;
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;

  constructor(fs: StowageFs, fd: number, options: FuseMountOptions) {
    this.#fs = fs;
    this.#fd = fd;
    this.#options = options;
    this.#rootPath = options.bucket === undefined ? "/" : `/${options.bucket}`;
    this.#root = new Node(1n, undefined, "");
    this.#root.lookups = 1;
    this.#nodes.set(1n, this.#root);
    this.#valid = options.attrTimeout ?? 1;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** Starts reading requests. */
  start(): void {
    const buf = Buffer.allocUnsafe(READ_BUFFER);
    const next = (): void => {
      read(this.#fd, buf, 0, buf.length, null, (err, n) => {
        if (err !== null) {
          const code = err.code;
          // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again.
          if (code === "ENOENT" || code === "EINTR" || code === "EAGAIN") return next();
          // ENODEV: unmounted.
          this.#end();
          return;
        }
        if (n < IN_HEADER_SIZE) {
          this.#end();
          return;
        }
        try {
          this.#dispatch(buf.subarray(0, n));
        } catch (e) {
          this.#options.onError?.(toFsError(e, "fuse request"), "fuse");
        }
        next();
      });
    };
    next();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      closeSync(this.#fd);
    } catch {
      // already closed
    }
    this.#fd = -1;
    this.#resolveClosed();
  }

  // ------------------------------------------------------------------------------------------
  // Replies

  #send(h: InHeader, error: number, ...parts: Buffer[]): void {
    if (this.#ended) return;
    const len = 16 + parts.reduce((n, p) => n + p.length, 0);
    try {
      writevSync(this.#fd, [outHeader(len, error, h.unique), ...parts]);
    } catch (err) {
      // ENOENT: the request was interrupted and its answer is no longer wanted; ENODEV: unmounted.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENODEV") this.#options.onError?.(toFsError(err, "fuse reply"), "fuse");
    }
  }

  #fail(h: InHeader, op: string, err: unknown): void {
    const e = toFsError(err, op);
    this.#options.onError?.(e, op);
    this.#send(h, -e.errno);
  }

  /** Runs an operation and answers with its reply parts, or its errno. */
  #run(h: InHeader, op: string, fn: () => Promise<Buffer[]>): void {
    fn().then(
      (parts) => this.#send(h, 0, ...parts),
      (err: unknown) => this.#fail(h, op, err),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Nodes and paths

  #node(id: bigint): Node {
    const n = this.#nodes.get(id);
    if (n === undefined || n.detached) throw new FsError("ENOENT", `stale file handle (node ${id})`);
    return n;
  }

  #path(n: Node): string {
    if (n === this.#root) return this.#rootPath;
    if (n.detached || n.parent === undefined) throw new FsError("ENOENT", `${n.name} was removed`);
    const parent = this.#path(n.parent);
    return parent === "/" ? `/${n.name}` : `${parent}/${n.name}`;
  }

  #childPath(parent: Node, name: string): string {
    const p = this.#path(parent);
    return p === "/" ? `/${name}` : `${p}/${name}`;
  }

  /** The node of `name` in `parent`, counted as one more kernel lookup. */
  #remember(parent: Node, name: string): Node {
    let n = parent.children.get(name);
    if (n === undefined) {
      n = new Node(this.#nextNode++, parent, name);
      parent.children.set(name, n);
      this.#nodes.set(n.id, n);
    }
    n.lookups++;
    return n;
  }

  /** A handle still open on a node whose name is gone (it answers for the file), if any. */
  #handleOfUnlinked(id: bigint): number | undefined {
    const n = this.#nodes.get(id);
    return n?.detached === true ? n.handles.values().next().value : undefined;
  }

  #detach(parent: Node, name: string): void {
    const n = parent.children.get(name);
    if (n === undefined) return;
    parent.children.delete(name);
    n.detached = true;
  }

  #forget(id: bigint, count: number): void {
    const n = this.#nodes.get(id);
    if (n === undefined || n === this.#root) return;
    n.lookups -= count;
    if (n.lookups > 0) return;
    this.#nodes.delete(id);
    if (!n.detached && n.parent?.children.get(n.name) === n) n.parent.children.delete(n.name);
    // Children the kernel still knows keep resolving through their parent link.
  }

  async #entry(parent: Node, name: string): Promise<Buffer[]> {
    const s = await this.#fs.getattr(this.#childPath(parent, name));
    const n = this.#remember(parent, name);
    return [entryOut(n.id, attrOf(s), this.#valid)];
  }

  // ------------------------------------------------------------------------------------------
  // Requests

  /** Parses one request; its handler must read everything it needs from `b` before its first await (the buffer is reused). */
  #dispatch(b: Buffer): void {
    const h = readInHeader(b);
    const a = b.subarray(IN_HEADER_SIZE, h.len);
    if (this.#options.debug === true) process.stderr.write(`fuse: op ${h.opcode} node ${h.nodeid} unique ${h.unique}\n`);
    switch (h.opcode) {
      case Op.INIT:
        return this.#init(h, a);
      case Op.DESTROY:
        return this.#send(h, 0);
      case Op.FORGET:
        return this.#forget(h.nodeid, u64(a, 0));
      case Op.BATCH_FORGET: {
        const count = a.readUInt32LE(0);
        for (let i = 0; i < count; i++) this.#forget(a.readBigUInt64LE(8 + i * 16), u64(a, 16 + i * 16));
        return;
      }
      case Op.INTERRUPT:
        return; // operations are short or must finish; the kernel waits for their answers
      case Op.LOOKUP: {
        const [name] = cstrings(a, 0, 1);
        return this.#run(h, "lookup", () => this.#entryOrNegative(h.nodeid, name!));
      }
      case Op.GETATTR: {
        // fuse_getattr_in: getattr_flags, dummy, fh. With GETATTR_FH (fstat) the handle answers,
        // which also works once the file was unlinked.
        const byHandle = (a.readUInt32LE(0) & GETATTR_FH) !== 0;
        const fh = u64(a, 8);
        return this.#run(h, "getattr", async () => {
          // fstat of an unlinked file comes without the flag (the kernel has no file at hand there):
          // any handle still open on the node answers for it.
          const viaHandle = byHandle ? fh : this.#handleOfUnlinked(h.nodeid);
          const st = viaHandle !== undefined ? await this.#fs.fgetattr(viaHandle) : await this.#fs.getattr(this.#path(this.#node(h.nodeid)));
          return [attrOut(attrOf(st), this.#valid)];
        });
      }
      case Op.SETATTR:
        return this.#run(h, "setattr", () => this.#setattr(h, a));
      case Op.READLINK:
        return this.#run(h, "readlink", async () => [Buffer.from(await this.#fs.readlink(this.#path(this.#node(h.nodeid))), "utf8")]);
      case Op.SYMLINK: {
        const [name, target] = cstrings(a, 0, 2);
        return this.#run(h, "symlink", async () => {
          const parent = this.#node(h.nodeid);
          await this.#fs.symlink(target!, this.#childPath(parent, name!), owner(h));
          return this.#entry(parent, name!);
        });
      }
      case Op.MKDIR: {
        const mode = a.readUInt32LE(0);
        const [name] = cstrings(a, 8, 1);
        return this.#run(h, "mkdir", async () => {
          const parent = this.#node(h.nodeid);
          await this.#fs.mkdir(this.#childPath(parent, name!), mode & 0o7777, owner(h));
          return this.#entry(parent, name!);
        });
      }
      case Op.MKNOD: {
        // fuse_mknod_in: mode, rdev, umask, padding; then the name. (The kernel checked CAP_MKNOD
        // for devices and applied the umask.)
        const mode = a.readUInt32LE(0);
        const rdev = a.readUInt32LE(4);
        const [name] = cstrings(a, 16, 1);
        return this.#run(h, "mknod", async () => {
          const parent = this.#node(h.nodeid);
          const path = this.#childPath(parent, name!);
          if ((mode & S_IFMT) === S_IFREG) await this.#fs.release(await this.#fs.open(path, O_CREAT | O_EXCL, mode & 0o7777, owner(h)));
          else await this.#fs.mknod(path, mode, rdev, owner(h));
          return this.#entry(parent, name!);
        });
      }
      case Op.UNLINK:
      case Op.RMDIR: {
        const [name] = cstrings(a, 0, 1);
        const rm = h.opcode === Op.UNLINK ? "unlink" : "rmdir";
        return this.#run(h, rm, async () => {
          const parent = this.#node(h.nodeid);
          const path = this.#childPath(parent, name!);
          await (rm === "unlink" ? this.#fs.unlink(path) : this.#fs.rmdir(path));
          this.#detach(parent, name!);
          return [];
        });
      }
      case Op.RENAME:
      case Op.RENAME2: {
        const newdir = a.readBigUInt64LE(0);
        const flags = h.opcode === Op.RENAME2 ? a.readUInt32LE(8) : 0;
        const [from, to] = cstrings(a, h.opcode === Op.RENAME2 ? 16 : 8, 2);
        return this.#run(h, "rename", () => this.#rename(h.nodeid, from!, newdir, to!, flags));
      }
      case Op.LINK:
        return this.#fail(h, "link", new FsError("EPERM", "hard links are not supported"));
      case Op.OPEN: {
        const flags = a.readUInt32LE(0);
        return this.#run(h, "open", async () => {
          const node = this.#node(h.nodeid);
          const fh = await this.#fs.open(this.#path(node), flags);
          node.handles.add(fh);
          return [openOut(fh, 0)];
        });
      }
      case Op.CREATE: {
        const flags = a.readUInt32LE(0);
        const mode = a.readUInt32LE(4);
        const [name] = cstrings(a, 16, 1);
        return this.#run(h, "create", async () => {
          const parent = this.#node(h.nodeid);
          const fh = await this.#fs.open(this.#childPath(parent, name!), flags | O_CREAT, mode & 0o7777, owner(h));
          try {
            const [entry] = await this.#entry(parent, name!);
            parent.children.get(name!)?.handles.add(fh);
            return [entry!, openOut(fh, 0)];
          } catch (err) {
            await this.#fs.release(fh).catch(() => undefined);
            throw err;
          }
        });
      }
      case Op.READ: {
        const fh = u64(a, 0);
        const offset = u64(a, 8);
        const size = a.readUInt32LE(16);
        return this.#run(h, "read", () => this.#fs.readv(fh, offset, size));
      }
      case Op.WRITE: {
        const fh = u64(a, 0);
        const offset = u64(a, 8);
        const size = a.readUInt32LE(16);
        // A copy: the read buffer is reused for the next request, and StowageFs keeps what it is given.
        const data = Buffer.from(a.subarray(40, 40 + size));
        return this.#run(h, "write", async () => [writeOut(await this.#fs.write(fh, offset, data, { owned: true }))]);
      }
      case Op.STATFS:
        return this.#run(h, "statfs", async () => [statfsOut(scaleStatfs(await this.#fs.statfs()))]);
      case Op.RELEASE: {
        const fh = u64(a, 0);
        this.#nodes.get(h.nodeid)?.handles.delete(fh);
        return this.#run(h, "release", async () => (await this.#fs.release(fh), []));
      }
      case Op.FLUSH:
        return this.#run(h, "flush", async () => (await this.#fs.flush(u64(a, 0)), []));
      case Op.FSYNC:
        return this.#run(h, "fsync", async () => (await this.#fs.fsync(u64(a, 0)), []));
      case Op.OPENDIR:
        return this.#run(h, "opendir", () => this.#opendir(h));
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.#readdir(h, u64(a, 0), u64(a, 8), a.readUInt32LE(16), h.opcode === Op.READDIRPLUS);
      case Op.RELEASEDIR:
        this.#dirs.delete(u64(a, 0));
        return this.#send(h, 0);
      case Op.FSYNCDIR:
        // A directory's entries are durable once every change acknowledged before is.
        return this.#run(h, "fsyncdir", async () => (await this.#fs.syncMetadata(), []));
      default:
        // xattrs, locks (the kernel keeps POSIX locks itself), fallocate, lseek, ioctl, poll, ...
        return this.#send(h, -ERRNO_ENOSYS);
    }
  }

  #init(h: InHeader, a: Buffer): void {
    const major = a.readUInt32LE(0);
    const maxReadahead = a.readUInt32LE(8);
    const offered = a.readUInt32LE(12);
    if (major !== 7) {
      this.#send(h, -22);
      return;
    }
    const wanted = Init.ASYNC_READ | Init.ATOMIC_O_TRUNC | Init.BIG_WRITES | Init.AUTO_INVAL_DATA | Init.PARALLEL_DIROPS | Init.MAX_PAGES | Init.DO_READDIRPLUS;
    const maxPages = FUSE_MAX_WRITE / 4096;
    this.#send(
      h,
      0,
      initOut({ flags: offered & wanted, maxReadahead: Math.min(maxReadahead, FUSE_MAX_WRITE), maxWrite: (offered & Init.MAX_PAGES) !== 0 ? FUSE_MAX_WRITE : 128 * 1024, maxPages, maxBackground: 64 }),
    );
  }

  /** A lookup's answer; a missing name is a cached negative entry (node 0) rather than ENOENT. */
  async #entryOrNegative(parentId: bigint, name: string): Promise<Buffer[]> {
    const parent = this.#node(parentId);
    try {
      return await this.#entry(parent, name);
    } catch (err) {
      const e = toFsError(err, "lookup");
      if (e.code !== "ENOENT") throw e;
      return [entryOut(0n, { ino: 0, size: 0, blocks: 0, atimeMs: 0, mtimeMs: 0, ctimeMs: 0, mode: 0, nlink: 0, uid: 0, gid: 0, blksize: 0, rdev: 0 }, this.#valid)];
    }
  }

  async #setattr(h: InHeader, a: Buffer): Promise<Buffer[]> {
    // Every field is read before the first await: `a` is the shared read buffer, which the next
    // request overwrites as soon as this one yields.
    const valid = a.readUInt32LE(0);
    const fh = u64(a, 8);
    const size = (valid & Fattr.SIZE) !== 0 ? u64(a, 16) : undefined;
    const attrs: SetAttr = {};
    if ((valid & Fattr.MODE) !== 0) attrs.mode = a.readUInt32LE(68) & 0o7777;
    if ((valid & Fattr.UID) !== 0) attrs.uid = a.readUInt32LE(76);
    if ((valid & Fattr.GID) !== 0) attrs.gid = a.readUInt32LE(80);
    if ((valid & Fattr.MTIME_NOW) !== 0) attrs.mtimeMs = Date.now();
    else if ((valid & Fattr.MTIME) !== 0) attrs.mtimeMs = u64(a, 40) * 1000 + a.readUInt32LE(60) / 1e6;
    const viaHandle = (valid & Fattr.FH) !== 0 ? fh : this.#handleOfUnlinked(h.nodeid);
    if (viaHandle !== undefined) {
      // ftruncate, or any change to a file unlinked while open (fchmod comes without the flag).
      if (size !== undefined) await this.#fs.ftruncate(viaHandle, size);
      if (Object.keys(attrs).length > 0) await this.#fs.fsetattr(viaHandle, attrs);
      return [attrOut(attrOf(await this.#fs.fgetattr(viaHandle)), this.#valid)];
    }
    const path = this.#path(this.#node(h.nodeid));
    if (size !== undefined) await this.#fs.truncate(path, size);
    if (Object.keys(attrs).length > 0) await this.#fs.setattr(path, attrs);
    return [attrOut(attrOf(await this.#fs.getattr(path)), this.#valid)];
  }

  async #rename(fromDir: bigint, from: string, toDir: bigint, to: string, flags: number): Promise<Buffer[]> {
    if ((flags & RENAME_EXCHANGE) !== 0) throw new FsError("EINVAL", "RENAME_EXCHANGE is not supported");
    if ((flags & ~RENAME_NOREPLACE) !== 0) throw new FsError("EINVAL", `rename flags ${flags} are not supported`);
    const src = this.#node(fromDir);
    const dst = this.#node(toDir);
    await this.#fs.rename(this.#childPath(src, from), this.#childPath(dst, to), { noReplace: (flags & RENAME_NOREPLACE) !== 0 });
    // The kernel moves its dentry; move the node the same way (whatever was at the target is gone).
    this.#detach(dst, to);
    const n = src.children.get(from);
    if (n !== undefined) {
      src.children.delete(from);
      n.parent = dst;
      n.name = to;
      dst.children.set(to, n);
    }
    return [];
  }

  async #opendir(h: InHeader): Promise<Buffer[]> {
    const node = this.#node(h.nodeid);
    const path = this.#path(node);
    const self = await this.#fs.getattr(path);
    const entries = await this.#fs.readdir(path);
    const list = [
      { name: Buffer.from("."), ino: self.ino, type: DT_DIR },
      { name: Buffer.from(".."), ino: 1, type: DT_DIR },
      ...entries.map((e) => ({ name: Buffer.from(e.name, "utf8"), ino: e.ino, type: direntType(e), attr: attrOf(e.stat) })),
    ];
    const fh = this.#nextDir++;
    this.#dirs.set(fh, { node, list });
    return [openOut(fh, 0)];
  }

  /**
   * READDIR, or READDIRPLUS (`plus`): each entry with its attributes, which spares the kernel a
   * LOOKUP per entry (ls -l, find, rsync). Every entry sent with a node counts as a lookup of it
   * (the kernel will FORGET it), so nodes are remembered only for entries that fit in the reply.
   */
  #readdir(h: InHeader, fh: number, offset: number, size: number, plus: boolean): void {
    const dir = this.#dirs.get(fh);
    if (dir === undefined) return this.#send(h, -9);
    const { node, list } = dir;
    const out = Buffer.alloc(size);
    let used = 0;
    for (let i = offset; i < list.length; i++) {
      const e = list[i]!;
      if (!plus) {
        if (used + direntSize(e.name.length) > size) break;
        used += writeDirent(out, used, e.ino, i + 1, e.type, e.name);
        continue;
      }
      if (used + direntPlusSize(e.name.length) > size) break;
      const child = e.attr === undefined || node.detached ? undefined : this.#remember(node, e.name.toString("utf8"));
      used += writeDirentPlus(out, used, child?.id ?? 0n, child === undefined ? undefined : e.attr, this.#valid, e.ino, i + 1, e.type, e.name);
    }
    this.#send(h, 0, out.subarray(0, used));
  }
}

/** statfs's figures as the kernel wants them (block counts in fragment-size units). */
function scaleStatfs(s: Awaited<ReturnType<StowageFs["statfs"]>>): Kstatfs {
  return { blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, bsize: s.bsize, namelen: s.namemax, frsize: s.frsize };
}

function run(cmd: string, args: string[], extraFd?: number): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const stdio: Array<"ignore" | "pipe" | number> = ["ignore", "ignore", "pipe"];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(cmd, args, { stdio });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stderr: stderr.trim() }));
  });
}

function mountError(message: string, cause?: unknown): StowageError {
  return new StowageError("STOWAGE_MOUNT", message, cause === undefined ? {} : { cause });
}

/** Aborts a FUSE connection through the fusectl file system (mounted first when it is not). */
async function abortConnection(connection: number): Promise<void> {
  const dir = "/sys/fs/fuse/connections";
  const abort = `${dir}/${connection}/abort`;
  if (!(await stat(abort).then(() => true, () => false))) await run("mount", ["-t", "fusectl", "none", dir]).catch(() => undefined);
  await writeFile(abort, "1").catch(() => undefined);
}

/** Mounts `fs` at `mountpoint` (an existing directory). Needs root; see the file comment. */
export async function mountFuse(fs: StowageFs, mountpoint: string, options: FuseMountOptions = {}): Promise<FuseMount> {
  if (process.platform !== "linux") throw mountError(`FUSE mounts need Linux (this is ${process.platform}); use WebDAV instead (docs/FS.md)`);
  if (options.bucket !== undefined) {
    await fs.getattr(`/${options.bucket}`).catch((err: unknown) => {
      throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `cannot mount bucket ${options.bucket}: ${(err as Error).message}`, { cause: err });
    });
  }
  // A mount point left behind by a crashed session answers ENOTCONN: detach it first.
  const probe = await stat(mountpoint).catch((err: NodeJS.ErrnoException) => err);
  if (probe instanceof Error && probe.code === "ENOTCONN") {
    await run("umount", ["-l", mountpoint]);
  } else if (probe instanceof Error) {
    throw mountError(`cannot mount at ${mountpoint}: ${probe.message}`, probe);
  } else if (!probe.isDirectory()) {
    throw mountError(`cannot mount at ${mountpoint}: not a directory`);
  }
  const where = await realpath(mountpoint);
  let fd: number;
  try {
    fd = openSync("/dev/fuse", "r+");
  } catch (err) {
    throw mountError(`cannot open /dev/fuse: ${(err as Error).message} (is the fuse module loaded, and are we root?)`, err);
  }
  const session = new FuseSession(fs, fd, options);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  // nosuid, nodev: anyone who can write the bucket over S3 sets modes and owners, so a set-user-ID
  // bit or a device node found here must never grant anything.
  const opts = [`fd=3`, `rootmode=40000`, `user_id=${uid}`, `group_id=${gid}`, "default_permissions", "nosuid", "nodev", `max_read=${FUSE_MAX_WRITE}`];
  if (options.allowOther === true) opts.push("allow_other");
  const fsname = options.bucket === undefined ? "stowage" : `stowage:${options.bucket}`;
  let result;
  try {
    result = await run("mount", ["-i", "-n", "-t", "fuse.stowage", "-o", opts.join(","), fsname, where], fd);
  } catch (err) {
    closeSync(fd);
    throw mountError(`cannot run mount(8): ${(err as Error).message}`, err);
  }
  if (result.code !== 0) {
    closeSync(fd);
    throw mountError(`cannot mount at ${where}: ${result.stderr || `mount exited with ${result.code}`}${uid !== 0 ? " (mounting needs root)" : ""}`);
  }
  session.start();
  // The connection's number under /sys/fs/fuse/connections is the mount's device minor.
  const dev = (await stat(where)).dev;
  const connection = (dev & 0xff) | ((dev >>> 12) & ~0xff);
  let unmounting: Promise<void> | undefined;
  return {
    mountpoint: where,
    closed: session.closed,
    unmount(): Promise<void> {
      unmounting ??= (async () => {
        await fs.flushAll();
        let r = await run("umount", [where]);
        if (r.code !== 0) {
          // Busy (a process has a file or its working directory there): detach it, then end the
          // connection, or it lives on until the last user leaves (they see ENOTCONN from now on).
          r = await run("umount", ["-l", where]);
          if (r.code === 0) await abortConnection(connection);
        }
        if (r.code !== 0 && !/not mounted/.test(r.stderr)) throw mountError(`cannot unmount ${where}: ${r.stderr}`);
        await session.closed;
      })();
      return unmounting;
    },
  };
}
