/**
 * The tier manager: where packs live (cloud, local, secondary) and how they move between tiers.
 *
 *   const tiers = await TierManager.open({ cloud, local: { backend, capacityBytes }, events, ... });
 *   tiers.start();                        // hydrator, uploader, secondary copier, periodic purge
 *   store uses tiers.cloudFirst / tiers.writeBack as its backends
 *   await tiers.stop();
 *
 * The manager owns none of the backends or the event log: whoever opened them closes them (after
 * stop()). docs/TIERS.md describes the policies, events, purge rules and crash behaviour.
 */
import type { BlobBackend } from "../backend/backend.js";
import { resolveTierConfig, type TierManagerOptions } from "./config.js";
import { TierCore } from "./core.js";
import { purgePass, repairPins, type PurgeReport } from "./purge.js";
import type { TierManagerStats, TierStats, WorkerLag } from "./stats.js";
import { TierView } from "./views.js";
import { drainGroup, hydratorHandler, runWorker, secondaryHandler, StopSignal, uploaderHandler, type Handler, type WorkerName } from "./workers.js";

interface ScanResult {
  packs: number;
  bytes: number;
}

export class TierManager {
  /** The `cloud` durability policy: puts resolve once the cloud holds the blob. */
  readonly cloudFirst: BlobBackend;
  /** The `local` (write-back) policy: puts resolve once the local tier holds the blob. Only with a local tier. */
  readonly writeBack: BlobBackend | undefined;

  readonly #core: TierCore;
  #signal: StopSignal | undefined;
  #tasks: Promise<void>[] = [];
  #running: Promise<PurgeReport> | undefined;
  #queued: Promise<PurgeReport> | undefined;
  readonly #scans: { cloud?: ScanResult; secondary?: ScanResult } = {};

