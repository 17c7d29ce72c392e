/**
 * Per-bucket durability: `cloud` buckets write through the cloud-first packer, `local` (write-back)
 * buckets through the write-back packer; a cloud-policy write never relies on a chunk that lives
 * only in a write-back pack not yet uploaded; markPackUploaded; packsOf; gc, fsck and
 * rebuild-index with both packers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { isStowageError } from "../../src/errors.js";
import { PACK_PREFIX } from "../../src/pack/format.js";
import { collectGarbage } from "../../src/store/gc.js";
import { rebuildIndex } from "../../src/store/rebuild.js";
import { computeStats } from "../../src/store/stats.js";
import type { PackRecord } from "../../src/meta/types.js";
import type { StowageEvent } from "../../src/events/types.js";
import { assertClean, bytes, makeStore, readAll, type TestStore } from "./helpers.js";

async function blobs(b: BlobBackend): Promise<string[]> {
  const out: string[] = [];
  for await (const x of b.list(PACK_PREFIX)) out.push(x.key);
  return out;
}

async function packs(t: TestStore): Promise<PackRecord[]> {
  const out: PackRecord[] = [];
  for await (const p of t.meta.listPacks()) out.push(p);
  return out;
}

async function events(t: TestStore, kind?: string): Promise<StowageEvent[]> {
  const all = await t.meta.listOutbox(1_000_000);
  return kind === undefined ? all : all.filter((e) => e.kind === kind);
}

/** The pack record each chunk of the object's current version points at. */
async function packsOfObject(t: TestStore, bucket: string, key: string): Promise<PackRecord[]> {
  const v = (await t.meta.getCurrent(bucket, key))!;
  const out: PackRecord[] = [];
  for (const e of v.manifest) {
    const c = (await t.meta.getChunk(e.chunkId))!;
    out.push((await t.meta.getPack(c.packId))!);
  }
  return out;
}

/** Simulates the loss of the local tier: every write-back blob disappears. */
async function loseLocalTier(wb: MemoryBackend): Promise<void> {
  for (const k of await blobs(wb)) await wb.delete(k);
}

/** Does what the tier's uploader does: copies the pack to the cloud, then reports it. */
async function upload(t: TestStore, cloud: BlobBackend, wb: BlobBackend, p: PackRecord): Promise<boolean> {
  await cloud.put(p.blobKey, await wb.get(p.blobKey));
  return t.store.markPackUploaded(p.blobKey);
}

function setup(): Promise<TestStore & { cloud: MemoryBackend; wb: MemoryBackend }> {
  const cloud = new MemoryBackend();
  const wb = new MemoryBackend();
  return makeStore({ backend: cloud, writeBackBackend: wb }).then((t) => Object.assign(t, { cloud, wb }));
}

const invalid = (re: RegExp) => (err: unknown): boolean => isStowageError(err, "STOWAGE_INVALID_ARGUMENT") && re.test((err as Error).message);

test("durability policy: create, set, shown by the getters; local without a write-back backend is refused", async () => {
  const plain = await makeStore();
  try {
    await assert.rejects(plain.store.createBucket("wbk", { durability: "local" }), invalid(/write-back durability needs a local tier/));
    const b = await plain.store.createBucket("clb");
    assert.equal(b.durability, "cloud");
    await assert.rejects(plain.store.setBucketDurability("clb", "local"), invalid(/needs a local tier/));
    await assert.rejects(plain.store.setBucketDurability("clb", "tape" as "local"), invalid(/cloud or local/));
    assert.equal((await plain.store.setBucketDurability("clb", "cloud")).durability, "cloud");
  } finally {
    await plain.close();
  }
  const t = await setup();
  try {
    const a = await t.store.createBucket("wbk", { durability: "local", versioning: "enabled" });
    assert.deepEqual([a.durability, a.versioning], ["local", "enabled"]);
    assert.equal((await t.store.createBucket("old-form", "enabled")).versioning, "enabled");
    assert.equal((await t.store.headBucket("wbk")).durability, "local");
    assert.equal((await t.store.setBucketDurability("old-form", "local")).durability, "local");
    assert.equal((await t.store.setVersioning("old-form", "suspended")).durability, "local", "other setters keep the policy");
    await assert.rejects(t.store.setBucketDurability("nope", "local"), (err: unknown) => isStowageError(err, "STOWAGE_NO_SUCH_BUCKET"));
    await t.reopen();
    assert.deepEqual(
      (await t.store.listBuckets()).map((b) => [b.name, b.durability]),
      [["old-form", "local"], ["wbk", "local"]],
    );
    assert.equal((await t.store.setBucketDurability("wbk", "cloud")).durability, "cloud");
    assert.equal((await t.meta.getBucket("wbk"))!.durability, undefined, "cloud is the absent default in the record");
  } finally {
    await t.close();
  }
});

