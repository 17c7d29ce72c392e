/**
 * Ships metadata journal entries to the cloud tier (docs/RECOVERY.md) and says when they are durable.
 *
 * An entry is committed in the local metadata store first (a `J` row, in the same batch as the
 * change it records), then handed here: its record goes to the cloud packer, in index order, and
 * rides in whatever pack the packer closes next (usually one that also carries data). Once that
 * pack is uploaded and committed, the entry is durable and the store deletes its local row.
 *
 * Two kinds of entries:
 * - *lazy* ones (of puts whose intent is already durable) wait here until the next data flush of
 *   the store ({@link drain}, called before it) takes them along, or `lazyMs` passes (then they go
 *   in a pack of their own). {@link close} leaves them: their rows are shipped by the next open —
 *   so a one-shot command's put costs one PUT, not two;
 * - *urgent* ones go at once; {@link waitDurable} resolves once every entry up to an index is
 *   durable (the contiguous *watermark*), draining the lazy ones first and flushing the packer:
 *   recovery replays entries up to the first gap, so an operation is acknowledged only when
 *   nothing before it is missing.
 *
 * A pack that fails takes its entries with it: they are shipped again (backoff 0.5 s doubling to
 * 30 s, until closed; entries left over are shipped again when the store next opens, from their
 * rows), and waiters at or after the first failed index reject with the pack's error.
 */
import type { Packer } from "../pack/writer.js";
import { RECORD_KIND_METADATA } from "../pack/format.js";
import { journalRecord } from "./journal.js";

interface Waiter {
  index: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface JournalShipperOptions {
  /** zstd level for entry records. */
  level?: number;
  /** How long a lazy entry may wait for a pack to ride in before it forces one. Default 1000 ms. */
  lazyMs?: number;
}

export class JournalShipper {
  readonly #packer: Packer;
  readonly #level: number | undefined;
  readonly #lazyMs: number;
  /** Every entry up to here is durable in the cloud tier. */
  #watermark = 0;
  /** Durable entries above the watermark. */
  readonly #durableAbove = new Set<number>();
  /** Entries shipped (or being shipped) and not yet durable: index → plaintext. */
  readonly #inFlight = new Map<number, Buffer>();
  #waiters: Waiter[] = [];
  /** Lazy entries not yet handed to the packer, in index order. */
  #lazy: Array<{ index: number; plain: Buffer }> = [];
  /** Records reach the packer in the order they were shipped. */
  #chain: Promise<void> = Promise.resolve();
  #lazyTimer: NodeJS.Timeout | undefined;
  /** When data flushes last took the lazy entries along (ms). */
  #lastDrain = 0;
  readonly #retryTimers = new Set<NodeJS.Timeout>();
  readonly #attempts = new Map<number, number>();
  #closed = false;

  constructor(packer: Packer, options: JournalShipperOptions = {}) {
    this.#packer = packer;
    this.#level = options.level;
    this.#lazyMs = options.lazyMs ?? 1000;
  }

