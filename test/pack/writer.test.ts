import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { isStowageError, StowageError, type ErrorCode } from "../../src/errors.js";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { SEALED_OVERHEAD } from "../../src/codec/aead.js";
import { compressChunk } from "../../src/codec/compress.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";
import { openRecord, packBlobKey, readPackIndex, RECORD_KIND_METADATA } from "../../src/pack/format.js";
import { Packer, type PackCommit, type PackedChunk } from "../../src/pack/writer.js";

/** A MemoryBackend whose puts go through an optional hook (delay, gate, failure) and are counted. */
class HookedBackend implements BlobBackend {
  readonly location = "hooked:";
  readonly inner = new MemoryBackend();
  puts: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  onPut: ((key: string, n: number) => Promise<void>) | undefined;
  constructor(onPut?: (key: string, n: number) => Promise<void>) {
    this.onPut = onPut;
  }
  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const n = this.puts.length;
    this.puts.push(key);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.onPut !== undefined) await this.onPut(key, n);
      await this.inner.put(key, body);
    } finally {
      this.inFlight--;
    }
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
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

interface Gate {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A promise with its resolvers. */
function deferred(): Gate {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function rawChunk(size: number): PackedChunk & { data: Buffer } {
  const data = randomBytes(size);
  return { chunkId: randomBytes(32), method: 0, rawLength: size, stored: data, data };
}

function textChunk(size: number): PackedChunk & { data: Buffer } {
  const data = Buffer.from("the same sidecar line, again and again\n".repeat(Math.ceil(size / 39) + 1)).subarray(0, size);
  const c = compressChunk(data);
  return { chunkId: randomBytes(32), method: c.method, rawLength: size, stored: c.bytes, data };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

/** Records commits. */
function recorder(): { commits: PackCommit[]; onUploaded: (c: PackCommit) => Promise<void> } {
  const commits: PackCommit[] = [];
  return { commits, onUploaded: async (c) => void commits.push(c) };
}

test("flush uploads one pack; the index rebuilt from the pack alone equals what the commit reported", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend();
  const { commits, onUploaded } = recorder();
  const packer = new Packer(backend, keys, onUploaded);
  const chunks = [rawChunk(0), textChunk(5000), rawChunk(1), rawChunk(70_000), textChunk(300)];
  const meta = { ...rawChunk(123), kind: RECORD_KIND_METADATA } as const;
  for (const c of chunks) await packer.add(c);
  await packer.add(meta);
  assert.ok(packer.pending(chunks[0]!.chunkId));
  assert.ok(packer.pending(meta.chunkId, RECORD_KIND_METADATA));
  assert.ok(!packer.pending(meta.chunkId));
  await packer.flush();
  assert.ok(!packer.pending(chunks[0]!.chunkId));
  assert.equal(commits.length, 1);
  const commit = commits[0]!;
  const blob = backend.inner.rawForTesting(commit.pack.blobKey)!;
  assert.equal(commit.pack.blobKey, packBlobKey(commit.pack.id));
  assert.equal(commit.pack.size, blob.length);
  assert.equal(commit.pack.entries, 6);
  assert.equal(commit.pack.state, "live");
  assert.ok(Math.abs(commit.pack.created - Date.now()) < 5000);
  assert.equal(commit.chunks.length, 5);
  assert.equal(commit.metadataRecords.length, 1);
  assert.ok(textChunk(5000).method === 1, "compressible chunks are compressed");

  const index = await readPackIndex(backend, keys, commit.pack.blobKey);
  assert.equal(index.size, commit.pack.size);
  const rebuilt = index.entries.map((e) => [e.kind, e.id.toString("hex"), e.offset, e.storedLength, e.rawLength, e.method]);
  const reported = [
    ...commit.chunks.map(([id, r]) => [1, id.toString("hex"), r.offset, r.storedLength, r.rawLength, r.method]),
    ...commit.metadataRecords.map(([id, r]) => [2, id.toString("hex"), r.offset, r.storedLength, r.rawLength, r.method]),
  ].sort((a, b) => (a[2] as number) - (b[2] as number));
  assert.deepEqual(rebuilt, reported);
  for (const [, r] of [...commit.chunks, ...commit.metadataRecords]) {
    assert.equal(r.packId, commit.pack.id);
    assert.equal(r.refs, 0);
  }
  // And the records hold the plaintext.
  const all = [...chunks, meta];
  for (const e of index.entries) {
    const c = all.find((x) => Buffer.from(x.chunkId).equals(e.id))!;
    assert.ok(openRecord(keys, e, blob.subarray(e.offset, e.offset + e.storedLength), index.packId).equals(c.data));
  }
  const s = packer.stats();
  assert.deepEqual(s, { packsUploaded: 1, bytesUploaded: blob.length, chunksPacked: 6, pendingBytes: 0 });
  await packer.flush(); // nothing pending: resolves at once, no empty pack
  assert.equal(backend.puts.length, 1);
});

test("group commit: 64 concurrent writers adding a few chunks each then flushing share a few packs", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend(() => sleep(5));
  const { commits, onUploaded } = recorder();
  const packer = new Packer(backend, keys, onUploaded);
  const writers = 64;
  const ids: Buffer[][] = [];
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      await sleep(randomInt(0, 20));
      ids[w] = [];
      for (let i = 0; i < 3; i++) {
        const c = rawChunk(randomInt(10, 2000));
        ids[w]!.push(c.chunkId as Buffer);
        await packer.add(c);
      }
      await packer.flush();
      for (const id of ids[w]!) assert.ok(!packer.pending(id), "flush resolved before the chunk was committed");
    }),
  );
  const committed = new Set(commits.flatMap((c) => c.chunks.map(([id]) => id.toString("hex"))));
  assert.equal(committed.size, writers * 3);
  assert.ok(backend.maxInFlight <= 2);
  assert.ok(commits.length <= writers / 4, `${commits.length} packs for ${writers} writers`);
  // Packs per flush, for the report.
  console.log(`group commit: ${writers} writers -> ${commits.length} packs`);
});

