/**
 * Recovery benchmark (issue 7, docs/RECOVERY.md): how long `recoverRepository` (src/store/recover.ts,
 * `stowage recover`) takes to rebuild a data directory from a bucket of many small objects, and how
 * much memory it needs; and what the metadata journal costs in the bucket (PUTs and bytes).
 *
 *   npm run bench:recover                     # 100,000 and 1,000,000 objects; overhead runs
 *   npm run bench:recover -- --quick          # 100,000 objects only; smaller batched overhead run
 *   node dist/bench/recover.js [--quick] [--keep] [--objects N[,N...]] [--batch N] [--in-flight N]
 *        [--min-size B] [--max-size B] [--overhead-objects N] [--clients N] [--client-objects N]
 *        [--commit-delay MS] [--encoder-threads N] [--seed N] [--dir DIR] [--no-overhead] [--no-recover]
 *
 * Everything runs on a fresh temp directory (under --dir, else os.tmpdir()), removed at the end
 * unless --keep. Each repository is made with `initRepository(DATA, { keys, bucket: BUCKET })`: the
 * bucket is a local directory next to (not inside) the data directory, 16 MiB packs, the default
 * chunker, a fresh random master key (handed to the child processes in STOWAGE_MASTER_KEY, so no
 * scrypt). Repositories are opened with `openRepository(DATA, { journal, events: false })` (no
 * outbox rows: they never reach the bucket) and the cloud tier wrapped in a CountingBackend
 * (`wrapBackend`), which counts every PUT to the bucket and its bytes.
 *
 * Objects: distinct, 100-1000 bytes (uniform; --min-size/--max-size), cut from a 1 MiB AES-CTR
 * keystream pool at an offset derived from the index, with the index written into the first 8
 * bytes (so no two objects share a chunk: nothing dedups; random bytes: nothing compresses). Keys
 * `o/00000000`, one unversioned bucket. The same seed gives the same objects, so a child process
 * can regenerate any object to check what it reads back.
 *
 * For each object count N (100,000 and 1,000,000; --quick: 100,000):
 * 1. **write** (untimed for the headline, printed as a detail): journal on, `putObjects` batches of
 *    --batch (2,000) items, --in-flight (4) batches at once, 8 streams per batch. One batch is one
 *    metadata transaction and so one journal entry: the bucket holds N / 2,000 large entries, where
 *    S3 clients (one putObject each) leave one small entry per object. `--batch 1 --in-flight 64`
 *    writes that shape instead (about half the write rate here).
 * 2. **rebuild-index, the reference**: a child process (`node recover.js --child rebuild`) opens
 *    the written data directory and runs `rebuildIndex` (what `stowage rebuild-index` runs: read
 *    every pack's index, recount references from the manifests, rewrite the chunk and pack
 *    records). seconds = openRepository + rebuildIndex + close.
 * 3. **recover**: a child process (`--child recover`) runs `recoverRepository(NEWDIR, { bucket })`
 *    on the same bucket: pack indexes, journal records, replay, the same rebuildIndex, fsck
 *    (metadata and indexes, not --read-data), config files. seconds = that call. Peak RSS =
 *    `process.resourceUsage().maxRSS` of the child read right after the call (every thread of the
 *    process, node's own baseline included; printed as a detail). RSS is also sampled every 50 ms
 *    and at each progress callback to show which phase needs the time and the memory (the phases
 *    are recoverRepository's progress phases; `chunks` also holds the fsck, which reports no
 *    progress without --read-data). After the peak is read
 *    the child checks the result (untimed): fsck clean, no missing chunk, N manifests and chunks,
 *    and 64 sampled objects read back byte for byte through a freshly opened recovered repository.
 *    The rebuild runs first, then the recovery; both read the bucket the write just left in the
 *    page cache.
 *    Printed: `recover objects=N: seconds=S peak-rss=M MB`, the reference and recover/rebuild.
 *
 * Metadata overhead (journal on minus journal off, the same objects, fresh repositories, in this
 * run; PUTs and bytes counted from after CreateBucket to after close):
 * - **batched** (the headline `recover metadata-overhead` line): --overhead-objects objects
 *   (20,000; --quick 10,000) written as in step 1. puts-per-1000-objects = (PUTs on − PUTs off) ×
 *   1000 / objects; bytes-per-object = (bytes on − bytes off) / objects.
 * - **concurrent putObject** (`recover metadata-overhead-concurrent`): --clients (16) clients each
 *   awaiting one `putObject` at a time, --client-objects (2,000) objects, --commit-delay (200 ms,
 *   `stowage serve`'s default) group-commit window: what S3 clients do. ops/s and latencies are
 *   printed as details (the journal may make a put wait for its entry's pack too).
 * The journal's own sealed bytes (PackRecord.journal, summed over the packs) are printed too;
 * the rest of the byte difference is pack framing (headers, index entries, trailers).
 *
 * MB here is 2^20 bytes for RSS (as the other benchmarks print maxRSS / VmHWM) and 10^6 bytes for
 * bucket sizes. The machine is shared: only ratios within one run mean much.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CountingBackend } from "../src/backend/counting.js";
import { RepositoryKeys, formatMasterKey, keysFromEnvironment } from "../src/codec/keys.js";
import { initRepository, openRepository, type Repository } from "../src/store/repository.js";
import { recoverRepository } from "../src/store/recover.js";
import { rebuildIndex } from "../src/store/rebuild.js";
import type { BatchItem } from "../src/store/store.js";
import { Keystream, MB, MiB, errText } from "./peer.js";

const THIS_FILE = fileURLToPath(import.meta.url);
const BUCKET = "bench";
const SAMPLE_READS = 64;

interface Config {
  mode: "quick" | "default";
  objects: number[];
  batch: number;
  inFlight: number;
  minSize: number;
  maxSize: number;
  overheadObjects: number;
  clients: number;
  clientObjects: number;
  commitDelayMs: number;
  encoderThreads: number | undefined;
  seed: number;
  dir: string | undefined;
  keep: boolean;
  overhead: boolean;
  recover: boolean;
}

function usage(): string {
  return (
    "usage: node dist/bench/recover.js [--quick] [--keep] [--objects N[,N...]] [--batch N] [--in-flight N] [--min-size B] [--max-size B]\n" +
    "         [--overhead-objects N] [--clients N] [--client-objects N] [--commit-delay MS] [--encoder-threads N] [--seed N] [--dir DIR] [--no-overhead] [--no-recover]"
  );
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    mode: quick ? "quick" : "default",
    objects: quick ? [100_000] : [100_000, 1_000_000],
    batch: 2000,
    inFlight: 4,
    minSize: 100,
    maxSize: 1000,
    overheadObjects: quick ? 10_000 : 20_000,
    clients: 16,
    clientObjects: 2000,
    commitDelayMs: 200,
    encoderThreads: undefined,
    seed: 1,
    dir: undefined,
    keep: false,
    overhead: true,
    recover: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    const toNum = (s: string, min: number): number => {
      const v = Number(s.replace(/_/g, ""));
      if (!Number.isFinite(v) || v < min) throw new Error(`${a} needs a number >= ${min}, not ${s}`);
      return Math.floor(v);
    };
    const num = (min: number): number => toNum(val(), min);
    if (a === "--quick") continue;
    else if (a === "--keep") cfg.keep = true;
    else if (a === "--objects") cfg.objects = val().split(",").map((s) => toNum(s, 1));
    else if (a === "--batch") cfg.batch = num(1);
    else if (a === "--in-flight") cfg.inFlight = num(1);
    else if (a === "--min-size") cfg.minSize = num(16);
    else if (a === "--max-size") cfg.maxSize = num(16);
    else if (a === "--overhead-objects") cfg.overheadObjects = num(1);
    else if (a === "--clients") cfg.clients = num(1);
    else if (a === "--client-objects") cfg.clientObjects = num(1);
    else if (a === "--commit-delay") cfg.commitDelayMs = num(0);
    else if (a === "--encoder-threads") cfg.encoderThreads = num(0);
    else if (a === "--seed") cfg.seed = num(0);
    else if (a === "--dir") cfg.dir = val();
    else if (a === "--no-overhead") cfg.overhead = false;
    else if (a === "--no-recover") cfg.recover = false;
    else if (a === "--help" || a === "-h") {
      console.log(usage());
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  if (cfg.maxSize < cfg.minSize) throw new Error("--max-size must be >= --min-size");
  if (cfg.maxSize > 65536) throw new Error("--max-size at most 65536 (small objects)");
  return cfg;
}

function log(msg: string): void {
  process.stderr.write(`[recover bench] ${msg}\n`);
}

const fmt = (x: number | undefined, digits: number): string => (x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits));
const kbToMb = (kb: number): number => kb / 1024;
const rssMb = (): number => process.memoryUsage.rss() / MiB;
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(" ");

// ------------------------------------------------------------------------------ objects

/** The benchmark's objects: distinct, incompressible, reproducible from the seed. */
class Objects {
  static readonly #POOL = MiB;
  readonly #pool: Buffer;

