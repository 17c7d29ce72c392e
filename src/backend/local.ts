/**
 * A local directory acting as the bucket: the embedded default cloud tier, and the local tier.
 *
 * Blob key `a/b/c` is the file `<root>/a/b/c`. Directories are created as puts need them and
 * removed again (best effort) when a delete leaves them empty, so the tree mirrors the keys.
 *
 * Writes are atomic and durable: the body goes to a temporary file in `<root>/.stowage~tmp/`,
 * which is fsynced and renamed over the target; then the directories whose entries changed are
 * fsynced. A reader opens either the old file or the new one, never a part. `~` is not allowed in
 * key segments, so the temporary directory can never collide with a blob or a key's directory,
 * and `list` never shows it (it skips every entry whose name is not a valid key segment).
 *
 * Temporaries are named `<pid>-<n>-<random>`. A crash can leave them behind; `open` removes those
 * whose writer process is gone (and any it cannot attribute). Temporaries of live processes,
 * this one included, are kept: another backend instance on the same directory may be writing
 * them. (After a reboot, a stale temporary whose pid now belongs to an unrelated live process
 * stays until a later open; it is garbage, never visible as a blob.)
 *
 * Ranged reads (reads into packs) keep up to 32 files open, least recently used first, so a
 * restore's thousands of small reads into the same packs do not open, stat and close a file each
 * (`#getRange`); this backend's own puts and deletes drop a key's open file before they begin.
 *
 * Limitations a flat object store does not have, both reported as `STOWAGE_BACKEND_IO` by put:
 * a key cannot be both a blob and a "directory" of other blobs (`a` and `a/b`), and a key segment
 * cannot be longer than the file system allows in a name (255 bytes on most: ENAMETOOLONG).
 */
import * as fsp from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { StowageError } from "../errors.js";
import {
  MAX_BLOB_KEY_LENGTH,
  bodyParts,
  checkBlobKey,
  checkRange,
  isBlobKeySegment,
  notFound,
  type BlobBackend,
  type BlobInfo,
  type ByteRange,
} from "./backend.js";
import { secureRandomBytes } from "../util/random.js";

/** The directory (under the root) that holds temporaries. Not a valid key segment. */
export const LOCAL_TEMP_DIR = ".stowage~tmp";

/**
 * How often a put retries its rename after a concurrent delete removed the (empty) parent
 * directories it needs. Each retry recreates them; in practice one retry suffices.
 */
const MAX_RENAME_ATTEMPTS = 8;

function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Turns a file-system error from operation `op` on `file` into a StowageError: ENOSPC/EDQUOT
 * become `STOWAGE_NO_SPACE`, anything else `STOWAGE_BACKEND_IO`, with the original as `cause`.
 * StowageErrors pass through unchanged. Exported for tests.
 */
export function mapFsError(op: string, file: string, err: unknown): StowageError {
  if (err instanceof StowageError) return err;
  const code = errnoOf(err) ?? "EIO";
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new StowageError("STOWAGE_NO_SPACE", `no space left for ${op} ${file} (${code})`, { file, cause: err });
  }
  return new StowageError("STOWAGE_BACKEND_IO", `${op} ${file} failed: ${code}`, { file, cause: err });
}

/** Makes the entries of `dir` (creations, renames, removals) durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The most buffers one `writev` takes (Linux's IOV_MAX). */
const MAX_IOV = 1024;

/**
 * Writes `parts` in order at the file's position: one `writev` per up to {@link MAX_IOV} parts
 * rather than a `write` per part (a pack of small records is hundreds of parts, and each write is
 * a thread-pool round trip and a promise). A short write continues where it stopped.
 */
async function writeParts(fh: FileHandle, parts: readonly Uint8Array[]): Promise<void> {
  let i = 0;
  let skip = 0; // bytes of parts[i] already written
  while (i < parts.length) {
    const batch: Uint8Array[] = [];
    let want = 0;
    for (let j = i; j < parts.length && batch.length < MAX_IOV; j++) {
      const p = j === i ? parts[j]!.subarray(skip) : parts[j]!;
      if (p.length === 0) continue;
      batch.push(p);
      want += p.length;
    }
    if (want === 0) return;
    let { bytesWritten } = await fh.writev(batch);
    if (bytesWritten === 0) throw new Error(`writev wrote nothing of ${want} bytes`);
    // Advance past what was written.
    while (i < parts.length && bytesWritten >= parts[i]!.length - skip) {
      bytesWritten -= parts[i]!.length - skip;
      i++;
      skip = 0;
    }
    skip += bytesWritten;
  }
}

