/**
 * Per-chunk compression: zstd (`zstd-napi`, zstd 1.5.7 built from source at install time), skipped
 * when the chunk will not shrink enough to be worth it.
 *
 * **Method byte** (*persisted*; recorded per chunk by the pack index):
 * - `0` STORED — the bytes are the chunk itself.
 * - `1` ZSTD — one zstd frame (RFC 8878) with the content size in its header and a content checksum
 *   (XXH64, 4 bytes), decompressing to exactly the chunk. The checksum is redundant behind the AEAD
 *   tag, but costs 4 bytes and almost no CPU, and makes a damaged or mis-assembled frame fail
 *   loudly wherever it is read.
 *
 * **Skip decision** (cheap, in the spirit of Borg's "LZ4 probe, then zstd"): chunks below
 * {@link PROBE_THRESHOLD} (128 KiB) are simply compressed. For larger ones, four 16 KiB slices spread
 * evenly over the chunk (start, 1/3, 2/3, end; 64 KiB in all) are concatenated and compressed at zstd
 * level 1; if that sample saves less than `minSavings` (default 3%), the chunk is STORED without
 * compressing it. Otherwise the whole chunk is compressed at `level` (default 3); if the frame is
 * longer than `floor(n × (1 − minSavings))` bytes, the chunk is STORED too. So a chunk is ZSTD only when it saves at least
 * `minSavings`, and video-like (already compressed) chunks cost one 64 KiB probe instead of a full
 * zstd pass. Spreading the probe over the chunk catches chunks that mix media with headers or
 * padding better than a prefix would; a chunk whose compressible part misses all four slices is
 * stored raw (a lost saving, never an error).
 *
 * Measured (1 MiB chunks, single thread, loaded 2-core build machine, `node dist/bench/codec.js`):
 * compressChunk on random data 9–18 GB/s (the probe only), versus a full zstd attempt at 1.9–3.3
 * GB/s at level 3 (zstd 1.5 bails out of incompressible blocks quickly) and 0.4–0.7 GB/s at level
 * 9; on log-like text 110–145 MB/s at level 3 (to 27%). Level 1 runs about 1.2–1.8x faster than
 * level 3 for 1–1.5 points of ratio; the ingest benchmark should settle the default.
 */
import binding from "zstd-napi/binding.js";
import { StowageError } from "../errors.js";

export const METHOD_STORED = 0;
export const METHOD_ZSTD = 1;
export type CompressionMethod = typeof METHOD_STORED | typeof METHOD_ZSTD;

export const DEFAULT_LEVEL = 3;
export const DEFAULT_MIN_SAVINGS = 0.03;
/** Chunks at least this long are probed before a full compression attempt. */
export const PROBE_THRESHOLD = 128 * 1024;
const PROBE_SLICES = 4;
const PROBE_SLICE_BYTES = 16 * 1024;
const PROBE_LEVEL = 1;
/** Largest chunk handled (the chunker's own maximum is 1 GiB). */
const MAX_CHUNK_BYTES = 1 << 30;

export interface CompressOptions {
  /** zstd level, an integer in [-7, 19] (0 means zstd's default, 3). Default 3. */
  level?: number;
  /** Store raw unless compression saves at least this fraction, in [0, 0.5]. Default 0.03. */
  minSavings?: number;
}

export interface CompressedChunk {
  method: CompressionMethod;
  /** For STORED, the input itself (not a copy). */
  bytes: Uint8Array;
}

let probeCtx: binding.CCtx | undefined;
let mainCtx: binding.CCtx | undefined;
let mainLevel = Number.NaN;
let dctx: binding.DCtx | undefined;

function mainContext(level: number): binding.CCtx {
  if (mainCtx === undefined) {
    mainCtx = new binding.CCtx();
    mainCtx.setParameter(binding.CParameter.checksumFlag, 1);
    mainCtx.setParameter(binding.CParameter.contentSizeFlag, 1);
  }
  if (level !== mainLevel) {
    mainCtx.setParameter(binding.CParameter.compressionLevel, level);
    mainLevel = level;
  }
  return mainCtx;
}

/**
 * A reusable destination for compression (the frame is copied out at its exact size): a fresh
 * compressBound-sized buffer per chunk was a megabyte of garbage per megabyte compressed, which
 * the thread's GC let pile up to tens of megabytes of resident memory between collections.
 */
let scratchBuffer: Buffer | undefined;
const MAX_KEPT_SCRATCH = 8 * 1024 * 1024;

function scratch(size: number): Buffer {
  if (scratchBuffer !== undefined && scratchBuffer.length >= size) return scratchBuffer;
  const b = Buffer.allocUnsafeSlow(size);
  // Larger chunks than this (the chunker allows up to 1 GiB) get a buffer of their own each time.
  if (size <= MAX_KEPT_SCRATCH) scratchBuffer = b;
  return b;
}

function isDstTooSmall(err: unknown): boolean {
  return err instanceof Error && /destination buffer is too small/i.test(err.message);
}

