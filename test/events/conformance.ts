/**
 * The event log conformance suite: what every `EventLog` must do (DESIGN.md decision 6). A log's
 * test file calls `eventLogConformance(name, make)`; each test gets a fresh, empty log from
 * `make()` and calls `cleanup()` afterwards (which must close the log, possibly already closed by
 * the test, and remove whatever it stored).
 *
 * The suite is partition-aware: it never assumes one partition, only what the interface promises
 * (per-key order, offset order within a partition, commits per partition).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import type { EventConsumer, EventKind, EventLog, LoggedEvent, StowageEvent } from "../../src/events/types.js";

export interface EventLogFixture {
  log: EventLog;
  /**
   * Durable logs only: closes the log (if the test has not) and opens the same storage again,
   * returning the new log (which `cleanup` then closes). Absent for logs that keep nothing.
   */
  reopen?: () => Promise<EventLog>;
  /**
   * Logs with retention the test can drive: the log was opened with `retentionMs`; `advance(ms)`
   * moves the log's clock forward and `apply()` runs retention now.
   */
  retention?: { retentionMs: number; advance(ms: number): void; apply(): Promise<void> };
  cleanup(): Promise<void>;
}

export interface ConformanceOptions {
  /**
   * How long a poll may need for events that are already in the log (a networked log fetches in
   * the background). Default 2000 ms.
   */
  settleMs?: number;
}

const KINDS: readonly EventKind[] = ["pack-uploaded", "hydrate-needed", "hydrated", "purged", "object-created"];

/** A test event: deterministic from `n`. */
export function testEvent(n: number, key = `pack-${n % 7}`): StowageEvent {
  return {
    id: `ev-${n}`,
    kind: KINDS[n % KINDS.length]!,
    key,
    time: 1_700_000_000_000 + n,
    data: { blobKey: `packs/${n.toString(16).padStart(4, "0")}`, size: n * 1000, last: n % 2 === 0, note: `é ✓ ${n}` },
  };
}

export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, context = ""): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `${context}expected ${code}, got ${String(err)}`);
    return true;
  });
}

/** The event as appended (drops partition and offset). */
export function strip(e: LoggedEvent): StowageEvent {
  return { id: e.id, kind: e.kind, key: e.key, time: e.time, data: e.data };
}

/**
 * Polls until `count` events came (or `timeoutMs` passed, then returns what came). Checks the
 * batch contract on the way: at most `max` per poll, offsets increasing within a partition.
 */
export async function pollN(c: EventConsumer, count: number, timeoutMs: number, max = 100): Promise<LoggedEvent[]> {
  const out: LoggedEvent[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const batch = await c.poll(Math.min(max, count - out.length), Math.min(left, 500));
    assert.ok(batch.length <= Math.min(max, count - out.length), "poll returned more than max");
    out.push(...batch);
  }
  checkPartitionOrder(out);
  return out;
}

/** Within each partition, offsets strictly increase in delivery order. */
export function checkPartitionOrder(events: readonly LoggedEvent[]): void {
  const last = new Map<number, number>();
  for (const e of events) {
    const prev = last.get(e.partition);
    if (prev !== undefined) assert.ok(e.offset > prev, `partition ${e.partition}: offset ${e.offset} after ${prev}`);
    last.set(e.partition, e.offset);
  }
}

/** Per key, the ids in delivery order. */
function idsByKey(events: readonly (StowageEvent | LoggedEvent)[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of events) {
    const l = m.get(e.key) ?? [];
    l.push(e.id);
    m.set(e.key, l);
  }
  return m;
}

/** Next offset per partition after these events (what committing them records). */
function nextOffsets(events: readonly LoggedEvent[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of events) m.set(e.partition, Math.max(m.get(e.partition) ?? 0, e.offset + 1));
  return m;
}

