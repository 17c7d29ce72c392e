/**
 * The object store under damage and failure: flipped bytes in pack records, indexes and trailers,
 * missing and truncated packs, a wrong key or passphrase, a full disk, flaky and lost-ack backend
 * writes, failing source streams, corrupt reads. Each must end in a clear error naming what is
 * affected (or in a correct retry), never in wrong bytes, and never in half-committed metadata:
 * fsck stays clean wherever nothing was damaged.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isStowageError, StowageError, type ErrorCode } from "../../src/errors.js";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import { LocalBackend } from "../../src/backend/local.js";
import { FaultyBackend } from "../../src/backend/faulty.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { openKvMetadataStore } from "../../src/meta/kv-store.js";
import type { MetaReader } from "../../src/meta/types.js";
import { PACK_PREFIX } from "../../src/pack/format.js";
import { ObjectStore } from "../../src/store/store.js";
import { initRepository, openRepository } from "../../src/store/repository.js";
import { fsck } from "../../src/store/fsck.js";
import { collectGarbage } from "../../src/store/gc.js";
import { rebuildIndex } from "../../src/store/rebuild.js";
import { computeStats } from "../../src/store/stats.js";
import { SMALL_CHUNKS, assertClean, bytes, makeStore, pieces, readAll, type TestStore } from "./helpers.js";

delete process.env.STOWAGE_MASTER_KEY; // the repository tests choose their keys themselves

async function rejects(p: Promise<unknown>, code: ErrorCode, ...mentions: string[]): Promise<StowageError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(isStowageError(caught, code), `expected ${code}, got ${String(caught)}`);
  for (const m of mentions) assert.ok(caught.message.includes(m), `the error should name ${m}: ${caught.message}`);
  return caught;
}

/** Reads a body to its end or its first error: what was yielded before, and the error. */
async function drain(body: AsyncIterable<Uint8Array>): Promise<{ data: Buffer; err: unknown }> {
  const parts: Buffer[] = [];
  try {
    for await (const p of body) parts.push(Buffer.from(p));
  } catch (err) {
    return { data: Buffer.concat(parts), err };
  }
  return { data: Buffer.concat(parts), err: undefined };
}

/** Reads bucket/key expecting a failure with `code` naming `mentions`; what came before must be a true prefix of `real`. */
async function readFails(store: ObjectStore, bucket: string, key: string, real: Buffer, code: ErrorCode, ...mentions: string[]): Promise<Buffer> {
  const { data, err } = await drain((await store.getObject(bucket, key)).body);
  assert.ok(isStowageError(err, code), `reading ${bucket}/${key}: expected ${code}, got ${String(err)}`);
  for (const m of mentions) assert.ok(err.message.includes(m), `the error should name ${m}: ${err.message}`);
  assert.ok(data.length < real.length, "a failed read did not return the whole object");
  assert.ok(data.equals(real.subarray(0, data.length)), "the bytes yielded before the error are a correct prefix");
  return data;
}

async function blobKeyOfPack(meta: MetaReader, packId: string): Promise<string> {
  const p = await meta.getPack(packId);
  assert.ok(p !== undefined, `pack ${packId} is known`);
  return p.blobKey;
}

function fileOf(backend: LocalBackend, blobKey: string): string {
  return join(backend.root, ...blobKey.split("/"));
}

/** XORs one byte of a stored blob in place (memory or local directory). */
async function flipByte(backend: BlobBackend, blobKey: string, offset: number, mask = 0x20): Promise<void> {
  if (backend instanceof MemoryBackend) {
    const raw = backend.rawForTesting(blobKey);
    assert.ok(raw !== undefined && offset < raw.length);
    raw[offset] = raw[offset]! ^ mask;
  } else if (backend instanceof LocalBackend) {
    const fh = await fsp.open(fileOf(backend, blobKey), "r+");
    try {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, offset);
      b[0] = b[0]! ^ mask;
      await fh.write(b, 0, 1, offset);
    } finally {
      await fh.close();
    }
  } else {
    throw new Error("flipByte: unsupported backend");
  }
}

async function truncateBlob(backend: BlobBackend, blobKey: string, size: number): Promise<void> {
  if (backend instanceof MemoryBackend) {
    const raw = backend.rawForTesting(blobKey);
    assert.ok(raw !== undefined);
    await backend.put(blobKey, Buffer.from(raw.subarray(0, size)));
  } else if (backend instanceof LocalBackend) {
    await fsp.truncate(fileOf(backend, blobKey), size);
  } else {
    throw new Error("truncateBlob: unsupported backend");
  }
}

