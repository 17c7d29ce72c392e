/**
 * The kv store: write path (group-committed WAL, memtable), read path (memtables, then tables
 * level by level), background flush and leveled compaction, snapshots, iterators, checkpoints.
 *
 * Concurrency model: one event loop. Writes are queued; a single writer loop takes everything
 * queued as one group, appends it to the WAL as one record, waits for one fsync if any writer
 * asked for it, then applies the group to the memtable. Flush and compaction run as one
 * background task that yields to the event loop regularly, so foreground reads and writes go on.
 */
import { StowageError, corruption } from "../errors.js";
import { WriteBatch, decodeBatch, encodeGroup, toBytes } from "./batch.js";
import { LruCache } from "./cache.js";
import { BoundedCursor, EntryIterator, UserIterator, normalizeBounds } from "./db-iterator.js";
import {
  CURRENT_FILE,
  KIND_DELETE,
  KIND_FOR_SEEK,
  KIND_VALUE,
  TRAILER_SIZE,
  compareRange,
  compareUserKeyTo,
  kindOf,
  logFileName,
  makeInternalKey,
  manifestFileName,
  parseFileName,
  tableFileName,
  userKeyOf,
} from "./format.js";
import { joinPath, nodeFileSystem, type FileSystem, type WritableFile } from "./fs.js";
import { MergingIterator, type InternalIterator } from "./iterator.js";
import { LogWriter, damageBeforeTail, readLog } from "./log.js";
import {
  LOG_KIND_MANIFEST,
  LOG_KIND_WAL,
  VersionSet,
  checkLogHeader,
  encodeCurrent,
  logHeaderRecord,
} from "./manifest.js";
import { acquireLock, releaseLock } from "./lock.js";
import { Memtable } from "./memtable.js";
import type { Block } from "./table/block.js";
import { BackgroundThread } from "./background.js";
import { putFixed64 } from "./coding.js";
import { runCompactionJob, writeTable, type CompactionJob, type KeyRange, type TableOptions } from "./compaction.js";
import { LevelIterator, TableCache } from "./table-cache.js";
import type {
  BatchOperation,
  Bytes,
  CursorOptions,
  IteratorOptions,
  KvCursor,
  KvIterator,
  KvOptions,
  KvStats,
  ReadOptions,
  Snapshot,
  WriteOptions,
} from "./types.js";
import { NUM_LEVELS, Version, VersionEdit, compareUserKeys, keyRange, type FileMeta } from "./version.js";

type Resolved = Required<Omit<KvOptions, "fs">> & { fs: FileSystem };

const DEFAULTS: Omit<Resolved, "fs"> = {
  createIfMissing: true,
  errorIfExists: false,
  memtableSize: 4 * 1024 * 1024,
  blockCacheSize: 8 * 1024 * 1024,
  maxOpenTables: 1000,
  blockSize: 4096,
  blockRestartInterval: 16,
  bloomBitsPerKey: 10,
  targetFileSize: 2 * 1024 * 1024,
  maxBytesForLevelBase: 10 * 1024 * 1024,
  levelSizeMultiplier: 10,
  l0CompactionTrigger: 4,
  l0SlowdownTrigger: 8,
  l0StopTrigger: 12,
  verifyChecksums: true,
  autoCompaction: true,
  backgroundThread: true,
};

/** How long background work runs before yielding to the event loop. */
const YIELD_AFTER_MS = 4;
/** The deepest level a flush may place its table in (LevelDB's kMaxMemCompactLevel). */
const MAX_FLUSH_LEVEL = 2;

interface PendingWrite {
  batch: WriteBatch | undefined;
  /** A barrier runs alone, after every write queued before it. */
  barrier: (() => Promise<void>) | undefined;
  sync: boolean;
  onApplied?: (() => void) | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A group in the memtable that is not visible yet (it waits for a log sync, or follows one that does). */
interface AppliedGroup {
  /** Its last sequence number. */
  last: number;
  /** Its log record must be durable before it is visible. */
  sync: boolean;
  writers: PendingWrite[];
}

/** Someone waiting until every write applied before a point is visible (and durable where asked). */
interface VisibilityWaiter {
  sequence: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Compaction {
  level: number;
  inputs: [FileMeta[], FileMeta[]];
}

/** A promise-based event: waiters are woken by the next notify. */
class Signal {
  private waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

class SnapshotImpl implements Snapshot {
  released = false;
  constructor(
    readonly sequence: number,
    readonly owner: Kv,
  ) {}
  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner._releaseSnapshot(this.sequence);
  }
}

export class Kv {
  private mem: Memtable;
  private imm: Memtable | null = null;
  /** The WAL number created when `imm` was switched out: the flush makes older logs obsolete. */
  private immNextLog = 0;
  private wal!: LogWriter;
  private walNumber = 0;
  private walUnsynced = false;
  private walDirUnsynced = false;
  /**
   * Reads see sequences up to here: every group applied up to it is durable if it asked to be.
   * `versions.lastSequence` is the last one applied to the memtable (at most one sync ahead).
   */
  private visibleSequence = 0;
  /** Every log record up to this sequence is on stable storage. */
  private durableSequence = 0;
  /** The last sequence of the newest group that asked for a sync. */
  private syncRequested = 0;
  /** The log syncs under way (one at a time); undefined when none runs. */
  private syncing: Promise<void> | undefined;
  /** Groups applied and not yet visible, oldest first. */
  private readonly applied: AppliedGroup[] = [];
  private visibilityWaiters: VisibilityWaiter[] = [];
  private readonly queue: PendingWrite[] = [];
  private writing = false;
  private writerDone: Promise<void> = Promise.resolve();
  private bgError: StowageError | undefined;
  private flushActive = false;
  /** Set while a flush's edit is being installed; compactions wait for it before picking. */
  private installingFlush: Promise<void> | null = null;
  private compactActive = false;
  private flushPromise: Promise<void> = Promise.resolve();
  private compactPromise: Promise<void> = Promise.resolve();
  /** The worker thread for flushes and compactions; undefined when they run in this thread. */
  private worker: BackgroundThread | undefined;
  private readonly bgSignal = new Signal();
  private readonly pendingOutputs = new Set<number>();
  private readonly snapshots = new Map<number, number>();
  private closing = false;
  private closed = false;
  private liveIterators = 0;
  /** Cursors (and iterators) not yet closed: close() closes them before their table files. */
  private readonly openCursors = new Set<BoundedCursor>();
  private lookupScratch = new Uint8Array(0);
  private counters = { compactions: 0, flushes: 0, writeStallsMs: 0 };
  private readonly tableCache: TableCache;
  private readonly blockCache: LruCache<Block>;
  private readonly versions: VersionSet;
  private readonly fs: FileSystem;

