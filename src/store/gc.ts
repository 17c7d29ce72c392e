/**
 * The garbage collector: reclaims chunks no manifest references, recycles packs that are mostly
 * dead, and merges packs that are too small (the small-object compaction that cuts request costs).
 *
 * Crash safety, in this order: (1) live chunks of the chosen packs are re-packed into new packs,
 * and each new pack's upload commits the chunk records that now point at it (references kept);
 * (2) one transaction marks the old packs `retired` and drops their unreferenced chunk records;
 * (3) only after the grace period is a retired pack's blob deleted, then its record. A crash after
 * (1) leaves old packs whose chunks all live elsewhere: the next run retires them. Readers that
 * looked up an old location before (2) can still read it during the grace period.
 *
 * The collector holds the store's lock exclusively: a put that found a chunk by its id (which may
 * have no references yet) must be able to reference it when it commits.
 *
 * With a write-back backend: packs not yet uploaded are read from it (and deleted from it once
 * retired past the grace period); gc's new packs always go to the cloud-first backend, so
 * recycling a write-back pack makes its live chunks cloud-durable. Orphan blobs are looked for in
 * both backends. Each new pack's commit emits `pack-uploaded`.
 *
 * The outbox: when nothing relays events (no event log configured), the outbox would grow with
 * every change; gc keeps at most `maxOutboxEvents` of them, dropping the oldest. With a relay
 * running the outbox stays near empty and this never triggers.
 */
import { StowageError, isStowageError } from "../errors.js";
import { compressChunk } from "../codec/compress.js";
import { Packer, type PackCommit } from "../pack/writer.js";
import { PACK_PREFIX, RECORD_KIND_METADATA, readPackIndex } from "../pack/format.js";
import type { ChunkRecord, PackRecord } from "../meta/types.js";
import type { BlobBackend } from "../backend/backend.js";
import type { ObjectStore } from "./store.js";
import { KEEP_CHECKPOINTS, coverageOf, isCovered, listCheckpoints, readCheckpoint, type Coverage } from "./checkpoint.js";

export interface GcOptions {
  /** Report what would be reclaimed; change nothing. */
  dryRun?: boolean;
  /** Recycle a pack when less than this fraction of its bytes is live. Default 0.5. */
  minLiveFraction?: number;
  /** Packs smaller than this (bytes) are merged, when there are at least two. Default: a quarter of the pack target size. */
  smallPackSize?: number;
  /** How long a retired pack's blob is kept for readers that still hold its old location (ms). Default 15 minutes. */
  graceMs?: number;
  /** Most events kept in the metadata outbox (the oldest beyond it are dropped). Default 100,000; Infinity keeps all. */
  maxOutboxEvents?: number;
}

export interface GcReport {
  dryRun: boolean;
  packsScanned: number;
  chunksScanned: number;
  /** Chunks no manifest references. */
  deadChunks: number;
  deadBytes: number;
  /** Packs chosen for recycling (mostly dead, or small). */
  packsRecycled: number;
  /** Live chunks and their stored bytes copied into new packs. */
  chunksRewritten: number;
  bytesRewritten: number;
  newPacks: number;
  /** Pack blobs deleted (retired packs past the grace period). */
  packsDeleted: number;
  /** Bytes of the bucket freed by this run (deleted blobs minus new packs written). */
  bytesReclaimed: number;
  /** Bytes that recycling the chosen packs frees once their grace period ends (dry run: would free). */
  bytesReclaimable: number;
  /** Pack blobs in the bucket that no metadata names (left by a crash before commit), deleted. */
  orphanBlobsDeleted: number;
  /** Packs left alone because reading them failed (run `stowage fsck --read-data`). */
  unreadablePacks: string[];
  /** Pack blobs no metadata named that hold journal records: recorded instead of deleted. */
  orphanPacksAdopted: number;
  /** Journal (metadata) records copied from recycled packs into new ones. */
  journalRecordsCarried: number;
  /** Journal records of recycled packs dropped because the oldest kept checkpoint covers them. */
  journalRecordsDropped: number;
  /** Checkpoints deleted (older than the newest KEEP_CHECKPOINTS, the oldest kept one readable). */
  checkpointsDeleted: number;
  /** Kept checkpoints that could not be read (then nothing is dropped or deleted on their account). */
  checkpointProblems: string[];
  /** Events in the outbox (after trimming). */
  outboxEvents: number;
  /** Oldest outbox events dropped because the outbox held more than maxOutboxEvents (dry run: would drop). */
  outboxEventsDropped: number;
}

