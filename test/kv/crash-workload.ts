/**
 * The workload shared by the crash test (crash.test.ts, the parent) and its child process
 * (crash-child.ts): store options, the child's configuration, the line protocol, and the
 * deterministic contents of a batch, so the parent can rebuild exactly what each batch wrote.
 *
 * Batch `b` puts `b/<b>/<i>` (i < m) = value(b, i), puts `shared/<j>` = "<b>" for a few j, puts
 * its presence marker `m/<b>` = "<b>" (markers are never deleted by the child), and may delete
 * every data key `b/<d>/<i>` (i < m_d) of one older batch d.
 *
 * Child → parent lines (stdout, one write(2) each, so none is lost when the child is killed):
 *   start                         about to open the store
 *   open                          the store is open
 *   submit <b> <m> <shared> <del> before write() is called; <shared> "1,5" or "-", <del> "d:m_d" or "-"
 *   ack <b>                       after the write's promise resolved
 *   crash <target> <op> <before|after> <wrote>/<of> <phase> <file>
 *                                 the CrashingFileSystem is about to SIGKILL; <phase> is what the
 *                                 store was doing: open, write, switch, flush, compaction, cleanup,
 *                                 manifest-edit, close
 *   ops <json>                    counted operations per target (on a clean finish)
 *   done                          closed cleanly (the crash point was not reached)
 */
import type { CrashTarget } from "../../src/kv/crash-fs.js";
import type { KvOptions } from "../../src/kv/types.js";
export { mulberry32 } from "../../src/util/random.js";

/** Tiny sizes, so flushes, compactions and manifest writes happen all the time. */
export const CRASH_STORE_OPTIONS: KvOptions = {
  memtableSize: 24 * 1024,
  targetFileSize: 16 * 1024,
  maxBytesForLevelBase: 64 * 1024,
  l0CompactionTrigger: 2,
  blockSize: 1024,
  blockCacheSize: 256 * 1024,
};

export const SHARED_KEYS = 8;

export interface ChildConfig {
  dir: string;
  firstBatch: number;
  seed: number;
  /** Crash point for the CrashingFileSystem; absent: plain file system (the parent kills). */
  crash?: { target: CrashTarget; afterOps: number; partial: boolean; after: boolean };
  /** Batches kept in flight at once (1..4). */
  concurrency: number;
  /** Stop submitting after this long (ms after open), then close cleanly. */
  runMs: number;
  /** Older batches whose data keys are live, oldest first: [id, m]. */
  live: [number, number][];
}

export interface BatchSpec {
  b: number;
  m: number;
  shared: number[];
  del: [number, number] | undefined;
}

export function formatSubmit(s: BatchSpec): string {
  const shared = s.shared.length === 0 ? "-" : s.shared.join(",");
  const del = s.del === undefined ? "-" : `${s.del[0]}:${s.del[1]}`;
  return `submit ${s.b} ${s.m} ${shared} ${del}`;
}

export function parseSubmit(parts: string[]): BatchSpec {
  const [, b, m, shared, del] = parts;
  const d = del === "-" || del === undefined ? undefined : del.split(":").map(Number);
  return {
    b: Number(b),
    m: Number(m),
    shared: shared === "-" || shared === undefined ? [] : shared.split(",").map(Number),
    del: d === undefined ? undefined : [d[0]!, d[1]!],
  };
}

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

export function dataKey(b: number, i: number): string {
  return `b/${b}/${i}`;
}

export function markerKey(b: number): string {
  return `m/${b}`;
}

export function sharedKey(j: number): string {
  return `shared/${j}`;
}

/** value(b, i): mostly small; about one in eight 4-40 KiB, so WAL records span 32 KiB blocks. */
export function dataValue(b: number, i: number): string {
  const h = mix(b, i);
  const len = h % 8 === 0 ? 4096 + (mix(h, 1) % (36 * 1024)) : 8 + (mix(h, 2) % 200);
  const unit = `${b}.${i}.${h.toString(36)};`;
  return unit.repeat(Math.ceil(len / unit.length)).slice(0, len);
}

export type Op = { type: "put"; key: string; value: string } | { type: "del"; key: string };

/** The operations of a batch, in the order the child writes them. */
export function batchOps(s: BatchSpec): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < s.m; i++) ops.push({ type: "put", key: dataKey(s.b, i), value: dataValue(s.b, i) });
  for (const j of s.shared) ops.push({ type: "put", key: sharedKey(j), value: String(s.b) });
  ops.push({ type: "put", key: markerKey(s.b), value: String(s.b) });
  if (s.del !== undefined) for (let i = 0; i < s.del[1]; i++) ops.push({ type: "del", key: dataKey(s.del[0], i) });
  return ops;
}
