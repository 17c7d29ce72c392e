/**
 * The store's LOCK file: one process (and one handle within it) owns a store directory at a time.
 * The file holds the owner's pid; a LOCK left by a process that no longer runs (a crash) is
 * taken over. (A pid reused by an unrelated process makes the store look locked: remove LOCK by
 * hand after checking.)
 */
import { StowageError } from "../errors.js";
import { LOCK_FILE } from "./format.js";
import { joinPath, type FileSystem } from "./fs.js";

const lockedDirs = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function acquireLock(fs: FileSystem, dir: string): void {
  const key = joinPath(dir, LOCK_FILE);
  if (lockedDirs.has(key)) {
    throw new StowageError("STOWAGE_KV_LOCKED", `${dir} is already open in this process`, { file: key });
  }
  if (fs.exists(key)) {
    const pid = Number(Buffer.from(fs.readFile(key)).toString("utf8").trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new StowageError("STOWAGE_KV_LOCKED", `${dir} is locked by process ${pid}`, { file: key });
    }
  }
  const f = fs.createWritable(key);
  try {
    f.append(Buffer.from(`${process.pid}\n`));
  } finally {
    f.close();
  }
  lockedDirs.add(key);
}

export function releaseLock(fs: FileSystem, dir: string): void {
  const key = joinPath(dir, LOCK_FILE);
  if (!lockedDirs.delete(key)) return;
  try {
    fs.remove(key);
  } catch {
    // A stale LOCK is harmless: the next open checks whether its process lives.
  }
}

export function isLockedHere(dir: string): boolean {
  return lockedDirs.has(joinPath(dir, LOCK_FILE));
}
