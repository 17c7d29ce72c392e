/**
 * What every repository command needs: the data directory (`--data`, else STOWAGE_DATA, else
 * ./stowage-data), the key (STOWAGE_MASTER_KEY, else STOWAGE_PASSPHRASE, else a prompt on a
 * terminal, else a clear error), and BUCKET/KEY paths.
 */
import { resolve } from "node:path";
import { StowageError } from "../errors.js";
import { keysFromEnvironment } from "../codec/keys.js";
import { openRepository, readConfig, readMasterKeyFile, type OpenOptions, type Repository } from "../store/repository.js";

export const DATA_ENV = "STOWAGE_DATA";
export const PASSPHRASE_ENV = "STOWAGE_PASSPHRASE";
export const DEFAULT_DATA_DIR = "./stowage-data";

export function dataDir(flag: string | undefined): string {
  const env = process.env[DATA_ENV];
  return resolve(flag ?? (env !== undefined && env !== "" ? env : DEFAULT_DATA_DIR));
}

/** Reads a line from the terminal without echoing it. */
export async function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  // Raw mode before the question shows: nothing typed once it is visible may be echoed.
  stdin.setRawMode(true);
  process.stderr.write(question);
  stdin.resume();
  stdin.setEncoding("utf8");
  try {
    return await new Promise<string>((resolvePromise, reject) => {
      let text = "";
      const onData = (s: string): void => {
        for (let i = 0; i < s.length; i++) {
          const ch = s[i]!;
          if (ch === "\r" || ch === "\n") {
            stdin.off("data", onData);
            // Keep what was typed ahead (the confirmation, when both lines arrive in one read).
            stdin.pause();
            const rest = s.slice(ch === "\r" && s[i + 1] === "\n" ? i + 2 : i + 1);
            if (rest !== "") stdin.unshift(rest, "utf8");
            process.stderr.write("\n");
            resolvePromise(text);
            return;
          }
          if (ch === "\u0003") {
            stdin.off("data", onData);
            process.stderr.write("\n");
            reject(new StowageError("STOWAGE_NO_KEY", "passphrase prompt interrupted"));
            return;
          }
          if (ch === "\u007f" || ch === "\b") text = text.slice(0, -1);
          else text += ch;
        }
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

/** The passphrase from STOWAGE_PASSPHRASE, else a prompt on a terminal, else undefined. */
export async function passphrase(options: { confirm?: boolean } = {}): Promise<string | undefined> {
  const env = process.env[PASSPHRASE_ENV];
  if (env !== undefined && env !== "") return env;
  if (process.stdin.isTTY !== true || process.stderr.isTTY !== true) return undefined;
  const first = await promptHidden("passphrase: ");
  if (options.confirm === true) {
    const again = await promptHidden("passphrase again: ");
    if (again !== first) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the two passphrases differ");
  }
  return first;
}

export async function openRepo(dataFlag: string | undefined, options: RepoOptions = {}): Promise<Repository> {
  const dir = dataDir(dataFlag);
  const keys = keysFromEnvironment();
  if (keys !== undefined) return openRepository(dir, { ...options, keys });
  // Report a missing repository before a missing key, and before prompting for a passphrase.
  await readConfig(dir);
  // A repository `serve` created without a passphrase keeps its key in DATA/master.key.
  const unsealed = await readMasterKeyFile(dir);
  if (unsealed !== undefined && (process.env[PASSPHRASE_ENV] ?? "") === "") return openRepository(dir, { ...options, keys: unsealed });
  const pass = await passphrase();
  if (pass === undefined) {
    throw new StowageError("STOWAGE_NO_KEY", `the repository key is sealed: set ${PASSPHRASE_ENV} (or STOWAGE_MASTER_KEY), or run on a terminal to be prompted`);
  }
  return openRepository(dir, { ...options, passphrase: pass });
}

export interface BucketPath {
  bucket: string;
  /** The key or prefix after the first `/` ("" when none). */
  key: string;
}

/** Splits `BUCKET/KEY` (or `BUCKET`, `BUCKET/PREFIX/`). */
export function parseBucketPath(text: string): BucketPath {
  const i = text.indexOf("/");
  if (i === 0) throw new StowageError("STOWAGE_INVALID_NAME", `${JSON.stringify(text)}: expected BUCKET/KEY`);
  return i < 0 ? { bucket: text, key: "" } : { bucket: text.slice(0, i), key: text.slice(i + 1) };
}

/** What a command may ask of openRepository besides the key. */
export type RepoOptions = Omit<OpenOptions, "keys" | "passphrase">;

export async function withRepo<T>(dataFlag: string | undefined, fn: (repo: Repository) => Promise<T>, options: RepoOptions = {}): Promise<T> {
  const repo = await openRepo(dataFlag, options);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** One step of a shutdown: a name for the log and what to do (undefined: nothing to do). */
export type StopStep = readonly [name: string, run: () => Promise<unknown> | undefined];

/**
 * Waits for SIGINT or SIGTERM (or `ended`, e.g. a mount someone else unmounted), then runs the
 * `steps` in order; a failing step is logged and the rest still run. Resolves when all ran.
 */
export function runUntilStopped(logger: { info(o: object, m: string): void; info(m: string): void; error(o: object, m: string): void }, steps: readonly StopStep[], ended?: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolveDone) => {
    let stopping = false;
    const stop = async (reason: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      logger.info({ reason }, "stopping");
      for (const [name, run] of steps) {
        try {
          await run();
        } catch (err) {
          logger.error({ err: err instanceof Error ? err.message : String(err), step: name }, `${name} failed`);
        }
      }
      logger.info("stopped");
      resolveDone();
    };
    process.once("SIGINT", () => void stop("SIGINT"));
    process.once("SIGTERM", () => void stop("SIGTERM"));
    void ended?.then(() => stop("ended"));
  });
}
