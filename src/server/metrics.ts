/**
 * Prometheus metrics for `stowage serve`, at `GET /_stowage/metrics` (text exposition format; no
 * signature needed, like `/health`; `_stowage` cannot be a bucket name, so no bucket is shadowed).
 *
 * - `stowage_s3_requests_total{method,status}` and `stowage_s3_request_duration_seconds{method}`:
 *   counted by the S3 server as requests finish.
 * - Gauges read at scrape time from the sources the gateway registers ({@link MetricsSource}): the
 *   object store's savings (bytes, requests, dollars) and, per tier, bytes, packs, requests, egress,
 *   hydration backlog, event lag and purges. Sources that scan metadata are cached for
 *   `minIntervalMs` so that frequent scrapes stay cheap.
 * - The process metrics of prom-client's default collectors (CPU, memory, event loop lag), prefixed
 *   `stowage_`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { MetaReader } from "../meta/types.js";
import { computeStats } from "../store/stats.js";
import type { TierManager } from "../tier/manager.js";
import type { TierStats } from "../tier/stats.js";
import type { OutboxRelay } from "../events/outbox.js";

/** One gauge value. Names are completed with the `stowage_` prefix. */
export interface MetricSample {
  name: string;
  help: string;
  labels?: Record<string, string>;
  value: number;
}

/** Something that reports gauges when scraped. */
export type MetricsSource = () => Promise<MetricSample[]>;

const NAME = /^[a-z_][a-z0-9_]*$/;

export class Metrics {
  readonly registry = new Registry();
  readonly #requests: Counter<"method" | "status">;
  readonly #duration: Histogram<"method">;
  readonly #sources: { source: MetricsSource; minIntervalMs: number; cached?: { at: number; samples: MetricSample[] } }[] = [];
  /** Gauges created from source samples, by full name. */
  readonly #gauges = new Map<string, { gauge: Gauge; labelNames: string[] }>();
  readonly #now: () => number;