  constructor(
    readonly seed: number,
    readonly minSize: number,
    readonly maxSize: number,
  ) {
    this.#pool = Keystream.of(seed, "pool", "stowage-recover-bench").bytes(0, Objects.#POOL);
  }

  static key(i: number): string {
    return `o/${String(i).padStart(8, "0")}`;
  }

  /** A cheap integer hash of i (splitmix-like, 32 bits). */
  static #mix(i: number): number {
    let x = (i + 0x9e3779b9) | 0;
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
    return (x ^ (x >>> 16)) >>> 0;
  }

  size(i: number): number {
    return this.minSize + (Objects.#mix(i) % (this.maxSize - this.minSize + 1));
  }

  body(i: number): Buffer {
    const n = this.size(i);
    const off = Objects.#mix(i ^ 0x5bd1e995) % (Objects.#POOL - n);
    const b = Buffer.from(this.#pool.subarray(off, off + n));
    // The index (and the seed) in the first bytes: every object distinct.
    b.writeUInt32BE(i >>> 0, 0);
    b.writeUInt32BE(this.seed >>> 0, 4);
    return b;
  }
}

// ------------------------------------------------------------------------------ writing

interface Counted {
  puts: number;
  bytes: number;
  /** Sealed journal bytes in the packs (PackRecord.journal summed). */
  journalBytes: number;
  packs: number;
  seconds: number;
  latencies?: number[];
}

async function newRepo(root: string, name: string, keys: RepositoryKeys): Promise<{ data: string; bucket: string }> {
  const data = join(root, name, "data");
  const bucket = join(root, name, "bucket");
  await initRepository(data, { keys, bucket });
  return { data, bucket };
}

async function openCounting(data: string, keys: RepositoryKeys, journal: boolean, commitDelayMs: number, encoderThreads?: number): Promise<{ repo: Repository; counter: CountingBackend }> {
  let counter: CountingBackend | undefined;
  const repo = await openRepository(data, {
    keys,
    journal,
    events: false,
    commitDelayMs,
    ...(encoderThreads === undefined ? {} : { encoderThreads }),
    wrapBackend: (tier, b) => {
      if (tier !== "cloud") return b;
      counter = new CountingBackend(b);
      return counter;
    },
  });
  if (counter === undefined) throw new Error("openRepository did not open a cloud tier");
  return { repo, counter };
}

async function packTotals(repo: Repository): Promise<{ packs: number; journalBytes: number }> {
  let packs = 0;
  let journalBytes = 0;
  for await (const p of repo.meta.listPacks()) {
    packs++;
    journalBytes += p.journal ?? 0;
  }
  return { packs, journalBytes };
}

/** Writes objects [0, n) with putObjects: batches of `batch`, `inFlight` batches at once. */
async function writeBatched(data: string, keys: RepositoryKeys, objs: Objects, n: number, cfg: Config, journal: boolean, progress = false): Promise<Counted> {
  const { repo, counter } = await openCounting(data, keys, journal, 0, cfg.encoderThreads);
  try {
    await repo.store.createBucket(BUCKET);
    counter.reset();
    const batches = Math.ceil(n / cfg.batch);
    let next = 0;
    let done = 0;
    let lastLog = performance.now();
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      while (next < batches) {
        const bi = next++;
        const items: BatchItem[] = [];
        for (let i = bi * cfg.batch; i < Math.min(n, (bi + 1) * cfg.batch); i++) items.push({ key: Objects.key(i), source: () => [objs.body(i)] });
        await repo.store.putObjects(BUCKET, items, { concurrency: 8 });
        done += items.length;
        if (progress && performance.now() - lastLog > 10_000) {
          lastLog = performance.now();
          const s = (lastLog - t0) / 1000;
          log(`  written ${done}/${n} in ${s.toFixed(0)} s (${(done / s).toFixed(0)} objects/s, rss ${rssMb().toFixed(0)} MB, load ${load()})`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(cfg.inFlight, batches) }, worker));
    const totals = await packTotals(repo);
    await repo.close();
    const seconds = (performance.now() - t0) / 1000;
    const c = counter.counters();
    return { puts: c.puts, bytes: c.bytesWritten, seconds, ...totals };
  } catch (err) {
    await repo.close().catch(() => undefined);
    throw err;
  }
}

/** `clients` clients, each awaiting one putObject at a time, objects [0, n). */
async function writeConcurrent(data: string, keys: RepositoryKeys, objs: Objects, n: number, cfg: Config, journal: boolean): Promise<Counted> {
  const { repo, counter } = await openCounting(data, keys, journal, cfg.commitDelayMs);
  try {
    await repo.store.createBucket(BUCKET);
    counter.reset();
    let next = 0;
    const latencies: number[] = [];
    const t0 = performance.now();
    const client = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const body = objs.body(i);
        const s = performance.now();
        await repo.store.putObject(BUCKET, Objects.key(i), [body], { size: body.length });
        latencies.push(performance.now() - s);
      }
    };
    await Promise.all(Array.from({ length: Math.min(cfg.clients, n) }, client));
    const acked = (performance.now() - t0) / 1000;
    const totals = await packTotals(repo);
    await repo.close();
    const c = counter.counters();
    return { puts: c.puts, bytes: c.bytesWritten, seconds: acked, latencies, ...totals };
  } catch (err) {
    await repo.close().catch(() => undefined);
    throw err;
  }
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

