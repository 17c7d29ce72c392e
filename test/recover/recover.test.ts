/**
 * Recovery from the bucket alone (docs/RECOVERY.md): a repository is used through the object store
 * (buckets with versioning and durability settings, puts, overwrites, deletes, delete markers,
 * copies, snapshots, multipart uploads completed, aborted and left open, tags), gc runs, and then a
 * new data directory is rebuilt from the bucket directory and the passphrase. Every bucket, key,
 * version (ids, sizes, etags, content types, metadata, tags, headers) and byte must match; fsck
 * --read-data must be clean. A second test kills a writing child process with SIGKILL, deletes
 * its data directory except the bucket, recovers, and checks every acknowledged operation.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { initRepository, openRepository, type Repository } from "../../src/store/repository.js";
import { recoverRepository } from "../../src/store/recover.js";
import { collectGarbage } from "../../src/store/gc.js";
import { fsck } from "../../src/store/fsck.js";
import type { ObjectStore } from "../../src/store/store.js";
import { bytes, collect } from "../store/helpers.js";
import { snapshotOf } from "./helpers.js";
import { CreateBucketCommand } from "@aws-sdk/client-s3";
import { S3Backend } from "../../src/backend/s3.js";
import { S3TestServer, findS3Servers, INSTALL_HINT } from "../backend/s3-server.js";

const PASS = "recover test passphrase";
const KDF = { scrypt: { log2N: 10, r: 8, p: 1 } };
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "crash-child.js");

async function newRepo(): Promise<{ root: string; dir: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-recover-"));
  const dir = path.join(root, "data");
  await initRepository(dir, { passphrase: PASS, keyFile: KDF, chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 }, packTargetSize: 64 * 1024 });
  return { root, dir };
}

async function assertFsckClean(store: ObjectStore): Promise<void> {
  const r = await fsck(store, { readData: true });
  assert.ok(r.ok, r.problems.map((p) => `${p.kind}: ${p.message}`).join("\n"));
}

async function recoverFrom(bucketDir: string, root: string, name: string): Promise<{ repo: Repository; ms: number }> {
  const dir = path.join(root, name);
  const r = await recoverRepository(dir, { bucket: bucketDir, passphrase: PASS, readData: true });
  assert.ok(r.fsck.ok, r.fsck.problems.map((p) => `${p.kind}: ${p.message}`).join("\n"));
  assert.equal(r.rebuild.missingChunks, 0);
  return { repo: await openRepository(dir, { passphrase: PASS, journal: true }), ms: r.ms };
}

test("recover rebuilds every bucket, version, upload and byte from the bucket alone", async () => {
  const { root, dir } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, minPartSize: 1, journal: true });
    const s = repo.store;
    await s.createBucket("plain");
    await s.createBucket("vers", { versioning: "enabled" });
    await s.createBucket("gone");
    await s.createBucket("later");
    await s.setVersioning("later", "enabled");
    await s.setVersioning("later", "suspended");
    await s.deleteBucket("gone");
    const puts: Array<Promise<unknown>> = [];
    for (let i = 0; i < 40; i++) {
      puts.push(
        s.putObject(i % 2 === 0 ? "plain" : "vers", `k${i % 10}`, [bytes(500 + i * 300, i)], {
          contentType: `type/${i}`,
          userMetadata: { n: String(i) },
          headers: { "cache-control": `max-age=${i}` },
          ...(i % 3 === 0 ? { tags: { t: String(i) } } : {}),
        }),
      );
    }
    await Promise.all(puts);
    await s.putObject("plain", "big", [bytes(200_000, 99)]);
    await s.deleteObject("plain", "k0");
    await s.deleteObject("vers", "k1"); // delete marker
    const versions = await s.meta.versionsOfKey("vers", "k3");
    await s.deleteObject("vers", "k3", { versionId: versions[versions.length - 1]!.versionId });
    await s.copyObject("plain", "big", "vers", "copied", { metadataDirective: "REPLACE", contentType: "x/y", userMetadata: { c: "1" } });
    await s.putObjectTagging("vers", "copied", { tagged: "yes" });
    await s.snapshot("plain", "", "snap", "s/");
    const up = await s.createMultipartUpload("vers", "multi", { contentType: "m/p", userMetadata: { m: "1" } });
    const p1 = await s.uploadPart("vers", up.uploadId, 1, [bytes(9000, 5)]);
    const p2 = await s.uploadPart("vers", up.uploadId, 2, [bytes(3000, 6)]);
    await s.completeMultipartUpload("vers", up.uploadId, [
      { partNumber: 1, etag: p1.etag },
      { partNumber: 2, etag: p2.etag },
    ]);
    const aborted = await s.createMultipartUpload("plain", "ab");
    await s.uploadPart("plain", aborted.uploadId, 1, [bytes(5000, 7)]);
    await s.abortMultipartUpload("plain", aborted.uploadId);
    const open = await s.createMultipartUpload("plain", "open");
    await s.uploadPart("plain", open.uploadId, 1, [bytes(7000, 8)]);
    for (let i = 0; i < 10; i++) await s.putObject("plain", `over`, [bytes(100 + i, 200 + i)]);
    await s.deleteObject("plain", "k2");
    // gc (grace 0) recycles packs: their journal records must travel on.
    const gc = await collectGarbage(s, { graceMs: 0, minLiveFraction: 0.9 });
    assert.ok(gc.packsRecycled > 0);
    assert.ok(gc.journalRecordsCarried > 0);
    await assertFsckClean(s);
    const before = await snapshotOf(s);
    await repo.close();

    // Only the bucket survives.
    const bucketDir = path.join(root, "bucket-only");
    fs.renameSync(path.join(dir, "bucket"), bucketDir);
    fs.rmSync(dir, { recursive: true, force: true });
    const { repo: rec } = await recoverFrom(bucketDir, root, "recovered");
    try {
      assert.deepEqual(await snapshotOf(rec.store), before);
      // The recovered repository works: writes, then gc, then fsck.
      await rec.store.putObject("plain", "after", [bytes(3000, 1234)]);
      await rec.store.deleteObject("vers", "copied");
      await collectGarbage(rec.store, { graceMs: 0 });
      await assertFsckClean(rec.store);
      const again = await snapshotOf(rec.store);
      await rec.close();
      // And recovering again (from what the recovered repository wrote) gives the same state.
      const { repo: rec2 } = await recoverFrom(bucketDir, root, "recovered-2");
      assert.deepEqual(await snapshotOf(rec2.store), again);
      await rec2.close();
    } finally {
      await rec.close().catch(() => undefined);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("recover resumes: a rerun after a partial replay gives the same repository", async () => {
  const { root, dir } = await newRepo();
  try {
    const repo = await openRepository(dir, { passphrase: PASS, journal: true });
    await repo.store.createBucket("bkt", { versioning: "enabled" });
    for (let i = 0; i < 30; i++) await repo.store.putObject("bkt", `k${i % 7}`, [bytes(100 + i, i)]);
    const before = await snapshotOf(repo.store);
    await repo.close();
    const target = path.join(root, "rec");
    // Simulate a run that stopped after its first batch: the state file names a sequence part-way.
    let stopped = false;
    await assert.rejects(
      recoverRepository(target, {
        bucket: path.join(dir, "bucket"),
        passphrase: PASS,
        progress: (phase, done) => {
          if (phase === "chunks" && done === 0 && !stopped) {
            stopped = true;
            throw new Error("interrupted");
          }
        },
      }),
      /interrupted/,
    );
    assert.ok(fs.existsSync(path.join(target, "recover-state.json")));
    assert.ok(!fs.existsSync(path.join(target, "stowage.json")));
    const r = await recoverRepository(target, { bucket: path.join(dir, "bucket"), passphrase: PASS, readData: true });
    assert.equal(r.resumed, true);
    assert.equal(r.entriesApplied, 0);
    assert.ok(r.fsck.ok);
    const rec = await openRepository(target, { passphrase: PASS, journal: true });
    assert.deepEqual(await snapshotOf(rec.store), before);
    await rec.close();
    await assert.rejects(recoverRepository(target, { bucket: path.join(dir, "bucket"), passphrase: PASS }), (e: Error & { code?: string }) => e.code === "STOWAGE_REPO_EXISTS");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

interface Ack {
  op: "put" | "del";
  key: string;
  md5?: string;
  /** Ack order. */
  n: number;
}

