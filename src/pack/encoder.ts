/**
 * The record encoder: compress (zstd, skipped when it does not pay) and seal (AES-256-GCM) chunks,
 * in worker threads when there is a spare core (DESIGN decision 9), else inline. Chunking, chunk
 * ids and the stream's MD5 stay on the caller's thread; this moves the rest of the per-byte work
 * to the second core. Results come back in submission order per caller only if the caller awaits
 * them in order (ingest does), so packs keep an object's chunks adjacent for coalesced reads.
 *
 * Memory: each job copies its chunk (the caller's buffer may be a view of a larger one) and the
 * sealed result is transferred back; callers bound their jobs in flight.
 */
import { Worker } from "node:worker_threads";
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { performance, type EventLoopUtilization } from "node:perf_hooks";
import { StowageError } from "../errors.js";
import { compressChunk, DEFAULT_LEVEL, METHOD_STORED } from "../codec/compress.js";
import type { RepositoryKeys } from "../codec/keys.js";
import { openRecord, sealRecord, RECORD_KIND_CHUNK, type RecordRef } from "./format.js";

export interface EncoderWorkerData {
  key: Uint8Array;
  level: number;
}

/** Messages to a worker: encode a chunk, or feed / finish / drop one stream's MD5. */
export type EncodeRequest =
  /** `md5Stream`: the chunk's bytes are also the next bytes of that stream's MD5 (see {@link RecordEncoder.encode}). */
  | { type: "encode"; seq: number; chunkId: ArrayBuffer; data: ArrayBuffer; md5Stream?: number }
  | { type: "md5"; seq: number; stream: number; data: ArrayBuffer }
  | { type: "md5-final"; seq: number; stream: number }
  | { type: "md5-abort"; seq: number; stream: number }
  | { type: "open"; seq: number; kind: number; method: number; id: ArrayBuffer; rawLength: number; sealed: ArrayBuffer };

export type EncodeReply =
  | { seq: number; method: number; sealed: ArrayBuffer }
  | { seq: number; digest: ArrayBuffer }
  | { seq: number; plain: ArrayBuffer }
  | { seq: number; ok: true }
  | { seq: number; error: string };

/** An incremental MD5 computed off the caller's thread (the S3 ETag of a stream). */
export interface DigestStream {
  /**
   * Feeds bytes (copied). They are queued for the worker at once, in call order, whether or not
   * the returned promise is awaited; it settles when fewer bytes are queued than the bound.
   */
  update(data: Uint8Array): Promise<void>;
  /** The 16-byte MD5 of everything fed. */
  digest(): Promise<Buffer>;
  /** Drops the stream's state (after a failure). */
  abort(): void;
  /** @internal Set when the MD5 runs in a worker of `owner`: chunks encoded there can carry its bytes. */
  readonly ride?: { readonly owner: RecordEncoder; readonly worker: number; readonly stream: number };
}

/** Bytes queued for MD5 in workers, across streams, before `update` waits. */
const MAX_DIGEST_IN_FLIGHT = 16 * 1024 * 1024;

export interface EncodedRecord {
  method: number;
  sealed: Uint8Array;
}

export interface EncoderOptions {
  /** Worker threads; 0 encodes inline. Default: one less than the cores, at most 2. */
  threads?: number;
  /** zstd level. Default 3. */
  level?: number;
  /** Most plaintext bytes being encoded at once, across all callers (bounds the copies). Default 32 MiB. */
  maxInFlightBytes?: number;
}

/** How long a measurement of the workers' load (see `#digestInWorker`) stands before it is renewed. */
const LOAD_SAMPLE_MS = 100;
/** New MD5 streams run in a worker while the workers were busy less than this fraction of the time. */
const DIGEST_WORKER_BUSY_LIMIT = 0.8;

/**
 * Most plaintext bytes of records being opened in workers at once (`openRecord`). A few chunks keep
 * a worker busy; with the encoder's 32 MiB, a restore's buffers in flight raised its peak RSS by
 * 30-40 MB for no speed.
 */
const MAX_OPENING_BYTES = 4 * 1024 * 1024;

/** How long `close` lets jobs under way finish before it stops the workers. */
const CLOSE_DRAIN_MS = 1000;

/** Chunks smaller than this are encoded on the caller's thread. */
const INLINE_BELOW = 64 * 1024;

export function defaultEncoderThreads(): number {
  return Math.max(0, Math.min(2, availableParallelism() - 1));
}

interface Job {
  resolve: (r: EncodeReply) => void;
  reject: (e: unknown) => void;
}

