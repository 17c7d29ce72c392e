/**
 * Composition: new object versions made from the previous version's chunks plus new bytes, for the
 * POSIX view (docs/FS.md). A write at an offset stores only the bytes written; the new version's
 * manifest references slices of the previous version's chunks around them. Truncation cuts the
 * manifest (down) or appends references to a shared run of zero chunks (up, and the holes of sparse
 * writes). Renames move versions between keys in one transaction, by reference.
 *
 * Reference counting stays the store's: every manifest entry holds one reference on its chunk
 * (slices included), taken and dropped in the transaction that writes or replaces the version, so
 * gc and fsck need nothing new. A slice keeps its whole chunk alive: the bytes of a chunk that no
 * version reads any more are reclaimed only when every slice of it is gone (docs/FS.md, "Garbage").
 *
 * Fragmentation: a write whose neighbouring pieces (what is left of a cut chunk, or an earlier
 * small write) are smaller than the chunker's minimum is widened over them (at most the chunker's
 * maximum on each side), so their bytes are read and stored again with the write: manifests do not
 * degrade into runs of tiny slices under small random writes, and a write stores at most a few MiB
 * more than its own bytes.
 *
 * Concurrency: the new bytes are stored before the transaction; inside it the edits are applied to
 * whatever version is current then (a concurrent S3 put is not lost: the edits land on top of it).
 * Widening is planned against the version read first; if another write committed in between, the
 * widened parts are dropped and only the caller's own bytes are applied.
 *
 * ETags: a version whose content is exactly one stream stored here gets that stream's MD5 (as a
 * put); a caller that knows the MD5 of the result may pass it; otherwise the ETag is derived from
 * the manifest (`hex-1`, the multipart form, which S3 clients do not compare with a content MD5),
 * so that reading the whole object is never needed for a small edit.
 */
import { createHash } from "node:crypto";
import { StowageError } from "../errors.js";
import type { BucketRecord, ManifestEntry, MetaReader, MetaTx, ObjectVersion, VersionHeader } from "../meta/types.js";
import type { IngestResult } from "./ingest.js";
import { readManifest } from "./read.js";
import { checkBucketName, checkObjectKey } from "./names.js";
import { EMPTY_MD5, sliceManifest, type ComposeHooks, type JournalMode, type ObjectStore } from "./store.js";

export type ComposeEdit =
  /** Writes `data` (its pieces in order) at `offset`; a gap past the end is zero-filled. */
  | { kind: "write"; offset: number; data: readonly Uint8Array[] }
  /** Writes `data` at the end of the object as it is when the edit applies. */
  | { kind: "append"; data: readonly Uint8Array[] }
  /** Cuts the object to `size` bytes, or extends it with zeros. */
  | { kind: "truncate"; size: number };

export interface ComposeOptions {
  /** Content type of a new object (default `application/octet-stream`); an existing one keeps its own unless given. */
  contentType?: string;
  /**
   * The user metadata of the new version, from the current version's (`{}` for a new object).
   * `newId()` draws a fresh repository-wide number (the version sequence space), e.g. for a stable
   * inode number. Default: keep the current metadata.
   */
  userMetadata?: (current: Record<string, string>, newId: () => Promise<number>) => Promise<Record<string, string>> | Record<string, string>;
  /** The hex MD5 of the resulting content, when the caller knows it (becomes the ETag). */
  md5?: string;
  /**
   * Called inside the transaction with the version the edits will apply to (undefined: none, or a
   * delete marker) before anything is written; throwing aborts the operation (nothing committed).
   */
  check?: (tx: MetaReader, current: ObjectVersion | undefined) => Promise<void>;
  /**
   * When the change is acknowledged: default once its journal entry is durable in the cloud tier;
   * `lazy` at once (the data itself is durable either way), with the entry's index reported so the
   * caller can wait for it later ({@link waitJournal}, e.g. at fsync).
   */
  journal?: JournalMode;
}

/** Resolves once every journal entry up to `index` is durable in the cloud tier. */
export function waitJournal(store: ObjectStore, index: number): Promise<void> {
  return store.composeHooks().waitJournal(index);
}

