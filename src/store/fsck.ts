/**
 * `stowage fsck`: checks the metadata against itself and against the packs in the bucket, and with
 * `readData` authenticates every chunk (AEAD tag, decompression, and the keyed id of the plaintext).
 * Every problem names what it affects: the pack, the chunk, and the objects whose content is lost
 * or damaged.
 */
import { ChunkIdHasher } from "../codec/chunk-id.js";
import { isStowageError } from "../errors.js";
import { readPackIndex, PACK_PREFIX } from "../pack/format.js";
import { PackReader, type ChunkLocation } from "../pack/reader.js";
import type { ChunkRecord, PackRecord } from "../meta/types.js";
import type { ObjectStore } from "./store.js";

export type FsckProblemKind =
  | "missing-chunk"
  | "chunk-without-pack"
  | "refcount"
  | "bad-manifest-entry"
  | "missing-pack"
  | "pack-size"
  | "pack-index"
  | "index-mismatch"
  | "damaged-chunk";

export interface FsckProblem {
  kind: FsckProblemKind;
  message: string;
  pack?: string;
  chunk?: string;
  /** Objects (bucket/key@version) or multipart parts whose content the problem affects. */
  affects: string[];
}

export interface FsckReport {
  ok: boolean;
  problems: FsckProblem[];
  /** Not errors: e.g. pack blobs no metadata names (gc deletes them). */
  warnings: string[];
  manifests: number;
  chunks: number;
  packs: number;
  chunksRead: number;
  bytesRead: number;
}

export interface FsckOptions {
  /** Read and authenticate every chunk. */
  readData?: boolean;
  /** Called as chunks are read: (done, total). */
  progress?: (done: number, total: number) => void;
}

const MAX_AFFECTED = 1000;

