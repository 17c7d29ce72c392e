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
 *
 * Events (the outbox): each transaction that changes an object or records a pack appends the
 * events announcing it (`object-created`, `object-deleted`, `pack-uploaded`, `upload-needed`) to the
 * metadata store's outbox, in the same atomic batch; an OutboxRelay (src/events/outbox.ts) moves
 * them to the event log.
 *
 * Durability (DESIGN.md decision 4): each bucket's policy picks the packer its writes go through:
 * `cloud` (default) the packer on the cloud-first backend, `local` the write-back packer on
 * `writeBackBackend` (packs recorded with `uploaded: false` until the tier's uploader calls
 * {@link ObjectStore.markPackUploaded}). A cloud-policy write is never acknowledged while it relies
 * on a chunk that lives only in a write-back pack not yet uploaded: ingest does not deduplicate
 * against such chunks (it stores them again in a cloud pack, whose commit points the chunk record at
 * the cloud copy), and copies, snapshots and multipart completions into cloud-policy buckets first
 * re-store such chunks in the cloud.
 */
import { createHash } from "node:crypto";
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
  ChunkRecord,
  Durability,
  ManifestEntry,
  MetaReader,
  MetaTx,
  MetadataStore,
  ObjectVersion,
  OutboxEvent,
  PackRecord,
  PartRecord,
  UploadRecord,
  VersionHeader,
  Versioning,
} from "../meta/types.js";
import { PackBlobs, packIdOfBlobKey } from "./pack-blobs.js";
import { ingest, type IngestLimits, type IngestResult } from "./ingest.js";
import { readManifest, type ByteSpan } from "./read.js";
import { checkBucketName, checkObjectKey, checkPrefix } from "./names.js";
import { SharedExclusiveLock } from "./lock.js";
import { encodeEntry, indexOfRecordId, intentRecord, intentRecordId, recordingTx, type JournalOp, type PutIntent } from "./journal.js";
import { JournalShipper } from "./journal-shipper.js";
import { checkpointKey, encodeCheckpoint, namespaceOps } from "./checkpoint.js";
import { secureRandomBytes } from "../util/random.js";

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
  /**
   * The write-back view of the tier manager (put acknowledged after a local fsync; uploaded to the
   * cloud later). Needed for buckets with `local` durability; without it they are written cloud-first.
   */
  writeBackBackend?: BlobBackend;
  /**
   * Append the events announcing each change to the metadata outbox (default true). Cheap: one small
   * row per change in the same batch. A relay (src/events/outbox.ts) empties the outbox; without one
   * `stowage gc` keeps it bounded (GcOptions.maxOutboxEvents). Turn it off only where nothing will
   * ever consume events (some tests, benchmarks).
   */
  events?: boolean;
  /**
   * Write the metadata journal (docs/RECOVERY.md): every namespace change is also sealed into the
   * cloud packs, so `stowage recover` can rebuild the repository from the bucket. A put on a `cloud`
   * bucket writes an *intent* into its data's own pack flush and is acknowledged once that and its
   * local commit are done; every other change on a `cloud` bucket is acknowledged once its journal
   * entry, and every entry before it, is durable in the cloud tier. Default true.
   */
  journal?: boolean;
  /** How long a journal entry whose operation did not wait for it may wait for a pack (ms). Default 1000. */
  journalLazyMs?: number;
  /** Checkpoint keys gc ignores (history a recovery voided; RepositoryConfig.abandonedCheckpoints). */
  ignoredCheckpoints?: readonly string[];
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

export interface CreateBucketOptions {
  versioning?: Versioning;
  /** Default `cloud`. `local` needs a store with a writeBackBackend. */
  durability?: Durability;
}

/** A bucket as the store's getters show it: durability always set. */
export type BucketInfo = BucketRecord & { durability: Durability };

function bucketInfo(b: BucketRecord): BucketInfo {
  return { ...b, durability: b.durability ?? "cloud" };
}

/** Thrown inside a transaction that would make a cloud-policy copy rely on write-back-only chunks. */
class NeedsCloudCopy {
  constructor(readonly chunks: Buffer[]) {}
}

const MAX_CLOUD_COPY_ATTEMPTS = 8;

