/**
 * A fault-injecting `FileSystem`: wraps another one and makes chosen operations fail, the way a
 * failing disk or a full file system would. The tests use it to check that every failure ends in
 * a clear error or a correct recovery, never in wrong data.
 *
 *   const ffs = new FaultyFileSystem();                       // wraps the real file system
 *   const db = await openKv(dir, { fs: ffs });
 *   ffs.inject({ op: "append", file: /\.log$/, errno: "ENOSPC", shortWrite: 10 });
 *   await db.put("k", "v");                                   // rejects; the log got 10 bytes
 *   ffs.count("sync", /\.log$/);                              // fsyncs of write-ahead logs so far
 *
 * A rule matches calls of one operation, optionally only on paths matching `file`. The first
 * `after` matching calls go through; the next one fails (and, with `always`, every one after
 * it). A failure throws what NodeFileSystem throws: StowageError("STOWAGE_KV_IO") naming the
 * operation, the file and the errno, with an errno-style Error (`code`, `syscall`, `path`) as
 * `cause`. With `shortWrite`, a failing append first writes a prefix of its data to the file
 * (as a write that runs out of space part-way does) and then throws.
 *
 * Rules are checked when an operation runs, so they also hit files opened before the rule was
 * added. Operations not listed in `FaultOp` (mkdir, readdir, exists, link, truncate, close)
 * always pass through.
 */
import { constants } from "node:os";
import { StowageError } from "../errors.js";
import { nodeFileSystem, type FileSystem, type RandomAccessFile, type WritableFile } from "./fs.js";

/**
 * append: WritableFile.append; sync: WritableFile.sync; syncDir: FileSystem.syncDir;
 * rename: FileSystem.rename (matched on the source path); create: FileSystem.createWritable;
 * read: FileSystem.readFile and RandomAccessFile.read; remove: FileSystem.remove.
 */
export type FaultOp = "append" | "sync" | "syncDir" | "rename" | "create" | "read" | "remove";

export const FAULT_OPS: readonly FaultOp[] = ["append", "sync", "syncDir", "rename", "create", "read", "remove"];

export interface FaultRule {
  op: FaultOp;
  /** Only calls on paths matching this (tested against the full path). Default: every path. */
  file?: RegExp;
  /** Matching calls that succeed before the first failure. Default 0. */
  after?: number;
  /** Keep failing every matching call after the first failure. Default false: fail once. */
  always?: boolean;
  /** The errno code of the failure. Default "ENOSPC" for short writes, else "EIO". */
  errno?: string;
  /**
   * Append only: write this many bytes of the data (clamped to length - 1) before failing;
   * `true` writes half. Default: nothing is written.
   */
  shortWrite?: number | boolean;
}

/** A rule once injected: how often it fired; `remove()` disarms it. */
export interface Fault {
  readonly rule: Readonly<FaultRule>;
  /** Calls this rule made fail. */
  readonly fired: number;
  /** Matching calls seen (successful and failed). */
  readonly seen: number;
  remove(): void;
}

class FaultImpl implements Fault {
  fired = 0;
  seen = 0;
  active = true;
  constructor(
    readonly rule: Readonly<FaultRule>,
    private readonly owner: FaultyFileSystem,
  ) {}
  remove(): void {
    this.active = false;
    this.owner.removeFault(this);
  }
}

/** The syscall named in the errno-style cause, and the operation named in the message. */
const NAMES: Record<FaultOp, [syscall: string, op: string]> = {
  append: ["write", "write"],
  sync: ["fdatasync", "fsync"],
  syncDir: ["fsync", "fsync"],
  rename: ["rename", "rename"],
  create: ["open", "create"],
  read: ["read", "read"],
  remove: ["rm", "remove"],
};

