/**
 * The outbox relay: moves the events that metadata transactions appended to the outbox
 * (`MetaTx.appendEvent`, committed atomically with the change they announce) to an {@link EventLog}.
 *
 * One pass: read the oldest batch of the outbox, `log.append` it (durable when it resolves), then
 * delete exactly those events from the outbox in one metadata transaction. Delivery is therefore
 * **at least once**: a crash (or a failed delete) after the append and before the delete commits
 * sends the same events again on the next pass, with the same ids (`outbox-<n>`) and contents.
 * Consumers are idempotent (DESIGN.md decision 5) and may use the id to recognise a redelivery.
 * No event is ever dropped: an append that fails (STOWAGE_EVENTS_IO, or anything else) leaves the
 * batch in the outbox, and the loop retries it with exponential backoff. Events reach the log in
 * outbox order (commit order), so per-key order holds.
 *
 * Run one relay per metadata store: two relays on one outbox would each send every event.
 */
import { StowageError } from "../errors.js";
import type { MetadataStore } from "../meta/types.js";
import type { EventLog, StowageEvent } from "./types.js";

export interface OutboxRelayOptions {
  /** Events read and appended per pass. Default 256. */
  batchSize?: number;
  /** The loop's period when nobody calls notify(), ms. Default 1000. */
  intervalMs?: number;
  /** First retry delay after a failure, ms (doubling up to maxBackoffMs). Default 100. */
  minBackoffMs?: number;
  /** Longest retry delay, ms. Default 30000. */
  maxBackoffMs?: number;
  /** Called with each failure of the loop (it retries regardless). */
  onError?: (err: Error) => void;
}

export interface OutboxRelayStats {
  /** Events in the outbox (not yet relayed, or relayed but not yet deleted). */
  pending: number;
  /** Events appended to the log by this relay (redeliveries included). */
  relayed: number;
  /** Failed passes so far. */
  failures: number;
  /** Consecutive failed passes (0 after a success). */
  consecutiveFailures: number;
  lastError?: string;
  /** When the last failure happened (ms since the epoch). */
  lastErrorAt?: number;
}

/** What the relay needs of the metadata store. */
export type OutboxSource = Pick<MetadataStore, "listOutbox" | "outboxSize" | "transaction">;

export class OutboxRelay {
  readonly #meta: OutboxSource;
  readonly #log: EventLog;
  readonly #batchSize: number;
  readonly #intervalMs: number;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #onError: ((err: Error) => void) | undefined;

  /** Passes run one at a time (the loop and flush() never send the same batch concurrently). */
  #chain: Promise<unknown> = Promise.resolve();
  #running = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #notified = false;

  #pending = 0;
  #relayed = 0;
  #failures = 0;
  #consecutiveFailures = 0;
  #lastError: Error | undefined;
  #lastErrorAt: number | undefined;

  constructor(meta: OutboxSource, log: EventLog, options: OutboxRelayOptions = {}) {
    this.#meta = meta;
    this.#log = log;
    this.#batchSize = options.batchSize ?? 256;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#minBackoffMs = options.minBackoffMs ?? 100;
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.#onError = options.onError;
    const positive = (v: number, name: string, min: number): void => {
      if (!Number.isInteger(v) || v < min) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${name} must be an integer >= ${min}, got ${v}`);
    };
    positive(this.#batchSize, "batchSize", 1);
    positive(this.#intervalMs, "intervalMs", 1);
    positive(this.#minBackoffMs, "minBackoffMs", 0);
    positive(this.#maxBackoffMs, "maxBackoffMs", this.#minBackoffMs);
  }

  /** Events in the outbox as of the last pass (or call of {@link refresh}). */
  get pending(): number {
    return this.#pending;
  }

  /** The last failure, until a pass succeeds. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  get running(): boolean {
    return this.#running;
  }

  stats(): OutboxRelayStats {
    const s: OutboxRelayStats = { pending: this.#pending, relayed: this.#relayed, failures: this.#failures, consecutiveFailures: this.#consecutiveFailures };
    if (this.#lastError !== undefined) s.lastError = this.#lastError.message;
    if (this.#lastErrorAt !== undefined) s.lastErrorAt = this.#lastErrorAt;
    return s;
  }

  /** Re-reads the outbox size into {@link pending}. */
  async refresh(): Promise<number> {
    this.#pending = await this.#meta.outboxSize();
    return this.#pending;
  }

  /** Starts the background loop (idempotent): it relays on notify() and every intervalMs. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Tells the loop that events were committed: it relays them now rather than at the next interval. */
  notify(): void {
    this.#notified = true;
    this.#wake?.();
  }

  /**
   * Relays everything in the outbox now (events committed before the call, and any committed while
   * it runs), for tests and shutdown. Rejects with the first failure (the events stay in the
   * outbox; the loop, if started, keeps retrying them).
   */
  async flush(): Promise<void> {
    while (true) {
      const moved = await this.#serial(() => this.#pass());
      if (moved < this.#batchSize) return;
    }
  }

  /** Stops the loop after the pass in progress (events left in the outbox stay there). Idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) {
      await this.#loop;
      return;
    }
    this.#running = false;
    this.#wake?.();
    await this.#loop;
    await this.#chain.catch(() => undefined);
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#chain.then(fn, fn);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  /** One batch: read, append, delete. Returns how many events it moved. */
  async #pass(): Promise<number> {
    let batch: StowageEvent[];
    try {
      batch = await this.#meta.listOutbox(this.#batchSize);
      if (batch.length > 0) {
        await this.#log.append(batch);
        this.#relayed += batch.length;
        const ids = batch.map((e) => e.id);
        // A crash here re-sends `batch` (same ids) on the next pass: at least once.
        await this.#meta.transaction(async (tx) => tx.deleteOutbox(ids));
      }
      this.#pending = await this.#meta.outboxSize();
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      this.#failures++;
      this.#consecutiveFailures++;
      this.#lastError = e;
      this.#lastErrorAt = Date.now();
      this.#pending = await this.#meta.outboxSize().catch(() => this.#pending);
      throw e;
    }
    this.#consecutiveFailures = 0;
    this.#lastError = undefined;
    return batch.length;
  }

  async #run(): Promise<void> {
    while (this.#running) {
      this.#notified = false;
      let delay = this.#intervalMs;
      try {
        const moved = await this.#serial(() => this.#pass());
        // A full batch: there may be more right away.
        if (moved >= this.#batchSize) continue;
      } catch (err) {
        this.#onError?.(err instanceof Error ? err : new Error(String(err)));
        delay = Math.min(this.#maxBackoffMs, this.#minBackoffMs * 2 ** Math.min(30, this.#consecutiveFailures - 1));
      }
      if (!this.#running) break;
      // After a failure, wait out the backoff even when notified; otherwise wake on notify().
      const failing = this.#consecutiveFailures > 0;
      if (!failing && this.#notified) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.#wake = failing ? () => (this.#running ? undefined : done()) : done;
      });
      this.#wake = undefined;
    }
  }
}
