import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { SEALED_OVERHEAD } from "../../src/codec/aead.js";
import { compressChunk } from "../../src/codec/compress.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../src/backend/memory.js";
import { LocalBackend } from "../../src/backend/local.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";
import { newPackId, openRecord, packBlobKey, RECORD_KIND_METADATA } from "../../src/pack/format.js";
import { Packer, type PackCommit } from "../../src/pack/writer.js";
import { PackReader, type ChunkLocation } from "../../src/pack/reader.js";
import { RecordEncoder } from "../../src/pack/encoder.js";

/** Counts GETs (and their ranges); optional delay per GET. */
class Counting implements BlobBackend {
  readonly location = "counting:";
  readonly inner = new MemoryBackend();
  gets: Array<{ key: string; range: ByteRange | undefined }> = [];
  constructor(readonly getDelayMs = 0) {}
  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.inner.put(key, body);
  }
  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.gets.push({ key, range });
    if (this.getDelayMs > 0) await sleep(this.getDelayMs);
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

interface Written {
  data: Buffer;
  loc: ChunkLocation;
}

function chunkData(size: number, compressible: boolean): Buffer {
  if (!compressible) return randomBytes(size);
  return Buffer.from(`frame ${randomInt(1000)} of shot 12, take 3; `.repeat(Math.ceil(size / 20) + 1)).subarray(0, size);
}

/** Packs `sizes` (one flush, so one pack while below target) and returns the chunks' locations in pack order. */
async function writeChunks(
  backend: BlobBackend,
  keys: RepositoryKeys,
  sizes: number[],
  compressible = false,
  targetSize?: number,
  compressibleAt: (i: number) => boolean = () => randomInt(3) > 0,
): Promise<Written[]> {
  const commits: PackCommit[] = [];
  const packer = new Packer(backend, keys, async (c) => void commits.push(c), targetSize === undefined ? {} : { targetSize });
  const data = new Map<string, Buffer>();
  for (const [i, size] of sizes.entries()) {
    const d = chunkData(size, compressible && compressibleAt(i));
    const c = compressChunk(d);
    const id = randomBytes(32);
    data.set(id.toString("hex"), d);
    await packer.add({ chunkId: id, method: c.method, rawLength: size, stored: c.bytes });
  }
  await packer.close();
  const out: Written[] = [];
  for (const commit of commits) {
    for (const [id, r] of commit.chunks) {
      out.push({
        data: data.get(id.toString("hex"))!,
        loc: { chunkId: id, packId: r.packId, blobKey: commit.pack.blobKey, offset: r.offset, storedLength: r.storedLength, rawLength: r.rawLength, method: r.method },
      });
    }
  }
  assert.equal(out.length, sizes.length);
  return out;
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of gen) out.push(b);
  return out;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match((err as Error).message, message);
    return true;
  });
}

test("round trip of random chunk sets through Packer and PackReader (0-byte, compressed, stored, many sizes)", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const sizes = [0, 1, 2, 100, 1000, 4095, 4096, 65_536, 200_000, 0];
  for (let i = 0; i < 60; i++) sizes.push(randomInt(0, 30_000));
  const written = await writeChunks(backend, keys, sizes, true, 64 * 1024);
  assert.ok(written.some((w) => w.loc.method === 1) && written.some((w) => w.loc.method === 0));
  assert.ok(new Set(written.map((w) => w.loc.packId)).size > 1, "several packs");
  // Shuffled order, as a manifest referencing chunks of several packs would be.
  const shuffled = [...written].sort(() => randomInt(3) - 1);
  const reader = new PackReader(backend, keys, { cacheBytes: 0 });
  const got = await collect(reader.read(shuffled.map((w) => w.loc)));
  assert.equal(got.length, shuffled.length);
  got.forEach((b, i) => assert.ok(b.equals(shuffled[i]!.data), `chunk ${i}`));
  for (const w of written.slice(0, 5)) assert.ok((await reader.readOne(w.loc)).equals(w.data));
  // From an async iterable, too.
  async function* gen() {
    for (const w of written) {
      await sleep(0);
      yield w.loc;
    }
  }
  const got2 = await collect(new PackReader(backend, keys).read(gen()));
  got2.forEach((b, i) => assert.ok(b.equals(written[i]!.data)));
  assert.deepEqual(await collect(reader.read([])), []);
});

