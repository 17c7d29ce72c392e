/**
 * The object store: buckets, objects, versions, listings, copies, multipart uploads and snapshots,
 * on top of the data path (ingest.ts, read.ts, the packer and reader) and the metadata store.
 *
 * Every operation commits its metadata in one transaction (one atomic, durable kv batch), after the
 * data it references is durable in the bucket. A crash therefore leaves the old or the new state,
 * never a mix: at worst chunks uploaded for an operation that never committed, which hold no
 * references and are reclaimed by the garbage collector.
 *
 * Reference counts: every manifest entry (of an object version, or of an uploaded part) holds one
 * reference on its chunk. They move in the same transaction as the manifests that hold them.
 */
import { createHash, randomBytes } from "node:crypto";
import { StowageError, isStowageError } from "../errors.js";
import { ChunkerParams } from "../codec/chunker.js";
import { ChunkIdHasher } from "../codec/chunk-id.js";
import { DEFAULT_LEVEL } from "../codec/compress.js";
import type { RepositoryKeys } from "../codec/keys.js";
import type { BlobBackend } from "../backend/backend.js";
import { Packer, type PackCommit } from "../pack/writer.js";
import { PackReader } from "../pack/reader.js";
import { RecordEncoder } from "../pack/encoder.js";
import type {
  BucketRecord,
  ManifestEntry,
  MetaTx,
  MetadataStore,
  ObjectVersion,
  PartRecord,
  UploadRecord,
  VersionHeader,
  Versioning,
} from "../meta/types.js";
import { ingest, type IngestResult } from "./ingest.js";
import { readManifest, type ByteSpan } from "./read.js";
import { checkBucketName, checkObjectKey, checkPrefix } from "./names.js";
import { SharedExclusiveLock } from "./lock.js";

export const EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e";
/** S3's limits. */
export const MAX_PUT_SIZE = 5 * 1024 ** 3;
export const MAX_PARTS = 10000;
export const DEFAULT_MIN_PART_SIZE = 5 * 1024 * 1024;

