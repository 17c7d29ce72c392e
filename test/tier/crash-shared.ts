/** What the tier crash test (crash.test.ts) and its child (crash-child.ts) share: layout, content, options. */
import { createCipheriv, createHash } from "node:crypto";
import * as path from "node:path";
import { LocalBackend } from "../../src/backend/local.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { EmbeddedEventLog } from "../../src/events/embedded.js";
import type { EventLog } from "../../src/events/types.js";
import type { TierManagerOptions } from "../../src/tier/config.js";

export interface CrashChildConfig {
  dir: string;
  seed: number;
  /** Acknowledged packs of earlier rounds (the child reads them). */
  known: string[];
  /** Where the child kills itself, if anywhere ("random" rounds are killed by the parent). */
  crashAt?: { point: "hydrate" | "purge"; nth: number; before: boolean };
  /** Puts per child at most (then it only reads), which bounds the test's running time. */
  maxPuts: number;
  /** Clean stop after this long (the parent normally kills the child first). */
  runMs: number;
}

/** Small local tier so the workload purges all the time: 160 KiB, purge above 90 %, down to 50 %. */
export const CAPACITY = 160 * 1024;
export const HIGH = 0.9;
export const LOW = 0.5;

/** Packs whose id starts with "0" are pinned (one in sixteen). */
export function isPinned(key: string): boolean {
  const id = key.slice(key.lastIndexOf("/") + 1);
  return id[0] === "0";
}

/** The size of a pack, from its id: 2–12 KiB. */
export function sizeOf(key: string): number {
  const id = key.slice(key.lastIndexOf("/") + 1);
  return 2048 + (parseInt(id.slice(2, 6), 16) % (10 * 1024));
}

/** The content of a pack, from its id alone (AES-CTR keystream), so any process can check any copy. */
export function contentOf(key: string): Buffer {
  const k = createHash("sha256").update(key).digest();
  const c = createCipheriv("aes-128-ctr", k.subarray(0, 16), k.subarray(16, 32));
  return Buffer.concat([c.update(Buffer.alloc(sizeOf(key))), c.final()]);
}

export interface Tiers {
  cloud: LocalBackend;
  local: LocalBackend;
  secondary: LocalBackend;
  events: EventLog;
}

export async function openTiers(dir: string): Promise<Tiers> {
  return {
    cloud: await LocalBackend.open(path.join(dir, "cloud")),
    local: await LocalBackend.open(path.join(dir, "local")),
    secondary: await LocalBackend.open(path.join(dir, "secondary")),
    events: await EmbeddedEventLog.open(path.join(dir, "events"), { retentionIntervalMs: 0 }),
  };
}

export async function closeTiers(t: Tiers): Promise<void> {
  await t.events.close();
  await t.cloud.close();
  await t.local.close();
  await t.secondary.close();
}

/** The manager's options, the same in the child and in the parent's final run. */
export function managerOptions(t: Tiers, local: BlobBackend, cloud: BlobBackend): TierManagerOptions {
  return {
    cloud,
    local: { backend: local, capacityBytes: CAPACITY, highWatermark: HIGH, lowWatermark: LOW },
    secondary: t.secondary,
    events: t.events,
    pins: [{ bucket: "pinned" }],
    // As the object store's packsOf: every pinned pack wherever it is (here: whatever tier holds one).
    packsOf: async () => {
      const keys = new Set<string>();
      for (const tier of [local, cloud]) for await (const b of tier.list("packs/")) if (isPinned(b.key)) keys.add(b.key);
      return keys;
    },
    // The object store records the upload and announces it; here the announcement is all.
    markPackUploaded: async (blobKey) => {
      await t.events.append([
        { id: `mark-${blobKey}-${Date.now()}`, kind: "pack-uploaded", key: blobKey.slice(-32), time: Date.now(), data: { blobKey, size: sizeOf(blobKey) } },
      ]);
    },
    purgeIntervalMs: 50,
    pollWaitMs: 20,
    retryBaseMs: 5,
    retryMaxMs: 100,
  };
}
