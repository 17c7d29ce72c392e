/**
 * The metadata model: every record the object store keeps, and the one interface through which
 * it reads and writes them ({@link MetadataStore}). The embedded implementation is on the kv store
 * (src/meta/kv-store.ts); a PostgreSQL one will implement the same interface. Nothing outside
 * src/meta formats storage keys.
 *
 * Writes happen only inside {@link MetadataStore.transaction}: transactions are serialized, see
 * their own writes, and commit as one atomic, durable batch (all or nothing, also across a crash).
 *
 * The outbox (DESIGN.md decision 5): a transaction that changes state appends the events announcing
 * the change ({@link MetaTx.appendEvent}) to the outbox, in the same batch. A relay
 * (src/events/outbox.ts) later copies outbox events to the event log and deletes them
 * ({@link MetaReader.listOutbox}, {@link MetaTx.deleteOutbox}). So a crash never loses an event of a
 * committed change, and never leaves one of a change that did not commit.
 */
import type { EventKind, EventValue, StowageEvent } from "../events/types.js";

export type Versioning = "unversioned" | "enabled" | "suspended";

/**
 * When a write to the bucket is acknowledged (DESIGN.md decision 4). `cloud` (the default): once
 * the packs holding its data are durable in the cloud tier. `local` (write-back): once they are
 * durable (fsynced) in the local tier; they are uploaded later, so a lost local disk loses the
 * writes not yet uploaded.
 */
export type Durability = "cloud" | "local";

export interface BucketRecord {
  name: string;
  /** Creation time, ms since the epoch. */
  created: number;
  versioning: Versioning;
  /** Absent means `cloud`. */
  durability?: Durability;
}

/**
 * One piece of an object's content: `length` bytes starting at `offset` inside the plaintext of
 * chunk `chunkId`. Most entries cover a whole chunk (offset 0, length = the chunk's size); ranged
 * copies (UploadPartCopy) and, later, random writes reference slices.
 */
export interface ManifestEntry {
  /** 32-byte keyed chunk id. */
  chunkId: Buffer;
  offset: number;
  length: number;
}

/** What a listing shows of an object version: everything but the manifest. */
export interface VersionHeader {
  bucket: string;
  key: string;
  /** `"null"` for versions written while versioning was off or suspended (as S3). */
  versionId: string;
  /**
   * Order of versions of one key: larger is newer. Unique across the repository (from
   * {@link MetaTx.nextSequence}).
   */
  sequence: number;
  deleteMarker: boolean;
  size: number;
  /** S3 ETag without quotes: hex MD5, or `hex-N` for multipart. Empty for delete markers. */
  etag: string;
  contentType: string;
  userMetadata: Record<string, string>;
  /** ms since the epoch. */
  lastModified: number;
  /** For multipart objects: the size of each part, in order (GetObject partNumber). */
  partSizes?: number[];
  /**
   * Standard HTTP headers stored with the object and returned on reads, lowercase names:
   * content-encoding, content-disposition, content-language, cache-control, expires.
   */
  headers?: Record<string, string>;
  /** Object tags (S3 tagging). */
  tags?: Record<string, string>;
  /** A checksum the client sent and the server verified: algorithm (e.g. `CRC32`) and base64 value. */
  checksum?: { algorithm: string; value: string };
}

export interface ObjectVersion extends VersionHeader {
  manifest: ManifestEntry[];
}

export type PackState = "live" | "retired";

export interface PackRecord {
  /** 32 lowercase hex characters. */
  id: string;
  /** Blob key in the backend. */
  blobKey: string;
  /** Bytes of the whole pack blob. */
  size: number;
  /** Number of entries in its index. */
  entries: number;
  /** ms since the epoch. */
  created: number;
  /** `retired`: recycled by gc; its blob is deleted after the grace period, then the record. */
  state: PackState;
  /** When it was retired (ms), for the grace period. */
  retiredAt?: number;
  /**
   * `false`: written by the write-back packer, durable only in the local tier until the tier's
   * uploader confirms the cloud holds it (`ObjectStore.markPackUploaded`). Absent (or true): the
   * pack is durable in the cloud tier.
   */
  uploaded?: boolean;
  /**
   * Sealed bytes of the metadata (journal) records the pack holds (docs/RECOVERY.md). They are
   * never garbage: gc carries them into the new pack when it recycles this one.
   */
  journal?: number;
}

