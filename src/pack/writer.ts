/**
 * The packer: one group-committing pack writer shared by every concurrent writer of a repository.
 *
 * Writers `add` compressed-or-raw chunks; the packer seals each one at once (so the open pack holds
 * ciphertext, and the caller's buffer is not retained) and appends it to the *open pack*. A pack is
 * closed and uploaded as soon as it reaches `targetSize` (records + index + trailer), or when a
 * writer calls `flush` (after `commitDelayMs`; 0 means the next turn of the event loop, so writers
 * running in the same turn share the pack). At most `maxUploads` packs upload at once; a flushed
 * pack waiting for a free upload slot stays open and keeps taking chunks (group commit: while
 * uploads are busy, the next pack collects every writer that flushes meanwhile). When the open pack
 * is full and every slot is busy, it waits as the one *ready* pack and `add` blocks until a slot
 * frees (backpressure), so memory is bounded by about (maxUploads + 1) packs.
 *
 * After a pack's PUT resolves (the backend's put is atomic and durable), `onUploaded` is called
 * with what it holds; calls are serialized, in the order the uploads finished. A chunk stays
 * `pending` from `add` until that call resolved; `flush` waits for the packs holding the chunks
 * pending when it was called. If a PUT or a commit fails, its chunks stop being pending and every
 * flush that waited on that pack rejects with the error; later flushes are unaffected. (The blob of
 * a pack whose commit failed stays in the backend, unreferenced; the garbage collector's concern.)
 */
import { SEALED_OVERHEAD } from "../codec/aead.js";
import type { RepositoryKeys } from "../codec/keys.js";
import type { BlobBackend } from "../backend/backend.js";
import { StowageError } from "../errors.js";
import type { ChunkRecord, PackRecord } from "../meta/types.js";
import {
  encodePack,
  MAX_PACK_BYTES,
  MAX_RAW_LENGTH,
  newPackId,
  packBlobKey,
  packSize,
  RECORD_KIND_CHUNK,
  RECORD_KIND_METADATA,
  sealRecord,
  type EncodedPack,
  type RecordKind,
  type SealedRecord,
} from "./format.js";

export const DEFAULT_TARGET_PACK_SIZE = 16 * 1024 * 1024;
export const DEFAULT_MAX_UPLOADS = 2;
/** How long an overlap of writers counts as "concurrent traffic" for the commit delay. */
const CONTENTION_MEMORY_MS = 1000;

export interface PackerOptions {
  /** Close a pack once records + index + trailer reach this many bytes. Default 16 MiB, at most 1 GiB. */
  targetSize?: number;
  /** Concurrent pack uploads. Default 2. */
  maxUploads?: number;
  /** How long a flush lets other writers join the open pack before it is uploaded. Default 0 (next event-loop turn). */
  commitDelayMs?: number;
}

export interface PackedChunk {
  /** 1 = chunk (default), 2 = metadata record. */
  kind?: RecordKind;
  /** 32 bytes: the chunk id (or, for a metadata record, the writer's id). */
  chunkId: Uint8Array;
  /** Compression method of `stored`. */
  method: number;
  /** Plaintext length. */
  rawLength: number;
  /** Compressed-or-raw bytes, not sealed: the packer seals them. Give this or `sealed`. */
  stored?: Uint8Array;
  /**
   * The record already sealed with `sealRecord` (same kind, method and id), e.g. by the encoder
   * pool in another thread. Give this or `stored`.
   */
  sealed?: Uint8Array;
}

export interface PackCommit {
  /** State `live`, created now. */
  pack: PackRecord;
  /** The chunks (kind 1) of the pack in index order, with `refs: 0`. */
  chunks: Array<[Buffer, ChunkRecord]>;
  /** The metadata records (kind 2) of the pack in index order (`refs: 0`, not chunk-index rows). */
  metadataRecords: Array<[Buffer, ChunkRecord]>;
}

export interface PackerStats {
  packsUploaded: number;
  bytesUploaded: number;
  /** Records in uploaded packs (chunks and metadata records). */
  chunksPacked: number;
  /** Sealed bytes held in memory: the open pack, the ready pack and packs being uploaded. */
  pendingBytes: number;
}

