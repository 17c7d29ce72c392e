/**
 * The repository commands: init, put, get, ls, rm, cp, snapshot, versioning, durability, gc, fsck,
 * rebuild-index, stats. Output that is data has a `--json` form; exit status is 0 on success and
 * non-zero on any failure (main.ts maps errors to status 1 with the reason on stderr).
 */
import { closeSync, createReadStream, createWriteStream, openSync, readSync, readdirSync, statSync } from "node:fs";
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative, sep, basename, resolve as resolvePath } from "node:path";
import { randomBytes } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import type { Command } from "commander";
import { StowageError, isStowageError } from "../errors.js";
import { keysFromEnvironment } from "../codec/keys.js";
import { initRepository, type InitOptions, type Repository } from "../store/repository.js";
import type { S3Settings } from "../store/locations.js";
import { parseEventsUrl, type TiersConfig } from "../store/tiering.js";
import type { TierManagerStats } from "../tier/stats.js";
import { readTierTotals, type TierTotals } from "../store/tier-totals.js";
import { collectGarbage } from "../store/gc.js";
import { fsck } from "../store/fsck.js";
import { rebuildIndex } from "../store/rebuild.js";
import { recoverRepository } from "../store/recover.js";
import { computeStats, S3_STANDARD_PRICES, type StoreStats } from "../store/stats.js";
import type { ObjectStore, PutOptions } from "../store/store.js";
import type { VersionHeader } from "../meta/types.js";
import { dataDir, openRepo, parseBucketPath, passphrase, withRepo } from "./context.js";
import { Progress, formatBytes } from "./progress.js";

interface DataOpt {
  data?: string;
}

function out(line: string): void {
  process.stdout.write(line + "\n");
}

