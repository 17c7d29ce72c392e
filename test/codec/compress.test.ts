import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import binding from "zstd-napi/binding.js";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import {
  METHOD_STORED,
  METHOD_ZSTD,
  PROBE_THRESHOLD,
  compressChunk,
  decompressChunk,
} from "../../src/codec/compress.js";

const MiB = 1024 * 1024;

function throwsWith(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

/** Deterministic log-like text. */
function text(n: number, seed = 1): Buffer {
  const words = ["frame", "render", "shot", "0042", "exr", "INFO", "WARN", "camera", "A001_C002", "timecode", "01:02:03:04", "ok"];
  let x = seed >>> 0;
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const w = `${words[x % words.length]}${x % 7 === 0 ? "\n" : " "}${x % 5 === 0 ? (x >>> 20).toString() + " " : ""}`;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join("")).subarray(0, n);
}

function roundTrip(data: Uint8Array): number {
  const c = compressChunk(data);
  const back = decompressChunk(c.method, c.bytes, data.length);
  assert.ok(Buffer.from(back).equals(Buffer.from(data)), `round trip of ${data.length} bytes`);
  return c.method;
}

test("round trips: empty, tiny, around the probe threshold, text, random, mixed", () => {
  assert.equal(roundTrip(new Uint8Array(0)), METHOD_STORED);
  assert.equal(roundTrip(Buffer.from("{}")), METHOD_STORED);
  assert.equal(roundTrip(Buffer.from('{"shot":"A001","frame":42,"lens":"35mm","notes":"' + "x".repeat(60) + '"}')), METHOD_ZSTD);
  for (const n of [PROBE_THRESHOLD - 1, PROBE_THRESHOLD, PROBE_THRESHOLD + 1, 4 * MiB]) {
    assert.equal(roundTrip(text(n)), METHOD_ZSTD);
    assert.equal(roundTrip(randomBytes(n)), METHOD_STORED);
  }
  // Media with a compressible header and tail: probe slices at the start and end see it.
  const mixed = Buffer.concat([text(300 * 1024), randomBytes(400 * 1024), text(300 * 1024, 9)]);
  assert.equal(roundTrip(mixed), METHOD_ZSTD);
});

test("stored chunks are returned as-is; zstd chunks are exact-size frames with a checksum", () => {
  const r = randomBytes(MiB);
  const c = compressChunk(r);
  assert.equal(c.method, METHOD_STORED);
  assert.equal(c.bytes, r);
  const t = text(MiB);
  const z = compressChunk(t, 3);
  assert.equal(z.method, METHOD_ZSTD);
  assert.ok(z.bytes.length < t.length / 3, `text compressed to ${z.bytes.length}`);
  assert.equal(z.bytes.byteLength, z.bytes.buffer.byteLength);
  assert.equal(binding.getFrameContentSize(z.bytes), t.length);
  assert.equal(Buffer.from(z.bytes).readUInt32LE(0), 0xfd2fb528); // zstd frame magic
  assert.equal(z.bytes[4]! & 0x04, 0x04); // Content_Checksum_flag
});

test("the minimum-savings threshold decides: ~5% savings is compressed at 3%, stored at 10%", () => {
  // 4 KiB blocks: 3900 random bytes then 196 zero bytes; zstd saves a little under 5%.
  const blocks: Buffer[] = [];
  for (let i = 0; i < 256; i++) blocks.push(randomBytes(3900), Buffer.alloc(196));
  const data = Buffer.concat(blocks);
  const a = compressChunk(data, { minSavings: 0.03 });
  assert.equal(a.method, METHOD_ZSTD);
  assert.ok(a.bytes.length <= data.length * 0.97);
  assert.equal(compressChunk(data, { minSavings: 0.1 }).method, METHOD_STORED);
  assert.ok(Buffer.from(decompressChunk(a.method, a.bytes, data.length)).equals(data));
});

test("incompressible data costs a probe, not a zstd pass (timings reported, not asserted)", (t) => {
  const random = randomBytes(4 * MiB);
  const logs = text(4 * MiB);
  const time = (fn: () => unknown, reps = 5): number => {
    fn();
    let best = Infinity;
    for (let i = 0; i < reps; i++) {
      const t0 = process.hrtime.bigint();
      fn();
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return best;
  };
  const full = Buffer.allocUnsafe(binding.compressBound(random.length));
  const cctx = new binding.CCtx();
  const msRandom = time(() => compressChunk(random));
  const msRandomFull = time(() => cctx.compress(full, random, 3));
  const msText = time(() => compressChunk(logs));
  const mb = (ms: number) => ((4 * MiB) / (ms / 1000) / 1e6).toFixed(0);
  t.diagnostic(`compressChunk 4 MiB random: ${msRandom.toFixed(2)} ms (${mb(msRandom)} MB/s, stored raw)`);
  t.diagnostic(`full zstd -3 attempt on the same 4 MiB random: ${msRandomFull.toFixed(2)} ms (${mb(msRandomFull)} MB/s)`);
  t.diagnostic(`compressChunk 4 MiB text: ${msText.toFixed(2)} ms (${mb(msText)} MB/s, zstd)`);
});

test("corrupt, truncated or mislabelled zstd input is STOWAGE_INTEGRITY, never wrong bytes", () => {
  const data = text(200 * 1024);
  const { method, bytes } = compressChunk(data);
  assert.equal(method, METHOD_ZSTD);
  const step = Math.max(1, Math.floor(bytes.length / 300));
  for (let i = 0; i < bytes.length; i += i < 32 ? 1 : step) {
    for (const mask of [0x01, 0x80]) {
      const bad = Buffer.from(bytes);
      bad[i]! ^= mask;
      try {
        const out = decompressChunk(METHOD_ZSTD, bad, data.length);
        assert.ok(Buffer.from(out).equals(data), `flip at ${i} returned wrong bytes`);
      } catch (err) {
        assert.ok(isStowageError(err, "STOWAGE_INTEGRITY"), `flip at ${i}: ${String(err)}`);
      }
    }
  }
  throwsWith(() => decompressChunk(METHOD_ZSTD, bytes.subarray(0, bytes.length - 1), data.length), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, bytes.subarray(0, 3), data.length), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, Buffer.concat([bytes, Buffer.from([0])]), data.length), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, bytes, data.length - 1), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, bytes, data.length + 1), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, Buffer.from("definitely not zstd"), 19), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_ZSTD, new Uint8Array(0), 0), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(METHOD_STORED, data, data.length + 1), "STOWAGE_INTEGRITY");
  throwsWith(() => decompressChunk(7, bytes, data.length), "STOWAGE_FORMAT_VERSION");
});

test("argument checks", () => {
  throwsWith(() => compressChunk(new Uint8Array(10), 99), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => compressChunk(new Uint8Array(10), { minSavings: 0.9 }), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => compressChunk("text" as unknown as Uint8Array), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => decompressChunk(METHOD_STORED, new Uint8Array(1), -1), "STOWAGE_INVALID_ARGUMENT");
});
