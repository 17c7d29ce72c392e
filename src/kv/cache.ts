/**
 * A byte-charged cache keyed by numbers, used as the table block cache.
 *
 * Eviction order is a JS Map's insertion order with second chance (CLOCK): a hit only sets the
 * entry's `ref` bit, and eviction walks from the oldest entry, moving referenced entries to the
 * newest end (clearing the bit) and evicting the first unreferenced one. This approximates LRU
 * (an entry hit since it was last passed over is never evicted before one that was not) while a
 * hit costs one Map lookup instead of delete + set, and it resists one-off scans better than
 * strict LRU.
 *
 * Block keys are `fileId * 2^32 + blockOffset` (see `blockCacheKey`), and the cache keeps a
 * per-file set of keys so that all blocks of a deleted table can be evicted without scanning the
 * whole cache. File ids are file numbers modulo 2^21, so that keys stay exact doubles; two live
 * files whose numbers differ by a multiple of 2^21 share an id, which is why a reader must check
 * that a cached block really belongs to its file and offset (the table layer does, see
 * Block.fileNumber / Block.offset).
 */

const TWO_32 = 0x1_0000_0000;
/** File ids live in [0, 2^21) so that fileId * 2^32 + offset < 2^53. */
const FILE_ID_SPACE = 0x20_0000;

/** The id under which the blocks of `fileNumber` are cached. */
export function cacheFileId(fileNumber: number): number {
  return fileNumber % FILE_ID_SPACE;
}

/**
 * The cache key of the block at `offset` in table `fileNumber`. Exact for offsets below 2^32;
 * beyond that keys may collide, which readers detect by checking the cached block's identity.
 */
export function blockCacheKey(fileNumber: number, offset: number): number {
  return (fileNumber % FILE_ID_SPACE) * TWO_32 + (offset % TWO_32);
}

interface CacheEntry<V> {
  value: V;
  charge: number;
  /** Hit since eviction last passed over it. */
  ref: boolean;
}

export class LruCache<V> {
  private readonly map = new Map<number, CacheEntry<V>>();
  /** fileId -> keys of that file currently cached. */
  private readonly byFile = new Map<number, Set<number>>();
  private used = 0;
  hits = 0;
  misses = 0;

  /** `capacity` is in bytes (the sum of entry charges); 0 disables caching. */
  constructor(readonly capacity: number) {}

  /** Bytes charged by the entries currently cached. */
  get bytes(): number {
    return this.used;
  }

  /** Number of entries currently cached. */
  get size(): number {
    return this.map.size;
  }

  /** The cached value (marked as recently used), counting a hit or a miss. */
  get(key: number): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    e.ref = true;
    return e.value;
  }

  /** Like get, without touching recency or the counters. */
  peek(key: number): V | undefined {
    return this.map.get(key)?.value;
  }

  has(key: number): boolean {
    return this.map.has(key);
  }

  /**
   * Caches `value` as the newest entry, replacing any entry under `key`, then evicts entries
   * (oldest unreferenced first) until the charges fit the capacity. A value whose charge alone
   * exceeds the capacity is not cached (and any older entry under `key` is dropped).
   */
  set(key: number, value: V, charge: number): void {
    const old = this.map.get(key);
    if (old !== undefined) {
      this.map.delete(key);
      this.used -= old.charge;
    }
    if (charge > this.capacity) {
      if (old !== undefined) this.unindex(key);
      return;
    }
    this.map.set(key, { value, charge, ref: false });
    this.used += charge;
    if (old === undefined) {
      const fileId = Math.floor(key / TWO_32);
      let keys = this.byFile.get(fileId);
      if (keys === undefined) {
        keys = new Set();
        this.byFile.set(fileId, keys);
      }
      keys.add(key);
    }
    if (this.used > this.capacity) this.evict();
  }

  /** Removes one entry; returns whether it was cached. */
  delete(key: number): boolean {
    const e = this.map.get(key);
    if (e === undefined) return false;
    this.map.delete(key);
    this.used -= e.charge;
    this.unindex(key);
    return true;
  }

  /** Removes every cached block of table `fileNumber` (call when the table file is deleted). */
  evictFile(fileNumber: number): void {
    const fileId = cacheFileId(fileNumber);
    const keys = this.byFile.get(fileId);
    if (keys === undefined) return;
    this.byFile.delete(fileId);
    for (const key of keys) {
      const e = this.map.get(key);
      if (e === undefined) continue;
      this.map.delete(key);
      this.used -= e.charge;
    }
  }

  /** Removes every entry for which `pred` returns true. O(entries). */
  deleteWhere(pred: (key: number, value: V) => boolean): void {
    for (const [key, e] of this.map) {
      if (pred(key, e.value)) this.delete(key);
    }
  }

  /** Removes every entry (the hit and miss counters are kept). */
  clear(): void {
    this.map.clear();
    this.byFile.clear();
    this.used = 0;
  }

  private evict(): void {
    // Entries moved to the end are visited again by the iterator, with their bit cleared, so
    // the walk ends after at most one pass plus the evictions.
    const map = this.map;
    const it = map.entries();
    while (this.used > this.capacity) {
      const r = it.next();
      if (r.done === true) break;
      const [key, e] = r.value;
      map.delete(key);
      if (e.ref) {
        e.ref = false;
        map.set(key, e);
        continue;
      }
      this.used -= e.charge;
      this.unindex(key);
    }
  }

  private unindex(key: number): void {
    const fileId = Math.floor(key / TWO_32);
    const keys = this.byFile.get(fileId);
    if (keys === undefined) return;
    keys.delete(key);
    if (keys.size === 0) this.byFile.delete(fileId);
  }
}
