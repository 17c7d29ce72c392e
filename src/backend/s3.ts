/**
 * The S3 backend: blobs as objects in a bucket of any S3-compatible service (AWS SDK v3).
 *
 *   const b = new S3Backend({ bucket: "media", prefix: "stowage", endpoint: "http://127.0.0.1:9000",
 *     credentials: { accessKeyId, secretAccessKey }, forcePathStyle: true });
 *   const c = S3Backend.fromUrl("s3://media/stowage", { endpoint, credentials });
 *   const safe = new RetryingBackend(b);   // this backend does not retry by itself
 *
 * Layout: blob key `k` is the object `<prefix>/k` (just `k` without a prefix). With
 * `hashedPrefixes`, keys starting with one of those prefixes (`true` = `["packs/"]`, `[""]` = every
 * key) are stored as `<prefix>/<hh>/k`, `hh` being the first byte of SHA-256(k) in two lower-case
 * hex digits, so that writes spread over 256 key ranges (S3 scales request rates per key prefix).
 * A key that is not hashed but has the shape `hh/<a key that is hashed>` would collide with a
 * hashed key's object, so such keys are refused with `STOWAGE_INVALID_ARGUMENT`.
 *
 * `list(p)` returns logical keys in ascending byte order in every layout. Without hashing it is
 * one paged ListObjectsV2 of `<prefix>/p`. With hashing, when `p` can cover hashed keys it lists
 * the 256 shards `<prefix>/hh/p` (first pages fetched 16 at a time) and merges them; when `p` can
 * also cover unhashed keys, the unhashed listing `<prefix>/p` is merged in too, skipping objects
 * that belong to shards. So a list of a prefix that holds hashed keys costs at least 256 requests:
 * hash only what is listed rarely (packs: listed by the collector and recovery, never on the
 * data path).
 *
 * Requests: the SDK's own retries are off (`maxAttempts: 1`), wrap in {@link RetryingBackend}.
 * Connections are bounded (`maxSockets`, keep-alive). Blobs of `multipartThreshold` bytes and
 * more (64 MiB) go up as multipart uploads of `partSize` parts (16 MiB, at least 5 MiB as S3
 * requires; raised when 10 000 parts would not do), `partConcurrency` (4) at a time; a failed
 * multipart upload is aborted, and as only CompleteMultipartUpload makes the object appear,
 * nothing partial is ever visible. Ranged gets use the Range header; a range starting at or after
 * the end (S3: 416 InvalidRange) returns an empty buffer.
 *
 * Errors: NoSuchKey (404) -> `STOWAGE_BACKEND_NOT_FOUND`; everything else -> `STOWAGE_BACKEND_IO`
 * as a {@link BackendIoError} naming the operation, key, bucket and HTTP status, with the SDK
 * error as `cause`; throttling (503 SlowDown, 429, RequestTimeout, ...) has `throttled: true`,
 * and failures retrying cannot fix (NoSuchBucket, AccessDenied, InvalidAccessKeyId,
 * SignatureDoesNotMatch, other 4xx) have `retryable: false`.
 */
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { StowageError } from "../errors.js";
import { bodyParts, checkBlobKey, checkRange, isBlobKeySegment, notFound, type BlobBackend, type BlobInfo, type ByteRange } from "./backend.js";
import { BackendIoError } from "./retry.js";

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last), and most parts in one upload. */
export const S3_MIN_PART_SIZE = 5 * MiB;
export const S3_MAX_PARTS = 10_000;

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3BackendOptions {
  /** The bucket (must exist; see {@link S3Backend.ensureBucket}). */
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing `/`. Default: none. */
  prefix?: string;
  /** Service URL, e.g. `http://127.0.0.1:9000`. Default: AWS, from the region. */
  endpoint?: string;
  /** Default `us-east-1` (or AWS_REGION when set). */
  region?: string;
  /** Static keys; default: the SDK's credential chain (environment, profile, instance role...). */
  credentials?: S3Credentials;
  /** Path-style URLs (`endpoint/bucket/key`), needed by most non-AWS services. Default false. */
  forcePathStyle?: boolean;
  /** Storage class of stored objects (e.g. `STANDARD_IA`). Default: the bucket's default. */
  storageClass?: string;
  /** Connections open at once (HTTP keep-alive agent). Default 64. */
  maxSockets?: number;
  /** Reuse connections (HTTP keep-alive). Default true. */
  keepAlive?: boolean;
  /** Whole-request timeout in ms (request and response). Default 300 000. 0 disables. */
  requestTimeoutMs?: number;
  /** Connection-establishment timeout in ms. Default 10 000. */
  connectTimeoutMs?: number;
  /** Blobs of this many bytes and more are uploaded in parts. Default 64 MiB. */
  multipartThreshold?: number;
  /** Bytes per part (at least 5 MiB). Default 16 MiB. */
  partSize?: number;
  /** Parts uploaded at once, per blob. Default 4. */
  partConcurrency?: number;
  /** Spread keys with these prefixes over 256 hashed key prefixes (see the module comment). */
  hashedPrefixes?: boolean | readonly string[];
}

