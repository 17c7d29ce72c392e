/**
 * Retries and adaptive concurrency for any blob backend, and the error type that tells them apart.
 *
 *   const b = new RetryingBackend(new S3Backend({ ... }));   // defaults below
 *   b.stats();   // { attempts, retries, throttles, giveUps, limit, inFlight, queued }
 *
 * Retries. A call that fails with `STOWAGE_BACKEND_IO` is tried again, unless the error says it
 * is permanent (`retryable === false` on a {@link BackendIoError}: a missing bucket, refused
 * credentials). `STOWAGE_BACKEND_NOT_FOUND`, `STOWAGE_INVALID_ARGUMENT`, `STOWAGE_NO_SPACE` and
 * every other error are returned at once. Between attempts the wrapper sleeps with full jitter:
 * a uniform draw in `[0, min(maxDelayMs, baseDelayMs * 2^(n-1)))` before retry n. It gives up with
 * the last error after `maxAttempts` attempts, or when the next sleep would end after
 * `deadlineMs` from the call's start. Defaults: 8 attempts, base 100 ms, cap 10 s, deadline
 * 60 s (so about 6 s of expected waiting before a persistent fault is reported).
 *
 * What is retried how:
 * - `put` is repeated as a whole put of the same body (puts are atomic, so a retried put never
 *   leaves a mixture; after a lost acknowledgement the retry simply stores the same bytes again).
 * - `get`, `head`, `delete` are repeated as they are (`delete` is idempotent).
 * - `list` resumes: when a page fetch fails, the listing is started again and every key up to and
 *   including the last one already yielded is skipped (keys come in ascending byte order), so the
 *   consumer sees each key once, in order, without gaps. The retry budget (attempts, deadline)
 *   counts consecutive failures of one listing and is reset by every yielded key.
 *
 * Adaptive concurrency (AIMD). At most `limit` calls are in flight in the inner backend; callers
 * beyond it wait in FIFO order (sleeping between attempts holds no slot, and a list holds a slot
 * only while it waits for its next item, so a consumer that calls the backend inside a list loop
 * cannot deadlock). A throttling failure ({@link isThrottle}: HTTP 503 SlowDown, 429, ...) halves
 * the limit, at most once per "generation": throttles of calls started before the last decrease
 * do not decrease it again (a burst of throttles from one window counts once). Every `limit`
 * successes in a row since the last change raise it by one. The limit stays within
 * `[minConcurrency, maxConcurrency]`; defaults: start 16, min 1, max 64.
 *
 * Deterministic for tests: the jitter comes from a PRNG seeded with `seed` (or an injected
 * `random`), and time from the injected `now` and `sleep`.
 */
import { StowageError, isStowageError, type ErrorDetails } from "../errors.js";
import type { BlobBackend, BlobInfo, ByteRange } from "./backend.js";
import { mulberry32 } from "../util/random.js";

/** Details of a backend I/O failure that decide how it is retried. */
export interface BackendIoHints {
  /** The service asked us to slow down (HTTP 503 SlowDown, 429, throttling codes). */
  throttled?: boolean;
  /** False when retrying cannot help (missing bucket, refused credentials). Default true. */
  retryable?: boolean;
  /** The HTTP status of the failed request, when there was a response. */
  httpStatus?: number;
}

/**
 * A `STOWAGE_BACKEND_IO` error carrying retry hints. It is a {@link StowageError}: code users
 * match on `err.code` as for any other error; the retrying wrapper also reads the hints.
 */
export class BackendIoError extends StowageError {
  readonly throttled: boolean;
  readonly retryable: boolean;
  readonly httpStatus: number | undefined;

  constructor(message: string, hints: BackendIoHints = {}, details: ErrorDetails = {}) {
    super("STOWAGE_BACKEND_IO", message, details);
    this.throttled = hints.throttled ?? false;
    this.retryable = hints.retryable ?? true;
    this.httpStatus = hints.httpStatus;
  }
}

/** Whether `err` is a backend failure caused by throttling (the service said: slow down). */
export function isThrottle(err: unknown): boolean {
  return err instanceof BackendIoError && err.throttled;
}

