/** The tier manager's views: cloud-first and write-back puts, local-first reads, deletes, listings. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { isStowageError } from "../../src/errors.js";
import { blob, drain, has, kinds, makeTiers, packKey, waitFor } from "./helpers.js";

test("cloud-first put lands in the cloud and the local tier", async () => {
  const t = await makeTiers();
  const key = packKey();
  const data = blob(1000);
  await t.tm.cloudFirst.put(key, data);
  assert.ok(await has(t.cloud, key), "cloud holds it when the put resolves");
  await t.tm.idle();
  assert.deepEqual(await t.local.get(key), data);
  const s = await t.tm.stats();
  assert.equal(s.local?.packs, 1);
  assert.equal(s.local?.bytes, 1000);
  assert.equal(s.cloud.requests.puts, 1);
  assert.equal(s.cloud.requests.bytesWritten, 1000);
  assert.deepEqual(await kinds(t.events, "hydrate-needed"), []);
});

test("a failing local copy (no space) still acknowledges, then the hydrator copies it", async () => {
  const t = await makeTiers();
  t.local.inject({ op: "put", kind: "no-space", times: 1 });
  const key = packKey();
  const data = blob(2000);
  await t.tm.cloudFirst.put(key, data);
  await t.tm.idle();
  assert.ok(await has(t.cloud, key));
  assert.ok(!(await has(t.local, key)), "the local copy failed");
  assert.deepEqual(await kinds(t.events, "hydrate-needed"), [key]);
  assert.equal((await t.tm.stats()).counters.localWriteFailures, 1);
  t.tm.start();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(await t.local.get(key), data);
  assert.deepEqual(await kinds(t.events, "hydrated"), [key]);
  const s = await t.tm.stats();
  assert.equal(s.counters.hydrations, 1);
  assert.equal(s.cloud.egressBytes, 2000, "the hydrator read the pack from the cloud");
  assert.equal(s.local?.bytes, 2000);
});

test("a cloud outage fails cloud-first puts cleanly; they succeed after it ends", async () => {
  const t = await makeTiers();
  const outage = t.cloud.inject({ op: "put" });
  const key = packKey();
  const data = blob(500);
  await assert.rejects(t.tm.cloudFirst.put(key, data), (err) => isStowageError(err, "STOWAGE_BACKEND_IO"));
  await t.tm.idle();
  assert.ok(!(await has(t.cloud, key)));
  assert.ok(!(await has(t.local, key)), "the local copy of a failed put is removed");
  assert.equal(t.tm.localUsage()?.bytes, 0);
  assert.deepEqual(await kinds(t.events, "hydrate-needed"), []);
  outage.remove();
  await t.tm.cloudFirst.put(key, data);
  await t.tm.idle();
  assert.deepEqual(await t.cloud.get(key), data);
  assert.deepEqual(await t.local.get(key), data);
});

test("a timed cloud outage (FaultyBackend.outage) fails puts while it lasts, not after", async () => {
  const t = await makeTiers();
  const outage = t.cloud.outage({ ms: 150 });
  const key = packKey();
  await assert.rejects(t.tm.cloudFirst.put(key, blob(100)), (err) => isStowageError(err, "STOWAGE_BACKEND_IO"));
  assert.ok(!(await has(t.local, key)));
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(outage.fired >= 1);
  await t.tm.cloudFirst.put(key, blob(100));
  await t.tm.idle();
  assert.ok(await has(t.cloud, key));
  assert.ok(await has(t.local, key));
});

test("a cloud put whose acknowledgement is lost fails the put and leaves no local orphan", async () => {
  const t = await makeTiers();
  t.cloud.inject({ op: "put", kind: "lost-ack", times: 1 });
  const key = packKey();
  await assert.rejects(t.tm.cloudFirst.put(key, blob(10)));
  assert.ok(!(await has(t.local, key)));
});

test("reads prefer the local tier and fall back to the cloud (missing, I/O error, disk full), then hydrate", async () => {
  const t = await makeTiers();
  const keys = [packKey(), packKey(), packKey(), packKey()];
  const datas = keys.map(() => blob(300));
  for (let i = 0; i < keys.length; i++) await t.tm.cloudFirst.put(keys[i]!, datas[i]!);
  await t.tm.idle();

  // Served locally: no cloud get.
  assert.deepEqual(await t.tm.cloudFirst.get(keys[0]!), datas[0]);
  assert.deepEqual(await t.tm.cloudFirst.get(keys[0]!, { offset: 10, length: 20 }), datas[0]!.subarray(10, 30));
  let s = await t.tm.stats();
  assert.equal(s.cloud.requests.gets, 0);

  // Missing locally (removed behind the manager's back).
  await t.local.inner.delete(keys[1]!);
  assert.deepEqual(await t.tm.cloudFirst.get(keys[1]!, { offset: 0, length: 100 }), datas[1]!.subarray(0, 100));
  // I/O error and disk-full on the local read.
  t.local.inject({ op: "get", key: (k) => k === keys[2], times: 1 });
  assert.deepEqual(await t.tm.cloudFirst.get(keys[2]!), datas[2]);
  t.local.inject({ op: "get", key: (k) => k === keys[3], kind: "no-space", times: 1 });
  assert.deepEqual(await t.tm.cloudFirst.get(keys[3]!), datas[3]);
  // A second read before hydration does not ask twice.
  await t.local.inner.delete(keys[1]!);
  await t.tm.cloudFirst.get(keys[1]!);
  await t.tm.idle();

  s = await t.tm.stats();
  assert.equal(s.cloud.requests.gets, 4);
  assert.equal(s.cloud.egressBytes, 100 + 300 + 300 + 300);
  assert.equal(s.counters.localMisses, 4);
  const requested = await kinds(t.events, "hydrate-needed");
  assert.deepEqual([...requested].sort(), [keys[1]!, keys[2]!, keys[3]!].sort());
  assert.equal(s.hydrationBacklog.requested, 3);
  assert.equal(s.local?.packs, 3, "the vanished copy was forgotten");

  t.tm.start();
  await drain(t);
  await t.tm.stop();
  for (let i = 0; i < keys.length; i++) assert.deepEqual(await t.local.get(keys[i]!), datas[i]);
  s = await t.tm.stats();
  // keys[2] and keys[3] still had local copies; their reads failed ("local-error"), which forces a fresh copy.
  assert.equal(s.counters.hydrations, 3);
  assert.equal(s.hydrationBacklog.requested, 0);
  assert.equal(s.local?.packs, 4);
  // Now served locally again.
  const gets = s.cloud.requests.gets;
  await t.tm.cloudFirst.get(keys[1]!);
  assert.equal((await t.tm.stats()).cloud.requests.gets, gets);
});

test("readHydrate: false reads from the cloud without asking for hydration", async () => {
  const t = await makeTiers({ readHydrate: false });
  const key = packKey();
  await t.cloud.put(key, blob(50));
  assert.equal((await t.tm.cloudFirst.get(key)).length, 50);
  await t.tm.idle();
  assert.deepEqual(await kinds(t.events, "hydrate-needed"), []);
});

test("a missing blob is NOT_FOUND; a local-only copy that fails to read reports the local error", async () => {
  const t = await makeTiers();
  await assert.rejects(t.tm.cloudFirst.get(packKey()), (err) => isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND"));
  assert.equal(await t.tm.cloudFirst.head(packKey()), undefined);
  const key = packKey();
  await t.tm.writeBack!.put(key, blob(10));
  t.local.inject({ op: "get", key: (k) => k === key, times: 1 });
  await assert.rejects(t.tm.writeBack!.get(key), (err) => isStowageError(err, "STOWAGE_BACKEND_IO"));
});

test("reads fall back to the secondary tier when the cloud fails", async () => {
  const t = await makeTiers({ withSecondary: true });
  const key = packKey();
  const data = blob(64);
  await t.cloud.put(key, data);
  await t.secondary!.put(key, data);
  t.cloud.inject({ op: ["get", "head"] });
  assert.deepEqual(await t.tm.cloudFirst.get(key), data);
  assert.deepEqual(await t.tm.cloudFirst.head(key), { key, size: 64 });
  const s = await t.tm.stats();
  assert.equal(s.secondary?.egressBytes, 64);
  assert.equal(s.counters.secondaryReads, 1);
});

test("write-back puts are local only until the uploader runs; then markPackUploaded was called", async () => {
  const t = await makeTiers({ withSecondary: true });
  const key = packKey();
  const data = blob(4096);
  await t.tm.writeBack!.put(key, data);
  assert.ok(await has(t.local, key));
  assert.ok(!(await has(t.cloud, key)));
  assert.equal((await t.tm.stats()).local?.awaitingUpload, 1);
  // Reads and listings see it.
  assert.deepEqual(await t.tm.writeBack!.get(key), data);
  assert.deepEqual(await t.tm.writeBack!.head(key), { key, size: 4096 });
  const listed = [];
  for await (const b of t.tm.writeBack!.list("packs/")) listed.push(b.key);
  assert.deepEqual(listed, [key]);
  const cloudListed = [];
  for await (const b of t.tm.cloudFirst.list("packs/")) cloudListed.push(b.key);
  assert.deepEqual(cloudListed, [], "the cloud-first view lists the cloud");

  // The store announces it (outbox), the uploader copies it and marks it.
  await t.events.append([{ id: "u1", kind: "upload-needed", key: "k", time: 0, data: { blobKey: key, size: 4096 } }]);
  t.tm.start();
  await waitFor(() => t.marked.length === 1, 5000, "markPackUploaded");
  assert.deepEqual(await t.cloud.get(key), data);
  assert.deepEqual(t.marked, [key]);
  // markPackUploaded announced pack-uploaded: the secondary copier copies it (from the local copy).
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(await t.secondary!.get(key), data);
  const s = await t.tm.stats();
  assert.equal(s.counters.uploads, 1);
  assert.equal(s.counters.secondaryCopies, 1);
  assert.equal(s.cloud.egressBytes, 0, "secondary copy came from the local tier");
  assert.equal(s.local?.awaitingUpload, 0);
  assert.deepEqual(await kinds(t.events, "secondary-copied"), [key]);
});

test("the write-back view lists the union of the cloud and local tiers, in key order", async () => {
  const t = await makeTiers();
  await t.cloud.put("packs/aa/1", blob(1));
  await t.cloud.put("packs/cc/3", blob(3));
  await t.local.put("packs/bb/2", blob(2));
  await t.local.put("packs/cc/3", blob(3));
  await t.local.put("packs/dd/4", blob(4));
  const listed = [];
  for await (const b of t.tm.writeBack!.list("packs/")) listed.push(`${b.key}:${b.size}`);
  assert.deepEqual(listed, ["packs/aa/1:1", "packs/bb/2:2", "packs/cc/3:3", "packs/dd/4:4"]);
  const cloudOnly = [];
  for await (const b of t.tm.cloudFirst.list("packs/")) cloudOnly.push(b.key);
  assert.deepEqual(cloudOnly, ["packs/aa/1", "packs/cc/3"]);
});

test("the uploader retries while the cloud is down and commits only after markPackUploaded", async () => {
  const t = await makeTiers();
  const key = packKey();
  await t.tm.writeBack!.put(key, blob(100));
  const outage = t.cloud.inject({ op: "put" });
  await t.events.append([{ id: "u1", kind: "upload-needed", key: "k", time: 0, data: { blobKey: key, size: 100 } }]);
  t.tm.start();
  await waitFor(() => outage.fired >= 3, 5000, "retries");
  assert.equal(t.marked.length, 0);
  assert.equal((await t.tm.stats()).lag.uploader, 1, "not committed while failing");
  outage.remove();
  await drain(t);
  await t.tm.stop();
  assert.deepEqual(t.marked, [key]);
  assert.ok((await t.tm.stats()).counters.handlerRetries >= 3);
});

test("delete removes the blob from every tier and is idempotent", async () => {
  const t = await makeTiers({ withSecondary: true });
  const key = packKey();
  await t.tm.cloudFirst.put(key, blob(10));
  await t.tm.idle();
  await t.secondary!.put(key, blob(10));
  await t.tm.cloudFirst.delete(key);
  for (const b of [t.cloud, t.local, t.secondary!]) assert.ok(!(await has(b, key)));
  await t.tm.cloudFirst.delete(key);
  await t.tm.writeBack!.delete(key);
  assert.equal(t.tm.localUsage()?.packs, 0);
});

test("without a local tier the cloud-first view is the cloud, and there is no write-back view", async () => {
  const t = await makeTiers({ noLocal: true });
  assert.equal(t.tm.writeBack, undefined);
  const key = packKey();
  await t.tm.cloudFirst.put(key, blob(10));
  assert.equal((await t.tm.cloudFirst.get(key)).length, 10);
  await t.tm.idle();
  assert.deepEqual(await kinds(t.events, "hydrate-needed"), []);
  const s = await t.tm.stats();
  assert.equal(s.local, undefined);
  assert.deepEqual(s.lag, {});
});

test("invalid options are refused", async () => {
  await assert.rejects(makeTiers({ capacityBytes: 0 }), (err) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"));
  await assert.rejects(makeTiers({ highWatermark: 0.5, lowWatermark: 0.6 }), (err) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"));
  await assert.rejects(makeTiers({ pins: [{ bucket: "b" }] }), (err) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"));
});