/** Reads `length` bytes at `start` (fewer only if the file ends first), into `into` when it is long enough. */
async function readSpan(fh: FileHandle, start: number, length: number, into?: Buffer): Promise<Buffer> {
  // Not zeroed: every byte returned is read from the file.
  const buf = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === buf.length ? buf : buf.subarray(0, done);
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.lstat(file);
    return true;
  } catch {
    return false;
  }
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return errnoOf(err) === "EPERM";
  }
}

async function isDirectory(file: string): Promise<boolean> {
  try {
    return (await fsp.lstat(file)).isDirectory();
  } catch {
    return false;
  }
}

/** Missing blob: nothing there, or a path component is a regular file. */
function isMissing(err: unknown): boolean {
  const code = errnoOf(err);
  return code === "ENOENT" || code === "ENOTDIR";
}

/** Most blobs kept open for ranged reads (`LocalBackend#getRange`). */
const MAX_OPEN_BLOBS = 32;

interface OpenBlob {
  key: string;
  fh: FileHandle;
  /** The file's size when opened (a blob's file never changes in place). */
  size: number;
  /** Reads using it now. */
  users: number;
  /** In the cache; when false it is closed as its last user finishes. */
  cached: boolean;
}

export class LocalBackend implements BlobBackend {
  readonly location: string;
  /** The absolute root directory. */
  readonly root: string;
  readonly #tempDir: string;
  #tempCounter = 0;
  #closed = false;
  /** Open files of blobs read by range, least recently used first (see `#getRange`). */
  readonly #open = new Map<string, OpenBlob>();
  /** Counts puts and deletes begun, so a read racing one does not cache what it opened. */
  #generation = 0;

  private constructor(root: string) {
    this.root = root;
    this.location = pathToFileURL(root).href;
    this.#tempDir = path.join(root, LOCAL_TEMP_DIR);
  }

  /** Opens (creating if needed) the directory `rootDir` as a bucket, removing stale temporaries. */
  static async open(rootDir: string): Promise<LocalBackend> {
    const backend = new LocalBackend(path.resolve(rootDir));
    const tempDir = backend.#tempDir;
    try {
      await fsp.mkdir(tempDir, { recursive: true });
    } catch (err) {
      throw mapFsError("open", tempDir, err);
    }
    await backend.#removeStaleTemporaries();
    return backend;
  }

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#check();
    checkBlobKey(key);
    const { parts } = bodyParts(body);
    const target = this.#pathOf(key);
    this.#changing(key);
    const temp = path.join(this.#tempDir, `${process.pid}-${++this.#tempCounter}-${secureRandomBytes(6).toString("hex")}`);
    let fh: FileHandle | undefined;
    let renamed = false;
    try {
      fh = await fsp.open(temp, "wx", 0o644);
      await writeParts(fh, parts);
      await fh.datasync();
      await fh.close();
      fh = undefined;
      const changedDirs = await this.#renameIntoPlace(temp, target, key);
      renamed = true;
      // Only now is the put durable: the new entry, and every directory created for it.
      for (const dir of changedDirs) await syncDir(dir);
    } catch (err) {
      if (fh !== undefined) await fh.close().catch(() => undefined);
      // After a successful rename the temporary is the blob: nothing to remove (a failed
      // directory fsync leaves the new blob visible but unacknowledged, as a lost reply would).
      if (!renamed) await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw mapFsError("put", target, err);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.#check();
    checkBlobKey(key);
    checkRange(range);
    const file = this.#pathOf(key);
    if (range !== undefined) return this.#getRange(key, file, range);
    let fh: FileHandle | undefined;
    try {
      fh = await fsp.open(file, "r");
      const st = await fh.stat();
      if (!st.isFile()) throw notFound(this.location, key);
      // Blobs are never written in place (puts rename a new file over them), so the size of the
      // open file cannot change under us.
      return await readSpan(fh, 0, st.size);
    } catch (err) {
      if (isMissing(err)) throw notFound(this.location, key);
      throw mapFsError("get", file, err);
    } finally {
      if (fh !== undefined) await fh.close().catch(() => undefined);
    }
  }

  /**
   * A ranged read through a cached open file. Ranged reads are reads into packs, and a restore or
   * a busy GET path makes thousands of them into the same few packs: an open, fstat and close per
   * read cost more than reading a small object's bytes. A blob is never written in place (a put
   * renames a new file over it), so an open file keeps showing the bytes it had when opened; this
   * backend's own put and delete of a key drop its cached file, so they are seen at once. A put
   * or delete by another process on the same directory is not: a cached file keeps serving the
   * bytes it was opened with, which for packs (written once under a fresh name, deleted only by gc
   * after a grace period) are the right bytes.
   */
  async #getRange(key: string, file: string, range: ByteRange): Promise<Buffer> {
    let h: OpenBlob | undefined;
    try {
      h = await this.#acquire(key, file);
      const start = Math.min(range.offset, h.size);
      return await readSpan(h.fh, start, Math.min(h.size, start + range.length) - start, range.into);
    } catch (err) {
      if (isMissing(err)) throw notFound(this.location, key);
      throw mapFsError("get", file, err);
    } finally {
      if (h !== undefined) this.#release(h);
    }
  }