test("adjacent chunks of one pack are one GET, or ceil(total / maxRequestBytes) GETs", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const size = 4096 - SEALED_OVERHEAD; // sealed records of exactly 4 KiB
  const written = await writeChunks(backend, keys, Array.from({ length: 64 }, () => size));
  const locs = written.map((w) => w.loc);
  assert.ok(locs.every((l) => l.storedLength === 4096));

  let reader = new PackReader(backend, keys);
  backend.gets = [];
  let got = await collect(reader.read(locs));
  assert.equal(backend.gets.length, 1);
  assert.deepEqual(backend.gets[0]!.range, { offset: 0, length: 64 * 4096 });
  got.forEach((b, i) => assert.ok(b.equals(written[i]!.data)));
  assert.deepEqual(reader.stats(), { requests: 1, bytesFetched: 64 * 4096, cacheHits: 0, cacheMisses: 64, recycledReads: 0 });

  reader = new PackReader(backend, keys, { maxRequestBytes: 64 * 1024 });
  backend.gets = [];
  got = await collect(reader.read(locs));
  assert.equal(backend.gets.length, Math.ceil((64 * 4096) / (64 * 1024)));
  assert.ok(backend.gets.every((g) => g.range!.length <= 64 * 1024));
  got.forEach((b, i) => assert.ok(b.equals(written[i]!.data)));

  // Every other chunk: nothing is adjacent, one GET each. In reverse order: likewise.
  reader = new PackReader(backend, keys, { cacheBytes: 0 });
  backend.gets = [];
  await collect(reader.read(locs.filter((_, i) => i % 2 === 0)));
  assert.equal(backend.gets.length, 32);
  backend.gets = [];
  await collect(reader.read([...locs].reverse()));
  assert.equal(backend.gets.length, 64);

  // Two packs back to back in the list: one GET per pack.
  const other = await writeChunks(backend, keys, [100, 200, 300]);
  backend.gets = [];
  const mixed = [...locs.slice(0, 10), ...other.map((w) => w.loc)];
  got = await collect(reader.read(mixed));
  assert.equal(backend.gets.length, 2);
  got.forEach((b, i) => assert.ok(b.equals([...written.slice(0, 10), ...other][i]!.data)));
});

test("cached chunks are not fetched; a repeated chunk is fetched once; the cache stays within its byte bound", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const written = await writeChunks(backend, keys, Array.from({ length: 40 }, () => randomInt(1000, 30_000)));
  const locs = written.map((w) => w.loc);
  const reader = new PackReader(backend, keys, { cacheBytes: 2 * 1024 * 1024 });
  await collect(reader.read(locs));
  assert.equal(backend.gets.length, 1);
  backend.gets = [];
  const again = await collect(reader.read(locs));
  assert.equal(backend.gets.length, 0, "all from the cache");
  again.forEach((b, i) => assert.ok(b.equals(written[i]!.data)));
  assert.equal(reader.stats().cacheHits, 40);
  // A cached chunk in the middle of a run splits it rather than being fetched again.
  const fresh = new PackReader(backend, keys);
  await fresh.readOne(locs[5]!);
  backend.gets = [];
  await collect(fresh.read(locs.slice(0, 10)));
  assert.equal(backend.gets.length, 2);
  assert.ok(backend.gets.every((g) => !(g.range!.offset <= locs[5]!.offset && g.range!.offset + g.range!.length > locs[5]!.offset)));

  // Repeats with the cache disabled: served from the one queued fetch (while it is still queued).
  const nocache = new PackReader(backend, keys, { cacheBytes: 0 });
  backend.gets = [];
  const reps = [locs[3]!, locs[3]!, locs[3]!, locs[4]!, locs[4]!];
  const got = await collect(nocache.read(reps));
  got.forEach((b, i) => assert.ok(b.equals(reps[i] === locs[3] ? written[3]!.data : written[4]!.data)));
  assert.equal(backend.gets.length, 2);

  // Byte bound: 1 MiB of chunks through a 100 KiB cache.
  const small = new PackReader(backend, keys, { cacheBytes: 100 * 1024 });
  let max = 0;
  for await (const _ of small.read(locs)) max = Math.max(max, small.cachedBytes);
  assert.ok(max <= 100 * 1024 && max > 50 * 1024, `cache held ${max} bytes`);
});

