/**
 * Crash test: a child process (crash-child.ts) writes synced batches to a store and reports what
 * it submitted and what was acknowledged; it is killed with SIGKILL at random moments (a parent
 * timer) or at a chosen point of its file I/O (a CrashingFileSystem inside the child, torn writes
 * included: mid-WAL write, mid-flush, mid-compaction, mid-manifest write, mid-CURRENT switch,
 * mid-recovery). Now and then the next child starts on the crashed store before the parent has
 * looked, so crashes also hit the recovery of a crashed store. Then the parent reopens the store
 * and checks, through the public API (get and iterators):
 *
 *   - every acknowledged batch is present, with the right values;
 *   - the present batches of each child run are a prefix of its submit order (the write queue's
 *     order, which is the commit order; acks of concurrent batches may come in any order), and
 *     every batch is all-or-nothing: the whole store (iterated forwards and backwards, and read
 *     key by key) equals a model that applied exactly those prefixes — shared keys hold the last
 *     present writer's value, deleted keys are gone;
 *   - the store stays usable: a write, a read and a clean close.
 *
 * Everything runs on one directory, so recovery runs on top of earlier recoveries.
 *
 *   quick (default)           100 kills (child runs that end in SIGKILL; clean finishes extra)
 *   STOWAGE_CRASH_ROUNDS=N    N kills
 *   STOWAGE_SOAK=1            2000 kills
 *   STOWAGE_SEED=<n>          replay the kill modes and workloads of a run (timer kills land at
 *                             slightly different moments each time)
 *   STOWAGE_CRASH_DIR=<dir>   where to make the store (default the OS temp directory)
 *   STOWAGE_CRASH_KEEP=1      keep the store directory (it is always kept when a round fails)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { CrashingFileSystem, crashTargetOf, type CrashTarget } from "../../src/kv/crash-fs.js";
import { nodeFileSystem } from "../../src/kv/fs.js";
import { openKv } from "../../src/kv/index.js";
import {
  CRASH_STORE_OPTIONS,
  batchOps,
  markerKey,
  mulberry32,
  parseSubmit,
  type BatchSpec,
  type ChildConfig,
} from "./crash-workload.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "crash-child.js");

/** Kill rounds: child runs that end in a SIGKILL (runs that finish cleanly come on top). */
function killRoundsFromEnv(): number {
  const n = process.env.STOWAGE_CRASH_ROUNDS;
  if (n !== undefined && n !== "") return Number(n);
  if (process.env.STOWAGE_SOAK === "1") return 2000;
  return 100;
}

function baseSeed(): number {
  const env = process.env.STOWAGE_SEED;
  return env !== undefined && env !== "" ? Number(env) : Math.floor(Math.random() * 2 ** 31);
}

type Mode = "timer" | CrashTarget;

/** Kill modes and their weights. */
const MODES: [Mode, number][] = [
  ["timer", 30],
  ["wal", 20],
  ["table", 22],
  ["manifest", 13],
  ["current", 8],
  ["any", 7],
];

/**
 * Upper bounds for the crash point's operation number, per target, so that most crash points
 * fall inside a child's run (runMs 40-200): roughly the counted operations of a 150 ms run.
 */
const OPS_RANGE: Record<CrashTarget, number> = { wal: 45, table: 90, manifest: 45, current: 4, any: 160 };
/** The same while recovering a crashed store: about what an open does. */
const RECOVERY_OPS = 6;

interface ChildResult {
  lines: string[];
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  timerFired: boolean;
}

function runChild(cfg: ChildConfig, killAfterStartMs: number | undefined): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    // The child does no TLS: skip loading extra CA certificates, which Node 20 does at startup
    // and which costs more than the rest of its boot.
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn(process.execPath, [CHILD, JSON.stringify(cfg)], { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let stderr = "";
    let timerFired = false;
    let timer: NodeJS.Timeout | undefined;
    const hang = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`child hung (no exit within 30 s); output so far:\n${out}\n${stderr}`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      if (killAfterStartMs !== undefined && timer === undefined && out.length === 0 && chunk.startsWith("start")) {
        timer = setTimeout(() => {
          timerFired = true;
          child.kill("SIGKILL");
        }, killAfterStartMs);
      }
      out += chunk;
    });
    child.stderr.on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(hang);
      if (timer !== undefined) clearTimeout(timer);
      const lines = out.split("\n");
      // Every line is one write(2) of less than PIPE_BUF bytes: there is no partial last line.
      if (lines[lines.length - 1] !== "") reject(new Error(`child output ends in a partial line: ${lines[lines.length - 1]}`));
      lines.pop();
      resolve({ lines, stderr, code, signal, timerFired });
    });
  });
}