  private constructor(options: TierManagerOptions) {
    const config = resolveTierConfig(options);
    this.#core = new TierCore(config, options.events, options.cloud, options.secondary);
    this.cloudFirst = new TierView(this.#core, "cloud-first");
    this.writeBack = config.local === undefined ? undefined : new TierView(this.#core, "write-back");
    this.#core.schedulePurge = () => this.#schedulePurge();
  }

  /**
   * Validates the options (`STOWAGE_INVALID_ARGUMENT`) and seeds the local index by listing the
   * local tier (its usage, and the LRU order: listed blobs count as least recently used, in key
   * order). Workers do not run until {@link start}.
   */
  static async open(options: TierManagerOptions): Promise<TierManager> {
    const m = new TierManager(options);
    const local = m.#core.local;
    if (local !== undefined) {
      for await (const info of local.list("")) m.#core.index.set(info.key, info.size);
    }
    return m;
  }

  /** Whether the workers run. */
  get running(): boolean {
    return this.#signal !== undefined;
  }

  /**
   * Starts the workers (hydrator and uploader with a local tier, secondary copier with a secondary
   * tier) and the periodic purge. Idempotent.
   */
  start(): void {
    if (this.#signal !== undefined) return;
    const signal = new StopSignal();
    this.#signal = signal;
    const core = this.#core;
    const { groups, clock, purgeIntervalMs, onError } = core.config;
    this.#tasks = this.#workers().map(([name, handler]) => runWorker(core, core.events, groups[name], handler, signal));
    if (core.local !== undefined) {
      this.#tasks.push(
        (async () => {
          while (!signal.stopped) {
            await signal.sleep(clock, purgeIntervalMs);
            if (signal.stopped) break;
            await this.purgeIfNeeded().catch((err: unknown) => onError(err, "periodic purge"));
            await repairPins(core).catch((err: unknown) => onError(err, "pin repair"));
          }
        })(),
      );
    }
  }

  /**
   * Stops the workers (each finishes the event it is handling; what it has not committed is
   * delivered again at the next start), then waits for background work and any purge.
   */
  async stop(): Promise<void> {
    const signal = this.#signal;
    if (signal === undefined) return;
    signal.stop();
    await Promise.all(this.#tasks);
    this.#tasks = [];
    this.#signal = undefined;
    await this.idle();
  }

  /**
   * Handles the workers' backlog now. Without started workers: passes over each group (hydrator,
   * uploader, secondary copier, again while any of them handled something, since an upload
   * announces `pack-uploaded`), each stopping at its first failing event, which stays uncommitted
   * for the next drain or start. With started workers: waits until every group's lag is 0, or
   * `timeoutMs` passed. Then waits for background work. Whether every group caught up.
   */
  async drain(timeoutMs = 30_000): Promise<boolean> {
    const core = this.#core;
    if (this.#signal !== undefined) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        await this.idle();
        const { lag } = await this.stats();
        if (Object.values(lag).every((l) => l === 0)) return true;
        if (Date.now() > end) return false;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    const { groups } = core.config;
    const workers = this.#workers();
    const failed = new Set<WorkerName>();
    for (let progress = true; progress; ) {
      progress = false;
      for (const [name, handler] of workers) {
        if (failed.has(name)) continue;
        const r = await drainGroup(core, core.events, groups[name], handler);
        if (r.handled > 0) progress = true;
        if (r.failed) failed.add(name);
      }
    }
    await this.idle();
    return failed.size === 0;
  }

  /**
   * Resolves once no background work is running: local copies of cloud-first puts, event appends,
   * scheduled purges. (Workers are not background work: see stats().lag.)
   */
  async idle(): Promise<void> {
    for (;;) {
      await this.#core.idle();
      const p = this.#queued ?? this.#running;
      if (p === undefined) return;
      await p.catch(() => undefined);
    }
  }

  /**
   * Purges the local tier if its usage exceeds the high watermark (see purge.ts). Passes never
   * overlap: a call during a pass waits for it and then runs one more (shared by all such calls).
   * Rejects only when the pins cannot be resolved (then nothing is purged).
   */
  purgeIfNeeded(): Promise<PurgeReport> {
    if (this.#queued !== undefined) return this.#queued;
    const running = this.#running;
    if (running === undefined) return this.#startPass();
    const queued = running
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.#startPass();
      });
    this.#queued = queued;
    return queued;
  }

  /**
   * Asks the hydrator for every pinned pack the local tier lacks (also run by the periodic loop
   * after each purge check); returns how many it requested. See purge.ts.
   */
  repairPins(): Promise<number> {
    return repairPins(this.#core);
  }

  /** Local tier usage (bytes and blobs held), or undefined without a local tier. */
  localUsage(): { bytes: number; packs: number; capacityBytes: number } | undefined {
    const cfg = this.#core.config.local;
    if (cfg === undefined) return undefined;
    return { bytes: this.#core.index.bytes, packs: this.#core.index.count, capacityBytes: cfg.capacityBytes };
  }

  /**
   * Per-tier usage and requests, counters, and worker lag. With `scan`, the cloud and secondary
   * tiers are listed first to count their blobs and bytes (billed list requests; counted).
   */
  async stats(options: { scan?: boolean } = {}): Promise<TierManagerStats> {
    const core = this.#core;
    if (options.scan === true) {
      this.#scans.cloud = await scan(core.cloud);
      if (core.secondary !== undefined) this.#scans.secondary = await scan(core.secondary);
    }
    const { groups } = core.config;
    const lagOf = async (group: string): Promise<number | undefined> => {
      try {
        return await core.events.lag(group);
      } catch {
        return undefined;
      }
    };
    const lag: WorkerLag = {};
    if (core.local !== undefined) {
      lag.hydrator = await lagOf(groups.hydrator);
      lag.uploader = await lagOf(groups.uploader);
    }
    if (core.secondary !== undefined) lag.secondary = await lagOf(groups.secondary);

    const remote = (tier: { counters(): TierStats["requests"] }, s: ScanResult | undefined): TierStats => {
      const requests = tier.counters();
      return { packs: s?.packs, bytes: s?.bytes, requests, egressBytes: requests.bytesRead };
    };
    const stats: TierManagerStats = {
      cloud: remote(core.cloud, this.#scans.cloud),
      counters: { ...core.counters },
      hydrationBacklog: { lag: lag.hydrator, requested: core.hydrationRequested.size },
      lag,
      running: this.running,
    };
    const cfg = core.config.local;
    if (core.local !== undefined && cfg !== undefined) {
      stats.local = {
        packs: core.index.count,
        bytes: core.index.bytes,
        requests: core.local.counters(),
        egressBytes: 0,
        capacityBytes: cfg.capacityBytes,
        highWatermarkBytes: Math.floor(cfg.highWatermark * cfg.capacityBytes),
        lowWatermarkBytes: Math.floor(cfg.lowWatermark * cfg.capacityBytes),
        awaitingUpload: core.pendingUploads.size,
      };
    }
    if (core.secondary !== undefined) stats.secondary = remote(core.secondary, this.#scans.secondary);
    return stats;
  }

  /** The workers this configuration runs: hydrator and uploader with a local tier, secondary copier with a secondary tier. */
  #workers(): Array<[WorkerName, Handler]> {
    const core = this.#core;
    const workers: Array<[WorkerName, Handler]> = [];
    if (core.local !== undefined) {
      workers.push(["hydrator", hydratorHandler(core)], ["uploader", uploaderHandler(core)]);
    }
    if (core.secondary !== undefined) workers.push(["secondary", secondaryHandler(core)]);
    return workers;
  }

  #startPass(): Promise<PurgeReport> {
    const p = purgePass(this.#core).finally(() => {
      if (this.#running === p) this.#running = undefined;
    });
    this.#running = p;
    return p;
  }

  /** After local writes: a purge in the background, when usage is over the high watermark. */
  #schedulePurge(): void {
    const cfg = this.#core.config.local;
    if (cfg === undefined || this.#core.index.bytes <= cfg.highWatermark * cfg.capacityBytes) return;
    if (this.#queued !== undefined) return;
    this.#core.background(this.purgeIfNeeded(), "purge");
  }
}

async function scan(tier: BlobBackend): Promise<ScanResult> {
  let packs = 0;
  let bytes = 0;
  for await (const info of tier.list("")) {
    packs++;
    bytes += info.size;
  }
  return { packs, bytes };
}
