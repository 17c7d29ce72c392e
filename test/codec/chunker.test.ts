import { test } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, createHash, hkdfSync } from "node:crypto";
import {
  CHUNKER_ALGORITHM,
  Chunker,
  ChunkerParams,
  type ChunkerOptions,
  DEFAULT_AVG_SIZE,
  DEFAULT_MAX_SIZE,
  DEFAULT_MIN_SIZE,
  PUBLIC_GEAR_KEY,
  chunkBoundaries,
  chunkStream,
  deriveGearTable,
  setWordScanForTesting,
} from "../../src/codec/chunker.js";
import { isStowageError } from "../../src/errors.js";
import { mulberry32 as prng } from "../../src/util/random.js";

const KiB = 1024;
const MiB = 1024 * 1024;
/** Small parameters: many chunks per MiB, so boundary logic is exercised densely. */
const SMALL: ChunkerOptions = { minSize: 2 * KiB, avgSize: 8 * KiB, maxSize: 64 * KiB };

/** Deterministic incompressible bytes: the AES-256-CTR keystream of a key derived from `seed`. */
function seededBytes(seed: string, n: number): Uint8Array {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return new Uint8Array(cipher.update(new Uint8Array(n)));
}

function keyOf(seed: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(seed).digest());
}

/** Piece sizes log-uniform in [1, maxPiece], covering `total`. */
function randomSplit(total: number, maxPiece: number, rand: () => number): number[] {
  const sizes: number[] = [];
  for (let left = total; left > 0; ) {
    const s = Math.min(left, Math.max(1, Math.floor(Math.exp(rand() * Math.log(maxPiece)))));
    sizes.push(s);
    left -= s;
  }
  return sizes;
}

function sha(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function sizesOf(ends: number[]): number[] {
  return ends.map((e, k) => e - (k === 0 ? 0 : (ends[k - 1] ?? 0)));
}

function chunkHashes(data: Uint8Array, ends: number[]): string[] {
  return ends.map((e, k) => sha(data.subarray(k === 0 ? 0 : ends[k - 1], e)));
}

/**
 * The algorithm as the file comment states it, written independently of the implementation:
 * byte by byte, unsigned arithmetic, the table derived here from the documented HKDF call, the
 * cut condition expressed as "the top n bits of the hash are zero".
 */
function referenceBoundaries(data: Uint8Array, opts: ChunkerOptions): number[] {
  const min = opts.minSize ?? DEFAULT_MIN_SIZE;
  const avg = opts.avgSize ?? DEFAULT_AVG_SIZE;
  const max = opts.maxSize ?? DEFAULT_MAX_SIZE;
  const nc = opts.normalization ?? 2;
  const okm = Buffer.from(hkdfSync("sha256", opts.key ?? new Uint8Array(32), new Uint8Array(0), "stowage/chunker/gear/v1", 1024));
  const gear: number[] = [];
  for (let i = 0; i < 256; i++) gear.push(okm.readUInt32LE(4 * i));
  const bits = Math.log2(avg);
  const shiftS = 32 - (bits + nc);
  const shiftL = 32 - (bits - nc);
  const ends: number[] = [];
  let start = 0;
  while (start < data.length) {
    let end = Math.min(start + max, data.length);
    let h = 0;
    for (let i = start + min; i < end; i++) {
      h = (h * 2 + (gear[data[i] ?? 0] ?? 0)) >>> 0;
      if (h >>> (i - start < avg ? shiftS : shiftL) === 0) {
        end = i + 1;
        break;
      }
    }
    ends.push(end);
    start = end;
  }
  return ends;
}

/** Pushes `data` in the given piece sizes; returns the chunks with offsets checked to be contiguous. */
function pushAll(chunker: Chunker, data: Uint8Array, pieces: number[], asBuffer = false): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  let expectOffset = 0;
  const take = (chunks: { offset: number; data: Uint8Array }[]): void => {
    for (const c of chunks) {
      assert.equal(c.offset, expectOffset);
      expectOffset += c.data.length;
      out.push(c.data);
    }
  };
  for (const p of pieces) {
    const piece = data.subarray(off, off + p);
    take(chunker.push(asBuffer ? Buffer.from(piece) : piece));
    assert.ok(chunker.buffered < chunker.params.maxSize, "the partial chunk stays below maxSize");
    off += p;
  }
  take(chunker.finish());
  return out;
}

