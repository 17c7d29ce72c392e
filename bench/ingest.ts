/**
 * Ingest benchmark: Stowage against restic and borgbackup on media-like data (bench/dataset.ts).
 *
 *   npm run bench:ingest                 # ~3.2 GB: incompressible 2400 MB + compressible 800 MB
 *   npm run bench:ingest -- --quick      # 160 MB: incompressible 128 MB + compressible 32 MB
 *
 * --quick needs about 30 s of CPU in all (tools included), so it finishes within a minute on the
 * 2-core VM unless the VM is heavily shared (60-80 s were seen at load averages of 10-14).
 *   node dist/bench/ingest.js [--quick] [--keep] [--tools stowage,restic,borg] [--sets incompressible,compressible]
 *        [--size-incompressible MB] [--size-compressible MB] [--seed N] [--dir DIR] [--floor-mb MB | --no-floor]
 *        [--no-install]
 *
 * For each data set (generated once per run into a temp dir under os.tmpdir(), or under --dir) and
 * each tool, in the same run, one after another:
 *
 * - **ingest**: stowage `init` + `put DIR bench/<set>/`; restic `init --repository-version 2` +
 *   `backup .` (default compression `auto`); borg `init --encryption=repokey-blake2` +
 *   `create --compression auto,zstd,3 repo::bench .` (borg's `auto` probes with lz4 and skips
 *   zstd for incompressible chunks: the analogue of Stowage's skip rule). Each tool uses its own
 *   defaults otherwise (chunk sizes: Stowage FastCDC 256 KiB/1 MiB/4 MiB, restic Rabin
 *   512 KiB/1 MiB/8 MiB, borg buzhash 512 KiB/2 MiB/8 MiB). Repositories are local directories on
 *   the same disk; restic and borg fsync their pack/segment files, so ingest includes durability.
 *   `init` is timed separately and not counted. restic (a random chunker polynomial) and borg (a
 *   buzhash seed from the repository key) cut differently in every new repository, so their dedup
 *   ratios on the small --quick set vary between runs (restic 1.17-1.37, borg 1.10-1.30 seen);
 *   this matters less at the default size (more chunks per file).
 * - **restore**: stowage `get bench/<set>/ DIR` (falls back to `ls --json` + one `get` per key);
 *   `restic restore latest --target DIR`; `borg extract` in DIR. Every restored file is hashed
 *   (BLAKE3) and compared with the source's digest, computed while the data was generated.
 * - **measures**: throughput = logical bytes / wall time of the command (MB = 10^6 bytes; the
 *   process start and key derivation are included, as a user would see them); repository size on
 *   disk (`du`-like: allocated blocks); dedup ratio = logical bytes / unique bytes after dedup and
 *   before compression; compression ratio = unique bytes / stored bytes. restic 0.14's `stats
 *   --mode raw-data --json` has no uncompressed total, so the bench sums the decrypted index
 *   (`restic list index` + `restic cat index`): per blob `uncompressed_length` (or `length` - 32
 *   for blobs stored raw) vs. `length`, data and tree blobs. borg: `borg info --json`
 *   `cache.stats.unique_size` / `unique_csize` (both include archive metadata chunks). Stowage:
 *   `stowage stats --json` `dedupRatio` / `compressionRatio`. Peak RSS and CPU seconds (user +
 *   sys) of the tool's process from GNU time (`/usr/bin/time -f "%M %U %S"`), or polling
 *   /proc/<pid>/status VmHWM when it is missing.
 * - **floor**: the per-byte work of Stowage's data path done in this process on an in-memory
 *   buffer of incompressible bytes, one thread: FastCDC boundaries (src/codec/chunker.ts, keyed gear
 *   table), keyed BLAKE3 of every chunk (@napi-rs/blake-hash), AES-256-GCM of every chunk in
 *   128 KiB updates. No I/O, no compression (the data is incompressible), no packing.
 *
 * Fairness notes: the tool order alternates between data sets; the source files are in the page
 * cache for every tool (the bench does not drop caches on a shared machine); dirty pages are
 * flushed (`sync -f`) before each timed command so one tool's writeback does not land in the
 * next one's timing; the bench does not sync restored trees (restore time is until the tool exits).
 *
 * If restic or borg is missing, scripts/install-bench-tools.sh is run once (apt-get); if it is
 * still missing the tool is reported as `n/a`. If a Stowage step fails (its CLI may lag behind the
 * contract), the tool is reported as `error (<first line of stderr>)` and the run goes on.
 * The temp dir is removed at the end unless --keep.
 */
import { spawn, spawnSync } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
} from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { Blake3Hasher } from "@napi-rs/blake-hash";
import { ChunkerParams, chunkBoundaries } from "../src/codec/chunker.js";
import { MB, PRESETS, planDataset, seededBytes, writeDataset, type PieceSink } from "./dataset.js";
import { binNodeFlags } from "./peer.js";

type Tool = "stowage" | "restic" | "borg";
type SetName = "incompressible" | "compressible";
const TOOLS: readonly Tool[] = ["stowage", "restic", "borg"];
const SETS: readonly SetName[] = ["incompressible", "compressible"];
const BUCKET = "bench";
const PASSPHRASE = "stowage ingest bench passphrase";
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const STOWAGE_MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const GNU_TIME = "/usr/bin/time";

interface Config {
  mode: "quick" | "default";
  sizes: Record<SetName, number>;
  sets: SetName[];
  tools: Tool[];
  seed: number;
  dir: string | undefined;
  keep: boolean;
  floorMB: number;
  floorReps: number;
  install: boolean;
  /** Per-command timeout. */
  timeoutMs: number;
  /** Budget for Stowage's per-key restore fallback (one process per key). */
  fallbackBudgetMs: number;
}

