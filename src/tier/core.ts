/**
 * The state the tier manager's parts share (views, workers, purger): the tiers (each wrapped in a
 * CountingBackend), the local index, per-key locks, counters, and the steps that copy a blob from
 * one tier to another. Internal to src/tier.
 */
import { randomBytes } from "node:crypto";
import type { BlobBackend } from "../backend/backend.js";
import { CountingBackend } from "../backend/counting.js";
import type { EventKind, EventLog, EventValue, StowageEvent } from "../events/types.js";
import { isStowageError } from "../errors.js";
import type { ResolvedTierConfig } from "./config.js";
import { KeyLocks } from "./key-lock.js";
import { LocalIndex } from "./local-index.js";

/** Counters of what the manager did since it was opened. */
export interface TierCounters {
  /** Packs copied cloud → local by the hydrator, and their bytes. */
  hydrations: number;
  hydratedBytes: number;
  /** Hydration requests appended (`hydrate-needed`: reads served by the cloud, failed local writes). */
  hydrationRequests: number;
  /** Write-back packs copied local → cloud by the uploader, and their bytes. */
  uploads: number;
  uploadedBytes: number;
  /** upload-needed events for packs found in no tier (deleted before they were uploaded). */
  uploadsMissing: number;
  /** Packs copied to the secondary tier, and their bytes. */
  secondaryCopies: number;
  secondaryCopiedBytes: number;
  /** Local copies dropped by the purger, and their bytes. */
  purges: number;
  purgedBytes: number;
  /** Purge candidates kept because the cloud (or secondary) did not confirm a copy of the same size. */
  purgeUnconfirmed: number;
  /** Local writes of cloud-first puts that failed (the put still succeeded). */
  localWriteFailures: number;
  /** Reads the local tier could not serve (missing or failing) that went to the cloud. */
  localMisses: number;
  /** Reads the cloud failed that the secondary tier served. */
  secondaryReads: number;
  /** Events the manager could not append (the work they announce was done or will be redone). */
  eventAppendFailures: number;
  /** Handler attempts that failed and were retried, per worker. */
  handlerRetries: number;
}

export function zeroTierCounters(): TierCounters {
  return {
    hydrations: 0,
    hydratedBytes: 0,
    hydrationRequests: 0,
    uploads: 0,
    uploadedBytes: 0,
    uploadsMissing: 0,
    secondaryCopies: 0,
    secondaryCopiedBytes: 0,
    purges: 0,
    purgedBytes: 0,
    purgeUnconfirmed: 0,
    localWriteFailures: 0,
    localMisses: 0,
    secondaryReads: 0,
    eventAppendFailures: 0,
    handlerRetries: 0,
  };
}

/** An insertion-ordered set that forgets its oldest members beyond `max`. */
export class RecentSet {
  readonly #keys = new Set<string>();
  constructor(private readonly max: number) {}
  add(key: string): void {
    this.#keys.delete(key);
    this.#keys.add(key);
    if (this.#keys.size > this.max) {
      const oldest = this.#keys.values().next();
      if (oldest.done !== true) this.#keys.delete(oldest.value);
    }
  }
  has(key: string): boolean {
    return this.#keys.has(key);
  }
  delete(key: string): void {
    this.#keys.delete(key);
  }
}

/**
 * The ordering key of a pack event: the pack id, i.e. the blob key's last segment
 * (`packs/ab/<id>` → `<id>`), as the object store keys its own pack events.
 */
export function eventKeyOf(blobKey: string): string {
  return blobKey.slice(blobKey.lastIndexOf("/") + 1);
}

export type HydrateOutcome = "hydrated" | "present" | "unavailable";

export class TierCore {
  readonly cloud: CountingBackend;
  readonly local: CountingBackend | undefined;
  readonly secondary: CountingBackend | undefined;
  readonly index = new LocalIndex();
  readonly locks = new KeyLocks();
  readonly counters = zeroTierCounters();
  /** Write-back packs put through this process and not yet uploaded (purge skips them too). */
  readonly pendingUploads = new Set<string>();
  /** Keys with a `hydrate-needed` appended by this process and not yet handled (no duplicates). */
  readonly hydrationRequested = new Set<string>();
  /** Keys purged by this process lately: a late `pack-uploaded` does not hydrate them again. */
  readonly recentlyPurged = new RecentSet(100_000);
  /** The pinned packs as of the last pin repair (purge.ts), so that the hydrator honours pins. */
  pinnedCache: Set<string> = new Set();
  /** Keys hydrated whose `hydrated` event could not be appended yet (appended on the retry). */
  readonly unannounced = new Map<string, number>();
  /** Local writes of cloud-first puts still running, by key (reads wait for them). */
  readonly localWrites = new Map<string, Promise<void>>();
  /** Set by the manager: runs purgeIfNeeded soon, without waiting for it. */
  schedulePurge: () => void = () => {};
  readonly #background = new Set<Promise<unknown>>();

