/**
 * Composition (src/store/compose.ts): random writes, truncation and appends as new versions that
 * reuse the previous version's chunks. A seeded model test against an in-memory Buffer (with S3
 * puts, gc and reopen mixed in; fsck clean throughout), and the storage cost of small edits of a
 * large object. STOWAGE_COMPOSE_SEED=n replays one seed; STOWAGE_SOAK=1 runs more operations.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { appendObject, commitNamespace, composeObject, truncateObject, writeAt, type ComposeEdit } from "../../src/store/compose.js";
import { collectGarbage } from "../../src/store/gc.js";
import { computeStats } from "../../src/store/stats.js";
import type { ObjectStore } from "../../src/store/store.js";
import { assertClean, bytes, makeStore, readAll } from "../store/helpers.js";
import { mulberry32 } from "../../src/util/random.js";

const SOAK = process.env.STOWAGE_SOAK === "1";
const ONE = process.env.STOWAGE_COMPOSE_SEED;
const SEEDS = ONE !== undefined ? [Number(ONE)] : SOAK ? [1, 2, 3, 4, 5, 6, 7, 8] : [1, 2, 3];
const OPS = SOAK ? 600 : 120;

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32((seed * 0x9e3779b1) >>> 0 || 1);
  }
  next(): number {
    return this.#next();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

/** Applies an edit to the model. */
function applyModel(model: Buffer, e: ComposeEdit): Buffer {
  if (e.kind === "truncate") {
    if (e.size <= model.length) return Buffer.from(model.subarray(0, e.size));
    return Buffer.concat([model, Buffer.alloc(e.size - model.length)]);
  }
  const data = Buffer.concat(e.data.map((d) => Buffer.from(d)));
  const at = e.kind === "write" ? e.offset : model.length;
  const out = Buffer.alloc(Math.max(model.length, at + data.length));
  model.copy(out);
  data.copy(out, at);
  return out;
}

function randomEdit(rng: Rng, size: number, seed: number): ComposeEdit {
  const r = rng.next();
  const len = rng.next() < 0.5 ? rng.int(1, 64) : rng.int(1, 40_000);
  const data = (): Uint8Array[] => {
    const b = rng.next() < 0.2 ? Buffer.alloc(len) : bytes(len, seed);
    // Several pieces, as the file system hands them over.
    const cut = rng.int(0, len);
    return [b.subarray(0, cut), b.subarray(cut)];
  };
  if (r < 0.55) return { kind: "write", offset: rng.int(0, size + (rng.next() < 0.2 ? 50_000 : 100)), data: data() };
  if (r < 0.75) return { kind: "append", data: data() };
  if (rng.next() < 0.6) return { kind: "truncate", size: rng.int(0, size) };
  return { kind: "truncate", size: size + rng.int(0, 70_000) };
}