export interface ObjectStoreOptions {
  chunker?: { minSize: number; avgSize: number; maxSize: number };
  packTargetSize?: number;
  /** Concurrent pack uploads. Default 2. */
  maxUploads?: number;
  /**
   * How long a committing writer lets the open pack fill with the chunks of writers still
   * streaming (only while there are some). Default 0.
   */
  commitDelayMs?: number;
  /** Decompressed-chunk cache of the reader, bytes. Default 64 MiB. */
  cacheBytes?: number;
  compressionLevel?: number;
  /** Threads compressing and sealing chunks (0: inline). Default: one less than the cores, at most 2. */
  encoderThreads?: number;
  /** Smallest part (but the last) accepted by completeMultipartUpload. Default 5 MiB. */
  minPartSize?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export interface PutOptions {
  contentType?: string;
  userMetadata?: Record<string, string>;
  /** Base64 MD5 the client sent (Content-MD5); a mismatch is STOWAGE_BAD_DIGEST and commits nothing. */
  contentMD5?: string;
  /** Announced length (Content-Length); a shorter stream is STOWAGE_INCOMPLETE_BODY. */
  size?: number;
  /** Standard headers to keep (content-encoding, content-disposition, content-language, cache-control, expires). */
  headers?: Record<string, string>;
  tags?: Record<string, string>;
  /**
   * A checksum the caller verified over the content; recorded with the version. A function is
   * called once the stream has been read (the server learns a trailer checksum only then).
   */
  checksum?: { algorithm: string; value: string } | (() => { algorithm: string; value: string } | undefined);
}

/** The optional header fields of a version, without empty ones. */
function extras(o: { headers?: Record<string, string> | undefined; tags?: Record<string, string> | undefined; checksum?: { algorithm: string; value: string } | undefined }): Partial<VersionHeader> {
  const out: Partial<VersionHeader> = {};
  if (o.headers !== undefined && Object.keys(o.headers).length > 0) out.headers = { ...o.headers };
  if (o.tags !== undefined && Object.keys(o.tags).length > 0) out.tags = { ...o.tags };
  if (o.checksum !== undefined) out.checksum = { ...o.checksum };
  return out;
}

export interface PutResult {
  bucket: string;
  key: string;
  versionId: string;
  etag: string;
  size: number;
}

/** An S3 byte range: `bytes=start-end` (end inclusive, optional) or `bytes=-suffix`. */
export type RangeRequest = { start: number; end?: number } | { suffix: number };

export interface GetOptions {
  versionId?: string;
  range?: RangeRequest;
  /** Only this part of a multipart object (1-based). */
  partNumber?: number;
}

export interface GetResult {
  version: VersionHeader;
  /** The bytes returned: [start, end) of the object. */
  span: ByteSpan;
  /** True when a range (or part) was asked for. */
  partial: boolean;
  body: AsyncGenerator<Buffer>;
}

export interface DeleteResult {
  /** The version removed or created (a delete marker's id), when there is one. */
  versionId?: string;
  deleteMarker: boolean;
}

export interface ListObjectsOptions {
  prefix?: string;
  delimiter?: string;
  startAfter?: string;
  continuationToken?: string;
  maxKeys?: number;
}

export interface ListObjectsResult {
  objects: VersionHeader[];
  commonPrefixes: string[];
  isTruncated: boolean;
  nextContinuationToken?: string;
}

export interface ListVersionsOptions {
  prefix?: string;
  delimiter?: string;
  keyMarker?: string;
  versionIdMarker?: string;
  maxKeys?: number;
}

export interface ListedVersion extends VersionHeader {
  isLatest: boolean;
}

export interface ListVersionsResult {
  versions: ListedVersion[];
  commonPrefixes: string[];
  isTruncated: boolean;
  nextKeyMarker?: string;
  nextVersionIdMarker?: string;
}

export interface CopyOptions {
  sourceVersionId?: string;
  /** COPY (default): keep the source's content type and metadata; REPLACE: use the ones given. */
  metadataDirective?: "COPY" | "REPLACE";
  contentType?: string;
  userMetadata?: Record<string, string>;
  /** With REPLACE: the standard headers of the copy. */
  headers?: Record<string, string>;
  /** COPY (default): keep the source's tags; REPLACE: use `tags`. */
  taggingDirective?: "COPY" | "REPLACE";
  tags?: Record<string, string>;
}

export interface CompletedPart {
  partNumber: number;
  etag: string;
}

export interface SnapshotResult {
  objects: number;
  bytes: number;
}

/** One object of {@link ObjectStore.putObjects}: `source` is called when its turn comes (so files open lazily). */
export interface BatchItem {
  key: string;
  source: () => AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  options?: PutOptions;
}

function ingestOptionsOf(options: PutOptions): { size?: number; contentMD5?: string; maxSize: number } {
  const o: { size?: number; contentMD5?: string; maxSize: number } = { maxSize: MAX_PUT_SIZE };
  if (options.size !== undefined) o.size = options.size;
  if (options.contentMD5 !== undefined) o.contentMD5 = options.contentMD5;
  return o;
}

/** Strips the quotes S3 clients put around ETags. */
export function normalizeEtag(etag: string): string {
  return etag.replace(/^"+|"+$/g, "").replace(/^W\//, "");
}

function versionIdFor(versioning: Versioning, sequence: number): string {
  if (versioning !== "enabled") return "null";
  return sequence.toString(16).padStart(12, "0") + randomBytes(6).toString("hex");
}

function manifestBytes(manifest: readonly ManifestEntry[]): number {
  let n = 0;
  for (const e of manifest) n += e.length;
  return n;
}

/** Resolves an S3 range against an object of `size` bytes. */
export function resolveRange(range: RangeRequest, size: number): ByteSpan {
  if ("suffix" in range) {
    if (!Number.isSafeInteger(range.suffix) || range.suffix < 0) throw new StowageError("STOWAGE_INVALID_RANGE", "invalid suffix range");
    if (range.suffix === 0 || size === 0) throw new StowageError("STOWAGE_INVALID_RANGE", `range bytes=-${range.suffix} is not satisfiable for ${size} bytes`);
    return { start: Math.max(0, size - range.suffix), end: size };
  }
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw new StowageError("STOWAGE_INVALID_RANGE", "invalid byte range");
  }
  if (start >= size) throw new StowageError("STOWAGE_INVALID_RANGE", `range starts at ${start} but the object has ${size} bytes`);
  return { start, end: end === undefined ? size : Math.min(size, end + 1) };
}

/** Cuts the slice [start, end) out of a manifest, as new entries referencing the same chunks. */
export function sliceManifest(manifest: readonly ManifestEntry[], span: ByteSpan): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  let pos = 0;
  for (const e of manifest) {
    const eEnd = pos + e.length;
    if (eEnd > span.start && pos < span.end) {
      const from = Math.max(0, span.start - pos);
      const to = Math.min(e.length, span.end - pos);
      out.push({ chunkId: e.chunkId, offset: e.offset + from, length: to - from });
    }
    pos = eEnd;
    if (pos >= span.end) break;
  }
  return out;
}

export class ObjectStore {
  readonly meta: MetadataStore;
  readonly backend: BlobBackend;
  readonly keys: RepositoryKeys;
  readonly packer: Packer;
  readonly reader: PackReader;
  readonly encoder: RecordEncoder;
  readonly lock = new SharedExclusiveLock();
  readonly options: Required<Omit<ObjectStoreOptions, "chunker" | "encoderThreads">> & { chunker: ChunkerParams };
  readonly #hasher: ChunkIdHasher;
  #closed = false;

