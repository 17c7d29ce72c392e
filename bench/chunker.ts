/**
 * Chunker benchmark: FastCDC throughput on incompressible (seeded random) data, beside SHA-256
 * from node:crypto on the same bytes as the physical reference.
 *
 *   node dist/bench/chunker.js            # 256 MiB
 *   node dist/bench/chunker.js --quick    # 64 MiB
 *   node dist/bench/chunker.js --mib 512 --reps 5 --piece 65536
 *
 * Prints, per variant, the best of `reps` timed passes (after one untimed warm-up pass):
 *
 *   chunker fastcdc: stowage=1020 MB/s (sha256=1350 MB/s)
 *
 * The headline is the streaming Chunker fed the data in `--piece`-byte pushes (default 256 KiB, like
 * a file read stream) with default parameters (256 KiB / 1 MiB / 4 MiB) and a keyed gear table;
 * the detail lines show the boundary scan alone on the whole buffer (no copies) and smaller pushes.
 * MB = 10^6 bytes. Single thread.
 */
import { createCipheriv, createHash } from "node:crypto";
import { availableParallelism, loadavg } from "node:os";
import { Chunker, ChunkerParams, chunkBoundaries } from "../src/codec/chunker.js";

interface Config {
  bytes: number;
  reps: number;
  piece: number;
}

function parseArgs(argv: string[]): Config {
  let mib = 256;
  let reps = 5;
  let piece = 256 * 1024;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === "--quick") mib = 64;
    else if (a === "--mib") mib = next();
    else if (a === "--reps") reps = next();
    else if (a === "--piece") piece = next();
    else throw new Error(`unknown argument ${a}`);
  }
  return { bytes: Math.floor(mib * 1024 * 1024), reps, piece };
}

/** Deterministic incompressible bytes: the AES-256-CTR keystream of a key derived from `seed`. */
function seededBytes(seed: string, n: number): Uint8Array {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  const out = new Uint8Array(n);
  const block = 16 * 1024 * 1024;
  const zeros = new Uint8Array(block);
  for (let off = 0; off < n; off += block) {
    const len = Math.min(block, n - off);
    out.set(cipher.update(zeros.subarray(0, len)), off);
  }
  return out;
}

interface Measurement {
  /** Best wall-clock throughput, MB/s (10^6 bytes/s). */
  mbps: number;
  /** Best throughput by this process's CPU time (user + system), MB/s: what one core does when not preempted. */
  cpuMbps: number;
  result: number;
}

/** Best-of-`reps` throughput of `fn` over `bytes`, after one untimed warm-up call. */
function measure(bytes: number, reps: number, fn: () => number): Measurement {
  let result = fn();
  let bestWall = Infinity;
  let bestCpu = Infinity;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    result = fn();
    const ns = Number(process.hrtime.bigint() - t0);
    const cpu = process.cpuUsage(c0);
    bestWall = Math.min(bestWall, ns);
    bestCpu = Math.min(bestCpu, (cpu.user + cpu.system) * 1000);
  }
  return { mbps: (bytes * 1e3) / bestWall, cpuMbps: (bytes * 1e3) / bestCpu, result };
}

function rate(m: Measurement): string {
  return `${m.mbps.toFixed(0)} MB/s (cpu-time ${m.cpuMbps.toFixed(0)} MB/s)`;
}

function streamChunks(data: Uint8Array, piece: number, params: ChunkerParams): number {
  const chunker = new Chunker(params);
  let count = 0;
  for (let off = 0; off < data.length; off += piece) {
    count += chunker.push(data.subarray(off, Math.min(off + piece, data.length))).length;
  }
  count += chunker.finish().length;
  return count;
}

function main(): void {
  const cfg = parseArgs(process.argv.slice(2));
  const data = seededBytes("stowage bench chunker", cfg.bytes);
  const params = new ChunkerParams({ key: createHash("sha256").update("bench chunker key").digest() });

  const scan = measure(cfg.bytes, cfg.reps, () => chunkBoundaries(data, params).length);
  const stream = measure(cfg.bytes, cfg.reps, () => streamChunks(data, cfg.piece, params));
  const stream64k = measure(cfg.bytes, cfg.reps, () => streamChunks(data, 64 * 1024, params));
  const sha = measure(cfg.bytes, cfg.reps, () => {
    const h = createHash("sha256");
    const step = 1024 * 1024;
    for (let off = 0; off < data.length; off += step) h.update(data.subarray(off, off + step));
    return h.digest().length;
  });

  const mib = (cfg.bytes / 1048576).toFixed(0);
  console.log(`chunker fastcdc: stowage=${stream.mbps.toFixed(0)} MB/s (sha256=${sha.mbps.toFixed(0)} MB/s)`);
  console.log(
    `  data ${mib} MiB random, params ${params.minSize}/${params.avgSize}/${params.maxSize} nc=${params.normalization} keyed, ` +
      `best of ${cfg.reps}, node ${process.version}, load average ${loadavg()[0].toFixed(2)} on ${availableParallelism()} cpus`,
  );
  console.log(`  chunker, ${cfg.piece}-byte pushes: ${rate(stream)}, ${stream.result} chunks`);
  console.log(`  chunker, 65536-byte pushes: ${rate(stream64k)}`);
  console.log(
    `  boundary scan, whole buffer: ${rate(scan)}, ${scan.result} chunks, mean ${(cfg.bytes / scan.result / 1024).toFixed(0)} KiB`,
  );
  console.log(`  sha256, 1 MiB updates: ${rate(sha)}`);
}

main();
