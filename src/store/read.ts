/**
 * The read half of the data path for one object version: manifest entries -> chunk locations (from
 * the chunk index) -> the pack reader (coalesced ranged GETs, AEAD check, decompression, cache) ->
 * the bytes of the requested range, streamed. The reader pulls locations lazily, so a slow
 * consumer stops the lookups and the fetching (backpressure) and memory stays bounded.
 */
import { StowageError, isStowageError } from "../errors.js";
import { chunkIdHex } from "../codec/chunk-id.js";
import type { PackReader, ChunkLocation } from "../pack/reader.js";
import type { ManifestEntry, MetaReader } from "../meta/types.js";

/** `[start, end)` in object bytes. */
export interface ByteSpan {
  start: number;
  end: number;
}

interface Piece {
  entry: ManifestEntry;
  /** Bytes of the entry to emit: [from, to) relative to the entry's start. */
  from: number;
  to: number;
}

function* pieces(manifest: readonly ManifestEntry[], span: ByteSpan): Generator<Piece> {
  let pos = 0;
  for (const entry of manifest) {
    const entryEnd = pos + entry.length;
    if (entryEnd > span.start && pos < span.end) {
      yield { entry, from: Math.max(0, span.start - pos), to: Math.min(entry.length, span.end - pos) };
    }
    pos = entryEnd;
    if (pos >= span.end) return;
  }
}

export async function lookupLocation(meta: MetaReader, chunkId: Buffer): Promise<ChunkLocation> {
  const rec = await meta.getChunk(chunkId);
  if (rec === undefined) {
    throw new StowageError("STOWAGE_INTEGRITY", `chunk ${chunkIdHex(chunkId)} is referenced but missing from the chunk index (run \`stowage fsck\`)`);
  }
  const pack = await meta.getPack(rec.packId);
  if (pack === undefined) {
    throw new StowageError("STOWAGE_INTEGRITY", `chunk ${chunkIdHex(chunkId)} is in pack ${rec.packId}, which the metadata does not know (run \`stowage fsck\`)`);
  }
  return {
    chunkId,
    packId: rec.packId,
    blobKey: pack.blobKey,
    offset: rec.offset,
    storedLength: rec.storedLength,
    rawLength: rec.rawLength,
    method: rec.method,
  };
}

/**
 * Streams `span` of the object whose content is `manifest`. `name` (bucket/key) is added to any
 * integrity error so the message names the object as well as the pack and chunk.
 */
export async function* readManifest(
  meta: MetaReader,
  reader: PackReader,
  manifest: readonly ManifestEntry[],
  span: ByteSpan,
  name: string,
): AsyncGenerator<Buffer> {
  const wanted = [...pieces(manifest, span)];
  async function* locations(): AsyncGenerator<ChunkLocation> {
    for (const p of wanted) yield await lookupLocation(meta, p.entry.chunkId);
  }
  let i = 0;
  try {
    for await (const plain of reader.read(locations())) {
      const p = wanted[i++]!;
      const { entry } = p;
      if (entry.offset + entry.length > plain.length) {
        throw new StowageError(
          "STOWAGE_INTEGRITY",
          `chunk ${chunkIdHex(entry.chunkId)} holds ${plain.length} bytes but the manifest reads bytes ${entry.offset}..${entry.offset + entry.length}`,
        );
      }
      yield plain.subarray(entry.offset + p.from, entry.offset + p.to);
    }
  } catch (err) {
    if (isStowageError(err, "STOWAGE_INTEGRITY") || isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) {
      throw new StowageError(err.code, `reading ${name}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  if (i !== wanted.length) throw new StowageError("STOWAGE_INTEGRITY", `reading ${name}: the pack reader returned ${i} of ${wanted.length} chunks`);
}
