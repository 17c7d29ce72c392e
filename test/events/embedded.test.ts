/**
 * EmbeddedEventLog: the conformance suite (durable, with retention driven by a test clock), its
 * record format, and a SIGKILL crash test.
 *
 * Crash test: a child process (crash-child.ts) appends batches (up to 4 in flight) and prints
 * what it submitted and what was acknowledged; the parent kills it with SIGKILL at a random
 * moment, reopens the log and checks that every acknowledged event is there, in order, with no
 * gaps or duplicates: event ids count up with the submission order and each run continues
 * numbering where the log ends, so the log must hold exactly e-0 ... e-(N-1) at offsets 0 ... N-1.
 *   STOWAGE_EVENTS_CRASH_ROUNDS=N   kill rounds (default 8)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { EmbeddedEventLog, encodeEvent } from "../../src/events/embedded.js";
import { Kv } from "../../src/kv/db.js";
import { eventLogConformance, pollN, rejectsWith, testEvent } from "./conformance.js";

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "stowage-events-"));
}

eventLogConformance("embedded", async () => {
  const dir = tempDir();
  let clock = Date.now();
  const retentionMs = 60_000;
  const opts = { retentionIntervalMs: 0, retentionMs, now: () => clock };
  let log = await EmbeddedEventLog.open(dir, opts);
  return {
    get log() {
      return log;
    },
    reopen: async () => {
      await log.close();
      log = await EmbeddedEventLog.open(dir, opts);
      return log;
    },
    retention: {
      retentionMs,
      advance: (ms: number) => void (clock += ms),
      apply: async () => void (await log.applyRetention()),
    },
    cleanup: async () => {
      await log.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

test("embedded: retention keeps what a committed group has not consumed; the low watermark survives reopen", async () => {
  const dir = tempDir();
  let clock = 1_000_000;
  const opts = { retentionIntervalMs: 0, retentionMs: 1000, now: () => clock };
  try {
    let log = await EmbeddedEventLog.open(dir, opts);
    await log.append(Array.from({ length: 20 }, (_, i) => testEvent(i)));
    const slow = await log.consumer("slow");
    await slow.commit(await pollN(slow, 3, 1000));
    const fast = await log.consumer("fast");
    await fast.commit(await pollN(fast, 20, 1000));
    clock += 5000;
    assert.equal(await log.applyRetention(), 3, "only what the slow group committed goes");
    assert.equal(await log.lag("slow"), 17);
    await slow.commit(await pollN(slow, 17, 1000));
    assert.equal(await log.applyRetention(), 17);
    assert.equal(await log.lag("new-group"), 0);
    await log.close();
    // Everything was removed: offsets must continue after 19, not restart at 0.
    log = await EmbeddedEventLog.open(dir, opts);
    assert.equal(log.endOffset, 20);
    await log.append([testEvent(99)]);
    const c = await log.consumer("new-group");
    const got = await pollN(c, 1, 1000);
    assert.deepEqual(got.map((e) => [e.id, e.offset]), [["ev-99", 20]]);
    assert.equal(await log.lag("slow"), 1);
    await log.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("embedded: a record with a newer version or a bad checksum fails clearly", async () => {
  const dir = tempDir();
  try {
    const log = await EmbeddedEventLog.open(dir, { retentionIntervalMs: 0 });
    await log.append([testEvent(1), testEvent(2)]);
    await log.close();
    const rec = encodeEvent(testEvent(1), 5);
    assert.equal(rec[0], 0x45);
    assert.equal(rec[1], 1);
    const key = (o: number): Buffer => {
      const k = Buffer.alloc(9);
      k[0] = 0x65;
      k.writeBigUInt64BE(BigInt(o), 1);
      return k;
    };
    const db = await Kv.open(dir);
    const newer = Buffer.from(rec);
    newer[1] = 2;
    await db.put(key(0), newer);
    const flipped = encodeEvent(testEvent(2), 5);
    flipped[flipped.length - 2] ^= 0x01;
    await db.put(key(1), flipped);
    await db.close();
    const log2 = await EmbeddedEventLog.open(dir, { retentionIntervalMs: 0 });
    const c = await log2.consumer("g");
    await rejectsWith(c.poll(1, 0), "STOWAGE_FORMAT_VERSION");
    const c1 = await log2.consumer("g2");
    await c1.commit([{ ...testEvent(0), partition: 0, offset: 0 }]);
    await c1.close();
    const c2 = await log2.consumer("g2");
    await rejectsWith(c2.poll(1, 0), "STOWAGE_INTEGRITY");
    await log2.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "crash-child.js");

interface ChildRun {
  submitted: [number, number][];
  acked: [number, number][];
  done: boolean;
}

function runChild(dir: string, first: number, killAfterOpenMs: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, String(first), "5000"], { stdio: ["ignore", "pipe", "pipe"] });
    const run: ChildRun = { submitted: [], acked: [], done: false };
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      let nl: number;
      while ((nl = out.indexOf("\n")) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const [what, a, b] = line.split(" ");
        if (what === "open") setTimeout(() => child.kill("SIGKILL"), killAfterOpenMs);
        else if (what === "submit") run.submitted.push([Number(a), Number(b)]);
        else if (what === "ack") run.acked.push([Number(a), Number(b)]);
        else if (what === "done") run.done = true;
      }
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (signal === "SIGKILL" || code === 0) resolve(run);
      else reject(new Error(`crash child exited with ${code ?? signal}: ${err}`));
    });
  });
}

test("embedded: SIGKILL while appending loses no acknowledged event (in order, no gaps, no duplicates)", async () => {
  const rounds = Number(process.env.STOWAGE_EVENTS_CRASH_ROUNDS ?? "") || 8;
  const dir = tempDir();
  let total = 0;
  let acknowledged = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      const run = await runChild(dir, total, 20 + Math.floor(Math.random() * 300));
      const log = await EmbeddedEventLog.open(dir, { retentionIntervalMs: 0 });
      const c = await log.consumer(`check-${r}`);
      const all = [];
      for (;;) {
        const batch = await c.poll(1000, 0);
        if (batch.length === 0) break;
        all.push(...batch);
      }
      all.forEach((e, i) => {
        assert.equal(e.offset, i, `round ${r}: offsets have no gaps`);
        assert.equal(e.id, `e-${i}`, `round ${r}: event at offset ${i} is the one submitted as number ${i}`);
        assert.equal(e.key, `k${i % 5}`);
      });
      const n = all.length;
      for (const [, last] of run.acked) assert.ok(last < n, `round ${r}: acknowledged event e-${last} is missing (log has ${n})`);
      const maxSubmitted = run.submitted.reduce((m, [, b]) => Math.max(m, b), total - 1);
      assert.ok(n - 1 <= maxSubmitted, `round ${r}: the log holds events never submitted`);
      acknowledged += run.acked.reduce((s, [a, b]) => s + b - a + 1, 0);
      assert.equal(log.endOffset, n);
      await log.close();
      total = n;
    }
    assert.ok(total > 0 && acknowledged > 0, "the children appended something");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