/** What the model holds after every batch verified so far. */
interface Model {
  data: Map<string, string>;
  /** Batches whose data keys are live, oldest first: [id, m] (the child picks deletions from these). */
  live: [number, number][];
}

/** The live list after `spec` (as the child keeps it). */
function advanceLive(live: [number, number][], spec: BatchSpec): [number, number][] {
  const d = spec.del?.[0];
  const out = d === undefined ? live.slice() : live.filter(([b]) => b !== d);
  out.push([spec.b, spec.m]);
  return out;
}

function applyBatch(model: Model, spec: BatchSpec): void {
  for (const op of batchOps(spec)) {
    if (op.type === "put") model.data.set(op.key, op.value);
    else model.data.delete(op.key);
  }
  model.live = advanceLive(model.live, spec);
}

function describe(v: string | undefined): string {
  if (v === undefined) return "(absent)";
  return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}... (${v.length} chars)` : JSON.stringify(v);
}

class Stats {
  readonly modes = new Map<string, number>();
  readonly outcomes = new Map<string, number>();
  readonly crashPoints = new Map<string, number>();
  readonly phases = new Map<string, number>();
  kills = 0;
  children = 0;
  verifications = 0;
  chained = 0;
  acked = 0;
  submitted = 0;
  presentUnacked = 0;
  lostUnacked = 0;
  crashesInOpen = 0;
  childMs = 0;
  verifyMs = 0;

  bump(m: Map<string, number>, k: string): void {
    m.set(k, (m.get(k) ?? 0) + 1);
  }

  report(): string[] {
    const fmt = (m: Map<string, number>): string =>
      [...m.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k}=${v}`)
        .join(" ");
    return [
      `${this.kills} kills in ${this.children} child runs, ${this.verifications} verifications ` +
        `(${this.chained} children started on an unverified crashed store)`,
      `time: children ${(this.childMs / 1000).toFixed(1)} s, verification ${(this.verifyMs / 1000).toFixed(1)} s`,
      `kill modes: ${fmt(this.modes)}`,
      `outcomes: ${fmt(this.outcomes)}`,
      `crash points (target[:file kind]/operation-when): ${fmt(this.crashPoints)}`,
      `crash points by what the store was doing: ${fmt(this.phases)}`,
      `kills during open/recovery: ${this.crashesInOpen}`,
      `batches: ${this.submitted} submitted, ${this.acked} acknowledged, ` +
        `${this.presentUnacked} present without ack, ${this.lostUnacked} unacknowledged and absent`,
    ];
  }
}

/** One child run: what it was told, and what it reported. */
interface Run {
  cfg: ChildConfig;
  desc: string;
  res: ChildResult;
  specs: BatchSpec[];
  acked: Set<number>;
}

function parseRun(cfg: ChildConfig, desc: string, res: ChildResult): Run {
  const specs: BatchSpec[] = [];
  const acked = new Set<number>();
  for (const line of res.lines) {
    const parts = line.split(" ");
    if (parts[0] === "submit") specs.push(parseSubmit(parts));
    else if (parts[0] === "ack") acked.add(Number(parts[1]));
  }
  const submitted = new Set(specs.map((s) => s.b));
  for (const b of acked) assert.ok(submitted.has(b), `batch ${b} acknowledged but never submitted`);
  return { cfg, desc, res, specs, acked };
}

/**
 * Opens the store after `runs` (children run one after another, each recovering what the one
 * before left) and checks it against the model; then writes, reads and closes.
 */
