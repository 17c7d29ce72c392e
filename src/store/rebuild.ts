/**
 * `stowage rebuild-index`: recreates the chunk index and the pack records from the packs alone
 * (each pack carries its own encrypted index), and recomputes every reference count from the
 * manifests. Use it when the chunk index is lost or damaged; object metadata is kept as it is.
 *
 * With a write-back backend, its packs are read too. A pack keeps the `uploaded` state its old
 * record had; a pack with no old record is `uploaded: false` when only the write-back backend holds
 * it. When a chunk is in several packs, the index points at a copy in a live pack rather than a
 * retired one, and at an uploaded pack rather than one not yet uploaded.
 */
import { isStowageError } from "../errors.js";
import { readPackIndex, PACK_PREFIX } from "../pack/format.js";
import type { BlobBackend } from "../backend/backend.js";
import type { ChunkRecord, PackRecord } from "../meta/types.js";
import type { ObjectStore } from "./store.js";

export interface RebuildReport {
  packsRead: number;
  /** Pack blobs whose index could not be read or authenticated (left out of the index). */
  packsUnreadable: Array<{ blobKey: string; error: string }>;
  chunksIndexed: number;
  /** Chunks found in more than one pack (one copy is indexed; the others are dead bytes for gc). */
  duplicateChunks: number;
  /** Chunks that manifests reference but no pack holds. */
  missingChunks: number;
  /** Objects and parts referencing missing chunks. */
  affected: string[];
}

export async function rebuildIndex(store: ObjectStore, options: { progress?: (done: number, total: number) => void } = {}): Promise<RebuildReport> {
  return store.lock.exclusive(async () => {
    const { meta, backend, keys } = store;
    await Promise.all([store.packer.flush().catch(() => undefined), store.writeBackPacker?.flush().catch(() => undefined)]);
    const report: RebuildReport = { packsRead: 0, packsUnreadable: [], chunksIndexed: 0, duplicateChunks: 0, missingChunks: 0, affected: [] };
    const oldPacks = new Map<string, PackRecord>();
    for await (const p of meta.listPacks()) oldPacks.set(p.blobKey, p);

    const blobs: Array<{ key: string; size: number; from: BlobBackend; inCloud: boolean }> = [];
    const listed = new Map<string, { key: string; size: number; from: BlobBackend; inCloud: boolean }>();
    for await (const b of backend.list(PACK_PREFIX)) {
      const e = { ...b, from: backend, inCloud: true };
      listed.set(b.key, e);
      blobs.push(e);
    }
    if (store.writeBackBackend !== undefined) {
      for await (const b of store.writeBackBackend.list(PACK_PREFIX)) {
        const old = oldPacks.get(b.key);
        const e = listed.get(b.key);
        // A pack not yet uploaded is read from the write-back backend even if the cloud lists it.
        if (e !== undefined) {
          if (old?.uploaded === false) e.from = store.writeBackBackend;
          continue;
        }
        const n = { ...b, from: store.writeBackBackend, inCloud: false };
        listed.set(b.key, n);
        blobs.push(n);
      }
    }
    const packs: PackRecord[] = [];
    const retiredPackIds = new Set<string>();
    /** Preference of a pack's copy of a chunk: live over retired, then uploaded over not. */
    const rank = new Map<string, number>();
    const chunks = new Map<string, [Buffer, ChunkRecord]>();
    let done = 0;
    for (const blob of blobs) {
      options.progress?.(done++, blobs.length);
      let index;
      try {
        index = await readPackIndex(blob.from, keys, blob.key, blob.size);
      } catch (err) {
        if (!isStowageError(err)) throw err;
        report.packsUnreadable.push({ blobKey: blob.key, error: err.message });
        continue;
      }
      report.packsRead++;
      const old = oldPacks.get(blob.key);
      let journal = 0;
      for (const e of index.entries) if (e.kind === 2) journal += e.storedLength;
      const uploaded = old !== undefined ? old.uploaded !== false : blob.inCloud;
      packs.push({
        id: index.packId,
        blobKey: blob.key,
        size: blob.size,
        entries: index.entries.length,
        created: old?.created ?? 0,
        state: old?.state ?? "live",
        ...(old?.retiredAt === undefined ? {} : { retiredAt: old.retiredAt }),
        ...(uploaded ? {} : { uploaded: false }),
        ...(journal > 0 ? { journal } : {}),
      });
      if (old?.state === "retired") retiredPackIds.add(index.packId);
      const myRank = (old?.state === "retired" ? 0 : 2) + (uploaded ? 1 : 0);
      rank.set(index.packId, myRank);
      for (const e of index.entries) {
        if (e.kind !== 1) continue;
        const id = Buffer.from(e.id);
        const hex = id.toString("hex");
        const existing = chunks.get(hex);
        // Prefer a copy in a live pack over one in a retired pack, and an uploaded one over one not yet uploaded.
        if (existing !== undefined) {
          report.duplicateChunks++;
          if ((rank.get(existing[1].packId) ?? 0) >= myRank) continue;
        }
        chunks.set(hex, [id, { packId: index.packId, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, method: e.method, refs: 0 }]);
      }
    }
    options.progress?.(blobs.length, blobs.length);

    const affected = new Set<string>();
    const missing = new Set<string>();
    for await (const { owner, manifest } of meta.listManifests()) {
      for (const e of manifest) {
        const hex = e.chunkId.toString("hex");
        const c = chunks.get(hex);
        if (c === undefined) {
          missing.add(hex);
          affected.add(owner);
        } else c[1].refs++;
      }
    }
    // A chunk found only in a retired pack: with no references it is garbage (gc dropped its record
    // when it retired the pack; indexing it again would keep gc from ever deleting that pack); with
    // references, the pack must stay until gc moves them, so it becomes live again.
    const revived = new Set<string>();
    for (const [hex, [, rec]] of chunks) {
      if (!retiredPackIds.has(rec.packId)) continue;
      if (rec.refs === 0) chunks.delete(hex);
      else revived.add(rec.packId);
    }
    for (const p of packs) {
      if (!revived.has(p.id)) continue;
      p.state = "live";
      delete p.retiredAt;
    }
    report.missingChunks = missing.size;
    report.affected = [...affected].sort();

    await meta.transaction(async (tx) => {
      for await (const [id] of tx.listChunks()) tx.deleteChunk(id);
      for await (const p of tx.listPacks()) tx.deletePack(p.id);
      for (const p of packs) tx.putPack(p);
      for (const [id, rec] of chunks.values()) tx.putChunk(id, rec);
    });
    report.chunksIndexed = chunks.size;
    return report;
  });
}
