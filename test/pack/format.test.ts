import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { aeadCipher, SEALED_OVERHEAD } from "../../src/codec/aead.js";
import { compressChunk } from "../../src/codec/compress.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";
import {
  DEFAULT_TAIL_GUESS,
  encodeIndex,
  encodePack,
  encodeTrailer,
  indexAad,
  newPackId,
  openPackIndex,
  openRecord,
  PACK_INDEX_ENTRY_BYTES,
  PACK_TRAILER_BYTES,
  packBlobKey,
  packIdFromBlobKey,
  parsePackTrailer,
  readPackIndex,
  RECORD_KIND_CHUNK,
  RECORD_KIND_METADATA,
  sealedIndexLength,
  sealRecord,
  type PackIndexEntry,
  type RecordKind,
  type SealedRecord,
} from "../../src/pack/format.js";

/** Counts requests; forwards to a MemoryBackend. */
class Counting implements BlobBackend {
  readonly location = "counting:";
  gets: ByteRange[] = [];
  heads = 0;
  constructor(readonly inner: MemoryBackend = new MemoryBackend()) {}
  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.inner.put(key, body);
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    this.gets.push(range ?? { offset: 0, length: -1 });
    return this.inner.get(key, range);
  }
  head(key: string): Promise<BlobInfo | undefined> {
    this.heads++;
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

interface Plain {
  kind: RecordKind;
  id: Buffer;
  data: Buffer;
  method: number;
  sealed: Uint8Array;
}

function textLike(n: number): Buffer {
  const words = ["frame", "render", "shot", "take", "edl", "json", "{", "}", "\n", "0042", "sidecar"];
  const parts: string[] = [];
  let len = 0;
  while (len <= n) {
    const w = words[randomInt(words.length)]!;
    parts.push(w);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(" ")).subarray(0, n);
}

function makeRecord(keys: RepositoryKeys, size: number, compressible: boolean, kind: RecordKind = RECORD_KIND_CHUNK): Plain {
  const data = compressible ? textLike(size) : randomBytes(size);
  const c = compressChunk(data);
  const id = randomBytes(32);
  return { kind, id, data, method: c.method, sealed: sealRecord(keys, kind, c.method, id, c.bytes) };
}

function sealedOf(p: Plain): SealedRecord {
  return { kind: p.kind, method: p.method, id: p.id, rawLength: p.data.length, sealed: p.sealed };
}

async function writePack(backend: BlobBackend, keys: RepositoryKeys, records: Plain[], packId = newPackId()) {
  const enc = encodePack(keys, packId, records.map(sealedOf));
  await backend.put(packBlobKey(packId), enc.parts);
  return { packId, blobKey: packBlobKey(packId), ...enc };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match((err as Error).message, message);
    return true;
  });
}

function throwsWith(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match((err as Error).message, message);
    return true;
  });
}

function slice(blob: Buffer, e: PackIndexEntry): Buffer {
  return blob.subarray(e.offset, e.offset + e.storedLength);
}

test("pack ids and blob keys", () => {
  const id = newPackId();
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.notEqual(newPackId(), id);
  assert.equal(packBlobKey(id), `packs/${id.slice(0, 2)}/${id}`);
  assert.equal(packIdFromBlobKey(packBlobKey(id)), id);
  throwsWith(() => packBlobKey("ABC"), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => packIdFromBlobKey("packs/xx/not-an-id"), "STOWAGE_INVALID_ARGUMENT");
});

