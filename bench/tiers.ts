/**
 * Tier benchmark: Stowage's object store writing cloud-first through the tier manager, the cloud
 * tier being a real S3-compatible server, compared in the same run with the same bytes sent to
 * that server directly with the AWS SDK (one object per key).
 *
 *   npm run bench:tiers                       # 16 x 64 MiB + 8,192 x 4 KiB (about 1 GiB)
 *   npm run bench:tiers -- --quick            # 2 x 64 MiB + 1,000 x 4 KiB (< 1 min)
 *   node dist/bench/tiers.js [--quick] [--keep] [--server seaweedfs|moto] [--large N] [--large-mb MiB]
 *        [--small N] [--concurrency N] [--pack-mb MiB] [--commit-delay MS] [--seed N] [--dir DIR]
 *        [--peer-bin PATH] [--no-install]
 *
 * The server is started fresh by this process as a child on 127.0.0.1 and stopped by its pid at
 * the end (SIGTERM, SIGKILL after 5 s): SeaweedFS (`weed server -s3`, built by
 * scripts/install-s3-peer.sh; the default when its binary is present; volumes on a new temp
 * directory, no fsync) or moto (`scripts/services/s3-server.sh foreground PORT`: in memory,
 * single-threaded, no signature checks). It is ready when CreateBucket succeeds; one untimed 4 KiB
 * PUT absorbs SeaweedFS's first-write volume creation (about 9 s).
 *
 * Stowage runs in this process: an ObjectStore (`new ObjectStore(meta, tiers.cloudFirst, keys,
 * { packTargetSize, commitDelayMs })`: kv metadata store on the temp directory, fresh random keys,
 * the default chunker, compression and AES-256-GCM, 16 MiB packs, a 200 ms group-commit window as
 * `stowage serve` has it, outbox events on with no relay) whose backend is the `cloudFirst` view of
 * a TierManager (not started: no worker is needed, every pack's local copy is written by the put)
 * with
 *   cloud  = RetryingBackend(CountingBackend(S3Backend))   (16 MiB packs: one PutObject each)
 *   local  = CountingBackend(LocalBackend on the temp dir), capacity max(2x the data, 1 GiB)
 *   events = MemoryEventLog.
 * The cloud's counting wrapper sits under the retries, so every attempt is counted, as a provider
 * bills it. An SDK middleware on the S3Backend's client and on the plain client counts HTTP
 * requests by command; the request figures below are those. Plain requests use their own SDK
 * client (maxAttempts 1, keep-alive, the default CRC32 request checksums). Data: AES-128-CTR
 * keystreams (incompressible, no duplicates: nothing to dedup or compress), the same bytes for
 * Stowage and plain; MB = 10^6 bytes, GB = 10^9.
 *
 * Phases, in this order (each Stowage measurement before its plain reference):
 * 1. **ingest-large**: N objects of `--large-mb` MiB, one after another, `putObject` streaming 1 MiB
 *    pieces (resolves once the cloud holds every pack of the object: cloud-first). MB/s = bytes /
 *    time until the last put resolved. The local copies finish in the background; the extra wait
 *    for them (`tiers.idle()`) is printed as a detail, outside the rate. Plain: one PutObject per
 *    object (ContentLength set), one after another.
 * 2. **ingest-small**: M objects of 4 KiB, `--concurrency` (32) workers, each `putObject` awaited
 *    (group commit shares packs among concurrent writers). ops/s = M / wall time. Plain: one
 *    PutObject per object, same concurrency.
 * 3. **read-local**: every large object read back through a fresh ObjectStore (chunk cache off)
 *    on the same tiers, SHA-256 of the bytes compared with the expected one; the local tier holds
 *    every pack, so the cloud should see no GET. MB/s over the N objects.
 * 4. **read-cloud**: a second TierManager over the same cloud and local directory with capacity 1
 *    byte (and no read hydration) runs `purgeIfNeeded()`, which drops every local copy after a
 *    HEAD to the cloud confirms it (untimed); then the same reads through a fresh store on its
 *    cloudFirst view: local miss, then ranged GETs to the cloud. Plain reference: GetObject of each
 *    plain object, streamed and hashed the same way.
 * 5. **requests-per-GB**: PUT-class requests (PutObject, UploadPart, Create/Complete multipart)
 *    sent to the server during both ingest phases, divided by GB ingested (large + small client
 *    bytes); total requests of any kind likewise. Plain = what the plain phases sent (one PutObject
 *    per object). Also printed: what the SDK's Upload with 8 MiB parts would have cost (computed).
 *
 * CPU seconds per phase: this process (Stowage, its worker threads and the SDK clients; for plain
 * phases only the SDK client) from process.cpuUsage, and the server's from /proc/<pid>/stat. On a
 * shared 2-core machine only ratios within one run mean anything: client, gateway and server share
 * the cores. Durability differs: the local tier fsyncs packs and the kv store its commits; SeaweedFS
 * does not fsync by default; moto keeps everything in memory. The temp directory is removed unless
 * --keep.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { CountingBackend } from "../src/backend/counting.js";
import { LocalBackend } from "../src/backend/local.js";
import { RetryingBackend } from "../src/backend/retry.js";
import { S3Backend } from "../src/backend/s3.js";
import { RepositoryKeys } from "../src/codec/keys.js";
import { MemoryEventLog } from "../src/events/memory.js";
import { openKvMetadataStore } from "../src/meta/kv-store.js";
import type { MetadataStore } from "../src/meta/types.js";
import { ObjectStore } from "../src/store/store.js";
import { TierManager } from "../src/tier/manager.js";
import {
  Keystream,
  MB,
  MiB,
  PEER_BIN_DEFAULT,
  createBucket,
  ensurePeer,
  errText,
  motoVersion,
  readCpuSeconds,
  s3Client,
  startMoto,
  startPeer,
  stopServer,
  type Server,
} from "./peer.js";

type ServerKind = "seaweedfs" | "moto";
const BUCKET = "tiers";
const STORE_BUCKET = "bench";
const SMALL_SIZE = 4096;
const GB = 1e9;
const CREDS = { accessKey: "STOWAGEBENCHACCESS01", secretKey: "stowage-bench-secret-key-0123456789abcdef" };
/** Commands billed as PUT-class requests. */
const PUT_CLASS = new Set(["PutObjectCommand", "UploadPartCommand", "CreateMultipartUploadCommand", "CompleteMultipartUploadCommand"]);