// ------------------------------------------------------------------------------ children

interface ChildResult {
  seconds: number;
  peakRssKb: number;
  /** RSS when the child had loaded its modules, before the measured call. */
  baseRssMb: number;
  phases: Array<{ phase: string; seconds: number; peakRssMb: number }>;
  info: Record<string, unknown>;
  verify?: string;
}

/** Samples RSS (every 50 ms and whenever `mark` is called) and attributes it to the current phase. */
class PhaseClock {
  readonly #t0 = performance.now();
  #phase = "setup";
  #start = this.#t0;
  #peak = rssMb();
  readonly phases: Array<{ phase: string; seconds: number; peakRssMb: number }> = [];
  readonly #timer = setInterval(() => this.sample(), 50);

  sample(): void {
    this.#peak = Math.max(this.#peak, rssMb());
  }

  mark(phase: string): void {
    this.sample();
    if (phase === this.#phase) return;
    const now = performance.now();
    this.phases.push({ phase: this.#phase, seconds: (now - this.#start) / 1000, peakRssMb: this.#peak });
    this.#phase = phase;
    this.#start = now;
    this.#peak = rssMb();
  }

  stop(): number {
    this.mark("end");
    clearInterval(this.#timer);
    return (performance.now() - this.#t0) / 1000;
  }
}

async function childRecover(bucket: string, out: string, n: number, objs: Objects): Promise<ChildResult> {
  const baseRssMb = rssMb();
  const clock = new PhaseClock();
  const r = await recoverRepository(out, { bucket, progress: (phase) => clock.mark(phase) });
  const seconds = clock.stop();
  const peakRssKb = process.resourceUsage().maxRSS;
  const problems: string[] = [];
  if (!r.fsck.ok) problems.push(`fsck: ${r.fsck.problems.slice(0, 3).map((p) => `${p.kind}: ${p.message}`).join("; ")}`);
  if (r.rebuild.missingChunks !== 0) problems.push(`${r.rebuild.missingChunks} missing chunks`);
  if (r.packsUnreadable.length > 0) problems.push(`${r.packsUnreadable.length} unreadable packs`);
  if (r.fsck.manifests !== n) problems.push(`${r.fsck.manifests} manifests, expected ${n}`);
  if (r.rebuild.chunksIndexed !== n) problems.push(`${r.rebuild.chunksIndexed} chunks indexed, expected ${n}`);
  // Untimed, after the peak was read: sampled objects byte for byte through the recovered repository.
  const repo = await openRepository(out, { events: false });
  try {
    for (let s = 0; s < SAMPLE_READS; s++) {
      const i = s === 0 ? n - 1 : Math.floor((s * n) / SAMPLE_READS);
      const got = await repo.store.getObject(BUCKET, Objects.key(i));
      const parts: Buffer[] = [];
      for await (const p of got.body) parts.push(Buffer.from(p));
      if (!Buffer.concat(parts).equals(objs.body(i))) problems.push(`object ${Objects.key(i)} differs`);
    }
  } finally {
    await repo.close();
  }
  return {
    seconds,
    peakRssKb,
    baseRssMb,
    phases: clock.phases,
    info: {
      packs: r.packs,
      journalRecords: r.journalRecords,
      entriesApplied: r.entriesApplied,
      chunksIndexed: r.rebuild.chunksIndexed,
      manifests: r.fsck.manifests,
      reportMs: r.ms,
    },
    verify: problems.length === 0 ? `ok (fsck clean, ${n} manifests and chunks, ${SAMPLE_READS} sampled objects identical)` : `FAILED: ${problems.join("; ")}`,
  };
}

async function childRebuild(data: string, n: number): Promise<ChildResult> {
  const baseRssMb = rssMb();
  const clock = new PhaseClock();
  clock.mark("open");
  const repo = await openRepository(data, { events: false, journal: false });
  let r;
  try {
    clock.mark("rebuild");
    r = await rebuildIndex(repo.store);
    clock.mark("close");
  } finally {
    await repo.close();
  }
  const seconds = clock.stop();
  const peakRssKb = process.resourceUsage().maxRSS;
  const problems: string[] = [];
  if (r.missingChunks !== 0) problems.push(`${r.missingChunks} missing chunks`);
  if (r.packsUnreadable.length > 0) problems.push(`${r.packsUnreadable.length} unreadable packs`);
  if (r.chunksIndexed !== n) problems.push(`${r.chunksIndexed} chunks indexed, expected ${n}`);
  return {
    seconds,
    peakRssKb,
    baseRssMb,
    phases: clock.phases,
    info: { packsRead: r.packsRead, chunksIndexed: r.chunksIndexed },
    verify: problems.length === 0 ? "ok" : `FAILED: ${problems.join("; ")}`,
  };
}

/** Runs this file as a child (`--child KIND ...`); its last stdout line is the JSON result. */
function runChild(args: string[], keys: RepositoryKeys): Promise<ChildResult> {
  return new Promise((resolveChild, reject) => {
    const child = spawn(process.execPath, [THIS_FILE, "--child", ...args], {
      env: { ...process.env, STOWAGE_MASTER_KEY: formatMasterKey(keys) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => (stdout += d));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const last = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) {
        reject(new Error(`child ${args[0]} exited with ${code ?? signal}: ${last}`));
        return;
      }
      try {
        resolveChild(JSON.parse(last) as ChildResult);
      } catch {
        reject(new Error(`child ${args[0]} printed no result: ${stdout.slice(-500)}`));
      }
    });
  });
}

async function childMain(argv: string[]): Promise<void> {
  const [kind, ...rest] = argv;
  const opt = (name: string): string => {
    const i = rest.indexOf(name);
    if (i < 0 || rest[i + 1] === undefined) throw new Error(`child: ${name} missing`);
    return rest[i + 1]!;
  };
  if (keysFromEnvironment() === undefined) throw new Error("child: STOWAGE_MASTER_KEY missing");
  const n = Number(opt("--objects"));
  let r: ChildResult;
  if (kind === "recover") r = await childRecover(opt("--bucket"), opt("--out"), n, new Objects(Number(opt("--seed")), Number(opt("--min-size")), Number(opt("--max-size"))));
  else if (kind === "rebuild") r = await childRebuild(opt("--data"), n);
  else throw new Error(`child: unknown kind ${kind}`);
  process.stdout.write(JSON.stringify(r) + "\n");
}

// ------------------------------------------------------------------------------ main

const phaseText = (r: ChildResult): string => r.phases.map((p) => `${p.phase} ${p.seconds.toFixed(2)} s/${p.peakRssMb.toFixed(0)} MB`).join(", ");

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const started = performance.now();
  console.log(`machine: ${availableParallelism()} cpus (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, load average ${load()}`);
  console.log(
    `recover bench: mode=${cfg.mode} objects=${cfg.objects.join(",")} sizes=${cfg.minSize}-${cfg.maxSize} B batch=${cfg.batch}x${cfg.inFlight} in flight ` +
      `overhead: batched=${cfg.overheadObjects} concurrent=${cfg.clientObjects} (${cfg.clients} clients, commit-delay ${cfg.commitDelayMs} ms) seed=${cfg.seed}`,
  );
  const base = cfg.dir ?? tmpdir();
  mkdirSync(base, { recursive: true });
  const root = mkdtempSync(join(base, "stowage-recover-bench-"));
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    if (cfg.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: removing ${root}`);
    cleanup();
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const keys = RepositoryKeys.generate();
  const objs = new Objects(cfg.seed, cfg.minSize, cfg.maxSize);
  const details: string[] = [];
  const emit = (line: string): void => console.log(line);
  try {
    // ---- metadata overhead first (small, so a failure shows early)
    if (cfg.overhead) {
      const runs: Array<{ label: string; n: number; off?: Counted; on?: Counted }> = [
        { label: "batched", n: cfg.overheadObjects },
        { label: "concurrent", n: cfg.clientObjects },
      ];
      for (const run of runs) {
        for (const journal of [false, true]) {
          const name = `overhead-${run.label}-${journal ? "on" : "off"}`;
          const { data } = await newRepo(root, name, keys);
          log(`${name}: ${run.n} objects ...`);
          const c = run.label === "batched" ? await writeBatched(data, keys, objs, run.n, cfg, journal) : await writeConcurrent(data, keys, objs, run.n, cfg, journal);
          if (journal) run.on = c;
          else run.off = c;
          const lat = c.latencies === undefined ? "" : `, latency p50/p99 ${percentile(c.latencies, 50).toFixed(0)}/${percentile(c.latencies, 99).toFixed(0)} ms`;
          const d =
            `detail overhead ${run.label} journal=${journal ? "on" : "off"}: ${run.n} objects in ${c.seconds.toFixed(2)} s (${(run.n / c.seconds).toFixed(0)} objects/s${lat}); ` +
            `${c.puts} PUTs (${((c.puts * 1000) / run.n).toFixed(1)} per 1000 objects), ${(c.bytes / MB).toFixed(2)} MB written (${(c.bytes / run.n).toFixed(1)} bytes/object), ` +
            `${c.packs} packs, journal records ${(c.journalBytes / MB).toFixed(3)} MB (${(c.journalBytes / run.n).toFixed(1)} bytes/object)`;
          log(d);
          details.push(d);
          rmSync(join(root, name), { recursive: true, force: true });
        }
        const { off, on } = run;
        if (off === undefined || on === undefined) continue;
        const puts = ((on.puts - off.puts) * 1000) / run.n;
        const bytes = (on.bytes - off.bytes) / run.n;
        emit(`recover metadata-overhead${run.label === "batched" ? "" : "-concurrent"}: puts-per-1000-objects=${puts.toFixed(1)} bytes-per-object=${bytes.toFixed(0)}`);
      }
    }

    // ---- recovery of N objects, against rebuild-index on the same bucket
    if (cfg.recover) {
      for (const n of cfg.objects) {
        const name = `n${n}`;
        const { data, bucket } = await newRepo(root, name, keys);
        log(`write ${n} objects (journal on, putObjects ${cfg.batch} per batch, ${cfg.inFlight} in flight) ...`);
        const w = await writeBatched(data, keys, objs, n, cfg, true, true);
        const wd =
          `detail write objects=${n}: ${w.seconds.toFixed(1)} s (${(n / w.seconds).toFixed(0)} objects/s), ${w.puts} PUTs, ${(w.bytes / MB).toFixed(1)} MB in the bucket, ` +
          `${w.packs} packs, journal records ${(w.journalBytes / MB).toFixed(1)} MB (${(w.journalBytes / n).toFixed(1)} bytes/object); load ${load()}`;
        log(wd);
        const childArgs = ["--objects", String(n), "--seed", String(cfg.seed), "--min-size", String(cfg.minSize), "--max-size", String(cfg.maxSize)];
        log(`rebuild-index (child) ...`);
        const rb = await runChild(["rebuild", "--data", data, ...childArgs], keys);
        log(`rebuild-index: ${rb.seconds.toFixed(2)} s, peak RSS ${kbToMb(rb.peakRssKb).toFixed(0)} MB; ${phaseText(rb)}`);
        log(`recover (child) ...`);
        const rc = await runChild(["recover", "--bucket", bucket, "--out", join(root, name, "recovered"), ...childArgs], keys);
        log(`recover: ${rc.seconds.toFixed(2)} s, peak RSS ${kbToMb(rc.peakRssKb).toFixed(0)} MB; ${phaseText(rc)}`);
        emit(`recover objects=${n}: seconds=${rc.seconds.toFixed(1)} peak-rss=${kbToMb(rc.peakRssKb).toFixed(0)} MB`);
        emit(`recover rebuild-index objects=${n}: seconds=${rb.seconds.toFixed(1)} peak-rss=${kbToMb(rb.peakRssKb).toFixed(0)} MB (reference)`);
        emit(`recover ratio objects=${n}: recover/rebuild=${fmt(rc.seconds / rb.seconds, 2)}`);
        details.push(wd);
        details.push(`detail recover objects=${n}: phases (seconds/peak RSS sampled) ${phaseText(rc)}; child RSS before the call ${rc.baseRssMb.toFixed(0)} MB; ${JSON.stringify(rc.info)}; verify ${rc.verify ?? "n/a"}`);
        details.push(`detail rebuild-index objects=${n}: phases ${phaseText(rb)}; child RSS before ${rb.baseRssMb.toFixed(0)} MB; ${JSON.stringify(rb.info)}; verify ${rb.verify ?? "n/a"}`);
        if (!cfg.keep) rmSync(join(root, name), { recursive: true, force: true });
      }
    }
    for (const d of details) console.log(d);
    console.log(`# total ${((performance.now() - started) / 1000).toFixed(1)} s; load average at the end ${load()}`);
  } finally {
    cleanup();
  }
}

if (process.argv[2] === "--child") {
  childMain(process.argv.slice(3)).catch((err: unknown) => {
    process.stderr.write(`[recover bench child] ${errText(err)}\n${err instanceof Error ? (err.stack ?? "") : ""}\n`);
    process.exit(1);
  });
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`recover bench: ${errText(err)}\n${err instanceof Error ? (err.stack ?? "") : ""}\n`);
    process.exit(1);
  });
}
