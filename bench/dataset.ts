/**
 * Deterministic media-like data sets for the ingest benchmark (bench/ingest.ts) and for tests.
 *
 *   node dist/bench/dataset.js --out DIR --seed N --size MB [--kind incompressible|compressible|all|KIND,KIND...]
 *
 * The same (seed, size, kinds) always gives the same file tree, byte for byte, on any
 * little-endian machine (every machine Node runs on today). MB means 10^6 bytes. `--size` is the
 * total for the selected kinds; the planner splits it between them (weights below) and lands
 * within a few percent of it.
 *
 * What each kind models:
 *
 * - `video`: camera originals / delivered masters (`video/A001C003_240305.mov`). Already
 *   compressed by the codec, so the bytes are incompressible: seeded PRNG output. Sizes are tens to
 *   hundreds of MB at the default scale (each between 1/10 and 1/3 of the video budget).
 * - `versions`: new versions of those videos (`versions/A001C003_240305_v2.mov`, `_v3`, ...), each
 *   derived from the previous one (v2 from the original) by the edits a re-export or conform
 *   produces: 1-3 byte inserts (1 B - 64 KiB of new bytes, at most 1% of the file, at random places;
 *   they shift everything after them: fixed-size chunking loses, content-defined chunking
 *   resynchronizes), 1-3 overwritten regions (4 KiB - 1 MiB, at most 2% of the file, e.g. a
 *   re-graded shot), a truncation of the tail (30% of versions, 1-8%) and appended frames (50% of
 *   versions, 1-5% new bytes at the end). With ~1 MiB chunks most of each version dedups against
 *   its parent (85-97% of a 100 MB version at Stowage's defaults); how much depends on chunk size
 *   vs. video size (the unit test checks it with chunks scaled to its small files).
 * - `frames`: VFX/render frame sequences (`frames/shot010/frame.0001.exr`). Frames of one shot
 *   have the same size (2-8 MB, smaller only when the budget is tiny) and each frame is the previous
 *   one with a new 512-byte header (new bytes, standing for frame number and timecode) and 1-2
 *   overwritten regions of 0.5-3% of the frame (a moving element over a static plate, in a
 *   scanline-compressed file where untouched scanline blocks stay byte-identical). Pixel data is incompressible. Most bytes repeat
 *   from frame to frame; whether a chunker finds it depends on chunk vs. frame size.
 * - `sidecars`: tiny metadata files next to the media: camera/clip JSON (pretty-printed, per-frame
 *   lens data), ASC-MHL-like XML hash lists, CMX3600 EDLs. Sizes log-uniform in 64 B - 40 KB,
 *   hundreds to a few thousand files, about 100 per directory. Compressible (2-6x), but tiny files
 *   mostly measure per-file overhead.
 * - `logs`: text a facility produces next to its media: render-farm logs, S3-style access logs and
 *   structured JSON-lines service logs (`logs/render-node-07/render.2024-03-05.log`, ...), 256 KiB -
 *   16 MB per file. Timestamps that advance, repeated words, hosts and paths, random numbers and ids;
 *   zstd level 3 compresses it about 4-10x (test/bench/dataset.test.ts checks the range).
 *
 * Presets: `incompressible` = video + versions + frames (weights 0.40 / 0.30 / 0.30; at 2.4 GB it
 * dedups about 1.8x with Stowage's ~1 MiB FastCDC, less in small --quick sets whose files hold fewer
 * chunks), `compressible` = logs + sidecars (0.83 / 0.17, sidecars capped at 4000 files; whatever
 * the cap leaves goes to the logs), `all` = everything (0.28 / 0.21 / 0.21 / 0.25 / 0.05).
 *
 * How the bytes are made (fast and random-access): a binary file is a list of segments, each a
 * byte range of a keyed pseudo-random *stream*. Stream bytes come in 64 KiB blocks; block `k` of
 * stream `(a, b)` is xoshiro128** output (32-bit words, little-endian) from a state seeded by
 * hashing `(a, b, k)` with a 32-bit avalanche mix (lowbias32) in SplitMix fashion, so any byte range
 * of any stream can be produced without generating what comes before it. A version or a frame is
 * its parent's segment list with edits spliced in, so nothing is held in memory but segment lists;
 * files are written in 1 MiB pieces. Stream keys are derived from (seed, a label such as
 * "video/3"), so distinct streams never share bytes (64-bit block states). Text is generated line
 * by line straight into byte buffers by a per-file xoshiro128** (no string building in the log
 * path). One core generates binary kinds at about 0.8-1.7 GB/s and logs at about 150-250 MB/s
 * (measured on the busy 2-core project VM, CPU time; the CLI prints its rate, writes included).
 */
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname, join, resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";

export type Kind = "video" | "versions" | "frames" | "sidecars" | "logs";
export const KINDS: readonly Kind[] = ["video", "versions", "frames", "sidecars", "logs"];
export type Preset = "incompressible" | "compressible" | "all";
export const PRESETS: Record<Preset, readonly Kind[]> = {
  incompressible: ["video", "versions", "frames"],
  compressible: ["logs", "sidecars"],
  all: KINDS,
};

/** Relative weights of the kinds' byte budgets (normalized over the selected kinds). */
const WEIGHTS: Record<Kind, number> = { video: 0.28, versions: 0.21, frames: 0.21, logs: 0.25, sidecars: 0.05 };

export const MB = 1_000_000;
const KiB = 1024;
const MiB = 1024 * 1024;

/** `incompressible`, `compressible`, `all`, or a comma-separated list of kinds. */
export function parseKinds(spec: string): Kind[] {
  if (spec in PRESETS) return [...PRESETS[spec as Preset]];
  const out: Kind[] = [];
  for (const s of spec.split(",")) {
    const k = s.trim();
    if (!(KINDS as readonly string[]).includes(k)) {
      throw new Error(`unknown kind "${k}" (kinds: ${KINDS.join(", ")}; presets: ${Object.keys(PRESETS).join(", ")})`);
    }
    if (!out.includes(k as Kind)) out.push(k as Kind);
  }
  return out;
}

// ------------------------------------------------------------------------------------ PRNG