function json(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** A byte count: an integer, optionally with a unit (`500GB`, `2TiB`, `1.5T`). */
export function sizeOption(value: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()];
  const n = m === null || unit === undefined ? Number.NaN : Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${name} must be a size such as 500GB or 2TiB, got ${JSON.stringify(value)}`);
  return n;
}

function intOption(value: string, name: string, min = 0): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

const CONTENT_TYPES: Record<string, string> = {
  ".json": "application/json",
  ".xml": "application/xml",
  ".txt": "text/plain",
  ".log": "text/plain",
  ".edl": "text/plain",
  ".html": "text/html",
  ".csv": "text/csv",
  ".mp4": "video/mp4",
  ".mov": "video/quicktime",
  ".mxf": "application/mxf",
  ".exr": "image/x-exr",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".wav": "audio/wav",
};

function contentTypeFor(path: string): string {
  const dot = path.lastIndexOf(".");
  return (dot >= 0 ? CONTENT_TYPES[path.slice(dot).toLowerCase()] : undefined) ?? "application/octet-stream";
}

/**
 * Every regular file under `dir`, as paths relative to it with `/` separators, sorted. Synchronous:
 * the upload starts only once the walk is done, and a directory entry or a stat from the page
 * cache costs a few microseconds this way against tens through the thread pool.
 */
function walk(dir: string): Array<{ rel: string; size: number }> {
  const files: Array<{ rel: string; size: number }> = [];
  function visit(d: string): void {
    const entries = readdirSync(d, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) visit(p);
      else if (e.isFile()) files.push({ rel: relative(dir, p).split(sep).join("/"), size: statSync(p).size });
    }
  }
  visit(dir);
  return files;
}

/** Files below this size are uploaded in batches (see `putObjects`). */
const BATCH_FILE_LIMIT = 8 * 1024 * 1024;
const BATCH_FILES = 1000;
const BATCH_BYTES = 64 * 1024 * 1024;

/** Groups files into batches of at most BATCH_FILES files and about BATCH_BYTES bytes. */
function* batches<T extends { size: number }>(files: readonly T[]): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const f of files) {
    if (batch.length > 0 && (batch.length >= BATCH_FILES || bytes + f.size > BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(f);
    bytes += f.size;
  }
  if (batch.length > 0) yield batch;
}

/** Runs `fn` over `items` with at most `jobs` at once; the first failure stops new work and is thrown. */
async function parallel<T>(items: readonly T[], jobs: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, worker));
  if (failure !== undefined) throw failure;
}

/**
 * Writes the stream to `path` through a temporary file renamed into place only on success. A body
 * of at most SYNC_READ_LIMIT bytes (`size`, when known) is gathered first and written in one
 * call: restoring thousands of sidecar files, a write stream and `pipeline` per file (the stream
 * machinery, and the AbortError `pipeline` builds each time it finishes) cost more than the file's
 * own bytes. (Not synchronous calls, unlike reads: creating a file took up to 1.4 ms of kernel
 * time on this machine's busy disk, which the thread pool overlaps and this thread would not.) `madeDirs` (one set per command) remembers the
 * directories made, so each is made once.
 */
async function writeAtomically(
  path: string,
  body: AsyncIterable<Buffer>,
  opts: { progress?: Progress; size?: number; madeDirs?: Set<string> } = {},
): Promise<void> {
  const { progress, size, madeDirs } = opts;
  const dir = dirname(path);
  if (madeDirs?.has(dir) !== true) {
    await mkdir(dir, { recursive: true });
    madeDirs?.add(dir);
  }
  const tmp = join(dir, `.${basename(path)}.stowage-${randomBytes(4).toString("hex")}`);
  if (size !== undefined && size <= SYNC_READ_LIMIT) {
    const parts: Buffer[] = [];
    for await (const b of body) parts.push(b);
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    try {
      await writeFile(tmp, data, { flag: "wx" });
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    progress?.add(data.length);
    return;
  }
  try {
    const counted = async function* (): AsyncGenerator<Buffer> {
      for await (const b of body) {
        progress?.add(b.length);
        yield b;
      }
    };
    await pipeline(Readable.from(counted()), createWriteStream(tmp));
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Files up to this size are read synchronously, whole (see `counting`). */
const SYNC_READ_LIMIT = 1024 * 1024;

/**
 * The file's bytes, counted into `progress`. A small file is read synchronously in one call: for
 * the thousands of sidecar files of a media tree, a read stream's open, reads and close through
 * the thread pool cost about 80 µs of this thread per file, a synchronous open-read-close 12 µs
 * (measured on page-cached files of a few KB). Larger files stream with buffers sized to them.
 */
function counting(path: string, size: number, progress: Progress): AsyncIterable<Buffer> | Iterable<Buffer> {
  return size <= SYNC_READ_LIMIT ? readSmall(path, size, progress) : readLarge(path, size, progress);
}

function* readSmall(path: string, size: number, progress: Progress): Generator<Buffer> {
  const fd = openSync(path, "r");
  try {
    // One byte more than the walk saw, so a file that grew is noticed (and read on, to its end).
    let buf = Buffer.allocUnsafe(size + 1);
    let filled = 0;
    for (;;) {
      const n = readSync(fd, buf, filled, buf.length - filled, null);
      if (n === 0) break;
      filled += n;
      if (filled === buf.length) {
        progress.add(filled);
        yield buf;
        buf = Buffer.allocUnsafe(SYNC_READ_LIMIT);
        filled = 0;
      }
    }
    if (filled > 0) {
      progress.add(filled);
      yield buf.subarray(0, filled);
    }
  } finally {
    closeSync(fd);
  }
}

async function* readLarge(path: string, size: number, progress: Progress): AsyncGenerator<Buffer> {
  // Read buffers sized to the file: a 1 MiB buffer per 200-byte sidecar file was most of the cost
  // (allocation and GC) of uploading thousands of small files.
  const highWaterMark = Math.min(1024 * 1024, Math.max(16 * 1024, size + 1));
  for await (const b of createReadStream(path, { highWaterMark }) as AsyncIterable<Buffer>) {
    progress.add(b.length);
    yield b;
  }
}

function versionJson(v: VersionHeader): Record<string, unknown> {
  return {
    key: v.key,
    size: v.size,
    etag: v.etag,
    lastModified: new Date(v.lastModified).toISOString(),
    contentType: v.contentType,
    versionId: v.versionId,
    ...(v.deleteMarker ? { deleteMarker: true } : {}),
    ...(Object.keys(v.userMetadata).length > 0 ? { userMetadata: v.userMetadata } : {}),
  };
}

async function listAll(store: ObjectStore, bucket: string, prefix: string, delimiter: string): Promise<{ objects: VersionHeader[]; prefixes: string[] }> {
  const objects: VersionHeader[] = [];
  const prefixes: string[] = [];
  let token: string | undefined;
  do {
    const page = await store.listObjects(bucket, { prefix, delimiter, ...(token === undefined ? {} : { continuationToken: token }) });
    objects.push(...page.objects);
    prefixes.push(...page.commonPrefixes);
    token = page.isTruncated ? page.nextContinuationToken : undefined;
  } while (token !== undefined);
  return { objects, prefixes };
}

function statsText(s: StoreStats): string {
  const rows: Array<[string, string]> = [
    ["logical bytes", `${formatBytes(s.logicalBytes)} (${s.logicalBytes})`],
    ["stored bytes", `${formatBytes(s.storedBytes)} (${s.storedBytes})`],
    ["  of which journal", `${formatBytes(s.journalBytes)} (${s.journalBytes})`],
    ["dedup ratio", s.dedupRatio.toFixed(2)],
    ["compression ratio", s.compressionRatio.toFixed(2)],
    ["buckets", String(s.buckets)],
    ["objects", `${s.objects} (${s.versions} versions)`],
    ["chunks", `${s.chunks} (${s.unreferencedChunks} unreferenced)`],
    ["packs", `${s.packs}, mean ${formatBytes(s.meanPackSize)}${s.retiredPacks > 0 ? ` (+${s.retiredPacks} retired)` : ""}`],
    ["bucket PUTs", `${s.backendPuts} (plain one-object-per-key upload: ${s.plainPuts})`],
    ["monthly cost", `$${s.monthlyCost.toFixed(4)} (plain: $${s.plainMonthlyCost.toFixed(4)})`],
    ["awaiting upload", `${s.packsAwaitingUpload} write-back packs, ${formatBytes(s.bytesAwaitingUpload)}`],
    ["outbox", `${s.outboxEvents} events not yet in the event log (relayed by \`stowage serve\`)`],
  ];
  return rows.map(([k, v]) => `${k.padEnd(19)}${v}`).join("\n");
}

interface InitTierFlags {
  bucket?: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3PathStyle?: boolean;
  s3StorageClass?: string;
  localTier?: string;
  localCapacity?: string;
  secondary?: string;
  events?: string;
}

