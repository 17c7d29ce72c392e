/**
 * `CrashingFileSystem`: a `FileSystem` wrapper that kills its own process (SIGKILL, no cleanup, no
 * unwinding) at a chosen point of the store's file I/O, to test crash recovery. It counts the
 * operations that change files — append, sync, rename, remove, truncate — on the files matching
 * a target, and on the Nth one crashes:
 *
 *   - before the operation (the default), or just after it (`after: true`);
 *   - for an append with `partial: true`, after handing only a random prefix of the data to the
 *     OS: a torn write, as a crash in the middle of a write(2) or a power cut could leave.
 *
 * A process crash loses nothing the OS already has (fsync only matters for power loss), so what
 * survives is exactly what was handed to the OS before the kill. Targets are matched by file
 * name: `wal` *.log, `table` *.sst, `manifest` MANIFEST-*, `current` CURRENT and its *.tmp, `any`
 * all of these (never LOCK). `syncDir` counts for `current` and `any` (it follows the CURRENT
 * rename). Reads and file creation are passed through uncounted.
 *
 * Used by test/kv/crash.test.ts (through test/kv/crash-child.ts); see docs/ARCHITECTURE.md.
 */
import * as path from "node:path";
import { parseFileName } from "./format.js";
import type { FileSystem, RandomAccessFile, WritableFile } from "./fs.js";

export type CrashTarget = "wal" | "table" | "manifest" | "current" | "any";
export type CrashOp = "append" | "sync" | "rename" | "remove" | "truncate" | "syncDir";

export interface CrashInfo {
  target: CrashTarget;
  op: CrashOp;
  file: string;
  /** For a torn append: bytes written of `of`. */
  wrote?: number;
  of?: number;
  after: boolean;
}

export interface CrashPoint {
  target: CrashTarget;
  /** Crash on this (1-based) counted operation on a matching file. */
  afterOps: number;
  /** On an append, first write a random prefix (possibly empty) of the data: a torn write. */
  partial?: boolean;
  /** Crash just after the operation instead of before it (ignored for a torn append). */
  after?: boolean;
  /** Randomness for the torn-write length. Default Math.random. */
  random?: () => number;
  /** Called just before the crash, e.g. to log where it happened. Must be synchronous. */
  onCrash?: (info: CrashInfo) => void;
  /** How to crash. Default: SIGKILL this process and block until it dies. */
  kill?: () => never;
}

/** Which targets a file name belongs to (none for LOCK and foreign files). */
export function crashTargetOf(file: string): Exclude<CrashTarget, "any"> | undefined {
  switch (parseFileName(path.basename(file)).kind) {
    case "log":
      return "wal";
    case "table":
      return "table";
    case "manifest":
      return "manifest";
    case "current":
    case "temp":
      return "current";
    default:
      return undefined;
  }
}

/** SIGKILLs the current process. Never returns. */
export function killSelf(): never {
  process.kill(process.pid, "SIGKILL");
  // Delivery to oneself is immediate in practice; never run on if it is not.
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}

export class CrashingFileSystem implements FileSystem {
  /** Counted operations so far on files matching the target. */
  ops = 0;
  /** Counted operations so far per target (whatever the configured target), for calibration. */
  readonly opsByTarget: Record<CrashTarget, number> = { wal: 0, table: 0, manifest: 0, current: 0, any: 0 };

  constructor(
    readonly inner: FileSystem,
    readonly point: CrashPoint | undefined,
  ) {}

  /**
   * Counts an operation on `file`. Crashes (before it) when it is the chosen one and should not
   * run; returns true when it must run and then crash (`after`, or a torn append).
   */
  private count(op: CrashOp, file: string, files: string[] = [file]): boolean {
    let matched = false;
    const p = this.point;
    const seen = new Set<CrashTarget>();
    for (const f of files) {
      const t = crashTargetOf(f);
      if (t === undefined || seen.has(t)) continue;
      seen.add(t);
      this.opsByTarget[t]++;
      if (p !== undefined && (p.target === "any" || p.target === t)) matched = true;
    }
    if (op === "syncDir") {
      this.opsByTarget.current++;
      this.opsByTarget.any++;
      matched = p !== undefined && (p.target === "any" || p.target === "current");
    } else if (seen.size > 0) {
      this.opsByTarget.any++;
    }
    if (!matched || p === undefined) return false;
    if (++this.ops !== p.afterOps) return false;
    if ((op === "append" && p.partial) || p.after) return true;
    this.crash({ target: p.target, op, file, after: false });
  }

  crash(info: CrashInfo): never {
    this.point?.onCrash?.(info);
    return (this.point?.kill ?? killSelf)();
  }

  /** Called by files: an append, torn if so configured. */
  append(file: WritableFile, data: Uint8Array): void {
    if (!this.count("append", file.path)) {
      file.append(data);
      return;
    }
    const p = this.point!;
    if (p.partial) {
      const n = Math.floor((p.random ?? Math.random)() * data.length);
      file.append(data.subarray(0, n));
      this.crash({ target: p.target, op: "append", file: file.path, wrote: n, of: data.length, after: false });
    }
    file.append(data);
    this.crash({ target: p.target, op: "append", file: file.path, after: true });
  }

  /** Called by files: a sync. */
  async sync(file: WritableFile): Promise<void> {
    const after = this.count("sync", file.path);
    await file.sync();
    if (after) this.crash({ target: this.point!.target, op: "sync", file: file.path, after: true });
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
    return new CrashingWritableFile(this, this.inner.createWritable(file));
  }

  openRandomAccess(file: string): RandomAccessFile {
    return this.inner.openRandomAccess(file);
  }

  readFile(file: string): Uint8Array {
    return this.inner.readFile(file);
  }

  rename(from: string, to: string): void {
    const after = this.count("rename", from, [from, to]);
    this.inner.rename(from, to);
    if (after) this.crash({ target: this.point!.target, op: "rename", file: from, after: true });
  }

  remove(file: string): void {
    const after = this.count("remove", file);
    this.inner.remove(file);
    if (after) this.crash({ target: this.point!.target, op: "remove", file, after: true });
  }

  linkOrCopy(from: string, to: string): void {
    this.inner.linkOrCopy(from, to);
  }

  truncate(file: string, len: number): void {
    const after = this.count("truncate", file);
    this.inner.truncate(file, len);
    if (after) this.crash({ target: this.point!.target, op: "truncate", file, after: true });
  }

  async syncDir(dir: string): Promise<void> {
    const after = this.count("syncDir", dir, []);
    await this.inner.syncDir(dir);
    if (after) this.crash({ target: this.point!.target, op: "syncDir", file: dir, after: true });
  }
}

class CrashingWritableFile implements WritableFile {
  constructor(
    private readonly owner: CrashingFileSystem,
    private readonly file: WritableFile,
  ) {}

  get path(): string {
    return this.file.path;
  }

  get size(): number {
    return this.file.size;
  }

  append(data: Uint8Array): void {
    this.owner.append(this.file, data);
  }

  sync(): Promise<void> {
    return this.owner.sync(this.file);
  }

  close(): void {
    this.file.close();
  }
}
