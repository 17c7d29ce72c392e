/**
 * The read side of packs: plaintext chunks from their locations, with as few ranged GETs as the
 * layout allows and bounded memory.
 *
 * `read(locations)` yields each location's plaintext in order. Locations are looked up in the chunk
 * cache first (a cached chunk is never fetched); the others are grouped into *runs* — consecutive
 * locations in the same pack blob, each starting where the previous one ends — and each run is one
 * ranged GET of at most `maxRequestBytes` (a single record larger than that is one GET of its own).
 * A chunk that appears again while a fetch of it is under way — queued in the same read, or
 * fetched by another read or `readOne` running at the same time (the kernel's concurrent readahead
 * requests on the mount overlap chunks all the time) — is served from that one fetch; each fetched
 * record is opened as soon as its bytes arrive, so no read waits on another's consumer. GETs are
 * issued ahead of the consumer, at most `readAhead` requests beyond the one being
 * consumed; since the generator only plans while it is being pulled, a paused consumer stops all
 * fetching. Every record is authenticated (AEAD bound to kind, method and id) and decompressed to
 * exactly its raw length before it is yielded or cached; failures are `STOWAGE_INTEGRITY` naming
 * the pack, the chunk and the offset. A missing pack is `STOWAGE_BACKEND_NOT_FOUND` naming the pack.
 *
 * Buffers handed out may be shared with the cache: treat them as read-only.
 *
 * Large coalesced requests are read into recycled buffers (`ByteRange.into`; backends that cannot
 * read into one ignore it): the records are opened into new plaintext buffers, and once every
 * record of a request has been opened (or has failed) its buffer serves the next request. A
 * fresh 8 MiB buffer per request cost about a fifth of the server's CPU on a large GET from a
 * local bucket (garbage collections driven by external memory, page faults). A reader keeps at
 * most MAX_RECYCLED of them (24 MiB with the default request size) from its first large read on.
 */
import { SEALED_OVERHEAD } from "../codec/aead.js";
import type { RepositoryKeys } from "../codec/keys.js";
import type { BlobBackend } from "../backend/backend.js";
import { StowageError } from "../errors.js";
import { ChunkCache } from "./cache.js";
import { openRecord, packNotFound, RECORD_KIND_CHUNK, RECORD_KIND_METADATA, type RecordKind, type RecordRef } from "./format.js";

export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024;
export const DEFAULT_READ_AHEAD = 1;
/** Most locations planned ahead of the consumer (bounds the queue when most are cache hits). */
const MAX_QUEUED_SLOTS = 1024;
/** Coalesced requests of at least this many bytes are read into a recycled buffer (see `#takeBuffer`). */
const RECYCLE_FROM = 1024 * 1024;
/**
 * Most request buffers (`maxRequestBytes` each) a reader recycles: enough for one read's requests
 * in flight (`readAhead` + 1 with the default) and one more; requests beyond get new buffers.
 */
const MAX_RECYCLED = 3;

export interface ChunkLocation {
  chunkId: Buffer;
  packId: string;
  blobKey: string;
  /** Offset of the sealed record in the pack blob. */
  offset: number;
  /** Bytes of the sealed record. */
  storedLength: number;
  rawLength: number;
  method: number;
  /** Record kind; default 1 (chunk). */
  kind?: RecordKind;
}

export interface PackReaderOptions {
  /** Chunk cache capacity in bytes (plaintext + a small per-entry charge). Default 64 MiB; 0 disables it. */
  cacheBytes?: number;
  /** Largest coalesced GET. Default 8 MiB. */
  maxRequestBytes?: number;
  /** Coalesced requests in flight ahead of the consumer. Default 1. */
  readAhead?: number;
  /**
   * Opens a fetched record (authenticate, decrypt, decompress); it must behave as `openRecord` in
   * format.ts, errors included. Default: `openRecord` on this thread. The store passes its
   * encoder's, which opens large records in a worker.
   */
  open?: (entry: RecordRef, sealedBytes: Uint8Array, packId: string) => Buffer | Promise<Buffer>;
}

export interface PackReaderStats {
  requests: number;
  bytesFetched: number;
  cacheHits: number;
  cacheMisses: number;
  /** Requests given a recycled buffer to read into (a backend may ignore it). */
  recycledReads: number;
}

interface Request {
  blobKey: string;
  packId: string;
  offset: number;
  length: number;
  bytes: Promise<Buffer>;
  /** Slots of this request not yet consumed. */
  remaining: number;
}

interface CachedSlot {
  type: "cached";
  loc: ChunkLocation;
  value: Buffer;
}

interface FetchSlot {
  type: "fetch";
  loc: ChunkLocation;
  req: Request;
  /** The record's plaintext, opened as soon as its request's bytes arrive. */
  value: Promise<Buffer>;
}

/** A chunk being fetched already (by this read, or by another read of this reader). */
interface SharedSlot {
  type: "shared";
  loc: ChunkLocation;
  value: Promise<Buffer>;
}

type Slot = CachedSlot | FetchSlot | SharedSlot;

function invalid(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", what);
}