/** lowbias32 (Chris Wellons): a 32-bit integer hash with good avalanche. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** FNV-1a over a string's UTF-16 code units, from basis `h`. */
function fnv1a(s: string, h: number): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** A sequential xoshiro128** generator (Blackman & Vigna), seeded SplitMix-style from two words. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(a: number, b = 0) {
    let x = (a ^ Math.imul(b | 0, 0x632be5ab)) | 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      return mix32(x ^ mix32(b + x));
    };
    this.s0 = next() | 0;
    this.s1 = next() | 0;
    this.s2 = next() | 0;
    this.s3 = next() | 1;
  }

  /** Next 32-bit word, unsigned. */
  next(): number {
    const s1 = this.s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r >>> 0;
  }

  /** Uniform integer in [0, n), n <= 2^32. */
  below(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** Uniform float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }

  /** Log-uniform integer in [lo, hi]. */
  logUniform(lo: number, hi: number): number {
    return Math.min(hi, Math.floor(lo * Math.pow(hi / lo, this.float())));
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)]!;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A stream key: two 32-bit words derived from the data set's seed and a label. */
export interface StreamId {
  a: number;
  b: number;
}

export function streamId(seed: number, label: string): StreamId {
  const s = seed >>> 0;
  return { a: mix32(fnv1a(label, 0x811c9dc5) ^ s), b: mix32(fnv1a(label, 0x2f0e1b3d) + Math.imul(s, 0x9e3779b9)) };
}

const BLOCK_BYTES = 64 * KiB;
const BLOCK_WORDS = BLOCK_BYTES / 4;

/**
 * Fills `out` (BLOCK_WORDS words) with block `block` of stream (a, b): two interleaved xoshiro128**
 * generators (even and odd words), inlined, so the CPU can overlap their dependency chains.
 */
function generateBlock(a: number, b: number, block: number, out: Int32Array): void {
  // 2 x 128-bit state from (a, b, block): two independent 32-bit inputs keep distinct streams apart.
  let s0 = mix32((a + Math.imul(block, 0x9e3779b9)) | 0) | 0;
  let s1 = mix32(b ^ Math.imul(block + 1, 0x85ebca6b)) | 0;
  let s2 = mix32((s0 ^ Math.imul(s1, 0xc2b2ae35)) + 0x632be5ab) | 0;
  let s3 = mix32((s1 + Math.imul(s0 | 1, 0x27d4eb2f)) ^ 0x165667b1) | 1;
  let u0 = mix32(s0 ^ 0x3c6ef372) | 0;
  let u1 = mix32(s1 + 0x3c6ef372) | 0;
  let u2 = mix32(s2 ^ 0xa54ff53a) | 0;
  let u3 = mix32(s3 + 0x510e527f) | 1;
  for (let i = 0; i < BLOCK_WORDS; i += 2) {
    const x = Math.imul(s1, 5);
    const r = Math.imul((x << 7) | (x >>> 25), 9);
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    const y = Math.imul(u1, 5);
    const q = Math.imul((y << 7) | (y >>> 25), 9);
    const v = u1 << 9;
    u2 ^= u0;
    u3 ^= u1;
    u1 ^= u2;
    u0 ^= u3;
    u2 ^= v;
    u3 = (u3 << 11) | (u3 >>> 21);
    out[i] = r;
    out[i + 1] = q;
  }
}

/** Random-access reader of stream bytes with a one-block cache. */
class StreamReader {
  private readonly words = new Int32Array(BLOCK_WORDS);
  private readonly bytes = new Uint8Array(this.words.buffer);
  private ca = 0;
  private cb = 0;
  private cblock = -1;

  /** Copies bytes [offset, offset + len) of stream (a, b) into dst at dstOff. */
  read(a: number, b: number, offset: number, dst: Uint8Array, dstOff: number, len: number): void {
    while (len > 0) {
      const block = Math.floor(offset / BLOCK_BYTES);
      const inBlock = offset - block * BLOCK_BYTES;
      const n = Math.min(len, BLOCK_BYTES - inBlock);
      if (n === BLOCK_BYTES && ((dst.byteOffset + dstOff) & 3) === 0) {
        // A whole aligned block: generate in place.
        generateBlock(a, b, block, new Int32Array(dst.buffer, dst.byteOffset + dstOff, BLOCK_WORDS));
      } else {
        if (block !== this.cblock || a !== this.ca || b !== this.cb) {
          generateBlock(a, b, block, this.words);
          this.ca = a;
          this.cb = b;
          this.cblock = block;
        }
        dst.set(this.bytes.subarray(inBlock, inBlock + n), dstOff);
      }
      offset += n;
      dstOff += n;
      len -= n;
    }
  }
}

/** `n` incompressible bytes of the stream (seed, label): e.g. a buffer for in-memory benchmarks. */
export function seededBytes(seed: number, label: string, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const id = streamId(seed, label);
  new StreamReader().read(id.a, id.b, 0, out, 0, n);
  return out;
}

// ------------------------------------------------------------------------- segment lists

/** Bytes [offset, offset + length) of stream (a, b). */
export interface Segment {
  a: number;
  b: number;
  offset: number;
  length: number;
}

function segmentsLength(segs: readonly Segment[]): number {
  let n = 0;
  for (const s of segs) n += s.length;
  return n;
}

/** Replaces bytes [pos, pos + del) of the file described by `segs` with `insert`. Returns a new list. */
function splice(segs: readonly Segment[], pos: number, del: number, insert: readonly Segment[]): Segment[] {
  const out: Segment[] = [];
  let at = 0;
  let inserted = false;
  const end = pos + del;
  for (const s of segs) {
    const sEnd = at + s.length;
    // The part before pos.
    if (at < pos) out.push({ ...s, length: Math.min(s.length, pos - at) });
    if (!inserted && sEnd >= pos) {
      out.push(...insert);
      inserted = true;
    }
    // The part after end.
    if (sEnd > end) {
      const skip = Math.max(0, end - at);
      out.push({ ...s, offset: s.offset + skip, length: s.length - skip });
    }
    at = sEnd;
  }
  if (!inserted) out.push(...insert);
  // Merge neighbours that continue the same stream.
  const merged: Segment[] = [];
  for (const s of out) {
    if (s.length === 0) continue;
    const last = merged[merged.length - 1];
    if (last !== undefined && last.a === s.a && last.b === s.b && last.offset + last.length === s.offset) {
      last.length += s.length;
    } else merged.push({ ...s });
  }
  return merged;
}