test("commitDelayMs lets a later writer join the pack a flush is waiting on", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend();
  const { commits, onUploaded } = recorder();
  const packer = new Packer(backend, keys, onUploaded, { commitDelayMs: 40 });
  const second = packer.beginWriter(); // a writer still streaming when the first flushes
  await packer.add(rawChunk(100));
  const f1 = packer.flush();
  await sleep(10);
  await packer.add(rawChunk(100));
  second();
  const f2 = packer.flush();
  await Promise.all([f1, f2]);
  assert.equal(commits.length, 1);
  assert.equal(commits[0]!.chunks.length, 2);
});

test("commitDelayMs does not delay a lone writer's flush", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend();
  const { commits, onUploaded } = recorder();
  const packer = new Packer(backend, keys, onUploaded, { commitDelayMs: 30_000 });
  const ended = packer.beginWriter();
  await packer.add(rawChunk(100));
  ended();
  const started = Date.now();
  await packer.flush();
  assert.ok(Date.now() - started < 5_000, "no writer was streaming: the flush went at once");
  assert.equal(commits.length, 1);
});

test("under contention a pack goes once as many writers wait on it as the commit delay once gathered", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend();
  const { commits, onUploaded } = recorder();
  const delay = 400;
  const packer = new Packer(backend, keys, onUploaded, { commitDelayMs: delay });
  /** `n` writers that stream at once (contention), then each flush: a closed loop's round. */
  const round = async (n: number): Promise<{ ms: number; packs: number }> => {
    const before = commits.length;
    const ends = Array.from({ length: n }, () => packer.beginWriter());
    const started = Date.now();
    await Promise.all(
      ends.map(async (end) => {
        await packer.add(rawChunk(100));
        end();
        await packer.flush();
      }),
    );
    return { ms: Date.now() - started, packs: commits.length - before };
  };
  // The first round knows nothing: it waits out the delay, and learns that 8 writers come.
  const first = await round(8);
  assert.ok(first.ms >= delay - 20, `first round ${first.ms} ms`);
  assert.equal(first.packs, 1);
  // The next rounds go as soon as the 8th writer flushes: one pack each, no waiting.
  for (let i = 0; i < 3; i++) {
    const r = await round(8);
    assert.equal(r.packs, 1);
    assert.ok(r.ms < delay / 2, `round ${i + 2}: ${r.ms} ms, expected no commit delay`);
  }
  // Fewer writers: the delay runs out again (nothing is lost, only waited for), once per missing writer.
  const fewer = await round(6);
  assert.equal(fewer.packs, 1);
  assert.ok(fewer.ms >= delay - 20, `fewer writers: ${fewer.ms} ms`);
  // More writers than expected: the pack goes at the expected count, the rest ride the next one.
  const more = await round(12);
  assert.ok(more.packs >= 1 && more.packs <= 2, `${more.packs} packs`);
  const chunks = commits.reduce((n, c) => n + c.chunks.length, 0);
  assert.equal(chunks, 8 * 4 + 6 + 12);
});

