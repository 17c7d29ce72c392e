/**
 * The garbage collector: reclaiming dead data, dry runs that predict exactly, merging small packs,
 * the grace period that protects readers holding old locations, orphan blobs, and chunks that
 * dedup brings back to life.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CountingBackend } from "../../src/backend/counting.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";
import { Packer } from "../../src/pack/writer.js";
import { packBlobKey, packSize, PACK_PREFIX } from "../../src/pack/format.js";
import { computeStats, type StoreStats } from "../../src/store/stats.js";
import { collectGarbage } from "../../src/store/gc.js";
import { fsck } from "../../src/store/fsck.js";
import type { ChunkRecord, MetaReader, PackRecord } from "../../src/meta/types.js";
import { assertClean, bytes, collect, makeStore, readAll, type TestStore } from "./helpers.js";

/** A backend wrapper that records the key of every GET, and can hold GETs back. */
class RecordingBackend implements BlobBackend {
  readonly location: string;
  gets: string[] = [];

  constructor(readonly inner: BlobBackend) {
    this.location = inner.location;
  }

  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.inner.put(key, body);
  }

  get(key: string, range?: ByteRange): Promise<Buffer> {
    this.gets.push(key);
    return this.inner.get(key, range);
  }

  head(key: string): Promise<BlobInfo | undefined> {
    return this.inner.head(key);
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.inner.list(prefix);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

async function blobs(backend: BlobBackend, prefix = ""): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const b of backend.list(prefix)) out.set(b.key, b.size);
  return out;
}

async function packs(meta: MetaReader): Promise<PackRecord[]> {
  const out: PackRecord[] = [];
  for await (const p of meta.listPacks()) out.push(p);
  return out;
}

async function chunks(meta: MetaReader): Promise<Map<string, ChunkRecord>> {
  const out = new Map<string, ChunkRecord>();
  for await (const [id, c] of meta.listChunks()) out.set(id.toString("hex"), c);
  return out;
}

/** Everything a dry run must leave alone. */
async function fingerprint(t: TestStore): Promise<string> {
  return JSON.stringify({
    stats: await computeStats(t.meta),
    blobs: [...(await blobs(t.backend))],
    chunks: [...(await chunks(t.meta))],
    packs: await packs(t.meta),
  });
}

