/**
 * Model-based randomized test of the kv store: long random sequences of writes, reads, iterators,
 * cursors, snapshots, flushes, compactions and reopens run against the store and against a plain
 * in-memory model (a Map keyed by hex, whose sorted order equals bytewise key order), and every
 * read is compared with the model.
 *
 * Tiny memtables, blocks and tables make flushes and compactions happen all the time; a small
 * key space makes overwrites and deletions hit; keys include 0x00 and 0xff bytes and the empty key.
 * The same operation streams also run under other configurations (no bloom filters, restart
 * interval 1, no automatic compaction, tiny caches, background work in the worker thread or in
 * this one): metamorphic checks, since the visible results must not depend on any of them.
 * Background work runs concurrently, so its timing varies between runs; the results compared
 * do not depend on it, so a seed replays the same operations and the same expected results.
 *
 * Reproduce a failure with the seed from its message: STOWAGE_SEED=<seed> node --test
 * dist/test/kv/model.test.js. STOWAGE_SOAK=1 runs many more seeds and operations.
 */
import { after, test } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  isStowageError,
  nodeFileSystem,
  openKv,
  type Entry,
  type FileSystem,
  type Kv,
  type KvCursor,
  type KvIterator,
  type KvOptions,
  type Snapshot,
  type WritableFile,
} from "../../src/kv/index.js";
import { mulberry32 } from "../../src/util/random.js";

// ---------------------------------------------------------------------------------------------
// Seeds, PRNG, temp dirs