test("targetSize: packs close as soon as they reach it and exceed it by less than one record", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend();
  const { commits, onUploaded } = recorder();
  const target = 64 * 1024;
  const packer = new Packer(backend, keys, onUploaded, { targetSize: target, maxUploads: 2 });
  let total = 0;
  while (total < 2 * 1024 * 1024) {
    const c = rawChunk(randomInt(0, 9000));
    total += c.rawLength;
    await packer.add(c);
  }
  await packer.flush();
  assert.ok(commits.length >= 2 * 1024 * 1024 / (target + 9000 + 1000));
  const last = commits.at(-1);
  for (const c of commits) {
    const lastRecord = c.chunks.at(-1)![1];
    // Without its last record the pack was below target; with it, at or above (except the flushed tail).
    assert.ok(c.pack.size - lastRecord.storedLength - 46 < target, `pack of ${c.pack.size} bytes`);
    assert.ok(c.pack.size < target + 9000 + SEALED_OVERHEAD + 46);
    if (c !== last && c.pack.size < target) {
      // Only the final, flushed pack may be short.
      assert.fail(`pack of ${c.pack.size} bytes closed below target`);
    }
  }
  const sizes = commits.map((c) => c.pack.size);
  console.log(`targetSize 64 KiB: ${commits.length} packs, sizes ${Math.min(...sizes)}–${Math.max(...sizes)}`);
});

test("backpressure: with a slow backend, add blocks once the open pack and maxUploads uploads are full", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new HookedBackend(() => sleep(25));
  const { commits, onUploaded } = recorder();
  const target = 32 * 1024;
  const chunk = 4096;
  const packer = new Packer(backend, keys, onUploaded, { targetSize: target, maxUploads: 2 });
  let maxPending = 0;
  let slowAdds = 0;
  for (let i = 0; i < 150; i++) {
    const t0 = performance.now();
    await packer.add(rawChunk(chunk));
    if (performance.now() - t0 > 10) slowAdds++;
    maxPending = Math.max(maxPending, packer.stats().pendingBytes);
  }
  await packer.flush();
  const bound = 3 * (target + chunk + SEALED_OVERHEAD);
  assert.ok(maxPending <= bound, `pendingBytes reached ${maxPending}, bound ${bound}`);
  assert.ok(maxPending > target, "the slow backend did hold packs in memory");
  assert.ok(slowAdds > 5, `adds that waited: ${slowAdds}`);
  assert.ok(backend.maxInFlight <= 2);
  assert.equal(commits.reduce((n, c) => n + c.chunks.length, 0), 150);
  console.log(`backpressure: max pendingBytes ${maxPending} (bound ${bound}), ${slowAdds} adds waited, ${commits.length} packs`);
});

test("an upload failure rejects exactly the flushes covering the failed pack; later flushes succeed", async () => {
  const keys = RepositoryKeys.generate();
  const gates: Gate[] = [];
  const backend = new HookedBackend(async (_key, n) => {
    gates[n] = deferred();
    await gates[n]!.promise;
  });
  const { commits, onUploaded } = recorder();
  const packer = new Packer(backend, keys, onUploaded, { maxUploads: 1 });
  const a = rawChunk(100);
  await packer.add(a);
  const fA = packer.flush();
  const fAOutcome = fA.then(
    () => "ok",
    (e: unknown) => e,
  );
  while (gates[0] === undefined) await sleep(1);
  // Pack 1 is uploading. b joins the open pack (no slot free); flush fX covers pack 1 and b.
  const b = rawChunk(100);
  await packer.add(b);
  const fX = packer.flush().then(
    () => "ok",
    (e: unknown) => e,
  );
  assert.ok(packer.pending(a.chunkId) && packer.pending(b.chunkId));
  const boom = new StowageError("STOWAGE_BACKEND_IO", "injected put failure");
  gates[0]!.reject(boom);
  assert.equal(await fAOutcome, boom);
  assert.equal(await fX, boom);
  assert.ok(!packer.pending(a.chunkId), "a failed chunk is no longer pending");
  assert.ok(packer.pending(b.chunkId));
  // b's pack uploads now; a flush issued after the failure covers only it.
  while (gates[1] === undefined) await sleep(1);
  const fB = packer.flush();
  gates[1]!.resolve();
  await fB;
  assert.equal(commits.length, 1);
  assert.deepEqual(
    commits[0]!.chunks.map(([id]) => id.toString("hex")),
    [Buffer.from(b.chunkId).toString("hex")],
  );
  // The failed chunk can be added again.
  await packer.add(a);
  const fA2 = packer.flush();
  while (gates[2] === undefined) await sleep(1);
  gates[2]!.resolve();
  await fA2;
  assert.equal(commits.length, 2);
  assert.deepEqual(packer.stats().pendingBytes, 0);
});

