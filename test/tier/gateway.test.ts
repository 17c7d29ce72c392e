/**
 * The tiers end to end, through the S3 API: an AWS SDK v3 client against an S3Server on a
 * Repository opened with services (outbox relay and tier workers running), its tiers configured
 * in stowage.json. Faults are injected with FaultyBackend around the cloud or local tier
 * (OpenOptions.wrapBackend); the tiers' directories are inspected on disk.
 *
 * The last two groups need external services: moto's S3 server (scripts/services/s3-server.sh
 * install) for a cloud tier on s3://, and the Kafka broker (scripts/services/kafka.sh install) as
 * the event log. Without them those tests are skipped with a message, unless CI is set: then they fail.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Admin } from "@platformatic/kafka";
import { KafkaEventLog } from "../../src/events/kafka.js";
import { FaultyBackend } from "../../src/backend/faulty.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import type { InitOptions } from "../../src/store/repository.js";
import type { TiersConfig } from "../../src/store/tiering.js";
import { computeStats } from "../../src/store/stats.js";
import { startEndpoint, type Endpoint } from "../server/harness.js";
import { REPO_ROOT, S3TestServer, findS3Servers, INSTALL_HINT } from "../backend/s3-server.js";

const KiB = 1024;
/** The local tier's capacity: a few objects of the tests fit; case 5 writes more than the high watermark. */
const CAPACITY = 1024 * KiB;
const HIGH = 0.9;
const LOW = 0.5;
const LOCAL_TIER: TiersConfig = { local: { path: "local", capacityBytes: CAPACITY, highWatermark: HIGH, lowWatermark: LOW } };
/** Quick workers: short polls and retries. */
const FAST = { pollWaitMs: 20, retryBaseMs: 10, retryMaxMs: 200 };

const CI = process.env.CI !== undefined && process.env.CI !== "";

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

interface LogEntry {
  level: number;
  msg?: string;
  status?: number;
  method?: string;
  key?: string;
}

interface TierEndpoint {
  ep: Endpoint;
  c: S3Client;
  /** The FaultyBackend around the cloud tier, and around the local tier (when there is one). */
  cloud: FaultyBackend;
  local: FaultyBackend | undefined;
  /** The server's log entries (level info and above). */
  logs: LogEntry[];
  /** What the repository's background work reported (retries during faults are expected). */
  background: string[];
  cloudDir: string;
  localDir: string;
}

const endpoints = new Set<Endpoint>();
after(async () => {
  for (const ep of endpoints) await ep.stop().catch(() => undefined);
});

async function tierEndpoint(init: Omit<InitOptions, "keys" | "passphrase" | "keyFile"> = { tiers: LOCAL_TIER }): Promise<TierEndpoint> {
  const logs: LogEntry[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim() !== "") logs.push(JSON.parse(line) as LogEntry);
      done();
    },
  });
  const background: string[] = [];
  let cloud: FaultyBackend | undefined;
  let local: FaultyBackend | undefined;
  const ep = await startEndpoint({
    init,
    open: {
      services: true,
      wrapBackend: (tier, b): BlobBackend => {
        if (tier === "cloud") return (cloud = new FaultyBackend(b));
        if (tier === "local") return (local = new FaultyBackend(b));
        return b;
      },
      tierOptions: FAST,
      // No decompressed-chunk cache: every GET reads its packs through the tiers.
      cacheBytes: 0,
      onBackgroundError: (err, context) => background.push(`${context}: ${String(err)}`),
    },
    logger: pino({ level: "info" }, sink),
  });
  endpoints.add(ep);
  assert.ok(cloud !== undefined, "wrapBackend saw the cloud tier");
  return { ep, c: ep.client(), cloud, local, logs, background, cloudDir: path.join(ep.dir, "bucket"), localDir: path.join(ep.dir, "local") };
}

async function stop(t: TierEndpoint): Promise<void> {
  endpoints.delete(t.ep);
  await t.ep.stop();
}

