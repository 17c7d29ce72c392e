/**
 * The tier manager's options, their defaults and their validation (docs/TIERS.md describes the
 * policies they select).
 */
import type { BlobBackend } from "../backend/backend.js";
import type { EventLog } from "../events/types.js";
import { StowageError } from "../errors.js";

export interface LocalTierOptions {
  /** Where local copies live (normally a LocalBackend on a local disk). */
  backend: BlobBackend;
  /** Bytes the local tier may hold before purging starts (with the watermarks). */
  capacityBytes: number;
  /** Purge starts when usage exceeds `highWatermark × capacityBytes`. Default 0.9. */
  highWatermark?: number;
  /** Purge stops once usage is at or below `lowWatermark × capacityBytes`. Default 0.75. */
  lowWatermark?: number;
}

/** A part of the namespace whose packs are never purged from the local tier. */
export interface TierPin {
  bucket: string;
  prefix?: string;
}

/**
 * Time, for tests: `now` stamps events, `sleep` paces backoff and the periodic purge. `sleep` must
 * resolve early (not reject) once `signal` is aborted, which stop() does.
 */
export interface TierClock {
  now(): number;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export interface TierManagerOptions {
  /** The cloud tier: the durable home of every acknowledged cloud-first pack. Required. */
  cloud: BlobBackend;
  /** The local tier (on-premise copies); without it the manager only wraps the cloud (and secondary). */
  local?: LocalTierOptions;
  /** A secondary tier (another region or provider) that receives a copy of every uploaded pack. */
  secondary?: BlobBackend;
  /** Where tier events are appended and consumed. */
  events: EventLog;
  /** Hydrate packs that reads had to fetch from the cloud. Default: true when a local tier exists. */
  readHydrate?: boolean;
  /**
   * Hydrate on `pack-uploaded` when the local copy is missing (a cloud-first put whose local copy
   * failed, or a pack written by another gateway). Default: true when a local tier exists.
   */
  hydrateOnUpload?: boolean;
  /** Namespaces whose packs are never purged (needs `packsOf`). */
  pins?: readonly TierPin[];
  /** The blob keys of the packs holding `bucket`'s objects under `prefix` (the object store's). */
  packsOf?: (bucket: string, prefix?: string) => Promise<Set<string>>;
  /**
   * Records that the cloud now holds a write-back pack (the object store's; it emits
   * `pack-uploaded`). Must be idempotent, and must resolve for a pack the store no longer knows.
   * Required with a local tier, since write-back packs need it.
   */
  markPackUploaded?: (blobKey: string) => Promise<void>;
  /** Time source and sleeper. Default: Date.now and setTimeout. */
  clock?: TierClock;
  /** How often start() runs purgeIfNeeded (ms). Default 60 000. */
  purgeIntervalMs?: number;
  /** Longest wait of one worker poll (ms); also bounds how long stop() waits for an idle worker. Default 500. */
  pollWaitMs?: number;
  /** Events taken per poll. Default 16. */
  batchSize?: number;
  /** First retry delay of a failing handler (ms), doubled per attempt. Default 100. */
  retryBaseMs?: number;
  /** Longest retry delay (ms). Default 30 000. */
  retryMaxMs?: number;
  /** Prefix of the consumer groups' names (`<prefix>hydrator`, ...). Default `tier-`. */
  groupPrefix?: string;
  /** Told about every error the manager handles itself (failed background work, retried handlers). */
  onError?: (err: unknown, context: string) => void;
}

export interface ResolvedLocalTier {
  backend: BlobBackend;
  capacityBytes: number;
  highWatermark: number;
  lowWatermark: number;
}

export interface ResolvedTierConfig {
  local: ResolvedLocalTier | undefined;
  readHydrate: boolean;
  hydrateOnUpload: boolean;
  pins: readonly TierPin[];
  packsOf: ((bucket: string, prefix?: string) => Promise<Set<string>>) | undefined;
  markPackUploaded: (blobKey: string) => Promise<void>;
  clock: TierClock;
  purgeIntervalMs: number;
  pollWaitMs: number;
  batchSize: number;
  retryBaseMs: number;
  retryMaxMs: number;
  groups: { hydrator: string; uploader: string; secondary: string };
  onError: (err: unknown, context: string) => void;
}

export const DEFAULT_HIGH_WATERMARK = 0.9;
export const DEFAULT_LOW_WATERMARK = 0.75;

export const systemClock: TierClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    }),
};

function invalid(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", `tier manager: ${what}`);
}

function positiveInt(name: string, v: number | undefined, dflt: number, min = 1): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) throw invalid(`${name} must be an integer >= ${min}`);
  return x;
}

function noStoreYet(): Promise<void> {
  return Promise.reject(invalid("markPackUploaded was not given, so write-back packs cannot be marked uploaded"));
}

/** Validates the options and fills in defaults; throws `STOWAGE_INVALID_ARGUMENT`. */
export function resolveTierConfig(o: TierManagerOptions): ResolvedTierConfig {
  if (o.cloud === undefined) throw invalid("a cloud backend is required");
  if (o.events === undefined) throw invalid("an event log is required");
  let local: ResolvedLocalTier | undefined;
  if (o.local !== undefined) {
    const { capacityBytes } = o.local;
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes <= 0) throw invalid("local.capacityBytes must be a positive integer");
    const highWatermark = o.local.highWatermark ?? DEFAULT_HIGH_WATERMARK;
    const lowWatermark = o.local.lowWatermark ?? DEFAULT_LOW_WATERMARK;
    if (!(highWatermark > 0 && highWatermark <= 1)) throw invalid("local.highWatermark must be in (0, 1]");
    if (!(lowWatermark >= 0 && lowWatermark <= highWatermark)) throw invalid("local.lowWatermark must be in [0, highWatermark]");
    local = { backend: o.local.backend, capacityBytes, highWatermark, lowWatermark };
  }
  const pins = [...(o.pins ?? [])];
  if (pins.length > 0 && o.packsOf === undefined) throw invalid("pins need the packsOf callback");
  for (const p of pins) {
    if (typeof p.bucket !== "string" || p.bucket === "") throw invalid("a pin needs a bucket");
  }
  const retryBaseMs = positiveInt("retryBaseMs", o.retryBaseMs, 100);
  const retryMaxMs = positiveInt("retryMaxMs", o.retryMaxMs, 30_000);
  if (retryMaxMs < retryBaseMs) throw invalid("retryMaxMs must be >= retryBaseMs");
  const prefix = o.groupPrefix ?? "tier-";
  return {
    local,
    readHydrate: local !== undefined && (o.readHydrate ?? true),
    hydrateOnUpload: local !== undefined && (o.hydrateOnUpload ?? true),
    pins,
    packsOf: o.packsOf,
    markPackUploaded: o.markPackUploaded ?? noStoreYet,
    clock: o.clock ?? systemClock,
    purgeIntervalMs: positiveInt("purgeIntervalMs", o.purgeIntervalMs, 60_000),
    pollWaitMs: positiveInt("pollWaitMs", o.pollWaitMs, 500, 0),
    batchSize: positiveInt("batchSize", o.batchSize, 16),
    retryBaseMs,
    retryMaxMs,
    groups: { hydrator: `${prefix}hydrator`, uploader: `${prefix}uploader`, secondary: `${prefix}secondary` },
    onError: o.onError ?? (() => {}),
  };
}