export interface ComposeResult {
  version: VersionHeader;
  /** The new version's manifest (for a caller that keeps reading it). */
  manifest: ManifestEntry[];
  /** Bytes handed to the chunker (the caller's bytes plus the widened neighbours). */
  ingestedBytes: number;
  /** Of those, bytes of chunks not already stored (after dedup). */
  newBytes: number;
  /** Number of manifest entries of the new version. */
  entries: number;
}

interface PlannedWrite {
  /** Index of the edit in the caller's list. */
  edit: number;
  /** The caller's own range. */
  start: number;
  end: number;
  /** The widened range that was stored (contains [start, end)). */
  wideStart: number;
  wideEnd: number;
  data: IngestResult;
}

function byteLength(pieces: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of pieces) n += p.length;
  return n;
}

function checkOffset(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${name} must be a non-negative integer, got ${n}`);
}

/** Joins neighbouring entries that are contiguous slices of the same chunk. */
function normalize(manifest: readonly ManifestEntry[]): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  for (const e of manifest) {
    if (e.length === 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.chunkId.equals(e.chunkId) && last.offset + last.length === e.offset) {
      out[out.length - 1] = { chunkId: last.chunkId, offset: last.offset, length: last.length + e.length };
    } else out.push({ chunkId: e.chunkId, offset: e.offset, length: e.length });
  }
  return out;
}

/** The ETag of a composed version whose MD5 is unknown: derived from its manifest, multipart form. */
export function manifestEtag(manifest: readonly ManifestEntry[]): string {
  const h = createHash("md5");
  const n = Buffer.alloc(16);
  for (const e of manifest) {
    h.update(e.chunkId);
    n.writeBigUInt64BE(BigInt(e.offset), 0);
    n.writeBigUInt64BE(BigInt(e.length), 8);
    h.update(n);
  }
  return `${h.digest("hex")}-1`;
}

// ---------------------------------------------------------------------------------------------
// Zeros: one run of zero chunks (the chunker's maximum size, stored once, deduplicated like any
// content) repeated and sliced for holes.

const zeroRuns = new WeakMap<ObjectStore, { size: number; manifest: ManifestEntry[] }>();

/** The zero run, stored (again, if gc took it) for `b`. Caller holds the store's lock. */
async function zeroRun(store: ObjectStore, h: ComposeHooks, b: BucketRecord): Promise<{ size: number; manifest: ManifestEntry[] }> {
  const cached = zeroRuns.get(store);
  if (cached !== undefined) {
    let present = true;
    for (const e of cached.manifest) if ((await store.meta.getChunk(e.chunkId)) === undefined) present = false;
    if (present) return cached;
  }
  const size = store.options.chunker.maxSize;
  const data = await h.ingest(b, [Buffer.alloc(size)]);
  await h.durable(b, data);
  const run = { size, manifest: data.manifest };
  zeroRuns.set(store, run);
  return run;
}

function zeros(run: { size: number; manifest: ManifestEntry[] } | undefined, n: number): ManifestEntry[] {
  if (n === 0) return [];
  if (run === undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "internal: zero fill needed but not prepared");
  const out: ManifestEntry[] = [];
  for (let left = n; left > 0; left -= run.size) {
    out.push(...(left >= run.size ? run.manifest : sliceManifest(run.manifest, { start: 0, end: left })));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Widening a write over small neighbouring pieces

interface Piece {
  start: number;
  end: number;
}

/** The pieces of the object (manifest entries, in object offsets). */
function entrySpans(manifest: readonly ManifestEntry[]): Piece[] {
  const out: Piece[] = [];
  let pos = 0;
  for (const e of manifest) {
    out.push({ start: pos, end: pos + e.length });
    pos += e.length;
  }
  return out;
}

/**
 * How far [start, end) grows over small pieces of `base` (bytes below `limit` that no edit of the
 * batch touches), at most `maxGrow` bytes on each side.
 */
function widen(spans: readonly Piece[], start: number, end: number, limit: number, untouched: (s: number, e: number) => boolean, minPiece: number, maxGrow: number): Piece {
  let wideStart = start;
  let wideEnd = end;
  if (start <= limit) {
    // Left: the piece of the entry holding byte wideStart-1, from its start to wideStart.
    let i = upperIndex(spans, wideStart - 1);
    while (i >= 0 && wideStart > 0) {
      const s = spans[i]!;
      const piece = wideStart - s.start;
      if (piece >= minPiece || start - s.start > maxGrow || !untouched(s.start, wideStart)) break;
      wideStart = s.start;
      i--;
    }
  }
  if (end < limit) {
    let i = upperIndex(spans, wideEnd);
    while (i >= 0 && i < spans.length && wideEnd < limit) {
      const s = spans[i]!;
      const to = Math.min(s.end, limit);
      const piece = to - wideEnd;
      if (piece >= minPiece || to - end > maxGrow || !untouched(wideEnd, to)) break;
      wideEnd = to;
      i++;
    }
  }
  return { start: wideStart, end: wideEnd };
}

/** Index of the span holding byte `at`, or -1. */
function upperIndex(spans: readonly Piece[], at: number): number {
  if (at < 0) return -1;
  let lo = 0;
  let hi = spans.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = spans[mid]!;
    if (at < s.start) hi = mid - 1;
    else if (at >= s.end) lo = mid + 1;
    else return mid;
  }
  return -1;
}

async function readSpan(store: ObjectStore, manifest: readonly ManifestEntry[], start: number, end: number, name: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  if (end <= start) return out;
  for await (const b of readManifest(store.meta, store.reader, manifest, { start, end }, name)) out.push(Buffer.from(b));
  return out;
}

// ---------------------------------------------------------------------------------------------

/**
 * Applies `edits`, in order, to the current version of `bucket/key` (an absent object is empty) and
 * commits the result as its new version, storing only the bytes written (plus small neighbours).
 * Atomic: all edits or none. Durable as the bucket's policy says when it resolves.
 */
export async function composeObject(store: ObjectStore, bucket: string, key: string, edits: readonly ComposeEdit[], options: ComposeOptions = {}): Promise<ComposeResult> {
  const h = store.composeHooks();
  h.check();
  checkBucketName(bucket);
  checkObjectKey(key);
  for (const e of edits) {
    if (e.kind === "write") checkOffset("write offset", e.offset);
    if (e.kind === "truncate") checkOffset("truncate size", e.size);
  }
  const b = await store.headBucket(bucket);
  const name = `${bucket}/${key}`;
  const { minSize, maxSize } = store.options.chunker;
  return h.shared(async () => {
    const cur = await store.meta.getCurrent(bucket, key);
    const base = cur === undefined || cur.deleteMarker ? undefined : cur;
    const baseManifest = base?.manifest ?? [];
    const spans = entrySpans(baseManifest);
    // Bytes of the base that survive every truncation of the batch.
    let limit = base?.size ?? 0;
    for (const e of edits) if (e.kind === "truncate") limit = Math.min(limit, e.size);
    const ranges: Piece[] = [];
    for (const e of edits) {
      if (e.kind === "write") ranges.push({ start: e.offset, end: e.offset + byteLength(e.data) });
    }
    const untouched = (s: number, e: number): boolean => ranges.every((r) => r.end <= s || r.start >= e);

    // Store the bytes of each write (widened) before the transaction.
    const planned: PlannedWrite[] = [];
    let ingestedBytes = 0;
    let newBytes = 0;
    let needsZeros = false;
    let appendAt = base?.size ?? 0;
    for (let i = 0; i < edits.length; i++) {
      const e = edits[i]!;
      if (e.kind === "truncate") {
        needsZeros ||= e.size > 0;
        appendAt = e.size;
        continue;
      }
      const len = byteLength(e.data);
      const start = e.kind === "write" ? e.offset : appendAt;
      const end = start + len;
      if (e.kind === "write") needsZeros ||= start > 0;
      appendAt = Math.max(appendAt, end);
      if (len === 0) continue;
      // An append is widened only when it is the first edit (its offset is then the base's size).
      const wide = e.kind === "append" && i > 0 ? { start, end } : widen(spans, start, end, limit, untouched, minSize, maxSize);
      const before = await readSpan(store, baseManifest, wide.start, start, name);
      const after = await readSpan(store, baseManifest, end, wide.end, name);
      // With the caller's MD5 of the whole result (a sequential write), a piece's own is not needed.
      const data = await h.ingest(b, [...before, ...e.data, ...after], options.md5 === undefined ? {} : { digest: false });
      ingestedBytes += data.size;
      newBytes += data.newBytes;
      planned.push({ edit: i, start, end, wideStart: wide.start, wideEnd: wide.end, data });
    }
    for (const p of planned) await h.durable(b, p.data);
    const run = needsZeros ? await zeroRun(store, h, b) : undefined;

    return h.commit(async (tx, needsCloud) => {
      const bt = await h.bucketIn(tx, bucket);
      const now = await tx.getCurrent(bucket, key);
      const current = now === undefined || now.deleteMarker ? undefined : now;
      await options.check?.(tx, current);
      const sameBase = (current?.sequence ?? -1) === (base?.sequence ?? -1);
      let manifest: ManifestEntry[] = current?.manifest.slice() ?? [];
      let size = current?.size ?? 0;
      // Set when the result is exactly one stored stream (its MD5 is then the ETag).
      let whole: IngestResult | undefined;
      // False while no edit changed the content: then the ETag stays (a chmod is not a new content).
      let touched = current === undefined;
      let p = 0;
      for (let i = 0; i < edits.length; i++) {
        const e = edits[i]!;
        if (e.kind === "truncate") {
          if (e.size < size) manifest = sliceManifest(manifest, { start: 0, end: e.size });
          else manifest = manifest.concat(zeros(run, e.size - size));
          if (e.size !== size) {
            whole = undefined;
            touched = true;
          }
          size = e.size;
          continue;
        }
        const plan = planned[p]?.edit === i ? planned[p++] : undefined;
        if (plan === undefined) continue; // no bytes
        let at = e.kind === "write" ? e.offset : size;
        let piece: ManifestEntry[];
        let len: number;
        if (sameBase && (e.kind === "write" || i === 0)) {
          // Widened as planned: the neighbours' bytes are the base's, which nothing changed since.
          at = plan.wideStart;
          piece = plan.data.manifest;
          len = plan.wideEnd - plan.wideStart;
        } else {
          piece = sliceManifest(plan.data.manifest, { start: plan.start - plan.wideStart, end: plan.end - plan.wideStart });
          len = plan.end - plan.start;
        }
        if (at > size) {
          manifest = manifest.concat(zeros(run, at - size));
          size = at;
        }
        const replacesAll = at === 0 && len >= size && len === plan.data.size;
        manifest = [...sliceManifest(manifest, { start: 0, end: at }), ...piece, ...sliceManifest(manifest, { start: at + len, end: size })];
        size = Math.max(size, at + len);
        whole = replacesAll ? plan.data : undefined;
        touched = true;
      }
      manifest = normalize(manifest);
      await needsCloud(bt, manifest);
      const etag =
        options.md5 ?? (!touched && current !== undefined ? current.etag : size === 0 ? EMPTY_MD5 : whole !== undefined ? whole.md5.toString("hex") : manifestEtag(manifest));
      const userMetadata = options.userMetadata === undefined ? { ...(current?.userMetadata ?? {}) } : await options.userMetadata({ ...(current?.userMetadata ?? {}) }, () => tx.nextSequence());
      const fields = {
        size,
        etag,
        contentType: options.contentType ?? current?.contentType ?? "application/octet-stream",
        userMetadata,
        ...(current?.headers !== undefined ? { headers: { ...current.headers } } : {}),
        ...(current?.tags !== undefined ? { tags: { ...current.tags } } : {}),
        manifest,
      };
      const version = await h.writeVersion(tx, bt, key, fields, { ingestedBytes });
      const { manifest: _m, ...header } = version;
      return { version: header, manifest, ingestedBytes, newBytes, entries: manifest.length };
    }, options.journal);
  });
}

/** pwrite: writes `data` at `offset` (zero-filling a gap past the end); creates the object when missing. */
export function writeAt(store: ObjectStore, bucket: string, key: string, offset: number, data: Uint8Array | readonly Uint8Array[], options: ComposeOptions = {}): Promise<ComposeResult> {
  return composeObject(store, bucket, key, [{ kind: "write", offset, data: data instanceof Uint8Array ? [data] : data }], options);
}

/** Appends `data` to the object (as it is when the write commits); creates it when missing. */
export function appendObject(store: ObjectStore, bucket: string, key: string, data: Uint8Array | readonly Uint8Array[], options: ComposeOptions = {}): Promise<ComposeResult> {
  return composeObject(store, bucket, key, [{ kind: "append", data: data instanceof Uint8Array ? [data] : data }], options);
}

/** Cuts the object to `size` bytes or extends it with zeros (stored once, shared); creates it when missing. */
export function truncateObject(store: ObjectStore, bucket: string, key: string, size: number, options: ComposeOptions = {}): Promise<ComposeResult> {
  return composeObject(store, bucket, key, [{ kind: "truncate", size }], options);
}

// ---------------------------------------------------------------------------------------------
// Namespace changes in one transaction: moves (by reference), deletions, empty objects

export interface ObjectRef {
  bucket: string;
  key: string;
}

export interface NamespacePlan {
  /** Objects to delete first (as DeleteObject without a version id). */
  deletes?: ObjectRef[];
  /** Current versions to move: written at `to` (same chunks, same ETag and metadata unless given), then deleted at `from`. */
  moves?: Array<{ from: ObjectRef; to: ObjectRef; userMetadata?: Record<string, string> }>;
  /** Empty objects to write (directory markers). */
  empties?: Array<ObjectRef & { userMetadata: Record<string, string>; contentType?: string }>;
}

export interface NamespaceResult {
  deleted: number;
  moved: number;
  created: number;
}

/**
 * Runs `plan` inside one metadata transaction (it may read and check, throwing to abort; its
 * listings see the state committed before the transaction; `newId()` draws a fresh repository-wide
 * number, e.g. for an inode number) and applies what it returns: deletions,
 * then moves, then empty objects. All of it commits together or not at all, so S3 listings see
 * the namespace before or after, never between. Cost: a few metadata rows per object moved, no data.
 */
export async function commitNamespace(
  store: ObjectStore,
  plan: (tx: MetaReader, newId: () => Promise<number>) => Promise<NamespacePlan>,
  options: { journal?: JournalMode } = {},
): Promise<NamespaceResult> {
  const h = store.composeHooks();
  h.check();
  return h.shared(() =>
    h.commit(async (tx: MetaTx, needsCloud) => {
      const p = await plan(tx, () => tx.nextSequence());
      const buckets = new Map<string, BucketRecord>();
      const bucketOf = async (name: string): Promise<BucketRecord> => {
        let rec = buckets.get(name);
        if (rec === undefined) {
          rec = await h.bucketIn(tx, name);
          buckets.set(name, rec);
        }
        return rec;
      };
      const result: NamespaceResult = { deleted: 0, moved: 0, created: 0 };
      for (const d of p.deletes ?? []) {
        checkObjectKey(d.key);
        await h.deleteCurrent(tx, await bucketOf(d.bucket), d.key);
        result.deleted++;
      }
      for (const m of p.moves ?? []) {
        checkObjectKey(m.from.key);
        checkObjectKey(m.to.key);
        const src = await tx.getCurrent(m.from.bucket, m.from.key);
        if (src === undefined || src.deleteMarker) throw new StowageError("STOWAGE_NO_SUCH_KEY", `${m.from.bucket}/${m.from.key} does not exist`);
        const dst = await bucketOf(m.to.bucket);
        // Within one bucket the chunks already satisfy its durability policy.
        if (m.to.bucket !== m.from.bucket) await needsCloud(dst, src.manifest);
        await h.moveVersion(tx, await bucketOf(m.from.bucket), src, dst, m.to.key, m.userMetadata ?? { ...src.userMetadata });
        result.moved++;
      }
      for (const e of p.empties ?? []) {
        checkObjectKey(e.key);
        await h.writeVersion(tx, await bucketOf(e.bucket), e.key, { size: 0, etag: EMPTY_MD5, contentType: e.contentType ?? "application/octet-stream", userMetadata: { ...e.userMetadata }, manifest: [] });
        result.created++;
      }
      return result;
    }, options.journal),
  );
}
