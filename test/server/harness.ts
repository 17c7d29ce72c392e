/** Starts a real S3 endpoint (S3Server over HTTP on 127.0.0.1) on a fresh repository, for tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import { S3Client } from "@aws-sdk/client-s3";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { initRepository, openRepository, type InitOptions, type OpenOptions, type Repository } from "../../src/store/repository.js";
import { S3Server } from "../../src/server/s3/server.js";
import { KeyRing } from "../../src/server/credentials.js";
import { Metrics, storeStatsSource } from "../../src/server/metrics.js";

export { Sha256 } from "./sha256.js";

export const ACCESS_KEY = "STWTESTACCESSKEY";
export const SECRET_KEY = "test-secret-key-0123456789";

export interface Endpoint {
  url: string;
  port: number;
  repo: Repository;
  server: S3Server;
  dir: string;
  client(options?: { forcePathStyle?: boolean; requestChecksumCalculation?: "WHEN_SUPPORTED" | "WHEN_REQUIRED"; secret?: string }): S3Client;
  stop(): Promise<void>;
}

function metricsFor(repo: Repository): Metrics {
  const m = new Metrics({ defaultMetrics: false });
  m.addSource(storeStatsSource(repo.meta));
  return m;
}

export interface EndpointOptions {
  minPartSize?: number;
  now?: () => number;
  metrics?: boolean;
  /** Repository settings beyond the harness's chunker and pack size: tiers, bucket, s3, events, ... */
  init?: Omit<InitOptions, "keys" | "passphrase" | "keyFile">;
  /** Open options: services, wrapBackend, tierOptions, eventLog, onBackgroundError, ... */
  open?: Omit<OpenOptions, "keys" | "passphrase">;
  /** Call repo.startServices() (outbox relay, tier workers). Default: when `open.services` is true. */
  startServices?: boolean;
  /** The server's logger. Default: pino at STOWAGE_TEST_LOG (else silent). */
  logger?: Logger;
}

export async function startEndpoint(options: EndpointOptions = {}): Promise<Endpoint> {
  const dir = mkdtempSync(join(tmpdir(), "stowage-s3-"));
  const keys = RepositoryKeys.generate();
  let repo: Repository;
  try {
    await initRepository(dir, { chunker: { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024 }, packTargetSize: 1024 * 1024, ...options.init, keys });
    repo = await openRepository(dir, { ...options.open, keys, ...(options.minPartSize === undefined ? {} : { minPartSize: options.minPartSize }) });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  if (options.startServices ?? options.open?.services === true) repo.startServices();
  const server = new S3Server({
    store: repo.store,
    credentials: new KeyRing([{ accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY, created: "" }]),
    logger: options.logger ?? pino({ level: process.env.STOWAGE_TEST_LOG ?? "silent" }),
    ...(options.metrics === true ? { metrics: metricsFor(repo) } : {}),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  let addr: Awaited<ReturnType<S3Server["listen"]>>;
  try {
    addr = await server.listen(0, "127.0.0.1");
  } catch (err) {
    await repo.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const url = `http://127.0.0.1:${addr.port}`;
  const clients: S3Client[] = [];
  return {
    url,
    port: addr.port,
    repo,
    server,
    dir,
    client(o = {}) {
      const c = new S3Client({
        endpoint: url,
        region: "us-east-1",
        forcePathStyle: o.forcePathStyle ?? true,
        credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: o.secret ?? SECRET_KEY },
        requestChecksumCalculation: o.requestChecksumCalculation ?? "WHEN_SUPPORTED",
        maxAttempts: 1,
      });
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.destroy();
      try {
        await server.close(5000);
        await repo.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