function usage(): string {
  return (
    "usage: node dist/bench/ingest.js [--quick] [--keep] [--tools stowage,restic,borg] [--sets incompressible,compressible]\n" +
    "         [--size-incompressible MB] [--size-compressible MB] [--seed N] [--dir DIR] [--floor-mb MB | --no-floor] [--no-install]"
  );
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    mode: quick ? "quick" : "default",
    sizes: quick ? { incompressible: 128, compressible: 32 } : { incompressible: 2400, compressible: 800 },
    sets: [...SETS],
    tools: [...TOOLS],
    seed: 1,
    dir: undefined,
    keep: false,
    floorMB: quick ? 32 : 256,
    floorReps: quick ? 2 : 4,
    install: true,
    timeoutMs: quick ? 5 * 60_000 : 60 * 60_000,
    fallbackBudgetMs: quick ? 30_000 : 600_000,
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
    const num = (): number => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a} needs a non-negative number`);
      return v;
    };
    if (a === "--quick") continue;
    else if (a === "--keep") cfg.keep = true;
    else if (a === "--tools") cfg.tools = list(val(), TOOLS, "tool");
    else if (a === "--sets") cfg.sets = list(val(), SETS, "set");
    else if (a === "--size-incompressible") cfg.sizes.incompressible = num();
    else if (a === "--size-compressible") cfg.sizes.compressible = num();
    else if (a === "--seed") cfg.seed = Math.floor(num());
    else if (a === "--dir") cfg.dir = resolve(val()); // absolute: the tools run in other working directories
    else if (a === "--floor-mb") cfg.floorMB = num();
    else if (a === "--no-floor") cfg.floorMB = 0;
    else if (a === "--no-install") cfg.install = false;
    else if (a === "--help" || a === "-h") {
      console.log(usage());
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  return cfg;
}

// ------------------------------------------------------------------------ running commands

interface ProcResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
  /** Peak resident set of the command's process, KiB (GNU time %M or VmHWM). */
  peakRssKb: number | undefined;
  /** User + system CPU seconds (GNU time only). */
  cpuSec: number | undefined;
  /** Set when the command could not be started or timed out. */
  failure: string | undefined;
}

const hasGnuTime = (): boolean => existsSync(GNU_TIME);

/** Keeps the head of a stream's text and the total length (tools can print a lot). */
class Capture {
  text = "";
  bytes = 0;
  constructor(private readonly limit = 1 << 20) {}
  add(s: string): void {
    this.bytes += s.length;
    if (this.text.length < this.limit) this.text += s.slice(0, this.limit - this.text.length);
  }
}

function readVmHwmKb(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

let timeFileSeq = 0;

/**
 * Runs `cmd args` (no shell) with stdin closed. Measures wall time around the process, and its
 * peak RSS / CPU through GNU time when available. The child gets its own process group so a
 * timeout kills it together with anything it started.
 */
function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number; scratch: string },
): Promise<ProcResult> {
  return new Promise((resolve) => {
    const gnu = hasGnuTime();
    const timeFile = join(opts.scratch, `time-${process.pid}-${timeFileSeq++}.txt`);
    const argv0 = gnu ? GNU_TIME : cmd;
    const argvRest = gnu ? ["-f", "%M %U %S", "-o", timeFile, cmd, ...args] : args;
    const out = new Capture();
    const err = new Capture();
    let failure: string | undefined;
    let hwm: number | undefined;
    const t0 = process.hrtime.bigint();
    const child = spawn(argv0, argvRest, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (s: string) => out.add(s));
    child.stderr.on("data", (s: string) => err.add(s));
    const poll =
      !gnu && child.pid !== undefined
        ? setInterval(() => {
            const v = readVmHwmKb(child.pid!);
            if (v !== undefined) hwm = Math.max(hwm ?? 0, v);
          }, 20)
        : undefined;
    const timer = setTimeout(() => {
      failure = `timed out after ${(opts.timeoutMs / 1000).toFixed(0)} s`;
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }, opts.timeoutMs);
    child.on("error", (e) => {
      failure = `cannot run ${cmd}: ${e.message}`;
    });
    child.on("close", (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      clearTimeout(timer);
      if (poll !== undefined) clearInterval(poll);
      let peakRssKb = hwm;
      let cpuSec: number | undefined;
      let stderr = err.text;
      if (gnu) {
        try {
          const lines = readFileSync(timeFile, "utf8").trim().split("\n");
          const m = /^(\d+) ([\d.]+) ([\d.]+)$/.exec(lines[lines.length - 1] ?? "");
          if (m !== null) {
            peakRssKb = Number(m[1]);
            cpuSec = Number(m[2]) + Number(m[3]);
          }
          rmSync(timeFile, { force: true });
        } catch {
          // the command did not start
        }
        // GNU time reports a failing command on stderr too; the tool's own message comes first.
        stderr = stderr.replace(/^Command (exited with non-zero status|terminated by signal) .*$/m, "").trim();
      }
      resolve({ code, stdout: out.text, stderr, seconds, peakRssKb, cpuSec, failure });
    });
  });
}

function firstLine(s: string): string {
  const l = s
    .split("\n")
    .map((x) => x.trim())
    .find((x) => x !== "");
  return (l ?? "").slice(0, 160);
}

function failed(r: ProcResult): string | undefined {
  if (r.failure !== undefined) return r.failure;
  if (r.code !== 0) return firstLine(r.stderr) || firstLine(r.stdout) || `exit code ${r.code}`;
  return undefined;
}

/** Flushes dirty pages of the file system holding `dir` (untimed), so writeback does not leak into the next measurement. */
function syncFs(dir: string): void {
  spawnSync("sync", ["-f", dir], { stdio: "ignore" });
}

// ---------------------------------------------------------------------------- file helpers

/** Bytes allocated on disk under `dir` (like `du -s --block-size=1`), and the apparent size. */
function diskUsage(dir: string): { allocated: number; apparent: number } {
  let allocated = 0;
  let apparent = 0;
  const walk = (p: string): void => {
    const st = lstatSync(p);
    allocated += st.blocks * 512;
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
    else apparent += st.size;
  };
  if (existsSync(dir)) walk(dir);
  return { allocated, apparent };
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    for (const ent of readdirSync(p, { withFileTypes: true })) {
      const full = join(p, ent.name);
      if (ent.isDirectory()) walk(full);
      else if (ent.isFile()) out.push(relative(dir, full).split(sep).join("/"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

const HASH_BUF = Buffer.allocUnsafe(4 * 1024 * 1024);

function hashFile(path: string): string {
  const h = new Blake3Hasher();
  const fd = openSync(path, "r");
  try {
    for (;;) {
      const n = readSync(fd, HASH_BUF, 0, HASH_BUF.length, null);
      if (n === 0) break;
      h.update(n === HASH_BUF.length ? HASH_BUF : HASH_BUF.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

interface SourceSet {
  name: SetName;
  dir: string;
  logicalBytes: number;
  files: number;
  /** Relative path -> BLAKE3 hex digest. */
  digests: Map<string, string>;
  genSeconds: number;
  description: string;
}

/** Compares a restored tree with the source digests. */
function verify(src: SourceSet, restored: string): { ok: boolean; detail: string; seconds: number } {
  const t0 = performance.now();
  const got = listFiles(restored);
  const seen = new Set<string>();
  const problems: string[] = [];
  let bad = 0;
  for (const rel of got) {
    const want = src.digests.get(rel);
    if (want === undefined) {
      if (problems.length < 3) problems.push(`extra ${rel}`);
      bad++;
      continue;
    }
    seen.add(rel);
    if (hashFile(join(restored, ...rel.split("/"))) !== want) {
      if (problems.length < 3) problems.push(`differs ${rel}`);
      bad++;
    }
  }
  const missing = src.digests.size - seen.size;
  if (missing > 0) {
    for (const k of src.digests.keys()) {
      if (problems.length >= 3) break;
      if (!seen.has(k)) problems.push(`missing ${k}`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const ok = bad === 0 && missing === 0;
  return {
    ok,
    detail: ok ? `ok (${got.length} files)` : `FAILED: ${bad} wrong/extra, ${missing} missing of ${src.digests.size}: ${problems.join("; ")}`,
    seconds,
  };
}

// --------------------------------------------------------------------------------- tools

interface Ctx {
  set: SourceSet;
  /** The tool's repository / data directory. */
  repo: string;
  restoreDir: string;
  /** Tool-private scratch: caches, homes. */
  work: string;
  scratch: string;
  cfg: Config;
}

interface RepoStats {
  dedup: number | undefined;
  compression: number | undefined;
  /** Unique bytes after dedup, before compression. */
  uniqueBytes: number | undefined;
  /** Bytes after compression (and encryption overhead). */
  storedBytes: number | undefined;
  note: string;
}

interface Driver {
  name: Tool;
  /** Version string, or undefined when the tool cannot run. */
  version(scratch: string): Promise<string | undefined>;
  init(c: Ctx): Promise<ProcResult>;
  ingest(c: Ctx): Promise<ProcResult>;
  /** The restore; `note` says how it was done when not the plain way. */
  restore(c: Ctx): Promise<{ r: ProcResult; note?: string }>;
  stats(c: Ctx): Promise<RepoStats>;
}

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a !== undefined && b !== undefined && b > 0 ? a / b : undefined;

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return undefined;
  }
}

function field(o: unknown, ...path: string[]): unknown {
  let cur = o;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function numField(o: unknown, ...path: string[]): number | undefined {
  const v = field(o, ...path);
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

// Stowage -------------------------------------------------------------------------------

const stowage: Driver = {
  name: "stowage",
  async version(scratch) {
    if (!existsSync(STOWAGE_MAIN)) return undefined;
    const r = await run(process.execPath, [...binNodeFlags(STOWAGE_MAIN), STOWAGE_MAIN, "--version"], { timeoutMs: 30_000, scratch });
    return r.code === 0 ? `stowage ${firstLine(r.stdout)}` : "stowage (version unknown)";
  },
  init(c) {
    return stowageCmd(c, ["init"]);
  },
  ingest(c) {
    return stowageCmd(c, ["put", c.set.dir, `${BUCKET}/${c.set.name}/`]);
  },
  async restore(c) {
    mkdirSync(c.restoreDir, { recursive: true });
    const r = await stowageCmd(c, ["get", `${BUCKET}/${c.set.name}/`, c.restoreDir]);
    if (failed(r) === undefined) return { r };
    // Fallback: list the prefix, then one get per key.
    const why = failed(r)!;
    rmSync(c.restoreDir, { recursive: true, force: true });
    mkdirSync(c.restoreDir, { recursive: true });
    const t0 = performance.now();
    const listed = await listStowageKeys(c);
    if ("error" in listed) return { r: listed.error, note: `recursive get failed (${why}); ls failed` };
    const { keys, ls } = listed;
    if (keys.length === 0) return { r: { ...ls, code: 1, stderr: `ls --json listed no keys under ${BUCKET}/${c.set.name}/` } };
    let peak = ls.peakRssKb ?? 0;
    let cpu = ls.cpuSec ?? 0;
    let next = 0;
    let error: ProcResult | undefined;
    const worker = async (): Promise<void> => {
      while (error === undefined && next < keys.length) {
        if (performance.now() - t0 > c.cfg.fallbackBudgetMs) {
          error = { ...ls, code: 1, stderr: `per-key get of ${keys.length} keys exceeded ${c.cfg.fallbackBudgetMs / 1000} s (${next} done)` };
          return;
        }
        const rel = keys[next++]!;
        const dest = join(c.restoreDir, ...rel.split("/"));
        mkdirSync(dirname(dest), { recursive: true });
        const g = await stowageCmd(c, ["get", `${BUCKET}/${c.set.name}/${rel}`, dest]);
        peak = Math.max(peak, g.peakRssKb ?? 0);
        cpu += g.cpuSec ?? 0;
        if (failed(g) !== undefined) error = g;
      }
    };
    // One at a time: a Stowage process holds the data directory's metadata lock while it runs.
    await worker();
    if (error !== undefined) return { r: error, note: `recursive get failed (${why}); per-key get` };
    const seconds = (performance.now() - t0) / 1000;
    return {
      r: { code: 0, stdout: "", stderr: "", seconds, peakRssKb: peak, cpuSec: cpu, failure: undefined },
      note: `recursive get failed (${why}); ls --json + ${keys.length} gets, one at a time`,
    };
  },
  async stats(c) {
    const r = await stowageCmd(c, ["stats", "--json"]);
    const f = failed(r);
    if (f !== undefined) return { dedup: undefined, compression: undefined, uniqueBytes: undefined, storedBytes: undefined, note: `stats failed: ${f}` };
    const j = parseJson(r.stdout.trim()) ?? parseJson(r.stdout.trim().split("\n").pop() ?? "");
    const logical = numField(j, "logicalBytes");
    const stored = numField(j, "storedBytes");
    const dedup = numField(j, "dedupRatio");
    const compression = numField(j, "compressionRatio");
    const unique = numField(j, "uniqueBytes") ?? (logical !== undefined && dedup !== undefined && dedup > 0 ? logical / dedup : undefined);
    const extra = ["uniqueBytes", "compressedBytes", "objects", "chunks", "packs", "backendPuts", "plainPuts", "monthlyCost", "plainMonthlyCost"]
      .map((k) => [k, numField(j, k)] as const)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v!.toFixed(4)}`)
      .join(" ");
    const note = j === undefined ? `stats --json did not print JSON: ${firstLine(r.stdout)}` : `logicalBytes=${logical} storedBytes=${stored} ${extra}`;
    return { dedup, compression, uniqueBytes: unique, storedBytes: stored, note };
  },
};

