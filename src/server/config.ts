/**
 * `stowage serve` settings: defaults < config file (`--config FILE`, JSON) < environment < flags.
 *
 * | setting | flag | environment | default |
 * |---|---|---|---|
 * | address | `--address` | `STOWAGE_ADDRESS` | `127.0.0.1` |
 * | port | `--port` | `STOWAGE_PORT` | `9000` |
 * | region | `--region` | `STOWAGE_REGION` | `us-east-1` |
 * | domains (virtual-hosted style) | `--domain` (repeatable) | `STOWAGE_DOMAINS` (comma-separated) | `localhost` |
 * | log level | `--log-level` | `STOWAGE_LOG_LEVEL` | `info` |
 * | group-commit delay, ms (only while other uploads are streaming) | `--commit-delay` | `STOWAGE_COMMIT_DELAY_MS` | `200` |
 * | chunk cache, bytes | `--cache-bytes` | `STOWAGE_CACHE_BYTES` | 64 MiB |
 */
import { readFile } from "node:fs/promises";
import { StowageError } from "../errors.js";

export interface ServeConfig {
  address: string;
  port: number;
  region: string;
  domains: string[];
  logLevel: string;
  commitDelayMs: number;
  cacheBytes: number;
}

export const SERVE_DEFAULTS: Readonly<ServeConfig> = Object.freeze({
  address: "127.0.0.1",
  port: 9000,
  region: "us-east-1",
  domains: ["localhost"],
  logLevel: "info",
  commitDelayMs: 200,
  cacheBytes: 64 * 1024 * 1024,
});

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export interface ServeFlags {
  config?: string;
  address?: string;
  port?: string;
  region?: string;
  domain?: string[];
  logLevel?: string;
  commitDelay?: string;
  cacheBytes?: string;
}

function int(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === "number" ? value : typeof value === "string" && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
  return n;
}

export async function resolveServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): Promise<ServeConfig> {
  let file: Partial<Record<keyof ServeConfig, unknown>> = {};
  if (flags.config !== undefined) {
    let text: string;
    try {
      text = await readFile(flags.config, "utf8");
    } catch (err) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `cannot read config file ${flags.config}: ${(err as Error).message}`);
    }
    try {
      file = JSON.parse(text) as typeof file;
    } catch {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `config file ${flags.config} is not valid JSON`);
    }
    const known = Object.keys(SERVE_DEFAULTS);
    for (const k of Object.keys(file)) if (!known.includes(k)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `config file ${flags.config}: unknown setting ${JSON.stringify(k)}`);
  }
  const pick = (flag: unknown, envName: string, key: keyof ServeConfig): unknown => flag ?? env[envName] ?? file[key] ?? SERVE_DEFAULTS[key];
  const domainsRaw = flags.domain ?? (env.STOWAGE_DOMAINS !== undefined ? env.STOWAGE_DOMAINS.split(",") : undefined) ?? file.domains ?? SERVE_DEFAULTS.domains;
  if (!Array.isArray(domainsRaw) || !domainsRaw.every((d) => typeof d === "string")) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "domains must be a list of host names");
  const logLevel = String(pick(flags.logLevel, "STOWAGE_LOG_LEVEL", "logLevel"));
  if (!LEVELS.includes(logLevel)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `log level must be one of ${LEVELS.join(", ")}`);
  return {
    address: String(pick(flags.address, "STOWAGE_ADDRESS", "address")),
    port: int(pick(flags.port, "STOWAGE_PORT", "port"), "port", 0, 65535),
    region: String(pick(flags.region, "STOWAGE_REGION", "region")),
    domains: (domainsRaw as string[]).map((d) => d.trim().toLowerCase()).filter((d) => d !== ""),
    logLevel,
    commitDelayMs: int(pick(flags.commitDelay, "STOWAGE_COMMIT_DELAY_MS", "commitDelayMs"), "commit delay", 0, 60_000),
    cacheBytes: int(pick(flags.cacheBytes, "STOWAGE_CACHE_BYTES", "cacheBytes"), "cache bytes", 0, 2 ** 40),
  };
}
