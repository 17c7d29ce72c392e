/**
 * `stowage mount [bucket] MOUNTPOINT`: the repository as a file system through FUSE (docs/FS.md),
 * until SIGINT/SIGTERM or an external `umount`, when it flushes every open file, unmounts and closes
 * the store. Opens (or, like `serve`, creates) the repository in the data directory; to have S3 and
 * the mount at once on one repository, use `stowage serve --mount DIR` instead (one process owns a
 * repository).
 */
import type { Command } from "commander";
import { pino } from "pino";
import { StowageFs } from "../fs/fs.js";
import { MOUNT_FS_OPTIONS, mountFuse } from "../fs/fuse.js";
import { StowageError } from "../errors.js";
import { resolveServeConfig } from "../server/config.js";
import { dataDir, runUntilStopped } from "./context.js";
import { openOrCreate } from "./serve.js";

interface MountFlags {
  data?: string;
  logLevel?: string;
  allowOther?: boolean;
  attrTimeout?: string;
  debug?: boolean;
}

export function registerMount(program: Command): void {
  program
    .command("mount")
    .description("mount the repository (or one bucket) as a file system with FUSE; unmounts on SIGINT/SIGTERM")
    .usage("[options] [bucket] <mountpoint>")
    .argument("<bucket-or-mountpoint>", "[bucket]: mount only this bucket (default: every bucket, as top-level directories)")
    .argument("[mountpoint]", "an existing directory")
    .option("--data <dir>", "data directory (default: $STOWAGE_DATA, else ./stowage-data)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (default info)")
    .option("--allow-other", "let other users use the mount")
    .option("--attr-timeout <seconds>", "how long the kernel caches attributes and names (default 1)")
    .option("--debug", "trace every FUSE request on stderr")
    .action(async (a: string, b: string | undefined, opts: MountFlags) => {
      const [bucket, mountpoint] = b === undefined ? [undefined, a] : [a, b];
      const attrTimeout = opts.attrTimeout === undefined ? 1 : Number(opts.attrTimeout);
      if (!Number.isFinite(attrTimeout) || attrTimeout < 0 || attrTimeout > 3600) {
        throw new StowageError("STOWAGE_INVALID_ARGUMENT", `--attr-timeout must be between 0 and 3600 seconds, not ${opts.attrTimeout}`);
      }
      const config = await resolveServeConfig(opts.logLevel === undefined ? {} : { logLevel: opts.logLevel });
      const logger = pino({ level: config.logLevel, base: undefined });
      const dir = dataDir(opts.data);
      const repo = await openOrCreate(dir, config.commitDelayMs, config.cacheBytes, logger);
      let mount;
      try {
        const fs = new StowageFs(repo.store, MOUNT_FS_OPTIONS);
        mount = await mountFuse(fs, mountpoint, {
          ...(bucket === undefined ? {} : { bucket }),
          ...(opts.allowOther === true ? { allowOther: true } : {}),
          ...(opts.debug === true ? { debug: true } : {}),
          attrTimeout,
          onError: (err, op) => {
            if (err.code === "EIO") logger.error({ err: err.message, op }, "file-system operation failed");
          },
        });
        repo.startServices();
      } catch (err) {
        await repo.close();
        throw err;
      }
      process.stderr.write(`stowage: mounted ${bucket ?? "all buckets"} at ${mount.mountpoint}\n`);
      const m = mount;
      // Also ends when someone else unmounts it (umount, fusermount -u).
      await runUntilStopped(logger, [["unmount", () => m.unmount()], ["close", () => repo.close()]], m.closed);
    });
}