  private constructor(
    readonly location: string,
    private readonly opts: Resolved,
  ) {
    this.fs = opts.fs;
    this.mem = this.newMemtable();
    this.blockCache = new LruCache<Block>(opts.blockCacheSize);
    this.tableCache = new TableCache(opts.fs, location, opts.maxOpenTables, this.blockCache, opts.verifyChecksums);
    this.versions = new VersionSet(opts.fs, location);
  }

  static async open(location: string, options: KvOptions = {}): Promise<Kv> {
    const opts = resolveOptions(options);
    const db = new Kv(location, opts);
    db.lock();
    try {
      await db.recover();
    } catch (err) {
      db.tableCache.closeAll();
      db.versions.close();
      if (db.walNumber > 0) {
        try {
          db.wal.close(); // opened before the failing manifest write
        } catch {
          // already failing
        }
      }
      db.unlock();
      throw err;
    }
    // Start the worker now: its start-up (tens of milliseconds) would otherwise stall the first flush.
    db.backgroundThread();
    db.maybeScheduleBackground();
    return db;
  }

  // ---------------------------------------------------------------- locking

  private lock(): void {
    if (!this.fs.exists(this.location)) {
      if (!this.opts.createIfMissing) {
        throw new StowageError("STOWAGE_KV_NOT_FOUND", `no store at ${this.location}`, { file: this.location });
      }
      this.fs.mkdir(this.location);
    }
    acquireLock(this.fs, this.location);
  }

  private unlock(): void {
    releaseLock(this.fs, this.location);
  }

  // ---------------------------------------------------------------- recovery

  private async recover(): Promise<void> {
    const fs = this.fs;
    const dir = this.location;
    const exists = fs.exists(joinPath(dir, CURRENT_FILE));
    if (!exists) {
      // Manifests alone hold no data: creating a store writes its first manifest before CURRENT
      // and its first log, so a crash in between leaves just that (it is overwritten below).
      const hasFiles = fs.readdir(dir).some((n) => {
        const k = parseFileName(n).kind;
        return k === "table" || k === "log";
      });
      if (hasFiles) {
        throw corruption(joinPath(dir, CURRENT_FILE), 0, "CURRENT is missing but store files exist (run repair)");
      }
      if (!this.opts.createIfMissing) {
        throw new StowageError("STOWAGE_KV_NOT_FOUND", `no store at ${dir}`, { file: dir });
      }
      await this.versions.create();
    } else {
      if (this.opts.errorIfExists) throw new StowageError("STOWAGE_KV_EXISTS", `a store exists at ${dir}`, { file: dir });
      this.versions.recover();
    }
    const vs = this.versions;
    for (const level of vs.current.files) {
      for (const f of level) {
        const p = joinPath(dir, tableFileName(f.number));
        if (!fs.exists(p)) throw corruption(p, 0, "table file named by the manifest is missing");
      }
    }
    // Replay the logs that may hold data not yet in tables, oldest first.
    const logs = fs
      .readdir(dir)
      .map(parseFileName)
      .filter((p) => p.kind === "log" && p.num >= vs.logNumber)
      .map((p) => p.num)
      .sort((a, b) => a - b);
    // A log numbered past the manifest's next file number (started after its last edit) must not
    // have its number handed out again: the new WAL would truncate it, or a new manifest or table
    // would take it and leave the log behind, to be replayed a second time at the next open.
    if (logs.length > 0) vs.nextFileNumber = Math.max(vs.nextFileNumber, logs[logs.length - 1]! + 1);
    let maxSeq = vs.lastSequence;
    let lastReplayed = 0;
    const mem = new Memtable();
    for (let i = 0; i < logs.length; i++) {
      const path = joinPath(dir, logFileName(logs[i]!));
      const data = fs.readFile(path);
      const read = readLog(data);
      const { records } = read;
      // Only the newest log can end in a torn write.
      const bad = i < logs.length - 1 ? read.damage[0] : damageBeforeTail(data, read);
      if (bad !== undefined) {
        throw corruption(path, bad.offset, `write-ahead log ${bad.reason} (${bad.bytes} bytes); run repair to salvage`);
      }
      // A torn tail (a write cut short by a crash) is expected and dropped; it was never acknowledged.
      // Cut it off the file before a newer log is started below: should this open crash before
      // its manifest edit retires this log, the tail would be in a log that is not the newest.
      if (read.damage.length > 0) fs.truncate(path, read.validEnd);
      if (records.length === 0) continue;
      checkLogHeader(records[0]!.payload, LOG_KIND_WAL, path);
      for (let r = 1; r < records.length; r++) {
        const rec = records[r]!;
        const { seq, count } = decodeBatch(rec.payload, path, rec.offset, (s, kind, key, value) =>
          mem.add(s, kind, key, value),
        );
        if (count === 0) continue;
        if (seq <= lastReplayed) {
          throw corruption(path, rec.offset, `sequence ${seq} goes backwards (previous record ended at ${lastReplayed})`);
        }
        lastReplayed = seq + count - 1;
        maxSeq = Math.max(maxSeq, lastReplayed);
      }
    }
    vs.lastSequence = maxSeq;
    this.visibleSequence = maxSeq;
    this.durableSequence = maxSeq;
    const edit = new VersionEdit();
    if (mem.entries > 0) {
      const meta = await this.writeLevel0Table(mem, true);
      if (meta !== undefined) edit.addFile(0, meta);
    }
    this.openNewWal();
    edit.logNumber = this.walNumber;
    edit.lastSequence = maxSeq;
    await vs.logAndApply(edit);
    this.pendingOutputs.clear();
    this.deleteObsoleteFiles(true);
  }