  /**
   * Starts from the store's state: `last` is the last index handed out, `pending` the entries
   * whose rows are still there (committed, not known to be durable); they are shipped again.
   */
  start(last: number, pending: ReadonlyArray<{ index: number; entry: Buffer }>): void {
    this.#watermark = pending.length === 0 ? last : Math.min(...pending.map((p) => p.index)) - 1;
    for (const p of pending) this.#durableAbove.delete(p.index);
    // Indexes between the pending ones were shipped and deleted before: durable.
    const pendingSet = new Set(pending.map((p) => p.index));
    for (let i = this.#watermark + 1; i <= last; i++) if (!pendingSet.has(i)) this.#durableAbove.add(i);
    for (const p of pending) this.ship(p.index, p.entry, false);
  }

  /** Hands the lazy entries to the packer (the caller is about to flush it). */
  drain(): void {
    this.#lastDrain = Date.now();
    const lazy = this.#lazy;
    if (lazy.length === 0) return;
    this.#lazy = [];
    for (const e of lazy) this.#send(e.index, e.plain);
  }

  /** The contiguous durable watermark. */
  get watermark(): number {
    return this.#watermark;
  }

  /** Entries shipped and not yet durable. */
  get backlog(): number {
    return this.#inFlight.size;
  }

  /** Hands an entry (committed locally) to the packer. `urgent` asks for a pack now. */
  ship(index: number, plain: Buffer, urgent: boolean): void {
    if (index <= this.#watermark || this.#durableAbove.has(index)) return;
    this.#inFlight.set(index, plain);
    if (urgent) {
      this.drain();
      this.#send(index, plain);
      this.#flushSoon();
    } else {
      this.#lazy.push({ index, plain });
      this.#lazyFlush();
    }
  }

  /** Resolves once every entry up to `index` is durable (flushing the packer); rejects if one of them fails. */
  waitDurable(index: number): Promise<void> {
    if (index <= this.#watermark) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ index, resolve, reject });
      this.drain();
      this.#flushSoon();
    });
  }

  /** Stops retrying; waits until the records handed over so far reached the packer. Lazy entries stay (in their rows). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#lazyTimer !== undefined) clearTimeout(this.#lazyTimer);
    this.#lazyTimer = undefined;
    for (const t of this.#retryTimers) clearTimeout(t);
    this.#retryTimers.clear();
    await this.#chain;
  }

  #send(index: number, plain: Buffer): void {
    const rec = journalRecord(index, plain, this.#level);
    const added = this.#chain.then(() => (this.#closed ? Promise.reject(new Error("journal shipper closed")) : this.#packer.add(rec)));
    this.#chain = added.catch(() => undefined);
    void added
      .then(() => this.#packer.whenCommitted(rec.chunkId, RECORD_KIND_METADATA) ?? Promise.resolve())
      .then(
        () => this.#durable(index),
        (err: unknown) => this.#failed(index, plain, err),
      );
  }

  #durable(index: number): void {
    if (!this.#inFlight.delete(index)) return;
    this.#attempts.delete(index);
    if (index <= this.#watermark) return;
    this.#durableAbove.add(index);
    while (this.#durableAbove.delete(this.#watermark + 1)) this.#watermark++;
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.index <= this.#watermark) w.resolve();
      else still.push(w);
    }
    this.#waiters = still;
  }

  #failed(index: number, plain: Buffer, err: unknown): void {
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.index >= index) w.reject(err);
      else still.push(w);
    }
    this.#waiters = still;
    if (this.#closed) return;
    const attempt = (this.#attempts.get(index) ?? 0) + 1;
    this.#attempts.set(index, attempt);
    const t = setTimeout(
      () => {
        this.#retryTimers.delete(t);
        if (this.#closed || !this.#inFlight.has(index)) return;
        this.#send(index, plain);
        this.#flushSoon();
      },
      Math.min(30_000, 500 * 2 ** Math.min(attempt - 1, 6)),
    );
    t.unref();
    this.#retryTimers.add(t);
  }

  #flushSoon(): void {
    void this.#chain.then(() => this.#packer.flush({ urgent: true })).catch(() => undefined);
  }

  /**
   * Arms the timer that ships lazy entries on their own: only when no data flush took them along
   * for `lazyMs` (under steady traffic they always ride with data, at no extra PUT).
   */
  #lazyFlush(delay = this.#lazyMs): void {
    if (this.#lazyTimer !== undefined || this.#closed) return;
    this.#lazyTimer = setTimeout(() => {
      this.#lazyTimer = undefined;
      if (this.#lazy.length === 0 || this.#closed) return;
      const idle = Date.now() - this.#lastDrain;
      if (idle < this.#lazyMs) {
        this.#lazyFlush(this.#lazyMs - idle);
        return;
      }
      this.drain();
      this.#flushSoon();
    }, delay);
    this.#lazyTimer.unref();
  }
}
