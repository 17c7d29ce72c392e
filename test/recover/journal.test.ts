/**
 * The metadata journal's shipping rules (docs/RECOVERY.md): a put's intent rides in its data's own
 * flush (no extra PUT per small object), its entry follows lazily; an operation that waits makes
 * every earlier entry durable; entries left unshipped by a crash are shipped at the next open;
 * recovery applies unresolved intents and never replays past a gap; a put that reserved an older
 * sequence than the current version of its key is superseded.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { initRepository, openRepository } from "../../src/store/repository.js";
import { recoverRepository, type RecoverReport } from "../../src/store/recover.js";
import { commitVersionRows, versionIdFor } from "../../src/store/store.js";
import { encodeEntry, intentRecord, intentRecordId, journalRecord } from "../../src/store/journal.js";
import { CountingBackend } from "../../src/backend/counting.js";
import { LocalBackend } from "../../src/backend/local.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { Packer } from "../../src/pack/writer.js";
import type { ObjectVersion } from "../../src/meta/types.js";
import { bytes, collect } from "../store/helpers.js";

const PASS = "journal test passphrase";
const KDF = { scrypt: { log2N: 10, r: 8, p: 1 } };
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "journal-child.js");

async function newRepo(): Promise<{ root: string; dir: string; bucket: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-journal-"));
  const dir = path.join(root, "data");
  await initRepository(dir, { passphrase: PASS, keyFile: KDF, chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 }, packTargetSize: 256 * 1024 });
  return { root, dir, bucket: path.join(dir, "bucket") };
}

/** Recovers from a copy of the bucket as it is now (the gateway may still be running). */
async function recoverCopy(bucket: string, root: string, name: string): Promise<{ report: RecoverReport; dir: string }> {
  const copy = path.join(root, `${name}-bucket`);
  fs.cpSync(bucket, copy, { recursive: true });
  const dir = path.join(root, name);
  const report = await recoverRepository(dir, { bucket: copy, passphrase: PASS, readData: true });
  assert.ok(report.fsck.ok, report.fsck.problems.map((p) => `${p.kind}: ${p.message}`).join("\n"));
  return { report, dir };
}

async function md5Of(dir: string, bucket: string, key: string, versionId?: string): Promise<string> {
  const repo = await openRepository(dir, { passphrase: PASS });
  try {
    const body = await collect((await repo.store.getObject(bucket, key, versionId === undefined ? {} : { versionId })).body);
    return createHash("md5").update(body).digest("hex");
  } finally {
    await repo.close();
  }
}