interface Config {
  mode: "quick" | "default";
  server: ServerKind | undefined;
  largeCount: number;
  largeMiB: number;
  smallCount: number;
  concurrency: number;
  packMiB: number;
  commitDelayMs: number;
  seed: number;
  dir: string | undefined;
  keep: boolean;
  install: boolean;
  peerBin: string;
}

function usage(): string {
  return (
    "usage: node dist/bench/tiers.js [--quick] [--keep] [--server seaweedfs|moto] [--large N] [--large-mb MiB] [--small N]\n" +
    "         [--concurrency N] [--pack-mb MiB] [--commit-delay MS] [--seed N] [--dir DIR] [--peer-bin PATH] [--no-install]"
  );
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    mode: quick ? "quick" : "default",
    server: undefined,
    largeCount: quick ? 2 : 16,
    largeMiB: 64,
    smallCount: quick ? 1000 : 8192,
    concurrency: 32,
    packMiB: 16,
    commitDelayMs: 200,
    seed: 1,
    dir: undefined,
    keep: false,
    install: true,
    peerBin: process.env.S3_PEER_BIN ?? PEER_BIN_DEFAULT,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    const num = (min: number): number => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < min) throw new Error(`${a} needs a number >= ${min}`);
      return Math.floor(v);
    };
    if (a === "--quick") continue;
    else if (a === "--keep") cfg.keep = true;
    else if (a === "--server") {
      const v = val();
      if (v !== "seaweedfs" && v !== "moto") throw new Error(`--server seaweedfs|moto, not ${v}`);
      cfg.server = v;
    } else if (a === "--large") cfg.largeCount = num(1);
    else if (a === "--large-mb") cfg.largeMiB = num(1);
    else if (a === "--small") cfg.smallCount = num(1);
    else if (a === "--concurrency") cfg.concurrency = num(1);
    else if (a === "--pack-mb") cfg.packMiB = num(1);
    else if (a === "--commit-delay") cfg.commitDelayMs = num(0);
    else if (a === "--seed") cfg.seed = num(0);
    else if (a === "--dir") cfg.dir = val();
    else if (a === "--peer-bin") cfg.peerBin = val();
    else if (a === "--no-install") cfg.install = false;
    else if (a === "--help" || a === "-h") {
      console.log(usage());
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  return cfg;
}