export interface PutResult {
  bucket: string;
  key: string;
  versionId: string;
  etag: string;
  size: number;
  /** The version's last-modified time (ms), when the operation reports it (copyObject). */
  lastModified?: number;
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

/** putObjects batches up to this size write put intents; larger ones wait for their one journal entry. */
const MAX_BATCH_INTENTS = 32;

/** Sequence numbers skipped when a store opens with the journal on (see the restart mark). */
const RESERVE_HEADROOM = 2 ** 20;

export function versionIdFor(versioning: Versioning, sequence: number): string {
  if (versioning !== "enabled") return "null";
  return sequence.toString(16).padStart(12, "0") + secureRandomBytes(6).toString("hex");
}

/**
 * The version id of a put planned by an intent (whose version carries an id made as for a versioned
 * bucket): that id if the bucket is versioned when the put commits (or is recovered), else "null".
 * Deterministic, so the client, the journal entry and a recovery from the intent agree.
 */
export function plannedVersionId(versioning: Versioning, planned: Pick<ObjectVersion, "versionId">): string {
  return versioning === "enabled" ? planned.versionId : "null";
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

// ------------------------------------------------------------------------------------------
// HOOK (issue 6, the POSIX view): what src/store/compose.ts needs of the store's private write
// path. Nothing else should use it; it adds no behaviour, it only exposes existing steps.
// ------------------------------------------------------------------------------------------

/** The fields of a version that {@link ComposeHooks.writeVersion} takes (it assigns sequence, version id, time). */
export type ComposedVersion = Omit<ObjectVersion, "bucket" | "key" | "versionId" | "sequence" | "lastModified" | "deleteMarker">;

/**
 * @internal How a transaction's journal entry is acknowledged: `"wait"` once it (and every entry
 * before it) is durable in the cloud tier; `"lazy"` at once, reporting the entry's index to
 * `onEntry` (the caller waits later, e.g. at fsync, with {@link ComposeHooks.waitJournal}).
 */
export type JournalMode = { mode: "wait" } | { mode: "lazy"; onEntry: (index: number) => void };

/** @internal The store's write-path steps, for src/store/compose.ts only. */
export interface ComposeHooks {
  /** Throws when the store is closed. */
  check(): void;
  /** Runs `fn` holding the store's lock shared (the garbage collector is excluded meanwhile). */
  shared<T>(fn: () => Promise<T>): Promise<T>;
  /** Stores a stream's new chunks in the packer of the bucket's durability (not yet durable). Caller holds the lock. */
  ingest(bucket: BucketRecord, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options?: { digest?: boolean }): Promise<IngestResult>;
  /** Waits until the chunks of `result` are durable as the bucket's policy says. */
  durable(bucket: BucketRecord, result: IngestResult): Promise<void>;
  /**
   * A transaction that may reference existing chunks: `needsCloud(bucket, manifest)` for every
   * manifest it commits (the transaction is re-run after re-storing write-back-only chunks in the
   * cloud for cloud-policy buckets). Caller holds the lock.
   */
  commit<T>(fn: (tx: MetaTx, needsCloud: (b: BucketRecord, manifest: readonly ManifestEntry[]) => Promise<void>) => Promise<T>, journal?: JournalMode): Promise<T>;
  /** Resolves once every journal entry up to `index` is durable in the cloud tier (at once without a journal). */
  waitJournal(index: number): Promise<void>;
  /** The bucket's record in `tx`, or STOWAGE_NO_SUCH_BUCKET. */
  bucketIn(tx: MetaTx, name: string): Promise<BucketRecord>;
  /** Writes a new current version of `key` (S3's versioning rules, references, `object-created`). */
  writeVersion(tx: MetaTx, b: BucketRecord, key: string, fields: ComposedVersion, counters?: { ingestedBytes: number }): Promise<ObjectVersion>;
  /** DeleteObject without a version id, inside `tx` (references, delete marker, `object-deleted`). */
  deleteCurrent(tx: MetaTx, b: BucketRecord, key: string): Promise<DeleteResult>;
  /**
   * Moves `src` (the current version of its key, read in `tx`) to `key` in `to`: as
   * {@link writeVersion} of its fields at the destination then {@link deleteCurrent} at the source,
   * with the same rows and events, but cheaper between buckets without versioning (the common
   * case of a rename): the moved chunks' reference counts are left as they are (+1 and -1) and the
   * source's `null` version is not looked up again.
   */
  moveVersion(tx: MetaTx, from: BucketRecord, src: ObjectVersion, to: BucketRecord, key: string, userMetadata: Record<string, string>): Promise<ObjectVersion>;
  now(): number;
}

/**
 * Writes a new version's rows in `tx`: in a bucket without versioning, it replaces the key's `null`
 * version — unless that one has a higher sequence (a put that reserved its sequence earlier but
 * committed later lost the race: it is superseded and writes nothing; returns false). With
 * `refs`, reference counts follow. `idempotent`: a version with the same sequence already there
 * means it was applied before (returns false). Shared by the object store and recovery (which
 * applies unresolved put intents the same way).
 */
export async function commitVersionRows(tx: MetaTx, bucket: BucketRecord, version: ObjectVersion, refs: boolean, idempotent = false): Promise<boolean> {
  // (Recovery may apply an intent a second time, when resumed: a version already there is left alone.)
  if (idempotent && (await tx.versionsOfKey(bucket.name, version.key)).some((h) => h.sequence === version.sequence)) return false;
  if (bucket.versioning !== "enabled") {
    const old = (await tx.versionsOfKey(bucket.name, version.key)).some((h) => h.versionId === "null") ? await tx.getVersion(bucket.name, version.key, "null") : undefined;
    if (old !== undefined && old.sequence > version.sequence) return false;
    if (refs) await tx.addRefs(version.manifest, 1);
    if (old !== undefined) {
      if (refs) await tx.addRefs(old.manifest, -1);
      tx.deleteVersion(bucket.name, version.key, old.sequence);
    }
  } else if (refs) {
    await tx.addRefs(version.manifest, 1);
  }
  tx.putVersion(version);
  return true;
}

export class ObjectStore {
  readonly meta: MetadataStore;
  /** The cloud-first backend: where packs of `cloud`-durability writes (and gc's packs) go. */
  readonly backend: BlobBackend;
  /** The write-back backend (local tier), when the store has one. */
  readonly writeBackBackend: BlobBackend | undefined;
  readonly keys: RepositoryKeys;
  /** The packer on {@link backend} (cloud durability). */
  readonly packer: Packer;
  /** The packer on {@link writeBackBackend} (`local` durability), when there is one. */
  readonly writeBackPacker: Packer | undefined;
  /** Reads pack blobs from whichever backend holds them (see pack-blobs.ts). */
  readonly packBlobs: PackBlobs;
  readonly reader: PackReader;
  readonly encoder: RecordEncoder;
  readonly lock = new SharedExclusiveLock();
  readonly options: Required<Omit<ObjectStoreOptions, "chunker" | "encoderThreads" | "writeBackBackend" | "journalLazyMs">> & { chunker: ChunkerParams };
  readonly #hasher: ChunkIdHasher;
  #closed = false;
  /** Events appended so far (to notify listeners after their transaction commits). */
  #eventsAppended = 0;
  readonly #eventListeners = new Set<() => void>();
  /** Ships journal entries to the cloud packer (when the journal is on). */
  readonly #shipper: JournalShipper | undefined;
  /** Settles once the shipper has taken the entries left unshipped by an earlier session. */
  readonly #shipperReady: Promise<void>;
  /** Put intents written and not yet resolved (committed or cancelled): id → sequence. */
  readonly #intentsInFlight = new Map<string, number>();
  /** Intents resolved since the last checkpoint (id → sequence), for the next one. */
  readonly #intentsResolved = new Map<string, number>();

  constructor(meta: MetadataStore, backend: BlobBackend, keys: RepositoryKeys, options: ObjectStoreOptions = {}) {
    this.meta = meta;
    this.backend = backend;
    this.writeBackBackend = options.writeBackBackend;
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
      events: options.events ?? true,
      journal: options.journal ?? true,
      ignoredCheckpoints: options.ignoredCheckpoints ?? [],
      now: options.now ?? Date.now,
    };
    this.#hasher = new ChunkIdHasher(keys);
    const packerOptions = {
      targetSize: this.options.packTargetSize,
      maxUploads: this.options.maxUploads,
      commitDelayMs: this.options.commitDelayMs,
    };
    this.packer = new Packer(backend, keys, (commit) => this.#commitPack(commit, false), packerOptions);
    this.writeBackPacker =
      options.writeBackBackend === undefined ? undefined : new Packer(options.writeBackBackend, keys, (commit) => this.#commitPack(commit, true), packerOptions);
    this.packBlobs = new PackBlobs(backend, options.writeBackBackend, meta);
    this.encoder = new RecordEncoder(keys, {
      level: this.options.compressionLevel,
      ...(options.encoderThreads === undefined ? {} : { threads: options.encoderThreads }),
    });
    this.reader = new PackReader(this.packBlobs, keys, {
      cacheBytes: this.options.cacheBytes,
      open: (entry, sealedBytes, packId) => this.encoder.openRecord(entry, sealedBytes, packId),
    });
    if (this.options.journal) {
      const shipper = new JournalShipper(this.packer, { level: this.options.compressionLevel, ...(options.journalLazyMs === undefined ? {} : { lazyMs: options.journalLazyMs }) });
      this.#shipper = shipper;
      this.#shipperReady = (async () => {
        // The restart mark: move the sequence counter past anything the last run may have reserved
        // for put intents without persisting it (fewer than RESERVE_HEADROOM in flight), and void
        // the intents below it that nothing resolved (docs/RECOVERY.md).
        await meta.transaction(async (tx) => {
          const next = (await tx.nextSequence()) + RESERVE_HEADROOM;
          tx.observeSequence(next - 1);
          this.#appendEntry(tx, [], [], { restart: next });
        });
        const pending: Array<{ index: number; entry: Buffer }> = [];
        for await (const p of meta.listJournal()) pending.push(p);
        shipper.start(await meta.journalIndex(), pending);
      })();
      // Awaited (and so reported) by the first journaled transaction and by close().
      this.#shipperReady.catch(() => undefined);
    } else {
      this.#shipper = undefined;
      this.#shipperReady = Promise.resolve();
    }
  }

  /** Journal entries committed locally and not yet durable in the cloud tier (0 without the journal). */
  journalBacklog(): number {
    return this.#shipper?.backlog ?? 0;
  }

  /** Makes every journal entry committed so far durable in the cloud tier (no-op without the journal). */
  async syncJournal(): Promise<void> {
    if (this.#shipper === undefined) return;
    await this.#shipperReady;
    await this.#shipper.waitDurable(await this.meta.journalIndex());
  }

  /**
   * Records an uploaded pack and its chunks, with its event (`pack-uploaded` for the cloud-first
   * packer, `upload-needed` for the write-back packer). A chunk already indexed (a race between two
   * writers that both stored it, or a cloud-durability write storing again a chunk that lives only
   * in a write-back pack) keeps its record and references — except that a cloud pack's copy
   * replaces a record pointing at a write-back pack not yet uploaded. The other copy is dead bytes
   * for gc.
   */
  async #commitPack(commit: PackCommit, writeBack: boolean): Promise<void> {
    await this.#transaction(async (tx) => {
      let journal = 0;
      const shipped: number[] = [];
      for (const [id, rec] of commit.metadataRecords) {
        journal += rec.storedLength;
        const index = indexOfRecordId(id);
        if (index !== undefined) shipped.push(index);
      }
      // Entries durable in the cloud: their local rows have done their job.
      if (shipped.length > 0 && !writeBack) tx.deleteJournal(shipped);
      const pack: PackRecord = { ...commit.pack, ...(writeBack ? { uploaded: false } : {}), ...(journal > 0 ? { journal } : {}) };
      tx.putPack(pack);
      const packs = new Map<string, PackRecord | undefined>();
      for (const [id, rec] of commit.chunks) {
        const old = await tx.getChunk(id);
        if (old === undefined) tx.putChunk(id, rec);
        else if (!writeBack && !(await ObjectStore.#inCloud(tx, old, packs))) tx.putChunk(id, { ...rec, refs: old.refs });
      }
      if (writeBack) {
        this.emitEvent(tx, { kind: "upload-needed", key: pack.id, data: { blobKey: pack.blobKey, size: pack.size } });
      } else {
        tx.addCounters({ backendPuts: 1, backendBytesWritten: pack.size });
        this.emitEvent(tx, { kind: "pack-uploaded", key: pack.id, data: { blobKey: pack.blobKey, size: pack.size } });
      }
    }, { internal: true });
  }

  /** False when the chunk's record names a write-back pack not yet uploaded. */
  static async #inCloud(r: MetaReader, rec: ChunkRecord, cache?: Map<string, PackRecord | undefined>): Promise<boolean> {
    let p: PackRecord | undefined;
    if (cache?.has(rec.packId) === true) p = cache.get(rec.packId);
    else {
      p = await r.getPack(rec.packId);
      cache?.set(rec.packId, p);
    }
    return p?.uploaded !== false;
  }