/** The parts of an `s3://bucket/prefix` URL. */
export interface BucketUrl {
  bucket: string;
  /** Without leading or trailing `/`; empty for the whole bucket. */
  prefix: string;
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function invalid(message: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", message);
}

function checkPrefix(prefix: string, what: string): string {
  const p = prefix.replace(/^\/+|\/+$/g, "");
  if (p !== "" && !p.split("/").every(isBlobKeySegment)) throw invalid(`invalid ${what} ${JSON.stringify(prefix)}`);
  return p;
}

/** Parses `s3://bucket` or `s3://bucket/some/prefix` (a trailing `/` is ignored). */
export function parseBucketUrl(url: string): BucketUrl {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (m === null) throw invalid(`not an S3 bucket URL (s3://BUCKET/PREFIX): ${JSON.stringify(url)}`);
  const bucket = m[1] as string;
  if (!BUCKET_NAME.test(bucket) || bucket.includes("..")) throw invalid(`invalid S3 bucket name ${JSON.stringify(bucket)}`);
  return { bucket, prefix: checkPrefix(m[2] ?? "", "S3 key prefix") };
}

/** The shard of a hashed key: first byte of SHA-256(key) as two lower-case hex digits. */
export function keyShard(key: string): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 2);
}

const SHARDS: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const SHARD_HEAD = /^[0-9a-f]{2}\//;

/** Shard lists whose first page is fetched at once. */
const LIST_FANOUT = 16;

const THROTTLE_CODES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "BandwidthLimitExceeded",
  "RequestTimeout",
  "RequestTimeoutException",
  "ServiceUnavailable",
]);

const PERMANENT_CODES = new Set([
  "NoSuchBucket",
  "AccessDenied",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "InvalidBucketName",
  "AllAccessDisabled",
  "AccountProblem",
  "InvalidObjectState",
  "PermanentRedirect",
]);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $response?: { statusCode?: unknown };
}

function errorCode(err: unknown): string | undefined {
  const e = err as SdkErrorShape | null;
  if (e === null || typeof e !== "object") return undefined;
  if (typeof e.code === "string") return e.code; // Node network errors: ECONNREFUSED, ...
  return typeof e.name === "string" ? e.name : undefined;
}

function httpStatus(err: unknown): number | undefined {
  const e = err as SdkErrorShape | null;
  if (e === null || typeof e !== "object") return undefined;
  const s = e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
  return typeof s === "number" ? s : undefined;
}

/**
 * Maps an SDK or network error of `op` on `key` (the logical key or list prefix) to a
 * StowageError: NOT_FOUND for a missing key (when `missingKeyIsNotFound`), else a BackendIoError.
 */