export class RecordEncoder {
  readonly threads: number;
  readonly #keys: RepositoryKeys;
  readonly #level: number;
  readonly #workers: Worker[] = [];
  readonly #jobs = new Map<number, Job>();
  readonly #load: number[] = [];
  #seq = 0;
  #closed = false;
  readonly #maxInFlight: number;
  #inFlightBytes = 0;
  readonly #waiting: Array<() => void> = [];
  #failure: Error | undefined;
  #streams = 0;
  #workerOpens = 0;
  #digestRides = 0;
  #givenBuffers = 0;
  #openingBytes = 0;
  /** `close` waiting for the jobs under way. */
  readonly #drainWaiters: Array<() => void> = [];
  readonly #openWaiting: Array<() => void> = [];
  #digestBytes = 0;
  readonly #digestWaiting: Array<() => void> = [];
  /** The workers' event-loop utilization when last sampled, when, and whether they were busy since the sample before. */
  #workerLoad: { at: number; samples: EventLoopUtilization[]; busy: boolean } | undefined;

  constructor(keys: RepositoryKeys, options: EncoderOptions = {}) {
    this.#keys = keys;
    this.#level = options.level ?? DEFAULT_LEVEL;
    this.threads = options.threads ?? defaultEncoderThreads();
    this.#maxInFlight = options.maxInFlightBytes ?? 32 * 1024 * 1024;
    if (!Number.isInteger(this.threads) || this.threads < 0 || this.threads > 64) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `encoder threads ${this.threads} outside 0..64`);
    }
    const workerData: EncoderWorkerData = { key: keys.subkey("data-encryption"), level: this.#level };
    for (let i = 0; i < this.threads; i++) {
      const w = new Worker(new URL("./encoder-worker.js", import.meta.url), { workerData });
      w.unref();
      w.on("message", (reply: EncodeReply) => this.#onReply(i, reply));
      w.on("error", (err) => this.#fail(err));
      w.on("exit", (code) => {
        if (!this.#closed) this.#fail(new Error(`encoder worker exited with code ${code}`));
      });
      this.#workers.push(w);
      this.#load.push(0);
    }
  }

  /**
   * Compresses and seals one chunk whose id is `chunkId`. Waits first while `maxInFlightBytes`
   * are being encoded (one chunk is always admitted, whatever its size).
   *
   * With `digest`, the chunk's bytes are also fed to that MD5 stream, before this returns its
   * promise (so calls keep the stream's byte order even when not awaited). When the stream's MD5
   * runs in a worker and the chunk can go to that worker now, they travel in one message: one
   * copy and one post of the bytes instead of two (put-large: ~0.3 ms of the calling thread per MiB).
   *
   * `give`: the caller hands `data` over (a buffer of its own that nothing else refers to, such
   * as a chunk the chunker assembled). When it spans its whole ArrayBuffer and goes to a worker,
   * that ArrayBuffer is transferred instead of copied, and `data` is detached (length 0) once this
   * returns its promise. Otherwise `data` is copied as usual.
   */
  async encode(chunkId: Uint8Array, data: Uint8Array, digest?: DigestStream, give = false): Promise<EncodedRecord> {
    const admitted = () => !(this.#inFlightBytes > 0 && this.#inFlightBytes + data.length > this.#maxInFlight);
    const toWorker = this.#workers.length > 0 && data.length >= INLINE_BELOW;
    // A ride is posted before this function's first await, so the MD5's bytes keep their order.
    const ride = digest?.ride !== undefined && digest.ride.owner === this && toWorker && admitted() ? digest.ride : undefined;
    if (ride === undefined) {
      if (digest !== undefined) await digest.update(data);
      // Small chunks (small objects) cost more to post to a worker than to encode here.
      if (!toWorker) return this.#encodeInline(chunkId, data);
      while (!admitted()) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    const length = data.length;
    this.#inFlightBytes += length;
    try {
      return await this.#encodeOne(chunkId, data, ride, give);
    } finally {
      this.#inFlightBytes -= length;
      this.#waiting.shift()?.();
    }
  }

  #encodeInline(chunkId: Uint8Array, data: Uint8Array): EncodedRecord {
    if (this.#closed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the record encoder is closed");
    const c = compressChunk(data, this.#level);
    return { method: c.method, sealed: sealRecord(this.#keys, RECORD_KIND_CHUNK, c.method, chunkId, c.bytes) };
  }

  /** Posts at once (no await before the post): callers rely on that for a riding MD5's order. */
  #encodeOne(chunkId: Uint8Array, data: Uint8Array, ride?: { worker: number; stream: number }, give = false): Promise<EncodedRecord> {
    if (this.#closed) return Promise.reject(new StowageError("STOWAGE_INVALID_ARGUMENT", "the record encoder is closed"));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    let w = 0;
    if (ride !== undefined) w = ride.worker;
    else for (let i = 1; i < this.#workers.length; i++) if (this.#load[i]! < this.#load[w]!) w = i;
    // A copy unless given (Buffer#slice would be a view, and the transfer detaches what it sends).
    const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
    const copy = give && whole ? data : new Uint8Array(data);
    if (copy === data) this.#givenBuffers++;
    const id = Uint8Array.from(chunkId);
    const buffer = copy.buffer as ArrayBuffer;
    const req: EncodeRequest = { type: "encode", seq: this.#seq++, chunkId: id.buffer, data: buffer, ...(ride === undefined ? {} : { md5Stream: ride.stream }) };
    if (ride !== undefined) this.#digestRides++;
    return this.#post(w, req, [buffer, id.buffer]).then((reply) => {
      if (!("sealed" in reply)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "encoder worker sent an unexpected reply");
      return { method: reply.method, sealed: new Uint8Array(reply.sealed) };
    });
  }

  /**
   * Authenticates, decrypts and decompresses one sealed record (see `openRecord` in format.ts), in
   * a worker when it is compressed and its plaintext large enough to pay for the trip: on a
   * restore of logs, zstd decompression was a fifth of the reading thread's time. A record stored
   * raw (video) is opened here: decryption alone (about 0.4 ms per MiB) gains less than the copies
   * cost, and in a restore of video the copies in flight raised the peak RSS by ~50 MB. The bytes are copied (they are
   * usually a view into a larger ranged read). Any failure in the worker is retried here, so the
   * error thrown is exactly `openRecord`'s (STOWAGE_INTEGRITY naming pack, chunk and offset, ...).
   */
  async openRecord(entry: RecordRef, sealedBytes: Uint8Array, packId?: string): Promise<Buffer> {
    if (this.#workers.length === 0 || this.#closed || this.#failure !== undefined || entry.method === METHOD_STORED || entry.rawLength < INLINE_BELOW || sealedBytes.length !== entry.storedLength) {
      return openRecord(this.#keys, entry, sealedBytes, packId);
    }
    const cost = entry.rawLength;
    while (this.#openingBytes > 0 && this.#openingBytes + cost > MAX_OPENING_BYTES) {
      await new Promise<void>((resolve) => this.#openWaiting.push(resolve));
    }
    this.#openingBytes += cost;
    try {
      let w = 0;
      for (let i = 1; i < this.#workers.length; i++) if (this.#load[i]! < this.#load[w]!) w = i;
      const sealed = new Uint8Array(sealedBytes); // a copy: it is transferred
      const id = Uint8Array.from(entry.id);
      const reply = await this.#post(
        w,
        { type: "open", seq: this.#seq++, kind: entry.kind, method: entry.method, id: id.buffer, rawLength: entry.rawLength, sealed: sealed.buffer },
        [sealed.buffer, id.buffer],
      ).catch(() => undefined);
      if (reply !== undefined && "plain" in reply && reply.plain.byteLength === entry.rawLength) {
        this.#workerOpens++;
        return Buffer.from(reply.plain);
      }
    } finally {
      this.#openingBytes -= cost;
      this.#openWaiting.shift()?.();
    }
    return openRecord(this.#keys, entry, sealedBytes, packId);
  }

  /** Chunks that carried their stream's MD5 bytes to a worker so far (for tests and profiling). */
  get digestRides(): number {
    return this.#digestRides;
  }

  /** Chunks whose buffer was transferred to a worker instead of copied (`encode`'s `give`), so far. */
  get givenBuffers(): number {
    return this.#givenBuffers;
  }

  /** Records `openRecord` opened in a worker so far (for tests and profiling). */
  get workerOpens(): number {
    return this.#workerOpens;
  }

  #post(w: number, req: EncodeRequest, transfer: ArrayBuffer[] = []): Promise<EncodeReply> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    this.#load[w]!++;
    return new Promise<EncodeReply>((resolve, reject) => {
      this.#jobs.set(req.seq, { resolve, reject });
      this.#workers[w]!.postMessage(req, transfer);
      if (this.#jobs.size === 1) for (const wk of this.#workers) wk.ref();
    });
  }

  /**
   * An MD5 of a stream, computed in a worker when there is one (moving the one inherently
   * sequential hash of the write path off the thread that chunks and hashes chunks), else inline.
   */
  openDigest(): DigestStream {
    if (this.#workers.length === 0 || this.#closed || !this.#digestInWorker()) {
      const h = createHash("md5");
      return {
        update: (d) => {
          h.update(d);
          return Promise.resolve();
        },
        digest: () => Promise.resolve(h.digest()),
        abort: () => undefined,
      };
    }
    // One worker per stream: its messages are handled in order.
    const stream = this.#streams++;
    const w = stream % this.#workers.length;
    let failed: unknown;
    return {
      ride: { owner: this, worker: w, stream },
      update: (d) => {
        if (failed !== undefined) return Promise.reject(failed);
        // Posted now, so bytes reach the worker in call order; the wait (if any) comes after.
        const over = this.#digestBytes > 0 && this.#digestBytes + d.length > MAX_DIGEST_IN_FLIGHT;
        const queued = over ? new Promise<void>((resolve) => this.#digestWaiting.push(resolve)) : Promise.resolve();
        this.#digestBytes += d.length;
        const copy = new Uint8Array(d); // a copy, never a view: it is transferred
        this.#post(w, { type: "md5", seq: this.#seq++, stream, data: copy.buffer }, [copy.buffer])
          .catch((err: unknown) => {
            failed ??= err;
          })
          .finally(() => {
            this.#digestBytes -= d.length;
            this.#digestWaiting.shift()?.();
          });
        return queued;
      },
      digest: async () => {
        const reply = await this.#post(w, { type: "md5-final", seq: this.#seq++, stream });
        if (failed !== undefined) throw failed;
        if (!("digest" in reply)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "encoder worker sent an unexpected reply");
        return Buffer.from(reply.digest);
      },
      abort: () => {
        if (this.#closed || this.#failure !== undefined) return;
        this.#post(w, { type: "md5-abort", seq: this.#seq++, stream }).catch(() => undefined);
      },
    };
  }

  /**
   * Whether a new MD5 stream should run in a worker: only while the workers keep up. The MD5 (about
   * 1.6 ms per MiB here) goes to whichever side is not the bottleneck. On video-like data (nothing
   * compresses) the workers only seal, wait for work, and take the MD5: ingest 10-20 % faster. On
   * logs, zstd (about 5 ms per MiB) keeps the workers busy all the time, and the MD5 is better done
   * here: 20 % faster the other way. Measured as the workers' event-loop utilization over the last
   * LOAD_SAMPLE_MS or more, so a mixed workload balances itself stream by stream.
   */
  #digestInWorker(): boolean {
    const now = performance.now();
    const last = this.#workerLoad;
    if (last !== undefined && now - last.at < LOAD_SAMPLE_MS) return !last.busy;
    const samples = this.#workers.map((w) => w.performance.eventLoopUtilization());
    let busy = 0;
    if (last !== undefined) {
      for (let i = 0; i < samples.length; i++) busy += this.#workers[i]!.performance.eventLoopUtilization(samples[i]!, last.samples[i]!).utilization;
      busy /= samples.length;
    }
    this.#workerLoad = { at: now, samples, busy: busy >= DIGEST_WORKER_BUSY_LIMIT };
    return !this.#workerLoad.busy;
  }

  #onReply(worker: number, reply: EncodeReply): void {
    this.#load[worker]!--;
    const job = this.#jobs.get(reply.seq);
    if (job === undefined) return;
    this.#jobs.delete(reply.seq);
    if (this.#jobs.size === 0) {
      for (const wk of this.#workers) wk.unref();
      for (const resolve of this.#drainWaiters.splice(0)) resolve();
    }
    if ("error" in reply) job.reject(new StowageError("STOWAGE_INVALID_ARGUMENT", `encoding a chunk failed: ${reply.error}`));
    else job.resolve(reply);
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    for (const job of this.#jobs.values()) job.reject(err);
    this.#jobs.clear();
    for (const resolve of this.#drainWaiters.splice(0)) resolve();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Jobs under way (a reader that stopped early leaves opens behind) finish first, for at most
    // a second: terminating a worker whose replies were still on their way left `terminate()`
    // unresolved, with nothing keeping the event loop alive (seen in a test, one run in a few).
    if (this.#jobs.size > 0) {
      const drained = new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_DRAIN_MS)))]);
      clearTimeout(timer);
    }
    for (const w of this.#workers) w.ref();
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
