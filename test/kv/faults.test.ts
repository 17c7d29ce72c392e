/**
 * Fault injection and corruption: failed writes, failed fsyncs, short writes, failed renames
 * (through FaultyFileSystem), and truncated or bit-flipped files (edited on disk while the store
 * is closed). Every case must end in a clear error or a correct recovery, never in wrong data:
 * acknowledged writes survive a reopen, a failed write is all there or not at all, damaged bytes
 * are reported as STOWAGE_KV_CORRUPTION naming the file and offset, never returned.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StowageError, isStowageError, type ErrorCode } from "../../src/errors.js";
import { crc32, getFixed64, putFixed32 } from "../../src/kv/coding.js";
import { FAULT_OPS, FaultyFileSystem, type FaultRule } from "../../src/kv/fault-fs.js";
import { openKv, repairKv, type Kv, type KvOptions } from "../../src/kv/index.js";
import { LOG_BLOCK_SIZE, LOG_HEADER_SIZE, readLog } from "../../src/kv/log.js";
import { FOOTER_SIZE, FOOTER_CRC_COVERED } from "../../src/kv/table/format.js";

let root = "";
let dirCounter = 0;

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-faults-"));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Helpers

function newDir(): string {
  return path.join(root, `db${++dirCounter}`);
}

const key = (i: number): string => `key${String(i).padStart(5, "0")}`;
const value = (i: number, gen = 0): string => `value-${i}-${gen}-${"v".repeat((i * 7) % 60)}`;

/**
 * Small everything, no automatic compaction: tests decide when tables are written. Background
 * work in this thread (as it is anyway with a FaultyFileSystem): starting a worker per open is slow.
 */
const SMALL: KvOptions = { memtableSize: 1 << 20, blockSize: 256, autoCompaction: false, backgroundThread: false };

/** Asserts that `run` throws or rejects with a StowageError of `code`; returns the error. */
async function expectCode(run: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<StowageError> {
  let result: unknown;
  try {
    result = typeof run === "function" ? await run() : await run;
  } catch (err) {
    if (!isStowageError(err, code)) {
      assert.fail(`expected ${code}, got ${err instanceof Error ? `${(err as StowageError).code ?? err.name}: ${err.message}` : String(err)}`);
    }
    return err;
  }
  return assert.fail(`expected ${code}, but it succeeded with ${String(result)}`);
}

/** The errno code at the bottom of a cause chain. */
function rootErrno(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 5 && e instanceof Error; i++) {
    if (!(e instanceof StowageError) && typeof (e as NodeJS.ErrnoException).code === "string") {
      return (e as NodeJS.ErrnoException).code;
    }
    e = e.cause;
  }
  return undefined;
}

/** Reads the whole store forward and backward, and point-reads every key. */
function contents(db: Kv): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of db.iterator()) out.set(k.toString(), v.toString());
  const back: string[] = [];
  for (const [k] of db.iterator({ reverse: true })) back.push(k.toString());
  assert.deepEqual(back.reverse(), [...out.keys()], "reverse iteration disagrees with forward");
  for (const [k, v] of out) assert.equal(db.getSync(k)?.toString(), v, `get(${k})`);
  return out;
}

/**
 * Checks the store holds exactly `acked`, plus, for each group in `maybe` (writes whose outcome
 * is unknown), either every entry of the group or none of it.
 */
function assertContents(db: Kv, acked: ReadonlyMap<string, string>, maybe: readonly ReadonlyMap<string, string>[] = []): void {
  const got = contents(db);
  for (const [k, v] of acked) assert.equal(got.get(k), v, `acknowledged ${k}`);
  const extra = new Map([...got].filter(([k]) => !acked.has(k)));
  for (const g of maybe) {
    const present = [...g.keys()].filter((k) => extra.has(k));
    assert.ok(present.length === 0 || present.length === g.size, `failed write partly present: ${present.join(",")}`);
    for (const k of present) {
      assert.equal(extra.get(k), g.get(k), `failed write's ${k} has the wrong value`);
      extra.delete(k);
    }
  }
  assert.deepEqual([...extra.keys()], [], "entries nobody wrote");
  for (const g of maybe) for (const k of g.keys()) if (!got.has(k)) assert.equal(db.getSync(k), undefined);
}

async function putRange(db: Kv, model: Map<string, string>, from: number, to: number, gen = 0, sync = true): Promise<void> {
  for (let i = from; i < to; i++) {
    await db.put(key(i), value(i, gen), { sync });
    model.set(key(i), value(i, gen));
  }
}

function filesOf(dir: string, re: RegExp): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => re.test(n))
    .sort()
    .map((n) => path.join(dir, n));
}

function onlyFile(dir: string, re: RegExp): string {
  const f = filesOf(dir, re);
  assert.equal(f.length, 1, `expected one file matching ${re} in ${dir}, found ${f.length}`);
  return f[0]!;
}

function flipByte(file: string, offset: number, mask = 0x40): void {
  const data = fs.readFileSync(file);
  assert.ok(offset >= 0 && offset < data.length, `offset ${offset} inside ${file} (${data.length} bytes)`);
  data[offset]! ^= mask;
  fs.writeFileSync(file, data);
}

/** Reopens with the real file system, checks the contents and that the store takes writes. */
async function reopenAndCheck(
  dir: string,
  acked: Map<string, string>,
  maybe: Map<string, string>[] = [],
  options: KvOptions = SMALL,
): Promise<void> {
  const db = await openKv(dir, options);
  try {
    assertNoStrayTables(db, dir);
    assertContents(db, acked, maybe);
    await db.put("after-reopen", "ok");
    assert.equal(db.getSync("after-reopen")?.toString(), "ok");
    await db.del("after-reopen");
  } finally {
    await db.close();
  }
}

/** The table files referenced by the open store equal the .sst files in its directory. */
function assertNoStrayTables(db: Kv, dir: string): void {
  const referenced = db.stats().levels.reduce((n, l) => n + l.files, 0);
  assert.equal(filesOf(dir, /\.sst$/).length, referenced, "unreferenced or missing table files");
}

function assertReadOnly(err: StowageError, causeText: RegExp): void {
  assert.equal(err.code, "STOWAGE_KV_READ_ONLY");
  assert.match(err.message, causeText);
}

// ---------------------------------------------------------------------------------------------
// The wrapper itself

