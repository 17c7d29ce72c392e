/**
 * What the local tier holds, in memory: every blob's size and recency, and the totals (the local
 * tier's usage). The purger drops the least recently used copies first.
 *
 * Recency is a counter, not a clock: each access (a put, a hydration, a read served locally) gives
 * the blob the next tick, so the order is exact and needs no timer. It is not persisted: at open
 * the index is seeded by listing the local tier, and the listed blobs get ticks in listing (key)
 * order, all older than any access of this process. After a restart the first purges therefore
 * drop copies in key order, which — pack ids being random — is an arbitrary order; accesses since
 * the restart are honoured exactly (docs/TIERS.md, "LRU").
 */

export interface LocalEntry {
  size: number;
  /** Recency: larger is more recent. */
  tick: number;
}

export class LocalIndex {
  // A Map iterates in insertion order; re-inserting on every access keeps it in LRU order.
  readonly #entries = new Map<string, LocalEntry>();
  #bytes = 0;
  #tick = 0;

  get bytes(): number {
    return this.#bytes;
  }

  get count(): number {
    return this.#entries.size;
  }

  get(key: string): LocalEntry | undefined {
    return this.#entries.get(key);
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Records that the local tier holds `key` with `size` bytes, accessed now. */
  set(key: string, size: number): void {
    const old = this.#entries.get(key);
    if (old !== undefined) {
      this.#bytes -= old.size;
      this.#entries.delete(key);
    }
    this.#entries.set(key, { size, tick: ++this.#tick });
    this.#bytes += size;
  }

  /** Marks `key` as just used (a local read). No effect when it is not held. */
  touch(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    e.tick = ++this.#tick;
    this.#entries.set(key, e);
  }

  remove(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#bytes -= e.size;
    this.#entries.delete(key);
  }

  /** A snapshot of the entries, least recently used first. */
  lru(): Array<[string, LocalEntry]> {
    return [...this.#entries].map(([k, e]) => [k, { ...e }]);
  }
}
