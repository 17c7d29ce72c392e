/**
 * The chunk cache of the pack reader: verified plaintext records, least recently used first out,
 * bounded in bytes. Keys are strings (the reader uses kind + chunk id hex). A value larger than
 * the whole capacity is not cached. Values are shared with callers: treat them as read-only.
 */

/** Charged per entry on top of its bytes (Map entry, key string, Buffer object). */
export const CHUNK_CACHE_ENTRY_OVERHEAD = 128;

export class ChunkCache {
  readonly #map = new Map<string, Buffer>();
  #bytes = 0;

  /** `capacity` in bytes; 0 disables caching. */
  constructor(readonly capacity: number) {}

  /** Bytes charged by the cached entries (their lengths plus a fixed overhead each). */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The cached value, now the most recently used; `undefined` when absent. */
  get(key: string): Buffer | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }

  has(key: string): boolean {
    return this.#map.has(key);
  }

  /** Caches `value` as the most recently used entry, evicting the least recently used ones to fit. */
  set(key: string, value: Buffer): void {
    const charge = value.length + CHUNK_CACHE_ENTRY_OVERHEAD;
    this.delete(key);
    if (charge > this.capacity) return;
    this.#map.set(key, value);
    this.#bytes += charge;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.capacity) break;
      this.#map.delete(k);
      this.#bytes -= v.length + CHUNK_CACHE_ENTRY_OVERHEAD;
    }
  }

  delete(key: string): void {
    const old = this.#map.get(key);
    if (old === undefined) return;
    this.#map.delete(key);
    this.#bytes -= old.length + CHUNK_CACHE_ENTRY_OVERHEAD;
  }

  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }
}
