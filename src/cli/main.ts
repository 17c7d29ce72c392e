#!/usr/bin/env -S node --initial-old-space-size=64
/**
 * The `stowage` command: the repository commands (init, put, get, ls, rm, cp, snapshot, gc, fsck,
 * rebuild-index, stats, ...), `stowage serve` (the S3 gateway, with `--mount` and `--webdav`),
 * `stowage mount`, and the kv store's own tools.
 *
 * Exit codes: 0 success; 1 the operation failed (reason on stderr, with the error code when the
 * error is a StowageError); 2 usage error or not implemented.
 *
 * **The V8 flag on the first line.** Chunks and packs live in Buffers outside the JS heap, and V8
 * schedules a full mark-compact when that external memory grows by a share of the old generation's
 * limit, which for a process whose JS heap stays at ~11 MB is small: a 512 MiB GET through
 * `stowage serve` ran 28 mark-compacts and 40 scavenges, ~20 % of the server's CPU. Starting the
 * old generation at 64 MiB (`--initial-old-space-size=64`) spaces them out: server CPU per MB of a
 * large GET 2.64-3.05 -> 2.03-2.16 ms (medians of 5 GETs, four alternating runs), `stowage put` of
 * the bench's incompressible set 165-176 -> 196-199 MB/s; the cost is up to ~35 MB more peak RSS.
 * The flag takes effect only at process start (v8.setFlagsFromString later changed nothing), so
 * it rides on the shebang (`env -S`: GNU coreutils 8.30+, macOS, FreeBSD; busybox's env, as on
 * Alpine, may lack -S: run `node --initial-old-space-size=64 dist/src/cli/main.js` there);
 * `node dist/src/cli/main.js` runs without it. The benchmarks start the bin with the same flags (`binNodeFlags` in
 * bench/peer.ts reads them from this line).
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { isStowageError } from "../errors.js";
import type { KvOptions, KvStats, RepairReport } from "../kv/types.js";
import { registerRepositoryCommands } from "./commands.js";
import { registerServe } from "./serve.js";
import { registerMount } from "./mount.js";

/** The slice of the kv module the CLI uses. */
interface KvModule {
  openKv(dir: string, options?: KvOptions): Promise<{ stats(): KvStats; close(): Promise<void> }>;
  repairKv(dir: string): Promise<RepairReport> | RepairReport;
}

// Loaded on demand so that `--help`, `serve` and usage errors never touch the store code.
// TODO(lead): once src/kv/index.ts exists, a literal `import("../kv/index.js")` lets tsc check
// these signatures against the real module.
const KV_MODULE = "../kv/index.js";
async function loadKv(): Promise<KvModule> {
  return (await import(KV_MODULE)) as KvModule;
}

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function packageVersion(): string {
  try {
    // dist/src/cli/main.js -> package.json at the package root.
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function statsTable(s: KvStats): string {
  const rows: [string, string][] = [
    ["sequence", String(s.sequence)],
    ["memtable", `${formatBytes(s.memtableBytes)} (+${s.immutableMemtables} immutable)`],
    [
      "block cache",
      `${formatBytes(s.blockCache.bytes)} / ${formatBytes(s.blockCache.capacity)}, ` +
        `${s.blockCache.hits} hits, ${s.blockCache.misses} misses`,
    ],
    ["flushes", String(s.flushes)],
    ["compactions", String(s.compactions)],
    ["write stalls", `${s.writeStallsMs} ms`],
    ["live snapshots", String(s.liveSnapshots)],
    ["live iterators", String(s.liveIterators)],
  ];
  const lines = rows.map(([k, v]) => `${k.padEnd(16)}${v}`);
  lines.push("", "level  files  bytes");
  s.levels.forEach((l, i) => {
    lines.push(`${String(i).padEnd(7)}${String(l.files).padEnd(7)}${formatBytes(l.bytes)}`);
  });
  const totalFiles = s.levels.reduce((a, l) => a + l.files, 0);
  const totalBytes = s.levels.reduce((a, l) => a + l.bytes, 0);
  lines.push(`${"total".padEnd(7)}${String(totalFiles).padEnd(7)}${formatBytes(totalBytes)}`);
  return lines.join("\n");
}

function repairText(r: RepairReport): string {
  const lines = [
    `tables kept            ${r.tablesKept}`,
    `tables dropped         ${r.tablesDropped.length}`,
    ...r.tablesDropped.map((f) => `  ${f}`),
    `log records recovered  ${r.logRecordsRecovered}`,
    `log bytes dropped      ${r.logBytesDropped}`,
  ];
  return lines.join("\n");
}

function buildProgram(): Command {
  const program = new Command();
  program
    .name("stowage")
    .description(
      "Stowage storage gateway: chunked, deduplicated, compressed, encrypted and packed object storage.\n" +
        "Data directory: --data DIR, else $STOWAGE_DATA, else ./stowage-data. Key: $STOWAGE_PASSPHRASE\n" +
        "(or a prompt on a terminal), or $STOWAGE_MASTER_KEY. `stowage serve` runs the S3 endpoint.",
    )
    .version(packageVersion())
    .exitOverride()
    .showHelpAfterError();

  registerRepositoryCommands(program);

  program
    .command("kv-stats")
    .description("open a kv store and print its statistics")
    .argument("<dir>", "the store's directory")
    .option("--json", "print the statistics as JSON")
    .action(async (dir: string, opts: { json?: boolean }) => {
      const { openKv } = await loadKv();
      // Never create a store by accident, and do no background compaction while we look.
      const db = await openKv(dir, { createIfMissing: false, autoCompaction: false });
      try {
        const stats = db.stats();
        process.stdout.write((opts.json ? JSON.stringify(stats, null, 2) : statsTable(stats)) + "\n");
      } finally {
        await db.close();
      }
    });

  program
    .command("kv-repair")
    .description("rebuild a damaged kv store's manifest from its tables and logs (store must be closed)")
    .argument("<dir>", "the store's directory")
    .option("--json", "print the repair report as JSON")
    .action(async (dir: string, opts: { json?: boolean }) => {
      const { repairKv } = await loadKv();
      const report = await repairKv(dir);
      process.stdout.write((opts.json ? JSON.stringify(report, null, 2) : repairText(report)) + "\n");
    });

  registerServe(program);
  registerMount(program);

  return program;
}

export async function main(argv: string[]): Promise<number> {
  // A FUSE mount keeps one libuv thread in a blocking read of /dev/fuse; leave the store its four.
  process.env["UV_THREADPOOL_SIZE"] ??= "8";
  const program = buildProgram();
  if (argv.length === 0) {
    // Bare `stowage`: say what exists, successfully.
    process.stdout.write(program.helpInformation());
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed help, the version, or the usage error.
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (isStowageError(err)) {
      process.stderr.write(`stowage: ${err.code}: ${err.message}\n`);
      if (err.cause !== undefined) process.stderr.write(`  cause: ${String(err.cause)}\n`);
    } else if (err instanceof Error) {
      const code = (err as NodeJS.ErrnoException).code;
      const prefix = code !== undefined && !err.message.startsWith(code) ? `${code}: ` : "";
      process.stderr.write(`stowage: ${prefix}${err.message}\n`);
    } else {
      process.stderr.write(`stowage: ${String(err)}\n`);
    }
    return EXIT_FAILURE;
  }
}

process.exitCode = await main(process.argv.slice(2));