test("SIGKILL during concurrent writes, data directory lost: recover keeps every acknowledged operation", { timeout: 180_000 }, async () => {
  const rounds = Number(process.env.STOWAGE_RECOVER_ROUNDS ?? "3");
  for (let round = 0; round < rounds; round++) {
    const { root, dir } = await newRepo();
    try {
      const child = spawn(process.execPath, [CHILD, dir, PASS, String(round)], { stdio: ["ignore", "pipe", "pipe"] });
      let outText = "";
      let errText = "";
      child.stdout.on("data", (d: Buffer) => (outText += d.toString("utf8")));
      child.stderr.on("data", (d: Buffer) => (errText += d.toString("utf8")));
      // Wait until writing started, then kill at a random moment.
      const t0 = Date.now();
      while (!outText.includes("ready") && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
      assert.ok(outText.includes("ready"), `child did not start: ${errText}`);
      await new Promise((r) => setTimeout(r, 200 + Math.floor(Math.random() * 1500)));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const acks: Ack[] = [];
      const inflight = new Set<string>();
      for (const line of outText.split("\n")) {
        const m = /^(begin|ack) (put|del) (\S+)(?: (\S+))?$/.exec(line);
        if (m === null) continue;
        if (m[1] === "begin") inflight.add(m[3]!);
        else {
          acks.push({ op: m[2] as "put" | "del", key: m[3]!, ...(m[4] === undefined ? {} : { md5: m[4] }), n: acks.length });
        }
      }
      assert.ok(acks.length > 0, "nothing was acknowledged before the kill");
      // The last acknowledged operation of each key (one client per key: ops of a key are sequential).
      const last = new Map<string, Ack>();
      for (const a of acks) last.set(a.key, a);
      const begun = new Map<string, number>();
      for (const line of outText.split("\n")) {
        const m = /^begin (put|del) (\S+)/.exec(line);
        if (m !== null) begun.set(m[2]!, (begun.get(m[2]!) ?? 0) + 1);
      }
      const acked = new Map<string, number>();
      for (const a of acks) acked.set(a.key, (acked.get(a.key) ?? 0) + 1);

      const bucketDir = path.join(root, "bucket-only");
      fs.renameSync(path.join(dir, "bucket"), bucketDir);
      fs.rmSync(dir, { recursive: true, force: true });
      const { repo } = await recoverFrom(bucketDir, root, "recovered");
      try {
        for (const [key, a] of last) {
          // A later operation on the key was in flight at the kill: old or new state may be there.
          if ((begun.get(key) ?? 0) > (acked.get(key) ?? 0)) continue;
          const cur = await repo.store.meta.getCurrent("bkt", key);
          if (a.op === "del") {
            assert.ok(cur === undefined || cur.deleteMarker, `${key} was deleted (ack) but reappeared`);
          } else {
            assert.ok(cur !== undefined && !cur.deleteMarker, `${key}: acknowledged put is missing`);
            const body = await collect((await repo.store.getObject("bkt", key)).body);
            assert.equal(createHash("md5").update(body).digest("hex"), a.md5, `${key}: wrong content`);
            assert.equal(cur.contentType, "app/" + key);
            assert.deepEqual(cur.userMetadata, { md5: a.md5 });
          }
        }
      } finally {
        await repo.close();
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
});

// The same against a real S3-compatible server (moto): the cloud tier is s3://, the data directory
// is lost entirely, and recover reads everything back through the S3 API.
const haveMoto = findS3Servers().includes("moto");
if (!haveMoto && process.env.CI !== undefined && process.env.CI !== "") {
  test("moto is installed (CI)", () => assert.fail(`CI is set but moto is not installed: run ${INSTALL_HINT}`));
}

test("recover from an s3:// bucket on a real S3-compatible server (moto)", { skip: haveMoto ? false : `moto is not installed: run ${INSTALL_HINT}` }, async () => {
  const srv = await S3TestServer.start("moto");
  const saved = { access: process.env.STOWAGE_S3_ACCESS_KEY, secret: process.env.STOWAGE_S3_SECRET_KEY };
  process.env.STOWAGE_S3_ACCESS_KEY = "test";
  process.env.STOWAGE_S3_SECRET_KEY = "test";
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-recover-s3-"));
  try {
    const bucketName = `stowage-rec-${process.pid}`;
    const admin = new S3Backend({ bucket: bucketName, endpoint: srv.endpoint, forcePathStyle: true, credentials: { accessKeyId: "test", secretAccessKey: "test" } });
    await admin.client.send(new CreateBucketCommand({ Bucket: bucketName }));
    await admin.close();
    const url = `s3://${bucketName}/repo`;
    const s3 = { endpoint: srv.endpoint, forcePathStyle: true };
    const dir = path.join(root, "data");
    await initRepository(dir, { passphrase: PASS, keyFile: KDF, chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 }, packTargetSize: 64 * 1024, bucket: url, s3 });
    const repo = await openRepository(dir, { passphrase: PASS, journal: true });
    const s = repo.store;
    await s.createBucket("media", { versioning: "enabled" });
    await Promise.all(Array.from({ length: 24 }, (_, i) => s.putObject("media", `clip${i % 8}`, [bytes(3000 + i * 500, i)], { contentType: "video/mp4", userMetadata: { take: String(i) } })));
    await s.deleteObject("media", "clip1");
    await s.copyObject("media", "clip2", "media", "clip2-copy");
    const before = await snapshotOf(s);
    await repo.close();
    assert.equal(fs.existsSync(path.join(dir, "bucket")), false, "nothing was written to a local bucket directory");
    fs.rmSync(dir, { recursive: true, force: true });

    const r = await recoverRepository(path.join(root, "recovered"), { bucket: url, s3, passphrase: PASS, readData: true });
    assert.ok(r.fsck.ok, r.fsck.problems.map((p) => `${p.kind}: ${p.message}`).join("\n"));
    assert.equal(r.rebuild.missingChunks, 0);
    const rec = await openRepository(path.join(root, "recovered"), { passphrase: PASS, journal: true });
    try {
      assert.deepEqual(await snapshotOf(rec.store), before);
      assert.equal(rec.config.bucket, url, "the recovered repository keeps using the S3 bucket");
    } finally {
      await rec.close();
    }
  } finally {
    if (saved.access === undefined) delete process.env.STOWAGE_S3_ACCESS_KEY;
    else process.env.STOWAGE_S3_ACCESS_KEY = saved.access;
    if (saved.secret === undefined) delete process.env.STOWAGE_S3_SECRET_KEY;
    else process.env.STOWAGE_S3_SECRET_KEY = saved.secret;
    await srv.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
