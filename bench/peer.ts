/**
 * Helpers shared by the benchmarks that run against a real S3-compatible server (bench/s3.ts,
 * bench/tiers.ts): the repository root, deterministic incompressible test data, child processes
 * (start, follow CPU and peak RSS, stop by pid), SeaweedFS (`weed server -s3`, built by
 * scripts/install-s3-peer.sh) started on free 127.0.0.1 ports, moto's server (through
 * scripts/services/s3-server.sh foreground PORT), and AWS SDK clients.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { Agent } from "node:http";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";

export const MiB = 1024 * 1024;
export const MB = 1e6;

/** The repository: the nearest directory above this file whose package.json is Stowage's (dist/ or any outDir). */
export const REPO_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "stowage") return dir;
    } catch {
      // no package.json here
    }
    const up = dirname(dir);
    if (up === dir) return fileURLToPath(new URL("../../", import.meta.url));
    dir = up;
  }
})();
export const PEER_BIN_DEFAULT = join(REPO_ROOT, ".tmp", "s3-peer", "bin", "weed");
export const MOTO_BIN = join(REPO_ROOT, ".tmp", "services", "moto", "venv", "bin", "moto_server");

export interface Credentials {
  accessKey: string;
  secretKey: string;
}

// ------------------------------------------------------------------------------ test data

/**
 * Deterministic incompressible bytes: the AES-128-CTR keystream of a key, from any 16-byte-aligned
 * offset (the counter block is an 8-byte nonce followed by the block index, big-endian).
 */
export class Keystream {
  static readonly #zeros = Buffer.alloc(MiB);

  constructor(
    private readonly key: Buffer,
    private readonly nonce: Buffer,
  ) {}

  /** The keystream of `label` in a run seeded with `seed` (`domain` separates benchmarks). */
  static of(seed: number, label: string, domain = "stowage-s3-bench"): Keystream {
    const h = createHash("sha256").update(`${domain}:${seed}:${label}`).digest();
    return new Keystream(h.subarray(0, 16), h.subarray(16, 24));
  }