test("concurrent reads share the fetch of a chunk (the mount's overlapping readahead requests)", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting(5);
  const written = await writeChunks(backend, keys, Array.from({ length: 24 }, () => randomInt(1000, 20_000)));
  // Every other chunk, so that each is its own GET; no cache: only the fetches under way are shared.
  const locs = written.map((w) => w.loc).filter((_, i) => i % 2 === 0);
  const reader = new PackReader(backend, keys, { cacheBytes: 0, readAhead: 8 });
  backend.gets = [];
  // Windows overlapping by half, all at once, as kernel readahead sends them; plus single reads.
  const windows = [0, 2, 4, 6, 8].map((i) => locs.slice(i, i + 4));
  const results = await Promise.all([...windows.map((w) => collect(reader.read(w))), ...locs.slice(0, 6).map((l) => reader.readOne(l))]);
  windows.forEach((w, k) => results[k]!.forEach((b, i) => assert.ok((b as Buffer).equals(written[locs.indexOf(w[i]!) * 2]!.data), `window ${k} chunk ${i}`)));
  locs.slice(0, 6).forEach((_, i) => assert.ok((results[windows.length + i] as Buffer).equals(written[i * 2]!.data), `readOne ${i}`));
  assert.equal(backend.gets.length, locs.length, `${backend.gets.length} GETs for ${locs.length} distinct chunks`);
  // Once settled nothing is shared any more: with no cache, a new read fetches again.
  backend.gets = [];
  await collect(reader.read(locs.slice(0, 2)));
  assert.equal(backend.gets.length, 2);
  // A failed shared fetch fails every read that shares it (each retries it once itself).
  const broken = new PackReader(
    { ...backend, location: "broken:", get: async () => { await sleep(5); throw new Error("disk on fire"); } } as unknown as BlobBackend,
    keys,
    { cacheBytes: 0 },
  );
  const failures = await Promise.allSettled([collect(broken.read(locs.slice(0, 2))), collect(broken.read(locs.slice(1, 3))), broken.readOne(locs[1]!)]);
  assert.ok(failures.every((f) => f.status === "rejected"), "every sharer sees the failure");
});

test("a slow consumer does not cause unbounded fetching: at most readAhead requests ahead", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting(1);
  const written = await writeChunks(backend, keys, Array.from({ length: 40 }, () => 500));
  // Every other chunk: each is its own request.
  const locs = written.map((w) => w.loc).filter((_, i) => i % 2 === 0);
  for (const readAhead of [0, 1, 3]) {
    const reader = new PackReader(backend, keys, { readAhead });
    backend.gets = [];
    let consumed = 0;
    for await (const b of reader.read(locs)) {
      assert.ok(b.equals(written[consumed * 2]!.data));
      consumed++;
      if (consumed % 5 === 0) {
        await sleep(15); // paused: nothing more may be fetched
        assert.ok(backend.gets.length <= consumed + readAhead, `readAhead ${readAhead}: ${backend.gets.length} GETs after ${consumed} chunks`);
      }
      assert.ok(backend.gets.length <= consumed + readAhead);
    }
    assert.equal(backend.gets.length, locs.length);
  }
  // Abandoning the generator stops it.
  const reader = new PackReader(backend, keys, { readAhead: 2 });
  backend.gets = [];
  for await (const _ of reader.read(locs)) break;
  await sleep(10);
  assert.ok(backend.gets.length <= 3);
});

