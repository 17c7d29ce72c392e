/**
 * Rollback: replaces a closed store's contents with a checkpoint made by `Kv.checkpoint`.
 * Table files are hard-linked, so restoring copies nothing. CURRENT is removed first and written
 * last, so a crash midway leaves a directory that open refuses (files without CURRENT) rather
 * than a mix of two states; running the restore again finishes it. The checkpoint is untouched.
 */
import { StowageError } from "../errors.js";
import { CURRENT_FILE, parseFileName } from "./format.js";
import { joinPath, nodeFileSystem, type FileSystem } from "./fs.js";
import { acquireLock, releaseLock } from "./lock.js";

export async function restoreKv(checkpointDir: string, dir: string, options: { fs?: FileSystem } = {}): Promise<void> {
  const fs = options.fs ?? nodeFileSystem;
  if (!fs.exists(joinPath(checkpointDir, CURRENT_FILE))) {
    throw new StowageError("STOWAGE_KV_NOT_FOUND", `${checkpointDir} holds no checkpoint`, { file: checkpointDir });
  }
  fs.mkdir(dir);
  acquireLock(fs, dir);
  try {
    // Drop CURRENT first: from here until the new one lands, the directory is recognisably
    // "being restored" (store files without CURRENT) and open refuses it.
    fs.remove(joinPath(dir, CURRENT_FILE));
    await fs.syncDir(dir);
    for (const name of fs.readdir(dir)) {
      const k = parseFileName(name).kind;
      if (k === "table" || k === "log" || k === "manifest" || k === "temp") fs.remove(joinPath(dir, name));
    }
    let current: string | undefined;
    for (const name of fs.readdir(checkpointDir)) {
      const k = parseFileName(name).kind;
      if (k === "current") current = name;
      else if (k === "table" || k === "log" || k === "manifest") fs.linkOrCopy(joinPath(checkpointDir, name), joinPath(dir, name));
    }
    if (current === undefined) throw new StowageError("STOWAGE_KV_NOT_FOUND", `${checkpointDir} holds no CURRENT`);
    await fs.syncDir(dir);
    const tmp = joinPath(dir, "0.tmp");
    const w = fs.createWritable(tmp);
    try {
      w.append(fs.readFile(joinPath(checkpointDir, CURRENT_FILE)));
      await w.sync();
    } finally {
      w.close();
    }
    fs.rename(tmp, joinPath(dir, CURRENT_FILE));
    await fs.syncDir(dir);
  } finally {
    releaseLock(fs, dir);
  }
}