test("a small put's journal costs no extra PUT: its intent rides with its data, its entry with the next pack", async (t) => {
  const runs: Record<string, { sequential: number; concurrent: number; journalOnly: number }> = {};
  for (const journal of [false, true]) {
    const { root, dir } = await newRepo();
    try {
      let counting: CountingBackend | undefined;
      const repo = await openRepository(dir, {
        passphrase: PASS,
        journal,
        commitDelayMs: 5,
        events: false,
        wrapBackend: (tier, b) => (tier === "cloud" ? (counting = new CountingBackend(b)) : b),
      });
      await repo.store.createBucket("bkt");
      counting!.reset();
      for (let i = 0; i < 100; i++) await repo.store.putObject("bkt", `seq/${i}`, [bytes(4096, i)]);
      const sequential = counting!.counters().puts;
      counting!.reset();
      await Promise.all(
        Array.from({ length: 16 }, async (_, c) => {
          for (let i = 0; i < 20; i++) await repo.store.putObject("bkt", `con/${c}/${i}`, [bytes(4096, 1000 + c * 100 + i)]);
        }),
      );
      // Packs that hold no chunk: PUTs the journal made on its own.
      const withChunks = new Set<string>();
      for await (const [, rec] of repo.store.meta.listChunks()) withChunks.add(rec.packId);
      let journalOnly = 0;
      for await (const p of repo.store.meta.listPacks()) if (!withChunks.has(p.id)) journalOnly++;
      await repo.close();
      runs[String(journal)] = { sequential, concurrent: counting!.counters().puts, journalOnly };
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  const off = runs.false!;
  const on = runs.true!;
  t.diagnostic(
    `PUTs without / with the journal: sequential ${off.sequential} / ${on.sequential}, 16 clients ${off.concurrent} / ${on.concurrent} (packs without chunks: ${on.journalOnly})`,
  );
  // One PUT per sequential put either way; the journal adds at most the final flush of lazy entries.
  assert.equal(off.sequential, 100);
  assert.ok(on.sequential <= off.sequential + 2, `sequential: ${on.sequential} PUTs with the journal, ${off.sequential} without`);
  // Under concurrency the number of packs depends on how the 16 clients' requests happen to
  // line up (20-40 for 320 puts in either mode): what the journal must not add is packs of its
  // own in proportion to the puts: the creation of the bucket (its entry is waited for), a lazy
  // flush, and a few packs closed between a flush and the records that were to ride in it
  // (1-5 seen in 16 runs on 2026-11-27, at either of two commits; 1-2 before: the bound of 3 failed
  // about one run in two that day). One journal pack per put would be ~100.
  assert.equal(off.journalOnly, 0);
  assert.ok(on.journalOnly <= 8, `${on.journalOnly} packs hold journal records and no chunk`);
  for (const r of [off, on]) assert.ok(r.concurrent <= 320 / 4, `${r.concurrent} PUTs for 320 concurrent puts: packing failed`);
});

test("acknowledged puts whose entries never shipped are recovered from their intents, version ids and all", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, journalLazyMs: 600_000 });
    const s = repo.store;
    await s.createBucket("plain");
    await s.createBucket("vers", { versioning: "enabled" });
    const acked: Array<{ bucket: string; key: string; versionId: string; md5: string }> = [];
    for (let i = 0; i < 12; i++) {
      const data = bytes(700 + i * 91, 300 + i);
      const b = i % 2 === 0 ? "plain" : "vers";
      const r = await s.putObject(b, `k${i % 3}`, [data], { userMetadata: { i: String(i) } });
      acked.push({ bucket: b, key: `k${i % 3}`, versionId: r.versionId, md5: createHash("md5").update(data).digest("hex") });
    }
    assert.ok(s.journalBacklog() > 0, "entries are waiting for a pack");
    // The gateway is lost now: the bucket holds the data and intents, not (all) the entries.
    const { report, dir: rec } = await recoverCopy(bucket, root, "rec");
    await repo.close();
    assert.ok(report.intentsApplied > 0, JSON.stringify(report));
    const r2 = await openRepository(rec, { passphrase: PASS });
    try {
      // Unversioned: the last put of each key. Versioned: every version, with the id the client got.
      for (const a of acked) {
        if (a.bucket === "vers") {
          const body = await collect((await r2.store.getObject("vers", a.key, { versionId: a.versionId })).body);
          assert.equal(createHash("md5").update(body).digest("hex"), a.md5);
        }
      }
      for (const key of ["k0", "k1", "k2"]) {
        const last = acked.filter((a) => a.bucket === "plain" && a.key === key).at(-1)!;
        const body = await collect((await r2.store.getObject("plain", key)).body);
        assert.equal(createHash("md5").update(body).digest("hex"), last.md5, `plain/${key}`);
        const lastV = acked.filter((a) => a.bucket === "vers" && a.key === key).at(-1)!;
        assert.equal((await r2.store.headObject("vers", key)).versionId, lastV.versionId);
        assert.equal((await r2.store.meta.versionsOfKey("plain", key)).length, 1);
      }
    } finally {
      await r2.close();
    }
    // A clean close leaves lazy entries in their rows; the next open ships them (here: syncJournal).
    const again = await openRepository(dir, { passphrase: PASS });
    await again.store.syncJournal();
    assert.equal(again.store.journalBacklog(), 0);
    await again.close();
    const { report: after } = await recoverCopy(bucket, root, "rec-after-close");
    assert.equal(after.intentsApplied, 0);
    assert.equal(after.lastIndex, after.entriesApplied);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("an operation that waits for the journal makes every earlier entry durable", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, journalLazyMs: 600_000 });
    const s = repo.store;
    await s.createBucket("bkt");
    for (let i = 0; i < 10; i++) await s.putObject("bkt", `k${i}`, [bytes(500 + i, i)]);
    assert.ok(s.journalBacklog() > 0);
    await s.deleteObject("bkt", "k3");
    assert.equal(s.journalBacklog(), 0);
    const last = await s.meta.journalIndex();
    const { report, dir: rec } = await recoverCopy(bucket, root, "rec");
    await repo.close();
    assert.equal(report.intentsApplied, 0);
    assert.equal(report.lastIndex, last, "the restart mark, create-bucket, ten puts, one delete");
    assert.equal(last, 13);
    const r2 = await openRepository(rec, { passphrase: PASS });
    try {
      const listed: string[] = [];
      for (const o of (await r2.store.listObjects("bkt")).objects) listed.push(o.key);
      assert.deepEqual(listed, ["k0", "k1", "k2", "k4", "k5", "k6", "k7", "k8", "k9"]);
    } finally {
      await r2.close();
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a DELETE that finds nothing to delete waits until the changes it saw are durable", async () => {
  const { root, dir, bucket } = await newRepo();
  // The cloud tier's PUTs wait while the gate is shut: journal entries cannot become durable.
  let open: () => void = () => undefined;
  let gate: Promise<void> = Promise.resolve();
  const shut = (): void => {
    gate = new Promise<void>((r) => (open = r));
  };
  const gated = (b: BlobBackend): BlobBackend =>
    new Proxy(b, {
      get(target, prop): unknown {
        if (prop === "put") return async (...args: Parameters<BlobBackend["put"]>) => (await gate, target.put(...args));
        const v: unknown = Reflect.get(target, prop);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  try {
    const repo = await openRepository(dir, { passphrase: PASS, wrapBackend: (tier, b) => (tier === "cloud" ? gated(b) : b) });
    const s = repo.store;
    try {
      await s.createBucket("bkt");
      await s.putObject("bkt", "k", [bytes(3000, 1)]);
      shut();
      let firstDone = false;
      const first = s.deleteObject("bkt", "k").then(() => (firstDone = true));
      // The first DELETE committed locally (the key is gone here) but is not durable, so not acknowledged.
      for (let i = 0; i < 100; i++) {
        if (await s.headObject("bkt", "k").then(() => false, () => true)) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      await assert.rejects(s.headObject("bkt", "k"));
      let secondDone = false;
      const second = s.deleteObject("bkt", "k").then(() => (secondDone = true));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(firstDone, false);
      assert.equal(secondDone, false, "the second DELETE (a no-op here) is not acknowledged while the first one's entry is not durable");
      open();
      await Promise.all([first, second]);
      const { dir: rec } = await recoverCopy(bucket, root, "rec");
      const r2 = await openRepository(rec, { passphrase: PASS });
      try {
        await assert.rejects(r2.store.headObject("bkt", "k"), "recovered from the bucket, the acknowledged deletes hold");
      } finally {
        await r2.close();
      }
    } finally {
      open();
      await repo.close();
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("entries left unshipped by a SIGKILL are shipped when the repository next opens", { timeout: 60_000 }, async () => {
  for (const versioning of ["unversioned", "enabled"]) {
    const { root, dir, bucket } = await newRepo();
    try {
      const child = spawn(process.execPath, [CHILD, dir, PASS, "20", versioning], { stdio: ["ignore", "pipe", "inherit"] });
      const acked: Array<{ key: string; versionId: string; md5: string }> = [];
      let out = "";
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("done\n")) resolve();
        });
        child.on("exit", (code) => reject(new Error(`child exited early with ${code}`)));
      });
      child.kill("SIGKILL");
      await new Promise((r) => child.once("close", r));
      for (const line of out.split("\n")) {
        const m = /^acked (\S+) (\S+) (\S+)$/.exec(line);
        if (m !== null) acked.push({ key: m[1]!, versionId: m[2]!, md5: m[3]! });
      }
      assert.equal(acked.length, 20);
      // The machine is lost right now: intents carry the puts.
      const { report: lost, dir: rec1 } = await recoverCopy(bucket, root, "rec-lost");
      assert.ok(lost.intentsApplied > 0);
      // The machine survives and the gateway restarts: it ships what it had committed (with its
      // next data flush, after journalLazyMs, or when an operation waits; here: syncJournal).
      const repo = await openRepository(dir, { passphrase: PASS });
      await repo.store.syncJournal();
      const last = await repo.store.meta.journalIndex();
      await repo.close();
      const { report: restarted, dir: rec2 } = await recoverCopy(bucket, root, "rec-restarted");
      assert.equal(restarted.intentsApplied, 0, "every entry shipped after the restart");
      assert.equal(restarted.lastIndex, last);
      assert.equal(last, 23, "two restart marks, create-bucket, 20 puts");
      for (const rec of [rec1, rec2]) {
        for (const key of new Set(acked.map((a) => a.key))) {
          const last = acked.filter((a) => a.key === key).at(-1)!;
          assert.equal(await md5Of(rec, "bkt", key), last.md5, `${versioning} ${key}`);
          if (versioning === "enabled") for (const a of acked.filter((x) => x.key === key)) assert.equal(await md5Of(rec, "bkt", key, a.versionId), a.md5);
        }
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
});

test("recovery never replays past a missing journal entry, and says so", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS });
    await repo.store.createBucket("bkt");
    await repo.store.putObject("bkt", "x", [bytes(1000, 1)]);
    await repo.store.syncJournal();
    const last = await repo.store.meta.journalIndex();
    const x = (await repo.store.meta.getCurrent("bkt", "x"))!;
    const keys = repo.keys;
    await repo.close();
    // An entry two past the end (one index is missing) that would delete the bucket's object.
    const backend = await LocalBackend.open(bucket);
    const packer = new Packer(backend, keys, async () => undefined);
    const plain = encodeEntry({ index: last + 2, time: Date.now(), ops: [{ op: "version-delete", bucket: "bkt", key: "x", sequence: x.sequence }] });
    await packer.add(journalRecord(last + 2, plain));
    await packer.close();
    await backend.close();
    const { report, dir: rec } = await recoverCopy(bucket, root, "rec");
    assert.equal(report.lastIndex, last);
    assert.ok(report.warnings.some((w) => w.includes(`journal entry ${last + 1} is missing`)), report.warnings.join("\n"));
    assert.equal(await md5Of(rec, "bkt", "x"), createHash("md5").update(bytes(1000, 1)).digest("hex"));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a put that reserved an older sequence than its key's current version is superseded (unversioned), kept as noncurrent (versioned)", async () => {
  const { root, dir } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, journal: false });
    const s = repo.store;
    await s.createBucket("uuu");
    await s.createBucket("vvv", { versioning: "enabled" });
    await s.putObject("uuu", "k", [bytes(100, 1)]);
    await s.putObject("vvv", "k", [bytes(100, 1)]);
    const cur = (await s.meta.getCurrent("uuu", "k"))!;
    const older = (b: string, versionId: string): ObjectVersion => ({ ...cur, bucket: b, versionId, sequence: 0, etag: "00" });
    await s.meta.transaction(async (tx) => {
      assert.equal(await commitVersionRows(tx, (await tx.getBucket("uuu"))!, older("uuu", "null"), false), false);
      assert.equal(await commitVersionRows(tx, (await tx.getBucket("vvv"))!, older("vvv", "old"), false), true);
    });
    assert.equal((await s.meta.getCurrent("uuu", "k"))!.sequence, cur.sequence);
    assert.equal((await s.meta.versionsOfKey("uuu", "k")).length, 1);
    const vs = await s.meta.versionsOfKey("vvv", "k");
    assert.equal(vs.length, 2);
    assert.notEqual((await s.meta.getCurrent("vvv", "k"))!.versionId, "old");
    await repo.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a second recovery reaches the same state: the first one's mark resolves its intents and voids the lost gateway's entries after a gap", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, journalLazyMs: 600_000 });
    await repo.store.createBucket("bkt");
    await repo.store.putObject("bkt", "a", [bytes(900, 1)]);
    await repo.store.putObject("bkt", "b", [bytes(900, 2)]);
    const keys = repo.keys;
    // The machine dies now: entries of both puts are not in the bucket; their intents are.
    const lost = path.join(root, "lost-bucket");
    fs.cpSync(bucket, lost, { recursive: true });
    await repo.close();
    // A stale entry after a gap, as a lost gateway may leave: it would delete "b".
    const backend = await LocalBackend.open(lost);
    const packer = new Packer(backend, keys, async () => undefined);
    await packer.add(journalRecord(9, encodeEntry({ index: 9, time: Date.now(), ops: [{ op: "bucket-delete", name: "bkt" }] })));
    await packer.close();
    await backend.close();

    const first = path.join(root, "first");
    const r1 = await recoverRepository(first, { bucket: lost, passphrase: PASS });
    assert.ok(r1.fsck.ok);
    assert.ok(r1.intentsApplied >= 1, "b at least (a's entry may ride with b's data)");
    // The recovered gateway works on: its first open ships the recovery mark; it deletes "a".
    const g2 = await openRepository(first, { passphrase: PASS });
    await g2.store.deleteObject("bkt", "a");
    await g2.store.putObject("bkt", "c", [bytes(900, 3)]);
    await g2.store.syncJournal();
    await g2.close();

    const second = path.join(root, "second");
    const r2 = await recoverRepository(second, { bucket: lost, passphrase: PASS, readData: true });
    assert.ok(r2.fsck.ok, r2.fsck.problems.map((p) => p.message).join("\n"));
    assert.equal(r2.intentsApplied, 0, "the mark resolved the intents the first recovery judged");
    const g3 = await openRepository(second, { passphrase: PASS });
    try {
      const listed = (await g3.store.listObjects("bkt")).objects.map((o) => o.key);
      assert.deepEqual(listed, ["b", "c"]);
    } finally {
      await g3.close();
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a restart voids the intents of puts that never committed: an acknowledged delete after it is not undone by recovery", async () => {
  const { root, dir, bucket } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS });
    await repo.store.createBucket("bkt");
    await repo.store.putObject("bkt", "k", [bytes(1500, 5)]);
    await repo.store.syncJournal();
    const cur = (await repo.store.meta.getCurrent("bkt", "k"))!;
    // A put in flight when the gateway died: its sequence reserved (never persisted), its intent
    // and data in the bucket, its transaction never run.
    const sequence = repo.store.meta.reserveSequence();
    const intent = { id: intentRecordId(sequence).toString("hex"), version: { ...cur, sequence, versionId: versionIdFor("enabled", sequence), etag: "0123456789abcdef0123456789abcdef" } };
    const keys = repo.keys;
    await repo.close();
    const backend = await LocalBackend.open(bucket);
    const packer = new Packer(backend, keys, async () => undefined);
    await packer.add(intentRecord(intent));
    await packer.close();
    await backend.close();
    // The gateway restarts; a client deletes k and is acknowledged; then the machine is lost.
    const again = await openRepository(dir, { passphrase: PASS });
    await again.store.syncJournal();
    assert.ok(again.store.meta.reserveSequence() > sequence + 1000, "sequences reserved by the last run are never handed out again");
    await again.store.deleteObject("bkt", "k");
    await again.close();
    const { report, dir: rec } = await recoverCopy(bucket, root, "rec");
    assert.equal(report.intentsApplied, 0);
    const r = await openRepository(rec, { passphrase: PASS });
    try {
      assert.deepEqual((await r.store.listObjects("bkt")).objects.map((o) => o.key), []);
    } finally {
      await r.close();
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
