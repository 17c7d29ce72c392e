/**
 * Focused tests of the kv store's public API (src/kv/index.ts): reads and writes, key and value
 * shapes, batches, iterators and cursors, snapshots, checkpoints and rollback, reopen, locking,
 * error codes, concurrent writers and repair. Only the public surface is used; internal state is
 * observed through `stats()` at most.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { FaultyFileSystem } from "../../src/kv/fault-fs.js";
import {
  isStowageError,
  nodeFileSystem,
  openKv,
  repairKv,
  restoreKv,
  type Entry,
  type ErrorCode,
  type FileSystem,
  type Kv,
  type KvOptions,
  type WritableFile,
} from "../../src/kv/index.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-db-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let counter = 0;

/** A fresh directory path (not created). */
function freshDir(): string {
  return path.join(root, `d${++counter}`);
}

/** Small sizes so flushes and compactions happen with little data. */
const SMALL: KvOptions = {
  memtableSize: 16 * 1024,
  blockSize: 1024,
  targetFileSize: 16 * 1024,
  maxBytesForLevelBase: 64 * 1024,
  l0CompactionTrigger: 2,
};

/** Opens a store in a fresh directory, runs `body`, and closes it (unless `body` did). */
async function withDb(body: (db: Kv, dir: string) => Promise<void>, options: KvOptions = {}): Promise<void> {
  const dir = freshDir();
  const db = await openKv(dir, options);
  try {
    await body(db, dir);
  } finally {
    if (!db.isClosed) await db.close();
  }
}

function code(err: unknown): string {
  return isStowageError(err) ? err.code : `not a StowageError: ${String(err)}`;
}

async function rejectsWith(p: Promise<unknown> | (() => Promise<unknown>), expected: ErrorCode): Promise<void> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    assert.equal(code(err), expected, `expected ${expected}, got ${String(err)}`);
    return;
  }
  assert.fail(`expected a rejection with ${expected}`);
}

function throwsWith(fn: () => unknown, expected: ErrorCode): void {
  try {
    fn();
  } catch (err) {
    assert.equal(code(err), expected, `expected ${expected}, got ${String(err)}`);
    return;
  }
  assert.fail(`expected a throw with ${expected}`);
}

const str = (e: Entry[]): string[] => e.map(([k, v]) => `${k.toString("latin1")}=${v.toString("latin1")}`);
const keysOf = (e: Entry[]): string[] => e.map(([k]) => k.toString("hex"));

async function dump(db: Kv): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for await (const [k, v] of db.iterator()) m.set(k.toString("hex"), v.toString("hex"));
  return m;
}

function totalBytes(db: Kv): number {
  return db.stats().levels.reduce((a, l) => a + l.bytes, 0);
}