function fresh(seed: number, label: string, length: number): Segment {
  const id = streamId(seed, label);
  return { a: id.a, b: id.b, offset: 0, length };
}

// ------------------------------------------------------------------------------- the plan

export type LogStyle = "render" | "access" | "jsonl";
export type SidecarFormat = "json" | "xml" | "edl";

export type EntrySource =
  | { type: "binary"; segments: Segment[] }
  | { type: "log"; style: LogStyle; seed: number; startMs: number }
  | { type: "sidecar"; format: SidecarFormat; seed: number };

export interface DatasetEntry {
  /** Relative path, '/'-separated. */
  path: string;
  kind: Kind;
  /** Exact size in bytes. */
  size: number;
  source: EntrySource;
  /** For versions and frames: the path of the file this one was derived from. */
  parent?: string;
}

export interface DatasetOptions {
  seed: number;
  /** Total size of the selected kinds in MB (10^6 bytes). */
  sizeMB: number;
  kinds: readonly Kind[];
}

export interface DatasetPlan {
  options: DatasetOptions;
  entries: DatasetEntry[];
  totalBytes: number;
  bytesByKind: Record<Kind, number>;
  filesByKind: Record<Kind, number>;
}

/** Plans the files of a data set (cheap: no bytes are generated). */
export function planDataset(options: DatasetOptions): DatasetPlan {
  const { seed } = options;
  const kinds = options.kinds.length === 0 ? [...KINDS] : [...options.kinds];
  const total = Math.max(1, Math.round(options.sizeMB * MB));
  const wsum = kinds.reduce((s, k) => s + WEIGHTS[k], 0);
  const budget = (k: Kind): number => (kinds.includes(k) ? Math.round((total * WEIGHTS[k]) / wsum) : 0);
  const entries: DatasetEntry[] = [];
  const rng = new Rng(seed, 0x5eed);

  // Videos (planned whenever versions are wanted: they are the versions' parents).
  let sidecarBudget = budget("sidecars");
  let logBudget = budget("logs");
  if (kinds.includes("video") || kinds.includes("versions")) {
    const videoBudget = kinds.includes("video") ? budget("video") : budget("versions");
    const videos = planVideos(seed, videoBudget, rng);
    if (kinds.includes("video")) entries.push(...videos);
    if (kinds.includes("versions")) entries.push(...planVersions(seed, videos, budget("versions"), rng));
  }
  if (kinds.includes("frames")) entries.push(...planFrames(seed, budget("frames"), rng));
  if (kinds.includes("sidecars")) {
    const side = planSidecars(seed, sidecarBudget, rng);
    entries.push(...side);
    const used = side.reduce((s, e) => s + e.size, 0);
    // Whatever the file-count cap left over goes to the logs.
    if (kinds.includes("logs")) logBudget += sidecarBudget - used;
    sidecarBudget = used;
  }
  if (kinds.includes("logs")) entries.push(...planLogs(seed, logBudget, rng));

  const bytesByKind = { video: 0, versions: 0, frames: 0, sidecars: 0, logs: 0 };
  const filesByKind = { video: 0, versions: 0, frames: 0, sidecars: 0, logs: 0 };
  for (const e of entries) {
    bytesByKind[e.kind] += e.size;
    filesByKind[e.kind]++;
  }
  const totalBytes = entries.reduce((s, e) => s + e.size, 0);
  return { options: { seed, sizeMB: options.sizeMB, kinds }, entries, totalBytes, bytesByKind, filesByKind };
}

/** Splits `budget` into pieces in [lo, hi] (the last may absorb a small remainder). */
function splitBudget(budget: number, lo: number, hi: number, rng: Rng): number[] {
  const out: number[] = [];
  let left = budget;
  while (left > 0) {
    let n = Math.min(left, rng.int(lo, Math.max(lo, hi)));
    if (left - n < lo) n = left;
    out.push(n);
    left -= n;
  }
  return out;
}

const REELS = ["A001", "A002", "A003", "B001", "B002", "C001"];

function clipName(i: number): string {
  return `${REELS[i % REELS.length]}C${String(3 + i * 7).padStart(3, "0")}_2403${String(5 + (i % 20)).padStart(2, "0")}`;
}

function planVideos(seed: number, budget: number, rng: Rng): DatasetEntry[] {
  if (budget <= 0) return [];
  const sizes = splitBudget(budget, Math.max(1, Math.floor(budget / 10)), Math.floor(budget / 3), rng);
  return sizes.map((size, i) => {
    const name = clipName(i);
    return {
      path: `video/${name}.mov`,
      kind: "video" as const,
      size,
      source: { type: "binary" as const, segments: [fresh(seed, `video/${i}`, size)] },
    };
  });
}

