/**
 * The repository's tier and event-log settings (in DATA/stowage.json) and how they are opened:
 * the cloud tier (the repository's `bucket`), an optional local tier with a capacity, an optional
 * secondary tier, pins, and the event log (embedded in DATA/events by default, or Kafka).
 *
 *   "bucket": "s3://media/stowage",                  the cloud tier (see locations.ts)
 *   "s3": { "endpoint": "http://127.0.0.1:9000", "forcePathStyle": true },
 *   "tiers": {
 *     "local": { "path": "/mnt/nvme/stowage", "capacityBytes": 2000000000000,
 *                "highWatermark": 0.9, "lowWatermark": 0.75 },
 *     "secondary": { "bucket": "s3://media-dr/stowage", "s3": { "region": "eu-west-1" } },
 *     "pins": [ { "bucket": "projects", "prefix": "current/" } ],
 *     "readHydrate": true
 *   },
 *   "events": { "kind": "kafka", "brokers": ["127.0.0.1:9092"], "topic": "stowage-events" }
 */
import { join } from "node:path";
import { StowageError } from "../errors.js";
import type { BlobBackend } from "../backend/backend.js";
import { LocalBackend } from "../backend/local.js";
import type { EventLog } from "../events/types.js";
import { EmbeddedEventLog } from "../events/embedded.js";
import type { TierPin } from "../tier/config.js";
import { localPath, openLocation, type S3Settings } from "./locations.js";

export interface LocalTierConfig {
  /** Directory of the local copies: absolute, `file://` URL, or relative to the data directory. */
  path: string;
  capacityBytes: number;
  highWatermark?: number;
  lowWatermark?: number;
}

export interface TiersConfig {
  local?: LocalTierConfig;
  secondary?: { bucket: string; s3?: S3Settings };
  pins?: TierPin[];
  /** Hydrate packs that reads fetched from the cloud. Default true with a local tier. */
  readHydrate?: boolean;
}

export type EventsConfig = { kind: "embedded" } | { kind: "kafka"; brokers: string[]; topic?: string; partitions?: number; replicationFactor?: number };

/** The directory of the embedded event log, inside the data directory. */
export const EVENTS_DIR = "events";

function invalid(message: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", `repository configuration: ${message}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function checkS3(v: unknown, where: string): void {
  if (v === undefined) return;
  if (!isObject(v)) throw invalid(`${where} must be an object`);
  for (const [k, x] of Object.entries(v)) {
    if (k === "forcePathStyle" || k === "hashedPrefixes") {
      if (typeof x !== "boolean") throw invalid(`${where}.${k} must be true or false`);
    } else if (k === "endpoint" || k === "region" || k === "storageClass") {
      if (typeof x !== "string" || x === "") throw invalid(`${where}.${k} must be a non-empty string`);
    } else throw invalid(`${where}: unknown setting ${JSON.stringify(k)}`);
  }
}

