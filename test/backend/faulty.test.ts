/** FaultyBackend's outages, throttling faults and per-operation latency (the rest: backend.test.ts). */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isStowageError } from "../../src/errors.js";
import { FaultyBackend, MemoryBackend, isRetryable, isThrottle } from "../../src/backend/index.js";
import { collect, rejectsWith } from "./conformance.js";

describe("FaultyBackend: outages, throttling, per-operation latency", () => {
  test("outage: every matching call fails for the window of the clock, then the rule is spent", async () => {
    let now = 1000;
    const b = new FaultyBackend(new MemoryBackend(), { now: () => now });
    await b.put("k", Buffer.from("v"));
    const o = b.outage({ ms: 500 });
    assert.equal(o.endsAt, 1500);
    await rejectsWith(b.get("k"), "STOWAGE_BACKEND_IO", /injected fault: get "k" failed/);
    await rejectsWith(b.put("k", Buffer.from("w")), "STOWAGE_BACKEND_IO", /injected/);
    now = 1499;
    await rejectsWith(b.head("k"), "STOWAGE_BACKEND_IO");
    await rejectsWith(collect(b.list("")), "STOWAGE_BACKEND_IO");
    await rejectsWith(b.delete("k"), "STOWAGE_BACKEND_IO");
    now = 1500;
    assert.equal((await b.get("k")).toString(), "v");
    assert.equal(o.fired, 5);
    // Only the named operations and keys; `remove` ends it early; kinds throttle and no-space.
    const puts = b.outage({ ms: 10_000, op: "put", key: /^packs\//, kind: "throttle" });
    await b.put("meta/x", Buffer.from("m"));
    await assert.rejects(b.put("packs/1", Buffer.from("p")), (err: unknown) => isThrottle(err) && isRetryable(err));
    assert.equal((await b.get("k")).toString(), "v");
    puts.remove();
    await b.put("packs/1", Buffer.from("p"));
    b.outage({ ms: 100, op: ["put"], kind: "no-space" });
    await rejectsWith(b.put("a", Buffer.from("x")), "STOWAGE_NO_SPACE");
    for (const bad of [{ ms: -1 }, { ms: Number.NaN }, { ms: 5, kind: "corrupt" as unknown as "io" }, { ms: 5, op: [] }]) {
      assert.throws(() => b.outage(bad), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"), JSON.stringify(bad));
    }
  });

  test("outage on the real clock", async () => {
    const b = new FaultyBackend(new MemoryBackend());
    await b.put("k", Buffer.from("v"));
    b.outage({ ms: 60, op: "get" });
    await rejectsWith(b.get("k"), "STOWAGE_BACKEND_IO");
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal((await b.get("k")).toString(), "v");
  });

  test("throttle: the recognisable throttling error, for any operation, nothing stored", async () => {
    const inner = new MemoryBackend();
    const b = new FaultyBackend(inner);
    const f = b.inject({ kind: "throttle", times: 2 });
    await assert.rejects(b.put("k", Buffer.from("v")), (err: unknown) => {
      assert.ok(isStowageError(err, "STOWAGE_BACKEND_IO"));
      assert.match(err.message, /^injected fault: put "k" throttled: SlowDown \(HTTP 503\)/);
      assert.ok(isThrottle(err));
      return true;
    });
    assert.equal(await inner.head("k"), undefined);
    await assert.rejects(b.head("k"), isThrottle);
    assert.equal(f.fired, 2);
    await b.put("k", Buffer.from("v"));
    // An ordinary io fault is not a throttle.
    b.inject({ op: "get", times: 1 });
    await assert.rejects(b.get("k"), (err: unknown) => !isThrottle(err) && isRetryable(err));
  });

  test("opLatencyMs: per-operation delays override latencyMs", async () => {
    const inner = new MemoryBackend();
    await inner.put("k", Buffer.from("v"));
    const b = new FaultyBackend(inner, { opLatencyMs: { get: 40 } });
    let t = performance.now();
    await b.get("k");
    assert.ok(performance.now() - t >= 35, "get was not delayed");
    t = performance.now();
    await b.head("k");
    assert.ok(performance.now() - t < 30, "head was delayed");
    b.latencyMs = 40;
    b.opLatencyMs = { head: 0 };
    t = performance.now();
    await b.head("k");
    assert.ok(performance.now() - t < 30, "head override of 0 was not honoured");
    t = performance.now();
    await b.delete("nothing");
    assert.ok(performance.now() - t >= 35, "delete was not delayed by latencyMs");
  });
});
