/**
 * Repair: rebuilds a store that cannot be opened (a damaged or missing manifest, a corrupt
 * write-ahead log, a bad table) from whatever files are intact.
 *
 * Every table is scanned with checksums on; a table that fails is moved to `lost/` and reported.
 * Every write-ahead log is read record by record, stepping over damaged blocks. The surviving
 * entries are merged (newest version of each key wins) into fresh tables, a new manifest is
 * written and CURRENT switched to it atomically; only then are the old files removed. A crash
 * during repair leaves the old files in place, so repair can simply be run again.
 */
import { StowageError } from "../errors.js";
import { decodeBatch } from "./batch.js";
import { LruCache } from "./cache.js";
import { writeStandaloneManifest } from "./db.js";
import { KIND_DELETE, TRAILER_SIZE, compareInternalKeys, compareRange, kindOf, parseFileName, seqOf, tableFileName } from "./format.js";
import { joinPath, nodeFileSystem, type FileSystem } from "./fs.js";
import { MergingIterator, type InternalIterator } from "./iterator.js";
import { acquireLock, releaseLock } from "./lock.js";
import { readLog } from "./log.js";
import { MANIFEST_FORMAT_VERSION, VersionEdit, type FileMeta } from "./version.js";
import { Memtable } from "./memtable.js";
import type { Block } from "./table/block.js";
import { TableBuilder } from "./table/builder.js";
import { Table } from "./table/table.js";
import type { RepairReport } from "./types.js";

export interface RepairOptions {
  fs?: FileSystem;
  targetFileSize?: number;
  blockSize?: number;
  bloomBitsPerKey?: number;
}

export async function repairKv(dir: string, options: RepairOptions = {}): Promise<RepairReport> {
  const fs = options.fs ?? nodeFileSystem;
  if (!fs.exists(dir)) throw new StowageError("STOWAGE_KV_NOT_FOUND", `no store at ${dir}`, { file: dir });
  acquireLock(fs, dir);
  try {
    return await repairLocked(fs, dir, options);
  } finally {
    releaseLock(fs, dir);
  }
}

async function repairLocked(fs: FileSystem, dir: string, options: RepairOptions): Promise<RepairReport> {
  const report: RepairReport = { tablesKept: 0, tablesDropped: [], logRecordsRecovered: 0, logBytesDropped: 0 };
  const names = fs.readdir(dir);
  const parsed = names.map((n) => ({ name: n, ...parseFileName(n) }));
  let maxNumber = 1;
  for (const p of parsed) if (p.num > maxNumber) maxNumber = p.num;
  let nextNumber = maxNumber + 1;
  let maxSeq = 0;
  const cache = new LruCache<Block>(0);

  // 1. Tables: keep those that scan cleanly end to end.
  const tables: Table[] = [];
  const oldFiles: string[] = [];
  for (const p of parsed.filter((x) => x.kind === "table").sort((a, b) => a.num - b.num)) {
    const path = joinPath(dir, p.name);
    let table: Table | undefined;
    try {
      const file = fs.openRandomAccess(path);
      try {
        table = Table.open(file, p.num, cache, { verifyChecksums: true });
        const it = table.iterator(false);
        for (it.seekToFirst(); it.valid(); it.next()) {
          const s = seqOf(it.key());
          if (s > maxSeq) maxSeq = s;
        }
      } catch (err) {
        file.close();
        table = undefined;
        throw err;
      }
      tables.push(table);
      oldFiles.push(path);
      report.tablesKept++;
    } catch {
      fs.mkdir(joinPath(dir, "lost"));
      fs.rename(path, joinPath(joinPath(dir, "lost"), p.name));
      report.tablesDropped.push(p.name);
    }
  }

  // 2. Logs: salvage every intact record.
  const mem = new Memtable();
  for (const p of parsed.filter((x) => x.kind === "log").sort((a, b) => a.num - b.num)) {
    const path = joinPath(dir, p.name);
    const { records, damage } = readLog(fs.readFile(path));
    for (const d of damage) report.logBytesDropped += d.bytes;
    for (let i = 1; i < records.length; i++) {
      const rec = records[i]!;
      try {
        // Decode fully before applying, so a damaged record adds nothing.
        const ops: [number, number, Uint8Array, Uint8Array][] = [];
        decodeBatch(rec.payload, path, rec.offset, (s, kind, key, value) => ops.push([s, kind, key, value]));
        for (const [s, kind, key, value] of ops) {
          mem.add(s, kind, key, value);
          if (s > maxSeq) maxSeq = s;
        }
        report.logRecordsRecovered++;
      } catch {
        report.logBytesDropped += rec.payload.length;
      }
    }
    oldFiles.push(path);
  }

  // 3. Merge everything into fresh, non-overlapping tables (newest version of each key only).
  const children: InternalIterator[] = [mem.iterator(), ...tables.map((t) => t.iterator(false))];
  const merged = new MergingIterator(children);
  const outputs: FileMeta[] = [];
  const target = options.targetFileSize ?? 2 * 1024 * 1024;
  let builder: TableBuilder | undefined;
  let file: ReturnType<FileSystem["createWritable"]> | undefined;
  let num = 0;
  const finish = async (): Promise<void> => {
    if (builder === undefined || file === undefined) return;
    const props = builder.finish();
    await file.sync();
    file.close();
    outputs.push({ number: num, size: props.fileSize, smallest: props.smallest, largest: props.largest });
    builder = undefined;
    file = undefined;
  };
  let prevKey: Uint8Array | undefined;
  for (merged.seekToFirst(); merged.valid(); merged.next()) {
    const key = merged.key();
    const ulen = key.length - TRAILER_SIZE;
    if (prevKey !== undefined) {
      // The same entry can survive in a log and a table (a crash before the log was deleted):
      // and only the newest version of a user key is kept.
      if (compareInternalKeys(prevKey, key) === 0) continue;
      if (compareRange(prevKey, 0, prevKey.length - TRAILER_SIZE, key, 0, ulen) === 0) continue;
    }
    prevKey = key.slice();
    if (kindOf(key) === KIND_DELETE) continue; // nothing older survives below it
    if (builder !== undefined && builder.estimatedSize >= target) await finish();
    if (builder === undefined) {
      num = nextNumber++;
      file = fs.createWritable(joinPath(dir, tableFileName(num)));
      builder = new TableBuilder(file, {
        blockSize: options.blockSize ?? 4096,
        restartInterval: 16,
        bloomBitsPerKey: options.bloomBitsPerKey ?? 10,
      });
    }
    builder.add(key, merged.value());
  }
  await finish();
  for (const t of tables) t.close();

  // 4. Install: new manifest and CURRENT first, then remove what they replaced.
  const edit = new VersionEdit();
  edit.formatVersion = MANIFEST_FORMAT_VERSION;
  edit.logNumber = 0;
  const manifestNum = nextNumber++;
  edit.nextFileNumber = nextNumber;
  edit.lastSequence = maxSeq;
  for (const f of outputs) edit.addFile(1, f);
  await writeStandaloneManifest(fs, dir, manifestNum, edit);
  for (const path of oldFiles) fs.remove(path);
  for (const p of parsed) if (p.kind === "manifest" || p.kind === "temp") fs.remove(joinPath(dir, p.name));
  return report;
}
