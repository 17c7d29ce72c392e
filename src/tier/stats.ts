/** What `TierManager.stats()` reports (docs/TIERS.md, "Stats"). */
import type { BackendCounters } from "../backend/backend.js";
import type { TierCounters } from "./core.js";

export interface TierStats {
  /**
   * Blobs (packs, and the few other blobs written through the views) and their bytes. Exact and
   * live for the local tier (its index); for the cloud and secondary tiers, what the latest
   * `stats({ scan: true })` counted (undefined before one: a listing costs a request per 1000).
   */
  packs: number | undefined;
  bytes: number | undefined;
  /** Requests made to the tier by this manager, as a provider bills them (CountingBackend). */
  requests: BackendCounters;
  /** Bytes read out of the tier (egress; 0 for the local tier, whose reads cost nothing). */
  egressBytes: number;
}

export interface LocalTierStats extends TierStats {
  packs: number;
  bytes: number;
  capacityBytes: number;
  /** Usage above which a purge starts, and at or below which it stops (bytes). */
  highWatermarkBytes: number;
  lowWatermarkBytes: number;
  /** Write-back packs put through this process and not uploaded yet. */
  awaitingUpload: number;
}

/** Consumer-group lag (events appended and not yet committed) of each running worker. */
export interface WorkerLag {
  hydrator?: number;
  uploader?: number;
  secondary?: number;
}

export interface TierManagerStats {
  cloud: TierStats;
  local?: LocalTierStats;
  secondary?: TierStats;
  /** Everything the manager did since it was opened (hydrations, uploads, purges, ...). */
  counters: TierCounters;
  /**
   * Hydrations waiting: the hydrator group's lag (every event it has not committed, whatever its
   * kind, so an upper bound), and the `hydrate-needed` requests this process appended that the
   * hydrator has not handled yet.
   */
  hydrationBacklog: { lag: number | undefined; requested: number };
  /** Lag per worker group (undefined when the log could not say). */
  lag: WorkerLag;
  /** Whether the workers are running. */
  running: boolean;
}
