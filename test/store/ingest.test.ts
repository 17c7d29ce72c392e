/**
 * The write path's MD5 (the S3 ETag): fed chunk by chunk in stream order, riding in the same worker
 * message as the chunk when both go to the encoder's worker, fed on its own otherwise (dedup hits,
 * small chunks, a chunk that had to wait for admission). Whatever the mix, it must equal the MD5 of
 * the bytes given.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ChunkIdHasher } from "../../src/codec/chunk-id.js";
import { ChunkerParams, chunkBoundaries } from "../../src/codec/chunker.js";
import { RecordEncoder } from "../../src/pack/encoder.js";
import { ingest } from "../../src/store/ingest.js";
import { bytes, makeStore, pieces } from "./helpers.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

/** 9 MiB from 1 MiB blocks, some repeated (dedup hits inside the stream), and a short tail. */
function mixedData(seed: number): Buffer {
  const a = bytes(MiB, seed);
  const b = bytes(MiB, seed + 1);
  const blocks = [a, bytes(MiB, seed + 2), b, a, bytes(MiB, seed + 3), b, a, bytes(MiB, seed + 4), bytes(MiB - 777, seed + 5)];
  return Buffer.concat(blocks);
}

const CHUNKS = { minSize: 16 * KiB, avgSize: 64 * KiB, maxSize: 256 * KiB };

test("a stream's MD5 is exact whether chunks carry it to the worker, feed it alone, or are dedup hits", async () => {
  const t = await makeStore({ chunker: CHUNKS, encoderThreads: 1, packTargetSize: 4 * MiB });
  try {
    await t.store.createBucket("bkt");
    const data = mixedData(11);
    const ridesBefore = t.store.encoder.digestRides;
    const givenBefore = t.store.encoder.givenBuffers;
    // No size given: the MD5 runs in the worker, and new chunks of 64 KiB or more carry it there.
    // The pieces are views of `data`: chunks inside one piece are views too (copied to the
    // worker), chunks across pieces are the chunker's own buffers (transferred). Were a view
    // transferred, `data` itself would be detached and the MD5 below would be of nothing.
    const first = await t.store.putObject("bkt", "first", pieces(data, 100_003));
    assert.equal(data.length, 9 * MiB - 777);
    assert.equal(first.etag, md5(data));
    const rides = t.store.encoder.digestRides - ridesBefore;
    assert.ok(rides > 10, `only ${rides} chunks carried the MD5`);
    assert.ok(t.store.encoder.givenBuffers - givenBefore > 10, "chunks assembled by the chunker were transferred, not copied");
    // Every chunk is indexed now: all dedup hits, none carries it.
    const again = await t.store.putObject("bkt", "again", pieces(data, 65_537));
    assert.equal(again.etag, md5(data));
    assert.equal(t.store.encoder.digestRides - ridesBefore, rides);
    const got: Buffer[] = [];
    for await (const c of (await t.store.getObject("bkt", "again")).body) got.push(Buffer.from(c));
    const back = Buffer.concat(got);
    assert.ok(back.equals(data));
  } finally {
    await t.close();
  }
});

test("the MD5 stays in stream order when encodes wait for admission (1 byte in flight) between dedup hits", async () => {
  const t = await makeStore({ chunker: CHUNKS });
  const encoder = new RecordEncoder(t.keys, { threads: 1, maxInFlightBytes: 1 });
  try {
    const ctx = {
      params: new ChunkerParams({ ...CHUNKS, key: t.keys.subkey("chunker-gear") }),
      hasher: new ChunkIdHasher(t.keys),
      packer: t.store.packer,
      encoder,
      meta: t.meta,
    };
    let workerChunks = 0;
    for (const seed of [21, 22]) {
      const data = mixedData(seed);
      const r = await ingest(ctx, pieces(data, 7001 * seed));
      assert.equal(r.md5.toString("hex"), md5(data), `seed ${seed}`);
      assert.equal(r.size, data.length);
      workerChunks += r.newChunks;
    }
    // A chunk rides only when nothing else is being encoded; most wait and feed the MD5 alone.
    assert.ok(encoder.digestRides < workerChunks / 2, `${encoder.digestRides} rides of ${workerChunks} new chunks`);
  } finally {
    await encoder.close();
    await t.close();
  }
});

test("a caller's buffer that is exactly one chunk, spanning its whole ArrayBuffer, is copied to the worker, never taken", async () => {
  // Chunks of 64 KiB or more, so every new chunk goes to the worker.
  const big = { minSize: 64 * KiB, avgSize: 128 * KiB, maxSize: 512 * KiB };
  const t = await makeStore({ chunker: big, encoderThreads: 1, packTargetSize: 4 * MiB });
  try {
    await t.store.createBucket("bkt");
    const data = bytes(2 * MiB, 21);
    const first = chunkBoundaries(data, new ChunkerParams({ ...big, key: t.keys.subkey("chunker-gear") }))[0]!;
    // The first chunk's bytes in a buffer of their own: the chunker cuts at its very end, so it
    // hands out a view of the whole buffer, which looks transferable but is the caller's.
    const whole = Buffer.from(new ArrayBuffer(first));
    data.copy(whole, 0, 0, first);
    const r = await t.store.putObject("bkt", "k", [whole, data.subarray(first)]);
    assert.equal(whole.length, first, "the caller's buffer was detached");
    assert.ok(whole.equals(data.subarray(0, first)));
    assert.equal(r.etag, md5(data));
    const got: Buffer[] = [];
    for await (const c of (await t.store.getObject("bkt", "k")).body) got.push(Buffer.from(c));
    assert.ok(Buffer.concat(got).equals(data));
  } finally {
    await t.close();
  }
});