/** Where a chunk is stored, and how many manifest entries reference it. */
export interface ChunkRecord {
  packId: string;
  /** Offset of the sealed record inside the pack blob. */
  offset: number;
  /** Bytes of the sealed record (what a ranged GET fetches). */
  storedLength: number;
  /** Plaintext length. */
  rawLength: number;
  /** Compression method byte (src/codec/compress.ts). */
  method: number;
  /** Manifest entries (in versions and in multipart parts) referencing this chunk. */
  refs: number;
}

export interface UploadRecord {
  bucket: string;
  key: string;
  uploadId: string;
  /** ms since the epoch. */
  initiated: number;
  contentType: string;
  userMetadata: Record<string, string>;
  /** Standard headers for the object the upload completes into (see {@link VersionHeader.headers}). */
  headers?: Record<string, string>;
  tags?: Record<string, string>;
}

export interface PartRecord {
  uploadId: string;
  partNumber: number;
  size: number;
  /** Hex MD5 of the part, no quotes. */
  etag: string;
  lastModified: number;
  manifest: ManifestEntry[];
}

/** Cumulative counters kept with the metadata (all monotonically increasing). */
export interface Counters {
  /** PUT requests issued to the bucket (packs, and later metadata and key blobs). */
  backendPuts: number;
  backendBytesWritten: number;
  /** PUTs a plain one-object-per-key upload would have made: one per object put, one per part. */
  plainPuts: number;
  /** Bytes clients sent (puts and parts). */
  ingestedBytes: number;
}

export interface ListOptions {
  prefix?: string;
  /** Only keys strictly greater than this (byte order). */
  after?: string;
  /** Most rows to return. */
  limit?: number;
}

export interface VersionListOptions {
  prefix?: string;
  /** Resume after this key (all its versions) — or, with `afterVersionId`, after that version of it. */
  afterKey?: string;
  afterVersionId?: string;
  limit?: number;
}

/** Read access: on the store (latest committed state) and inside a transaction (plus own writes). */
export interface MetaReader {
  getBucket(name: string): Promise<BucketRecord | undefined>;
  listBuckets(): Promise<BucketRecord[]>;

  /** The newest version of the key (possibly a delete marker), with its manifest. */
  getCurrent(bucket: string, key: string): Promise<ObjectVersion | undefined>;
  getVersion(bucket: string, key: string, versionId: string): Promise<ObjectVersion | undefined>;
  /** All versions of one key, newest first, headers only. */
  versionsOfKey(bucket: string, key: string): Promise<VersionHeader[]>;
  /**
   * The newest version of each key (delete markers included; callers filter), in ascending byte
   * order of key.
   */
  listCurrent(bucket: string, options?: ListOptions): AsyncIterable<VersionHeader>;
  /** Every version, keys ascending, newest version first within a key. */
  listVersions(bucket: string, options?: VersionListOptions): AsyncIterable<VersionHeader>;
  /** True when the bucket holds any version or any multipart upload. */
  bucketHasContent(bucket: string): Promise<boolean>;

  getChunk(chunkId: Uint8Array): Promise<ChunkRecord | undefined>;
  /** All chunks, in ascending id order. */
  listChunks(): AsyncIterable<[chunkId: Buffer, record: ChunkRecord]>;
  getPack(id: string): Promise<PackRecord | undefined>;
  /** All packs, in ascending id order. */
  listPacks(): AsyncIterable<PackRecord>;

  getUpload(bucket: string, uploadId: string): Promise<UploadRecord | undefined>;
  /** Uploads of a bucket in ascending (key, uploadId) order. */
  listUploads(bucket: string, options?: ListOptions): AsyncIterable<UploadRecord>;
  getPart(uploadId: string, partNumber: number): Promise<PartRecord | undefined>;
  /** Parts of an upload in ascending part number. */
  listParts(uploadId: string): AsyncIterable<PartRecord>;

  /** Every manifest (versions and parts), for reference counting by fsck and rebuild-index. */
  listManifests(): AsyncIterable<{ owner: string; manifest: ManifestEntry[] }>;

  getCounters(): Promise<Counters>;

