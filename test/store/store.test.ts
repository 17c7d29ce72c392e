/** The object store's API: buckets, put/get/head/delete, versioning, listing, copy, multipart, snapshots. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { CountingBackend } from "../../src/backend/counting.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import { computeStats } from "../../src/store/stats.js";
import { EMPTY_MD5 } from "../../src/store/store.js";
import { assertClean, bytes, collect, makeStore, pieces, readAll } from "./helpers.js";

async function rejects(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

test("buckets: create, exists, list, delete empty only, names checked", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("photos");
    await rejects(store.createBucket("photos"), "STOWAGE_BUCKET_EXISTS");
    await store.createBucket("alpha");
    assert.deepEqual((await store.listBuckets()).map((b) => b.name), ["alpha", "photos"]);
    for (const bad of ["ab", "Upper", "-x-", "a..b", "192.168.1.1", "x".repeat(64), "has_underscore"]) {
      await rejects(store.createBucket(bad), "STOWAGE_INVALID_NAME");
    }
    await store.putObject("photos", "a.jpg", [bytes(10, 1)]);
    await rejects(store.deleteBucket("photos"), "STOWAGE_BUCKET_NOT_EMPTY");
    await store.deleteObject("photos", "a.jpg");
    await store.deleteBucket("photos");
    await rejects(store.headBucket("photos"), "STOWAGE_NO_SUCH_BUCKET");
    await rejects(store.putObject("photos", "a", [bytes(1, 1)]), "STOWAGE_NO_SUCH_BUCKET");
  } finally {
    await t.close();
  }
});

test("put/get round trip for sizes around chunk and pack boundaries; ETag is the MD5", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    for (const [i, n] of [0, 1, 1023, 1024, 4096, 16383, 16384, 16385, 65536, 200_000, 1_000_000].entries()) {
      const data = bytes(n, i + 1);
      const r = await store.putObject("bkt", `obj-${n}`, pieces(data, 1 + ((i * 3571) % 9000)));
      assert.equal(r.size, n);
      assert.equal(r.etag, n === 0 ? EMPTY_MD5 : md5(data));
      assert.ok((await readAll(store, "bkt", `obj-${n}`)).equals(data), `size ${n}`);
      const h = await store.headObject("bkt", `obj-${n}`);
      assert.equal(h.size, n);
      assert.equal(h.etag, r.etag);
    }
    await assertClean(store);
    await t.reopen();
    assert.ok((await readAll(t.store, "bkt", "obj-200000")).equals(bytes(200_000, 10)));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("ranges: every kind of S3 range returns exactly those bytes; bad ones are InvalidRange", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(100_000, 7);
    await store.putObject("bkt", "k", [data]);
    const cases: Array<[{ start: number; end?: number } | { suffix: number }, number, number]> = [
      [{ start: 0, end: 0 }, 0, 1],
      [{ start: 0, end: 99_999 }, 0, 100_000],
      [{ start: 5000, end: 70_000 }, 5000, 70_001],
      [{ start: 99_999 }, 99_999, 100_000],
      [{ start: 50_000, end: 10_000_000 }, 50_000, 100_000],
      [{ suffix: 1 }, 99_999, 100_000],
      [{ suffix: 4097 }, 100_000 - 4097, 100_000],
      [{ suffix: 1_000_000 }, 0, 100_000],
    ];
    for (const [range, start, end] of cases) {
      const r = await store.getObject("bkt", "k", { range });
      assert.deepEqual(r.span, { start, end });
      assert.ok((await collect(r.body)).equals(data.subarray(start, end)), JSON.stringify(range));
    }
    await rejects(store.getObject("bkt", "k", { range: { start: 100_000 } }), "STOWAGE_INVALID_RANGE");
    await rejects(store.getObject("bkt", "k", { range: { suffix: 0 } }), "STOWAGE_INVALID_RANGE");
    await store.putObject("bkt", "empty", []);
    await rejects(store.getObject("bkt", "empty", { range: { start: 0 } }), "STOWAGE_INVALID_RANGE");
  } finally {
    await t.close();
  }
});

test("dedup: identical content across keys and buckets is stored once", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend });
  try {
    const { store } = t;
    await store.createBucket("one");
    await store.createBucket("two");
    const data = bytes(300_000, 3);
    await store.putObject("one", "a", [data]);
    const after1 = await computeStats(t.meta);
    const puts1 = backend.counters().puts;
    await store.putObject("one", "b", pieces(data, 999));
    await store.putObject("two", "c", [data]);
    const after3 = await computeStats(t.meta);
    assert.equal(backend.counters().puts, puts1, "no new pack for duplicate content");
    assert.equal(after3.chunks, after1.chunks);
    assert.equal(after3.storedBytes, after1.storedBytes);
    assert.equal(after3.logicalBytes, 3 * data.length);
    assert.ok(Math.abs(after3.dedupRatio - 3) < 0.01, `dedup ratio ${after3.dedupRatio}`);
    // A shared middle: only the changed region adds chunks.
    const edited = Buffer.concat([data.subarray(0, 150_000), Buffer.from("inserted!"), data.subarray(150_000)]);
    await store.putObject("one", "edited", [edited]);
    const after4 = await computeStats(t.meta);
    assert.ok(after4.uniqueBytes - after3.uniqueBytes < 40_000, `an insert stored ${after4.uniqueBytes - after3.uniqueBytes} new bytes`);
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("unversioned: overwrite and delete free the old data; delete of a missing key is fine", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    await store.putObject("bkt", "k", [bytes(50_000, 1)]);
    await store.putObject("bkt", "k", [bytes(50_000, 2)]);
    assert.ok((await readAll(store, "bkt", "k")).equals(bytes(50_000, 2)));
    let s = await computeStats(t.meta);
    assert.equal(s.versions, 1);
    assert.ok(s.unreferencedChunks > 0, "the first version's chunks lost their references");
    await store.deleteObject("bkt", "k");
    await rejects(store.getObject("bkt", "k"), "STOWAGE_NO_SUCH_KEY");
    await store.deleteObject("bkt", "k");
    s = await computeStats(t.meta);
    assert.equal(s.versions, 0);
    assert.equal(s.uniqueBytes, 0);
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("versioning: versions kept, delete markers, delete by version id, suspended replaces null", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("ver");
    await store.putObject("ver", "k", [bytes(1000, 1)]); // the null version, before versioning
    await store.setVersioning("ver", "enabled");
    const v2 = await store.putObject("ver", "k", [bytes(1000, 2)]);
    const v3 = await store.putObject("ver", "k", [bytes(1000, 3)]);
    assert.notEqual(v2.versionId, "null");
    assert.notEqual(v2.versionId, v3.versionId);
    assert.ok((await readAll(store, "ver", "k")).equals(bytes(1000, 3)));
    assert.ok((await readAll(store, "ver", "k", v2.versionId)).equals(bytes(1000, 2)));
    assert.ok((await readAll(store, "ver", "k", "null")).equals(bytes(1000, 1)));
    const del = await store.deleteObject("ver", "k");
    assert.equal(del.deleteMarker, true);
    await rejects(store.getObject("ver", "k"), "STOWAGE_NO_SUCH_KEY");
    assert.ok((await readAll(store, "ver", "k", v3.versionId)).equals(bytes(1000, 3)));
    let listed = await store.listObjectVersions("ver");
    assert.deepEqual(
      listed.versions.map((x) => [x.versionId, x.deleteMarker, x.isLatest]),
      [
        [del.versionId, true, true],
        [v3.versionId, false, false],
        [v2.versionId, false, false],
        ["null", false, false],
      ],
    );
    assert.deepEqual((await store.listObjects("ver")).objects, []);
    // Removing the delete marker brings v3 back.
    await store.deleteObject("ver", "k", { versionId: del.versionId! });
    assert.ok((await readAll(store, "ver", "k")).equals(bytes(1000, 3)));
    // Suspended: a put replaces the null version (and only it).
    await store.setVersioning("ver", "suspended");
    await store.putObject("ver", "k", [bytes(1000, 4)]);
    listed = await store.listObjectVersions("ver");
    assert.deepEqual(listed.versions.map((x) => x.versionId), ["null", v3.versionId, v2.versionId]);
    assert.ok((await readAll(store, "ver", "k", "null")).equals(bytes(1000, 4)));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("listing: prefix, delimiter, start-after, pagination with continuation tokens, byte order", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("lst");
    const keys = ["a", "a/b", "a/c/d", "a/c/e", "a0", "b/x", "b/y", "c", "ä", "z/1", "z/2", "z/3"];
    for (const k of keys) await store.putObject("lst", k, [Buffer.from(k)]);
    await store.putObject("lst", "gone", [Buffer.from("x")]);
    await store.deleteObject("lst", "gone");
    const all = await store.listObjects("lst");
    assert.deepEqual(all.objects.map((o) => o.key), [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    const top = await store.listObjects("lst", { delimiter: "/" });
    assert.deepEqual(top.objects.map((o) => o.key), ["a", "a0", "c", "ä"]);
    assert.deepEqual(top.commonPrefixes, ["a/", "b/", "z/"]);
    const inA = await store.listObjects("lst", { prefix: "a/", delimiter: "/" });
    assert.deepEqual(inA.objects.map((o) => o.key), ["a/b"]);
    assert.deepEqual(inA.commonPrefixes, ["a/c/"]);
    assert.deepEqual((await store.listObjects("lst", { startAfter: "b/x" })).objects.map((o) => o.key), ["b/y", "c", "z/1", "z/2", "z/3", "ä"]);
    // Pages of 2, with the delimiter: prefixes and keys interleave in order, nothing repeats.
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await store.listObjects("lst", { delimiter: "/", maxKeys: 2, ...(token === undefined ? {} : { continuationToken: token }) });
      seen.push(...page.objects.map((o) => o.key), ...page.commonPrefixes);
      token = page.isTruncated ? page.nextContinuationToken : undefined;
      pages++;
    } while (token !== undefined);
    assert.deepEqual(seen.sort(), ["a", "a/", "a0", "b/", "c", "z/", "ä"].sort());
    assert.equal(pages, 4);
    assert.equal((await store.listObjects("lst", { maxKeys: 0 })).objects.length, 0);
    await rejects(store.listObjects("lst", { continuationToken: "!!" }), "STOWAGE_INVALID_ARGUMENT");
  } finally {
    await t.close();
  }
});

test("copy is zero-copy: no data read or written, same ETag, metadata directive", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend });
  try {
    const { store } = t;
    await store.createBucket("src");
    await store.createBucket("dst");
    const data = bytes(200_000, 9);
    const put = await store.putObject("src", "k", [data], { contentType: "video/mp4", userMetadata: { shot: "10" } });
    const before = backend.counters();
    const c1 = await store.copyObject("src", "k", "dst", "k2");
    const c2 = await store.copyObject("src", "k", "dst", "k3", { metadataDirective: "REPLACE", contentType: "text/plain", userMetadata: { a: "b" } });
    const after = backend.counters();
    assert.equal(after.puts, before.puts);
    assert.equal(after.gets, before.gets);
    assert.equal(c1.etag, put.etag);
    const h2 = await store.headObject("dst", "k2");
    assert.equal(h2.contentType, "video/mp4");
    assert.deepEqual(h2.userMetadata, { shot: "10" });
    const h3 = await store.headObject("dst", "k3");
    assert.equal(h3.contentType, "text/plain");
    assert.deepEqual(h3.userMetadata, { a: "b" });
    assert.equal(c2.size, data.length);
    await store.deleteObject("src", "k");
    assert.ok((await readAll(store, "dst", "k2")).equals(data), "the copy survives the source's deletion");
    await rejects(store.copyObject("src", "k", "dst", "k4"), "STOWAGE_NO_SUCH_KEY");
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("multipart: upload, list, complete with S3's ETag; errors; abort releases references", async () => {
  const t = await makeStore({ minPartSize: 10_000 });
  try {
    const { store } = t;
    await store.createBucket("mpu");
    const parts = [bytes(30_000, 1), bytes(20_000, 2), bytes(5000, 3)];
    const up = await store.createMultipartUpload("mpu", "movie.mov", { contentType: "video/quicktime", userMetadata: { take: "3" } });
    const etags: string[] = [];
    for (const [i, p] of parts.entries()) etags.push((await store.uploadPart("mpu", up.uploadId, i + 1, pieces(p, 3000))).etag);
    // Re-uploading part 2 replaces it (and releases the first upload's references).
    etags[1] = (await store.uploadPart("mpu", up.uploadId, 2, [parts[1]!])).etag;
    assert.deepEqual((await store.listParts("mpu", up.uploadId)).parts.map((p) => [p.partNumber, p.size]), [[1, 30_000], [2, 20_000], [3, 5000]]);
    assert.equal((await store.listMultipartUploads("mpu")).length, 1);
    await rejects(store.completeMultipartUpload("mpu", up.uploadId, [{ partNumber: 2, etag: etags[1]! }, { partNumber: 1, etag: etags[0]! }]), "STOWAGE_INVALID_PART_ORDER");
    await rejects(store.completeMultipartUpload("mpu", up.uploadId, [{ partNumber: 1, etag: "0".repeat(32) }]), "STOWAGE_INVALID_PART");
    await rejects(store.completeMultipartUpload("mpu", up.uploadId, [{ partNumber: 3, etag: etags[2]! }, { partNumber: 4, etag: etags[2]! }]), "STOWAGE_INVALID_PART");
    const small = await store.createMultipartUpload("mpu", "small");
    const s1 = await store.uploadPart("mpu", small.uploadId, 1, [bytes(9_999, 5)]);
    const s2 = await store.uploadPart("mpu", small.uploadId, 2, [bytes(10, 6)]);
    await rejects(
      store.completeMultipartUpload("mpu", small.uploadId, [
        { partNumber: 1, etag: s1.etag },
        { partNumber: 2, etag: s2.etag },
      ]),
      "STOWAGE_ENTITY_TOO_SMALL",
    );
    await store.abortMultipartUpload("mpu", small.uploadId);
    const done = await store.completeMultipartUpload(
      "mpu",
      up.uploadId,
      etags.map((etag, i) => ({ partNumber: i + 1, etag: `"${etag}"` })),
    );
    const expectedEtag = createHash("md5").update(Buffer.concat(parts.map((p) => createHash("md5").update(p).digest()))).digest("hex") + "-3";
    assert.equal(done.etag, expectedEtag);
    const whole = Buffer.concat(parts);
    assert.ok((await readAll(store, "mpu", "movie.mov")).equals(whole));
    const h = await store.headObject("mpu", "movie.mov");
    assert.deepEqual(h.partSizes, [30_000, 20_000, 5000]);
    assert.equal(h.contentType, "video/quicktime");
    const part2 = await store.getObject("mpu", "movie.mov", { partNumber: 2 });
    assert.ok((await collect(part2.body)).equals(parts[1]!));
    await rejects(store.uploadPart("mpu", up.uploadId, 1, [Buffer.from("x")]), "STOWAGE_NO_SUCH_UPLOAD");
    assert.equal((await store.listMultipartUploads("mpu")).length, 0);
    // Abort: the parts' references go away.
    const up2 = await store.createMultipartUpload("mpu", "aborted");
    await store.uploadPart("mpu", up2.uploadId, 1, [bytes(40_000, 77)]);
    await store.abortMultipartUpload("mpu", up2.uploadId);
    await rejects(store.abortMultipartUpload("mpu", up2.uploadId), "STOWAGE_NO_SUCH_UPLOAD");
    await rejects(store.uploadPart("mpu", up2.uploadId, 0, [Buffer.from("x")]), "STOWAGE_INVALID_ARGUMENT");
    await assertClean(store);
    const s = await computeStats(t.meta);
    assert.equal(s.logicalBytes, whole.length);
    assert.equal(s.uniqueBytes, whole.length, "aborted and replaced parts hold no references");
  } finally {
    await t.close();
  }
});

test("upload part copy references a byte range of another object without rewriting it", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const src = bytes(120_000, 5);
    await store.putObject("bkt", "src", [src]);
    const up = await store.createMultipartUpload("bkt", "dst");
    const before = backend.counters().puts;
    const p1 = await store.uploadPartCopy("bkt", up.uploadId, 1, { bucket: "bkt", key: "src", range: { start: 1234, end: 70_000 } });
    const p2 = await store.uploadPartCopy("bkt", up.uploadId, 2, { bucket: "bkt", key: "src" });
    assert.equal(backend.counters().puts, before, "no data written");
    assert.equal(p1.etag, md5(src.subarray(1234, 70_001)));
    const done = await store.completeMultipartUpload("bkt", up.uploadId, [
      { partNumber: 1, etag: p1.etag },
      { partNumber: 2, etag: p2.etag },
    ]);
    assert.equal(done.size, 70_001 - 1234 + src.length);
    assert.ok((await readAll(store, "bkt", "dst")).equals(Buffer.concat([src.subarray(1234, 70_001), src])));
    const r = await store.getObject("bkt", "dst", { range: { start: 60_000, end: 80_000 } });
    assert.ok((await collect(r.body)).equals(Buffer.concat([src.subarray(1234, 70_001), src]).subarray(60_000, 80_001)));
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("snapshot: a prefix appears at another bucket/prefix at no storage cost and outlives the source", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend });
  try {
    const { store } = t;
    await store.createBucket("prod");
    for (let i = 0; i < 20; i++) await store.putObject("prod", `shot/${i}.exr`, [bytes(5000 + i, i)]);
    await store.putObject("prod", "other/x", [bytes(10, 1)]);
    const before = await computeStats(t.meta);
    const puts = backend.counters().puts;
    const r = await store.snapshot("prod", "shot/", "archive", "2026-11-26/shot/");
    assert.equal(r.objects, 20);
    assert.equal(backend.counters().puts, puts);
    const after = await computeStats(t.meta);
    assert.equal(after.storedBytes, before.storedBytes);
    assert.equal(after.objects, before.objects + 20);
    for (let i = 0; i < 20; i++) await store.deleteObject("prod", `shot/${i}.exr`);
    for (let i = 0; i < 20; i++) assert.ok((await readAll(store, "archive", `2026-11-26/shot/${i}.exr`)).equals(bytes(5000 + i, i)));
    await rejects(store.snapshot("prod", "a/", "prod", "a/b/"), "STOWAGE_INVALID_ARGUMENT");
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("bad input: invalid keys, Content-MD5 mismatch and short bodies commit nothing", async () => {
  const t = await makeStore();
  try {
    const { store } = t;
    await store.createBucket("bkt");
    for (const bad of ["", "a\u0000b", "x".repeat(1025), "\uD800"]) await rejects(store.putObject("bkt", bad, [Buffer.from("x")]), "STOWAGE_INVALID_NAME");
    await store.putObject("bkt", "k", [bytes(1000, 1)]);
    const data = bytes(1000, 2);
    await rejects(store.putObject("bkt", "k", [data], { contentMD5: createHash("md5").update("other").digest("base64") }), "STOWAGE_BAD_DIGEST");
    await rejects(store.putObject("bkt", "k", [data], { size: 2000 }), "STOWAGE_INCOMPLETE_BODY");
    await rejects(store.putObject("bkt", "k", [data], { size: 10 }), "STOWAGE_INVALID_ARGUMENT");
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield bytes(50_000, 3);
      throw new Error("connection reset");
    }
    await rejects(store.putObject("bkt", "k", failing()), "STOWAGE_INCOMPLETE_BODY");
    assert.ok((await readAll(store, "bkt", "k")).equals(bytes(1000, 1)), "the old object is intact");
    const ok = await store.putObject("bkt", "k2", [data], { contentMD5: createHash("md5").update(data).digest("base64"), size: 1000 });
    assert.equal(ok.size, 1000);
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("concurrent small puts share packs (group commit)", async () => {
  const backend = new CountingBackend(new MemoryBackend());
  const t = await makeStore({ backend, packTargetSize: 1024 * 1024 });
  try {
    const { store } = t;
    await store.createBucket("sml");
    await Promise.all(Array.from({ length: 64 }, (_, i) => store.putObject("sml", `side/${i}.json`, [Buffer.from(JSON.stringify({ i, name: `sidecar ${i}`, pad: "x".repeat(i * 10) }))])));
    const s = await computeStats(t.meta);
    assert.equal(s.objects, 64);
    assert.equal(s.plainPuts, 64);
    assert.ok(s.backendPuts <= 16, `64 concurrent puts made ${s.backendPuts} pack uploads`);
    assert.equal(s.backendPuts, backend.counters().puts);
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("a 24 MB object with the default (1 MiB) chunker round-trips whole and in random ranges, streamed", async () => {
  const t = await makeStore({ chunker: { minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024 }, packTargetSize: 16 * 1024 * 1024, cacheBytes: 4 * 1024 * 1024 });
  try {
    const { store } = t;
    await store.createBucket("big");
    const data = bytes(24 * 1024 * 1024, 99);
    const r = await store.putObject("big", "clip.mov", pieces(data, 1024 * 1024 + 7), { size: data.length });
    assert.equal(r.etag, md5(data));
    assert.ok((await readAll(store, "big", "clip.mov")).equals(data));
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 12; i++) {
      const start = rand(data.length);
      const end = Math.min(data.length - 1, start + rand(6 * 1024 * 1024));
      const got = await store.getObject("big", "clip.mov", { range: { start, end } });
      assert.ok((await collect(got.body)).equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
    }
    const s = await computeStats(t.meta);
    assert.ok(s.chunks >= 6 && s.chunks <= 96, `${s.chunks} chunks for 24 MiB at 1 MiB average`);
    await assertClean(store);
  } finally {
    await t.close();
  }
});

test("fsck --read-data reads from the bucket, not the chunk cache: damage after a cached read is found", async () => {
  const backend = new MemoryBackend();
  const t = await makeStore({ backend });
  try {
    const { store } = t;
    await store.createBucket("bkt");
    const data = bytes(50_000, 4);
    await store.putObject("bkt", "k", [data]);
    assert.ok((await readAll(store, "bkt", "k")).equals(data)); // now cached
    let flipped = false;
    for await (const blob of backend.list("packs/")) {
      const raw = backend.rawForTesting(blob.key)!;
      raw[10] = raw[10]! ^ 0x40;
      flipped = true;
    }
    assert.ok(flipped);
    const { fsck } = await import("../../src/store/fsck.js");
    const report = await fsck(store, { readData: true });
    assert.equal(report.ok, false);
    assert.ok(report.problems.some((p) => p.kind === "damaged-chunk" && p.affects.some((a) => a.startsWith("bkt/k"))), JSON.stringify(report.problems));
  } finally {
    await t.close();
  }
});
