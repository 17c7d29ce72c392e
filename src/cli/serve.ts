/**
 * `stowage serve`: the S3-compatible endpoint on a repository. With nothing but a data directory it
 * creates the repository (key from STOWAGE_PASSPHRASE or STOWAGE_MASTER_KEY when set, else a
 * generated key kept in DATA/master.key) and a root access key, prints the endpoint and credentials,
 * and serves until SIGINT/SIGTERM, when it drains requests in flight and closes the store.
 */
import type { Command } from "commander";
import { pino, type Logger } from "pino";
import { RepositoryKeys, keysFromEnvironment } from "../codec/keys.js";
import { initRepository, openRepository, repositoryExists, writeMasterKeyFile, readMasterKeyFile } from "../store/repository.js";
import { S3Server } from "../server/s3/server.js";
import { resolveServeConfig, type ServeFlags } from "../server/config.js";
import { Metrics, storeStatsSource, tierStatsSource } from "../server/metrics.js";
import { addAccessKey, listAccessKeys, loadCredentials, removeAccessKey } from "../server/credentials.js";
import { StowageError } from "../errors.js";
import { StowageFs } from "../fs/fs.js";
import { MOUNT_FS_OPTIONS, mountFuse, type FuseMount } from "../fs/fuse.js";
import { WebDavServer } from "../server/webdav/server.js";
import { dataDir, PASSPHRASE_ENV, runUntilStopped } from "./context.js";

function note(line: string): void {
  process.stderr.write(line + "\n");
}