  #cipher(offset: number): ReturnType<typeof createCipheriv> {
    if (offset % 16 !== 0) throw new Error("keystream offsets are 16-byte aligned");
    const iv = Buffer.alloc(16);
    this.nonce.copy(iv, 0);
    iv.writeBigUInt64BE(BigInt(offset / 16), 8);
    return createCipheriv("aes-128-ctr", this.key, iv);
  }

  bytes(offset: number, length: number): Buffer {
    const c = this.#cipher(offset);
    const out: Buffer[] = [];
    for (let left = length; left > 0; left -= Keystream.#zeros.length) {
      out.push(c.update(Keystream.#zeros.subarray(0, Math.min(left, Keystream.#zeros.length))));
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** The first `length` bytes, 1 MiB at a time, generated as the consumer pulls. */
  *pieces(length: number): Generator<Buffer> {
    const c = this.#cipher(0);
    for (let left = length; left > 0; ) {
      const n = Math.min(left, MiB);
      left -= n;
      yield c.update(Keystream.#zeros.subarray(0, n));
    }
  }

  /** A stream of `length` bytes in 1 MiB pieces, generated as the consumer pulls. */
  stream(length: number): Readable {
    const c = this.#cipher(0);
    let left = length;
    return new Readable({
      highWaterMark: 4 * MiB,
      read(): void {
        while (left > 0) {
          const n = Math.min(left, MiB);
          left -= n;
          if (!this.push(c.update(Keystream.#zeros.subarray(0, n)))) return;
        }
        this.push(null);
      },
    });
  }
}

// ------------------------------------------------------------------------------ processes

/**
 * The node flags a bin's shebang gives (`#!/usr/bin/env -S node FLAGS`), so that a benchmark that
 * starts `node BIN ...` runs it as `npx stowage ...` would. None for a plain `#!/usr/bin/env node`.
 */
export function binNodeFlags(bin: string): string[] {
  const first = readFileSync(bin, "utf8").split("\n", 1)[0] ?? "";
  const m = /^#!\/usr\/bin\/env\s+-S\s+node\s+(.*)$/.exec(first.trim());
  return m === null ? [] : m[1]!.split(/\s+/).filter((a) => a !== "");
}

/** utime + stime of a process, seconds (from /proc/<pid>/stat). */
export function readCpuSeconds(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesized command name (which may hold spaces).
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return undefined;
  }
}

export function readVmHwmKb(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** `n` distinct free TCP ports on 127.0.0.1 (each bound to port 0, all released together). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: ReturnType<typeof createServer>[] = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => {
            const a = s.address();
            if (typeof a === "object" && a !== null) resolve(a.port);
            else reject(new Error("no port"));
          });
        }),
      );
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
  return ports;
}

/** A server process this benchmark started. */
export interface Server<N extends string = string> {
  name: N;
  version: string;
  child: ChildProcess;
  pid: number;
  endpoint: string;
  dataDir: string;
  /** Output of the server, kept for error reports (tail). */
  output: () => string;
  peakRssKb: number;
  exited: boolean;
  exitInfo: string;
  poll: ReturnType<typeof setInterval>;
}

/** Spawns a server; its output is kept (tail in memory, all of it in `logFile` when it closes). */
export function startChild(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let tail = "";
  const chunks: string[] = [];
  const add = (s: string): void => {
    tail = (tail + s).slice(-16_000);
    if (chunks.length < 10_000) chunks.push(s);
  };
  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  child.on("close", () => {
    try {
      writeFileSync(logFile, chunks.join(""));
    } catch {
      // the temp dir may be gone already
    }
  });
  child.on("error", (e) => add(`\n[${name}] cannot start ${cmd}: ${e.message}\n`));
  return { child, output: () => tail };
}

/** Follows a started server: exit, and peak RSS polled every 250 ms. */
export function track<N extends string>(name: N, version: string, child: ChildProcess, output: () => string, endpoint: string, dataDir: string): Server<N> {
  const srv: Server<N> = {
    name,
    version,
    child,
    pid: child.pid!,
    endpoint,
    dataDir,
    output,
    peakRssKb: 0,
    exited: false,
    exitInfo: "",
    poll: setInterval(() => {
      const v = readVmHwmKb(srv.pid);
      if (v !== undefined) srv.peakRssKb = Math.max(srv.peakRssKb, v);
    }, 250),
  };
  child.on("exit", (code, signal) => {
    srv.exited = true;
    srv.exitInfo = signal !== null ? `signal ${signal}` : `exit code ${code}`;
  });
  return srv;
}

export function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined, failed: () => string | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = (): void => {
      const v = probe();
      if (v !== undefined) return resolve(v);
      const f = failed();
      if (f !== undefined) return reject(new Error(`${what}: ${f}`));
      if (Date.now() - t0 > timeoutMs) return reject(new Error(`${what}: timed out after ${timeoutMs / 1000} s`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

/**
 * Stops a server by its pid: SIGTERM, then SIGKILL after `graceMs` (reported through `log`).
 * Records its final peak RSS first.
 */
export async function stopServer(srv: Server, graceMs: number, log: (msg: string) => void): Promise<void> {
  clearInterval(srv.poll);
  const v = readVmHwmKb(srv.pid);
  if (v !== undefined) srv.peakRssKb = Math.max(srv.peakRssKb, v);
  if (srv.exited) return;
  const gone = new Promise<void>((resolve) => {
    if (srv.exited) resolve();
    srv.child.once("exit", () => resolve());
  });
  try {
    process.kill(srv.pid, "SIGTERM");
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    log(`${srv.name} (pid ${srv.pid}) did not stop ${graceMs / 1000} s after SIGTERM: SIGKILL`);
    try {
      process.kill(srv.pid, "SIGKILL");
    } catch {
      // gone
    }
  }, graceMs);
  await gone;
  clearTimeout(timer);
}

// ------------------------------------------------------------------------------ SeaweedFS and moto

/** `seaweedfs (<version line>)` when `bin` runs, else undefined. */
export function peerVersion(bin: string): string | undefined {
  if (!existsSync(bin)) return undefined;
  const r = spawnSync(bin, ["version"], { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) return undefined;
  const line = (r.stdout + r.stderr).split("\n").find((l) => l.trim() !== "");
  return line === undefined ? "seaweedfs" : `seaweedfs (${line.trim()})`;
}

/**
 * The SeaweedFS version, running scripts/install-s3-peer.sh first when the default binary is
 * missing and `install` is true (a build from its Go module: minutes). Undefined when unavailable.
 */
export function ensurePeer(bin: string, install: boolean, log: (msg: string) => void): string | undefined {
  let ver = peerVersion(bin);
  if (ver === undefined && install && bin === PEER_BIN_DEFAULT) {
    log("peer missing: running scripts/install-s3-peer.sh (builds SeaweedFS from its Go module; several minutes the first time)");
    const r = spawnSync("bash", [join(REPO_ROOT, "scripts", "install-s3-peer.sh")], { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", timeout: 20 * 60_000 });
    if (r.status !== 0) log(`install-s3-peer.sh failed: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}`);
    ver = peerVersion(bin);
  }
  return ver;
}

/**
 * Starts `weed server -s3` (master, volume server, filer and S3 gateway in one process) on a new
 * data directory under `root`, every port explicit and bound to 127.0.0.1, with one identity
 * holding `creds`. Returns at once: the server is ready when CreateBucket succeeds (see
 * {@link createBucket}).
 */
export async function startPeer<N extends string>(name: N, root: string, bin: string, version: string, creds: Credentials): Promise<Server<N>> {
  const dataDir = join(root, "peer-data");
  mkdirSync(dataDir, { recursive: true });
  const s3Config = join(root, "peer-s3.json");
  writeFileSync(
    s3Config,
    JSON.stringify({
      identities: [{ name: "bench", credentials: [{ accessKey: creds.accessKey, secretKey: creds.secretKey }], actions: ["Admin", "Read", "List", "Tagging", "Write"] }],
    }),
  );
  // Every port explicit (gRPC ports would otherwise be port + 10000), all bound to 127.0.0.1.
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc] = await freePorts(8);
  const args = [
    "server",
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    `-dir=${dataDir}`,
    `-master.port=${master}`,
    `-master.port.grpc=${masterGrpc}`,
    "-master.telemetry=false",
    `-volume.port=${volume}`,
    `-volume.port.grpc=${volumeGrpc}`,
    // Stop at once on SIGTERM (the default waits 10 s after the last heartbeat).
    "-volume.preStopSeconds=0",
    "-filer=true",
    `-filer.port=${filer}`,
    `-filer.port.grpc=${filerGrpc}`,
    `-filer.localSocket=${join(root, "peer-filer.sock")}`,
    "-s3",
    `-s3.port=${s3}`,
    `-s3.port.grpc=${s3Grpc}`,
    `-s3.localSocket=${join(root, "peer-s3.sock")}`,
    `-s3.config=${s3Config}`,
    // Volumes of 2 GiB (the default limit is 30 GiB a volume), as many as the disk allows.
    "-master.volumeSizeLimitMB=2048",
    "-volume.max=0",
  ];
  const { child, output } = startChild(name, bin, args, { ...process.env }, join(root, "peer.log"));
  return track(name, version, child, output, `http://127.0.0.1:${s3}`, dataDir);
}

/** moto's version, when scripts/services/s3-server.sh installed it. */
export function motoVersion(): string | undefined {
  if (!existsSync(MOTO_BIN)) return undefined;
  const py = join(dirname(MOTO_BIN), "python");
  const r = spawnSync(py, ["-c", "import moto; print(moto.__version__)"], { encoding: "utf8", timeout: 30_000 });
  return r.status === 0 ? `moto ${r.stdout.trim()}` : "moto";
}

/**
 * Starts moto's server (in memory, single-threaded: see scripts/services/s3-server.sh) on a free
 * port with `s3-server.sh foreground PORT`, which execs the server (so the pid is moto's). moto
 * checks no signatures. Ready when CreateBucket succeeds.
 */
export async function startMoto<N extends string>(name: N, root: string, version: string): Promise<Server<N>> {
  const [port] = await freePorts(1);
  const script = join(REPO_ROOT, "scripts", "services", "s3-server.sh");
  const { child, output } = startChild(name, "bash", [script, "foreground", String(port)], { ...process.env, S3_SERVER_IMPL: "moto" }, join(root, "moto.log"));
  return track(name, version, child, output, `http://127.0.0.1:${port}`, root);
}

// ------------------------------------------------------------------------------ S3 clients

/**
 * An SDK client as the benchmarks use it: path-style, us-east-1, no SDK retries, the default
 * request checksums (CRC32), response checksums validated only when required, keep-alive sockets.
 */
export function s3Client(endpoint: string, creds: Credentials, sockets: number): S3Client {
  return new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: creds.accessKey, secretAccessKey: creds.secretKey },
    maxAttempts: 1,
    requestChecksumCalculation: "WHEN_SUPPORTED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: new NodeHttpHandler({
      httpAgent: new Agent({ keepAlive: true, maxSockets: Math.max(64, sockets) }),
      connectionTimeout: 10_000,
      requestTimeout: 300_000,
    }),
  });
}

export function errText(err: unknown): string {
  if (err instanceof Error) {
    const meta = (err as { $metadata?: { httpStatusCode?: number } }).$metadata;
    return `${err.name}${meta?.httpStatusCode !== undefined ? ` (HTTP ${meta.httpStatusCode})` : ""}: ${err.message}`.slice(0, 300);
  }
  return String(err).slice(0, 300);
}

/** Creates the bucket, retrying until the server answers (the peer takes a few seconds to start). */
export async function createBucket(srv: Server, s3: S3Client, bucket: string, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  let last = "";
  for (;;) {
    if (srv.exited) throw new Error(`${srv.name} exited (${srv.exitInfo}): ${srv.output().trim().slice(-800)}`);
    try {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      return;
    } catch (err) {
      const name = err instanceof Error ? err.name : "";
      if (name === "BucketAlreadyOwnedByYou" || name === "BucketAlreadyExists") return;
      last = errText(err);
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`${srv.name}: CreateBucket did not succeed in ${timeoutMs / 1000} s: ${last}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