export function mapS3Error(op: string, bucket: string, key: string, err: unknown, missingKeyIsNotFound = true): StowageError {
  if (err instanceof StowageError) return err;
  const code = errorCode(err);
  const status = httpStatus(err);
  if (missingKeyIsNotFound && (code === "NoSuchKey" || (code === "NotFound" && status === 404))) {
    return notFound(`s3://${bucket}`, key);
  }
  const throttled = status === 503 || status === 429 || (code !== undefined && THROTTLE_CODES.has(code));
  const permanent =
    !throttled &&
    ((code !== undefined && PERMANENT_CODES.has(code)) || (status !== undefined && status >= 400 && status < 500 && status !== 408));
  const raw = err as SdkErrorShape | null;
  const detail = raw !== null && typeof raw === "object" && typeof raw.message === "string" && raw.message !== "" && raw.message !== code && raw.message !== "UnknownError" ? `: ${raw.message}` : "";
  let hint = "";
  if (code === "NoSuchBucket") hint = ` (bucket ${JSON.stringify(bucket)} does not exist)`;
  else if (code === "InvalidAccessKeyId" || code === "SignatureDoesNotMatch") hint = " (check the access key and secret)";
  else if (code === "AccessDenied" || status === 403) hint = " (access denied: check the credentials and the bucket policy)";
  const name = code === undefined || code === "Unknown" ? (status === 403 ? "Forbidden" : "error") : code;
  const what = `${name}${status === undefined ? "" : ` (HTTP ${status})`}`;
  return new BackendIoError(
    `S3 ${op}${key === "" ? "" : ` ${JSON.stringify(key)}`} in bucket ${JSON.stringify(bucket)} failed: ${what}${detail}${hint}`,
    { throttled, retryable: !permanent, ...(status === undefined ? {} : { httpStatus: status }) },
    { cause: err },
  );
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return typeof x === "object" && x !== null && typeof (x as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === "function";
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** The bytes [start, end) of the concatenation of `parts`, copied into one buffer only when needed. */
function sliceParts(parts: readonly Uint8Array[], start: number, end: number): Buffer {
  const views: Buffer[] = [];
  let pos = 0;
  for (const p of parts) {
    const pEnd = pos + p.length;
    if (pEnd > start && pos < end) views.push(asBuffer(p).subarray(Math.max(0, start - pos), Math.min(p.length, end - pos)));
    pos = pEnd;
    if (pos >= end) break;
  }
  return views.length === 1 ? (views[0] as Buffer) : Buffer.concat(views, end - start);
}

/** A minimum-heap merge of sorted async sources by byte order of key. */
interface Source {
  head: { info: BlobInfo; raw: Buffer } | undefined;
  it: AsyncIterator<BlobInfo>;
}

async function* mergeSorted(sources: AsyncIterable<BlobInfo>[]): AsyncGenerator<BlobInfo> {
  const iters = sources.map((s) => s[Symbol.asyncIterator]());
  const heap: Source[] = [];
  const less = (a: Source, b: Source): boolean => Buffer.compare((a.head as { raw: Buffer }).raw, (b.head as { raw: Buffer }).raw) < 0;
  const push = (s: Source): void => {
    heap.push(s);
    for (let i = heap.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!less(heap[i] as Source, heap[parent] as Source)) break;
      [heap[i], heap[parent]] = [heap[parent] as Source, heap[i] as Source];
      i = parent;
    }
  };
  const pop = (): Source => {
    const top = heap[0] as Source;
    const last = heap.pop() as Source;
    if (heap.length > 0) {
      heap[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l] as Source, heap[m] as Source)) m = l;
        if (r < heap.length && less(heap[r] as Source, heap[m] as Source)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m] as Source, heap[i] as Source];
        i = m;
      }
    }
    return top;
  };
  const advance = async (s: Source): Promise<void> => {
    const r = await s.it.next();
    s.head = r.done === true ? undefined : { info: r.value, raw: Buffer.from(r.value.key) };
    if (s.head !== undefined) push(s);
  };
  try {
    // First pages: LIST_FANOUT sources at a time.
    const all = iters.map((it): Source => ({ head: undefined, it }));
    for (let i = 0; i < all.length; i += LIST_FANOUT) await Promise.all(all.slice(i, i + LIST_FANOUT).map(advance));
    while (heap.length > 0) {
      const s = pop();
      yield (s.head as { info: BlobInfo }).info;
      await advance(s);
    }
  } finally {
    await Promise.all(iters.map((it) => it.return?.().catch(() => undefined)));
  }
}