/** The files under `root` (blob keys, `/`-separated) with their sizes; the temporaries' directory skipped. */
function blobFiles(root: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (dir: string, prefix: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.includes("~")) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p, `${prefix}${e.name}/`);
      else out.set(`${prefix}${e.name}`, fs.statSync(p).size);
    }
  };
  walk(root, "");
  return out;
}

function packFiles(root: string): Map<string, number> {
  return new Map([...blobFiles(root)].filter(([k]) => k.startsWith("packs/")));
}

function fileOf(root: string, key: string): Buffer {
  return fs.readFileSync(path.join(root, ...key.split("/")));
}

/** The pack blob keys holding the object. */
async function packsOfObject(ep: Endpoint, bucket: string, key: string): Promise<string[]> {
  return [...(await ep.repo.store.packsOf(bucket, key))].sort();
}

async function put(c: S3Client, bucket: string, key: string, body: Buffer): Promise<void> {
  await c.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

async function get(c: S3Client, bucket: string, key: string): Promise<Buffer> {
  const r = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  assert.ok(r.Body !== undefined);
  return Buffer.from(await r.Body.transformToByteArray());
}

async function listKeys(c: S3Client, bucket: string): Promise<string[]> {
  const r = await c.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (r.Contents ?? []).map((o) => o.Key ?? "").sort();
}

/** Asserts `p` rejects with the S3 error `code` and HTTP `status`, as the SDK surfaces it. */
async function s3Error(p: Promise<unknown>, code: string, status: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    assert.equal(e.name === "Unknown" || e.name === undefined ? e.Code : e.name, code, `expected ${code}, got ${String(e.name)}: ${String(err)}`);
    assert.equal(e.$metadata?.httpStatusCode, status);
    return true;
  });
}

/** CreateBucket with Stowage's x-stowage-durability header. */
function createBucketWithDurability(bucket: string, durability: "cloud" | "local"): CreateBucketCommand {
  const cmd = new CreateBucketCommand({ Bucket: bucket });
  cmd.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers["x-stowage-durability"] = durability;
      return next(args);
    },
    { step: "build", name: "stowageDurabilityHeader" },
  );
  return cmd;
}

/** Polls `check` every 20 ms until it returns true; fails with `what` after `ms`. */
async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Log entries that show the server hit something it did not expect (InternalError, level error or worse). */
function crashes(logs: readonly LogEntry[]): LogEntry[] {
  return logs.filter((l) => l.level >= 50 || l.msg === "internal error" || l.status === 500);
}

// ------------------------------------------------------------------------------------------
// Local directories as the cloud and local tiers, the embedded event log
// ------------------------------------------------------------------------------------------

