/**
 * S3 benchmark: `stowage serve` against a peer S3-compatible server (SeaweedFS, built by
 * scripts/install-s3-peer.sh), driven in the same run by the AWS SDK for JavaScript v3.
 *
 *   npm run bench:s3                     # 1 GiB large objects, 20,000 small objects
 *   npm run bench:s3 -- --quick          # 128 MiB large objects, 2,000 small objects (< 1 min)
 *   node dist/bench/s3.js [--quick] [--keep] [--servers stowage,peer] [--large-mb MiB] [--small N]
 *        [--concurrency N] [--phases put-small,get-small,put-large,get-large] [--seed N] [--dir DIR]
 *        [--peer-bin PATH] [--no-install] [--cpu-prof DIR] [--no-verify]
 *
 * Both servers are started fresh by this process as children, bound to 127.0.0.1: Stowage on a new
 * temp data directory (`node dist/src/cli/main.js serve --port 0 --log-level warn`, with the root
 * credentials and the master key from the environment), the peer with `weed server -s3` (master,
 * volume server, filer and S3 gateway in one process) on a new temp directory, both at once. Each
 * is ready when CreateBucket succeeds; then a request signed with a wrong secret must get 403 (both
 * check signatures), and one untimed 4 KiB PUT absorbs first-write costs (SeaweedFS creates its
 * volumes on the first write: about 9 s, mostly its master's deliberate delay after a fresh
 * start). Phases, each run on one server and then the other (the order alternates
 * from phase to phase so that neither always goes first on the shared machine):
 *
 * - **put-small / get-small**: N objects of 4 KiB (each distinct: an AES-128-CTR keystream of the
 *   run's seed and the object's index), `--concurrency` (64) workers sharing one S3Client whose
 *   NodeHttpHandler keeps up to 64 sockets alive. ops/s = N / wall time of the phase; latency is
 *   the time of each SDK `send` (signing included), p50/p99 over the N requests. Every GET body is
 *   compared with the expected bytes. Before put-small, 64 concurrent HeadBucket calls open the
 *   sockets, so neither server pays connection setup inside the timing.
 * - **put-large / get-large**: one object of `--large-mb` MiB (1024; --quick: 128), streamed from a
 *   generator (AES-128-CTR keystream, 1 MiB at a time, never held in memory) with one PutObject
 *   (ContentLength set; the SDK's default request checksums: a CRC32 trailer in an aws-chunked
 *   body). The GET streams the body and discards it, after checking its length, the first 16 MiB
 *   in full and a 64 KiB window every 64 MiB (regenerated from the keystream at that offset).
 *   MB/s with MB = 10^6 bytes. Random data: nothing for Stowage to dedup or compress.
 * - **backend-puts-per-1000-small** (Stowage only): files that appeared under DATA/bucket/ (the
 *   local directory that is Stowage's bucket: one file per backend PUT, packs under packs/)
 *   during put-small, per 1,000 client PUTs; counted live between the phases because the
 *   repository counter (`stowage stats --json` `backendPuts`) covers the whole run, large objects
 *   included. The counter is read after the server stops and printed as a detail cross-check.
 * - **peak-rss**: VmHWM of each server process (/proc/<pid>/status; Stowage's worker threads are
 *   in the same process; `weed server` is one process), polled every 250 ms and read just
 *   before the server is stopped. Also printed: each server's CPU seconds (utime+stime from
 *   /proc/<pid>/stat) per phase, a steadier figure than wall time on a shared machine.
 *
 * Client settings, the same for both: path-style, region us-east-1, maxAttempts 1, the SDK's default
 * request checksums (WHEN_SUPPORTED: CRC32), response checksum validation only when required (so
 * the client's CRC32 over GET bodies does not depend on whether a server stores checksums).
 * Durability differs: Stowage's local bucket fsyncs every pack and its metadata commits; SeaweedFS
 * does not fsync volume writes by default. Noted, not equalized. The client runs on the same cores
 * as the servers and is not cheap (the SDK costs about 1.5-3 ms of CPU per small request here, as
 * much as a server), so on 2 cores the small-object ratios are compressed towards 1.
 *
 * Servers are stopped at the end by pid (SIGTERM, then SIGKILL after 20 s for Stowage, 5 s for the
 * peer, which does not exit promptly on SIGTERM); the temp directory is removed unless --keep. If the peer cannot be installed or started, its values are `n/a` and the
 * run goes on. `--cpu-prof DIR` runs Stowage's server under `node --cpu-prof` (profile written to
 * DIR when it stops; summarize with dist/bench/cpuprofile-top.js).
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { setMaxListeners } from "node:events";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GetObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import {
  Keystream,
  binNodeFlags,
  MB,
  MiB,
  PEER_BIN_DEFAULT,
  REPO_ROOT,
  createBucket as createBucketIn,
  ensurePeer,
  errText,
  readCpuSeconds,
  s3Client,
  startChild,
  startPeer as startWeed,
  stopServer as stopChild,
  track,
  waitFor,
  type Server as ChildServer,
} from "./peer.js";

type ServerName = "stowage" | "peer";
const SERVERS: readonly ServerName[] = ["stowage", "peer"];
type Phase = "put-small" | "get-small" | "put-large" | "get-large";
const PHASES: readonly Phase[] = ["put-small", "get-small", "put-large", "get-large"];
const BUCKET = "bench";
const SMALL_SIZE = 4096;
const STOWAGE_MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const ACCESS_KEY = "STOWAGEBENCHACCESS01";
const SECRET_KEY = "stowage-bench-secret-key-0123456789abcdef";

interface Config {
  mode: "quick" | "default";
  servers: ServerName[];
  phases: Phase[];
  largeMiB: number;
  smallCount: number;
  concurrency: number;
  seed: number;
  dir: string | undefined;
  keep: boolean;
  install: boolean;
  peerBin: string;
  cpuProfDir: string | undefined;
  verify: boolean;
  /** Budget for one phase on one server; past it the phase is abandoned with an error. */
  phaseTimeoutMs: number;
}