function planVersions(seed: number, videos: DatasetEntry[], budget: number, rng: Rng): DatasetEntry[] {
  const out: DatasetEntry[] = [];
  if (videos.length === 0 || budget <= 0) return out;
  const latest = videos.map((v) => v);
  let used = 0;
  for (let version = 2; used < budget; version++) {
    for (let i = 0; i < videos.length && used < budget; i++) {
      const parent = latest[i]!;
      const label = `version/${i}/${version}`;
      let segs = (parent.source as { segments: Segment[] }).segments;
      let size = parent.size;
      // Overwritten regions (same length).
      const overwrites = rng.int(1, 3);
      for (let k = 0; k < overwrites; k++) {
        const len = Math.min(size, rng.logUniform(4 * KiB, Math.max(4 * KiB, Math.min(MiB, Math.floor(size / 50)))));
        const pos = rng.below(size - len + 1);
        segs = splice(segs, pos, len, [fresh(seed, `${label}/overwrite/${k}`, len)]);
      }
      // Byte inserts.
      const inserts = rng.int(1, 3);
      for (let k = 0; k < inserts; k++) {
        const len = rng.logUniform(1, Math.max(2, Math.min(64 * KiB, Math.floor(size / 100))));
        const pos = rng.below(size + 1);
        segs = splice(segs, pos, 0, [fresh(seed, `${label}/insert/${k}`, len)]);
        size += len;
      }
      // Truncation of the tail.
      if (rng.float() < 0.3) {
        const cut = Math.floor(size * (0.01 + 0.07 * rng.float()));
        segs = splice(segs, size - cut, cut, []);
        size -= cut;
      }
      // Appended frames.
      if (rng.float() < 0.5) {
        const add = Math.max(1, Math.floor(size * (0.01 + 0.04 * rng.float())));
        segs = splice(segs, size, 0, [fresh(seed, `${label}/append`, add)]);
        size += add;
      }
      const base = videos[i]!.path.replace(/^video\//, "").replace(/\.mov$/, "");
      const entry: DatasetEntry = {
        path: `versions/${base}_v${version}.mov`,
        kind: "versions",
        size: segmentsLength(segs),
        source: { type: "binary", segments: segs },
        parent: parent.path,
      };
      out.push(entry);
      latest[i] = entry;
      used += entry.size;
    }
  }
  return out;
}

const FRAME_HEADER = 512;

function planFrames(seed: number, budget: number, rng: Rng): DatasetEntry[] {
  const out: DatasetEntry[] = [];
  if (budget <= 0) return out;
  // Frame size 2-8 MB; shrink only when the budget cannot hold a handful of frames.
  const maxFrame = Math.max(64 * KiB, Math.min(8 * MB, Math.floor(budget / 8)));
  const minFrame = Math.min(2 * MB, maxFrame);
  let used = 0;
  for (let shot = 0; used < budget; shot++) {
    const frameSize = rng.int(minFrame, maxFrame);
    const left = budget - used;
    const want = rng.int(24, 96);
    let frames = Math.max(1, Math.min(want, Math.round(left / frameSize)));
    // Do not leave a stub shot of a frame or two behind.
    if (left - frames * frameSize < 4 * frameSize) frames = Math.max(1, Math.round(left / frameSize));
    const shotName = `shot${String((shot + 1) * 10).padStart(3, "0")}`;
    let segs: Segment[] = [fresh(seed, `frames/${shot}/plate`, frameSize)];
    // The moving element: region centres drift from frame to frame.
    const regions = rng.int(1, 2);
    const centre = Array.from({ length: regions }, () => rng.float());
    const velocity = Array.from({ length: regions }, () => (rng.float() - 0.5) * 0.02);
    let prevPath: string | undefined;
    for (let f = 1; f <= frames; f++) {
      const label = `frames/${shot}/${f}`;
      segs = splice(segs, 0, Math.min(FRAME_HEADER, frameSize), [fresh(seed, `${label}/header`, Math.min(FRAME_HEADER, frameSize))]);
      if (f > 1) {
        for (let r = 0; r < regions; r++) {
          centre[r] = (((centre[r]! + velocity[r]! + (rng.float() - 0.5) * 0.004) % 1) + 1) % 1;
          const len = Math.max(1, Math.floor(frameSize * (0.005 + 0.025 * rng.float())));
          const pos = Math.min(frameSize - len, Math.max(FRAME_HEADER, Math.floor(centre[r]! * frameSize - len / 2)));
          if (pos >= 0) segs = splice(segs, pos, len, [fresh(seed, `${label}/region/${r}`, len)]);
        }
      }
      const path = `frames/${shotName}/frame.${String(f).padStart(4, "0")}.exr`;
      out.push({
        path,
        kind: "frames",
        size: frameSize,
        source: { type: "binary", segments: segs },
        ...(prevPath === undefined ? {} : { parent: prevPath }),
      });
      prevPath = path;
      used += frameSize;
    }
  }
  return out;
}

const MAX_SIDECARS = 4000;
const SIDECAR_MIN = 64;
const SIDECAR_MAX = 40_000;

function planSidecars(seed: number, budget: number, rng: Rng): DatasetEntry[] {
  const out: DatasetEntry[] = [];
  const formats: SidecarFormat[] = ["json", "json", "xml", "edl"];
  let used = 0;
  for (let i = 0; used < budget && i < MAX_SIDECARS; i++) {
    const size = Math.min(rng.logUniform(SIDECAR_MIN, SIDECAR_MAX), Math.max(SIDECAR_MIN, budget - used));
    const format = rng.pick(formats);
    const dir = `shot${String((Math.floor(i / 100) + 1) * 10).padStart(3, "0")}`;
    const ext = format === "xml" ? "mhl" : format;
    out.push({
      path: `sidecars/${dir}/${clipName(i)}_${String(i).padStart(5, "0")}.${ext}`,
      kind: "sidecars",
      size,
      source: { type: "sidecar", format, seed: mix32(seed ^ mix32(0x51dec0de + i)) },
    });
    used += size;
  }
  return out;
}

const DAY_MS = 86_400_000;
/** 2024-03-05T00:00:00Z. */
const EPOCH_MS = Date.UTC(2024, 2, 5);

function planLogs(seed: number, budget: number, rng: Rng): DatasetEntry[] {
  if (budget <= 0) return [];
  const sizes = splitBudget(budget, Math.min(budget, 256 * KiB), Math.max(256 * KiB, Math.min(16 * MB, Math.floor(budget / 6))), rng);
  const styles: LogStyle[] = ["render", "render", "access", "jsonl"];
  return sizes.map((size, i) => {
    const style = styles[i % styles.length]!;
    const day = Math.floor(i / 4);
    const date = new Date(EPOCH_MS + day * DAY_MS).toISOString().slice(0, 10);
    const dir = style === "render" ? `render-node-${String((i % 24) + 1).padStart(2, "0")}` : style === "access" ? "gateway" : "ingest";
    const name = style === "render" ? `render.${date}.log` : style === "access" ? `access.${date}.${i}.log` : `ingest.${date}.${i}.jsonl`;
    return {
      path: `logs/${dir}/${name}`,
      kind: "logs" as const,
      size,
      source: { type: "log" as const, style, seed: mix32(seed ^ mix32(0x10600000 + i)), startMs: EPOCH_MS + day * DAY_MS + rng.below(3_600_000) },
    };
  });
}

// ----------------------------------------------------------------------- producing bytes

/** Default piece size of {@link entryPieces}. */
export const PIECE_BYTES = MiB;

/**
 * The bytes of `entry`, in order, as pieces of at most `pieceBytes` bytes. Each piece is a view of a
 * buffer that is reused for the next piece: consume (write, hash, copy) it before asking for more.
 */
export function* entryPieces(entry: DatasetEntry, pieceBytes = PIECE_BYTES): Generator<Uint8Array, void, undefined> {
  const src = entry.source;
  if (src.type === "binary") {
    const buf = new Uint8Array(pieceBytes);
    const reader = new StreamReader();
    let si = 0;
    let sOff = 0; // offset inside segment si
    let left = entry.size;
    while (left > 0) {
      const n = Math.min(left, pieceBytes);
      let filled = 0;
      while (filled < n) {
        const s = src.segments[si]!;
        const take = Math.min(n - filled, s.length - sOff);
        reader.read(s.a, s.b, s.offset + sOff, buf, filled, take);
        filled += take;
        sOff += take;
        if (sOff === s.length) {
          si++;
          sOff = 0;
        }
      }
      left -= n;
      yield buf.subarray(0, n);
    }
    return;
  }
  if (src.type === "sidecar") {
    const bytes = sidecarBytes(src.format, src.seed, entry.size);
    for (let off = 0; off < bytes.length; off += pieceBytes) yield bytes.subarray(off, Math.min(bytes.length, off + pieceBytes));
    return;
  }
  yield* logPieces(src.style, src.seed, src.startMs, entry.size, pieceBytes);
}

/** The whole content of `entry` in one fresh buffer (for tests and small files). */
export function entryBytes(entry: DatasetEntry): Uint8Array {
  const out = new Uint8Array(entry.size);
  let off = 0;
  for (const p of entryPieces(entry)) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Receives a file's pieces while it is written (e.g. a hash). */
export interface PieceSink {
  update(piece: Uint8Array): void;
  /** Called after the last piece; the result is stored as {@link WrittenFile.digest}. */
  end(): string;
}

export interface WrittenFile {
  path: string;
  kind: Kind;
  size: number;
  digest?: string;
}

export interface WriteResult {
  files: WrittenFile[];
  totalBytes: number;
  seconds: number;
}

/** Writes the plan's files under `dir` (created as needed); existing files are overwritten. */
export function writeDataset(dir: string, plan: DatasetPlan, sink?: (entry: DatasetEntry) => PieceSink): WriteResult {
  const t0 = process.hrtime.bigint();
  const files: WrittenFile[] = [];
  const made = new Set<string>();
  for (const entry of plan.entries) {
    const path = join(dir, ...entry.path.split("/"));
    const parent = dirname(path);
    if (!made.has(parent)) {
      mkdirSync(parent, { recursive: true });
      made.add(parent);
    }
    const s = sink?.(entry);
    const fd = openSync(path, "w");
    try {
      for (const piece of entryPieces(entry)) {
        let off = 0;
        while (off < piece.length) off += writeSync(fd, piece, off, piece.length - off);
        s?.update(piece);
      }
    } finally {
      closeSync(fd);
    }
    const wf: WrittenFile = { path: entry.path, kind: entry.kind, size: entry.size };
    if (s !== undefined) wf.digest = s.end();
    files.push(wf);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { files, totalBytes: plan.totalBytes, seconds };
}

// ---------------------------------------------------------------------------------- logs

const enc = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "latin1"));

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].map(enc);
const TASKS = ["beauty", "diffuse", "specular", "shadow", "depth", "motion", "crypto", "volume"].map(enc);
const PROJECTS = ["nightfall", "aurora", "ember"].map(enc);
const PRODUCTS = ["arnold", "nuke_r", "houdini_engine", "renderman"].map(enc);
const METHODS = ["GET", "GET", "GET", "PUT", "HEAD", "GET", "PUT", "DELETE"].map(enc);
const STATUSES = [200, 200, 200, 200, 200, 206, 200, 304, 404, 200, 200, 503];
const EXIT_CODES = [1, 137, 139, 255];
const AGENTS = [
  "aws-sdk-js/3.540.0 ua/2.0 os/linux lang/js md/nodejs#20.11.1",
  "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0 exe/x86_64",
  "rclone/v1.66.0",
  "Boto3/1.34.69 md/Botocore#1.34.69 Python/3.11.8",
].map(enc);
const BUCKETS = ["media", "renders", "dailies", "archive"].map(enc);
const SERVICES = ["ingest", "transcode", "proxy", "indexer"].map(enc);
const MSGS = ["chunk stored", "object committed", "pack sealed", "upload complete", "cache miss", "retry scheduled"].map(enc);

