/**
 * The metadata store's outbox (events committed with the changes they announce) and the records
 * of per-bucket durability: bucket `durability`, pack `uploaded`.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { isStowageError } from "../../src/errors.js";
import { openKv } from "../../src/kv/index.js";
import { openKvMetadataStore, type KvMetadataStore } from "../../src/meta/kv-store.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-outbox-meta-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;
const newDir = (): string => path.join(tmpRoot, `s${n++}`);
const open = (dir: string): Promise<KvMetadataStore> => openKvMetadataStore(dir, { kv: { backgroundThread: false } });

const ev = (i: number) => ({ kind: "object-created" as const, key: `b/k${i}`, data: { bucket: "b", key: `k${i}`, versionId: "null", size: i, etag: "e" }, time: 1000 + i });

test("outbox: ids strictly increasing and never reused (also across reopen and aborted transactions); oldest first; exact size", async () => {
  const dir = newDir();
  let store = await open(dir);
  assert.equal(await store.outboxSize(), 0);
  assert.deepEqual(await store.listOutbox(10), []);
  const ids = await store.transaction(async (tx) => {
    const a = tx.appendEvent(ev(1));
    const b = tx.appendEvent(ev(2));
    assert.equal(await tx.outboxSize(), 2, "own appends visible to outboxSize");
    assert.equal((await tx.listOutbox(10)).length, 0, "listings see committed state");
    return [a, b];
  });
  assert.deepEqual(ids, ["outbox-1", "outbox-2"]);
  // A transaction that throws appends nothing.
  await assert.rejects(
    store.transaction(async (tx) => {
      tx.appendEvent(ev(3));
      throw new Error("abort");
    }),
    /abort/,
  );
  assert.equal(await store.outboxSize(), 2);
  const third = await store.transaction(async (tx) => tx.appendEvent(ev(4)));
  assert.equal(third, "outbox-3");
  const listed = await store.listOutbox(10);
  assert.deepEqual(listed.map((e) => e.id), ["outbox-1", "outbox-2", "outbox-3"]);
  assert.deepEqual(listed[0], { id: "outbox-1", kind: "object-created", key: "b/k1", time: 1001, data: { bucket: "b", key: "k1", versionId: "null", size: 1, etag: "e" } });
  assert.deepEqual((await store.listOutbox(2)).map((e) => e.id), ["outbox-1", "outbox-2"]);

  // Delete: unknown and already deleted ids are ignored; the size stays exact.
  await store.transaction(async (tx) => tx.deleteOutbox(["outbox-1", "outbox-99", "outbox-1"]));
  assert.equal(await store.outboxSize(), 2);
  assert.deepEqual((await store.listOutbox(10)).map((e) => e.id), ["outbox-2", "outbox-3"]);
  await store.close();

  store = await open(dir);
  assert.equal(await store.outboxSize(), 2);
  await store.transaction(async (tx) => tx.deleteOutbox(["outbox-2", "outbox-3"]));
  await store.close();
  store = await open(dir);
  assert.equal(await store.outboxSize(), 0);
  assert.equal(await store.transaction(async (tx) => tx.appendEvent(ev(5))), "outbox-4", "ids are not reused after the outbox emptied");
  // Default time: now.
  const before = Date.now();
  await store.transaction(async (tx) => tx.appendEvent({ kind: "pack-uploaded", key: "0".repeat(32), data: { blobKey: "packs/00/x", size: 1 } }));
  const last = (await store.listOutbox(10)).at(-1)!;
  assert.ok(last.time >= before && last.time <= Date.now());
  await store.close();
});

test("outbox: randomized appends and deletes (from the front, the middle, the back) against a model; listOutbox returns exactly the live events, oldest first", async () => {
  const store = await open(newDir());
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const live: string[] = [];
  try {
    for (let round = 0; round < 200; round++) {
      const op = rnd(4);
      if (op <= 1 || live.length === 0) {
        const ids = await store.transaction(async (tx) => Array.from({ length: 1 + rnd(5) }, (_, i) => tx.appendEvent(ev(round * 10 + i))));
        live.push(...ids);
      } else {
        // What the relay does (the oldest ones), or anything else.
        const pick = op === 2 ? live.slice(0, 1 + rnd(live.length)) : live.filter(() => rnd(3) === 0);
        await store.transaction(async (tx) => tx.deleteOutbox(pick));
        for (const id of pick) live.splice(live.indexOf(id), 1);
      }
      const listed = (await store.listOutbox(1000)).map((e) => e.id);
      assert.deepEqual(listed, live, `round ${round}`);
      if (live.length > 2) assert.deepEqual((await store.listOutbox(2)).map((e) => e.id), live.slice(0, 2));
      assert.equal(await store.outboxSize(), live.length);
    }
  } finally {
    await store.close();
  }
});

test("outbox: bad events and ids are refused with STOWAGE_INVALID_ARGUMENT; a transaction's append and delete in one batch", async () => {
  const store = await open(newDir());
  const invalid = (err: unknown): boolean => isStowageError(err, "STOWAGE_INVALID_ARGUMENT");
  await assert.rejects(store.transaction(async (tx) => void tx.appendEvent({ kind: "no-such-kind" as "purged", key: "k", data: {} })), invalid);
  await assert.rejects(store.transaction(async (tx) => void tx.appendEvent({ kind: "purged", key: "k", data: { x: Number.NaN } })), invalid);
  await assert.rejects(store.transaction(async (tx) => void tx.appendEvent({ kind: "purged", key: "k", data: { x: {} as unknown as string } })), invalid);
  await assert.rejects(store.transaction(async (tx) => tx.deleteOutbox(["outbox-x"])), invalid);
  await assert.rejects(store.transaction(async (tx) => tx.deleteOutbox(["7"])), invalid);
  // Append and delete in one transaction: the event never exists.
  await store.transaction(async (tx) => {
    const id = tx.appendEvent(ev(1));
    tx.deleteOutbox([id]);
    assert.equal(await tx.outboxSize(), 0);
  });
  assert.equal(await store.outboxSize(), 0);
  assert.deepEqual(await store.listOutbox(5), []);
  // Data keys such as __proto__ stay plain fields.
  await store.transaction(async (tx) => void tx.appendEvent({ kind: "purged", key: "k", data: JSON.parse('{"__proto__":"x","a":true}') as Record<string, string> }));
  const [e] = await store.listOutbox(1);
  assert.deepEqual(Object.keys(e!.data).sort(), ["__proto__", "a"]);
  await store.close();
});

test("bucket durability and pack uploaded: round trip; version-2 records only where an older build would misread them", async () => {
  const dir = newDir();
  let store = await open(dir);
  const pid = "ab".repeat(16);
  const pid2 = "cd".repeat(16);
  await store.transaction(async (tx) => {
    tx.putBucket({ name: "wb", created: 1, versioning: "unversioned", durability: "local" });
    tx.putBucket({ name: "cl", created: 2, versioning: "enabled", durability: "cloud" });
    tx.putBucket({ name: "plain", created: 3, versioning: "enabled" });
    tx.putPack({ id: pid, blobKey: `packs/ab/${pid}`, size: 10, entries: 1, created: 5, state: "live", uploaded: false });
    tx.putPack({ id: pid2, blobKey: `packs/cd/${pid2}`, size: 10, entries: 1, created: 5, state: "live", uploaded: true });
  });
  await assert.rejects(
    store.transaction(async (tx) => tx.putBucket({ name: "x", created: 1, versioning: "enabled", durability: "tape" as "local" })),
    (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"),
  );
  await store.close();
  store = await open(dir);
  assert.deepEqual(await store.getBucket("wb"), { name: "wb", created: 1, versioning: "unversioned", durability: "local" });
  assert.deepEqual(await store.getBucket("cl"), { name: "cl", created: 2, versioning: "enabled" }, "cloud is stored as absent");
  assert.deepEqual(await store.getPack(pid), { id: pid, blobKey: `packs/ab/${pid}`, size: 10, entries: 1, created: 5, state: "live", uploaded: false });
  assert.deepEqual(await store.getPack(pid2), { id: pid2, blobKey: `packs/cd/${pid2}`, size: 10, entries: 1, created: 5, state: "live" });
  await store.close();

  const kv = await openKv(dir, { backgroundThread: false });
  assert.equal((await kv.get(Buffer.from("Bwb")))![0], 2);
  assert.equal((await kv.get(Buffer.from("Bcl")))![0], 1);
  assert.equal((await kv.get(Buffer.concat([Buffer.from("P"), Buffer.from(pid, "hex")])))![0], 2);
  assert.equal((await kv.get(Buffer.concat([Buffer.from("P"), Buffer.from(pid2, "hex")])))![0], 1);
  // A version-1 record claiming a field of version 2 is damaged, not guessed at.
  await kv.put(Buffer.from("Bodd"), Buffer.from([1, ...Buffer.from('{"c":1,"v":"enabled","d":"local"}')]));
  await kv.close();
  store = await open(dir);
  await assert.rejects(store.getBucket("odd"), (err: unknown) => isStowageError(err, "STOWAGE_KV_CORRUPTION"));
  await store.close();
});