test("write-back puts go to the write-back backend (upload-needed), cloud puts to the cloud backend (pack-uploaded)", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("local", { durability: "local" });
    await t.store.createBucket("cloud");
    const a = bytes(50_000, 1);
    const b = bytes(50_000, 2);
    await t.store.putObject("local", "a", [a]);
    assert.equal((await blobs(t.cloud)).length, 0, "nothing in the cloud yet");
    const wbBlobs = await blobs(t.wb);
    assert.ok(wbBlobs.length >= 1);
    const localPacks = await packs(t);
    assert.ok(localPacks.every((p) => p.uploaded === false));
    assert.deepEqual((await events(t, "upload-needed")).map((e) => e.data.blobKey).sort(), wbBlobs.sort());
    assert.deepEqual(await events(t, "pack-uploaded"), []);
    const counters = await t.meta.getCounters();
    assert.equal(counters.backendPuts, 0, "a write-back pack is not a cloud PUT (yet)");

    await t.store.putObject("cloud", "b", [b]);
    const cloudBlobs = await blobs(t.cloud);
    assert.ok(cloudBlobs.length >= 1);
    assert.deepEqual((await blobs(t.wb)).sort(), wbBlobs.sort(), "the cloud put wrote nothing locally");
    assert.deepEqual((await events(t, "pack-uploaded")).map((e) => e.data.blobKey).sort(), cloudBlobs.sort());
    for (const e of await events(t, "pack-uploaded")) assert.equal(e.key, (await packs(t)).find((p) => p.blobKey === e.data.blobKey)!.id, "pack events are keyed by pack id");

    assert.ok((await readAll(t.store, "local", "a")).equals(a));
    assert.ok((await readAll(t.store, "cloud", "b")).equals(b));
    const s = await computeStats(t.meta);
    assert.equal(s.packsAwaitingUpload, wbBlobs.length);
    await assertClean(t.store);
    // Multipart parts of a local bucket go through the write-back packer too.
    const up = await t.store.createMultipartUpload("local", "mpb");
    const before = (await blobs(t.wb)).length;
    await t.store.uploadPart("local", up.uploadId, 1, [bytes(20_000, 3)]);
    assert.equal((await blobs(t.wb)).length, before + 1);
    assert.equal((await blobs(t.cloud)).length, cloudBlobs.length);
  } finally {
    await t.close();
  }
});

