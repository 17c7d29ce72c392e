/**
 * A repository on disk: the data directory that `stowage init` creates and every command opens.
 *
 *   DATA/stowage.json   repository configuration (format, ids, chunker and pack parameters, bucket)
 *   DATA/key            the master key sealed under the passphrase (absent when the key comes
 *                       from STOWAGE_MASTER_KEY only)
 *   DATA/meta/          the metadata store (kv)
 *   DATA/bucket/        the embedded default bucket: a local directory acting as the cloud bucket;
 *                       it also holds a copy of the sealed key under keys/<key id>
 *   DATA/events/        the embedded event log (kv), opened only by `stowage serve`
 *
 * The configuration names the cloud tier (`bucket`: a directory or an s3:// URL, see
 * locations.ts) and, optionally, a local and a secondary tier and the event log (tiering.ts).
 * Opening builds the chain: tiers (TierManager) under the object store, the outbox relay from the
 * metadata to the event log. One-shot commands open it without services: the tiers' views work
 * (reads prefer a local copy, cloud-first puts also write one), but no worker runs and tier
 * requests (hydrate-needed) go to a throwaway in-memory log; the events the store commits wait in
 * its outbox until `stowage serve` relays them.
 */
import { mkdir, open as openFile, readFile, rename, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { StowageError } from "../errors.js";
import {
  createKeyFile,
  openKeyFile,
  sealKeyFile,
  keysFromEnvironment,
  keysFromMasterKey,
  parseMasterKey,
  formatMasterKey,
  type KeyFileOptions,
  type RepositoryKeys,
} from "../codec/keys.js";
import { DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE } from "../codec/chunker.js";
import type { BlobBackend } from "../backend/backend.js";
import type { EventLog } from "../events/types.js";
import { MemoryEventLog } from "../events/memory.js";
import { OutboxRelay } from "../events/outbox.js";
import { TierManager } from "../tier/manager.js";
import type { TierManagerOptions } from "../tier/config.js";
import { openLocation, type S3Settings } from "./locations.js";
import { addTierStats, readTierTotals, writeTierTotals, type TierTotals } from "./tier-totals.js";
import { checkTiering, openEventLog, openTierBackends, type EventsConfig, type TiersConfig } from "./tiering.js";
import { openKvMetadataStore } from "../meta/kv-store.js";
import type { MetadataStore } from "../meta/types.js";
import { ObjectStore, type ObjectStoreOptions } from "./store.js";

export const CONFIG_FILE = "stowage.json";
/** The repository descriptor kept in the bucket (docs/RECOVERY.md). */
export const DESCRIPTOR_KEY = "config/stowage.json";
export const DESCRIPTOR_FORMAT = "stowage-descriptor";

/** The repository descriptor in the bucket: what recovery needs besides the key and the packs. */
export interface RepositoryDescriptor {
  format: typeof DESCRIPTOR_FORMAT;
  version: 1;
  repositoryId: string;
  keyId: string;
  created: string;
  chunker: { minSize: number; avgSize: number; maxSize: number };
  packTargetSize: number;
}

export function descriptorOf(c: RepositoryConfig): RepositoryDescriptor {
  return { format: DESCRIPTOR_FORMAT, version: 1, repositoryId: c.repositoryId, keyId: c.keyId, created: c.created, chunker: c.chunker, packTargetSize: c.packTargetSize };
}
export const KEY_FILE = "key";
/**
 * An unsealed master key kept in the data directory (hex). Written only by `stowage serve` when it
 * creates a repository with no passphrase and no master key supplied — the zero-configuration
 * start. Anyone who can read the data directory can then read the data; `init` with a passphrase
 * is the setup for real use.
 */
export const MASTER_KEY_FILE = "master.key";
export const REPOSITORY_FORMAT = "stowage-repository";
export const REPOSITORY_VERSION = 1;
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
/** How often a serving repository saves its tier totals (tier-totals.ts). */
const TOTALS_INTERVAL_MS = 30_000;
/** How often `serve` considers a metadata checkpoint (docs/RECOVERY.md). */
const CHECKPOINT_CHECK_MS = 60_000;

export interface RepositoryConfig {
  format: typeof REPOSITORY_FORMAT;
  version: number;
  /** 32 hex characters, random at init. */
  repositoryId: string;
  /** Key id (hex) of the master key: a supplied key must match it. */
  keyId: string;
  created: string;
  chunker: { minSize: number; avgSize: number; maxSize: number };
  packTargetSize: number;
  /** The cloud tier: `file://` URL, a path relative to the data directory, or `s3://BUCKET/PREFIX`. */
  bucket: string;
  /** Settings of an s3:// bucket (endpoint, region, path style, ...; never credentials). */
  s3?: S3Settings;
  /** Local and secondary tiers, pins (tiering.ts). */
  tiers?: TiersConfig;
  /** The event log; default embedded (DATA/events). */
  events?: EventsConfig;
  /**
   * Checkpoints in the bucket from history a recovery voided (after a gap, or later than its
   * --to-time): written by `stowage recover`; gc and later recoveries ignore them.
   */
  abandonedCheckpoints?: string[];
}

export interface InitOptions {
  /** Seal a fresh master key under this passphrase (writes DATA/key and a copy in the bucket). */
  passphrase?: string;
  /** Use these keys instead of generating one (e.g. from STOWAGE_MASTER_KEY); no key file unless a passphrase is given too. */
  keys?: RepositoryKeys;
  chunker?: Partial<RepositoryConfig["chunker"]>;
  packTargetSize?: number;
  /** Key-file KDF cost (tests lower it). */
  keyFile?: KeyFileOptions;
  /** The cloud tier (default `bucket`, i.e. DATA/bucket). */
  bucket?: string;
  s3?: S3Settings;
  tiers?: TiersConfig;
  events?: EventsConfig;
}

export interface OpenOptions extends ObjectStoreOptions {
  /** Opens DATA/key. */
  passphrase?: string;
  /** Keys supplied directly; checked against the repository's key id. */
  keys?: RepositoryKeys;
  /**
   * Run the background services (`stowage serve`): open the configured event log, and let
   * {@link Repository.startServices} start the outbox relay and the tier workers. Default false.
   */
  services?: boolean;
  /** An event log to use instead of the configured one (tests). */
  eventLog?: EventLog;
  /** Wraps each tier's backend as it is opened (tests inject faults or count requests). */
  wrapBackend?: (tier: "cloud" | "local" | "secondary", backend: BlobBackend) => BlobBackend;
  /** Told about failures of background work (tier workers, the outbox relay), which is retried. */
  onBackgroundError?: (err: unknown, context: string) => void;
  /** Options of the tier manager beyond the configuration (tests: intervals, clock). */
  tierOptions?: Partial<Pick<TierManagerOptions, "purgeIntervalMs" | "pollWaitMs" | "retryBaseMs" | "retryMaxMs" | "onError">>;
  /**
   * With services running and the journal on: write a metadata checkpoint once this many journal
   * entries accumulated since the last one (default 100,000), or after `checkpointIntervalMs`
   * (default 6 h) if any did. 0 turns periodic checkpoints off.
   */
  checkpointEntries?: number;
  checkpointIntervalMs?: number;
}

/** An open repository: its configuration, keys, tiers, metadata, events and the object store on top. */
export class Repository {
  #servicesRunning = false;
  #unsubscribe: (() => void) | undefined;
  /** Tier totals of earlier runs (DATA/tier-totals.json), read when services start. */
  #baseline: Promise<TierTotals> | undefined;
  #totalsTimer: NodeJS.Timeout | undefined;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #checkpointRunning = false;
  #checkpointDone: Promise<void> = Promise.resolve();
  /** Journal index and time of the last checkpoint this run wrote (or of the start). */
  #lastCheckpoint: { index: number; time: number } | undefined;
  /** Set by openRepository: periodic checkpoint settings and where background errors go. */
  background: { checkpointEntries: number; checkpointIntervalMs: number; onError?: (err: unknown, context: string) => void } = {
    checkpointEntries: 100_000,
    checkpointIntervalMs: 6 * 3600_000,
  };

  constructor(
    readonly dir: string,
    readonly config: RepositoryConfig,
    readonly keys: RepositoryKeys,
    /** The cloud tier's backend (as opened, before the tier manager's counting). */
    readonly backend: BlobBackend,
    readonly meta: MetadataStore,
    readonly store: ObjectStore,
    readonly tiers: TierManager,
    readonly events: EventLog,
    readonly relay: OutboxRelay,
    /** Every backend opened for the tiers (closed last). */
    private readonly backends: readonly BlobBackend[],
  ) {}

  /** Starts the outbox relay and the tier workers (hydrator, uploader, secondary copier, purge). */
  startServices(): void {
    if (this.#servicesRunning) return;
    this.#servicesRunning = true;
    this.#unsubscribe = this.store.onEvents(() => this.relay.notify());
    this.relay.start();
    this.tiers.start();
    this.#baseline = readTierTotals(this.dir);
    this.#totalsTimer = setInterval(() => void this.#saveTotals(), TOTALS_INTERVAL_MS);
    this.#totalsTimer.unref();
    if (this.store.options.journal && this.background.checkpointEntries > 0) {
      this.#checkpointTimer = setInterval(() => {
        if (!this.#checkpointRunning) this.#checkpointDone = this.#maybeCheckpoint();
      }, Math.min(CHECKPOINT_CHECK_MS, this.background.checkpointIntervalMs));
      this.#checkpointTimer.unref();
    }
  }

  /** A checkpoint when enough journal entries accumulated, or enough time passed with some. */
  async #maybeCheckpoint(): Promise<void> {
    if (this.#checkpointRunning) return;
    this.#checkpointRunning = true;
    try {
      const index = await this.meta.journalIndex();
      const now = Date.now();
      this.#lastCheckpoint ??= { index: 0, time: now };
      const since = index - this.#lastCheckpoint.index;
      if (since >= this.background.checkpointEntries || (since > 0 && now - this.#lastCheckpoint.time >= this.background.checkpointIntervalMs)) {
        const c = await this.store.checkpoint();
        this.#lastCheckpoint = { index: c.index, time: now };
      }
    } catch (err) {
      this.background.onError?.(err, "checkpoint");
    } finally {
      this.#checkpointRunning = false;
    }
  }

  /** Adds this run's tier counts to the totals of earlier runs, in DATA/tier-totals.json (best effort). */
  async #saveTotals(): Promise<void> {
    if (this.#baseline === undefined) return;
    try {
      await writeTierTotals(this.dir, addTierStats(await this.#baseline, await this.tiers.stats()));
    } catch {
      // Advisory bookkeeping: the next interval, or the next run, writes it again.
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#totalsTimer);
    clearInterval(this.#checkpointTimer);
    await this.#checkpointDone;
    const steps: Array<() => Promise<unknown>> = [
      () => this.tiers.stop(),
      () => this.#saveTotals(),
      async () => {
        this.#unsubscribe?.();
        if (this.#servicesRunning) await this.relay.stop();
      },
      () => this.store.close(),
      // Events the store committed during close (its last packs) reach the log when it can take them.
      async () => (this.#servicesRunning ? this.relay.flush().catch(() => undefined) : undefined),
      () => this.meta.close(),
      () => this.events.close(),
      ...this.backends.map((b) => () => b.close()),
    ];
    let first: unknown;
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }
}

/** True when `path` exists (file or directory). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes `data` to `path` atomically and durably (temporary file, fsync, rename). */
export async function writeFileDurably(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
  const fh = await openFile(tmp, "w", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export function checkChunker(c: RepositoryConfig["chunker"]): void {
  const ok =
    Number.isInteger(c.minSize) && Number.isInteger(c.avgSize) && Number.isInteger(c.maxSize) && c.minSize >= 64 && c.minSize <= c.avgSize && c.avgSize <= c.maxSize && c.maxSize <= 64 * 1024 * 1024;
  if (!ok) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `chunker sizes must satisfy 64 <= min <= avg <= max <= 64 MiB (got ${JSON.stringify(c)})`);
}

/** Creates a repository in `dir` (created if missing). Fails with STOWAGE_REPO_EXISTS if one is there. */
export async function initRepository(dir: string, options: InitOptions): Promise<RepositoryConfig> {
  dir = resolve(dir);
  if (options.passphrase === undefined && options.keys === undefined) {
    throw new StowageError("STOWAGE_NO_KEY", "init needs a passphrase (STOWAGE_PASSPHRASE) or a master key (STOWAGE_MASTER_KEY)");
  }
  await mkdir(dir, { recursive: true });
  if (await exists(join(dir, CONFIG_FILE))) {
    throw new StowageError("STOWAGE_REPO_EXISTS", `${dir} already holds a Stowage repository`);
  }
  const chunker = {
    minSize: options.chunker?.minSize ?? DEFAULT_MIN_SIZE,
    avgSize: options.chunker?.avgSize ?? DEFAULT_AVG_SIZE,
    maxSize: options.chunker?.maxSize ?? DEFAULT_MAX_SIZE,
  };
  checkChunker(chunker);
  const packTargetSize = options.packTargetSize ?? DEFAULT_PACK_SIZE;
  if (!Number.isInteger(packTargetSize) || packTargetSize < 4096 || packTargetSize > 512 * 1024 * 1024) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "packTargetSize must be between 4 KiB and 512 MiB");
  }

  let keys = options.keys;
  let keyFile: Uint8Array | undefined;
  if (options.passphrase !== undefined) {
    if (keys === undefined) {
      const created = await createKeyFile(options.passphrase, options.keyFile);
      keys = created.keys;
      keyFile = created.file;
    } else {
      keyFile = await sealKeyFile(keys, options.passphrase, options.keyFile);
    }
  }
  if (keys === undefined) throw new StowageError("STOWAGE_NO_KEY", "no key");

  const config: RepositoryConfig = {
    format: REPOSITORY_FORMAT,
    version: REPOSITORY_VERSION,
    repositoryId: randomBytes(16).toString("hex"),
    keyId: keys.keyIdHex,
    created: new Date().toISOString(),
    chunker,
    packTargetSize,
    bucket: options.bucket ?? "bucket",
    ...(options.s3 === undefined ? {} : { s3: options.s3 }),
    ...(options.tiers === undefined ? {} : { tiers: options.tiers }),
    ...(options.events === undefined ? {} : { events: options.events }),
  };
  checkTiering(config);
  const backend = await openLocation(config.bucket, dir, config.s3);
  try {
    if (keyFile !== undefined) {
      await backend.put(`keys/${config.keyId}`, keyFile);
      await writeFileDurably(join(dir, KEY_FILE), keyFile);
    }
    // What `stowage recover` needs besides the key and the packs (no secrets: plain JSON).
    await backend.put(DESCRIPTOR_KEY, Buffer.from(JSON.stringify(descriptorOf(config), null, 2) + "\n", "utf8"));
  } finally {
    await backend.close();
  }
  const meta = await openKvMetadataStore(join(dir, "meta"));
  await meta.close();
  // The configuration goes last: its presence marks a complete repository.
  await writeFileDurably(join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + "\n");
  return config;
}

/** Reads and checks DATA/stowage.json. */
export async function readConfig(dir: string): Promise<RepositoryConfig> {
  const path = join(resolve(dir), CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new StowageError("STOWAGE_REPO_NOT_FOUND", `no Stowage repository in ${resolve(dir)} (run \`stowage init\`)`);
    }
    throw new StowageError("STOWAGE_BACKEND_IO", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new StowageError("STOWAGE_KEY_FORMAT", `${path} is not valid JSON: the repository configuration is damaged`);
  }
  const c = parsed as Partial<RepositoryConfig>;
  if (c.format !== REPOSITORY_FORMAT) throw new StowageError("STOWAGE_REPO_NOT_FOUND", `${path} is not a Stowage repository configuration`);
  if (typeof c.version !== "number" || c.version > REPOSITORY_VERSION) {
    throw new StowageError("STOWAGE_FORMAT_VERSION", `repository format version ${String(c.version)} is newer than this build understands (${REPOSITORY_VERSION})`);
  }
  if (typeof c.keyId !== "string" || typeof c.bucket !== "string" || c.chunker === undefined || typeof c.packTargetSize !== "number") {
    throw new StowageError("STOWAGE_KEY_FORMAT", `${path} is missing fields: the repository configuration is damaged`);
  }
  checkChunker(c.chunker);
  try {
    checkTiering(c);
  } catch (err) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${path}: ${(err as Error).message}`);
  }
  return c as RepositoryConfig;
}

/**
 * The repository's keys: `options.keys`, else STOWAGE_MASTER_KEY, else DATA/key opened with the
 * passphrase. Errors: STOWAGE_NO_KEY, STOWAGE_WRONG_KEY, STOWAGE_BAD_PASSPHRASE, STOWAGE_KEY_FORMAT.
 */
export async function loadKeys(dir: string, config: RepositoryConfig, options: { passphrase?: string; keys?: RepositoryKeys }): Promise<RepositoryKeys> {
  const supplied = options.keys ?? keysFromEnvironment();
  if (supplied !== undefined) {
    if (supplied.keyIdHex !== config.keyId) {
      throw new StowageError("STOWAGE_WRONG_KEY", `the master key supplied (key id ${supplied.keyIdHex}) is not this repository's (key id ${config.keyId})`);
    }
    return supplied;
  }
  if (options.passphrase === undefined) {
    const unsealed = await readMasterKeyFile(dir);
    if (unsealed !== undefined) {
      if (unsealed.keyIdHex !== config.keyId) throw new StowageError("STOWAGE_WRONG_KEY", `${join(resolve(dir), MASTER_KEY_FILE)} holds a key that is not this repository's`);
      return unsealed;
    }
    throw new StowageError("STOWAGE_NO_KEY", "this repository's key is sealed: set STOWAGE_PASSPHRASE (or STOWAGE_MASTER_KEY)");
  }
  let file: Buffer;
  try {
    file = await readFile(join(resolve(dir), KEY_FILE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new StowageError("STOWAGE_NO_KEY", `${join(resolve(dir), KEY_FILE)} is missing: this repository's key must be supplied with STOWAGE_MASTER_KEY`);
    }
    throw err;
  }
  return openKeyFile(file, options.passphrase);
}

/** The keys in DATA/master.key, if that file exists. */
export async function readMasterKeyFile(dir: string): Promise<RepositoryKeys | undefined> {
  let text: string;
  try {
    text = await readFile(join(resolve(dir), MASTER_KEY_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  return keysFromMasterKey(parseMasterKey(text));
}

/** Writes DATA/master.key (mode 0600) for the zero-configuration start; see {@link MASTER_KEY_FILE}. */
export async function writeMasterKeyFile(dir: string, keys: RepositoryKeys): Promise<void> {
  await mkdir(resolve(dir), { recursive: true });
  await writeFileDurably(join(resolve(dir), MASTER_KEY_FILE), formatMasterKey(keys) + "\n");
}

/** True when `dir` holds a repository configuration. */
export async function repositoryExists(dir: string): Promise<boolean> {
  return exists(join(resolve(dir), CONFIG_FILE));
}

/** Opens the repository in `dir`. */
export async function openRepository(dir: string, options: OpenOptions = {}): Promise<Repository> {
  dir = resolve(dir);
  const config = await readConfig(dir);
  const keys = await loadKeys(dir, config, options);
  const wrap = options.wrapBackend ?? ((_tier, b) => b);
  const opened: BlobBackend[] = [];
  const cleanup: Array<{ close(): Promise<void> }> = [];
  try {
    const cloud = await openLocation(config.bucket, dir, config.s3);
    opened.push(cloud);
    const { local, secondary } = await openTierBackends(config.tiers, dir);
    if (local !== undefined) opened.push(local);
    if (secondary !== undefined) opened.push(secondary);
    const meta = await openKvMetadataStore(join(dir, "meta"));
    cleanup.push(meta);
    const events = options.eventLog ?? (options.services === true ? await openEventLog(config.events, dir) : new MemoryEventLog());
    cleanup.push(events);
    const ref: { store?: ObjectStore } = {};
    const storeOf = (): ObjectStore => {
      if (ref.store === undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the object store is not open yet");
      return ref.store;
    };
    const localTier = config.tiers?.local;
    const tiers = await TierManager.open({
      cloud: wrap("cloud", cloud),
      ...(local === undefined || localTier === undefined
        ? {}
        : {
            local: {
              backend: wrap("local", local),
              capacityBytes: localTier.capacityBytes,
              ...(localTier.highWatermark === undefined ? {} : { highWatermark: localTier.highWatermark }),
              ...(localTier.lowWatermark === undefined ? {} : { lowWatermark: localTier.lowWatermark }),
            },
          }),
      ...(secondary === undefined ? {} : { secondary: wrap("secondary", secondary) }),
      events,
      ...(config.tiers?.readHydrate === undefined ? {} : { readHydrate: config.tiers.readHydrate }),
      ...(config.tiers?.pins === undefined || config.tiers.pins.length === 0 ? {} : { pins: config.tiers.pins }),
      packsOf: (bucket, prefix) => storeOf().packsOf(bucket, prefix),
      markPackUploaded: async (blobKey) => {
        await storeOf().markPackUploaded(blobKey);
      },
      ...(options.onBackgroundError === undefined ? {} : { onError: options.onBackgroundError }),
      ...options.tierOptions,
    });
    const {
      services: _services,
      eventLog: _eventLog,
      wrapBackend: _wrap,
      tierOptions: _tierOptions,
      onBackgroundError,
      passphrase: _p,
      keys: _k,
      checkpointEntries: _ce,
      checkpointIntervalMs: _ci,
      ...storeOptions
    } = options;
    const store = new ObjectStore(meta, tiers.cloudFirst, keys, {
      chunker: config.chunker,
      packTargetSize: config.packTargetSize,
      ...(config.abandonedCheckpoints === undefined ? {} : { ignoredCheckpoints: config.abandonedCheckpoints }),
      // The metadata journal (docs/RECOVERY.md): on unless turned off (the option, or STOWAGE_JOURNAL=0).
      journal: process.env.STOWAGE_JOURNAL !== "0",
      ...(tiers.writeBack === undefined ? {} : { writeBackBackend: tiers.writeBack }),
      ...storeOptions,
    });
    ref.store = store;
    const relay = new OutboxRelay(meta, events, onBackgroundError === undefined ? {} : { onError: (err) => onBackgroundError(err, "outbox relay") });
    const repo = new Repository(dir, config, keys, cloud, meta, store, tiers, events, relay, opened);
    repo.background = {
      checkpointEntries: options.checkpointEntries ?? 100_000,
      checkpointIntervalMs: options.checkpointIntervalMs ?? 6 * 3600_000,
      ...(onBackgroundError === undefined ? {} : { onError: onBackgroundError }),
    };
    return repo;
  } catch (err) {
    for (const c of [...cleanup].reverse()) await c.close().catch(() => undefined);
    for (const b of opened) await b.close().catch(() => undefined);
    throw err;
  }
}