/** The slots a log template may use; a template compiles to (opcode, argument) pairs. */
const SLOT_NAMES = [
  "lit", "date", "time", "clf", "host", "job", "shot", "frame", "task", "proj", "product", "cores", "secs", "mb",
  "bytes", "pct", "small", "ms", "code", "ip", "method", "status", "agent", "bucket", "svc", "msg", "latency", "hex16",
] as const;
const OP: Record<string, number> = Object.fromEntries(SLOT_NAMES.map((n, i) => [n, i]));

/** One log file's generator state: clock, per-file vocabulary, output buffer. */
class LogWriter {
  readonly buf: Uint8Array;
  pos = 0;
  /** The clock: a day (ms since the epoch, a multiple of DAY_MS) and an int32 offset into it. */
  private day: number;
  private msOfDay: number;
  private y = 0;
  private mo = 0;
  private d = 0;
  private readonly hosts: Uint8Array[];
  private readonly jobs: number[];
  private readonly shots: Uint8Array[];
  private readonly frames: number[];
  private readonly ips: Uint8Array[];
  /** The job the last {job} slot picked; {shot} and {frame} describe it. */
  private job = 0;

  constructor(
    private readonly rng: Rng,
    startMs: number,
    capacity: number,
  ) {
    this.buf = new Uint8Array(capacity);
    this.day = Math.floor(startMs / DAY_MS) * DAY_MS;
    this.msOfDay = (startMs - this.day) | 0;
    this.setDay();
    const nHosts = rng.int(4, 12);
    this.hosts = Array.from({ length: nHosts }, () => enc(`render-node-${String(rng.int(1, 48)).padStart(2, "0")}`));
    this.jobs = Array.from({ length: 8 }, () => rng.int(1000, 9999));
    this.shots = Array.from({ length: 8 }, () => enc(`sh${String(rng.int(1, 60) * 10).padStart(3, "0")}`));
    this.frames = this.jobs.map(() => 1001 + rng.below(50));
    this.ips = Array.from({ length: 16 }, () => enc(`10.${rng.int(0, 3)}.${rng.int(0, 31)}.${rng.int(2, 250)}`));
  }

