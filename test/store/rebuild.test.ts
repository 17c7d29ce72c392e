/**
 * `rebuild-index`: the chunk index and the pack records recreated from the packs alone. Objects of
 * every kind (versions, copies, snapshots, multipart with ranged part copies, open uploads, dead
 * chunks) must read back afterwards with the same reference counts; an intact index is left as it
 * is; a lost pack is reported with exactly the objects that used it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { isStowageError } from "../../src/errors.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import { PACK_PREFIX } from "../../src/pack/format.js";
import { computeStats } from "../../src/store/stats.js";
import { collectGarbage } from "../../src/store/gc.js";
import { fsck } from "../../src/store/fsck.js";
import { rebuildIndex } from "../../src/store/rebuild.js";
import type { ChunkRecord, MetaReader, PackRecord } from "../../src/meta/types.js";
import { assertClean, bytes, makeStore, readAll, type TestStore } from "./helpers.js";

/** Objects by `bucket/key@versionId` (the owner names fsck and rebuild use), with their content. */
type Expected = Map<string, { bucket: string; key: string; versionId: string; data: Buffer }>;

function owner(bucket: string, key: string, versionId: string): string {
  return `${bucket}/${key}@${versionId}`;
}

interface Populated {
  expected: Expected;
  /** An upload left open (its parts hold references too). */
  openUploadId: string;
  /** The key whose content nothing else shares at first; copies, snapshots and parts use it. */
  shared: { bucket: string; key: string };
}

/** Versions, delete markers, copies, a snapshot, multipart (with ranged part copies), an open upload, dead chunks. */
async function populate(t: TestStore): Promise<Populated> {
  const { store } = t;
  const expected: Expected = new Map();
  const add = (bucket: string, key: string, versionId: string, data: Buffer): void => {
    expected.set(owner(bucket, key, versionId), { bucket, key, versionId, data });
  };
  await store.createBucket("media");
  await store.setVersioning("media", "enabled");
  await store.createBucket("plain");

  // Three versions of one asset, each an edit of the one before (they share most chunks).
  let clip = bytes(150_000, 1);
  for (let i = 0; i < 3; i++) {
    const r = await store.putObject("media", "clip.mov", [clip]);
    add("media", "clip.mov", r.versionId, clip);
    clip = Buffer.concat([clip.subarray(0, 40_000 + i * 20_000), bytes(3000, 10 + i), clip.subarray(40_000 + i * 20_000)]);
  }
  const gone = await store.putObject("media", "gone.txt", [bytes(5000, 2)]);
  add("media", "gone.txt", gone.versionId, bytes(5000, 2));
  await store.deleteObject("media", "gone.txt");

  // The shared object: put alone, so its packs hold only its chunks.
  const sharedData = bytes(50_000, 3);
  await store.putObject("plain", "shared.bin", [sharedData]);
  add("plain", "shared.bin", "null", sharedData);
  const copy = await store.copyObject("plain", "shared.bin", "media", "shared-copy.bin");
  add("media", "shared-copy.bin", copy.versionId, sharedData);

  for (let i = 0; i < 5; i++) {
    const d = Buffer.from(JSON.stringify({ frame: i, pad: "x".repeat(200 * i) }));
    await store.putObject("plain", `shots/${i}.json`, [d]);
    add("plain", `shots/${i}.json`, "null", d);
  }
  await store.putObject("plain", "shots/empty", []);
  add("plain", "shots/empty", "null", Buffer.alloc(0));
  const snap = await store.snapshot("plain", "shots/", "plain", "archive/shots/");
  assert.equal(snap.objects, 6);
  for (let i = 0; i < 5; i++) add("plain", `archive/shots/${i}.json`, "null", expected.get(owner("plain", `shots/${i}.json`, "null"))!.data);
  add("plain", "archive/shots/empty", "null", Buffer.alloc(0));

  // Multipart: a fresh part and a ranged copy of the shared object.
  const up = await store.createMultipartUpload("plain", "joined.bin");
  const p1 = await store.uploadPart("plain", up.uploadId, 1, [bytes(30_000, 4)]);
  const p2 = await store.uploadPartCopy("plain", up.uploadId, 2, { bucket: "plain", key: "shared.bin", range: { start: 1000, end: 20_999 } });
  await store.completeMultipartUpload("plain", up.uploadId, [
    { partNumber: 1, etag: p1.etag },
    { partNumber: 2, etag: p2.etag },
  ]);
  add("plain", "joined.bin", "null", Buffer.concat([bytes(30_000, 4), sharedData.subarray(1000, 21_000)]));

  // An open upload whose parts reference the shared object and fresh data.
  const open = await store.createMultipartUpload("media", "pending.bin");
  await store.uploadPartCopy("media", open.uploadId, 1, { bucket: "plain", key: "shared.bin", range: { start: 30_000, end: 49_999 } });
  await store.uploadPart("media", open.uploadId, 2, [bytes(10_000, 5)]);

  // Dead chunks: an overwritten object's old content.
  await store.putObject("plain", "overwritten", [bytes(40_000, 6)]);
  await store.putObject("plain", "overwritten", [bytes(40_000, 7)]);
  add("plain", "overwritten", "null", bytes(40_000, 7));
  return { expected, openUploadId: open.uploadId, shared: { bucket: "plain", key: "shared.bin" } };
}

