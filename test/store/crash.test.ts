/**
 * Object-store crash test: a child process (crash-child.ts) runs a random workload on a repository
 * (puts with shared content, overwrites, deletes, copies, multipart uploads, snapshots, version
 * pruning and gc with grace 0, a few at a time) and reports every operation before it starts (with
 * what must hold once it is acknowledged) and when it is acknowledged. The parent kills it with
 * SIGKILL at a random moment (50–1500 ms after it started opening the repository: during recovery,
 * puts, multipart completion, gc, ...), now and then lets the next child start on the crashed
 * repository before looking, then opens the repository itself and checks:
 *
 *   - every acknowledged operation holds: each key reads back with exactly the bytes (MD5) of its
 *     last acknowledged write, and a deleted key is missing — unless an operation on the key was
 *     in flight at the kill, in which case the old or the new state may be there (never anything
 *     else); an interrupted snapshot is all or nothing;
 *   - listings show exactly the keys that read back (no phantom objects);
 *   - `fsck --read-data` is clean (reference counts included);
 *   - after aborting the multipart uploads the kills left behind and a gc with grace 0, fsck is
 *     clean again, no orphan pack blob is left, and every object still reads back (from a freshly
 *     opened repository, so no cache can hide a deleted pack).
 *
 * One repository is used throughout, so every round recovers what earlier recoveries left.
 *
 *   default                   15 kills
 *   STOWAGE_CRASH_ROUNDS=N    N kills (soak)
 *   STOWAGE_SEED=<n>          replay the parent's choices (kill moments vary with timing)
 *   STOWAGE_CRASH_DIR=<dir>   where to make the repository (default the OS temp directory)
 *   STOWAGE_CRASH_KEEP=1      keep the repository (it is always kept when the test fails)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { isStowageError } from "../../src/errors.js";
import { RepositoryKeys, formatMasterKey } from "../../src/codec/keys.js";
import { initRepository, openRepository, type Repository } from "../../src/store/repository.js";
import { collectGarbage } from "../../src/store/gc.js";
import { fsck, type FsckReport } from "../../src/store/fsck.js";
import type { ObjectStore } from "../../src/store/store.js";
import type { StoreChildConfig } from "./crash-child.js";
import { mulberry32 } from "../../src/util/random.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "crash-child.js");
const BUCKETS = ["crash", "vers", "snap"] as const;

function killRounds(): number {
  const n = process.env.STOWAGE_CRASH_ROUNDS;
  return n !== undefined && n !== "" ? Number(n) : 15;
}

function baseSeed(): number {
  const env = process.env.STOWAGE_SEED;
  return env !== undefined && env !== "" ? Number(env) : Math.floor(Math.random() * 2 ** 31);
}

/** The MD5 of an object's content, or null when the key does not exist. */
type Value = string | null;

type Line =
  | { t: "start" }
  | { t: "open" }
  | { t: "done" }
  | { t: "begin"; id: number; op: string; eff: Array<[string, Value]> }
  | { t: "ack"; id: number };

interface ChildResult {
  lines: Line[];
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function runChild(cfgPath: string, killAfterStartMs: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS; // no TLS in the child; loading CA certificates slows its start
    delete env.STOWAGE_MASTER_KEY;
    const child = spawn(process.execPath, [CHILD, cfgPath], { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    const hang = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`child hung (no exit within 30 s); output so far:\n${out}\n${stderr}`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      if (timer === undefined && out.length === 0) timer = setTimeout(() => child.kill("SIGKILL"), killAfterStartMs);
      out += chunk;
    });
    child.stderr.on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(hang);
      if (timer !== undefined) clearTimeout(timer);
      const raw = out.split("\n");
      // Every line is one write(2) of less than PIPE_BUF bytes: there is no partial last line.
      if (raw[raw.length - 1] !== "") reject(new Error(`child output ends in a partial line: ${raw[raw.length - 1]}`));
      raw.pop();
      resolve({ lines: raw.map((l) => JSON.parse(l) as Line), stderr, code, signal });
    });
  });
}

