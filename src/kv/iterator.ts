/**
 * The internal iterator protocol shared by memtables, blocks, tables, levels and the merge of
 * them all. Keys are internal keys (see format.ts), ordered by `compareInternalKeys`.
 *
 * Positioning methods are synchronous: table blocks are read with positioned reads that hit the
 * page cache or the block cache. Errors (corruption, I/O) are thrown from the positioning call.
 */
import { compareInternalKeys } from "./format.js";

export interface InternalIterator {
  valid(): boolean;
  seekToFirst(): void;
  seekToLast(): void;
  /** Positions at the first entry whose internal key is >= target. */
  seek(target: Uint8Array): void;
  /** Positions at the last entry whose internal key is <= target. */
  seekForPrev(target: Uint8Array): void;
  next(): void;
  prev(): void;
  /** The current internal key; only while valid(). The bytes may be reused after moving. */
  key(): Uint8Array;
  value(): Uint8Array;
}

export const emptyIterator: InternalIterator = {
  valid: () => false,
  seekToFirst: () => {},
  seekToLast: () => {},
  seek: () => {},
  seekForPrev: () => {},
  next: () => {},
  prev: () => {},
  key: () => {
    throw new Error("iterator not valid");
  },
  value: () => {
    throw new Error("iterator not valid");
  },
};

/**
 * Merges child iterators into one ordered stream (LevelDB's MergingIterator). Children must not
 * hold the same internal key twice, which holds because sequence numbers are unique.
 * Direction changes re-seek the non-current children, as in LevelDB.
 */
export class MergingIterator implements InternalIterator {
  private current: InternalIterator | undefined;
  private forward = true;

  constructor(private readonly children: InternalIterator[]) {}

  valid(): boolean {
    return this.current !== undefined && this.current.valid();
  }

  seekToFirst(): void {
    for (const c of this.children) c.seekToFirst();
    this.forward = true;
    this.findSmallest();
  }

  seekToLast(): void {
    for (const c of this.children) c.seekToLast();
    this.forward = false;
    this.findLargest();
  }

  seek(target: Uint8Array): void {
    for (const c of this.children) c.seek(target);
    this.forward = true;
    this.findSmallest();
  }

  seekForPrev(target: Uint8Array): void {
    for (const c of this.children) c.seekForPrev(target);
    this.forward = false;
    this.findLargest();
  }

  next(): void {
    const cur = this.current!;
    if (!this.forward) {
      // Every other child must be moved to the first entry after key().
      const k = cur.key().slice();
      for (const c of this.children) {
        if (c === cur) continue;
        c.seek(k);
        if (c.valid() && compareInternalKeys(k, c.key()) === 0) c.next();
      }
      this.forward = true;
    }
    cur.next();
    this.findSmallest();
  }

  prev(): void {
    const cur = this.current!;
    if (this.forward) {
      const k = cur.key().slice();
      for (const c of this.children) {
        if (c === cur) continue;
        c.seekForPrev(k);
        if (c.valid() && compareInternalKeys(k, c.key()) === 0) c.prev();
      }
      this.forward = false;
    }
    cur.prev();
    this.findLargest();
  }

  key(): Uint8Array {
    return this.current!.key();
  }

  value(): Uint8Array {
    return this.current!.value();
  }

  private findSmallest(): void {
    let best: InternalIterator | undefined;
    let bestKey: Uint8Array | undefined;
    for (const c of this.children) {
      if (!c.valid()) continue;
      const k = c.key();
      if (bestKey === undefined || compareInternalKeys(k, bestKey) < 0) {
        best = c;
        bestKey = k;
      }
    }
    this.current = best;
  }

  private findLargest(): void {
    let best: InternalIterator | undefined;
    let bestKey: Uint8Array | undefined;
    for (let i = this.children.length - 1; i >= 0; i--) {
      const c = this.children[i]!;
      if (!c.valid()) continue;
      const k = c.key();
      if (bestKey === undefined || compareInternalKeys(k, bestKey) > 0) {
        best = c;
        bestKey = k;
      }
    }
    this.current = best;
  }
}
