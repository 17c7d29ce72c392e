/**
 * The outbox: the object store appends the events announcing each change in the transaction that
 * makes it, and the OutboxRelay moves them to an event log — in order, at least once (duplicates
 * only with the same id), retrying log failures, never dropping one. The crash test kills a child
 * process writing objects (and relaying into a file log) with SIGKILL and checks, after reopening,
 * that the events in the log and the outbox together describe exactly the committed state.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { StowageError, isStowageError } from "../../src/errors.js";
import { RepositoryKeys, formatMasterKey } from "../../src/codec/keys.js";
import { MemoryEventLog } from "../../src/events/memory.js";
import { OutboxRelay, type OutboxSource } from "../../src/events/outbox.js";
import type { EventConsumer, EventLog, LoggedEvent, StowageEvent } from "../../src/events/types.js";
import { openKvMetadataStore } from "../../src/meta/kv-store.js";
import type { MetaTx } from "../../src/meta/types.js";
import { collectGarbage } from "../../src/store/gc.js";
import { bytes, makeStore } from "../store/helpers.js";

async function drain(log: EventLog): Promise<LoggedEvent[]> {
  const c = await log.consumer("test");
  const out: LoggedEvent[] = [];
  for (;;) {
    const batch = await c.poll(1000, 0);
    if (batch.length === 0) break;
    out.push(...batch);
  }
  await c.close();
  return out;
}

const idNumber = (id: string): number => Number(id.slice("outbox-".length));

/** Delegates to another log, failing the first `failures` appends with STOWAGE_EVENTS_IO. */
class FlakyLog implements EventLog {
  readonly location = "flaky:";
  appends = 0;
  constructor(
    readonly inner: EventLog,
    public failures: number,
  ) {}
  async append(events: readonly StowageEvent[]): Promise<void> {
    this.appends++;
    if (this.failures > 0) {
      this.failures--;
      throw new StowageError("STOWAGE_EVENTS_IO", "broker unavailable (injected)");
    }
    await this.inner.append(events);
  }
  consumer(group: string): Promise<EventConsumer> {
    return this.inner.consumer(group);
  }
  lag(group: string): Promise<number> {
    return this.inner.lag(group);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

test("events committed with the metadata reach the log in commit order, with the documented data", async () => {
  const t = await makeStore();
  const log = new MemoryEventLog();
  const relay = new OutboxRelay(t.meta, log);
  try {
    await t.store.createBucket("plain");
    await t.store.createBucket("vers", "enabled");
    const p1 = await t.store.putObject("plain", "a", [bytes(20_000, 1)]);
    await t.store.putObject("plain", "a", [bytes(20_000, 2)]); // overwrite: a new "null" version
    const c = await t.store.copyObject("plain", "a", "vers", "copy");
    const marker = await t.store.deleteObject("vers", "copy");
    await t.store.deleteObject("vers", "copy", { versionId: c.versionId });
    await t.store.deleteObject("plain", "a");
    await t.store.deleteObject("plain", "never-existed"); // no change, no event
    const up = await t.store.createMultipartUpload("vers", "mp");
    const part = await t.store.uploadPart("vers", up.uploadId, 1, [bytes(10_000, 3)]);
    const mp = await t.store.completeMultipartUpload("vers", up.uploadId, [{ partNumber: 1, etag: part.etag }]);
    const snap = await t.store.snapshot("vers", "", "snapdst", "s/");
    assert.equal(snap.objects, 1);

    await relay.flush();
    assert.equal(relay.pending, 0);
    assert.equal(await t.meta.outboxSize(), 0, "relayed events are deleted from the outbox");
    const got = await drain(log);
    const ids = got.map((e) => idNumber(e.id));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i]! > ids[i - 1]!, "ids strictly increase in log order");

    const objectEvents = got.filter((e) => e.kind.startsWith("object-")).map((e) => [e.kind, e.key, e.data.versionId, e.data.deleteMarker ?? e.data.size]);
    assert.deepEqual(objectEvents, [
      ["object-created", "plain/a", "null", 20_000],
      ["object-created", "plain/a", "null", 20_000],
      ["object-created", "vers/copy", c.versionId, 20_000],
      ["object-deleted", "vers/copy", marker.versionId, true],
      ["object-deleted", "vers/copy", c.versionId, false],
      ["object-deleted", "plain/a", "null", false],
      ["object-created", "vers/mp", mp.versionId, 10_000],
      ["object-created", "snapdst/s/mp", got.find((e) => e.key === "snapdst/s/mp")!.data.versionId, 10_000],
    ]);
    const first = got.find((e) => e.kind === "object-created")!;
    assert.deepEqual(first.data, { bucket: "plain", key: "a", versionId: "null", size: 20_000, etag: p1.etag });
    // Every pack committed has its pack-uploaded event, keyed by pack id, before the object using it.
    const packEvents = got.filter((e) => e.kind === "pack-uploaded");
    const packIds: string[] = [];
    for await (const p of t.meta.listPacks()) packIds.push(p.id);
    assert.deepEqual(packEvents.map((e) => e.key).sort(), packIds.sort());
    assert.ok(got.indexOf(packEvents[0]!) < got.indexOf(first));
    // Nothing more to relay.
    await relay.flush();
    assert.equal((await drain(log)).length, got.length);
  } finally {
    await relay.stop();
    await t.close();
  }
});