function checkLocation(loc: ChunkLocation): void {
  const ok =
    loc !== null &&
    typeof loc === "object" &&
    loc.chunkId instanceof Uint8Array &&
    loc.chunkId.length === 32 &&
    typeof loc.packId === "string" &&
    typeof loc.blobKey === "string" &&
    Number.isSafeInteger(loc.offset) &&
    loc.offset >= 0 &&
    Number.isSafeInteger(loc.storedLength) &&
    loc.storedLength >= SEALED_OVERHEAD &&
    Number.isSafeInteger(loc.rawLength) &&
    loc.rawLength >= 0 &&
    Number.isInteger(loc.method) &&
    (loc.kind === undefined || loc.kind === RECORD_KIND_CHUNK || loc.kind === RECORD_KIND_METADATA);
  if (!ok) throw invalid("malformed chunk location");
}

function cacheKey(loc: ChunkLocation): string {
  return `${loc.kind ?? RECORD_KIND_CHUNK}:${loc.chunkId.toString("hex")}`;
}

function recordRef(loc: ChunkLocation): RecordRef {
  return {
    kind: loc.kind ?? RECORD_KIND_CHUNK,
    method: loc.method,
    id: loc.chunkId,
    offset: loc.offset,
    storedLength: loc.storedLength,
    rawLength: loc.rawLength,
  };
}

interface Source<T> {
  next(): Promise<T | undefined>;
  close(): Promise<void>;
}

function source<T>(items: Iterable<T> | AsyncIterable<T>): Source<T> {
  if (Symbol.asyncIterator in items) {
    const it = (items as AsyncIterable<T>)[Symbol.asyncIterator]();
    return {
      next: async () => {
        const r = await it.next();
        return r.done === true ? undefined : r.value;
      },
      close: async () => {
        await it.return?.();
      },
    };
  }
  const it = (items as Iterable<T>)[Symbol.iterator]();
  return {
    next: async () => {
      const r = it.next();
      return r.done === true ? undefined : r.value;
    },
    close: async () => {
      it.return?.();
    },
  };
}

export class PackReader {
  readonly #backend: BlobBackend;
  readonly #cache: ChunkCache;
  readonly #maxRequestBytes: number;
  readonly #readAhead: number;
  readonly #open: (entry: RecordRef, sealedBytes: Uint8Array, packId: string) => Buffer | Promise<Buffer>;
  #requests = 0;
  #bytesFetched = 0;
  #cacheHits = 0;
  #cacheMisses = 0;
  /** Records being fetched and opened now, by cache key (settled ones are in the cache). */
  readonly #inflight = new Map<string, Promise<Buffer>>();
  /** Request buffers free for the next large request; `#recycled` made so far (free or lent). */
  readonly #spare: Buffer[] = [];
  #recycled = 0;
  #recycledReads = 0;