function sortById(events: readonly StowageEvent[]): StowageEvent[] {
  return [...events].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function eventLogConformance(
  name: string,
  make: () => Promise<EventLogFixture>,
  options: ConformanceOptions = {},
): void {
  const settle = options.settleMs ?? 2000;

  async function withLog(fn: (f: EventLogFixture) => Promise<void>): Promise<void> {
    const f = await make();
    try {
      await fn(f);
    } finally {
      await f.cleanup();
    }
  }

  describe(`event log conformance: ${name}`, () => {
    test("append/poll round trip keeps every field; location is set", () =>
      withLog(async ({ log }) => {
        assert.ok(log.location.length > 0);
        const events = [0, 1, 2, 3, 4].map((n) => testEvent(n, "one-key"));
        events.push({ id: "empty-data", kind: "object-deleted", key: "b/k", time: 0, data: {} });
        await log.append(events);
        await log.append([]);
        const c = await log.consumer("g");
        assert.equal(c.group, "g");
        const got = await pollN(c, events.length, settle);
        assert.deepEqual(
          sortById(got.map(strip)),
          sortById(events),
          "events come back with all fields intact",
        );
        // Same key: append order.
        assert.deepEqual(
          got.filter((e) => e.key === "one-key").map((e) => e.id),
          ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4"],
        );
        for (const e of got) {
          assert.ok(Number.isSafeInteger(e.offset) && e.offset >= 0);
          assert.ok(Number.isSafeInteger(e.partition) && e.partition >= 0);
        }
        // Nothing more: an empty poll after waitMs.
        assert.deepEqual(await c.poll(10, 50), []);
        await c.close();
      }));

    test("per-key order across many keys and batches (and poll's max)", () =>
      withLog(async ({ log }) => {
        const all: StowageEvent[] = [];
        let n = 0;
        for (let b = 0; b < 12; b++) {
          const batch: StowageEvent[] = [];
          for (let i = 0; i < 1 + (b % 5) * 4; i++) {
            batch.push(testEvent(n, `key-${(n * 7) % 13}`));
            n++;
          }
          all.push(...batch);
          await log.append(batch);
        }
        const c = await log.consumer("order");
        const got = await pollN(c, all.length, settle * 2, 7);
        assert.equal(got.length, all.length);
        assert.deepEqual(idsByKey(got), idsByKey(all));
        assert.equal(new Set(got.map((e) => e.id)).size, all.length, "no duplicates");
        await c.close();
      }));

    test("two groups consume the same events independently", () =>
      withLog(async ({ log }) => {
        const events = Array.from({ length: 10 }, (_, i) => testEvent(i));
        await log.append(events);
        const a = await log.consumer("group-a");
        const b = await log.consumer("group-b");
        const gotA = await pollN(a, 10, settle);
        await a.commit(gotA);
        const gotB = await pollN(b, 4, settle, 4);
        assert.equal(gotA.length, 10);
        assert.equal(gotB.length, 4);
        await b.commit(gotB);
        assert.equal(await log.lag("group-a"), 0);
        assert.equal(await log.lag("group-b"), 6);
        const rest = await pollN(b, 6, settle);
        assert.deepEqual(sortById([...gotB, ...rest].map(strip)), sortById(events));
        await a.close();
        await b.close();
      }));

    test("commit, then a new consumer of the group resumes after the commit", () =>
      withLog(async ({ log }) => {
        const events = Array.from({ length: 12 }, (_, i) => testEvent(i, `k${i % 3}`));
        await log.append(events);
        const c1 = await log.consumer("resume");
        const got = await pollN(c1, 12, settle);
        assert.equal(got.length, 12);
        const done = got.slice(0, 5);
        await c1.commit(done);
        await c1.commit([]);
        await c1.close();
        const next = nextOffsets(done);
        const expected = got.filter((e) => e.offset >= (next.get(e.partition) ?? 0));
        const c2 = await log.consumer("resume");
        const again = await pollN(c2, expected.length, settle);
        assert.deepEqual(sortById(again.map(strip)), sortById(expected.map(strip)));
        assert.deepEqual(await c2.poll(10, 100), [], "nothing before the commit comes back");
        await c2.close();
      }));

    test("uncommitted events are delivered again to the next consumer (at least once)", () =>
      withLog(async ({ log }) => {
        const events = Array.from({ length: 8 }, (_, i) => testEvent(i, `k${i % 2}`));
        await log.append(events);
        const c1 = await log.consumer("redo");
        const first = await pollN(c1, 8, settle);
        assert.equal(first.length, 8);
        await c1.close(); // nothing committed
        const c2 = await log.consumer("redo");
        const second = await pollN(c2, 8, settle);
        assert.deepEqual(sortById(second.map(strip)), sortById(events));
        // Commit only some: after a restart exactly the uncommitted ones come back.
        const part = second.filter((e) => e.key === "k0");
        await c2.commit(part);
        await c2.close();
        const next = nextOffsets(part);
        const expected = second.filter((e) => e.offset >= (next.get(e.partition) ?? 0));
        const c3 = await log.consumer("redo");
        const third = await pollN(c3, expected.length, settle);
        assert.deepEqual(sortById(third.map(strip)), sortById(expected.map(strip)));
        await c3.close();
      }));

    test('start: "latest" skips what was appended before; "earliest" is the default', () =>
      withLog(async ({ log }) => {
        await log.append([testEvent(1), testEvent(2)]);
        const late = await log.consumer("late", { start: "latest" });
        const early = await log.consumer("early", { start: "earliest" });
        await log.append([testEvent(3)]);
        const gotLate = await pollN(late, 1, settle);
        assert.deepEqual(gotLate.map((e) => e.id), ["ev-3"]);
        assert.deepEqual(await late.poll(10, 100), []);
        const gotEarly = await pollN(early, 3, settle);
        assert.deepEqual(gotEarly.map((e) => e.id).sort(), ["ev-1", "ev-2", "ev-3"]);
        // "latest" fixes the group's position when the consumer is created: a later consumer of
        // the group starts there too, and the lag counts only what came after it.
        await late.close();
        assert.equal(await log.lag("late"), 1);
        const late2 = await log.consumer("late", { start: "latest" });
        assert.deepEqual((await pollN(late2, 1, settle)).map((e) => e.id), ["ev-3"]);
        await late2.close();
        // A group with a committed position ignores `start`.
        await early.commit(gotEarly);
        await early.close();
        const early2 = await log.consumer("early", { start: "earliest" });
        assert.deepEqual(await early2.poll(10, 100), []);
        await early2.close();
      }));

    test("poll waits up to waitMs, and wakes early when an event is appended", () =>
      withLog(async ({ log }) => {
        const c = await log.consumer("waiter");
        // Let a networked consumer settle (join its group) before timing it.
        assert.deepEqual(await c.poll(10, 200), []);
        let t0 = Date.now();
        assert.deepEqual(await c.poll(10, 300), []);
        const waited = Date.now() - t0;
        assert.ok(waited >= 250, `empty poll returned after ${waited} ms, expected about 300`);
        assert.ok(waited < 300 + settle, `empty poll took ${waited} ms`);

        t0 = Date.now();
        const pending = c.poll(10, 10_000);
        setTimeout(() => void log.append([testEvent(42)]), 100);
        const got = await pending;
        const took = Date.now() - t0;
        assert.deepEqual(got.map((e) => e.id), ["ev-42"]);
        assert.ok(took < 100 + settle, `poll woke after ${took} ms`);
        await c.close();
      }));

    test("lag counts appended-but-uncommitted events per group", () =>
      withLog(async ({ log }) => {
        assert.equal(await log.lag("nobody"), 0);
        await log.append(Array.from({ length: 9 }, (_, i) => testEvent(i)));
        assert.equal(await log.lag("nobody"), 9, "a group that never committed lags by everything");
        const c = await log.consumer("lagger");
        const got = await pollN(c, 9, settle);
        assert.equal(await log.lag("lagger"), 9, "polled is not committed");
        const part = got.slice(0, 4);
        await c.commit(part);
        const next = nextOffsets(part);
        const left = got.filter((e) => e.offset >= (next.get(e.partition) ?? 0)).length;
        assert.equal(await log.lag("lagger"), left);
        await c.commit(got);
        assert.equal(await log.lag("lagger"), 0);
        // Committing older events again does not move the position back.
        await c.commit(part);
        assert.equal(await log.lag("lagger"), 0);
        await log.append([testEvent(100)]);
        assert.equal(await log.lag("lagger"), 1);
        await c.close();
      }));

    test("close: the log and its consumers fail with STOWAGE_EVENTS_CLOSED; a waiting poll ends", () =>
      withLog(async ({ log }) => {
        await log.append([testEvent(1)]);
        const c = await log.consumer("closing");
        const got = await pollN(c, 1, settle);
        await c.close();
        await c.close(); // idempotent
        await rejectsWith(c.poll(1, 0), "STOWAGE_EVENTS_CLOSED", "consumer poll: ");
        await rejectsWith(c.commit(got), "STOWAGE_EVENTS_CLOSED", "consumer commit: ");

        const d = await log.consumer("closing-2");
        await pollN(d, 1, settle);
        const waiting = d.poll(10, 30_000).then(
          () => "resolved",
          (err: unknown) => (isStowageError(err, "STOWAGE_EVENTS_CLOSED") ? "closed" : `other: ${String(err)}`),
        );
        const t0 = Date.now();
        await log.close();
        await log.close(); // idempotent
        const how = await waiting;
        assert.ok(how === "closed" || how === "resolved", how);
        assert.ok(Date.now() - t0 < 10_000, "a waiting poll ends when the log closes");
        await rejectsWith(log.append([testEvent(2)]), "STOWAGE_EVENTS_CLOSED", "append: ");
        await rejectsWith(log.consumer("x"), "STOWAGE_EVENTS_CLOSED", "consumer: ");
        await rejectsWith(log.lag("x"), "STOWAGE_EVENTS_CLOSED", "lag: ");
        await rejectsWith(d.poll(1, 0), "STOWAGE_EVENTS_CLOSED", "poll after log close: ");
        await d.close();
      }));

    test("concurrent appends: nothing lost or duplicated, per-key order within each append", () =>
      withLog(async ({ log }) => {
        const writers = 8;
        const perWriter = 6;
        const appends: Promise<void>[] = [];
        const all: StowageEvent[] = [];
        for (let w = 0; w < writers; w++) {
          appends.push(
            (async () => {
              for (let j = 0; j < perWriter; j++) {
                const batch = [0, 1, 2].map((i) => testEvent(1000 * w + 10 * j + i, `writer-${w}`));
                all.push(...batch);
                await log.append(batch);
              }
            })(),
          );
        }
        await Promise.all(appends);
        const c = await log.consumer("concurrent");
        const got = await pollN(c, writers * perWriter * 3, settle * 2);
        assert.equal(got.length, all.length);
        assert.equal(new Set(got.map((e) => e.id)).size, all.length);
        // Each writer waited for its previous append: its events are in order.
        assert.deepEqual(idsByKey(got), idsByKey(all));
        await c.close();
      }));

    test("reopen: events, committed positions and lag survive (durable logs)", async (t) => {
      const f = await make();
      try {
        if (f.reopen === undefined) {
          t.skip("not durable");
          return;
        }
        const events = Array.from({ length: 10 }, (_, i) => testEvent(i, `k${i % 3}`));
        await f.log.append(events);
        const c = await f.log.consumer("durable");
        const got = await pollN(c, 10, settle);
        const done = got.slice(0, 6);
        await c.commit(done);
        await c.close();
        const log2 = await f.reopen();
        const next = nextOffsets(done);
        const expected = got.filter((e) => e.offset >= (next.get(e.partition) ?? 0));
        assert.equal(await log2.lag("durable"), expected.length);
        const c2 = await log2.consumer("durable");
        const again = await pollN(c2, expected.length, settle);
        assert.deepEqual(sortById(again.map(strip)), sortById(expected.map(strip)));
        // Appends continue after the old offsets.
        await log2.append([testEvent(50, "k0")]);
        const more = await pollN(c2, 1, settle);
        assert.deepEqual(more.map((e) => e.id), ["ev-50"]);
        const old = got.find((e) => e.partition === more[0]!.partition && e.key === "k0");
        if (old !== undefined) assert.ok(more[0]!.offset > old.offset);
        const fresh = await log2.consumer("fresh");
        assert.equal((await pollN(fresh, 11, settle)).length, 11);
        await c2.close();
        await fresh.close();
      } finally {
        await f.cleanup();
      }
    });

    test("retention drops old events every group has committed, and keeps the rest", async (t) => {
      const f = await make();
      try {
        if (f.retention === undefined) {
          t.skip("retention not driven by this fixture");
          return;
        }
        const { log } = f;
        const r = f.retention;
        await log.append(Array.from({ length: 10 }, (_, i) => testEvent(i, "k")));
        const a = await log.consumer("ret-a");
        const b = await log.consumer("ret-b");
        const gotA = await pollN(a, 10, settle);
        const gotB = await pollN(b, 10, settle);
        await a.commit(gotA.slice(0, 6));
        await b.commit(gotB);
        // Young events stay, whoever committed them.
        await r.apply();
        assert.equal((await pollN(await log.consumer("ret-young"), 10, settle)).length, 10);
        r.advance(r.retentionMs + 1000);
        await log.append([testEvent(10, "k")]);
        await b.commit(await pollN(b, 1, settle));
        await r.apply();
        // Old and committed by every group that ever committed (a: 6, b: 11): the first 6 go;
        // ret-young never committed, so it holds nothing back. The new event is too young.
        const fresh = await log.consumer("ret-fresh");
        const left = await pollN(fresh, 20, settle);
        assert.deepEqual(
          left.map((e) => e.id),
          ["ev-6", "ev-7", "ev-8", "ev-9", "ev-10"],
        );
        assert.equal(await log.lag("ret-a"), 5);
        assert.equal(await log.lag("ret-b"), 0);
        assert.equal(await log.lag("ret-never"), 5, "lag of a new group counts what is retained");
        await a.close();
        await b.close();
        await fresh.close();
      } finally {
        await f.cleanup();
      }
    });
  });
}
