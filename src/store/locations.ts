/**
 * Where a tier lives, named by a URL, and how to open it:
 *
 * - `file:///ABSOLUTE/PATH`: a local directory acting as the bucket (LocalBackend).
 * - a path without a scheme: a local directory relative to the data directory (the embedded
 *   default is `bucket`, i.e. DATA/bucket).
 * - `s3://BUCKET/PREFIX`: an S3-compatible bucket (S3Backend over the AWS SDK v3, behind
 *   RetryingBackend: jittered exponential backoff and adaptive concurrency). Its settings come from
 *   the repository configuration (`s3` below), else the environment: `STOWAGE_S3_ENDPOINT`,
 *   `STOWAGE_S3_REGION` (else `AWS_REGION`, else us-east-1), `STOWAGE_S3_PATH_STYLE=1`,
 *   `STOWAGE_S3_STORAGE_CLASS`. Credentials never live in the configuration file: they are
 *   `STOWAGE_S3_ACCESS_KEY` + `STOWAGE_S3_SECRET_KEY` when set, else the SDK's default chain
 *   (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
 */
import { isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StowageError } from "../errors.js";
import type { BlobBackend } from "../backend/backend.js";
import { LocalBackend } from "../backend/local.js";
import { RetryingBackend } from "../backend/retry.js";

/** Settings of an S3-compatible bucket that are not part of its URL (all optional). */
export interface S3Settings {
  /** Service URL, e.g. `http://127.0.0.1:9000`. Default: AWS, from the region. */
  endpoint?: string;
  region?: string;
  /** Path-style requests (`endpoint/bucket/key`), which most non-AWS services need. */
  forcePathStyle?: boolean;
  /** Storage class of the blobs written (e.g. `STANDARD_IA`). */
  storageClass?: string;
  /** Spread pack keys over 256 hashed key prefixes. Default true. */
  hashedPrefixes?: boolean;
}

export type LocationKind = "file" | "s3";

/** What kind of location `url` names; throws STOWAGE_INVALID_ARGUMENT for an unknown scheme. */
export function locationKind(url: string): LocationKind {
  if (url.startsWith("s3://")) return "s3";
  if (url.startsWith("file://") || !/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(url)) return "file";
  throw new StowageError("STOWAGE_INVALID_ARGUMENT", `unsupported bucket URL ${JSON.stringify(url)}: use file:///PATH, a path, or s3://BUCKET/PREFIX`);
}

/** The directory a `file` location names (relative paths are inside `dataDir`). */
export function localPath(url: string, dataDir: string): string {
  if (url.startsWith("file://")) {
    try {
      return fileURLToPath(url);
    } catch (err) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `bad file URL ${JSON.stringify(url)}: ${(err as Error).message}`);
    }
  }
  return isAbsolute(url) ? url : join(dataDir, url);
}

/** The S3 settings in effect: the configuration's, else the environment's. */
export function resolveS3Settings(s3: S3Settings = {}, env: NodeJS.ProcessEnv = process.env): S3Settings {
  const out: S3Settings = { hashedPrefixes: s3.hashedPrefixes ?? true };
  const endpoint = s3.endpoint ?? (env.STOWAGE_S3_ENDPOINT || undefined);
  if (endpoint !== undefined) out.endpoint = endpoint;
  const region = s3.region ?? (env.STOWAGE_S3_REGION || env.AWS_REGION || undefined);
  if (region !== undefined) out.region = region;
  const pathStyle = s3.forcePathStyle ?? (env.STOWAGE_S3_PATH_STYLE === undefined ? undefined : /^(1|true|yes)$/i.test(env.STOWAGE_S3_PATH_STYLE));
  if (pathStyle !== undefined) out.forcePathStyle = pathStyle;
  const storageClass = s3.storageClass ?? (env.STOWAGE_S3_STORAGE_CLASS || undefined);
  if (storageClass !== undefined) out.storageClass = storageClass;
  return out;
}

/** Opens the backend a location URL names (see the module comment). */
export async function openLocation(url: string, dataDir: string, s3: S3Settings = {}, env: NodeJS.ProcessEnv = process.env): Promise<BlobBackend> {
  if (locationKind(url) === "file") return LocalBackend.open(localPath(url, dataDir));
  // Loaded only when a bucket is in S3: the AWS SDK costs every command ~0.2 s of start-up.
  const { S3Backend, parseBucketUrl } = await import("../backend/s3.js");
  parseBucketUrl(url); // a clear error for a malformed URL, before any request
  const settings = resolveS3Settings(s3, env);
  const accessKeyId = env.STOWAGE_S3_ACCESS_KEY;
  const secretAccessKey = env.STOWAGE_S3_SECRET_KEY;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "set both STOWAGE_S3_ACCESS_KEY and STOWAGE_S3_SECRET_KEY, or neither");
  }
  const backend = S3Backend.fromUrl(url, {
    ...settings,
    ...(accessKeyId === undefined || secretAccessKey === undefined ? {} : { credentials: { accessKeyId, secretAccessKey } }),
  });
  return new RetryingBackend(backend);
}
