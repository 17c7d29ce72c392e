/**
 * Open tables, bounded by count (each pins its index, bloom filter and a file descriptor), and the
 * iterators that walk a level's files in order. A table in use by an iterator is never closed
 * under it: eviction skips tables with live references.
 */
import type { LruCache } from "./cache.js";
import { joinPath, type FileSystem } from "./fs.js";
import { compareInternalKeys, tableFileName } from "./format.js";
import type { InternalIterator } from "./iterator.js";
import type { Block } from "./table/block.js";
import { Table } from "./table/table.js";
import type { FileMeta } from "./version.js";

interface Entry {
  table: Table;
  refs: number;
}

export class TableCache {
  private readonly open = new Map<number, Entry>();

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
    private readonly capacity: number,
    readonly blockCache: LruCache<Block> | undefined,
    private readonly verifyChecksums: boolean,
  ) {}

  /** The open table for a file; valid until the next call that may evict (use `acquire` to hold it). */
  get(num: number): Table {
    const e = this.open.get(num);
    if (e !== undefined) {
      // Refresh LRU position.
      this.open.delete(num);
      this.open.set(num, e);
      return e.table;
    }
    const file = this.fs.openRandomAccess(joinPath(this.dir, tableFileName(num)));
    let table: Table;
    try {
      table = Table.open(file, num, this.blockCache, { verifyChecksums: this.verifyChecksums });
    } catch (err) {
      file.close();
      throw err;
    }
    this.open.set(num, { table, refs: 0 });
    this.evict(num);
    return table;
  }

  acquire(num: number): Table {
    const t = this.get(num);
    this.open.get(num)!.refs++;
    return t;
  }

  release(num: number): void {
    const e = this.open.get(num);
    if (e !== undefined && e.refs > 0) e.refs--;
  }

  /** Drops a file that was deleted (or is about to be). */
  forget(num: number): void {
    const e = this.open.get(num);
    if (e === undefined) return;
    this.open.delete(num);
    e.table.close();
  }

  get openTables(): number {
    return this.open.size;
  }

  /** Bytes of indexes and filters pinned by open tables. */
  get pinnedBytes(): number {
    let n = 0;
    for (const e of this.open.values()) n += e.table.memoryBytes;
    return n;
  }

  closeAll(): void {
    for (const e of this.open.values()) e.table.close();
    this.open.clear();
  }

  /** Closes least recently used tables over capacity, never a referenced one nor `keep` (just opened for the caller). */
  private evict(keep: number): void {
    if (this.open.size <= this.capacity) return;
    for (const [num, e] of this.open) {
      if (this.open.size <= this.capacity) break;
      if (e.refs > 0 || num === keep) continue;
      this.open.delete(num);
      e.table.close();
    }
  }
}

/** Iterates a sorted, non-overlapping list of files as one sequence, opening tables lazily. */
export class LevelIterator implements InternalIterator {
  private index = -1;
  private iter: InternalIterator | undefined;
  private heldFile = -1;

  constructor(
    private readonly files: readonly FileMeta[],
    private readonly cache: TableCache,
    private readonly fillCache: boolean,
  ) {}

  valid(): boolean {
    return this.iter !== undefined && this.iter.valid();
  }

  seekToFirst(): void {
    this.setFile(0);
    this.iter?.seekToFirst();
    this.skipEmptyForward();
  }

  seekToLast(): void {
    this.setFile(this.files.length - 1);
    this.iter?.seekToLast();
    this.skipEmptyBackward();
  }

  seek(target: Uint8Array): void {
    // First file whose largest key is >= target.
    let lo = 0;
    let hi = this.files.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareInternalKeys(this.files[mid]!.largest, target) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.setFile(lo);
    this.iter?.seek(target);
    this.skipEmptyForward();
  }

  seekForPrev(target: Uint8Array): void {
    // Last file whose smallest key is <= target.
    let lo = 0;
    let hi = this.files.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareInternalKeys(this.files[mid]!.smallest, target) <= 0) lo = mid + 1;
      else hi = mid;
    }
    this.setFile(lo - 1);
    this.iter?.seekForPrev(target);
    this.skipEmptyBackward();
  }

  next(): void {
    this.iter!.next();
    this.skipEmptyForward();
  }

  prev(): void {
    this.iter!.prev();
    this.skipEmptyBackward();
  }

  key(): Uint8Array {
    return this.iter!.key();
  }

  value(): Uint8Array {
    return this.iter!.value();
  }

  /** Releases the table held open. */
  close(): void {
    this.setFile(-1);
  }

  private skipEmptyForward(): void {
    while (this.iter !== undefined && !this.iter.valid()) {
      if (this.index + 1 >= this.files.length) {
        this.setFile(-1);
        return;
      }
      this.setFile(this.index + 1);
      this.iter!.seekToFirst();
    }
  }

  private skipEmptyBackward(): void {
    while (this.iter !== undefined && !this.iter.valid()) {
      if (this.index <= 0) {
        this.setFile(-1);
        return;
      }
      this.setFile(this.index - 1);
      this.iter!.seekToLast();
    }
  }

  private setFile(i: number): void {
    if (i < 0 || i >= this.files.length) {
      this.index = -1;
      this.iter = undefined;
      if (this.heldFile >= 0) this.cache.release(this.heldFile);
      this.heldFile = -1;
      return;
    }
    if (i === this.index && this.iter !== undefined) return;
    const num = this.files[i]!.number;
    const table = this.cache.acquire(num);
    if (this.heldFile >= 0) this.cache.release(this.heldFile);
    this.heldFile = num;
    this.index = i;
    this.iter = table.iterator(this.fillCache);
  }
}