  constructor(backend: BlobBackend, keys: RepositoryKeys, options: PackReaderOptions = {}) {
    this.#backend = backend;
    const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
    this.#maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.#readAhead = options.readAhead ?? DEFAULT_READ_AHEAD;
    this.#open = options.open ?? ((entry, sealedBytes, packId) => openRecord(keys, entry, sealedBytes, packId));
    if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 0) throw invalid(`cacheBytes ${cacheBytes} must be a byte count`);
    if (!Number.isSafeInteger(this.#maxRequestBytes) || this.#maxRequestBytes < 1) throw invalid(`maxRequestBytes ${this.#maxRequestBytes} must be positive`);
    if (!Number.isInteger(this.#readAhead) || this.#readAhead < 0 || this.#readAhead > 64) throw invalid(`readAhead ${this.#readAhead} outside [0, 64]`);
    this.#cache = new ChunkCache(cacheBytes);
  }

  /** Bytes the chunk cache holds now (for tests and metrics). */
  get cachedBytes(): number {
    return this.#cache.bytes;
  }

  stats(): PackReaderStats {
    return { requests: this.#requests, bytesFetched: this.#bytesFetched, cacheHits: this.#cacheHits, cacheMisses: this.#cacheMisses, recycledReads: this.#recycledReads };
  }

  /** A recycled buffer for a request of `length` bytes, or undefined (then the backend allocates). */
  #takeBuffer(length: number): Buffer | undefined {
    if (length < RECYCLE_FROM || length > this.#maxRequestBytes) return undefined;
    const spare = this.#spare.pop();
    if (spare !== undefined) return spare;
    if (this.#recycled >= MAX_RECYCLED) return undefined;
    this.#recycled++;
    return Buffer.allocUnsafeSlow(this.#maxRequestBytes);
  }

  /** The plaintext of one record (from the cache, or one GET). */
  async readOne(location: ChunkLocation): Promise<Buffer> {
    checkLocation(location);
    const key = cacheKey(location);
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      this.#cacheHits++;
      return cached;
    }
    const shared = this.#inflight.get(key);
    if (shared !== undefined) {
      this.#cacheHits++;
      return shared;
    }
    this.#cacheMisses++;
    return this.#share(
      key,
      this.#get(location.blobKey, location.packId, location.offset, location.storedLength).then((bytes) => this.#open(recordRef(location), bytes, location.packId)),
    );
  }

  /** Registers `value` as the fetch of `key` under way: others share it; once opened it is cached. */
  #share(key: string, value: Promise<Buffer>): Promise<Buffer> {
    this.#inflight.set(key, value);
    value.then(
      (plain) => {
        if (this.#inflight.get(key) === value) this.#inflight.delete(key);
        this.#cache.set(key, plain);
      },
      () => {
        if (this.#inflight.get(key) === value) this.#inflight.delete(key);
      },
    );
    return value;
  }

  /** The plaintext of each location, in order (see the module comment). */
  async *read(locations: Iterable<ChunkLocation> | AsyncIterable<ChunkLocation>): AsyncGenerator<Buffer> {
    const src = source(locations);
    const queue: Slot[] = [];
    let fetches = 0;
    let cachedBytes = 0;
    let peeked: ChunkLocation | undefined;
    let exhausted = false;
    const pull = async (): Promise<ChunkLocation | undefined> => {
      if (peeked !== undefined) {
        const p = peeked;
        peeked = undefined;
        return p;
      }
      if (exhausted) return undefined;
      const loc = await src.next();
      if (loc === undefined) exhausted = true;
      else checkLocation(loc);
      return loc;
    };

    try {
      for (;;) {
        // Plan: fill the queue up to readAhead requests beyond the one being consumed.
        while (fetches <= this.#readAhead && cachedBytes < this.#maxRequestBytes && queue.length < MAX_QUEUED_SLOTS) {
          const loc = await pull();
          if (loc === undefined) break;
          const key = cacheKey(loc);
          const cached = this.#cache.get(key);
          if (cached !== undefined) {
            this.#cacheHits++;
            queue.push({ type: "cached", loc, value: cached });
            cachedBytes += cached.length;
            continue;
          }
          const shared = this.#inflight.get(key);
          if (shared !== undefined) {
            this.#cacheHits++;
            queue.push({ type: "shared", loc, value: shared });
            continue;
          }
          // A run: locations adjacent in the same pack, not cached, not already queued.
          const run: ChunkLocation[] = [loc];
          const keys = [key];
          let end = loc.offset + loc.storedLength;
          for (;;) {
            const next = await pull();
            if (next === undefined) break;
            const nextKey = cacheKey(next);
            if (
              next.blobKey !== loc.blobKey ||
              next.offset !== end ||
              end + next.storedLength - loc.offset > this.#maxRequestBytes ||
              keys.includes(nextKey) ||
              this.#inflight.has(nextKey) ||
              this.#cache.has(nextKey)
            ) {
              peeked = next;
              break;
            }
            run.push(next);
            keys.push(nextKey);
            end += next.storedLength;
          }
          const into = this.#takeBuffer(end - loc.offset);
          const req: Request = {
            blobKey: loc.blobKey,
            packId: loc.packId,
            offset: loc.offset,
            length: end - loc.offset,
            bytes: this.#get(loc.blobKey, loc.packId, loc.offset, end - loc.offset, into),
            remaining: run.length,
          };
          // The buffer is free again once every record of the request is opened (the plaintext is
          // a new buffer; a worker's open copies the bytes first) or has failed; not when the
          // records are consumed, which may be never.
          let unopened = run.length;
          const opened = (): void => {
            if (--unopened === 0 && into !== undefined) this.#spare.push(into);
          };
          // Consumed in order; a failed prefetch is reported when the consumer reaches it.
          req.bytes.catch(() => {});
          fetches++;
          this.#cacheMisses += run.length;
          for (let i = 0; i < run.length; i++) {
            const l = run[i]!;
            const value = this.#share(
              keys[i]!,
              req.bytes.then((bytes) => {
                const rel = l.offset - req.offset;
                return this.#open(recordRef(l), bytes.subarray(rel, rel + l.storedLength), l.packId);
              }),
            );
            value.then(opened, opened);
            queue.push({ type: "fetch", loc: l, req, value });
          }
        }

        const slot = queue.shift();
        if (slot === undefined) return;
        let value: Buffer;
        if (slot.type === "cached") {
          cachedBytes -= slot.value.length;
          value = slot.value;
        } else if (slot.type === "fetch") {
          try {
            value = await slot.value;
          } finally {
            if (--slot.req.remaining === 0) fetches--;
          }
        } else {
          // Another fetch's failure is retried here once, so that this read reports its own error.
          value = await slot.value.catch(() => this.readOne(slot.loc));
        }
        yield value;
      }
    } finally {
      await src.close();
    }
  }

  async #get(blobKey: string, packId: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.#requests++;
    if (into !== undefined) this.#recycledReads++;
    let bytes: Buffer;
    try {
      bytes = await this.#backend.get(blobKey, into === undefined ? { offset, length } : { offset, length, into });
    } catch (err) {
      throw packNotFound(err, packId, blobKey, this.#backend.location);
    }
    this.#bytesFetched += bytes.length;
    return bytes;
  }
}
