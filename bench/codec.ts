/**
 * Codec micro-benchmark: the per-chunk primitives of the data path on 1 MiB chunks, single thread.
 *
 *   npx tsc -p . && node dist/bench/codec.js [--rounds N]
 *
 * Prints MB/s (10^6 bytes per second of plaintext) as "best / median" over N rounds of 8 chunks;
 * candidates are interleaved round by round so background load hits them alike. Also times the
 * default scrypt cost (one key-file open) and the compression skip decision.
 */
import { createCipheriv, createHmac, randomBytes } from "node:crypto";
import { loadavg } from "node:os";
import { Blake3Hasher } from "@napi-rs/blake-hash";
import binding from "zstd-napi/binding.js";
import { AeadCipher } from "../src/codec/aead.js";
import { ChunkIdHasher } from "../src/codec/chunk-id.js";
import { compressChunk } from "../src/codec/compress.js";
import { DEFAULT_SCRYPT, createKeyFile, openKeyFile, RepositoryKeys } from "../src/codec/keys.js";

const MiB = 1024 * 1024;
const argRounds = process.argv.indexOf("--rounds");
const ROUNDS = argRounds > 0 ? Number(process.argv[argRounds + 1]) : 40;

function textChunk(n: number, seed: number): Buffer {
  const words = ["frame", "render", "shot", "exr", "INFO", "WARN", "camera", "A001_C002", "timecode", "ok"];
  let x = seed >>> 0;
  const out: string[] = [];
  let len = 0;
  while (len < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const w = `${words[x % words.length]} ${(x >>> 16) % 1000}${x % 7 === 0 ? "\n" : " "}`;
    out.push(w);
    len += w.length;
  }
  return Buffer.from(out.join("")).subarray(0, n);
}

function run(groups: Record<string, { input: Uint8Array[]; fn: (b: Uint8Array) => unknown }>): void {
  const names = Object.keys(groups);
  const rates = new Map<string, number[]>(names.map((n) => [n, []]));
  for (const n of names) for (const b of groups[n]!.input) groups[n]!.fn(b); // warm up
  for (let r = 0; r < ROUNDS; r++) {
    for (const n of names) {
      const { input, fn } = groups[n]!;
      let bytes = 0;
      const t0 = process.hrtime.bigint();
      for (const b of input) {
        fn(b);
        bytes += b.length;
      }
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      rates.get(n)!.push(bytes / s / 1e6);
    }
  }
  for (const n of names) {
    const a = rates.get(n)!.sort((x, y) => y - x);
    console.log(`  ${n.padEnd(44)} best ${a[0]!.toFixed(0).padStart(5)}  median ${a[a.length >> 1]!.toFixed(0).padStart(5)} MB/s`);
  }
}

async function main(): Promise<void> {
  console.log(`codec bench: ${ROUNDS} rounds x 8 MiB, load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const random = Array.from({ length: 8 }, () => randomBytes(MiB));
  const text = Array.from({ length: 8 }, (_, i) => textChunk(MiB, i + 1));
  const keys = RepositoryKeys.generate();
  const key = Buffer.from(keys.subkey("chunk-id"));

  console.log("chunk ids (keyed, 32 bytes):");
  const ids = new ChunkIdHasher(keys);
  run({
    "HMAC-SHA256 (node:crypto)": { input: random, fn: (b) => createHmac("sha256", key).update(b).digest() },
    "BLAKE3 keyed (@napi-rs/blake-hash)": { input: random, fn: (b) => Blake3Hasher.newKeyed(key).update(b as Buffer).digestBuffer() },
    "chunkId (ChunkIdHasher.id)": { input: random, fn: (b) => ids.id(b) },
  });

  console.log("AES-256-GCM:");
  const aead = new AeadCipher(keys.subkey("data-encryption"));
  const aad = randomBytes(32);
  const oneCall = (b: Uint8Array) => {
    const c = createCipheriv("aes-256-gcm", key, randomBytes(12));
    const ct = c.update(b);
    c.final();
    return Buffer.concat([Buffer.alloc(13), ct, c.getAuthTag()]);
  };
  const sealed = random.map((b) => aead.seal(b, aad));
  run({
    "raw: one 1 MiB update + concat": { input: random, fn: oneCall },
    "seal (256 KiB updates into the output)": { input: random, fn: (b) => aead.seal(b, aad) },
    "open (one update)": { input: sealed, fn: (b) => aead.open(b, aad) },
  });

  console.log("zstd (compressChunk, level 3; MB/s of input):");
  const z = text.map((b) => compressChunk(b));
  const full = Buffer.allocUnsafe(binding.compressBound(MiB));
  const cctx = new binding.CCtx();
  run({
    "compressChunk random (probe -> stored)": { input: random, fn: (b) => compressChunk(b) },
    "full zstd -3 attempt on random": { input: random, fn: (b) => cctx.compress(full, b, 3) },
    "full zstd -9 attempt on random": { input: random, fn: (b) => cctx.compress(full, b, 9) },
    "compressChunk text": { input: text, fn: (b) => compressChunk(b) },
  });
  const ratio = z.reduce((s, c) => s + c.bytes.length, 0) / (8 * MiB);
  console.log(`  text compresses to ${(ratio * 100).toFixed(1)}% of its size`);

  const { file } = await createKeyFile("bench passphrase");
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await openKeyFile(file, "bench passphrase");
    times.push(performance.now() - t0);
  }
  console.log(
    `scrypt N=2^${DEFAULT_SCRYPT.log2N} r=${DEFAULT_SCRYPT.r} p=${DEFAULT_SCRYPT.p}: openKeyFile ${times.map((t) => t.toFixed(0)).join(", ")} ms`,
  );
}

await main();