test("round trip of random record sets: the index read back from the pack alone equals what was written", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const sizes = [0, 1, 13, 100, 4096, 65_537, 300_000];
  for (let round = 0; round < 6; round++) {
    const records: Plain[] = [];
    const n = round === 0 ? 0 : randomInt(1, 25);
    for (let i = 0; i < n; i++) {
      const size = i < sizes.length && round === 1 ? sizes[i]! : sizes[randomInt(sizes.length)]!;
      records.push(makeRecord(keys, size, randomInt(2) === 0, randomInt(5) === 0 ? RECORD_KIND_METADATA : RECORD_KIND_CHUNK));
    }
    const pack = await writePack(backend, keys, records);
    const blob = backend.inner.rawForTesting(pack.blobKey)!;
    assert.equal(blob.length, pack.size);
    // Layout: records from 0, back to back, then the index, then the trailer.
    let off = 0;
    pack.entries.forEach((e, i) => {
      assert.equal(e.offset, off);
      assert.equal(e.storedLength, records[i]!.sealed.length);
      off += e.storedLength;
    });
    assert.equal(pack.size, off + sealedIndexLength(n) + PACK_TRAILER_BYTES);
    assert.equal(blob.subarray(-8).toString("ascii"), "STWPACK1");

    const before = backend.gets.length;
    const index = await readPackIndex(backend, keys, pack.blobKey, pack.size);
    assert.equal(backend.gets.length - before, 1, "one GET for a small pack's index");
    assert.equal(index.packId, pack.packId);
    assert.equal(index.size, pack.size);
    assert.deepEqual(index.entries, pack.entries);
    index.entries.forEach((e, i) => {
      const r = records[i]!;
      assert.equal(e.kind, r.kind);
      assert.equal(e.method, r.method);
      assert.ok(e.id.equals(r.id));
      assert.equal(e.rawLength, r.data.length);
      assert.ok(openRecord(keys, e, slice(blob, e), pack.packId).equals(r.data));
    });
  }
  assert.ok(sizes.some((s) => s > 0), "sanity");
});

test("both compression methods occur, and a 0-byte record is just the AEAD overhead", async () => {
  const keys = RepositoryKeys.generate();
  const a = makeRecord(keys, 10_000, true);
  const b = makeRecord(keys, 10_000, false);
  const z = makeRecord(keys, 0, false);
  assert.equal(a.method, 1);
  assert.equal(b.method, 0);
  assert.equal(z.sealed.length, SEALED_OVERHEAD);
  const backend = new MemoryBackend();
  const pack = await writePack(backend, keys, [a, b, z]);
  const blob = backend.rawForTesting(pack.blobKey)!;
  assert.equal(openRecord(keys, pack.entries[2]!, slice(blob, pack.entries[2]!)).length, 0);
});

test("readPackIndex: HEAD only without a size; a second GET only for an index larger than the tail guess", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new Counting();
  const small = await writePack(backend, keys, [makeRecord(keys, 200_000, false), makeRecord(keys, 10, false)]);
  await readPackIndex(backend, keys, small.blobKey, small.size);
  assert.deepEqual([backend.heads, backend.gets.length], [0, 1]);
  assert.deepEqual(backend.gets[0], { offset: small.size - DEFAULT_TAIL_GUESS, length: DEFAULT_TAIL_GUESS });
  const idx = await readPackIndex(backend, keys, small.blobKey);
  assert.deepEqual([backend.heads, backend.gets.length], [1, 2]);
  assert.deepEqual(idx.entries, small.entries);

  // 2000 entries: the index (~92 KB) is larger than the 64 KiB guess.
  const many: Plain[] = [];
  for (let i = 0; i < 2000; i++) many.push(makeRecord(keys, i % 3, false));
  const big = await writePack(backend, keys, many);
  assert.ok(sealedIndexLength(2000) > DEFAULT_TAIL_GUESS);
  backend.gets = [];
  const bigIdx = await readPackIndex(backend, keys, big.blobKey, big.size);
  assert.equal(backend.gets.length, 2);
  assert.equal(bigIdx.entries.length, 2000);
  assert.deepEqual(bigIdx.entries, big.entries);
});