function log(msg: string): void {
  process.stderr.write(`[tiers bench] ${msg}\n`);
}

const fmt = (x: number | undefined, digits: number): string => (x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || b <= 0 ? "n/a" : (a / b).toFixed(2));

// ------------------------------------------------------------------------------ request counting

/** HTTP requests sent by an SDK client, by command name (maxAttempts 1: one send, one request). */
class RequestTally {
  readonly counts = new Map<string, number>();

  attach(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const name = context.commandName ?? "?";
        this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
        return next(args);
      },
      { step: "initialize", name: "benchRequestTally" },
    );
  }

  snapshot(): Map<string, number> {
    return new Map(this.counts);
  }

  /** Requests since `before`: PUT-class ones and all of them, and the non-zero counts by command. */
  static since(now: Map<string, number>, before: Map<string, number>): { puts: number; total: number; byCommand: string } {
    let puts = 0;
    let total = 0;
    const parts: string[] = [];
    for (const [name, n] of now) {
      const d = n - (before.get(name) ?? 0);
      if (d === 0) continue;
      total += d;
      if (PUT_CLASS.has(name)) puts += d;
      parts.push(`${name.replace(/Command$/, "")}=${d}`);
    }
    return { puts, total, byCommand: parts.sort().join(" ") || "none" };
  }
}

// ------------------------------------------------------------------------------ measuring

interface Measured {
  seconds: number;
  /** This process (Stowage and the SDK clients), user + system, all threads. */
  selfCpu: number;
  serverCpu: number | undefined;
}

async function measure(srv: Server, body: () => Promise<void>): Promise<Measured> {
  const s0 = readCpuSeconds(srv.pid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await body();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const s1 = readCpuSeconds(srv.pid);
  return { seconds, selfCpu: (c.user + c.system) / 1e6, serverCpu: s0 === undefined || s1 === undefined ? undefined : s1 - s0 };
}

const cpuText = (m: Measured): string => `${m.seconds.toFixed(2)} s wall, cpu: bench process ${m.selfCpu.toFixed(2)} s, server ${fmt(m.serverCpu, 2)} s`;

async function pool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined) {
      const i = next++;
      if (i >= n) return;
      try {
        await task(i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, worker));
  if (failed !== undefined) throw failed;
}

/** SHA-256 of a stream of pieces, with its length. */
async function digest(body: AsyncIterable<Uint8Array>): Promise<{ hash: string; length: number }> {
  const h = createHash("sha256");
  let length = 0;
  for await (const piece of body) {
    h.update(piece);
    length += piece.length;
  }
  return { hash: h.digest("hex"), length };
}