function usage(): string {
  return (
    "usage: node dist/bench/s3.js [--quick] [--keep] [--servers stowage,peer] [--large-mb MiB] [--small N] [--concurrency N]\n" +
    "         [--phases put-small,get-small,put-large,get-large] [--seed N] [--dir DIR] [--peer-bin PATH] [--no-install]\n" +
    "         [--cpu-prof DIR] [--no-verify]"
  );
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    mode: quick ? "quick" : "default",
    servers: [...SERVERS],
    phases: [...PHASES],
    largeMiB: quick ? 128 : 1024,
    smallCount: quick ? 2000 : 20_000,
    concurrency: 64,
    seed: 1,
    dir: undefined,
    keep: false,
    install: true,
    peerBin: process.env.S3_PEER_BIN ?? PEER_BIN_DEFAULT,
    cpuProfDir: undefined,
    verify: true,
    phaseTimeoutMs: quick ? 60_000 : 15 * 60_000,
  };
  const list = <T extends string>(v: string, all: readonly T[], what: string): T[] => {
    const out = v.split(",").map((s) => s.trim()) as T[];
    for (const x of out) if (!all.includes(x)) throw new Error(`unknown ${what} "${x}" (${all.join(", ")})`);
    return out;
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
    else if (a === "--servers") cfg.servers = list(val(), SERVERS, "server");
    else if (a === "--phases") cfg.phases = list(val(), PHASES, "phase");
    else if (a === "--large-mb") cfg.largeMiB = num(1);
    else if (a === "--small") cfg.smallCount = num(1);
    else if (a === "--concurrency") cfg.concurrency = num(1);
    else if (a === "--seed") cfg.seed = num(0);
    else if (a === "--dir") cfg.dir = val();
    else if (a === "--peer-bin") cfg.peerBin = val();
    else if (a === "--no-install") cfg.install = false;
    else if (a === "--cpu-prof") cfg.cpuProfDir = val();
    else if (a === "--no-verify") cfg.verify = false;
    else if (a === "--help" || a === "-h") {
      console.log(usage());
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  return cfg;
}

function log(msg: string): void {
  process.stderr.write(`[s3 bench] ${msg}\n`);
}

// ------------------------------------------------------------------------------ test data

/** The 4 KiB body of small object `i`. */
function smallBody(seed: number, server: ServerName, i: number): Buffer {
  return smallStreams(seed, server).bytes(i * SMALL_SIZE, SMALL_SIZE);
}
const smallStreamCache = new Map<string, Keystream>();
function smallStreams(seed: number, server: ServerName): Keystream {
  const k = `${seed}/${server}`;
  let s = smallStreamCache.get(k);
  if (s === undefined) smallStreamCache.set(k, (s = Keystream.of(seed, `small/${server}`)));
  return s;
}
const smallKey = (i: number): string => `small/${String(i).padStart(8, "0")}`;

// ------------------------------------------------------------------------------ processes

type Server = ChildServer<ServerName>;

const STOWAGE_MASTER_KEY_HEX = randomBytes(32).toString("hex");

function stowageEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    STOWAGE_ROOT_ACCESS_KEY: ACCESS_KEY,
    STOWAGE_ROOT_SECRET_KEY: SECRET_KEY,
    STOWAGE_MASTER_KEY: STOWAGE_MASTER_KEY_HEX,
    STOWAGE_PASSPHRASE: "",
  };
}

