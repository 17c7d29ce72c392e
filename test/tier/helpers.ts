/** Shared set-up for tier tests: a TierManager over memory (or faulty) backends and a memory event log. */
import { randomBytes } from "node:crypto";
import { after } from "node:test";
import { MemoryBackend } from "../../src/backend/memory.js";
import { FaultyBackend } from "../../src/backend/faulty.js";
import type { BlobBackend, BlobInfo } from "../../src/backend/backend.js";
import { MemoryEventLog } from "../../src/events/memory.js";
import type { EventKind, EventLog, LoggedEvent, StowageEvent } from "../../src/events/types.js";
import { TierManager } from "../../src/tier/manager.js";
import type { TierManagerOptions } from "../../src/tier/config.js";

/** A memory backend whose head can be told to say "missing" for everything (a lying cloud). */
export class LyingBackend extends MemoryBackend {
  headSaysMissing = false;
  override async head(key: string): Promise<BlobInfo | undefined> {
    const info = await super.head(key);
    return this.headSaysMissing ? undefined : info;
  }
}

export interface Tiers {
  tm: TierManager;
  cloud: FaultyBackend;
  /** The memory backend inside `cloud`. */
  cloudInner: LyingBackend;
  local: FaultyBackend;
  secondary: FaultyBackend | undefined;
  events: MemoryEventLog;
  marked: string[];
  errors: string[];
}

export type TierTestOptions = Partial<Omit<TierManagerOptions, "local">> & {
  capacityBytes?: number;
  highWatermark?: number;
  lowWatermark?: number;
  withSecondary?: boolean;
  noLocal?: boolean;
  /** Blobs already in the local tier before open. */
  seedLocal?: Array<[string, Uint8Array]>;
};

/** Managers made by makeTiers, stopped after the file's tests (a failed test would leave workers running). */
const live = new Set<TierManager>();
after(async () => {
  for (const tm of live) await tm.stop();
});

export async function makeTiers(o: TierTestOptions = {}): Promise<Tiers> {
  const cloudInner = new LyingBackend();
  const cloud = new FaultyBackend(cloudInner);
  const local = new FaultyBackend(new MemoryBackend());
  for (const [k, v] of o.seedLocal ?? []) await local.put(k, v);
  const secondary = o.withSecondary === true ? new FaultyBackend(new MemoryBackend()) : undefined;
  const events = new MemoryEventLog();
  const marked: string[] = [];
  const errors: string[] = [];
  const { capacityBytes, highWatermark, lowWatermark, withSecondary: _w, noLocal, seedLocal: _s, ...rest } = o;
  const options: TierManagerOptions = {
    cloud,
    events,
    secondary,
    pollWaitMs: 20,
    retryBaseMs: 5,
    retryMaxMs: 50,
    markPackUploaded: async (key) => {
      marked.push(key);
      await events.append([ev("pack-uploaded", key, { size: (await cloud.head(key))?.size ?? 0 })]);
    },
    onError: (err) => errors.push(String(err)),
    ...rest,
  };
  if (noLocal !== true) {
    options.local = { backend: local, capacityBytes: capacityBytes ?? 1 << 30, highWatermark, lowWatermark };
  }
  const tm = await TierManager.open(options);
  live.add(tm);
  return { tm, cloud, cloudInner, local, secondary, events, marked, errors };
}

let seq = 0;
export function ev(kind: EventKind, blobKey: string, data: Record<string, string | number | boolean> = {}): StowageEvent {
  const id = blobKey.slice(blobKey.lastIndexOf("/") + 1);
  return { id: `test-${++seq}`, kind, key: id, time: Date.now(), data: { blobKey, ...data } };
}

/** A pack-like blob key with a random 32-hex id. */
export function packKey(): string {
  const id = randomBytes(16).toString("hex");
  return `packs/${id.slice(0, 2)}/${id}`;
}

export function blob(size: number): Buffer {
  return randomBytes(size);
}

export async function has(b: BlobBackend, key: string): Promise<boolean> {
  return (await b.head(key)) !== undefined;
}

/** Polls `cond` until it holds (or throws after `ms`). */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits until every running worker group has committed everything and no background work runs. */
export async function drain(t: { tm: TierManager }, ms = 5000): Promise<void> {
  await waitFor(
    async () => {
      await t.tm.idle();
      const s = await t.tm.stats();
      return Object.values(s.lag).every((l) => l === 0);
    },
    ms,
    "workers to drain",
  );
  await t.tm.idle();
}

/** Every event in the log (read through a fresh consumer group). */
export async function allEvents(events: EventLog): Promise<LoggedEvent[]> {
  const c = await events.consumer(`inspect-${++seq}`);
  const out: LoggedEvent[] = [];
  for (;;) {
    const b = await c.poll(1000, 0);
    if (b.length === 0) break;
    out.push(...b);
  }
  await c.close();
  return out;
}

export async function kinds(events: EventLog, kind: EventKind): Promise<string[]> {
  return (await allEvents(events)).filter((e) => e.kind === kind).map((e) => String(e.data.blobKey));
}