export const DEFAULT_MAX_OUTBOX_EVENTS = 100_000;

interface PackUsage {
  pack: PackRecord;
  liveBytes: number;
  live: Array<[Buffer, ChunkRecord]>;
  dead: Buffer[];
}

export async function collectGarbage(store: ObjectStore, options: GcOptions = {}): Promise<GcReport> {
  const minLive = options.minLiveFraction ?? 0.5;
  const small = options.smallPackSize ?? Math.floor(store.options.packTargetSize / 4);
  const graceMs = options.graceMs ?? 15 * 60 * 1000;
  const dryRun = options.dryRun ?? false;
  const maxOutbox = options.maxOutboxEvents ?? DEFAULT_MAX_OUTBOX_EVENTS;
  if (!(maxOutbox >= 0)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "maxOutboxEvents must be >= 0");
  if (!(minLive >= 0 && minLive <= 1)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "minLiveFraction must be in [0, 1]");
  if (!(graceMs >= 0)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "graceMs must be >= 0");

  return store.lock.exclusive(async () => {
    const { meta, backend } = store;
    // Nothing may be in flight from writers while we decide what is garbage.
    await Promise.all([store.packer.flush().catch(() => undefined), store.writeBackPacker?.flush().catch(() => undefined)]);
    const report: GcReport = {
      dryRun,
      packsScanned: 0,
      chunksScanned: 0,
      deadChunks: 0,
      deadBytes: 0,
      packsRecycled: 0,
      chunksRewritten: 0,
      bytesRewritten: 0,
      newPacks: 0,
      packsDeleted: 0,
      bytesReclaimed: 0,
      bytesReclaimable: 0,
      orphanBlobsDeleted: 0,
      unreadablePacks: [],
      journalRecordsCarried: 0,
      journalRecordsDropped: 0,
      checkpointsDeleted: 0,
      checkpointProblems: [],
      orphanPacksAdopted: 0,
      outboxEvents: 0,
      outboxEventsDropped: 0,
    };


    const usage = new Map<string, PackUsage>();
    const retired: PackRecord[] = [];
    for await (const p of meta.listPacks()) {
      report.packsScanned++;
      if (p.state === "retired") retired.push(p);
      // Journal (metadata) records are never garbage: they count as live bytes (docs/RECOVERY.md).
      else usage.set(p.id, { pack: p, liveBytes: p.journal ?? 0, live: [], dead: [] });
    }
    const retiredIds = new Set(retired.map((p) => p.id));
    const stillReferenced = new Set<string>();
    for await (const [id, c] of meta.listChunks()) {
      report.chunksScanned++;
      const u = usage.get(c.packId);
      if (retiredIds.has(c.packId)) stillReferenced.add(c.packId);
      if (c.refs === 0) {
        report.deadChunks++;
        report.deadBytes += c.storedLength;
        u?.dead.push(id);
      } else if (u !== undefined) {
        u.liveBytes += c.storedLength;
        u.live.push([id, c]);
      }
    }

    // Choose: mostly-dead packs, and small packs when there are at least two to merge.
    const chosen: PackUsage[] = [];
    const smallOnes: PackUsage[] = [];
    for (const u of usage.values()) {
      if (u.liveBytes === 0 || u.liveBytes < u.pack.size * minLive) chosen.push(u);
      else if (u.pack.size < small) smallOnes.push(u);
    }
    if (smallOnes.length >= 2) chosen.push(...smallOnes);
    report.packsRecycled = chosen.length;
    for (const u of chosen) report.bytesReclaimable += u.pack.size - u.liveBytes;

    // Checkpoints: the oldest of the newest KEEP_CHECKPOINTS says which journal records are no longer
    // needed; the ones before it go (recovery falls back to the older kept one if the newest is damaged).
    const ignored = new Set(store.options.ignoredCheckpoints);
    const checkpoints = (await listCheckpoints(backend)).filter((c) => !ignored.has(c.key));
    const kept = checkpoints.slice(-KEEP_CHECKPOINTS);
    let coverage: Coverage | undefined;
    if (kept.length > 0) {
      try {
        coverage = coverageOf(await readCheckpoint(backend, store.keys, kept[0]!.key));
      } catch (err) {
        if (!isStowageError(err)) throw err;
        report.checkpointProblems.push(`${kept[0]!.key}: ${err.message}`);
      }
    }
    const obsolete = coverage === undefined ? [] : checkpoints.slice(0, checkpoints.length - kept.length);

    if (dryRun) {
      report.checkpointsDeleted = obsolete.length;
      report.outboxEvents = await meta.outboxSize();
      report.outboxEventsDropped = Math.max(0, report.outboxEvents - maxOutbox);
      for (const p of retired) if (p.retiredAt !== undefined && p.retiredAt + graceMs <= store.options.now() && !stillReferenced.has(p.id)) report.packsDeleted++;
      return report;
    }

    // (1) Re-pack live chunks. Each new pack's commit moves the records of its chunks.
    const moved = new Set<string>();
    const gcPacker = new Packer(
      backend,
      store.keys,
      async (commit: PackCommit) => {
        await meta.transaction(async (tx) => {
          let journal = 0;
          for (const [, rec] of commit.metadataRecords) journal += rec.storedLength;
          tx.putPack(journal > 0 ? { ...commit.pack, journal } : commit.pack);
          for (const [id, rec] of commit.chunks) {
            const old = await tx.getChunk(id);
            if (old === undefined) continue;
            tx.putChunk(id, { ...rec, refs: old.refs });
            moved.add(id.toString("hex"));
          }
          tx.addCounters({ backendPuts: 1, backendBytesWritten: commit.pack.size });
          store.emitEvent(tx, { kind: "pack-uploaded", key: commit.pack.id, data: { blobKey: commit.pack.blobKey, size: commit.pack.size } });
        });
        report.newPacks++;
        report.bytesReclaimed -= commit.pack.size;
      },
      { targetSize: store.options.packTargetSize, maxUploads: store.options.maxUploads },
    );
    const recyclable: PackUsage[] = [];
    try {
      for (const u of chosen) {
        try {
          for (const [id, c] of u.live) {
            const plain = await store.reader.readOne({ chunkId: id, packId: u.pack.id, blobKey: u.pack.blobKey, offset: c.offset, storedLength: c.storedLength, rawLength: c.rawLength, method: c.method });
            const z = compressChunk(plain, store.options.compressionLevel);
            await gcPacker.add({ chunkId: id, method: z.method, rawLength: plain.length, stored: z.bytes });
            report.chunksRewritten++;
            report.bytesRewritten += c.storedLength;
          }
          // The pack's journal records travel on, sealed bytes unchanged (their AAD names no pack).
          if ((u.pack.journal ?? 0) > 0) {
            const from = store.backendOf(u.pack);
            const index = await readPackIndex(from, store.keys, u.pack.blobKey, u.pack.size);
            for (const e of index.entries) {
              if (e.kind !== RECORD_KIND_METADATA) continue;
              if (coverage !== undefined && isCovered(coverage, e.id)) {
                report.journalRecordsDropped++;
                continue;
              }
              const sealed = await from.get(u.pack.blobKey, { offset: e.offset, length: e.storedLength });
              await gcPacker.add({ kind: RECORD_KIND_METADATA, chunkId: e.id, method: e.method, rawLength: e.rawLength, sealed });
              report.journalRecordsCarried++;
            }
          }
          recyclable.push(u);
        } catch (err) {
          if (!isStowageError(err, "STOWAGE_INTEGRITY") && !isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) throw err;
          report.unreadablePacks.push(u.pack.id);
        }
      }
    } finally {
      await gcPacker.close();
    }

    for (const c of obsolete) {
      await backend.delete(c.key);
      report.checkpointsDeleted++;
    }

    // (2) Retire the recycled packs; drop their unreferenced chunk records.
    const now = store.options.now();
    await meta.transaction(async (tx) => {
      for (const u of recyclable) {
        let allMoved = true;
        for (const [id] of u.live) {
          const rec = await tx.getChunk(id);
          if (rec !== undefined && rec.packId === u.pack.id) allMoved = false;
        }
        if (!allMoved) continue;
        for (const id of u.dead) {
          const rec = await tx.getChunk(id);
          if (rec !== undefined && rec.refs === 0 && rec.packId === u.pack.id) tx.deleteChunk(id);
        }
        // Re-read: the tier's uploader may have marked the pack uploaded since it was listed.
        const r: PackRecord = { ...((await tx.getPack(u.pack.id)) ?? u.pack), state: "retired", retiredAt: now };
        tx.putPack(r);
        retired.push(r);
      }
    });

    // (3) Delete retired packs past their grace period (blob first, then the record).
    for (const p of retired) {
      if (p.retiredAt === undefined || p.retiredAt + graceMs > now || stillReferenced.has(p.id)) continue;
      // The current record says where the blob is (uploaded since it was listed, or not).
      const cur = (await meta.getPack(p.id)) ?? p;
      await store.backendOf(cur).delete(p.blobKey);
      await meta.transaction(async (tx) => {
        tx.deletePack(p.id);
      });
      report.packsDeleted++;
      report.bytesReclaimed += p.size;
    }

    // Orphans: blobs uploaded by an operation that crashed before committing their pack.
    const known = new Set<string>();
    for await (const p of meta.listPacks()) known.add(p.blobKey);
    const orphans = new Set<string>();
    for (const b of store.writeBackBackend === undefined ? [backend] : [backend, store.writeBackBackend]) {
      for await (const blob of b.list(PACK_PREFIX)) {
        if (known.has(blob.key)) continue;
        // A pack whose commit never ran may hold journal records (of transactions that committed):
        // it is adopted (recorded, its chunks unindexed) so that a later run carries them on.
        const adopted = await adoptJournal(store, b, blob.key, blob.size, now);
        if (adopted) {
          known.add(blob.key);
          report.orphanPacksAdopted++;
          continue;
        }
        await b.delete(blob.key);
        if (orphans.has(blob.key)) continue;
        orphans.add(blob.key);
        report.orphanBlobsDeleted++;
        report.bytesReclaimed += blob.size;
      }
    }

    // The outbox: keep the newest maxOutboxEvents (this run's own events included).
    let drop = Math.max(0, (await meta.outboxSize()) - maxOutbox);
    while (drop > 0) {
      const batch = await meta.listOutbox(Math.min(drop, 10_000));
      if (batch.length === 0) break;
      await meta.transaction(async (tx) => tx.deleteOutbox(batch.map((e) => e.id)));
      drop -= batch.length;
      report.outboxEventsDropped += batch.length;
    }
    report.outboxEvents = await meta.outboxSize();
    return report;
  });
}


/** Records an orphan pack blob holding journal records as a live pack; false when it holds none (or is unreadable). */
async function adoptJournal(store: ObjectStore, from: BlobBackend, blobKey: string, size: number, now: number): Promise<boolean> {
  if (from !== store.backend) return false;
  let index;
  try {
    index = await readPackIndex(from, store.keys, blobKey, size);
  } catch (err) {
    if (isStowageError(err)) return false;
    throw err;
  }
  let journal = 0;
  for (const e of index.entries) if (e.kind === RECORD_KIND_METADATA) journal += e.storedLength;
  if (journal === 0) return false;
  await store.meta.transaction(async (tx) => {
    if ((await tx.getPack(index.packId)) !== undefined) return;
    tx.putPack({ id: index.packId, blobKey, size, entries: index.entries.length, created: now, state: "live", journal });
  });
  return true;
}