/** Whether the retrying wrapper retries `err`: `STOWAGE_BACKEND_IO` not marked permanent. */
export function isRetryable(err: unknown): boolean {
  if (!isStowageError(err, "STOWAGE_BACKEND_IO")) return false;
  return !(err instanceof BackendIoError) || err.retryable;
}

export interface RetryOptions {
  /** Attempts per call, the first included. Default 8. */
  maxAttempts?: number;
  /** Backoff base: the first retry waits up to this long. Default 100 ms. */
  baseDelayMs?: number;
  /** Backoff cap: no single wait exceeds it. Default 10 000 ms. */
  maxDelayMs?: number;
  /** No retry sleeps past this many ms after the call started. Default 60 000 ms. */
  deadlineMs?: number;
  /** Initial limit of calls in flight. Default 16 (clamped to [min, max]). */
  initialConcurrency?: number;
  /** The limit never falls below this. Default 1. */
  minConcurrency?: number;
  /** The limit never rises above this. Default 64. */
  maxConcurrency?: number;
  /** Seed of the jitter PRNG. Default 1. */
  seed?: number;
  /** Source of uniform draws in [0, 1) for the jitter; overrides `seed`. */
  random?: () => number;
  /** Clock in ms (for the deadline). Default `performance.now`. */
  now?: () => number;
  /** How to wait. Default a timer. */
  sleep?: (ms: number) => Promise<void>;
}

export interface RetryStats {
  /** Calls made to the inner backend (list: page fetches, i.e. `next()` calls). */
  attempts: number;
  /** Attempts that were retries of a failed one. */
  retries: number;
  /** Failures recognised as throttling. */
  throttles: number;
  /** Calls that failed after exhausting their retries (or with a non-retryable backend IO error). */
  giveUps: number;
  /** The current concurrency limit. */
  limit: number;
  /** Calls in the inner backend right now. */
  inFlight: number;
  /** Calls waiting for a slot. */
  queued: number;
  /** The largest `inFlight` seen. */
  maxInFlight: number;
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function positive(name: string, v: number | undefined, dflt: number, integer: boolean, min: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `retry option ${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got ${v}`);
  }
  return v;
}

interface Slot {
  generation: number;
}

export class RetryingBackend implements BlobBackend {
  readonly location: string;
  readonly maxAttempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly deadlineMs: number;
  readonly minConcurrency: number;
  readonly maxConcurrency: number;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  #limit: number;
  #inFlight = 0;
  #maxInFlight = 0;
  /** Successes since the last change of the limit. */
  #successes = 0;
  /** Bumped by every decrease; a throttle of an older generation does not decrease again. */
  #generation = 0;
  readonly #waiters: (() => void)[] = [];
  #attempts = 0;
  #retries = 0;
  #throttles = 0;
  #giveUps = 0;

  constructor(
    readonly inner: BlobBackend,
    options: RetryOptions = {},
  ) {
    this.location = inner.location;
    this.maxAttempts = positive("maxAttempts", options.maxAttempts, 8, true, 1);
    this.baseDelayMs = positive("baseDelayMs", options.baseDelayMs, 100, false, 0);
    this.maxDelayMs = positive("maxDelayMs", options.maxDelayMs, 10_000, false, 0);
    this.deadlineMs = positive("deadlineMs", options.deadlineMs, 60_000, false, 0);
    this.minConcurrency = positive("minConcurrency", options.minConcurrency, 1, true, 1);
    this.maxConcurrency = positive("maxConcurrency", options.maxConcurrency, 64, true, 1);
    if (this.maxConcurrency < this.minConcurrency) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", "retry option maxConcurrency is below minConcurrency");
    }
    const initial = positive("initialConcurrency", options.initialConcurrency, 16, true, 1);
    this.#limit = Math.min(this.maxConcurrency, Math.max(this.minConcurrency, initial));
    this.#random = options.random ?? mulberry32(options.seed ?? 1);
    this.#now = options.now ?? (() => performance.now());
    this.#sleep = options.sleep ?? ((ms) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  }

  /** A snapshot of the counters and the concurrency state. */
  stats(): RetryStats {
    return {
      attempts: this.#attempts,
      retries: this.#retries,
      throttles: this.#throttles,
      giveUps: this.#giveUps,
      limit: this.#limit,
      inFlight: this.#inFlight,
      queued: this.#waiters.length,
      maxInFlight: this.#maxInFlight,
    };
  }

