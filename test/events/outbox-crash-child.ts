/**
 * The child process of the outbox crash test (outbox.test.ts). It opens an object store on
 * `DIR/meta` (kv metadata), `DIR/cloud` (cloud-first backend) and `DIR/local` (write-back backend),
 * relays the outbox into `DIR/events.log` (a file event log: one JSON event per line, fsynced per
 * append), and runs puts and deletes in two versioned buckets (`cloudb`: cloud durability, `localb`:
 * local) plus, now and then, what the tier's uploader does (copy a write-back pack to the cloud,
 * markPackUploaded) — until the parent kills it with SIGKILL.
 *
 * Usage: node outbox-crash-child.js DIR MASTER_KEY_HEX SEED
 *
 * Protocol on fd 1 (one synchronous write per line, so a kill never leaves half a line):
 *   {"t":"open"}
 *   {"t":"ack","op":"put"|"delete"|"marker","bucket":..,"key":..,"versionId":..}   after the call resolved
 *   {"t":"ack","op":"uploaded","blobKey":..}
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { keysFromMasterKey, parseMasterKey } from "../../src/codec/keys.js";
import { LocalBackend } from "../../src/backend/local.js";
import { openKvMetadataStore } from "../../src/meta/kv-store.js";
import { ObjectStore } from "../../src/store/store.js";
import { OutboxRelay } from "../../src/events/outbox.js";
import type { EventConsumer, EventLog, StowageEvent } from "../../src/events/types.js";
import { StowageError } from "../../src/errors.js";
import { bytes } from "../store/helpers.js";
import { mulberry32 } from "../../src/util/random.js";

/** An append-only event log in a file: enough for the relay (append), durable per call. */
export class FileEventLog implements EventLog {
  readonly location: string;
  readonly #fd: number;

  constructor(file: string) {
    this.location = `file:${file}`;
    this.#fd = fs.openSync(file, "a");
  }

  async append(events: readonly StowageEvent[]): Promise<void> {
    if (events.length === 0) return;
    fs.writeSync(this.#fd, events.map((e) => JSON.stringify(e) + "\n").join(""));
    fs.fsyncSync(this.#fd);
  }

  consumer(): Promise<EventConsumer> {
    return Promise.reject(new StowageError("STOWAGE_INVALID_ARGUMENT", "FileEventLog has no consumers"));
  }

  lag(): Promise<number> {
    return Promise.resolve(0);
  }

  async close(): Promise<void> {
    fs.closeSync(this.#fd);
  }
}

function emit(obj: object): void {
  const buf = Buffer.from(JSON.stringify(obj) + "\n");
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off, buf.length - off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
  }
}

async function main(): Promise<void> {
  const [dir, keyHex, seedText] = process.argv.slice(2);
  if (dir === undefined || keyHex === undefined) throw new Error("usage: outbox-crash-child.js DIR KEY SEED");
  const rand = mulberry32(Number(seedText ?? "1"));
  const keys = keysFromMasterKey(parseMasterKey(keyHex));
  const cloud = await LocalBackend.open(path.join(dir, "cloud"));
  const local = await LocalBackend.open(path.join(dir, "local"));
  const meta = await openKvMetadataStore(path.join(dir, "meta"));
  const store = new ObjectStore(meta, cloud, keys, {
    writeBackBackend: local,
    chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 },
    packTargetSize: 64 * 1024,
    encoderThreads: 0,
  });
  for (const [name, durability] of [
    ["cloudb", "cloud"],
    ["localb", "local"],
  ] as const) {
    if ((await meta.getBucket(name)) === undefined) await store.createBucket(name, { versioning: "enabled", durability });
  }
  const relay = new OutboxRelay(meta, new FileEventLog(path.join(dir, "events.log")), { intervalMs: 20, batchSize: 16, minBackoffMs: 5 });
  store.onEvents(() => relay.notify());
  relay.start();
  emit({ t: "open" });

  const keysOf = ["a", "b", "c", "d"];
  const worker = async (): Promise<void> => {
    for (;;) {
      const bucket = rand() < 0.5 ? "cloudb" : "localb";
      const key = keysOf[Math.floor(rand() * keysOf.length)]!;
      const x = rand();
      if (x < 0.6) {
        // Shared content between the buckets: the dedup rule is exercised too.
        const data = bytes(1000 + Math.floor(rand() * 30_000), 1 + Math.floor(rand() * 6));
        const r = await store.putObject(bucket, key, [data]);
        emit({ t: "ack", op: "put", bucket, key, versionId: r.versionId });
      } else if (x < 0.8) {
        const vs = await store.listObjectVersions(bucket, { prefix: key });
        const v = vs.versions.find((h) => h.key === key && !h.isLatest);
        if (v === undefined) continue;
        await store.deleteObject(bucket, key, { versionId: v.versionId });
        emit({ t: "ack", op: "delete", bucket, key, versionId: v.versionId });
      } else if (x < 0.9) {
        const r = await store.deleteObject(bucket, key);
        emit({ t: "ack", op: "marker", bucket, key, versionId: r.versionId });
      } else {
        let awaiting: string | undefined;
        for await (const p of store.packsAwaitingUpload()) {
          awaiting = p.blobKey;
          break;
        }
        if (awaiting === undefined) continue;
        await cloud.put(awaiting, await local.get(awaiting));
        await store.markPackUploaded(awaiting);
        emit({ t: "ack", op: "uploaded", blobKey: awaiting });
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

main().catch((err: unknown) => {
  fs.writeSync(2, `outbox-crash-child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(2);
});
