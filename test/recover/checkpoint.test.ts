/**
 * Metadata checkpoints (docs/RECOVERY.md): recovery starts from the newest readable checkpoint and
 * replays only the journal after it; gc drops the journal records the oldest kept checkpoint covers
 * and deletes older checkpoints; a damaged newest checkpoint falls back to an older one; with no
 * readable checkpoint covering dropped history, recovery fails with a clear error instead of a
 * partial namespace; recovery to a point in time.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { initRepository, openRepository } from "../../src/store/repository.js";
import { recoverRepository } from "../../src/store/recover.js";
import { collectGarbage } from "../../src/store/gc.js";
import { CHECKPOINT_PREFIX } from "../../src/store/checkpoint.js";
import { bytes, collect } from "../store/helpers.js";
import { snapshotOf } from "./helpers.js";

const PASS = "checkpoint test passphrase";
const KDF = { scrypt: { log2N: 10, r: 8, p: 1 } };

async function newRepo(): Promise<{ root: string; dir: string; bucket: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-checkpoint-"));
  const dir = path.join(root, "data");
  await initRepository(dir, { passphrase: PASS, keyFile: KDF, chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 }, packTargetSize: 256 * 1024 });
  return { root, dir, bucket: path.join(dir, "bucket") };
}

async function recoveredState(dir: string): Promise<unknown> {
  const repo = await openRepository(dir, { passphrase: PASS });
  try {
    return await snapshotOf(repo.store);
  } finally {
    await repo.close();
  }
}

/** Flips one byte in the middle of a blob. */
function damage(file: string): void {
  const b = fs.readFileSync(file);
  b[Math.floor(b.length / 2)] ^= 0xff;
  fs.writeFileSync(file, b);
}

