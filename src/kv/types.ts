/**
 * The public surface of the kv store: options and the shapes of reads, writes and iterators.
 * Keys and values go in as `Uint8Array` (a Buffer is one) or `string` (UTF-8); they come out as
 * Buffers. Keys sort bytewise.
 */
import type { FileSystem } from "./fs.js";

export type Bytes = Uint8Array | string;

export interface KvOptions {
  /** Create the store when the directory holds none. Default true. */
  createIfMissing?: boolean;
  /** Fail when a store already exists. Default false. */
  errorIfExists?: boolean;
  /** Bytes of writes gathered in the memtable before it is flushed to a table. Default 4 MiB. */
  memtableSize?: number;
  /** Bytes of table blocks kept in memory (LRU). Default 8 MiB. */
  blockCacheSize?: number;
  /** Most table files kept open (with their index and bloom filter in memory). Default 1000. */
  maxOpenTables?: number;
  /** Uncompressed size of a table's data block. Default 4 KiB. */
  blockSize?: number;
  /** Keys between restart points inside a block. Default 16. */
  blockRestartInterval?: number;
  /** Bloom filter bits per key (0 disables filters). Default 10 (about 1% false positives). */
  bloomBitsPerKey?: number;
  /** Target size of a table written by compaction. Default 2 MiB. */
  targetFileSize?: number;
  /** Size limit of level 1; each deeper level is `levelSizeMultiplier` times larger. Default 10 MiB. */
  maxBytesForLevelBase?: number;
  levelSizeMultiplier?: number;
  /** Level-0 files that trigger a compaction. Default 4. */
  l0CompactionTrigger?: number;
  /** Level-0 files at which each write is delayed by 1 ms. Default 8. */
  l0SlowdownTrigger?: number;
  /** Level-0 files at which writes wait for compaction. Default 12. */
  l0StopTrigger?: number;
  /** Verify block checksums on every read. Default true. */
  verifyChecksums?: boolean;
  /** Compact in the background automatically. Default true (tests may turn it off). */
  autoCompaction?: boolean;
  /**
   * Run flushes and compactions in a worker thread (the second core) instead of interleaved with
   * requests on the event loop. Default true, except with an injected `fs`: the worker always
   * works on the real file system, so fault and crash tests run background work in-thread.
   */
  backgroundThread?: boolean;
  /** The file system to use; tests inject faults through it. */
  fs?: FileSystem;
}

export interface WriteOptions {
  /** Wait until the write-ahead log is on stable storage before resolving. Default true. */
  sync?: boolean;
  /**
   * Called once the batch is in the memtable, before it is durable: from then on, reads with
   * `pending: true` see it (ordinary reads see it once the write resolves). A caller that orders
   * its writes with a lock of its own can release the lock here and wait for durability outside
   * it, so that the next writer's batch joins the same log sync (see docs/KV.md, "Group commit").
   */
  onApplied?: () => void;
}

export interface ReadOptions {
  /** Read as of this snapshot instead of the latest state. */
  snapshot?: Snapshot;
  /**
   * Also see writes applied but not yet durable (acknowledged to nobody yet). For a writer that
   * builds on the writes before its own under a lock of its own; never for answering a reader.
   * Ignored with `snapshot`.
   */
  pending?: boolean;
  /** Put blocks read for this call into the block cache. Default true. */
  fillCache?: boolean;
}

export type BatchOperation = { type: "put"; key: Bytes; value: Bytes } | { type: "del"; key: Bytes };

export interface RangeOptions {
  gt?: Bytes;
  gte?: Bytes;
  lt?: Bytes;
  lte?: Bytes;
  /** Only keys starting with these bytes (combines with the other bounds). */
  prefix?: Bytes;
}

export interface IteratorOptions extends RangeOptions, ReadOptions {
  /** Iterate from the largest key down. Default false. */
  reverse?: boolean;
  /** Yield at most this many entries (-1 or Infinity: no limit). */
  limit?: number;
}

export type CursorOptions = RangeOptions & ReadOptions;

/** A consistent read view: reads through it see the store as it was when it was taken. */
export interface Snapshot {
  readonly sequence: number;
  /** Lets compaction drop versions this snapshot was keeping. Idempotent. */
  release(): void;
}

export type Entry = [key: Buffer, value: Buffer];

/** LevelDB-style cursor: free movement in both directions inside its bounds. */
export interface KvCursor {
  valid(): boolean;
  seekToFirst(): void;
  seekToLast(): void;
  /** First key >= target (within bounds). */
  seek(target: Bytes): void;
  /** Last key <= target (within bounds). */
  seekForPrev(target: Bytes): void;
  next(): void;
  prev(): void;
  key(): Buffer;
  value(): Buffer;
  close(): void;
}

/** abstract-level-style iterator: bounds, reverse, limit, `for await` and `for of`. */
export interface KvIterator extends AsyncIterable<Entry>, Iterable<Entry> {
  /** The next entry in iteration order, or undefined at the end. */
  next(): Promise<Entry | undefined>;
  nextSync(): Entry | undefined;
  /** Up to `size` next entries. */
  nextv(size: number): Promise<Entry[]>;
  /** All remaining entries (up to the limit); closes the iterator. */
  all(): Promise<Entry[]>;
  /** Repositions so the next entry is the first at or after `target` in iteration order. */
  seek(target: Bytes): void;
  close(): Promise<void>;
}

export interface KvStats {
  sequence: number;
  memtableBytes: number;
  immutableMemtables: number;
  /** Files and bytes per level, level 0 first. */
  levels: { files: number; bytes: number }[];
  blockCache: { bytes: number; capacity: number; hits: number; misses: number };
  compactions: number;
  flushes: number;
  writeStallsMs: number;
  liveSnapshots: number;
  liveIterators: number;
}

export interface RepairReport {
  tablesKept: number;
  tablesDropped: string[];
  logRecordsRecovered: number;
  logBytesDropped: number;
}