describe("tiers through the S3 API (embedded event log)", () => {
  test("local tier: a cloud-policy PUT lands in the cloud and local directories; GET reads it locally", async () => {
    const t = await tierEndpoint();
    const { ep, c } = t;
    await c.send(new CreateBucketCommand({ Bucket: "cloud" }));
    assert.equal((await ep.repo.store.headBucket("cloud")).durability, "cloud");
    const objects = new Map<string, Buffer>([
      ["a/one.bin", randomBytes(150 * KiB)],
      ["a/two.bin", randomBytes(90 * KiB)],
      ["b/three.bin", randomBytes(40 * KiB)],
    ]);
    for (const [k, v] of objects) await put(c, "cloud", k, v);
    await ep.repo.tiers.idle(); // the local copies of cloud-first puts finish in the background

    const cloudPacks = packFiles(t.cloudDir);
    const localPacks = packFiles(t.localDir);
    let packCount = 0;
    for (const k of objects.keys()) {
      const packs = await packsOfObject(ep, "cloud", k);
      assert.ok(packs.length > 0, `${k} is stored in packs`);
      for (const p of packs) {
        packCount++;
        assert.ok(cloudPacks.has(p), `${p} (of ${k}) is in the cloud directory`);
        assert.ok(localPacks.has(p), `${p} (of ${k}) is in the local directory`);
        assert.ok(fileOf(t.cloudDir, p).equals(fileOf(t.localDir, p)), `${p}: the local copy is the cloud's`);
      }
    }
    assert.ok(packCount >= 1);
    const usage = ep.repo.tiers.localUsage();
    assert.ok(usage !== undefined);
    assert.equal(usage.bytes, [...localPacks.values()].reduce((a, b) => a + b, 0), "the local index counts the local directory");

    for (const [k, v] of objects) assert.ok((await get(c, "cloud", k)).equals(v), `GET ${k} returns its bytes`);
    const stats = await ep.repo.tiers.stats();
    assert.equal(stats.counters.localMisses, 0, "every read was served by the local tier");
    assert.ok((stats.local?.requests.bytesRead ?? 0) > 0, "the local tier served the reads");
    assert.equal(stats.cloud.egressBytes, 0, "nothing was read from the cloud");
    assert.equal(stats.counters.localWriteFailures, 0);
    assert.equal(stats.counters.hydrations, 0, "the local copies were written by the PUTs, not by the hydrator later");
    assert.deepEqual(t.background, [], "no background failure");
    assert.deepEqual(crashes(t.logs), []);
    await stop(t);
  });

  test("cloud outage: a cloud-policy PUT fails with 503 ServiceUnavailable, leaves nothing visible, succeeds after; earlier objects read from the local tier", async () => {
    const t = await tierEndpoint();
    const { ep, c } = t;
    await c.send(new CreateBucketCommand({ Bucket: "cloud" }));
    const earlier = new Map<string, Buffer>([
      ["earlier/1", randomBytes(80 * KiB)],
      ["earlier/2", randomBytes(60 * KiB)],
    ]);
    for (const [k, v] of earlier) await put(c, "cloud", k, v);
    await ep.repo.tiers.idle();
    const cloudBefore = packFiles(t.cloudDir);
    const localBefore = packFiles(t.localDir);

    const outage = t.cloud.inject({ kind: "io" }); // every cloud call fails (STOWAGE_BACKEND_IO)
    const body = randomBytes(100 * KiB);
    // errors.ts maps STOWAGE_BACKEND_IO to ServiceUnavailable (503): a retryable error for clients.
    await s3Error(put(c, "cloud", "during/outage.bin", body), "ServiceUnavailable", 503);
    assert.ok(outage.fired > 0, "the PUT reached the failing cloud");
    await ep.repo.tiers.idle();

    // Nothing half-visible: no object, no listing entry, no new pack in either tier.
    await s3Error(c.send(new HeadObjectCommand({ Bucket: "cloud", Key: "during/outage.bin" })), "NotFound", 404);
    await s3Error(c.send(new GetObjectCommand({ Bucket: "cloud", Key: "during/outage.bin" })), "NoSuchKey", 404);
    assert.deepEqual(await listKeys(c, "cloud"), [...earlier.keys()].sort());
    assert.deepEqual(packFiles(t.cloudDir), cloudBefore, "the cloud holds no new pack");
    assert.deepEqual(packFiles(t.localDir), localBefore, "the local copy of the failed pack was removed");
    assert.equal(ep.repo.tiers.localUsage()?.bytes, [...localBefore.values()].reduce((a, b) => a + b, 0));

    // Earlier objects still read, from the local tier, while the cloud is down.
    const firedBefore = outage.fired;
    for (const [k, v] of earlier) assert.ok((await get(c, "cloud", k)).equals(v), `GET ${k} during the outage`);
    assert.equal(outage.fired, firedBefore, "the reads did not touch the cloud");
    assert.equal((await ep.repo.tiers.stats()).counters.localMisses, 0);

    // The server answered, logged the 503, and crashed nowhere.
    assert.ok(
      t.logs.some((l) => l.msg === "request" && l.method === "PUT" && l.key === "during/outage.bin" && l.status === 503),
      "the failed PUT was logged with status 503",
    );
    assert.deepEqual(crashes(t.logs), []);

    // The outage ends: the same PUT succeeds and reads back.
    outage.remove();
    await put(c, "cloud", "during/outage.bin", body);
    assert.ok((await get(c, "cloud", "during/outage.bin")).equals(body));
    await ep.repo.tiers.idle();
    for (const p of await packsOfObject(ep, "cloud", "during/outage.bin")) {
      assert.ok(packFiles(t.cloudDir).has(p), `${p} is in the cloud after the outage`);
    }
    assert.deepEqual(await listKeys(c, "cloud"), [...earlier.keys(), "during/outage.bin"].sort());
    for (const [k, v] of earlier) assert.ok((await get(c, "cloud", k)).equals(v));
    assert.deepEqual(crashes(t.logs), []);
    await stop(t);
  });

  test("full local disk: cloud-policy PUTs succeed, reads come from the cloud; once space is back the hydrator copies the packs down", async () => {
    const t = await tierEndpoint();
    const { ep, c } = t;
    assert.ok(t.local !== undefined);
    await c.send(new CreateBucketCommand({ Bucket: "cloud" }));
    const full = t.local.inject({ op: "put", kind: "no-space" });
    const objects = new Map<string, Buffer>([
      ["full/1", randomBytes(120 * KiB)],
      ["full/2", randomBytes(70 * KiB)],
    ]);
    for (const [k, v] of objects) await put(c, "cloud", k, v);
    await ep.repo.tiers.idle();
    const packs = new Set<string>();
    for (const k of objects.keys()) for (const p of await packsOfObject(ep, "cloud", k)) packs.add(p);
    assert.ok(packs.size > 0);
    for (const p of packs) {
      assert.ok(packFiles(t.cloudDir).has(p), `${p} is in the cloud`);
      assert.ok(!packFiles(t.localDir).has(p), `${p} could not be written locally`);
    }
    let stats = await ep.repo.tiers.stats();
    assert.ok(stats.counters.localWriteFailures >= packs.size, `local write failures counted (${stats.counters.localWriteFailures})`);

    // Reads: the local copy is missing, so the cloud serves them.
    const egressBefore = stats.cloud.egressBytes;
    for (const [k, v] of objects) assert.ok((await get(c, "cloud", k)).equals(v), `GET ${k} from the cloud`);
    stats = await ep.repo.tiers.stats();
    assert.ok(stats.counters.localMisses >= packs.size, "the reads missed the local tier");
    assert.ok(stats.cloud.egressBytes > egressBefore, "the reads were served by the cloud");

    // The hydrator keeps trying while the disk is full ...
    const firedBefore = full.fired;
    await waitFor("the hydrator tried a local write while the disk is full", () => full.fired > firedBefore);
    for (const p of packs) assert.ok(!packFiles(t.localDir).has(p), `${p} is still not local while the disk is full`);
    // ... and copies the packs down once there is space again.
    full.remove();
    await waitFor("the hydrator copied every pack to the local directory", () => [...packs].every((p) => packFiles(t.localDir).has(p)));
    assert.equal(await ep.repo.tiers.drain(15_000), true, "the workers caught up");
    for (const p of packs) assert.ok(fileOf(t.localDir, p).equals(fileOf(t.cloudDir, p)), `${p}: the hydrated copy is the cloud's`);
    assert.ok((await ep.repo.tiers.stats()).counters.hydrations >= packs.size, "the hydrations are counted");

    // Now reads are local again.
    const beforeReads = await ep.repo.tiers.stats();
    for (const [k, v] of objects) assert.ok((await get(c, "cloud", k)).equals(v));
    const afterReads = await ep.repo.tiers.stats();
    assert.equal(afterReads.cloud.egressBytes, beforeReads.cloud.egressBytes, "reads after hydration are local");
    assert.ok((afterReads.local?.requests.bytesRead ?? 0) > (beforeReads.local?.requests.bytesRead ?? 0), "the local tier served them");
    assert.deepEqual(crashes(t.logs), []);
    await stop(t);
  });

  test("write-back bucket (x-stowage-durability: local): a PUT during a cloud outage is acknowledged; the uploader copies the pack to the cloud after it", async () => {
    const t = await tierEndpoint();
    const { ep, c } = t;
    await c.send(createBucketWithDurability("edits", "local"));
    assert.equal((await ep.repo.store.headBucket("edits")).durability, "local");

    const outage = t.cloud.outage({ ms: 60_000 });
    const body = randomBytes(130 * KiB);
    await put(c, "edits", "cut/v1.mov", body);
    const packs = await packsOfObject(ep, "edits", "cut/v1.mov");
    assert.ok(packs.length > 0);
    for (const p of packs) {
      assert.ok(packFiles(t.localDir).has(p), `${p} is in the local directory (acknowledged after the local fsync)`);
      assert.ok(!packFiles(t.cloudDir).has(p), `${p} is not in the cloud yet`);
    }
    assert.equal((await computeStats(ep.repo.meta)).packsAwaitingUpload, packs.length);
    assert.ok((await get(c, "edits", "cut/v1.mov")).equals(body), "the write-back object reads back from the local tier");
    assert.deepEqual(await listKeys(c, "edits"), ["cut/v1.mov"]);

    // The uploader tries, and fails while the cloud is down.
    await waitFor("the uploader tried the cloud", () => outage.fired > 0);
    assert.equal((await computeStats(ep.repo.meta)).packsAwaitingUpload, packs.length, "not marked uploaded during the outage");
    for (const p of packs) assert.ok(!packFiles(t.cloudDir).has(p), `${p} is not in the cloud during the outage`);

    outage.remove();
    await waitFor("the pack records are marked uploaded", async () => (await computeStats(ep.repo.meta)).packsAwaitingUpload === 0);
    assert.equal(await ep.repo.tiers.drain(15_000), true, "the uploader caught up");
    for (const p of packs) {
      assert.ok(packFiles(t.cloudDir).has(p), `${p} was uploaded to the cloud`);
      assert.ok(fileOf(t.cloudDir, p).equals(fileOf(t.localDir, p)), `${p}: the cloud copy is the local one`);
    }
    const stats = await ep.repo.tiers.stats();
    assert.ok(stats.counters.uploads >= packs.length, `uploads counted (${stats.counters.uploads})`);
    assert.equal(stats.local?.awaitingUpload, 0);
    assert.ok((await get(c, "edits", "cut/v1.mov")).equals(body));
    assert.deepEqual(crashes(t.logs), []);
    await stop(t);
  });

  test("purge: past the high watermark, local usage is brought under the low watermark and every object still reads (from the cloud)", async () => {
    const t = await tierEndpoint();
    const { ep, c } = t;
    await c.send(new CreateBucketCommand({ Bucket: "cloud" }));
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 10; i++) objects.set(`take/${String(i).padStart(2, "0")}`, randomBytes(120 * KiB));
    let written = 0;
    for (const [k, v] of objects) {
      await put(c, "cloud", k, v);
      written += v.length;
    }
    assert.ok(written > HIGH * CAPACITY, "more than the high watermark was written");
    await ep.repo.tiers.idle();
    assert.equal(await ep.repo.tiers.drain(15_000), true);
    const report = await ep.repo.tiers.purgeIfNeeded();
    await ep.repo.tiers.idle();

    const low = Math.floor(LOW * CAPACITY);
    const localPacks = packFiles(t.localDir);
    const localBytes = [...localPacks.values()].reduce((a, b) => a + b, 0);
    assert.ok(localBytes <= low, `local directory holds ${localBytes} bytes, low watermark ${low} (last pass: ${JSON.stringify(report)})`);
    assert.equal(ep.repo.tiers.localUsage()?.bytes, localBytes);
    const stats = await ep.repo.tiers.stats();
    assert.ok(stats.counters.purges > 0, "copies were purged");
    // Never the last copy: every pack is still in the cloud.
    const cloudPacks = packFiles(t.cloudDir);
    const all = new Set<string>();
    for (const k of objects.keys()) for (const p of await packsOfObject(ep, "cloud", k)) all.add(p);
    for (const p of all) assert.ok(cloudPacks.has(p), `${p} is in the cloud`);
    assert.ok([...all].some((p) => !localPacks.has(p)), "some packs are now cloud-only");

    const egressBefore = stats.cloud.egressBytes;
    for (const [k, v] of objects) assert.ok((await get(c, "cloud", k)).equals(v), `GET ${k} after the purge`);
    assert.ok((await ep.repo.tiers.stats()).cloud.egressBytes > egressBefore, "purged objects were read from the cloud");
    assert.deepEqual(t.background, [], "no background failure");
    assert.deepEqual(crashes(t.logs), []);
    await stop(t);
  });
});