export async function fsck(store: ObjectStore, options: FsckOptions = {}): Promise<FsckReport> {
  const { meta, backend, keys } = store;
  // A write-back pack not yet uploaded lives in the write-back backend; every other pack in `backend`.
  const problems: FsckProblem[] = [];
  const warnings: string[] = [];
  const damaged = new Map<string, FsckProblem[]>();
  const note = (p: FsckProblem, chunkHex?: string): void => {
    problems.push(p);
    if (chunkHex !== undefined) {
      const list = damaged.get(chunkHex) ?? [];
      list.push(p);
      damaged.set(chunkHex, list);
    }
  };

  // References held by manifests.
  const refs = new Map<string, number>();
  let manifests = 0;
  for await (const { manifest } of meta.listManifests()) {
    manifests++;
    for (const e of manifest) {
      const hex = e.chunkId.toString("hex");
      refs.set(hex, (refs.get(hex) ?? 0) + 1);
    }
  }

  const packs = new Map<string, PackRecord>();
  for await (const p of meta.listPacks()) packs.set(p.id, p);

  const byPack = new Map<string, Array<[Buffer, ChunkRecord]>>();
  let chunks = 0;
  const indexed = new Map<string, ChunkRecord>();
  for await (const [id, c] of meta.listChunks()) {
    chunks++;
    const hex = id.toString("hex");
    indexed.set(hex, c);
    const want = refs.get(hex) ?? 0;
    if (c.refs !== want) {
      note({ kind: "refcount", message: `chunk ${hex} records ${c.refs} references, manifests hold ${want}`, chunk: hex, affects: [] });
    }
    const p = packs.get(c.packId);
    if (p === undefined) {
      note({ kind: "chunk-without-pack", message: `chunk ${hex} is in pack ${c.packId}, which the metadata does not know`, pack: c.packId, chunk: hex, affects: [] }, hex);
      continue;
    }
    const list = byPack.get(c.packId) ?? [];
    list.push([id, c]);
    byPack.set(c.packId, list);
  }
  for (const hex of refs.keys()) {
    if (!indexed.has(hex)) note({ kind: "missing-chunk", message: `chunk ${hex} is referenced but not in the chunk index`, chunk: hex, affects: [] }, hex);
  }

  // Manifest entries must lie inside their chunks.
  for await (const { owner, manifest } of meta.listManifests()) {
    for (const e of manifest) {
      const c = indexed.get(e.chunkId.toString("hex"));
      if (c !== undefined && e.offset + e.length > c.rawLength) {
        problems.push({ kind: "bad-manifest-entry", message: `${owner} reads bytes ${e.offset}..${e.offset + e.length} of a ${c.rawLength}-byte chunk`, chunk: e.chunkId.toString("hex"), affects: [owner] });
      }
    }
  }

  // Packs: present, right size, index readable and in agreement with the chunk records.
  const readable: PackRecord[] = [];
  for (const p of packs.values()) {
    const members = byPack.get(p.id) ?? [];
    const mark = (kind: FsckProblemKind, message: string): void => {
      const prob: FsckProblem = { kind, message, pack: p.id, affects: [] };
      problems.push(prob);
      for (const [id] of members) {
        const hex = id.toString("hex");
        const list = damaged.get(hex) ?? [];
        list.push(prob);
        damaged.set(hex, list);
      }
    };
    const where = store.backendOf(p);
    const info = await where.head(p.blobKey);
    if (info === undefined) {
      if (p.state === "retired" && members.length === 0) continue;
      mark("missing-pack", `pack ${p.id} (${p.blobKey}) is missing from ${where === backend ? "the bucket" : `the write-back tier (${where.location}; not yet uploaded)`}`);
      continue;
    }
    if (info.size !== p.size) {
      mark("pack-size", `pack ${p.id} is ${info.size} bytes in the bucket, ${p.size} in the metadata`);
      continue;
    }
    let index;
    try {
      index = await readPackIndex(where, keys, p.blobKey, p.size);
    } catch (err) {
      if (!isStowageError(err)) throw err;
      mark("pack-index", `pack ${p.id}: index unreadable: ${err.message}`);
      continue;
    }
    const entries = new Map(index.entries.map((e) => [Buffer.from(e.id).toString("hex"), e]));
    // Journal (metadata) records are not chunks and not garbage; the pack record counts their bytes.
    let journal = 0;
    for (const e of index.entries) if (e.kind === 2) journal += e.storedLength;
    if (journal !== (p.journal ?? 0)) {
      mark("index-mismatch", `pack ${p.id} holds ${journal} bytes of journal records, its record says ${p.journal ?? 0} (gc would not carry them)`);
    }
    for (const [id, c] of members) {
      const hex = id.toString("hex");
      const e = entries.get(hex);
      if (e === undefined || e.offset !== c.offset || e.storedLength !== c.storedLength || e.rawLength !== c.rawLength || e.method !== c.method) {
        note({ kind: "index-mismatch", message: `chunk ${hex}: pack ${p.id}'s own index does not match the chunk record`, pack: p.id, chunk: hex, affects: [] }, hex);
      }
    }
    readable.push(p);
  }
  const knownBlobs = new Set([...packs.values()].map((p) => p.blobKey));
  const warned = new Set<string>();
  for (const b of store.writeBackBackend === undefined ? [backend] : [backend, store.writeBackBackend]) {
    for await (const blob of b.list(PACK_PREFIX)) {
      if (knownBlobs.has(blob.key) || warned.has(blob.key)) continue;
      warned.add(blob.key);
      warnings.push(`pack blob ${blob.key} (${blob.size} bytes) is not in the metadata (left by an interrupted write; \`stowage gc\` deletes it)`);
    }
  }

  // Data: authenticate every chunk, and check its keyed id.
  let chunksRead = 0;
  let bytesRead = 0;
  if (options.readData === true) {
    const hasher = new ChunkIdHasher(keys);
    // A reader of its own with no cache: every byte checked comes from the bucket now.
    const reader = new PackReader(store.packBlobs, keys, { cacheBytes: 0 });
    const total = readable.reduce((n, p) => n + (byPack.get(p.id)?.length ?? 0), 0);
    for (const p of readable) {
      const members = (byPack.get(p.id) ?? []).sort((a, b) => a[1].offset - b[1].offset);
      const locs: ChunkLocation[] = members.map(([id, c]) => ({ chunkId: id, packId: p.id, blobKey: p.blobKey, offset: c.offset, storedLength: c.storedLength, rawLength: c.rawLength, method: c.method }));
      const check = (i: number, plain: Buffer): void => {
        const [id] = members[i]!;
        if (!Buffer.from(hasher.id(plain)).equals(id)) {
          const hex = id.toString("hex");
          note({ kind: "damaged-chunk", message: `chunk ${hex} in pack ${p.id}: content does not hash to its id`, pack: p.id, chunk: hex, affects: [] }, hex);
        }
      };
      const done = (i: number): void => {
        chunksRead++;
        bytesRead += members[i]![1].storedLength;
        options.progress?.(chunksRead, total);
      };
      // Adjacent records are fetched together; after a failure, the rest one by one, so that each
      // damaged record is named and the intact ones are still checked.
      let i = 0;
      try {
        for await (const plain of reader.read(locs)) {
          check(i, plain);
          done(i);
          i++;
        }
      } catch (err) {
        if (!isStowageError(err)) throw err;
        for (; i < members.length; i++) {
          const [id, c] = members[i]!;
          const hex = id.toString("hex");
          try {
            check(i, await reader.readOne(locs[i]!));
          } catch (e) {
            if (!isStowageError(e)) throw e;
            note({ kind: "damaged-chunk", message: `chunk ${hex} in pack ${p.id} at offset ${c.offset}: ${e.message}`, pack: p.id, chunk: hex, affects: [] }, hex);
          }
          done(i);
        }
      }
    }
  }

  // Name the objects behind every damaged or missing chunk.
  if (damaged.size > 0) {
    for await (const { owner, manifest } of meta.listManifests()) {
      const seen = new Set<FsckProblem>();
      for (const e of manifest) {
        for (const prob of damaged.get(e.chunkId.toString("hex")) ?? []) {
          if (seen.has(prob)) continue;
          seen.add(prob);
          if (prob.affects.length < MAX_AFFECTED) prob.affects.push(owner);
        }
      }
    }
  }
  return { ok: problems.length === 0, problems, warnings, manifests, chunks, packs: packs.size, chunksRead, bytesRead };
}