const SOAK = process.env.STOWAGE_SOAK === "1";
const ENV_SEED = process.env.STOWAGE_SEED;
const BASE_SEED = ENV_SEED !== undefined && ENV_SEED !== "" ? Number(ENV_SEED) >>> 0 : Math.floor(Math.random() * 2 ** 31);

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  /** mulberry32: uniform in [0, 1). */
  next(): number {
    return this.#next();
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-model-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCounter = 0;

// ---------------------------------------------------------------------------------------------
// File system

/**
 * The real file system with fsync replaced by one turn of the event loop: durability is the crash
 * test's business, and real fsyncs would make this test disk-bound. Syncs stay asynchronous, so
 * writers still queue behind them and group commit still happens.
 */
function noSyncFs(): FileSystem {
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const wrapFile = (f: WritableFile): WritableFile =>
    new Proxy(f, {
      get(target, prop) {
        if (prop === "sync") return turn;
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  return new Proxy(nodeFileSystem, {
    get(target, prop) {
      if (prop === "syncDir") return turn;
      if (prop === "createWritable") return (file: string) => wrapFile(target.createWritable(file));
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
const NO_SYNC_FS = noSyncFs();

// ---------------------------------------------------------------------------------------------
// The model

type State = Map<string, Buffer>;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const unhex = (h: string): Buffer => Buffer.from(h, "hex");
const short = (h: string): string => (h.length > 24 ? `${h.slice(0, 24)}…(${h.length / 2}B)` : h === "" ? "''" : h);

function sortedKeys(state: State): string[] {
  // Lower-case hex of equal-width bytes sorts exactly like the bytes (and a prefix sorts first).
  return [...state.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

interface Range {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  prefix?: string;
}

function inRange(k: string, r: Range): boolean {
  if (r.gt !== undefined && !(k > r.gt)) return false;
  if (r.gte !== undefined && !(k >= r.gte)) return false;
  if (r.lt !== undefined && !(k < r.lt)) return false;
  if (r.lte !== undefined && !(k <= r.lte)) return false;
  if (r.prefix !== undefined && !k.startsWith(r.prefix)) return false;
  return true;
}

function expectedRange(state: State, r: Range): [string, Buffer][] {
  return sortedKeys(state)
    .filter((k) => inRange(k, r))
    .map((k) => [k, state.get(k)!]);
}

function describeRange(r: Range): string {
  const parts: string[] = [];
  for (const k of ["gt", "gte", "lt", "lte", "prefix"] as const) if (r[k] !== undefined) parts.push(`${k}=${short(r[k])}`);
  return `{${parts.join(" ")}}`;
}

// ---------------------------------------------------------------------------------------------
// Configurations

interface Config {
  name: string;
  options: KvOptions;
  ops: number;
}

const TINY: KvOptions = {
  fs: NO_SYNC_FS,
  memtableSize: 8 * 1024,
  blockSize: 512,
  targetFileSize: 8 * 1024,
  maxBytesForLevelBase: 32 * 1024,
  levelSizeMultiplier: 4,
  l0CompactionTrigger: 2,
  l0SlowdownTrigger: 6,
  l0StopTrigger: 10,
};

function configs(): Config[] {
  const n = SOAK ? 20000 : 2000;
  const m = SOAK ? 10000 : 1200;
  return [
    { name: "tiny", options: { ...TINY }, ops: n },
    // The defaults: the real file system, flushes and compactions in the worker thread.
    { name: "tiny-real-fs-worker", options: { ...TINY, fs: undefined }, ops: SOAK ? 4000 : 400 },
    {
      name: "tiny-4k-memtable-1k-blocks-worker",
      options: { ...TINY, memtableSize: 4 * 1024, blockSize: 1024, backgroundThread: true },
      ops: m,
    },
    { name: "no-bloom", options: { ...TINY, bloomBitsPerKey: 0, memtableSize: 16 * 1024, blockSize: 256 }, ops: m },
    { name: "restart-interval-1-worker", options: { ...TINY, blockRestartInterval: 1, blockSize: 256, backgroundThread: true }, ops: m },
    {
      name: "no-auto-compaction",
      options: { ...TINY, autoCompaction: false, memtableSize: 4 * 1024 },
      ops: m,
    },
    {
      name: "tiny-caches",
      options: { ...TINY, blockCacheSize: 0, maxOpenTables: 2, verifyChecksums: false, blockSize: 256 },
      ops: m,
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// The run

class ModelFailure extends Error {}

interface LiveSnapshot {
  id: number;
  snap: Snapshot;
  state: State;
}

/** An iterator left open across other operations; it must keep showing the state it started from. */
interface OpenIterator {
  id: number;
  it: KvIterator;
  expected: [string, Buffer][];
  pos: number;
  desc: string;
}

class Runner {
  private db!: Kv;
  private readonly dir: string;
  private readonly rng: Rng;
  private readonly model: State = new Map();
  private readonly pool: string[] = [];
  private readonly snaps: LiveSnapshot[] = [];
  private readonly iters: OpenIterator[] = [];
  private step = 0;
  private nextId = 1;
  private readonly recent: string[] = [];
  private options: KvOptions;
  private lastSeq = 0;
  readonly counts = new Map<string, number>();
  /** Milliseconds spent per operation kind (reported with STOWAGE_MODEL_VERBOSE=1). */
  readonly times = new Map<string, number>();

  constructor(
    readonly seed: number,
    readonly config: Config,
  ) {
    this.rng = new Rng(seed);
    this.dir = path.join(tmpRoot, `db-${++dirCounter}`);
    this.options = { ...config.options };
  }

  // ------------------------------------------------------------------------- helpers

  private note(s: string): void {
    this.recent.push(`#${this.step} ${s}`);
    if (this.recent.length > 25) this.recent.shift();
  }

  fail(what: string): never {
    throw new ModelFailure(
      `seed=${this.seed} step=${this.step} config=${this.config.name}: ${what}\n` +
        `replay: STOWAGE_SEED=${this.seed} node --test --test-name-pattern='${this.config.name} ' dist/test/kv/model.test.js\nrecent operations:\n  ${this.recent.join("\n  ")}`,
    );
  }

  private check(cond: boolean, what: () => string): void {
    if (!cond) this.fail(what());
  }

  private genKeyBytes(): Buffer {
    const r = this.rng;
    const len = r.int(21);
    const b = Buffer.allocUnsafe(len);
    const alphabet = [0x00, 0x01, 0x61, 0x62, 0x7f, 0x80, 0xfe, 0xff];
    for (let i = 0; i < len; i++) b[i] = r.chance(0.7) ? r.pick(alphabet) : r.int(256);
    return b;
  }

  private buildPool(): void {
    const seen = new Set<string>();
    const add = (h: string): void => {
      if (!seen.has(h)) {
        seen.add(h);
        this.pool.push(h);
      }
    };
    add(""); // the empty key
    add("ff");
    add("ffff");
    add("00");
    const size = 60 + this.rng.int(140);
    while (this.pool.length < size) {
      if (this.pool.length > 8 && this.rng.chance(0.4)) {
        // Extend a prefix of an existing key: shared prefixes make prefix ranges interesting.
        const base = unhex(this.rng.pick(this.pool));
        const cut = this.rng.int(base.length + 1);
        const ext = this.genKeyBytes().subarray(0, this.rng.range(1, 4));
        add(hex(Buffer.concat([base.subarray(0, cut), ext]).subarray(0, 20)));
      } else {
        add(hex(this.genKeyBytes()));
      }
    }
  }

  private randomKey(): string {
    return this.rng.chance(0.93) ? this.rng.pick(this.pool) : hex(this.genKeyBytes());
  }

  /** A bound: a pool key, a prefix of one, or an arbitrary key. */
  private randomBound(): string {
    const r = this.rng.next();
    if (r < 0.5) return this.rng.pick(this.pool);
    if (r < 0.75) {
      const k = this.rng.pick(this.pool);
      return k.slice(0, 2 * this.rng.int(k.length / 2 + 1));
    }
    return hex(this.genKeyBytes());
  }

  private randomRange(): Range {
    const r: Range = {};
    const rng = this.rng;
    if (rng.chance(0.25)) r.gt = this.randomBound();
    if (rng.chance(0.25)) r.gte = this.randomBound();
    if (rng.chance(0.25)) r.lt = this.randomBound();
    if (rng.chance(0.25)) r.lte = this.randomBound();
    if (rng.chance(0.25)) {
      const k = rng.pick(this.pool);
      r.prefix = rng.chance(0.1) ? "ff".repeat(rng.range(1, 2)) : k.slice(0, 2 * rng.int(Math.min(3, k.length / 2) + 1));
    }
    // Mostly keep lower <= upper so ranges are not all empty.
    if (r.gt !== undefined && r.lt !== undefined && r.gt > r.lt && rng.chance(0.8)) [r.gt, r.lt] = [r.lt, r.gt];
    if (r.gte !== undefined && r.lte !== undefined && r.gte > r.lte && rng.chance(0.8)) [r.gte, r.lte] = [r.lte, r.gte];
    return r;
  }

  /** The key in one of the accepted shapes: Buffer, plain Uint8Array view at an offset, or string. */
  private keyArg(h: string): Uint8Array | string {
    const b = unhex(h);
    const r = this.rng.next();
    if (r < 0.15 && b.every((x) => x < 0x80)) return b.toString("latin1");
    if (r < 0.35) {
      const backing = new Uint8Array(b.length + 7);
      backing.fill(0xaa);
      backing.set(b, 3);
      return new Uint8Array(backing.buffer, 3, b.length);
    }
    return b;
  }

  private rangeArg(r: Range): Record<string, Uint8Array | string> {
    const out: Record<string, Uint8Array | string> = {};
    for (const k of ["gt", "gte", "lt", "lte", "prefix"] as const) if (r[k] !== undefined) out[k] = this.keyArg(r[k]);
    return out;
  }

  private genValue(): Buffer {
    const r = this.rng.next();
    if (r < 0.08) return Buffer.alloc(0);
    if (r < 0.98) return this.rng.bytes(this.rng.int(301));
    return this.rng.bytes(this.rng.range(300, 3000));
  }

  private syncOpt(): { sync: boolean } | undefined {
    const r = this.rng.next();
    return r < 0.1 ? { sync: true } : r < 0.3 ? undefined : { sync: false };
  }

  private pickSnapshot(): LiveSnapshot | undefined {
    return this.snaps.length > 0 && this.rng.chance(0.35) ? this.rng.pick(this.snaps) : undefined;
  }

  private compareEntries(actual: Entry[], expected: [string, Buffer][], what: string): void {
    const n = Math.max(actual.length, expected.length);
    for (let i = 0; i < n; i++) {
      const a = actual[i];
      const e = expected[i];
      if (a === undefined || e === undefined || hex(a[0]) !== e[0] || !a[1].equals(e[1])) {
        this.fail(
          `${what}: entry ${i} differs: got ${a === undefined ? "end" : `${short(hex(a[0]))}=${short(hex(a[1]))}`}, ` +
            `expected ${e === undefined ? "end" : `${short(e[0])}=${short(e[1].toString("hex"))}`} ` +
            `(got ${actual.length} entries, expected ${expected.length})`,
        );
      }
      if (!Buffer.isBuffer(a[0]) || !Buffer.isBuffer(a[1])) this.fail(`${what}: entry ${i} is not a Buffer`);
    }
  }

  private bump(op: string): void {
    this.counts.set(op, (this.counts.get(op) ?? 0) + 1);
  }

  // ------------------------------------------------------------------------- operations

  private async opPut(): Promise<void> {
    const k = this.randomKey();
    const v = this.genValue();
    this.note(`put ${short(k)} (${v.length}B)`);
    const arg = Buffer.from(v);
    await this.db.put(this.keyArg(k), arg, this.syncOpt());
    arg.fill(0x5a); // the store must have taken a copy
    this.model.set(k, v);
  }

  private async opDel(): Promise<void> {
    const k = this.randomKey();
    this.note(`del ${short(k)}`);
    await this.db.del(this.keyArg(k), this.syncOpt());
    this.model.delete(k);
  }

  private async opBatch(): Promise<void> {
    const n = this.rng.range(0, 24);
    const ops: ({ type: "put"; key: Uint8Array | string; value: Buffer } | { type: "del"; key: Uint8Array | string })[] = [];
    const applied: [string, Buffer | undefined][] = [];
    for (let i = 0; i < n; i++) {
      // Repeat keys inside a batch now and then: the last operation on a key wins.
      const k = i > 0 && this.rng.chance(0.15) ? applied[this.rng.int(applied.length)]![0] : this.randomKey();
      if (this.rng.chance(0.7)) {
        const v = this.genValue();
        ops.push({ type: "put", key: this.keyArg(k), value: v });
        applied.push([k, v]);
      } else {
        ops.push({ type: "del", key: this.keyArg(k) });
        applied.push([k, undefined]);
      }
    }
    const chained = this.rng.chance(0.3);
    this.note(`${chained ? "chained " : ""}batch of ${n}: ${applied.map(([k, v]) => (v ? `+${short(k)}` : `-${short(k)}`)).join(" ")}`);
    if (chained) {
      const b = this.db.batch();
      for (const op of ops) {
        if (op.type === "put") b.put(op.key, op.value);
        else b.del(op.key);
      }
      this.check(b.length === n, () => `chained batch length ${b.length}, expected ${n}`);
      await b.write(this.syncOpt());
    } else {
      await this.db.batch(ops, this.syncOpt());
    }
    for (const [k, v] of applied) {
      if (v === undefined) this.model.delete(k);
      else this.model.set(k, v);
    }
  }

  /** Several writes (and sometimes a flush) issued without awaiting, then awaited together. */
  private async opBurst(): Promise<void> {
    const n = this.rng.range(2, 30);
    const promises: Promise<void>[] = [];
    const applied: [string, Buffer | undefined][] = [];
    const order: number[] = [];
    const descs: string[] = [];
    for (let i = 0; i < n; i++) {
      const k = this.rng.chance(0.3) && applied.length > 0 ? this.rng.pick(applied)[0] : this.randomKey();
      const r = this.rng.next();
      const idx = i;
      if (r < 0.65) {
        const v = this.genValue();
        promises.push(this.db.put(this.keyArg(k), v, this.syncOpt()).then(() => void order.push(idx)));
        applied.push([k, v]);
        descs.push(`+${short(k)}`);
      } else if (r < 0.95) {
        promises.push(this.db.del(this.keyArg(k), this.syncOpt()).then(() => void order.push(idx)));
        applied.push([k, undefined]);
        descs.push(`-${short(k)}`);
      } else {
        // A flush resolves once its table is installed, possibly after later writes: not ordered.
        promises.push(this.db.flush());
        descs.push("flush");
      }
    }
    this.note(`burst of ${n}: ${descs.join(" ")}`);
    await Promise.all(promises);
    for (let i = 1; i < order.length; i++) {
      this.check(order[i]! > order[i - 1]!, () => `burst writes resolved out of submission order: ${order.join(",")}`);
    }
    for (const [k, v] of applied) {
      if (v === undefined) this.model.delete(k);
      else this.model.set(k, v);
    }
  }

  private async opGet(): Promise<void> {
    const k = this.rng.chance(0.85) ? this.rng.pick(this.pool) : hex(this.genKeyBytes());
    const s = this.pickSnapshot();
    const state = s?.state ?? this.model;
    const useSync = this.rng.chance(0.4);
    const opts = { ...(s ? { snapshot: s.snap } : {}), ...(this.rng.chance(0.2) ? { fillCache: false } : {}) };
    this.note(`${useSync ? "getSync" : "get"} ${short(k)}${s ? ` @snap${s.id}` : ""}`);
    const got = useSync ? this.db.getSync(this.keyArg(k), opts) : await this.db.get(this.keyArg(k), opts);
    const want = state.get(k);
    if (want === undefined) {
      this.check(got === undefined, () => `get ${short(k)}${s ? ` @snap${s.id}` : ""}: got ${short(hex(got!))}, expected absent`);
    } else {
      this.check(got !== undefined, () => `get ${short(k)}${s ? ` @snap${s.id}` : ""}: got absent, expected ${short(want.toString("hex"))}`);
      this.check(Buffer.isBuffer(got) && got.equals(want), () => `get ${short(k)}${s ? ` @snap${s.id}` : ""}: got ${short(hex(got!))}, expected ${short(want.toString("hex"))}`);
      got!.fill(0x33); // a returned buffer is the caller's own
    }
  }

  /** Opens an iterator with random options and drains it in one of several ways. */
  private async opIterate(): Promise<void> {
    const r = this.randomRange();
    const s = this.pickSnapshot();
    const state = s?.state ?? this.model;
    const reverse = this.rng.chance(0.4);
    const lr = this.rng.next();
    const limit = lr < 0.6 ? undefined : lr < 0.65 ? -1 : lr < 0.7 ? Infinity : lr < 0.75 ? 0 : this.rng.range(1, 20);
    const mode = this.rng.int(6);
    let expected = expectedRange(state, r);
    if (reverse) expected.reverse();
    const desc = `iterate ${describeRange(r)}${reverse ? " reverse" : ""}${limit !== undefined ? ` limit=${limit}` : ""}${s ? ` @snap${s.id}` : ""} mode=${mode}`;
    this.note(desc);
    const it = this.db.iterator({
      ...this.rangeArg(r),
      ...(s ? { snapshot: s.snap } : {}),
      ...(reverse ? { reverse } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(this.rng.chance(0.2) ? { fillCache: false } : {}),
    });
    const cap = limit === undefined || limit < 0 || limit === Infinity ? Infinity : limit;
    const got: Entry[] = [];
    switch (mode) {
      case 0:
        got.push(...(await it.all()));
        break;
      case 1:
        for (let e = await it.next(); e !== undefined; e = await it.next()) got.push(e);
        break;
      case 2:
        for (;;) {
          const size = this.rng.range(1, 7);
          const batch = await it.nextv(size);
          this.check(batch.length <= size, () => `${desc}: nextv(${size}) returned ${batch.length}`);
          if (batch.length === 0) break;
          got.push(...batch);
        }
        break;
      case 3:
        for await (const e of it) got.push(e);
        break;
      case 4:
        for (const e of it) got.push(e);
        break;
      default: {
        // nextSync with seeks in between: after seek(t), iteration resumes at the first entry at
        // or after t in iteration order; the limit counts entries yielded so far.
        let pos = 0;
        let yielded = 0;
        const exp: [string, Buffer][] = [];
        for (;;) {
          if (this.rng.chance(0.15)) {
            const t = this.randomBound();
            it.seek(this.keyArg(t));
            pos = expected.findIndex(([k]) => (reverse ? k <= t : k >= t));
            if (pos < 0) pos = expected.length;
            this.note(`  seek ${short(t)}`);
          }
          const e = it.nextSync();
          const want = yielded < cap ? expected[pos] : undefined;
          this.compareEntries(e === undefined ? [] : [e], want === undefined ? [] : [want], `${desc} after ${yielded} entries`);
          if (e === undefined) break;
          exp.push(want!);
          got.push(e);
          pos++;
          yielded++;
        }
        expected = exp;
      }
    }
    if (mode !== 5) expected = expected.slice(0, cap);
    this.compareEntries(got, expected, desc);
    this.bump(`iterate-mode-${mode}`);
  }

  /** A cursor walk: random seeks and steps in both directions, sometimes with writes in between. */
  private async opCursor(): Promise<void> {
    const r = this.randomRange();
    const s = this.pickSnapshot();
    const expected = expectedRange(s?.state ?? this.model, r);
    const desc = `cursor ${describeRange(r)}${s ? ` @snap${s.id}` : ""}`;
    this.note(desc);
    const c: KvCursor = this.db.cursor({ ...this.rangeArg(r), ...(s ? { snapshot: s.snap } : {}) });
    let pos = -1; // -1: not valid
    const moves = this.rng.range(5, 60);
    try {
      for (let i = 0; i < moves; i++) {
        const m = this.rng.next();
        let mdesc: string;
        if (m < 0.1) {
          c.seekToFirst();
          pos = expected.length > 0 ? 0 : -1;
          mdesc = "seekToFirst";
        } else if (m < 0.2) {
          c.seekToLast();
          pos = expected.length - 1;
          mdesc = "seekToLast";
        } else if (m < 0.35) {
          const t = this.randomBound();
          c.seek(this.keyArg(t));
          pos = expected.findIndex(([k]) => k >= t);
          mdesc = `seek ${short(t)}`;
        } else if (m < 0.5) {
          const t = this.randomBound();
          c.seekForPrev(this.keyArg(t));
          pos = -1;
          for (let j = expected.length - 1; j >= 0; j--) {
            if (expected[j]![0] <= t) {
              pos = j;
              break;
            }
          }
          mdesc = `seekForPrev ${short(t)}`;
        } else if (m < 0.96) {
          const forward = this.rng.chance(0.5);
          mdesc = forward ? "next" : "prev";
          if (pos < 0) {
            // Stepping an invalid cursor is an error, and leaves it invalid.
            let threw = false;
            try {
              if (forward) c.next();
              else c.prev();
            } catch (err) {
              threw = isStowageError(err, "STOWAGE_INVALID_ARGUMENT");
            }
            this.check(threw, () => `${desc}: ${mdesc} on an invalid cursor did not throw STOWAGE_INVALID_ARGUMENT`);
          } else {
            if (forward) c.next();
            else c.prev();
            pos = forward ? pos + 1 : pos - 1;
            if (pos >= expected.length) pos = -1;
          }
        } else {
          // A write in the middle of the walk: the cursor keeps its view.
          if (this.rng.chance(0.5)) await this.opPut();
          else await this.opDel();
          mdesc = "(write)";
        }
        this.note(`  ${mdesc}`);
        const valid = c.valid();
        this.check(valid === pos >= 0, () => `${desc}: after ${mdesc} valid()=${valid}, expected ${pos >= 0}`);
        if (pos >= 0) {
          const [k, v] = expected[pos]!;
          const gk = c.key();
          const gv = c.value();
          this.check(hex(gk) === k && gv.equals(v), () => `${desc}: after ${mdesc} at ${short(hex(gk))}=${short(hex(gv))}, expected ${short(k)}=${short(v.toString("hex"))}`);
        }
      }
    } finally {
      c.close();
    }
  }

  /** Opens an iterator to be drained bit by bit over later steps. */
  private openIterator(): void {
    const r = this.randomRange();
    const s = this.pickSnapshot();
    const reverse = this.rng.chance(0.4);
    const expected = expectedRange(s?.state ?? this.model, r);
    if (reverse) expected.reverse();
    const id = this.nextId++;
    const desc = `open iterator it${id} ${describeRange(r)}${reverse ? " reverse" : ""}${s ? ` @snap${s.id}` : ""}`;
    this.note(desc);
    const it = this.db.iterator({ ...this.rangeArg(r), reverse, ...(s ? { snapshot: s.snap } : {}) });
    this.iters.push({ id, it, expected, pos: 0, desc });
  }

  private async advanceIterator(): Promise<void> {
    const i = this.rng.int(this.iters.length);
    const oi = this.iters[i]!;
    const n = this.rng.range(1, 8);
    this.note(`advance it${oi.id} by ${n}`);
    for (let j = 0; j < n; j++) {
      const e = await oi.it.next();
      const want = oi.expected[oi.pos];
      this.compareEntries(e === undefined ? [] : [e], want === undefined ? [] : [want], `${oi.desc} entry ${oi.pos}`);
      if (e === undefined) {
        this.iters.splice(i, 1); // drained, so closed by itself
        return;
      }
      oi.pos++;
    }
    if (this.rng.chance(0.1)) {
      this.note(`close it${oi.id}`);
      await oi.it.close();
      this.iters.splice(i, 1);
    }
  }

  private takeSnapshot(): void {
    const id = this.nextId++;
    this.note(`snapshot snap${id}`);
    const snap = this.db.snapshot();
    this.check(snap.sequence >= this.lastSeq, () => `snapshot sequence ${snap.sequence} below an earlier ${this.lastSeq}`);
    this.snaps.push({ id, snap, state: new Map(this.model) });
  }

  private releaseSnapshot(): void {
    const i = this.rng.int(this.snaps.length);
    const s = this.snaps[i]!;
    this.note(`release snap${s.id}`);
    s.snap.release();
    if (this.rng.chance(0.2)) s.snap.release(); // idempotent
    this.snaps.splice(i, 1);
    if (this.rng.chance(0.3)) {
      let code = "";
      try {
        this.db.getSync("x", { snapshot: s.snap });
      } catch (err) {
        code = isStowageError(err) ? err.code : String(err);
      }
      this.check(code === "STOWAGE_INVALID_ARGUMENT", () => `read through a released snapshot: ${code || "no error"}`);
    }
  }

  private async closeAllReaders(): Promise<void> {
    for (const oi of this.iters.splice(0)) await oi.it.close();
    for (const s of this.snaps.splice(0)) s.snap.release();
  }

  private async reopen(): Promise<void> {
    // Iterators left open are closed by the store's close: afterwards they yield nothing.
    const leftOpen = this.rng.chance(0.5) ? this.iters.splice(0) : [];
    await this.closeAllReaders();
    // Tables written with one block size, restart interval or bloom setting must read back
    // under any other.
    if (this.rng.chance(0.5)) {
      this.options = {
        ...this.options,
        blockSize: this.rng.pick([256, 512, 1024]),
        blockRestartInterval: this.rng.pick([1, 4, 16]),
        bloomBitsPerKey: this.rng.pick([0, 5, 10]),
      };
    }
    this.note(`reopen (blockSize=${this.options.blockSize} restart=${this.options.blockRestartInterval ?? 16} bloom=${this.options.bloomBitsPerKey ?? 10})`);
    await this.db.close();
    this.check(this.db.isClosed, () => "isClosed is false after close");
    this.check(this.db.stats().liveIterators === 0, () => `close left ${this.db.stats().liveIterators} iterators open`);
    for (const oi of leftOpen) {
      const e = await oi.it.next();
      this.check(e === undefined, () => `it${oi.id} yielded an entry after its store closed`);
    }
    this.db = await openKv(this.dir, this.options);
    await this.fullCheck("after reopen");
  }

  private async opCompactRange(): Promise<void> {
    let a: string | undefined;
    let b: string | undefined;
    if (this.rng.chance(0.5)) {
      a = this.randomBound();
      b = this.randomBound();
      if (a > b) [a, b] = [b, a];
    }
    this.note(`compactRange ${a === undefined ? "all" : `${short(a)}..${short(b!)}`}`);
    if (a === undefined) await this.db.compactRange();
    else await this.db.compactRange(this.keyArg(a), this.keyArg(b!));
  }

  /** Full scan in both directions plus a point read of every pool key. */
  private async fullCheck(what: string): Promise<void> {
    const expected = expectedRange(this.model, {});
    this.compareEntries(await this.db.iterator().all(), expected, `full scan ${what}`);
    this.compareEntries(await this.db.iterator({ reverse: true }).all(), [...expected].reverse(), `full reverse scan ${what}`);
    for (const k of this.pool) {
      const got = this.db.getSync(unhex(k));
      const want = this.model.get(k);
      this.check(
        want === undefined ? got === undefined : got !== undefined && got.equals(want),
        () => `get ${short(k)} ${what}: got ${got === undefined ? "absent" : short(hex(got))}, expected ${want === undefined ? "absent" : short(want.toString("hex"))}`,
      );
    }
  }

  private checkStats(): void {
    const st = this.db.stats();
    this.check(st.sequence >= this.lastSeq, () => `stats().sequence went backwards: ${st.sequence} < ${this.lastSeq}`);
    this.lastSeq = st.sequence;
    this.check(st.liveSnapshots === this.snaps.length, () => `stats().liveSnapshots=${st.liveSnapshots}, expected ${this.snaps.length}`);
    this.check(st.liveIterators === this.iters.length, () => `stats().liveIterators=${st.liveIterators}, expected ${this.iters.length}`);
    this.check(st.levels.length >= 2 && st.levels.every((l) => l.files >= 0 && l.bytes >= 0), () => `bad stats().levels ${JSON.stringify(st.levels)}`);
  }

  // ------------------------------------------------------------------------- main loop

  async run(): Promise<void> {
    this.buildPool();
    fs.mkdirSync(this.dir, { recursive: true });
    this.db = await openKv(this.dir, this.options);
    try {
      for (this.step = 0; this.step < this.config.ops; this.step++) {
        const t0 = performance.now();
        const op = await this.randomOp();
        this.times.set(op, (this.times.get(op) ?? 0) + performance.now() - t0);
        this.checkStats();
      }
      this.step = this.config.ops;
      await this.fullCheck("at the end");
      await this.closeAllReaders();
      this.note("waitForBackground + compactRange + reopen");
      await this.db.waitForBackground();
      await this.db.compactRange();
      await this.fullCheck("after the final compactRange");
      await this.db.close();
      this.db = await openKv(this.dir, this.options);
      await this.fullCheck("after the final reopen");
      const st = this.db.stats();
      this.check(st.liveIterators === 0, () => `liveIterators=${st.liveIterators} after full checks`);
    } finally {
      if (!this.db.isClosed) await this.db.close().catch(() => undefined);
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }

  private async randomOp(): Promise<string> {
    const op = this.chooseOp();
    this.bump(op);
    await this.runOp(op);
    return op;
  }

  private chooseOp(): string {
    const r = this.rng.next() * 100;
    let op: string;
    if (r < 24) op = "put";
    else if (r < 32) op = "del";
    else if (r < 39) op = "batch";
    else if (r < 42) op = "burst";
    else if (r < 58) op = "get";
    else if (r < 65) op = "iterate";
    else if (r < 69) op = "cursor";
    else if (r < 72) op = "openIterator";
    else if (r < 78) op = "advanceIterator";
    else if (r < 81) op = "snapshot";
    else if (r < 84) op = "release";
    else if (r < 86) op = "flush";
    else if (r < 87.2) op = "compactRange";
    else if (r < 89) op = "waitForBackground";
    else if (r < 89.6) op = "reopen";
    else if (r < 90) op = "fullCheck";
    else op = "put";
    if (op === "openIterator" && this.iters.length >= 6) op = "advanceIterator";
    if (op === "advanceIterator" && this.iters.length === 0) op = "openIterator";
    if (op === "snapshot" && this.snaps.length >= 6) op = "release";
    if (op === "release" && this.snaps.length === 0) op = "snapshot";
    return op;
  }

  private async runOp(op: string): Promise<void> {
    switch (op) {
      case "put":
        return this.opPut();
      case "del":
        return this.opDel();
      case "batch":
        return this.opBatch();
      case "burst":
        return this.opBurst();
      case "get":
        return this.opGet();
      case "iterate":
        return this.opIterate();
      case "cursor":
        return this.opCursor();
      case "openIterator":
        return this.openIterator();
      case "advanceIterator":
        return this.advanceIterator();
      case "snapshot":
        return this.takeSnapshot();
      case "release":
        return this.releaseSnapshot();
      case "flush":
        this.note("flush");
        return this.db.flush();
      case "compactRange":
        return this.opCompactRange();
      case "waitForBackground":
        this.note("waitForBackground");
        return this.db.waitForBackground();
      case "reopen":
        return this.reopen();
      case "fullCheck":
        this.note("full check");
        return this.fullCheck("(periodic)");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tests

const seedsPerConfig = SOAK ? 8 : 1;
let seedIndex = 0;

for (const config of configs()) {
  for (let i = 0; i < seedsPerConfig; i++) {
    // With STOWAGE_SEED set, every configuration runs that seed first, so the seed printed by a
    // failure replays it (add --test-name-pattern=<config> to run only that configuration).
    // Without it, each configuration gets its own seeds.
    const seed = (BASE_SEED + 0x9e3779b9 * (ENV_SEED ? i : seedIndex++)) >>> 0;
    const title = `model: ${config.name} seed=${seed} ops=${config.ops}`;
    test(title, async () => {
      const runner = new Runner(seed, config);
      const t0 = Date.now();
      try {
        await runner.run();
      } catch (err) {
        if (err instanceof ModelFailure) throw err;
        // An unexpected exception from the store: attach the seed and the step.
        throw runner.fail(`unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      if (process.env.STOWAGE_MODEL_VERBOSE === "1") {
        const times = [...runner.times].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${Math.round(v)}ms/${runner.counts.get(k)}`);
        console.log(`${title}: ${Date.now() - t0} ms; ${times.join(" ")}`);
      }
    });
  }
}
