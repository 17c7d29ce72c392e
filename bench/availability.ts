/**
 * Availability simulation: the same request trace against a cloud tier that is up 99.99% of the
 * time and a local tier up 99.9% of the time (outage patterns drawn from a seed), once with every
 * write cloud-first (the `cloud` durability policy) and once write-back (the `local` policy).
 *
 *   npm run bench:availability                 # 1,000,000 requests over 100 simulated years
 *   npm run bench:availability -- --quick      # 100,000 requests over 10 simulated years
 *   node dist/bench/availability.js [--quick] [--requests N] [--years Y] [--seed N]
 *        [--cloud-availability A] [--local-availability A] [--cloud-outage-min M] [--local-outage-min M]
 *        [--write-fraction F] [--flush-interval-s S]
 *
 * The system under test is Stowage's real tier manager (src/tier): its cloud-first and write-back
 * views, its uploader and hydrator, over in-memory backends, with an in-memory event log. Time is
 * simulated: each backend is wrapped in a FaultyBackend whose every call fails while the simulated
 * clock is inside one of that tier's outages. Outages alternate with up-times, both exponentially
 * distributed, with the mean outage length given (cloud 20 min, local 60 min) and the mean up-time
 * chosen so that the long-run availability is the one asked for; the realised availability of each
 * schedule is printed too, since a few outages more or less move the figures.
 *
 * The trace: `--requests` requests at uniformly random instants over `--years` simulated years; a
 * fraction `--write-fraction` (0.3) are writes of a new 256-byte blob, the rest reads of a blob
 * written earlier (uniformly chosen). A request succeeds or fails once (no client retries). Every
 * `--flush-interval-s` simulated seconds (300) the tier manager's workers run until their queues are
 * empty (or every remaining item fails because a tier is down): the write-back uploader copies
 * local packs to the cloud, the hydrator copies cloud packs to the local tier. The interval stands
 * for the delay of a busy uploader; Stowage's uploader reacts to each event within its poll wait.
 *
 * Reported:
 * - `write` / `read`: the fraction of writes / reads that succeeded, per policy.
 * - `lost-acked-writes`: acknowledged writes that were not yet in the cloud when the local tier went
 *   down, summed over every local outage in the simulated period, as if each had been the loss of
 *   the local disks. Cloud-first writes are acknowledged only once the cloud holds them: 0 by
 *   construction, and the simulation checks it.
 */