for (const seed of SEEDS) {
  test(`compose model, seed ${seed}`, async () => {
    const t = await makeStore();
    try {
      const rng = new Rng(seed);
      await t.store.createBucket("plain");
      await t.store.createBucket("versioned", "enabled");
      const models = new Map<string, Buffer>();
      const keys = ["plain/a", "plain/dir/b", "versioned/c"];
      const log: string[] = [];
      for (let op = 0; op < OPS; op++) {
        const id = keys[rng.int(0, keys.length - 1)]!;
        const [bucket, ...rest] = id.split("/");
        const key = rest.join("/");
        const model = models.get(id) ?? Buffer.alloc(0);
        const r = rng.next();
        try {
          if (r < 0.05) {
            // An S3 put replaces the content.
            const data = bytes(rng.int(0, 30_000), seed * 1000 + op);
            await t.store.putObject(bucket!, key, [data]);
            models.set(id, data);
            log.push(`${op} put ${id} ${data.length}`);
          } else if (r < 0.08) {
            const n = rng.int(2, 3);
            const edits: ComposeEdit[] = [];
            let m = model;
            for (let i = 0; i < n; i++) {
              const e = randomEdit(rng, m.length, seed * 1000 + op * 7 + i);
              edits.push(e);
              m = applyModel(m, e);
            }
            await composeObject(t.store, bucket!, key, edits);
            models.set(id, m);
            log.push(`${op} batch ${id} ${edits.map((e) => e.kind).join(",")}`);
          } else if (r < 0.1) {
            await collectGarbage(t.store, { graceMs: 0 });
            log.push(`${op} gc`);
          } else if (r < 0.11) {
            await t.reopen();
            log.push(`${op} reopen`);
          } else {
            const e = randomEdit(rng, model.length, seed * 1000 + op);
            if (e.kind === "write") await writeAt(t.store, bucket!, key, e.offset, e.data);
            else if (e.kind === "append") await appendObject(t.store, bucket!, key, e.data);
            else await truncateObject(t.store, bucket!, key, e.size);
            models.set(id, applyModel(model, e));
            log.push(`${op} ${e.kind} ${id} ${e.kind === "write" ? `@${e.offset}+${e.data.reduce((n, d) => n + d.length, 0)}` : e.kind === "truncate" ? e.size : ""}`);
          }
          const want = models.get(id);
          if (want !== undefined) {
            const got = await readAll(t.store, bucket!, key);
            assert.equal(got.length, want.length, "size");
            assert.ok(got.equals(want), "content");
            const head = await t.store.headObject(bucket!, key);
            assert.equal(head.size, want.length);
            if (!head.etag.endsWith("-1")) assert.equal(head.etag, createHash("md5").update(want).digest("hex"), "a plain ETag is the content's MD5");
          }
          if (op % 40 === 39) await assertClean(t.store);
        } catch (err) {
          throw new Error(`seed ${seed} op ${op} failed: ${(err as Error).message}\nlast ops:\n${log.slice(-10).join("\n")}`, { cause: err });
        }
      }
      await assertClean(t.store);
      await collectGarbage(t.store, { graceMs: 0 });
      await assertClean(t.store);
      for (const [id, want] of models) {
        const [bucket, ...rest] = id.split("/");
        assert.ok((await readAll(t.store, bucket!, rest.join("/"))).equals(want), `${id} after gc`);
      }
    } finally {
      await t.close();
    }
  });
}

async function bucketBytesWritten(store: ObjectStore): Promise<number> {
  return (await store.meta.getCounters()).backendBytesWritten;
}

test("a 1-byte overwrite of a 64 MiB object stores at most a few MiB", async () => {
  // Default chunker (256 KiB / 1 MiB / 4 MiB) and pack size (16 MiB).
  const t = await makeStore({ chunker: { minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024 }, packTargetSize: 16 * 1024 * 1024 });
  try {
    await t.store.createBucket("big");
    const size = 64 * 1024 * 1024;
    const data = bytes(size, 7);
    await t.store.putObject("big", "file", [data]);
    const before = await computeStats(t.meta);
    const written0 = await bucketBytesWritten(t.store);
    const entries0 = (await t.meta.getCurrent("big", "file"))!.manifest.length;
    const results = [];
    for (const at of [size / 2 + 12345, 1000, size - 1]) {
      results.push(await writeAt(t.store, "big", "file", at, Buffer.from([data[at]! ^ 0xff])));
      data[at] = data[at]! ^ 0xff;
    }
    const written = (await bucketBytesWritten(t.store)) - written0;
    const after = await computeStats(t.meta);
    console.log(`# three 1-byte overwrites of 64 MiB: ingested ${results.map((r) => r.ingestedBytes).join(", ")} bytes; ${written} bytes to the bucket; manifest ${entries0} -> ${(await t.meta.getCurrent("big", "file"))!.manifest.length} entries`);
    for (const r of results) assert.ok(r.ingestedBytes <= 4 * 1024 * 1024 + 1, `ingested ${r.ingestedBytes}`);
    assert.ok(written <= 6 * 1024 * 1024, `three 1-byte writes put ${written} bytes into the bucket`);
    assert.ok(after.storedBytes - before.storedBytes <= 6 * 1024 * 1024, `stored bytes grew by ${after.storedBytes - before.storedBytes}`);
    const entries = (await t.meta.getCurrent("big", "file"))!.manifest.length;
    assert.ok(entries <= entries0 + 6, `manifest grew from ${entries0} to ${entries} entries`);
    const got = await readAll(t.store, "big", "file");
    assert.ok(got.equals(data));
    await assertClean(t.store);
    await collectGarbage(t.store, { graceMs: 0 });
    await assertClean(t.store);
    assert.ok((await readAll(t.store, "big", "file")).equals(data));
  } finally {
    await t.close();
  }
});