  private openNewWal(): void {
    const num = this.versions.newFileNumber();
    const file: WritableFile = this.fs.createWritable(joinPath(this.location, logFileName(num)));
    const w = new LogWriter(file);
    try {
      w.addRecord(logHeaderRecord(LOG_KIND_WAL));
    } catch (err) {
      w.close();
      // A torn header followed by a later log would read as mid-log corruption at the next open:
      // remove the file, or (if that fails too) stop creating logs after it.
      try {
        this.fs.remove(file.path);
      } catch {
        this.setBgError(err);
      }
      throw err;
    }
    const old = this.walNumber > 0 ? this.wal : undefined;
    this.wal = w;
    this.walNumber = num;
    this.walUnsynced = true;
    // The new file's directory entry must be durable before a synced write in it is acknowledged.
    this.walDirUnsynced = true;
    if (old !== undefined) {
      try {
        old.close();
      } catch {
        // Its data is in the memtable being flushed; the flush makes it obsolete.
      }
    }
  }

  // ---------------------------------------------------------------- writes

  put(key: Bytes, value: Bytes, options?: WriteOptions): Promise<void> {
    let b: WriteBatch;
    try {
      b = new WriteBatch().put(key, value);
    } catch (err) {
      return Promise.reject(err); // a bad key or value rejects, as batch() does; it never throws
    }
    return this.write(b, options);
  }

  del(key: Bytes, options?: WriteOptions): Promise<void> {
    let b: WriteBatch;
    try {
      b = new WriteBatch().del(key);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.write(b, options);
  }

  /** Applies all operations atomically. Without arguments, returns a chained batch. */
  batch(ops: BatchOperation[], options?: WriteOptions): Promise<void>;
  batch(): ChainedBatch;
  batch(ops?: BatchOperation[], options?: WriteOptions): Promise<void> | ChainedBatch {
    if (ops === undefined) return new ChainedBatch(this);
    let b: WriteBatch;
    try {
      b = new WriteBatch();
      for (const op of ops) {
        if (op.type === "put") b.put(op.key, op.value);
        else if (op.type === "del") b.del(op.key);
        else throw new StowageError("STOWAGE_INVALID_ARGUMENT", `unknown batch operation type`);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.write(b, options);
  }

  /** Commits a batch. The batch must not be reused afterwards. */
  write(batch: WriteBatch, options?: WriteOptions): Promise<void> {
    if (this.closing) return Promise.reject(closedError());
    if (this.bgError) return Promise.reject(this.readOnlyError());
    const sync = options?.sync ?? true;
    const onApplied = options?.onApplied;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ batch, barrier: undefined, sync, onApplied, resolve, reject });
      if (!this.writing) this.startWriter();
    });
  }