test("flipping any single byte of a pack fails the affected record or the index with STOWAGE_INTEGRITY, never wrong bytes", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new MemoryBackend();
  const records = [makeRecord(keys, 0, false), makeRecord(keys, 60, false), makeRecord(keys, 300, true), makeRecord(keys, 40, false, RECORD_KIND_METADATA)];
  assert.equal(records[2]!.method, 1);
  const pack = await writePack(backend, keys, records);
  const blob = backend.rawForTesting(pack.blobKey)!;
  const original = Buffer.from(blob);
  const recordsEnd = pack.entries.at(-1)!.offset + pack.entries.at(-1)!.storedLength;
  const trailerStart = pack.size - PACK_TRAILER_BYTES;
  const failures = { record: 0, index: 0, trailer: 0 };
  for (let pos = 0; pos < blob.length; pos++) {
    const mask = 1 << pos % 8;
    blob[pos]! ^= mask;
    let indexFailed = false;
    try {
      const idx = await readPackIndex(backend, keys, pack.blobKey, pack.size);
      assert.deepEqual(idx.entries, pack.entries, `index changed silently (byte ${pos})`);
    } catch (err) {
      assert.ok(isStowageError(err, "STOWAGE_INTEGRITY"), `byte ${pos}: ${String(err)}`);
      assert.match((err as Error).message, new RegExp(pack.packId));
      indexFailed = true;
    }
    let recordFailures = 0;
    pack.entries.forEach((e, i) => {
      try {
        const plain = openRecord(keys, e, slice(blob, e), pack.packId);
        assert.ok(plain.equals(records[i]!.data), `record ${i} changed silently (byte ${pos})`);
      } catch (err) {
        assert.ok(isStowageError(err, "STOWAGE_INTEGRITY"), `byte ${pos}: ${String(err)}`);
        assert.match((err as Error).message, new RegExp(`${pack.packId}.*${e.id.toString("hex")}.*offset ${e.offset}`));
        assert.ok(pos >= e.offset && pos < e.offset + e.storedLength, "only the damaged record fails");
        recordFailures++;
      }
    });
    if (pos < recordsEnd) {
      assert.equal(recordFailures, 1, `byte ${pos} in a record`);
      assert.equal(indexFailed, false);
      failures.record++;
    } else {
      assert.equal(recordFailures, 0);
      assert.equal(indexFailed, true, `byte ${pos} in the ${pos >= trailerStart ? "trailer" : "index"}`);
      if (pos >= trailerStart) failures.trailer++;
      else failures.index++;
    }
    blob[pos]! ^= mask;
  }
  assert.ok(blob.equals(original));
  assert.deepEqual(failures, { record: recordsEnd, index: trailerStart - recordsEnd, trailer: PACK_TRAILER_BYTES });
});

test("the trailer's version field: damage is STOWAGE_INTEGRITY, a newer pack is STOWAGE_FORMAT_VERSION", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new MemoryBackend();
  const pack = await writePack(backend, keys, [makeRecord(keys, 500, false)]);
  const blob = backend.rawForTesting(pack.blobKey)!;
  blob.writeUInt32LE(2, pack.size - 12);
  await rejectsWith(readPackIndex(backend, keys, pack.blobKey), "STOWAGE_INTEGRITY", /damaged trailer version/);
  // A "version 2" pack whose index does not read as version 1.
  const v2 = Buffer.concat([randomBytes(300), Buffer.alloc(16)]);
  v2.writeUInt32LE(200, 300);
  v2.writeUInt32LE(2, 304);
  v2.write("STWPACK1", 308, "ascii");
  const id = newPackId();
  await backend.put(packBlobKey(id), v2);
  await rejectsWith(readPackIndex(backend, keys, packBlobKey(id)), "STOWAGE_FORMAT_VERSION", new RegExp(id));
  throwsWith(() => parsePackTrailer(v2.subarray(-16)), "STOWAGE_FORMAT_VERSION");
  throwsWith(() => parsePackTrailer(Buffer.alloc(16)), "STOWAGE_INTEGRITY");
  throwsWith(() => parsePackTrailer(Buffer.alloc(15)), "STOWAGE_INTEGRITY");
  assert.deepEqual(parsePackTrailer(encodeTrailer(77)), { sealedIndexLength: 77, version: 1 });
});