  /**
   * Appends an event to the outbox within `tx` (nothing when the store's `events` option is off).
   * @internal For the store's own transactions and the garbage collector.
   */
  emitEvent(tx: MetaTx, event: OutboxEvent): void {
    if (!this.options.events) return;
    tx.appendEvent({ ...event, time: event.time ?? this.options.now() });
    this.#eventsAppended++;
  }

  /**
   * Calls `listener` after each transaction that appended events has committed (e.g. an outbox
   * relay's notify()). Returns the function that removes it.
   */
  onEvents(listener: () => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  /** The backend that holds a pack's blob: the write-back one until the pack is uploaded. */
  backendOf(pack: Pick<PackRecord, "uploaded">): BlobBackend {
    return this.packBlobs.backendOf(pack);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#shipperReady.catch(() => undefined);
      await this.#shipper?.close();
      await Promise.all([this.packer.close(), this.writeBackPacker?.close()]);
    } finally {
      await this.encoder.close();
    }
  }

  #check(): void {
    if (this.#closed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the object store is closed");
  }

  /**
   * Runs a metadata transaction, turning a full disk into STOWAGE_NO_SPACE; then tells event
   * listeners. With the journal on, the namespace rows the transaction writes (and the `intents`
   * it resolves) become one journal entry, committed in the same batch under the next journal index
   * and then shipped to the cloud packer. `journal: "wait"` (the default) resolves only once that
   * entry and every earlier one is durable in the cloud tier; `"lazy"` does not wait (puts whose
   * intent is already durable, writes to `local` buckets). If the transaction fails, its `intents`
   * are cancelled by an entry of their own, so recovery does not apply them. A `"wait"` transaction
   * that writes no entry (a DELETE of a key already gone) still waits until every entry committed
   * before it is durable, since its answer rests on them — unless `internal` (pack commits and
   * the like, which answer no client and are what makes entries durable).
   */
  async #transaction<T>(
    fn: (tx: MetaTx) => Promise<T>,
    options: { journal?: "wait" | "lazy"; intents?: readonly string[]; onEntry?: (index: number) => void; internal?: boolean } = {},
  ): Promise<T> {
    const before = this.#eventsAppended;
    let entry: { index: number; plain: Buffer } | undefined;
    /** For a transaction that writes no entry: the last entry committed before it. */
    let seen = 0;
    const intents = options.intents ?? [];
    const run = !this.options.journal
      ? fn
      : async (tx: MetaTx): Promise<T> => {
          entry = undefined;
          const rec = recordingTx(tx);
          const r = await fn(rec.tx);
          if (rec.ops.length > 0 || intents.length > 0) entry = this.#appendEntry(tx, rec.ops, intents);
          else if (options.internal !== true) seen = await tx.journalIndex();
          this.#resolveIntents(intents);
          return r;
        };
    try {
      if (this.options.journal) await this.#shipperReady;
      let result: T;
      try {
        result = await this.meta.transaction(run);
      } catch (err) {
        if (intents.length > 0) await this.#cancelIntents(intents);
        throw err;
      }
      if (entry !== undefined) {
        const wait = options.journal !== "lazy";
        this.#shipper!.ship(entry.index, entry.plain, wait);
        options.onEntry?.(entry.index);
        if (wait) await this.#shipper!.waitDurable(entry.index);
      } else if (seen > 0 && options.journal !== "lazy") {
        // It changed nothing, but its answer may rest on changes not yet durable: a DELETE of a key
        // that an earlier, unacknowledged DELETE removed must not be acknowledged before that one's
        // entry is durable, or a crash brings the key back (found by the gateway crash test).
        await this.#shipper!.waitDurable(seen);
      }
      if (this.#eventsAppended !== before) {
        for (const l of this.#eventListeners) {
          try {
            l();
          } catch {
            // a listener's failure is not the transaction's
          }
        }
      }
      return result;
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (isStowageError(err, "STOWAGE_KV_IO") && (cause?.code === "ENOSPC" || cause?.code === "EDQUOT")) {
        throw new StowageError("STOWAGE_NO_SPACE", `metadata write failed, disk full: ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  #appendEntry(tx: MetaTx, ops: JournalOp[], intents: readonly string[], extra: { restart?: number } = {}): { index: number; plain: Buffer } {
    let plain: Buffer | undefined;
    const time = this.options.now();
    const index = tx.appendJournal((i) => (plain = encodeEntry({ index: i, time, ops, ...(intents.length > 0 ? { intents: [...intents] } : {}), ...extra })));
    return { index, plain: plain! };
  }

  /** Inside the transaction that resolves them (commits or cancels their puts): for checkpoints. */
  #resolveIntents(intents: readonly string[]): void {
    for (const id of intents) {
      const seq = this.#intentsInFlight.get(id);
      if (seq === undefined) continue;
      this.#intentsInFlight.delete(id);
      this.#intentsResolved.set(id, seq);
    }
  }

  /**
   * Writes a metadata checkpoint (src/store/checkpoint.ts, docs/RECOVERY.md) to the cloud tier: the
   * whole namespace as of the current journal index, read under the transaction lock (writes wait
   * meanwhile). Recovery then starts from it; gc drops the journal records the oldest kept
   * checkpoint covers.
   */
  async checkpoint(): Promise<{ key: string; index: number; rows: number; bytes: number }> {
    this.#check();
    if (this.#shipper === undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "checkpoints need the metadata journal (it is off)");
    await this.#shipperReady;
    const c = await this.meta.transaction(async (tx) => {
      const index = await tx.journalIndex();
      const next = await tx.nextSequence();
      const intentFloor = Math.min(next, ...this.#intentsInFlight.values());
      const resolved: string[] = [];
      for (const [id, seq] of this.#intentsResolved) {
        if (seq >= intentFloor) resolved.push(id);
        else this.#intentsResolved.delete(id);
      }
      return { index, time: this.options.now(), intentFloor, resolved, ops: await namespaceOps(tx) };
    });
    const key = checkpointKey(c.index);
    const parts = encodeCheckpoint(this.keys, c, this.options.compressionLevel);
    await this.backend.put(key, parts);
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    return { key, index: c.index, rows: c.ops.length, bytes };
  }

  /** Records that the puts of `intents` did not commit (best effort: a crash before leaves them to recovery's judgement). */
  async #cancelIntents(intents: readonly string[]): Promise<void> {
    try {
      const e = await this.meta.transaction(async (tx) => {
        const appended = this.#appendEntry(tx, [], intents);
        this.#resolveIntents(intents);
        return appended;
      });
      this.#shipper?.ship(e.index, e.plain, false);
    } catch {
      // the transaction's own error is the one to report
    }
  }

  /**
   * For a put into a `cloud` bucket with the journal on: reserves the version's sequence and hands
   * the packer an intent record holding the version as it will be committed, so that the flush
   * that makes the data durable makes the intent durable too. Returns the version and intent id.
   */
  async #writeIntent(b: BucketRecord, key: string, data: IngestResult, options: PutOptions): Promise<{ version: ObjectVersion; intent: string }> {
    // Not before the restart mark moved the sequence counter past the last run's reservations.
    await this.#shipperReady;
    const sequence = this.meta.reserveSequence();
    const version = { ...this.#newVersion(b, key, data, options, sequence), versionId: versionIdFor("enabled", sequence) };
    const intent: PutIntent = { id: intentRecordId(sequence).toString("hex"), version };
    this.#intentsInFlight.set(intent.id, sequence);
    try {
      await this.packer.add(intentRecord(intent, this.options.compressionLevel));
    } catch (err) {
      this.#intentsInFlight.delete(intent.id);
      throw err;
    }
    return { version, intent: intent.id };
  }

  // ------------------------------------------------------------------------------------------
  // Buckets
  // ------------------------------------------------------------------------------------------

  /** Throws unless `policy` is a durability this store can honour. */
  #checkDurability(policy: unknown): asserts policy is Durability {
    if (policy !== "cloud" && policy !== "local") {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `durability must be cloud or local, got ${JSON.stringify(policy)}`);
    }
    if (policy === "local" && this.writeBackPacker === undefined) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", "write-back durability needs a local tier");
    }
  }

  /**
   * Creates a bucket. The second argument is its versioning (the older form) or options:
   * versioning (default `unversioned`) and durability (default `cloud`).
   */
  async createBucket(name: string, options: Versioning | CreateBucketOptions = {}): Promise<BucketInfo> {
    this.#check();
    checkBucketName(name);
    const o: CreateBucketOptions = typeof options === "string" ? { versioning: options } : options;
    const durability = o.durability ?? "cloud";
    this.#checkDurability(durability);
    return this.#transaction(async (tx) => {
      if ((await tx.getBucket(name)) !== undefined) throw new StowageError("STOWAGE_BUCKET_EXISTS", `bucket ${name} already exists`);
      const rec: BucketRecord = { name, created: this.options.now(), versioning: o.versioning ?? "unversioned", ...(durability === "local" ? { durability } : {}) };
      tx.putBucket(rec);
      return bucketInfo(rec);
    });
  }

  /** Creates the bucket unless it exists (the CLI's "created on first put"). */
  async ensureBucket(name: string): Promise<BucketInfo> {
    checkBucketName(name);
    const existing = await this.meta.getBucket(name);
    if (existing !== undefined) return bucketInfo(existing);
    try {
      return await this.createBucket(name);
    } catch (err) {
      if (isStowageError(err, "STOWAGE_BUCKET_EXISTS")) return bucketInfo((await this.meta.getBucket(name))!);
      throw err;
    }
  }

  async headBucket(name: string): Promise<BucketInfo> {
    checkBucketName(name);
    const b = await this.meta.getBucket(name);
    if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
    return bucketInfo(b);
  }

  async listBuckets(): Promise<BucketInfo[]> {
    return (await this.meta.listBuckets()).map(bucketInfo);
  }

  /**
   * Sets a bucket's durability policy. It applies to writes that start afterwards; what was written
   * before keeps the durability it had (write-back packs are uploaded as usual).
   */
  async setBucketDurability(name: string, policy: Durability): Promise<BucketInfo> {
    this.#check();
    checkBucketName(name);
    this.#checkDurability(policy);
    return this.#transaction(async (tx) => {
      const b = await tx.getBucket(name);
      if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
      const { durability: _d, ...rest } = b;
      const rec: BucketRecord = policy === "local" ? { ...rest, durability: "local" } : rest;
      tx.putBucket(rec);
      return bucketInfo(rec);
    });
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
  async setVersioning(name: string, state: "enabled" | "suspended"): Promise<BucketInfo> {
    this.#check();
    checkBucketName(name);
    return this.#transaction(async (tx) => {
      const b = await tx.getBucket(name);
      if (b === undefined) throw new StowageError("STOWAGE_NO_SUCH_BUCKET", `bucket ${name} does not exist`);
      if (b.versioning === "unversioned" && state === "suspended") return bucketInfo(b);
      const rec = { ...b, versioning: state };
      tx.putBucket(rec);
      return bucketInfo(rec);
    });
  }

  // ------------------------------------------------------------------------------------------
  // Durability: the tier manager's side
  // ------------------------------------------------------------------------------------------

  /**
   * Called by the tier's uploader once the cloud holds the write-back pack `blobKey`: records the
   * pack as uploaded and emits `pack-uploaded`, in one transaction. Idempotent: true when it changed
   * the record, false when the pack was already uploaded or is unknown (e.g. gc deleted it).
   */
  async markPackUploaded(blobKey: string): Promise<boolean> {
    this.#check();
    const id = packIdOfBlobKey(blobKey);
    if (id === undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `not a pack blob key: ${JSON.stringify(blobKey)}`);
    // Shared lock: gc and rebuild-index (exclusive) rewrite pack records from what they read.
    return this.lock.shared(() =>
      this.#transaction(async (tx) => {
        const p = await tx.getPack(id);
        if (p === undefined || p.blobKey !== blobKey || p.uploaded !== false) return false;
        const { uploaded: _u, ...rest } = p;
        tx.putPack(rest);
        tx.addCounters({ backendPuts: 1, backendBytesWritten: p.size });
        this.emitEvent(tx, { kind: "pack-uploaded", key: p.id, data: { blobKey: p.blobKey, size: p.size } });
        return true;
      }, { internal: true }),
    );
  }

  /** Live packs written back locally and not yet uploaded (for the tier's uploader to reconcile at start). */
  async *packsAwaitingUpload(): AsyncIterable<PackRecord> {
    for await (const p of this.meta.listPacks()) if (p.uploaded === false && p.state === "live") yield p;
  }

  /**
   * Blob keys of the packs holding chunks of any version of the objects under `bucket/prefix`
   * (delete markers have none), and of the parts of multipart uploads under it. The tier manager
   * pins them in the local tier. A snapshot of the moment: later writes may add packs.
   */
  async packsOf(bucket: string, prefix = ""): Promise<Set<string>> {
    checkPrefix(prefix);
    await this.headBucket(bucket);
    const chunks = new Set<string>();
    const out = new Set<string>();
    const packs = new Map<string, string | undefined>();
    const add = async (manifest: readonly ManifestEntry[]): Promise<void> => {
      for (const e of manifest) {
        const hex = e.chunkId.toString("hex");
        if (chunks.has(hex)) continue;
        chunks.add(hex);
        const rec = await this.meta.getChunk(e.chunkId);
        if (rec === undefined) continue;
        let blobKey = packs.get(rec.packId);
        if (!packs.has(rec.packId)) {
          blobKey = (await this.meta.getPack(rec.packId))?.blobKey;
          packs.set(rec.packId, blobKey);
        }
        if (blobKey !== undefined) out.add(blobKey);
      }
    };
    for await (const h of this.meta.listVersions(bucket, prefix === "" ? {} : { prefix })) {
      if (h.deleteMarker) continue;
      const v = await this.meta.getVersion(bucket, h.key, h.versionId);
      if (v !== undefined) await add(v.manifest);
    }
    for await (const u of this.meta.listUploads(bucket, prefix === "" ? {} : { prefix })) {
      for await (const p of this.meta.listParts(u.uploadId)) await add(p.manifest);
    }
    return out;
  }

  /** The packer a bucket's writes go through, and whether they need cloud durability. */
  #target(b: BucketRecord): { packer: Packer; cloud: boolean } {
    if (b.durability === "local" && this.writeBackPacker !== undefined) return { packer: this.writeBackPacker, cloud: false };
    return { packer: this.packer, cloud: true };
  }

  /** Chunks of `manifest` whose record names a write-back pack not yet uploaded. */
  async #localOnlyChunks(r: MetaReader, manifest: readonly ManifestEntry[], seen: Set<string>, packs: Map<string, PackRecord | undefined>): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (const e of manifest) {
      const hex = e.chunkId.toString("hex");
      if (seen.has(hex)) continue;
      seen.add(hex);
      const rec = await r.getChunk(e.chunkId);
      if (rec !== undefined && !(await ObjectStore.#inCloud(r, rec, packs))) out.push(e.chunkId);
    }
    return out;
  }

  /**
   * Runs a transaction that commits versions referencing existing chunks (copy, snapshot, multipart
   * completion). `fn` calls `needsCloud(bucket, manifest)` for each manifest it commits; when the
   * bucket is cloud-policy and the manifest relies on chunks that live only in write-back packs,
   * the transaction is abandoned, those chunks are stored again in cloud packs, and it runs again.
   * Caller holds the shared lock.
   */
  async #commitReferences<T>(
    fn: (tx: MetaTx, needsCloud: (b: BucketRecord, manifest: readonly ManifestEntry[]) => Promise<void>) => Promise<T>,
    journal: JournalMode = { mode: "wait" },
  ): Promise<T> {
    const txOptions = journal.mode === "lazy" ? { journal: "lazy" as const, onEntry: journal.onEntry } : {};
    for (let attempt = 1; ; attempt++) {
      const missing: Buffer[] = [];
      try {
        return await this.#transaction(async (tx) => {
          const seen = new Set<string>();
          const packs = new Map<string, PackRecord | undefined>();
          const result = await fn(tx, async (b, manifest) => {
            if (this.#target(b).cloud) missing.push(...(await this.#localOnlyChunks(tx, manifest, seen, packs)));
          });
          if (missing.length > 0) throw new NeedsCloudCopy(missing);
          return result;
        }, txOptions);
      } catch (err) {
        if (!(err instanceof NeedsCloudCopy)) throw err;
        if (attempt >= MAX_CLOUD_COPY_ATTEMPTS) {
          throw new StowageError("STOWAGE_BACKEND_IO", `could not make the chunks of the copy durable in the cloud tier in ${attempt} attempts (its source kept changing)`);
        }
      }
      await this.#storeInCloud(missing);
    }
  }

  /** Stores chunks that live only in write-back packs again, in cloud packs (their commit re-points the chunk records). */
  async #storeInCloud(chunkIds: readonly Buffer[]): Promise<void> {
    const dependsOn: Promise<void>[] = [];
    const ended = this.packer.beginWriter();
    try {
      for (const id of chunkIds) {
        const rec = await this.meta.getChunk(id);
        if (rec === undefined) continue;
        const pack = await this.meta.getPack(rec.packId);
        if (pack === undefined || pack.uploaded !== false) continue;
        const plain = await this.reader.readOne({ chunkId: id, packId: pack.id, blobKey: pack.blobKey, offset: rec.offset, storedLength: rec.storedLength, rawLength: rec.rawLength, method: rec.method });
        const encoded = await this.encoder.encode(id, plain);
        await this.packer.add({ chunkId: id, method: encoded.method, rawLength: plain.length, sealed: encoded.sealed });
        const p = this.packer.whenCommitted(id);
        if (p !== undefined) dependsOn.push(p);
      }
    } finally {
      ended();
    }
    await this.packer.flush();
    await Promise.all(dependsOn);
  }

  // ------------------------------------------------------------------------------------------
  // Writing objects
  // ------------------------------------------------------------------------------------------

  /** Stores the stream's bytes durably in packs (as the bucket's durability says); returns the manifest. Caller holds the shared lock. */
  async #ingestDurably(b: BucketRecord, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number }): Promise<IngestResult> {
    const result = await this.#ingest(b, source, options);
    await this.#durable(b, result);
    return result;
  }

  /** Waits until every chunk `result` needs is durable (in the cloud, or locally for write-back buckets). */
  async #durable(b: BucketRecord, result: IngestResult): Promise<void> {
    // Group commit: every chunk this stream needs (its own, and pending ones of other writers it
    // deduplicated against) is in a pack that this flush waits for.
    const target = this.#target(b);
    // Journal entries waiting for a ride go in this flush (cloud packer only).
    if (target.cloud) this.#shipper?.drain();
    await target.packer.flush();
    // Chunks found pending in packs that may have failed before this flush began (no flush covers
    // those any more): their failure is this stream's failure.
    await Promise.all(result.dependsOn);
  }

  /** Stores the stream's new chunks in packs (not yet durable) and checks its digest. */
  async #ingest(b: BucketRecord, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number; digest?: false }): Promise<IngestResult> {
    const target = this.#target(b);
    const ended = target.packer.beginWriter();
    try {
      return await this.#ingestStream(target, source, options);
    } finally {
      ended();
    }
  }

  async #ingestStream(target: { packer: Packer; cloud: boolean }, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { size?: number; contentMD5?: string; maxSize: number; digest?: false }): Promise<IngestResult> {
    const limits: IngestLimits = { maxSize: options.maxSize, ...(options.digest === false ? { digest: false } : {}) };
    if (options.size !== undefined) limits.expectedSize = options.size;
    const meta = this.meta;
    const result = await ingest(
      {
        params: this.options.chunker,
        hasher: this.#hasher,
        packer: target.packer,
        encoder: this.encoder,
        meta,
        // Cloud durability never relies on a chunk that lives only in a write-back pack.
        // (Checked even without a write-back backend: packs written back in an earlier session may await upload.)
        ...(target.cloud ? { usable: (rec: ChunkRecord) => ObjectStore.#inCloud(meta, rec) } : {}),
      },
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
  async #commitVersion(tx: MetaTx, bucket: BucketRecord, version: ObjectVersion): Promise<boolean> {
    return commitVersionRows(tx, bucket, version, true);
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
    const b = await this.headBucket(bucket);
    return this.lock.shared(async () => {
      const data = await this.#ingest(b, source, ingestOptionsOf(options));
      const planned = this.#usesIntents(b) ? await this.#writeIntent(b, key, data, options) : undefined;
      await this.#durableOrCancel(b, [data], planned === undefined ? [] : [planned.intent]);
      return this.#transaction(async (tx) => this.#commitPut(tx, await this.#bucketIn(tx, bucket), key, data, options, planned?.version), {
        journal: planned !== undefined || !this.#target(b).cloud ? "lazy" : "wait",
        ...(planned === undefined ? {} : { intents: [planned.intent] }),
      });
    });
  }

  /** #durable for each result; if one fails, the intents written for them are cancelled. */
  async #durableOrCancel(b: BucketRecord, results: readonly IngestResult[], intents: readonly string[]): Promise<void> {
    try {
      for (const r of results) await this.#durable(b, r);
    } catch (err) {
      if (intents.length > 0) await this.#cancelIntents(intents);
      throw err;
    }
  }

  /** Puts into this bucket write an intent with their data (journal on, cloud durability). */
  #usesIntents(b: BucketRecord): boolean {
    return this.options.journal && this.#target(b).cloud;
  }

  /** The version a put of `data` creates, with this sequence. */
  #newVersion(b: BucketRecord, key: string, data: IngestResult, options: PutOptions, sequence: number): ObjectVersion {
    return {
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
  }

  /** Announces a committed version (object-created). */
  #emitCreated(tx: MetaTx, v: ObjectVersion): void {
    this.emitEvent(tx, { kind: "object-created", key: `${v.bucket}/${v.key}`, data: { bucket: v.bucket, key: v.key, versionId: v.versionId, size: v.size, etag: v.etag } });
  }

  /** Announces a removed version or a delete marker (object-deleted). */
  #emitDeleted(tx: MetaTx, bucket: string, key: string, versionId: string, deleteMarker: boolean): void {
    this.emitEvent(tx, { kind: "object-deleted", key: `${bucket}/${key}`, data: { bucket, key, versionId, deleteMarker } });
  }

  /** The new version of `key` made of `data`, committed in `tx`. */
  async #commitPut(tx: MetaTx, b: BucketRecord, key: string, data: IngestResult, options: PutOptions, planned?: ObjectVersion): Promise<PutResult> {
    // A planned version (its intent already durable) keeps its sequence; its version id follows the
    // bucket's versioning as it is now, as it would on recovery.
    const version = planned === undefined ? this.#newVersion(b, key, data, options, await tx.nextSequence()) : { ...planned, versionId: plannedVersionId(b.versioning, planned) };
    tx.addCounters({ plainPuts: 1, ingestedBytes: data.size });
    if (await this.#commitVersion(tx, b, version)) this.#emitCreated(tx, version);
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
    const bucketRec = await this.headBucket(bucket);
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
            data[i] = await this.#ingest(bucketRec, item.source(), ingestOptionsOf(item.options ?? {}));
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 4, items.length)) }, worker));
      if (failure !== undefined) throw failure;
      // Small batches write an intent per object (no extra PUT); larger ones one entry for the whole
      // batch, waited for: at most one PUT per batch, where intents would cost their bytes per object.
      const planned: Array<{ version: ObjectVersion; intent: string }> = [];
      if (this.#usesIntents(bucketRec) && items.length <= MAX_BATCH_INTENTS) {
        for (let i = 0; i < items.length; i++) planned.push(await this.#writeIntent(bucketRec, items[i]!.key, data[i]!, items[i]!.options ?? {}));
      }
      await this.#durableOrCancel(bucketRec, data, planned.map((p) => p.intent));
      return this.#transaction(
        async (tx) => {
          const b = await this.#bucketIn(tx, bucket);
          const results: PutResult[] = [];
          for (let i = 0; i < items.length; i++) results.push(await this.#commitPut(tx, b, items[i]!.key, data[i]!, items[i]!.options ?? {}, planned[i]?.version));
          return results;
        },
        { journal: planned.length > 0 || !this.#target(bucketRec).cloud ? "lazy" : "wait", intents: planned.map((p) => p.intent) },
      );
    });
  }

  // ------------------------------------------------------------------------------------------
  // HOOK (issue 6): src/store/compose.ts builds random writes, truncation and atomic renames for
  // the POSIX view from these existing steps. Not part of the public API.
  // ------------------------------------------------------------------------------------------

  /** @internal For src/store/compose.ts only. */
  composeHooks(): ComposeHooks {
    return {
      check: () => this.#check(),
      shared: (fn) => this.lock.shared(fn),
      ingest: (b, source, options) => this.#ingest(b, source, { maxSize: Number.MAX_SAFE_INTEGER, ...(options?.digest === false ? { digest: false } : {}) }),
      durable: (b, result) => this.#durable(b, result),
      commit: (fn, journal) => this.#commitReferences(fn, journal),
      waitJournal: (index) => (this.#shipper === undefined ? Promise.resolve() : this.#shipper.waitDurable(index)),
      bucketIn: (tx, name) => this.#bucketIn(tx, name),
      writeVersion: (tx, b, key, fields, counters) => this.#writeComposed(tx, b, key, fields, counters?.ingestedBytes ?? 0),
      deleteCurrent: (tx, b, key) => this.#deleteCurrent(tx, b, key),
      moveVersion: (tx, from, src, to, key, userMetadata) => this.#moveVersion(tx, from, src, to, key, userMetadata),
      now: () => this.options.now(),
    };
  }

  async #writeComposed(tx: MetaTx, b: BucketRecord, key: string, fields: ComposedVersion, ingestedBytes: number): Promise<ObjectVersion> {
    const sequence = await tx.nextSequence();
    const version: ObjectVersion = { ...fields, bucket: b.name, key, versionId: versionIdFor(b.versioning, sequence), sequence, deleteMarker: false, lastModified: this.options.now() };
    await this.#commitVersion(tx, b, version);
    tx.addCounters({ plainPuts: 1, ingestedBytes });
    this.#emitCreated(tx, version);
    return version;
  }

  async #moveVersion(tx: MetaTx, from: BucketRecord, src: ObjectVersion, to: BucketRecord, key: string, userMetadata: Record<string, string>): Promise<ObjectVersion> {
    const { bucket: _b, key: _k, versionId: _v, sequence: _s, lastModified: _l, deleteMarker: _d, ...fields } = src;
    if (from.versioning !== "unversioned" || to.versioning !== "unversioned" || src.deleteMarker || src.versionId !== "null") {
      const version = await this.#writeComposed(tx, to, key, { ...fields, userMetadata }, 0);
      await this.#deleteCurrent(tx, from, src.key);
      return version;
    }
    const sequence = await tx.nextSequence();
    const version: ObjectVersion = { ...fields, userMetadata, bucket: to.name, key, versionId: "null", sequence, deleteMarker: false, lastModified: this.options.now() };
    // The destination's own `null` version, if any, is replaced (its references dropped).
    const old = await tx.getVersion(to.name, key, "null");
    if (old !== undefined) {
      await tx.addRefs(old.manifest, -1);
      tx.deleteVersion(to.name, key, old.sequence);
    }
    // The moved manifest gains the new version's reference and loses the source's: no change.
    tx.putVersion(version);
    tx.addCounters({ plainPuts: 1, ingestedBytes: 0 });
    this.#emitCreated(tx, version);
    tx.deleteVersion(from.name, src.key, src.sequence);
    this.#emitDeleted(tx, from.name, src.key, src.versionId, false);
    return version;
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
          this.#emitDeleted(tx, bucket, key, v.versionId, v.deleteMarker);
          return { versionId: v.versionId, deleteMarker: v.deleteMarker };
        }
        return this.#deleteCurrent(tx, b, key);
      }),
    );
  }

  /** DeleteObject without a version id, inside `tx`: S3's rules (remove the `null` version, or write a delete marker). */
  async #deleteCurrent(tx: MetaTx, b: BucketRecord, key: string): Promise<DeleteResult> {
    const bucket = b.name;
    if (b.versioning === "unversioned") {
      const v = await tx.getVersion(bucket, key, "null");
      if (v !== undefined) {
        await tx.addRefs(v.manifest, -1);
        tx.deleteVersion(bucket, key, v.sequence);
        this.#emitDeleted(tx, bucket, key, v.versionId, false);
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
    this.#emitDeleted(tx, bucket, key, marker.versionId, true);
    return { versionId: marker.versionId, deleteMarker: true };
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
      this.#commitReferences(async (tx, needsCloud) => {
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
        await needsCloud(b, version.manifest);
        await this.#commitVersion(tx, b, version);
        tx.addCounters({ plainPuts: 1 });
        this.#emitCreated(tx, version);
        return { bucket: dstBucket, key: dstKey, versionId: version.versionId, etag: version.etag, size: version.size, lastModified: version.lastModified };
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
      this.#commitReferences(async (tx, needsCloud) => {
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
          const version: ObjectVersion = { ...src, bucket: dstBucket, key, versionId: versionIdFor(b.versioning, sequence), sequence };
          await needsCloud(b, version.manifest);
          await this.#commitVersion(tx, b, version);
          this.#emitCreated(tx, version);
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
        uploadId: secureRandomBytes(16).toString("hex"),
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

  async #commitPart(uploadId: string, bucket: string, part: PartRecord, ingestedBytes: number, waitJournal = true): Promise<PartRecord> {
    return this.#transaction(async (tx) => {
      await this.#uploadIn(tx, bucket, uploadId);
      await tx.addRefs(part.manifest, 1);
      const old = await tx.getPart(uploadId, part.partNumber);
      if (old !== undefined) await tx.addRefs(old.manifest, -1);
      tx.putPart(part);
      tx.addCounters({ plainPuts: 1, ingestedBytes });
      return part;
    }, { journal: waitJournal ? "wait" : "lazy" });
  }

  async uploadPart(bucket: string, uploadId: string, partNumber: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: { contentMD5?: string; size?: number } = {}): Promise<PartRecord> {
    this.#check();
    checkBucketName(bucket);
    ObjectStore.#checkPartNumber(partNumber);
    await this.#uploadIn(this.meta, bucket, uploadId);
    const b = await this.headBucket(bucket);
    return this.lock.shared(async () => {
      const data = await this.#ingestDurably(b, source, { ...options, maxSize: MAX_PUT_SIZE });
      const part: PartRecord = { uploadId, partNumber, size: data.size, etag: data.md5.toString("hex"), lastModified: this.options.now(), manifest: data.manifest };
      return this.#commitPart(uploadId, bucket, part, data.size, this.#target(b).cloud);
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
      this.#commitReferences(async (tx, needsCloud) => {
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
        await needsCloud(b, version.manifest);
        await this.#commitVersion(tx, b, version);
        this.#emitCreated(tx, version);
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