function sumSizes(m: Map<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

test("gc reclaims overwritten and deleted data: stored bytes fall to the live data, blobs go, all else reads back", async () => {
  const t = await makeStore({ cacheBytes: 0 });
  try {
    const { store } = t;
    await store.createBucket("gcb");
    await store.createBucket("ver");
    await store.setVersioning("ver", "enabled");
    const want = new Map<string, Buffer>();
    for (let i = 0; i < 12; i++) {
      const data = bytes(100_000, 1000 + i);
      await store.putObject("gcb", `k${i}`, [data]);
      want.set(`k${i}`, data);
    }
    for (let i = 0; i < 6; i++) {
      const data = bytes(100_000, 2000 + i);
      await store.putObject("gcb", `k${i}`, [data]);
      want.set(`k${i}`, data);
    }
    for (let i = 6; i < 10; i++) {
      await store.deleteObject("gcb", `k${i}`);
      want.delete(`k${i}`);
    }
    // A versioned key: the old version deleted by id is dead too; the newest stays.
    const v1 = await store.putObject("ver", "clip", [bytes(80_000, 3000)]);
    await store.putObject("ver", "clip", [bytes(80_000, 3001)]);
    await store.deleteObject("ver", "clip", { versionId: v1.versionId });

    const live = 8 * 100_000 + 80_000;
    const before = await computeStats(t.meta);
    const blobsBefore = await blobs(t.backend, PACK_PREFIX);
    assert.equal(before.logicalBytes, live);
    assert.ok(before.storedBytes > live * 1.5, `before gc ${before.storedBytes} bytes stored for ${live} live`);
    assert.ok(before.unreferencedChunks > 0);

    const r = await collectGarbage(store, { graceMs: 0 });
    const after = await computeStats(t.meta);
    const blobsAfter = await blobs(t.backend, PACK_PREFIX);
    // The data is random (incompressible): what is stored is the live data plus framing.
    assert.ok(after.storedBytes >= live, `after gc ${after.storedBytes} < live ${live}`);
    assert.ok(after.storedBytes <= live * 1.04, `after gc ${after.storedBytes} bytes stored for ${live} live`);
    assert.equal(after.unreferencedChunks, 0, "every dead chunk was dropped");
    assert.equal(after.retiredPacks, 0, "no grace period: retired packs are deleted at once");
    assert.equal(after.logicalBytes, live);
    assert.ok(blobsAfter.size < blobsBefore.size, `${blobsBefore.size} blobs before gc, ${blobsAfter.size} after`);
    assert.equal(blobsAfter.size, after.packs, "one blob per pack record");
    assert.equal(sumSizes(blobsAfter), after.storedBytes);
    assert.equal(r.packsDeleted, r.packsRecycled);
    assert.equal(r.bytesReclaimed, before.storedBytes - after.storedBytes, "bytesReclaimed is what the bucket lost");
    assert.ok(r.deadBytes > 0 && r.deadChunks > 0);
    assert.deepEqual(r.unreadablePacks, []);

    for (const [k, data] of want) assert.ok((await readAll(store, "gcb", k)).equals(data), k);
    assert.ok((await readAll(store, "ver", "clip")).equals(bytes(80_000, 3001)));
    await assertClean(store);
    await t.reopen();
    for (const [k, data] of want) assert.ok((await readAll(t.store, "gcb", k)).equals(data), `${k} after reopen`);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("a dry run reports exactly what the real run then does, and changes nothing", async () => {
  // A commit delay lets concurrent puts share a pack.
  const t = await makeStore({ packTargetSize: 256 * 1024, cacheBytes: 0, commitDelayMs: 250 });
  try {
    const { store } = t;
    await store.createBucket("dry");
    // Concurrent puts share packs: four objects per pack, so deletes leave packs partly live.
    for (let g = 0; g < 4; g++) {
      await Promise.all(Array.from({ length: 4 }, (_, i) => store.putObject("dry", `g${g}/o${i}`, [bytes(40_000, g * 10 + i + 1)])));
    }
    const before = await computeStats(t.meta);
    assert.equal(before.packs, 4, "each group of four objects shares one pack");
    // Group 0: all dead; group 1: three of four dead (recycled); group 2: one of four dead (kept); group 3 untouched.
    for (let i = 0; i < 4; i++) await store.deleteObject("dry", `g0/o${i}`);
    for (let i = 0; i < 3; i++) await store.deleteObject("dry", `g1/o${i}`);
    await store.deleteObject("dry", "g2/o0");
    assert.equal((await computeStats(t.meta)).storedBytes, before.storedBytes, "deletes alone free nothing");

    const packsBefore = await packs(t.meta);
    const fp = await fingerprint(t);
    const dry = await collectGarbage(store, { dryRun: true, graceMs: 0 });
    assert.equal(await fingerprint(t), fp, "the dry run changed nothing: stats, blobs, chunk and pack records");
    assert.equal(dry.dryRun, true);
    assert.equal(dry.packsRecycled, 2, "the all-dead pack and the three-quarters-dead pack");
    assert.ok(dry.bytesReclaimable > 0);
    assert.equal(dry.newPacks + dry.chunksRewritten + dry.packsDeleted + dry.bytesReclaimed, 0, "a dry run does nothing");

    const statsBefore = await computeStats(t.meta);
    const real = await collectGarbage(store, { graceMs: 0 });
    const statsAfter = await computeStats(t.meta);
    assert.equal(real.dryRun, false);
    assert.equal(real.packsRecycled, dry.packsRecycled, "packs recycled as predicted");
    assert.equal(real.bytesReclaimable, dry.bytesReclaimable, "bytes reclaimable as predicted");
    assert.equal(real.deadBytes, dry.deadBytes);
    assert.equal(real.packsDeleted, dry.packsRecycled, "no grace: every recycled pack is deleted");
    assert.equal(real.bytesReclaimed, statsBefore.storedBytes - statsAfter.storedBytes);
    // What the dry run promised is freed, but for the framing (index, trailer) of the new packs.
    const oldIds = new Set(packsBefore.map((p) => p.id));
    const newPacks = (await packs(t.meta)).filter((p) => !oldIds.has(p.id));
    assert.equal(newPacks.length, real.newPacks);
    const all = await chunks(t.meta);
    let framing = 0;
    for (const p of newPacks) {
      const members = [...all.values()].filter((c) => c.packId === p.id);
      const stored = members.reduce((n, c) => n + c.storedLength, 0);
      assert.equal(p.size, packSize(stored, members.length), `new pack ${p.id} holds just its live chunks`);
      framing += p.size - stored;
    }
    assert.equal(real.bytesReclaimed + framing, dry.bytesReclaimable, "bytes reclaimed = bytes reclaimable - new packs' framing");
    assert.ok(statsAfter.unreferencedChunks > 0, "the pack one quarter dead was left alone (live fraction above 0.5)");
    for (let g = 1; g < 4; g++) {
      for (let i = 0; i < 4; i++) {
        const gone = g === 1 ? i < 3 : g === 2 && i === 0;
        if (!gone) assert.ok((await readAll(store, "dry", `g${g}/o${i}`)).equals(bytes(40_000, g * 10 + i + 1)));
      }
    }
    await assertClean(store);
    // Nothing more to do: a second dry run predicts no work.
    const again = await collectGarbage(store, { dryRun: true, graceMs: 0 });
    assert.equal(again.packsRecycled, 0);
    assert.equal(again.bytesReclaimable, 0);
  } finally {
    await t.close();
  }
});

test("small packs written one at a time are merged into a few large ones; every object reads back", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend, packTargetSize: 64 * 1024, cacheBytes: 0 });
  try {
    const { store } = t;
    await store.createBucket("small");
    const n = 200;
    for (let i = 0; i < n; i++) await store.putObject("small", `side/${String(i).padStart(3, "0")}.json`, [bytes(1000, 5000 + i)]);
    const before = await computeStats(t.meta);
    assert.equal(before.packs, n, "each put made its own pack");
    assert.equal((await blobs(backend, PACK_PREFIX)).size, n);

    const r = await collectGarbage(store, { graceMs: 0 });
    const after = await computeStats(t.meta);
    assert.equal(r.packsRecycled, n);
    assert.equal(r.chunksRewritten, n);
    assert.ok(after.packs * 5 < before.packs, `${before.packs} packs merged into ${after.packs}`);
    assert.equal((await blobs(backend, PACK_PREFIX)).size, after.packs);
    assert.ok(after.meanPackSize > 40 * 1024, `mean pack size after merging: ${after.meanPackSize}`);
    assert.equal(after.uniqueBytes, before.uniqueBytes);
    assert.ok(after.storedBytes < before.storedBytes, "merging saves the per-pack framing");

    for (let i = 0; i < n; i++) assert.ok((await readAll(store, "small", `side/${String(i).padStart(3, "0")}.json`)).equals(bytes(1000, 5000 + i)), `object ${i}`);
    await assertClean(store);

    // Compacted: a second run has nothing to do.
    const again = await collectGarbage(store, { graceMs: 0 });
    assert.equal(again.packsRecycled, 0, "a compacted store is left alone");
    assert.equal(again.newPacks, 0);
  } finally {
    await t.close();
  }
});

test("grace period: a recycled pack's blob is kept until the clock passes it, and a reader holding its old location succeeds", async () => {
  let clock = 1_700_000_000_000;
  const backend = new RecordingBackend(new MemoryBackend());
  const t = await makeStore({ backend, cacheBytes: 0, now: () => clock });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    // Six one-chunk objects, each in its own pack; "joined" references all six chunks in order.
    const pieces: Buffer[] = [];
    for (let i = 0; i < 6; i++) {
      pieces.push(bytes(800, 7000 + i));
      await store.putObject("bkt", `p${i}`, [pieces[i]!]);
    }
    const up = await store.createMultipartUpload("bkt", "joined");
    const parts = [];
    for (let i = 0; i < 6; i++) parts.push(await store.uploadPartCopy("bkt", up.uploadId, i + 1, { bucket: "bkt", key: `p${i}` }));
    await store.completeMultipartUpload("bkt", up.uploadId, parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })));
    const joined = Buffer.concat(pieces);
    const oldPacks = await packs(t.meta);
    assert.equal(oldPacks.length, 6);

    // A reader starts before gc: it has looked up (and holds) locations in the old packs.
    const reading = await store.getObject("bkt", "joined");
    const first = await reading.body.next();
    if (first.done === true) throw new Error("the reader yielded nothing");

    const gc1 = await collectGarbage(store, { graceMs: 60_000 });
    assert.equal(gc1.packsRecycled, 6, "the six small packs are merged");
    assert.equal(gc1.packsDeleted, 0, "inside the grace period nothing is deleted");
    const retired = (await packs(t.meta)).filter((p) => p.state === "retired");
    assert.deepEqual(retired.map((p) => p.id).sort(), oldPacks.map((p) => p.id).sort());
    for (const p of retired) {
      assert.equal(p.retiredAt, clock, "retired at the injected clock's time");
      assert.ok((await backend.head(p.blobKey)) !== undefined, `retired pack ${p.id}'s blob is kept`);
    }
    let s = await computeStats(t.meta);
    assert.equal(s.retiredPacks, 6);
    assert.equal(s.packs, 1);
    assert.equal(s.storedBytes, sumSizes(await blobs(backend, PACK_PREFIX)), "retired blobs still count as stored");

    // The old reader finishes after gc, reading (some of) the retired packs.
    backend.gets = [];
    const rest = [first.value];
    for await (const b of reading.body) rest.push(b);
    assert.ok(Buffer.concat(rest).equals(joined), "the reader that started before gc gets the right bytes");
    const retiredKeys = new Set(retired.map((p) => p.blobKey));
    assert.ok(
      backend.gets.some((k) => retiredKeys.has(k)),
      `the old reader fetched from a retired pack after gc (GETs: ${backend.gets.join(", ")})`,
    );
    // A new reader reads the new pack only.
    backend.gets = [];
    assert.ok((await readAll(store, "bkt", "joined")).equals(joined));
    assert.ok(backend.gets.length > 0 && backend.gets.every((k) => !retiredKeys.has(k)), "new reads use the new locations");

    // Just before the grace period ends: still kept.
    clock += 59_999;
    const gc2 = await collectGarbage(store, { graceMs: 60_000 });
    assert.equal(gc2.packsDeleted, 0);
    for (const p of retired) assert.ok((await backend.head(p.blobKey)) !== undefined);
    // At the end of the grace period: the dry run predicts the deletions, the real run does them.
    clock += 1;
    const dry = await collectGarbage(store, { graceMs: 60_000, dryRun: true });
    assert.equal(dry.packsDeleted, 6);
    for (const p of retired) assert.ok((await backend.head(p.blobKey)) !== undefined, "the dry run deleted nothing");
    const gc3 = await collectGarbage(store, { graceMs: 60_000 });
    assert.equal(gc3.packsDeleted, 6);
    assert.equal(gc3.newPacks, 0);
    assert.equal(gc3.bytesReclaimed, retired.reduce((n, p) => n + p.size, 0));
    for (const p of retired) {
      assert.equal(await backend.head(p.blobKey), undefined, `retired pack ${p.id}'s blob is deleted`);
      assert.equal(await t.meta.getPack(p.id), undefined, "and then its record");
    }
    s = await computeStats(t.meta);
    assert.equal(s.retiredPacks, 0);
    assert.equal(s.storedBytes, sumSizes(await blobs(backend, PACK_PREFIX)));
    assert.ok((await readAll(store, "bkt", "joined")).equals(joined));
    for (let i = 0; i < 6; i++) assert.ok((await readAll(store, "bkt", `p${i}`)).equals(pieces[i]!));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("orphan pack blobs (no metadata names them) are deleted by gc; nothing else is", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(70_000, 11);
    await store.putObject("bkt", "keep", [data]);
    // A crash after a pack's upload and before its commit: a well-formed pack nobody recorded.
    const crashed = new Packer(t.backend, t.keys, async () => {
      throw new Error("crash before commit");
    });
    await crashed.add({ chunkId: Buffer.alloc(32, 7), method: 0, rawLength: 5, stored: Buffer.from("hello") });
    await assert.rejects(crashed.flush(), /crash before commit/);
    // And junk under a pack-shaped key.
    const junkKey = packBlobKey("ab" + "0".repeat(30));
    await t.backend.put(junkKey, bytes(3000, 12));
    // A blob outside packs/ is not gc's business.
    await t.backend.put("keys/other", Buffer.from("not a pack"));

    const known = new Set((await packs(t.meta)).map((p) => p.blobKey));
    const all = await blobs(t.backend, PACK_PREFIX);
    const orphans = [...all.keys()].filter((k) => !known.has(k));
    assert.equal(orphans.length, 2);
    assert.ok(orphans.includes(junkKey));
    const report = await fsck(store);
    assert.ok(report.ok, "orphans are not errors");
    assert.equal(report.warnings.length, 2, "fsck warns about both orphans");

    const dry = await collectGarbage(store, { graceMs: 0, dryRun: true });
    assert.equal(dry.orphanBlobsDeleted, 0);
    assert.equal((await blobs(t.backend, PACK_PREFIX)).size, all.size, "the dry run deleted nothing");

    const r = await collectGarbage(store, { graceMs: 0 });
    assert.equal(r.orphanBlobsDeleted, 2);
    assert.equal(r.bytesReclaimed, orphans.reduce((n, k) => n + all.get(k)!, 0));
    const left = await blobs(t.backend);
    for (const k of orphans) assert.ok(!left.has(k), `orphan ${k} deleted`);
    for (const k of known) assert.ok(left.has(k), `recorded pack ${k} kept`);
    assert.ok(left.has("keys/other"), "blobs outside packs/ are left alone");
    assert.ok((await readAll(store, "bkt", "keep")).equals(data));
    const clean = await fsck(store, { readData: true });
    assert.ok(clean.ok);
    assert.deepEqual(clean.warnings, []);
  } finally {
    await t.close();
  }
});