test("a newer index version or an unknown record kind is STOWAGE_FORMAT_VERSION; an unknown method fails only its record", () => {
  const keys = RepositoryKeys.generate();
  const packId = newPackId();
  const entry: PackIndexEntry = { kind: 1, method: 0, id: randomBytes(32), offset: 0, storedLength: 40, rawLength: 11 };
  const seal = (plain: Buffer) => aeadCipher(keys, "index-encryption").seal(plain, indexAad(packId));
  assert.deepEqual(openPackIndex(keys, packId, seal(encodeIndex(packId, [entry])), 40), [entry]);
  const newer = encodeIndex(packId, [entry]);
  newer[0] = 2;
  throwsWith(() => openPackIndex(keys, packId, seal(newer)), "STOWAGE_FORMAT_VERSION", /index version 2/);
  const kind3 = encodeIndex(packId, [entry]);
  kind3[21] = 3;
  throwsWith(() => openPackIndex(keys, packId, seal(kind3)), "STOWAGE_FORMAT_VERSION", /record kind 3/);
  // Structure checks behind the AEAD (a buggy writer): gaps, a wrong records span, a wrong count, another pack's id.
  throwsWith(() => openPackIndex(keys, packId, seal(encodeIndex(packId, [{ ...entry, offset: 5 }]))), "STOWAGE_INTEGRITY");
  throwsWith(() => openPackIndex(keys, packId, seal(encodeIndex(packId, [entry])), 41), "STOWAGE_INTEGRITY");
  throwsWith(() => openPackIndex(keys, packId, seal(encodeIndex(packId, [entry]).subarray(0, 21 + PACK_INDEX_ENTRY_BYTES - 1))), "STOWAGE_INTEGRITY");
  const other = newPackId();
  throwsWith(() => openPackIndex(keys, packId, seal(encodeIndex(other, [entry]))), "STOWAGE_INTEGRITY", /another pack/);

  const id = randomBytes(32);
  const sealed = sealRecord(keys, 1, 7, id, Buffer.from("hello"));
  throwsWith(
    () => openRecord(keys, { kind: 1, method: 7, id, offset: 0, storedLength: sealed.length, rawLength: 5 }, sealed, packId),
    "STOWAGE_FORMAT_VERSION",
    /compression method 7/,
  );
});

test("a record opened under another id, kind or method, or with a wrong raw length, is STOWAGE_INTEGRITY", () => {
  const keys = RepositoryKeys.generate();
  const r = makeRecord(keys, 5000, true);
  const e: PackIndexEntry = { kind: 1, method: r.method, id: r.id, offset: 0, storedLength: r.sealed.length, rawLength: 5000 };
  assert.ok(openRecord(keys, e, r.sealed).equals(r.data));
  throwsWith(() => openRecord(keys, { ...e, id: randomBytes(32) }, r.sealed), "STOWAGE_INTEGRITY");
  throwsWith(() => openRecord(keys, { ...e, kind: 2 }, r.sealed), "STOWAGE_INTEGRITY");
  throwsWith(() => openRecord(keys, { ...e, method: 0 }, r.sealed), "STOWAGE_INTEGRITY");
  throwsWith(() => openRecord(keys, { ...e, rawLength: 4999 }, r.sealed), "STOWAGE_INTEGRITY");
  throwsWith(() => openRecord(keys, e, r.sealed.subarray(1)), "STOWAGE_INTEGRITY", /truncated/);
  const stored = makeRecord(keys, 100, false);
  throwsWith(() => openRecord(keys, { ...e, id: stored.id, method: 0, storedLength: stored.sealed.length, rawLength: 99 }, stored.sealed), "STOWAGE_INTEGRITY");
});