/** The tier settings of `init`'s flags (the bucket also from STOWAGE_BUCKET). */
function tierSettings(opts: InitTierFlags): Pick<InitOptions, "bucket" | "s3" | "tiers" | "events"> {
  const out: Pick<InitOptions, "bucket" | "s3" | "tiers" | "events"> = {};
  const bucket = opts.bucket ?? (process.env.STOWAGE_BUCKET || undefined);
  if (bucket !== undefined) out.bucket = bucket;
  const s3: S3Settings = {};
  if (opts.s3Endpoint !== undefined) s3.endpoint = opts.s3Endpoint;
  if (opts.s3Region !== undefined) s3.region = opts.s3Region;
  if (opts.s3PathStyle === true) s3.forcePathStyle = true;
  if (opts.s3StorageClass !== undefined) s3.storageClass = opts.s3StorageClass;
  if (Object.keys(s3).length > 0) out.s3 = s3;
  if ((opts.localTier === undefined) !== (opts.localCapacity === undefined)) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "--local-tier and --local-capacity go together");
  }
  const tiers: TiersConfig = {};
  if (opts.localTier !== undefined && opts.localCapacity !== undefined) {
    tiers.local = { path: resolvePath(opts.localTier), capacityBytes: sizeOption(opts.localCapacity, "--local-capacity") };
  }
  if (opts.secondary !== undefined) tiers.secondary = { bucket: opts.secondary, ...(out.s3 === undefined ? {} : { s3: out.s3 }) };
  if (Object.keys(tiers).length > 0) out.tiers = tiers;
  if (opts.events !== undefined) out.events = parseEventsUrl(opts.events);
  return out;
}

function tierStatsText(t: TierManagerStats, totals: TierTotals): string {
  const rows: Array<[string, string]> = [];
  const usage = (x: { bytes: number | undefined; packs: number | undefined }): string =>
    x.bytes === undefined || x.packs === undefined ? "not scanned (--scan)" : `${formatBytes(x.bytes)} in ${x.packs} blobs`;
  rows.push(["cloud tier", usage(t.cloud)]);
  if (t.local !== undefined) {
    rows.push(["local tier", `${formatBytes(t.local.bytes)} in ${t.local.packs} blobs, capacity ${formatBytes(t.local.capacityBytes)} (purge from ${formatBytes(t.local.highWatermarkBytes)} down to ${formatBytes(t.local.lowWatermarkBytes)})`]);
  }
  if (t.secondary !== undefined) rows.push(["secondary tier", usage(t.secondary)]);
  for (const [group, lag] of Object.entries(t.lag)) rows.push([`${group} backlog`, lag === undefined ? "unknown (event log unavailable)" : `${lag} events`]);
  const since = totals.updated.startsWith("1970") ? "" : ` (gateway totals as of ${totals.updated})`;
  for (const [tier, r] of Object.entries(totals.requests)) {
    if (r === undefined) continue;
    rows.push([`${tier} requests`, `${r.puts} PUT, ${r.gets} GET, ${r.heads} HEAD, ${r.lists} LIST, ${r.deletes} DELETE; ${formatBytes(r.bytesWritten)} written, ${formatBytes(r.bytesRead)} read${tier === "local" ? "" : " (egress)"}${since}`]);
  }
  const c = totals.counters;
  if (Object.keys(c).length > 0) {
    rows.push(["tier work", `${c.hydrations ?? 0} hydrations, ${c.uploads ?? 0} uploads, ${c.secondaryCopies ?? 0} secondary copies, ${c.purges ?? 0} purges (${formatBytes(c.purgedBytes ?? 0)})`]);
  }
  return rows.map(([k, v]) => `${k.padEnd(19)}${v}`).join("\n");
}

