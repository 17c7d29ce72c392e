/**
 * File-system benchmark (bench:fs): Stowage's FUSE mount (`stowage serve --mount`) against a plain
 * local directory on the same disk, in the same run, with the same operations and the same bytes.
 *
 *   npm run bench:fs                     # 1 GiB sequential, 256 MiB random file, 10,000 files
 *   npm run bench:fs -- --quick          # 256 MiB sequential, 64 MiB random file, 2,000 files
 *   node dist/bench/fs.js [--quick] [--keep] [--seq-mib N] [--rand-mib N] [--rand-ops N] [--rand-workers N]
 *        [--files N] [--meta-workers N] [--meta-budget S] [--settle-ms MS] [--phases seq,overwrite,rand,meta] [--dir DIR]
 *        [--cpu-prof DIR]
 *
 * Setup: a fresh temp directory ROOT (under --dir, else os.tmpdir()) holds DATA (Stowage's data
 * directory) and LOCAL (the local peer: a plain directory on the same disk); the mount point is a
 * separate fresh temp directory MNT (never inside ROOT, so removing ROOT can never reach through a
 * mount). `node dist/src/cli/main.js serve --data DATA --port 0 --address 127.0.0.1 --mount MNT
 * --log-level warn` runs as a child process (default settings; a fresh master key in
 * STOWAGE_MASTER_KEY so no key file or scrypt is involved); it is ready when it prints `stowage:
 * mounted all buckets at MNT`. `mkdir MNT/bench` creates the bucket; the Stowage target is
 * MNT/bench, the local one LOCAL. At the end (also on errors, SIGINT and SIGTERM) the server gets
 * SIGTERM (SIGKILL after 30 s) and is awaited; if MNT is still in /proc/self/mountinfo it is
 * detached with `umount -l`; then ROOT is removed (unless --keep) and MNT with rmdir only.
 *
 * Data: one 1 MiB buffer from crypto.randomBytes, reused for every piece of every file, with the
 * first 8 bytes of every 4 KiB block of each 1 MiB piece overwritten by (file id, piece index) as
 * two uint32: no two chunks of the run are equal (the chunker's minimum chunk is 256 KiB, so every
 * chunk holds stamped blocks), so nothing dedups; random bytes, so nothing compresses. The same
 * bytes go to both targets. 4 KiB random writes use a 4 KiB slice of the buffer stamped with
 * (a write id, the op index).
 *
 * Phases (each on both targets; the order of the targets alternates from phase to phase):
 * - **seq-write**: open 'w', --seq-mib MiB (1024; quick 256) in 1 MiB FileHandle.write calls at
 *   increasing positions, one at a time, then fsync, then close. MB/s = bytes / (open .. close).
 * - **seq-read**: drop the page cache (`sync`, then 3 > /proc/sys/vm/drop_caches; if that fails,
 *   local reads come from the page cache and the output says so), open 'r', 1 MiB reads one at a
 *   time to the end, close. Every piece is compared byte for byte with what was written (a stronger
 *   check than a hash, at about 0.1 ms per MiB), and the size must match: no speed is reported for
 *   wrong data. Stowage's own 64 MiB chunk cache still holds what it last touched (a fraction of
 *   the file).
 * - **overwrite-1-byte-of-<size>** (Stowage only; the local directory overwrites in place): on the
 *   seq-write file (written, fsynced, closed): stored bytes = the sum of the sizes of the files
 *   under DATA/bucket (the repository's local bucket: packs, journal, descriptor; config.bucket
 *   "bucket" resolved under DATA by src/store/locations.ts), walked recursively, after it stays the
 *   same for --settle-ms (2,000) ms. Then open 'r+', write 1 byte at size/2, fsync, close, settle
 *   again. Reported: the difference in MiB (a full rewrite would be about the file's size). The
 *   byte and its neighbours are read back (untimed). DATA as a whole (metadata included) is printed
 *   as a detail.
 * - **rand-read-4k / rand-write-4k**: a file of --rand-mib MiB (256; quick 64), written as in
 *   seq-write (untimed), page cache dropped; one FileHandle opened 'r+' shared by --rand-workers (4)
 *   workers: --rand-ops (10,000; quick 2,000) reads of 4 KiB at uniformly random 4 KiB-aligned
 *   offsets (each compared with the expected bytes), ops/s = reads / wall time. Then --rand-ops
 *   writes of 4 KiB at distinct random aligned offsets, then one fsync: ops/s = writes / (first
 *   write .. fsync done). After close, 64 written blocks are read back through a new handle
 *   (untimed).
 * - **create / stat / rename / unlink**: --files (10,000; quick 2,000) empty files in one new
 *   directory, --meta-workers (8) concurrent workers, ops/s per operation: open(path, 'wx') + close;
 *   stat; rename(name, name + '.r') in the same directory; unlink. The mount's kernel caches
 *   attributes and names for 1 s (its default), the local file system for as long as it likes.
 *
 * Each metadata operation stops taking new files after --meta-budget seconds (120; quick 40) on a
 * target: its rate is then over the files it reached, the operations after it work on those, and
 * its line says how many. (Stowage's metadata operations get slower as the run goes on: its event
 * outbox relay rescans the outbox's deleted rows on every pass, see bench/RESULTS.md; without the
 * budget, 10,000 files would take about 25 minutes here.)
 *
 * `--cpu-prof DIR` runs the server under `node --cpu-prof` (profile written to DIR when it stops;
 * summarize with dist/bench/cpuprofile-top.js).
 *
 * libuv's thread pool is raised to 16 threads (UV_THREADPOOL_SIZE, set before this process's first
 * asynchronous file operation) so that 8 workers really have 8 calls in flight.
 *
 * MB = 10^6 bytes (throughput), MiB = 2^20 bytes (sizes). Each phase also prints a detail line
 * with the wall time and CPU seconds of the bench process (user + system; for the mount the
 * kernel's FUSE work is partly here) and of the server process (/proc/<pid>/stat). The machine may
 * be shared: only ratios within one run mean much.
 */