/** The probe sample: `PROBE_SLICES` slices spread evenly over `data` (which is >= PROBE_THRESHOLD long). */
function probeSample(data: Uint8Array): Uint8Array {
  const sample = new Uint8Array(PROBE_SLICES * PROBE_SLICE_BYTES);
  const span = data.length - PROBE_SLICE_BYTES;
  for (let i = 0; i < PROBE_SLICES; i++) {
    const start = Math.floor((span * i) / (PROBE_SLICES - 1));
    sample.set(data.subarray(start, start + PROBE_SLICE_BYTES), i * PROBE_SLICE_BYTES);
  }
  return sample;
}

/** True when the sample suggests compression saves at least `minSavings`. */
function probeSaysCompress(data: Uint8Array, minSavings: number): boolean {
  const sample = probeSample(data);
  const limit = Math.floor(sample.length * (1 - minSavings));
  probeCtx ??= new binding.CCtx();
  try {
    probeCtx.compress(Buffer.allocUnsafe(limit), sample, PROBE_LEVEL);
    return true;
  } catch (err) {
    if (isDstTooSmall(err)) return false;
    throw err;
  }
}

function checkOptions(options: CompressOptions): { level: number; minSavings: number } {
  const level = options.level ?? DEFAULT_LEVEL;
  const minSavings = options.minSavings ?? DEFAULT_MIN_SAVINGS;
  if (!Number.isInteger(level) || level < -7 || level > 19) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `zstd level ${level} outside [-7, 19]`);
  }
  if (!(minSavings >= 0 && minSavings <= 0.5)) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `minSavings ${minSavings} outside [0, 0.5]`);
  }
  return { level, minSavings };
}

/**
 * Compresses one chunk, or decides not to. `level` may be passed directly or in `options`.
 * The result records how the chunk was stored; pass `method` and the chunk length to
 * {@link decompressChunk} to get it back.
 */
export function compressChunk(data: Uint8Array, levelOrOptions: number | CompressOptions = {}): CompressedChunk {
  if (!(data instanceof Uint8Array)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "chunk data must be a Uint8Array");
  if (data.length > MAX_CHUNK_BYTES) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `chunk of ${data.length} bytes is above 1 GiB`);
  const { level, minSavings } = checkOptions(typeof levelOrOptions === "number" ? { level: levelOrOptions } : levelOrOptions);
  const stored: CompressedChunk = { method: METHOD_STORED, bytes: data };
  const limit = Math.floor(data.length * (1 - minSavings));
  // A zstd frame has at least ~13 bytes of header, block header and checksum.
  if (limit < 16) return stored;
  if (data.length >= PROBE_THRESHOLD && !probeSaysCompress(data, minSavings)) return stored;
  // Room for any frame, so an incompressible chunk costs no exception: under a busy server, the
  // "destination buffer is too small" error (an Error with a stack trace) cost 40-60 µs per small
  // chunk, several times the compression attempt itself.
  const dst = scratch(binding.compressBound(data.length));
  const n = mainContext(level).compress2(dst, data);
  if (n > limit) return stored;
  // Copy to an exact-size buffer: `dst` may be far larger than the frame.
  return { method: METHOD_ZSTD, bytes: new Uint8Array(dst.subarray(0, n)) };
}

function corrupt(what: string): StowageError {
  return new StowageError("STOWAGE_INTEGRITY", `compressed chunk is corrupt: ${what}`);
}

/**
 * Restores a chunk stored with `method`. `expectedLength` is the chunk's length as recorded in the
 * index; anything else is `STOWAGE_INTEGRITY`, and so is a zstd frame that fails to decode or whose
 * checksum does not match. An unknown method byte is `STOWAGE_FORMAT_VERSION`.
 */
export function decompressChunk(method: number, bytes: Uint8Array, expectedLength: number): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "compressed bytes must be a Uint8Array");
  if (!Number.isInteger(expectedLength) || expectedLength < 0 || expectedLength > MAX_CHUNK_BYTES) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `expected chunk length ${expectedLength} out of range`);
  }
  if (method === METHOD_STORED) {
    if (bytes.length !== expectedLength) throw corrupt(`stored chunk is ${bytes.length} bytes, expected ${expectedLength}`);
    return bytes;
  }
  if (method !== METHOD_ZSTD) {
    throw new StowageError("STOWAGE_FORMAT_VERSION", `unknown compression method ${method}: written by a newer Stowage, or damaged`);
  }
  let contentSize: number | null;
  let frameSize: number;
  try {
    contentSize = binding.getFrameContentSize(bytes);
    frameSize = binding.findFrameCompressedSize(bytes);
  } catch (err) {
    throw corrupt(`bad zstd frame header (${(err as Error).message})`);
  }
  if (contentSize !== expectedLength) throw corrupt(`zstd frame holds ${contentSize ?? "an unknown number of"} bytes, expected ${expectedLength}`);
  if (frameSize !== bytes.length) throw corrupt(`zstd frame is ${frameSize} bytes but ${bytes.length} were given`);
  const out = Buffer.allocUnsafe(expectedLength);
  let n: number;
  try {
    dctx ??= new binding.DCtx();
    n = dctx.decompress(out, bytes);
  } catch (err) {
    throw corrupt(`zstd: ${(err as Error).message}`);
  }
  if (n !== expectedLength) throw corrupt(`zstd frame decoded to ${n} bytes, expected ${expectedLength}`);
  return out;
}
