/**
 * KafkaEventLog against a real Apache Kafka 4.x broker (KRaft, on 127.0.0.1), started by
 * scripts/services/kafka.sh: the conformance suite (a fresh topic per test, 3 partitions), and a
 * broker restart (SIGKILL) in the middle of a stream of appends and consumes.
 *
 * When the broker software is not installed, the tests are skipped with a message naming the
 * script (`scripts/services/kafka.sh install`), unless CI is set: then they fail. When it is
 * installed but not running, this file starts it, and stops it again at the end.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Admin } from "@platformatic/kafka";
import { isStowageError } from "../../src/errors.js";
import { KafkaEventLog, type KafkaEventLogOptions } from "../../src/events/kafka.js";
import type { LoggedEvent, StowageEvent } from "../../src/events/types.js";
import { eventLogConformance, rejectsWith, testEvent } from "./conformance.js";

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, "scripts", "services", "kafka.sh"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find scripts/services/kafka.sh above the test file");
    dir = up;
  }
  return dir;
}

const ROOT = repoRoot();
const SCRIPT = path.join(ROOT, "scripts", "services", "kafka.sh");

function service(cmd: string): { status: number; out: string; err: string } {
  const r = spawnSync("bash", [SCRIPT, cmd], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  return { status: r.status ?? 1, out: r.stdout.trim(), err: r.stderr.trim() };
}

const status = service("status");
const installed = !status.out.includes("not installed");
const skip = installed
  ? false
  : "the Kafka broker is not installed: run scripts/services/kafka.sh install (then the tests start it)";
if (!installed && process.env.CI !== undefined && process.env.CI !== "") {
  test("kafka broker is installed (CI)", () => {
    assert.fail("CI is set but the Kafka broker is not installed: .ci/run must run scripts/services/kafka.sh install");
  });
}

let bootstrap = "";
const t0 = Date.now();
function note(msg: string): void {
  if (process.env.STOWAGE_KAFKA_VERBOSE === "1") process.stderr.write(`[kafka test +${Date.now() - t0} ms] ${msg}\n`);
}
let startedHere = false;

function start(): string {
  const r = service("start");
  if (r.status !== 0) throw new Error(`scripts/services/kafka.sh start failed: ${r.err}`);
  return r.out.split("\n").pop()!;
}

describe("kafka event log (real broker)", { skip }, () => {
  before(() => {
    startedHere = service("status").status !== 0;
    bootstrap = start();
  });
  after(() => {
    if (startedHere) service("stop");
  });

  let n = 0;
  const topicName = (): string => `stowage-test-${process.pid}-${Date.now().toString(36)}-${n++}`;

  async function deleteTopic(topic: string): Promise<void> {
    const admin = new Admin({ clientId: "stowage-test-admin", bootstrapBrokers: [bootstrap], retries: 0 });
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.close().catch(() => undefined);
  }

  function options(topic: string): KafkaEventLogOptions {
    return { brokers: [bootstrap], topic, partitions: 3, sessionTimeoutMs: 6000, heartbeatIntervalMs: 500, fetchWaitMs: 200 };
  }

  eventLogConformance(
    "kafka",
    async () => {
      const topic = topicName();
      const log = await KafkaEventLog.open(options(topic));
      return {
        log,
        cleanup: async () => {
          await log.close();
          await deleteTopic(topic);
        },
      };
    },
    { settleMs: 5000 },
  );

  test("an unreachable broker fails with STOWAGE_EVENTS_IO", async () => {
    await rejectsWith(
      KafkaEventLog.open({ brokers: ["127.0.0.1:1"], topic: "x", retries: 0, timeoutMs: 1000 }),
      "STOWAGE_EVENTS_IO",
    );
  });

  test("broker killed (SIGKILL) and restarted mid-stream: no acknowledged event is lost, consumers resume", async () => {
    const topic = topicName();
    const log = await KafkaEventLog.open({ ...options(topic), retries: 2, retryDelayMs: 500, timeoutMs: 2000 });
    const consumer = await log.consumer("restart");
    const acked: StowageEvent[] = [];
    const consumed: LoggedEvent[] = [];
    let appendFailures = 0;
    let pollFailures = 0;
    let producing = true;
    let consuming = true;
    let next = 0;

    const producer = (async () => {
      while (producing) {
        const batch = Array.from({ length: 5 }, () => testEvent(next, `k${next++ % 4}`));
        // Like the outbox: an append that failed is appended again until it succeeds.
        const giveUp = Date.now() + 40_000;
        for (;;) {
          if (Date.now() > giveUp) throw new Error("an append kept failing for 40 s after the restart");
          try {
            await log.append(batch);
            acked.push(...batch);
            break;
          } catch (err) {
            assert.ok(isStowageError(err, "STOWAGE_EVENTS_IO"), `append failed with ${String(err)}`);
            appendFailures++;
            await new Promise((r) => setTimeout(r, 250));
          }
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const reader = (async () => {
      while (consuming) {
        try {
          const got = await consumer.poll(100, 300);
          consumed.push(...got);
          await consumer.commit(got);
        } catch (err) {
          assert.ok(isStowageError(err, "STOWAGE_EVENTS_IO"), `poll/commit failed with ${String(err)}`);
          pollFailures++;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    })();

    try {
      await new Promise((r) => setTimeout(r, 1500));
      const before = acked.length;
      const pid = Number(fs.readFileSync(path.join(ROOT, ".tmp", "services", "kafka.pid"), "utf8"));
      note(`killing the broker (pid ${pid}) after ${before} acknowledged events`);
      process.kill(pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 1500));
      const during = acked.length;
      note(`restarting the broker`);
      start();
      note(`broker restarted`);
      await new Promise((r) => setTimeout(r, 2000));
      producing = false;
      await producer;
      assert.ok(before > 0, "appends went through before the kill");
      assert.ok(acked.length > during, "appends go through again after the restart");

      note(`${acked.length} acknowledged; waiting for the consumer (${consumed.length} consumed)`);
      const want = new Set(acked.map((e) => e.id));
      const deadline = Date.now() + 25_000;
      while (Date.now() < deadline && [...want].some((id) => !consumed.some((e) => e.id === id))) {
        await new Promise((r) => setTimeout(r, 200));
      }
      consuming = false;
      await reader;
      const seen = new Set(consumed.map((e) => e.id));
      const missing = [...want].filter((id) => !seen.has(id));
      assert.deepEqual(missing, [], "every acknowledged event is consumed");
      // Per key, first deliveries come in append order (retried appends may add duplicates).
      const firstSeen = new Map<string, string[]>();
      const dedup = new Set<string>();
      for (const e of consumed) {
        if (dedup.has(e.id)) continue;
        dedup.add(e.id);
        firstSeen.set(e.key, [...(firstSeen.get(e.key) ?? []), e.id]);
      }
      for (const [key, ids] of firstSeen) {
        const nums = ids.map((id) => Number(id.slice(3)));
        assert.deepEqual(nums, [...nums].sort((a, b) => a - b), `key ${key} in order`);
      }
      assert.equal(await log.lag("restart"), 0);
      console.log(
        `restart: ${acked.length} events acknowledged (${during - before} during the outage), ` +
          `${consumed.length} deliveries, ${appendFailures} failed appends, ${pollFailures} failed polls/commits`,
      );
    } finally {
      producing = false;
      consuming = false;
      await Promise.allSettled([producer, reader]);
      if (service("status").status !== 0) start();
      await consumer.close();
      await log.close();
      await deleteTopic(topic);
    }
  });
});