test("recovery starts from the newest checkpoint, falls back to an older one, and refuses a partial namespace; gc drops what checkpoints cover", { timeout: 120_000 }, async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, minPartSize: 1 });
    const s = repo.store;
    await s.createBucket("plain");
    await s.createBucket("vers", { versioning: "enabled" });
    const round = async (r: number): Promise<void> => {
      for (let i = 0; i < 12; i++) await s.putObject(i % 2 === 0 ? "plain" : "vers", `k${i % 5}`, [bytes(600 + i * 50 + r, r * 100 + i)], { userMetadata: { r: String(r) } });
      await s.deleteObject("plain", `k${r % 5}`);
      await s.deleteObject("vers", `k${(r + 1) % 5}`);
      await s.copyObject("vers", "k0", "plain", `copy${r}`);
    };
    await round(1);
    const up = await s.createMultipartUpload("vers", "open-upload");
    await s.uploadPart("vers", up.uploadId, 1, [bytes(3000, 77)]);
    const c1 = await s.checkpoint();
    await round(2);
    const c2 = await s.checkpoint();
    await round(3);
    await s.syncJournal();
    const before = await snapshotOf(s);
    // gc merges the small packs: journal records the older checkpoint covers are dropped.
    const gc = await collectGarbage(s, { graceMs: 0 });
    assert.ok(gc.journalRecordsDropped > 0, JSON.stringify(gc));
    assert.equal(gc.checkpointsDeleted, 0, "two checkpoints are kept");
    assert.deepEqual(await snapshotOf(s), before);
    await repo.close();

    const copy = (name: string): string => {
      const to = path.join(root, name);
      fs.cpSync(bucket, to, { recursive: true });
      return to;
    };
    // From the newest checkpoint: only the journal after it is replayed.
    const b1 = copy("b1");
    const r1 = await recoverRepository(path.join(root, "r1"), { bucket: b1, passphrase: PASS, readData: true });
    assert.ok(r1.fsck.ok, r1.fsck.problems.map((p) => p.message).join("\n"));
    assert.equal(r1.checkpoint, c2.key);
    assert.ok(r1.entriesApplied < r1.lastIndex - c1.index);
    assert.deepEqual(await recoveredState(path.join(root, "r1")), before);

    // The newest checkpoint damaged: the older one and the journal after it.
    const b2 = copy("b2");
    damage(path.join(b2, c2.key));
    const r2 = await recoverRepository(path.join(root, "r2"), { bucket: b2, passphrase: PASS, readData: true });
    assert.equal(r2.checkpoint, c1.key);
    assert.ok(r2.warnings.some((w) => w.includes(c2.key) && w.includes("unreadable")), r2.warnings.join("\n"));
    assert.deepEqual(await recoveredState(path.join(root, "r2")), before);

    // Both damaged, and the history they covered dropped by gc: a clear error, no repository.
    const b3 = copy("b3");
    damage(path.join(b3, c1.key));
    damage(path.join(b3, c2.key));
    await assert.rejects(
      recoverRepository(path.join(root, "r3"), { bucket: b3, passphrase: PASS }),
      (e: Error & { code?: string }) => e.code === "STOWAGE_INTEGRITY" && /journal entries 1\.\.[0-9]+ are not in the bucket/.test(e.message) && e.message.includes(c1.key),
    );
    assert.ok(!fs.existsSync(path.join(root, "r3", "stowage.json")));

    // A third checkpoint: gc deletes the oldest.
    const again = await openRepository(dir, { passphrase: PASS });
    await again.store.putObject("plain", "later", [bytes(1000, 9)]);
    await again.store.checkpoint();
    const gc2 = await collectGarbage(again.store, { graceMs: 0 });
    assert.equal(gc2.checkpointsDeleted, 1);
    await again.close();
    const left = fs.readdirSync(path.join(bucket, CHECKPOINT_PREFIX));
    assert.equal(left.length, 2);
    assert.ok(!left.some((f) => c1.key.endsWith(f)));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("recovery to a point in time: the newest checkpoint not newer, and the journal up to then", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    let clock = 1_000_000;
    const repo = await openRepository(dir, { passphrase: PASS, now: () => clock });
    const s = repo.store;
    await s.createBucket("bkt");
    await s.putObject("bkt", "a", [bytes(700, 1)]);
    clock = 2_000_000;
    await s.checkpoint();
    await s.putObject("bkt", "a", [bytes(700, 2)]);
    await s.putObject("bkt", "b", [bytes(700, 3)]);
    clock = 3_000_000;
    await s.deleteObject("bkt", "a");
    await s.checkpoint();
    clock = 4_000_000;
    await s.putObject("bkt", "c", [bytes(700, 4)]);
    await s.syncJournal();
    await repo.close();
    const md5 = (seed: number): string => createHash("md5").update(bytes(700, seed)).digest("hex");
    const contents = async (to: number): Promise<Record<string, string>> => {
      const target = path.join(root, `at-${to}`);
      const r = await recoverRepository(target, { bucket, passphrase: PASS, toTime: to, readData: true });
      assert.ok(r.fsck.ok);
      const rec = await openRepository(target, { passphrase: PASS });
      try {
        const out: Record<string, string> = {};
        for (const o of (await rec.store.listObjects("bkt")).objects) out[o.key] = createHash("md5").update(await collect((await rec.store.getObject("bkt", o.key)).body)).digest("hex");
        return out;
      } finally {
        await rec.close();
      }
    };
    assert.deepEqual(await contents(1_500_000), { a: md5(1) });
    assert.deepEqual(await contents(2_500_000), { a: md5(2), b: md5(3) });
    assert.deepEqual(await contents(3_500_000), { b: md5(3) });
    assert.deepEqual(await contents(Date.now()), { b: md5(3), c: md5(4) });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("serve's services write checkpoints on their own, and none while nothing changes", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, services: true, checkpointIntervalMs: 50 });
    const errors: unknown[] = [];
    repo.background.onError = (err) => errors.push(err);
    const dirOf = path.join(bucket, CHECKPOINT_PREFIX);
    const count = (): number => (fs.existsSync(dirOf) ? fs.readdirSync(dirOf).length : 0);
    const waitFor = async (n: number): Promise<void> => {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && count() < n) await new Promise((r) => setTimeout(r, 25));
      assert.equal(count(), n);
    };
    repo.startServices();
    await repo.store.createBucket("bkt");
    await repo.store.putObject("bkt", "a", [bytes(500, 1)]);
    await waitFor(1);
    // (The first may have been taken between the bucket and the put: then a second follows.)
    await new Promise((r) => setTimeout(r, 300));
    const n = count();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(count(), n, "no new journal entries: no new checkpoint");
    await repo.store.deleteObject("bkt", "a");
    await waitFor(n + 1);
    assert.deepEqual(errors, []);
    await repo.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