interface Group {
  packId: string;
  records: SealedRecord[];
  /** Keys in the pending map. */
  keys: string[];
  /** Sealed bytes of `records`. */
  bytes: number;
  flushRequested: boolean;
  /** Writers' (not urgent) flush() calls that found this pack open (each waits for it). */
  flushes: number;
  /** The flush delay has passed: upload as soon as a slot is free. */
  flushDue: boolean;
  /** Cancels the pending flush timer. */
  cancelTimer: (() => void) | undefined;
  /** Makes a requested flush due now (the last streaming writer has ended). */
  fireNow?: (() => void) | undefined;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function newGroup(): Group {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Nobody may be waiting on a group that fails; its error is reported to the flushes that do.
  done.catch(() => {});
  return { packId: newPackId(), records: [], keys: [], bytes: 0, flushRequested: false, flushes: 0, flushDue: false, cancelTimer: undefined, done, resolve, reject };
}

function invalid(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", what);
}

function pendingKey(kind: RecordKind, id: Uint8Array): string {
  return `${kind}:${Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("hex")}`;
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(`${name} ${value} outside [${min}, ${max}]`);
}

export class Packer {
  readonly #backend: BlobBackend;
  readonly #keys: RepositoryKeys;
  readonly #onUploaded: (commit: PackCommit) => Promise<void>;
  readonly #targetSize: number;
  readonly #maxUploads: number;
  readonly #commitDelayMs: number;
  #activeWriters = 0;
  #lastContention = 0;
  /**
   * Under contention, how many flushes a pack gathers before it goes without waiting out the
   * commit delay: the most writers seen waiting on one pack (0: not known yet). A closed loop of
   * N clients sends nothing more while its N requests wait, so once N are in, waiting longer only
   * adds latency. Raised by any pack that gathered more; lowered by one each time the delay runs
   * out first.
   */
  #expectedFlushes = 0;

  #open: Group = newGroup();
  /** A full pack waiting for an upload slot. */
  #ready: Group | undefined;
  #uploading = 0;
  /** Closed packs (ready, uploading or committing) whose commit has not settled. */
  readonly #unsettled = new Set<Group>();
  readonly #pending = new Map<string, Group>();
  #waiters: Array<() => void> = [];
  #commitChain: Promise<void> = Promise.resolve();
  #closed = false;

  #packsUploaded = 0;
  #bytesUploaded = 0;
  #chunksPacked = 0;
  #pendingBytes = 0;