test("sparse extension stores one shared run of zeros", async () => {
  const t = await makeStore({ chunker: { minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024 }, packTargetSize: 16 * 1024 * 1024 });
  try {
    await t.store.createBucket("sparse");
    const w0 = await bucketBytesWritten(t.store);
    const r = await writeAt(t.store, "sparse", "hole", 256 * 1024 * 1024, Buffer.from("end"));
    assert.equal(r.version.size, 256 * 1024 * 1024 + 3);
    await truncateObject(t.store, "sparse", "other", 100 * 1024 * 1024);
    assert.ok((await bucketBytesWritten(t.store)) - w0 < 1024 * 1024, "zeros compress and are stored once");
    const g = await t.store.getObject("sparse", "hole", { range: { start: 200 * 1024 * 1024, end: 200 * 1024 * 1024 + 9 } });
    const parts: Buffer[] = [];
    for await (const p of g.body) parts.push(p);
    assert.deepEqual(Buffer.concat(parts), Buffer.alloc(10));
    const tail = await t.store.getObject("sparse", "hole", { range: { suffix: 4 } });
    const tp: Buffer[] = [];
    for await (const p of tail.body) tp.push(p);
    assert.deepEqual(Buffer.concat(tp), Buffer.from("\0end"));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("small appends do not fragment the manifest", async () => {
  const t = await makeStore();
  try {
    await t.store.createBucket("log");
    let model = Buffer.alloc(0);
    for (let i = 0; i < 300; i++) {
      const line = Buffer.from(`line ${i} ${"x".repeat(i % 50)}\n`);
      await appendObject(t.store, "log", "app.log", line);
      model = Buffer.concat([model, line]);
    }
    const v = (await t.meta.getCurrent("log", "app.log"))!;
    assert.ok((await readAll(t.store, "log", "app.log")).equals(model));
    // SMALL_CHUNKS: 1 KiB minimum. Without widening there would be 300 entries.
    assert.ok(v.manifest.length <= Math.ceil(model.length / 1024) + 2, `${v.manifest.length} entries for ${model.length} bytes`);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("a whole rewrite gets the content MD5 as ETag; a partial edit a manifest ETag", async () => {
  const t = await makeStore();
  try {
    await t.store.createBucket("etags");
    const data = bytes(50_000, 3);
    const r = await writeAt(t.store, "etags", "k", 0, data);
    assert.equal(r.version.etag, createHash("md5").update(data).digest("hex"));
    const r2 = await writeAt(t.store, "etags", "k", 20_000, Buffer.from("zz"));
    assert.match(r2.version.etag, /^[0-9a-f]{32}-1$/);
    const r3 = await composeObject(t.store, "etags", "k", [{ kind: "truncate", size: 0 }, { kind: "write", offset: 0, data: [data] }]);
    assert.equal(r3.version.etag, createHash("md5").update(data).digest("hex"));
  } finally {
    await t.close();
  }
});

test("commitNamespace moves objects by reference in one transaction", async () => {
  const t = await makeStore();
  try {
    await t.store.createBucket("src-a");
    await t.store.createBucket("dst-b", "enabled");
    const data = bytes(30_000, 9);
    await t.store.putObject("src-a", "x/1", [data]);
    await t.store.putObject("src-a", "x/2", [data.subarray(5)]);
    await t.store.putObject("dst-b", "old", [Buffer.from("replaced")]);
    const w0 = await bucketBytesWritten(t.store);
    const r = await commitNamespace(t.store, async () => ({
      deletes: [{ bucket: "dst-b", key: "old" }],
      moves: [
        { from: { bucket: "src-a", key: "x/1" }, to: { bucket: "dst-b", key: "y/1" } },
        { from: { bucket: "src-a", key: "x/2" }, to: { bucket: "src-a", key: "z/2" } },
      ],
      empties: [{ bucket: "src-a", key: "x/", userMetadata: { mode: "16877" } }],
    }));
    assert.deepEqual(r, { deleted: 1, moved: 2, created: 1 });
    assert.equal(await bucketBytesWritten(t.store), w0, "no data written");
    assert.ok((await readAll(t.store, "dst-b", "y/1")).equals(data));
    assert.ok((await readAll(t.store, "src-a", "z/2")).equals(data.subarray(5)));
    const listed = await t.store.listObjects("src-a");
    assert.deepEqual(listed.objects.map((o) => o.key), ["x/", "z/2"]);
    // A plan that throws commits nothing.
    await assert.rejects(
      commitNamespace(t.store, async () => ({ moves: [{ from: { bucket: "src-a", key: "z/2" }, to: { bucket: "src-a", key: "w" } }, { from: { bucket: "src-a", key: "missing" }, to: { bucket: "src-a", key: "v" } }] })),
      /does not exist/,
    );
    assert.ok((await readAll(t.store, "src-a", "z/2")).equals(data.subarray(5)));
    await assert.rejects(t.store.headObject("src-a", "w"));
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});

test("moves in random plans keep contents, versions and reference counts right (model)", async () => {
  // Buckets of every versioning state; keys share chunks (the same few payloads), so a wrong
  // reference count shows in fsck and in what gc frees at the end.
  const t = await makeStore();
  try {
    const buckets = ["plain-a", "plain-b", "vers-c", "susp-d"];
    await t.store.createBucket("plain-a");
    await t.store.createBucket("plain-b");
    await t.store.createBucket("vers-c", "enabled");
    await t.store.createBucket("susp-d", "enabled");
    await t.store.setVersioning("susp-d", "suspended");
    const payloads = [bytes(20_000, 1), bytes(20_000, 2), bytes(9_000, 3)];
    const model = new Map<string, Buffer>(); // "bucket/key" -> current content
    const rng = mulberry32(606);
    let movedOutOfVersioned = 0;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
    const keyOf = (): string => `k${Math.floor(rng() * 6)}`;
    for (let round = 0; round < 60; round++) {
      if (rng() < 0.35 || model.size === 0) {
        const b = pick(buckets);
        const k = keyOf();
        const data = pick(payloads);
        await t.store.putObject(b, k, [data]);
        model.set(`${b}/${k}`, data);
        continue;
      }
      // One plan: 1-3 moves of distinct existing sources to distinct targets that are not sources.
      const sources = [...model.keys()].sort(() => rng() - 0.5).slice(0, 1 + Math.floor(rng() * 3));
      const used = new Set(sources);
      const moves: Array<{ from: { bucket: string; key: string }; to: { bucket: string; key: string } }> = [];
      for (const s of sources) {
        let target: string;
        do target = `${pick(buckets)}/${keyOf()}`;
        while (used.has(target));
        used.add(target);
        const [fb, fk] = s.split("/") as [string, string];
        const [tb, tk] = target.split("/") as [string, string];
        moves.push({ from: { bucket: fb, key: fk }, to: { bucket: tb, key: tk } });
      }
      await commitNamespace(t.store, async () => ({ moves }));
      movedOutOfVersioned += moves.filter((m) => m.from.bucket === "vers-c").length;
      const contents = moves.map((m) => model.get(`${m.from.bucket}/${m.from.key}`)!);
      moves.forEach((m, i) => {
        model.delete(`${m.from.bucket}/${m.from.key}`);
        model.set(`${m.to.bucket}/${m.to.key}`, contents[i]!);
      });
      if (round % 10 === 9) await assertClean(t.store);
    }
    for (const b of buckets) {
      const listed = (await t.store.listObjects(b)).objects.map((o) => o.key).sort();
      const want = [...model.keys()].filter((k) => k.startsWith(`${b}/`)).map((k) => k.slice(b.length + 1)).sort();
      assert.deepEqual(listed, want, `current keys of ${b}`);
    }
    for (const [path, data] of model) {
      const [b, k] = path.split("/") as [string, string];
      assert.ok((await readAll(t.store, b, k)).equals(data), `${path} reads back`);
    }
    // A source in a versioned bucket leaves a delete marker; an unversioned one leaves nothing.
    const markers = (await t.store.listObjectVersions("vers-c")).versions.filter((v) => v.deleteMarker).length;
    assert.ok(movedOutOfVersioned > 0, "the seed moves out of the versioned bucket");
    assert.equal(markers, movedOutOfVersioned, "one delete marker per move out of the versioned bucket");
    const plainVersions = (await t.store.listObjectVersions("plain-a")).versions.length;
    assert.equal(plainVersions, [...model.keys()].filter((k) => k.startsWith("plain-a/")).length, "unversioned buckets keep one version per current key");
    await assertClean(t.store);
    // Everything deleted (every version), gc frees every chunk: no reference was leaked.
    for (const b of buckets) {
      for (const v of (await t.store.listObjectVersions(b)).versions) await t.store.deleteObject(b, v.key, { versionId: v.versionId });
    }
    for await (const [id, c] of t.store.meta.listChunks()) assert.equal(c.refs, 0, `chunk ${id.toString("hex")} still counts references`);
    await assertClean(t.store);
  } finally {
    await t.close();
  }
});