  constructor(
    readonly config: ResolvedTierConfig,
    readonly events: EventLog,
    cloud: BlobBackend,
    secondary: BlobBackend | undefined,
  ) {
    this.cloud = new CountingBackend(cloud);
    this.local = config.local === undefined ? undefined : new CountingBackend(config.local.backend);
    this.secondary = secondary === undefined ? undefined : new CountingBackend(secondary);
  }

  /** Runs `p` in the background: tracked (see {@link idle}), its failure reported, never thrown. */
  background(p: Promise<unknown>, context: string): void {
    const tracked = p.then(
      () => undefined,
      (err: unknown) => this.config.onError(err, context),
    );
    this.#background.add(tracked);
    void tracked.finally(() => this.#background.delete(tracked));
  }

  /** Resolves once no background work (local writes, event appends, scheduled purges) is running. */
  async idle(): Promise<void> {
    while (this.#background.size > 0) await Promise.all([...this.#background]);
  }

  event(kind: EventKind, blobKey: string, data: Record<string, EventValue>): StowageEvent {
    return {
      id: `tier-${randomBytes(8).toString("hex")}`,
      kind,
      key: eventKeyOf(blobKey),
      time: this.config.clock.now(),
      data: { blobKey, ...data },
    };
  }

  emit(kind: EventKind, blobKey: string, data: Record<string, EventValue>): Promise<void> {
    return this.events.append([this.event(kind, blobKey, data)]);
  }

  /** Appends the event; a failure is counted and reported, not thrown. Whether it was appended. */
  async tryEmit(kind: EventKind, blobKey: string, data: Record<string, EventValue>): Promise<boolean> {
    try {
      await this.emit(kind, blobKey, data);
      return true;
    } catch (err) {
      this.counters.eventAppendFailures++;
      this.config.onError(err, `append ${kind} ${blobKey}`);
      return false;
    }
  }

  /**
   * Asks the hydrator for a local copy of `key` (appends `hydrate-needed`), in the background and
   * once per key until the hydrator has handled it.
   */
  requestHydration(key: string, reason: string, size?: number): void {
    if (this.local === undefined || this.hydrationRequested.has(key)) return;
    this.hydrationRequested.add(key);
    this.counters.hydrationRequests++;
    const data: Record<string, EventValue> = { reason };
    if (size !== undefined) data.size = size;
    this.background(
      this.emit("hydrate-needed", key, data).catch((err: unknown) => {
        this.hydrationRequested.delete(key);
        this.counters.eventAppendFailures++;
        throw err;
      }),
      `append hydrate-needed ${key}`,
    );
  }

  /**
   * Copies `key` into the local tier unless it is there already (with `force`, even then: the
   * local copy failed a read). The source is the cloud, else the secondary tier. "unavailable": no
   * remote tier holds it (deleted, or a write-back pack not uploaded yet): nothing changes.
   * Appends `hydrated` after a copy. Idempotent; runs under the key's lock.
   */
  async hydrate(key: string, force: boolean): Promise<HydrateOutcome> {
    const local = this.local;
    if (local === undefined) return "unavailable";
    const outcome = await this.locks.run(key, async (): Promise<HydrateOutcome> => {
      if (!force) {
        const h = await local.head(key);
        if (h !== undefined) {
          if (!this.index.has(key)) this.index.set(key, h.size);
          return "present";
        }
      }
      const data = await this.readRemote(key);
      if (data === undefined) return "unavailable";
      try {
        await local.put(key, data);
      } catch (err) {
        if (isStowageError(err, "STOWAGE_NO_SPACE")) this.schedulePurge();
        throw err;
      }
      this.index.set(key, data.length);
      this.counters.hydrations++;
      this.counters.hydratedBytes += data.length;
      this.unannounced.set(key, data.length);
      return "hydrated";
    });
    const size = this.unannounced.get(key);
    if (size !== undefined) {
      // After a copy, or on the retry of one whose announcement failed (then the append throws,
      // and the handler is retried without committing).
      await this.emit("hydrated", key, { size });
      this.unannounced.delete(key);
    }
    this.hydrationRequested.delete(key);
    if (outcome === "hydrated") this.schedulePurge();
    return outcome;
  }

  /** The whole blob from the cloud, else from the secondary tier; undefined when neither has it. */
  async readRemote(key: string): Promise<Buffer | undefined> {
    let cloudErr: unknown;
    try {
      return await this.cloud.get(key);
    } catch (err) {
      if (this.secondary === undefined) {
        if (isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) return undefined;
        throw err;
      }
      cloudErr = err;
    }
    try {
      const data = await this.secondary.get(key);
      this.counters.secondaryReads++;
      return data;
    } catch (err) {
      if (isStowageError(cloudErr, "STOWAGE_BACKEND_NOT_FOUND") && isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) return undefined;
      throw cloudErr;
    }
  }
}