// ------------------------------------------------------------------------------------------
// The cloud tier on a real S3-compatible server (moto)
// ------------------------------------------------------------------------------------------

const haveMoto = findS3Servers().includes("moto");
const motoSkip = haveMoto ? false : `moto's S3 server is not installed: run ${INSTALL_HINT}`;
if (!haveMoto && CI) {
  test("moto is installed (CI)", () => assert.fail(`CI is set but moto is not installed: run ${INSTALL_HINT}`));
}

describe("cloud tier on an S3-compatible server (moto)", { skip: motoSkip }, () => {
  let srv: S3TestServer | undefined;
  const saved = { access: process.env.STOWAGE_S3_ACCESS_KEY, secret: process.env.STOWAGE_S3_SECRET_KEY };
  before(async () => {
    srv = await S3TestServer.start("moto");
    process.env.STOWAGE_S3_ACCESS_KEY = "test";
    process.env.STOWAGE_S3_SECRET_KEY = "test";
  });
  after(async () => {
    const restore = (name: string, v: string | undefined): void => {
      if (v === undefined) delete process.env[name];
      else process.env[name] = v;
    };
    restore("STOWAGE_S3_ACCESS_KEY", saved.access);
    restore("STOWAGE_S3_SECRET_KEY", saved.secret);
    await srv?.stop();
  });

  test("s3:// cloud tier: PUT and GET through the gateway; the packs are in the S3 bucket", async () => {
    assert.ok(srv !== undefined);
    const bucket = `stowage-gw-${process.pid}`;
    const admin = new S3Client({ endpoint: srv.endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" }, forcePathStyle: true });
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    const t = await tierEndpoint({ bucket: `s3://${bucket}/gw`, s3: { endpoint: srv.endpoint, forcePathStyle: true } });
    try {
      const { ep, c } = t;
      assert.match(ep.repo.backend.location, /^s3:\/\//);
      await c.send(new CreateBucketCommand({ Bucket: "media" }));
      const objects = new Map<string, Buffer>([
        ["reel/1.bin", randomBytes(200 * KiB)],
        ["reel/2.bin", randomBytes(30 * KiB)],
      ]);
      for (const [k, v] of objects) await put(c, "media", k, v);

      const stored = (await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "gw/" }))).Contents ?? [];
      for (const k of objects.keys()) {
        const packs = await packsOfObject(ep, "media", k);
        assert.ok(packs.length > 0);
        for (const p of packs) assert.ok(stored.some((o) => o.Key?.startsWith("gw/") === true && o.Key.endsWith(`/${p}`)), `${p} of ${k} is in the S3 bucket`);
      }
      assert.equal(fs.existsSync(t.cloudDir), false, "nothing went to a local bucket directory");

      for (const [k, v] of objects) assert.ok((await get(c, "media", k)).equals(v), `GET ${k}`);
      assert.ok((await ep.repo.tiers.stats()).cloud.egressBytes > 0, "the reads came from the S3 bucket");
      assert.deepEqual(t.background, [], "no background failure");
      assert.deepEqual(crashes(t.logs), []);
    } finally {
      await stop(t);
      const objects = (await admin.send(new ListObjectsV2Command({ Bucket: bucket })).catch(() => undefined))?.Contents ?? [];
      for (const o of objects) await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key })).catch(() => undefined);
      await admin.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => undefined);
      admin.destroy();
    }
  });
});