  /** Runs `fn` after every write queued before it, with no write running alongside. */
  private barrier(fn: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ batch: undefined, barrier: fn, sync: false, resolve, reject });
      if (!this.writing) this.startWriter();
    });
  }

  private startWriter(): void {
    this.writing = true;
    this.writerDone = this.writerLoop().catch((err: unknown) => {
      // Only a bug gets here; fail loudly rather than leave writers hanging.
      this.writing = false;
      this.setBgError(err);
      for (const w of this.queue.splice(0)) w.reject(this.readOnlyError());
    });
  }

  /**
   * `writing` is cleared in the same turn the queue is seen empty (no await in between), so a
   * write queued by a continuation of the last group always finds a writer or starts one.
   */
  private async writerLoop(): Promise<void> {
    const queue = this.queue;
    for (;;) {
      if (queue.length === 0) {
        this.writing = false;
        return;
      }
      const head = queue[0]!;
      if (head.barrier !== undefined) {
        queue.shift();
        try {
          // A barrier sees the writes before it durable and visible (a checkpoint copies them).
          await this.drainSyncs();
          await head.barrier();
          head.resolve();
        } catch (err) {
          head.reject(err);
        }
        continue;
      }
      try {
        await this.makeRoomForWrite();
      } catch (err) {
        // Fail every queued write up to the next barrier.
        while (queue.length > 0 && queue[0]!.barrier === undefined) queue.shift()!.reject(err);
        continue;
      }
      // The group: every write queued now, up to a barrier.
      let n = 0;
      let sync = false;
      while (n < queue.length && queue[n]!.barrier === undefined) {
        sync ||= queue[n]!.sync;
        n++;
      }
      const group = queue.splice(0, n);
      const batches = group.map((w) => w.batch!);
      const seq = this.versions.lastSequence + 1;
      const { record, count } = encodeGroup(batches, seq);
      try {
        this.wal.addRecord(record);
        this.walUnsynced = true;
      } catch (err) {
        // The log's tail is unknown now: stop accepting writes (reopen to recover).
        this.setBgError(err);
        for (const w of group) w.reject(this.readOnlyError());
        continue;
      }
      // Applied now, visible (and resolved) once durable: the sync runs while the next groups are
      // appended and applied, and one sync covers all of them (pipelined group commit).
      const mem = this.mem;
      decodeBatch(record, logFileName(this.walNumber), 0, (s, kind, key, value) => mem.add(s, kind, key, value));
      const last = seq + count - 1;
      this.versions.lastSequence = last;
      this.applied.push({ last, sync, writers: group });
      for (const w of group) {
        try {
          w.onApplied?.();
        } catch {
          // the caller's callback; its failure is not the write's
        }
      }
      if (sync) {
        this.syncRequested = last;
        this.startSyncs();
      }
      this.advanceVisible();
    }
  }

  /**
   * Syncs the log until everything that asked for it is durable. One runs at a time; groups
   * appended during a sync are covered by the next one. A failure puts the store in read-only
   * mode and fails every write not yet visible: they stay in the memtable, never visible (reads
   * stop at `visibleSequence`), and are gone at the next open unless the log kept them.
   */
  private startSyncs(): void {
    if (this.syncing !== undefined) return;
    const running: Promise<void> = this.runSyncs().finally(() => {
      if (this.syncing === running) this.syncing = undefined;
    });
    this.syncing = running;
  }

  private async runSyncs(): Promise<void> {
    try {
      while (this.durableSequence < this.syncRequested) {
        if (this.bgError) {
          // A later write failed (or background work did): nothing more is synced or acknowledged.
          this.failInvisible();
          return;
        }
        const target = this.versions.lastSequence;
        if (this.walDirUnsynced) {
          // The new log's directory entry must be durable before a synced write in it is acknowledged.
          await this.fs.syncDir(this.location);
          this.walDirUnsynced = false;
        }
        await this.wal.sync();
        if (target > this.durableSequence) this.durableSequence = target;
        if (target === this.versions.lastSequence) this.walUnsynced = false;
        this.advanceVisible();
      }
    } catch (err) {
      this.setBgError(err);
      this.failInvisible();
    }
  }

  /** Waits until no log sync runs and every write that asked for one is durable. */
  private async drainSyncs(): Promise<void> {
    while (this.syncing !== undefined) await this.syncing;
    if (this.bgError) throw this.readOnlyError();
  }

  /** Moves `visibleSequence` past every applied group that may be seen, and resolves their writers. */
  private advanceVisible(): void {
    const applied = this.applied;
    let n = 0;
    while (n < applied.length && (!applied[n]!.sync || applied[n]!.last <= this.durableSequence)) n++;
    if (n === 0) return;
    const done = applied.splice(0, n);
    this.visibleSequence = done[done.length - 1]!.last;
    for (const g of done) for (const w of g.writers) w.resolve();
    if (this.visibilityWaiters.length > 0) {
      const still: VisibilityWaiter[] = [];
      for (const w of this.visibilityWaiters) {
        if (w.sequence <= this.visibleSequence) w.resolve();
        else still.push(w);
      }
      this.visibilityWaiters = still;
    }
  }

  /** After a failed sync: every write applied but not visible fails, and so does everyone waiting on one. */
  private failInvisible(): void {
    for (const g of this.applied.splice(0)) for (const w of g.writers) w.reject(this.readOnlyError());
    for (const w of this.visibilityWaiters.splice(0)) w.reject(this.readOnlyError());
  }

  /**
   * Resolves once every write applied so far is visible to ordinary reads (durable where it asked
   * to be). A writer that read with `pending: true` and wrote nothing waits for this before it
   * answers: its answer may rest on writes not yet durable.
   */
  settled(): Promise<void> {
    const sequence = this.versions.lastSequence;
    if (sequence <= this.visibleSequence) return Promise.resolve();
    if (this.bgError) return Promise.reject(this.readOnlyError());
    return new Promise<void>((resolve, reject) => this.visibilityWaiters.push({ sequence, resolve, reject }));
  }

  private async makeRoomForWrite(): Promise<void> {
    let delayed = false;
    for (;;) {
      if (this.bgError) throw this.readOnlyError();
      // Writes queued before close still complete: no background work runs to make room any
      // more, so they go into the current memtable even over its size (reopen flushes it).
      if (this.closing) return;
      const l0 = this.versions.current.files[0]!.length;
      if (!delayed && l0 >= this.opts.l0SlowdownTrigger && this.opts.autoCompaction) {
        // Spread the slowdown over many writes instead of stopping one for a long time.
        const t = Date.now();
        await new Promise((r) => setTimeout(r, 1));
        this.counters.writeStallsMs += Date.now() - t;
        delayed = true;
        continue;
      }
      if (this.mem.approximateBytes < this.opts.memtableSize) return;
      if (this.imm !== null || (l0 >= this.opts.l0StopTrigger && this.opts.autoCompaction)) {
        const t = Date.now();
        this.maybeScheduleBackground();
        await this.bgSignal.wait();
        this.counters.writeStallsMs += Date.now() - t;
        continue;
      }
      await this.switchMemtable();
    }
  }

  private newMemtable(): Memtable {
    return new Memtable(Math.ceil(this.opts.memtableSize * 1.25) + 65536);
  }

  private async switchMemtable(): Promise<void> {
    // After a failure the current log may end in a torn record; a newer log after it would make
    // that tail look like mid-log corruption and the store would not open.
    if (this.bgError) throw this.readOnlyError();
    // Syncs under way are on the old log: let them finish (the memtable switched out must hold
    // only durable writes, since its flush makes them durable regardless).
    await this.drainSyncs();
    if (this.walUnsynced) {
      // Make the old log complete on disk before a newer one exists, for the same reason:
      // after a power loss, only the newest log may end in a torn write.
      try {
        const target = this.versions.lastSequence;
        await this.wal.sync();
        this.walUnsynced = false;
        this.durableSequence = Math.max(this.durableSequence, target);
        this.advanceVisible();
      } catch (err) {
        this.setBgError(err);
        this.failInvisible();
        throw this.readOnlyError();
      }
    }
    this.openNewWal();
    this.imm = this.mem;
    this.immNextLog = this.walNumber;
    this.mem = this.newMemtable();
    this.maybeScheduleBackground();
  }

  // ---------------------------------------------------------------- reads

  get(key: Bytes, options?: ReadOptions): Promise<Buffer | undefined> {
    try {
      return Promise.resolve(this.getSync(key, options));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Synchronous point read: memtables, then level 0 newest first, then one file per deeper level. */
  getSync(key: Bytes, options?: ReadOptions): Buffer | undefined {
    this.checkOpen();
    const k = toBytes(key, "key");
    const seq = this.readSequence(options);
    let r = this.mem.get(k, seq);
    if (r === undefined && this.imm !== null) r = this.imm.get(k, seq);
    if (r !== undefined) return r.deleted ? undefined : Buffer.from(r.value);
    const v = this.versions.current;
    const fill = options?.fillCache ?? true;
    let target: Uint8Array | undefined;
    for (let level = 0; level < NUM_LEVELS; level++) {
      const files = v.files[level]!;
      if (files.length === 0) continue;
      if (level === 0) {
        for (const f of files) {
          if (compareUserKeyTo(k, f.smallest) < 0 || compareUserKeyTo(k, f.largest) > 0) continue;
          target ??= this.lookupKey(k, seq);
          const c = this.tableCache.get(f.number).lookup(target, fill);
          if (c !== undefined) {
            const ck = c.key();
            if (compareRange(ck, 0, ck.length - TRAILER_SIZE, k, 0, k.length) === 0) {
              return kindOf(ck) === KIND_VALUE ? Buffer.from(c.value()) : undefined;
            }
          }
        }
      } else {
        const i = v.findFile(level, k);
        if (i >= files.length) continue;
        const f = files[i]!;
        if (compareUserKeyTo(k, f.smallest) < 0) continue;
        target ??= this.lookupKey(k, seq);
        const c = this.tableCache.get(f.number).lookup(target, fill);
        if (c !== undefined) {
          const ck = c.key();
          if (compareRange(ck, 0, ck.length - TRAILER_SIZE, k, 0, k.length) === 0) {
            return kindOf(ck) === KIND_VALUE ? Buffer.from(c.value()) : undefined;
          }
        }
      }
    }
    return undefined;
  }

  /** The internal key a point read seeks to, in a buffer reused across reads of one key length. */
  private lookupKey(k: Uint8Array, seq: number): Uint8Array {
    let t = this.lookupScratch;
    if (t.length !== k.length + TRAILER_SIZE) {
      t = new Uint8Array(k.length + TRAILER_SIZE);
      this.lookupScratch = t;
    }
    t.set(k);
    putFixed64(t, k.length, seq * 256 + KIND_FOR_SEEK);
    return t;
  }

  private readSequence(options?: ReadOptions): number {
    const s = options?.snapshot;
    if (s === undefined) return options?.pending === true ? this.versions.lastSequence : this.visibleSequence;
    if (!(s instanceof SnapshotImpl) || s.released || s.owner !== this) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", "snapshot is released or belongs to another store");
    }
    return s.sequence;
  }

  /** A consistent view as of now (`pending`: including writes not yet durable; see ReadOptions). */
  snapshot(options: { pending?: boolean } = {}): Snapshot {
    this.checkOpen();
    const seq = options.pending === true ? this.versions.lastSequence : this.visibleSequence;
    this.snapshots.set(seq, (this.snapshots.get(seq) ?? 0) + 1);
    return new SnapshotImpl(seq, this);
  }

  /** @internal */
  _releaseSnapshot(seq: number): void {
    const n = (this.snapshots.get(seq) ?? 1) - 1;
    if (n <= 0) this.snapshots.delete(seq);
    else this.snapshots.set(seq, n);
  }

  private smallestSnapshot(): number {
    let min = this.visibleSequence;
    for (const s of this.snapshots.keys()) if (s < min) min = s;
    return min;
  }

  /** A bidirectional cursor over the visible entries within the bounds. */
  cursor(options: CursorOptions = {}): KvCursor {
    return this.makeCursor(options);
  }

  /** abstract-level-style iterator: bounds, prefix, reverse, limit; `for await` or `for of`. */
  iterator(options: IteratorOptions = {}): KvIterator {
    return new EntryIterator(this.makeCursor(options), options);
  }

  private makeCursor(options: CursorOptions): BoundedCursor {
    this.checkOpen();
    const seq = this.readSequence(options);
    const bounds = normalizeBounds(options);
    const fill = options.fillCache ?? true;
    const v = this.versions.current;
    this.versions.ref(v);
    const children: InternalIterator[] = [this.mem.iterator()];
    if (this.imm !== null) children.push(this.imm.iterator());
    const held: number[] = [];
    const levels: LevelIterator[] = [];
    try {
      for (const f of v.files[0]!) {
        const t = this.tableCache.acquire(f.number);
        held.push(f.number);
        children.push(t.iterator(fill));
      }
      for (let l = 1; l < NUM_LEVELS; l++) {
        if (v.files[l]!.length === 0) continue;
        const it = new LevelIterator(v.files[l]!, this.tableCache, fill);
        levels.push(it);
        children.push(it);
      }
    } catch (err) {
      for (const n of held) this.tableCache.release(n);
      this.versions.unref(v);
      throw err;
    }
    this.liveIterators++;
    const release = (): void => {
      for (const n of held) this.tableCache.release(n);
      for (const it of levels) it.close();
      // Only a cursor that held the last reference to an older version can make files obsolete;
      // skipping the directory scan otherwise keeps short point-read cursors cheap.
      const died = this.versions.unref(v);
      this.liveIterators--;
      if (died && !this.closed) this.deleteObsoleteFiles(false);
    };
    const cursor = new BoundedCursor(new UserIterator(new MergingIterator(children), seq), bounds, () => {
      this.openCursors.delete(cursor);
      release();
    });
    this.openCursors.add(cursor);
    return cursor;
  }

  // ---------------------------------------------------------------- background work

  private get bgActive(): boolean {
    return this.flushActive || this.compactActive;
  }

  /**
   * Starts the flush task (when a memtable waits to be flushed) and the compaction task (when a
   * level needs one), each unless already running. They run concurrently, so a full memtable
   * never waits behind a long compaction.
   */
  private maybeScheduleBackground(): void {
    if (this.closing || this.bgError) return;
    if (!this.flushActive && this.imm !== null) {
      this.flushActive = true;
      this.flushPromise = this.flushTask();
    }
    if (!this.compactActive && this.opts.autoCompaction && this.pickCompaction() !== undefined) {
      this.compactActive = true;
      this.compactPromise = this.compactionTask();
    }
  }

  private async flushTask(): Promise<void> {
    try {
      await yieldToLoop();
      while (this.imm !== null && !this.closing && !this.bgError) await this.flushImmutable();
    } catch (err) {
      if (!(err instanceof ClosingAbort)) this.setBgError(err);
    } finally {
      this.flushActive = false;
      this.bgSignal.notify();
      this.maybeScheduleBackground();
    }
  }

  private async compactionTask(): Promise<void> {
    try {
      await yieldToLoop();
      while (!this.closing && !this.bgError) {
        while (this.installingFlush !== null) await this.installingFlush;
        const c = this.pickCompaction();
        if (c === undefined) break;
        await this.runCompaction(c);
      }
    } catch (err) {
      if (!(err instanceof ClosingAbort)) this.setBgError(err);
    } finally {
      this.compactActive = false;
      this.bgSignal.notify();
      this.maybeScheduleBackground();
    }
  }

  /** Where flush and compaction jobs run: the worker thread, or this one (yielding regularly). */
  private backgroundThread(): BackgroundThread | undefined {
    if (!this.opts.backgroundThread) return undefined;
    this.worker ??= new BackgroundThread();
    return this.worker;
  }

  /** A pause callback for in-thread jobs: yields to the event loop every few milliseconds. */
  private yielder(): () => Promise<void> {
    let last = Date.now();
    return async () => {
      if (Date.now() - last < YIELD_AFTER_MS) return;
      await yieldToLoop();
      if (this.closing) throw new ClosingAbort();
      last = Date.now();
    };
  }

  private tableOptions(): TableOptions {
    return {
      blockSize: this.opts.blockSize,
      restartInterval: this.opts.blockRestartInterval,
      bloomBitsPerKey: this.opts.bloomBitsPerKey,
    };
  }

  private setBgError(err: unknown): void {
    if (this.bgError) return;
    this.bgError =
      err instanceof StowageError ? err : new StowageError("STOWAGE_KV_IO", `background work failed: ${String(err)}`, { cause: err });
    this.bgSignal.notify();
  }

  private readOnlyError(): StowageError {
    return new StowageError(
      "STOWAGE_KV_READ_ONLY",
      `store is read-only after an earlier failure (${this.bgError?.message ?? "unknown"}); reopen it to recover`,
      { cause: this.bgError },
    );
  }

  private async flushImmutable(): Promise<void> {
    const imm = this.imm!;
    const meta = await this.writeLevel0Table(imm);
    const edit = new VersionEdit();
    // Where the table goes is decided now, with no compaction running, and no compaction may
    // start until the edit is installed: a compaction picked from the version without this
    // table could write outputs overlapping it at the level chosen here.
    if (meta !== undefined) edit.addFile(this.compactActive ? 0 : this.levelForFlush(meta), meta);
    edit.logNumber = this.immNextLog;
    const install = this.versions.logAndApply(edit);
    this.installingFlush = install.catch(() => undefined);
    try {
      await install;
    } finally {
      this.installingFlush = null;
    }
    if (meta !== undefined) this.pendingOutputs.delete(meta.number);
    this.imm = null;
    this.counters.flushes++;
    this.bgSignal.notify();
    this.deleteObsoleteFiles(false);
  }

  /**
   * Writes a memtable to a new table (synced). The file stays in pendingOutputs until the caller
   * installs it. At open (`inThread`) the work always runs here.
   */
  private async writeLevel0Table(mem: Memtable, inThread = false): Promise<FileMeta | undefined> {
    const num = this.versions.newFileNumber();
    this.pendingOutputs.add(num);
    try {
      const worker = inThread ? undefined : this.backgroundThread();
      const meta =
        worker !== undefined
          ? await worker.flush(this.location, num, this.tableOptions(), mem.exportState())
          : await writeTable(this.fs, this.location, num, mem.iterator(), this.tableOptions(), this.yielder());
      if (meta === undefined) this.pendingOutputs.delete(num);
      return meta;
    } catch (err) {
      this.pendingOutputs.delete(num);
      throw err;
    }
  }

  /**
   * LevelDB's placement of a flushed table: below level 0 when nothing there or in the next level
   * overlaps it, down to level 2, while it would not overlap too much of the level after. A
   * sequential load then flushes straight to level 2 and is never compacted.
   */
  private levelForFlush(meta: FileMeta): number {
    const v = this.versions.current;
    if (v.overlapping(0, meta.smallest, meta.largest).length > 0) return 0;
    let level = 0;
    while (level < MAX_FLUSH_LEVEL) {
      if (v.overlapping(level + 1, meta.smallest, meta.largest).length > 0) break;
      let below = 0;
      for (const f of v.overlapping(level + 2, meta.smallest, meta.largest)) below += f.size;
      if (below > 10 * this.opts.targetFileSize) break;
      level++;
    }
    return level;
  }

  private maxBytesForLevel(level: number): number {
    return this.opts.maxBytesForLevelBase * this.opts.levelSizeMultiplier ** (level - 1);
  }

  private pickCompaction(): Compaction | undefined {
    const v = this.versions.current;
    let bestLevel = -1;
    let bestScore = 1;
    for (let level = 0; level < NUM_LEVELS - 1; level++) {
      const score =
        level === 0 ? v.files[0]!.length / this.opts.l0CompactionTrigger : v.levelBytes(level) / this.maxBytesForLevel(level);
      if (score >= bestScore) {
        bestScore = score;
        bestLevel = level;
      }
    }
    if (bestLevel < 0) return undefined;
    return this.compactionFor(v, bestLevel);
  }

  private compactionFor(v: Version, level: number): Compaction | undefined {
    let inputs0: FileMeta[];
    if (level === 0) {
      // Level-0 files overlap each other; take them all so the level empties in one step.
      inputs0 = [...v.files[0]!];
    } else {
      const files = v.files[level]!;
      const cp = this.versions.compactPointers[level];
      const next = cp === undefined ? undefined : files.find((f) => compareUserKeys(f.largest, cp) > 0);
      inputs0 = [next ?? files[0]!];
    }
    if (inputs0.length === 0) return undefined;
    const [smallest, largest] = keyRange(inputs0);
    return { level, inputs: [inputs0, v.overlapping(level + 1, smallest, largest)] };
  }

  private async runCompaction(c: Compaction): Promise<void> {
    const v = this.versions.current;
    const edit = new VersionEdit();
    const [inputs0, inputs1] = c.inputs;
    // (No inputs at `level`: compactRange rewriting level + 1 in place.)
    if (inputs0.length > 0) edit.compactPointers.push([c.level, keyRange(inputs0)[1]]);
    for (const f of inputs0) edit.deleteFile(c.level, f.number);
    for (const f of inputs1) edit.deleteFile(c.level + 1, f.number);
    if (c.level > 0 && inputs0.length === 1 && inputs1.length === 0) {
      // Trivial move: nothing to merge, the file changes level in the manifest only.
      edit.addFile(c.level + 1, inputs0[0]!);
      await this.versions.logAndApply(edit);
      this.counters.compactions++;
      return;
    }
    const inputs = [...inputs0, ...inputs1];
    const job: CompactionJob = {
      dir: this.location,
      inputs: inputs.map((f) => f.number),
      smallestSnapshot: this.smallestSnapshot(),
      deeper: v.files.slice(c.level + 2).map((files) => files.map((f): KeyRange => [userKeyOf(f.smallest), userKeyOf(f.largest)])),
      targetFileSize: this.opts.targetFileSize,
      table: this.tableOptions(),
    };
    this.versions.ref(v);
    const reserved: number[] = [];
    let outputs: FileMeta[] = [];
    try {
      const worker = this.backgroundThread();
      if (worker !== undefined) {
        // Outputs never exceed the inputs' bytes, so this many numbers always suffice.
        let bytes = 0;
        for (const f of inputs) bytes += f.size;
        const n = 2 * Math.ceil(bytes / this.opts.targetFileSize) + inputs.length + 4;
        for (let i = 0; i < n; i++) {
          const num = this.versions.newFileNumber();
          reserved.push(num);
          this.pendingOutputs.add(num);
        }
        outputs = await worker.compact(job, reserved);
      } else {
        outputs = await runCompactionJob(job, {
          fs: this.fs,
          openTable: (num) => {
            const t = this.tableCache.acquire(num);
            return { iter: t.iterator(false), release: () => this.tableCache.release(num) };
          },
          newFileNumber: () => {
            const num = this.versions.newFileNumber();
            reserved.push(num);
            this.pendingOutputs.add(num);
            return num;
          },
          pause: this.yielder(),
        });
      }
      for (const f of outputs) edit.addFile(c.level + 1, f);
      // If this fails, the outputs stay: the edit may have reached the manifest (e.g. only the
      // fsync failed), and then the next open needs them. If it did not, that open removes them.
      await this.versions.logAndApply(edit);
      this.counters.compactions++;
    } finally {
      this.versions.unref(v);
      for (const num of reserved) this.pendingOutputs.delete(num);
    }
    this.deleteObsoleteFiles(false);
  }

  /** Deletes files no live version, log position or pending output needs. */
  private deleteObsoleteFiles(atOpen: boolean): void {
    if (this.bgError) return;
    const live = this.versions.liveFiles();
    for (const n of this.pendingOutputs) live.add(n);
    // Logs from versions.logNumber on hold data not yet in tables (the memtables').
    const minLog = this.versions.logNumber;
    let names: string[];
    try {
      names = this.fs.readdir(this.location);
    } catch {
      return;
    }
    for (const name of names) {
      const p = parseFileName(name);
      let keep = true;
      switch (p.kind) {
        case "table":
          keep = live.has(p.num);
          break;
        case "log":
          keep = p.num >= minLog;
          break;
        case "manifest":
          keep = p.num >= this.versions.manifestNumber;
          break;
        case "temp":
          keep = !atOpen;
          break;
        default:
          keep = true;
      }
      if (keep) continue;
      if (p.kind === "table") {
        this.tableCache.forget(p.num);
        this.blockCache.evictFile(p.num);
      }
      try {
        this.fs.remove(joinPath(this.location, name));
      } catch {
        // Retried by the next pass.
      }
    }
  }

  // ---------------------------------------------------------------- maintenance

  /** Writes the memtable to a table and waits until it is installed. */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.barrier(() => this.switchAndFlush(false));
    await this.waitForImmutable();
    if (this.bgError) throw this.readOnlyError();
  }

  /** Waits until no immutable memtable is left (the flush task writes it out). */
  private async waitForImmutable(): Promise<void> {
    while (this.imm !== null) {
      if (this.bgError) throw this.readOnlyError();
      if (this.closing) throw closedError(); // no background work runs once closing
      this.maybeScheduleBackground();
      await this.bgSignal.wait();
    }
  }

  /** Inside a barrier: makes the memtable immutable (if it holds anything), optionally waiting for its flush. */
  private async switchAndFlush(wait: boolean): Promise<void> {
    if (this.mem.entries > 0) {
      await this.waitForImmutable();
      await this.switchMemtable();
    }
    if (wait) await this.waitForImmutable();
  }

  /**
   * Compacts every level down to the deepest non-empty one (or to level 1), so the key range
   * ends up in as few files as possible. Without bounds, the whole store.
   */
  async compactRange(start?: Bytes, end?: Bytes): Promise<void> {
    await this.flush();
    const s = start === undefined ? undefined : makeInternalKey(toBytes(start, "start"), 0, KIND_VALUE);
    const e = end === undefined ? undefined : makeInternalKey(toBytes(end, "end"), 0, KIND_DELETE);
    let deepest = 1;
    for (let l = 1; l < NUM_LEVELS; l++) if (this.versions.current.files[l]!.length > 0) deepest = l;
    let intoDeepest = false;
    for (let level = 0; level <= deepest; level++) {
      // Let a running compaction finish, then compact this level ourselves.
      while (this.compactActive) await this.bgSignal.wait();
      while (this.installingFlush !== null) await this.installingFlush;
      if (this.bgError) throw this.readOnlyError();
      if (this.closing) throw closedError();
      const v = this.versions.current;
      let c: Compaction;
      if (level === deepest) {
        // Nothing was merged into the deepest level: rewrite its files in the range in place, so
        // versions only a since-released snapshot needed (and tombstones with nothing below) go.
        const bottom = v.overlapping(deepest, s, e);
        if (intoDeepest || bottom.length === 0) break;
        c = { level: deepest - 1, inputs: [[], bottom] };
      } else {
        let inputs0 = v.overlapping(level, s, e);
        if (inputs0.length === 0) continue;
        // Level-0 files overlap each other: an older one outside the range can hold older versions
        // of keys in the chosen ones (which would then shadow or outlive them), so take them all.
        if (level === 0) inputs0 = [...v.files[0]!];
        if (level === deepest - 1) intoDeepest = true;
        const [smallest, largest] = keyRange(inputs0);
        c = { level, inputs: [inputs0, v.overlapping(level + 1, smallest, largest)] };
      }
      this.compactActive = true;
      try {
        await this.runCompaction(c);
      } catch (err) {
        if (!this.closing) this.setBgError(err);
        throw err;
      } finally {
        this.compactActive = false;
        this.bgSignal.notify();
      }
    }
    this.maybeScheduleBackground();
  }

  /**
   * Makes a consistent copy of the store in `dir` (which must not exist or be empty): the
   * memtable is flushed, then table files are hard-linked (copied across file systems) and a fresh
   * manifest is written. The copy can be opened with openKv, or restored with restoreKv.
   */
  async checkpoint(dir: string): Promise<void> {
    this.checkOpen();
    const fs = this.fs;
    if (fs.exists(dir) && fs.readdir(dir).length > 0) {
      throw new StowageError("STOWAGE_KV_EXISTS", `checkpoint directory ${dir} is not empty`, { file: dir });
    }
    let v: Version | undefined;
    let seq = 0;
    let nextFile = 0;
    await this.barrier(async () => {
      await this.switchAndFlush(true);
      // No writes run inside a barrier: the current version holds exactly sequences <= seq.
      v = this.versions.current;
      this.versions.ref(v);
      seq = this.versions.lastSequence;
      nextFile = this.versions.nextFileNumber;
    });
    const version = v!;
    try {
      fs.mkdir(dir);
      const edit = new VersionEdit();
      edit.formatVersion = 1;
      edit.logNumber = 0;
      edit.nextFileNumber = nextFile + 1;
      edit.lastSequence = seq;
      for (let l = 0; l < NUM_LEVELS; l++) {
        for (const f of version.files[l]!) {
          fs.linkOrCopy(joinPath(this.location, tableFileName(f.number)), joinPath(dir, tableFileName(f.number)));
          edit.addFile(l, f);
        }
      }
      await writeStandaloneManifest(fs, dir, nextFile, edit);
    } finally {
      this.versions.unref(version);
      this.deleteObsoleteFiles(false);
    }
  }

  // ---------------------------------------------------------------- lifecycle and stats

  stats(): KvStats {
    const v = this.versions.current;
    return {
      sequence: this.versions.lastSequence,
      memtableBytes: this.mem.approximateBytes,
      immutableMemtables: this.imm === null ? 0 : 1,
      levels: v.files.map((files, l) => ({ files: files.length, bytes: v.levelBytes(l) })),
      blockCache: {
        bytes: this.blockCache.bytes,
        capacity: this.blockCache.capacity,
        hits: this.blockCache.hits,
        misses: this.blockCache.misses,
      },
      compactions: this.counters.compactions,
      flushes: this.counters.flushes,
      writeStallsMs: this.counters.writeStallsMs,
      liveSnapshots: [...this.snapshots.values()].reduce((a, b) => a + b, 0),
      liveIterators: this.liveIterators,
    };
  }

  /** Waits until no flush or compaction is pending (tests and benchmarks use this). */
  async waitForBackground(): Promise<void> {
    for (;;) {
      if (this.bgError) throw this.readOnlyError();
      if (!this.bgActive) {
        this.maybeScheduleBackground();
        if (!this.bgActive) return;
      }
      await this.bgSignal.wait();
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  async close(): Promise<void> {
    if (this.closing) {
      while (!this.closed) await new Promise((r) => setTimeout(r, 1));
      return;
    }
    this.closing = true;
    // Writes already queued complete; new ones are refused.
    while (this.writing) await this.writerDone;
    while (this.syncing !== undefined) await this.syncing;
    this.bgSignal.notify();
    await Promise.all([this.flushPromise, this.compactPromise]);
    // A compactRange() step may still be running (it holds the compaction slot): let it finish.
    while (this.bgActive) await this.bgSignal.wait();
    if (this.worker !== undefined) await this.worker.close();
    let syncError: unknown;
    try {
      if (this.walUnsynced && !this.bgError) await this.wal.sync();
    } catch (err) {
      syncError = err;
    }
    try {
      this.wal.close();
    } catch (err) {
      syncError ??= err;
    }
    // Iterators and cursors still open would read through the table files closed below (or, once
    // their descriptors are reused, through other files): close them first.
    for (const c of [...this.openCursors]) c.close();
    this.versions.close();
    this.tableCache.closeAll();
    this.closed = true;
    this.unlock();
    if (syncError !== undefined) throw syncError;
  }

  private checkOpen(): void {
    if (this.closing) throw closedError();
  }
}

/** A batch built step by step and committed with write(). */
export class ChainedBatch {
  private readonly b = new WriteBatch();
  private done = false;

  constructor(private readonly db: Kv) {}

  put(key: Bytes, value: Bytes): this {
    this.check();
    this.b.put(key, value);
    return this;
  }

  del(key: Bytes): this {
    this.check();
    this.b.del(key);
    return this;
  }

  clear(): this {
    this.check();
    this.b.clear();
    return this;
  }

  get length(): number {
    return this.b.count;
  }

  write(options?: WriteOptions): Promise<void> {
    this.check();
    this.done = true;
    return this.db.write(this.b, options);
  }

  private check(): void {
    if (this.done) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "batch was already written");
  }
}