describe("FaultyFileSystem", () => {
  test("after / once / always, errno, error shape and counters", () => {
    const dir = newDir();
    fs.mkdirSync(dir);
    const ffs = new FaultyFileSystem();
    const file = path.join(dir, "a.log");
    const w = ffs.createWritable(file);
    const once = ffs.inject({ op: "append", file: /\.log$/, after: 2 });
    w.append(Buffer.from("1"));
    w.append(Buffer.from("2"));
    let err: unknown;
    try {
      w.append(Buffer.from("3"));
    } catch (e) {
      err = e;
    }
    assert.ok(isStowageError(err, "STOWAGE_KV_IO"));
    assert.equal(err.file, file);
    assert.match(err.message, /^write .*a\.log failed: EIO$/);
    const cause = err.cause as NodeJS.ErrnoException;
    assert.equal(cause.code, "EIO");
    assert.equal(cause.syscall, "write");
    assert.equal(cause.errno, -os.constants.errno.EIO);
    assert.equal(once.fired, 1);
    w.append(Buffer.from("4")); // once: disarmed
    assert.equal(fs.readFileSync(file).toString(), "124");

    const always = ffs.inject({ op: "sync", always: true, errno: "ENOSPC" });
    for (let i = 0; i < 3; i++) {
      assert.throws(() => ffs._check("sync", file), (e: unknown) => isStowageError(e, "STOWAGE_KV_IO") && rootErrno(e) === "ENOSPC");
    }
    assert.equal(always.fired, 3);
    always.remove();
    ffs._check("sync", file);

    // Short write: a prefix lands in the file, then ENOSPC.
    ffs.inject({ op: "append", shortWrite: 3 });
    assert.throws(() => w.append(Buffer.from("abcdef")), (e: unknown) => rootErrno(e) === "ENOSPC");
    assert.equal(fs.readFileSync(file).toString(), "124abc");
    assert.equal(w.size, 6);
    w.close();

    assert.equal(ffs.count("append"), 5);
    assert.equal(ffs.count("append", /a\.log$/), 5);
    assert.equal(ffs.count("append", /b\.log$/), 0);
    assert.equal(ffs.count("sync"), 4);
    assert.equal(ffs.count("create"), 1);
    ffs.resetCounts();
    assert.equal(ffs.count("append"), 0);

    ffs.inject({ op: "rename", file: /a\.log$/ });
    assert.throws(() => ffs.rename(file, `${file}.x`), (e: unknown) => isStowageError(e, "STOWAGE_KV_IO") && /^rename /.test((e as Error).message));
    assert.ok(fs.existsSync(file), "a failed rename leaves the file");
    ffs.clear();
    ffs.rename(file, `${file}.x`);
  });
});

// ---------------------------------------------------------------------------------------------
// Write-ahead log failures