function stowageEnv(c: Ctx): NodeJS.ProcessEnv {
  return { ...process.env, STOWAGE_DATA: c.repo, STOWAGE_PASSPHRASE: PASSPHRASE };
}

function stowageCmd(c: Ctx, args: string[]): Promise<ProcResult> {
  return run(process.execPath, [...binNodeFlags(STOWAGE_MAIN), STOWAGE_MAIN, ...args], { env: stowageEnv(c), timeoutMs: c.cfg.timeoutMs, scratch: c.scratch, cwd: REPO_ROOT });
}

/**
 * Keys under `<set>/` (relative to it) and sub-prefixes (full keys, for a non-recursive listing)
 * from `stowage ls --json`; tolerant of the exact shape (an array, or { objects, prefixes }, or JSON lines).
 */
function parseLs(stdout: string, set: string): { keys: string[]; prefixes: string[] } {
  const items: unknown[] = [];
  const prefixes: string[] = [];
  const whole = parseJson(stdout.trim());
  const collect = (v: unknown): void => {
    if (Array.isArray(v)) items.push(...(v as unknown[]));
    else if (v !== null && typeof v === "object") {
      const o = v as Record<string, unknown>;
      const arr = o["objects"] ?? o["contents"] ?? o["Contents"] ?? o["items"] ?? o["keys"] ?? o["entries"];
      if (Array.isArray(arr)) items.push(...(arr as unknown[]));
      else items.push(v);
      const pre = o["prefixes"] ?? o["commonPrefixes"] ?? o["CommonPrefixes"];
      if (Array.isArray(pre)) {
        for (const p of pre as unknown[]) {
          const k = typeof p === "string" ? p : field(p, "prefix") ?? field(p, "Prefix");
          if (typeof k === "string") prefixes.push(k);
        }
      }
    }
  };
  if (whole !== undefined) collect(whole);
  else for (const line of stdout.split("\n")) if (line.trim() !== "") collect(parseJson(line.trim()));
  const keys: string[] = [];
  for (const it of items) {
    let k: unknown = it;
    if (it !== null && typeof it === "object") {
      const o = it as Record<string, unknown>;
      k = o["key"] ?? o["Key"] ?? o["name"] ?? o["path"];
    }
    if (typeof k !== "string") continue;
    let rel = k.startsWith(`${BUCKET}/`) ? k.slice(BUCKET.length + 1) : k;
    if (rel.startsWith(`${set}/`)) rel = rel.slice(set.length + 1);
    if (rel !== "" && !rel.endsWith("/")) keys.push(rel);
  }
  return { keys, prefixes };
}