  /** Appends one line of `prog` (see {@link compileTemplate}). */
  line(prog: Int32Array, lits: readonly Uint8Array[]): void {
    const rng = this.rng;
    this.tick();
    for (let k = 0; k < prog.length; k += 2) {
      switch (prog[k]) {
        case 0: // literal
          this.bytes(lits[prog[k + 1]!]!);
          break;
        case 1: // date YYYY-MM-DD
          this.padded(this.y, 4);
          this.byte(45);
          this.padded(this.mo + 1, 2);
          this.byte(45);
          this.padded(this.d, 2);
          break;
        case 2: {
          // time HH:MM:SS.mmm
          const ms = this.msOfDay;
          this.hms(ms);
          this.byte(46);
          this.padded(ms % 1000, 3);
          break;
        }
        case 3: // common log format dd/Mon/yyyy:HH:MM:SS
          this.padded(this.d, 2);
          this.byte(47);
          this.bytes(MONTHS[this.mo]!);
          this.byte(47);
          this.padded(this.y, 4);
          this.byte(58);
          this.hms(this.msOfDay);
          break;
        case 4:
          this.bytes(this.hosts[rng.below(this.hosts.length)]!);
          break;
        case 5:
          this.job = rng.below(this.jobs.length);
          this.uint(this.jobs[this.job]!);
          break;
        case 6:
          this.bytes(this.shots[this.job]!);
          break;
        case 7:
          if (rng.below(3) === 0) this.frames[this.job]!++;
          this.uint(this.frames[this.job]!);
          break;
        case 8:
          this.bytes(TASKS[rng.below(TASKS.length)]!);
          break;
        case 9:
          this.bytes(PROJECTS[rng.below(PROJECTS.length)]!);
          break;
        case 10:
          this.bytes(PRODUCTS[rng.below(PRODUCTS.length)]!);
          break;
        case 11:
          this.uint(8 << rng.below(4));
          break;
        case 12:
          this.fixed(rng.below(30000), 100);
          break;
        case 13:
          this.uint(512 * (1 + rng.below(64)));
          break;
        case 14:
          this.uint(rng.below(8) === 0 ? rng.below(65536) : 1048576 * (1 + rng.below(8)));
          break;
        case 15:
          this.fixed(800 + rng.below(200), 10);
          break;
        case 16:
          this.uint(rng.below(64));
          break;
        case 17:
          this.uint(rng.below(rng.below(10) === 0 ? 5000 : 50));
          break;
        case 18:
          this.uint(EXIT_CODES[rng.below(EXIT_CODES.length)]!);
          break;
        case 19:
          this.bytes(this.ips[rng.below(this.ips.length)]!);
          break;
        case 20:
          this.bytes(METHODS[rng.below(METHODS.length)]!);
          break;
        case 21:
          this.uint(STATUSES[rng.below(STATUSES.length)]!);
          break;
        case 22:
          this.bytes(AGENTS[rng.below(AGENTS.length)]!);
          break;
        case 23:
          this.bytes(BUCKETS[rng.below(BUCKETS.length)]!);
          break;
        case 24:
          this.bytes(SERVICES[rng.below(SERVICES.length)]!);
          break;
        case 25:
          this.bytes(MSGS[rng.below(MSGS.length)]!);
          break;
        case 26: {
          // latency in seconds, skewed towards small values
          const x = rng.below(1415);
          this.fixed((x * x) >>> 10, 1000);
          break;
        }
        case 27:
          this.hex(rng.next());
          this.hex(rng.next());
          break;
      }
    }
  }

  /** Advances the clock and refreshes the calendar fields at day changes. */
  private tick(): void {
    const rng = this.rng;
    // Integer arithmetic only: a double here would make every digit a floating-point modulo.
    this.msOfDay = (this.msOfDay + rng.below(rng.below(8) === 0 ? 2000 : 120)) | 0;
    if (this.msOfDay >= DAY_MS) {
      this.msOfDay = (this.msOfDay - DAY_MS) | 0;
      this.day += DAY_MS;
      this.setDay();
    }
  }

  private setDay(): void {
    const dt = new Date(this.day);
    this.y = dt.getUTCFullYear();
    this.mo = dt.getUTCMonth();
    this.d = dt.getUTCDate();
  }

  private bytes(b: Uint8Array): void {
    const n = b.length;
    if (n > 16) {
      // memmove beats a byte loop beyond a few words.
      this.buf.set(b, this.pos);
      this.pos += n;
      return;
    }
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = b[i]!;
    this.pos = p;
  }

  private byte(c: number): void {
    this.buf[this.pos++] = c;
  }

  /** Non-negative integer below 2^31, decimal. */
  private uint(n: number): void {
    n |= 0;
    let digits = 1;
    for (let x = n; x >= 10; x = (x / 10) | 0) digits++;
    let p = this.pos + digits;
    this.pos = p;
    const buf = this.buf;
    do {
      buf[--p] = 48 + (n % 10);
      n = (n / 10) | 0;
    } while (n > 0);
  }

  /** Integer zero-padded to `width` digits. */
  private padded(n: number, width: number): void {
    n |= 0;
    let p = this.pos + width;
    this.pos = p;
    const buf = this.buf;
    for (let i = 0; i < width; i++) {
      buf[--p] = 48 + (n % 10);
      n = (n / 10) | 0;
    }
  }

  /** `v / scale` with log10(scale) decimals (scale 10, 100 or 1000). */
  private fixed(v: number, scale: number): void {
    this.uint((v / scale) | 0);
    this.byte(46);
    this.padded(v % scale, scale === 10 ? 1 : scale === 100 ? 2 : 3);
  }

  private hms(ms: number): void {
    this.padded((ms / 3_600_000) | 0, 2);
    this.byte(58);
    this.padded(((ms / 60_000) | 0) % 60, 2);
    this.byte(58);
    this.padded(((ms / 1000) | 0) % 60, 2);
  }

  /** A 32-bit word as 8 lowercase hex digits. */
  private hex(word: number): void {
    const buf = this.buf;
    for (let i = 28; i >= 0; i -= 4) {
      const d = (word >>> i) & 15;
      buf[this.pos++] = d < 10 ? 48 + d : 87 + d;
    }
  }
}

