/** Purge: watermarks, LRU order, pins, confirmation by the cloud and the secondary tier. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { allEvents, blob, drain, ev, has, kinds, makeTiers, packKey, type Tiers } from "./helpers.js";

// 10 000 bytes of capacity: purge above 9 000, down to 7 500. Packs of 1 000 bytes.
const CAP = { capacityBytes: 10_000, highWatermark: 0.9, lowWatermark: 0.75 };
const SIZE = 1000;

/** Nine cloud-first puts (9 000 bytes: at, not above, the high watermark). Returns their keys, oldest first. */
async function nine(t: Tiers): Promise<string[]> {
  const keys: string[] = [];
  for (let i = 0; i < 9; i++) {
    const k = packKey();
    keys.push(k);
    await t.tm.cloudFirst.put(k, blob(SIZE));
    await t.tm.idle();
  }
  assert.equal(t.tm.localUsage()?.bytes, 9000);
  return keys;
}

async function localKeys(t: Tiers, keys: readonly string[]): Promise<boolean[]> {
  return Promise.all(keys.map((k) => has(t.local, k)));
}

test("purge starts above the high watermark, drops least recently used copies down to the low one", async () => {
  const t = await makeTiers(CAP);
  const keys = await nine(t);
  assert.equal((await t.tm.purgeIfNeeded()).needed, false);
  // Reading 0, 1, 2 makes them the most recently used.
  for (const i of [0, 1, 2]) await t.tm.cloudFirst.get(keys[i]!);
  const tenth = packKey();
  keys.push(tenth);
  await t.tm.cloudFirst.put(tenth, blob(SIZE)); // 10 000 > 9 000: a purge runs in the background
  await t.tm.idle();
  assert.deepEqual(await localKeys(t, keys), [true, true, true, false, false, false, true, true, true, true]);
  for (const k of keys) assert.ok(await has(t.cloud, k), "the cloud keeps everything");
  const s = await t.tm.stats();
  assert.equal(s.local?.bytes, 7000);
  assert.equal(s.local?.packs, 7);
  assert.equal(s.counters.purges, 3);
  assert.equal(s.counters.purgedBytes, 3000);
  // purge-candidate before purged, per pack.
  const evs = (await allEvents(t.events)).filter((e) => e.kind === "purge-candidate" || e.kind === "purged");
  assert.deepEqual(
    evs.map((e) => `${e.kind} ${String(e.data.blobKey)}`),
    [3, 4, 5].flatMap((i) => [`purge-candidate ${keys[i]!}`, `purged ${keys[i]!}`]),
  );
  // Reads of purged packs still work (from the cloud).
  assert.equal((await t.tm.cloudFirst.get(keys[3]!)).length, SIZE);
});

test("pinned packs are never purged", async () => {
  const pinnedSet = new Set<string>();
  const asked: string[] = [];
  const t = await makeTiers({
    ...CAP,
    pins: [{ bucket: "footage", prefix: "2024/" }],
    packsOf: async (bucket, prefix) => {
      asked.push(`${bucket}/${prefix ?? ""}`);
      return pinnedSet;
    },
  });
  const keys = await nine(t);
  pinnedSet.add(keys[0]!).add(keys[1]!);
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE));
  await t.tm.idle();
  assert.deepEqual(await localKeys(t, keys), [true, true, false, false, false, true, true, true, true, true]);
  assert.deepEqual(asked, ["footage/2024/"]);
});

test("a pinned pack purged before its pin was known comes back: pin repair, despite the recently-purged skip", async () => {
  const pinnedSet = new Set<string>();
  const t = await makeTiers({ ...CAP, pins: [{ bucket: "footage" }], packsOf: async () => pinnedSet });
  const keys = await nine(t);
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE)); // purges 0, 1, 2 (nothing pinned yet)
  await t.tm.idle();
  assert.deepEqual((await localKeys(t, keys)).slice(0, 3), [false, false, false]);
  // Now the store's metadata names keys[0] as pinned, and its pack-uploaded arrives late.
  pinnedSet.add(keys[0]!);
  t.tm.start();
  await t.events.append([ev("pack-uploaded", keys[0]!, { size: SIZE })]);
  assert.equal(await t.tm.repairPins(), 1);
  await drain(t);
  assert.equal(await has(t.local, keys[0]!), true, "the pinned pack is local again");
  assert.equal(await has(t.local, keys[1]!), false, "an unpinned purged pack is not fetched back");
  assert.equal(await t.tm.repairPins(), 0, "nothing left to repair");
  await t.tm.stop();
});

test("no purge when the pins cannot be resolved", async () => {
  const t = await makeTiers({ ...CAP, pins: [{ bucket: "b" }], packsOf: async () => Promise.reject(new Error("store closed")) });
  await nine(t);
  await t.tm.cloudFirst.put(packKey(), blob(SIZE));
  await t.tm.idle();
  await assert.rejects(t.tm.purgeIfNeeded(), /store closed/);
  assert.equal(t.tm.localUsage()?.packs, 10);
  assert.equal((await t.tm.stats()).counters.purges, 0);
});