  constructor(meta: MetadataStore, backend: BlobBackend, keys: RepositoryKeys, options: ObjectStoreOptions = {}) {
    this.meta = meta;
    this.backend = backend;
    this.keys = keys;
    const chunker = new ChunkerParams({ ...(options.chunker ?? {}), key: keys.subkey("chunker-gear") });
    this.options = {
      chunker,
      packTargetSize: options.packTargetSize ?? 16 * 1024 * 1024,
      maxUploads: options.maxUploads ?? 2,
      commitDelayMs: options.commitDelayMs ?? 0,
      cacheBytes: options.cacheBytes ?? 64 * 1024 * 1024,
      compressionLevel: options.compressionLevel ?? DEFAULT_LEVEL,
      minPartSize: options.minPartSize ?? DEFAULT_MIN_PART_SIZE,
      now: options.now ?? Date.now,
    };
    this.#hasher = new ChunkIdHasher(keys);
    this.packer = new Packer(backend, keys, (commit) => this.#commitPack(commit), {
      targetSize: this.options.packTargetSize,
      maxUploads: this.options.maxUploads,
      commitDelayMs: this.options.commitDelayMs,
    });
    this.reader = new PackReader(backend, keys, { cacheBytes: this.options.cacheBytes });
    this.encoder = new RecordEncoder(keys, {
      level: this.options.compressionLevel,
      ...(options.encoderThreads === undefined ? {} : { threads: options.encoderThreads }),
    });
  }

  /** Records an uploaded pack and its chunks. A chunk already indexed (a race between two writers that both stored it) keeps its record; the new copy is dead bytes for gc. */
  async #commitPack(commit: PackCommit): Promise<void> {
    await this.meta.transaction(async (tx) => {
      tx.putPack(commit.pack);
      for (const [id, rec] of commit.chunks) {
        if ((await tx.getChunk(id)) === undefined) tx.putChunk(id, rec);
      }
      tx.addCounters({ backendPuts: 1, backendBytesWritten: commit.pack.size });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.packer.close();
    } finally {
      await this.encoder.close();
    }
  }

  #check(): void {
    if (this.#closed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the object store is closed");
  }

  /** Runs a metadata transaction, turning a full disk into STOWAGE_NO_SPACE. */
  async #transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T> {
    try {
      return await this.meta.transaction(fn);
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (isStowageError(err, "STOWAGE_KV_IO") && (cause?.code === "ENOSPC" || cause?.code === "EDQUOT")) {
        throw new StowageError("STOWAGE_NO_SPACE", `metadata write failed, disk full: ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Buckets
  // ------------------------------------------------------------------------------------------

  async createBucket(name: string, versioning: Versioning = "unversioned"): Promise<BucketRecord> {
    this.#check();
    checkBucketName(name);
    return this.#transaction(async (tx) => {
      if ((await tx.getBucket(name)) !== undefined) throw new StowageError("STOWAGE_BUCKET_EXISTS", `bucket ${name} already exists`);
      const rec: BucketRecord = { name, created: this.options.now(), versioning };
      tx.putBucket(rec);
      return rec;
    });
  }

  /** Creates the bucket unless it exists (the CLI's "created on first put"). */
  async ensureBucket(name: string): Promise<BucketRecord> {
    checkBucketName(name);
    const existing = await this.meta.getBucket(name);
    if (existing !== undefined) return existing;
    try {
      return await this.createBucket(name);
    } catch (err) {
      if (isStowageError(err, "STOWAGE_BUCKET_EXISTS")) return (await this.meta.getBucket(name))!;
      throw err;
    }
  }

  async headBucket(name: string): Promise<BucketRecord> {
    checkBucketName(name);
    const b = await this.meta.getBucket(name);
    if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
    return b;
  }

  listBuckets(): Promise<BucketRecord[]> {
    return this.meta.listBuckets();
  }

  async deleteBucket(name: string): Promise<void> {
    this.#check();
    checkBucketName(name);
    await this.#transaction(async (tx) => {
      if ((await tx.getBucket(name)) === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
      if (await tx.bucketHasContent(name)) throw new StowageError("STOWAGE_BUCKET_NOT_EMPTY", `bucket ${name} is not empty`);
      tx.deleteBucket(name);
    });
  }

  /** Turns versioning on (`enabled`) or off (`suspended`); a bucket never returns to `unversioned`. */
  async setVersioning(name: string, state: "enabled" | "suspended"): Promise<BucketRecord> {
    this.#check();
    checkBucketName(name);
    return this.#transaction(async (tx) => {
      const b = await tx.getBucket(name);
      if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
      if (b.versioning === "unversioned" && state === "suspended") return b;
      const rec = { ...b, versioning: state };
      tx.putBucket(rec);
      return rec;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Writing objects
  // ------------------------------------------------------------------------------------------

  /** Stores the stream's bytes durably in packs; returns the manifest. Caller holds the shared lock. */
  async #ingestDurably(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number }): Promise<IngestResult> {
    const result = await this.#ingest(source, options);
    await this.#durable(result);
    return result;
  }

  /** Waits until every chunk `result` needs is durable in the bucket. */
  async #durable(result: IngestResult): Promise<void> {
    // Group commit: every chunk this stream needs (its own, and pending ones of other writers it
    // deduplicated against) is in a pack that this flush waits for.
    await this.packer.flush();
    // Chunks found pending in packs that may have failed before this flush began (no flush covers
    // those any more): their failure is this stream's failure.
    await Promise.all(result.dependsOn);
  }

  /** Stores the stream's new chunks in packs (not yet durable) and checks its digest. */
  async #ingest(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number }): Promise<IngestResult> {
    const ended = this.packer.beginWriter();
    try {
      return await this.#ingestStream(source, options);
    } finally {
      ended();
    }
  }

  async #ingestStream(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number }): Promise<IngestResult> {
    const limits: { expectedSize?: number; maxSize: number } = { maxSize: options.maxSize };
    if (options.size !== undefined) limits.expectedSize = options.size;
    const result = await ingest(
      { params: this.options.chunker, hasher: this.#hasher, packer: this.packer, encoder: this.encoder, meta: this.meta },
      source,
      limits,
    );
    if (options.contentMD5 !== undefined) {
      const sent = Buffer.from(options.contentMD5, "base64");
      if (sent.length !== 16 || !sent.equals(result.md5)) {
        throw new StowageError("STOWAGE_BAD_DIGEST", "the Content-MD5 sent does not match the content received");
      }
    }
    return result;
  }

  /**
   * Writes `version` as the newest version of its key, applying S3's versioning rules: with
   * versioning off or suspended it replaces the `null` version (whose references are dropped).
   */
  async #commitVersion(tx: MetaTx, bucket: BucketRecord, version: ObjectVersion): Promise<void> {
    await tx.addRefs(version.manifest, 1);
    if (bucket.versioning !== "enabled") {
      for (const h of await tx.versionsOfKey(bucket.name, version.key)) {
        if (h.versionId !== "null") continue;
        const old = await tx.getVersion(bucket.name, version.key, "null");
        if (old !== undefined) {
          await tx.addRefs(old.manifest, -1);
          tx.deleteVersion(bucket.name, version.key, old.sequence);
        }
      }
    }
    tx.putVersion(version);
  }

  async #bucketIn(tx: MetaTx, name: string): Promise<BucketRecord> {
    const b = await tx.getBucket(name);
    if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
    return b;
  }

  async putObject(bucket: string, key: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    this.#check();
    checkBucketName(bucket);
    checkObjectKey(key);
    await this.headBucket(bucket);
    return this.lock.shared(async () => {
      const data = await this.#ingestDurably(source, ingestOptionsOf(options));
      return this.#transaction(async (tx) => this.#commitPut(tx, await this.#bucketIn(tx, bucket), key, data, options));
    });
  }

  /** The new version of `key` made of `data`, committed in `tx`. */
  async #commitPut(tx: MetaTx, b: BucketRecord, key: string, data: IngestResult, options: PutOptions): Promise<PutResult> {
    const sequence = await tx.nextSequence();
    const version: ObjectVersion = {
      bucket: b.name,
      key,
      versionId: versionIdFor(b.versioning, sequence),
      sequence,
      deleteMarker: false,
      size: data.size,
      etag: data.md5.toString("hex"),
      contentType: options.contentType ?? "application/octet-stream",
      userMetadata: { ...(options.userMetadata ?? {}) },
      lastModified: this.options.now(),
      ...extras({ ...options, checksum: typeof options.checksum === "function" ? options.checksum() : options.checksum }),
      manifest: data.manifest,
    };
    await this.#commitVersion(tx, b, version);
    tx.addCounters({ plainPuts: 1, ingestedBytes: data.size });
    return { bucket: b.name, key, versionId: version.versionId, etag: version.etag, size: version.size };
  }

  /**
   * Puts several objects as one unit: their data is ingested (up to `concurrency` streams at once)
   * into shared packs, made durable with one flush, and their versions are committed in one
   * transaction, in the order given. For bulk uploads of many small files (the CLI's directory
   * put): far fewer pack uploads and metadata syncs than one put per file. All or nothing: if any
   * item fails, none is committed (chunks already packed are garbage for gc).
   */
  async putObjects(bucket: string, items: readonly BatchItem[], options: { concurrency?: number } = {}): Promise<PutResult[]> {
    this.#check();
    checkBucketName(bucket);
    for (const it of items) checkObjectKey(it.key);
    await this.headBucket(bucket);
    if (items.length === 0) return [];
    return this.lock.shared(async () => {
      const data: IngestResult[] = new Array<IngestResult>(items.length);
      let next = 0;
      let failure: unknown;
      const worker = async (): Promise<void> => {
        while (failure === undefined && next < items.length) {
          const i = next++;
          const item = items[i]!;
          try {
            data[i] = await this.#ingest(item.source(), ingestOptionsOf(item.options ?? {}));
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 4, items.length)) }, worker));
      if (failure !== undefined) throw failure;
      for (const d of data) await this.#durable(d);
      return this.#transaction(async (tx) => {
        const b = await this.#bucketIn(tx, bucket);
        const results: PutResult[] = [];
        for (let i = 0; i < items.length; i++) results.push(await this.#commitPut(tx, b, items[i]!.key, data[i]!, items[i]!.options ?? {}));
        return results;
      });
    });
  }

  // ------------------------------------------------------------------------------------------
  // Reading objects
  // ------------------------------------------------------------------------------------------

  /** The version a read names: the current one, or `versionId`. Delete markers are NoSuchKey. */
  async #readableVersion(bucket: string, key: string, versionId: string | undefined): Promise<ObjectVersion> {
    checkBucketName(bucket);
    checkObjectKey(key);
    await this.headBucket(bucket);
    const v = versionId === undefined ? await this.meta.getCurrent(bucket, key) : await this.meta.getVersion(bucket, key, versionId);
    if (v === undefined || v.deleteMarker) {
      const what = versionId === undefined ? `${bucket}/${key}` : `${bucket}/${key} version ${versionId}`;
      throw new StowageError("STOWAGE_NO_SUCH_KEY", `${what} does not exist${v?.deleteMarker === true ? " (delete marker)" : ""}`);
    }
    return v;
  }

  async headObject(bucket: string, key: string, options: { versionId?: string } = {}): Promise<VersionHeader> {
    const v = await this.#readableVersion(bucket, key, options.versionId);
    const { manifest: _m, ...header } = v;
    return header;
  }

  /** The span of part `partNumber` (1-based) of a version. */
  static partSpan(v: VersionHeader, partNumber: number): ByteSpan {
    const sizes = v.partSizes ?? [v.size];
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > sizes.length) {
      throw new StowageError("STOWAGE_INVALID_RANGE", `part ${partNumber} does not exist (the object has ${sizes.length})`);
    }
    let start = 0;
    for (let i = 0; i < partNumber - 1; i++) start += sizes[i]!;
    return { start, end: start + sizes[partNumber - 1]! };
  }

  async getObject(bucket: string, key: string, options: GetOptions = {}): Promise<GetResult> {
    this.#check();
    const v = await this.#readableVersion(bucket, key, options.versionId);
    let span: ByteSpan = { start: 0, end: v.size };
    let partial = false;
    if (options.partNumber !== undefined) {
      span = ObjectStore.partSpan(v, options.partNumber);
      partial = true;
    } else if (options.range !== undefined) {
      span = resolveRange(options.range, v.size);
      partial = true;
    }
    const { manifest, ...header } = v;
    return { version: header, span, partial, body: readManifest(this.meta, this.reader, manifest, span, `${bucket}/${key}`) };
  }

  // ------------------------------------------------------------------------------------------
  // Deleting
  // ------------------------------------------------------------------------------------------

  async deleteObject(bucket: string, key: string, options: { versionId?: string } = {}): Promise<DeleteResult> {
    this.#check();
    checkBucketName(bucket);
    checkObjectKey(key);
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        const b = await this.#bucketIn(tx, bucket);
        if (options.versionId !== undefined) {
          const v = await tx.getVersion(bucket, key, options.versionId);
          if (v === undefined) return { versionId: options.versionId, deleteMarker: false };
          await tx.addRefs(v.manifest, -1);
          tx.deleteVersion(bucket, key, v.sequence);
          return { versionId: v.versionId, deleteMarker: v.deleteMarker };
        }
        if (b.versioning === "unversioned") {
          const v = await tx.getVersion(bucket, key, "null");
          if (v !== undefined) {
            await tx.addRefs(v.manifest, -1);
            tx.deleteVersion(bucket, key, v.sequence);
          }
          return { deleteMarker: false };
        }
        // Versioned: a delete marker becomes the current version (suspended: it is the `null` one).
        const sequence = await tx.nextSequence();
        const marker: ObjectVersion = {
          bucket,
          key,
          versionId: versionIdFor(b.versioning, sequence),
          sequence,
          deleteMarker: true,
          size: 0,
          etag: "",
          contentType: "",
          userMetadata: {},
          lastModified: this.options.now(),
          manifest: [],
        };
        await this.#commitVersion(tx, b, marker);
        return { versionId: marker.versionId, deleteMarker: true };
      }),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Listing
  // ------------------------------------------------------------------------------------------

  async listObjects(bucket: string, options: ListObjectsOptions = {}): Promise<ListObjectsResult> {
    await this.headBucket(bucket);
    const prefix = options.prefix ?? "";
    checkPrefix(prefix);
    const delimiter = options.delimiter ?? "";
    const maxKeys = Math.max(0, Math.min(options.maxKeys ?? 1000, 1000));
    let after = options.startAfter ?? "";
    let skipPrefix: string | undefined;
    if (options.continuationToken !== undefined) {
      const token = decodeToken(options.continuationToken);
      // Byte order (UTF-8), as keys are listed: UTF-16 order differs for astral-plane characters.
      if (Buffer.compare(Buffer.from(token.key, "utf8"), Buffer.from(after, "utf8")) > 0) after = token.key;
      if (token.commonPrefix) skipPrefix = token.key;
    }
    const objects: VersionHeader[] = [];
    const commonPrefixes: string[] = [];
    let last: { key: string; commonPrefix: boolean } | undefined;
    let isTruncated = false;
    if (maxKeys === 0) return { objects, commonPrefixes, isTruncated: false };

    // After a common prefix, restart the scan past every key that starts with it.
    scan: while (true) {
      const from = skipPrefix !== undefined ? skipPrefix + "\u{10FFFF}\u{10FFFF}" : after;
      const listOptions = { prefix, ...(from === "" ? {} : { after: from }) };
      skipPrefix = undefined;
      for await (const h of this.meta.listCurrent(bucket, listOptions)) {
        if (last?.commonPrefix === true && h.key.startsWith(last.key)) continue;
        if (h.deleteMarker) continue;
        let cp: string | undefined;
        if (delimiter !== "") {
          const i = h.key.indexOf(delimiter, prefix.length);
          if (i >= 0) cp = h.key.slice(0, i + delimiter.length);
        }
        if (objects.length + commonPrefixes.length >= maxKeys) {
          isTruncated = true;
          break scan;
        }
        if (cp !== undefined) {
          commonPrefixes.push(cp);
          last = { key: cp, commonPrefix: true };
          skipPrefix = cp;
          continue scan;
        }
        objects.push(h);
        last = { key: h.key, commonPrefix: false };
      }
      break;
    }
    const result: ListObjectsResult = { objects, commonPrefixes, isTruncated };
    if (isTruncated && last !== undefined) result.nextContinuationToken = encodeToken(last.key, last.commonPrefix);
    return result;
  }

  async listObjectVersions(bucket: string, options: ListVersionsOptions = {}): Promise<ListVersionsResult> {
    await this.headBucket(bucket);
    const prefix = options.prefix ?? "";
    checkPrefix(prefix);
    const delimiter = options.delimiter ?? "";
    const maxKeys = Math.max(0, Math.min(options.maxKeys ?? 1000, 1000));
    const versions: ListedVersion[] = [];
    const commonPrefixes: string[] = [];
    let isTruncated = false;
    let lastKey: string | undefined;
    let lastCp: string | undefined;
    let previousKey: string | undefined;
    const listOptions: { prefix: string; afterKey?: string; afterVersionId?: string } = { prefix };
    if (options.keyMarker !== undefined && options.keyMarker !== "") {
      listOptions.afterKey = options.keyMarker;
      if (options.versionIdMarker !== undefined && options.versionIdMarker !== "") listOptions.afterVersionId = options.versionIdMarker;
    }
    let nextVersionIdMarker: string | undefined;
    if (maxKeys === 0) return { versions, commonPrefixes, isTruncated: false };
    // isLatest: the first version seen of a key is its newest, unless we resumed inside the key.
    let resumedInside = listOptions.afterVersionId !== undefined ? listOptions.afterKey : undefined;
    // A key marker that is a common prefix (a page ended on it): its keys were rolled up already.
    const marker = listOptions.afterKey;
    const markerIsPrefix =
      delimiter !== "" && marker !== undefined && listOptions.afterVersionId === undefined && marker.startsWith(prefix) && marker.indexOf(delimiter, prefix.length) === marker.length - delimiter.length;
    if (markerIsPrefix) lastCp = marker;
    for await (const h of this.meta.listVersions(bucket, listOptions)) {
      if (lastCp !== undefined && h.key.startsWith(lastCp)) continue;
      let cp: string | undefined;
      if (delimiter !== "") {
        const i = h.key.indexOf(delimiter, prefix.length);
        if (i >= 0) cp = h.key.slice(0, i + delimiter.length);
      }
      if (versions.length + commonPrefixes.length >= maxKeys) {
        isTruncated = true;
        break;
      }
      if (cp !== undefined) {
        commonPrefixes.push(cp);
        lastCp = cp;
        lastKey = cp;
        nextVersionIdMarker = undefined;
        continue;
      }
      const isLatest = h.key !== previousKey && h.key !== resumedInside;
      if (h.key !== resumedInside) resumedInside = undefined;
      previousKey = h.key;
      versions.push({ ...h, isLatest });
      lastKey = h.key;
      nextVersionIdMarker = h.versionId;
    }
    const result: ListVersionsResult = { versions, commonPrefixes, isTruncated };
    if (isTruncated && lastKey !== undefined) {
      result.nextKeyMarker = lastKey;
      if (nextVersionIdMarker !== undefined) result.nextVersionIdMarker = nextVersionIdMarker;
    }
    return result;
  }

  /** Replaces the tags of a version (the current one unless `versionId`); an empty set removes them. */
  async putObjectTagging(bucket: string, key: string, tags: Record<string, string>, options: { versionId?: string } = {}): Promise<VersionHeader> {
    this.#check();
    checkBucketName(bucket);
    checkObjectKey(key);
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        await this.#bucketIn(tx, bucket);
        const v = options.versionId === undefined ? await tx.getCurrent(bucket, key) : await tx.getVersion(bucket, key, options.versionId);
        if (v === undefined || v.deleteMarker) throw new StowageError("STOWAGE_NO_SUCH_KEY", `${bucket}/${key} does not exist`);
        const { tags: _old, ...rest } = v;
        const next: ObjectVersion = { ...rest, ...(Object.keys(tags).length > 0 ? { tags: { ...tags } } : {}) };
        tx.putVersion(next);
        const { manifest: _m, ...header } = next;
        return header;
      }),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Copies and snapshots: references only, no data read or written
  // ------------------------------------------------------------------------------------------

  async copyObject(srcBucket: string, srcKey: string, dstBucket: string, dstKey: string, options: CopyOptions = {}): Promise<PutResult> {
    this.#check();
    checkBucketName(srcBucket);
    checkObjectKey(srcKey);
    checkBucketName(dstBucket);
    checkObjectKey(dstKey);
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        await this.#bucketIn(tx, srcBucket);
        const b = await this.#bucketIn(tx, dstBucket);
        const src = options.sourceVersionId === undefined ? await tx.getCurrent(srcBucket, srcKey) : await tx.getVersion(srcBucket, srcKey, options.sourceVersionId);
        if (src === undefined || src.deleteMarker) throw new StowageError("STOWAGE_NO_SUCH_KEY", `copy source ${srcBucket}/${srcKey} does not exist`);
        const replace = options.metadataDirective === "REPLACE";
        const sequence = await tx.nextSequence();
        const { headers: _h, tags: _t, ...rest } = src;
        const version: ObjectVersion = {
          ...rest,
          bucket: dstBucket,
          key: dstKey,
          versionId: versionIdFor(b.versioning, sequence),
          sequence,
          contentType: replace ? (options.contentType ?? "application/octet-stream") : src.contentType,
          userMetadata: replace ? { ...(options.userMetadata ?? {}) } : { ...src.userMetadata },
          lastModified: this.options.now(),
          ...extras({ headers: replace ? options.headers : src.headers, tags: options.taggingDirective === "REPLACE" ? options.tags : src.tags }),
        };
        await this.#commitVersion(tx, b, version);
        tx.addCounters({ plainPuts: 1 });
        return { bucket: dstBucket, key: dstKey, versionId: version.versionId, etag: version.etag, size: version.size };
      }),
    );
  }

  /**
   * Presents the current objects of `srcBucket/srcPrefix` at `dstBucket/dstPrefix` (the rest of each
   * key kept), at no storage cost: new versions referencing the same chunks, in one transaction.
   * The destination bucket is created when missing.
   */
  async snapshot(srcBucket: string, srcPrefix: string, dstBucket: string, dstPrefix: string): Promise<SnapshotResult> {
    this.#check();
    checkBucketName(srcBucket);
    checkPrefix(srcPrefix);
    checkBucketName(dstBucket);
    checkPrefix(dstPrefix);
    if (srcBucket === dstBucket && (dstPrefix.startsWith(srcPrefix) || srcPrefix.startsWith(dstPrefix))) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", "snapshot source and destination overlap");
    }
    await this.ensureBucket(dstBucket);
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        await this.#bucketIn(tx, srcBucket);
        const b = await this.#bucketIn(tx, dstBucket);
        let objects = 0;
        let bytes = 0;
        for await (const h of tx.listCurrent(srcBucket, { prefix: srcPrefix })) {
          if (h.deleteMarker) continue;
          const src = await tx.getVersion(srcBucket, h.key, h.versionId);
          if (src === undefined) continue;
          const key = dstPrefix + h.key.slice(srcPrefix.length);
          checkObjectKey(key);
          const sequence = await tx.nextSequence();
          await this.#commitVersion(tx, b, { ...src, bucket: dstBucket, key, versionId: versionIdFor(b.versioning, sequence), sequence });
          objects++;
          bytes += src.size;
        }
        return { objects, bytes };
      }),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Multipart uploads: parts are ingested like objects; completion is a metadata operation
  // ------------------------------------------------------------------------------------------

  async createMultipartUpload(
    bucket: string,
    key: string,
    options: { contentType?: string; userMetadata?: Record<string, string>; headers?: Record<string, string>; tags?: Record<string, string> } = {},
  ): Promise<UploadRecord> {
    this.#check();
    checkBucketName(bucket);
    checkObjectKey(key);
    return this.#transaction(async (tx) => {
      await this.#bucketIn(tx, bucket);
      const upload: UploadRecord = {
        bucket,
        key,
        uploadId: randomBytes(16).toString("hex"),
        initiated: this.options.now(),
        contentType: options.contentType ?? "application/octet-stream",
        userMetadata: { ...(options.userMetadata ?? {}) },
        ...(extras(options) as Pick<UploadRecord, "headers" | "tags">),
      };
      tx.putUpload(upload);
      return upload;
    });
  }

  async #uploadIn(tx: MetaTx | MetadataStore, bucket: string, uploadId: string): Promise<UploadRecord> {
    const u = typeof uploadId === "string" && /^[0-9a-f]{32}$/.test(uploadId) ? await tx.getUpload(bucket, uploadId) : undefined;
    if (u === undefined) throw new StowageError("STOWAGE_NO_SUCH_UPLOAD", `upload ${String(uploadId)} does not exist in bucket ${bucket}`);
    return u;
  }

  static #checkPartNumber(partNumber: number): void {
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > MAX_PARTS) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `part number ${partNumber} outside 1..${MAX_PARTS}`);
    }
  }

  async #commitPart(uploadId: string, bucket: string, part: PartRecord, ingestedBytes: number): Promise<PartRecord> {
    return this.#transaction(async (tx) => {
      await this.#uploadIn(tx, bucket, uploadId);
      await tx.addRefs(part.manifest, 1);
      const old = await tx.getPart(uploadId, part.partNumber);
      if (old !== undefined) await tx.addRefs(old.manifest, -1);
      tx.putPart(part);
      tx.addCounters({ plainPuts: 1, ingestedBytes });
      return part;
    });
  }

  async uploadPart(bucket: string, uploadId: string, partNumber: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { contentMD5?: string; size?: number } = {}): Promise<PartRecord> {
    this.#check();
    checkBucketName(bucket);
    ObjectStore.#checkPartNumber(partNumber);
    await this.#uploadIn(this.meta, bucket, uploadId);
    return this.lock.shared(async () => {
      const data = await this.#ingestDurably(source, { ...options, maxSize: MAX_PUT_SIZE });
      const part: PartRecord = { uploadId, partNumber, size: data.size, etag: data.md5.toString("hex"), lastModified: this.options.now(), manifest: data.manifest };
      return this.#commitPart(uploadId, bucket, part, data.size);
    });
  }

  /**
   * UploadPartCopy: the part references (a range of) an existing object's chunks. The ETag is the
   * MD5 of the bytes, so a ranged copy reads them once (nothing is written); a whole single-part
   * source reuses its ETag.
   */
  async uploadPartCopy(
    bucket: string,
    uploadId: string,
    partNumber: number,
    source: { bucket: string; key: string; versionId?: string; range?: { start: number; end: number } },
  ): Promise<PartRecord> {
    this.#check();
    ObjectStore.#checkPartNumber(partNumber);
    await this.#uploadIn(this.meta, bucket, uploadId);
    const src = await this.#readableVersion(source.bucket, source.key, source.versionId);
    let span: ByteSpan = { start: 0, end: src.size };
    if (source.range !== undefined) {
      if (source.range.end >= src.size || source.range.start > source.range.end) {
        throw new StowageError("STOWAGE_INVALID_RANGE", `copy range ${source.range.start}-${source.range.end} is outside the ${src.size}-byte source`);
      }
      span = { start: source.range.start, end: source.range.end + 1 };
    }
    const whole = span.start === 0 && span.end === src.size;
    let etag = src.etag;
    if (!whole || etag.includes("-")) {
      const md5 = createHash("md5");
      for await (const buf of readManifest(this.meta, this.reader, src.manifest, span, `${source.bucket}/${source.key}`)) md5.update(buf);
      etag = md5.digest("hex");
    }
    const manifest = sliceManifest(src.manifest, span);
    return this.lock.shared(() =>
      this.#commitPart(uploadId, bucket, { uploadId, partNumber, size: span.end - span.start, etag, lastModified: this.options.now(), manifest }, 0),
    );
  }

  async completeMultipartUpload(bucket: string, uploadId: string, parts: readonly CompletedPart[]): Promise<PutResult> {
    this.#check();
    checkBucketName(bucket);
    if (parts.length === 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "a multipart completion must list at least one part");
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        const b = await this.#bucketIn(tx, bucket);
        const upload = await this.#uploadIn(tx, bucket, uploadId);
        for (let i = 1; i < parts.length; i++) {
          if (parts[i]!.partNumber <= parts[i - 1]!.partNumber) {
            throw new StowageError("STOWAGE_INVALID_PART_ORDER", "parts must be listed in ascending order of part number");
          }
        }
        const chosen: PartRecord[] = [];
        for (const p of parts) {
          const rec = await tx.getPart(uploadId, p.partNumber);
          if (rec === undefined || rec.etag !== normalizeEtag(p.etag)) {
            throw new StowageError("STOWAGE_INVALID_PART", `part ${p.partNumber} was not uploaded or its ETag does not match`);
          }
          chosen.push(rec);
        }
        for (let i = 0; i < chosen.length - 1; i++) {
          if (chosen[i]!.size < this.options.minPartSize) {
            throw new StowageError("STOWAGE_ENTITY_TOO_SMALL", `part ${chosen[i]!.partNumber} is ${chosen[i]!.size} bytes, below the ${this.options.minPartSize}-byte minimum`);
          }
        }
        const manifest = chosen.flatMap((p) => p.manifest);
        const md5 = createHash("md5");
        for (const p of chosen) md5.update(Buffer.from(p.etag, "hex"));
        const sequence = await tx.nextSequence();
        const version: ObjectVersion = {
          bucket,
          key: upload.key,
          versionId: versionIdFor(b.versioning, sequence),
          sequence,
          deleteMarker: false,
          size: manifestBytes(manifest),
          etag: `${md5.digest("hex")}-${chosen.length}`,
          contentType: upload.contentType,
          userMetadata: upload.userMetadata,
          lastModified: this.options.now(),
          partSizes: chosen.map((p) => p.size),
          ...extras({ headers: upload.headers, tags: upload.tags }),
          manifest,
        };
        await this.#commitVersion(tx, b, version);
        // The parts' references end with the upload (the version now holds its own).
        for await (const p of tx.listParts(uploadId)) {
          await tx.addRefs(p.manifest, -1);
          tx.deletePart(uploadId, p.partNumber);
        }
        tx.deleteUpload(bucket, uploadId);
        return { bucket, key: upload.key, versionId: version.versionId, etag: version.etag, size: version.size };
      }),
    );
  }

  async abortMultipartUpload(bucket: string, uploadId: string): Promise<void> {
    this.#check();
    checkBucketName(bucket);
    await this.lock.shared(() =>
      this.#transaction(async (tx) => {
        await this.#uploadIn(tx, bucket, uploadId);
        for await (const p of tx.listParts(uploadId)) {
          await tx.addRefs(p.manifest, -1);
          tx.deletePart(uploadId, p.partNumber);
        }
        tx.deleteUpload(bucket, uploadId);
      }),
    );
  }

  async listParts(bucket: string, uploadId: string): Promise<{ upload: UploadRecord; parts: Array<Omit<PartRecord, "manifest">> }> {
    const upload = await this.#uploadIn(this.meta, bucket, uploadId);
    const parts: Array<Omit<PartRecord, "manifest">> = [];
    for await (const p of this.meta.listParts(uploadId)) {
      const { manifest: _m, ...rest } = p;
      parts.push(rest);
    }
    return { upload, parts };
  }

  async listMultipartUploads(bucket: string, options: { prefix?: string } = {}): Promise<UploadRecord[]> {
    await this.headBucket(bucket);
    const out: UploadRecord[] = [];
    for await (const u of this.meta.listUploads(bucket, options.prefix === undefined ? {} : { prefix: options.prefix })) out.push(u);
    return out;
  }
}

function encodeToken(key: string, commonPrefix: boolean): string {
  return Buffer.from((commonPrefix ? "p" : "k") + key, "utf8").toString("base64url");
}

function decodeToken(token: string): { key: string; commonPrefix: boolean } {
  const text = Buffer.from(token, "base64url").toString("utf8");
  if (text.length < 2 || (text[0] !== "p" && text[0] !== "k")) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the continuation token is not valid");
  return { key: text.slice(1), commonPrefix: text[0] === "p" };
}
