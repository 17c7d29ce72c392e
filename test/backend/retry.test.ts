/**
 * RetryingBackend: conformance (bare, and over a backend failing 20 % of calls), retries and
 * their limits, what is never retried, backoff timing on a fake clock, the AIMD concurrency
 * limit, list resumption, lost acknowledgements.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { StowageError, isStowageError } from "../../src/errors.js";
import {
  BackendIoError,
  FaultyBackend,
  MemoryBackend,
  RetryingBackend,
  isRetryable,
  isThrottle,
  type BlobBackend,
  type BlobInfo,
  type ByteRange,
  type RetryOptions,
} from "../../src/backend/index.js";
import { backendConformance, collect, rejectsWith, testBytes } from "./conformance.js";

const noSleep = (): Promise<void> => Promise.resolve();

backendConformance("RetryingBackend(MemoryBackend)", async () => {
  const inner = new MemoryBackend();
  return { backend: new RetryingBackend(inner), cleanup: () => inner.close() };
});

backendConformance("RetryingBackend(FaultyBackend(MemoryBackend), 20 % io faults and lost acks)", async () => {
  const inner = new MemoryBackend();
  const faulty = new FaultyBackend(inner, { seed: 11 });
  faulty.inject({ op: ["put", "delete"], kind: "lost-ack", probability: 0.1 });
  faulty.inject({ probability: 0.2 });
  faulty.inject({ op: "get", kind: "throttle", probability: 0.05 });
  return { backend: new RetryingBackend(faulty, { sleep: noSleep, maxAttempts: 20 }), cleanup: () => inner.close() };
});

/** Counts calls in flight in the backend it wraps, and the most seen at once. */
class InFlightProbe implements BlobBackend {
  readonly location: string;
  inFlight = 0;
  max = 0;
  /** Called at the start of every call with the in-flight count including it. */
  onStart: (inFlight: number) => void = () => undefined;

  constructor(readonly inner: BlobBackend) {
    this.location = inner.location;
  }

  async #track<T>(fn: () => Promise<T>): Promise<T> {
    this.inFlight++;
    this.max = Math.max(this.max, this.inFlight);
    this.onStart(this.inFlight);
    try {
      return await fn();
    } finally {
      this.inFlight--;
    }
  }

  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.#track(() => this.inner.put(key, body));
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.#track(() => this.inner.get(key, range));
  }
  head(key: string): Promise<BlobInfo | undefined> {
    return this.#track(() => this.inner.head(key));
  }
  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.#track(() => this.inner.delete(key));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

function setup(options: RetryOptions = {}, seed = 1): { inner: MemoryBackend; faulty: FaultyBackend; r: RetryingBackend } {
  const inner = new MemoryBackend();
  const faulty = new FaultyBackend(inner, { seed });
  return { inner, faulty, r: new RetryingBackend(faulty, { sleep: noSleep, ...options }) };
}