test("a failed transaction appends nothing; the events option turns emission off", async () => {
  const t = await makeStore();
  try {
    await t.store.createBucket("bkt");
    await t.store.putObject("bkt", "ok", [bytes(5000, 1)]);
    const before = await t.meta.listOutbox(1000);
    // A put whose digest does not match commits nothing, so announces nothing.
    await assert.rejects(t.store.putObject("bkt", "bad", [bytes(5000, 2)], { contentMD5: Buffer.alloc(16).toString("base64") }), (err: unknown) => isStowageError(err, "STOWAGE_BAD_DIGEST"));
    const after = await t.meta.listOutbox(1000);
    assert.deepEqual(after, before);
    // Deleting a missing object, and a transaction that throws after appending: nothing.
    await t.store.deleteObject("bkt", "missing");
    await assert.rejects(
      t.meta.transaction(async (tx: MetaTx) => {
        tx.appendEvent({ kind: "object-created", key: "bkt/ghost", data: {} });
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.equal((await t.meta.listOutbox(1000)).length, after.length);
  } finally {
    await t.close();
  }
  const quiet = await makeStore({ events: false });
  try {
    await quiet.store.createBucket("bkt");
    await quiet.store.putObject("bkt", "k", [bytes(5000, 1)]);
    assert.equal(await quiet.meta.outboxSize(), 0);
  } finally {
    await quiet.close();
  }
});

test("log failures are retried with backoff and never drop an event; flush() reports them; stats", async () => {
  const t = await makeStore();
  const mem = new MemoryEventLog();
  const log = new FlakyLog(mem, 3);
  const errors: Error[] = [];
  const relay = new OutboxRelay(t.meta, log, { intervalMs: 10_000, minBackoffMs: 5, maxBackoffMs: 20, onError: (e) => errors.push(e) });
  try {
    await t.store.createBucket("bkt");
    for (let i = 0; i < 5; i++) await t.store.putObject("bkt", `k${i}`, [bytes(3000, i)]);
    const committed = (await t.meta.listOutbox(1000)).map((e) => e.id);
    // flush() surfaces the failure and leaves everything in the outbox.
    await assert.rejects(relay.flush(), (err: unknown) => isStowageError(err, "STOWAGE_EVENTS_IO"));
    assert.equal(relay.pending, committed.length);
    assert.ok(isStowageError(relay.lastError, "STOWAGE_EVENTS_IO"));
    // The loop retries (2 more failures, with backoff) until the log takes them.
    relay.start();
    const deadline = Date.now() + 5000;
    while ((await mem.lag("test")) < committed.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await relay.stop();
    const got = await drain(mem);
    assert.deepEqual(got.map((e) => e.id), committed, "every event, once, in order");
    assert.equal(errors.length, 2);
    const s = relay.stats();
    assert.equal(s.failures, 3);
    assert.equal(s.consecutiveFailures, 0);
    assert.equal(s.pending, 0);
    assert.equal(s.relayed, committed.length);
    assert.equal(relay.lastError, undefined);
  } finally {
    await relay.stop();
    await t.close();
  }
});

test("a crash between append and delete re-sends the same events with the same ids (at least once)", async () => {
  const t = await makeStore();
  const log = new MemoryEventLog();
  try {
    await t.store.createBucket("bkt");
    for (let i = 0; i < 3; i++) await t.store.putObject("bkt", `k${i}`, [bytes(3000, i)]);
    let failDeletes = 1;
    // The delete transaction fails once: as if the process died after the append.
    const source: OutboxSource = {
      listOutbox: (n) => t.meta.listOutbox(n),
      outboxSize: () => t.meta.outboxSize(),
      transaction: (fn) => {
        if (failDeletes-- > 0) return Promise.reject(new Error("crash before the delete committed"));
        return t.meta.transaction(fn);
      },
    };
    const relay = new OutboxRelay(source, log, { batchSize: 4 });
    await assert.rejects(relay.flush(), /crash before/);
    await relay.flush();
    const got = await drain(log);
    const committedIds = new Set(got.map((e) => e.id));
    assert.ok(got.length > committedIds.size, "some events were delivered twice");
    const byId = new Map<string, StowageEvent>();
    for (const e of got) {
      const { partition: _p, offset: _o, ...ev } = e;
      const seen = byId.get(e.id);
      if (seen !== undefined) assert.deepEqual(ev, seen, `the redelivery of ${e.id} is identical`);
      else byId.set(e.id, ev);
    }
    assert.equal(await t.meta.outboxSize(), 0);
  } finally {
    await t.close();
  }
});

test("notify() wakes the loop at once; gc keeps an unrelayed outbox bounded", async () => {
  const t = await makeStore();
  const log = new MemoryEventLog();
  const relay = new OutboxRelay(t.meta, log, { intervalMs: 60_000 });
  try {
    await t.store.createBucket("bkt");
    const off = t.store.onEvents(() => relay.notify());
    relay.start();
    const t0 = Date.now();
    await t.store.putObject("bkt", "k", [bytes(3000, 1)]);
    const c = await log.consumer("g");
    const first = await c.poll(10, 2000);
    assert.ok(first.length >= 1 && Date.now() - t0 < 1500, "relayed long before the 60 s interval");
    await c.close();
    off();
    await relay.stop();

    for (let i = 0; i < 6; i++) await t.store.putObject("bkt", `x${i}`, [bytes(3000, 10 + i)]);
    const size = await t.meta.outboxSize();
    assert.ok(size >= 6);
    const newest = (await t.meta.listOutbox(1000)).slice(-4).map((e) => e.id);
    const noRecycling = { minLiveFraction: 0, smallPackSize: 0, maxOutboxEvents: 4 };
    const dry = await collectGarbage(t.store, { ...noRecycling, dryRun: true });
    assert.deepEqual([dry.outboxEventsDropped, await t.meta.outboxSize()], [size - 4, size]);
    const r = await collectGarbage(t.store, noRecycling);
    assert.equal(r.outboxEventsDropped, size - 4);
    assert.deepEqual((await t.meta.listOutbox(1000)).map((e) => e.id), newest, "the newest are kept");
    assert.equal(r.outboxEvents, 4);
  } finally {
    await relay.stop();
    await t.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Crash test

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "outbox-crash-child.js");

interface Ack {
  t: "ack";
  op: "put" | "delete" | "marker" | "uploaded";
  bucket?: string;
  key?: string;
  versionId?: string;
  blobKey?: string;
}

function runChild(dir: string, keyHex: string, seed: number, killAfterOpenMs: number): Promise<{ acks: Ack[]; stderr: string; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, keyHex, String(seed)], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    const hang = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      if (timer === undefined && out.includes('"open"')) timer = setTimeout(() => child.kill("SIGKILL"), killAfterOpenMs);
    });
    child.stderr.on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (_code, signal) => {
      clearTimeout(hang);
      if (timer !== undefined) clearTimeout(timer);
      const lines = out.split("\n").filter((l) => l !== "");
      resolve({ acks: lines.map((l) => JSON.parse(l) as { t: string }).filter((l): l is Ack => l.t === "ack"), stderr, signal });
    });
  });
}

