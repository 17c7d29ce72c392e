/**
 * The kv-backed metadata store: every MetaReader/MetaTx method, ordering, transactions
 * (own-writes visibility, atomicity, serialization), persistence across reopen, format errors,
 * the seek-based listCurrent, and a seeded randomized model test.
 *
 * Reproduce a model-test failure with the seed from its message:
 *   STOWAGE_SEED=<seed> node --test dist/test/meta/kv-store.test.js
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { nodeFileSystem, openKv, type FileSystem, type KvOptions, type WritableFile } from "../../src/kv/index.js";
import {
  openKvMetadataStore,
  type ChunkRecord,
  type KvMetadataStore,
  type ManifestEntry,
  type MetaTx,
  type ObjectVersion,
  type PartRecord,
  type UploadRecord,
  type VersionHeader,
} from "../../src/meta/index.js";
import { mulberry32 } from "../../src/util/random.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-meta-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCounter = 0;
const newDir = (): string => path.join(tmpRoot, `s${dirCounter++}`);

/** The real file system with fsync replaced by one event-loop turn (durability is the crash tests' business). */
function noSyncFs(): FileSystem {
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const wrapFile = (f: WritableFile): WritableFile =>
    new Proxy(f, {
      get(target, prop) {
        if (prop === "sync") return turn;
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  return new Proxy(nodeFileSystem, {
    get(target, prop) {
      if (prop === "syncDir") return turn;
      if (prop === "createWritable") return (file: string) => wrapFile(target.createWritable(file));
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const BASE_KV: KvOptions = { backgroundThread: false };
const open = (dir: string, kv: KvOptions = BASE_KV): Promise<KvMetadataStore> => openKvMetadataStore(dir, { kv });

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    if (re !== undefined) assert.match((err as Error).message, re);
    return true;
  });
}

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

let idCounter = 0;
/** A deterministic 32-byte chunk id. */
function chunkId(n: number = idCounter++): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32BE(n, 28);
  b[0] = n & 0xff;
  return b;
}

const PACK = "0123456789abcdef0123456789abcdef";

function chunkRec(refs = 0, packId = PACK): ChunkRecord {
  return { packId, offset: 1000, storedLength: 300, rawLength: 512, method: 1, refs };
}

function version(
  bucket: string,
  key: string,
  sequence: number,
  extra: Partial<ObjectVersion> = {},
): ObjectVersion {
  return {
    bucket,
    key,
    versionId: `v${sequence}`,
    sequence,
    deleteMarker: false,
    size: 10 * sequence,
    etag: `etag${sequence}`,
    contentType: "application/octet-stream",
    userMetadata: { k: `m${sequence}` },
    lastModified: 1_700_000_000_000 + sequence,
    manifest: [],
    ...extra,
  };
}

function headerOf(v: ObjectVersion): VersionHeader {
  const { manifest: _m, ...h } = v;
  return h;
}

async function put(store: KvMetadataStore, fn: (tx: MetaTx) => void | Promise<void>): Promise<void> {
  await store.transaction(async (tx) => {
    await fn(tx);
  });
}

/** Writes versions with fresh sequences; returns them. */
async function putVersions(
  store: KvMetadataStore,
  items: { bucket: string; key: string; extra?: Partial<ObjectVersion> }[],
): Promise<ObjectVersion[]> {
  return store.transaction(async (tx) => {
    const out: ObjectVersion[] = [];
    for (const it of items) {
      const v = version(it.bucket, it.key, await tx.nextSequence(), it.extra);
      tx.putVersion(v);
      out.push(v);
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Buckets

test("buckets: put, get, list in byte order, delete, persist across reopen", async () => {
  const dir = newDir();
  let store = await open(dir);
  assert.equal(await store.getBucket("photos"), undefined);
  await put(store, (tx) => {
    tx.putBucket({ name: "photos", created: 5, versioning: "enabled" });
    tx.putBucket({ name: "assets", created: 6, versioning: "unversioned" });
    tx.putBucket({ name: "assets-2", created: 7, versioning: "suspended" });
  });
  assert.deepEqual(await store.getBucket("photos"), { name: "photos", created: 5, versioning: "enabled" });
  assert.deepEqual(
    (await store.listBuckets()).map((b) => b.name),
    ["assets", "assets-2", "photos"],
  );
  await put(store, (tx) => tx.deleteBucket("assets"));
  await store.close();
  store = await open(dir);
  assert.deepEqual(await store.listBuckets(), [
    { name: "assets-2", created: 7, versioning: "suspended" },
    { name: "photos", created: 5, versioning: "enabled" },
  ]);
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Versions and listings

const TRICKY_KEYS = ["a", "a/b", "a\u00ff", "ab", "a\u0001", "a b", "é", "日本/語", "\uffff", "😀", "Z", "a/b/c", "b"];

test("listCurrent and listVersions: keys in UTF-8 byte order, versions newest first", async () => {
  const store = await open(newDir());
  // Three versions of every key, written interleaved so that sequence order differs from key order.
  const written: ObjectVersion[] = [];
  for (let round = 0; round < 3; round++) {
    written.push(...(await putVersions(store, TRICKY_KEYS.map((key) => ({ bucket: "bk", key })))));
  }
  await putVersions(store, [{ bucket: "bk2", key: "a" }]); // another bucket: never listed with bk
  const sortedKeys = [...TRICKY_KEYS].sort(byteOrder);
  // Byte order is not JS string order: U+FFFF (EF BF BF) sorts before U+1F600 (F0 ...).
  assert.ok(sortedKeys.indexOf("\uffff") < sortedKeys.indexOf("😀"));
  assert.ok(sortedKeys.indexOf("a") < sortedKeys.indexOf("a\u0001"));
  assert.ok(sortedKeys.indexOf("a\u0001") < sortedKeys.indexOf("a b"));

  const current = await collect(store.listCurrent("bk"));
  assert.deepEqual(
    current.map((h) => h.key),
    sortedKeys,
  );
  for (const h of current) {
    const newest = written.filter((v) => v.key === h.key).sort((x, y) => y.sequence - x.sequence)[0]!;
    assert.deepEqual(h, headerOf(newest));
  }

  const all = await collect(store.listVersions("bk"));
  const expected = [...written]
    .sort((x, y) => byteOrder(x.key, y.key) || y.sequence - x.sequence)
    .map(headerOf);
  assert.deepEqual(all, expected);

  for (const key of TRICKY_KEYS) {
    const mine = written.filter((v) => v.key === key).sort((x, y) => y.sequence - x.sequence);
    assert.deepEqual(await store.versionsOfKey("bk", key), mine.map(headerOf));
    assert.deepEqual(await store.getCurrent("bk", key), mine[0]);
    for (const v of mine) assert.deepEqual(await store.getVersion("bk", key, v.versionId), v);
  }
  assert.equal(await store.getCurrent("bk", "missing"), undefined);
  assert.equal(await store.getVersion("bk", "a", "v999999"), undefined);
  assert.deepEqual(await store.versionsOfKey("bk", "missing"), []);
  assert.deepEqual(
    (await collect(store.listCurrent("bk2"))).map((h) => h.key),
    ["a"],
  );
  assert.deepEqual(await collect(store.listCurrent("nobucket")), []);
  await store.close();
});

test("listCurrent: prefix, after and limit", async () => {
  const store = await open(newDir());
  // In UTF-8 byte order: "ab" (61 62) < "aÿ" (61 C3 BF).
  const keys = ["a", "a/b", "a/c", "ab", "a\u00ff", "b", "b/x"];
  await putVersions(store, keys.map((key) => ({ bucket: "bk", key })));
  await putVersions(store, [{ bucket: "bk", key: "a/b" }, { bucket: "bk", key: "a/b" }]);
  const list = async (o: { prefix?: string; after?: string; limit?: number }): Promise<string[]> =>
    (await collect(store.listCurrent("bk", o))).map((h) => h.key);
  assert.deepEqual(await list({ prefix: "a/" }), ["a/b", "a/c"]);
  assert.deepEqual(await list({ prefix: "a" }), ["a", "a/b", "a/c", "ab", "a\u00ff"]);
  assert.deepEqual(await list({ prefix: "c" }), []);
  assert.deepEqual(await list({ after: "a" }), ["a/b", "a/c", "ab", "a\u00ff", "b", "b/x"]);
  assert.deepEqual(await list({ after: "a/b" }), ["a/c", "ab", "a\u00ff", "b", "b/x"]);
  assert.deepEqual(await list({ after: "a/" }), ["a/b", "a/c", "ab", "a\u00ff", "b", "b/x"]); // not a key
  assert.deepEqual(await list({ after: "b/x" }), []);
  assert.deepEqual(await list({ after: "" }), keys);
  assert.deepEqual(await list({ prefix: "a", after: "a/c" }), ["ab", "a\u00ff"]);
  assert.deepEqual(await list({ after: "ab" }), ["a\u00ff", "b", "b/x"]);
  assert.deepEqual(await list({ prefix: "a/", after: "0" }), ["a/b", "a/c"]); // after below the prefix
  assert.deepEqual(await list({ limit: 3 }), ["a", "a/b", "a/c"]);
  assert.deepEqual(await list({ limit: 0 }), []);
  assert.deepEqual(await list({ prefix: "a", after: "a", limit: 2 }), ["a/b", "a/c"]);
  // Paging with after + limit walks the whole listing.
  const paged: string[] = [];
  let afterKey: string | undefined;
  for (;;) {
    const page = await list(afterKey === undefined ? { limit: 2 } : { limit: 2, after: afterKey });
    if (page.length === 0) break;
    paged.push(...page);
    afterKey = page[page.length - 1];
  }
  assert.deepEqual(paged, keys);
  await store.close();
});

test("listVersions: prefix, afterKey, afterKey + afterVersionId, limit, paging", async () => {
  const store = await open(newDir());
  const vs: ObjectVersion[] = [];
  for (let i = 0; i < 3; i++) {
    vs.push(...(await putVersions(store, ["a", "a/b", "b"].map((key) => ({ bucket: "bk", key })))));
  }
  const expected = [...vs].sort((x, y) => byteOrder(x.key, y.key) || y.sequence - x.sequence).map(headerOf);
  const ids = (hs: VersionHeader[]): string[] => hs.map((h) => `${h.key}@${h.versionId}`);
  const list = async (o: Parameters<KvMetadataStore["listVersions"]>[1]): Promise<VersionHeader[]> =>
    collect(store.listVersions("bk", o));
  assert.deepEqual(await list({}), expected);
  assert.deepEqual(ids(await list({ prefix: "a/" })), ids(expected.filter((h) => h.key === "a/b")));
  assert.deepEqual(ids(await list({ afterKey: "a" })), ids(expected.filter((h) => h.key !== "a")));
  const aVersions = expected.filter((h) => h.key === "a");
  assert.deepEqual(
    ids(await list({ afterKey: "a", afterVersionId: aVersions[0]!.versionId })),
    ids(expected.slice(1)),
  );
  assert.deepEqual(
    ids(await list({ afterKey: "a", afterVersionId: aVersions[2]!.versionId })),
    ids(expected.slice(3)),
  );
  // An unknown version id resumes after the whole key.
  assert.deepEqual(ids(await list({ afterKey: "a", afterVersionId: "gone" })), ids(expected.slice(3)));
  assert.deepEqual(ids(await list({ limit: 4 })), ids(expected.slice(0, 4)));
  // Paging by (key, versionId) markers, as S3 ListObjectVersions does.
  const paged: VersionHeader[] = [];
  let marker: { afterKey: string; afterVersionId: string } | undefined;
  for (;;) {
    const page = await list({ limit: 2, ...marker });
    if (page.length === 0) break;
    paged.push(...page);
    const last = page[page.length - 1]!;
    marker = { afterKey: last.key, afterVersionId: last.versionId };
  }
  assert.deepEqual(paged, expected);
  await store.close();
});

test("versions: delete markers, partSizes, replace at the same sequence, deleteVersion", async () => {
  const store = await open(newDir());
  const m: ManifestEntry[] = [
    { chunkId: chunkId(), offset: 0, length: 512 },
    { chunkId: chunkId(), offset: 7, length: 2 ** 40 },
  ];
  const userMetadata = JSON.parse('{"__proto__": "p", "constructor": "c", "ü": "ß"}') as Record<string, string>;
  const [v1] = await putVersions(store, [{ bucket: "bk", key: "k", extra: { manifest: m, partSizes: [5, 5, 1], userMetadata } }]);
  assert.equal(Object.keys((await store.getCurrent("bk", "k"))!.userMetadata).length, 3);
  assert.deepEqual(await store.getCurrent("bk", "k"), v1);
  const [dm] = await putVersions(store, [
    { bucket: "bk", key: "k", extra: { deleteMarker: true, etag: "", size: 0, versionId: "marker" } },
  ]);
  assert.deepEqual(await store.getCurrent("bk", "k"), dm);
  assert.deepEqual((await collect(store.listCurrent("bk")))[0], headerOf(dm!));
  // Replace the version at v1's sequence with another version id: the old id no longer resolves.
  const v1b = { ...v1!, versionId: "renamed", size: 1 };
  await put(store, (tx) => tx.putVersion(v1b));
  assert.equal(await store.getVersion("bk", "k", v1!.versionId), undefined);
  assert.deepEqual(await store.getVersion("bk", "k", "renamed"), v1b);
  assert.deepEqual(
    (await store.versionsOfKey("bk", "k")).map((h) => h.versionId),
    ["marker", "renamed"],
  );
  await put(store, (tx) => tx.deleteVersion("bk", "k", dm!.sequence));
  assert.deepEqual(await store.getCurrent("bk", "k"), v1b);
  assert.equal(await store.getVersion("bk", "k", "marker"), undefined);
  await put(store, (tx) => tx.deleteVersion("bk", "k", 123456)); // absent: no-op
  await put(store, (tx) => tx.deleteVersion("bk", "k", v1b.sequence));
  assert.equal(await store.getCurrent("bk", "k"), undefined);
  assert.deepEqual(await collect(store.listVersions("bk")), []);
  await store.close();
});

test("two versions with the same id (e.g. 'null'): getVersion returns the newest", async () => {
  const store = await open(newDir());
  const [a, b] = await putVersions(store, [
    { bucket: "bk", key: "k", extra: { versionId: "null" } },
    { bucket: "bk", key: "k", extra: { versionId: "null" } },
  ]);
  assert.deepEqual(await store.getVersion("bk", "k", "null"), b);
  await put(store, (tx) => tx.deleteVersion("bk", "k", b!.sequence));
  assert.deepEqual(await store.getVersion("bk", "k", "null"), a);
  await store.close();
});

test("names with NUL are refused", async () => {
  const store = await open(newDir());
  await rejectsWith(store.getCurrent("bk", "a\0b"), "STOWAGE_INVALID_NAME");
  await rejectsWith(
    put(store, (tx) => tx.putVersion(version("bk", "a\0", 1))),
    "STOWAGE_INVALID_NAME",
  );
  await rejectsWith(
    put(store, (tx) => tx.putBucket({ name: "b\0", created: 0, versioning: "enabled" })),
    "STOWAGE_INVALID_NAME",
  );
  await rejectsWith(collect(store.listCurrent("bk", { prefix: "x\0" })), "STOWAGE_INVALID_NAME");
  await rejectsWith(
    put(store, (tx) => tx.putVersion(version("bk", "a", 1, { versionId: "v\0" }))),
    "STOWAGE_INVALID_ARGUMENT",
  );
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Transactions

test("transaction point reads see own writes; listings see committed state", async () => {
  const store = await open(newDir());
  const [committed] = await putVersions(store, [{ bucket: "bk", key: "old" }]);
  const id = chunkId();
  await store.transaction(async (tx) => {
    tx.putBucket({ name: "bk", created: 1, versioning: "enabled" });
    assert.deepEqual(await tx.getBucket("bk"), { name: "bk", created: 1, versioning: "enabled" });
    assert.equal(await store.getBucket("bk"), undefined); // not committed yet
    const v = version("bk", "new", await tx.nextSequence());
    tx.putVersion(v);
    assert.deepEqual(await tx.getCurrent("bk", "new"), v);
    assert.deepEqual(await tx.getVersion("bk", "new", v.versionId), v);
    assert.deepEqual(await tx.versionsOfKey("bk", "new"), [headerOf(v)]);
    // Deleting the committed version hides it from point reads in the tx.
    tx.deleteVersion("bk", "old", committed!.sequence);
    assert.equal(await tx.getCurrent("bk", "old"), undefined);
    assert.deepEqual(await tx.versionsOfKey("bk", "old"), []);
    // A newer version in the tx shadows... and deleting it again reveals the committed one's absence.
    assert.equal(await tx.bucketHasContent("bk"), true);
    // Listings: committed state only.
    assert.deepEqual(
      (await collect(tx.listCurrent("bk"))).map((h) => h.key),
      ["old"],
    );
    tx.putChunk(id, chunkRec(0));
    assert.deepEqual(await tx.getChunk(id), chunkRec(0));
    await tx.addRefs([{ chunkId: id, offset: 0, length: 1 }], 1);
    assert.equal((await tx.getChunk(id))!.refs, 1);
    assert.deepEqual(await collect(tx.listChunks()), []);
    tx.addCounters({ plainPuts: 2 });
    tx.addCounters({ plainPuts: 1, ingestedBytes: 10 });
    assert.deepEqual(await tx.getCounters(), { backendPuts: 0, backendBytesWritten: 0, plainPuts: 3, ingestedBytes: 10 });
    tx.putPack({ id: PACK, blobKey: "packs/x", size: 1, entries: 1, created: 1, state: "live" });
    assert.equal((await tx.getPack(PACK))!.blobKey, "packs/x");
    tx.putUpload({ bucket: "bk", key: "mp", uploadId: "u1", initiated: 1, contentType: "t", userMetadata: {} });
    assert.equal((await tx.getUpload("bk", "u1"))!.key, "mp");
    tx.putPart({ uploadId: "u1", partNumber: 1, size: 1, etag: "e", lastModified: 1, manifest: [] });
    assert.equal((await tx.getPart("u1", 1))!.etag, "e");
    tx.deletePart("u1", 1);
    assert.equal(await tx.getPart("u1", 1), undefined);
  });
  assert.deepEqual(
    (await collect(store.listCurrent("bk"))).map((h) => h.key),
    ["new"],
  );
  assert.equal((await store.getChunk(id))!.refs, 1);
  assert.equal((await store.getCounters()).plainPuts, 3);
  await store.close();
});

test("atomicity: a transaction that throws writes nothing; a committed one is all there after reopen", async () => {
  const dir = newDir();
  let store = await open(dir);
  const id = chunkId();
  await put(store, (tx) => tx.putChunk(id, chunkRec(0)));
  await assert.rejects(
    store.transaction(async (tx) => {
      tx.putBucket({ name: "bk", created: 1, versioning: "enabled" });
      tx.putVersion(version("bk", "k", await tx.nextSequence()));
      await tx.addRefs([{ chunkId: id, offset: 0, length: 1 }], 1);
      tx.addCounters({ backendPuts: 5 });
      tx.deleteChunk(chunkId());
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(await store.getBucket("bk"), undefined);
  assert.equal(await store.getCurrent("bk", "k"), undefined);
  assert.equal((await store.getChunk(id))!.refs, 0);
  assert.equal((await store.getCounters()).backendPuts, 0);
  assert.equal(await store.bucketHasContent("bk"), false);

  const result = await store.transaction(async (tx) => {
    tx.putBucket({ name: "bk", created: 1, versioning: "enabled" });
    for (let i = 0; i < 100; i++) tx.putVersion(version("bk", `k${i}`, await tx.nextSequence()));
    tx.putUpload({ bucket: "bk", key: "up", uploadId: "u", initiated: 3, contentType: "x", userMetadata: { a: "b" } });
    tx.addCounters({ backendPuts: 1 });
    return 42;
  });
  assert.equal(result, 42);
  await store.close();
  store = await open(dir);
  assert.equal((await collect(store.listCurrent("bk"))).length, 100);
  assert.ok(await store.getBucket("bk"));
  assert.ok(await store.getUpload("bk", "u"));
  assert.equal((await store.getCounters()).backendPuts, 1);
  await store.close();
});

/** Like noSyncFs, but log syncs wait while `hold` is set. */
function heldSyncFs(): { fs: FileSystem; hold: () => void; release: () => void } {
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  const sync = async (f: WritableFile): Promise<void> => {
    if (gate !== undefined) await gate;
    await f.sync();
  };
  const wrapFile = (f: WritableFile): WritableFile =>
    new Proxy(f, {
      get(target, prop) {
        if (prop === "sync") return () => sync(target);
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  const fs = new Proxy(nodeFileSystem, {
    get(target, prop) {
      if (prop === "createWritable") return (file: string) => wrapFile(target.createWritable(file));
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return {
    fs,
    hold: () => (gate = new Promise<void>((r) => (open = r))),
    release: () => {
      gate = undefined;
      open?.();
    },
  };
}

test("transactions pipeline: the next one builds on a commit not yet durable, which readers outside do not see", async () => {
  const held = heldSyncFs();
  const store = await open(newDir(), { ...BASE_KV, fs: held.fs });
  await store.transaction(async (tx) => tx.putBucket({ name: "first", created: 1, versioning: "unversioned" }));
  held.hold();
  const done: string[] = [];
  const a = store.transaction(async (tx) => {
    tx.addCounters({ plainPuts: 1 });
    tx.putBucket({ name: "second", created: 2, versioning: "unversioned" });
  });
  void a.then(() => done.push("a"));
  // b runs while a's log sync is held: it reads a's rows (point reads, listings, counters).
  let seen: { puts: number; bucket: boolean; listed: string[] } | undefined;
  const b = store.transaction(async (tx) => {
    seen = {
      puts: (await tx.getCounters()).plainPuts,
      bucket: (await tx.getBucket("second")) !== undefined,
      listed: (await tx.listBuckets()).map((x) => x.name),
    };
    tx.addCounters({ plainPuts: 1 });
  });
  void b.then(() => done.push("b"));
  // c writes nothing, but its answer rests on a: it resolves only once a is durable.
  const c = store.transaction(async (tx) => (await tx.getBucket("second")) !== undefined);
  void c.then(() => done.push("c"));
  for (let i = 0; i < 20 && seen === undefined; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(seen, { puts: 1, bucket: true, listed: ["first", "second"] });
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(done, [], "nothing resolves before its commit (and what it read) is durable");
  assert.equal((await store.getCounters()).plainPuts, 0, "readers outside transactions see durable state only");
  assert.equal(await store.getBucket("second"), undefined);
  assert.deepEqual((await store.listBuckets()).map((x) => x.name), ["first"]);
  held.release();
  await Promise.all([a, b]);
  assert.equal(await c, true);
  assert.deepEqual(done.slice(0, 2), ["a", "b"]);
  assert.equal((await store.getCounters()).plainPuts, 2);
  assert.deepEqual((await store.listBuckets()).map((x) => x.name), ["first", "second"]);
  await store.close();
});

test("transactions are serialized; nested transactions and finished tx objects are refused", async () => {
  const store = await open(newDir());
  const order: string[] = [];
  const slow = store.transaction(async (tx) => {
    order.push("a-start");
    await new Promise((r) => setTimeout(r, 20));
    tx.addCounters({ plainPuts: 1 });
    order.push("a-end");
  });
  const fast = store.transaction(async (tx) => {
    order.push("b-start");
    assert.equal((await tx.getCounters()).plainPuts, 1); // sees a's commit
    tx.addCounters({ plainPuts: 1 });
    order.push("b-end");
  });
  await Promise.all([slow, fast]);
  assert.deepEqual(order, ["a-start", "a-end", "b-start", "b-end"]);
  assert.equal((await store.getCounters()).plainPuts, 2);

  await rejectsWith(
    store.transaction(async () => {
      await store.transaction(async () => undefined);
    }),
    "STOWAGE_INVALID_ARGUMENT",
    /inside a transaction/,
  );
  let leaked: MetaTx | undefined;
  await store.transaction(async (tx) => {
    leaked = tx;
  });
  assert.throws(() => leaked!.addCounters({ plainPuts: 1 }), (e: unknown) => isStowageError(e, "STOWAGE_INVALID_ARGUMENT"));
  await store.close();
  await rejectsWith(store.transaction(async () => undefined), "STOWAGE_KV_CLOSED");
  await store.close(); // idempotent
});

test("close waits for running and queued transactions, then refuses new ones", async () => {
  const dir = newDir();
  let store = await open(dir);
  const first = store.transaction(async (tx) => {
    await new Promise((r) => setTimeout(r, 20));
    tx.addCounters({ plainPuts: 1 });
  });
  const second = store.transaction(async (tx) => {
    tx.addCounters({ plainPuts: 1 });
  });
  const closing = store.close();
  await rejectsWith(store.transaction(async () => undefined), "STOWAGE_KV_CLOSED");
  await Promise.all([first, second, closing]);
  store = await open(dir);
  assert.equal((await store.getCounters()).plainPuts, 2);
  await store.close();
});

test("nextSequence: strictly increasing across reopen and after aborted transactions", async () => {
  const dir = newDir();
  let store = await open(dir);
  const seen: number[] = [];
  await store.transaction(async (tx) => {
    seen.push(await tx.nextSequence(), await tx.nextSequence());
  });
  await assert.rejects(
    store.transaction(async (tx) => {
      seen.push(await tx.nextSequence());
      throw new Error("abort");
    }),
  );
  await store.transaction(async (tx) => {
    seen.push(await tx.nextSequence());
  });
  await assert.rejects(
    store.transaction(async (tx) => {
      seen.push(await tx.nextSequence(), await tx.nextSequence());
      throw new Error("abort after use, then restart");
    }),
  );
  await store.close();
  store = await open(dir);
  await store.transaction(async (tx) => {
    seen.push(await tx.nextSequence());
  });
  // A version written with an explicit, larger sequence is never handed out again.
  await put(store, (tx) => tx.putVersion(version("bk", "k", 1000)));
  await store.close();
  store = await open(dir);
  await store.transaction(async (tx) => {
    seen.push(await tx.nextSequence());
  });
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `not increasing: ${seen.join(",")}`);
  assert.ok(seen[seen.length - 1]! > 1000);
  assert.ok(seen[0]! >= 1);
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Chunks, refs, packs, counters

test("chunks: put/get/list in id order, addRefs counts repeated entries, errors name the chunk", async () => {
  const dir = newDir();
  let store = await open(dir);
  const ids = [chunkId(300), chunkId(2), chunkId(0x10000), chunkId(7)];
  await put(store, (tx) => {
    for (const id of ids) tx.putChunk(id, chunkRec(0));
  });
  const e = (id: Buffer): ManifestEntry => ({ chunkId: id, offset: 0, length: 512 });
  await store.transaction((tx) => tx.addRefs([e(ids[0]!), e(ids[1]!), e(ids[0]!), e(ids[0]!)], 1));
  assert.equal((await store.getChunk(ids[0]!))!.refs, 3);
  assert.equal((await store.getChunk(ids[1]!))!.refs, 1);
  await store.transaction((tx) => tx.addRefs([e(ids[0]!)], -1));
  assert.equal((await store.getChunk(ids[0]!))!.refs, 2);

  const missing = chunkId(999_999);
  await rejectsWith(
    store.transaction((tx) => tx.addRefs([e(ids[0]!), e(missing)], 1)),
    "STOWAGE_INTEGRITY",
    new RegExp(missing.toString("hex")),
  );
  await rejectsWith(
    store.transaction((tx) => tx.addRefs([e(ids[1]!), e(ids[1]!)], -1)),
    "STOWAGE_INTEGRITY",
    new RegExp(`${ids[1]!.toString("hex")}.*negative`),
  );
  // A failed addRefs applies nothing, even when the transaction catches the error and commits.
  await store.transaction(async (tx) => {
    await assert.rejects(tx.addRefs([e(ids[0]!), e(ids[2]!), e(ids[2]!), e(missing)], 1));
    await tx.addRefs([e(ids[3]!)], 1);
  });
  assert.equal((await store.getChunk(ids[0]!))!.refs, 2);
  assert.equal((await store.getChunk(ids[2]!))!.refs, 0);
  assert.equal((await store.getChunk(ids[3]!))!.refs, 1);

  await put(store, (tx) => tx.deleteChunk(ids[2]!));
  await store.close();
  store = await open(dir);
  const listed = await collect(store.listChunks());
  const expectedIds = [ids[0]!, ids[1]!, ids[3]!].sort(Buffer.compare);
  assert.deepEqual(
    listed.map(([id]) => id.toString("hex")),
    expectedIds.map((id) => id.toString("hex")),
  );
  assert.deepEqual(listed.find(([id]) => id.equals(ids[0]!))![1], chunkRec(2));
  assert.equal(await store.getChunk(ids[2]!), undefined);
  await rejectsWith(
    put(store, (tx) => tx.putChunk(Buffer.alloc(31), chunkRec())),
    "STOWAGE_INVALID_ARGUMENT",
  );
  await store.close();
});

test("packs and counters", async () => {
  const dir = newDir();
  let store = await open(dir);
  const ids = ["ff" + "0".repeat(30), "0".repeat(31) + "1", "8".repeat(32)];
  await put(store, (tx) => {
    for (const [i, id] of ids.entries()) {
      tx.putPack({ id, blobKey: `packs/${id}`, size: 1 << 24, entries: i, created: 100 + i, state: "live" });
    }
    tx.addCounters({ backendPuts: 3, backendBytesWritten: 3 << 24 });
  });
  await put(store, (tx) => {
    tx.putPack({ id: ids[2]!, blobKey: "packs/x", size: 5, entries: 1, created: 1, state: "retired", retiredAt: 77 });
    tx.deletePack(ids[1]!);
    tx.addCounters({ plainPuts: 9, ingestedBytes: 2 ** 40 });
  });
  await store.close();
  store = await open(dir);
  assert.deepEqual(
    (await collect(store.listPacks())).map((p) => p.id),
    [ids[2]!, ids[0]!],
  );
  assert.deepEqual(await store.getPack(ids[2]!), {
    id: ids[2]!,
    blobKey: "packs/x",
    size: 5,
    entries: 1,
    created: 1,
    state: "retired",
    retiredAt: 77,
  });
  assert.equal(await store.getPack(ids[1]!), undefined);
  assert.equal(await store.getPack("not-hex"), undefined);
  assert.deepEqual(await store.getCounters(), {
    backendPuts: 3,
    backendBytesWritten: 3 << 24,
    plainPuts: 9,
    ingestedBytes: 2 ** 40,
  });
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Uploads, parts, manifests, bucketHasContent

test("uploads and parts; listManifests covers versions and parts; bucketHasContent", async () => {
  const store = await open(newDir());
  assert.equal(await store.bucketHasContent("bk"), false);
  const up = (key: string, uploadId: string): UploadRecord => ({
    bucket: "bk",
    key,
    uploadId,
    initiated: 10,
    contentType: "video/mp4",
    userMetadata: { camera: "A" },
  });
  await put(store, (tx) => {
    tx.putUpload(up("b", "u1"));
    tx.putUpload(up("a", "u9"));
    tx.putUpload(up("a", "u2"));
    tx.putUpload(up("a/x", "u3"));
    tx.putUpload({ ...up("z", "other"), bucket: "bk2" });
  });
  assert.equal(await store.bucketHasContent("bk"), true);
  assert.equal(await store.bucketHasContent("bk3"), false);
  const ids = async (o?: { prefix?: string; after?: string; limit?: number }): Promise<string[]> =>
    (await collect(store.listUploads("bk", o))).map((u) => `${u.key}:${u.uploadId}`);
  assert.deepEqual(await ids(), ["a:u2", "a:u9", "a/x:u3", "b:u1"]);
  assert.deepEqual(await ids({ prefix: "a/" }), ["a/x:u3"]);
  assert.deepEqual(await ids({ after: "a" }), ["a/x:u3", "b:u1"]);
  assert.deepEqual(await ids({ limit: 1 }), ["a:u2"]);
  assert.deepEqual(await store.getUpload("bk", "u9"), up("a", "u9"));
  assert.equal(await store.getUpload("bk2", "u9"), undefined);
  // Moving an upload id to another key leaves one record.
  await put(store, (tx) => tx.putUpload(up("c", "u9")));
  assert.deepEqual(await ids(), ["a:u2", "a/x:u3", "b:u1", "c:u9"]);

  const c1 = chunkId();
  const part = (n: number): PartRecord => ({
    uploadId: "u1",
    partNumber: n,
    size: 5 << 20,
    etag: `md5-${n}`,
    lastModified: 1000 + n,
    manifest: [{ chunkId: c1, offset: n, length: 10 }],
  });
  await put(store, (tx) => {
    for (const n of [10, 2, 1, 300]) tx.putPart(part(n));
    tx.putPart({ ...part(1), uploadId: "u11" }); // "u1" is a prefix of "u11": kept apart
  });
  assert.deepEqual(
    (await collect(store.listParts("u1"))).map((p) => p.partNumber),
    [1, 2, 10, 300],
  );
  assert.deepEqual(await store.getPart("u1", 10), part(10));
  assert.equal(await store.getPart("u1", 3), undefined);

  const [v] = await putVersions(store, [{ bucket: "bk", key: "obj", extra: { manifest: [{ chunkId: c1, offset: 0, length: 3 }] } }]);
  const manifests = await collect(store.listManifests());
  assert.deepEqual(
    manifests.map((m) => m.owner),
    [`bk/obj@${v!.versionId}`, "upload u1 part 1", "upload u1 part 2", "upload u1 part 10", "upload u1 part 300", "upload u11 part 1"],
  );
  assert.deepEqual(manifests[0]!.manifest, v!.manifest);
  assert.deepEqual(manifests[3]!.manifest, part(10).manifest);

  await put(store, (tx) => {
    for (const n of [10, 2, 1, 300]) tx.deletePart("u1", n);
    for (const u of ["u1", "u2", "u3", "u9"]) tx.deleteUpload("bk", u);
    tx.deleteUpload("bk", "never-existed");
    tx.deleteVersion("bk", "obj", v!.sequence);
  });
  assert.deepEqual(await collect(store.listParts("u1")), []);
  assert.deepEqual(await ids(), []);
  assert.equal(await store.bucketHasContent("bk"), false);
  assert.equal(await store.bucketHasContent("bk2"), true);
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Consistency of running listings, format errors

test("a running listing sees the state it started with", async () => {
  const store = await open(newDir());
  await putVersions(store, ["a", "c", "e"].map((key) => ({ bucket: "bk", key })));
  const seen: string[] = [];
  for await (const h of store.listCurrent("bk")) {
    seen.push(h.key);
    if (h.key === "a") {
      await putVersions(store, ["b", "d", "f"].map((key) => ({ bucket: "bk", key })));
      await put(store, async (tx) => {
        const cur = await tx.getCurrent("bk", "e");
        tx.deleteVersion("bk", "e", cur!.sequence);
      });
    }
  }
  assert.deepEqual(seen, ["a", "c", "e"]);
  assert.deepEqual(
    (await collect(store.listCurrent("bk"))).map((h) => h.key),
    ["a", "b", "c", "d", "f"],
  );
  await store.close();
});

test("unknown record versions fail with STOWAGE_FORMAT_VERSION, damaged records with STOWAGE_KV_CORRUPTION", async () => {
  const dir = newDir();
  let store = await open(dir);
  const id = chunkId();
  await put(store, (tx) => {
    tx.putBucket({ name: "good", created: 1, versioning: "enabled" });
    tx.putChunk(id, chunkRec());
  });
  await putVersions(store, [{ bucket: "bk", key: "k" }]);
  await store.close();
  // Damage rows directly (this test knows the layout of docs/FORMATS.md).
  const kv = await openKv(dir, BASE_KV);
  await kv.put(Buffer.from("Bnewer"), Buffer.from([3, 0x7b, 0x7d])); // bucket records are versions 1 and 2
  await kv.put(Buffer.from("Bjunk"), Buffer.from([1, 0x7b]));
  const chunkRow = Buffer.concat([Buffer.from("C"), id]);
  const chunkValue = (await kv.get(chunkRow))!;
  await kv.put(chunkRow, chunkValue.subarray(0, chunkValue.length - 1));
  const vrow = (await kv.iterator({ prefix: "V" }).all())[0]![0];
  const mrow = Buffer.from(vrow);
  mrow[0] = "M".charCodeAt(0);
  await kv.del(mrow);
  await kv.close();

  store = await open(dir);
  assert.ok(await store.getBucket("good"));
  await rejectsWith(store.getBucket("newer"), "STOWAGE_FORMAT_VERSION");
  await rejectsWith(store.getBucket("junk"), "STOWAGE_KV_CORRUPTION");
  await rejectsWith(store.listBuckets(), "STOWAGE_KV_CORRUPTION"); // "Bjunk" is met before "Bnewer"
  await rejectsWith(store.getChunk(id), "STOWAGE_KV_CORRUPTION", /truncated/);
  await rejectsWith(store.getCurrent("bk", "k"), "STOWAGE_KV_CORRUPTION", /manifest/);
  assert.equal((await collect(store.listCurrent("bk"))).length, 1); // listing does not read manifests
  await store.close();

  const kv2 = await openKv(dir, BASE_KV);
  await kv2.put(Buffer.from("Sformat"), Buffer.from([2, ...Buffer.from("stowage/meta")]));
  await kv2.close();
  await rejectsWith(open(dir), "STOWAGE_FORMAT_VERSION");
});

// ---------------------------------------------------------------------------------------------
// listCurrent skips older versions by seeking

test("listCurrent over a key with 5,000 versions reads one row per key", async () => {
  const dir = newDir();
  let store = await open(dir);
  await putVersions(store, [{ bucket: "bk", key: "a" }]);
  await store.transaction(async (tx) => {
    for (let i = 0; i < 5000; i++) {
      tx.putVersion(version("bk", "hot", await tx.nextSequence(), { userMetadata: { pad: "x".repeat(40) } }));
    }
  });
  await putVersions(store, [{ bucket: "bk", key: "hot/1" }, { bucket: "bk", key: "hot0" }, { bucket: "bk", key: "z" }]);
  // Reopen: the rows are now in a table, read through a cold block cache.
  await store.close();
  store = await open(dir);
  const blocks = (): number => {
    const c = store.kvStats().blockCache;
    return c.hits + c.misses;
  };
  const r0 = store.readStats();
  const b0 = blocks();
  const current = await collect(store.listCurrent("bk"));
  const r1 = store.readStats();
  const b1 = blocks();
  assert.deepEqual(
    current.map((h) => h.key),
    ["a", "hot", "hot/1", "hot0", "z"],
  );
  assert.equal(current[1]!.sequence, (await store.versionsOfKey("bk", "hot"))[0]!.sequence);
  assert.equal(r1.rowsRead - r0.rowsRead, 5, "listCurrent decoded one row per key");
  assert.ok(r1.seeks - r0.seeks <= 5);
  const listCurrentBlocks = b1 - b0;

  const all = await collect(store.listVersions("bk"));
  assert.equal(all.length, 5004);
  const listVersionsBlocks = blocks() - b1;
  // The kv store itself confirms it: the skip is a seek, not a scan of the 5,000 rows.
  assert.ok(listVersionsBlocks >= 50, `a full scan touches many blocks (${listVersionsBlocks})`);
  assert.ok(
    listCurrentBlocks * 5 < listVersionsBlocks && listCurrentBlocks <= 15,
    `listCurrent touched ${listCurrentBlocks} blocks, listVersions ${listVersionsBlocks}`,
  );
  await store.close();
});

// ---------------------------------------------------------------------------------------------
// Randomized model test

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  next(): number {
    return this.#next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

interface Model {
  /** bucket → key → versions (any order; sorted when compared). */
  versions: Map<string, Map<string, ObjectVersion[]>>;
  chunks: Map<string, ChunkRecord>;
  uploads: Map<string, UploadRecord>;
  parts: Map<string, Map<number, PartRecord>>;
  lastSequence: number;
  counters: { plainPuts: number; ingestedBytes: number };
}

function cloneModel(m: Model): Model {
  return {
    versions: new Map([...m.versions].map(([b, keys]) => [b, new Map([...keys].map(([k, vs]) => [k, [...vs]]))])),
    chunks: new Map([...m.chunks].map(([k, c]) => [k, { ...c }])),
    uploads: new Map(m.uploads),
    parts: new Map([...m.parts].map(([u, ps]) => [u, new Map(ps)])),
    lastSequence: m.lastSequence,
    counters: { ...m.counters },
  };
}

const MODEL_BUCKETS = ["b1", "b2"];
const MODEL_KEYS = ["a", "a/b", "a\u00ff", "ab", "a/b/c", "é", "\uffff", "😀", "k1", "k10", "k2", "x y", "z"];

function sortedVersions(vs: readonly ObjectVersion[]): ObjectVersion[] {
  return [...vs].sort((x, y) => y.sequence - x.sequence);
}

function modelKeys(m: Model, bucket: string): string[] {
  const keys = m.versions.get(bucket);
  if (keys === undefined) return [];
  return [...keys].filter(([, vs]) => vs.length > 0).map(([k]) => k).sort(byteOrder);
}

function modelGetVersion(m: Model, bucket: string, key: string, versionId: string): ObjectVersion | undefined {
  return sortedVersions(m.versions.get(bucket)?.get(key) ?? []).find((v) => v.versionId === versionId);
}

/** Compares everything the store shows with the model (point reads of every key when `full`, else of a few). */
async function checkAgainstModel(store: KvMetadataStore, m: Model, rng: Rng, full: boolean): Promise<void> {
  for (const bucket of MODEL_BUCKETS) {
    const keys = modelKeys(m, bucket);
    const all = keys.flatMap((k) => sortedVersions(m.versions.get(bucket)!.get(k)!));
    const current = keys.map((k) => headerOf(sortedVersions(m.versions.get(bucket)!.get(k)!)[0]!));
    assert.deepEqual(await collect(store.listCurrent(bucket)), current, `listCurrent ${bucket}`);
    assert.deepEqual(await collect(store.listVersions(bucket)), all.map(headerOf), `listVersions ${bucket}`);

    // Random listing options.
    const prefix = rng.chance(0.5) ? rng.pick(["a", "a/", "k1", "", "\uffff", "q"]) : undefined;
    const after = rng.chance(0.5) ? rng.pick([...MODEL_KEYS, "", "a/", "k"]) : undefined;
    const limit = rng.chance(0.5) ? rng.int(5) : undefined;
    const cur = current
      .filter((h) => prefix === undefined || h.key.startsWith(prefix))
      .filter((h) => after === undefined || byteOrder(h.key, after) > 0)
      .slice(0, limit);
    assert.deepEqual(
      await collect(store.listCurrent(bucket, { prefix, after, limit })),
      cur,
      `listCurrent ${bucket} ${JSON.stringify({ prefix, after, limit })}`,
    );
    let vers = all.filter((v) => prefix === undefined || v.key.startsWith(prefix));
    let afterVersionId: string | undefined;
    if (after !== undefined && rng.chance(0.5) && all.length > 0) {
      const marker = rng.pick(all);
      afterVersionId = marker.versionId;
      // The first (newest) version with that id is the marker the store resolves.
      const resolved = modelGetVersion(m, bucket, marker.key, marker.versionId)!;
      vers = vers.filter((v) => {
        const c = byteOrder(v.key, marker.key);
        return c > 0 || (c === 0 && v.sequence < resolved.sequence);
      });
      assert.deepEqual(
        await collect(store.listVersions(bucket, { prefix, afterKey: marker.key, afterVersionId, limit })),
        vers.slice(0, limit).map(headerOf),
        `listVersions ${bucket} ${JSON.stringify({ prefix, marker: `${marker.key}@${afterVersionId}`, limit })}`,
      );
    } else {
      vers = vers.filter((v) => after === undefined || byteOrder(v.key, after) > 0);
      assert.deepEqual(
        await collect(store.listVersions(bucket, { prefix, afterKey: after, limit })),
        vers.slice(0, limit).map(headerOf),
        `listVersions ${bucket} ${JSON.stringify({ prefix, after, limit })}`,
      );
    }

    for (const key of full ? MODEL_KEYS : [rng.pick(MODEL_KEYS), rng.pick(MODEL_KEYS), rng.pick(MODEL_KEYS)]) {
      const vs = sortedVersions(m.versions.get(bucket)?.get(key) ?? []);
      assert.deepEqual(await store.versionsOfKey(bucket, key), vs.map(headerOf), `versionsOfKey ${bucket}/${key}`);
      assert.deepEqual(await store.getCurrent(bucket, key), vs[0], `getCurrent ${bucket}/${key}`);
      for (const v of vs) {
        assert.deepEqual(
          await store.getVersion(bucket, key, v.versionId),
          modelGetVersion(m, bucket, key, v.versionId),
          `getVersion ${bucket}/${key}@${v.versionId}`,
        );
      }
    }
    const hasContent = keys.length > 0 || [...m.uploads.values()].some((u) => u.bucket === bucket);
    assert.equal(await store.bucketHasContent(bucket), hasContent, `bucketHasContent ${bucket}`);
    const uploads = [...m.uploads.values()]
      .filter((u) => u.bucket === bucket)
      .sort((x, y) => byteOrder(x.key, y.key) || byteOrder(x.uploadId, y.uploadId));
    assert.deepEqual(await collect(store.listUploads(bucket)), uploads, `listUploads ${bucket}`);
  }

  const chunks = [...m.chunks].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const listed = await collect(store.listChunks());
  assert.deepEqual(
    listed.map(([id, r]) => [id.toString("hex"), r]),
    chunks,
    "listChunks",
  );
  for (const [hex, c] of chunks) {
    if (full || rng.chance(0.2)) assert.deepEqual(await store.getChunk(Buffer.from(hex, "hex")), c, `getChunk ${hex}`);
  }

  for (const [uploadId, u] of m.uploads) {
    assert.deepEqual(await store.getUpload(u.bucket, uploadId), u);
    const parts = [...(m.parts.get(uploadId) ?? new Map<number, PartRecord>()).values()].sort((a, b) => a.partNumber - b.partNumber);
    assert.deepEqual(await collect(store.listParts(uploadId)), parts, `listParts ${uploadId}`);
  }

  // Reference counts: every chunk's refs equals the entries referencing it in all manifests.
  const refs = new Map<string, number>();
  let manifests = 0;
  for await (const { manifest } of store.listManifests()) {
    manifests++;
    for (const e of manifest) refs.set(e.chunkId.toString("hex"), (refs.get(e.chunkId.toString("hex")) ?? 0) + 1);
  }
  let expectedManifests = 0;
  for (const keys of m.versions.values()) for (const vs of keys.values()) expectedManifests += vs.length;
  for (const ps of m.parts.values()) expectedManifests += ps.size;
  assert.equal(manifests, expectedManifests, "listManifests count");
  for (const [hex, c] of m.chunks) assert.equal(c.refs, refs.get(hex) ?? 0, `refs of ${hex}`);
  assert.deepEqual(await store.getCounters(), { backendPuts: 0, backendBytesWritten: 0, ...m.counters }, "counters");
}

/** One random transaction, applied to the store and to a copy of the model; returns the new model. */
async function randomTransaction(store: KvMetadataStore, m: Model, rng: Rng, step: number): Promise<Model> {
  const next = cloneModel(m);
  const abort = rng.chance(0.1);
  const ops = 1 + rng.int(4);
  const randomManifest = (): ManifestEntry[] => {
    const live = [...next.chunks.keys()];
    const n = live.length === 0 ? 0 : rng.int(4);
    const out: ManifestEntry[] = [];
    for (let i = 0; i < n; i++) out.push({ chunkId: Buffer.from(rng.pick(live), "hex"), offset: rng.int(100), length: 1 + rng.int(1 << 20) });
    return out;
  };
  const applyRefs = (manifest: readonly ManifestEntry[], delta: 1 | -1): void => {
    for (const e of manifest) next.chunks.get(e.chunkId.toString("hex"))!.refs += delta;
  };
  const tx = async (t: MetaTx): Promise<void> => {
    for (let op = 0; op < ops; op++) {
      const r = rng.int(100);
      if (r < 40) {
        // Put a version.
        const bucket = rng.pick(MODEL_BUCKETS);
        const key = rng.pick(MODEL_KEYS);
        const sequence = await t.nextSequence();
        assert.ok(sequence > next.lastSequence, "nextSequence increases");
        next.lastSequence = sequence;
        const manifest = randomManifest();
        const deleteMarker = rng.chance(0.15);
        const v: ObjectVersion = version(bucket, key, sequence, {
          versionId: rng.chance(0.2) ? "null" : `v${step}-${op}`,
          deleteMarker,
          manifest: deleteMarker ? [] : manifest,
          userMetadata: rng.chance(0.5) ? {} : { "x-step": String(step), ü: "ß" },
        });
        if (rng.chance(0.2)) v.partSizes = [1, 2, 3];
        await t.addRefs(v.manifest, 1);
        applyRefs(v.manifest, 1);
        t.putVersion(v);
        let keys = next.versions.get(bucket);
        if (keys === undefined) next.versions.set(bucket, (keys = new Map()));
        keys.set(key, [...(keys.get(key) ?? []), v]);
        assert.deepEqual(await t.getCurrent(bucket, key), v, "tx sees its own version");
      } else if (r < 55) {
        // Delete a version.
        const bucket = rng.pick(MODEL_BUCKETS);
        const key = rng.pick(MODEL_KEYS);
        const vs = next.versions.get(bucket)?.get(key) ?? [];
        if (vs.length === 0) continue;
        const victim = rng.pick(vs);
        t.deleteVersion(bucket, key, victim.sequence);
        await t.addRefs(victim.manifest, -1);
        applyRefs(victim.manifest, -1);
        next.versions.get(bucket)!.set(key, vs.filter((v) => v !== victim));
        assert.deepEqual(await t.getCurrent(bucket, key), sortedVersions(next.versions.get(bucket)!.get(key)!)[0]);
        assert.deepEqual(
          await t.versionsOfKey(bucket, key),
          sortedVersions(next.versions.get(bucket)!.get(key)!).map(headerOf),
        );
      } else if (r < 68) {
        // New chunk.
        const id = Buffer.alloc(32);
        for (let i = 0; i < 32; i++) id[i] = rng.int(256);
        const rec: ChunkRecord = { packId: PACK, offset: rng.int(1 << 26), storedLength: rng.int(1 << 22), rawLength: rng.int(1 << 22), method: rng.int(2), refs: 0 };
        t.putChunk(id, rec);
        next.chunks.set(id.toString("hex"), { ...rec });
      } else if (r < 73) {
        // Delete an unreferenced chunk.
        const free = [...next.chunks].filter(([, c]) => c.refs === 0);
        if (free.length === 0) continue;
        const [hex] = rng.pick(free);
        t.deleteChunk(Buffer.from(hex, "hex"));
        next.chunks.delete(hex);
        assert.equal(await t.getChunk(Buffer.from(hex, "hex")), undefined);
      } else if (r < 78) {
        // addRefs that must fail: a missing chunk, or a count going negative. Nothing is applied.
        const live = [...next.chunks.keys()];
        const bad = rng.chance(0.5) || live.length === 0 ? Buffer.alloc(32, 0xee) : Buffer.from(rng.pick(live), "hex");
        const manifest = [...randomManifest(), { chunkId: bad, offset: 0, length: 1 }];
        const delta = bad[0] === 0xee && bad[1] === 0xee ? 1 : -1;
        const wouldFail = delta === 1 || manifest.filter((e) => e.chunkId.equals(bad)).length > next.chunks.get(bad.toString("hex"))!.refs;
        if (!wouldFail) continue;
        await assert.rejects(t.addRefs(manifest, delta), (e: unknown) => isStowageError(e, "STOWAGE_INTEGRITY"));
      } else if (r < 86) {
        // New upload with parts.
        const bucket = rng.pick(MODEL_BUCKETS);
        const uploadId = `up${step}x${op}`;
        const u: UploadRecord = { bucket, key: rng.pick(MODEL_KEYS), uploadId, initiated: step, contentType: "c", userMetadata: {} };
        t.putUpload(u);
        next.uploads.set(uploadId, u);
        const parts = new Map<number, PartRecord>();
        for (let i = 0, n = rng.int(4); i < n; i++) {
          const manifest = randomManifest();
          const p: PartRecord = { uploadId, partNumber: 1 + rng.int(12), size: rng.int(1000), etag: `e${i}`, lastModified: step, manifest };
          const old = parts.get(p.partNumber);
          if (old !== undefined) {
            await t.addRefs(old.manifest, -1);
            applyRefs(old.manifest, -1);
          }
          await t.addRefs(manifest, 1);
          applyRefs(manifest, 1);
          t.putPart(p);
          parts.set(p.partNumber, p);
        }
        next.parts.set(uploadId, parts);
        assert.deepEqual(await t.getUpload(bucket, uploadId), u);
      } else if (r < 92) {
        // Complete or abort an upload: drop its parts and the record.
        const ids = [...next.uploads.keys()];
        if (ids.length === 0) continue;
        const uploadId = rng.pick(ids);
        const u = next.uploads.get(uploadId)!;
        for (const p of next.parts.get(uploadId)?.values() ?? []) {
          t.deletePart(uploadId, p.partNumber);
          await t.addRefs(p.manifest, -1);
          applyRefs(p.manifest, -1);
        }
        t.deleteUpload(u.bucket, uploadId);
        next.uploads.delete(uploadId);
        next.parts.delete(uploadId);
        assert.equal(await t.getUpload(u.bucket, uploadId), undefined);
      } else {
        const ingestedBytes = rng.int(1000);
        t.addCounters({ plainPuts: 1, ingestedBytes });
        next.counters.plainPuts += 1;
        next.counters.ingestedBytes += ingestedBytes;
        assert.deepEqual(await t.getCounters(), { backendPuts: 0, backendBytesWritten: 0, ...next.counters });
      }
    }
    for (const [hex, c] of next.chunks) {
      if (rng.chance(0.1)) assert.deepEqual(await t.getChunk(Buffer.from(hex, "hex")), c, "tx chunk view");
    }
    if (abort) throw new Error("planned abort");
  };
  try {
    await store.transaction(tx);
  } catch (err) {
    if (!abort || !(err instanceof Error) || err.message !== "planned abort") throw err;
    // Sequences taken by the aborted transaction are never handed out again.
    return { ...m, lastSequence: next.lastSequence };
  }
  assert.ok(!abort);
  return next;
}

test("randomized model test: transactions against an in-memory model, with reopens", async () => {
  const ENV_SEED = process.env.STOWAGE_SEED;
  const seed = ENV_SEED !== undefined && ENV_SEED !== "" ? Number(ENV_SEED) >>> 0 : Math.floor(Math.random() * 2 ** 31);
  const steps = process.env.STOWAGE_SOAK === "1" ? 2000 : 150;
  const dir = newDir();
  // Tiny memtables and tables: flushes and compactions happen during the run.
  const kvOptions: KvOptions = { fs: noSyncFs(), memtableSize: 8 * 1024, blockSize: 512, targetFileSize: 16 * 1024 };
  const rng = new Rng(seed);
  let store = await open(dir, kvOptions);
  let model: Model = {
    versions: new Map(),
    chunks: new Map(),
    uploads: new Map(),
    parts: new Map(),
    lastSequence: 0,
    counters: { plainPuts: 0, ingestedBytes: 0 },
  };
  try {
    for (let step = 0; step < steps; step++) {
      model = await randomTransaction(store, model, rng, step);
      await checkAgainstModel(store, model, rng, step % 10 === 0);
      if (rng.chance(0.05)) {
        await store.close();
        store = await open(dir, kvOptions);
        await checkAgainstModel(store, model, rng, true);
      }
    }
  } catch (err) {
    if (err instanceof Error) err.message = `[seed ${seed}] ${err.message}`;
    throw err;
  } finally {
    await store.close();
  }
});