describe("write-ahead log failures", () => {
  /** A failed write: keys f<tag>-0..2 in one batch (a large value makes it span log blocks). */
  function failedBatch(tag: string, big: boolean): Map<string, string> {
    const m = new Map<string, string>();
    for (let j = 0; j < 3; j++) m.set(`f${tag}-${j}`, `${tag}:${j}:${big && j === 1 ? "B".repeat(40000) : "x"}`);
    return m;
  }

  async function walFailure(inject: (ffs: FaultyFileSystem) => void, errno: string, big = false): Promise<void> {
    const dir = newDir();
    const ffs = new FaultyFileSystem();
    const db = await openKv(dir, { ...SMALL, fs: ffs });
    const acked = new Map<string, string>();
    try {
      await putRange(db, acked, 0, 40);
      // Some unsynced writes too: acknowledged, and in the log before the failure.
      for (let i = 40; i < 45; i++) {
        await db.put(key(i), value(i), { sync: false });
        acked.set(key(i), value(i));
      }
      inject(ffs);
      const failed = failedBatch(errno, big);
      const err = await expectCode(
        db.batch([...failed].map(([k, v]) => ({ type: "put" as const, key: k, value: v }))),
        "STOWAGE_KV_READ_ONLY",
      );
      assert.ok(isStowageError(err.cause, "STOWAGE_KV_IO"), "the cause is the I/O error");
      assert.equal(rootErrno(err), errno);
      assert.match(err.message, new RegExp(`\\.log failed: ${errno}`));
      // Read-only from now on; reads see exactly the acknowledged writes.
      const later = await expectCode(db.put("later", "x"), "STOWAGE_KV_READ_ONLY");
      assert.match(later.message, new RegExp(errno));
      await expectCode(db.del(key(1)), "STOWAGE_KV_READ_ONLY");
      await expectCode(db.batch().put("b", "b").write(), "STOWAGE_KV_READ_ONLY");
      await expectCode(db.flush(), "STOWAGE_KV_READ_ONLY");
      assertContents(db, acked);
      await db.close();
      // Once with the default options (flushes in the worker thread).
      await reopenAndCheck(dir, acked, [failed], errno === "EIO" && !big ? {} : SMALL);
    } finally {
      if (!db.isClosed) await db.close().catch(() => undefined);
    }
  }

  test("append fails with EIO: read-only, reopen has every acknowledged write", async () => {
    await walFailure((ffs) => ffs.inject({ op: "append", file: /\.log$/, errno: "EIO" }), "EIO");
  });

  test("append fails with ENOSPC after a short write (torn record at the tail)", async () => {
    for (const shortWrite of [1, 6, 7, 20, true] as const) {
      await walFailure((ffs) => ffs.inject({ op: "append", file: /\.log$/, shortWrite }), "ENOSPC");
    }
    // A record spanning blocks, cut after its first fragment(s).
    for (const shortWrite of [100, 32768, 40000] as const) {
      await walFailure((ffs) => ffs.inject({ op: "append", file: /\.log$/, shortWrite }), "ENOSPC", true);
    }
  });

  test("fsync fails: read-only, reopen has every acknowledged write", async () => {
    await walFailure((ffs) => ffs.inject({ op: "sync", file: /\.log$/, errno: "EIO" }), "EIO");
    await walFailure((ffs) => ffs.inject({ op: "sync", file: /\.log$/, errno: "ENOSPC" }), "ENOSPC", true);
  });

  test("group commit: concurrent synced writes share fsyncs", async () => {
    const dir = newDir();
    const ffs = new FaultyFileSystem();
    const db = await openKv(dir, { fs: ffs });
    try {
      ffs.resetCounts();
      const writers = 16;
      const each = 25;
      const acked = new Map<string, string>();
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          for (let i = 0; i < each; i++) {
            const n = w * each + i;
            await db.put(key(n), value(n));
            acked.set(key(n), value(n));
          }
        }),
      );
      const writes = writers * each;
      const syncs = ffs.count("sync", /\.log$/);
      assert.equal(ffs.count("append", /\.log$/), ffs.count("append"), "only the log was written");
      assert.ok(syncs >= each, `at least one fsync per round (${syncs})`);
      assert.ok(syncs * 4 <= writes, `${syncs} log fsyncs for ${writes} synced writes`);
      assertContents(db, acked);
      await db.close();
      await reopenAndCheck(dir, acked);
    } finally {
      if (!db.isClosed) await db.close();
    }
  });

  test("creating the next log fails: those writes fail with STOWAGE_KV_IO, later ones succeed, nothing is lost", async () => {
    // `noFlush`: tables cannot be written either, so the store stops (read-only) before the
    // failed log becomes obsolete, as a crash would: the next open must still work.
    // `noRemove`: the failed log cannot be removed: the store goes read-only instead.
    const cases = [];
    for (const mode of ["create", "header-eio", "header-short"] as const) {
      for (const then of ["flush", "close", "noFlush", "noRemove"] as const) cases.push({ mode, then });
    }
    for (const { mode, then } of cases) {
      const dir = newDir();
      const ffs = new FaultyFileSystem();
      const db = await openKv(dir, { ...SMALL, memtableSize: 2048, fs: ffs });
      const acked = new Map<string, string>();
      const maybe: Map<string, string>[] = [];
      try {
        await putRange(db, acked, 0, 5);
        // The next memtable switch creates a new log; make that fail.
        const current = path.basename(onlyFile(dir, /\.log$/), ".log");
        const otherLog = new RegExp(`(?<!${current})\\.log$`);
        if (mode === "create") ffs.inject({ op: "create", file: otherLog });
        else if (mode === "header-eio") ffs.inject({ op: "append", file: otherLog });
        else ffs.inject({ op: "append", file: otherLog, shortWrite: 5 });
        if (then === "noFlush") ffs.inject({ op: "create", file: /\.sst$/, always: true });
        if (then === "noRemove") ffs.inject({ op: "remove", file: otherLog, always: true });
        const codes = new Set<string>();
        for (let i = 5; i < 40; i++) {
          try {
            await db.put(key(i), value(i), { sync: i % 4 === 0 });
            acked.set(key(i), value(i));
          } catch (err) {
            codes.add((err as StowageError).code);
            maybe.push(new Map([[key(i), value(i)]]));
          }
        }
        const label = `${mode}/${then}`;
        const first = maybe[0];
        assert.ok(first !== undefined, `${label}: the fault was hit`);
        const expected = ["STOWAGE_KV_IO"];
        if (then === "noFlush" || (then === "noRemove" && mode !== "create")) expected.push("STOWAGE_KV_READ_ONLY");
        assert.deepEqual([...codes].sort(), expected, label);
        assertContents(db, acked, maybe);
        if (then === "flush") await db.flush();
        await db.close();
        await reopenAndCheck(dir, acked, maybe);
      } finally {
        if (!db.isClosed) await db.close().catch(() => undefined);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Table and manifest failures in flushes and compactions

describe("flush, compaction and manifest failures", () => {
  /** Writes keys [from, to) (generation `gen`) and deletes every 10th key below `to` of older data. */
  async function writeSome(db: Kv, acked: Map<string, string>, from: number, to: number, gen: number): Promise<void> {
    await putRange(db, acked, from, to, gen, false);
    for (let i = 3; i < from; i += 10) {
      await db.del(key(i), { sync: false });
      acked.delete(key(i));
    }
  }

  async function flushFailure(rule: FaultRule, causeText: RegExp): Promise<void> {
    const dir = newDir();
    const ffs = new FaultyFileSystem();
    const db = await openKv(dir, { ...SMALL, fs: ffs });
    const acked = new Map<string, string>();
    try {
      await writeSome(db, acked, 0, 40, 0);
      await db.flush();
      await writeSome(db, acked, 20, 70, 1);
      ffs.inject(rule);
      const err = await expectCode(db.flush(), "STOWAGE_KV_READ_ONLY");
      assertReadOnly(err, causeText);
      assertReadOnly(await expectCode(db.put("x", "y"), "STOWAGE_KV_READ_ONLY"), causeText);
      await expectCode(db.compactRange(), "STOWAGE_KV_READ_ONLY");
      assertContents(db, acked);
      await db.close();
      await reopenAndCheck(dir, acked);
    } finally {
      if (!db.isClosed) await db.close().catch(() => undefined);
    }
  }

  test("flush: table append / short write / fsync / create fails", async () => {
    await flushFailure({ op: "append", file: /\.sst$/ }, /\.sst failed: EIO/);
    await flushFailure({ op: "append", file: /\.sst$/, shortWrite: true }, /\.sst failed: ENOSPC/);
    await flushFailure({ op: "sync", file: /\.sst$/ }, /fsync .*\.sst failed: EIO/);
    await flushFailure({ op: "create", file: /\.sst$/, errno: "EMFILE" }, /create .*\.sst failed: EMFILE/);
  });

  test("flush: manifest append / short write / fsync fails", async () => {
    await flushFailure({ op: "append", file: /MANIFEST-\d+$/ }, /MANIFEST-\d+ failed: EIO/);
    await flushFailure({ op: "append", file: /MANIFEST-\d+$/, shortWrite: 9 }, /MANIFEST-\d+ failed: ENOSPC/);
    await flushFailure({ op: "sync", file: /MANIFEST-\d+$/ }, /fsync .*MANIFEST-\d+ failed: EIO/);
  });

  test("background flush of a full memtable fails: later writes are refused, acknowledged ones survive", async () => {
    for (const rule of [{ op: "sync", file: /\.sst$/ }, { op: "append", file: /MANIFEST-\d+$/, errno: "ENOSPC" }] as FaultRule[]) {
      const dir = newDir();
      const ffs = new FaultyFileSystem();
      const db = await openKv(dir, { ...SMALL, memtableSize: 2048, fs: ffs });
      const acked = new Map<string, string>();
      try {
        await putRange(db, acked, 0, 10);
        ffs.inject(rule);
        let refused: StowageError | undefined;
        for (let i = 10; i < 200 && refused === undefined; i++) {
          try {
            await db.put(key(i), value(i));
            acked.set(key(i), value(i));
          } catch (err) {
            assert.ok(isStowageError(err, "STOWAGE_KV_READ_ONLY"), String(err));
            refused = err;
          }
        }
        assert.ok(refused !== undefined, "a write was refused");
        assert.match(refused.message, rule.op === "sync" ? /fsync .*\.sst failed: EIO/ : /MANIFEST-\d+ failed: ENOSPC/);
        assertContents(db, acked);
        await expectCode(db.waitForBackground(), "STOWAGE_KV_READ_ONLY");
        await db.close();
        await reopenAndCheck(dir, acked);
      } finally {
        if (!db.isClosed) await db.close().catch(() => undefined);
      }
    }
  });

  /**
   * Three level-0 tables, then a compaction (background, or compactRange) that fails on `rule`
   * (armed after the three flushes). Small target files make the compaction write several outputs.
   */
  async function compactionFailure(rule: FaultRule, causeText: RegExp, background: boolean): Promise<void> {
    const dir = newDir();
    const ffs = new FaultyFileSystem();
    const opts: KvOptions = { ...SMALL, targetFileSize: 1500, fs: ffs, autoCompaction: background, l0CompactionTrigger: 3 };
    const db = await openKv(dir, opts);
    const acked = new Map<string, string>();
    try {
      await writeSome(db, acked, 0, 60, 0);
      await db.flush();
      await writeSome(db, acked, 30, 90, 1);
      await db.flush();
      // The first two flushes are placed below level 0 (nothing overlapped them there); these two
      // overlap them and stay in level 0, so the next flush brings it to the compaction trigger.
      await writeSome(db, acked, 20, 70, 3);
      await db.flush();
      await writeSome(db, acked, 0, 40, 4);
      await db.flush();
      assert.equal(db.stats().levels[0]!.files, 2);
      await writeSome(db, acked, 10, 50, 2);
      if (background) {
        // The third flush's own table and manifest edit go through; the compaction it triggers fails.
        ffs.inject({ ...rule, after: (rule.after ?? 0) + 1 });
        await db.flush().catch((err: unknown) => assert.ok(isStowageError(err, "STOWAGE_KV_READ_ONLY"), String(err)));
        assertReadOnly(await expectCode(db.waitForBackground(), "STOWAGE_KV_READ_ONLY"), causeText);
      } else {
        await db.flush();
        ffs.inject(rule);
        const err = await expectCode(db.compactRange(), "STOWAGE_KV_IO");
        assert.match(err.message, causeText);
      }
      assertReadOnly(await expectCode(db.put("x", "y"), "STOWAGE_KV_READ_ONLY"), causeText);
      assertContents(db, acked);
      await db.close();
      await reopenAndCheck(dir, acked);
    } finally {
      if (!db.isClosed) await db.close().catch(() => undefined);
    }
  }

  for (const background of [true, false]) {
    const how = background ? "background compaction" : "compactRange";
    test(`${how}: table append / fsync fails on the first or a later output`, async () => {
      await compactionFailure({ op: "append", file: /\.sst$/ }, /write .*\.sst failed: EIO/, background);
      await compactionFailure({ op: "append", file: /\.sst$/, after: 2, shortWrite: 50 }, /write .*\.sst failed: ENOSPC/, background);
      await compactionFailure({ op: "sync", file: /\.sst$/ }, /fsync .*\.sst failed: EIO/, background);
      await compactionFailure({ op: "sync", file: /\.sst$/, after: 2 }, /fsync .*\.sst failed: EIO/, background);
    });

    test(`${how}: manifest append / fsync fails when installing the result`, async () => {
      await compactionFailure({ op: "append", file: /MANIFEST-\d+$/ }, /write .*MANIFEST-\d+ failed: EIO/, background);
      await compactionFailure({ op: "append", file: /MANIFEST-\d+$/, shortWrite: 3 }, /write .*MANIFEST-\d+ failed: ENOSPC/, background);
      await compactionFailure({ op: "sync", file: /MANIFEST-\d+$/ }, /fsync .*MANIFEST-\d+ failed: EIO/, background);
    });

    test(`${how}: reading an input table fails`, async () => {
      await compactionFailure({ op: "read", file: /\.sst$/, errno: "EIO" }, /read .*\.sst failed: EIO/, background);
    });
  }
});

describe("manifest rotation and other failures", () => {
  test("switching to a new manifest fails (its fsync, the CURRENT rename, the directory fsync): read-only, nothing lost", async () => {
    // Keys of 250 KB make the manifest pass its 4 MiB rotation limit after a few flushes.
    const big = "K".repeat(250_000);
    for (const [rule, causeText] of [
      [{ op: "rename", file: /\d+\.tmp$/ }, /rename .*\.tmp failed: EIO/],
      [{ op: "syncDir" }, /fsync .* failed: EIO/],
      [{ op: "sync", file: /MANIFEST-\d+$/, after: 0 }, /fsync .*MANIFEST-\d+ failed: EIO/],
    ] as [FaultRule, RegExp][]) {
      const dir = newDir();
      const ffs = new FaultyFileSystem();
      const db = await openKv(dir, { ...SMALL, fs: ffs });
      const acked = new Map<string, string>();
      try {
        const manifest = path.basename(onlyFile(dir, /^MANIFEST-/));
        // Only the new manifest's fsync fails, not the appends to the current one.
        ffs.inject(rule.op === "sync" ? { ...rule, file: new RegExp(`MANIFEST-(?!${manifest.slice(9)}$)\\d+$`) } : rule);
        let err: StowageError | undefined;
        for (let i = 0; i < 40 && err === undefined; i++) {
          await db.put(big + key(i), value(i), { sync: false });
          acked.set(big + key(i), value(i));
          try {
            await db.flush();
          } catch (e) {
            assert.ok(isStowageError(e, "STOWAGE_KV_READ_ONLY"), String(e));
            err = e;
          }
        }
        assert.ok(err !== undefined, "the manifest was switched");
        assertReadOnly(err, causeText);
        await expectCode(db.put("x", "y"), "STOWAGE_KV_READ_ONLY");
        assertContents(db, acked);
        await db.close();
        await reopenAndCheck(dir, acked);
      } finally {
        if (!db.isClosed) await db.close().catch(() => undefined);
      }
    }
  });

  test("a failed read of a table: that read fails with STOWAGE_KV_IO, the store stays writable", async () => {
    const { dir, acked } = await storeWithTable();
    const ffs = new FaultyFileSystem();
    const db = await openKv(dir, { ...SMALL, fs: ffs, blockCacheSize: 0 });
    try {
      ffs.inject({ op: "read", file: /\.sst$/, always: true });
      const err = await expectCode(db.get(key(7)), "STOWAGE_KV_IO");
      assert.equal(rootErrno(err), "EIO");
      assert.match(err.file ?? "", /\.sst$/);
      await expectCode(() => db.iterator().all(), "STOWAGE_KV_IO");
      await db.put("new", "1");
      ffs.clear();
      acked.set("new", "1");
      assertContents(db, acked);
    } finally {
      await db.close();
    }
    await reopenAndCheck(dir, acked);
  });

  test("removing obsolete files fails: ignored, and the next open removes them", async () => {
    const dir = newDir();
    const ffs = new FaultyFileSystem();
    const db = await openKv(dir, { ...SMALL, fs: ffs });
    const acked = new Map<string, string>();
    try {
      ffs.inject({ op: "remove", file: /\.(log|sst)$/, always: true });
      for (let round = 0; round < 3; round++) {
        await putRange(db, acked, round * 10, round * 10 + 15, round, false);
        await db.flush();
      }
      await db.compactRange();
      assert.ok(ffs.count("remove", /\.(log|sst)$/) >= 3, "obsolete logs and tables were to be removed");
      assert.ok(filesOf(dir, /\.sst$/).length > 1 && filesOf(dir, /\.log$/).length > 1, "and are still there");
      await db.put("after", "1");
      acked.set("after", "1");
      assertContents(db, acked);
    } finally {
      await db.close();
    }
    await reopenAndCheck(dir, acked);
    assert.equal(filesOf(dir, /\.log$/).length, 1, "obsolete logs removed at open");
  });
});

// ---------------------------------------------------------------------------------------------
// Damaged files

/** Opening fails, or the first reads do, with `code` naming a file matching `fileRe`. */
async function expectOnOpenOrRead(dir: string, code: ErrorCode, fileRe: RegExp): Promise<StowageError> {
  let db: Kv;
  try {
    db = await openKv(dir, SMALL);
  } catch (err) {
    assert.ok(isStowageError(err, code), `open: expected ${code}, got ${String(err)}`);
    assert.match(err.file ?? "", fileRe);
    return err;
  }
  try {
    const err = await expectCode(() => contents(db), code);
    assert.match(err.file ?? "", fileRe);
    return err;
  } finally {
    await db.close();
  }
}

function assertNamesFileAndOffset(err: StowageError, file: string, offset?: number): void {
  assert.equal(err.file, file);
  assert.ok(typeof err.offset === "number" && err.offset >= 0, `offset ${err.offset}`);
  if (offset !== undefined) assert.equal(err.offset, offset);
  assert.ok(err.message.includes(file), `message names ${file}: ${err.message}`);
  assert.ok(err.message.includes(`offset ${err.offset}`), `message names the offset: ${err.message}`);
}

/** A closed store with `n` keys in one table (small blocks) and nothing in the log. */
async function storeWithTable(n = 200): Promise<{ dir: string; acked: Map<string, string>; table: string }> {
  const dir = newDir();
  const db = await openKv(dir, SMALL);
  const acked = new Map<string, string>();
  await db.batch(Array.from({ length: n }, (_, i) => ({ type: "put" as const, key: key(i), value: value(i) })));
  for (let i = 0; i < n; i++) acked.set(key(i), value(i));
  await db.flush();
  await db.close();
  return { dir, acked, table: onlyFile(dir, /\.sst$/) };
}

/** Every read of the store either returns exactly the acknowledged data or throws `code`; returns the errors. */
async function readsAreRightOrFail(dir: string, acked: Map<string, string>, code: ErrorCode): Promise<StowageError[]> {
  const errors: StowageError[] = [];
  const db = await openKv(dir, SMALL);
  try {
    for (const [k, v] of acked) {
      try {
        assert.equal(db.getSync(k)?.toString(), v, `get(${k})`);
      } catch (err) {
        if (!isStowageError(err, code)) throw err;
        errors.push(err);
      }
    }
    for (const reverse of [false, true]) {
      const seen: string[] = [];
      try {
        for (const [k, v] of db.iterator({ reverse })) {
          assert.equal(v.toString(), acked.get(k.toString()), `iterated ${k.toString()}`);
          seen.push(k.toString());
        }
        assert.equal(seen.length, acked.size, "iteration saw every key");
      } catch (err) {
        if (!isStowageError(err, code)) throw err;
        errors.push(err);
      }
    }
  } finally {
    await db.close();
  }
  return errors;
}

describe("damaged tables", () => {
  test("a flipped byte in a data block: reads of it fail with STOWAGE_KV_CORRUPTION naming the .sst and offset", async () => {
    const { dir, acked, table } = await storeWithTable();
    flipByte(table, 5);
    const errors = await readsAreRightOrFail(dir, acked, "STOWAGE_KV_CORRUPTION");
    assert.ok(errors.length >= 3, "the damaged block's keys and both iterations fail");
    for (const err of errors) assertNamesFileAndOffset(err, table, 0);
    assert.match(errors[0]!.message, /checksum mismatch/);
    // A block in the middle.
    const mid = Math.floor(fs.statSync(table).size / 3);
    flipByte(table, 5);
    flipByte(table, mid, 0x01);
    const errs2 = await readsAreRightOrFail(dir, acked, "STOWAGE_KV_CORRUPTION");
    assert.ok(errs2.length >= 3);
    for (const err of errs2) {
      assertNamesFileAndOffset(err, table);
      assert.ok(err.offset! <= mid && mid - err.offset! < 512, `block offset ${err.offset} holds byte ${mid}`);
    }
    // The damage is reported by compaction too, and stops the store from writing.
    const db = await openKv(dir, SMALL);
    try {
      await db.put("zzz", "z");
      const err = await expectCode(db.compactRange(), "STOWAGE_KV_CORRUPTION");
      assertNamesFileAndOffset(err, table);
      await expectCode(db.put("x", "y"), "STOWAGE_KV_READ_ONLY");
    } finally {
      await db.close();
    }
  });

  test("a flipped byte in the footer, index, filter or properties block: STOWAGE_KV_CORRUPTION on open or first read", async () => {
    const { dir, acked, table } = await storeWithTable();
    const size = fs.statSync(table).size;
    const footer = fs.readFileSync(table).subarray(size - FOOTER_SIZE);
    const indexOff = getFixed64(footer, 0);
    const filterOff = getFixed64(footer, 16);
    const propsOff = getFixed64(footer, 32);
    assert.ok(filterOff > 0, "the table has a filter");
    const spots: [string, number][] = [
      ["footer handle", size - FOOTER_SIZE + 3],
      ["footer crc", size - FOOTER_SIZE + 53],
      ["footer magic", size - 1],
      ["index", indexOff + 2],
      ["index trailer", size - FOOTER_SIZE - 2],
      ["filter", filterOff + 1],
      ["properties", propsOff + 1],
    ];
    for (const [what, at] of spots) {
      flipByte(table, at);
      const err = await expectOnOpenOrRead(dir, "STOWAGE_KV_CORRUPTION", /\.sst$/);
      assertNamesFileAndOffset(err, table);
      flipByte(table, at);
      assert.ok(err.offset! <= at, `${what}: reported offset ${err.offset} is at or before byte ${at}`);
    }
    await reopenAndCheck(dir, acked);
  });

  test("bytes flipped anywhere in a table: every read is right or fails with STOWAGE_KV_CORRUPTION", async () => {
    const { dir, acked, table } = await storeWithTable(60);
    const size = fs.statSync(table).size;
    for (let at = 1; at < size; at += 151) {
      flipByte(table, at, 0x10);
      const errors = await readsAreRightOrFail(dir, acked, "STOWAGE_KV_CORRUPTION");
      assert.ok(errors.length > 0, `a flip at ${at} of ${size} went unnoticed`);
      for (const err of errors) assertNamesFileAndOffset(err, table);
      flipByte(table, at, 0x10);
    }
  });

  test("a truncated table: STOWAGE_KV_CORRUPTION naming it", async () => {
    const { dir, acked, table } = await storeWithTable();
    const size = fs.statSync(table).size;
    const original = fs.readFileSync(table);
    for (const len of [size - 1, size - FOOTER_SIZE, Math.floor(size / 2), 10, 0]) {
      fs.truncateSync(table, len);
      const err = await expectOnOpenOrRead(dir, "STOWAGE_KV_CORRUPTION", /\.sst$/);
      assertNamesFileAndOffset(err, table);
      fs.writeFileSync(table, original);
    }
    await reopenAndCheck(dir, acked);
  });

  test("a table named by the manifest is missing: STOWAGE_KV_CORRUPTION naming it", async () => {
    const { dir, table } = await storeWithTable();
    fs.renameSync(table, `${table}.moved`);
    const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
    assertNamesFileAndOffset(err, table, 0);
    assert.match(err.message, /missing/);
    assert.ok(fs.existsSync(`${table}.moved`) && fs.existsSync(path.join(dir, "CURRENT")), "nothing was removed");
  });
});

describe("damaged logs, manifest and CURRENT", () => {
  /** A closed store whose data is all in its write-ahead log: `n` writes, each one record. */
  async function storeWithLog(n: number, valueBytes = 0): Promise<{ dir: string; acked: Map<string, string>[]; log: string }> {
    const dir = newDir();
    const db = await openKv(dir, SMALL);
    const acked: Map<string, string>[] = [];
    for (let i = 0; i < n; i++) {
      // Each write is a two-key batch, so a partly applied record would show.
      const m = new Map([
        [key(i), value(i) + "w".repeat(valueBytes)],
        [`${key(i)}b`, value(i, 1)],
      ]);
      await db.batch([...m].map(([k, v]) => ({ type: "put" as const, key: k, value: v })), { sync: false });
      acked.push(m);
    }
    await db.close();
    return { dir, acked, log: onlyFile(dir, /\.log$/) };
  }

  const merge = (groups: Map<string, string>[]): Map<string, string> => new Map(groups.flatMap((g) => [...g]));

  /** The log's records after the header record. */
  function records(log: string): { offset: number; payload: Uint8Array }[] {
    const r = readLog(fs.readFileSync(log));
    assert.deepEqual(r.damage, []);
    return r.records.slice(1);
  }

  test("a flipped byte mid-log: open fails naming the .log and offset; repairKv salvages every other record", async () => {
    // Byte positions inside the damaged record: crc, length (low, high), type, payload.
    for (const [what, delta] of [
      ["payload", LOG_HEADER_SIZE + 15],
      ["crc", 1],
      ["length low byte", 4],
      ["length high byte", 5],
      ["type", 6],
    ] as const) {
      for (const valueBytes of [0, 2000]) {
        // valueBytes 0: the whole log is one 32 KiB block; 2000: records after the damage lie in later blocks.
        const { dir, acked, log } = await storeWithLog(40, valueBytes);
        const recs = records(log);
        const victim = 20;
        const at = recs[victim]!.offset;
        flipByte(log, at + delta, delta === 5 ? 0x01 : 0x40);
        const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
        assertNamesFileAndOffset(err, log);
        assert.ok(err.offset! >= at && err.offset! <= at + LOG_HEADER_SIZE, `${what}/${valueBytes}: offset ${err.offset}, record at ${at}`);
        assert.ok(fs.existsSync(log), "the log is left alone");

        const report = await repairKv(dir);
        assert.deepEqual(report.tablesDropped, []);
        const lost = [acked[victim]!];
        // A damaged length can hide the records after it in the same block (never more).
        if (what.startsWith("length") && report.logRecordsRecovered < acked.length - 1) {
          for (let i = victim + 1; i < acked.length && recs[i]!.offset < (Math.floor(at / LOG_BLOCK_SIZE) + 1) * LOG_BLOCK_SIZE; i++) {
            lost.push(acked[i]!);
          }
        }
        assert.equal(report.logRecordsRecovered, acked.length - lost.length, `${what}/${valueBytes}`);
        assert.ok(report.logBytesDropped > 0);
        await reopenAndCheck(dir, merge(acked.filter((g) => !lost.includes(g))));
      }
    }
  });

  test("a torn tail (log cut inside its last record, or zero-filled) is dropped; every complete record is kept", async () => {
    const { dir, acked, log } = await storeWithLog(30);
    const saved = `${dir}.saved`;
    fs.cpSync(dir, saved, { recursive: true });
    const original = fs.readFileSync(log);
    const last = records(log).at(-1)!;
    const cuts = [last.offset + 1, last.offset + LOG_HEADER_SIZE - 1, last.offset + LOG_HEADER_SIZE + 3, original.length - 1];
    for (const cut of cuts) {
      fs.writeFileSync(log, original.subarray(0, cut));
      // Reopened twice: the first open moves the log into a table, the second reads that.
      await reopenAndCheck(dir, merge(acked.slice(0, -1)));
      await reopenAndCheck(dir, merge(acked.slice(0, -1)));
      fs.rmSync(dir, { recursive: true });
      fs.cpSync(saved, dir, { recursive: true });
    }
    // Zeros after the last record (a file extended but never written) are no damage at all.
    fs.writeFileSync(log, Buffer.concat([original, Buffer.alloc(100)]));
    await reopenAndCheck(dir, merge(acked));
  });

  /** A closed store with three flushed tables (three manifest edits after the snapshot) and data in the log. */
  async function storeWithManifest(): Promise<{ dir: string; acked: Map<string, string>; manifest: string }> {
    const dir = newDir();
    const db = await openKv(dir, SMALL);
    const acked = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      await putRange(db, acked, round * 20, round * 20 + 30, round, false);
      await db.flush();
    }
    await putRange(db, acked, 100, 110, 0, false);
    await db.close();
    return { dir, acked, manifest: onlyFile(dir, /^MANIFEST-/) };
  }

  test("a flipped byte in the MANIFEST: open fails naming it; repairKv rebuilds from tables and logs", async () => {
    const { dir, acked, manifest } = await storeWithManifest();
    const original = fs.readFileSync(manifest);
    const r = readLog(original);
    assert.ok(r.records.length >= 5, "header, snapshot, three edits");
    // Bytes all over. (Damage in the last record looks like a torn append, but the log that edit
    // retired is gone, so it had taken effect.)
    const headers = new Set(r.records.flatMap((rec) => Array.from({ length: LOG_HEADER_SIZE }, (_, j) => rec.offset + j)));
    for (let at = 0; at < original.length; at++) {
      if (!headers.has(at) && at % 3 !== 0) continue; // every header byte, a third of the rest
      flipByte(manifest, at, 0x04);
      const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
      assert.equal(err.file, manifest, `flip at ${at}: ${err.message}`);
      assert.ok(err.message.includes(manifest));
      fs.writeFileSync(manifest, original);
    }
    flipByte(manifest, r.records[2]!.offset + LOG_HEADER_SIZE + 2);
    const report = await repairKv(dir);
    assert.equal(report.tablesKept, 3);
    assert.deepEqual(report.tablesDropped, []);
    await reopenAndCheck(dir, acked);
  });

  test("a damaged or missing CURRENT: STOWAGE_KV_CORRUPTION naming it", async () => {
    const { dir, acked } = await storeWithManifest();
    const current = path.join(dir, "CURRENT");
    const original = fs.readFileSync(current);
    for (const damage of [
      (b: Buffer) => flipOne(b, 3),
      (b: Buffer) => flipOne(b, b.length - 3),
      (b: Buffer) => b.subarray(0, 10),
      () => Buffer.alloc(0),
      () => Buffer.from("MANIFEST-999999\ncrc32 00000000\n"),
    ]) {
      fs.writeFileSync(current, damage(Buffer.from(original)));
      const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
      assert.equal(err.file, current);
      assert.match(err.message, /CURRENT/);
    }
    // CURRENT naming a manifest that is not there.
    fs.writeFileSync(current, Buffer.from(`MANIFEST-999999\ncrc32 ${crc32(Buffer.from("MANIFEST-999999")).toString(16).padStart(8, "0")}\n`));
    const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
    assert.equal(err.file, path.join(dir, "MANIFEST-999999"));
    fs.rmSync(current);
    const err2 = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_CORRUPTION");
    assert.equal(err2.file, current);
    fs.writeFileSync(current, original);
    await reopenAndCheck(dir, acked);
  });

  function flipOne(b: Buffer, at: number): Buffer {
    b[at]! ^= 0x01;
    return b;
  }

  /** Sets a fixed32 inside the first record of a log file and fixes up that fragment's crc. */
  function patchFirstRecord(file: string, payloadOffset: number, patch: (payload: Uint8Array) => void): void {
    const data = fs.readFileSync(file);
    const len = data[4]! | (data[5]! << 8);
    const type = data[6]!;
    const payload = data.subarray(LOG_HEADER_SIZE, LOG_HEADER_SIZE + len);
    assert.ok(payloadOffset < len);
    patch(payload);
    putFixed32(data, 0, crc32(payload, crc32(new Uint8Array([type]))));
    fs.writeFileSync(file, data);
  }

  test("a newer format version in a log, manifest or table: STOWAGE_KV_FORMAT_VERSION", async () => {
    // Write-ahead log header: magic(8) version(fixed32) kind(1).
    {
      const { dir, log } = await storeWithLog(5);
      patchFirstRecord(log, 8, (p) => putFixed32(p, 8, 2));
      const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_FORMAT_VERSION");
      assert.equal(err.file, log);
    }
    // Manifest header, and the manifest's format-version field (the snapshot edit's first tag).
    {
      const { dir, manifest } = await storeWithManifest();
      const original = fs.readFileSync(manifest);
      patchFirstRecord(manifest, 8, (p) => putFixed32(p, 8, 7));
      const err = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_FORMAT_VERSION");
      assert.equal(err.file, manifest);
      fs.writeFileSync(manifest, original);
      const snap = readLog(original).records[1]!;
      const data = Buffer.from(original);
      assert.deepEqual([...snap.payload.subarray(0, 2)], [1, 1], "snapshot starts with format version 1");
      data[snap.offset + LOG_HEADER_SIZE + 1] = 2;
      const p = data.subarray(snap.offset + LOG_HEADER_SIZE, snap.offset + LOG_HEADER_SIZE + snap.payload.length);
      putFixed32(data, snap.offset, crc32(p, crc32(new Uint8Array([data[snap.offset + 6]!]))));
      fs.writeFileSync(manifest, data);
      const err2 = await expectCode(openKv(dir, SMALL), "STOWAGE_KV_FORMAT_VERSION");
      assert.equal(err2.file, manifest);
    }
    // Table footer version, with the footer crc fixed up.
    {
      const { dir, table } = await storeWithTable();
      const data = fs.readFileSync(table);
      const footer = data.subarray(data.length - FOOTER_SIZE);
      putFixed32(footer, 48, 2);
      putFixed32(footer, 52, crc32(footer.subarray(0, FOOTER_CRC_COVERED)));
      fs.writeFileSync(table, data);
      const err = await expectOnOpenOrRead(dir, "STOWAGE_KV_FORMAT_VERSION", /\.sst$/);
      assert.equal(err.file, table);
      assert.equal(err.offset, data.length - FOOTER_SIZE + 48);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Sweeps: one fault at every point of an open, and at spread points of a busy workload

describe("fault sweeps", () => {
  test("every operation of an open failing in turn: a clear STOWAGE_KV_IO, then a clean reopen", async () => {
    const dir = newDir();
    const acked = new Map<string, string>();
    let round = 0;
    /** Checks the contents, then leaves the store closed with new data in tables and in the log. */
    const checkAndAddData = async (): Promise<void> => {
      const db = await openKv(dir, SMALL);
      assertNoStrayTables(db, dir);
      assertContents(db, acked);
      await putRange(db, acked, round * 10, round * 10 + 10, round, false);
      if (round % 2 === 0) await db.flush();
      await putRange(db, acked, round * 10 + 5, round * 10 + 12, round + 1, false);
      await db.close();
      round++;
    };
    await checkAndAddData();
    const probe = new FaultyFileSystem();
    await (await openKv(dir, { ...SMALL, fs: probe })).close();
    await checkAndAddData();
    // A failed open must not leak file descriptors (it leaked the new log's).
    const openFds = (): number => (fs.existsSync("/proc/self/fd") ? fs.readdirSync("/proc/self/fd").length : 0);
    const fdsBefore = openFds();
    let failures = 0;
    for (const op of FAULT_OPS) {
      for (let n = 0; n < probe.count(op); n++) {
        const ffs = new FaultyFileSystem();
        const fault = ffs.inject({ op, after: n, errno: n % 2 === 0 ? "EIO" : "ENOSPC", shortWrite: op === "append" && n % 2 === 1 ? 4 : undefined });
        try {
          const db = await openKv(dir, { ...SMALL, fs: ffs });
          // Failures the store can live with (removing an obsolete file) leave it usable.
          assertContents(db, acked);
          await db.close();
        } catch (err) {
          failures++;
          assert.equal(fault.fired, 1, `${op}#${n}: ${String(err)}`);
          assert.ok(isStowageError(err, "STOWAGE_KV_IO"), `${op}#${n}: ${String(err)}`);
          assert.equal(rootErrno(err), n % 2 === 0 ? "EIO" : "ENOSPC");
        }
        await checkAndAddData();
      }
    }
    assert.ok(failures >= 10, `${failures} opens failed`);
    assert.ok(openFds() <= fdsBefore, `file descriptors leaked: ${fdsBefore} before, ${openFds()} after`);
  });

  test("one fault at spread points of a workload with flushes and compactions: nothing acknowledged is lost", async () => {
    const opts: KvOptions = { ...SMALL, memtableSize: 1500, targetFileSize: 1200, l0CompactionTrigger: 2, autoCompaction: true };
    const writes = 36;
    /** Runs the workload; returns what was acknowledged and what failed. */
    const run = async (dir: string, ffs: FaultyFileSystem, arm: () => void): Promise<{ acked: Map<string, string>; maybe: Map<string, string>[]; codes: Set<string> }> => {
      const acked = new Map<string, string>();
      const maybe: Map<string, string>[] = [];
      const codes = new Set<string>();
      const db = await openKv(dir, { ...opts, fs: ffs });
      try {
        arm();
        for (let i = 0; i < writes; i++) {
          const g = new Map([
            [key(i % 24), value(i, i)],
            [`${key(i)}x`, value(i)],
          ]);
          try {
            await db.batch([...g].map(([k, v]) => ({ type: "put" as const, key: k, value: v })), { sync: i % 3 === 0 });
            for (const [k, v] of g) acked.set(k, v);
          } catch (err) {
            codes.add((err as StowageError).code);
            maybe.push(g);
          }
          // Reads in between: right, or an I/O error (a read fault), never wrong.
          try {
            const k = key((i * 7) % 24);
            assert.equal(db.getSync(k)?.toString(), acked.get(k));
          } catch (err) {
            if (!isStowageError(err, "STOWAGE_KV_IO")) throw err;
            codes.add("read:STOWAGE_KV_IO");
          }
        }
        await db.waitForBackground().catch((err: unknown) => codes.add(`bg:${(err as StowageError).code}`));
        ffs.clear();
        // A key overwritten by a failed write may show that write's value: only keys no failed write touched are checked here.
        const touched = new Set(maybe.flatMap((g) => [...g.keys()]));
        const sure = new Map([...acked].filter(([k]) => !touched.has(k)));
        const got = contents(db);
        for (const [k, v] of sure) assert.equal(got.get(k), v, `acknowledged ${k}`);
      } finally {
        await db.close().catch(() => undefined);
      }
      return { acked, maybe, codes };
    };
    const probe = new FaultyFileSystem();
    const dry = await run(newDir(), probe, () => probe.resetCounts());
    assert.equal(dry.maybe.length, 0);
    let runs = 0;
    for (const op of FAULT_OPS) {
      const total = probe.count(op);
      const points = new Set([0, Math.floor(total / 2), total - 1].filter((n) => n >= 0));
      for (const n of points) {
        const dir = newDir();
        const ffs = new FaultyFileSystem();
        let fired = (): number => 0;
        const { acked, maybe, codes } = await run(dir, ffs, () => {
          const fault = ffs.inject({ op, after: n, shortWrite: op === "append" && n % 2 === 1 ? true : undefined });
          fired = () => fault.fired;
        });
        for (const c of codes) assert.match(c, /STOWAGE_KV_(IO|READ_ONLY)$/, `${op}#${n}`);
        if (fired() > 0 && op !== "remove") assert.ok(codes.size > 0, `${op}#${n}: the fault went unreported`);
        const db = await openKv(dir, opts);
        try {
          const touched = new Set(maybe.flatMap((g) => [...g.keys()]));
          const got = contents(db);
          for (const [k, v] of acked) {
            if (!touched.has(k)) assert.equal(got.get(k), v, `${op}#${n}: acknowledged ${k}`);
            else assert.ok(got.get(k) === v || maybe.some((g) => g.get(k) === got.get(k)), `${op}#${n}: ${k}`);
          }
          for (const [k, v] of got) {
            assert.ok(acked.get(k) === v || maybe.some((g) => g.get(k) === v), `${op}#${n}: ${k}=${v} was never written`);
          }
        } finally {
          await db.close();
        }
        runs++;
      }
    }
    assert.ok(runs >= 15);
  });
});