describe("RetryingBackend", () => {
  test("retries transient IO faults until the call succeeds; counts attempts and retries", async () => {
    const { inner, faulty, r } = setup();
    faulty.inject({ op: "put", times: 3 });
    faulty.inject({ op: "get", times: 2 });
    await r.put("k", Buffer.from("v"));
    assert.equal((await inner.get("k")).toString(), "v");
    assert.equal((await r.get("k")).toString(), "v");
    const s = r.stats();
    assert.equal(s.attempts, 4 + 3);
    assert.equal(s.retries, 5);
    assert.equal(s.giveUps, 0);
    assert.equal(s.inFlight, 0);
  });

  test("gives up with the last error after maxAttempts", async () => {
    const { faulty, r } = setup({ maxAttempts: 4 });
    await r.put("k", Buffer.from("v"));
    const f = faulty.inject({ op: "get" });
    await rejectsWith(r.get("k"), "STOWAGE_BACKEND_IO", /injected fault: get "k" failed/);
    assert.equal(f.fired, 4);
    assert.equal(r.stats().giveUps, 1);
    assert.equal(r.stats().retries, 3);
  });

  test("never retries NOT_FOUND, INVALID_ARGUMENT, NO_SPACE, or IO errors marked permanent", async () => {
    const sleeps: number[] = [];
    const { faulty, r } = setup({ sleep: async (ms) => void sleeps.push(ms) });
    await rejectsWith(r.get("missing"), "STOWAGE_BACKEND_NOT_FOUND");
    await rejectsWith(r.put("bad key", Buffer.from("x")), "STOWAGE_INVALID_ARGUMENT");
    await rejectsWith(r.get("k", { offset: -1, length: 1 }), "STOWAGE_INVALID_ARGUMENT");
    faulty.inject({ op: "put", kind: "no-space", times: 1 });
    await rejectsWith(r.put("k", Buffer.from("x")), "STOWAGE_NO_SPACE");
    assert.equal(r.stats().attempts, 4);
    assert.equal(r.stats().retries, 0);
    assert.deepEqual(sleeps, []);
    // A BackendIoError with retryable: false (a missing bucket, refused credentials) is final too.
    const permanent = new BackendIoError("bucket gone", { retryable: false });
    const failing = new RetryingBackend(
      Object.assign(Object.create(new MemoryBackend()) as MemoryBackend, { head: () => Promise.reject(permanent) }),
      { sleep: noSleep },
    );
    await assert.rejects(failing.head("k"), (err: unknown) => err === permanent);
    assert.equal(failing.stats().attempts, 1);
    assert.equal(failing.stats().giveUps, 1);
  });

  test("backoff: full jitter under min(cap, base * 2^(n-1)), timed on a fake clock, stops at the deadline", async () => {
    let now = 0;
    const sleeps: number[] = [];
    const opts = (extra: RetryOptions = {}): RetryOptions => ({
      baseDelayMs: 100,
      maxDelayMs: 1000,
      maxAttempts: 100,
      now: () => now,
      sleep: async (ms) => {
        sleeps.push(ms);
        now += ms;
      },
      ...extra,
    });
    // Draws of 0.5: exactly half of each ceiling.
    const { faulty, r } = setup(opts({ random: () => 0.5, deadlineMs: 2000 }));
    faulty.inject({ op: "head" });
    await rejectsWith(r.head("k"), "STOWAGE_BACKEND_IO");
    // 50 100 200 400 500 (cap 1000 / 2) ... while the total stays within 2000 ms.
    assert.deepEqual(sleeps, [50, 100, 200, 400, 500, 500]);
    assert.equal(now, 1750);
    assert.equal(r.stats().attempts, 7);
    assert.equal(r.backoffMs(1, 0.999), 99.9);
    assert.equal(r.backoffMs(30, 0.5), 500);

    // Seeded draws: reproducible, different for another seed, within their ceilings.
    const run = async (seed: number): Promise<number[]> => {
      sleeps.length = 0;
      now = 0;
      const s = setup(opts({ seed, maxAttempts: 9 }));
      s.faulty.inject({ op: "get" });
      await rejectsWith(s.r.get("k"), "STOWAGE_BACKEND_IO");
      return [...sleeps];
    };
    const a = await run(7);
    assert.equal(a.length, 8);
    assert.deepEqual(await run(7), a);
    assert.notDeepEqual(await run(8), a);
    a.forEach((ms, i) => assert.ok(ms >= 0 && ms < Math.min(1000, 100 * 2 ** i), `sleep ${i} = ${ms}`));
  });

  test("a list resumes after the last key it yielded: every key once, in order", async () => {
    const inner = new MemoryBackend();
    for (let i = 0; i < 50; i++) await inner.put(`k/${String(i).padStart(3, "0")}`, testBytes(i, i));
    let listings = 0;
    // Fails the listing after 10, 20 and 30 items (on its first three attempts).
    const flaky: BlobBackend = Object.assign(Object.create(inner) as MemoryBackend, {
      list: async function* (prefix: string): AsyncGenerator<BlobInfo> {
        const n = ++listings;
        let i = 0;
        for await (const info of inner.list(prefix)) {
          if (n <= 3 && i === n * 10) throw new StowageError("STOWAGE_BACKEND_IO", `list broke after ${i}`);
          i++;
          yield info;
        }
      },
    });
    const r = new RetryingBackend(flaky, { sleep: noSleep, maxAttempts: 2 });
    const got = await collect(r.list("k/"));
    assert.deepEqual(got, await collect(inner.list("k/")));
    assert.equal(listings, 4);
    assert.equal(r.stats().retries, 3);
    // A listing failing at its start is retried as well (FaultyBackend decides list faults per call).
    const faulty = new FaultyBackend(inner);
    faulty.inject({ op: "list", times: 2 });
    assert.equal((await collect(new RetryingBackend(faulty, { sleep: noSleep }).list(""))).length, 50);
  });

  test("a put whose acknowledgement was lost is retried and stays correct", async () => {
    const { inner, faulty, r } = setup();
    const f = faulty.inject({ op: "put", kind: "lost-ack", times: 2 });
    const body = [testBytes(1000, 1), testBytes(2000, 2)];
    await r.put("pack/1", body);
    assert.equal(f.fired, 2);
    assert.ok((await inner.get("pack/1")).equals(Buffer.concat(body)));
    const d = faulty.inject({ op: "delete", kind: "lost-ack", times: 1 });
    await r.delete("pack/1");
    assert.equal(d.fired, 1);
    assert.equal(await inner.head("pack/1"), undefined);
    assert.equal(r.stats().retries, 3);
  });

  test("AIMD: a throttle halves the limit once per window; successes grow it back by one per window", async () => {
    const { faulty, r } = setup({ initialConcurrency: 8, minConcurrency: 1, maxConcurrency: 8 });
    assert.equal(r.limit, 8);
    // Three calls throttled in the same window (all started before the first decrease): one halving.
    faulty.inject({ op: "put", kind: "throttle", times: 3 });
    await Promise.all([r.put("a", Buffer.from("1")), r.put("b", Buffer.from("2")), r.put("c", Buffer.from("3"))]);
    assert.equal(r.stats().throttles, 3);
    assert.equal(r.limit, 4);
    // The three retries succeeded (3 of the 4 successes needed); then 4 -> 5 -> ... -> 8.
    let calls = 0;
    while (r.limit < 8) {
      await r.head("a");
      calls++;
      assert.ok(calls < 100);
    }
    assert.equal(calls, 1 + 5 + 6 + 7);
    for (let i = 0; i < 50; i++) await r.head("a");
    assert.equal(r.limit, 8, "never above maxConcurrency");
    // Throttles one after another (each in a new window) halve each time, down to the minimum.
    faulty.inject({ op: "get", kind: "throttle", times: 5 });
    const limits: number[] = [];
    const seq = new RetryingBackend(faulty, { initialConcurrency: 8, maxConcurrency: 8, sleep: async () => void limits.push(seq.limit) });
    await seq.get("a");
    assert.deepEqual(limits, [4, 2, 1, 1, 1]);
    assert.equal(seq.stats().throttles, 5);
  });

  test("calls in flight never exceed the limit; callers beyond it queue", async () => {
    const inner = new MemoryBackend();
    const probe = new InFlightProbe(new FaultyBackend(inner, { latencyMs: 5 }));
    const r = new RetryingBackend(probe, { initialConcurrency: 3, maxConcurrency: 3 });
    let queuedSeen = 0;
    probe.onStart = () => (queuedSeen = Math.max(queuedSeen, r.stats().queued));
    await Promise.all(Array.from({ length: 20 }, (_, i) => r.put(`k${i}`, Buffer.from(`${i}`))));
    assert.equal(probe.max, 3);
    assert.equal(r.stats().maxInFlight, 3);
    assert.ok(queuedSeen > 0, "some callers waited");
    assert.equal(r.stats().inFlight, 0);

    // Under throttling the limit drops; calls started afterwards respect the lowered limit.
    const faulty = new FaultyBackend(inner, { latencyMs: 3, seed: 5 });
    const probe2 = new InFlightProbe(faulty);
    const r2 = new RetryingBackend(probe2, { initialConcurrency: 8, maxConcurrency: 8, minConcurrency: 1, baseDelayMs: 1, maxDelayMs: 5 });
    let violations = 0;
    probe2.onStart = (n) => {
      if (n > 8) violations++;
    };
    faulty.inject({ op: "get", kind: "throttle", probability: 0.3 });
    await Promise.all(Array.from({ length: 60 }, (_, i) => r2.get(`k${i % 20}`)));
    assert.equal(violations, 0);
    assert.ok(r2.stats().throttles > 0);
    assert.ok(probe2.max <= 8);
  });

  test("isThrottle / isRetryable", () => {
    assert.ok(isThrottle(new BackendIoError("slow down", { throttled: true })));
    assert.ok(!isThrottle(new StowageError("STOWAGE_BACKEND_IO", "x")));
    assert.ok(isRetryable(new StowageError("STOWAGE_BACKEND_IO", "x")));
    assert.ok(isRetryable(new BackendIoError("x")));
    assert.ok(!isRetryable(new BackendIoError("x", { retryable: false })));
    assert.ok(!isRetryable(new StowageError("STOWAGE_BACKEND_NOT_FOUND", "x")));
    assert.ok(!isRetryable(new Error("x")));
    const e = new BackendIoError("x", { throttled: true, httpStatus: 503 });
    assert.ok(isStowageError(e, "STOWAGE_BACKEND_IO"));
    assert.equal(e.httpStatus, 503);
    for (const bad of [{ maxAttempts: 0 }, { baseDelayMs: -1 }, { minConcurrency: 4, maxConcurrency: 2 }, { initialConcurrency: 1.5 }]) {
      assert.throws(() => new RetryingBackend(new MemoryBackend(), bad), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"));
    }
  });
});