/** The objects (bucket/key@null, of the given unversioned keys) with a chunk in `packId`. */
async function objectsInPack(meta: MetaReader, objects: Array<[string, string]>, packId: string): Promise<string[]> {
  const out: string[] = [];
  for (const [bucket, key] of objects) {
    const v = await meta.getCurrent(bucket, key);
    assert.ok(v !== undefined);
    for (const e of v.manifest) {
      if ((await meta.getChunk(e.chunkId))?.packId === packId) {
        out.push(`${bucket}/${key}@${v.versionId}`);
        break;
      }
    }
  }
  return out.sort();
}

async function withBackends(fn: (kind: string, backend: BlobBackend) => Promise<void>): Promise<void> {
  await fn("memory", new MemoryBackend());
  const dir = mkdtempSync(join(tmpdir(), "stowage-faults-local-"));
  try {
    await fn("local", await LocalBackend.open(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a flipped byte in a pack record: the read fails with STOWAGE_INTEGRITY naming object and pack, never wrong bytes; fsck names exactly the objects sharing the chunk", async () => {
  await withBackends(async (kind, backend) => {
    const t = await makeStore({ backend });
    try {
      const { store } = t;
      await store.createBucket("bkt");
      await store.createBucket("other");
      const shared = bytes(60_000, 11);
      const a = Buffer.concat([shared, bytes(140_000, 12)]);
      const b = Buffer.concat([shared, bytes(40_000, 13)]);
      const c = bytes(120_000, 14);
      await store.putObject("bkt", "a", pieces(a));
      await store.putObject("bkt", "b", pieces(b));
      await store.putObject("bkt", "c", pieces(c));
      await store.copyObject("bkt", "a", "other", "d");

      // The second chunk of `a` lies in the shared prefix: `b` and the copy `d` reference it too.
      const ma = (await t.meta.getCurrent("bkt", "a"))!.manifest;
      const mb = (await t.meta.getCurrent("bkt", "b"))!.manifest;
      const mc = (await t.meta.getCurrent("bkt", "c"))!.manifest;
      const victim = ma[1]!.chunkId;
      const hex = victim.toString("hex");
      assert.ok(ma[0]!.length + ma[1]!.length <= shared.length, `${kind}: chunk 1 of a is in the shared prefix`);
      assert.ok(mb.some((e) => e.chunkId.equals(victim)), `${kind}: b shares the chunk`);
      assert.ok(!mc.some((e) => e.chunkId.equals(victim)));
      const rec = (await t.meta.getChunk(victim))!;
      const blobKey = await blobKeyOfPack(t.meta, rec.packId);
      await flipByte(backend, blobKey, rec.offset + Math.floor(rec.storedLength / 2));
      await t.reopen(); // no cached plaintext

      const gotA = await readFails(t.store, "bkt", "a", a, "STOWAGE_INTEGRITY", "bkt/a", rec.packId);
      assert.ok(gotA.length <= ma[0]!.length, `${kind}: nothing of or after the damaged chunk was yielded`);
      await readFails(t.store, "bkt", "b", b, "STOWAGE_INTEGRITY", "bkt/b", rec.packId);
      await readFails(t.store, "other", "d", a, "STOWAGE_INTEGRITY", "other/d", rec.packId);
      // Everything not resting on the damaged chunk still reads.
      assert.ok((await readAll(t.store, "bkt", "c")).equals(c), `${kind}: c intact`);
      const after = ma[0]!.length + ma[1]!.length;
      const tail = await drain((await t.store.getObject("bkt", "a", { range: { start: after } })).body);
      assert.equal(tail.err, undefined, `${kind}: a range past the damaged chunk reads`);
      assert.ok(tail.data.equals(a.subarray(after)));

      // Without reading data nothing is wrong with the metadata or the pack index.
      assert.equal((await fsck(t.store)).ok, true, `${kind}: the damage is only in the record's ciphertext`);
      const r = await fsck(t.store, { readData: true });
      assert.equal(r.ok, false);
      assert.equal(r.problems.length, 1, `${kind}: one problem: ${r.problems.map((p) => p.message).join("; ")}`);
      const p = r.problems[0]!;
      assert.equal(p.kind, "damaged-chunk");
      assert.equal(p.chunk, hex);
      assert.equal(p.pack, rec.packId);
      assert.ok(p.message.includes(rec.packId));
      assert.deepEqual([...p.affects].sort(), ["bkt/a@null", "bkt/b@null", "other/d@null"]);
    } finally {
      await t.close();
    }
  });
});

test("a flipped byte in a pack's index or trailer: fsck reports pack-index naming the objects; rebuild-index skips the pack and reports them", async () => {
  const t = await makeStore();
  try {
    const backend = t.backend as MemoryBackend;
    const { store } = t;
    await store.createBucket("bkt");
    const x = bytes(150_000, 21);
    const y = bytes(100_000, 22);
    await store.putObject("bkt", "x", pieces(x));
    await store.putObject("bkt", "y", pieces(y));
    const objects: Array<[string, string]> = [["bkt", "x"], ["bkt", "y"]];
    const mx = (await t.meta.getCurrent("bkt", "x"))!.manifest;
    const packId = (await t.meta.getChunk(mx[mx.length - 1]!.chunkId))!.packId;
    const pack = (await t.meta.getPack(packId))!;
    const affected = await objectsInPack(t.meta, objects, packId);
    assert.deepEqual(affected, ["bkt/x@null"]);
    await assertClean(store);

    const positions: Array<[string, number]> = [
      ["trailer magic", pack.size - 1],
      ["trailer version", pack.size - 12],
      ["trailer index length", pack.size - 16],
      ["sealed index", pack.size - 16 - 30],
    ];
    for (const [where, at] of positions) {
      await flipByte(backend, pack.blobKey, at);
      const r = await fsck(store);
      assert.equal(r.ok, false, where);
      const probs = r.problems.filter((p) => p.kind === "pack-index");
      assert.equal(probs.length, 1, `${where}: ${r.problems.map((p) => `${p.kind}: ${p.message}`).join("; ")}`);
      assert.equal(r.problems.length, 1, where);
      assert.equal(probs[0]!.pack, packId);
      assert.deepEqual([...probs[0]!.affects].sort(), affected, where);
      await flipByte(backend, pack.blobKey, at); // restore
      assert.equal((await fsck(store)).ok, true, `${where} restored`);
    }

    await flipByte(backend, pack.blobKey, pack.size - 16 - 30);
    const rep = await rebuildIndex(store);
    assert.deepEqual(rep.packsUnreadable.map((u) => u.blobKey), [pack.blobKey]);
    assert.ok(rep.missingChunks > 0);
    assert.deepEqual(rep.affected, affected);
    await t.reopen();
    assert.ok((await readAll(t.store, "bkt", "y")).equals(y), "objects in other packs still read");
    await readFails(t.store, "bkt", "x", x, "STOWAGE_INTEGRITY", "bkt/x");
    const r = await fsck(t.store, { readData: true });
    assert.ok(r.problems.length > 0 && r.problems.every((p) => p.kind === "missing-chunk"));
    assert.ok(r.problems.every((p) => p.affects.length === 1 && p.affects[0] === "bkt/x@null"));
    assert.equal(r.warnings.length, 1, "the unreadable blob is left in the bucket and reported");
    assert.ok(r.warnings[0]!.includes(pack.blobKey));
  } finally {
    await t.close();
  }
});

test("a deleted pack blob: reads fail with STOWAGE_BACKEND_NOT_FOUND naming object and pack; fsck reports missing-pack with the objects", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const x = bytes(150_000, 31);
    const y = bytes(90_000, 32);
    await store.putObject("bkt", "x", pieces(x));
    await store.putObject("bkt", "y", pieces(y));
    await store.copyObject("bkt", "x", "bkt", "x-copy");
    const objects: Array<[string, string]> = [["bkt", "x"], ["bkt", "y"], ["bkt", "x-copy"]];
    const mx = (await t.meta.getCurrent("bkt", "x"))!.manifest;
    const packId = (await t.meta.getChunk(mx[0]!.chunkId))!.packId;
    const affected = await objectsInPack(t.meta, objects, packId);
    assert.deepEqual(affected, ["bkt/x-copy@null", "bkt/x@null"]);
    await t.backend.delete(await blobKeyOfPack(t.meta, packId));
    await t.reopen();

    const got = await readFails(t.store, "bkt", "x", x, "STOWAGE_BACKEND_NOT_FOUND", "bkt/x", packId);
    assert.equal(got.length, 0, "the first chunk is in the missing pack");
    assert.ok((await readAll(t.store, "bkt", "y")).equals(y));
    const r = await fsck(t.store);
    assert.equal(r.ok, false);
    const missing = r.problems.filter((p) => p.kind === "missing-pack");
    assert.equal(missing.length, 1);
    assert.equal(r.problems.length, 1);
    assert.equal(missing[0]!.pack, packId);
    assert.deepEqual([...missing[0]!.affects].sort(), affected);
  } finally {
    await t.close();
  }
});