// ------------------------------------------------------------------------------------------
// Kafka as the event log
// ------------------------------------------------------------------------------------------

const KAFKA_SCRIPT = path.join(REPO_ROOT, "scripts", "services", "kafka.sh");

function kafkaService(cmd: string): { status: number; out: string; err: string } {
  const r = spawnSync("bash", [KAFKA_SCRIPT, cmd], { cwd: REPO_ROOT, encoding: "utf8", timeout: 120_000 });
  return { status: r.status ?? 1, out: (r.stdout ?? "").trim(), err: (r.stderr ?? "").trim() };
}

const kafkaInstalled = fs.existsSync(KAFKA_SCRIPT) && !kafkaService("status").out.includes("not installed");
const kafkaSkip = kafkaInstalled ? false : "the Kafka broker is not installed: run scripts/services/kafka.sh install (then this test starts it)";
if (!kafkaInstalled && CI) {
  test("kafka broker is installed (CI)", () => assert.fail("CI is set but the Kafka broker is not installed: run scripts/services/kafka.sh install"));
}

describe("Kafka as the event log", { skip: kafkaSkip }, () => {
  let bootstrap = "";
  let startedHere = false;
  before(() => {
    startedHere = kafkaService("status").status !== 0;
    const r = kafkaService("start");
    if (r.status !== 0) throw new Error(`scripts/services/kafka.sh start failed: ${r.err}`);
    bootstrap = r.out.split("\n").pop() ?? "";
  });
  after(() => {
    if (startedHere) kafkaService("stop");
  });

  test("secondary tier: the secondary copier consumes pack-uploaded from Kafka and copies every pack", async () => {
    const topic = `stowage-gw-${process.pid}-${Date.now().toString(36)}`;
    const t = await tierEndpoint({ tiers: { secondary: { bucket: "secondary" } }, events: { kind: "kafka", brokers: [bootstrap], topic, partitions: 1 } });
    const secondaryDir = path.join(t.ep.dir, "secondary");
    try {
      const { ep, c } = t;
      assert.ok(ep.repo.events instanceof KafkaEventLog, "the event log is Kafka");
      await c.send(new CreateBucketCommand({ Bucket: "dailies" }));
      const objects = new Map<string, Buffer>([
        ["d1/a.bin", randomBytes(100 * KiB)],
        ["d1/b.bin", randomBytes(50 * KiB)],
      ]);
      for (const [k, v] of objects) await put(c, "dailies", k, v);
      const packs = new Set<string>();
      for (const k of objects.keys()) for (const p of await packsOfObject(ep, "dailies", k)) packs.add(p);
      assert.ok(packs.size > 0);
      await waitFor("every pack is in the secondary directory", () => [...packs].every((p) => packFiles(secondaryDir).has(p)), 40_000);
      // The copier counts a copy once its put returned, a moment after the file appeared.
      await waitFor("the secondary copies are counted", async () => (await ep.repo.tiers.stats()).counters.secondaryCopies >= packs.size, 10_000);
      for (const p of packs) assert.ok(fileOf(secondaryDir, p).equals(fileOf(t.cloudDir, p)), `${p}: the secondary copy is the cloud's`);
      for (const [k, v] of objects) assert.ok((await get(c, "dailies", k)).equals(v));
      assert.deepEqual(t.background, [], "no background failure");
      assert.deepEqual(crashes(t.logs), []);
    } finally {
      await stop(t);
      const admin = new Admin({ clientId: "stowage-gw-test-admin", bootstrapBrokers: [bootstrap], retries: 0 });
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      await admin.close().catch(() => undefined);
    }
  });
});