/** An Error shaped like the ones node:fs throws. */
export function errnoError(code: string, syscall: string, path: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: injected fault, ${syscall} '${path}'`);
  err.code = code;
  const n = (constants.errno as Record<string, number | undefined>)[code];
  if (n !== undefined) err.errno = -n;
  err.syscall = syscall;
  err.path = path;
  return err;
}

export class FaultyFileSystem implements FileSystem {
  private faults: FaultImpl[] = [];
  private readonly perOp = new Map<FaultOp, number>();
  private readonly perFile = new Map<string, number>();

  constructor(readonly inner: FileSystem = nodeFileSystem) {}

  /** Adds a rule; returns a handle to watch or remove it. */
  inject(rule: FaultRule): Fault {
    const f = new FaultImpl({ ...rule }, this);
    this.faults.push(f);
    return f;
  }

  /** Removes every rule (counters are kept). */
  clear(): void {
    for (const f of this.faults) f.active = false;
    this.faults = [];
  }

  /** @internal */
  removeFault(f: FaultImpl): void {
    this.faults = this.faults.filter((x) => x !== f);
  }

  /** Calls of `op` so far (failed ones included), optionally only on paths matching `file`. */
  count(op: FaultOp, file?: RegExp): number {
    if (file === undefined) return this.perOp.get(op) ?? 0;
    let n = 0;
    for (const [k, v] of this.perFile) {
      const sep = k.indexOf("\0");
      if (k.slice(0, sep) === op && file.test(k.slice(sep + 1))) n += v;
    }
    return n;
  }

  /** Sets every counter back to zero. */
  resetCounts(): void {
    this.perOp.clear();
    this.perFile.clear();
  }

  /**
   * @internal Counts the call, then throws if a rule says so. For a short write, `partial`
   * receives the prefix to write before the throw.
   */
  _check(op: FaultOp, path: string, data?: Uint8Array, partial?: (prefix: Uint8Array) => void): void {
    this.perOp.set(op, (this.perOp.get(op) ?? 0) + 1);
    const key = `${op}\0${path}`;
    this.perFile.set(key, (this.perFile.get(key) ?? 0) + 1);
    for (const f of this.faults) {
      const r = f.rule;
      if (!f.active || r.op !== op || (r.file !== undefined && !r.file.test(path))) continue;
      f.seen++;
      if (f.seen <= (r.after ?? 0)) continue;
      if (!r.always) f.active = false;
      f.fired++;
      const short = op === "append" && r.shortWrite !== undefined && r.shortWrite !== false;
      if (short && data !== undefined && partial !== undefined && data.length > 1) {
        const want = r.shortWrite === true ? data.length >> 1 : (r.shortWrite as number);
        const n = Math.max(0, Math.min(data.length - 1, Math.floor(want)));
        if (n > 0) partial(data.subarray(0, n));
      }
      const code = r.errno ?? (short ? "ENOSPC" : "EIO");
      const [syscall, name] = NAMES[op];
      // The same shape as fs.ts's ioError.
      throw new StowageError("STOWAGE_KV_IO", `${name} ${path} failed: ${code}`, {
        file: path,
        cause: errnoError(code, syscall, path),
      });
    }
  }

  mkdir(dir: string): void {
    this.inner.mkdir(dir);
  }

  readdir(dir: string): string[] {
    return this.inner.readdir(dir);
  }

  exists(file: string): boolean {
    return this.inner.exists(file);
  }

  createWritable(file: string): WritableFile {
    this._check("create", file);
    return new FaultyWritableFile(this.inner.createWritable(file), this);
  }

  openRandomAccess(file: string): RandomAccessFile {
    return new FaultyRandomAccessFile(this.inner.openRandomAccess(file), this);
  }

  readFile(file: string): Uint8Array {
    this._check("read", file);
    return this.inner.readFile(file);
  }

  rename(from: string, to: string): void {
    this._check("rename", from);
    this.inner.rename(from, to);
  }

  remove(file: string): void {
    this._check("remove", file);
    this.inner.remove(file);
  }

  linkOrCopy(from: string, to: string): void {
    this.inner.linkOrCopy(from, to);
  }

  truncate(file: string, len: number): void {
    this.inner.truncate(file, len);
  }

  async syncDir(dir: string): Promise<void> {
    this._check("syncDir", dir);
    await this.inner.syncDir(dir);
  }
}

class FaultyWritableFile implements WritableFile {
  constructor(
    private readonly inner: WritableFile,
    private readonly ffs: FaultyFileSystem,
  ) {}

  get path(): string {
    return this.inner.path;
  }

  get size(): number {
    return this.inner.size;
  }

  append(data: Uint8Array): void {
    this.ffs._check("append", this.inner.path, data, (prefix) => this.inner.append(prefix));
    this.inner.append(data);
  }

  async sync(): Promise<void> {
    this.ffs._check("sync", this.inner.path);
    await this.inner.sync();
  }

  close(): void {
    this.inner.close();
  }
}

class FaultyRandomAccessFile implements RandomAccessFile {
  constructor(
    private readonly inner: RandomAccessFile,
    private readonly ffs: FaultyFileSystem,
  ) {}

  get path(): string {
    return this.inner.path;
  }

  get size(): number {
    return this.inner.size;
  }

  read(pos: number, len: number): Uint8Array {
    this.ffs._check("read", this.inner.path);
    return this.inner.read(pos, len);
  }

  close(): void {
    this.inner.close();
  }
}