/** Every key under bench/<set>/: `ls --json --recursive`, else `ls --json` walking the sub-prefixes. */
async function listStowageKeys(c: Ctx): Promise<{ keys: string[]; ls: ProcResult } | { error: ProcResult }> {
  const top = `${BUCKET}/${c.set.name}/`;
  const rec = await stowageCmd(c, ["ls", top, "--json", "--recursive"]);
  if (failed(rec) === undefined) return { keys: parseLs(rec.stdout, c.set.name).keys, ls: rec };
  const keys: string[] = [];
  const queue = [top];
  let last: ProcResult | undefined;
  while (queue.length > 0) {
    const p = queue.shift()!;
    const r = await stowageCmd(c, ["ls", p, "--json"]);
    if (failed(r) !== undefined) return { error: r };
    last = r;
    const got = parseLs(r.stdout, c.set.name);
    keys.push(...got.keys);
    for (const sub of got.prefixes) queue.push(sub.startsWith(`${BUCKET}/`) ? sub : `${BUCKET}/${sub}`);
  }
  return { keys, ls: last! };
}

// restic ----------------------------------------------------------------------------------

function resticArgs(c: Ctx, ...args: string[]): string[] {
  return ["-r", c.repo, "--cache-dir", join(c.work, "restic-cache"), ...args];
}

function resticRun(c: Ctx, args: string[], cwd?: string): Promise<ProcResult> {
  return run("restic", resticArgs(c, ...args), {
    env: { ...process.env, RESTIC_PASSWORD: PASSPHRASE },
    timeoutMs: c.cfg.timeoutMs,
    scratch: c.scratch,
    ...(cwd === undefined ? {} : { cwd }),
  });
}