  async #acquire(key: string, file: string): Promise<OpenBlob> {
    const cached = this.#open.get(key);
    if (cached !== undefined) {
      // Most recently used last.
      this.#open.delete(key);
      this.#open.set(key, cached);
      cached.users++;
      return cached;
    }
    const generation = this.#generation;
    const fh = await fsp.open(file, "r");
    let size: number;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw notFound(this.location, key);
      size = st.size;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    const h: OpenBlob = { key, fh, size, users: 1, cached: false };
    // Cached unless a put or delete (of any key) ran meanwhile (it might have replaced this one
    // after the open), or another read opened the same blob first.
    if (generation === this.#generation && !this.#closed && !this.#open.has(key)) {
      h.cached = true;
      this.#open.set(key, h);
      if (this.#open.size > MAX_OPEN_BLOBS) this.#drop(this.#open.keys().next().value!);
    }
    return h;
  }

  #release(h: OpenBlob): void {
    h.users--;
    if (h.users === 0 && !h.cached) void h.fh.close().catch(() => undefined);
  }

  /** Forgets the cached open file of `key` (closed once its reads finish). */
  #drop(key: string): void {
    const h = this.#open.get(key);
    if (h === undefined) return;
    this.#open.delete(key);
    h.cached = false;
    if (h.users === 0) void h.fh.close().catch(() => undefined);
  }

  /** Called before this backend changes `key`: no read started later uses a file opened earlier. */
  #changing(key: string): void {
    this.#generation++;
    this.#drop(key);
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    this.#check();
    checkBlobKey(key);
    const file = this.#pathOf(key);
    try {
      const st = await fsp.stat(file);
      return st.isFile() ? { key, size: st.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw mapFsError("head", file, err);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    this.#check();
    if (typeof prefix !== "string") throw new StowageError("STOWAGE_INVALID_ARGUMENT", "list prefix must be a string");
    // Paths are built only from directory entries, never from the prefix, so no prefix can
    // reach outside the root.
    yield* this.#walk(this.root, "", prefix);
  }

  async delete(key: string): Promise<void> {
    this.#check();
    checkBlobKey(key);
    const file = this.#pathOf(key);
    this.#changing(key);
    try {
      await fsp.unlink(file);
    } catch (err) {
      if (isMissing(err)) return;
      // EISDIR (EPERM on some systems): the key names a directory of other blobs, not a blob.
      const code = errnoOf(err);
      if (code === "EISDIR" || (code === "EPERM" && (await isDirectory(file)))) return;
      throw mapFsError("delete", file, err);
    }
    // Remove directories the unlink left empty, deepest first, up to (not including) the root.
    // rmdir only ever removes an empty directory, so this cannot lose data; a put racing with it
    // recreates what it needs (see #renameIntoPlace).
    let changed = path.dirname(file);
    while (changed !== this.root) {
      try {
        await fsp.rmdir(changed);
      } catch {
        break;
      }
      changed = path.dirname(changed);
    }
    try {
      await syncDir(changed);
    } catch (err) {
      if (!isMissing(err)) throw mapFsError("delete", file, err);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const key of [...this.#open.keys()]) this.#drop(key);
  }

  #pathOf(key: string): string {
    // The key is checked: only [A-Za-z0-9._-] segments, none `.` or `..`.
    return path.join(this.root, ...key.split("/"));
  }

  /**
   * Renames `temp` to `target`, creating missing parent directories. Returns the directories
   * whose entries changed (the target's parent and the parents of created directories), which
   * must be fsynced before the put is durable.
   */
  async #renameIntoPlace(temp: string, target: string, key: string): Promise<string[]> {
    const changed = new Set<string>([path.dirname(target)]);
    for (let attempt = 1; ; attempt++) {
      try {
        // Try the rename first: the parent usually exists already.
        if (attempt > 1) for (const dir of await this.#makeParents(key)) changed.add(dir);
        await fsp.rename(temp, target);
        return [...changed];
      } catch (err) {
        // ENOENT: a parent directory is missing (new, or just removed by a concurrent delete's
        // pruning). But if the temporary itself is gone, retrying cannot help.
        if (errnoOf(err) === "ENOENT" && attempt < MAX_RENAME_ATTEMPTS && (await exists(temp))) continue;
        throw err;
      }
    }
  }

  /** Creates the missing parent directories of `key`; returns the parents of those it created. */
  async #makeParents(key: string): Promise<string[]> {
    const segs = key.split("/");
    const parentsOfCreated: string[] = [];
    let dir = this.root;
    for (let i = 0; i < segs.length - 1; i++) {
      const sub = path.join(dir, segs[i] as string);
      try {
        await fsp.mkdir(sub);
        parentsOfCreated.push(dir);
      } catch (err) {
        // EEXIST also covers a regular file in the way; the rename then fails with ENOTDIR.
        if (errnoOf(err) !== "EEXIST") throw err;
      }
      dir = sub;
    }
    return parentsOfCreated;
  }

  /**
   * Yields the blobs under `dir` (whose key prefix is `keyPrefix`) that start with `prefix`, in
   * ascending byte order of key. Sibling entries are sorted by their name as it appears inside
   * a key: a directory `d` as `d/`, a file `f` as `f`. Every key below `d` starts with `d/`, and no
   * file name contains `/`, so this depth-first order is the byte order of the full keys. Names
   * are ASCII (others are skipped), so comparing UTF-16 code units compares bytes.
   */
  async *#walk(dir: string, keyPrefix: string, prefix: string): AsyncGenerator<BlobInfo> {
    let entries;
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      // A subdirectory removed by a concurrent delete holds nothing any more.
      if (dir !== this.root && isMissing(err)) return;
      throw mapFsError("list", dir, err);
    }
    const items: { sortKey: string; name: string; isDir: boolean }[] = [];
    for (const e of entries) {
      // Skips the temporary directory and anything that is not a blob Stowage could have written.
      if (!isBlobKeySegment(e.name)) continue;
      if (e.isDirectory()) {
        const sub = `${keyPrefix}${e.name}/`;
        if (sub.startsWith(prefix) || prefix.startsWith(sub)) items.push({ sortKey: sub, name: e.name, isDir: true });
      } else if (e.isFile()) {
        const key = keyPrefix + e.name;
        if (key.startsWith(prefix) && key.length <= MAX_BLOB_KEY_LENGTH) items.push({ sortKey: key, name: e.name, isDir: false });
      }
    }
    items.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const item of items) {
      const full = path.join(dir, item.name);
      if (item.isDir) {
        yield* this.#walk(full, item.sortKey, prefix);
        continue;
      }
      let size: number;
      try {
        const st = await fsp.stat(full);
        if (!st.isFile()) continue;
        size = st.size;
      } catch (err) {
        if (isMissing(err)) continue; // deleted since readdir
        throw mapFsError("list", full, err);
      }
      yield { key: item.sortKey, size };
    }
  }

  async #removeStaleTemporaries(): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(this.#tempDir);
    } catch (err) {
      throw mapFsError("open", this.#tempDir, err);
    }
    for (const name of names) {
      const m = /^(\d+)-/.exec(name);
      const pid = m === null ? NaN : Number(m[1]);
      if (Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || processIsAlive(pid))) continue;
      const file = path.join(this.#tempDir, name);
      try {
        await fsp.rm(file, { recursive: true, force: true });
      } catch (err) {
        throw mapFsError("open", file, err);
      }
    }
  }

  #check(): void {
    if (this.#closed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "backend is closed");
  }
}