/** Deterministic pseudo-random bytes. */
function pseudoRandom(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Basics

test("put, get, overwrite, del; absent keys read as undefined", async () => {
  await withDb(async (db) => {
    assert.equal(await db.get("a"), undefined);
    await db.put("a", "1");
    await db.put("b", "2");
    const got = await db.get("a");
    assert.ok(Buffer.isBuffer(got));
    assert.equal(got.toString(), "1");
    assert.equal(db.getSync("b")?.toString(), "2");
    await db.put("a", "one");
    assert.equal((await db.get("a"))?.toString(), "one");
    await db.del("a");
    assert.equal(await db.get("a"), undefined);
    assert.equal(db.getSync("a"), undefined);
    await db.del("never-written");
    assert.deepEqual(str(await db.iterator().all()), ["b=2"]);
    // The same through tables.
    await db.flush();
    assert.equal(await db.get("a"), undefined);
    assert.equal((await db.get("b"))?.toString(), "2");
    await db.compactRange();
    assert.equal(await db.get("a"), undefined);
    assert.equal((await db.get("b"))?.toString(), "2");
  });
});

test("a tombstone in the memtable hides a value in a table, and a newer put hides the tombstone", async () => {
  await withDb(async (db) => {
    await db.put("k", "v1");
    await db.flush();
    await db.compactRange();
    await db.del("k");
    assert.equal(await db.get("k"), undefined);
    assert.deepEqual(await db.iterator().all(), []);
    await db.flush(); // tombstone in level 0, value in level 1
    assert.equal(await db.get("k"), undefined);
    assert.deepEqual(await db.iterator({ reverse: true }).all(), []);
    await db.put("k", "v2");
    assert.equal((await db.get("k"))?.toString(), "v2");
    await db.compactRange();
    assert.equal((await db.get("k"))?.toString(), "v2");
  });
});

test("string and Uint8Array keys and values are the same bytes; reads return Buffers", async () => {
  await withDb(async (db) => {
    await db.put("é😀", "ünïcode");
    assert.equal((await db.get(Buffer.from("é😀", "utf8")))?.toString("utf8"), "ünïcode");
    // A plain Uint8Array (not a Buffer), and a view into the middle of a larger buffer.
    const backing = new Uint8Array([9, 9, 0x6b, 0x00, 0xff, 9]);
    const view = new Uint8Array(backing.buffer, 2, 3);
    await db.put(view, new Uint8Array([1, 2, 3]));
    const got = await db.get(Buffer.from([0x6b, 0x00, 0xff]));
    assert.ok(Buffer.isBuffer(got));
    assert.deepEqual([...got], [1, 2, 3]);
    assert.equal((await db.get(new Uint8Array([0x6b, 0x00])))?.length, undefined);
    const entries = await db.iterator().all();
    assert.ok(entries.every(([k, v]) => Buffer.isBuffer(k) && Buffer.isBuffer(v)));
    assert.deepEqual(keysOf(entries), ["6b00ff", Buffer.from("é😀").toString("hex")]);
  });
});

test("the store copies what it is given and hands out copies", async () => {
  await withDb(async (db) => {
    const key = Buffer.from("key");
    const value = Buffer.from("value");
    await db.put(key, value);
    key.fill(0x41);
    value.fill(0x42);
    const got = await db.get("key");
    assert.equal(got?.toString(), "value");
    got!.fill(0x43);
    assert.equal((await db.get("key"))?.toString(), "value");
    const [[k, v]] = (await db.iterator().all()) as [Entry];
    k.fill(0);
    v.fill(0);
    assert.deepEqual(str(await db.iterator().all()), ["key=value"]);
    // Chained batch buffers, too.
    const cb = Buffer.from("cv");
    const b = db.batch().put("c", cb);
    cb.fill(0x44);
    await b.write();
    assert.equal((await db.get("c"))?.toString(), "cv");
  });
});

test("the empty key and empty values", async () => {
  const dir = freshDir();
  let db = await openKv(dir, SMALL);
  await db.put("", "empty-key");
  await db.put("e", "");
  await db.put(Buffer.alloc(0), "empty-key-2");
  assert.equal((await db.get(""))?.toString(), "empty-key-2");
  const ev = await db.get("e");
  assert.ok(ev !== undefined && ev.length === 0, "an empty value is present, not absent");
  assert.deepEqual(str(await db.iterator().all()), ["=empty-key-2", "e="]);
  assert.deepEqual(str(await db.iterator({ reverse: true }).all()), ["e=", "=empty-key-2"]);
  assert.deepEqual(str(await db.iterator({ lte: "" }).all()), ["=empty-key-2"]);
  assert.deepEqual(str(await db.iterator({ gt: "" }).all()), ["e="]);
  assert.deepEqual(str(await db.iterator({ prefix: "" }).all()), ["=empty-key-2", "e="]);
  const c = db.cursor();
  c.seekForPrev("");
  assert.ok(c.valid());
  assert.equal(c.key().length, 0);
  c.prev();
  assert.equal(c.valid(), false);
  c.close();
  for (const step of ["flush", "compact", "reopen"]) {
    if (step === "flush") await db.flush();
    if (step === "compact") await db.compactRange();
    if (step === "reopen") {
      await db.close();
      db = await openKv(dir, SMALL);
    }
    assert.equal((await db.get(""))?.toString(), "empty-key-2", step);
    assert.equal((await db.get("e"))?.length, 0, step);
  }
  await db.del("");
  assert.equal(await db.get(""), undefined);
  await db.compactRange();
  assert.deepEqual(str(await db.iterator().all()), ["e="]);
  await db.close();
});

test("large values (over 1 MiB) span WAL blocks and survive replay, flush and compaction", async () => {
  const dir = freshDir();
  const big1 = pseudoRandom(1536 * 1024 + 7, 1);
  const big2 = pseudoRandom(3 * 1024 * 1024 + 1, 2);
  let db = await openKv(dir, { memtableSize: 8 * 1024 * 1024 });
  await db.put("big1", big1);
  await db.batch([
    { type: "put", key: "small", value: "s" },
    { type: "put", key: "big2", value: big2 },
  ]);
  assert.ok((await db.get("big1"))?.equals(big1));
  // Close without a flush: the values come back from the WAL.
  await db.close();
  db = await openKv(dir, { memtableSize: 8 * 1024 * 1024 });
  assert.ok((await db.get("big1"))?.equals(big1), "big1 after WAL replay");
  assert.ok((await db.get("big2"))?.equals(big2), "big2 after WAL replay");
  await db.flush();
  await db.compactRange();
  assert.ok(db.getSync("big1")?.equals(big1), "big1 from a table");
  assert.ok(db.getSync("big2")?.equals(big2), "big2 from a table");
  const all = await db.iterator().all();
  assert.deepEqual(
    all.map(([k, v]) => [k.toString(), v.length]),
    [
      ["big1", big1.length],
      ["big2", big2.length],
      ["small", 1],
    ],
  );
  // A memtable smaller than one value still works (the value goes straight through).
  await db.close();
  db = await openKv(dir, { memtableSize: 4096 });
  await db.put("big3", big1);
  await db.put("after", "x");
  assert.ok((await db.get("big3"))?.equals(big1));
  await db.close();
  db = await openKv(dir, { memtableSize: 4096 });
  assert.ok((await db.get("big3"))?.equals(big1));
  assert.equal((await db.get("after"))?.toString(), "x");
  await db.close();
});

// ---------------------------------------------------------------------------------------------
// Batches

test("batch: mixed puts and deletes apply together, later operations win", async () => {
  await withDb(async (db) => {
    await db.put("x", "old");
    await db.put("gone", "soon");
    await db.batch([
      { type: "put", key: "a", value: "1" },
      { type: "put", key: "x", value: "2" },
      { type: "del", key: "gone" },
      { type: "put", key: "a", value: "3" },
      { type: "del", key: "b" },
      { type: "put", key: "b", value: "4" },
    ]);
    assert.deepEqual(str(await db.iterator().all()), ["a=3", "b=4", "x=2"]);
    await db.batch([]); // an empty batch is fine
    assert.deepEqual(str(await db.iterator().all()), ["a=3", "b=4", "x=2"]);
  });
});

test("batch: an invalid operation rejects the whole batch and applies nothing", async () => {
  await withDb(async (db) => {
    await db.put("a", "before");
    const seq = db.stats().sequence;
    await rejectsWith(
      db.batch([
        { type: "put", key: "a", value: "after" },
        { type: "del", key: "b" },
        { type: "bogus", key: "c" } as unknown as { type: "del"; key: string },
      ]),
      "STOWAGE_INVALID_ARGUMENT",
    );
    await rejectsWith(
      db.batch([
        { type: "put", key: "a", value: "after" },
        { type: "put", key: 42 as unknown as string, value: "x" },
      ]),
      "STOWAGE_INVALID_ARGUMENT",
    );
    assert.equal((await db.get("a"))?.toString(), "before");
    assert.equal(db.stats().sequence, seq);
  });
});

test("batch: readers see all of a batch or none of it", async () => {
  await withDb(
    async (db) => {
      const keys = Array.from({ length: 50 }, (_, i) => `k${String(i).padStart(2, "0")}`);
      for (let round = 0; round < 20; round++) {
        const p = db.batch(keys.map((k) => ({ type: "put" as const, key: k, value: `r${round}` })), { sync: false });
        // While the batch is in flight, every read sees one round for all keys.
        const seen = new Set((await db.iterator().all()).map(([, v]) => v.toString()));
        assert.ok(seen.size <= 1, `a scan saw rounds ${[...seen].join(",")}`);
        await p;
        const after = new Set((await db.iterator().all()).map(([, v]) => v.toString()));
        assert.deepEqual([...after], [`r${round}`]);
        if (round % 5 === 4) await db.flush();
      }
    },
    { ...SMALL },
  );
});

test("chained batch: put/del/clear/length/write, and no reuse after write", async () => {
  await withDb(async (db) => {
    await db.put("d", "to-delete");
    const b = db.batch();
    assert.equal(b.length, 0);
    b.put("a", "1").put("b", "2").del("d");
    assert.equal(b.length, 3);
    b.clear();
    assert.equal(b.length, 0);
    const r = b.put("x", "1").put("y", "2").del("d").put("z", "3").del("y");
    assert.equal(r, b, "calls chain");
    await b.write();
    assert.deepEqual(str(await db.iterator().all()), ["x=1", "z=3"]);
    throwsWith(() => b.put("q", "1"), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => b.write(), "STOWAGE_INVALID_ARGUMENT");
    await db.batch().put("w", "1").del("x").write({ sync: false });
    assert.deepEqual(str(await db.iterator().all()), ["w=1", "z=3"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Iterators

/** Keys with 0x00 and 0xff bytes, shared prefixes, and the empty key. */
const IT_KEYS = ["", "00", "0000", "01", "61", "6100", "6161", "616162", "6162", "62", "7f", "80", "fe", "feff", "ff", "ff00", "ffff", "ffff00", "ffffff"];

async function withIterDb(body: (db: Kv, expected: string[]) => Promise<void>, layout: "mem" | "tables" | "mixed"): Promise<void> {
  await withDb(
    async (db) => {
      const shuffled = [...IT_KEYS].sort((a, b) => ((a.length * 7 + a.charCodeAt(0)) % 5) - ((b.length * 7 + b.charCodeAt(0)) % 5));
      for (const [i, k] of shuffled.entries()) {
        await db.put(Buffer.from(k, "hex"), `v${k}`);
        if (layout === "mixed" && i % 4 === 3) await db.flush();
        // Some deleted and overwritten keys, so tombstones sit among the data.
        await db.put(Buffer.from(`${k}33`, "hex"), "tmp");
        await db.del(Buffer.from(`${k}33`, "hex"));
      }
      if (layout === "tables") await db.compactRange();
      await body(db, [...IT_KEYS].sort());
    },
    { ...SMALL, blockSize: 256, blockRestartInterval: 2 },
  );
}

for (const layout of ["mem", "tables", "mixed"] as const) {
  test(`iterator bounds, prefix, reverse and limit (${layout})`, async () => {
    await withIterDb(async (db, all) => {
      const h = (s: string): Buffer => Buffer.from(s, "hex");
      const check = async (opts: Parameters<Kv["iterator"]>[0], want: string[], msg: string): Promise<void> => {
        assert.deepEqual(keysOf(await db.iterator(opts).all()), want, msg);
      };
      await check({}, all, "everything");
      await check({ reverse: true }, [...all].reverse(), "everything reversed");
      await check({ gt: h("61") }, all.filter((k) => k > "61"), "gt");
      await check({ gte: h("61") }, all.filter((k) => k >= "61"), "gte");
      await check({ lt: h("61") }, all.filter((k) => k < "61"), "lt");
      await check({ lte: h("61") }, all.filter((k) => k <= "61"), "lte");
      await check({ gt: h("00"), lte: h("62") }, all.filter((k) => k > "00" && k <= "62"), "gt+lte");
      await check({ gte: h("62"), lt: h("61") }, [], "empty range");
      await check({ gt: h("61"), gte: h("6100") }, all.filter((k) => k >= "6100"), "tighter of gt/gte");
      await check({ lt: h("ff"), lte: h("fe") }, all.filter((k) => k <= "fe"), "tighter of lt/lte");
      await check({ prefix: h("61") }, ["61", "6100", "6161", "616162", "6162"], "prefix 61");
      await check({ prefix: "a" }, ["61", "6100", "6161", "616162", "6162"], "prefix as a string");
      await check({ prefix: new Uint8Array([0x61]) }, ["61", "6100", "6161", "616162", "6162"], "prefix as a Uint8Array");
      await check({ prefix: h("61"), reverse: true }, ["6162", "616162", "6161", "6100", "61"], "prefix reversed");
      await check({ prefix: h("ff") }, ["ff", "ff00", "ffff", "ffff00", "ffffff"], "prefix ff");
      await check({ prefix: h("ffff") }, ["ffff", "ffff00", "ffffff"], "prefix ffff");
      await check({ prefix: h("ffff"), reverse: true }, ["ffffff", "ffff00", "ffff"], "prefix ffff reversed");
      await check({ prefix: h("fe") }, ["fe", "feff"], "prefix fe (successor ff)");
      await check({ prefix: h("00") }, ["00", "0000"], "prefix 00");
      await check({ prefix: h("") }, all, "empty prefix");
      await check({ prefix: h("6161"), gt: h("6161") }, ["616162"], "prefix combined with gt");
      await check({ prefix: h("ff"), lt: h("ffff") }, ["ff", "ff00"], "prefix combined with lt");
      await check({ prefix: h("63") }, [], "prefix with no keys");
      await check({ limit: 3 }, all.slice(0, 3), "limit");
      await check({ limit: 3, reverse: true }, [...all].reverse().slice(0, 3), "limit reversed");
      await check({ limit: 0 }, [], "limit 0");
      await check({ limit: -1 }, all, "limit -1");
      await check({ limit: Infinity }, all, "limit Infinity");
      await check({ limit: 2, prefix: h("ff"), reverse: true }, ["ffffff", "ffff00"], "limit+prefix+reverse");
      // A prefix option given as a Buffer is not modified.
      const p = h("61");
      await db.iterator({ prefix: p }).all();
      assert.equal(p.toString("hex"), "61");
      // Values come with their keys.
      const [[k, v]] = (await db.iterator({ gte: h("7f"), limit: 1 }).all()) as [Entry];
      assert.equal(k.toString("hex"), "7f");
      assert.equal(v.toString(), "v7f");
    }, layout);
  });
}

test("iterator: seek, next/nextSync/nextv, all(), for await, for of, and closing", async () => {
  await withIterDb(async (db, all) => {
    const h = (s: string): Buffer => Buffer.from(s, "hex");
    // next() until undefined; further calls stay undefined.
    const it = db.iterator({ gte: h("fe") });
    const got: string[] = [];
    for (let e = await it.next(); e !== undefined; e = await it.next()) got.push(e[0].toString("hex"));
    assert.deepEqual(got, all.filter((k) => k >= "fe"));
    assert.equal(await it.next(), undefined);
    assert.equal(db.stats().liveIterators, 0, "a drained iterator closes itself");

    // nextv in chunks.
    const it2 = db.iterator();
    const chunks: number[] = [];
    const flat: string[] = [];
    for (;;) {
      const part = await it2.nextv(4);
      if (part.length === 0) break;
      chunks.push(part.length);
      flat.push(...keysOf(part));
    }
    assert.deepEqual(flat, all);
    assert.ok(chunks.slice(0, -1).every((n) => n === 4));

    // seek forward, mid-iteration, and backwards.
    const it3 = db.iterator();
    it3.seek(h("61"));
    assert.equal((await it3.next())?.[0].toString("hex"), "61");
    assert.equal(it3.nextSync()?.[0].toString("hex"), "6100");
    it3.seek(h("fe00")); // between keys
    assert.equal((await it3.next())?.[0].toString("hex"), "feff");
    it3.seek(h("00"));
    assert.equal((await it3.next())?.[0].toString("hex"), "00");
    it3.seek(h("ffffffff")); // past the end
    assert.equal(await it3.next(), undefined);
    await it3.close();

    // seek in reverse: the next entry is the last at or before the target.
    const it4 = db.iterator({ reverse: true });
    it4.seek(h("6150"));
    assert.deepEqual(keysOf(await it4.nextv(3)), ["6100", "61", "01"]);
    await it4.close();

    // seek respects bounds and the limit counts entries already yielded.
    const it5 = db.iterator({ gte: h("61"), lt: h("80"), limit: 3 });
    assert.equal((await it5.next())?.[0].toString("hex"), "61");
    it5.seek(h("00")); // below the lower bound: back to the first entry
    assert.equal((await it5.next())?.[0].toString("hex"), "61");
    it5.seek(h("7f"));
    assert.equal((await it5.next())?.[0].toString("hex"), "7f");
    assert.equal(await it5.next(), undefined, "limit of 3 reached");

    // for await and for of.
    const viaAwait: string[] = [];
    for await (const [k] of db.iterator({ prefix: h("ff") })) viaAwait.push(k.toString("hex"));
    assert.deepEqual(viaAwait, ["ff", "ff00", "ffff", "ffff00", "ffffff"]);
    const viaOf: string[] = [];
    for (const [k] of db.iterator({ prefix: h("ff"), reverse: true })) viaOf.push(k.toString("hex"));
    assert.deepEqual(viaOf, ["ffffff", "ffff00", "ffff", "ff00", "ff"]);

    // Breaking out of a loop closes the iterator.
    for await (const [k] of db.iterator()) {
      assert.equal(k.length, 0);
      break;
    }
    for (const [k] of db.iterator({ reverse: true })) {
      assert.equal(k.toString("hex"), "ffffff");
      break;
    }
    assert.equal(db.stats().liveIterators, 0);

    // An explicitly closed iterator yields nothing more; close is idempotent.
    const it6 = db.iterator();
    assert.equal(db.stats().liveIterators, 1);
    await it6.next();
    await it6.close();
    await it6.close();
    assert.equal(db.stats().liveIterators, 0);
    assert.equal(await it6.next(), undefined);
    assert.deepEqual(await it6.all(), []);
  }, "mixed");
});

test("an iterator sees the store as of its creation, across writes, flushes and compactions", async () => {
  await withDb(
    async (db) => {
      for (let i = 0; i < 200; i++) await db.put(`k${String(i).padStart(3, "0")}`, `v${i}`, { sync: false });
      const it = db.iterator();
      const cur = db.cursor({ gte: "k100" });
      const first = await it.nextv(10);
      for (let i = 0; i < 200; i += 2) await db.del(`k${String(i).padStart(3, "0")}`, { sync: false });
      for (let i = 0; i < 200; i++) await db.put(`j${i}`, "new", { sync: false });
      await db.flush();
      await db.compactRange();
      await db.waitForBackground();
      const rest = await it.all();
      assert.equal(first.length + rest.length, 200);
      assert.deepEqual(
        [...first, ...rest].map(([k]) => k.toString()),
        Array.from({ length: 200 }, (_, i) => `k${String(i).padStart(3, "0")}`),
      );
      cur.seekToFirst();
      assert.equal(cur.key().toString(), "k100");
      cur.seekToLast();
      assert.equal(cur.key().toString(), "k199");
      cur.close();
      assert.equal((await db.iterator({ gte: "k" }).all()).length, 100);
    },
    { ...SMALL },
  );
});

// ---------------------------------------------------------------------------------------------
// Cursors

test("cursor: movement inside bounds, stepping off either end, and errors", async () => {
  await withIterDb(async (db, all) => {
    const h = (s: string): Buffer => Buffer.from(s, "hex");
    const c = db.cursor({ gt: h("61"), lte: h("62") });
    const inRange = all.filter((k) => k > "61" && k <= "62");
    assert.equal(c.valid(), false, "a new cursor is not positioned");
    throwsWith(() => c.key(), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => c.next(), "STOWAGE_INVALID_ARGUMENT");
    c.seekToFirst();
    assert.equal(c.key().toString("hex"), inRange[0]);
    c.prev();
    assert.equal(c.valid(), false, "prev from the first entry leaves the range");
    throwsWith(() => c.prev(), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => c.value(), "STOWAGE_INVALID_ARGUMENT");
    c.seekToLast();
    assert.equal(c.key().toString("hex"), "62");
    assert.equal(c.value().toString(), "v62");
    c.next();
    assert.equal(c.valid(), false, "next from the last entry leaves the range");
    // A full walk forward then backward, with a direction change in the middle.
    c.seekToFirst();
    const fwd: string[] = [];
    while (c.valid()) {
      fwd.push(c.key().toString("hex"));
      c.next();
    }
    assert.deepEqual(fwd, inRange);
    c.seekToLast();
    const back: string[] = [];
    while (c.valid()) {
      back.push(c.key().toString("hex"));
      c.prev();
    }
    assert.deepEqual(back, [...inRange].reverse());
    c.seek(h("6161"));
    assert.equal(c.key().toString("hex"), "6161");
    c.next();
    c.prev();
    assert.equal(c.key().toString("hex"), "6161");
    c.prev();
    assert.equal(c.key().toString("hex"), "6100");
    c.next();
    c.next();
    assert.equal(c.key().toString("hex"), "616162");
    // Seeks outside the bounds clamp to them or leave the range.
    c.seek(h("00"));
    assert.equal(c.key().toString("hex"), inRange[0]);
    c.seek(h("61")); // the excluded lower bound itself
    assert.equal(c.key().toString("hex"), "6100");
    c.seek(h("6201"));
    assert.equal(c.valid(), false);
    c.seekForPrev(h("ff"));
    assert.equal(c.key().toString("hex"), "62");
    c.seekForPrev(h("6162ff"));
    assert.equal(c.key().toString("hex"), "6162");
    c.seekForPrev(h("61"));
    assert.equal(c.valid(), false);
    c.close();
    c.close();
    throwsWith(() => c.seekToFirst(), "STOWAGE_KV_ITERATOR_CLOSED");
    assert.equal(c.valid(), false);
    assert.equal(db.stats().liveIterators, 0);

    // Without bounds: both ends of the whole store.
    const u = db.cursor();
    u.seekToFirst();
    assert.equal(u.key().length, 0);
    u.seekToLast();
    assert.equal(u.key().toString("hex"), "ffffff");
    u.seek(h("ffffff00"));
    assert.equal(u.valid(), false);
    u.seekForPrev(h("ffffff00"));
    assert.equal(u.key().toString("hex"), "ffffff");
    u.close();

    // prefix of 0xff bytes: no upper bound exists.
    const p = db.cursor({ prefix: h("ffff") });
    p.seekToLast();
    assert.equal(p.key().toString("hex"), "ffffff");
    p.seekToFirst();
    assert.equal(p.key().toString("hex"), "ffff");
    p.prev();
    assert.equal(p.valid(), false);
    p.close();
  }, "mixed");
});

// ---------------------------------------------------------------------------------------------
// Snapshots

test("a snapshot isolates later writes, for get, getSync, iterators and cursors", async () => {
  await withDb(async (db) => {
    await db.put("a", "1");
    await db.put("b", "1");
    const snap = db.snapshot();
    await db.put("a", "2");
    await db.del("b");
    await db.put("c", "2");
    assert.equal((await db.get("a", { snapshot: snap }))?.toString(), "1");
    assert.equal(db.getSync("b", { snapshot: snap })?.toString(), "1");
    assert.equal(await db.get("c", { snapshot: snap }), undefined);
    assert.deepEqual(str(await db.iterator({ snapshot: snap }).all()), ["a=1", "b=1"]);
    assert.deepEqual(str(await db.iterator({ snapshot: snap, reverse: true }).all()), ["b=1", "a=1"]);
    assert.deepEqual(str(await db.iterator().all()), ["a=2", "c=2"]);
    const c = db.cursor({ snapshot: snap });
    c.seekToLast();
    assert.equal(c.key().toString(), "b");
    c.close();
    assert.equal(db.stats().liveSnapshots, 1);
    snap.release();
    snap.release();
    assert.equal(db.stats().liveSnapshots, 0);
    await rejectsWith(db.get("a", { snapshot: snap }), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => db.iterator({ snapshot: snap }), "STOWAGE_INVALID_ARGUMENT");
  });
});

test("a snapshot keeps old versions through flush and compaction; after release they are compacted away", async () => {
  await withDb(
    async (db) => {
      const keys = Array.from({ length: 300 }, (_, i) => `key${String(i).padStart(4, "0")}`);
      const v1 = (i: number): Buffer => pseudoRandom(400, i + 1);
      const v2 = (i: number): Buffer => pseudoRandom(400, i + 100_000);
      for (const [i, k] of keys.entries()) await db.put(k, v1(i), { sync: false });
      await db.compactRange();
      const base = totalBytes(db);
      const snap = db.snapshot();
      for (const [i, k] of keys.entries()) {
        if (i % 3 === 0) await db.del(k, { sync: false });
        else await db.put(k, v2(i), { sync: false });
      }
      await db.flush();
      await db.compactRange();
      await db.waitForBackground();
      // Old versions are still there for the snapshot...
      for (const [i, k] of keys.entries()) {
        assert.ok(db.getSync(k, { snapshot: snap })?.equals(v1(i)), `snapshot read of ${k}`);
        const now = db.getSync(k);
        if (i % 3 === 0) assert.equal(now, undefined);
        else assert.ok(now?.equals(v2(i)));
      }
      assert.equal((await db.iterator({ snapshot: snap }).all()).length, keys.length);
      const withSnapshot = totalBytes(db);
      assert.ok(withSnapshot > base * 1.5, `both versions are kept: ${withSnapshot} bytes vs ${base} before`);
      // ...and gone once it is released.
      snap.release();
      await db.compactRange();
      await db.waitForBackground();
      const released = totalBytes(db);
      assert.ok(released < withSnapshot * 0.6, `old versions are dropped: ${released} bytes, ${withSnapshot} with the snapshot`);
      assert.equal((await db.iterator().all()).length, keys.length - 100);
    },
    { ...SMALL, memtableSize: 64 * 1024, targetFileSize: 32 * 1024, maxBytesForLevelBase: 1024 * 1024 },
  );
});

test("a snapshot belongs to its store", async () => {
  await withDb(async (a) => {
    await withDb(async (b) => {
      await a.put("k", "a");
      await b.put("k", "b");
      const s = a.snapshot();
      throwsWith(() => b.getSync("k", { snapshot: s }), "STOWAGE_INVALID_ARGUMENT");
      throwsWith(() => b.iterator({ snapshot: s }), "STOWAGE_INVALID_ARGUMENT");
      s.release();
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Checkpoints and rollback

async function fill(db: Kv, prefix: string, n: number, value: (i: number) => string): Promise<void> {
  const b = db.batch();
  for (let i = 0; i < n; i++) b.put(`${prefix}${String(i).padStart(4, "0")}`, value(i));
  await b.write({ sync: false });
}

test("checkpoint: the copy holds exactly the state at checkpoint time and is independent", async () => {
  const dir = freshDir();
  const cp = freshDir();
  const db = await openKv(dir, SMALL);
  await fill(db, "a", 500, (i) => `a${i}`.repeat(5));
  await db.flush();
  await fill(db, "b", 300, (i) => `b${i}`);
  await db.del("a0001");
  const snap = db.snapshot(); // a live snapshot does not leak into the checkpoint
  await db.put("a0002", "in-memtable");
  const expected = await dump(db);
  await db.checkpoint(cp);
  // Writes after the checkpoint stay out of it.
  await db.put("a0003", "after");
  await db.del("b0000");
  await fill(db, "c", 100, () => "c");
  await db.compactRange();
  await rejectsWith(db.checkpoint(cp), "STOWAGE_KV_EXISTS");
  const copy = await openKv(cp, SMALL);
  assert.deepEqual(await dump(copy), expected);
  assert.equal(await copy.get("a0001"), undefined);
  assert.equal((await copy.get("a0002"))?.toString(), "in-memtable");
  // The copy is a full store: writing and compacting it leaves the original alone (and back).
  await copy.put("a0004", "copy-only");
  await copy.del("a0005");
  await copy.compactRange();
  assert.equal((await db.get("a0004"))?.toString(), "a4".repeat(5));
  assert.equal((await db.get("a0005"))?.toString(), "a5".repeat(5));
  assert.equal((await db.get("a0003"))?.toString(), "after");
  assert.equal((await copy.get("a0003"))?.toString(), "a3".repeat(5));
  await copy.close();
  snap.release();
  await db.close();
  // An empty existing directory is an acceptable target.
  const db2 = await openKv(dir, SMALL);
  const cp2 = freshDir();
  fs.mkdirSync(cp2);
  await db2.checkpoint(cp2);
  const expected2 = await dump(db2);
  await db2.close();
  const copy2 = await openKv(cp2, SMALL);
  assert.deepEqual(await dump(copy2), expected2);
  await copy2.close();
});

test("restoreKv rolls a closed store back to a checkpoint; the checkpoint stays usable", async () => {
  const dir = freshDir();
  const cp = freshDir();
  let db = await openKv(dir, SMALL);
  await fill(db, "k", 400, (i) => `v${i}`);
  await db.flush();
  await db.put("k0000", "changed");
  const expected = await dump(db);
  await db.checkpoint(cp);
  await fill(db, "k", 400, (i) => `later${i}`);
  await db.del("k0001");
  await fill(db, "z", 50, () => "z");
  await db.compactRange();
  await db.put("unflushed", "x");
  // Not while the store is open.
  await rejectsWith(restoreKv(cp, dir), "STOWAGE_KV_LOCKED");
  await db.close();
  await restoreKv(cp, dir);
  db = await openKv(dir, SMALL);
  assert.deepEqual(await dump(db), expected);
  assert.equal(await db.get("unflushed"), undefined, "the WAL of the newer state is gone");
  // Writing to the restored store does not touch the checkpoint (files are hard links).
  await fill(db, "k", 400, () => "after-restore");
  await db.compactRange();
  await db.close();
  const c = await openKv(cp, SMALL);
  assert.deepEqual(await dump(c), expected);
  await c.close();
  // Restoring twice works; restoring from a directory without a checkpoint does not.
  await restoreKv(cp, dir);
  db = await openKv(dir, SMALL);
  assert.deepEqual(await dump(db), expected);
  await db.close();
  const empty = freshDir();
  fs.mkdirSync(empty);
  await rejectsWith(restoreKv(empty, dir), "STOWAGE_KV_NOT_FOUND");
});

// ---------------------------------------------------------------------------------------------
// Reopen, locking, lifecycle errors

test("reopen keeps everything: WAL-only data, sync:false writes, tables at several levels", async () => {
  const dir = freshDir();
  let db = await openKv(dir, SMALL);
  const expected = new Map<string, string>();
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 300; i++) {
      const k = `r${(i * 7919 + round) % 500}`;
      if ((i + round) % 11 === 0) {
        await db.del(k, { sync: false });
        expected.delete(Buffer.from(k).toString("hex"));
      } else {
        const v = `${round}-${i}`;
        await db.put(k, v, { sync: round % 2 === 0 });
        expected.set(Buffer.from(k).toString("hex"), Buffer.from(v).toString("hex"));
      }
    }
    if (round === 1) await db.compactRange();
    // Unawaited writes are still applied by close.
    void db.put("last", `${round}`, { sync: false });
    expected.set(Buffer.from("last").toString("hex"), Buffer.from(`${round}`).toString("hex"));
    await db.close();
    db = await openKv(dir, SMALL);
    assert.deepEqual(await dump(db), expected, `round ${round}`);
  }
  await db.close();
});

/** The real file system, except that WAL fsyncs wait until `open()` is called. */
function gatedWalFs(): { fs: FileSystem; open: () => void; waiting: () => number } {
  let waiters: (() => void)[] = [];
  let opened = false;
  const gate = (): Promise<void> => (opened ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve)));
  const wrapped = new Proxy(nodeFileSystem, {
    get(target, prop) {
      if (prop === "createWritable") {
        return (file: string): WritableFile => {
          const f = target.createWritable(file);
          if (!file.endsWith(".log")) return f;
          return new Proxy(f, {
            get(t, p) {
              if (p === "sync") return () => gate().then(() => t.sync());
              const v: unknown = Reflect.get(t, p, t);
              return typeof v === "function" ? v.bind(t) : v;
            },
          });
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return {
    fs: wrapped,
    open: () => {
      opened = true;
      for (const w of waiters) w();
      waiters = [];
    },
    waiting: () => waiters.length,
  };
}

test("regression: writes queued before close are applied, not refused", async () => {
  // The writer loop refused every group it had not started when close() began, so writes
  // queued before close were rejected with STOWAGE_KV_CLOSED.
  const dir = freshDir();
  const gated = gatedWalFs();
  const db = await openKv(dir, { fs: gated.fs });
  const first = db.put("a", "1"); // the writer starts and waits for its (gated) fsync
  while (gated.waiting() === 0) await new Promise((resolve) => setImmediate(resolve));
  const second = db.put("b", "2", { sync: false }); // queued behind it, before close
  const third = db.batch([{ type: "put", key: "c", value: "3" }]);
  const closing = db.close();
  const refused = db.put("d", "4"); // after close began: refused
  gated.open();
  const results = await Promise.allSettled([first, second, third, refused]);
  await closing;
  assert.deepEqual(
    results.map((r) => (r.status === "fulfilled" ? "ok" : code(r.reason))),
    ["ok", "ok", "ok", "STOWAGE_KV_CLOSED"],
  );
  const again = await openKv(dir);
  assert.deepEqual(str(await again.iterator().all()), ["a=1", "b=2", "c=3"]);
  await again.close();
});

test("LOCK: a store open in this process cannot be opened again until closed", async () => {
  const dir = freshDir();
  const db = await openKv(dir);
  await rejectsWith(openKv(dir), "STOWAGE_KV_LOCKED");
  await rejectsWith(openKv(path.join(dir, ".")), "STOWAGE_KV_LOCKED");
  await rejectsWith(repairKv(dir), "STOWAGE_KV_LOCKED");
  await db.put("k", "v");
  await db.close();
  const db2 = await openKv(dir);
  assert.equal((await db2.get("k"))?.toString(), "v");
  await db2.close();
  // A failed open leaves no lock behind.
  await rejectsWith(openKv(dir, { errorIfExists: true }), "STOWAGE_KV_EXISTS");
  const db3 = await openKv(dir);
  await db3.close();
});

test("operations after close fail with STOWAGE_KV_CLOSED", async () => {
  const dir = freshDir();
  const db = await openKv(dir);
  await db.put("k", "v");
  const b = db.batch().put("x", "y");
  const snap = db.snapshot();
  await db.close();
  assert.equal(db.isClosed, true);
  await db.close(); // idempotent
  await rejectsWith(db.put("k", "v"), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.del("k"), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.batch([{ type: "put", key: "k", value: "v" }]), "STOWAGE_KV_CLOSED");
  await rejectsWith(b.write(), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.get("k"), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.flush(), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.compactRange(), "STOWAGE_KV_CLOSED");
  await rejectsWith(db.checkpoint(freshDir()), "STOWAGE_KV_CLOSED");
  throwsWith(() => db.getSync("k"), "STOWAGE_KV_CLOSED");
  throwsWith(() => db.iterator(), "STOWAGE_KV_CLOSED");
  throwsWith(() => db.cursor(), "STOWAGE_KV_CLOSED");
  throwsWith(() => db.snapshot(), "STOWAGE_KV_CLOSED");
  snap.release(); // harmless
});

test("open: createIfMissing false, errorIfExists, and invalid options", async () => {
  const missing = freshDir();
  await rejectsWith(openKv(missing, { createIfMissing: false }), "STOWAGE_KV_NOT_FOUND");
  assert.equal(fs.existsSync(missing), false, "nothing is created");
  const empty = freshDir();
  fs.mkdirSync(empty);
  await rejectsWith(openKv(empty, { createIfMissing: false }), "STOWAGE_KV_NOT_FOUND");
  assert.deepEqual(fs.readdirSync(empty), [], "nothing is left behind");

  const dir = freshDir();
  const db = await openKv(dir, { errorIfExists: true });
  await db.put("k", "v");
  await db.close();
  await rejectsWith(openKv(dir, { errorIfExists: true }), "STOWAGE_KV_EXISTS");
  const db2 = await openKv(dir, { createIfMissing: false });
  assert.equal((await db2.get("k"))?.toString(), "v");
  await db2.close();

  const bad: KvOptions[] = [
    { memtableSize: 0 },
    { memtableSize: -1 },
    { memtableSize: NaN },
    { blockSize: 0 },
    { blockRestartInterval: 0 },
    { targetFileSize: -5 },
    { maxBytesForLevelBase: Infinity },
    { levelSizeMultiplier: 0 },
    { l0CompactionTrigger: 0 },
    { l0SlowdownTrigger: -1 },
    { l0StopTrigger: NaN },
    { maxOpenTables: 0 },
    { blockCacheSize: -1 },
    { bloomBitsPerKey: -1 },
    { bloomBitsPerKey: NaN },
    { memtableSize: "big" as unknown as number },
  ];
  for (const o of bad) {
    const d = freshDir();
    await rejectsWith(openKv(d, o), "STOWAGE_INVALID_ARGUMENT");
    // A rejected open leaves no lock behind.
    const ok = await openKv(d);
    await ok.close();
  }
  // blockCacheSize 0 and bloomBitsPerKey 0 are allowed.
  const z = await openKv(freshDir(), { blockCacheSize: 0, bloomBitsPerKey: 0 });
  await z.close();
});

test("keys and values of the wrong type are rejected with STOWAGE_INVALID_ARGUMENT", async () => {
  await withDb(async (db) => {
    const n = 5 as unknown as string;
    await rejectsWith(db.put(n, "v"), "STOWAGE_INVALID_ARGUMENT");
    await rejectsWith(db.put("k", n), "STOWAGE_INVALID_ARGUMENT");
    await rejectsWith(db.del(n), "STOWAGE_INVALID_ARGUMENT");
    await rejectsWith(db.get(n), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => db.getSync(null as unknown as string), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => db.iterator({ gt: n }), "STOWAGE_INVALID_ARGUMENT");
    throwsWith(() => db.cursor({ prefix: n }), "STOWAGE_INVALID_ARGUMENT");
    assert.equal(db.stats().liveIterators, 0, "a rejected iterator holds nothing");
    assert.deepEqual(await db.iterator().all(), []);
  });
});

// ---------------------------------------------------------------------------------------------
// Concurrency

test("concurrent synced writers all resolve, in submission order, and the last write wins", async () => {
  await withDb(
    async (db) => {
      const order: number[] = [];
      const promises: Promise<void>[] = [];
      const n = 600;
      for (let i = 0; i < n; i++) {
        const p =
          i % 10 === 9
            ? db.batch([
                { type: "put", key: "same", value: `${i}` },
                { type: "put", key: `k${i}`, value: `${i}` },
              ])
            : i % 7 === 0
              ? db.del(`k${i - 1}`)
              : db.put(i % 3 === 0 ? "same" : `k${i}`, `${i}`, { sync: true });
        promises.push(p.then(() => void order.push(i)));
        // Reads interleaved with the queued writes never fail.
        if (i % 50 === 0) db.getSync("same");
      }
      await Promise.all(promises);
      assert.deepEqual(order, Array.from({ length: n }, (_, i) => i), "resolution follows submission");
      let lastSame = -1;
      for (let i = 0; i < n; i++) if (i % 10 === 9 || (i % 7 !== 0 && i % 3 === 0)) lastSame = i;
      assert.equal((await db.get("same"))?.toString(), `${lastSame}`);
      for (let i = 0; i < n; i++) {
        const deleted = (i + 1) % 7 === 0 && (i + 1) % 10 !== 9 && i + 1 < n; // op i+1 was a del, not a batch
        const written = i % 10 === 9 || (i % 7 !== 0 && i % 3 !== 0);
        const got = db.getSync(`k${i}`)?.toString();
        assert.equal(got, written && !deleted ? `${i}` : undefined, `k${i}`);
      }
      assert.ok(db.stats().sequence >= n);
    },
    { ...SMALL },
  );
});

/** The real file system, except that write-ahead-log syncs wait while `held` (and count). */
class HeldSyncs implements FileSystem {
  held: Promise<void> | undefined;
  #release: (() => void) | undefined;
  fail = false;
  syncs = 0;
  hold(): void {
    this.held = new Promise<void>((r) => (this.#release = r));
  }
  release(): void {
    this.#release?.();
    this.held = undefined;
  }
  mkdir = (d: string): void => nodeFileSystem.mkdir(d);
  readdir = (d: string): string[] => nodeFileSystem.readdir(d);
  exists = (f: string): boolean => nodeFileSystem.exists(f);
  openRandomAccess = (f: string): ReturnType<FileSystem["openRandomAccess"]> => nodeFileSystem.openRandomAccess(f);
  readFile = (f: string): Uint8Array => nodeFileSystem.readFile(f);
  rename = (a: string, b: string): void => nodeFileSystem.rename(a, b);
  remove = (f: string): void => nodeFileSystem.remove(f);
  linkOrCopy = (a: string, b: string): void => nodeFileSystem.linkOrCopy(a, b);
  truncate = (f: string, n: number): void => nodeFileSystem.truncate(f, n);
  syncDir = (d: string): Promise<void> => nodeFileSystem.syncDir(d);
  createWritable(file: string): WritableFile {
    const inner = nodeFileSystem.createWritable(file);
    if (!file.endsWith(".log")) return inner;
    const sync = async (): Promise<void> => {
      this.syncs++;
      const gate = this.held;
      if (gate !== undefined) await gate;
      if (this.fail) throw new Error("EIO: injected, fdatasync");
      await inner.sync();
    };
    return {
      path: inner.path,
      get size() {
        return inner.size;
      },
      append: (d: Uint8Array) => inner.append(d),
      close: () => inner.close(),
      sync,
    };
  }
}

test("pipelined group commit: a synced write is applied at once, visible and resolved once durable", async () => {
  const fsys = new HeldSyncs();
  await withDb(
    async (db) => {
      await db.put("k", "old");
      fsys.hold();
      let applied = 0;
      const w1 = db.put("k", "new", { onApplied: () => applied++ });
      let w1Done = false;
      void w1.then(() => (w1Done = true));
      await sleepTurns(3);
      assert.equal(applied, 1, "in the memtable before its sync finished");
      assert.equal(db.getSync("k")?.toString(), "old", "plain reads do not see a write that is not durable");
      assert.equal(db.getSync("k", { pending: true })?.toString(), "new", "pending reads do");
      assert.deepEqual(str(await db.iterator().all()), ["k=old"]);
      const snap = db.snapshot({ pending: true });
      assert.equal(db.getSync("k", { snapshot: snap })?.toString(), "new");
      snap.release();
      // The next writes are applied while the first sync is held, and share the next sync.
      const syncsBefore = fsys.syncs;
      const more = Array.from({ length: 20 }, (_, i) => db.put(`m${i}`, `${i}`, { onApplied: () => applied++ }));
      const noSync = db.put("n", "1", { sync: false });
      await sleepTurns(3);
      const settled = db.settled();
      let settledDone = false;
      void settled.then(() => (settledDone = true));
      await sleepTurns(3);
      assert.equal(applied, 21);
      assert.equal(fsys.syncs, syncsBefore, "no second sync while the first runs");
      assert.equal(w1Done, false);
      assert.equal(settledDone, false, "settled waits for every applied write");
      assert.equal(db.getSync("n"), undefined, "an unsynced write behind a synced one waits for it to be visible");
      fsys.release();
      await Promise.all([w1, ...more, noSync, settled]);
      assert.ok(fsys.syncs - syncsBefore <= 2, `${fsys.syncs - syncsBefore} syncs for 21 writers`);
      assert.equal(db.getSync("k")?.toString(), "new");
      assert.equal(db.getSync("m19")?.toString(), "19");
      assert.equal(db.getSync("n")?.toString(), "1");
      await db.settled();
    },
    { fs: fsys },
  );
});

test("pipelined group commit: a failed sync fails every write not yet visible, which stays invisible", async () => {
  const fsys = new HeldSyncs();
  const dir = freshDir();
  const db = await openKv(dir, { fs: fsys });
  await db.put("k", "old");
  fsys.hold();
  const w1 = db.put("k", "lost1");
  const w2 = db.put("j", "lost2");
  await sleepTurns(3);
  const settled = db.settled(); // the writes are applied now: it waits for them
  fsys.fail = true;
  fsys.release();
  await rejectsWith(w1, "STOWAGE_KV_READ_ONLY");
  await rejectsWith(w2, "STOWAGE_KV_READ_ONLY");
  await rejectsWith(settled, "STOWAGE_KV_READ_ONLY");
  assert.equal(db.getSync("k")?.toString(), "old");
  assert.equal(db.getSync("j"), undefined);
  await rejectsWith(db.put("x", "1"), "STOWAGE_KV_READ_ONLY");
  await db.close().catch(() => undefined);
  // Reopened: whatever the log kept of the failed writes (never acknowledged), the older state is intact.
  fsys.fail = false;
  const again = await openKv(dir, { fs: fsys });
  try {
    assert.ok(["old", "lost1"].includes(again.getSync("k")?.toString() ?? ""), "k is old, or the unacknowledged write the log kept");
    await again.put("x", "1");
    assert.equal(again.getSync("x")?.toString(), "1");
  } finally {
    await again.close();
  }
});

test("pipelined group commit: a write failing while an earlier sync runs fails the writes behind that sync", async () => {
  const held = new HeldSyncs();
  const ffs = new FaultyFileSystem(held);
  const dir = freshDir();
  const db = await openKv(dir, { fs: ffs });
  await db.put("k", "old");
  held.hold();
  const a = db.put("a", "1"); // its sync is held
  await sleepTurns(3);
  const c = db.put("c", "1"); // applied while a's sync runs; waits for the next sync
  await sleepTurns(3);
  ffs.inject({ op: "append", file: /\.log$/, errno: "EIO" });
  await rejectsWith(db.put("d", "1"), "STOWAGE_KV_READ_ONLY");
  held.release();
  await a; // its record was synced before the failure: acknowledged
  await rejectsWith(c, "STOWAGE_KV_READ_ONLY"); // never synced after it: failed, not left hanging
  assert.equal(db.getSync("a")?.toString(), "1");
  assert.equal(db.getSync("c"), undefined);
  await db.close().catch(() => undefined);
  ffs.clear();
  const again = await openKv(dir, { fs: ffs });
  try {
    assert.equal(again.getSync("a")?.toString(), "1");
  } finally {
    await again.close();
  }
});

/** Lets a few turns of the event loop pass. */
async function sleepTurns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

test("background flush and compaction keep up; waitForBackground settles them", async () => {
  await withDb(
    async (db) => {
      for (let i = 0; i < 3000; i++) await db.put(`k${i % 700}`, pseudoRandom(100, i), { sync: false });
      await db.waitForBackground();
      const st = db.stats();
      assert.ok(st.flushes > 5, `flushes: ${st.flushes}`);
      assert.ok(st.compactions > 0, `compactions: ${st.compactions}`);
      assert.ok(st.levels[0]!.files < 2, `level 0 files after settling: ${st.levels[0]!.files}`);
      assert.equal(st.levels.length, 7);
      for (let i = 2300; i < 3000; i++) assert.ok(db.getSync(`k${i % 700}`)?.equals(pseudoRandom(100, i)));
      assert.equal((await db.iterator().all()).length, 700);
    },
    { ...SMALL },
  );
});

// ---------------------------------------------------------------------------------------------
// Repair

test("repairKv recovers all data (tables and WAL) after the MANIFEST is deleted", async () => {
  const dir = freshDir();
  const db = await openKv(dir, SMALL);
  const expected = new Map<string, string>();
  const put = async (k: string, v: string): Promise<void> => {
    await db.put(k, v, { sync: false });
    expected.set(Buffer.from(k).toString("hex"), Buffer.from(v).toString("hex"));
  };
  const del = async (k: string): Promise<void> => {
    await db.del(k, { sync: false });
    expected.delete(Buffer.from(k).toString("hex"));
  };
  for (let i = 0; i < 800; i++) await put(`t${i}`, `table-${i}`);
  await db.compactRange(); // level 1+
  for (let i = 0; i < 300; i++) await put(`t${i * 2}`, `l0-${i}`);
  await db.flush(); // level 0
  // The WAL only: overwrites and tombstones over table data.
  for (let i = 0; i < 40; i++) await put(`t${i * 3}`, `wal-${i}`);
  for (let i = 0; i < 40; i++) await del(`t${i * 5 + 1}`);
  await put("", "empty-key");
  await db.put("sync", "point", { sync: true });
  expected.set(Buffer.from("sync").toString("hex"), Buffer.from("point").toString("hex"));
  assert.deepEqual(await dump(db), expected);
  await db.close();

  for (const name of fs.readdirSync(dir)) if (name.startsWith("MANIFEST-")) fs.rmSync(path.join(dir, name));
  await rejectsWith(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");

  const report = await repairKv(dir);
  assert.ok(report.tablesKept > 0, `tables kept: ${report.tablesKept}`);
  assert.deepEqual(report.tablesDropped, []);
  assert.ok(report.logRecordsRecovered > 0, `log records: ${report.logRecordsRecovered}`);
  const fixed = await openKv(dir, SMALL);
  assert.deepEqual(await dump(fixed), expected);
  assert.equal(await fixed.get("t1"), undefined, "a tombstone from the WAL still hides the table value");
  assert.equal((await fixed.get("t3"))?.toString(), "wal-1");
  // The repaired store keeps working, and sequence numbers go on from where they were.
  await fixed.put("t1", "again");
  await fixed.compactRange();
  assert.equal((await fixed.get("t1"))?.toString(), "again");
  await fixed.close();
  const reopened = await openKv(dir, SMALL);
  assert.equal((await reopened.get("t1"))?.toString(), "again");
  assert.equal((await reopened.get("t3"))?.toString(), "wal-1");
  await reopened.close();
});

// ---------------------------------------------------------------------------------------------
// Regressions: bugs found by these tests (and the model test), each reduced to a minimal case.

test("regression: maxOpenTables below the tables in use (a compaction or an iterator) works", async () => {
  // The table cache evicted the table it had just opened for acquire(), then crashed reading
  // its entry ("Cannot read properties of undefined (reading 'refs')"), failing the compaction
  // and putting the store into read-only mode.
  await withDb(
    async (db) => {
      await db.put("a", "1");
      await db.flush();
      await db.put("b", "2");
      await db.flush();
      assert.deepEqual(str(await db.iterator().all()), ["a=1", "b=2"]);
      await db.compactRange();
      assert.deepEqual(str(await db.iterator().all()), ["a=1", "b=2"]);
      await db.put("c", "3");
      assert.equal((await db.get("a"))?.toString(), "1");
    },
    { maxOpenTables: 1, autoCompaction: false },
  );
});

test("regression: compactRange over part of level 0 does not resurrect or shadow older versions", async () => {
  // compactRange took only the level-0 files overlapping the range; an older level-0 file outside
  // it then shadowed the newer version moved to level 1 (get returned the old value) or outlived
  // a tombstone dropped on the way (the deleted key came back).
  for (const variant of ["tombstone", "overwrite"] as const) {
    await withDb(
      async (db) => {
        await db.put("m", "old");
        await db.flush(); // older level-0 file [m..m]
        await db.put("a", "x");
        if (variant === "tombstone") await db.del("m");
        else await db.put("m", "new");
        await db.put("z", "y");
        await db.flush(); // newer level-0 file [a..z]
        await db.compactRange("a", "b"); // overlaps only the newer file
        const want = variant === "tombstone" ? undefined : "new";
        assert.equal((await db.get("m"))?.toString(), want, variant);
        assert.deepEqual(str(await db.iterator().all()), variant === "tombstone" ? ["a=x", "z=y"] : ["a=x", "m=new", "z=y"]);
        await db.compactRange();
        assert.equal((await db.get("m"))?.toString(), want, `${variant}, after a full compaction`);
      },
      { autoCompaction: false },
    );
  }
});

test("regression: a flush or checkpoint in flight when the store closes settles", async () => {
  // flush() waited for a background flush that close had stopped: its promise never settled.
  for (const op of ["flush", "checkpoint"] as const) {
    const dir = freshDir();
    const db = await openKv(dir);
    await db.put("a", "1");
    const p = (op === "flush" ? db.flush() : db.checkpoint(freshDir())).then(
      () => "ok",
      (err: unknown) => code(err),
    );
    await db.close();
    const outcome = await Promise.race([p, new Promise((resolve) => setTimeout(() => resolve("still pending"), 3000))]);
    assert.ok(outcome === "ok" || outcome === "STOWAGE_KV_CLOSED", `${op}: ${String(outcome)}`);
    const again = await openKv(dir);
    assert.equal((await again.get("a"))?.toString(), "1");
    await again.close();
  }
});

test("regression: iterators and cursors still open when the store closes are closed with it", async () => {
  // They kept reading through the store's closed table files: STOWAGE_KV_IO (EBADF), cached
  // blocks, or (once a descriptor number is reused) another file's bytes.
  const dir = freshDir();
  const db = await openKv(dir, { ...SMALL, blockSize: 256 });
  await fill(db, "k", 600, () => "x".repeat(50));
  await db.compactRange();
  const it = db.iterator();
  assert.equal((await it.next())?.[0].toString(), "k0000");
  const c = db.cursor();
  c.seekToFirst();
  assert.equal(db.stats().liveIterators, 2);
  await db.close();
  assert.equal(db.stats().liveIterators, 0);
  assert.equal(c.valid(), false);
  throwsWith(() => c.next(), "STOWAGE_KV_ITERATOR_CLOSED");
  throwsWith(() => c.seek("k0300"), "STOWAGE_KV_ITERATOR_CLOSED");
  assert.equal(await it.next(), undefined);
  assert.deepEqual(await it.all(), []);
});