test("crash: after SIGKILL, the log and the outbox together hold exactly the events of the committed changes", async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-outbox-crash-"));
  const keyHex = formatMasterKey(RepositoryKeys.generate());
  const seed = Number(process.env.STOWAGE_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const rounds = Number(process.env.STOWAGE_CRASH_ROUNDS ?? 4);
  let failed = true;
  const totals = { acks: 0, logged: 0, outbox: 0, duplicates: 0, versions: 0, packs: 0 };
  try {
    const allAcks: Ack[] = [];
    for (let round = 0; round < rounds; round++) {
      const res = await runChild(root, keyHex, seed + round, 300 + ((seed + round * 7919) % 700));
      assert.equal(res.signal, "SIGKILL", `child ended on its own: ${res.stderr}`);
      allAcks.push(...res.acks);

      // The file log: complete lines only (a torn last line was never acknowledged to the relay).
      const logged: StowageEvent[] = [];
      const file = path.join(root, "events.log");
      if (fs.existsSync(file)) {
        for (const line of fs.readFileSync(file, "utf8").split("\n")) {
          if (line === "") continue;
          try {
            logged.push(JSON.parse(line) as StowageEvent);
          } catch {
            // torn final write
          }
        }
      }
      const meta = await openKvMetadataStore(path.join(root, "meta"));
      try {
        const outbox = await meta.listOutbox(1_000_000);
        assert.equal(outbox.length, await meta.outboxSize());
        // Union by id; a duplicate must be identical.
        const byId = new Map<string, StowageEvent>();
        let dups = 0;
        for (const e of [...logged, ...outbox]) {
          const seen = byId.get(e.id);
          if (seen !== undefined) {
            dups++;
            assert.deepEqual(e, seen, `two different events with id ${e.id}`);
          } else byId.set(e.id, e);
        }
        const events = [...byId.values()].sort((a, b) => idNumber(a.id) - idNumber(b.id));

        // Replay the object events: the versions they describe are exactly the versions stored.
        const replayed = new Set<string>();
        for (const e of events) {
          const v = `${String(e.data.bucket)}/${String(e.data.key)}@${String(e.data.versionId)}`;
          if (e.kind === "object-created") replayed.add(v);
          else if (e.kind === "object-deleted") {
            if (e.data.deleteMarker === true && !replayed.has(v)) replayed.add(v); // a marker written
            else replayed.delete(v); // a version (or marker) removed
          }
        }
        const stored = new Set<string>();
        for (const b of await meta.listBuckets()) for await (const h of meta.listVersions(b.name)) stored.add(`${b.name}/${h.key}@${h.versionId}`);
        assert.deepEqual([...replayed].sort(), [...stored].sort(), "events describe exactly the committed versions");

        // Every acknowledged change has its event.
        const keyed = new Set(events.map((e) => `${e.kind} ${String(e.data.bucket)}/${String(e.data.key)}@${String(e.data.versionId)}`));
        for (const a of res.acks) {
          if (a.op === "uploaded") continue;
          const kind = a.op === "put" ? "object-created" : "object-deleted";
          assert.ok(keyed.has(`${kind} ${a.bucket}/${a.key}@${a.versionId}`), `acknowledged ${a.op} ${a.bucket}/${a.key}@${a.versionId} has no event`);
        }
        // Packs: each record has its announcement, and no event names a pack that was never recorded.
        const uploadedEv = new Set(events.filter((e) => e.kind === "pack-uploaded").map((e) => e.key));
        const neededEv = new Set(events.filter((e) => e.kind === "upload-needed").map((e) => e.key));
        const packIds = new Set<string>();
        for await (const p of meta.listPacks()) {
          packIds.add(p.id);
          if (p.uploaded === false) {
            assert.ok(neededEv.has(p.id), `write-back pack ${p.id} has no upload-needed event`);
            assert.ok(!uploadedEv.has(p.id), `pack ${p.id} announced uploaded but its record says not`);
          } else assert.ok(uploadedEv.has(p.id), `pack ${p.id} has no pack-uploaded event`);
        }
        for (const id of [...uploadedEv, ...neededEv]) assert.ok(packIds.has(id), `event for unknown pack ${id}`);
        for (const a of res.acks) if (a.op === "uploaded") assert.ok(events.some((e) => e.kind === "pack-uploaded" && e.data.blobKey === a.blobKey), `acknowledged upload of ${a.blobKey} has no event`);

        totals.logged = logged.length;
        totals.outbox = outbox.length;
        totals.duplicates = dups;
        totals.versions = stored.size;
        totals.packs = packIds.size;
      } finally {
        await meta.close();
      }
    }
    totals.acks = allAcks.length;
    assert.ok(allAcks.filter((a) => a.op === "put").length >= rounds, "the workload ran");
    failed = false;
  } finally {
    t.diagnostic(`seed ${seed}, ${rounds} kills: ${JSON.stringify(totals)}${failed ? `; kept ${root} (replay with STOWAGE_SEED=${seed})` : ""}`);
    if (!failed) fs.rmSync(root, { recursive: true, force: true });
  }
});