test("dedup rule: a cloud put never relies on a chunk only in a write-back pack; losing the local tier loses only local-policy data", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("local", { durability: "local" });
    await t.store.createBucket("cloud");
    const shared = bytes(80_000, 7);
    await t.store.putObject("local", "x", [shared]);
    const before = await packsOfObject(t, "local", "x");
    assert.ok(before.every((p) => p.uploaded === false));
    const ingestedBefore = (await t.meta.getCounters()).backendBytesWritten;

    // The same content into a cloud bucket: stored again, in cloud packs; the chunk records move there.
    await t.store.putObject("cloud", "y", [shared]);
    assert.ok((await t.meta.getCounters()).backendBytesWritten > ingestedBefore, "the chunks were uploaded to the cloud");
    const after = await packsOfObject(t, "cloud", "y");
    assert.ok(after.every((p) => p.uploaded !== false), "every chunk of the cloud object is in an uploaded pack");
    const v = (await t.meta.getCurrent("cloud", "y"))!;
    for (const e of v.manifest) assert.equal((await t.meta.getChunk(e.chunkId))!.refs, 2, "one record, both references");
    await assertClean(t.store);

    // The reverse: a local put of content the cloud already holds dedups against it.
    const cloudFirst = bytes(60_000, 8);
    await t.store.putObject("cloud", "z", [cloudFirst]);
    const wbCount = (await blobs(t.wb)).length;
    await t.store.putObject("local", "z", [cloudFirst]);
    assert.equal((await blobs(t.wb)).length, wbCount, "nothing new written back");

    // The local disk dies: cloud-policy objects survive (read through a fresh reader), the local copy of x is gone.
    await loseLocalTier(t.wb);
    await t.reopen();
    assert.ok((await readAll(t.store, "cloud", "y")).equals(shared));
    assert.ok((await readAll(t.store, "cloud", "z")).equals(cloudFirst));
    assert.ok((await readAll(t.store, "local", "z")).equals(cloudFirst));
    // x's chunks were re-pointed at the cloud copies, so even x survives here.
    assert.ok((await readAll(t.store, "local", "x")).equals(shared));
    // gc: the write-back packs hold only dead copies now; they are retired and (grace 0) deleted.
    const r = await collectGarbage(t.store, { graceMs: 0 });
    assert.ok(r.packsRecycled >= 1);
    assert.ok((await packs(t)).every((p) => p.uploaded !== false), "no write-back pack left");
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("copies, snapshots and multipart completions into a cloud bucket re-store write-back-only chunks in the cloud", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("local", { durability: "local" });
    await t.store.createBucket("cloud");
    const a = bytes(70_000, 11);
    const b = bytes(30_000, 12);
    await t.store.putObject("local", "dir/a", [a]);
    await t.store.putObject("local", "dir/b", [b]);
    await t.store.copyObject("local", "dir/a", "cloud", "copy-a");
    assert.ok((await packsOfObject(t, "cloud", "copy-a")).every((p) => p.uploaded !== false));
    // local -> local copies stay references only.
    const wbBefore = (await blobs(t.wb)).length;
    const cloudBefore = (await blobs(t.cloud)).length;
    await t.store.copyObject("local", "dir/b", "local", "copy-b");
    assert.deepEqual([(await blobs(t.wb)).length, (await blobs(t.cloud)).length], [wbBefore, cloudBefore]);

    await t.store.snapshot("local", "dir/", "cloud", "snap/");
    for (const k of ["snap/a", "snap/b"]) assert.ok((await packsOfObject(t, "cloud", k)).every((p) => p.uploaded !== false), k);

    // Parts written while the bucket was local; completed after it became cloud.
    await t.store.createBucket("mpb", { durability: "local" });
    const up = await t.store.createMultipartUpload("mpb", "obj");
    const p1 = await t.store.uploadPart("mpb", up.uploadId, 1, [bytes(40_000, 13)]);
    const p2 = await t.store.uploadPart("mpb", up.uploadId, 2, [bytes(10_000, 14)]);
    await t.store.setBucketDurability("mpb", "cloud");
    await t.store.completeMultipartUpload("mpb", up.uploadId, [
      { partNumber: 1, etag: p1.etag },
      { partNumber: 2, etag: p2.etag },
    ]);
    assert.ok((await packsOfObject(t, "mpb", "obj")).every((p) => p.uploaded !== false));
    assert.equal((await events(t, "object-created")).filter((e) => e.data.bucket === "mpb").length, 1, "one object-created for the completion (the retried attempt appended nothing)");
    await assertClean(t.store);

    await loseLocalTier(t.wb);
    await t.reopen();
    assert.ok((await readAll(t.store, "cloud", "copy-a")).equals(a));
    assert.ok((await readAll(t.store, "cloud", "snap/b")).equals(b));
    assert.equal((await readAll(t.store, "mpb", "obj")).length, 50_000);
  } finally {
    await t.close();
  }
});