export class S3Backend implements BlobBackend {
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly multipartThreshold: number;
  readonly partSize: number;
  readonly partConcurrency: number;
  /** Logical key prefixes that are stored hashed (empty: none). */
  readonly hashedPrefixes: readonly string[];
  readonly #client: S3Client;
  readonly #storageClass: StorageClass | undefined;
  /** The object-key prefix: `prefix/`, or empty. */
  readonly #root: string;
  #bucketChecked = false;
  #closed = false;

  constructor(options: S3BackendOptions) {
    const { bucket } = options;
    if (typeof bucket !== "string" || bucket === "") throw invalid("S3 backend needs a bucket");
    this.bucket = bucket;
    this.prefix = checkPrefix(options.prefix ?? "", "S3 key prefix");
    this.#root = this.prefix === "" ? "" : `${this.prefix}/`;
    this.location = `s3://${bucket}${this.prefix === "" ? "" : `/${this.prefix}`}`;
    const int = (name: string, v: number | undefined, dflt: number, min: number): number => {
      if (v === undefined) return dflt;
      if (!Number.isSafeInteger(v) || v < min) throw invalid(`S3 option ${name} must be an integer >= ${min}, got ${v}`);
      return v;
    };
    this.multipartThreshold = int("multipartThreshold", options.multipartThreshold, 64 * MiB, 1);
    this.partSize = int("partSize", options.partSize, 16 * MiB, S3_MIN_PART_SIZE);
    this.partConcurrency = int("partConcurrency", options.partConcurrency, 4, 1);
    const maxSockets = int("maxSockets", options.maxSockets, 64, 1);
    const requestTimeout = int("requestTimeoutMs", options.requestTimeoutMs, 300_000, 0);
    const connectionTimeout = int("connectTimeoutMs", options.connectTimeoutMs, 10_000, 0);
    const hp = options.hashedPrefixes;
    this.hashedPrefixes = hp === undefined || hp === false ? [] : hp === true ? ["packs/"] : [...hp];
    for (const p of this.hashedPrefixes) {
      if (typeof p !== "string" || (p !== "" && !/^[A-Za-z0-9._/-]+$/.test(p))) throw invalid(`invalid hashed prefix ${JSON.stringify(p)}`);
    }
    this.#storageClass = options.storageClass as StorageClass | undefined;
    const agentOptions = { keepAlive: options.keepAlive ?? true, maxSockets };
    this.#client = new S3Client({
      region: options.region ?? process.env["AWS_REGION"] ?? "us-east-1",
      ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
      ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
      forcePathStyle: options.forcePathStyle ?? false,
      maxAttempts: 1, // RetryingBackend retries, with adaptive concurrency
      requestHandler: new NodeHttpHandler({
        httpAgent: new http.Agent(agentOptions),
        httpsAgent: new https.Agent(agentOptions),
        requestTimeout,
        throwOnRequestTimeout: true,
        connectionTimeout,
      }),
    });
  }

  /** An S3Backend for `s3://bucket/prefix`, with the other options given. */
  static fromUrl(url: string, options: Omit<S3BackendOptions, "bucket" | "prefix"> = {}): S3Backend {
    const { bucket, prefix } = parseBucketUrl(url);
    return new S3Backend({ ...options, bucket, prefix });
  }

  /** The SDK client (for administration in tests and tools; blobs go through the methods). */
  get client(): S3Client {
    return this.#client;
  }

  /** Whether `key` is stored in a hashed shard. */
  isHashed(key: string): boolean {
    return this.hashedPrefixes.some((p) => key.startsWith(p));
  }

  /** The object key of blob `key`. */
  objectKey(key: string): string {
    return this.isHashed(key) ? `${this.#root}${keyShard(key)}/${key}` : `${this.#root}${key}`;
  }

  /** Creates the bucket when it does not exist. */
  async ensureBucket(): Promise<void> {
    this.#check();
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (err) {
      if (httpStatus(err) !== 404) throw mapS3Error("head-bucket", this.bucket, "", err, false);
    }
    try {
      await this.#client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const code = errorCode(err);
      if (code !== "BucketAlreadyOwnedByYou") throw mapS3Error("create-bucket", this.bucket, "", err, false);
    }
  }

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#check();
    this.#checkKey(key);
    const { parts, length } = bodyParts(body);
    const objectKey = this.objectKey(key);
    if (length >= this.multipartThreshold && length > S3_MIN_PART_SIZE) return this.#multipart(key, objectKey, parts, length);
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: objectKey,
          Body: sliceParts(parts, 0, length),
          ContentLength: length,
          ...(this.#storageClass === undefined ? {} : { StorageClass: this.#storageClass }),
        }),
      );
    } catch (err) {
      throw mapS3Error("put", this.bucket, key, err, false);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.#check();
    this.#checkKey(key);
    checkRange(range);
    if (range !== undefined && range.length === 0) {
      // No Range header can ask for zero bytes; the blob must still exist.
      if ((await this.head(key)) === undefined) throw notFound(this.location, key);
      return Buffer.alloc(0);
    }
    let header: string | undefined;
    if (range !== undefined) header = `bytes=${range.offset}-${(BigInt(range.offset) + BigInt(range.length) - 1n).toString()}`;
    try {
      const res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), ...(header === undefined ? {} : { Range: header }) }));
      // A range honoured by the service (Content-Range) is at most range.length bytes: read it
      // straight into the caller's buffer when one is given (no list of parts, no concatenation).
      const into = range?.into;
      if (into !== undefined && range !== undefined && into.length >= range.length && res.ContentRange !== undefined && isAsyncIterable(res.Body)) {
        let pos = 0;
        for await (const part of res.Body) {
          if (!(part instanceof Uint8Array) || pos + part.length > range.length) {
            throw new BackendIoError(`S3 get ${JSON.stringify(key)} in bucket ${JSON.stringify(this.bucket)}: the service sent more than the ${range.length} bytes asked for`, { retryable: true });
          }
          into.set(part, pos);
          pos += part.length;
        }
        return into.subarray(0, pos);
      }
      const bytes = res.Body === undefined ? new Uint8Array(0) : await res.Body.transformToByteArray();
      const data = asBuffer(bytes);
      if (range !== undefined && res.ContentRange === undefined) {
        // The service ignored the Range header and sent the whole blob: cut it here.
        const start = Math.min(range.offset, data.length);
        return Buffer.from(data.subarray(start, Math.min(data.length, start + range.length)));
      }
      return data;
    } catch (err) {
      if (range !== undefined && (errorCode(err) === "InvalidRange" || httpStatus(err) === 416)) return Buffer.alloc(0);
      throw this.#mapMissing("get", key, err);
    }
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    this.#check();
    this.#checkKey(key);
    try {
      const res = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return { key, size: res.ContentLength ?? 0 };
    } catch (err) {
      const mapped = this.#mapMissing("head", key, err);
      if (mapped.code !== "STOWAGE_BACKEND_NOT_FOUND") throw mapped;
      // A HEAD's 404 has no body, so a missing bucket looks like a missing key: check once.
      if (!this.#bucketChecked) await this.#checkBucket("head", key);
      return undefined;
    }
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    if (typeof prefix !== "string") throw invalid("list prefix must be a string");
    const hashedOverlap = this.hashedPrefixes.some((p) => p.startsWith(prefix) || prefix.startsWith(p));
    if (!hashedOverlap) return this.#listObjects(prefix, this.#root, false);
    // Can unhashed keys start with `prefix`? Only when no hashed prefix is a prefix of `prefix`.
    const plainToo = !this.hashedPrefixes.some((p) => prefix.startsWith(p));
    const sources = SHARDS.map((shard) => this.#listObjects(prefix, `${this.#root}${shard}/`, true));
    if (plainToo) sources.push(this.#listObjects(prefix, this.#root, false));
    return mergeSorted(sources);
  }

  async delete(key: string): Promise<void> {
    this.#check();
    this.#checkKey(key);
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (err) {
      if (errorCode(err) === "NoSuchKey") return;
      throw mapS3Error("delete", this.bucket, key, err, false);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.destroy();
  }

  /**
   * Lists logical keys starting with `prefix` stored under `root` (a shard, or the unhashed
   * namespace): only those whose hashing matches `hashed`, so that shard objects met in the
   * unhashed listing (and objects that are not blobs) are skipped.
   */
  async *#listObjects(prefix: string, root: string, hashed: boolean): AsyncGenerator<BlobInfo> {
    this.#check();
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.#client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${root}${prefix}`, ...(token === undefined ? {} : { ContinuationToken: token }) }),
        );
      } catch (err) {
        throw mapS3Error("list", this.bucket, prefix, err, false);
      }
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined || !obj.Key.startsWith(root)) continue;
        const key = obj.Key.slice(root.length);
        // Some servers normalise prefixes (SeaweedFS lists everything for `/`): keep only real matches.
        if (!key.startsWith(prefix) || !this.#isBlobKey(key) || this.isHashed(key) !== hashed) continue;
        if (!hashed && this.#shadowsHashed(key)) continue;
        yield { key, size: obj.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  #isBlobKey(key: string): boolean {
    try {
      checkBlobKey(key);
      return true;
    } catch {
      return false;
    }
  }

  /** Whether an unhashed key `hh/k` has the shape of a hashed key's object (see the module comment). */
  #shadowsHashed(key: string): boolean {
    return this.hashedPrefixes.length > 0 && SHARD_HEAD.test(key) && this.isHashed(key.slice(3));
  }

  #checkKey(key: string): void {
    checkBlobKey(key);
    if (!this.isHashed(key) && this.#shadowsHashed(key)) {
      throw invalid(`blob key ${JSON.stringify(key)} is reserved: it has the shape of a hashed key's object (hashedPrefixes ${JSON.stringify(this.hashedPrefixes)})`);
    }
  }

  async #multipart(key: string, objectKey: string, parts: readonly Uint8Array[], length: number): Promise<void> {
    const partSize = Math.max(this.partSize, Math.ceil(length / S3_MAX_PARTS));
    const count = Math.ceil(length / partSize);
    let uploadId: string | undefined;
    try {
      const created = await this.#client.send(
        new CreateMultipartUploadCommand({
          Bucket: this.bucket,
          Key: objectKey,
          ...(this.#storageClass === undefined ? {} : { StorageClass: this.#storageClass }),
        }),
      );
      uploadId = created.UploadId;
      if (uploadId === undefined) throw new Error("CreateMultipartUpload returned no UploadId");
      const id = uploadId;
      const done: CompletedPart[] = new Array<CompletedPart>(count);
      let next = 0;
      let failed = false;
      const worker = async (): Promise<void> => {
        while (!failed && next < count) {
          const n = next++;
          const start = n * partSize;
          const end = Math.min(length, start + partSize);
          try {
            const res = await this.#client.send(
              new UploadPartCommand({ Bucket: this.bucket, Key: objectKey, UploadId: id, PartNumber: n + 1, Body: sliceParts(parts, start, end), ContentLength: end - start }),
            );
            done[n] = { PartNumber: n + 1, ETag: res.ETag };
          } catch (err) {
            failed = true;
            throw err;
          }
        }
      };
      const results = await Promise.allSettled(Array.from({ length: Math.min(this.partConcurrency, count) }, worker));
      const rejected = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (rejected !== undefined) throw rejected.reason;
      await this.#client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: id, MultipartUpload: { Parts: done } }));
    } catch (err) {
      if (uploadId !== undefined) {
        // Best effort: an upload left behind is invisible (and a lifecycle rule can expire it).
        await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId })).catch(() => undefined);
      }
      throw mapS3Error("put (multipart)", this.bucket, key, err, false);
    }
  }

  /** Maps a get/head error, telling a missing bucket (IO) from a missing key (NOT_FOUND). */
  #mapMissing(op: string, key: string, err: unknown): StowageError {
    return mapS3Error(op, this.bucket, key, err, true);
  }

  async #checkBucket(op: string, key: string): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.#bucketChecked = true;
    } catch (err) {
      const status = httpStatus(err);
      if (status === 404) {
        throw new BackendIoError(`S3 ${op} ${JSON.stringify(key)} failed: bucket ${JSON.stringify(this.bucket)} does not exist (HTTP 404)`, { retryable: false, httpStatus: 404 }, { cause: err });
      }
      throw mapS3Error(op, this.bucket, key, err, false);
    }
  }

  #check(): void {
    if (this.#closed) throw invalid(`S3 backend ${this.location} is closed`);
  }
}
