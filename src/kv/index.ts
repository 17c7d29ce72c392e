/**
 * stowage/kv: Stowage's LSM-tree key-value store.
 *
 *   const db = await openKv("./meta");
 *   await db.put("key", "value");
 *   const v = await db.get("key");            // Buffer | undefined
 *   for await (const [k, v] of db.iterator({ prefix: "obj/" })) { ... }
 *   await db.close();
 */
import { Kv } from "./db.js";
import type { KvOptions } from "./types.js";

export { Kv, ChainedBatch } from "./db.js";
export { repairKv, type RepairOptions } from "./repair.js";
export { restoreKv } from "./checkpoint.js";
export { NodeFileSystem, nodeFileSystem, type FileSystem, type RandomAccessFile, type WritableFile } from "./fs.js";
export type * from "./types.js";
export { StowageError, isStowageError, type ErrorCode } from "../errors.js";

/** Opens (creating if needed) the store in `dir`. */
export function openKv(dir: string, options?: KvOptions): Promise<Kv> {
  return Kv.open(dir, options);
}