const restic: Driver = {
  name: "restic",
  async version(scratch) {
    const r = await run("restic", ["version"], { timeoutMs: 30_000, scratch });
    if (r.code !== 0) return undefined;
    return /restic [\d.]+/.exec(r.stdout)?.[0] ?? firstLine(r.stdout);
  },
  init: (c) => resticRun(c, ["init", "--repository-version", "2"]),
  ingest: (c) => resticRun(c, ["backup", ".", "--host", "stowage-bench", "--quiet"], c.set.dir),
  async restore(c) {
    return { r: await resticRun(c, ["restore", "latest", "--target", c.restoreDir, "--quiet"]) };
  },
  async stats(c) {
    const none = { dedup: undefined, compression: undefined, uniqueBytes: undefined, storedBytes: undefined };
    const list = await resticRun(c, ["list", "index", "--quiet"]);
    if (failed(list) !== undefined) return { ...none, note: `list index failed: ${failed(list)}` };
    let unique = 0;
    let stored = 0;
    let blobs = 0;
    let raw = 0;
    for (const id of list.stdout.split("\n").map((s) => s.trim()).filter((s) => /^[0-9a-f]{64}$/.test(s))) {
      const r = await resticRun(c, ["cat", "index", id, "--quiet"]);
      if (failed(r) !== undefined) return { ...none, note: `cat index failed: ${failed(r)}` };
      const packs = field(parseJson(r.stdout), "packs");
      if (!Array.isArray(packs)) return { ...none, note: "cat index: no packs" };
      for (const p of packs as unknown[]) {
        const bl = field(p, "blobs");
        if (!Array.isArray(bl)) continue;
        for (const b of bl as unknown[]) {
          const length = numField(b, "length") ?? 0;
          const ul = numField(b, "uncompressed_length");
          // Blobs stored raw carry a 32-byte nonce + MAC around the plaintext.
          unique += ul ?? Math.max(0, length - 32);
          if (ul === undefined) raw++;
          stored += length;
          blobs++;
        }
      }
    }
    return {
      dedup: ratio(c.set.logicalBytes, unique),
      compression: ratio(unique, stored),
      uniqueBytes: unique,
      storedBytes: stored,
      note: `index: ${blobs} blobs (${raw} stored uncompressed), unique ${(unique / MB).toFixed(1)} MB -> ${(stored / MB).toFixed(1)} MB`,
    };
  },
};

// borg ------------------------------------------------------------------------------------

function borgRun(c: Ctx, args: string[], cwd?: string): Promise<ProcResult> {
  return run("borg", args, {
    env: {
      ...process.env,
      BORG_PASSPHRASE: PASSPHRASE,
      BORG_BASE_DIR: join(c.work, "borg-home"),
      BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "yes",
      BORG_DISPLAY_PASSPHRASE: "no",
    },
    timeoutMs: c.cfg.timeoutMs,
    scratch: c.scratch,
    ...(cwd === undefined ? {} : { cwd }),
  });
}

const borg: Driver = {
  name: "borg",
  async version(scratch) {
    const r = await run("borg", ["--version"], { timeoutMs: 30_000, scratch });
    if (r.code !== 0) return undefined;
    return firstLine(r.stdout);
  },
  init: (c) => borgRun(c, ["init", "--encryption=repokey-blake2", c.repo]),
  ingest: (c) => borgRun(c, ["create", "--compression", "auto,zstd,3", `${c.repo}::bench`, "."], c.set.dir),
  async restore(c) {
    mkdirSync(c.restoreDir, { recursive: true });
    return { r: await borgRun(c, ["extract", `${c.repo}::bench`], c.restoreDir) };
  },
  async stats(c) {
    const r = await borgRun(c, ["info", "--json", c.repo]);
    const f = failed(r);
    if (f !== undefined) return { dedup: undefined, compression: undefined, uniqueBytes: undefined, storedBytes: undefined, note: `info failed: ${f}` };
    const j = parseJson(r.stdout);
    const unique = numField(j, "cache", "stats", "unique_size");
    const csize = numField(j, "cache", "stats", "unique_csize");
    const chunks = numField(j, "cache", "stats", "total_unique_chunks");
    return {
      dedup: ratio(c.set.logicalBytes, unique),
      compression: ratio(unique, csize),
      uniqueBytes: unique,
      storedBytes: csize,
      note: `cache.stats: ${chunks} unique chunks, unique ${((unique ?? 0) / MB).toFixed(1)} MB -> ${((csize ?? 0) / MB).toFixed(1)} MB`,
    };
  },
};

const DRIVERS: Record<Tool, Driver> = { stowage, restic, borg };

// ------------------------------------------------------------------------------ one run

interface RunResult {
  tool: Tool;
  set: SetName;
  /** Why the tool could not be measured at all (missing / failed step). */
  error: string | undefined;
  naReason: string | undefined;
  initSec: number | undefined;
  ingest: ProcResult | undefined;
  restore: ProcResult | undefined;
  restoreError: string | undefined;
  restoreNote: string | undefined;
  verify: string | undefined;
  verifyOk: boolean;
  repoAllocated: number | undefined;
  repoApparent: number | undefined;
  stats: RepoStats | undefined;
}