test("a copy the cloud does not confirm (missing, wrong size, head failing) is kept", async () => {
  const t = await makeTiers(CAP);
  const keys = await nine(t);
  await t.cloudInner.delete(keys[0]!); // the cloud says missing
  await t.cloudInner.put(keys[1]!, blob(SIZE - 1)); // the cloud has another size
  t.cloud.inject({ op: "head", key: (k) => k === keys[2] }); // the cloud cannot say
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE));
  await t.tm.idle();
  assert.deepEqual(await localKeys(t, keys), [true, true, true, false, false, false, true, true, true, true]);
  const s = await t.tm.stats();
  assert.equal(s.counters.purgeUnconfirmed, 3);
  assert.deepEqual(await kinds(t.events, "purge-candidate"), [keys[3]!, keys[4]!, keys[5]!]);
});

test("a cloud whose head always says missing means no purge at all", async () => {
  const t = await makeTiers(CAP);
  t.cloudInner.headSaysMissing = true;
  const keys = await nine(t);
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE));
  await t.tm.idle();
  const r = await t.tm.purgeIfNeeded();
  assert.equal(r.needed, true);
  assert.equal(r.purged, 0);
  assert.equal(r.kept.unconfirmed, 10);
  assert.deepEqual(await localKeys(t, keys), keys.map(() => true));
  assert.deepEqual(await kinds(t.events, "purge-candidate"), []);
  t.cloudInner.headSaysMissing = false;
  assert.equal((await t.tm.purgeIfNeeded()).purged, 3);
});

test("with a secondary tier, only copies it confirms too are purged", async () => {
  const t = await makeTiers({ ...CAP, withSecondary: true });
  const keys = await nine(t);
  for (const i of [0, 2, 4, 6]) await t.secondary!.put(keys[i]!, blob(SIZE));
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE));
  await t.tm.idle();
  assert.deepEqual(await localKeys(t, keys), [false, true, false, true, false, true, true, true, true, true]);
  assert.equal((await t.tm.stats()).counters.purgeUnconfirmed, 2); // 1 and 3; 5 was not reached
});

test("write-back packs awaiting upload are not purged; once uploaded they may be", async () => {
  const t = await makeTiers(CAP);
  const keys: string[] = [];
  for (let i = 0; i < 10; i++) {
    keys.push(packKey());
    await t.tm.writeBack!.put(keys[i]!, blob(SIZE));
  }
  await t.tm.idle();
  let r = await t.tm.purgeIfNeeded();
  assert.equal(r.purged, 0);
  assert.equal(r.kept.awaitingUpload, 10);
  assert.deepEqual(await localKeys(t, keys), keys.map(() => true));
  await t.events.append(keys.map((k) => ev("upload-needed", k, { size: SIZE })));
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.equal(t.marked.length, 10);
  r = await t.tm.purgeIfNeeded();
  assert.equal(t.tm.localUsage()?.bytes, 7000);
  // The hydrator saw the pack-uploaded events for the purged packs only after the purge, or before
  // it while the copies were still there: either way nothing was hydrated again.
  assert.equal((await t.tm.stats()).counters.hydrations, 0);
});

test("a purge after a restart starts from the listed local tier (key order), and start() purges periodically", async () => {
  const seed: Array<[string, Buffer]> = [];
  for (let i = 0; i < 10; i++) seed.push([`packs/0${i}/p${i}`, blob(SIZE)]);
  const t = await makeTiers({ ...CAP, seedLocal: seed, purgeIntervalMs: 10 });
  for (const [k, v] of seed) await t.cloud.put(k, v);
  assert.equal(t.tm.localUsage()?.bytes, 10_000);
  t.tm.start();
  await drain(t);
  for (let i = 0; i < 100 && t.tm.localUsage()!.bytes > 7500; i++) await new Promise((r) => setTimeout(r, 10));
  await t.tm.stop();
  assert.deepEqual(
    await localKeys(
      t,
      seed.map(([k]) => k),
    ),
    [false, false, false, true, true, true, true, true, true, true],
  );
});

test("a late pack-uploaded does not hydrate a pack this process purged; an explicit hydrate-needed does", async () => {
  const t = await makeTiers(CAP);
  const keys = await nine(t);
  keys.push(packKey());
  await t.tm.cloudFirst.put(keys[9]!, blob(SIZE));
  await t.tm.idle();
  assert.ok(!(await has(t.local, keys[0]!)));
  await t.events.append([ev("pack-uploaded", keys[0]!, { size: SIZE })]);
  t.tm.start();
  await drain(t);
  assert.ok(!(await has(t.local, keys[0]!)));
  await t.events.append([ev("hydrate-needed", keys[0]!, { reason: "test" })]);
  await drain(t);
  await t.tm.stop();
  assert.ok(await has(t.local, keys[0]!));
});