interface CompiledStyle {
  /** 256 entries: a line template is picked by the low byte of a PRNG word (weights). */
  table: Int32Array[];
  lits: Uint8Array[];
}

/** Compiles weighted templates ("literal {slot} literal ...") into a pick table. */
function compileStyle(weighted: [number, string][]): CompiledStyle {
  const lits: Uint8Array[] = [];
  const progs = weighted.map(([w, template]) => {
    const prog: number[] = [];
    const re = /\{(\w+)\}/g;
    let last = 0;
    const lit = (s: string): void => {
      lits.push(enc(s));
      prog.push(0, lits.length - 1);
    };
    for (let m = re.exec(template); m !== null; m = re.exec(template)) {
      if (m.index > last) lit(template.slice(last, m.index));
      const op = OP[m[1]!];
      if (op === undefined || op === 0) throw new Error(`unknown slot {${m[1]}}`);
      prog.push(op, 0);
      last = m.index + m[0].length;
    }
    if (last < template.length) lit(template.slice(last));
    return [w, Int32Array.from(prog)] as const;
  });
  const total = progs.reduce((s, [w]) => s + w, 0);
  const table: Int32Array[] = [];
  for (const [w, prog] of progs) for (let i = 0; i < Math.round((w / total) * 256); i++) table.push(prog);
  while (table.length < 256) table.push(progs[0]![1]);
  return { table: table.slice(0, 256), lits };
}

const RENDER = "{date} {time} ";
const PLATE = "/mnt/projects/{proj}/shots/{shot}/plates/{shot}_plate_v{small}.{frame}.exr";
const LOG_STYLES: Record<LogStyle, CompiledStyle> = {
  render: compileStyle([
    [20, `${RENDER}INFO  [{host}] scheduler: job {job} shot {shot} frame {frame} task {task} started on {cores} cores\n`],
    [20, `${RENDER}INFO  [{host}] worker: job {job} shot {shot} frame {frame} task {task} finished in {secs}s peak mem {mb} MB\n`],
    [14, `${RENDER}INFO  [{host}] io: reading ${PLATE} ({bytes} bytes)\n`],
    [14, `${RENDER}INFO  [{host}] io: writing /mnt/projects/{proj}/shots/{shot}/render/{task}/{shot}_{task}_v{small}.{frame}.exr\n`],
    [8, `${RENDER}DEBUG [{host}] cache: texture cache hit ratio {pct}% resident {mb} MB\n`],
    [6, `${RENDER}INFO  [{host}] license: checkout {product} ok (seats in use {small}/64)\n`],
    [4, `${RENDER}WARN  [{host}] io: retrying read of ${PLATE} after timeout ({ms} ms)\n`],
    [2, `${RENDER}ERROR [{host}] worker: job {job} task {task} frame {frame} failed: exit code {code}\n`],
  ]),
  access: compileStyle([
    [10, `{ip} - - [{clf} +0000] "{method} /{bucket}/{shot}/{task}/{shot}_{task}.{frame}.exr HTTP/1.1" {status} {bytes} "-" "{agent}" {latency}\n`],
    [3, `{ip} - - [{clf} +0000] "{method} /{bucket}/{shot}/edit/{shot}_cut_v{small}.mov HTTP/1.1" {status} {bytes} "-" "{agent}" {latency}\n`],
  ]),
  jsonl: compileStyle([
    [10, `{"ts":"{date}T{time}Z","level":"info","svc":"{svc}","msg":"{msg}","bucket":"{bucket}","key":"{shot}/{task}/{shot}_{task}.{frame}.exr","bytes":{bytes},"ms":{ms},"req":"{hex16}"}\n`],
    [2, `{"ts":"{date}T{time}Z","level":"debug","svc":"{svc}","msg":"{msg}","job":{job},"frame":{frame},"ms":{ms}}\n`],
    [1, `{"ts":"{date}T{time}Z","level":"warn","svc":"{svc}","msg":"slow request","bucket":"{bucket}","ms":{ms},"req":"{hex16}"}\n`],
  ]),
};

/** Longest line any template can produce (generous). */
const MAX_LINE = 1024;

function* logPieces(style: LogStyle, seed: number, startMs: number, size: number, pieceBytes: number): Generator<Uint8Array, void, undefined> {
  const rng = new Rng(seed, 0x106);
  const w = new LogWriter(rng, startMs, pieceBytes + MAX_LINE);
  const { table, lits } = LOG_STYLES[style];
  let left = size;
  while (left > 0) {
    const n = Math.min(left, pieceBytes);
    // Carry-over from the previous piece sits at the start of the buffer.
    while (w.pos < n) w.line(table[rng.next() & 255]!, lits);
    left -= n;
    if (left === 0) w.buf[n - 1] = 10; // end the file with a newline
    yield w.buf.subarray(0, n);
    // Move the carry-over (at most one line) to the front.
    w.buf.copyWithin(0, n, w.pos);
    w.pos -= n;
  }
}

// ------------------------------------------------------------------------------ sidecars

function timecode(frames: number): string {
  const f = frames % 24;
  const s = Math.floor(frames / 24) % 60;
  const m = Math.floor(frames / 1440) % 60;
  const h = Math.floor(frames / 86400) % 24;
  return [h, m, s, f].map((x) => String(x).padStart(2, "0")).join(":");
}

function isoDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Exactly `size` bytes: header, as many records as fit, padding (whitespace, valid in all three
 * formats), footer; a compact fallback when not even one record fits.
 */
function fit(size: number, header: string, footer: string, sep: string, record: () => string, fallback: string, padChar = " "): Uint8Array {
  let body = "";
  let n = 0;
  if (header.length + footer.length <= size) {
    for (;;) {
      const r = (n === 0 ? "" : sep) + record();
      if (header.length + body.length + r.length + footer.length > size) break;
      body += r;
      n++;
    }
  }
  let text: string;
  if (n === 0) text = fallback.length <= size ? fallback + padChar.repeat(size - fallback.length - 1) + "\n" : fallback.slice(0, size);
  else text = header + body + padChar.repeat(size - header.length - body.length - footer.length) + footer;
  if (text.length < size) text += " ".repeat(size - text.length);
  return enc(text.slice(0, size));
}