const INHERITED_UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE;
process.env.UV_THREADPOOL_SIZE ??= "16";

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, rmdirSync, lstatSync, writeFileSync } from "node:fs";
import { mkdir, open, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { MB, MiB, binNodeFlags, errText, readCpuSeconds, startChild, stopServer, track, waitFor, type Server } from "./peer.js";

const STOWAGE_MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const BUCKET = "bench";
const BLOCK = 4096;
const JUICEFS_CREATE_PER_S = 1410;

type TargetName = "stowage" | "local";
type PhaseName = "seq" | "overwrite" | "rand" | "meta";
const PHASES: readonly PhaseName[] = ["seq", "overwrite", "rand", "meta"];

interface Config {
  mode: "quick" | "default";
  seqMiB: number;
  randMiB: number;
  randOps: number;
  randWorkers: number;
  files: number;
  metaWorkers: number;
  metaBudgetS: number;
  settleMs: number;
  phases: PhaseName[];
  dir: string | undefined;
  keep: boolean;
  cpuProfDir: string | undefined;
  phaseTimeoutMs: number;
}

function usage(): string {
  return (
    "usage: node dist/bench/fs.js [--quick] [--keep] [--seq-mib N] [--rand-mib N] [--rand-ops N] [--rand-workers N]\n" +
    "         [--files N] [--meta-workers N] [--meta-budget S] [--settle-ms MS] [--phases seq,overwrite,rand,meta] [--dir DIR] [--cpu-prof DIR]"
  );
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    mode: quick ? "quick" : "default",
    seqMiB: quick ? 256 : 1024,
    randMiB: quick ? 64 : 256,
    randOps: quick ? 2000 : 10_000,
    randWorkers: 4,
    files: quick ? 2000 : 10_000,
    metaWorkers: 8,
    metaBudgetS: quick ? 40 : 120,
    settleMs: 2000,
    phases: [...PHASES],
    dir: undefined,
    keep: false,
    cpuProfDir: undefined,
    phaseTimeoutMs: quick ? 120_000 : 600_000,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    const num = (min: number): number => {
      const s = val();
      const v = Number(s.replace(/_/g, ""));
      if (!Number.isFinite(v) || v < min) throw new Error(`${a} needs a number >= ${min}, not ${s}`);
      return Math.floor(v);
    };
    if (a === "--quick") continue;
    else if (a === "--keep") cfg.keep = true;
    else if (a === "--seq-mib") cfg.seqMiB = num(2);
    else if (a === "--rand-mib") cfg.randMiB = num(1);
    else if (a === "--rand-ops") cfg.randOps = num(1);
    else if (a === "--rand-workers") cfg.randWorkers = num(1);
    else if (a === "--files") cfg.files = num(1);
    else if (a === "--meta-workers") cfg.metaWorkers = num(1);
    else if (a === "--meta-budget") cfg.metaBudgetS = num(1);
    else if (a === "--settle-ms") cfg.settleMs = num(100);
    else if (a === "--dir") cfg.dir = val();
    else if (a === "--cpu-prof") cfg.cpuProfDir = val();
    else if (a === "--phases") {
      cfg.phases = val()
        .split(",")
        .map((s) => s.trim() as PhaseName);
      for (const p of cfg.phases) if (!PHASES.includes(p)) throw new Error(`unknown phase "${p}" (${PHASES.join(", ")})`);
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  if (cfg.randOps > (cfg.randMiB * MiB) / BLOCK) throw new Error(`--rand-ops ${cfg.randOps} exceeds the ${(cfg.randMiB * MiB) / BLOCK} distinct 4 KiB blocks of --rand-mib ${cfg.randMiB}`);
  return cfg;
}

function log(msg: string): void {
  process.stderr.write(`[fs bench] ${msg}\n`);
}

// ------------------------------------------------------------------------------ data

/** Aborted on SIGINT/SIGTERM: the loops below stop at their next step, so the cleanup does not wait for a whole phase. */
const stopAll = new AbortController();
function checkStop(): void {
  if (stopAll.signal.aborted) throw new Error("interrupted");
}

/** The run's 1 MiB of random bytes; every piece written is a stamped copy of it. */
const BASE = randomBytes(MiB);

/** Piece `index` of file `fileId` into `out` (1 MiB): BASE with (fileId, index) at the start of every 4 KiB block. */
function piece(fileId: number, index: number, out: Buffer): Buffer {
  BASE.copy(out);
  for (let o = 0; o < MiB; o += BLOCK) {
    out.writeUInt32LE(fileId, o);
    out.writeUInt32LE(index, o + 4);
  }
  return out;
}

/** The expected 4 KiB at aligned `offset` of a file written by {@link writeFile} as `fileId`. */
function expectedBlock(fileId: number, offset: number, out: Buffer): Buffer {
  const within = offset % MiB;
  BASE.copy(out, 0, within, within + BLOCK);
  out.writeUInt32LE(fileId, 0);
  out.writeUInt32LE(Math.floor(offset / MiB), 4);
  return out;
}

/** File ids: each file written in the run has its own, on each target (so nothing dedups across files). */
const FILE_ID = { seq: 1, rand: 2, randWrite: 3 } as const;
const targetId = (t: TargetName, id: number): number => (t === "stowage" ? 0x100 : 0x200) + id;

/** Writes `mib` MiB in 1 MiB pieces at increasing positions, one write at a time, then fsync and close. */
async function writeFile(path: string, fileId: number, mib: number): Promise<void> {
  const buf = Buffer.allocUnsafe(MiB);
  const fh = await open(path, "w");
  try {
    for (let i = 0; i < mib; i++) {
      checkStop();
      piece(fileId, i, buf);
      const { bytesWritten } = await fh.write(buf, 0, MiB, i * MiB);
      if (bytesWritten !== MiB) throw new Error(`${path}: short write at piece ${i} (${bytesWritten} bytes)`);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads the file in 1 MiB reads, one at a time, and checks every byte and the size. */
async function readAndCheck(path: string, fileId: number, mib: number): Promise<void> {
  const buf = Buffer.allocUnsafe(MiB);
  const want = Buffer.allocUnsafe(MiB);
  const fh = await open(path, "r");
  try {
    for (let i = 0; ; i++) {
      checkStop();
      let got = 0;
      while (got < MiB) {
        const { bytesRead } = await fh.read(buf, got, MiB - got, i * MiB + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got === 0) {
        if (i !== mib) throw new Error(`${path}: ended after ${i} MiB, ${mib} MiB written`);
        return;
      }
      if (i >= mib) throw new Error(`${path}: longer than the ${mib} MiB written`);
      if (got !== MiB) throw new Error(`${path}: short piece ${i}: ${got} bytes`);
      if (!buf.equals(piece(fileId, i, want))) throw new Error(`${path}: piece ${i} differs from what was written`);
    }
  } finally {
    await fh.close();
  }
}

// ------------------------------------------------------------------------------ helpers

/** `sync`, then drop the page cache, dentries and inodes. Undefined when done, else why not. */
function dropCaches(): string | undefined {
  spawnSync("sync", [], { stdio: "ignore", timeout: 120_000 });
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3");
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** Sum of the sizes of the regular files under `dir` (recursive; missing entries skipped). */
function treeBytes(dir: string): number {
  let n = 0;
  let ents;
  try {
    ents = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of ents) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += treeBytes(p);
    else if (e.isFile()) {
      try {
        n += lstatSync(p).size;
      } catch {
        // removed meanwhile (a temporary renamed into place)
      }
    }
  }
  return n;
}

/** Polls `measure` every 250 ms until it returns the same value for `stableMs`; returns that value. */
async function settle(measure: () => number, stableMs: number, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  let last = measure();
  let since = Date.now();
  for (;;) {
    await sleep(250);
    const v = measure();
    if (v !== last) {
      last = v;
      since = Date.now();
    } else if (Date.now() - since >= stableMs) return v;
    if (Date.now() - t0 > timeoutMs) {
      log(`sizes still changing after ${timeoutMs / 1000} s; using the last value`);
      return v;
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Mount points in /proc/self/mountinfo (octal escapes decoded). */
function mountPoints(): string[] {
  try {
    return readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split(" ")[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  } catch {
    return [];
  }
}

/**
 * Runs items 0..n-1 through `workers` concurrent workers, in order of index; rejects on the first
 * error. With `budgetMs`, no item is started after that long: resolves with the number of items
 * done, always a prefix 0..k-1 (every item taken finishes).
 */
async function pool(n: number, workers: number, deadline: AbortSignal, op: (i: number) => Promise<void>, budgetMs = Infinity): Promise<number> {
  let next = 0;
  let failed: unknown;
  const end = performance.now() + budgetMs;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (failed !== undefined) return;
      if (deadline.aborted) throw new Error("phase deadline passed");
      checkStop();
      if (performance.now() >= end) return;
      const i = next++;
      if (i >= n) return;
      try {
        await op(i);
      } catch (err) {
        failed ??= err;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(workers, n) }, worker));
  return Math.min(next, n);
}

/** Deterministic PRNG (xorshift32) for offsets, so both targets get the same sequence. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

// ------------------------------------------------------------------------------ measurement

interface Measure {
  seconds: number;
  benchCpuSec: number;
  serverCpuSec: number | undefined;
}

interface Ctx {
  cfg: Config;
  server: Server | undefined;
  dirs: Record<TargetName, string>;
  dropNote: string | undefined;
}

/** Times `body` (wall, this process's CPU, the server's CPU), under the phase deadline. */
async function timed(ctx: Ctx, what: string, body: (deadline: AbortSignal) => Promise<void>): Promise<Measure> {
  const ac = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new Error(`${what} took more than ${ctx.cfg.phaseTimeoutMs / 1000} s`));
    }, ctx.cfg.phaseTimeoutMs);
  });
  const srvPid = ctx.server?.pid;
  const s0 = srvPid === undefined ? undefined : readCpuSeconds(srvPid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    await Promise.race([body(ac.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const s1 = srvPid === undefined ? undefined : readCpuSeconds(srvPid);
  return { seconds, benchCpuSec: (c.user + c.system) / 1e6, serverCpuSec: s0 === undefined || s1 === undefined ? undefined : s1 - s0 };
}

const fmt = (x: number | undefined, digits: number): string => (x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits));
const rateDigits = (x: number): number => (x >= 100 ? 0 : x >= 10 ? 1 : 2);
const fmtRate = (x: number | undefined): string => (x === undefined ? "n/a" : fmt(x, rateDigits(x)));

function detail(name: string, t: TargetName, m: Measure, extra = ""): void {
  console.log(
    `# detail ${name} ${t}: ${m.seconds.toFixed(2)} s wall, cpu: bench ${m.benchCpuSec.toFixed(2)} s` +
      (t === "stowage" ? `, server ${fmt(m.serverCpuSec, 2)} s` : "") +
      (extra === "" ? "" : `; ${extra}`),
  );
}

const results = new Map<string, { stowage?: number; local?: number }>();

function record(name: string, t: TargetName, rate: number): void {
  const r = results.get(name) ?? {};
  r[t] = rate;
  results.set(name, r);
}

function printLine(name: string, unit: string, note = ""): void {
  const r = results.get(name) ?? {};
  const ratio = r.stowage !== undefined && r.local !== undefined && r.local > 0 ? `ratio ${(r.stowage / r.local).toFixed(2)}` : "";
  const paren = [ratio, note].filter((s) => s !== "").join(", ");
  console.log(`fs ${name}: stowage=${fmtRate(r.stowage)} local=${fmtRate(r.local)} ${unit}${paren === "" ? "" : ` (${paren})`}`);
}

const orderOf = (phaseIndex: number): TargetName[] => (phaseIndex % 2 === 0 ? ["stowage", "local"] : ["local", "stowage"]);

// ------------------------------------------------------------------------------ phases

async function phaseSeq(ctx: Ctx, pi: number): Promise<void> {
  const { cfg } = ctx;
  const bytes = cfg.seqMiB * MiB;
  for (const t of orderOf(pi)) {
    const path = join(ctx.dirs[t], "seq.bin");
    const m = await timed(ctx, `seq-write ${t}`, () => writeFile(path, targetId(t, FILE_ID.seq), cfg.seqMiB));
    record("seq-write", t, bytes / MB / m.seconds);
    detail("seq-write", t, m);
  }
  printLine("seq-write", "MB/s");
  for (const t of orderOf(pi + 1)) {
    const path = join(ctx.dirs[t], "seq.bin");
    ctx.dropNote = dropCaches();
    const m = await timed(ctx, `seq-read ${t}`, () => readAndCheck(path, targetId(t, FILE_ID.seq), cfg.seqMiB));
    record("seq-read", t, bytes / MB / m.seconds);
    detail("seq-read", t, m, `${cfg.seqMiB} MiB checked byte for byte: equal`);
  }
  printLine("seq-read", "MB/s", ctx.dropNote === undefined ? "page cache dropped before each" : `page cache NOT dropped (${ctx.dropNote}): local reads come from it`);
}

let overwriteMiB: number | undefined;
let overwriteLabel = "";

async function phaseOverwrite(ctx: Ctx): Promise<void> {
  const { cfg } = ctx;
  const path = join(ctx.dirs.stowage, "seq.bin");
  const size = cfg.seqMiB * MiB;
  const label = cfg.seqMiB % 1024 === 0 ? `${cfg.seqMiB / 1024}GiB` : `${cfg.seqMiB}MiB`;
  overwriteLabel = `overwrite-1-byte-of-${label}`;
  const data = ctx.server!.dataDir;
  const bucketDir = join(data, "bucket");
  if (!existsSync(path)) await writeFile(path, targetId("stowage", FILE_ID.seq), cfg.seqMiB);
  const b0 = await settle(() => treeBytes(bucketDir), cfg.settleMs);
  const d0 = treeBytes(data);
  const offset = Math.floor(size / 2);
  const old = Buffer.alloc(1);
  {
    const fh = await open(path, "r");
    try {
      await fh.read(old, 0, 1, offset);
    } finally {
      await fh.close();
    }
  }
  const one = Buffer.from([old[0]! ^ 0xff]);
  const m = await timed(ctx, overwriteLabel, async () => {
    const fh = await open(path, "r+");
    try {
      const { bytesWritten } = await fh.write(one, 0, 1, offset);
      if (bytesWritten !== 1) throw new Error("1-byte write wrote nothing");
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
  const b1 = await settle(() => treeBytes(bucketDir), cfg.settleMs);
  const d1 = treeBytes(data);
  // Check (untimed): the size, the byte, and its neighbours (from the pieces written).
  const st = await stat(path);
  if (st.size !== size) throw new Error(`${path}: size ${st.size} after the 1-byte overwrite, ${size} before`);
  const around = Buffer.alloc(BLOCK);
  const start = offset - (offset % BLOCK);
  {
    const fh = await open(path, "r");
    try {
      await fh.read(around, 0, BLOCK, start);
    } finally {
      await fh.close();
    }
  }
  const want = expectedBlock(targetId("stowage", FILE_ID.seq), start, Buffer.alloc(BLOCK));
  want[offset - start] = one[0]!;
  if (!around.equals(want)) throw new Error(`${path}: the 4 KiB around the overwritten byte are not what was written`);
  overwriteMiB = (b1 - b0) / MiB;
  console.log(
    `fs ${overwriteLabel}: stored=${fmt(overwriteMiB, overwriteMiB < 1 ? 3 : overwriteMiB < 10 ? 2 : 1)} MiB (DATA/bucket ${b0} -> ${b1} bytes; a full rewrite would be ~${cfg.seqMiB} MiB; the local directory writes in place)`,
  );
  detail(overwriteLabel, "stowage", m, `whole DATA directory ${d0} -> ${d1} bytes (+${((d1 - d0) / MiB).toFixed(2)} MiB, metadata included); byte and its 4 KiB block read back: ok`);
}

async function phaseRand(ctx: Ctx, pi: number): Promise<void> {
  const { cfg } = ctx;
  const blocks = (cfg.randMiB * MiB) / BLOCK;
  // The same offsets for both targets.
  const next = rng(0x5eed);
  const readOffsets = Float64Array.from({ length: cfg.randOps }, () => Math.floor(next() * blocks) * BLOCK);
  const all = Uint32Array.from({ length: blocks }, (_, i) => i);
  for (let i = 0; i < cfg.randOps; i++) {
    const j = i + Math.floor(next() * (blocks - i));
    const x = all[i]!;
    all[i] = all[j]!;
    all[j] = x;
  }
  const writeOffsets = Float64Array.from(all.subarray(0, cfg.randOps), (b) => b * BLOCK);

  for (const t of orderOf(pi)) {
    const path = join(ctx.dirs[t], "rand.bin");
    const fileId = targetId(t, FILE_ID.rand);
    const w0 = performance.now();
    await writeFile(path, fileId, cfg.randMiB);
    log(`rand ${t}: ${cfg.randMiB} MiB file written in ${((performance.now() - w0) / 1000).toFixed(1)} s (untimed)`);
    ctx.dropNote = dropCaches();
    const wid = targetId(t, FILE_ID.randWrite);
    const fh: FileHandle = await open(path, "r+");
    try {
      let bad = 0;
      // One buffer per call in flight; the expected bytes are built and compared synchronously after it.
      const want = Buffer.allocUnsafe(BLOCK);
      const mr = await timed(ctx, `rand-read-4k ${t}`, async (deadline) => {
        await pool(cfg.randOps, cfg.randWorkers, deadline, async (i) => {
          const off = readOffsets[i]!;
          const got = Buffer.allocUnsafe(BLOCK);
          const { bytesRead } = await fh.read(got, 0, BLOCK, off);
          if (bytesRead !== BLOCK || !got.equals(expectedBlock(fileId, off, want))) bad++;
        });
      });
      if (bad > 0) throw new Error(`rand-read-4k ${t}: ${bad} of ${cfg.randOps} reads returned wrong bytes`);
      record("rand-read-4k", t, cfg.randOps / mr.seconds);
      detail("rand-read-4k", t, mr, `${cfg.randOps} reads checked: equal`);

      const mw = await timed(ctx, `rand-write-4k ${t}`, async (deadline) => {
        await pool(cfg.randOps, cfg.randWorkers, deadline, async (i) => {
          const off = writeOffsets[i]!;
          const src = Buffer.allocUnsafe(BLOCK);
          const within = off % MiB;
          BASE.copy(src, 0, within, within + BLOCK);
          src.writeUInt32LE(wid, 0);
          src.writeUInt32LE(i, 4);
          const { bytesWritten } = await fh.write(src, 0, BLOCK, off);
          if (bytesWritten !== BLOCK) throw new Error(`short write at ${off}`);
        });
        await fh.sync();
      });
      record("rand-write-4k", t, cfg.randOps / mw.seconds);
      detail("rand-write-4k", t, mw, `${cfg.randOps} writes + 1 fsync`);
    } finally {
      await fh.close();
    }
    // Check (untimed): 64 written blocks through a new handle.
    const fh2 = await open(path, "r");
    try {
      const got = Buffer.allocUnsafe(BLOCK);
      const want = Buffer.allocUnsafe(BLOCK);
      for (let k = 0; k < Math.min(64, cfg.randOps); k++) {
        const i = Math.floor((k * cfg.randOps) / Math.min(64, cfg.randOps));
        const off = writeOffsets[i]!;
        await fh2.read(got, 0, BLOCK, off);
        const within = off % MiB;
        BASE.copy(want, 0, within, within + BLOCK);
        want.writeUInt32LE(wid, 0);
        want.writeUInt32LE(i, 4);
        if (!got.equals(want)) throw new Error(`rand-write-4k ${t}: block at ${off} does not read back as written`);
      }
    } finally {
      await fh2.close();
    }
  }
  printLine("rand-read-4k", "ops/s", `${cfg.randWorkers} workers, ${cfg.randMiB} MiB file, ${ctx.dropNote === undefined ? "page cache dropped first" : "page cache not dropped"}`);
  printLine("rand-write-4k", "ops/s", `${cfg.randWorkers} workers, then 1 fsync`);
}

async function phaseMeta(ctx: Ctx, pi: number): Promise<void> {
  const { cfg } = ctx;
  const name = (i: number): string => `f${String(i).padStart(6, "0")}`;
  const ops = ["create", "stat", "rename", "unlink"] as const;
  const cut = new Map<string, number>();
  for (const t of orderOf(pi)) {
    const dir = join(ctx.dirs[t], "meta");
    await mkdir(dir);
    // Each operation runs on the files the previous one reached (all of them unless a budget cut it).
    let files = cfg.files;
    let renamed = 0;
    const run = async (op: (typeof ops)[number], body: (i: number) => Promise<void>): Promise<number> => {
      let done = 0;
      const m = await timed(ctx, `${op} ${t}`, async (deadline) => {
        done = await pool(files, cfg.metaWorkers, deadline, body, cfg.metaBudgetS * 1000);
      });
      if (done < files) cut.set(`${op}/${t}`, done);
      record(op, t, done / m.seconds);
      detail(op, t, m, `${done} of ${files} files${done < files ? ` (stopped by the ${cfg.metaBudgetS} s budget)` : ""}`);
      return done;
    };
    files = await run("create", async (i) => {
      const fh = await open(join(dir, name(i)), "wx");
      await fh.close();
    });
    const created = files;
    let badSize = 0;
    await run("stat", async (i) => {
      const s = await stat(join(dir, name(i)));
      if (!s.isFile() || s.size !== 0) badSize++;
    });
    if (badSize > 0) throw new Error(`stat ${t}: ${badSize} files are not empty regular files`);
    renamed = await run("rename", (i) => rename(join(dir, name(i)), join(dir, `${name(i)}.r`)));
    const unlinked = await run("unlink", (i) => unlink(join(dir, i < renamed ? `${name(i)}.r` : name(i))));
    const left = readdirSync(dir).length;
    if (left !== created - unlinked) throw new Error(`${dir}: ${left} entries left, expected ${created - unlinked}`);
  }
  for (const op of ops) {
    const c = ["stowage", "local"].flatMap((t) => (cut.has(`${op}/${t}`) ? [`${t}: ${cut.get(`${op}/${t}`)} in the ${cfg.metaBudgetS} s budget`] : []));
    printLine(op, "ops/s", `${cfg.metaWorkers} workers, ${cfg.files} files in one directory${c.length > 0 ? `; ${c.join(", ")}` : ""}`);
  }
}

// ------------------------------------------------------------------------------ the server

async function startStowage(root: string, mnt: string, cpuProfDir: string | undefined): Promise<Server> {
  const dataDir = join(root, "data");
  const nodeArgs: string[] = [];
  if (cpuProfDir !== undefined) {
    mkdirSync(cpuProfDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`);
  }
  const args = [...binNodeFlags(STOWAGE_MAIN), ...nodeArgs, STOWAGE_MAIN, "serve", "--data", dataDir, "--port", "0", "--address", "127.0.0.1", "--mount", mnt, "--log-level", "warn"];
  const env: NodeJS.ProcessEnv = { ...process.env, STOWAGE_MASTER_KEY: randomBytes(32).toString("hex"), STOWAGE_PASSPHRASE: "" };
  // The server keeps whatever this process inherited, not the bench's own thread-pool size.
  if (INHERITED_UV_THREADPOOL_SIZE === undefined) delete env.UV_THREADPOOL_SIZE;
  const { child, output } = startChild("stowage", process.execPath, args, env, join(root, "stowage.log"));
  let exited = "";
  child.once("exit", (code, signal) => (exited = `exited (${signal ?? code}) before mounting: ${output().trim().slice(-800)}`));
  const srv = track("stowage", "stowage serve --mount", child, output, "", dataDir);
  try {
    srv.endpoint = await waitFor(
      "stowage serve --mount",
      60_000,
      () => (/stowage: mounted all buckets at (.+)$/m.test(output()) ? (/S3 endpoint (http:\/\/\S+)/.exec(output())?.[1] ?? "?") : undefined),
      () => (exited === "" ? undefined : exited),
    );
  } catch (err) {
    await stopServer(srv, 30_000, log);
    throw err;
  }
  return srv;
}

// ------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const load = (): string =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(" ");
  console.log(`# machine: ${availableParallelism()} cpus (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, load average ${load()}`);
  if (!existsSync(STOWAGE_MAIN)) throw new Error(`${STOWAGE_MAIN} is missing: run npm run build`);

  const base = cfg.dir ?? tmpdir();
  mkdirSync(base, { recursive: true });
  const root = mkdtempSync(join(base, "stowage-fs-"));
  const mnt = realpathSync(mkdtempSync(join(base, "stowage-fs-mnt-")));
  const local = join(root, "local");
  mkdirSync(local);
  let server: Server | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      if (server !== undefined) await stopServer(server, 30_000, log);
      if (mountPoints().includes(mnt)) {
        log(`${mnt} is still mounted after the server stopped: umount -l`);
        spawnSync("umount", ["-l", mnt], { stdio: "inherit", timeout: 30_000 });
      }
      if (mountPoints().includes(mnt)) {
        log(`${mnt} is STILL mounted; leaving ${mnt} and ${root} in place`);
        return;
      }
      try {
        rmdirSync(mnt);
      } catch (err) {
        log(`cannot remove ${mnt}: ${errText(err)}`);
      }
      if (!cfg.keep) rmSync(root, { recursive: true, force: true });
      else log(`kept ${root}`);
    })());
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping the server, unmounting, removing ${root}`);
    stopAll.abort();
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    const t0 = performance.now();
    server = await startStowage(root, mnt, cfg.cpuProfDir);
    await mkdir(join(mnt, BUCKET));
    log(`stowage (pid ${server.pid}) at ${server.endpoint}, mounted at ${mnt} in ${((performance.now() - t0) / 1000).toFixed(1)} s; local directory ${local}`);
    const ctx: Ctx = { cfg, server, dirs: { stowage: join(mnt, BUCKET), local }, dropNote: undefined };
    ctx.dropNote = dropCaches();
    console.log(
      `# fs bench: mode=${cfg.mode}; seq ${cfg.seqMiB} MiB in 1 MiB writes + fsync; random 4 KiB x ${cfg.randOps} on a ${cfg.randMiB} MiB file, ${cfg.randWorkers} workers; ` +
        `metadata ${cfg.files} files, ${cfg.metaWorkers} workers, at most ${cfg.metaBudgetS} s per operation; page cache drop: ${ctx.dropNote === undefined ? "yes" : `no (${ctx.dropNote})`}`,
    );
    console.log(
      "# data: one 1 MiB crypto.randomBytes buffer reused, every 4 KiB block stamped with (file id, piece index) in its first 8 bytes, so nothing dedups or compresses; same bytes on both targets",
    );
    console.log(`# stowage: FUSE mount ${mnt}/${BUCKET} (serve --mount, data ${server.dataDir}); local: ${local} (same file system); MB = 10^6 bytes`);
    for (const [pi, phase] of cfg.phases.entries()) {
      const p0 = performance.now();
      if (phase === "seq") await phaseSeq(ctx, pi);
      else if (phase === "overwrite") await phaseOverwrite(ctx);
      else if (phase === "rand") await phaseRand(ctx, pi);
      else await phaseMeta(ctx, pi);
      log(`${phase}: ${((performance.now() - p0) / 1000).toFixed(1)} s; load average ${load()}`);
    }
    const rssKb = server.peakRssKb;
    await stopServer(server, 30_000, log);
    log(`server stopped (${server.exitInfo}); peak RSS ${(Math.max(rssKb, server.peakRssKb) / 1024).toFixed(0)} MiB`);
  } finally {
    await cleanup();
  }

  // ---- targets
  const ratio = (name: string): number | undefined => {
    const r = results.get(name);
    return r?.stowage !== undefined && r.local !== undefined ? r.stowage / r.local : undefined;
  };
  const verdict = (ok: boolean | undefined): string => (ok === undefined ? "not measured" : ok ? "met" : "NOT met");
  console.log("# targets:");
  if (cfg.phases.includes("seq")) {
    const w = ratio("seq-write");
    const r = ratio("seq-read");
    const ok = w === undefined || r === undefined ? undefined : w >= 0.3 && r >= 0.3;
    console.log(`#   sequential throughput >= 0.3x the local directory: write ${fmt(w, 2)}x, read ${fmt(r, 2)}x: ${verdict(ok)}`);
  }
  if (cfg.phases.includes("meta")) {
    const c = results.get("create")?.stowage;
    console.log(`#   file creation faster than JuiceFS's published ${JUICEFS_CREATE_PER_S} files/s: ${fmtRate(c)} files/s: ${verdict(c === undefined ? undefined : c > JUICEFS_CREATE_PER_S)}`);
  }
  if (cfg.phases.includes("overwrite")) {
    console.log(`#   stored bytes after the 1-byte overwrite under 8 MiB: ${fmt(overwriteMiB, overwriteMiB !== undefined && overwriteMiB < 1 ? 3 : 2)} MiB (${overwriteLabel}): ${verdict(overwriteMiB === undefined ? undefined : overwriteMiB < 8)}`);
  }
  console.log(`# done in ${((performance.now() - started) / 1000).toFixed(0)} s; load average ${load()}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
