/**
 * The write half of the data path for one stream: chunk (FastCDC) -> chunk id (keyed BLAKE3) ->
 * dedup lookup -> compress (zstd, skipped when it does not pay) -> hand to the packer, which seals
 * (AEAD) and packs. Produces the manifest, the size and the MD5 (the S3 ETag); the caller waits for
 * the packer's flush and then commits metadata.
 *
 * Memory: the chunker holds at most one partial chunk; each new chunk is compressed and given to the
 * packer, whose own buffers are bounded (it makes `add` wait). Nothing holds the whole object.
 */
import { createHash } from "node:crypto";
import { StowageError, isStowageError } from "../errors.js";
import { Chunker, type ChunkerParams } from "../codec/chunker.js";
import type { ChunkIdHasher } from "../codec/chunk-id.js";
import type { Packer } from "../pack/writer.js";
import type { DigestStream, RecordEncoder } from "../pack/encoder.js";
import type { ChunkRecord, ManifestEntry, MetaReader } from "../meta/types.js";

export interface IngestContext {
  params: ChunkerParams;
  hasher: ChunkIdHasher;
  packer: Packer;
  encoder: RecordEncoder;
  meta: MetaReader;
  /**
   * Whether an indexed chunk may be deduplicated against (default: any). A cloud-durability write
   * refuses chunks that live only in a write-back pack not yet uploaded: it stores them again.
   */
  usable?: (record: ChunkRecord) => Promise<boolean>;
}

/** Chunks of one stream being encoded (compressed + sealed) at once; each holds a copy of its chunk. */
const MAX_ENCODING = 4;

const ignore = (): void => undefined;

/** Streams announced shorter than this hash their MD5 on this thread. */
const INLINE_DIGEST_BELOW = 4 * 1024 * 1024;

function inlineDigest(): DigestStream {
  const h = createHash("md5");
  return {
    update: (d) => {
      h.update(d);
      return Promise.resolve();
    },
    digest: () => Promise.resolve(h.digest()),
    abort: () => undefined,
  };
}

/** For callers that know the MD5 already: nothing is hashed, the digest is empty. */
const NO_DIGEST: DigestStream = { update: () => Promise.resolve(), digest: () => Promise.resolve(Buffer.alloc(0)), abort: () => undefined };

export interface IngestResult {
  manifest: ManifestEntry[];
  size: number;
  /** MD5 of the content, 16 bytes (empty when ingested with `digest: false`). */
  md5: Buffer;
  /** Chunks this stream added to packs (not found by dedup). */
  newChunks: number;
  newBytes: number;
  /**
   * The packs (possibly other writers') holding chunks this stream found pending or that add()
   * skipped as pending: the caller waits for them after its flush, so that a failed upload of
   * another writer's pack fails this stream with that error instead of committing references to
   * chunks that were never stored.
   */
  dependsOn: Promise<void>[];
}

export interface IngestLimits {
  /** When set, the stream must be exactly this long (else STOWAGE_INCOMPLETE_BODY / STOWAGE_INVALID_ARGUMENT). */
  expectedSize?: number;
  /** Most bytes accepted (e.g. S3's 5 GiB for one PUT); more is STOWAGE_INVALID_ARGUMENT. */
  maxSize?: number;
  /** `false`: the caller has the content's MD5 already (result `md5` is then empty). Default true. */
  digest?: boolean;
}

/** Reads `source` to the end, storing each chunk not already stored. */
export async function ingest(ctx: IngestContext, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, limits: IngestLimits = {}): Promise<IngestResult> {
  const chunker = new Chunker(ctx.params);
  // The MD5 (ETag) runs in the encoder's worker for large streams; a small one is cheaper inline.
  const md5 =
    limits.digest === false ? NO_DIGEST : limits.expectedSize !== undefined && limits.expectedSize < INLINE_DIGEST_BELOW ? inlineDigest() : ctx.encoder.openDigest();
  const manifest: ManifestEntry[] = [];
  const seen = new Set<string>();
  let size = 0;
  let newChunks = 0;
  let newBytes = 0;
  const dependsOn = new Set<Promise<void>>();

  // New chunks are encoded concurrently (in the encoder's threads) but handed to the packer in
  // stream order, so an object's chunks sit next to each other in its packs (one GET reads many).
  let chain: Promise<void> = Promise.resolve();
  const encoding: Promise<void>[] = [];
  // `owned`: the chunker made `data` and nothing else holds it: the encoder may take it (no copy).
  const store = async (data: Uint8Array, owned: boolean): Promise<void> => {
    const id = Buffer.from(ctx.hasher.id(data));
    const rawLength = data.length;
    manifest.push({ chunkId: id, offset: 0, length: rawLength });
    const hex = id.toString("hex");
    // The MD5 is fed chunk by chunk, in stream order: store() runs one chunk at a time, and each
    // path below feeds its chunk before the next store() (encode() feeds it before returning).
    if (seen.has(hex)) return md5.update(data);
    seen.add(hex);
    // Pending first, then the index: a chunk committed between the two checks is in the index.
    const pendingIn = ctx.packer.whenCommitted(id);
    if (pendingIn !== undefined) {
      dependsOn.add(pendingIn);
      return md5.update(data);
    }
    const indexed = await ctx.meta.getChunk(id);
    if (indexed !== undefined && (ctx.usable === undefined || (await ctx.usable(indexed)))) return md5.update(data);
    // A new chunk carries its bytes to the MD5 itself (in the same message, when both go to a worker).
    const encoded = ctx.encoder.encode(id, data, md5, owned);
    encoded.catch(ignore);
    const step = chain.then(async () => {
      const r = await encoded;
      await ctx.packer.add({ chunkId: id, method: r.method, rawLength, sealed: r.sealed });
      // add() skips a chunk another writer added meanwhile: it is then in that writer's pack.
      const addedTo = ctx.packer.whenCommitted(id);
      if (addedTo !== undefined) dependsOn.add(addedTo);
    });
    step.catch(ignore);
    chain = step;
    encoding.push(step);
    if (encoding.length >= MAX_ENCODING) await encoding.shift();
    newChunks++;
    newBytes += rawLength;
  };

  try {
    for await (const buf of source) {
      if (!(buf instanceof Uint8Array)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "object data must be a stream of Uint8Array");
      if (buf.length === 0) continue;
      size += buf.length;
      if (limits.maxSize !== undefined && size > limits.maxSize) {
        throw new StowageError("STOWAGE_INVALID_ARGUMENT", `object is larger than the ${limits.maxSize}-byte limit`);
      }
      if (limits.expectedSize !== undefined && size > limits.expectedSize) {
        throw new StowageError("STOWAGE_INVALID_ARGUMENT", `body is longer than the announced ${limits.expectedSize} bytes`);
      }
      for (const c of chunker.push(buf)) await store(c.data, c.owned);
    }
  } catch (err) {
    chunker.finish();
    md5.abort();
    await chain.catch(ignore);
    if (isStowageError(err)) throw err;
    throw new StowageError("STOWAGE_INCOMPLETE_BODY", `the data stream failed after ${size} bytes: ${(err as Error).message}`, { cause: err });
  }
  try {
    for (const c of chunker.finish()) await store(c.data, c.owned);
    await chain;
    if (limits.expectedSize !== undefined && size !== limits.expectedSize) {
      throw new StowageError("STOWAGE_INCOMPLETE_BODY", `body ended after ${size} of ${limits.expectedSize} announced bytes`);
    }
  } catch (err) {
    md5.abort();
    throw err;
  }
  return { manifest, size, md5: await md5.digest(), newChunks, newBytes, dependsOn: [...dependsOn] };
}
