/**
 * What Stowage saved: logical bytes versus stored bytes, requests versus a plain
 * one-object-per-key upload, and what both cost per month at given prices.
 */
import { SEALED_OVERHEAD } from "../codec/aead.js";
import type { MetaReader } from "../meta/types.js";

/** Prices in US dollars. Defaults: S3 Standard list prices (us-east-1, first 50 TB tier). */
export interface Prices {
  /** Per GiB stored for a month. */
  storagePerGiBMonth: number;
  /** Per 1,000 PUT/COPY/POST/LIST requests. */
  putPer1000: number;
  /** Per 1,000 GET requests. */
  getPer1000: number;
}

export const S3_STANDARD_PRICES: Readonly<Prices> = Object.freeze({ storagePerGiBMonth: 0.023, putPer1000: 0.005, getPer1000: 0.0004 });

export interface StoreStats {
  /** Bytes of every stored object version (what a plain bucket would hold). */
  logicalBytes: number;
  /** Bytes in the bucket: every pack blob (live, and retired but not yet deleted). */
  storedBytes: number;
  /** Of those, sealed bytes of metadata journal records (docs/RECOVERY.md) in live packs. */
  journalBytes: number;
  /** Plaintext bytes of the distinct chunks referenced. */
  uniqueBytes: number;
  /** Bytes of those chunks after compression (before encryption overhead). */
  compressedBytes: number;
  /** logicalBytes / uniqueBytes (1 when empty). */
  dedupRatio: number;
  /** uniqueBytes / compressedBytes (1 when empty). */
  compressionRatio: number;
  /** Current objects (not delete markers). */
  objects: number;
  /** Object versions, delete markers included. */
  versions: number;
  buckets: number;
  /** Chunks in the index (referenced or not). */
  chunks: number;
  /** Chunks that no manifest references (reclaimable by gc). */
  unreferencedChunks: number;
  packs: number;
  retiredPacks: number;
  /** Live packs written back locally (`local` durability) that the cloud does not hold yet, and their bytes. */
  packsAwaitingUpload: number;
  bytesAwaitingUpload: number;
  /** Events in the metadata outbox, not yet relayed to the event log. */
  outboxEvents: number;
  meanPackSize: number;
  /** PUTs issued to the bucket. */
  backendPuts: number;
  /** PUTs a plain one-object-per-key upload would have issued (one per object, part and copy). */
  plainPuts: number;
  /** Storage for one month plus the request charges of the writes so far, at `prices`. */
  monthlyCost: number;
  plainMonthlyCost: number;
  prices: Prices;
}

const GIB = 1024 ** 3;

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export async function computeStats(meta: MetaReader, prices: Prices = S3_STANDARD_PRICES): Promise<StoreStats> {
  let logicalBytes = 0;
  let objects = 0;
  let versions = 0;
  const buckets = await meta.listBuckets();
  for (const b of buckets) {
    for await (const v of meta.listVersions(b.name)) {
      versions++;
      if (!v.deleteMarker) logicalBytes += v.size;
    }
    for await (const v of meta.listCurrent(b.name)) if (!v.deleteMarker) objects++;
  }
  let chunks = 0;
  let unreferencedChunks = 0;
  let uniqueBytes = 0;
  let compressedBytes = 0;
  for await (const [, c] of meta.listChunks()) {
    chunks++;
    if (c.refs === 0) {
      unreferencedChunks++;
      continue;
    }
    uniqueBytes += c.rawLength;
    compressedBytes += Math.max(0, c.storedLength - SEALED_OVERHEAD);
  }
  let packs = 0;
  let retiredPacks = 0;
  let storedBytes = 0;
  let journalBytes = 0;
  let liveBytes = 0;
  let packsAwaitingUpload = 0;
  let bytesAwaitingUpload = 0;
  for await (const p of meta.listPacks()) {
    storedBytes += p.size;
    if (p.state === "retired") retiredPacks++;
    else {
      packs++;
      liveBytes += p.size;
      journalBytes += p.journal ?? 0;
      if (p.uploaded === false) {
        packsAwaitingUpload++;
        bytesAwaitingUpload += p.size;
      }
    }
  }
  const counters = await meta.getCounters();
  const monthlyCost = (storedBytes / GIB) * prices.storagePerGiBMonth + (counters.backendPuts / 1000) * prices.putPer1000;
  const plainMonthlyCost = (logicalBytes / GIB) * prices.storagePerGiBMonth + (counters.plainPuts / 1000) * prices.putPer1000;
  return {
    logicalBytes,
    storedBytes,
    journalBytes,
    uniqueBytes,
    compressedBytes,
    dedupRatio: uniqueBytes === 0 ? 1 : round(logicalBytes / uniqueBytes, 3),
    compressionRatio: compressedBytes === 0 ? 1 : round(uniqueBytes / compressedBytes, 3),
    objects,
    versions,
    buckets: buckets.length,
    chunks,
    unreferencedChunks,
    packs,
    retiredPacks,
    packsAwaitingUpload,
    bytesAwaitingUpload,
    outboxEvents: await meta.outboxSize(),
    meanPackSize: packs === 0 ? 0 : Math.round(liveBytes / packs),
    backendPuts: counters.backendPuts,
    plainPuts: counters.plainPuts,
    monthlyCost: round(monthlyCost, 6),
    plainMonthlyCost: round(plainMonthlyCost, 6),
    prices: { ...prices },
  };
}