test("a truncated pack blob: reads of chunks past the cut fail with STOWAGE_INTEGRITY naming the pack; fsck reports it", async () => {
  await withBackends(async (kind, backend) => {
    const t = await makeStore({ backend });
    try {
      const { store } = t;
      await store.createBucket("bkt");
      const x = bytes(150_000, 41);
      const y = bytes(50_000, 42);
      await store.putObject("bkt", "x", pieces(x));
      await store.putObject("bkt", "y", pieces(y));
      const mx = (await t.meta.getCurrent("bkt", "x"))!.manifest;
      const packId = (await t.meta.getChunk(mx[0]!.chunkId))!.packId;
      const pack = (await t.meta.getPack(packId))!;
      const affected = await objectsInPack(t.meta, [["bkt", "x"], ["bkt", "y"]], packId);
      assert.deepEqual(affected, ["bkt/x@null"]);
      await truncateBlob(backend, pack.blobKey, Math.floor(pack.size / 2));
      await t.reopen();

      const got = await readFails(t.store, "bkt", "x", x, "STOWAGE_INTEGRITY", "bkt/x", packId);
      assert.ok(got.length > 0, `${kind}: the chunks before the cut were read`);
      assert.ok((await readAll(t.store, "bkt", "y")).equals(y));
      const r = await fsck(t.store, { readData: true });
      assert.equal(r.ok, false);
      assert.equal(r.problems.length, 1, r.problems.map((p) => p.message).join("; "));
      assert.equal(r.problems[0]!.kind, "pack-size");
      assert.equal(r.problems[0]!.pack, packId);
      assert.deepEqual(r.problems[0]!.affects, affected);
    } finally {
      await t.close();
    }
  });
});

