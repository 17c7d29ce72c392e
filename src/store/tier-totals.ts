/**
 * Cumulative tier figures across gateway runs: requests and bytes per tier and what the tier
 * manager did (hydrations, uploads, purges, ...). A TierManager counts only since it was opened;
 * `stowage serve` adds those counts to the totals kept in DATA/tier-totals.json (every 30 s and at
 * shutdown), so `stowage stats` can show them while the gateway is stopped.
 *
 * The file is advisory bookkeeping, not a durable record: it is replaced atomically, a crash loses
 * at most the last interval's counts, and a missing or unreadable file counts as zero (never an
 * error that stops the gateway).
 */
import { open as openFile, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { zeroCounters, type BackendCounters } from "../backend/backend.js";
import type { TierManagerStats } from "../tier/stats.js";

export const TIER_TOTALS_FILE = "tier-totals.json";

type TierName = "cloud" | "local" | "secondary";

export interface TierTotals {
  version: 1;
  /** ISO time of the last update. */
  updated: string;
  requests: Partial<Record<TierName, BackendCounters>>;
  /** The tier manager's counters (hydrations, uploads, purges, ...), summed. */
  counters: Record<string, number>;
}

function emptyTotals(): TierTotals {
  return { version: 1, updated: new Date(0).toISOString(), requests: {}, counters: {} };
}

/** The totals in DATA/tier-totals.json (zero when absent or unreadable). */
export async function readTierTotals(dir: string): Promise<TierTotals> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, TIER_TOTALS_FILE), "utf8")) as Partial<TierTotals>;
    if (parsed.version !== 1 || typeof parsed.requests !== "object" || typeof parsed.counters !== "object") return emptyTotals();
    return { version: 1, updated: String(parsed.updated), requests: parsed.requests ?? {}, counters: parsed.counters ?? {} };
  } catch {
    return emptyTotals();
  }
}

function addCounters(a: BackendCounters | undefined, b: BackendCounters): BackendCounters {
  const out = { ...(a ?? zeroCounters()) };
  for (const k of Object.keys(out) as (keyof BackendCounters)[]) out[k] += b[k];
  return out;
}

/** `base` plus what `stats` counted. */
export function addTierStats(base: TierTotals, stats: TierManagerStats): TierTotals {
  const requests: TierTotals["requests"] = { ...base.requests };
  requests.cloud = addCounters(base.requests.cloud, stats.cloud.requests);
  if (stats.local !== undefined) requests.local = addCounters(base.requests.local, stats.local.requests);
  if (stats.secondary !== undefined) requests.secondary = addCounters(base.requests.secondary, stats.secondary.requests);
  const counters: Record<string, number> = { ...base.counters };
  for (const [k, v] of Object.entries(stats.counters)) counters[k] = (counters[k] ?? 0) + v;
  return { version: 1, updated: new Date().toISOString(), requests, counters };
}

/** Replaces DATA/tier-totals.json atomically. */
export async function writeTierTotals(dir: string, totals: TierTotals): Promise<void> {
  const path = join(dir, TIER_TOTALS_FILE);
  const tmp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
  const fh = await openFile(tmp, "w", 0o644);
  try {
    await fh.writeFile(JSON.stringify(totals, null, 2) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