export function registerRepositoryCommands(program: Command): void {
  program
    .command("init")
    .description("create a repository in the data directory (key sealed with STOWAGE_PASSPHRASE, or STOWAGE_MASTER_KEY)")
    .option("--data <dir>", "data directory (default: $STOWAGE_DATA, else ./stowage-data)")
    .option("--pack-size <bytes>", "target pack size in bytes (default 16 MiB)")
    .option("--chunk-min <bytes>", "smallest chunk (default 256 KiB)")
    .option("--chunk-avg <bytes>", "average chunk, a power of two (default 1 MiB)")
    .option("--chunk-max <bytes>", "largest chunk (default 4 MiB)")
    .option("--kdf-cost <log2N>", "scrypt cost of the key file, log2 of N (default 16)")
    .option("--bucket <url>", "the cloud tier: file:///PATH, a directory, or s3://BUCKET/PREFIX (default: DATA/bucket; env STOWAGE_BUCKET)")
    .option("--s3-endpoint <url>", "S3-compatible service URL (default: AWS)")
    .option("--s3-region <region>", "S3 region")
    .option("--s3-path-style", "path-style S3 requests (most non-AWS services)")
    .option("--s3-storage-class <class>", "storage class of the packs written (e.g. STANDARD_IA)")
    .option("--local-tier <dir>", "a local tier: on-premise copies of the packs, read first")
    .option("--local-capacity <size>", "bytes the local tier may hold (e.g. 500GB); purged between 90% and 75%")
    .option("--secondary <url>", "a secondary tier that receives a copy of every pack (file:// or s3://)")
    .option("--events <url>", "event log: embedded (default) or kafka://HOST:PORT[,HOST:PORT]/TOPIC")
    .option("--json", "print the configuration as JSON")
    .action(async (opts: DataOpt & InitTierFlags & { packSize?: string; chunkMin?: string; chunkAvg?: string; chunkMax?: string; kdfCost?: string; json?: boolean }) => {
      const dir = dataDir(opts.data);
      const keys = keysFromEnvironment();
      const pass = await passphrase({ confirm: true });
      if (pass === undefined && keys === undefined) {
        throw new StowageError("STOWAGE_NO_KEY", "init needs STOWAGE_PASSPHRASE (or a terminal to prompt on) or STOWAGE_MASTER_KEY");
      }
      const chunker: { minSize?: number; avgSize?: number; maxSize?: number } = {};
      if (opts.chunkMin !== undefined) chunker.minSize = intOption(opts.chunkMin, "--chunk-min", 64);
      if (opts.chunkAvg !== undefined) chunker.avgSize = intOption(opts.chunkAvg, "--chunk-avg", 64);
      if (opts.chunkMax !== undefined) chunker.maxSize = intOption(opts.chunkMax, "--chunk-max", 64);
      const config = await initRepository(dir, {
        ...(pass === undefined ? {} : { passphrase: pass }),
        ...(keys === undefined ? {} : { keys }),
        chunker,
        ...(opts.packSize === undefined ? {} : { packTargetSize: intOption(opts.packSize, "--pack-size", 4096) }),
        ...(opts.kdfCost === undefined ? {} : { keyFile: { scrypt: { log2N: intOption(opts.kdfCost, "--kdf-cost", 1), r: 8, p: 1 } } }),
        ...tierSettings(opts),
      });
      if (opts.json === true) json({ dir, ...config });
      else out(`initialized Stowage repository ${config.repositoryId} in ${dir} (key id ${config.keyId})`);
    });

  program
    .command("put")
    .description("upload a file (or, recursively, a directory; or - for stdin) to BUCKET/KEY (or BUCKET/PREFIX/)")
    .argument("<local>", "file, directory, or - for standard input")
    .argument("<target>", "BUCKET/KEY, or BUCKET/PREFIX/ for a directory")
    .option("--data <dir>", "data directory")
    .option("--jobs <n>", "small files (up to 1 MiB) uploaded at once; larger ones at most two at a time", "8")
    .option("--content-type <type>", "content type (default: from the file extension)")
    .option("--commit-delay <ms>", "ms a committing upload waits for others to share its pack", "5")
    .option("--json", "print what was stored as JSON")
    .action(async (local: string, target: string, opts: DataOpt & { jobs: string; contentType?: string; commitDelay: string; json?: boolean }) => {
      const { bucket, key } = parseBucketPath(target);
      const jobs = intOption(opts.jobs, "--jobs", 1);
      const results: Array<{ key: string; size: number; etag: string; versionId: string }> = [];
      await withRepo(
        opts.data,
        async (repo) => {
          const store = repo.store;
          await store.ensureBucket(bucket);
          if (local === "-") {
            if (key === "" || key.endsWith("/")) throw new StowageError("STOWAGE_INVALID_NAME", "stdin needs a full BUCKET/KEY target");
            const r = await store.putObject(bucket, key, process.stdin as AsyncIterable<Buffer>, { contentType: opts.contentType ?? contentTypeFor(key) });
            results.push(r);
            return;
          }
          const st = await stat(local);
          let files: Array<{ path: string; key: string; size: number }>;
          if (st.isDirectory()) {
            const prefix = key === "" || key.endsWith("/") ? key : key + "/";
            files = walk(local).map((f) => ({ path: join(local, f.rel), key: prefix + f.rel, size: f.size }));
          } else {
            const k = key === "" || key.endsWith("/") ? key + basename(local) : key;
            files = [{ path: local, key: k, size: st.size }];
          }
          const total = files.reduce((n, f) => n + f.size, 0);
          const progress = new Progress("put", total);
          const options = (f: { path: string; size: number }): PutOptions => ({ contentType: opts.contentType ?? contentTypeFor(f.path), size: f.size });
          // Small files go in batches: shared packs, one flush and one metadata commit per batch.
          // Tried and not kept: the small files' batches alongside the large files (this thread
          // busy with the small ones' reads and metadata while the worker compresses the large
          // ones), no faster in six alternating runs on the ingest bench's compressible set; two
          // batches at once, ~0.3 s less on 4,000 sidecar files but ~40 MB more peak RSS.
          // Tiny files (read whole) go `jobs` at a time; files of megabytes two at a time, like the
          // large ones: each holds read, chunk and encoding buffers, and two keep both cores busy.
          const tiny = files.filter((f) => f.size <= SYNC_READ_LIMIT);
          const medium = files.filter((f) => f.size > SYNC_READ_LIMIT && f.size < BATCH_FILE_LIMIT);
          const large = files.filter((f) => f.size >= BATCH_FILE_LIMIT);
          for (const [group, concurrency] of [
            [tiny, jobs],
            [medium, Math.min(jobs, 2)],
          ] as const) {
            for (const batch of batches(group)) {
              const items = batch.map((f) => ({ key: f.key, source: () => counting(f.path, f.size, progress), options: options(f) }));
              results.push(...(await store.putObjects(bucket, items, { concurrency })));
            }
          }
          // Two large files at a time keep both cores busy; more only adds buffers (peak RSS).
          await parallel(large, Math.min(jobs, 2), async (f) => {
            results.push(await store.putObject(bucket, f.key, counting(f.path, f.size, progress), options(f)));
          });
          progress.finish();
        },
        { commitDelayMs: intOption(opts.commitDelay, "--commit-delay") },
      );
      results.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      if (opts.json === true) json(results);
      else {
        const bytes = results.reduce((n, r) => n + r.size, 0);
        out(`stored ${results.length} object${results.length === 1 ? "" : "s"}, ${formatBytes(bytes)} in ${bucket}`);
      }
    });

  program
    .command("get")
    .description("download BUCKET/KEY to a file (- for stdout), or BUCKET/PREFIX/ into a directory")
    .argument("<source>", "BUCKET/KEY or BUCKET/PREFIX/")
    .argument("<local>", "file, - for standard output, or directory for a prefix")
    .option("--data <dir>", "data directory")
    .option("--version-id <id>", "a specific version")
    .option("--range <start-end>", "only bytes start..end (inclusive)")
    .option("--jobs <n>", "files downloaded at once", "4")
    .action(async (source: string, local: string, opts: DataOpt & { versionId?: string; range?: string; jobs: string }) => {
      const { bucket, key } = parseBucketPath(source);
      await withRepo(opts.data, async (repo) => {
        const store = repo.store;
        if (key === "" || key.endsWith("/")) {
          const { objects } = await listAll(store, bucket, key, "");
          const total = objects.reduce((n, o) => n + o.size, 0);
          const progress = new Progress("get", total);
          const madeDirs = new Set<string>();
          await parallel(objects, intOption(opts.jobs, "--jobs", 1), async (o) => {
            const rel = o.key.slice(key.length);
            if (rel.split("/").some((s) => s === ".." || s === "." || s === "")) {
              throw new StowageError("STOWAGE_INVALID_NAME", `key ${JSON.stringify(o.key)} cannot be written as a file under ${local}`);
            }
            const r = await store.getObject(bucket, o.key, { versionId: o.versionId });
            await writeAtomically(join(local, ...rel.split("/")), r.body, { progress, size: r.span.end - r.span.start, madeDirs });
          });
          progress.finish();
          return;
        }
        let range: { start: number; end: number } | undefined;
        if (opts.range !== undefined) {
          const m = /^(\d+)-(\d+)$/.exec(opts.range);
          if (m === null) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "--range must be START-END");
          range = { start: Number(m[1]), end: Number(m[2]) };
        }
        const r = await store.getObject(bucket, key, { ...(opts.versionId === undefined ? {} : { versionId: opts.versionId }), ...(range === undefined ? {} : { range }) });
        if (local === "-") {
          await pipeline(Readable.from(r.body), process.stdout);
          return;
        }
        let path = local;
        if (local.endsWith("/") || local.endsWith(sep)) {
          // A trailing separator names a directory, created if missing.
          path = join(local, basename(key));
        } else {
          try {
            if ((await stat(local)).isDirectory()) path = join(local, basename(key));
          } catch {
            // a new file
          }
        }
        const progress = new Progress("get", r.span.end - r.span.start);
        await writeAtomically(path, r.body, { progress });
        progress.finish();
      });
    });

  program
    .command("ls")
    .description("list buckets, or the objects of BUCKET[/PREFIX]")
    .argument("[path]", "BUCKET or BUCKET/PREFIX")
    .option("--data <dir>", "data directory")
    .option("-r, --recursive", "list every key under the prefix (no grouping by /)")
    .option("--versions", "list every version and delete marker")
    .option("--json", "print JSON")
    .action(async (path: string | undefined, opts: DataOpt & { recursive?: boolean; versions?: boolean; json?: boolean }) => {
      await withRepo(opts.data, async (repo) => {
        const store = repo.store;
        if (path === undefined || path === "") {
          const buckets = await store.listBuckets();
          if (opts.json === true) json(buckets.map((b) => ({ name: b.name, created: new Date(b.created).toISOString(), versioning: b.versioning, durability: b.durability })));
          else for (const b of buckets) out(`${new Date(b.created).toISOString()}  ${b.name}`);
          return;
        }
        const { bucket, key: prefix } = parseBucketPath(path);
        if (opts.versions === true) {
          const all: VersionHeader[] = [];
          let keyMarker: string | undefined;
          let versionIdMarker: string | undefined;
          do {
            const page = await store.listObjectVersions(bucket, { prefix, ...(keyMarker === undefined ? {} : { keyMarker }), ...(versionIdMarker === undefined ? {} : { versionIdMarker }) });
            all.push(...page.versions);
            keyMarker = page.isTruncated ? page.nextKeyMarker : undefined;
            versionIdMarker = page.nextVersionIdMarker;
          } while (keyMarker !== undefined);
          if (opts.json === true) json(all.map(versionJson));
          else for (const v of all) out(`${new Date(v.lastModified).toISOString()}  ${String(v.size).padStart(12)}  ${v.versionId.padEnd(28)}  ${v.deleteMarker ? "(delete marker) " : ""}${v.key}`);
          return;
        }
        const { objects, prefixes } = await listAll(store, bucket, prefix, opts.recursive === true ? "" : "/");
        if (opts.json === true) {
          json(opts.recursive === true ? objects.map(versionJson) : { objects: objects.map(versionJson), prefixes });
          return;
        }
        for (const p of prefixes) out(`${"".padEnd(24)}  ${"PRE".padStart(12)}  ${p}`);
        for (const o of objects) out(`${new Date(o.lastModified).toISOString()}  ${String(o.size).padStart(12)}  ${o.key}`);
      });
    });

  program
    .command("rm")
    .description("delete BUCKET/KEY (or, with --recursive, everything under BUCKET/PREFIX/)")
    .argument("<path>", "BUCKET/KEY")
    .option("--data <dir>", "data directory")
    .option("-r, --recursive", "delete every object under the prefix")
    .option("--version-id <id>", "delete this version for good (versioned buckets)")
    .action(async (path: string, opts: DataOpt & { recursive?: boolean; versionId?: string }) => {
      const { bucket, key } = parseBucketPath(path);
      await withRepo(opts.data, async (repo) => {
        const store = repo.store;
        if (opts.recursive === true) {
          const { objects } = await listAll(store, bucket, key, "");
          for (const o of objects) await store.deleteObject(bucket, o.key);
          out(`deleted ${objects.length} object${objects.length === 1 ? "" : "s"}`);
          return;
        }
        if (key === "") throw new StowageError("STOWAGE_INVALID_NAME", "rm needs BUCKET/KEY (or --recursive)");
        if (opts.versionId === undefined) await store.headObject(bucket, key);
        const r = await store.deleteObject(bucket, key, opts.versionId === undefined ? {} : { versionId: opts.versionId });
        out(r.deleteMarker ? `delete marker ${r.versionId ?? ""} placed on ${bucket}/${key}` : `deleted ${bucket}/${key}`);
      });
    });

  program
    .command("cp")
    .description("copy BUCKET/KEY to BUCKET/KEY without reading or writing data")
    .argument("<source>", "BUCKET/KEY")
    .argument("<target>", "BUCKET/KEY")
    .option("--data <dir>", "data directory")
    .option("--version-id <id>", "copy this version of the source")
    .action(async (source: string, target: string, opts: DataOpt & { versionId?: string }) => {
      const s = parseBucketPath(source);
      const t = parseBucketPath(target);
      await withRepo(opts.data, async (repo) => {
        await repo.store.ensureBucket(t.bucket);
        const r = await repo.store.copyObject(s.bucket, s.key, t.bucket, t.key, opts.versionId === undefined ? {} : { sourceVersionId: opts.versionId });
        out(`copied ${s.bucket}/${s.key} to ${t.bucket}/${t.key} (${formatBytes(r.size)}, no data copied)`);
      });
    });

  program
    .command("snapshot")
    .description("present the current objects of BUCKET[/PREFIX/] at another BUCKET[/PREFIX/], at no storage cost")
    .argument("<source>", "BUCKET or BUCKET/PREFIX/")
    .argument("<target>", "BUCKET or BUCKET/PREFIX/")
    .option("--data <dir>", "data directory")
    .option("--json", "print the result as JSON")
    .action(async (source: string, target: string, opts: DataOpt & { json?: boolean }) => {
      const s = parseBucketPath(source);
      const t = parseBucketPath(target);
      await withRepo(opts.data, async (repo) => {
        const r = await repo.store.snapshot(s.bucket, s.key, t.bucket, t.key);
        if (opts.json === true) json(r);
        else out(`snapshot: ${r.objects} objects (${formatBytes(r.bytes)}) now also at ${target}`);
      });
    });

  program
    .command("versioning")
    .description("turn versioning of a bucket on or off (creating the bucket if needed)")
    .argument("<bucket>", "bucket")
    .argument("<state>", "on | off")
    .option("--data <dir>", "data directory")
    .action(async (bucket: string, state: string, opts: DataOpt) => {
      if (state !== "on" && state !== "off") throw new StowageError("STOWAGE_INVALID_ARGUMENT", "state must be on or off");
      await withRepo(opts.data, async (repo) => {
        await repo.store.ensureBucket(bucket);
        const b = await repo.store.setVersioning(bucket, state === "on" ? "enabled" : "suspended");
        out(`${bucket}: versioning ${b.versioning}`);
      });
    });

  program
    .command("durability")
    .description("show or set when writes to a bucket are acknowledged: cloud (durable in the cloud tier) or local (write-back: after a local fsync, uploaded later; needs a local tier)")
    .argument("<bucket>", "bucket")
    .argument("[policy]", "cloud | local")
    .option("--data <dir>", "data directory")
    .option("--json", "print { bucket, durability } as JSON")
    .action(async (bucket: string, policy: string | undefined, opts: DataOpt & { json?: boolean }) => {
      if (policy !== undefined && policy !== "cloud" && policy !== "local") throw new StowageError("STOWAGE_INVALID_ARGUMENT", "policy must be cloud or local");
      await withRepo(opts.data, async (repo) => {
        let b;
        if (policy === undefined) b = await repo.store.headBucket(bucket);
        else if ((await repo.meta.getBucket(bucket)) === undefined) b = await repo.store.createBucket(bucket, { durability: policy });
        else b = await repo.store.setBucketDurability(bucket, policy);
        if (opts.json === true) json({ bucket: b.name, durability: b.durability });
        else out(`${bucket}: durability ${b.durability}${b.durability === "local" ? " (write-back: acknowledged after a local fsync, uploaded later)" : ""}`);
      });
    });

  program
    .command("gc")
    .description("reclaim unreferenced chunks, recycle mostly-dead packs and merge small ones")
    .option("--data <dir>", "data directory")
    .option("--dry-run", "report what would be reclaimed; change nothing")
    .option("--grace <seconds>", "keep retired packs this long for readers in flight", "900")
    .option("--min-live <fraction>", "recycle packs whose live fraction is below this", "0.5")
    .option("--max-outbox <events>", "keep at most this many unrelayed events in the outbox (the oldest are dropped)", "100000")
    .option("--json", "print the report as JSON")
    .action(async (opts: DataOpt & { dryRun?: boolean; grace: string; minLive: string; maxOutbox: string; json?: boolean }) => {
      const minLive = Number(opts.minLive);
      const maxOutboxEvents = intOption(opts.maxOutbox, "--max-outbox");
      await withRepo(opts.data, async (repo) => {
        const r = await collectGarbage(repo.store, { dryRun: opts.dryRun === true, graceMs: intOption(opts.grace, "--grace") * 1000, minLiveFraction: minLive, maxOutboxEvents });
        if (opts.json === true) {
          json(r);
          return;
        }
        const verb = r.dryRun ? "would recycle" : "recycled";
        out(`${r.deadChunks} unreferenced chunks (${formatBytes(r.deadBytes)}) in ${r.packsScanned} packs`);
        out(`${verb} ${r.packsRecycled} packs: ${formatBytes(r.bytesReclaimable)} reclaimable, ${r.chunksRewritten} live chunks rewritten into ${r.newPacks} packs`);
        out(`${r.dryRun ? "would delete" : "deleted"} ${r.packsDeleted} retired packs${r.orphanBlobsDeleted > 0 ? ` and ${r.orphanBlobsDeleted} orphan blobs` : ""}; bytes reclaimed now: ${formatBytes(Math.max(0, r.bytesReclaimed))}`);
        for (const p of r.unreadablePacks) out(`unreadable pack left alone: ${p} (run stowage fsck --read-data)`);
        if (r.outboxEventsDropped > 0) out(`outbox: ${r.dryRun ? "would drop" : "dropped"} the ${r.outboxEventsDropped} oldest unrelayed events (${r.outboxEvents} kept)`);
        if (r.journalRecordsDropped > 0 || r.checkpointsDeleted > 0) out(`journal: ${r.journalRecordsDropped} records covered by a checkpoint dropped, ${r.checkpointsDeleted} old checkpoints ${r.dryRun ? "would be " : ""}deleted`);
        for (const p of r.checkpointProblems) out(`unreadable checkpoint (no journal records dropped): ${p}`);
      });
    });

  program
    .command("checkpoint")
    .description("write a metadata checkpoint to the bucket, so recovery replays only the journal after it (docs/RECOVERY.md)")
    .option("--data <dir>", "data directory")
    .option("--json", "print the result as JSON")
    .action(async (opts: DataOpt & { json?: boolean }) => {
      await withRepo(opts.data, async (repo) => {
        const r = await repo.store.checkpoint();
        if (opts.json === true) json(r);
        else out(`checkpoint ${r.key}: journal index ${r.index}, ${r.rows} rows, ${formatBytes(r.bytes)}`);
      });
    });

  program
    .command("fsck")
    .description("check metadata against the packs; --read-data authenticates every chunk")
    .option("--data <dir>", "data directory")
    .option("--read-data", "read and authenticate every chunk")
    .option("--json", "print the report as JSON")
    .action(async (opts: DataOpt & { readData?: boolean; json?: boolean }) => {
      await withRepo(opts.data, async (repo) => {
        let progress: Progress | undefined;
        const r = await fsck(repo.store, {
          readData: opts.readData === true,
          progress: (done, total) => {
            progress ??= new Progress("fsck", total, "items");
            progress.set(done);
          },
        });
        progress?.finish();
        if (opts.json === true) json(r);
        else {
          for (const p of r.problems) {
            out(`error: ${p.kind}: ${p.message}`);
            for (const a of p.affects) out(`  affects ${a}`);
          }
          for (const w of r.warnings) out(`warning: ${w}`);
          out(`${r.ok ? "ok" : `${r.problems.length} problems`}: ${r.manifests} manifests, ${r.chunks} chunks, ${r.packs} packs${opts.readData === true ? `, ${r.chunksRead} chunks read (${formatBytes(r.bytesRead)})` : ""}`);
        }
        if (!r.ok) process.exitCode = 1;
      });
    });

  program
    .command("rebuild-index")
    .description("recreate the chunk index and pack records from the packs alone")
    .option("--data <dir>", "data directory")
    .option("--json", "print the report as JSON")
    .action(async (opts: DataOpt & { json?: boolean }) => {
      await withRepo(opts.data, async (repo) => {
        let progress: Progress | undefined;
        const r = await rebuildIndex(repo.store, {
          progress: (done, total) => {
            progress ??= new Progress("packs", total, "items");
            progress.set(done);
          },
        });
        progress?.finish();
        if (opts.json === true) json(r);
        else {
          out(`read ${r.packsRead} packs, indexed ${r.chunksIndexed} chunks (${r.duplicateChunks} duplicates)`);
          for (const u of r.packsUnreadable) out(`unreadable: ${u.blobKey}: ${u.error}`);
          if (r.missingChunks > 0) {
            out(`${r.missingChunks} referenced chunks are in no pack; affected:`);
            for (const a of r.affected) out(`  ${a}`);
          }
        }
        if (r.missingChunks > 0 || r.packsUnreadable.length > 0) process.exitCode = 1;
      });
    });

  program
    .command("recover")
    .description("rebuild a complete data directory from the bucket alone (key opened with STOWAGE_PASSPHRASE, or STOWAGE_MASTER_KEY); resumable")
    .requiredOption("--data <dir>", "the new data directory (must not hold a repository; a rerun resumes an interrupted recovery)")
    .option("--bucket <url>", "the cloud tier: a directory, file:///PATH or s3://BUCKET/PREFIX (default: STOWAGE_BUCKET)")
    .option("--s3-endpoint <url>", "S3-compatible service URL (default: AWS)")
    .option("--s3-region <region>", "S3 region")
    .option("--s3-path-style", "path-style S3 requests (most non-AWS services)")
    .option("--read-data", "fsck at the end reads and authenticates every chunk")
    .option("--to-time <time>", "recover the repository as it was at this time (ISO 8601, or ms since the epoch)")
    .option("--json", "print the report as JSON")
    .action(async (opts: { data: string; bucket?: string; s3Endpoint?: string; s3Region?: string; s3PathStyle?: boolean; readData?: boolean; toTime?: string; json?: boolean }) => {
      const bucket = opts.bucket ?? (process.env.STOWAGE_BUCKET || undefined);
      if (bucket === undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "recover needs the bucket: --bucket URL or STOWAGE_BUCKET");
      let toTime: number | undefined;
      if (opts.toTime !== undefined) {
        toTime = /^[0-9]+$/.test(opts.toTime) ? Number(opts.toTime) : Date.parse(opts.toTime);
        if (!Number.isFinite(toTime)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `--to-time: not a time: ${JSON.stringify(opts.toTime)}`);
      }
      const keys = keysFromEnvironment();
      const pass = keys === undefined ? await passphrase() : undefined;
      const s3: S3Settings = {};
      if (opts.s3Endpoint !== undefined) s3.endpoint = opts.s3Endpoint;
      if (opts.s3Region !== undefined) s3.region = opts.s3Region;
      if (opts.s3PathStyle === true) s3.forcePathStyle = true;
      let progress: Progress | undefined;
      let phase = "";
      const r = await recoverRepository(opts.data, {
        bucket,
        ...(Object.keys(s3).length === 0 ? {} : { s3 }),
        ...(pass === undefined ? {} : { passphrase: pass }),
        ...(keys === undefined ? {} : { keys }),
        readData: opts.readData === true,
        ...(toTime === undefined ? {} : { toTime }),
        progress: (p, done, total) => {
          if (p !== phase) {
            progress?.finish();
            phase = p;
            progress = new Progress(p, total, "items");
          }
          progress?.set(done);
        },
      });
      progress?.finish();
      if (opts.json === true) json(r);
      else {
        out(`recovered repository ${r.repositoryId} into ${r.dir} in ${(r.ms / 1000).toFixed(1)} s${r.resumed ? " (resumed)" : ""}`);
        out(`${r.packs} packs, ${r.journalRecords} journal records, ${r.checkpoint === undefined ? "no checkpoint" : `from checkpoint ${r.checkpoint}`}, ${r.entriesApplied} entries replayed (last journal index ${r.lastIndex}), ${r.intentsApplied} of ${r.intents} put intents applied, ${r.rebuild.chunksIndexed} chunks indexed`);
        for (const w of r.warnings) out(`warning: ${w}`);
        for (const u of r.packsUnreadable) out(`unreadable: ${u.blobKey}: ${u.error}`);
        for (const p of r.fsck.problems) out(`fsck: ${p.kind}: ${p.message}`);
        out(r.fsck.ok ? "fsck: clean" : `fsck: ${r.fsck.problems.length} problems`);
      }
      if (!r.fsck.ok || r.packsUnreadable.length > 0 || r.rebuild.missingChunks > 0) process.exitCode = 1;
    });

  program
    .command("stats")
    .description("what is stored and what it saved: bytes, requests, dollars")
    .option("--data <dir>", "data directory")
    .option("--price-storage <usd>", "USD per GiB-month", String(S3_STANDARD_PRICES.storagePerGiBMonth))
    .option("--price-put <usd>", "USD per 1,000 PUT requests", String(S3_STANDARD_PRICES.putPer1000))
    .option("--scan", "also list the cloud and secondary tiers to count their blobs and bytes (LIST requests)")
    .option("--json", "print one JSON object")
    .action(async (opts: DataOpt & { priceStorage: string; pricePut: string; scan?: boolean; json?: boolean }) => {
      const prices = { ...S3_STANDARD_PRICES, storagePerGiBMonth: Number(opts.priceStorage), putPer1000: Number(opts.pricePut) };
      if (!(prices.storagePerGiBMonth >= 0) || !(prices.putPer1000 >= 0)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "prices must be non-negative numbers");
      const show = async (repo: Repository, eventLogError?: string): Promise<void> => {
        const s = await computeStats(repo.meta, prices);
        const tiers = await repo.tiers.stats({ scan: opts.scan === true });
        // Without the configured event log the backlogs are not known (not zero).
        if (eventLogError !== undefined) for (const group of Object.keys(tiers.lag) as (keyof typeof tiers.lag)[]) tiers.lag[group] = undefined;
        // This command's own requests (the scan) are not the gateway's: show the gateway's totals.
        const totals = await readTierTotals(repo.dir);
        if (opts.json === true) json({ ...s, tiers: { ...tiers, totals, ...(eventLogError === undefined ? {} : { eventLogError }) } });
        else out(statsText(s) + "\n" + tierStatsText(tiers, totals) + (eventLogError === undefined ? "" : `\nevent log          unavailable: ${eventLogError}`));
      };
      // With services, the repository opens its configured event log, so the workers' backlogs can
      // be read; if it cannot be opened (a Kafka broker down), the rest is shown all the same.
      let repo: Repository;
      let eventLogError: string | undefined;
      try {
        repo = await openRepo(opts.data, { services: true });
      } catch (err) {
        if (!isStowageError(err, "STOWAGE_EVENTS_IO")) throw err;
        eventLogError = err.message;
        repo = await openRepo(opts.data);
      }
      try {
        await show(repo, eventLogError);
      } finally {
        await repo.close();
      }
    });
}
