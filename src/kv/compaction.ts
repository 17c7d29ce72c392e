/**
 * The work of a flush or a compaction, independent of where it runs: in the store's own thread
 * (cooperatively, yielding to the event loop) or in the background worker thread (see
 * background.ts). Both call the same functions here, so there is one implementation of the
 * merge and its dropping rules.
 */
import { KIND_DELETE, TRAILER_SIZE, compareRange, kindOf, seqOf, tableFileName } from "./format.js";
import { joinPath, type FileSystem, type WritableFile } from "./fs.js";
import { MergingIterator, type InternalIterator } from "./iterator.js";
import { TableBuilder } from "./table/builder.js";
import type { FileMeta } from "./version.js";

export interface TableOptions {
  blockSize: number;
  restartInterval: number;
  bloomBitsPerKey: number;
}

/** A user-key range [smallest, largest] of one file in a level below the compaction. */
export type KeyRange = [smallest: Uint8Array, largest: Uint8Array];

export interface CompactionJob {
  dir: string;
  /** The input files, each readable through `env.openTable`. */
  inputs: number[];
  /** Entries needed by no snapshot at or below this sequence may be dropped. */
  smallestSnapshot: number;
  /** Per level below the output level: the user-key ranges of its files, sorted. */
  deeper: KeyRange[][];
  targetFileSize: number;
  table: TableOptions;
}

export interface JobEnv {
  fs: FileSystem;
  /** An iterator over a table file (checksums verified), and a release callback. */
  openTable(num: number): { iter: InternalIterator; release(): void };
  newFileNumber(): number;
  /** Called every few milliseconds of work; the in-thread runner yields to the event loop here. */
  pause(): Promise<void>;
}

interface Output {
  num: number;
  file: WritableFile;
  builder: TableBuilder;
}

function newOutput(fs: FileSystem, dir: string, num: number, opts: TableOptions): Output {
  const file = fs.createWritable(joinPath(dir, tableFileName(num)));
  return { num, file, builder: new TableBuilder(file, opts) };
}

/** Finishes and syncs a table; an empty one is removed (returns undefined). */
async function finishOutput(fs: FileSystem, out: Output): Promise<FileMeta | undefined> {
  if (out.builder.numEntries === 0) {
    out.file.close();
    fs.remove(out.file.path);
    return undefined;
  }
  const props = out.builder.finish();
  await out.file.sync();
  out.file.close();
  return { number: out.num, size: props.fileSize, smallest: props.smallest, largest: props.largest };
}

function abandon(fs: FileSystem, out: Output | undefined, done: FileMeta[], dir: string): void {
  if (out !== undefined) {
    try {
      out.file.close();
    } catch {
      // already failing
    }
    try {
      fs.remove(out.file.path);
    } catch {
      // the next obsolete-file pass removes it
    }
  }
  for (const f of done) {
    try {
      fs.remove(joinPath(dir, tableFileName(f.number)));
    } catch {
      // the next obsolete-file pass removes it
    }
  }
}

/** Writes every entry of `iter` (already sorted) into table `num`. */
export async function writeTable(
  fs: FileSystem,
  dir: string,
  num: number,
  iter: InternalIterator,
  opts: TableOptions,
  pause: () => Promise<void>,
): Promise<FileMeta | undefined> {
  const out = newOutput(fs, dir, num, opts);
  try {
    let n = 0;
    for (iter.seekToFirst(); iter.valid(); iter.next()) {
      out.builder.add(iter.key(), iter.value());
      if ((++n & 1023) === 0) await pause();
    }
    return await finishOutput(fs, out);
  } catch (err) {
    abandon(fs, out, [], dir);
    throw err;
  }
}

/** True when no file in `deeper` can hold the user key at [0, ulen) of `key`. */
function isBaseLevelForKey(deeper: KeyRange[][], key: Uint8Array, ulen: number): boolean {
  for (const ranges of deeper) {
    // First range whose largest >= key.
    let lo = 0;
    let hi = ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const l = ranges[mid]![1];
      if (compareRange(l, 0, l.length, key, 0, ulen) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo < ranges.length) {
      const s = ranges[lo]![0];
      if (compareRange(s, 0, s.length, key, 0, ulen) <= 0) return false;
    }
  }
  return true;
}

/**
 * Merges the inputs into new tables of about `targetFileSize`, cut only between user keys.
 * Dropping rules (LevelDB's): an entry is dropped when a newer entry of the same user key is
 * visible to the oldest snapshot; a tombstone is dropped when it is visible to every snapshot and
 * no deeper level may hold its key. On failure, every output written is removed.
 */
export async function runCompactionJob(job: CompactionJob, env: JobEnv): Promise<FileMeta[]> {
  const fs = env.fs;
  const dir = job.dir;
  const opened: { release(): void }[] = [];
  const outputs: FileMeta[] = [];
  let out: Output | undefined;
  try {
    const children: InternalIterator[] = [];
    for (const num of job.inputs) {
      const t = env.openTable(num);
      opened.push(t);
      children.push(t.iter);
    }
    const merged = new MergingIterator(children);
    let currentKey: Uint8Array | undefined;
    let lastSeqForKey = Number.MAX_SAFE_INTEGER;
    let n = 0;
    for (merged.seekToFirst(); merged.valid(); merged.next()) {
      if ((++n & 255) === 0) await env.pause();
      const key = merged.key();
      const ulen = key.length - TRAILER_SIZE;
      let newKey = false;
      if (currentKey === undefined || compareRange(key, 0, ulen, currentKey, 0, currentKey.length) !== 0) {
        currentKey = key.slice(0, ulen);
        lastSeqForKey = Number.MAX_SAFE_INTEGER;
        newKey = true;
      }
      const seq = seqOf(key);
      let drop = false;
      if (lastSeqForKey <= job.smallestSnapshot) {
        drop = true;
      } else if (kindOf(key) === KIND_DELETE && seq <= job.smallestSnapshot && isBaseLevelForKey(job.deeper, key, ulen)) {
        drop = true;
      }
      lastSeqForKey = seq;
      if (drop) continue;
      if (out !== undefined && newKey && out.builder.estimatedSize >= job.targetFileSize) {
        const meta = await finishOutput(fs, out);
        out = undefined;
        if (meta !== undefined) outputs.push(meta);
      }
      out ??= newOutput(fs, dir, env.newFileNumber(), job.table);
      out.builder.add(key, merged.value());
    }
    if (out !== undefined) {
      const meta = await finishOutput(fs, out);
      out = undefined;
      if (meta !== undefined) outputs.push(meta);
    }
    return outputs;
  } catch (err) {
    abandon(fs, out, outputs, dir);
    throw err;
  } finally {
    for (const t of opened) t.release();
  }
}