test("a wrong key is STOWAGE_INTEGRITY for the index and the records", async () => {
  const keys = RepositoryKeys.generate();
  const other = RepositoryKeys.generate();
  const backend = new MemoryBackend();
  const r = makeRecord(keys, 1000, false);
  const pack = await writePack(backend, keys, [r]);
  await rejectsWith(readPackIndex(backend, other, pack.blobKey), "STOWAGE_INTEGRITY", new RegExp(pack.packId));
  throwsWith(() => openRecord(other, pack.entries[0]!, r.sealed, pack.packId), "STOWAGE_INTEGRITY", new RegExp(r.id.toString("hex")));
});

test("truncated packs are STOWAGE_INTEGRITY", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new MemoryBackend();
  const pack = await writePack(backend, keys, [makeRecord(keys, 1000, false), makeRecord(keys, 2000, true)]);
  const full = Buffer.from(backend.rawForTesting(pack.blobKey)!);
  const cuts = [full.subarray(0, full.length - 1), full.subarray(0, full.length >> 1), full.subarray(0, 10), full.subarray(0, 0), full.subarray(1)];
  for (const cut of cuts) {
    await backend.put(pack.blobKey, cut);
    await rejectsWith(readPackIndex(backend, keys, pack.blobKey), "STOWAGE_INTEGRITY", new RegExp(pack.packId));
  }
  // The size recorded in metadata is larger than the blob now is.
  await backend.put(pack.blobKey, full.subarray(0, full.length - 100));
  await rejectsWith(readPackIndex(backend, keys, pack.blobKey, full.length), "STOWAGE_INTEGRITY", /truncated/);
});

test("a moved index (pack A's index and trailer appended to pack B's records) is rejected", async () => {
  const keys = RepositoryKeys.generate();
  const backend = new MemoryBackend();
  const recs = [makeRecord(keys, 100, false), makeRecord(keys, 200, false)];
  const a = await writePack(backend, keys, recs);
  const b = await writePack(backend, keys, recs.map((r) => ({ ...r, sealed: sealRecord(keys, r.kind, r.method, r.id, r.data) })));
  const aBlob = backend.rawForTesting(a.blobKey)!;
  const bBlob = backend.rawForTesting(b.blobKey)!;
  const recordsEnd = a.entries.at(-1)!.offset + a.entries.at(-1)!.storedLength;
  assert.equal(recordsEnd, b.entries.at(-1)!.offset + b.entries.at(-1)!.storedLength);
  await backend.put(b.blobKey, [bBlob.subarray(0, recordsEnd), aBlob.subarray(recordsEnd)]);
  await rejectsWith(readPackIndex(backend, keys, b.blobKey), "STOWAGE_INTEGRITY", new RegExp(b.packId));
  // The whole of pack A copied under B's key, too.
  await backend.put(b.blobKey, aBlob);
  await rejectsWith(readPackIndex(backend, keys, b.blobKey), "STOWAGE_INTEGRITY");
});

test("a missing pack is STOWAGE_BACKEND_NOT_FOUND naming the pack", async () => {
  const keys = RepositoryKeys.generate();
  const id = newPackId();
  await rejectsWith(readPackIndex(new MemoryBackend(), keys, packBlobKey(id)), "STOWAGE_BACKEND_NOT_FOUND", new RegExp(id));
  await rejectsWith(readPackIndex(new MemoryBackend(), keys, packBlobKey(id), 1000), "STOWAGE_BACKEND_NOT_FOUND", new RegExp(id));
});

test("encodePack refuses malformed records", () => {
  const keys = RepositoryKeys.generate();
  const good: SealedRecord = { kind: 1, method: 0, id: randomBytes(32), rawLength: 0, sealed: sealRecord(keys, 1, 0, randomBytes(32), new Uint8Array(0)) };
  throwsWith(() => encodePack(keys, newPackId(), [{ ...good, id: randomBytes(31) }]), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => encodePack(keys, newPackId(), [{ ...good, sealed: new Uint8Array(3) }]), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => encodePack(keys, "nope", [good]), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => sealRecord(keys, 3 as RecordKind, 0, randomBytes(32), new Uint8Array(1)), "STOWAGE_INVALID_ARGUMENT");
});