// ------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const load = (): string => loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`machine: ${availableParallelism()} cpus (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load average ${load()}`);

  // ---- which server
  let kind = cfg.server;
  let version: string | undefined;
  if (kind === undefined || kind === "seaweedfs") {
    version = ensurePeer(cfg.peerBin, cfg.install && kind === "seaweedfs", log);
    if (version !== undefined) kind = "seaweedfs";
    else if (kind === "seaweedfs") throw new Error(`SeaweedFS is not installed (${cfg.peerBin}; run scripts/install-s3-peer.sh)`);
  }
  if (kind === undefined || kind === "moto") {
    version = motoVersion();
    if (version === undefined) throw new Error("neither SeaweedFS (scripts/install-s3-peer.sh) nor moto (scripts/services/s3-server.sh install) is installed");
    kind = "moto";
  }

  const root = cfg.dir !== undefined ? (mkdirSync(cfg.dir, { recursive: true }), mkdtempSync(join(cfg.dir, "stowage-tiers-"))) : mkdtempSync(join(tmpdir(), "stowage-tiers-"));
  const largeBytes = cfg.largeMiB * MiB;
  const totalLarge = cfg.largeCount * largeBytes;
  const totalSmall = cfg.smallCount * SMALL_SIZE;
  const ingested = totalLarge + totalSmall;

  let srv: Server | undefined;
  const closers: (() => Promise<void>)[] = [];
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    for (const close of closers.reverse()) await close().catch((err: unknown) => log(`cleanup: ${errText(err)}`));
    if (srv !== undefined) await stopServer(srv, 5_000, log);
    if (!cfg.keep) rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping the server, removing ${root}`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    // ---- expected contents (untimed)
    const largeStream = (i: number): Keystream => Keystream.of(cfg.seed, `large/${i}`, "stowage-tiers-bench");
    const smallStream = Keystream.of(cfg.seed, "small", "stowage-tiers-bench");
    const smallBody = (i: number): Buffer => smallStream.bytes(i * SMALL_SIZE, SMALL_SIZE);
    const largeKey = (i: number): string => `large/${String(i).padStart(4, "0")}`;
    const smallKey = (i: number): string => `small/${String(i).padStart(8, "0")}`;
    const expected: string[] = [];
    for (let i = 0; i < cfg.largeCount; i++) {
      const h = createHash("sha256");
      for (const piece of largeStream(i).pieces(largeBytes)) h.update(piece);
      expected.push(h.digest("hex"));
    }

    // ---- the server
    const t0 = performance.now();
    srv = kind === "seaweedfs" ? await startPeer("cloud", root, cfg.peerBin, version!, CREDS) : await startMoto("cloud", root, version!);
    const server = srv;
    const plain = s3Client(server.endpoint, CREDS, cfg.concurrency);
    closers.push(async () => plain.destroy());
    const plainTally = new RequestTally();
    plainTally.attach(plain);
    await createBucket(server, plain, BUCKET, 60_000);
    const readySec = (performance.now() - t0) / 1000;
    const w0 = performance.now();
    await plain.send(new PutObjectCommand({ Bucket: BUCKET, Key: "warmup", Body: smallBody(0) }));
    const firstPutMs = performance.now() - w0;
    log(`${version} at ${server.endpoint} (pid ${server.pid}), ready in ${readySec.toFixed(1)} s, first PUT ${firstPutMs.toFixed(0)} ms`);

    // ---- Stowage over the tiers
    const s3 = new S3Backend({ bucket: BUCKET, prefix: "stowage", endpoint: server.endpoint, credentials: { accessKeyId: CREDS.accessKey, secretAccessKey: CREDS.secretKey }, forcePathStyle: true });
    const cloudTally = new RequestTally();
    cloudTally.attach(s3.client);
    const cloudCount = new CountingBackend(s3);
    const cloud = new RetryingBackend(cloudCount);
    closers.push(() => cloud.close());
    const localCount = new CountingBackend(await LocalBackend.open(join(root, "local")));
    closers.push(() => localCount.close());
    const events = new MemoryEventLog();
    const meta: MetadataStore = await openKvMetadataStore(join(root, "meta"));
    closers.push(() => meta.close());
    const keys = RepositoryKeys.generate();
    const packTargetSize = cfg.packMiB * MiB;
    const ref: { store?: ObjectStore } = {};
    const storeOf = (): ObjectStore => {
      if (ref.store === undefined) throw new Error("no store yet");
      return ref.store;
    };
    const tiers = await TierManager.open({
      cloud,
      local: { backend: localCount, capacityBytes: Math.max(2 * ingested, 1 << 30) },
      events,
      markPackUploaded: async (blobKey) => {
        await storeOf().markPackUploaded(blobKey);
      },
      packsOf: (bucket, prefix) => storeOf().packsOf(bucket, prefix),
    });
    closers.push(() => tiers.stop());
    const ingestStore = new ObjectStore(meta, tiers.cloudFirst, keys, { packTargetSize, commitDelayMs: cfg.commitDelayMs });
    ref.store = ingestStore;
    closers.push(() => ingestStore.close());
    await ingestStore.createBucket(STORE_BUCKET);
    // Untimed: one small object through the store (first pack, first connections).
    await ingestStore.putObject(STORE_BUCKET, "warmup", [smallBody(1)], { size: SMALL_SIZE });
    await tiers.idle();
    console.log(
      `tiers bench: mode=${cfg.mode} server=${version} large=${cfg.largeCount}x${cfg.largeMiB} MiB small=${cfg.smallCount}x${SMALL_SIZE} B ` +
        `concurrency=${cfg.concurrency} pack=${cfg.packMiB} MiB commit-delay=${cfg.commitDelayMs} ms`,
    );

    // ---- 1. ingest-large
    const c0 = cloudTally.snapshot();
    const cc0 = cloudCount.counters();
    const l0 = localCount.counters();
    const stLarge = await measure(server, async () => {
      for (let i = 0; i < cfg.largeCount; i++) {
        await ingestStore.putObject(STORE_BUCKET, largeKey(i), largeStream(i).pieces(largeBytes), { size: largeBytes });
      }
    });
    const iw0 = performance.now();
    await tiers.idle();
    const largeIdleSec = (performance.now() - iw0) / 1000;
    const c1 = cloudTally.snapshot();
    log(`ingest-large stowage: ${fmt(totalLarge / MB / stLarge.seconds, 1)} MB/s; ${cpuText(stLarge)}; local copies done ${largeIdleSec.toFixed(2)} s later`);
    const p0 = plainTally.snapshot();
    const plLarge = await measure(server, async () => {
      for (let i = 0; i < cfg.largeCount; i++) {
        await plain.send(new PutObjectCommand({ Bucket: BUCKET, Key: `plain/${largeKey(i)}`, Body: largeStream(i).stream(largeBytes), ContentLength: largeBytes }));
      }
    });
    const p1 = plainTally.snapshot();
    log(`ingest-large plain: ${fmt(totalLarge / MB / plLarge.seconds, 1)} MB/s; ${cpuText(plLarge)}`);

    // ---- 2. ingest-small
    const stSmall = await measure(server, () =>
      pool(cfg.smallCount, cfg.concurrency, async (i) => {
        await ingestStore.putObject(STORE_BUCKET, smallKey(i), [smallBody(i)], { size: SMALL_SIZE });
      }),
    );
    const sw0 = performance.now();
    await tiers.idle();
    const smallIdleSec = (performance.now() - sw0) / 1000;
    const c2 = cloudTally.snapshot();
    const cc2 = cloudCount.counters();
    const l2 = localCount.counters();
    log(`ingest-small stowage: ${fmt(cfg.smallCount / stSmall.seconds, 0)} ops/s; ${cpuText(stSmall)}`);
    const plSmall = await measure(server, () =>
      pool(cfg.smallCount, cfg.concurrency, async (i) => {
        await plain.send(new PutObjectCommand({ Bucket: BUCKET, Key: `plain/${smallKey(i)}`, Body: smallBody(i), ContentLength: SMALL_SIZE }));
      }),
    );
    const p2 = plainTally.snapshot();
    log(`ingest-small plain: ${fmt(cfg.smallCount / plSmall.seconds, 0)} ops/s; ${cpuText(plSmall)}`);
    await ingestStore.close();
    const localAfterIngest = tiers.localUsage();
    const tierStats = await tiers.stats();

    const bad: string[] = [];
    const readAll = async (store: ObjectStore, what: string): Promise<void> => {
      for (let i = 0; i < cfg.largeCount; i++) {
        const { body } = await store.getObject(STORE_BUCKET, largeKey(i));
        const got = await digest(body);
        if (got.length !== largeBytes || got.hash !== expected[i]) bad.push(`${what} ${largeKey(i)}: ${got.length} bytes, sha256 ${got.hash.slice(0, 12)}`);
      }
    };

    // ---- 3. read-local
    const localReader = new ObjectStore(meta, tiers.cloudFirst, keys, { packTargetSize, cacheBytes: 0 });
    closers.push(() => localReader.close());
    const c3 = cloudTally.snapshot();
    const l3 = localCount.counters();
    const rdLocal = await measure(server, () => readAll(localReader, "read-local"));
    const c4 = cloudTally.snapshot();
    const l4 = localCount.counters();
    await localReader.close();
    await tiers.stop();
    log(`read-local: ${fmt(totalLarge / MB / rdLocal.seconds, 1)} MB/s; ${cpuText(rdLocal)}`);

    // ---- 4. read-cloud: drop every local copy (each confirmed by a HEAD to the cloud), then read
    const tiers2 = await TierManager.open({
      cloud,
      local: { backend: localCount, capacityBytes: 1 },
      events,
      readHydrate: false,
      hydrateOnUpload: false,
      markPackUploaded: async () => undefined,
    });
    closers.push(() => tiers2.stop());
    const c5 = cloudTally.snapshot();
    const purge = await tiers2.purgeIfNeeded();
    const c6 = cloudTally.snapshot();
    const cloudReader = new ObjectStore(meta, tiers2.cloudFirst, keys, { packTargetSize, cacheBytes: 0 });
    closers.push(() => cloudReader.close());
    const rdCloud = await measure(server, () => readAll(cloudReader, "read-cloud"));
    const c7 = cloudTally.snapshot();
    // Untimed: a sample of the small objects, from the cloud.
    const sample = Math.min(cfg.smallCount, 200);
    for (let k = 0; k < sample; k++) {
      const i = Math.floor((k * cfg.smallCount) / sample);
      const { body } = await cloudReader.getObject(STORE_BUCKET, smallKey(i));
      const chunks: Buffer[] = [];
      for await (const piece of body) chunks.push(piece);
      if (!Buffer.concat(chunks).equals(smallBody(i))) bad.push(`small ${smallKey(i)} differs`);
    }
    await cloudReader.close();
    log(`read-cloud: ${fmt(totalLarge / MB / rdCloud.seconds, 1)} MB/s; ${cpuText(rdCloud)}; purge dropped ${purge.purged} packs first`);
    const p3 = plainTally.snapshot();
    const rdPlain = await measure(server, async () => {
      for (let i = 0; i < cfg.largeCount; i++) {
        const res = await plain.send(new GetObjectCommand({ Bucket: BUCKET, Key: `plain/${largeKey(i)}` }));
        const got = await digest(res.Body as AsyncIterable<Uint8Array>);
        if (got.length !== largeBytes || got.hash !== expected[i]) bad.push(`plain ${largeKey(i)}: ${got.length} bytes, sha256 ${got.hash.slice(0, 12)}`);
      }
    });
    const p4 = plainTally.snapshot();
    log(`read plain: ${fmt(totalLarge / MB / rdPlain.seconds, 1)} MB/s; ${cpuText(rdPlain)}`);
    const retry = cloud.stats();

    // ---- the report
    const mbps = (bytes: number, m: Measured): number => bytes / MB / m.seconds;
    const stIngLarge = mbps(totalLarge, stLarge);
    const plIngLarge = mbps(totalLarge, plLarge);
    const stOps = cfg.smallCount / stSmall.seconds;
    const plOps = cfg.smallCount / plSmall.seconds;
    const rLocal = mbps(totalLarge, rdLocal);
    const rCloud = mbps(totalLarge, rdCloud);
    const rPlain = mbps(totalLarge, rdPlain);
    const stReqLarge = RequestTally.since(c1, c0);
    const stReqSmall = RequestTally.since(c2, c1);
    const stReq = RequestTally.since(c2, c0);
    const plReqLarge = RequestTally.since(p1, p0);
    const plReqSmall = RequestTally.since(p2, p1);
    const plReq = RequestTally.since(p2, p0);
    const gb = ingested / GB;
    // The SDK's Upload with 8 MiB parts: Create + parts + Complete per large object (above 8 MiB), one PUT per small one.
    const parts8 = Math.ceil(largeBytes / (8 * MiB));
    const upload8 = cfg.largeCount * (largeBytes > 8 * MiB ? parts8 + 2 : 1) + cfg.smallCount;

    console.log(`tiers ingest-large: stowage=${fmt(stIngLarge, 1)} plain=${fmt(plIngLarge, 1)} MB/s (ratio ${ratio(stIngLarge, plIngLarge)})`);
    console.log(`tiers ingest-small: stowage=${fmt(stOps, 0)} plain=${fmt(plOps, 0)} ops/s (ratio ${ratio(stOps, plOps)})`);
    console.log(`tiers read: local=${fmt(rLocal, 1)} cloud=${fmt(rCloud, 1)} plain=${fmt(rPlain, 1)} MB/s (local/plain ${ratio(rLocal, rPlain)}, cloud/plain ${ratio(rCloud, rPlain)})`);
    console.log(`tiers requests-per-GB: stowage=${fmt(stReq.puts / gb, 1)} plain=${fmt(plReq.puts / gb, 1)} PUTs (ratio ${ratio(stReq.puts, plReq.puts)}); all requests: stowage=${fmt(stReq.total / gb, 1)} plain=${fmt(plReq.total / gb, 1)}`);

    const cc = { puts: cc2.puts - cc0.puts, bytes: cc2.bytesWritten - cc0.bytesWritten };
    console.log(`detail server: ${version} at ${server.endpoint}; ready in ${readySec.toFixed(1)} s; first (untimed) PUT ${firstPutMs.toFixed(0)} ms`);
    console.log(`detail sizes: large ${cfg.largeCount} x ${largeBytes} B = ${(totalLarge / MB).toFixed(1)} MB; small ${cfg.smallCount} x ${SMALL_SIZE} B = ${(totalSmall / MB).toFixed(1)} MB; ingested ${gb.toFixed(3)} GB`);
    console.log(`detail ingest-large stowage: ${cpuText(stLarge)}; local copies finished ${largeIdleSec.toFixed(2)} s after the last ack; requests ${stReqLarge.byCommand}`);
    console.log(`detail ingest-large plain: ${cpuText(plLarge)}; requests ${plReqLarge.byCommand}`);
    console.log(`detail ingest-small stowage: ${cpuText(stSmall)} (${fmt((stSmall.selfCpu * 1000) / cfg.smallCount, 3)} ms bench-process cpu/op); local copies +${smallIdleSec.toFixed(2)} s; requests ${stReqSmall.byCommand} (${fmt((stReqSmall.puts * 1000) / cfg.smallCount, 1)} PUTs per 1000 objects)`);
    console.log(`detail ingest-small plain: ${cpuText(plSmall)} (${fmt((plSmall.selfCpu * 1000) / cfg.smallCount, 3)} ms bench-process cpu/op); requests ${plReqSmall.byCommand}`);
    console.log(
      `detail ingest cloud tier (CountingBackend under retries): ${cc.puts} pack puts, ${(cc.bytes / MB).toFixed(1)} MB written for ${(ingested / MB).toFixed(1)} MB of objects (x${fmt(cc.bytes / ingested, 3)}); ` +
        `local tier: ${l2.puts - l0.puts} puts, ${((l2.bytesWritten - l0.bytesWritten) / MB).toFixed(1)} MB; local usage after ingest ${localAfterIngest === undefined ? "n/a" : `${localAfterIngest.packs} packs, ${(localAfterIngest.bytes / MB).toFixed(1)} MB`}; ` +
        `localWriteFailures=${tierStats.counters.localWriteFailures}`,
    );
    console.log(
      `detail requests-per-GB by class: large stowage=${fmt(stReqLarge.puts / (totalLarge / GB), 1)} plain=${fmt(plReqLarge.puts / (totalLarge / GB), 1)} PUTs; ` +
        `small stowage=${fmt(stReqSmall.puts / (totalSmall / GB), 1)} plain=${fmt(plReqSmall.puts / (totalSmall / GB), 1)} PUTs`,
    );
    console.log(`detail requests-per-GB if plain used the SDK's Upload with 8 MiB parts: ${fmt(upload8 / gb, 1)} PUT-class (computed: ${cfg.largeCount} x ${largeBytes > 8 * MiB ? parts8 + 2 : 1} + ${cfg.smallCount})`);
    console.log(`detail read-local: ${cpuText(rdLocal)}; cloud requests ${RequestTally.since(c4, c3).byCommand}; local gets ${l4.gets - l3.gets}`);
    console.log(`detail purge before read-cloud: dropped ${purge.purged} packs (${(purge.purgedBytes / MB).toFixed(1)} MB), kept ${JSON.stringify(purge.kept)}; cloud requests ${RequestTally.since(c6, c5).byCommand}`);
    console.log(`detail read-cloud: ${cpuText(rdCloud)}; cloud requests ${RequestTally.since(c7, c6).byCommand}`);
    console.log(`detail read plain: ${cpuText(rdPlain)}; requests ${RequestTally.since(p4, p3).byCommand}`);
    console.log(`detail retries (cloud tier): attempts=${retry.attempts} retries=${retry.retries} throttles=${retry.throttles} giveUps=${retry.giveUps}`);
    console.log(`detail verify: ${bad.length === 0 ? `ok (${cfg.largeCount} large objects x 3 reads by SHA-256, ${sample} small objects from the cloud)` : bad.slice(0, 5).join("; ")}`);
    if (bad.length > 0) process.exitCode = 1;
  } finally {
    await cleanup();
  }
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s; load average now ${load()}${cfg.keep ? `; kept ${root}` : ""}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