class ClosingAbort extends Error {}

function closedError(): StowageError {
  return new StowageError("STOWAGE_KV_CLOSED", "store is closed");
}

function resolveOptions(o: KvOptions): Resolved {
  // An injected file system (fault and crash tests) keeps background work in this thread,
  // where it goes through that file system; the worker always uses the real one.
  const r: Resolved = { ...DEFAULTS, fs: o.fs ?? nodeFileSystem, backgroundThread: o.fs === undefined };
  for (const [k, v] of Object.entries(o)) {
    if (v !== undefined) (r as unknown as Record<string, unknown>)[k] = v;
  }
  const positive = [
    "memtableSize",
    "maxOpenTables",
    "blockSize",
    "blockRestartInterval",
    "targetFileSize",
    "maxBytesForLevelBase",
    "levelSizeMultiplier",
    "l0CompactionTrigger",
    "l0SlowdownTrigger",
    "l0StopTrigger",
  ] as const;
  for (const k of positive) {
    if (!Number.isFinite(r[k]) || r[k] <= 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `option ${k} must be a positive number`);
  }
  if (!Number.isFinite(r.blockCacheSize) || r.blockCacheSize < 0) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "option blockCacheSize must be >= 0");
  }
  if (!Number.isFinite(r.bloomBitsPerKey) || r.bloomBitsPerKey < 0) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "option bloomBitsPerKey must be >= 0");
  }
  return r;
}

/** Writes MANIFEST-<num> holding `edit` alone, and a CURRENT naming it (used by checkpoint and repair). */
export async function writeStandaloneManifest(fs: FileSystem, dir: string, num: number, edit: VersionEdit): Promise<void> {
  const path = joinPath(dir, manifestFileName(num));
  const w = new LogWriter(fs.createWritable(path));
  try {
    w.addRecord(logHeaderRecord(LOG_KIND_MANIFEST));
    w.addRecord(edit.encode());
    await w.sync();
  } finally {
    w.close();
  }
  const name = manifestFileName(num);
  const tmp = joinPath(dir, `${num}.tmp`);
  const f = fs.createWritable(tmp);
  try {
    f.append(encodeCurrent(name));
    await f.sync();
  } finally {
    f.close();
  }
  fs.rename(tmp, joinPath(dir, CURRENT_FILE));
  await fs.syncDir(dir);
}
