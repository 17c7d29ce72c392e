/**
 * Purge: dropping local copies the cloud already holds, least recently used first, when the local
 * tier is fuller than its high watermark, until it is at or below its low watermark.
 *
 * A copy is dropped only when all of these hold, checked under the key's lock right before the
 * delete (so nothing can change in between):
 *   - the cloud answers `head` with a blob of the same size (and so does the secondary tier, when
 *     there is one): the local copy is never the last one;
 *   - the key is not pinned (the pins' packs, from `packsOf`, are asked once per pass);
 *   - the pack is not awaiting upload (a write-back put of this process not yet uploaded — the
 *     cloud check alone already protects it, this only saves the request);
 *   - no local write of it is running and it was not used since the pass began.
 * `purge-candidate` is appended before the delete (if that append fails, the copy is kept) and
 * `purged` after it. A crash anywhere leaves the local copy or not, and the cloud's in any case.
 */
import type { TierCore } from "./core.js";

export interface PurgeReport {
  /** Whether usage was above the high watermark when the pass started (else it did nothing). */
  needed: boolean;
  purged: number;
  purgedBytes: number;
  /** Candidates kept, by reason. */
  kept: { pinned: number; awaitingUpload: number; unconfirmed: number; busy: number };
  /** Local usage when the pass ended. */
  usageBytes: number;
  /** The low watermark in bytes: where a pass stops. */
  targetBytes: number;
}

export async function pinnedKeys(core: TierCore): Promise<Set<string>> {
  const { pins, packsOf } = core.config;
  const all = new Set<string>();
  if (packsOf === undefined) return all;
  for (const pin of pins) {
    for (const key of await packsOf(pin.bucket, pin.prefix)) all.add(key);
  }
  return all;
}

/** One purge pass (see the module comment). Throws only when the pins cannot be resolved. */
export async function purgePass(core: TierCore): Promise<PurgeReport> {
  const localCfg = core.config.local;
  const local = core.local;
  const report: PurgeReport = {
    needed: false,
    purged: 0,
    purgedBytes: 0,
    kept: { pinned: 0, awaitingUpload: 0, unconfirmed: 0, busy: 0 },
    usageBytes: core.index.bytes,
    targetBytes: 0,
  };
  if (localCfg === undefined || local === undefined) return report;
  const high = localCfg.highWatermark * localCfg.capacityBytes;
  const low = localCfg.lowWatermark * localCfg.capacityBytes;
  report.targetBytes = Math.floor(low);
  if (core.index.bytes <= high) return report;
  report.needed = true;

  // Without knowing the pins nothing may be dropped: a failure here fails the pass.
  const pinned = await pinnedKeys(core);

  for (const [key, seen] of core.index.lru()) {
    if (core.index.bytes <= low) break;
    if (pinned.has(key)) {
      report.kept.pinned++;
      continue;
    }
    if (core.pendingUploads.has(key)) {
      report.kept.awaitingUpload++;
      continue;
    }
    if (core.localWrites.has(key)) {
      report.kept.busy++;
      continue;
    }
    const outcome = await core.locks.run(key, async (): Promise<"purged" | "busy" | "unconfirmed"> => {
      const entry = core.index.get(key);
      if (entry === undefined || entry.tick !== seen.tick || core.pendingUploads.has(key)) return "busy";
      if (!(await confirmed(core, key, entry.size))) return "unconfirmed";
      if (!(await core.tryEmit("purge-candidate", key, { size: entry.size }))) return "busy";
      await local.delete(key);
      core.index.remove(key);
      core.recentlyPurged.add(key);
      core.counters.purges++;
      core.counters.purgedBytes += entry.size;
      report.purgedBytes += entry.size;
      await core.tryEmit("purged", key, { size: entry.size });
      return "purged";
    }).catch((err: unknown) => {
      core.config.onError(err, `purge ${key}`);
      return "busy" as const;
    });
    if (outcome === "purged") report.purged++;
    else if (outcome === "unconfirmed") {
      report.kept.unconfirmed++;
      core.counters.purgeUnconfirmed++;
    } else report.kept.busy++;
  }
  report.usageBytes = core.index.bytes;
  return report;
}

/** Whether the cloud (and the secondary tier, if any) holds `key` with exactly `size` bytes. */
async function confirmed(core: TierCore, key: string, size: number): Promise<boolean> {
  const holds = async (tier: { head(key: string): Promise<{ size: number } | undefined> }): Promise<boolean> => {
    try {
      const info = await tier.head(key);
      return info !== undefined && info.size === size;
    } catch {
      return false;
    }
  };
  if (!(await holds(core.cloud))) return false;
  if (core.secondary !== undefined && !(await holds(core.secondary))) return false;
  return true;
}

/**
 * Pin repair: asks the hydrator for every pinned pack the local tier lacks. A pack can miss its pin
 * when it was purged before the metadata naming it committed (the pin set is the object store's
 * view at the start of a purge pass), when its local write failed, or when the pins changed. Run
 * by the periodic purge loop; returns how many hydrations it requested. Pinned packs are also
 * exempt from the hydrator's "recently purged" skip, so the request is honoured.
 */
export async function repairPins(core: TierCore): Promise<number> {
  if (core.local === undefined || core.config.pins.length === 0) return 0;
  const pinned = await pinnedKeys(core);
  core.pinnedCache = pinned;
  let requested = 0;
  for (const key of pinned) {
    if (core.index.has(key) || core.localWrites.has(key)) continue;
    core.recentlyPurged.delete(key);
    core.requestHydration(key, "pinned");
    requested++;
  }
  return requested;
}