function emptyResult(tool: Tool, set: SetName): RunResult {
  return {
    tool,
    set,
    error: undefined,
    naReason: undefined,
    initSec: undefined,
    ingest: undefined,
    restore: undefined,
    restoreError: undefined,
    restoreNote: undefined,
    verify: undefined,
    verifyOk: false,
    repoAllocated: undefined,
    repoApparent: undefined,
    stats: undefined,
  };
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

const mbps = (bytes: number, s: number): number => bytes / MB / s;
const mb = (kb: number | undefined): string => (kb === undefined ? "?" : (kb / 1024).toFixed(0));

async function runTool(d: Driver, set: SourceSet, root: string, cfg: Config, scratch: string): Promise<RunResult> {
  const res = emptyResult(d.name, set.name);
  const c: Ctx = {
    set,
    repo: join(root, `repo-${d.name}-${set.name}`),
    restoreDir: join(root, `restore-${d.name}-${set.name}`),
    work: join(root, `work-${d.name}-${set.name}`),
    scratch,
    cfg,
  };
  mkdirSync(c.work, { recursive: true });
  const tag = `[${d.name} ${set.name}]`;
  try {
    syncFs(root);
    const init = await d.init(c);
    res.initSec = init.seconds;
    const fi = failed(init);
    if (fi !== undefined) {
      res.error = `init: ${fi}`;
      log(`${tag} init failed: ${fi}`);
      return res;
    }
    syncFs(root);
    const ing = await d.ingest(c);
    res.ingest = ing;
    const fg = failed(ing);
    if (fg !== undefined) {
      res.error = fg;
      log(`${tag} ingest failed after ${ing.seconds.toFixed(1)} s: ${fg}`);
      return res;
    }
    const du = diskUsage(c.repo);
    res.repoAllocated = du.allocated;
    res.repoApparent = du.apparent;
    log(
      `${tag} init ${init.seconds.toFixed(2)} s; ingest ${ing.seconds.toFixed(2)} s = ${mbps(set.logicalBytes, ing.seconds).toFixed(0)} MB/s, ` +
        `cpu ${ing.cpuSec?.toFixed(1) ?? "?"} s, rss ${mb(ing.peakRssKb)} MB; repo ${(du.allocated / MB).toFixed(1)} MB on disk`,
    );
    res.stats = await d.stats(c);
    log(`${tag} stats: dedup ${res.stats.dedup?.toFixed(2) ?? "?"} compression ${res.stats.compression?.toFixed(2) ?? "?"}; ${res.stats.note}`);
    syncFs(root);
    const { r, note } = await d.restore(c);
    res.restoreNote = note;
    const fr = failed(r);
    if (fr !== undefined) {
      res.restoreError = fr;
      log(`${tag} restore failed: ${fr}${note === undefined ? "" : ` (${note})`}`);
      return res;
    }
    res.restore = r;
    const v = verify(set, c.restoreDir);
    res.verify = v.detail;
    res.verifyOk = v.ok;
    log(
      `${tag} restore ${r.seconds.toFixed(2)} s = ${mbps(set.logicalBytes, r.seconds).toFixed(0)} MB/s, cpu ${r.cpuSec?.toFixed(1) ?? "?"} s, ` +
        `rss ${mb(r.peakRssKb)} MB${note === undefined ? "" : ` (${note})`}; verify ${v.detail} in ${v.seconds.toFixed(1)} s`,
    );
    if (!v.ok) process.exitCode = 1;
    return res;
  } finally {
    if (!cfg.keep) {
      rmSync(c.restoreDir, { recursive: true, force: true });
      rmSync(c.repo, { recursive: true, force: true });
      rmSync(c.work, { recursive: true, force: true });
    }
  }
}

function generateSet(name: SetName, root: string, cfg: Config): SourceSet {
  const dir = join(root, `data-${name}`);
  const plan = planDataset({ seed: cfg.seed, sizeMB: cfg.sizes[name], kinds: PRESETS[name] });
  const digests = new Map<string, string>();
  const sink = (): PieceSink => {
    const h = new Blake3Hasher();
    return {
      update: (p) => void h.update(Buffer.from(p.buffer, p.byteOffset, p.byteLength)),
      end: () => h.digest("hex"),
    };
  };
  const res = writeDataset(dir, plan, sink);
  for (const f of res.files) digests.set(f.path, f.digest!);
  const parts = plan.options.kinds
    .filter((k) => plan.filesByKind[k] > 0)
    .map((k) => `${k} ${plan.filesByKind[k]} files ${(plan.bytesByKind[k] / MB).toFixed(0)} MB`)
    .join(", ");
  return {
    name,
    dir,
    logicalBytes: plan.totalBytes,
    files: res.files.length,
    digests,
    genSeconds: res.seconds,
    description: `${(plan.totalBytes / MB).toFixed(0)} MB in ${res.files.length} files (${parts})`,
  };
}

// ---------------------------------------------------------------------------------- floor

interface Floor {
  combined: number;
  chunk: number;
  hash: number;
  encrypt: number;
  chunks: number;
  mib: number;
  reps: number;
}

/** Stowage's per-byte steps on an in-memory buffer, one thread: best of `reps` passes, MB/s. */
function measureFloor(cfg: Config): Floor {
  const n = Math.floor(cfg.floorMB * MB);
  const data = seededBytes(cfg.seed, "floor", n);
  const chunkKey = randomBytes(32);
  const idKey = randomBytes(32);
  const encKey = randomBytes(32);
  const params = new ChunkerParams({ key: chunkKey });
  const UPDATE = 128 * 1024;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let ends: number[] = [];
  const chunkPass = (): void => {
    ends = chunkBoundaries(data, params);
  };
  const hashPass = (): void => {
    let start = 0;
    for (const end of ends) {
      Blake3Hasher.newKeyed(idKey).update(buf.subarray(start, end)).digestBuffer();
      start = end;
    }
  };
  const encPass = (): void => {
    let start = 0;
    for (const end of ends) {
      const c = createCipheriv("aes-256-gcm", encKey, randomBytes(12));
      for (let off = start; off < end; off += UPDATE) c.update(buf.subarray(off, Math.min(end, off + UPDATE)));
      c.final();
      c.getAuthTag();
      start = end;
    }
  };
  const time = (f: () => void): number => {
    const t0 = process.hrtime.bigint();
    f();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  // Warm-up (also computes the boundaries the first passes use).
  chunkPass();
  hashPass();
  encPass();
  let best = { combined: 0, chunk: 0, hash: 0, encrypt: 0 };
  for (let r = 0; r < cfg.floorReps; r++) {
    const all = time(() => {
      chunkPass();
      hashPass();
      encPass();
    });
    const tc = time(chunkPass);
    const th = time(hashPass);
    const te = time(encPass);
    best = {
      combined: Math.max(best.combined, mbps(n, all)),
      chunk: Math.max(best.chunk, mbps(n, tc)),
      hash: Math.max(best.hash, mbps(n, th)),
      encrypt: Math.max(best.encrypt, mbps(n, te)),
    };
  }
  return { ...best, chunks: ends.length, mib: n / (1024 * 1024), reps: cfg.floorReps };
}

// --------------------------------------------------------------------------------- report

function fmt(x: number | undefined, digits: number): string {
  return x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits);
}

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const load = (): string => loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(
    `machine: ${availableParallelism()} cpus (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load average ${load()}`,
  );

  // Tools: versions, installing the peers once when missing.
  const scratch0 = mkdtempSync(join(tmpdir(), "stowage-ingest-probe-"));
  const versions = new Map<Tool, string | undefined>();
  try {
    for (const t of cfg.tools) versions.set(t, await DRIVERS[t].version(scratch0));
    const missing = cfg.tools.filter((t) => t !== "stowage" && versions.get(t) === undefined);
    if ((missing.length > 0 || !hasGnuTime()) && cfg.install) {
      log(`installing bench tools (missing: ${[...missing, ...(hasGnuTime() ? [] : ["time"])].join(", ")})`);
      const script = join(REPO_ROOT, "scripts", "install-bench-tools.sh");
      const r = spawnSync("bash", [script], { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
      log((r.stdout + r.stderr).trim());
      for (const t of missing) versions.set(t, await DRIVERS[t].version(scratch0));
    }
  } finally {
    rmSync(scratch0, { recursive: true, force: true });
  }
  console.log(
    `ingest bench: mode=${cfg.mode} seed=${cfg.seed} sets=${cfg.sets.map((s) => `${s}(${cfg.sizes[s]} MB)`).join(",")} ` +
      `tools=${cfg.tools.map((t) => versions.get(t) ?? `${t} (missing)`).join(", ")}; node ${process.version}; ` +
      `peak RSS via ${hasGnuTime() ? "GNU time" : "/proc VmHWM polling"}`,
  );

  const root = cfg.dir !== undefined ? (mkdirSync(cfg.dir, { recursive: true }), mkdtempSync(join(cfg.dir, "stowage-ingest-"))) : mkdtempSync(join(tmpdir(), "stowage-ingest-"));
  const scratch = join(root, "scratch");
  mkdirSync(scratch, { recursive: true });
  const cleanup = (): void => {
    if (!cfg.keep) rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: removing ${root}`);
    cleanup();
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const results: RunResult[] = [];
  const sources = new Map<SetName, SourceSet>();
  let floor: Floor | undefined;
  try {
    if (cfg.floorMB > 0) {
      floor = measureFloor(cfg);
      log(
        `floor: chunk ${floor.chunk.toFixed(0)} hash ${floor.hash.toFixed(0)} encrypt ${floor.encrypt.toFixed(0)} -> ` +
          `all three ${floor.combined.toFixed(0)} MB/s (${floor.mib.toFixed(0)} MiB, ${floor.chunks} chunks)`,
      );
    }
    for (const [si, setName] of cfg.sets.entries()) {
      const src = generateSet(setName, root, cfg);
      sources.set(setName, src);
      log(`[${setName}] generated ${src.description} in ${src.genSeconds.toFixed(1)} s (${mbps(src.logicalBytes, src.genSeconds).toFixed(0)} MB/s, hashed)`);
      // Alternate the order between sets so no tool always runs first (or last) on the machine.
      const order = si % 2 === 0 ? cfg.tools : [...cfg.tools].reverse();
      for (const t of order) {
        if (versions.get(t) === undefined) {
          const r = emptyResult(t, setName);
          r.naReason = t === "stowage" ? `${relative(REPO_ROOT, STOWAGE_MAIN)} not built` : `${t} not installed`;
          if (t === "stowage") r.error = r.naReason;
          results.push(r);
          continue;
        }
        results.push(await runTool(DRIVERS[t], src, root, cfg, scratch));
      }
      if (!cfg.keep) rmSync(src.dir, { recursive: true, force: true });
    }
  } finally {
    cleanup();
  }

  // ---- the report
  const get = (t: Tool, s: SetName): RunResult | undefined => results.find((r) => r.tool === t && r.set === s);
  const cell = (r: RunResult | undefined, value: (r: RunResult) => number | undefined, digits: number, stage: "ingest" | "restore" | "stats"): string => {
    if (r === undefined) return "n/a";
    if (r.naReason !== undefined && r.tool !== "stowage") return "n/a";
    if (r.error !== undefined) return `error (${r.error})`;
    if (stage === "restore" && r.restoreError !== undefined) return `error (${r.restoreError})`;
    if (stage === "restore" && !r.verifyOk && r.restore !== undefined) return `error (verify ${r.verify})`;
    return fmt(value(r), digits);
  };
  const line = (label: string, unit: string, f: (t: Tool) => string): void => {
    console.log(`${label}: ${cfg.tools.map((t) => `${t}=${f(t)}`).join(" ")}${unit === "" ? "" : ` ${unit}`}`);
  };
  const ratios: { label: string; values: Map<Tool, number | undefined>; higherIsBetter: boolean }[] = [];
  const record = (label: string, f: (t: Tool) => number | undefined, higherIsBetter = true): void => {
    ratios.push({ label, values: new Map(cfg.tools.map((t) => [t, f(t)])), higherIsBetter });
  };
  const ok = (r: RunResult | undefined): r is RunResult => r !== undefined && r.error === undefined && r.naReason === undefined;

  for (const s of cfg.sets) {
    const src = sources.get(s);
    if (src === undefined) continue;
    const ingestRate = (r: RunResult): number | undefined => (r.ingest === undefined ? undefined : mbps(src.logicalBytes, r.ingest.seconds));
    const restoreRate = (r: RunResult): number | undefined => (r.restore === undefined ? undefined : mbps(src.logicalBytes, r.restore.seconds));
    line(`ingest ${s}`, "MB/s", (t) => cell(get(t, s), ingestRate, 0, "ingest"));
    line(`restore ${s}`, "MB/s", (t) => cell(get(t, s), restoreRate, 0, "restore"));
    record(`ingest ${s}`, (t) => {
      const r = get(t, s);
      return ok(r) ? ingestRate(r) : undefined;
    });
    record(`restore ${s}`, (t) => {
      const r = get(t, s);
      return ok(r) && r.verifyOk ? restoreRate(r) : undefined;
    });
  }
  // Dedup is what the incompressible (media) set is about, compression the compressible one.
  const dedupSet: SetName = cfg.sets.includes("incompressible") ? "incompressible" : cfg.sets[0]!;
  const compSet: SetName = cfg.sets.includes("compressible") ? "compressible" : cfg.sets[0]!;
  line("ingest dedup-ratio", "", (t) => cell(get(t, dedupSet), (r) => r.stats?.dedup, 2, "stats"));
  line("ingest compression-ratio", "", (t) => cell(get(t, compSet), (r) => r.stats?.compression, 2, "stats"));
  record("ingest dedup-ratio", (t) => get(t, dedupSet)?.stats?.dedup);
  record("ingest compression-ratio", (t) => get(t, compSet)?.stats?.compression);
  const peak = (t: Tool, stage: "ingest" | "restore"): number | undefined => {
    const kbs = cfg.sets.map((s) => get(t, s)).filter(ok).map((r) => r[stage]?.peakRssKb).filter((x): x is number => x !== undefined);
    return kbs.length === 0 ? undefined : Math.max(...kbs) / 1024;
  };
  line("ingest peak-rss", "MB", (t) => {
    const r = cfg.sets.map((s) => get(t, s)).find((x) => x !== undefined && x.error !== undefined && x.tool === "stowage");
    if (r !== undefined && peak(t, "ingest") === undefined) return `error (${r.error})`;
    return fmt(peak(t, "ingest"), 0);
  });
  record("ingest peak-rss", (t) => peak(t, "ingest"), false);
  if (floor !== undefined) console.log(`floor hash+encrypt+chunk: ${floor.combined.toFixed(0)} MB/s`);

  for (const { label, values, higherIsBetter } of ratios) {
    if (!cfg.tools.includes("stowage")) break;
    const st = values.get("stowage");
    const parts = cfg.tools
      .filter((t) => t !== "stowage")
      .map((t) => {
        const v = values.get(t);
        return `stowage/${t}=${st !== undefined && v !== undefined && v > 0 ? (st / v).toFixed(2) : "n/a"}`;
      });
    if (parts.length > 0) console.log(`ratio ${label}: ${parts.join(" ")}${higherIsBetter ? "" : " (lower is better)"}`);
  }

  // ---- details
  for (const s of cfg.sets) {
    const src = sources.get(s);
    if (src === undefined) continue;
    console.log(`detail ${s}: ${src.description}; generated at ${mbps(src.logicalBytes, src.genSeconds).toFixed(0)} MB/s`);
    line(`detail ${s} repo-size`, "MB on disk", (t) => {
      const r = get(t, s);
      return r?.repoAllocated === undefined ? "n/a" : (r.repoAllocated / MB).toFixed(1);
    });
    line(`detail ${s} reduction (logical/on-disk)`, "", (t) => {
      const r = get(t, s);
      return r?.repoAllocated === undefined ? "n/a" : fmt(src.logicalBytes / r.repoAllocated, 2);
    });
    line(`detail ${s} dedup-ratio`, "", (t) => fmt(get(t, s)?.stats?.dedup, 2));
    line(`detail ${s} compression-ratio`, "", (t) => fmt(get(t, s)?.stats?.compression, 2));
    line(`detail ${s} ingest cpu`, "s (user+sys)", (t) => fmt(get(t, s)?.ingest?.cpuSec, 1));
    line(`detail ${s} ingest MB per cpu-second`, "", (t) => {
      const c = get(t, s)?.ingest?.cpuSec;
      return c === undefined || c === 0 ? "n/a" : (src.logicalBytes / MB / c).toFixed(0);
    });
    line(`detail ${s} restore cpu`, "s (user+sys)", (t) => fmt(get(t, s)?.restore?.cpuSec, 1));
    line(`detail ${s} peak-rss ingest/restore`, "MB", (t) => {
      const r = get(t, s);
      return `${mb(r?.ingest?.peakRssKb)}/${mb(r?.restore?.peakRssKb)}`;
    });
    line(`detail ${s} init`, "s", (t) => fmt(get(t, s)?.initSec, 2));
    for (const t of cfg.tools) {
      const r = get(t, s);
      if (r === undefined) continue;
      const bits = [
        r.naReason ?? r.error ?? "",
        r.verify === undefined ? "" : `verify ${r.verify}`,
        r.restoreNote ?? "",
        r.restoreError === undefined ? "" : `restore error: ${r.restoreError}`,
        r.stats?.note ?? "",
      ].filter((x) => x !== "");
      console.log(`detail ${s} ${t}: ${bits.join("; ")}`);
    }
  }
  if (floor !== undefined) {
    console.log(
      `detail floor: chunk=${floor.chunk.toFixed(0)} hash=${floor.hash.toFixed(0)} encrypt=${floor.encrypt.toFixed(0)} MB/s separately; ` +
        `all three ${floor.combined.toFixed(0)} MB/s on 1 thread (${floor.mib.toFixed(0)} MiB in memory, ${floor.chunks} chunks, best of ${floor.reps}; ` +
        `FastCDC keyed 256K/1M/4M, keyed BLAKE3, AES-256-GCM in 128 KiB updates)`,
    );
  }
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s; load average now ${load()}${cfg.keep ? `; kept ${root}` : ""}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