/** Validates `tiers` and `events` as read from stowage.json; throws STOWAGE_INVALID_ARGUMENT naming the field. */
export function checkTiering(c: { s3?: unknown; tiers?: unknown; events?: unknown }): void {
  checkS3(c.s3, "s3");
  if (c.tiers !== undefined) {
    const t = c.tiers;
    if (!isObject(t)) throw invalid("tiers must be an object");
    for (const k of Object.keys(t)) if (!["local", "secondary", "pins", "readHydrate"].includes(k)) throw invalid(`tiers: unknown setting ${JSON.stringify(k)}`);
    if (t.local !== undefined) {
      const l = t.local;
      if (!isObject(l)) throw invalid("tiers.local must be an object");
      if (typeof l.path !== "string" || l.path === "") throw invalid("tiers.local.path must be a directory");
      if (typeof l.capacityBytes !== "number" || !Number.isSafeInteger(l.capacityBytes) || l.capacityBytes <= 0) throw invalid("tiers.local.capacityBytes must be a positive integer");
      for (const w of ["highWatermark", "lowWatermark"]) {
        const x = l[w];
        if (x !== undefined && (typeof x !== "number" || !(x >= 0 && x <= 1))) throw invalid(`tiers.local.${w} must be a number in [0, 1]`);
      }
    }
    if (t.secondary !== undefined) {
      const s = t.secondary;
      if (!isObject(s) || typeof s.bucket !== "string" || s.bucket === "") throw invalid("tiers.secondary must be { bucket: URL }");
      checkS3(s.s3, "tiers.secondary.s3");
    }
    if (t.pins !== undefined) {
      if (!Array.isArray(t.pins)) throw invalid("tiers.pins must be a list");
      for (const p of t.pins as unknown[]) {
        if (!isObject(p) || typeof p.bucket !== "string" || p.bucket === "" || (p.prefix !== undefined && typeof p.prefix !== "string")) {
          throw invalid("each of tiers.pins must be { bucket, prefix? }");
        }
      }
    }
    if (t.readHydrate !== undefined && typeof t.readHydrate !== "boolean") throw invalid("tiers.readHydrate must be true or false");
  }
  if (c.events !== undefined) {
    const e = c.events;
    if (!isObject(e)) throw invalid("events must be an object");
    if (e.kind === "kafka") {
      if (!Array.isArray(e.brokers) || e.brokers.length === 0 || !e.brokers.every((b) => typeof b === "string" && /^[^:\s]+:\d+$/.test(b))) {
        throw invalid('events.brokers must be a list of "host:port"');
      }
      if (e.topic !== undefined && (typeof e.topic !== "string" || !/^[A-Za-z0-9._-]{1,249}$/.test(e.topic))) throw invalid("events.topic is not a valid Kafka topic name");
    } else if (e.kind !== "embedded") throw invalid('events.kind must be "embedded" or "kafka"');
  }
}

/** Parses `kafka://host:port[,host:port...]/topic` (the `--events` flag). */
export function parseEventsUrl(url: string): EventsConfig {
  if (url === "embedded") return { kind: "embedded" };
  const m = /^kafka:\/\/([^/]+)(?:\/([^/]*))?$/.exec(url);
  if (m === null) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `events must be "embedded" or kafka://HOST:PORT[,HOST:PORT...]/TOPIC, got ${JSON.stringify(url)}`);
  const config: EventsConfig = { kind: "kafka", brokers: m[1]!.split(","), ...(m[2] === undefined || m[2] === "" ? {} : { topic: m[2] }) };
  checkTiering({ events: config });
  return config;
}

/** Opens the configured event log (the embedded one in DATA/events by default). */
export async function openEventLog(config: EventsConfig | undefined, dataDir: string): Promise<EventLog> {
  if (config === undefined || config.kind === "embedded") return EmbeddedEventLog.open(join(dataDir, EVENTS_DIR));
  // Loaded only when Kafka is configured: its client costs every command ~0.6 s of start-up.
  const { KafkaEventLog } = await import("../events/kafka.js");
  return KafkaEventLog.open({
    brokers: config.brokers,
    ...(config.topic === undefined ? {} : { topic: config.topic }),
    ...(config.partitions === undefined ? {} : { partitions: config.partitions }),
    ...(config.replicationFactor === undefined ? {} : { replicationFactor: config.replicationFactor }),
  });
}

/** Opens the local and secondary tiers named in `tiers` (whichever are configured). */
export async function openTierBackends(tiers: TiersConfig | undefined, dataDir: string): Promise<{ local?: BlobBackend; secondary?: BlobBackend }> {
  const out: { local?: BlobBackend; secondary?: BlobBackend } = {};
  try {
    if (tiers?.local !== undefined) out.local = await LocalBackend.open(localPath(tiers.local.path, dataDir));
    if (tiers?.secondary !== undefined) out.secondary = await openLocation(tiers.secondary.bucket, dataDir, tiers.secondary.s3);
  } catch (err) {
    await out.local?.close();
    throw err;
  }
  return out;
}