test("markPackUploaded: flips the pack, emits pack-uploaded once, counts one cloud PUT; idempotent; reads then come from the cloud", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("local", { durability: "local" });
    const data = bytes(40_000, 21);
    await t.store.putObject("local", "k", [data]);
    const [p] = await packs(t);
    assert.equal(p!.uploaded, false);
    assert.equal(await upload(t, t.cloud, t.wb, p!), true);
    assert.equal((await t.meta.getPack(p!.id))!.uploaded, undefined);
    const evs = await events(t, "pack-uploaded");
    assert.equal(evs.length, 1);
    assert.deepEqual([evs[0]!.key, evs[0]!.data], [p!.id, { blobKey: p!.blobKey, size: p!.size }]);
    assert.equal((await t.meta.getCounters()).backendPuts, 1);
    assert.equal(await t.store.markPackUploaded(p!.blobKey), false, "second call: no change");
    assert.equal((await events(t, "pack-uploaded")).length, 1, "no second event");
    assert.equal(await t.store.markPackUploaded(`packs/00/${"0".repeat(32)}`), false, "unknown pack");
    await assert.rejects(t.store.markPackUploaded("keys/abc"), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"));
    assert.deepEqual(await collectAsync(t.store.packsAwaitingUpload()), []);
    await loseLocalTier(t.wb);
    await t.reopen();
    assert.ok((await readAll(t.store, "local", "k")).equals(data));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

async function collectAsync<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test("packsOf: the packs of every version under a bucket/prefix (and its uploads' parts)", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("ver", { versioning: "enabled", durability: "local" });
    await t.store.createBucket("other");
    await t.store.putObject("ver", "media/a", [bytes(30_000, 31)]);
    await t.store.putObject("ver", "media/a", [bytes(30_000, 32)]); // a second version, in another pack
    await t.store.putObject("ver", "docs/x", [bytes(30_000, 33)]);
    await t.store.putObject("other", "media/a", [bytes(30_000, 34)]);
    const up = await t.store.createMultipartUpload("ver", "media/mp");
    await t.store.uploadPart("ver", up.uploadId, 1, [bytes(20_000, 35)]);
    await t.store.deleteObject("ver", "media/a"); // a delete marker: its versions still count

    const expected = new Set<string>();
    for await (const h of t.meta.listVersions("ver", { prefix: "media/" })) {
      const ver = (await t.meta.getVersion("ver", h.key, h.versionId))!;
      for (const e of ver.manifest) expected.add((await t.meta.getPack((await t.meta.getChunk(e.chunkId))!.packId))!.blobKey);
    }
    for await (const part of t.meta.listParts(up.uploadId)) for (const e of part.manifest) expected.add((await t.meta.getPack((await t.meta.getChunk(e.chunkId))!.packId))!.blobKey);
    const got = await t.store.packsOf("ver", "media/");
    assert.deepEqual([...got].sort(), [...expected].sort());
    assert.ok(got.size >= 3, "two versions and a part in different packs");
    const docs = await t.store.packsOf("ver", "docs/");
    assert.equal(docs.size, 1);
    assert.ok(![...docs].some((k) => got.has(k)));
    assert.equal((await t.store.packsOf("ver")).size, got.size + 1);
    await assert.rejects(t.store.packsOf("missing"), (err: unknown) => isStowageError(err, "STOWAGE_NO_SUCH_BUCKET"));
  } finally {
    await t.close();
  }
});

test("gc and rebuild-index with both packers: small write-back packs merge into cloud packs; orphans in both backends; uploaded state survives rebuild", async () => {
  const t = await setup();
  try {
    await t.store.createBucket("local", { durability: "local" });
    await t.store.createBucket("cloud");
    for (let i = 0; i < 4; i++) await t.store.putObject("local", `l${i}`, [bytes(5_000, 40 + i)]);
    await t.store.putObject("cloud", "c", [bytes(5_000, 50)]);
    await t.wb.put(`packs/ee/${"e".repeat(32)}`, Buffer.from("orphan"));
    await t.cloud.put(`packs/ff/${"f".repeat(32)}`, Buffer.from("orphan"));

    // rebuild-index first: the write-back packs keep uploaded: false.
    const rb = await rebuildIndex(t.store);
    assert.equal(rb.missingChunks, 0);
    const afterRebuild = await packs(t);
    assert.equal(afterRebuild.filter((p) => p.uploaded === false).length, 4);
    assert.equal(afterRebuild.length, 5);

    const r = await collectGarbage(t.store, { graceMs: 0 });
    assert.equal(r.orphanBlobsDeleted, 2);
    assert.ok(r.packsRecycled >= 5, `small packs merged (${r.packsRecycled})`);
    assert.deepEqual(await blobs(t.wb), [], "recycled write-back packs deleted from the write-back backend");
    assert.ok((await packs(t)).every((p) => p.uploaded !== false));
    const merged = await events(t, "pack-uploaded");
    assert.ok(merged.length >= 2, "gc's new packs are announced");
    await assertClean(t.store);
    for (let i = 0; i < 4; i++) assert.ok((await readAll(t.store, "local", `l${i}`)).equals(bytes(5_000, 40 + i)));

    // A pack awaiting upload that rebuild finds only locally, with no record: uploaded: false.
    await t.store.putObject("local", "late", [bytes(5_000, 60)]);
    const late = (await packs(t)).find((p) => p.uploaded === false)!;
    await t.meta.transaction(async (tx) => tx.deletePack(late.id));
    await rebuildIndex(t.store);
    assert.equal((await t.meta.getPack(late.id))!.uploaded, false);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});
