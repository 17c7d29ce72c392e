/**
 * Tier crash test: a child process (crash-child.ts) runs a TierManager over LocalBackend
 * directories (cloud, local, secondary) and the EmbeddedEventLog, with its workers on, under a
 * workload of cloud-first and write-back puts and ranged reads with a small local tier (constant
 * purging) and failing local writes (constant hydration). It is killed with SIGKILL at a random
 * moment, or kills itself just before or just after the inner operation of the n-th hydration
 * write or purge delete. After every kill the parent checks the directories directly:
 *
 *   - every acknowledged cloud-first pack is in the cloud, byte for byte;
 *   - every acknowledged write-back pack is in the local tier or the cloud (the last copy is never
 *     purged), byte for byte;
 *   - every copy of any pack in any tier is whole (no torn or wrong blob, acknowledged or not).
 *
 * At the end the parent runs the manager itself until every worker group has caught up, purges,
 * and checks that every pack is where it should be: every acknowledged pack in the cloud and the
 * secondary tier, every write-back pack announced by markPackUploaded (`pack-uploaded`), every
 * pinned pack in the local tier, local usage at or below the low watermark unless only pinned
 * packs and packs the cloud does not hold (orphans of killed write-back puts) are left, the local
 * index equal to the local directory.
 *
 *   default                   12 kills (4 random, 4 during hydration, 4 during purge)
 *   STOWAGE_CRASH_ROUNDS=N    N kills
 *   STOWAGE_SEED=<n>          replay the parent's choices (kill moments vary with timing)
 *   STOWAGE_CRASH_KEEP=1      keep the directories (always kept when the test fails)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { BlobBackend } from "../../src/backend/backend.js";
import type { LoggedEvent } from "../../src/events/types.js";
import { TierManager } from "../../src/tier/manager.js";
import { CAPACITY, LOW, closeTiers, contentOf, isPinned, managerOptions, openTiers, type CrashChildConfig } from "./crash-shared.js";
import { mulberry32 } from "../../src/util/random.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "crash-child.js");

function rounds(): number {
  const n = process.env.STOWAGE_CRASH_ROUNDS;
  return n !== undefined && n !== "" ? Number(n) : 12;
}

function baseSeed(): number {
  const env = process.env.STOWAGE_SEED;
  return env !== undefined && env !== "" ? Number(env) : Math.floor(Math.random() * 2 ** 31);
}

type Line =
  | { t: "open" }
  | { t: "done" }
  | { t: "begin"; key: string; policy: "cloud" | "local" }
  | { t: "ack"; key: string }
  | { t: "crash"; at: string };

interface ChildResult {
  lines: Line[];
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function runChild(cfgPath: string, killAfterOpenMs: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn(process.execPath, [CHILD, cfgPath], { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    const hang = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`child hung; output so far:\n${out}\n${stderr}`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      if (timer === undefined && out.includes('{"t":"open"}')) timer = setTimeout(() => child.kill("SIGKILL"), killAfterOpenMs);
    });
    child.stderr.on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(hang);
      if (timer !== undefined) clearTimeout(timer);
      const raw = out.split("\n");
      if (raw[raw.length - 1] !== "") reject(new Error(`child output ends in a partial line: ${raw[raw.length - 1]}`));
      raw.pop();
      resolve({ lines: raw.map((l) => JSON.parse(l) as Line), stderr, code, signal });
    });
  });
}

async function copyOf(b: BlobBackend, key: string): Promise<Buffer | undefined> {
  try {
    return await b.get(key);
  } catch {
    return undefined;
  }
}

async function listKeys(b: BlobBackend): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for await (const info of b.list("packs/")) m.set(info.key, info.size);
  return m;
}

test("tier crash: SIGKILL during hydration, purge and anywhere else loses no pack", { timeout: 600_000 }, async () => {
  const seed = baseSeed();
  const rand = mulberry32(seed);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-tier-crash-"));
  console.log(`# tier crash: seed ${seed}, dir ${dir}`);
  const policy = new Map<string, "cloud" | "local">();
  const acked = new Set<string>();
  const stats = { kills: 0, selfKills: new Map<string, number>(), randomKills: 0, notReached: 0, begun: 0, acked: 0, childMs: 0, verifyMs: 0 };
  let ok = false;
  try {
    const n = rounds();
    for (let round = 0; round < n; round++) {
      const kind = round % 3 === 0 ? "random" : round % 3 === 1 ? "hydrate" : "purge";
      const cfg: CrashChildConfig = {
        dir,
        seed: Math.floor(rand() * 2 ** 31),
        known: [...acked],
        maxPuts: 60,
        runMs: 20_000,
      };
      if (kind !== "random") cfg.crashAt = { point: kind, nth: 1 + Math.floor(rand() * 6), before: rand() < 0.5 };
      const cfgPath = path.join(dir, `child-${round}.json`);
      fs.writeFileSync(cfgPath, JSON.stringify(cfg));
      // Self-kills should come first; the parent's kill is the fallback if the point is not reached.
      const killMs = kind === "random" ? 100 + Math.floor(rand() * 1200) : 4000;
      const t0 = Date.now();
      const res = await runChild(cfgPath, killMs);
      stats.childMs += Date.now() - t0;
      if (res.code === 2 || res.stderr.includes("child failed")) assert.fail(`child reported a failure:\n${res.stderr}`);
      assert.equal(res.signal, "SIGKILL", `child ended without being killed (code ${res.code}): ${res.stderr}`);
      stats.kills++;
      for (const l of res.lines) {
        if (l.t === "begin") {
          policy.set(l.key, l.policy);
          stats.begun++;
        } else if (l.t === "ack") {
          acked.add(l.key);
          stats.acked++;
        } else if (l.t === "crash") stats.selfKills.set(l.at, (stats.selfKills.get(l.at) ?? 0) + 1);
      }
      if (kind === "random") stats.randomKills++;
      else if (!res.lines.some((l) => l.t === "crash")) stats.notReached++;

      // Check the directories as the kill left them.
      const v0 = Date.now();
      const t = await openTiers(dir);
      try {
        for (const [name, b] of [["cloud", t.cloud], ["local", t.local], ["secondary", t.secondary]] as const) {
          for (const [key] of await listKeys(b)) {
            const data = await copyOf(b, key);
            assert.ok(data !== undefined && data.equals(contentOf(key)), `round ${round}: ${name} copy of ${key} is damaged`);
          }
        }
        for (const key of acked) {
          const inCloud = (await t.cloud.head(key)) !== undefined;
          if (policy.get(key) === "cloud") assert.ok(inCloud, `round ${round}: acknowledged cloud-first ${key} is not in the cloud`);
          else assert.ok(inCloud || (await t.local.head(key)) !== undefined, `round ${round}: acknowledged write-back ${key} was lost`);
        }
      } finally {
        await closeTiers(t);
      }
      stats.verifyMs += Date.now() - v0;
    }

    // Settle: run the manager here until every worker has caught up, then purge and look.
    const s0 = Date.now();
    const t = await openTiers(dir);
    const tm = await TierManager.open(managerOptions(t, t.local, t.cloud));
    try {
      tm.start();
      const end = Date.now() + 60_000;
      for (;;) {
        const s = await tm.stats();
        if (Object.values(s.lag).every((l) => l === 0)) {
          // Caught up: pinned packs missing locally (purged before their pin was known) are requested again.
          if ((await tm.repairPins()) === 0) break;
          await tm.idle();
        }
        if (Date.now() > end) assert.fail(`workers did not catch up: ${JSON.stringify(s.lag)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await tm.stop();
      const settleMs = Date.now() - s0;
      const report = await tm.purgeIfNeeded();
      const cloud = await listKeys(t.cloud);
      const local = await listKeys(t.local);
      const secondary = await listKeys(t.secondary);
      const c = await t.events.consumer("crash-test-inspect");
      const uploadedEvents = new Set<string>();
      for (;;) {
        const batch: LoggedEvent[] = await c.poll(1000, 0);
        if (batch.length === 0) break;
        for (const e of batch) if (e.kind === "pack-uploaded") uploadedEvents.add(String(e.data.blobKey));
      }
      await c.close();
      for (const key of acked) {
        assert.ok(cloud.has(key), `${key} (${policy.get(key)}) is not in the cloud after settling`);
        assert.ok(secondary.has(key), `${key} is not in the secondary tier after settling`);
        assert.ok(uploadedEvents.has(key), `${key} was never announced as uploaded`);
        if (isPinned(key)) assert.ok(local.has(key), `pinned ${key} is not in the local tier`);
      }
      let localBytes = 0;
      for (const size of local.values()) localBytes += size;
      const usage = tm.localUsage()!;
      assert.equal(usage.bytes, localBytes, "the local index matches the local directory");
      assert.equal(usage.packs, local.size);
      if (localBytes > LOW * CAPACITY) {
        // The purge stopped above its target: then nothing it may drop is left.
        for (const [key, size] of local) {
          const droppable = !isPinned(key) && cloud.get(key) === size && secondary.get(key) === size;
          assert.ok(!droppable, `${key} could have been purged (usage ${localBytes}; ${JSON.stringify(report)})`);
        }
      }
      console.log(
        `# tier crash: final purge ${JSON.stringify(report)}\n` +
        `# tier crash: ${stats.kills} kills (${stats.randomKills} random, self: ${JSON.stringify(Object.fromEntries(stats.selfKills))}, ` +
          `${stats.notReached} points not reached), ${stats.begun} puts begun, ${stats.acked} acknowledged, ` +
          `${acked.size} packs (${[...acked].filter((k) => policy.get(k) === "local").length} write-back, ${[...acked].filter(isPinned).length} pinned); ` +
          `after settling: cloud ${cloud.size}, secondary ${secondary.size}, local ${local.size} (${localBytes} B); children ran ${stats.childMs} ms, checks ${stats.verifyMs} ms, settling ${settleMs} ms`,
      );
    } finally {
      await tm.stop();
      await closeTiers(t);
    }
    ok = true;
  } finally {
    if (ok && process.env.STOWAGE_CRASH_KEEP !== "1") fs.rmSync(dir, { recursive: true, force: true });
    else console.log(`# tier crash: kept ${dir}`);
  }
});