/** An interrupted operation with several effects (a snapshot): all of them happened or none. */
interface AtomicCheck {
  desc: string;
  eff: Array<[string, Value]>;
}

class Stats {
  kills = 0;
  children = 0;
  chained = 0;
  killedBeforeOpen = 0;
  verifications = 0;
  begun = new Map<string, number>();
  acked = new Map<string, number>();
  inFlight = new Map<string, number>();
  /** In-flight operations whose new state was found after the kill / whose old state was. */
  inFlightApplied = 0;
  inFlightNotApplied = 0;
  abortedUploads = 0;
  gcPacksDeleted = 0;
  gcOrphans = 0;
  childMs = 0;
  verifyMs = 0;
  maxObjects = 0;
  maxPacks = 0;

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
      `${this.kills} kills in ${this.children} child runs (${this.killedBeforeOpen} before the repository was open, ` +
        `${this.chained} children started on an unverified crashed repository), ${this.verifications} verifications`,
      `time: children ${(this.childMs / 1000).toFixed(1)} s, verification ${(this.verifyMs / 1000).toFixed(1)} s`,
      `operations begun: ${fmt(this.begun)}`,
      `acknowledged: ${fmt(this.acked)}`,
      `in flight at a kill: ${fmt(this.inFlight)} (new state found ${this.inFlightApplied}, old state ${this.inFlightNotApplied})`,
      `parent: ${this.abortedUploads} leftover uploads aborted, gc deleted ${this.gcPacksDeleted} packs and ${this.gcOrphans} orphan blobs; ` +
        `at most ${this.maxObjects} objects and ${this.maxPacks} packs`,
    ];
  }
}

/**
 * Applies a child run to `expect` (key -> the values it may hold now). Acknowledged operations set
 * their keys' values; an operation in flight at the kill adds its value to the ones allowed (the
 * child runs one operation per key at a time, so it is the key's last operation of the run).
 */
function applyRun(expect: Map<string, Set<Value>>, res: ChildResult, checks: AtomicCheck[], stats: Stats): void {
  const begun = new Map<number, { op: string; eff: Array<[string, Value]> }>();
  const acked = new Set<number>();
  for (const line of res.lines) {
    if (line.t === "begin") {
      assert.ok(!begun.has(line.id), `operation ${line.id} begun twice`);
      begun.set(line.id, { op: line.op, eff: line.eff });
      stats.bump(stats.begun, line.op);
    } else if (line.t === "ack") {
      const b = begun.get(line.id);
      assert.ok(b !== undefined, `operation ${line.id} acknowledged but never begun`);
      acked.add(line.id);
      stats.bump(stats.acked, b.op);
      for (const [k, v] of b.eff) expect.set(k, new Set([v]));
    }
  }
  for (const [id, b] of begun) {
    if (acked.has(id)) continue;
    stats.bump(stats.inFlight, b.op);
    const fresh: Array<[string, Value]> = [];
    for (const [k, v] of b.eff) {
      const old = expect.get(k) ?? new Set<Value>([null]);
      if (!old.has(v)) fresh.push([k, v]);
      expect.set(k, new Set([...old, v]));
    }
    if (fresh.length > 1) checks.push({ desc: `interrupted ${b.op} (operation ${id})`, eff: fresh });
  }
}

async function readMd5(store: ObjectStore, full: string): Promise<Value> {
  const i = full.indexOf("/");
  const [bucket, key] = [full.slice(0, i), full.slice(i + 1)];
  let body: AsyncGenerator<Buffer>;
  try {
    body = (await store.getObject(bucket, key)).body;
  } catch (err) {
    if (isStowageError(err, "STOWAGE_NO_SUCH_KEY")) return null;
    throw new Error(`get ${full} failed: ${String(err)}`, { cause: err });
  }
  const h = createHash("md5");
  try {
    for await (const p of body) h.update(p);
  } catch (err) {
    throw new Error(`reading ${full} failed: ${String(err)}`, { cause: err });
  }
  return h.digest("hex");
}