function endsOf(chunks: Uint8Array[]): number[] {
  const ends: number[] = [];
  let pos = 0;
  for (const c of chunks) ends.push((pos += c.length));
  return ends;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

test("parameters: defaults, description, validation", () => {
  const p = new ChunkerParams();
  assert.deepEqual(p.describe(), {
    algorithm: CHUNKER_ALGORITHM,
    minSize: 256 * KiB,
    avgSize: MiB,
    maxSize: 4 * MiB,
    normalization: 2,
    keyed: false,
  });
  assert.equal(p.maskS, (0xffffffff << 10) | 0, "22 top bits below the average");
  assert.equal(p.maskL, (0xffffffff << 14) | 0, "18 top bits above it");
  assert.equal(new ChunkerParams({ key: keyOf("k") }).keyed, true);
  assert.equal(new ChunkerParams({ minSize: 1000, avgSize: 4096, maxSize: 10000 }).maxSize, 10000, "min/max need not be powers of two");
  const bad: ChunkerOptions[] = [
    { avgSize: 3 * MiB },
    { minSize: 2 * MiB },
    { maxSize: 512 * KiB },
    { minSize: 32, avgSize: 256, maxSize: 1024 },
    { avgSize: 128, minSize: 64, maxSize: 1024 },
    { maxSize: 2 * 1024 * MiB },
    { minSize: 1.5 * KiB + 0.5 },
    { normalization: 4 },
    { normalization: -1 },
    { key: new Uint8Array(15) },
  ];
  for (const opts of bad) {
    assert.throws(
      () => new ChunkerParams(opts),
      (e: unknown) => isStowageError(e, "STOWAGE_INVALID_ARGUMENT"),
      JSON.stringify(opts),
    );
  }
});

test("gear table: HKDF-SHA256 derivation; no key = the public table of a 32-zero-byte key", () => {
  const key = keyOf("gear");
  const okm = Buffer.from(hkdfSync("sha256", key, new Uint8Array(0), "stowage/chunker/gear/v1", 1024));
  const gear = deriveGearTable(key);
  for (let i = 0; i < 256; i++) assert.equal(gear[i], okm.readInt32LE(4 * i));
  assert.deepEqual(new ChunkerParams().gear, deriveGearTable(PUBLIC_GEAR_KEY));
  assert.deepEqual(new ChunkerParams({ key: new Uint8Array(32) }).gear, new ChunkerParams().gear);
  assert.notDeepEqual(deriveGearTable(keyOf("other")), gear);
});

test("boundaries match an independent reference implementation (both scan loops, all alignments)", () => {
  const data = seededBytes("reference", 4 * MiB + 123);
  const configs: [ChunkerOptions, number][] = [
    [{ ...SMALL, normalization: 0 }, MiB],
    [{ ...SMALL, normalization: 1 }, MiB],
    [{ ...SMALL, key: keyOf("ref") }, MiB],
    [{ ...SMALL, normalization: 3 }, MiB],
    [{ minSize: 64, avgSize: 256, maxSize: 1000 }, MiB / 4],
    [{ minSize: 300 * KiB, avgSize: MiB, maxSize: 1536 * KiB }, 4 * MiB],
  ];
  for (const [opts, size] of configs) {
    for (const align of [0, 1, 2, 3]) {
      const view = data.subarray(align, align + size + 77);
      const expected = referenceBoundaries(view, opts);
      assert.deepEqual(chunkBoundaries(view, opts), expected, `word scan, ${JSON.stringify(opts)} align ${align}`);
      const was = setWordScanForTesting(false);
      try {
        assert.deepEqual(chunkBoundaries(view, opts), expected, `byte scan, ${JSON.stringify(opts)} align ${align}`);
      } finally {
        setWordScanForTesting(was);
      }
    }
  }
});

test("pinned boundaries (changing them breaks dedup against existing repositories)", () => {
  const data = seededBytes("stowage chunker golden", 8 * MiB);
  const pin = (ends: number[]): string => `${ends.length}:${sha(new Uint8Array(new Float64Array(ends).buffer)).slice(0, 16)}`;
  assert.deepEqual(chunkBoundaries(data), [1183020, 2323764, 3636447, 4945428, 6132888, 7461307, 8388608]);
  assert.equal(pin(chunkBoundaries(data, SMALL)), "891:0da801208c3c47ee");
  assert.equal(pin(chunkBoundaries(data, { ...SMALL, key: keyOf("golden key") })), "889:0810f798399ed1b9");
});

test("chunks lie within [minSize, maxSize] except the last, and reassemble to the input", () => {
  for (const [name, opts, size] of [
    ["defaults", {}, 32 * MiB + 5],
    ["small", SMALL, 8 * MiB + 17],
    ["min = avg = max", { minSize: 4096, avgSize: 4096, maxSize: 4096 }, MiB + 1],
  ] as const) {
    const p = new ChunkerParams(opts);
    const data = seededBytes(`bounds ${name}`, size);
    const chunks = pushAll(new Chunker(p), data, randomSplit(data.length, 3 * MiB, prng(7)));
    const sizes = chunks.map((c) => c.length);
    for (const s of sizes.slice(0, -1)) assert.ok(s >= p.minSize && s <= p.maxSize, `${name}: chunk of ${s}`);
    assert.ok((sizes.at(-1) ?? 0) > 0 && (sizes.at(-1) ?? 0) <= p.maxSize);
    assert.ok(Buffer.from(concat(chunks)).equals(data), `${name}: reassembly`);
  }
  // Content that never satisfies a mask: every chunk is cut at maxSize.
  const zeros = new Uint8Array(16 * MiB);
  for (const s of sizesOf(chunkBoundaries(zeros))) assert.ok(s >= DEFAULT_MIN_SIZE && s <= DEFAULT_MAX_SIZE);
});

test("identical boundaries however the input is split into pushes (1 byte to 3 MiB pieces)", async () => {
  const data = seededBytes("resplit", 12 * MiB + 99);
  for (const opts of [{}, SMALL, { ...SMALL, key: keyOf("resplit") }]) {
    const params = new ChunkerParams(opts);
    const expected = chunkBoundaries(data, params);
    const rand = prng(42);
    for (let trial = 0; trial < 4; trial++) {
      const pieces = randomSplit(data.length, 3 * MiB, rand);
      const chunks = pushAll(new Chunker(params), data, pieces, trial % 2 === 1);
      assert.deepEqual(endsOf(chunks), expected, `trial ${trial}`);
      assert.ok(Buffer.from(concat(chunks)).equals(data));
    }
    // A stretch in single bytes, then the rest in one piece; and pieces straddling every phase.
    const ones = [...new Array<number>(Math.min(300 * KiB, data.length)).fill(1)];
    const rest = data.length - ones.length;
    assert.deepEqual(endsOf(pushAll(new Chunker(params), data, [...ones, rest])), expected, "1-byte pushes");
    const odd = randomSplit(data.length, 97, rand);
    assert.deepEqual(endsOf(pushAll(new Chunker(params), data, odd)), expected, "tiny pushes");
    // chunkStream over an async source of random pieces.
    const pieces = randomSplit(data.length, 3 * MiB, rand);
    async function* source(): AsyncGenerator<Uint8Array> {
      let off = 0;
      for (const p of pieces) {
        yield Buffer.from(data.subarray(off, off + p));
        off += p;
      }
    }
    const streamed: Uint8Array[] = [];
    for await (const c of chunkStream(source(), params)) streamed.push(c);
    assert.deepEqual(endsOf(streamed), expected, "chunkStream");
    assert.ok(Buffer.from(concat(streamed)).equals(data));
  }
});

test("views and copies: chunks inside one push are views unless copy is set; spanning chunks are fresh", () => {
  const data = seededBytes("views", 2 * MiB);
  const ends = chunkBoundaries(data, SMALL);
  assert.ok(ends.length > 50);
  const views = new Chunker(SMALL).push(data);
  assert.ok(views.length >= ends.length - 1);
  for (const c of views) {
    assert.equal(c.data.buffer, data.buffer, "a view of the input");
    assert.equal(c.owned, false, "a view is not the consumer's to take");
  }
  const copies = new Chunker({ ...SMALL, copy: true }).push(data);
  for (const c of copies) {
    assert.notEqual(c.data.buffer, data.buffer);
    assert.equal(c.data.byteLength, c.data.buffer.byteLength, "an exact-size buffer");
    assert.equal(c.owned, true);
  }
  assert.deepEqual(
    copies.map((c) => c.offset),
    views.map((c) => c.offset),
  );
  // A chunk completed from two pushes is a fresh exact-size buffer; reusing the input afterwards is safe.
  const chunker = new Chunker(SMALL);
  const scratch = new Uint8Array(1500);
  const got: Uint8Array[] = [];
  for (let off = 0; off < data.length; off += scratch.length) {
    const piece = data.subarray(off, off + scratch.length);
    scratch.set(piece);
    for (const c of chunker.push(scratch.subarray(0, piece.length))) {
      // Owned exactly when it is not a view of the input: then it is a whole, exact-size buffer.
      assert.equal(c.owned, c.data.buffer !== scratch.buffer);
      if (c.owned) assert.ok(c.data.byteOffset === 0 && c.data.byteLength === c.data.buffer.byteLength, "exact size");
      got.push(c.data.slice());
    }
    scratch.fill(0xee); // the caller reuses its buffer
  }
  for (const c of chunker.finish()) {
    assert.equal(c.owned, true);
    got.push(c.data);
  }
  assert.deepEqual(endsOf(got), ends);
  assert.ok(Buffer.from(concat(got)).equals(data));
});

test("shift resistance: an insert or delete near the start of 32 MiB changes only a chunk or two", () => {
  const data = seededBytes("shift", 32 * MiB);
  for (const key of [undefined, keyOf("shift")]) {
    const params = new ChunkerParams({ key });
    const base = chunkHashes(data, chunkBoundaries(data, params));
    const known = new Set(base);
    const edits: [string, Uint8Array][] = [
      ["insert 5 bytes at 1000", concat([data.subarray(0, 1000), new Uint8Array([1, 2, 3, 4, 5]), data.subarray(1000)])],
      ["delete 3 bytes at 700 KiB", concat([data.subarray(0, 700 * KiB), data.subarray(700 * KiB + 3)])],
      ["insert 1 byte at 0", concat([new Uint8Array([9]), data])],
      ["overwrite 16 bytes at 3 MiB", (() => {
        const d = data.slice();
        d.fill(0x5a, 3 * MiB, 3 * MiB + 16);
        return d;
      })()],
    ];
    for (const [what, edited] of edits) {
      const hashes = chunkHashes(edited, chunkBoundaries(edited, params));
      const fresh = hashes.filter((h) => !known.has(h)).length;
      assert.ok(base.length > 20, `${base.length} chunks`);
      assert.ok(fresh <= 2, `${what}: ${fresh} of ${hashes.length} chunks are new`);
    }
  }
});

test("different keys give different boundaries", () => {
  const data = seededBytes("keys", 8 * MiB);
  const a = chunkBoundaries(data, { ...SMALL, key: keyOf("repository A") });
  const b = chunkBoundaries(data, { ...SMALL, key: keyOf("repository B") });
  const pub = chunkBoundaries(data, SMALL);
  for (const [x, y] of [
    [a, b],
    [a, pub],
    [b, pub],
  ] as const) {
    const ys = new Set(y);
    const shared = x.filter((e) => ys.has(e)).length - 1; // the final boundary (data.length) is always shared
    assert.ok(shared < x.length * 0.05, `${shared} of ${x.length} boundaries shared`);
  }
  // And at the default (media) sizes.
  const da = chunkBoundaries(data, { key: keyOf("repository A") });
  const db = chunkBoundaries(data, { key: keyOf("repository B") });
  assert.notDeepEqual(da, db);
});

test("average chunk size over 64 MiB of random data is within ±25% of avgSize", () => {
  const data = seededBytes("average", 64 * MiB);
  for (const opts of [{}, SMALL, { minSize: 16 * KiB, avgSize: 64 * KiB, maxSize: 256 * KiB, key: keyOf("avg") }]) {
    const p = new ChunkerParams(opts);
    const ends = chunkBoundaries(data, p);
    const mean = data.length / ends.length;
    assert.ok(Math.abs(mean / p.avgSize - 1) <= 0.25, `mean ${mean.toFixed(0)} for avgSize ${p.avgSize} (${ends.length} chunks)`);
  }
});

test("empty and tiny inputs; objects up to minSize are one chunk; a chunker is reusable after finish", async () => {
  const p = new ChunkerParams(SMALL);
  assert.deepEqual(chunkBoundaries(new Uint8Array(0), p), []);
  const c = new Chunker(p);
  assert.deepEqual(c.push(new Uint8Array(0)), []);
  assert.deepEqual(c.finish(), [], "an empty stream has no chunks");
  assert.throws(() => c.push("text" as unknown as Uint8Array), (e: unknown) => isStowageError(e, "STOWAGE_INVALID_ARGUMENT"));
  const none: Uint8Array[] = [];
  for await (const x of chunkStream([], p)) none.push(x);
  for await (const x of chunkStream([new Uint8Array(0), new Uint8Array(0)], p)) none.push(x);
  assert.equal(none.length, 0);

  const data = seededBytes("tiny", 3 * p.minSize);
  for (const n of [1, 2, 63, 64, 65, p.minSize - 1, p.minSize, p.minSize + 1]) {
    const obj = data.subarray(0, n);
    // Nothing is hashed before minSize, so the earliest cut leaves minSize + 1 bytes: all one chunk.
    assert.deepEqual(chunkBoundaries(obj, p), [n]);
    assert.deepEqual(c.push(obj), []);
    const [only, ...more] = c.finish();
    assert.equal(more.length, 0);
    assert.equal(only?.offset, 0);
    assert.ok(only !== undefined && Buffer.from(only.data).equals(obj), `object of ${n} bytes`);
  }
  // Reuse: the same chunker chunks a second stream identically, offsets from 0.
  const big = seededBytes("reuse", 3 * MiB);
  const first = pushAll(c, big, randomSplit(big.length, 256 * KiB, prng(1)));
  const second = pushAll(c, big, randomSplit(big.length, 256 * KiB, prng(2)));
  assert.deepEqual(endsOf(first), chunkBoundaries(big, p));
  assert.deepEqual(endsOf(second), endsOf(first));
});