  constructor(backend: BlobBackend, keys: RepositoryKeys, onUploaded: (commit: PackCommit) => Promise<void>, options: PackerOptions = {}) {
    this.#backend = backend;
    this.#keys = keys;
    this.#onUploaded = onUploaded;
    this.#targetSize = options.targetSize ?? DEFAULT_TARGET_PACK_SIZE;
    this.#maxUploads = options.maxUploads ?? DEFAULT_MAX_UPLOADS;
    this.#commitDelayMs = options.commitDelayMs ?? 0;
    checkInteger("targetSize", this.#targetSize, 1, MAX_PACK_BYTES);
    checkInteger("maxUploads", this.#maxUploads, 1, 1024);
    if (!(this.#commitDelayMs >= 0 && this.#commitDelayMs <= 60_000)) throw invalid(`commitDelayMs ${this.#commitDelayMs} outside [0, 60000]`);
  }

  /**
   * Accepts a chunk into the open pack (sealing it now). Waits while the open pack is full and
   * `maxUploads` packs are uploading. A chunk whose id is already pending is skipped.
   */
  async add(chunk: PackedChunk): Promise<void> {
    if (this.#closed) throw this.#closedError();
    const kind = chunk.kind ?? RECORD_KIND_CHUNK;
    if (kind !== RECORD_KIND_CHUNK && kind !== RECORD_KIND_METADATA) throw invalid(`record kind ${String(kind)} is not 1 or 2`);
    if (!(chunk.chunkId instanceof Uint8Array) || chunk.chunkId.length !== 32) throw invalid("chunkId must be 32 bytes");
    if ((chunk.stored === undefined) === (chunk.sealed === undefined)) throw invalid("give exactly one of stored and sealed");
    if (chunk.stored !== undefined && !(chunk.stored instanceof Uint8Array)) throw invalid("stored must be a Uint8Array");
    if (chunk.sealed !== undefined && (!(chunk.sealed instanceof Uint8Array) || chunk.sealed.length < SEALED_OVERHEAD)) throw invalid("sealed must be a sealed record");
    checkInteger("method", chunk.method, 0, 255);
    checkInteger("rawLength", chunk.rawLength, 0, MAX_RAW_LENGTH);
    const storedLength = chunk.stored !== undefined ? chunk.stored.length : chunk.sealed!.length - SEALED_OVERHEAD;
    if (chunk.method === 0 && storedLength !== chunk.rawLength) {
      throw invalid(`a stored (method 0) chunk of ${storedLength} bytes must have rawLength ${storedLength}, not ${chunk.rawLength}`);
    }
    const sealedLength = storedLength + SEALED_OVERHEAD;
    if (packSize(sealedLength, 1) > MAX_PACK_BYTES) throw invalid(`a record of ${storedLength} bytes does not fit in a pack`);
    const key = pendingKey(kind, chunk.chunkId);

    for (;;) {
      if (this.#closed) throw this.#closedError();
      if (this.#pending.has(key)) return;
      if (this.#ready === undefined) {
        const open = this.#open;
        if (open.records.length > 0 && packSize(open.bytes + sealedLength, open.records.length + 1) > MAX_PACK_BYTES) {
          this.#closeOpen();
          continue;
        }
        break;
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }

    const id = Buffer.from(chunk.chunkId);
    const sealed = chunk.sealed ?? sealRecord(this.#keys, kind, chunk.method, id, chunk.stored!);
    const open = this.#open;
    open.records.push({ kind, method: chunk.method, id, rawLength: chunk.rawLength, sealed });
    open.keys.push(key);
    open.bytes += sealed.length;
    this.#pending.set(key, open);
    this.#pendingBytes += sealed.length;
    if (packSize(open.bytes, open.records.length) >= this.#targetSize) this.#closeOpen();
  }

  /** True while the chunk is in the open pack or in a pack whose upload or commit has not finished. */
  pending(chunkId: Uint8Array, kind: RecordKind = RECORD_KIND_CHUNK): boolean {
    return this.#pending.has(pendingKey(kind, chunkId));
  }

  /**
   * For a pending chunk: settles with the pack holding it (resolves once that pack is uploaded and
   * committed, rejects with its error). `undefined` when the chunk is not pending. A writer that
   * deduplicated against a pending chunk waits for this after its flush: the pack may belong to
   * another writer and may already have failed, in which case no later flush covers it.
   */
  whenCommitted(chunkId: Uint8Array, kind: RecordKind = RECORD_KIND_CHUNK): Promise<void> | undefined {
    return this.#pending.get(pendingKey(kind, chunkId))?.done;
  }

  /**
   * Resolves when every chunk added before this call is uploaded and committed; rejects as soon as
   * one of the packs holding them fails (with that pack's error). `urgent`: do not wait
   * `commitDelayMs` for more records unless a data writer is streaming.
   */
  async flush(options: { urgent?: boolean } = {}): Promise<void> {
    const groups = [...this.#unsettled];
    const open = this.#open;
    if (open.records.length > 0) {
      groups.push(open);
      // Writers are counted; the journal's own urgent flushes are not (they are not clients).
      if (options.urgent !== true) open.flushes++;
      this.#requestFlush(open);
      // Every writer expected has joined: waiting longer would only add latency (a closed loop of
      // clients sends no more until these are answered).
      if (this.#expectedFlushes > 0 && open.flushes >= this.#expectedFlushes) open.fireNow?.();
      // Someone waits for small records alone (the metadata journal at fsync/close): waiting
      // `commitDelayMs` for company helps only while data writers are streaming.
      if (options.urgent === true && this.#activeWriters === 0) open.fireNow?.();
    }
    if (groups.length === 0) return;
    // Fails fast: the first failed pack rejects the flush (the others carry on and commit).
    await Promise.all(groups.map((g) => g.done));
  }

  /** Refuses further adds, then flushes. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake();
    await this.flush();
  }

  stats(): PackerStats {
    return {
      packsUploaded: this.#packsUploaded,
      bytesUploaded: this.#bytesUploaded,
      chunksPacked: this.#chunksPacked,
      pendingBytes: this.#pendingBytes,
    };
  }

  #closedError(): StowageError {
    return invalid("the packer is closed");
  }

  /**
   * Declares a writer streaming data into the packer; call the returned function when its stream
   * has ended (before it flushes). A flush waits up to `commitDelayMs` for the pack to fill only
   * while other writers are still streaming: a lone writer's flush goes at once, while under
   * concurrency the writers about to flush share the pack.
   */
  beginWriter(): () => void {
    this.#activeWriters++;
    if (this.#activeWriters > 1) this.#lastContention = Date.now();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#activeWriters--;
      if (this.#activeWriters === 0 && !this.#contended()) this.#open.fireNow?.();
    };
  }

  /**
   * True when writers overlapped (two streaming at once, or a flush while an earlier pack was
   * still uploading or committing) within the last second. Under a stream of concurrent requests
   * there are instants with no writer streaming (the next requests are still queued), so the
   * recent past, not the present count, says whether waiting will gather company.
   */
  #contended(): boolean {
    return Date.now() - this.#lastContention < CONTENTION_MEMORY_MS;
  }

  #requestFlush(g: Group): void {
    if (g.flushRequested) return;
    g.flushRequested = true;
    // A flush while an earlier pack is still uploading or committing: writers are overlapping.
    if (this.#unsettled.size > 0) this.#lastContention = Date.now();
    const fire = (): void => {
      g.cancelTimer?.();
      g.cancelTimer = undefined;
      g.fireNow = undefined;
      if (g !== this.#open) return;
      g.flushDue = true;
      this.#pump();
    };
    g.fireNow = fire;
    if (this.#commitDelayMs === 0 || (this.#activeWriters === 0 && !this.#contended())) {
      const t = setImmediate(fire);
      g.cancelTimer = () => clearImmediate(t);
    } else {
      const t = setTimeout(() => {
        // The whole delay passed with fewer writers than expected: expect one fewer next time (a
        // slow decay: a pack that goes early with half the writers costs a PUT per half).
        this.#expectedFlushes = Math.max(g.flushes, this.#expectedFlushes - 1);
        fire();
      }, this.#commitDelayMs);
      g.cancelTimer = () => clearTimeout(t);
    }
  }

  /** Closes the open pack: uploads it now if a slot is free, else it becomes the ready pack. */
  #closeOpen(): void {
    const g = this.#open;
    if (g.flushes > this.#expectedFlushes && this.#expectedFlushes > 0) this.#expectedFlushes = g.flushes;
    this.#open = newGroup();
    g.cancelTimer?.();
    g.cancelTimer = undefined;
    this.#unsettled.add(g);
    if (this.#uploading < this.#maxUploads && this.#ready === undefined) {
      this.#start(g);
    } else {
      // add() only appends while there is no ready pack, and a free slot always takes the ready pack.
      this.#ready = g;
    }
  }

  /** Starts what may start: the ready pack, then a flushed open pack. */
  #pump(): void {
    while (this.#uploading < this.#maxUploads) {
      const ready = this.#ready;
      if (ready !== undefined) {
        this.#ready = undefined;
        this.#start(ready);
        continue;
      }
      // Group commit: a pack closed early for a flush waits until no upload is in flight, so the
      // writers that flush meanwhile all ride in it (one PUT for many small objects). Full packs
      // are not held back; they use every upload slot.
      const open = this.#open;
      if (open.flushDue && open.records.length > 0 && this.#uploading === 0) {
        this.#closeOpen();
        continue;
      }
      break;
    }
    this.#wake();
  }

  #wake(): void {
    if (this.#ready !== undefined && !this.#closed) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #start(g: Group): void {
    this.#uploading++;
    void this.#upload(g);
  }

  async #upload(g: Group): Promise<void> {
    let encoded: EncodedPack;
    try {
      encoded = encodePack(this.#keys, g.packId, g.records);
      await this.#backend.put(packBlobKey(g.packId), encoded.parts);
    } catch (err) {
      this.#uploaded(g);
      this.#settle(g, err);
      this.#pump();
      return;
    }
    this.#uploaded(g);
    this.#packsUploaded++;
    this.#bytesUploaded += encoded.size;
    this.#chunksPacked += encoded.entries.length;
    this.#pump();
    const commit = makeCommit(g.packId, encoded);
    this.#commitChain = this.#commitChain.then(async () => {
      try {
        await this.#onUploaded(commit);
      } catch (err) {
        this.#settle(g, err);
        return;
      }
      this.#settle(g, undefined);
    });
  }

  /** The PUT settled: the slot and the pack's memory are free. */
  #uploaded(g: Group): void {
    this.#uploading--;
    this.#pendingBytes -= g.bytes;
    g.records = [];
  }

  #settle(g: Group, err: unknown): void {
    for (const key of g.keys) if (this.#pending.get(key) === g) this.#pending.delete(key);
    this.#unsettled.delete(g);
    if (err === undefined) g.resolve();
    else g.reject(err);
  }
}

function makeCommit(packId: string, encoded: EncodedPack): PackCommit {
  const chunks: Array<[Buffer, ChunkRecord]> = [];
  const metadataRecords: Array<[Buffer, ChunkRecord]> = [];
  for (const e of encoded.entries) {
    const rec: ChunkRecord = { packId, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, method: e.method, refs: 0 };
    (e.kind === RECORD_KIND_METADATA ? metadataRecords : chunks).push([e.id, rec]);
  }
  return {
    pack: { id: packId, blobKey: packBlobKey(packId), size: encoded.size, entries: encoded.entries.length, created: Date.now(), state: "live" },
    chunks,
    metadataRecords,
  };
}