function sidecarBytes(format: SidecarFormat, seed: number, size: number): Uint8Array {
  const rng = new Rng(seed, 0x51de);
  const clip = `${rng.pick(REELS)}C${String(rng.int(1, 120)).padStart(3, "0")}_2403${String(rng.int(1, 28)).padStart(2, "0")}_R${rng.next().toString(36).slice(0, 4).toUpperCase()}`;
  const t0 = EPOCH_MS + rng.below(30 * DAY_MS);
  let tcFrames = rng.int(3600 * 24, 20 * 3600 * 24);
  if (format === "json") {
    const lens = rng.pick(["Signature Prime 47mm", "Cooke S4/i 32mm", "Zeiss Supreme 65mm", "Angenieux Optimo 24-290"]);
    const header =
      `{\n  "clip": "${clip}",\n  "camera": { "model": "${rng.pick(["ALEXA 35", "VENICE 2", "RED V-RAPTOR"])}", "serial": "${rng.int(10000, 99999)}", "firmware": "1.${rng.int(0, 9)}.${rng.int(0, 9)}" },\n` +
      `  "lens": "${lens}",\n  "fps": 24,\n  "resolution": [4608, 3164],\n  "recorded": "${isoDate(t0)}",\n  "timecodeIn": "${timecode(tcFrames)}",\n  "frames": [\n`;
    let frame = 1001;
    let focus = 1 + rng.float() * 5;
    const record = (): string => {
      focus = Math.max(0.3, focus + (rng.float() - 0.5) * 0.05);
      const r = `    { "frame": ${frame}, "tc": "${timecode(tcFrames)}", "focusM": ${focus.toFixed(3)}, "iris": "T${(2 + rng.below(4) * 0.4).toFixed(1)}", "iso": 800, "tiltDeg": ${((rng.float() - 0.5) * 4).toFixed(2)} }`;
      frame++;
      tcFrames++;
      return r;
    };
    return fit(size, header, "\n  ]\n}\n", ",\n", record, `{"clip":"${clip.slice(0, 12)}","fps":24}`);
  }
  if (format === "xml") {
    const host = `dit-cart-${String(rng.int(1, 9)).padStart(2, "0")}`;
    const header =
      `<?xml version="1.0" encoding="UTF-8"?>\n<hashlist version="1.1">\n  <creatorinfo>\n    <name>Data Wrangler</name>\n    <hostname>${host}</hostname>\n` +
      `    <tool>offload 4.${rng.int(0, 9)}</tool>\n    <startdate>${isoDate(t0)}</startdate>\n  </creatorinfo>\n`;
    let k = 0;
    const record = (): string => {
      k++;
      const t = isoDate(t0 + k * 1000);
      return (
        `  <hash>\n    <file>${clip}/${clip}.${String(k).padStart(7, "0")}.ari</file>\n    <size>${rng.int(20_000_000, 30_000_000)}</size>\n` +
        `    <lastmodificationdate>${t}</lastmodificationdate>\n    <xxhash64be>${rng.next().toString(16).padStart(8, "0")}${rng.next().toString(16).padStart(8, "0")}</xxhash64be>\n` +
        `    <hashdate>${t}</hashdate>\n  </hash>`
      );
    };
    return fit(size, header, "\n</hashlist>\n", "\n", record, `<?xml version="1.0"?><clip id="${clip.slice(0, 8)}"/>`);
  }
  const header = `TITLE: ${clip.slice(0, 8)}_CUT_V${rng.int(1, 30)}\nFCM: NON-DROP FRAME\n\n`;
  let event = 0;
  let recIn = 3600 * 24;
  const record = (): string => {
    event++;
    const len = rng.int(24, 24 * 8);
    const srcIn = rng.int(3600 * 24, 20 * 3600 * 24);
    const reel = `${rng.pick(REELS)}C${String(rng.int(1, 120)).padStart(3, "0")}`;
    const line =
      `${String(event).padStart(3, "0")}  ${reel} V     C        ${timecode(srcIn)} ${timecode(srcIn + len)} ${timecode(recIn)} ${timecode(recIn + len)}\n` +
      `* FROM CLIP NAME: ${reel}_2403${String(rng.int(1, 28)).padStart(2, "0")}.mov\n`;
    recIn += len;
    return line;
  };
  return fit(size, header, "", "\n", record, "TITLE: R1\nFCM: NON-DROP FRAME\n", "\n");
}

// ----------------------------------------------------------------------------------- CLI

function usage(): string {
  return "usage: node dist/bench/dataset.js --out DIR [--seed N] [--size MB] [--kind incompressible|compressible|all|KIND,...] [--list]";
}

function cli(argv: string[]): void {
  let out: string | undefined;
  let seed = 1;
  let sizeMB = 256;
  let kinds: Kind[] = [...PRESETS.all];
  let list = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    if (a === "--out") out = val();
    else if (a === "--seed") seed = Number(val());
    else if (a === "--size") sizeMB = Number(val());
    else if (a === "--kind" || a === "--kinds") kinds = parseKinds(val());
    else if (a === "--list") list = true;
    else if (a === "--help" || a === "-h") {
      console.log(usage());
      return;
    } else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  if (!Number.isInteger(seed) || seed < 0) throw new Error("--seed must be a non-negative integer");
  if (!Number.isFinite(sizeMB) || sizeMB <= 0) throw new Error("--size must be a positive number of MB");
  const plan = planDataset({ seed, sizeMB, kinds });
  if (list) for (const e of plan.entries) console.log(`${e.size}\t${e.kind}\t${e.path}${e.parent ? `\t<- ${e.parent}` : ""}`);
  if (out === undefined) {
    if (!list) throw new Error(`--out is required\n${usage()}`);
    return;
  }
  const res = writeDataset(resolvePath(out), plan);
  const perKind = kinds.map((k) => `${k}=${plan.filesByKind[k]} files/${(plan.bytesByKind[k] / MB).toFixed(1)} MB`).join(" ");
  console.log(
    `dataset: seed=${seed} ${(res.totalBytes / MB).toFixed(1)} MB in ${res.files.length} files (${perKind}) ` +
      `written to ${resolvePath(out)} in ${res.seconds.toFixed(2)} s (${(res.totalBytes / MB / res.seconds).toFixed(0)} MB/s)`,
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolvePath(process.argv[1])).href) {
  try {
    cli(process.argv.slice(2));
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 2;
  }
}