test("pending() lasts until the commit resolved; a pending id is added once; commits run in upload-finish order", async () => {
  const keys = RepositoryKeys.generate();
  const gates: Gate[] = [];
  const backend = new HookedBackend(async (_key, n) => {
    gates[n] = deferred();
    await gates[n]!.promise;
  });
  const commitGate = deferred();
  const order: string[] = [];
  const packer = new Packer(
    backend,
    keys,
    async (c) => {
      order.push(c.pack.id);
      if (order.length === 1) await commitGate.promise;
    },
    // Packs this small are full at their first record: full packs upload at once (flushed, not
    // full ones wait for the upload in flight), so the two uploads overlap.
    { maxUploads: 2, targetSize: 150 },
  );
  const a = rawChunk(50);
  await packer.add(a);
  await packer.add({ ...a, stored: Buffer.from(a.stored!) }); // same id, pending: no-op
  const f1 = packer.flush();
  while (gates[0] === undefined) await sleep(1);
  await packer.add(a); // in flight: still a no-op
  const b = rawChunk(60);
  await packer.add(b);
  const f2 = packer.flush();
  while (gates[1] === undefined) await sleep(1);
  assert.equal(backend.puts.length, 2);
  // The second upload finishes first: its commit comes first.
  gates[1]!.resolve();
  while (order.length < 1) await sleep(1);
  gates[0]!.resolve();
  await sleep(5);
  assert.equal(order.length, 1, "commits are serialized");
  assert.ok(packer.pending(a.chunkId), "pending while its commit has not run");
  assert.ok(packer.pending(b.chunkId), "pending while its commit has not resolved");
  commitGate.resolve();
  await Promise.all([f1, f2]);
  assert.equal(order.length, 2);
  assert.equal(order[0], backend.puts[1]!.split("/").at(-1));
  assert.equal(order[1], backend.puts[0]!.split("/").at(-1));
  assert.ok(!packer.pending(a.chunkId) && !packer.pending(b.chunkId));
  assert.equal(packer.stats().chunksPacked, 2, "the duplicate adds packed nothing");
});

test("group commit: flushes arriving while a flushed pack uploads all ride in the next single pack", async () => {
  const keys = RepositoryKeys.generate();
  const gates: Gate[] = [];
  const backend = new HookedBackend(async (_key, n) => {
    gates[n] = deferred();
    await gates[n]!.promise;
  });
  const packer = new Packer(backend, keys, async () => undefined, { maxUploads: 2 });
  await packer.add(rawChunk(10));
  const first = packer.flush();
  while (gates[0] === undefined) await sleep(1);
  const later: Promise<void>[] = [];
  for (let i = 0; i < 20; i++) {
    await packer.add(rawChunk(20 + i));
    later.push(packer.flush());
  }
  await sleep(10);
  assert.equal(backend.puts.length, 1, "no second flushed pack starts while one is uploading");
  gates[0]!.resolve();
  await first;
  while (gates[1] === undefined) await sleep(1);
  gates[1]!.resolve();
  await Promise.all(later);
  assert.equal(backend.puts.length, 2, "the 20 later flushes shared one pack");
});

test("a failing commit rejects the flush and releases the chunks", async () => {
  const keys = RepositoryKeys.generate();
  let fail = true;
  const packer = new Packer(new HookedBackend(), keys, async () => {
    if (fail) throw new Error("metadata store down");
  });
  const a = rawChunk(10);
  await packer.add(a);
  await assert.rejects(packer.flush(), /metadata store down/);
  assert.ok(!packer.pending(a.chunkId));
  fail = false;
  await packer.add(a);
  await packer.flush();
});

test("close flushes, then refuses adds; bad arguments are STOWAGE_INVALID_ARGUMENT", async () => {
  const keys = RepositoryKeys.generate();
  const { commits, onUploaded } = recorder();
  const packer = new Packer(new HookedBackend(), keys, onUploaded);
  await packer.add(rawChunk(10));
  await packer.close();
  assert.equal(commits.length, 1);
  await rejectsWith(packer.add(rawChunk(10)), "STOWAGE_INVALID_ARGUMENT");
  const p2 = new Packer(new HookedBackend(), keys, onUploaded);
  await rejectsWith(p2.add({ ...rawChunk(10), chunkId: randomBytes(31) }), "STOWAGE_INVALID_ARGUMENT");
  await rejectsWith(p2.add({ ...rawChunk(10), rawLength: 11 }), "STOWAGE_INVALID_ARGUMENT");
  await rejectsWith(p2.add({ ...rawChunk(10), method: 256 }), "STOWAGE_INVALID_ARGUMENT");
  assert.throws(() => new Packer(new HookedBackend(), keys, onUploaded, { targetSize: 0 }), StowageError);
  assert.throws(() => new Packer(new HookedBackend(), keys, onUploaded, { maxUploads: 0 }), StowageError);
});