async function startStowage(root: string, cfg: Config): Promise<Server> {
  const dataDir = join(root, "stowage-data");
  const nodeArgs: string[] = [];
  if (cfg.cpuProfDir !== undefined) {
    mkdirSync(cfg.cpuProfDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${cfg.cpuProfDir}`);
  }
  const args = [...binNodeFlags(STOWAGE_MAIN), ...nodeArgs, STOWAGE_MAIN, "serve", "--data", dataDir, "--port", "0", "--address", "127.0.0.1", "--log-level", "warn"];
  const { child, output } = startChild("stowage", process.execPath, args, stowageEnv(), join(root, "stowage.log"));
  let exited = "";
  child.once("exit", (code, signal) => (exited = `exited (${signal ?? code}) before listening: ${output().trim().slice(-500)}`));
  const srv = track("stowage", `stowage ${stowageVersion()} (node ${process.version})`, child, output, "", dataDir);
  try {
    srv.endpoint = await waitFor(
      "stowage serve",
      30_000,
      () => /S3 endpoint (http:\/\/\S+)/.exec(output())?.[1],
      () => (exited === "" ? undefined : exited),
    );
  } catch (err) {
    await stopServer(srv);
    throw err;
  }
  return srv;
}

function stowageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version?: string }).version ?? "?";
  } catch {
    return "?";
  }
}

async function startPeer(root: string, cfg: Config, version: string): Promise<Server> {
  return startWeed("peer", root, cfg.peerBin, version, { accessKey: ACCESS_KEY, secretKey: SECRET_KEY });
}

/** Stops a server by pid: SIGTERM, then SIGKILL after 20 s for Stowage (it drains and closes its store), 5 s for the peer. */
async function stopServer(srv: Server): Promise<void> {
  await stopChild(srv, srv.name === "stowage" ? 20_000 : 5_000, log);
}

// ------------------------------------------------------------------------------ S3 clients

function client(endpoint: string, sockets: number, secret = SECRET_KEY): S3Client {
  return s3Client(endpoint, { accessKey: ACCESS_KEY, secretKey: secret }, sockets);
}

/** Whether the server refuses a request signed with a wrong secret (both must check signatures for a fair comparison). */
async function checksSignatures(srv: Server): Promise<string> {
  const bad = client(srv.endpoint, 1, SECRET_KEY + "x");
  try {
    await bad.send(new HeadBucketCommand({ Bucket: BUCKET }));
    return "NOT checked (a wrong secret was accepted)";
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    return status === 403 ? "checked (wrong secret: 403)" : `unclear (wrong secret: ${errText(err)})`;
  } finally {
    bad.destroy();
  }
}

/** Creates the bucket, retrying until the server answers (the peer takes a few seconds to start). */
function createBucket(srv: Server, s3: S3Client, timeoutMs: number): Promise<void> {
  return createBucketIn(srv, s3, BUCKET, timeoutMs);
}

// ------------------------------------------------------------------------------ phases

interface PhaseResult {
  /** ops/s or MB/s. */
  rate: number | undefined;
  seconds: number;
  latenciesMs: Float64Array | undefined;
  serverCpuSec: number | undefined;
  clientCpuSec: number;
  error: string | undefined;
  note: string | undefined;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

async function withDeadline<T>(ms: number, what: string, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  // Every request of the phase listens on this signal.
  setMaxListeners(0, ac.signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new Error(`${what} timed out after ${(ms / 1000).toFixed(0)} s`));
    }, ms);
  });
  try {
    return await Promise.race([body(ac.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function runSmall(kind: "put" | "get", srv: Server, s3: S3Client, cfg: Config, signal: AbortSignal): Promise<{ lat: Float64Array; bad: number }> {
  const n = cfg.smallCount;
  const lat = new Float64Array(n);
  let next = 0;
  let bad = 0;
  let firstError: unknown;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (firstError !== undefined || signal.aborted) return;
      const i = next++;
      if (i >= n) return;
      const body = smallBody(cfg.seed, srv.name, i);
      const t0 = performance.now();
      try {
        if (kind === "put") {
          await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: smallKey(i), Body: body, ContentLength: SMALL_SIZE }), { abortSignal: signal });
          lat[i] = performance.now() - t0;
        } else {
          const res = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: smallKey(i) }), { abortSignal: signal });
          const got = await res.Body!.transformToByteArray();
          lat[i] = performance.now() - t0;
          if (cfg.verify ? !body.equals(got) : got.length !== SMALL_SIZE) bad++;
        }
      } catch (err) {
        firstError ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  if (firstError !== undefined) throw firstError;
  return { lat, bad };
}

const largeKeys = new Map<ServerName, string>();
const largeKey = (srv: Server): string => `large/${srv.name}-${Date.now().toString(36)}`;

async function runLargePut(srv: Server, s3: S3Client, cfg: Config, key: string, signal: AbortSignal): Promise<void> {
  const len = cfg.largeMiB * MiB;
  const ks = Keystream.of(cfg.seed, `large/${srv.name}/${key}`);
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: ks.stream(len), ContentLength: len }), { abortSignal: signal });
}

async function runLargeGet(srv: Server, s3: S3Client, cfg: Config, key: string, signal: AbortSignal): Promise<string | undefined> {
  const len = cfg.largeMiB * MiB;
  const ks = Keystream.of(cfg.seed, `large/${srv.name}/${key}`);
  const res = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }), { abortSignal: signal });
  const body = res.Body as unknown as AsyncIterable<Uint8Array>;
  const FULL = 16 * MiB;
  const WINDOW = 64 * 1024;
  const EVERY = 64 * MiB;
  let pos = 0;
  let problem: string | undefined;
  for await (const piece of body) {
    if (cfg.verify && problem === undefined) {
      const start = pos;
      const end = pos + piece.length;
      // Regions to compare inside [start, end): the first FULL bytes, and a WINDOW at every multiple of EVERY.
      const regions: [number, number][] = [];
      if (start < FULL) regions.push([start, Math.min(end, FULL)]);
      for (let w = Math.max(EVERY, Math.ceil(start / EVERY) * EVERY - EVERY); w < end; w += EVERY) {
        const a = Math.max(start, w);
        const b = Math.min(end, w + WINDOW);
        if (a < b && w >= FULL) regions.push([a, b]);
      }
      for (const [a, b] of regions) {
        const a16 = a - (a % 16);
        const want = ks.bytes(a16, b - a16).subarray(a - a16);
        const got = Buffer.from(piece.buffer, piece.byteOffset + (a - start), b - a);
        if (!want.equals(got)) {
          problem = `content differs in [${a}, ${b})`;
          break;
        }
      }
    }
    pos += piece.length;
  }
  if (pos !== len) return `length ${pos}, expected ${len}`;
  return problem;
}

async function runPhase(phase: Phase, srv: Server, s3: S3Client, cfg: Config, state: { largeKey: Map<ServerName, string> }): Promise<PhaseResult> {
  const cpu0 = readCpuSeconds(srv.pid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const result: PhaseResult = { rate: undefined, seconds: 0, latenciesMs: undefined, serverCpuSec: undefined, clientCpuSec: 0, error: undefined, note: undefined };
  try {
    if (srv.exited) throw new Error(`server exited (${srv.exitInfo})`);
    await withDeadline(cfg.phaseTimeoutMs, phase, async (signal) => {
      if (phase === "put-small" || phase === "get-small") {
        const { lat, bad } = await runSmall(phase === "put-small" ? "put" : "get", srv, s3, cfg, signal);
        result.seconds = (performance.now() - t0) / 1000;
        result.rate = cfg.smallCount / result.seconds;
        result.latenciesMs = lat.sort();
        if (bad > 0) result.error = `${bad} of ${cfg.smallCount} bodies differ`;
      } else if (phase === "put-large") {
        const key = largeKey(srv);
        await runLargePut(srv, s3, cfg, key, signal);
        result.seconds = (performance.now() - t0) / 1000;
        result.rate = (cfg.largeMiB * MiB) / MB / result.seconds;
        state.largeKey.set(srv.name, key);
      } else {
        const key = state.largeKey.get(srv.name);
        if (key === undefined) throw new Error("no large object (put-large did not run or failed)");
        const problem = await runLargeGet(srv, s3, cfg, key, signal);
        result.seconds = (performance.now() - t0) / 1000;
        result.rate = (cfg.largeMiB * MiB) / MB / result.seconds;
        if (problem !== undefined) result.error = `verify: ${problem}`;
      }
    });
  } catch (err) {
    result.seconds = (performance.now() - t0) / 1000;
    result.rate = undefined;
    result.error = errText(err) + (srv.exited ? ` (server ${srv.exitInfo}: ${srv.output().trim().slice(-300)})` : "");
  }
  const cpu1 = readCpuSeconds(srv.pid);
  if (cpu0 !== undefined && cpu1 !== undefined) result.serverCpuSec = cpu1 - cpu0;
  const c1 = process.cpuUsage(c0);
  result.clientCpuSec = (c1.user + c1.system) / 1e6;
  return result;
}

/** Files under the local bucket directory, except the temporaries: one per backend PUT still present. */
function countBucketFiles(dir: string): number {
  let n = 0;
  const walk = (p: string): void => {
    let ents;
    try {
      ents = readdirSync(p, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      if (e.name.includes("~")) continue;
      if (e.isDirectory()) walk(join(p, e.name));
      else if (e.isFile()) n++;
    }
  };
  walk(dir);
  return n;
}

function stowageStats(dataDir: string): { backendPuts?: number; plainPuts?: number; error?: string } {
  const r = spawnSync(process.execPath, [...binNodeFlags(STOWAGE_MAIN), STOWAGE_MAIN, "stats", "--json", "--data", dataDir], { env: stowageEnv(), encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) return { error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split("\n")[0]!.slice(0, 200) };
  try {
    const o = JSON.parse(r.stdout) as { backendPuts?: unknown; plainPuts?: unknown };
    return {
      ...(typeof o.backendPuts === "number" ? { backendPuts: o.backendPuts } : {}),
      ...(typeof o.plainPuts === "number" ? { plainPuts: o.plainPuts } : {}),
    };
  } catch {
    return { error: "stats --json printed no JSON" };
  }
}

// ------------------------------------------------------------------------------ main

const fmt = (x: number | undefined, digits: number): string => (x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits));

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const load = (): string => loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`machine: ${availableParallelism()} cpus (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load average ${load()}`);

  // ---- the peer binary (installed once when missing)
  let peerVer: string | undefined;
  let peerNa: string | undefined;
  if (cfg.servers.includes("peer")) {
    peerVer = ensurePeer(cfg.peerBin, cfg.install, log);
    if (peerVer === undefined) peerNa = `peer not installed (${cfg.peerBin}; run scripts/install-s3-peer.sh)`;
  }
  if (!existsSync(STOWAGE_MAIN)) throw new Error(`${STOWAGE_MAIN} is missing: run npm run build`);

  const root =
    cfg.dir !== undefined ? (mkdirSync(cfg.dir, { recursive: true }), mkdtempSync(join(cfg.dir, "stowage-s3-"))) : mkdtempSync(join(tmpdir(), "stowage-s3-"));
  const servers = new Map<ServerName, Server>();
  const na = new Map<ServerName, string>();
  if (peerNa !== undefined) na.set("peer", peerNa);
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    await Promise.all([...servers.values()].map((s) => stopServer(s)));
    if (!cfg.keep) rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping the servers, removing ${root}`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const results = new Map<string, PhaseResult>();
  const rk = (p: Phase, s: ServerName): string => `${p}/${s}`;
  const clients = new Map<ServerName, S3Client>();
  let backendFilesDuringSmall: number | undefined;
  let stats: ReturnType<typeof stowageStats> | undefined;
  const startupSec = new Map<ServerName, number>();
  const authNote = new Map<ServerName, string>();
  const firstPutMs = new Map<ServerName, number>();
  try {
    // ---- start the servers, both at once (each idles while the other is measured)
    const bringUp = async (name: ServerName): Promise<void> => {
      const t0 = performance.now();
      try {
        const srv = name === "stowage" ? await startStowage(root, cfg) : await startPeer(root, cfg, peerVer!);
        servers.set(name, srv);
        const s3 = client(srv.endpoint, cfg.concurrency);
        clients.set(name, s3);
        await createBucket(srv, s3, 60_000);
        // Open the connections before timing: concurrent HeadBucket calls.
        await Promise.all(Array.from({ length: cfg.concurrency }, () => s3.send(new HeadBucketCommand({ Bucket: BUCKET }))));
        startupSec.set(name, (performance.now() - t0) / 1000);
        authNote.set(name, await checksSignatures(srv));
        // One untimed PUT: the peer creates its volumes on the first write (a one-time stall of seconds).
        const w0 = performance.now();
        await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: "warmup", Body: randomBytes(SMALL_SIZE) }));
        firstPutMs.set(name, performance.now() - w0);
        log(`${name}: ${srv.version} at ${srv.endpoint} (pid ${srv.pid}), ready in ${startupSec.get(name)!.toFixed(1)} s`);
      } catch (err) {
        if (name === "stowage") throw err;
        na.set(name, `peer did not start: ${errText(err)}`);
        log(na.get(name)!);
        const srv = servers.get(name);
        if (srv !== undefined) {
          await stopServer(srv);
          servers.delete(name);
        }
      }
    };
    const ups = await Promise.allSettled(cfg.servers.filter((n) => !na.has(n)).map(bringUp));
    for (const u of ups) if (u.status === "rejected") throw u.reason;
    console.log(
      `s3 bench: mode=${cfg.mode} small=${cfg.smallCount}x${SMALL_SIZE} B concurrency=${cfg.concurrency} large=${cfg.largeMiB} MiB; ` +
        `stowage=${servers.get("stowage")?.version ?? na.get("stowage") ?? "n/a"}; peer=${servers.get("peer")?.version ?? na.get("peer") ?? "n/a"}`,
    );

    // ---- the phases
    for (const [pi, phase] of cfg.phases.entries()) {
      const live = cfg.servers.filter((s) => servers.has(s));
      const order = pi % 2 === 0 ? live : [...live].reverse();
      for (const name of order) {
        const srv = servers.get(name)!;
        const before = name === "stowage" && phase === "put-small" ? countBucketFiles(join(srv.dataDir, "bucket")) : undefined;
        const r = await runPhase(phase, srv, clients.get(name)!, cfg, { largeKey: largeKeys });
        if (before !== undefined && r.error === undefined) backendFilesDuringSmall = countBucketFiles(join(srv.dataDir, "bucket")) - before;
        results.set(rk(phase, name), r);
        log(
          `${phase} ${name}: ${r.error !== undefined ? `error: ${r.error}` : `${fmt(r.rate, phase.endsWith("small") ? 0 : 1)} ${phase.endsWith("small") ? "ops/s" : "MB/s"}`}` +
            ` in ${r.seconds.toFixed(2)} s; server cpu ${fmt(r.serverCpuSec, 2)} s, client cpu ${r.clientCpuSec.toFixed(2)} s`,
        );
      }
    }
  } finally {
    for (const c of clients.values()) c.destroy();
    // Stop both (records the final VmHWM), then read Stowage's counters from the closed repository.
    await Promise.all([...servers.values()].map((s) => stopServer(s)));
    const st = servers.get("stowage");
    if (st !== undefined && existsSync(st.dataDir)) stats = stowageStats(st.dataDir);
    await cleanup();
  }

  // ---- the report
  const has = (s: ServerName): boolean => cfg.servers.includes(s);
  const value = (p: Phase, s: ServerName, f: (r: PhaseResult) => number | undefined, digits: number): string => {
    if (!has(s)) return "n/a";
    if (na.has(s)) return "n/a";
    const r = results.get(rk(p, s));
    if (r === undefined) return "n/a";
    if (r.error !== undefined) return `error(${r.error.slice(0, 80).replace(/\s+/g, "_")})`;
    return fmt(f(r), digits);
  };
  const num = (p: Phase, s: ServerName, f: (r: PhaseResult) => number | undefined): number | undefined => {
    const r = results.get(rk(p, s));
    return r === undefined || r.error !== undefined || na.has(s) ? undefined : f(r);
  };
  const ratios: { label: string; st: number | undefined; peer: number | undefined; higherIsBetter: boolean }[] = [];
  const line = (label: string, p: Phase, unit: string, digits: number): void => {
    console.log(`s3 ${label}: stowage=${value(p, "stowage", (r) => r.rate, digits)} peer=${value(p, "peer", (r) => r.rate, digits)} ${unit}`);
    ratios.push({ label, st: num(p, "stowage", (r) => r.rate), peer: num(p, "peer", (r) => r.rate), higherIsBetter: true });
  };
  const has4 = (p: Phase): boolean => cfg.phases.includes(p);
  if (has4("put-small")) line("put-small", "put-small", "ops/s", 0);
  if (has4("get-small")) line("get-small", "get-small", "ops/s", 0);
  if (has4("put-large")) line("put-large", "put-large", "MB/s", 0);
  if (has4("get-large")) line("get-large", "get-large", "MB/s", 0);
  const pct = (p: Phase, s: ServerName, q: number): number | undefined => num(p, s, (r) => (r.latenciesMs === undefined ? undefined : percentile(r.latenciesMs, q)));
  const latCell = (p: Phase, s: ServerName): string => {
    const v = value(p, s, () => 0, 0);
    if (v !== "0") return v;
    return `${fmt(pct(p, s, 50), 1)}/${fmt(pct(p, s, 99), 1)}`;
  };
  for (const [label, p] of [
    ["put-small", "put-small"],
    ["get-small", "get-small"],
  ] as const) {
    if (!has4(p)) continue;
    console.log(`s3 latency-${label}-p50/p99: stowage=${latCell(p, "stowage")} peer=${latCell(p, "peer")} ms`);
    ratios.push({ label: `latency-${label}-p50`, st: pct(p, "stowage", 50), peer: pct(p, "peer", 50), higherIsBetter: false });
    ratios.push({ label: `latency-${label}-p99`, st: pct(p, "stowage", 99), peer: pct(p, "peer", 99), higherIsBetter: false });
  }
  if (has("stowage") && has4("put-small")) {
    const perK = backendFilesDuringSmall === undefined ? undefined : (backendFilesDuringSmall * 1000) / cfg.smallCount;
    console.log(`s3 backend-puts-per-1000-small: stowage=${fmt(perK, perK !== undefined && perK < 10 ? 1 : 0)}`);
  }
  const rssMb = (s: ServerName): number | undefined => {
    const srv = servers.get(s);
    return srv === undefined || srv.peakRssKb === 0 ? undefined : srv.peakRssKb / 1024;
  };
  console.log(`s3 peak-rss: stowage=${fmt(rssMb("stowage"), 0)} peer=${fmt(rssMb("peer"), 0)} MB`);
  ratios.push({ label: "peak-rss", st: rssMb("stowage"), peer: rssMb("peer"), higherIsBetter: false });

  for (const { label, st, peer, higherIsBetter } of ratios) {
    if (!has("stowage") || !has("peer")) break;
    console.log(`ratio ${label}: stowage/peer=${st !== undefined && peer !== undefined && peer > 0 ? (st / peer).toFixed(2) : "n/a"}${higherIsBetter ? "" : " (lower is better)"}`);
  }

  // ---- details
  for (const p of cfg.phases) {
    const per = (s: ServerName): string => {
      const r = results.get(rk(p, s));
      if (r === undefined || na.has(s)) return "n/a";
      const ops = p.endsWith("small") ? cfg.smallCount : undefined;
      const cpuPer =
        r.serverCpuSec === undefined
          ? "n/a"
          : ops !== undefined
            ? `${((r.serverCpuSec * 1000) / ops).toFixed(3)} ms/op`
            : `${((cfg.largeMiB * MiB) / MB / Math.max(r.serverCpuSec, 1e-3)).toFixed(0)} MB/cpu-s`;
      return `${r.seconds.toFixed(2)} s wall, server cpu ${fmt(r.serverCpuSec, 2)} s (${cpuPer}), client cpu ${r.clientCpuSec.toFixed(2)} s${r.error !== undefined ? `, error: ${r.error}` : ""}`;
    };
    console.log(`detail ${p}: stowage: ${per("stowage")}; peer: ${per("peer")}`);
  }
  if (has("stowage") && has4("put-small")) {
    const clientPuts = 1 + (has4("put-small") ? cfg.smallCount : 0) + (has4("put-large") ? 1 : 0);
    console.log(
      `detail stowage backend: ${backendFilesDuringSmall ?? "n/a"} files written to the bucket during ${cfg.smallCount} small PUTs; ` +
        (stats === undefined
          ? "stats n/a"
          : stats.error !== undefined
            ? `stats --json failed: ${stats.error}`
            : `stats --json after stop: backendPuts=${stats.backendPuts ?? "?"} plainPuts=${stats.plainPuts ?? "?"} for ${clientPuts} client PUTs in the whole run`),
    );
  }
  for (const s of cfg.servers) {
    const srv = servers.get(s);
    if (na.has(s)) console.log(`detail ${s}: n/a: ${na.get(s)}`);
    else if (srv !== undefined) {
      console.log(`detail ${s}: ${srv.version}; ready in ${fmt(startupSec.get(s), 1)} s; first (untimed) PUT ${fmt(firstPutMs.get(s), 0)} ms; peak RSS ${fmt(rssMb(s), 0)} MB; signatures ${authNote.get(s) ?? "n/a"}`);
    }
  }
  if (cfg.cpuProfDir !== undefined) console.log(`detail cpu profile of stowage serve in ${cfg.cpuProfDir} (node dist/bench/cpuprofile-top.js ${cfg.cpuProfDir}/CPU.*.cpuprofile)`);
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s; load average now ${load()}${cfg.keep ? `; kept ${root}` : ""}`);
  const anyError = [...results.values()].some((r) => r.error !== undefined) || (has("stowage") && !servers.has("stowage"));
  if (anyError) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
