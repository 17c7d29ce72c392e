/**
 * All file-system access of the kv store goes through `FileSystem`, so tests can put a
 * fault-injecting or crash-simulating wrapper underneath (see fault-fs.ts and crash-fs.ts).
 *
 * Small operations are synchronous: they hit the page cache and cost less than a promise round
 * trip. Only the operations that wait for the disk (`sync`, `syncDir`) are asynchronous, so a
 * write-ahead-log fsync never blocks the event loop and concurrent writers can queue behind it
 * (that is what makes group commit work).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { StowageError } from "../errors.js";

export interface WritableFile {
  readonly path: string;
  /** Bytes appended so far. */
  readonly size: number;
  /** Appends all of `data` to the file (handed to the OS, not yet durable). */
  append(data: Uint8Array): void;
  /** Makes everything appended so far durable. */
  sync(): Promise<void>;
  close(): void;
}

export interface RandomAccessFile {
  readonly path: string;
  readonly size: number;
  /** Reads `len` bytes at `pos`; returns fewer only when the file ends first. */
  read(pos: number, len: number): Uint8Array;
  close(): void;
}

export interface FileSystem {
  mkdir(dir: string): void;
  readdir(dir: string): string[];
  exists(file: string): boolean;
  /** Creates (or truncates) a file for appending. */
  createWritable(file: string): WritableFile;
  openRandomAccess(file: string): RandomAccessFile;
  readFile(file: string): Uint8Array;
  rename(from: string, to: string): void;
  remove(file: string): void;
  /** A hard link, or a copy where the file system cannot link. */
  linkOrCopy(from: string, to: string): void;
  truncate(file: string, len: number): void;
  /** Makes renames and creations inside `dir` durable. */
  syncDir(dir: string): Promise<void>;
}

function ioError(op: string, file: string, cause: unknown): StowageError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? "EIO";
  return new StowageError("STOWAGE_KV_IO", `${op} ${file} failed: ${code}`, { file, cause });
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

class NodeWritableFile implements WritableFile {
  size = 0;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly fd: number,
  ) {}

  append(data: Uint8Array): void {
    let off = 0;
    try {
      while (off < data.length) {
        off += fs.writeSync(this.fd, data, off, data.length - off);
      }
    } catch (err) {
      this.size += off;
      throw ioError("write", this.path, err);
    }
    this.size += data.length;
  }

  async sync(): Promise<void> {
    try {
      await fsyncAsync(this.fd);
    } catch (err) {
      throw ioError("fsync", this.path, err);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch (err) {
      throw ioError("close", this.path, err);
    }
  }
}

class NodeRandomAccessFile implements RandomAccessFile {
  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly size: number,
  ) {}

  read(pos: number, len: number): Uint8Array {
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    try {
      while (got < len) {
        const n = fs.readSync(this.fd, buf, got, len - got, pos + got);
        if (n === 0) break;
        got += n;
      }
    } catch (err) {
      throw ioError("read", this.path, err);
    }
    return got === len ? buf : buf.subarray(0, got);
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // A failed close of a read-only descriptor loses nothing.
    }
  }
}

/** The real file system. */
export class NodeFileSystem implements FileSystem {
  mkdir(dir: string): void {
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw ioError("mkdir", dir, err);
    }
  }

  readdir(dir: string): string[] {
    try {
      return fs.readdirSync(dir);
    } catch (err) {
      throw ioError("readdir", dir, err);
    }
  }

  exists(file: string): boolean {
    return fs.existsSync(file);
  }

  createWritable(file: string): WritableFile {
    try {
      return new NodeWritableFile(file, fs.openSync(file, "w"));
    } catch (err) {
      throw ioError("create", file, err);
    }
  }

  openRandomAccess(file: string): RandomAccessFile {
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
      return new NodeRandomAccessFile(file, fd, fs.fstatSync(fd).size);
    } catch (err) {
      throw ioError("open", file, err);
    }
  }

  readFile(file: string): Uint8Array {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw ioError("read", file, err);
    }
  }

  rename(from: string, to: string): void {
    try {
      fs.renameSync(from, to);
    } catch (err) {
      throw ioError("rename", from, err);
    }
  }

  remove(file: string): void {
    try {
      fs.unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw ioError("remove", file, err);
    }
  }

  linkOrCopy(from: string, to: string): void {
    try {
      fs.linkSync(from, to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EXDEV" && code !== "EPERM" && code !== "ENOTSUP") throw ioError("link", from, err);
      try {
        fs.copyFileSync(from, to);
      } catch (err2) {
        throw ioError("copy", from, err2);
      }
    }
  }

  truncate(file: string, len: number): void {
    try {
      fs.truncateSync(file, len);
    } catch (err) {
      throw ioError("truncate", file, err);
    }
  }

  async syncDir(dir: string): Promise<void> {
    let fd: number | undefined;
    try {
      fd = fs.openSync(dir, "r");
      await fsyncAsync(fd);
    } catch (err) {
      throw ioError("fsync", dir, err);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
}

export const nodeFileSystem: FileSystem = new NodeFileSystem();

export function joinPath(dir: string, name: string): string {
  return path.join(dir, name);
}
