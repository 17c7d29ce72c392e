/**
 * The child process of the tier crash test (crash.test.ts): a TierManager over LocalBackend
 * directories (cloud, local, secondary) and the EmbeddedEventLog, with its workers running, under
 * a seeded workload of cloud-first puts (followed, as the object store would, by `pack-uploaded`),
 * write-back puts (followed by `upload-needed`) and ranged reads, with a small local tier (so it
 * purges constantly) whose puts sometimes fail for want of space (so it hydrates constantly).
 *
 * It is killed with SIGKILL by the parent at a random moment, or kills itself at a chosen point:
 * before or after the inner operation of the n-th hydration write (a local put of a pack the
 * child had just read whole from the cloud) or the n-th purge delete (a local delete).
 *
 * Usage: node crash-child.js CONFIG.json   (a CrashChildConfig)
 *
 * Protocol: one JSON line per synchronous write(2) on fd 1 (never torn by the kill):
 *   {"t":"open"}                              the manager is open and started
 *   {"t":"begin","key":K,"policy":"cloud"|"local"}   before the put of K
 *   {"t":"ack","key":K}                       the put and the store's event are durable
 *   {"t":"crash","at":"hydrate-before"|...}   the child kills itself now
 *   {"t":"done"}                              clean end
 * Any wrong byte read, or a failed acknowledged operation, is reported on stderr with exit status 2.
 */
import * as fs from "node:fs";
import { randomBytes } from "node:crypto";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";
import { FaultyBackend } from "../../src/backend/faulty.js";
import { TierManager } from "../../src/tier/manager.js";
import { contentOf, managerOptions, openTiers, sizeOf, type CrashChildConfig } from "./crash-shared.js";
import { mulberry32 } from "../../src/util/random.js";

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

function die(msg: string): never {
  fs.writeSync(2, msg + "\n");
  process.exit(2);
}

/** Wraps a backend to observe calls: `before`/`after` run around the inner call. */
class Tap implements BlobBackend {
  readonly location: string;
  onPut: (key: string, phase: "before" | "after") => void = () => {};
  onDelete: (key: string, phase: "before" | "after") => void = () => {};
  onGet: (key: string, range: ByteRange | undefined) => void = () => {};
  constructor(readonly inner: BlobBackend) {
    this.location = inner.location;
  }
  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.onPut(key, "before");
    await this.inner.put(key, body);
    this.onPut(key, "after");
  }
  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const data = await this.inner.get(key, range);
    this.onGet(key, range);
    return data;
  }
  head(key: string): Promise<BlobInfo | undefined> {
    return this.inner.head(key);
  }
  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.inner.list(prefix);
  }
  async delete(key: string): Promise<void> {
    this.onDelete(key, "before");
    await this.inner.delete(key);
    this.onDelete(key, "after");
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function main(): Promise<void> {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2]!, "utf8")) as CrashChildConfig;
  const rand = mulberry32(cfg.seed);
  const tiers = await openTiers(cfg.dir);
  // Local puts fail for want of space now and then (view copies and hydrations alike); local
  // reads fail now and then (reads fall back to the cloud).
  const faultyLocal = new FaultyBackend(tiers.local, { seed: cfg.seed });
  faultyLocal.inject({ op: "put", kind: "no-space", probability: 0.25 });
  faultyLocal.inject({ op: "get", probability: 0.05 });
  const local = new Tap(faultyLocal);
  const cloud = new Tap(tiers.cloud);

  const readWhole = new Set<string>();
  cloud.onGet = (key, range) => {
    if (range === undefined) readWhole.add(key);
  };
  const crash = cfg.crashAt;
  let seen = 0;
  const maybeCrash = (point: "hydrate" | "purge", phase: "before" | "after"): void => {
    if (crash === undefined || crash.point !== point || (phase === "before") !== crash.before) return;
    if (++seen === crash.nth) {
      emit({ t: "crash", at: `${point}-${phase}` });
      process.kill(process.pid, "SIGKILL");
    }
  };
  local.onPut = (key, phase) => {
    if (readWhole.has(key)) maybeCrash("hydrate", phase);
  };
  local.onDelete = (_key, phase) => maybeCrash("purge", phase);

  const tm = await TierManager.open({ ...managerOptions(tiers, local, cloud), onError: () => {} });
  tm.start();
  emit({ t: "open" });

  const known = [...cfg.known];
  let puts = 0;
  const end = Date.now() + cfg.runMs;
  const worker = async (): Promise<void> => {
    while (Date.now() < end) {
      const r = rand();
      if ((r < 0.45 && puts < cfg.maxPuts) || known.length === 0) {
        puts++;
        const id = randomBytes(16).toString("hex");
        const key = `packs/${id.slice(0, 2)}/${id}`;
        const policy = r < 0.3 || known.length === 0 ? "cloud" : "local";
        emit({ t: "begin", key, policy });
        const data = contentOf(key);
        if (policy === "cloud") {
          await tm.cloudFirst.put(key, data);
          await tiers.events.append([{ id: `put-${id}`, kind: "pack-uploaded", key: id, time: Date.now(), data: { blobKey: key, size: data.length } }]);
        } else {
          try {
            await tm.writeBack!.put(key, data);
          } catch (err) {
            // The local tier is this policy's durable tier: its failure fails the put (correctly).
            if (!(err instanceof Error) || !err.message.startsWith("injected fault")) throw err;
            continue;
          }
          await tiers.events.append([{ id: `put-${id}`, kind: "upload-needed", key: id, time: Date.now(), data: { blobKey: key, size: data.length } }]);
        }
        emit({ t: "ack", key });
        known.push(key);
      } else {
        const key = known[Math.floor(rand() * known.length)]!;
        const size = sizeOf(key);
        const offset = Math.floor(rand() * size);
        let got: Buffer | undefined;
        for (let attempt = 0; got === undefined; attempt++) {
          try {
            got = await tm.cloudFirst.get(key, { offset, length: 512 });
          } catch (err) {
            // A write-back pack not uploaded yet has one copy; an injected local read fault fails
            // its read (correctly). Anything else is a bug.
            if (attempt > 5 || !(err instanceof Error) || !err.message.startsWith("injected fault")) throw err;
          }
        }
        const want = contentOf(key).subarray(offset, offset + 512);
        if (!got.equals(want)) die(`read of ${key} at ${offset} returned wrong bytes`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  await tm.stop();
  emit({ t: "done" });
  process.exit(0);
}

main().catch((err: unknown) => die(`child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));