export async function openOrCreate(dir: string, commitDelayMs: number, cacheBytes: number, logger: Logger): Promise<Awaited<ReturnType<typeof openRepository>>> {
  const passphrase = process.env[PASSPHRASE_ENV] || undefined;
  const envKeys = keysFromEnvironment();
  if (!(await repositoryExists(dir))) {
    if (passphrase !== undefined || envKeys !== undefined) {
      await initRepository(dir, { ...(passphrase === undefined ? {} : { passphrase }), ...(envKeys === undefined ? {} : { keys: envKeys }) });
      note(`stowage: created a repository in ${dir}${passphrase !== undefined ? " (key sealed with STOWAGE_PASSPHRASE)" : ""}`);
    } else {
      const keys = RepositoryKeys.generate();
      await writeMasterKeyFile(dir, keys);
      await initRepository(dir, { keys });
      note(`stowage: created a repository in ${dir}; its key is kept unsealed in ${dir}/master.key`);
      note(`stowage: (for real use: \`STOWAGE_PASSPHRASE=... stowage init\` seals the key with a passphrase)`);
    }
  }
  const onBackgroundError = (err: unknown, context: string): void => {
    logger.warn({ err: err instanceof Error ? err.message : String(err), context }, "background work failed; retrying");
  };
  const options = { commitDelayMs, cacheBytes, services: true, onBackgroundError };
  if (envKeys !== undefined) return openRepository(dir, { ...options, keys: envKeys });
  if ((await readMasterKeyFile(dir)) !== undefined && passphrase === undefined) return openRepository(dir, options);
  return openRepository(dir, { ...options, ...(passphrase === undefined ? {} : { passphrase }) });
}

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description("run the S3-compatible endpoint (creates the repository and a root key on first start)")
    .option("--data <dir>", "data directory (default: $STOWAGE_DATA, else ./stowage-data)")
    .option("--config <file>", "JSON file with settings (address, port, region, domains, logLevel, commitDelayMs, cacheBytes)")
    .option("--address <addr>", "listen address (default 127.0.0.1)")
    .option("--port <port>", "listen port (default 9000; 0 picks a free one)")
    .option("--region <region>", "region (default us-east-1)")
    .option("--domain <host...>", "host names for virtual-hosted-style requests (bucket.<domain>; default localhost)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (default info)")
    .option("--commit-delay <ms>", "how long a write waits for uploads still streaming to share its pack (default 200)")
    .option("--cache-bytes <n>", "decompressed chunk cache (default 64 MiB)")
    .option("--mount <dir>", "also mount the repository there with FUSE (buckets are its top-level directories)")
    .option("--mount-bucket <bucket>", "with --mount: mount only this bucket")
    .option("--webdav [port]", "also serve WebDAV (class 1 and 2) on this port of the listen address (default 9001; 0 picks a free one)")
    .action(async (opts: ServeFlags & { data?: string; mount?: string; mountBucket?: string; webdav?: string | boolean }) => {
      const config = await resolveServeConfig(opts);
      const dir = dataDir(opts.data);
      const logger = pino({ level: config.logLevel, base: undefined });
      const repo = await openOrCreate(dir, config.commitDelayMs, config.cacheBytes, logger);
      let server: S3Server | undefined;
      let mount: FuseMount | undefined;
      let dav: WebDavServer | undefined;
      try {
        const creds = await loadCredentials(dir);
        const metrics = new Metrics();
        // The store's figures scan the metadata: at most once a minute, however often Prometheus scrapes.
        metrics.addSource(storeStatsSource(repo.meta), 60_000);
        metrics.addSource(tierStatsSource(repo.tiers, repo.relay), 5_000);
        server = new S3Server({ store: repo.store, credentials: creds.ring, region: config.region, domains: config.domains, logger, metrics });
        const addr = await server.listen(config.port, config.address);
        const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
        note(`stowage: S3 endpoint http://${host}:${addr.port} (region ${config.region})`);
        note(`stowage: metrics http://${host}:${addr.port}/_stowage/metrics`);
        note(`stowage: access key ${creds.root.accessKeyId}`);
        if (creds.generated) note(`stowage: secret key ${creds.root.secretAccessKey}   (generated now; kept in ${dir}/credentials.json)`);
        else if (creds.source === "file") note(`stowage: secret key in ${dir}/credentials.json`);
        else note("stowage: secret key from STOWAGE_ROOT_SECRET_KEY");
        if (opts.webdav !== undefined) {
          const port = opts.webdav === true ? 9001 : Number(opts.webdav);
          if (!Number.isInteger(port) || port < 0 || port > 65535) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `--webdav takes a port number, not ${String(opts.webdav)}`);
          // WebDAV acknowledges like S3 (durable before the reply); the mount like a local file system.
          dav = new WebDavServer({ fs: new StowageFs(repo.store), credentials: creds.ring, logger });
          const a = await dav.listen(port, config.address);
          const h = a.family === "IPv6" ? `[${a.address}]` : a.address;
          note(`stowage: WebDAV endpoint http://${h}:${a.port}/ (user: an access key id, password: its secret key)`);
        }
        if (opts.mount !== undefined) {
          mount = await mountFuse(new StowageFs(repo.store, MOUNT_FS_OPTIONS), opts.mount, {
            ...(opts.mountBucket === undefined ? {} : { bucket: opts.mountBucket }),
            onError: (err, op) => {
              if (err.code === "EIO") logger.error({ err: err.message, op }, "file-system operation failed");
            },
          });
          note(`stowage: mounted ${opts.mountBucket ?? "all buckets"} at ${mount.mountpoint}`);
        }
        repo.startServices();
        logger.info({ endpoint: `http://${host}:${addr.port}`, data: dir, cloud: repo.config.bucket, events: repo.events.location }, "listening");
      } catch (err) {
        await mount?.unmount().catch(() => undefined);
        await dav?.close().catch(() => undefined);
        await server?.close().catch(() => undefined);
        await repo.close();
        throw err;
      }
      await runUntilStopped(logger, [
        ["unmount", () => mount?.unmount()],
        ["webdav close", () => dav?.close()],
        ["s3 close", () => server?.close()],
        ["close", () => repo.close()],
      ]);
    });

  const keys = program.command("keys").description("S3 access keys kept in the data directory");
  keys
    .command("add")
    .description("generate a new access key")
    .option("--data <dir>", "data directory")
    .option("--json", "print JSON")
    .action(async (opts: { data?: string; json?: boolean }) => {
      const k = await addAccessKey(dataDir(opts.data));
      if (opts.json === true) process.stdout.write(JSON.stringify(k, null, 2) + "\n");
      else process.stdout.write(`access key ${k.accessKeyId}\nsecret key ${k.secretAccessKey}\n`);
    });
  keys
    .command("ls")
    .description("list access keys (ids only)")
    .option("--data <dir>", "data directory")
    .action(async (opts: { data?: string }) => {
      for (const k of await listAccessKeys(dataDir(opts.data))) process.stdout.write(`${k.accessKeyId}${k.root === true ? "  (root)" : ""}  ${k.created}\n`);
    });
  keys
    .command("rm")
    .description("remove an access key (not the root key)")
    .argument("<accessKeyId>")
    .option("--data <dir>", "data directory")
    .action(async (id: string, opts: { data?: string }) => {
      if (!(await removeAccessKey(dataDir(opts.data), id))) {
        process.stderr.write(`stowage: no removable key ${id}\n`);
        process.exitCode = 1;
      }
    });
}