test("a damaged record fails with STOWAGE_INTEGRITY naming pack, chunk and offset; the chunks before it are intact", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const written = await writeChunks(backend, keys, [1000, 2000, 3000, 4000], true);
  const locs = written.map((w) => w.loc);
  const blob = backend.inner.rawForTesting(locs[0]!.blobKey)!;
  for (const target of [1, 2]) {
    for (const where of [0, 13, Math.floor(locs[target]!.storedLength / 2), locs[target]!.storedLength - 1]) {
      const pos = locs[target]!.offset + where;
      blob[pos]! ^= 0x40;
      const reader = new PackReader(backend, keys);
      const got: Buffer[] = [];
      await rejectsWith(
        (async () => {
          for await (const b of reader.read(locs)) got.push(b);
        })(),
        "STOWAGE_INTEGRITY",
        new RegExp(`${locs[0]!.packId}.*${locs[target]!.chunkId.toString("hex")}.*offset ${locs[target]!.offset}`),
      );
      assert.equal(got.length, target);
      got.forEach((b, i) => assert.ok(b.equals(written[i]!.data)));
      await rejectsWith(reader.readOne(locs[target]!), "STOWAGE_INTEGRITY");
      blob[pos]! ^= 0x40;
    }
  }
  // A location claiming another id, method or kind, or a wrong key.
  const reader = new PackReader(backend, keys, { cacheBytes: 0 });
  await rejectsWith(reader.readOne({ ...locs[0]!, chunkId: randomBytes(32) }), "STOWAGE_INTEGRITY");
  await rejectsWith(reader.readOne({ ...locs[0]!, kind: RECORD_KIND_METADATA }), "STOWAGE_INTEGRITY");
  await rejectsWith(reader.readOne({ ...locs[0]!, offset: locs[0]!.offset + 1 }), "STOWAGE_INTEGRITY");
  await rejectsWith(new PackReader(backend, RepositoryKeys.generate()).readOne(locs[0]!), "STOWAGE_INTEGRITY");
  // A truncated pack: the records past the cut fail, the ones before it read.
  await backend.put(locs[0]!.blobKey, blob.subarray(0, locs[2]!.offset + 10));
  const got: Buffer[] = [];
  await rejectsWith(
    (async () => {
      for await (const b of reader.read(locs)) got.push(b);
    })(),
    "STOWAGE_INTEGRITY",
    /truncated/,
  );
  assert.equal(got.length, 2);
});

test("compressed records opened in the encoder's worker: the same plaintext, and the same errors, as opened inline", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  // Large records (worker), small ones (inline), compressible and not.
  const sizes = [70_000, 300_000, 1000, 1_200_000, 65_536, 20, 500_000];
  const written = await writeChunks(backend, keys, sizes, true, undefined, (i) => i !== 1);
  const locs = written.map((w) => w.loc);
  const encoder = new RecordEncoder(keys, { threads: 1 });
  try {
    const reader = new PackReader(backend, keys, { cacheBytes: 0, open: (e, b, p) => encoder.openRecord(e, b, p) });
    const got = await collect(reader.read(locs));
    got.forEach((b, i) => assert.ok(b.equals(written[i]!.data), `chunk ${i}`));
    // 70,000, 1,200,000, 65,536 and 500,000 bytes of text; 300,000 random bytes are stored raw.
    assert.equal(written[1]!.loc.method, 0);
    assert.equal(encoder.workerOpens, 4, "every compressed record of 64 KiB or more was opened in the worker, no other");
    // A damaged large record: the error is openRecord's, naming pack, chunk and offset.
    const target = 3;
    const blob = backend.inner.rawForTesting(locs[target]!.blobKey)!;
    const pos = locs[target]!.offset + Math.floor(locs[target]!.storedLength / 2);
    blob[pos]! ^= 0x01;
    const seen: Buffer[] = [];
    await rejectsWith(
      (async () => {
        for await (const b of reader.read(locs)) seen.push(b);
      })(),
      "STOWAGE_INTEGRITY",
      new RegExp(`${locs[target]!.packId}.*${locs[target]!.chunkId.toString("hex")}.*offset ${locs[target]!.offset}`),
    );
    assert.equal(seen.length, target);
    blob[pos]! ^= 0x01;
    // A closed encoder opens inline.
    await encoder.close();
    const before = encoder.workerOpens;
    assert.ok((await reader.readOne(locs[1]!)).equals(written[1]!.data));
    assert.equal(encoder.workerOpens, before);
  } finally {
    await encoder.close();
  }
});