async function verifyRuns(dir: string, round: number, model: Model, runs: Run[], stats: Stats): Promise<void> {
  const db = await openKv(dir, { ...CRASH_STORE_OPTIONS });
  try {
    const expectedMarkers: string[] = [];
    for (const [r, { specs, acked }] of runs.entries()) {
      // Which batches made it: their markers must form a prefix of the run's submit order.
      const present: boolean[] = [];
      for (const s of specs) {
        const v = await db.get(markerKey(s.b));
        if (v !== undefined) assert.equal(v.toString(), String(s.b), `marker of batch ${s.b}`);
        present.push(v !== undefined);
      }
      let p = 0;
      while (p < specs.length && present[p]) p++;
      for (let i = p; i < specs.length; i++) {
        assert.ok(
          !present[i],
          `run ${r}: batch ${specs[i]!.b} (submit #${i}) is present but batch ${specs[p]!.b} (submit #${p}) ` +
            `submitted before it is not: not a prefix of the commit order`,
        );
        assert.ok(!acked.has(specs[i]!.b), `run ${r}: batch ${specs[i]!.b} was acknowledged but is missing after the crash`);
      }
      for (let i = 0; i < p; i++) {
        applyBatch(model, specs[i]!);
        expectedMarkers.push(markerKey(specs[i]!.b));
        if (!acked.has(specs[i]!.b)) stats.presentUnacked++;
      }
      stats.lostUnacked += specs.length - p;
      stats.submitted += specs.length;
      stats.acked += acked.size;
    }
    const markers = (await db.iterator({ prefix: "m/" }).all()).map(([k]) => k.toString());
    assert.deepEqual(markers, expectedMarkers.sort(), "the markers in the store are exactly those of the present batches");

    // The whole store must equal the model: atomicity, values, shared keys, deletions.
    const expected = [...model.data.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const actual = (await db.iterator().all()).map(([k, v]) => [k.toString(), v.toString()] as const);
    if (actual.length !== expected.length || actual.some(([k, v], i) => k !== expected[i]![0] || v !== expected[i]![1])) {
      const got = new Map(actual);
      const diffs: string[] = [];
      for (const [k, v] of expected) if (got.get(k) !== v) diffs.push(`${k}: expected ${describe(v)}, got ${describe(got.get(k))}`);
      for (const [k, v] of actual) if (!model.data.has(k)) diffs.push(`${k}: expected (absent), got ${describe(v)}`);
      assert.fail(`the store differs from the model (${diffs.length} keys):\n  ${diffs.slice(0, 20).join("\n  ")}`);
    }
    const reversed = (await db.iterator({ reverse: true }).all()).map(([k]) => k.toString());
    assert.deepEqual(reversed, expected.map(([k]) => k).reverse(), "reverse iteration");
    for (const [k, v] of expected) {
      const got = await db.get(k);
      assert.equal(got?.toString(), v, `get(${k})`);
    }

    // Usable: a write (dropping the markers checked), a read.
    const ops = expectedMarkers.map((key) => ({ type: "del" as const, key }));
    await db.batch([...ops, { type: "put", key: "parent/round", value: String(round) }]);
    for (const op of ops) model.data.delete(op.key);
    model.data.set("parent/round", String(round));
    assert.equal((await db.get("parent/round"))?.toString(), String(round));
  } finally {
    await db.close();
  }
}

test("CrashingFileSystem crashes at the chosen operation, tearing appends when asked", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-crashfs-"));
  try {
    class Crashed extends Error {}
    const infos: string[] = [];
    const cfs = new CrashingFileSystem(nodeFileSystem, {
      target: "wal",
      afterOps: 3,
      partial: true,
      random: () => 0.5,
      onCrash: (i) => infos.push(`${i.op} ${path.basename(i.file)} ${i.wrote}/${i.of}`),
      kill: () => {
        throw new Crashed();
      },
    });
    assert.equal(crashTargetOf("000012.log"), "wal");
    assert.equal(crashTargetOf("/x/MANIFEST-000003"), "manifest");
    assert.equal(crashTargetOf("7.tmp"), "current");
    assert.equal(crashTargetOf("LOCK"), undefined);
    const sst = cfs.createWritable(path.join(dir, "000001.sst"));
    sst.append(Buffer.from("not counted"));
    sst.close();
    const log = cfs.createWritable(path.join(dir, "000002.log"));
    log.append(Buffer.from("one"));
    log.append(Buffer.from("two"));
    assert.throws(() => log.append(Buffer.from("0123456789")), Crashed);
    log.close();
    assert.equal(fs.readFileSync(path.join(dir, "000002.log"), "utf8"), "onetwo01234");
    assert.deepEqual(infos, ["append 000002.log 5/10"]);
    assert.equal(cfs.opsByTarget.table, 1);
    assert.equal(cfs.opsByTarget.wal, 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("crash: SIGKILL at random moments and inside WAL, table, manifest and CURRENT writes", { timeout: 6 * 60 * 60 * 1000 }, async (t) => {
  const kills = killRoundsFromEnv();
  const seed = baseSeed();
  const rand = mulberry32(seed);
  const root = fs.mkdtempSync(path.join(process.env.STOWAGE_CRASH_DIR || os.tmpdir(), "stowage-crash-"));
  const dir = path.join(root, "db");
  t.diagnostic(`crash test: ${kills} kills, seed ${seed} (STOWAGE_SEED=${seed} replays), store ${dir}`);
  const stats = new Stats();
  const model: Model = { data: new Map(), live: [] };
  let nextBatch = 1;
  const started = Date.now();
  const totalWeight = MODES.reduce((a, [, w]) => a + w, 0);
  let failed = true;
  /** Child runs not verified yet (a chain: each child recovered what the previous one left). */
  let pending: Run[] = [];
  const context = (): string =>
    `replay with STOWAGE_SEED=${seed}; store kept at ${dir}\n` +
    pending
      .map(
        (r, i) =>
          `run ${i}: ${r.desc} (child seed ${r.cfg.seed}, first batch ${r.cfg.firstBatch}, concurrency ${r.cfg.concurrency}); ` +
          `${r.specs.length} submitted, ${r.acked.size} acked; exit code ${r.res.code} signal ${r.res.signal}` +
          `${r.res.lines.includes("open") ? "" : " (before open completed)"}\n` +
          `  ${r.res.lines.find((l) => l.startsWith("crash ")) ?? ""}${r.res.stderr === "" ? "" : `\n  ${r.res.stderr}`}`,
      )
      .join("\n");
  try {
    while (stats.kills < kills) {
      let pick = rand() * totalWeight;
      let mode: Mode = "timer";
      for (const [m, w] of MODES) {
        if ((pick -= w) < 0) {
          mode = m;
          break;
        }
      }
      const onCrashedStore = pending.length > 0 || stats.children === 0;
      let live = model.live;
      for (const r of pending) for (const s of r.specs) live = advanceLive(live, s);
      const cfg: ChildConfig = {
        dir,
        firstBatch: nextBatch,
        seed: Math.floor(rand() * 2 ** 31),
        concurrency: 1 + Math.floor(rand() * 4),
        runMs: 40 + Math.floor(rand() * 160),
        live,
      };
      let killAfter: number | undefined;
      let desc: string;
      if (mode === "timer") {
        killAfter = 5 + Math.floor(rand() * 296);
        cfg.runMs = 1000;
        desc = `killed by the parent ${killAfter} ms after start`;
      } else {
        cfg.crash = {
          target: mode,
          // On a crashed (or new) store, half the crash points fall in the first few operations:
          // inside the recovery (or creation) that the open runs.
          afterOps: 1 + Math.floor(rand() * (onCrashedStore && rand() < 0.5 ? RECOVERY_OPS : OPS_RANGE[mode])),
          partial: rand() < 0.5,
          after: rand() < 0.3,
        };
        desc = `crash point: ${mode} op #${cfg.crash.afterOps}${cfg.crash.partial ? " torn" : ""}${cfg.crash.after ? " after" : ""}`;
      }
      stats.bump(stats.modes, mode);
      stats.children++;
      if (pending.length > 0) stats.chained++;
      let t0 = Date.now();
      const res = await runChild(cfg, killAfter);
      stats.childMs += Date.now() - t0;
      const run = parseRun(cfg, desc, res);
      pending.push(run);
      for (const s of run.specs) nextBatch = Math.max(nextBatch, s.b + 1);
      const killed = res.signal === "SIGKILL";
      if (!killed && !(res.code === 0 && res.lines.includes("done"))) assert.fail(`child failed: ${context()}`);
      const crashLine = res.lines.find((l) => l.startsWith("crash "));
      stats.bump(
        stats.outcomes,
        !killed ? "clean exit" : crashLine !== undefined ? "self-kill at crash point" : res.timerFired ? "killed by timer" : "killed",
      );
      if (crashLine !== undefined) {
        const [, target, op, when, torn, phase] = crashLine.split(" ");
        const kind = crashTargetOf(crashLine.slice(crashLine.lastIndexOf(" ") + 1)) ?? "dir";
        stats.bump(stats.crashPoints, `${target === kind ? target : `${target}:${kind}`}/${op}-${torn !== "-/-" ? "torn" : when}`);
        stats.bump(stats.phases, phase!);
      }
      if (killed) {
        stats.kills++;
        if (!res.lines.includes("open")) stats.crashesInOpen++;
        // Now and then (more often after a torn write) let the next child recover the crashed
        // store before the parent looks.
        const torn = crashLine !== undefined && crashLine.split(" ")[4] !== "-/-";
        if (pending.length < 3 && rand() < (torn ? 0.6 : 0.3)) continue;
      }
      t0 = Date.now();
      try {
        await verifyRuns(dir, ++stats.verifications, model, pending, stats);
      } catch (err) {
        if (err instanceof Error) err.message = `${err.message}\n${context()}`;
        throw err;
      }
      stats.verifyMs += Date.now() - t0;
      pending = [];
    }
    if (pending.length > 0) await verifyRuns(dir, ++stats.verifications, model, pending, stats);
    failed = false;
  } finally {
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    t.diagnostic(`crash test: ${failed ? "FAILED after" : "passed in"} ${secs} s`);
    for (const line of stats.report()) t.diagnostic(line);
    if (!failed && process.env.STOWAGE_CRASH_KEEP !== "1") fs.rmSync(root, { recursive: true, force: true });
  }
});
