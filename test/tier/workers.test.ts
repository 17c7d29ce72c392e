/** The workers: idempotent handlers (every event delivered twice), secondary copies, redelivery, stats. */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { StowageEvent } from "../../src/events/types.js";
import { allEvents, blob, drain, ev, has, kinds, makeTiers, packKey, type Tiers } from "./helpers.js";

/** What a second delivery must not change: copies made, tier writes, and the events announcing copies. */
async function copyState(t: Tiers): Promise<unknown> {
  const s = await t.tm.stats();
  const evs = await allEvents(t.events);
  const count = (k: string): number => evs.filter((e) => e.kind === k).length;
  return {
    hydrations: s.counters.hydrations,
    uploads: s.counters.uploads,
    secondaryCopies: s.counters.secondaryCopies,
    purges: s.counters.purges,
    cloudPuts: s.cloud.requests.puts,
    localPuts: s.local?.requests.puts,
    secondaryPuts: s.secondary?.requests.puts,
    localBytes: s.local?.bytes,
    hydrated: count("hydrated"),
    secondaryCopied: count("secondary-copied"),
    purged: count("purged"),
  };
}

test("every event delivered twice: the second delivery changes no copy and no counter", async () => {
  const t = await makeTiers({ withSecondary: true });
  const cloudOnly = packKey(); // hydrate-needed
  const uploadedElsewhere = packKey(); // pack-uploaded with no local copy: hydrate + secondary
  const writeBack = packKey(); // upload-needed
  const data = new Map([
    [cloudOnly, blob(700)],
    [uploadedElsewhere, blob(800)],
    [writeBack, blob(900)],
  ]);
  await t.cloud.put(cloudOnly, data.get(cloudOnly)!);
  await t.cloud.put(uploadedElsewhere, data.get(uploadedElsewhere)!);
  await t.tm.writeBack!.put(writeBack, data.get(writeBack)!);
  const batch: StowageEvent[] = [
    ev("hydrate-needed", cloudOnly, { reason: "local-missing" }),
    ev("pack-uploaded", uploadedElsewhere, { size: 800 }),
    ev("upload-needed", writeBack, { size: 900 }),
  ];
  await t.events.append(batch);
  t.tm.start();
  await drain(t);
  const first = await copyState(t);
  assert.deepEqual(first, {
    hydrations: 2,
    uploads: 1,
    secondaryCopies: 2, // uploadedElsewhere, and writeBack once markPackUploaded announced it
    purges: 0,
    cloudPuts: 1, // the upload (the test's own puts bypass the manager)
    localPuts: 3, // the write-back put and two hydrations
    secondaryPuts: 2,
    localBytes: 2400,
    hydrated: 2,
    secondaryCopied: 2,
    purged: 0,
  });
  const marks = t.marked.length;
  assert.equal(marks, 1);

  // The same events again (a redelivery after a crash looks exactly like this to the handlers).
  await t.events.append(batch.map((e) => ({ ...e })));
  await drain(t);
  assert.deepEqual(await copyState(t), first);
  // markPackUploaded is idempotent on the store's side; the uploader may call it again.
  assert.ok(t.marked.length >= marks);

  // And once more after a restart of the workers, with the groups re-reading from the start.
  await t.tm.stop();
  for (const [k, v] of data) {
    assert.deepEqual(await t.local.get(k), v);
    assert.deepEqual(await t.cloud.get(k), v);
  }
  assert.deepEqual(await t.secondary!.get(uploadedElsewhere), data.get(uploadedElsewhere));
  assert.deepEqual(await t.secondary!.get(writeBack), data.get(writeBack));
});

