/**
 * A real S3-compatible server for the S3 backend tests, spawned directly on a free 127.0.0.1 port
 * (so a test can kill and restart it). The software is installed by
 * `scripts/services/s3-server.sh install` (moto's server, in a venv under .tmp/services/moto/);
 * SeaweedFS is used when `STOWAGE_S3_TEST_SEAWEEDFS=1` and `scripts/install-s3-peer.sh` has built
 * it. {@link findS3Server} says which is available.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export type S3ServerImpl = "moto" | "seaweedfs";

/** The repository root (this file is test/backend/s3-server.ts, compiled one level deeper). */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error("repository root not found");
    dir = up;
  }
  // .tmp/dist-s3/test/backend has no package.json; dist/test/backend neither: the first hit is the root.
  return dir;
}

export const REPO_ROOT = repoRoot();
export const INSTALL_HINT = "scripts/services/s3-server.sh install";

export function serverBinary(impl: S3ServerImpl): string | undefined {
  const bin =
    impl === "moto"
      ? path.join(REPO_ROOT, ".tmp", "services", "moto", "venv", "bin", "moto_server")
      : path.join(REPO_ROOT, ".tmp", "s3-peer", "bin", "weed");
  return fs.existsSync(bin) ? bin : undefined;
}

/** The servers to test against: moto when installed, SeaweedFS too when asked for and built. */
export function findS3Servers(): S3ServerImpl[] {
  const out: S3ServerImpl[] = [];
  if (serverBinary("moto") !== undefined) out.push("moto");
  if (process.env["STOWAGE_S3_TEST_SEAWEEDFS"] === "1" && serverBinary("seaweedfs") !== undefined) out.push("seaweedfs");
  return out;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface S3ServerOptions {
  /** moto only: require valid SigV4 credentials (moto then knows no access key: every request is refused). */
  enforceAuth?: boolean;
}

export class S3TestServer {
  readonly endpoint: string;
  /** Whether objects survive a restart (SeaweedFS keeps them on disk; moto keeps them in memory). */
  readonly persistent: boolean;
  #child: ChildProcess | undefined;
  #output = "";
  readonly #dataDir: string;

  private constructor(
    readonly impl: S3ServerImpl,
    readonly bin: string,
    readonly port: number,
    readonly options: S3ServerOptions,
  ) {
    this.endpoint = `http://127.0.0.1:${port}`;
    this.persistent = impl === "seaweedfs";
    this.#dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-s3srv-"));
  }

  static async start(impl: S3ServerImpl, options: S3ServerOptions = {}): Promise<S3TestServer> {
    const bin = serverBinary(impl);
    if (bin === undefined) throw new Error(`${impl} is not installed: run ${INSTALL_HINT}`);
    const srv = new S3TestServer(impl, bin, await freePort(), options);
    await srv.start();
    return srv;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Starts the server (again) on its port and waits until it answers HTTP. */
  async start(): Promise<void> {
    if (this.running) return;
    let args: string[];
    const env: NodeJS.ProcessEnv = { ...process.env };
    let cmd = this.bin;
    if (this.impl === "moto") {
      // The service script's foreground mode: moto single-threaded (see the script's header).
      cmd = "bash";
      args = [path.join(REPO_ROOT, "scripts", "services", "s3-server.sh"), "foreground", String(this.port)];
      env["S3_SERVER_IMPL"] = "moto";
      if (this.options.enforceAuth === true) env["MOTO_AUTH"] = "1";
    } else {
      const p = await Promise.all(Array.from({ length: 7 }, () => freePort()));
      args = [
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        `-dir=${this.#dataDir}`,
        `-master.port=${p[0]}`,
        `-master.port.grpc=${p[1]}`,
        "-master.telemetry=false",
        `-volume.port=${p[2]}`,
        `-volume.port.grpc=${p[3]}`,
        "-volume.preStopSeconds=0",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=256",
        "-filer=true",
        `-filer.port=${p[4]}`,
        `-filer.port.grpc=${p[5]}`,
        "-s3",
        `-s3.port=${this.port}`,
        `-s3.port.grpc=${p[6]}`,
      ];
    }
    this.#output = "";
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const add = (s: string): void => {
      this.#output = (this.#output + s).slice(-8000);
    };
    child.stdout?.setEncoding("utf8").on("data", add);
    child.stderr?.setEncoding("utf8").on("data", add);
    child.on("error", (e) => add(`\ncannot start ${this.bin}: ${e.message}\n`));
    this.#child = child;
    const t0 = Date.now();
    for (;;) {
      if (!this.running) throw new Error(`${this.impl} exited while starting:\n${this.#output.slice(-2000)}`);
      try {
        const res = await fetch(`${this.endpoint}/`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        // SeaweedFS answers before its volume server has joined; wait for a writable state.
        if (this.impl === "moto" || res.status < 500) return;
      } catch {
        // not listening yet
      }
      if (Date.now() - t0 > 60_000) {
        await this.kill();
        throw new Error(`${this.impl} did not answer on ${this.endpoint} within 60 s:\n${this.#output.slice(-2000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Kills the server (SIGKILL: no goodbye), waiting until it is gone. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (child === undefined || !this.running) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    await gone;
  }

  async stop(): Promise<void> {
    await this.kill("SIGTERM");
    fs.rmSync(this.#dataDir, { recursive: true, force: true });
  }

  output(): string {
    return this.#output;
  }
}
