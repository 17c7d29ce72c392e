/** The tier layer: cloud-first and write-back views over the cloud, local and secondary tiers. */
export { TierManager } from "./manager.js";
export {
  DEFAULT_HIGH_WATERMARK,
  DEFAULT_LOW_WATERMARK,
  type LocalTierOptions,
  type TierClock,
  type TierManagerOptions,
  type TierPin,
} from "./config.js";
export type { TierCounters } from "./core.js";
export type { PurgeReport } from "./purge.js";
export type { LocalTierStats, TierManagerStats, TierStats, WorkerLag } from "./stats.js";
export type { ViewPolicy } from "./views.js";