test("events are redelivered after stop() when they were not handled, and then handled once", async () => {
  const t = await makeTiers();
  const key = packKey();
  await t.cloud.put(key, blob(100));
  const outage = t.cloud.inject({ op: "get" });
  await t.events.append([ev("hydrate-needed", key, { reason: "test" })]);
  t.tm.start();
  await new Promise((r) => setTimeout(r, 100));
  await t.tm.stop(); // while the handler is failing
  assert.equal((await t.tm.stats()).lag.hydrator, 1, "not committed");
  assert.ok(!(await has(t.local, key)));
  outage.remove();
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.ok(await has(t.local, key));
  assert.equal((await t.tm.stats()).counters.hydrations, 1);
  assert.deepEqual(await kinds(t.events, "hydrated"), [key]);
});

test("a hydrated event that could not be appended is appended on the retry", async () => {
  const t = await makeTiers();
  const key = packKey();
  await t.cloud.put(key, blob(100));
  const realAppend = t.events.append.bind(t.events);
  let failures = 1;
  t.events.append = async (evs) => {
    if (evs.some((e) => e.kind === "hydrated") && failures-- > 0) throw new Error("log unavailable");
    return realAppend(evs);
  };
  await t.events.append([ev("hydrate-needed", key, { reason: "test" })]);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(await kinds(t.events, "hydrated"), [key]);
  assert.equal((await t.tm.stats()).counters.hydrations, 1);
});

test("secondary copier: copies uploaded packs from the cloud when there is no local copy, skips deleted ones", async () => {
  const t = await makeTiers({ withSecondary: true, noLocal: true });
  const a = packKey();
  const gone = packKey();
  await t.tm.cloudFirst.put(a, blob(321));
  await t.events.append([ev("pack-uploaded", a, { size: 321 }), ev("pack-uploaded", gone, { size: 5 })]);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.ok(await has(t.secondary!, a));
  assert.ok(!(await has(t.secondary!, gone)));
  const s = await t.tm.stats();
  assert.equal(s.counters.secondaryCopies, 1);
  assert.equal(s.cloud.egressBytes, 321);
  assert.deepEqual(Object.keys(s.lag), ["secondary"]);
  assert.deepEqual(await kinds(t.events, "secondary-copied"), [a]);
});

test("an upload-needed for a pack deleted before its upload is dropped without marking it", async () => {
  const t = await makeTiers();
  const key = packKey();
  await t.tm.writeBack!.put(key, blob(10));
  await t.tm.writeBack!.delete(key);
  await t.events.append([ev("upload-needed", key, { size: 10 })]);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(t.marked, []);
  assert.ok(!(await has(t.cloud, key)));
  assert.equal((await t.tm.stats()).counters.uploadsMissing, 1);
});

test("an uploaded write-back pack whose local copy was purged is still marked on redelivery", async () => {
  const t = await makeTiers();
  const key = packKey();
  await t.tm.writeBack!.put(key, blob(10));
  await t.cloud.put(key, blob(10)); // the upload happened, the crash came before markPackUploaded
  await t.local.delete(key);
  await t.events.append([ev("upload-needed", key, { size: 10 })]);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(t.marked, [key]);
  assert.equal((await t.tm.stats()).counters.uploads, 0);
});

