/**
 * Regression tests for bugs the crash test (crash.test.ts) found, each reduced to a small,
 * deterministic reproduction.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CrashingFileSystem } from "../../src/kv/crash-fs.js";
import { logFileName } from "../../src/kv/format.js";
import { nodeFileSystem } from "../../src/kv/fs.js";
import { openKv } from "../../src/kv/index.js";
import { VersionSet } from "../../src/kv/manifest.js";

let root = "";
let n = 0;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-crash-regress-"));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});
const freshDir = (): string => path.join(root, `db${++n}`);

class SimulatedCrash extends Error {}

test("iterator prefix given as a string or Buffer (found by the crash test's marker scan)", async () => {
  // prefixSuccessor() incremented the last byte of prefix.slice(), which on a Buffer is a view:
  // the lower bound became the upper bound and the iterator was always empty.
  const db = await openKv(freshDir());
  try {
    await db.batch([
      { type: "put", key: "a/1", value: "x" },
      { type: "put", key: "a/2", value: "y" },
      { type: "put", key: "b/1", value: "z" },
    ]);
    assert.deepEqual((await db.iterator({ prefix: "a/" }).all()).map(([k]) => k.toString()), ["a/1", "a/2"]);
    const p = Buffer.from("a/");
    assert.deepEqual((await db.iterator({ prefix: p, reverse: true }).all()).map(([k]) => k.toString()), ["a/2", "a/1"]);
    assert.equal(p.toString(), "a/", "the caller's prefix is not modified");
  } finally {
    await db.close();
  }
});

/**
 * The state a crash leaves when the memtable was switched to a new WAL whose number was handed
 * out after the manifest last recorded the next file number (a compaction output took the
 * numbers in between): the store holds a log numbered at or above the manifest's next file
 * number. Recovery must not hand that number (or the ones below it) out again.
 */
async function storeWithLogBeyondNextFileNumber(dir: string, gap: number): Promise<void> {
  const db = await openKv(dir);
  await db.put("k", "acknowledged");
  await db.close();
  const vs = new VersionSet(nodeFileSystem, dir);
  vs.recover();
  const logs = fs.readdirSync(dir).filter((f) => f.endsWith(".log"));
  assert.equal(logs.length, 1);
  fs.renameSync(path.join(dir, logs[0]!), path.join(dir, logFileName(vs.nextFileNumber + gap)));
}

test("recovery does not reuse the number of a log it replays (crash mid-recovery lost acknowledged data)", async () => {
  const dir = freshDir();
  // Recovery wrote the replayed memtable to table <next> and started the new WAL as <next + 1>:
  // the very log it was replaying, truncated. A crash before the manifest edit then lost it.
  await storeWithLogBeyondNextFileNumber(dir, 1);
  const crashing = new CrashingFileSystem(nodeFileSystem, {
    target: "manifest",
    afterOps: 1,
    kill: () => {
      throw new SimulatedCrash();
    },
  });
  await assert.rejects(openKv(dir, { fs: crashing }), SimulatedCrash);
  const db = await openKv(dir);
  try {
    assert.equal((await db.get("k"))?.toString(), "acknowledged");
  } finally {
    await db.close();
  }
});

test("recovery does not leave a replayed log behind to be replayed again (store failed to open)", async () => {
  const dir = freshDir();
  // Recovery's table, WAL and manifest took <next>..<next + 2>; the replayed log <next + 2> was
  // not older than the new log number, so it was kept, and replayed again at the next open after
  // newer writes: "sequence goes backwards" (or stale values over newer ones).
  await storeWithLogBeyondNextFileNumber(dir, 2);
  let db = await openKv(dir);
  await db.put("k", "newer");
  await db.close();
  db = await openKv(dir);
  try {
    assert.equal((await db.get("k"))?.toString(), "newer");
  } finally {
    await db.close();
  }
});

test("a crash while a new store is being created leaves a store that opens", async () => {
  // The first manifest was written but CURRENT not yet switched to it: open refused with
  // "CURRENT is missing but store files exist", though the only file was that manifest.
  for (const [target, afterOps] of [
    ["manifest", 2],
    ["current", 1],
    ["current", 3],
  ] as const) {
    const dir = freshDir();
    const crashing = new CrashingFileSystem(nodeFileSystem, {
      target,
      afterOps,
      kill: () => {
        throw new SimulatedCrash();
      },
    });
    await assert.rejects(openKv(dir, { fs: crashing }), SimulatedCrash);
    const db = await openKv(dir);
    try {
      await db.put("k", "v");
      assert.equal((await db.get("k"))?.toString(), "v");
    } finally {
      await db.close();
    }
  }
});

test("a crash while recovering a log with a torn tail leaves a store that opens", async () => {
  // Recovery dropped the torn tail of the last log but left it in the file, then started a new
  // log after it: crashing before the manifest edit retired the old log left a torn record in a
  // log that was no longer the last, which the next open took for corruption ("run repair").
  const dir = freshDir();
  let db = await openKv(dir);
  await db.put("k", "acknowledged");
  await db.close();
  const log = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".log"))
    .sort()
    .pop()!;
  // The first bytes of a record: a header promising 100 bytes, 3 of them written.
  fs.appendFileSync(path.join(dir, log), Buffer.from([1, 2, 3, 4, 100, 0, 1, 9, 9, 9]));
  const crashing = new CrashingFileSystem(nodeFileSystem, {
    target: "manifest",
    afterOps: 1,
    kill: () => {
      throw new SimulatedCrash();
    },
  });
  await assert.rejects(openKv(dir, { fs: crashing }), SimulatedCrash);
  db = await openKv(dir);
  try {
    assert.equal((await db.get("k"))?.toString(), "acknowledged");
  } finally {
    await db.close();
  }
});