test("a missing pack is STOWAGE_BACKEND_NOT_FOUND naming the pack", async () => {
  const keys = RepositoryKeys.generate();
  const packId = newPackId();
  const loc: ChunkLocation = { chunkId: randomBytes(32), packId, blobKey: packBlobKey(packId), offset: 0, storedLength: 100, rawLength: 71, method: 0 };
  const reader = new PackReader(new MemoryBackend(), keys);
  await rejectsWith(reader.readOne(loc), "STOWAGE_BACKEND_NOT_FOUND", new RegExp(packId));
  await rejectsWith(collect(reader.read([loc])), "STOWAGE_BACKEND_NOT_FOUND", new RegExp(packId));
  await rejectsWith(collect(reader.read([{ ...loc, storedLength: 3 }])), "STOWAGE_INVALID_ARGUMENT");
});

test("large requests read into recycled buffers: an open that is slow to read its bytes still gets its own", async () => {
  const root = mkdtempSync(join(tmpdir(), "stowage-reader-"));
  const backend = await LocalBackend.open(join(root, "bucket"));
  try {
    const keys = RepositoryKeys.generate();
    // 90 chunks of 150-400 KB in packs of ~3 MB; requests of up to 1.5 MiB, so most are recycled
    // (1 MiB or more) and they outnumber the recycled buffers many times over.
    const sizes = Array.from({ length: 90 }, () => randomInt(150_000, 400_000));
    const written = await writeChunks(backend, keys, sizes, true, 3_000_000, (i) => i % 4 === 0);
    const byId = new Map(written.map((w) => [w.loc.chunkId.toString("hex"), w.data]));
    // Opens wait a random while before they read the sealed bytes (as a busy worker would): a
    // buffer recycled before its records are opened would hand them another request's bytes.
    const open = async (entry: Parameters<typeof openRecord>[1], sealed: Uint8Array, packId: string): Promise<Buffer> => {
      await sleep(randomInt(0, 4));
      return openRecord(keys, entry, sealed, packId);
    };
    const reader = new PackReader(backend, keys, { cacheBytes: 0, maxRequestBytes: 1536 * 1024, readAhead: 3, open });
    // In pack order the requests are runs of several chunks (1 MiB or more: recycled); reversed or
    // shuffled, single chunks (new buffers): both kinds at once.
    const orders = [written, written, [...written].reverse(), [...written].sort(() => randomInt(3) - 1)];
    await Promise.all(
      orders.map(async (order) => {
        const got = await collect(reader.read(order.map((w) => w.loc)));
        assert.equal(got.length, order.length);
        got.forEach((b, i) => assert.ok(b.equals(byId.get(order[i]!.loc.chunkId.toString("hex"))!), `chunk ${i}`));
      }),
    );
    // At most MAX_RECYCLED (3) buffers are ever made: more recycled reads than that means reuse.
    const mid = reader.stats().recycledReads;
    const seq = await collect(reader.read(written.map((w) => w.loc)));
    seq.forEach((b, i) => assert.ok(b.equals(written[i]!.data), `chunk ${i}`));
    const st = reader.stats();
    assert.ok(mid >= 1 && st.recycledReads - mid >= 4, `recycled reads: ${mid} concurrently, then ${st.recycledReads - mid} of ${st.requests}`);
    // A consumer that stops early: the buffers of requests under way come back all the same.
    for (let round = 0; round < 3; round++) {
      for await (const b of reader.read(written.map((w) => w.loc))) {
        assert.ok(b.equals(written[0]!.data));
        break;
      }
    }
    const before = reader.stats().recycledReads;
    const again = await collect(reader.read(written.map((w) => w.loc)));
    again.forEach((b, i) => assert.ok(b.equals(written[i]!.data), `chunk ${i} after early stops`));
    assert.ok(reader.stats().recycledReads > before, "buffers still recycled after early stops");
  } finally {
    await backend.close();
    rmSync(root, { recursive: true, force: true });
  }
});