test("stats: per tier bytes, packs, requests, egress; counters; lag and backlog", async () => {
  const t = await makeTiers({ withSecondary: true, capacityBytes: 1 << 20 });
  const keys = [packKey(), packKey()];
  await t.tm.cloudFirst.put(keys[0]!, blob(1000));
  await t.tm.writeBack!.put(keys[1]!, blob(2000));
  await t.tm.idle();
  await t.local.inner.delete(keys[0]!);
  await t.tm.cloudFirst.get(keys[0]!, { offset: 0, length: 10 });
  await t.tm.idle();
  let s = await t.tm.stats();
  assert.equal(s.running, false);
  assert.equal(s.cloud.packs, undefined, "no scan yet");
  assert.deepEqual(s.hydrationBacklog, { lag: 1, requested: 1 });
  assert.deepEqual(s.lag, { hydrator: 1, uploader: 1, secondary: 1 });
  assert.equal(s.local?.packs, 1);
  assert.equal(s.local?.bytes, 2000);
  assert.equal(s.local?.capacityBytes, 1 << 20);
  assert.equal(s.local?.highWatermarkBytes, Math.floor(0.9 * (1 << 20)));
  assert.equal(s.local?.lowWatermarkBytes, Math.floor(0.75 * (1 << 20)));
  assert.equal(s.local?.awaitingUpload, 1);
  assert.equal(s.cloud.egressBytes, 10);
  assert.equal(s.local?.egressBytes, 0);
  await t.events.append([ev("upload-needed", keys[1]!, { size: 2000 })]);
  t.tm.start();
  await drain(t);
  s = await t.tm.stats({ scan: true });
  await t.tm.stop();
  assert.equal(s.running, true);
  assert.deepEqual(s.lag, { hydrator: 0, uploader: 0, secondary: 0 });
  assert.deepEqual(s.hydrationBacklog, { lag: 0, requested: 0 });
  assert.equal(s.cloud.packs, 2);
  assert.equal(s.cloud.bytes, 3000);
  assert.equal(s.secondary?.packs, 1, "the write-back pack, once marked uploaded");
  assert.equal(s.secondary?.bytes, 2000);
  assert.equal(s.local?.packs, 2);
  assert.equal(s.counters.hydrations, 1);
  assert.equal(s.counters.uploads, 1);
  assert.equal(s.counters.uploadedBytes, 2000);
  assert.equal(s.counters.secondaryCopies, 1);
  assert.ok(s.cloud.requests.lists >= 1);
  assert.equal(s.cloud.egressBytes, 10 + 1000, "the read, then the hydration");
});

test("an injected clock stamps events and paces the retry backoff (doubling, capped)", async () => {
  const sleeps: number[] = [];
  const t = await makeTiers({
    retryBaseMs: 5,
    retryMaxMs: 20,
    purgeIntervalMs: 999_999,
    clock: {
      now: () => 1234,
      sleep: (ms, signal) =>
        new Promise<void>((resolve) => {
          if (ms === 999_999) return signal.addEventListener("abort", () => resolve()); // the periodic purge: until stop()
          sleeps.push(ms);
          setImmediate(resolve);
        }),
    },
  });
  const key = packKey();
  await t.cloud.put(key, blob(10));
  t.cloud.inject({ op: "get", times: 5 });
  await t.events.append([ev("hydrate-needed", key, { reason: "test" })]);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(sleeps, [5, 10, 20, 20, 20]);
  const hydrated = (await allEvents(t.events)).filter((e) => e.kind === "hydrated");
  assert.equal(hydrated.length, 1);
  assert.equal(hydrated[0]!.time, 1234);
  assert.match(hydrated[0]!.id, /^tier-[0-9a-f]{16}$/);
  assert.equal(hydrated[0]!.key, key.slice(-32), "keyed by pack id");
});

test("drain() without started workers handles the backlog once, stopping a group at its first failure", async () => {
  const t = await makeTiers({ withSecondary: true });
  const a = packKey();
  const b = packKey();
  await t.tm.writeBack!.put(a, blob(10));
  await t.cloud.put(b, blob(20));
  await t.events.append([ev("upload-needed", a, { size: 10 }), ev("hydrate-needed", b, { reason: "test" })]);
  const outage = t.cloud.inject({ op: "put" });
  assert.equal(await t.tm.drain(), false, "the upload failed");
  assert.ok(await has(t.local, b), "the hydrator's group went on");
  assert.deepEqual(t.marked, []);
  let s = await t.tm.stats();
  assert.equal(s.lag.uploader, 3, "the failed event and all after it (hydrate-needed, hydrated) stay uncommitted");
  outage.remove();
  assert.equal(await t.tm.drain(), true);
  assert.deepEqual(t.marked, [a]);
  assert.ok(await has(t.secondary!, a), "the pack-uploaded announced by the upload was handled in the same drain");
  s = await t.tm.stats();
  assert.deepEqual(s.lag, { hydrator: 0, uploader: 0, secondary: 0 });
  t.tm.start();
  assert.equal(await t.tm.drain(1000), true, "with workers running it waits for them");
  await t.tm.stop();
});