async function chunkMap(meta: MetaReader): Promise<Map<string, ChunkRecord>> {
  const out = new Map<string, ChunkRecord>();
  for await (const [id, c] of meta.listChunks()) out.set(id.toString("hex"), c);
  return out;
}

async function packList(meta: MetaReader): Promise<PackRecord[]> {
  const out: PackRecord[] = [];
  for await (const p of meta.listPacks()) out.push(p);
  return out;
}

function refsOf(chunks: Map<string, ChunkRecord>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [hex, c] of chunks) out[hex] = c.refs;
  return out;
}

async function readsBack(t: TestStore, expected: Expected): Promise<void> {
  for (const [name, e] of expected) {
    assert.ok((await readAll(t.store, e.bucket, e.key, e.versionId)).equals(e.data), `${name} reads back`);
  }
}

async function destroyIndex(t: TestStore): Promise<void> {
  await t.meta.transaction(async (tx) => {
    for await (const [id] of tx.listChunks()) tx.deleteChunk(id);
    for await (const p of tx.listPacks()) tx.deletePack(p.id);
  });
}

test("a destroyed chunk index is rebuilt from the packs: everything reads back, references as before", async () => {
  const t = await makeStore({ cacheBytes: 0 });
  try {
    const { expected } = await populate(t);
    await readsBack(t, expected);
    await assertClean(t.store);
    const chunksBefore = await chunkMap(t.meta);
    const packsBefore = await packList(t.meta);
    const statsBefore = await computeStats(t.meta);
    assert.ok(statsBefore.unreferencedChunks > 0, "the store holds dead chunks too");
    let blobCount = 0;
    for await (const _ of t.backend.list(PACK_PREFIX)) blobCount++;
    assert.equal(blobCount, packsBefore.length);

    await destroyIndex(t);
    const s = await computeStats(t.meta);
    assert.equal(s.chunks, 0);
    assert.equal(s.packs, 0);
    const nonEmpty = [...expected].filter(([, e]) => e.data.length > 0);
    for (const [name, e] of nonEmpty) {
      await assert.rejects(readAll(t.store, e.bucket, e.key, e.versionId), (err: unknown) => isStowageError(err, "STOWAGE_INTEGRITY"), `${name} fails without its index`);
    }
    const broken = await fsck(t.store);
    assert.equal(broken.ok, false);
    const named = new Set(broken.problems.filter((p) => p.kind === "missing-chunk").flatMap((p) => p.affects));
    for (const [name] of nonEmpty) assert.ok(named.has(name), `fsck names ${name}`);

    const progress: number[] = [];
    const r = await rebuildIndex(t.store, { progress: (done) => progress.push(done) });
    assert.equal(r.packsRead, packsBefore.length);
    assert.deepEqual(r.packsUnreadable, []);
    assert.equal(r.chunksIndexed, chunksBefore.size, "every chunk, referenced or not, is indexed again");
    assert.equal(r.duplicateChunks, 0);
    assert.equal(r.missingChunks, 0);
    assert.deepEqual(r.affected, []);
    assert.equal(progress[progress.length - 1], packsBefore.length);

    const chunksAfter = await chunkMap(t.meta);
    assert.deepEqual(refsOf(chunksAfter), refsOf(chunksBefore), "reference counts recomputed exactly");
    assert.deepEqual(chunksAfter, chunksBefore, "the same locations");
    const strip = (ps: PackRecord[]): unknown[] => ps.map(({ created: _c, ...rest }) => rest);
    assert.deepEqual(strip(await packList(t.meta)), strip(packsBefore), "the same pack records (but for their creation time)");
    const statsAfter = await computeStats(t.meta);
    for (const k of ["logicalBytes", "storedBytes", "uniqueBytes", "compressedBytes", "chunks", "unreferencedChunks", "packs"] as const) {
      assert.equal(statsAfter[k], statsBefore[k], `stats.${k}`);
    }
    await readsBack(t, expected);
    await assertClean(t.store);
    await t.reopen();
    await readsBack(t, expected);
    // gc works on the rebuilt index.
    await collectGarbage(t.store, { graceMs: 0 });
    await readsBack(t, expected);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("rebuilding an intact index changes nothing, also with retired packs still in the bucket", async () => {
  let clock = 1_800_000_000_000;
  const t = await makeStore({ cacheBytes: 0, now: () => clock });
  try {
    const { expected } = await populate(t);
    // Recycle into new packs, keeping the old ones (retired) for the grace period: the bucket now
    // holds two copies of many chunks.
    const g = await collectGarbage(t.store, { graceMs: 60_000, minLiveFraction: 1 });
    assert.ok(g.packsRecycled > 0 && g.packsDeleted === 0);
    const retired = (await packList(t.meta)).filter((p) => p.state === "retired");
    assert.ok(retired.length > 0);
    await assertClean(t.store);

    const chunksBefore = await chunkMap(t.meta);
    const packsBefore = await packList(t.meta);
    const r = await rebuildIndex(t.store);
    assert.equal(r.packsRead, packsBefore.length);
    assert.equal(r.missingChunks, 0);
    assert.deepEqual(r.affected, []);
    assert.ok(r.duplicateChunks > 0, "live chunks are in a retired pack and in its replacement");
    assert.deepEqual(await chunkMap(t.meta), chunksBefore, "chunk records unchanged: live copies preferred, nothing extra");
    assert.deepEqual(await packList(t.meta), packsBefore, "pack records unchanged, retired ones included");
    await readsBack(t, expected);
    await assertClean(t.store);

    // The retired packs are still deleted once their grace period ends, and nothing is lost.
    clock += 60_000;
    const after = await collectGarbage(t.store, { graceMs: 60_000 });
    assert.equal(after.packsDeleted, retired.length, "retired packs are deleted after a rebuild too");
    for (const p of retired) assert.equal(await t.backend.head(p.blobKey), undefined);
    // Only packs this second run recycled itself are retired now (it may merge a small pack that
    // the first run wrote, depending on how the writes were grouped into packs).
    assert.equal((await computeStats(t.meta)).retiredPacks, after.packsRecycled);
    await readsBack(t, expected);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("a pack written by gc lost during the grace period: rebuild recovers its chunks from the retired packs", async () => {
  let clock = 1_900_000_000_000;
  const backend = new MemoryBackend();
  const t = await makeStore({ backend, cacheBytes: 0, now: () => clock });
  try {
    const { expected } = await populate(t);
    const oldIds = new Set((await packList(t.meta)).map((p) => p.id));
    await collectGarbage(t.store, { graceMs: 60_000, minLiveFraction: 1 });
    const fresh = (await packList(t.meta)).filter((p) => !oldIds.has(p.id));
    assert.ok(fresh.length > 0);
    for (const p of fresh) await backend.delete(p.blobKey);

    const r = await rebuildIndex(t.store);
    assert.equal(r.missingChunks, 0, "every referenced chunk is still in a retired pack");
    assert.deepEqual(r.affected, []);
    const revived = (await packList(t.meta)).filter((p) => oldIds.has(p.id));
    assert.ok(revived.length > 0);
    const chunks = await chunkMap(t.meta);
    const holding = new Set([...chunks.values()].map((c) => c.packId));
    for (const p of revived) {
      if (holding.has(p.id)) assert.equal(p.state, "live", `pack ${p.id} holds the only copies: it is live again`);
    }
    await readsBack(t, expected);
    await assertClean(t.store);

    // Past the grace period gc deletes nothing that is needed, and ends with no retired pack left.
    clock += 60_000;
    await collectGarbage(t.store, { graceMs: 60_000 });
    clock += 60_000;
    await collectGarbage(t.store, { graceMs: 60_000 });
    await readsBack(t, expected);
    await assertClean(t.store);
    assert.equal((await computeStats(t.meta)).retiredPacks, 0);
  } finally {
    await t.close();
  }
});

test("a lost pack: rebuild reports the missing chunks and exactly the objects and parts that used it", async () => {
  const backend = new MemoryBackend();
  const t = await makeStore({ backend, cacheBytes: 0 });
  try {
    const { expected, openUploadId, shared } = await populate(t);
    // The pack holding the shared object's first chunk.
    const current = await t.meta.getCurrent(shared.bucket, shared.key);
    assert.ok(current !== undefined);
    const firstChunk = await t.meta.getChunk(current.manifest[0]!.chunkId);
    assert.ok(firstChunk !== undefined);
    const victim = await t.meta.getPack(firstChunk.packId);
    assert.ok(victim !== undefined);
    const chunksBefore = await chunkMap(t.meta);
    const inVictim = new Set([...chunksBefore].filter(([, c]) => c.packId === victim.id).map(([hex]) => hex));
    const wantMissing = [...inVictim].filter((hex) => chunksBefore.get(hex)!.refs > 0).length;
    const wantAffected = new Set<string>();
    for await (const m of t.meta.listManifests()) {
      if (m.manifest.some((e) => inVictim.has(e.chunkId.toString("hex")))) wantAffected.add(m.owner);
    }
    // It is used by the original, its copy, the completed multipart object and the open upload's part.
    for (const name of [owner("plain", "shared.bin", "null"), "plain/joined.bin@null"]) assert.ok(wantAffected.has(name), name);
    assert.ok([...wantAffected].some((o) => o.startsWith("media/shared-copy.bin@")));
    assert.ok(wantAffected.has(`upload ${openUploadId} part 1`));
    assert.ok(wantMissing > 0);

    await backend.delete(victim.blobKey);
    const r = await rebuildIndex(t.store);
    assert.equal(r.missingChunks, wantMissing);
    assert.deepEqual(r.affected, [...wantAffected].sort(), "exactly the owners of manifests using the lost pack");
    assert.equal(r.packsRead, (await packList(t.meta)).length);
    assert.equal(await t.meta.getPack(victim.id), undefined, "the lost pack is no longer recorded");

    for (const [name, e] of expected) {
      if (wantAffected.has(name)) {
        await assert.rejects(readAll(t.store, e.bucket, e.key, e.versionId), (err: unknown) => isStowageError(err, "STOWAGE_INTEGRITY"), `${name} is damaged`);
      } else {
        assert.ok((await readAll(t.store, e.bucket, e.key, e.versionId)).equals(e.data), `${name} is unaffected`);
      }
    }
    const report = await fsck(t.store, { readData: true });
    assert.equal(report.ok, false);
    const named = new Set(report.problems.flatMap((p) => p.affects));
    assert.deepEqual([...named].sort(), [...wantAffected].sort(), "fsck names the same objects");
  } finally {
    await t.close();
  }
});