import { parseArgs } from "node:util";
import { resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import { MemoryBackend } from "../src/backend/memory.js";
import { FaultyBackend } from "../src/backend/faulty.js";
import type { BlobBackend } from "../src/backend/backend.js";
import { MemoryEventLog } from "../src/events/memory.js";
import { TierManager } from "../src/tier/manager.js";
import { mulberry32 as prng } from "../src/util/random.js";

const YEAR_S = 365 * 24 * 3600;

interface Config {
  requests: number;
  years: number;
  seed: number;
  cloudAvailability: number;
  localAvailability: number;
  cloudOutageMin: number;
  localOutageMin: number;
  writeFraction: number;
  flushIntervalS: number;
}

function config(argv: string[]): Config {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      requests: { type: "string" },
      years: { type: "string" },
      seed: { type: "string" },
      "cloud-availability": { type: "string" },
      "local-availability": { type: "string" },
      "cloud-outage-min": { type: "string" },
      "local-outage-min": { type: "string" },
      "write-fraction": { type: "string" },
      "flush-interval-s": { type: "string" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const num = (v: string | undefined, dflt: number, name: string, ok: (x: number) => boolean): number => {
    if (v === undefined) return dflt;
    const x = Number(v);
    if (!Number.isFinite(x) || !ok(x)) throw new Error(`--${name}: bad value ${JSON.stringify(v)}`);
    return x;
  };
  const frac = (x: number): boolean => x > 0 && x < 1;
  return {
    requests: num(values.requests, quick ? 100_000 : 1_000_000, "requests", (x) => Number.isInteger(x) && x > 0),
    years: num(values.years, quick ? 10 : 100, "years", (x) => x > 0),
    seed: num(values.seed, 1, "seed", Number.isInteger),
    cloudAvailability: num(values["cloud-availability"], 0.9999, "cloud-availability", frac),
    localAvailability: num(values["local-availability"], 0.999, "local-availability", frac),
    cloudOutageMin: num(values["cloud-outage-min"], 20, "cloud-outage-min", (x) => x > 0),
    localOutageMin: num(values["local-outage-min"], 60, "local-outage-min", (x) => x > 0),
    writeFraction: num(values["write-fraction"], 0.3, "write-fraction", frac),
    flushIntervalS: num(values["flush-interval-s"], 300, "flush-interval-s", (x) => x > 0),
  };
}

function exponential(rand: () => number, mean: number): number {
  return -Math.log(1 - rand()) * mean;
}

/** Outages of one tier: sorted, disjoint [start, end) intervals in simulated seconds. */
export class OutageSchedule {
  readonly starts: number[] = [];
  readonly ends: number[] = [];

  constructor(rand: () => number, horizon: number, availability: number, meanOutage: number) {
    const meanUp = (meanOutage * availability) / (1 - availability);
    let t = exponential(rand, meanUp);
    while (t < horizon) {
      const end = t + exponential(rand, meanOutage);
      this.starts.push(t);
      this.ends.push(end);
      t = end + exponential(rand, meanUp);
    }
  }

  /** Whether the tier is down at `t`. */
  down(t: number): boolean {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && t < this.ends[lo - 1]!;
  }

  /** Fraction of [0, horizon) the tier was up. */
  availability(horizon: number): number {
    let down = 0;
    for (let i = 0; i < this.starts.length; i++) down += Math.min(this.ends[i]!, horizon) - this.starts[i]!;
    return 1 - down / horizon;
  }
}

export interface Request {
  t: number;
  write: boolean;
  /** Blob number: a new one for writes, an earlier one for reads. */
  blob: number;
}

/** The trace: requests in time order; reads only of blobs written before them. */
export function makeTrace(rand: () => number, n: number, horizon: number, writeFraction: number): Request[] {
  const times = Array.from({ length: n }, () => rand() * horizon).sort((a, b) => a - b);
  const out: Request[] = [];
  let written = 0;
  for (const t of times) {
    const write = written === 0 || rand() < writeFraction;
    out.push(write ? { t, write, blob: written++ } : { t, write, blob: Math.floor(rand() * written) });
  }
  return out;
}

/** A tier whose every call fails while the simulated clock is inside one of its outages. */
export function outageBackend(schedule: OutageSchedule, clock: { now: number }): { inner: MemoryBackend; backend: BlobBackend } {
  const inner = new MemoryBackend();
  const faulty = new FaultyBackend(inner, { seed: 1 });
  faulty.inject({ key: () => schedule.down(clock.now) });
  return { inner, backend: faulty };
}

export { YEAR_S, config };

type Policy = "cloud-first" | "write-back";

interface RunResult {
  writes: number;
  writesOk: number;
  reads: number;
  readsOk: number;
  lostAckedWrites: number;
  /** Acknowledged writes whose blob was not in the cloud at acknowledgement (must be 0 for cloud-first). */
  ackedNotInCloud: number;
  uploadsPendingAtEnd: number;
}

/** Number of sorted `starts` in [from, to). */
function countIn(starts: readonly number[], from: number, to: number): number {
  const lowerBound = (x: number): number => {
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return to <= from ? 0 : lowerBound(to) - lowerBound(from);
}

async function runPolicy(cfg: Config, policy: Policy, trace: readonly Request[], cloudOut: OutageSchedule, localOut: OutageSchedule): Promise<RunResult> {
  const clock = { now: 0 };
  const cloud = outageBackend(cloudOut, clock);
  const local = outageBackend(localOut, clock);
  const events = new MemoryEventLog();
  const uploadedAt = new Map<string, number>();
  const ackedAt = new Map<string, number>();
  const tiers = await TierManager.open({
    cloud: cloud.backend,
    local: { backend: local.backend, capacityBytes: 2 ** 50 },
    events,
    markPackUploaded: async (blobKey) => {
      if (!uploadedAt.has(blobKey)) uploadedAt.set(blobKey, clock.now);
      // As the object store does in the same transaction: announce it.
      await events.append([{ id: `up-${blobKey}`, kind: "pack-uploaded", key: blobKey, time: clock.now, data: { blobKey, size: 256 } }]);
    },
    clock: { now: () => clock.now * 1000, sleep: () => Promise.resolve() },
    onError: () => undefined,
  });
  const view = policy === "cloud-first" ? tiers.cloudFirst : tiers.writeBack;
  if (view === undefined) throw new Error("no write-back view");
  const result: RunResult = { writes: 0, writesOk: 0, reads: 0, readsOk: 0, lostAckedWrites: 0, ackedNotInCloud: 0, uploadsPendingAtEnd: 0 };
  const rand = prng(cfg.seed + 7);
  const body = Buffer.alloc(256);
  let nextFlush = cfg.flushIntervalS;
  let id = 0;
  for (const r of trace) {
    while (nextFlush <= r.t) {
      clock.now = nextFlush;
      await tiers.drain();
      nextFlush += cfg.flushIntervalS;
    }
    clock.now = r.t;
    const key = `packs/${String(r.blob).padStart(12, "0")}`;
    if (r.write) {
      result.writes++;
      for (let i = 0; i < body.length; i += 4) body.writeUInt32LE((rand() * 2 ** 32) >>> 0, i);
      try {
        await view.put(key, body);
      } catch {
        continue;
      }
      await tiers.idle();
      result.writesOk++;
      ackedAt.set(key, r.t);
      // The store's outbox event for the pack it just committed.
      const kind = policy === "cloud-first" ? "pack-uploaded" : "upload-needed";
      await events.append([{ id: `e${id++}`, kind, key, time: r.t, data: { blobKey: key, size: body.length } }]);
      if (policy === "cloud-first") {
        if (cloud.inner.rawForTesting(key) === undefined) result.ackedNotInCloud++;
        else uploadedAt.set(key, r.t);
      }
    } else {
      if (!ackedAt.has(key)) continue; // its write failed: nothing to read
      result.reads++;
      try {
        await view.get(key);
        result.readsOk++;
      } catch {
        // counted as failed
      }
      await tiers.idle();
    }
  }
  for (const [key, t] of ackedAt) {
    const up = uploadedAt.get(key) ?? Number.POSITIVE_INFINITY;
    if (up === Number.POSITIVE_INFINITY) result.uploadsPendingAtEnd++;
    result.lostAckedWrites += countIn(localOut.starts, t, up);
  }
  await tiers.stop();
  await events.close();
  return result;
}

function fmt(x: number): string {
  return x.toFixed(5);
}

async function main(): Promise<void> {
  const cfg = config(process.argv.slice(2));
  const horizon = cfg.years * YEAR_S;
  const rand = prng(cfg.seed);
  const cloudOut = new OutageSchedule(rand, horizon, cfg.cloudAvailability, cfg.cloudOutageMin * 60);
  const localOut = new OutageSchedule(rand, horizon, cfg.localAvailability, cfg.localOutageMin * 60);
  const trace = makeTrace(rand, cfg.requests, horizon, cfg.writeFraction);
  console.log(
    `# ${cfg.requests} requests over ${cfg.years} simulated years, seed ${cfg.seed}; ` +
      `cloud: ${cloudOut.starts.length} outages, realised availability ${cloudOut.availability(horizon).toFixed(6)}; ` +
      `local: ${localOut.starts.length} outages, realised availability ${localOut.availability(horizon).toFixed(6)}`,
  );
  const started = performance.now();
  const cf = await runPolicy(cfg, "cloud-first", trace, cloudOut, localOut);
  const wb = await runPolicy(cfg, "write-back", trace, cloudOut, localOut);
  if (cf.ackedNotInCloud !== 0) throw new Error(`cloud-first acknowledged ${cf.ackedNotInCloud} writes the cloud did not hold`);
  console.log(`availability write: cloud-first=${fmt(cf.writesOk / cf.writes)} write-back=${fmt(wb.writesOk / wb.writes)}`);
  console.log(`availability read: cloud-first=${fmt(cf.readsOk / cf.reads)} write-back=${fmt(wb.readsOk / wb.reads)}`);
  console.log(`availability lost-acked-writes: cloud-first=${cf.lostAckedWrites} write-back=${wb.lostAckedWrites}`);
  console.log(
    `# detail: writes ${cf.writes} (failed: cloud-first ${cf.writes - cf.writesOk}, write-back ${wb.writes - wb.writesOk}), ` +
      `reads cloud-first ${cf.reads} (failed ${cf.reads - cf.readsOk}) / write-back ${wb.reads} (failed ${wb.reads - wb.readsOk}); ` +
      `write-back uploads still pending at the end: ${wb.uploadsPendingAtEnd}; ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolvePath(process.argv[1])).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