  constructor(options: { defaultMetrics?: boolean; now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#requests = new Counter({
      name: "stowage_s3_requests_total",
      help: "S3 requests answered, by HTTP method and status code.",
      labelNames: ["method", "status"],
      registers: [this.registry],
    });
    this.#duration = new Histogram({
      name: "stowage_s3_request_duration_seconds",
      help: "Time from the request's arrival to its last response byte, by HTTP method.",
      labelNames: ["method"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "stowage_" });
  }

  /** Records one finished S3 request. */
  observeRequest(method: string, status: number, seconds: number): void {
    this.#requests.inc({ method, status: String(status) });
    this.#duration.observe({ method }, seconds);
  }

  /** Adds a source of gauges, re-read at most every `minIntervalMs` (default 0: every scrape). */
  addSource(source: MetricsSource, minIntervalMs = 0): void {
    this.#sources.push({ source, minIntervalMs });
  }

  /** The exposition text (what `/_stowage/metrics` returns). */
  async render(): Promise<string> {
    for (const g of this.#gauges.values()) g.gauge.reset();
    for (const s of this.#sources) {
      const now = this.#now();
      if (s.cached === undefined || now - s.cached.at >= s.minIntervalMs) {
        s.cached = { at: now, samples: await s.source() };
      }
      for (const sample of s.cached.samples) this.#set(sample);
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #set(sample: MetricSample): void {
    const name = `stowage_${sample.name}`;
    if (!NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    const labels = sample.labels ?? {};
    const labelNames = Object.keys(labels).sort();
    let entry = this.#gauges.get(name);
    if (entry === undefined) {
      entry = { gauge: new Gauge({ name, help: sample.help, labelNames, registers: [this.registry] }), labelNames };
      this.#gauges.set(name, entry);
    } else if (entry.labelNames.join(",") !== labelNames.join(",")) {
      throw new Error(`metric ${name} reported with labels ${labelNames.join(",")} after ${entry.labelNames.join(",")}`);
    }
    entry.gauge.set(labels, sample.value);
  }
}

/** Gauges of what the object store saved (the figures of `stowage stats`). */
export function storeStatsSource(meta: MetaReader): MetricsSource {
  return async () => {
    const s = await computeStats(meta);
    const g = (name: string, help: string, value: number): MetricSample => ({ name, help, value });
    return [
      g("logical_bytes", "Bytes of every stored object version (what a plain bucket would hold).", s.logicalBytes),
      g("stored_bytes", "Bytes of pack blobs in the cloud tier.", s.storedBytes),
      g("journal_bytes", "Bytes of metadata journal records in live packs (part of stored bytes).", s.journalBytes),
      g("unique_bytes", "Plaintext bytes of the distinct chunks referenced.", s.uniqueBytes),
      g("dedup_ratio", "Logical bytes over unique bytes.", s.dedupRatio),
      g("compression_ratio", "Unique bytes over compressed bytes.", s.compressionRatio),
      g("objects", "Current objects (not delete markers).", s.objects),
      g("object_versions", "Object versions, delete markers included.", s.versions),
      g("buckets", "Buckets.", s.buckets),
      g("packs", "Live packs.", s.packs),
      g("backend_puts", "PUT requests issued to the cloud tier so far.", s.backendPuts),
      g("plain_puts", "PUT requests a plain one-object-per-key upload would have issued.", s.plainPuts),
      g("monthly_cost_dollars", "One month of storage plus the write requests so far, at S3 Standard prices.", s.monthlyCost),
      g("plain_monthly_cost_dollars", "The same for a plain one-object-per-key bucket.", s.plainMonthlyCost),
    ];
  };
}

/** Gauges of the tiers (per tier: bytes, packs, requests, egress; hydration backlog, event lag, purges) and of the outbox relay. */
export function tierStatsSource(tiers: TierManager, relay?: OutboxRelay): MetricsSource {
  return async () => {
    const s = await tiers.stats();
    const out: MetricSample[] = [];
    const tierRows: Array<[string, TierStats | undefined]> = [
      ["cloud", s.cloud],
      ["local", s.local],
      ["secondary", s.secondary],
    ];
    for (const [tier, t] of tierRows) {
      if (t === undefined) continue;
      if (t.bytes !== undefined) out.push({ name: "tier_bytes", help: "Bytes of blobs in the tier (cloud and secondary: as of the last scan).", labels: { tier }, value: t.bytes });
      if (t.packs !== undefined) out.push({ name: "tier_packs", help: "Blobs (packs) in the tier (cloud and secondary: as of the last scan).", labels: { tier }, value: t.packs });
      for (const kind of ["puts", "gets", "heads", "lists", "deletes"] as const) {
        out.push({ name: "tier_requests", help: "Requests made to the tier since the gateway started, by kind.", labels: { tier, kind }, value: t.requests[kind] });
      }
      out.push({ name: "tier_bytes_written", help: "Bytes written to the tier since the gateway started.", labels: { tier }, value: t.requests.bytesWritten });
      out.push({ name: "tier_egress_bytes", help: "Bytes read out of the tier since the gateway started (0 for the local tier).", labels: { tier }, value: t.egressBytes });
    }
    if (s.local !== undefined) {
      out.push({ name: "tier_local_capacity_bytes", help: "Configured capacity of the local tier.", value: s.local.capacityBytes });
      out.push({ name: "tier_local_awaiting_upload", help: "Write-back packs not yet uploaded to the cloud.", value: s.local.awaitingUpload });
    }
    if (s.hydrationBacklog.lag !== undefined) out.push({ name: "tier_hydration_backlog", help: "Events the hydrator has not handled yet.", value: s.hydrationBacklog.lag });
    for (const [group, lag] of Object.entries(s.lag)) {
      if (lag !== undefined) out.push({ name: "tier_event_lag", help: "Events appended and not yet committed, per tier worker.", labels: { worker: group }, value: lag });
    }
    const c = s.counters;
    const counters: Array<[string, string, number]> = [
      ["tier_hydrations", "Packs copied cloud to local since the gateway started.", c.hydrations],
      ["tier_uploads", "Write-back packs copied local to cloud since the gateway started.", c.uploads],
      ["tier_secondary_copies", "Packs copied to the secondary tier since the gateway started.", c.secondaryCopies],
      ["tier_purges", "Local copies dropped by the purger since the gateway started.", c.purges],
      ["tier_purged_bytes", "Bytes of local copies dropped by the purger since the gateway started.", c.purgedBytes],
      ["tier_local_misses", "Reads the local tier could not serve since the gateway started.", c.localMisses],
      ["tier_local_write_failures", "Failed local copies of cloud-first puts since the gateway started.", c.localWriteFailures],
    ];
    for (const [name, help, value] of counters) out.push({ name, help, value });
    if (relay !== undefined) {
      const r = relay.stats();
      out.push({ name: "outbox_pending", help: "Events committed with metadata and not yet in the event log.", value: r.pending });
      out.push({ name: "outbox_relay_failures", help: "Failed outbox relay passes since the gateway started.", value: r.failures });
    }
    return out;
  };
}