  /** The current concurrency limit. */
  get limit(): number {
    return this.#limit;
  }

  /** The backoff before retry `n` (1-based) with the draw `u` in [0, 1): full jitter. */
  backoffMs(n: number, u: number): number {
    const exp = this.baseDelayMs * 2 ** Math.min(n - 1, 1024);
    return Math.min(this.maxDelayMs, exp) * u;
  }

  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.#call(() => this.inner.put(key, body));
  }

  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.#call(() => this.inner.get(key, range));
  }

  head(key: string): Promise<BlobInfo | undefined> {
    return this.#call(() => this.inner.head(key));
  }

  delete(key: string): Promise<void> {
    return this.#call(() => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    let last: string | undefined;
    let it: AsyncIterator<BlobInfo> | undefined;
    let start = this.#now();
    let failures = 0;
    try {
      for (;;) {
        let result: IteratorResult<BlobInfo>;
        try {
          const slot = await this.#acquire();
          try {
            this.#attempts++;
            if (it === undefined && failures > 0) this.#retries++; // the first call of a new listing
            it ??= this.inner.list(prefix)[Symbol.asyncIterator]();
            result = await it.next();
            this.#succeeded();
          } catch (err) {
            this.#failed(err, slot);
            throw err;
          } finally {
            this.#release();
          }
        } catch (err) {
          failures++;
          const old = it;
          it = undefined;
          await old?.return?.().catch(() => undefined);
          await this.#backoffOrThrow(err, failures, start);
          continue;
        }
        if (result.done === true) return;
        const info = result.value;
        if (last !== undefined && byteCompare(info.key, last) <= 0) continue; // already yielded
        last = info.key;
        failures = 0;
        start = this.#now();
        yield info;
      }
    } finally {
      await it?.return?.().catch(() => undefined);
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    const start = this.#now();
    for (let attempt = 1; ; attempt++) {
      const slot = await this.#acquire();
      let value: T;
      try {
        this.#attempts++;
        if (attempt > 1) this.#retries++;
        value = await fn();
      } catch (err) {
        this.#failed(err, slot);
        this.#release(); // before sleeping: a backoff holds no slot
        await this.#backoffOrThrow(err, attempt, start);
        continue;
      }
      this.#succeeded();
      this.#release();
      return value;
    }
  }

  /** Sleeps before the next attempt, or throws `err` when it is not retried. */
  async #backoffOrThrow(err: unknown, failures: number, start: number): Promise<void> {
    if (!isRetryable(err)) {
      if (isStowageError(err, "STOWAGE_BACKEND_IO")) this.#giveUps++;
      throw err;
    }
    if (failures >= this.maxAttempts) {
      this.#giveUps++;
      throw err;
    }
    const wait = this.backoffMs(failures, this.#random());
    if (this.#now() + wait - start > this.deadlineMs) {
      this.#giveUps++;
      throw err;
    }
    if (wait > 0) await this.#sleep(wait);
  }

  // --- the concurrency limit ---

  async #acquire(): Promise<Slot> {
    if (this.#inFlight >= this.#limit || this.#waiters.length > 0) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    } else {
      this.#inFlight++;
    }
    this.#maxInFlight = Math.max(this.#maxInFlight, this.#inFlight);
    return { generation: this.#generation };
  }

  #release(): void {
    this.#inFlight--;
    this.#drain();
  }

  #drain(): void {
    while (this.#inFlight < this.#limit && this.#waiters.length > 0) {
      this.#inFlight++;
      (this.#waiters.shift() as () => void)();
    }
  }

  #succeeded(): void {
    if (++this.#successes >= this.#limit && this.#limit < this.maxConcurrency) {
      this.#limit++;
      this.#successes = 0;
      this.#drain();
    }
  }

  #failed(err: unknown, slot: Slot): void {
    if (!isThrottle(err)) return;
    this.#throttles++;
    if (slot.generation !== this.#generation) return; // this window already halved the limit
    this.#generation++;
    this.#successes = 0;
    this.#limit = Math.max(this.minConcurrency, Math.floor(this.#limit / 2));
  }
}