async function listAll(store: ObjectStore): Promise<string[]> {
  const out: string[] = [];
  for (const b of BUCKETS) {
    let token: string | undefined;
    do {
      const r = await store.listObjects(b, token === undefined ? {} : { continuationToken: token });
      for (const o of r.objects) out.push(`${b}/${o.key}`);
      token = r.isTruncated ? r.nextContinuationToken : undefined;
    } while (token !== undefined);
  }
  return out.sort();
}

function assertFsckClean(r: FsckReport, when: string): void {
  if (!r.ok) assert.fail(`fsck ${when} found ${r.problems.length} problems:\n  ${r.problems.slice(0, 20).map((p) => `${p.kind}: ${p.message} (affects ${p.affects.join(", ")})`).join("\n  ")}`);
}

const show = (v: Value): string => (v === null ? "(missing)" : v);

/** Opens the repository after a kill, checks it against `expect` (then pins `expect` to what it found), fscks, gcs, fscks. */
async function verify(dir: string, keys: RepositoryKeys, expect: Map<string, Set<Value>>, checks: AtomicCheck[], stats: Stats): Promise<void> {
  let repo: Repository | undefined = await openRepository(dir, { keys, minPartSize: 1 });
  try {
    const actual = new Map<string, Value>();
    const wrong: string[] = [];
    for (const [k, allowed] of [...expect.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const v = await readMd5(repo.store, k);
      actual.set(k, v);
      if (!allowed.has(v)) wrong.push(`${k}: found ${show(v)}, expected ${[...allowed].map(show).join(" or ")}`);
      if (allowed.size > 1) {
        if (v !== null && [...allowed].indexOf(v) === allowed.size - 1) stats.inFlightApplied++;
        else stats.inFlightNotApplied++;
      }
    }
    if (wrong.length > 0) assert.fail(`${wrong.length} keys do not hold what was acknowledged:\n  ${wrong.slice(0, 20).join("\n  ")}`);
    for (const c of checks) {
      const applied = c.eff.map(([k, v]) => actual.get(k) === v);
      assert.ok(applied.every((a) => a === applied[0]), `${c.desc} is half applied: ${c.eff.map(([k], i) => `${k}=${applied[i] === true ? "new" : "old"}`).join(", ")}`);
    }
    const present = [...actual.entries()].filter(([, v]) => v !== null).map(([k]) => k).sort();
    assert.deepEqual(await listAll(repo.store), present, "the listings show exactly the objects that read back");
    expect.clear();
    for (const [k, v] of actual) if (v !== null) expect.set(k, new Set([v]));
    stats.maxObjects = Math.max(stats.maxObjects, present.length);

    assertFsckClean(await fsck(repo.store, { readData: true }), "after the crash");

    for (const b of BUCKETS) {
      for (const u of await repo.store.listMultipartUploads(b)) {
        await repo.store.abortMultipartUpload(b, u.uploadId);
        stats.abortedUploads++;
      }
    }
    const g = await collectGarbage(repo.store, { graceMs: 0 });
    stats.gcPacksDeleted += g.packsDeleted;
    stats.gcOrphans += g.orphanBlobsDeleted;
    await repo.close();
    repo = undefined;

    // A fresh open: no cached chunk can stand in for a pack gc deleted.
    repo = await openRepository(dir, { keys, minPartSize: 1 });
    const after = await fsck(repo.store, { readData: true });
    assertFsckClean(after, "after gc");
    assert.deepEqual(after.warnings, [], "gc left no orphan pack blobs");
    stats.maxPacks = Math.max(stats.maxPacks, after.packs);
    for (const k of present) assert.equal(await readMd5(repo.store, k), actual.get(k), `${k} after gc`);
    assert.deepEqual(await listAll(repo.store), present, "listings after gc");
    for (const b of BUCKETS) assert.deepEqual(await repo.store.listMultipartUploads(b), [], `no uploads left in ${b}`);
  } finally {
    await repo?.close();
  }
}

test("crash: SIGKILL during puts, multipart uploads, snapshots and gc; acknowledged objects survive, fsck stays clean", { timeout: 6 * 60 * 60 * 1000 }, async (t) => {
  const kills = killRounds();
  const seed = baseSeed();
  const rand = mulberry32(seed);
  const root = fs.mkdtempSync(path.join(process.env.STOWAGE_CRASH_DIR || os.tmpdir(), "stowage-store-crash-"));
  const dir = path.join(root, "repo");
  t.diagnostic(`store crash test: ${kills} kills, seed ${seed} (STOWAGE_SEED=${seed} replays), repository ${dir}`);
  const keys = RepositoryKeys.generate();
  const keyHex = formatMasterKey(keys);
  await initRepository(dir, { keys, chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 }, packTargetSize: 64 * 1024 });
  {
    const repo = await openRepository(dir, { keys });
    try {
      await repo.store.createBucket("crash");
      await repo.store.createBucket("vers");
      await repo.store.setVersioning("vers", "enabled");
      await repo.store.createBucket("snap");
    } finally {
      await repo.close();
    }
  }

  const stats = new Stats();
  const expect = new Map<string, Set<Value>>();
  let checks: AtomicCheck[] = [];
  let chain = 0;
  let failed = true;
  let lastRun = "";
  const started = Date.now();
  try {
    while (stats.kills < kills) {
      const present: Record<string, string> = {};
      const uncertain: string[] = [];
      for (const [k, vs] of expect) {
        if (vs.size > 1) uncertain.push(k);
        else {
          const v = [...vs][0]!;
          if (v !== null) present[k] = v;
        }
      }
      const cfg: StoreChildConfig = {
        dir,
        keyHex,
        seed: Math.floor(rand() * 2 ** 31),
        run: ++stats.children,
        concurrency: 2 + Math.floor(rand() * 3),
        runMs: 5000,
        present,
        uncertain,
      };
      const cfgPath = path.join(root, "child.json");
      fs.writeFileSync(cfgPath, JSON.stringify(cfg));
      const killAfter = 50 + Math.floor(rand() * 1451);
      const t0 = Date.now();
      const res = await runChild(cfgPath, killAfter);
      stats.childMs += Date.now() - t0;
      lastRun = `run ${cfg.run} (child seed ${cfg.seed}, concurrency ${cfg.concurrency}, kill after ${killAfter} ms): exit ${res.code} signal ${res.signal}, ${res.lines.length} lines\n${res.stderr}`;
      const killed = res.signal === "SIGKILL";
      if (!killed && !(res.code === 0 && res.lines.some((l) => l.t === "done"))) assert.fail(`child failed: ${lastRun}`);
      applyRun(expect, res, checks, stats);
      if (killed) {
        stats.kills++;
        if (!res.lines.some((l) => l.t === "open")) stats.killedBeforeOpen++;
        // Now and then the next child recovers the crashed repository before the parent looks.
        if (chain < 2 && stats.kills < kills && rand() < 0.25) {
          chain++;
          stats.chained++;
          continue;
        }
      }
      const t1 = Date.now();
      await verify(dir, keys, expect, checks, stats);
      stats.verifyMs += Date.now() - t1;
      stats.verifications++;
      checks = [];
      chain = 0;
    }
    failed = false;
  } catch (err) {
    if (err instanceof Error) err.message = `${err.message}\nreplay with STOWAGE_SEED=${seed}; repository kept at ${dir}\nlast child: ${lastRun}`;
    throw err;
  } finally {
    t.diagnostic(`store crash test: ${failed ? "FAILED after" : "passed in"} ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const line of stats.report()) t.diagnostic(line);
    if (!failed && process.env.STOWAGE_CRASH_KEEP !== "1") fs.rmSync(root, { recursive: true, force: true });
  }
  // The workload really ran: operations were acknowledged, and kills caught some in flight.
  const acked = [...stats.acked.values()].reduce((a, b) => a + b, 0);
  const inFlight = [...stats.inFlight.values()].reduce((a, b) => a + b, 0);
  assert.ok(acked >= kills / 2, `${acked} operations acknowledged in ${kills} kill rounds`);
  assert.ok(inFlight > 0, "some operations were in flight at a kill");
});