test("wrong key: another master key is STOWAGE_WRONG_KEY, a wrong passphrase STOWAGE_BAD_PASSPHRASE; a store with other keys fails reads with STOWAGE_INTEGRITY", async () => {
  const dir = mkdtempSync(join(tmpdir(), "stowage-faults-repo-"));
  try {
    const passphrase = "correct horse battery staple";
    await initRepository(dir, { passphrase, keyFile: { scrypt: { log2N: 10, r: 8, p: 1 } }, chunker: SMALL_CHUNKS, packTargetSize: 64 * 1024 });
    const data = bytes(120_000, 51);
    let repo = await openRepository(dir, { passphrase });
    try {
      await repo.store.createBucket("bkt");
      await repo.store.putObject("bkt", "obj", pieces(data));
    } finally {
      await repo.close();
    }

    await rejects(openRepository(dir, { keys: RepositoryKeys.generate() }), "STOWAGE_WRONG_KEY");
    await rejects(openRepository(dir, { passphrase: "correct horse battery stapler" }), "STOWAGE_BAD_PASSPHRASE");
    await rejects(openRepository(dir, {}), "STOWAGE_NO_KEY");

    // Past the key check: the same bucket and metadata under other keys.
    const backend = await LocalBackend.open(join(dir, "bucket"));
    const meta = await openKvMetadataStore(join(dir, "meta"));
    const other = new ObjectStore(meta, backend, RepositoryKeys.generate(), { chunker: SMALL_CHUNKS, packTargetSize: 64 * 1024, journal: false });
    try {
      const got = await readFails(other, "bkt", "obj", data, "STOWAGE_INTEGRITY", "bkt/obj");
      assert.equal(got.length, 0, "no unauthenticated byte is returned");
      await rejects(collect(other, "bkt", "obj", { start: 50_000, end: 60_000 }), "STOWAGE_INTEGRITY");
      const r = await fsck(other, { readData: true });
      assert.equal(r.ok, false);
      assert.ok(r.packs > 0);
      assert.equal(r.problems.filter((p) => p.kind === "pack-index").length, r.packs, "no pack index authenticates");
    } finally {
      await other.close();
      await meta.close();
      await backend.close();
    }

    repo = await openRepository(dir, { passphrase });
    try {
      assert.ok((await readAll(repo.store, "bkt", "obj")).equals(data), "the right key still reads");
      await assertClean(repo.store);
    } finally {
      await repo.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function collect(store: ObjectStore, bucket: string, key: string, range: { start: number; end: number }): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of (await store.getObject(bucket, key, { range })).body) parts.push(p);
  return Buffer.concat(parts);
}

async function listing(store: ObjectStore, bucket: string): Promise<string[]> {
  return (await store.listObjects(bucket)).objects.map((o) => `${o.key}:${o.etag}`);
}

async function blobKeys(backend: BlobBackend): Promise<string[]> {
  const out: string[] = [];
  for await (const b of backend.list(PACK_PREFIX)) out.push(b.key);
  return out;
}

test("full disk: a put fails with STOWAGE_NO_SPACE and commits nothing; after the fault clears the same put succeeds", async () => {
  const faulty = new FaultyBackend(new MemoryBackend(), { seed: 7 });
  const t = await makeStore({ backend: faulty });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const v1 = bytes(120_000, 61);
    const v2 = Buffer.concat([v1.subarray(0, 40_000), bytes(110_000, 62)]);
    await store.putObject("bkt", "k", pieces(v1));
    await store.putObject("bkt", "j", pieces(bytes(30_000, 63)));
    const statsBefore = await computeStats(t.meta);
    const listBefore = await listing(store, "bkt");
    const blobsBefore = await blobKeys(faulty.inner);

    const fault = faulty.inject({ op: "put", kind: "no-space" });
    await rejects(store.putObject("bkt", "k", pieces(v2)), "STOWAGE_NO_SPACE");
    await rejects(store.putObject("bkt", "new", pieces(bytes(70_000, 64))), "STOWAGE_NO_SPACE");
    const up = await store.createMultipartUpload("bkt", "mp");
    await rejects(store.uploadPart("bkt", up.uploadId, 1, pieces(bytes(20_000, 65))), "STOWAGE_NO_SPACE");
    assert.ok(fault.fired >= 3);

    assert.ok((await readAll(store, "bkt", "k")).equals(v1), "the previous version still reads");
    await rejects(store.headObject("bkt", "new"), "STOWAGE_NO_SUCH_KEY");
    assert.deepEqual((await store.listParts("bkt", up.uploadId)).parts, []);
    assert.deepEqual(await computeStats(t.meta), statsBefore, "stats unchanged");
    assert.deepEqual(await listing(store, "bkt"), listBefore, "listing unchanged");
    assert.deepEqual(await blobKeys(faulty.inner), blobsBefore, "no blob written");
    await assertClean(store);

    fault.remove();
    const r = await store.putObject("bkt", "k", pieces(v2));
    assert.equal(r.size, v2.length);
    assert.ok((await readAll(store, "bkt", "k")).equals(v2));
    await store.uploadPart("bkt", up.uploadId, 1, pieces(bytes(20_000, 65)));
    await store.abortMultipartUpload("bkt", up.uploadId);
    await assertClean(store);
    await t.reopen();
    assert.ok((await readAll(t.store, "bkt", "k")).equals(v2));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("flaky bucket: with 30% of pack puts failing, every put fails with a clear error or reads back whole; fsck and gc stay clean", async () => {
  const faulty = new FaultyBackend(new MemoryBackend(), { seed: 12345 });
  const t = await makeStore({ backend: faulty });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const model = new Map<string, Buffer>();
    const codes = new Map<string, number>();
    let ok = 0;
    let seedCounter = 0;
    /** Content made of a few shared streams: concurrent puts deduplicate against each other's pending chunks. */
    const content = (i: number): Buffer => {
      const segs: Buffer[] = [];
      for (let s = 0; s < 1 + (i % 3); s++) segs.push(bytes(10_000 + ((i * 7919 + s * 104_729) % 60_000), 1 + ((i + s) % 5)));
      segs.push(bytes(500 + (i % 7) * 1000, 1000 + seedCounter++));
      return Buffer.concat(segs);
    };
    const fault = faulty.inject({ op: "put", kind: "io", probability: 0.3 });
    for (let round = 0; round < 12; round++) {
      const batch = [0, 1, 2, 3].map((j) => {
        const key = `k${(round * 4 + j) % 10}`;
        const data = content(round * 4 + j);
        return { key, data };
      });
      const results = await Promise.allSettled(batch.map(({ key, data }) => store.putObject("bkt", key, pieces(data), { size: data.length })));
      for (const [i, res] of results.entries()) {
        const { key, data } = batch[i]!;
        if (res.status === "fulfilled") {
          ok++;
          model.set(key, data);
          assert.ok((await readAll(store, "bkt", key)).equals(data), `${key} reads back after its put succeeded`);
        } else {
          const err: unknown = res.reason;
          assert.ok(isStowageError(err), `a failed put fails with a StowageError, got ${String(err)}`);
          codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
          assert.equal(err.code, "STOWAGE_BACKEND_IO", `a backend failure is reported as such: ${err.message}`);
        }
      }
    }
    assert.ok(fault.fired > 0 && ok > 0, `faults fired ${fault.fired} times, ${ok} puts succeeded`);
    const check = async (s: ObjectStore): Promise<void> => {
      for (let k = 0; k < 10; k++) {
        const want = model.get(`k${k}`);
        if (want === undefined) await rejects(s.headObject("bkt", `k${k}`), "STOWAGE_NO_SUCH_KEY");
        else assert.ok((await readAll(s, "bkt", `k${k}`)).equals(want), `k${k}`);
      }
    };
    await check(store);
    await assertClean(store);

    fault.remove();
    await collectGarbage(store, { graceMs: 0 });
    const r = await fsck(store, { readData: true });
    assert.ok(r.ok, r.problems.map((p) => p.message).join("; "));
    assert.deepEqual(r.warnings, [], "gc removed every orphan blob");
    await t.reopen();
    await check(t.store);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("a put whose chunks sit in a pack that failed before its flush (another writer's, or its own earlier full pack) fails with that backend error, not STOWAGE_INTEGRITY", async () => {
  const faulty = new FaultyBackend(new MemoryBackend());
  faulty.latencyMs = 20;
  const t = await makeStore({ backend: faulty });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const a = bytes(100_000, 101);
    const fault = faulty.inject({ op: "put", key: /^packs\//, times: 1 });
    // B starts a moment after A: its first bytes are A's, whose chunks are then pending in A's
    // first (full, uploading) pack. That upload fails while B is still streaming; B's own new
    // chunks go into a later pack that uploads fine.
    const bData = Buffer.concat([a.subarray(0, 30_000), bytes(50_000, 102)]);
    async function* slowB(): AsyncGenerator<Uint8Array> {
      await new Promise((r) => setTimeout(r, 5));
      yield bData.subarray(0, 30_000);
      await new Promise((r) => setTimeout(r, 150));
      yield bData.subarray(30_000);
    }
    const [ra, rb] = await Promise.allSettled([store.putObject("bkt", "a", pieces(a)), store.putObject("bkt", "b", slowB())]);
    assert.equal(fault.fired, 1);
    assert.equal(ra.status, "rejected");
    assert.ok(isStowageError(ra.reason, "STOWAGE_BACKEND_IO"), String(ra.reason));
    if (rb.status === "rejected") {
      assert.ok(isStowageError(rb.reason, "STOWAGE_BACKEND_IO"), `b fails with the failed pack's error, not: ${String(rb.reason)}`);
      await rejects(store.headObject("bkt", "b"), "STOWAGE_NO_SUCH_KEY");
    } else {
      assert.ok((await readAll(store, "bkt", "b")).equals(bData));
    }
    await assertClean(store);

    // One writer alone: its first (full) pack fails while it is still streaming; its flush covers
    // only the packs after it. The put must fail with the upload's error, not commit or report
    // references to chunks that were never stored.
    faulty.latencyMs = 0;
    const solo = faulty.inject({ op: "put", key: /^packs\//, times: 1 });
    const big = bytes(200_000, 103);
    await rejects(store.putObject("bkt", "solo", pieces(big)), "STOWAGE_BACKEND_IO", "injected fault");
    assert.equal(solo.fired, 1);
    await rejects(store.headObject("bkt", "solo"), "STOWAGE_NO_SUCH_KEY");
    await assertClean(store);
    await store.putObject("bkt", "solo", pieces(big));
    assert.ok((await readAll(store, "bkt", "solo")).equals(big));
    // A retry of both succeeds.
    await store.putObject("bkt", "a", pieces(a));
    await store.putObject("bkt", "b", pieces(bData));
    assert.ok((await readAll(store, "bkt", "a")).equals(a));
    assert.ok((await readAll(store, "bkt", "b")).equals(bData));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("gc on a flaky bucket (failing and lost-ack puts, gets, deletes, lists) fails cleanly and never loses data", async () => {
  const faulty = new FaultyBackend(new MemoryBackend(), { seed: 4 });
  const t = await makeStore({ backend: faulty });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const model = new Map<string, Buffer>();
    for (let i = 0; i < 30; i++) {
      const d = Buffer.concat([bytes(20_000 + ((i * 3331) % 50_000), 1 + (i % 4)), bytes(3000, 500 + i)]);
      await store.putObject("bkt", `k${i % 8}`, pieces(d));
      model.set(`k${i % 8}`, d);
      if (i % 5 === 0) {
        await store.deleteObject("bkt", `k${(i + 3) % 8}`);
        model.delete(`k${(i + 3) % 8}`);
      }
    }
    const io = faulty.inject({ op: ["put", "get", "delete", "list", "head"], kind: "io", probability: 0.02 });
    const lost = faulty.inject({ op: ["put", "delete"], kind: "lost-ack", probability: 0.02 });
    let failures = 0;
    for (let r = 0; r < 6; r++) {
      try {
        await collectGarbage(store, { graceMs: 0, minLiveFraction: 0.9 });
      } catch (err) {
        assert.ok(isStowageError(err, "STOWAGE_BACKEND_IO"), String(err));
        failures++;
      }
    }
    assert.ok(io.fired + lost.fired > 0 && failures > 0, `${io.fired + lost.fired} faults, ${failures} failed gc runs`);
    io.remove();
    lost.remove();
    const check = async (s: ObjectStore): Promise<void> => {
      for (const [k, d] of model) assert.ok((await readAll(s, "bkt", k)).equals(d), k);
    };
    await t.reopen();
    await assertClean(t.store);
    await check(t.store);
    await collectGarbage(t.store, { graceMs: 0 });
    const r = await fsck(t.store, { readData: true });
    assert.ok(r.ok, r.problems.map((p) => p.message).join("; "));
    assert.deepEqual(r.warnings, []);
    await t.reopen();
    await check(t.store);
  } finally {
    await t.close();
  }
});

test("lost acknowledgement of a pack put: the put fails, fsck is clean with the orphan as a warning, gc deletes the orphan", async () => {
  const faulty = new FaultyBackend(new MemoryBackend());
  const t = await makeStore({ backend: faulty });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(40_000, 71);
    const fault = faulty.inject({ op: "put", kind: "lost-ack", key: /^packs\//, times: 1 });
    await rejects(store.putObject("bkt", "k", pieces(data)), "STOWAGE_BACKEND_IO");
    assert.equal(fault.fired, 1);
    await rejects(store.headObject("bkt", "k"), "STOWAGE_NO_SUCH_KEY");
    const [orphan] = await blobKeys(faulty.inner);
    assert.ok(orphan !== undefined, "the blob landed");
    const r = await fsck(store, { readData: true });
    assert.equal(r.ok, true, r.problems.map((p) => p.message).join("; "));
    assert.equal(r.warnings.length, 1);
    assert.ok(r.warnings[0]!.includes(orphan));

    const g = await collectGarbage(store, { graceMs: 0 });
    assert.equal(g.orphanBlobsDeleted, 1);
    assert.deepEqual(await blobKeys(faulty.inner), []);
    assert.deepEqual((await fsck(store, { readData: true })).warnings, []);

    await store.putObject("bkt", "k", pieces(data));
    assert.ok((await readAll(store, "bkt", "k")).equals(data));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("a source stream that fails mid-way, or ends before its announced size, commits nothing; the old version stays", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const v1 = bytes(90_000, 81);
    await store.putObject("bkt", "k", pieces(v1));
    const statsBefore = await computeStats(t.meta);

    async function* failing(): AsyncGenerator<Uint8Array> {
      yield bytes(50_000, 82);
      yield bytes(30_000, 83);
      throw new Error("connection reset by peer");
    }
    await rejects(store.putObject("bkt", "k", failing()), "STOWAGE_INCOMPLETE_BODY", "connection reset by peer");
    await rejects(store.putObject("bkt", "k", pieces(bytes(100_000, 84)), { size: 200_000 }), "STOWAGE_INCOMPLETE_BODY");
    await rejects(store.putObject("bkt", "k", pieces(bytes(100_000, 85)), { size: 50_000 }), "STOWAGE_INVALID_ARGUMENT");
    await rejects(store.putObject("bkt", "fresh", failing()), "STOWAGE_INCOMPLETE_BODY");
    const up = await store.createMultipartUpload("bkt", "mp");
    await rejects(store.uploadPart("bkt", up.uploadId, 1, failing()), "STOWAGE_INCOMPLETE_BODY");
    await rejects(store.uploadPart("bkt", up.uploadId, 2, pieces(bytes(10_000, 86)), { size: 10_001 }), "STOWAGE_INCOMPLETE_BODY");

    assert.ok((await readAll(store, "bkt", "k")).equals(v1), "old version intact");
    await rejects(store.headObject("bkt", "fresh"), "STOWAGE_NO_SUCH_KEY");
    assert.deepEqual((await store.listParts("bkt", up.uploadId)).parts, []);
    const s = await computeStats(t.meta);
    assert.equal(s.objects, statsBefore.objects);
    assert.equal(s.versions, statsBefore.versions);
    assert.equal(s.logicalBytes, statsBefore.logicalBytes);
    assert.equal(s.uniqueBytes, statsBefore.uniqueBytes, "no new referenced chunk");
    await assertClean(store);
    await store.abortMultipartUpload("bkt", up.uploadId);
    await collectGarbage(store, { graceMs: 0 });
    await t.reopen();
    assert.ok((await readAll(t.store, "bkt", "k")).equals(v1));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("corrupt reads from the bucket fail with STOWAGE_INTEGRITY, never wrong bytes, and poison no cache", async () => {
  const faulty = new FaultyBackend(new MemoryBackend(), { seed: 99 });
  const t: TestStore = await makeStore({ backend: faulty, cacheBytes: 0 });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const x = bytes(150_000, 91);
    const y = bytes(60_000, 92);
    await store.putObject("bkt", "x", pieces(x));
    await store.putObject("bkt", "y", pieces(y));

    const once = faulty.inject({ op: "get", kind: "corrupt", key: /^packs\//, times: 1 });
    await readFails(store, "bkt", "x", x, "STOWAGE_INTEGRITY", "bkt/x");
    assert.equal(once.fired, 1);
    assert.ok((await readAll(store, "bkt", "x")).equals(x), "the next read is right");

    // With the cache on, a corrupt GET must not leave bad plaintext behind either.
    await t.store.close();
    const cached = new ObjectStore(t.meta, faulty, t.keys, { chunker: SMALL_CHUNKS, packTargetSize: 64 * 1024, journal: false });
    try {
      const again = faulty.inject({ op: "get", kind: "corrupt", key: /^packs\//, times: 1 });
      await readFails(cached, "bkt", "x", x, "STOWAGE_INTEGRITY", "bkt/x");
      assert.equal(again.fired, 1);
      assert.ok((await readAll(cached, "bkt", "x")).equals(x));
    } finally {
      await cached.close();
    }
    t.store = new ObjectStore(t.meta, faulty, t.keys, { chunker: SMALL_CHUNKS, packTargetSize: 64 * 1024, cacheBytes: 0, journal: false });

    const flaky = faulty.inject({ op: "get", kind: "corrupt", key: /^packs\//, probability: 0.3 });
    let failed = 0;
    let whole = 0;
    for (let i = 0; i < 16; i++) {
      const [key, data] = i % 2 === 0 ? ["x", x] : ["y", y];
      const { data: got, err } = await drain((await t.store.getObject("bkt", key)).body);
      assert.ok(got.equals(data.subarray(0, got.length)), `read ${i}: only correct bytes`);
      if (err === undefined) {
        assert.equal(got.length, data.length);
        whole++;
      } else {
        assert.ok(isStowageError(err, "STOWAGE_INTEGRITY"), `read ${i}: ${String(err)}`);
        assert.ok(err.message.includes(`bkt/${key}`));
        failed++;
      }
    }
    assert.ok(flaky.fired > 0 && failed > 0 && whole > 0, `${failed} reads failed, ${whole} read whole`);
    flaky.remove();
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});