  /** Up to `limit` outbox events, oldest (smallest id) first. */
  listOutbox(limit: number): Promise<StowageEvent[]>;
  /** Number of events in the outbox. */
  outboxSize(): Promise<number>;

  /** The last journal index handed out by {@link MetaTx.appendJournal} (0: none yet). */
  journalIndex(): Promise<number>;
  /** The journal entries not yet shipped (not deleted with {@link MetaTx.deleteJournal}), by index. */
  listJournal(): AsyncIterable<{ index: number; entry: Buffer }>;
}

/** An event to append to the outbox; the store gives it its id (`outbox-<n>`). */
export interface OutboxEvent {
  kind: EventKind;
  /** Ordering key: pack id for pack events, `bucket/key` for object events. */
  key: string;
  data: Record<string, EventValue>;
  /** ms since the epoch; default: now. */
  time?: number;
}

export interface MetaTx extends MetaReader {
  putBucket(bucket: BucketRecord): void;
  deleteBucket(name: string): void;

  /** Writes a version (insert, or replace the version with the same sequence). */
  putVersion(version: ObjectVersion): void;
  /** Removes one version (by its sequence). */
  deleteVersion(bucket: string, key: string, sequence: number): void;

  putChunk(chunkId: Uint8Array, record: ChunkRecord): void;
  deleteChunk(chunkId: Uint8Array): void;
  /**
   * Adds `delta` to the reference count of each entry's chunk (once per entry). Throws
   * `STOWAGE_INTEGRITY` if a chunk is missing or a count would go negative.
   */
  addRefs(manifest: readonly ManifestEntry[], delta: 1 | -1): Promise<void>;

  putPack(pack: PackRecord): void;
  deletePack(id: string): void;

  putUpload(upload: UploadRecord): void;
  deleteUpload(bucket: string, uploadId: string): void;
  putPart(part: PartRecord): void;
  deletePart(uploadId: string, partNumber: number): void;

  addCounters(delta: Partial<Counters>): void;
  /** A fresh, strictly increasing number (persisted with the transaction). */
  nextSequence(): Promise<number>;
  /** Never hand out `seq` or anything below it later (recovery replays sequences from the journal). */
  observeSequence(seq: number): void;

  /**
   * Appends an event to the outbox, committed with the transaction's other writes (or not at all).
   * Returns its id, `outbox-<n>`: `n` comes from a persisted outbox sequence, strictly increasing
   * in commit order (never reused, also across restarts), so ids order events as they committed.
   */
  appendEvent(event: OutboxEvent): string;
  /** Removes events from the outbox by id; ids not (or no longer) there are ignored. */
  deleteOutbox(ids: readonly string[]): void;

  /**
   * Appends a metadata journal entry (docs/RECOVERY.md), committed with the transaction: gives it
   * the next journal index (dense, strictly increasing in commit order, persisted, never reused)
   * and stores `encode(index)` until {@link deleteJournal} removes it (once shipped to the cloud).
   */
  appendJournal(encode: (index: number) => Uint8Array): number;
  /** Removes shipped journal entries; indexes not there are ignored. */
  deleteJournal(indexes: readonly number[]): void;
  /** Never hand out `index` or anything below it later (recovery). */
  observeJournal(index: number): void;
}

export interface MetadataStore extends MetaReader {
  /**
   * Runs `fn` with exclusive write access and commits what it wrote as one atomic, durable batch
   * when it resolves. If `fn` throws, nothing is written. Transactions run one at a time.
   *
   * Inside `fn`, the point reads of `tx` (getBucket, getCurrent, getVersion, versionsOfKey,
   * bucketHasContent, getChunk, getPack, getUpload, getPart, getCounters, outboxSize) see the
   * transaction's own writes; its listings (listBuckets, listOutbox and every `list*` iterator) see
   * committed state only.
   *
   * Events appended with {@link MetaTx.appendEvent} are part of the batch: they exist exactly when
   * the transaction's other writes do.
   */
  transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T>;
  /**
   * A fresh sequence number (as {@link MetaTx.nextSequence}) handed out outside a transaction; it is
   * persisted with the next transaction that commits anything.
   */
  reserveSequence(): number;
  close(): Promise<void>;
}