test("a chunk with no references found again by a later put is referenced, and gc keeps it", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend, cacheBytes: 0 });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(60_000, 21);
    await store.putObject("bkt", "a", [data]);
    await store.deleteObject("bkt", "a");
    let s = await computeStats(t.meta);
    const deadChunks = s.unreferencedChunks;
    assert.ok(deadChunks > 0);
    assert.equal(s.chunks, deadChunks, "every chunk is dead");

    // Dedup finds the dead chunks: nothing is uploaded, and they are referenced again.
    const puts = backend.counters().puts;
    await store.putObject("bkt", "b", [data]);
    assert.equal(backend.counters().puts, puts, "the content was found, not stored again");
    s = await computeStats(t.meta);
    assert.equal(s.unreferencedChunks, 0);
    for (const c of (await chunks(t.meta)).values()) assert.ok(c.refs >= 1);
    // gc recycling every pack (minLiveFraction 1) moves them and keeps them.
    const r = await collectGarbage(store, { graceMs: 0, minLiveFraction: 1 });
    assert.equal(r.deadChunks, 0);
    assert.ok(r.chunksRewritten > 0);
    assert.ok((await readAll(store, "bkt", "b")).equals(data));
    await assertClean(store);

    // Dead again, collected: a later put stores the content anew.
    await store.deleteObject("bkt", "b");
    await collectGarbage(store, { graceMs: 0 });
    s = await computeStats(t.meta);
    assert.equal(s.chunks, 0, "collected");
    assert.equal(s.packs, 0);
    await store.putObject("bkt", "c", [data]);
    assert.ok((await readAll(store, "bkt", "c")).equals(data));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("gc waits for a put that found dead chunks by dedup; the put commits its references and gc keeps them", async () => {
  const t = await makeStore({ cacheBytes: 0 });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(90_000, 31);
    await store.putObject("bkt", "old", [data]);
    await store.deleteObject("bkt", "old");
    const dead = (await computeStats(t.meta)).unreferencedChunks;
    assert.ok(dead > 1);

    // A slow upload of the same content: its first bytes are chunked and found in the index
    // (with no references) before the rest arrives.
    let consumed!: () => void;
    const firstConsumed = new Promise<void>((resolve) => (consumed = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield data.subarray(0, 80_000);
      consumed();
      await gate;
      yield data.subarray(80_000);
    }
    const put = store.putObject("bkt", "new", slow());
    await firstConsumed;
    let gcDone = false;
    const gc = collectGarbage(store, { graceMs: 0, minLiveFraction: 1 }).then((r) => {
      gcDone = true;
      return r;
    });
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(gcDone, false, "gc waits while a put is in progress");
    release();
    const [p, r] = await Promise.all([put, gc]);
    assert.equal(p.size, data.length);
    assert.equal(r.deadChunks, 0, "when gc ran, the put had referenced the chunks");
    const s: StoreStats = await computeStats(t.meta);
    assert.equal(s.unreferencedChunks, 0);
    assert.ok((await readAll(store, "bkt", "new")).equals(data));
    assert.ok((await collect((await store.getObject("bkt", "new", { range: { start: 85_000 } })).body)).equals(data.subarray(85_000)));
    await assertClean(store);
  } finally {
    await t.close();
  }
});
