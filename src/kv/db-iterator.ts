/**
 * User-facing iteration. `UserIterator` turns the merged stream of internal entries into the
 * newest visible version of each user key at a sequence number, hiding deletions and older
 * versions, in both directions (the logic of LevelDB's DBIter). `BoundedCursor` adds gt/gte/lt/lte
 * and prefix bounds; `EntryIterator` adds reverse, limit and the async/sync iteration protocols.
 */
import { StowageError } from "../errors.js";
import { toBytes } from "./batch.js";
import {
  KIND_DELETE,
  KIND_FOR_SEEK,
  TRAILER_SIZE,
  compareBytes,
  compareRange,
  makeInternalKey,
} from "./format.js";
import type { InternalIterator } from "./iterator.js";
import type { Bytes, Entry, IteratorOptions, KvCursor, KvIterator, RangeOptions } from "./types.js";
import { getFixed64 } from "./coding.js";

/** Newest visible version of each user key at `seq`. Keys returned are user keys. */
export class UserIterator {
  private forward = true;
  private isValid = false;
  private savedKey: Uint8Array = new Uint8Array(0);
  private savedValue: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly iter: InternalIterator,
    private readonly seq: number,
  ) {}

  valid(): boolean {
    return this.isValid;
  }

  key(): Uint8Array {
    if (this.forward) {
      const k = this.iter.key();
      return k.subarray(0, k.length - TRAILER_SIZE);
    }
    return this.savedKey;
  }

  value(): Uint8Array {
    return this.forward ? this.iter.value() : this.savedValue;
  }

  seekToFirst(): void {
    this.forward = true;
    this.iter.seekToFirst();
    if (this.iter.valid()) this.findNextUserEntry(false);
    else this.isValid = false;
  }

  seekToLast(): void {
    this.forward = false;
    this.iter.seekToLast();
    this.findPrevUserEntry();
  }

  seek(target: Uint8Array): void {
    this.forward = true;
    this.iter.seek(makeInternalKey(target, this.seq, KIND_FOR_SEEK));
    if (this.iter.valid()) this.findNextUserEntry(false);
    else this.isValid = false;
  }

  seekForPrev(target: Uint8Array): void {
    this.forward = false;
    // The smallest internal key for `target`: every version of it sorts at or before this.
    this.iter.seekForPrev(makeInternalKey(target, 0, KIND_DELETE));
    this.findPrevUserEntry();
  }

  next(): void {
    if (!this.forward) {
      this.forward = true;
      // The inner iterator sits just before the entries of savedKey; step into them, then skip them.
      if (!this.iter.valid()) this.iter.seekToFirst();
      else this.iter.next();
      if (!this.iter.valid()) {
        this.isValid = false;
        return;
      }
    } else {
      const k = this.iter.key();
      this.savedKey = k.slice(0, k.length - TRAILER_SIZE);
      this.iter.next();
      if (!this.iter.valid()) {
        this.isValid = false;
        return;
      }
    }
    this.findNextUserEntry(true);
  }

  prev(): void {
    if (this.forward) {
      // Step back until the user key changes, so the reverse scan starts before the current key.
      const k = this.iter.key();
      this.savedKey = k.slice(0, k.length - TRAILER_SIZE);
      for (;;) {
        this.iter.prev();
        if (!this.iter.valid()) {
          this.isValid = false;
          return;
        }
        const p = this.iter.key();
        if (compareRange(p, 0, p.length - TRAILER_SIZE, this.savedKey, 0, this.savedKey.length) < 0) break;
      }
      this.forward = false;
    }
    this.findPrevUserEntry();
  }

  /** Skips to the first visible entry; with `skipping`, entries of user keys <= savedKey are hidden. */
  private findNextUserEntry(skipping: boolean): void {
    const iter = this.iter;
    do {
      const k = iter.key();
      const ulen = k.length - TRAILER_SIZE;
      const trailer = getFixed64(k, ulen);
      if (Math.floor(trailer / 256) <= this.seq) {
        if (trailer % 256 === KIND_DELETE) {
          this.savedKey = k.slice(0, ulen);
          skipping = true;
        } else if (!skipping || compareRange(k, 0, ulen, this.savedKey, 0, this.savedKey.length) > 0) {
          this.isValid = true;
          return;
        }
      }
      iter.next();
    } while (iter.valid());
    this.isValid = false;
  }

  private findPrevUserEntry(): void {
    const iter = this.iter;
    let kind = KIND_DELETE;
    while (iter.valid()) {
      const k = iter.key();
      const ulen = k.length - TRAILER_SIZE;
      const trailer = getFixed64(k, ulen);
      if (Math.floor(trailer / 256) <= this.seq) {
        if (kind !== KIND_DELETE && compareRange(k, 0, ulen, this.savedKey, 0, this.savedKey.length) < 0) break;
        kind = trailer % 256;
        if (kind === KIND_DELETE) {
          this.savedKey = new Uint8Array(0);
          this.savedValue = new Uint8Array(0);
        } else {
          this.savedKey = k.slice(0, ulen);
          this.savedValue = iter.value().slice();
        }
      }
      iter.prev();
    }
    if (kind === KIND_DELETE) {
      this.isValid = false;
      this.forward = true;
    } else {
      this.isValid = true;
    }
  }
}

/** Normalized bounds: [lower, upper] with per-side inclusiveness. */
export interface Bounds {
  lower: Uint8Array | undefined;
  lowerInclusive: boolean;
  upper: Uint8Array | undefined;
  upperInclusive: boolean;
}

/** The smallest key greater than every key starting with `prefix`, or undefined if none exists. */
export function prefixSuccessor(prefix: Uint8Array): Uint8Array | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i] !== 0xff) {
      // A copy: on a Buffer, slice() is a view, and the increment would change the caller's prefix.
      const out = new Uint8Array(prefix.subarray(0, i + 1));
      out[i]!++;
      return out;
    }
  }
  return undefined;
}

export function normalizeBounds(o: RangeOptions): Bounds {
  const b: Bounds = { lower: undefined, lowerInclusive: true, upper: undefined, upperInclusive: false };
  const tighterLower = (k: Uint8Array, inclusive: boolean): void => {
    const c = b.lower === undefined ? 1 : compareBytes(k, b.lower);
    if (c > 0 || (c === 0 && !inclusive)) {
      b.lower = k;
      b.lowerInclusive = inclusive;
    }
  };
  const tighterUpper = (k: Uint8Array, inclusive: boolean): void => {
    const c = b.upper === undefined ? -1 : compareBytes(k, b.upper);
    if (c < 0 || (c === 0 && !inclusive)) {
      b.upper = k;
      b.upperInclusive = inclusive;
    }
  };
  if (o.gte !== undefined) tighterLower(toBytes(o.gte, "gte"), true);
  if (o.gt !== undefined) tighterLower(toBytes(o.gt, "gt"), false);
  if (o.lte !== undefined) tighterUpper(toBytes(o.lte, "lte"), true);
  if (o.lt !== undefined) tighterUpper(toBytes(o.lt, "lt"), false);
  if (o.prefix !== undefined) {
    const p = toBytes(o.prefix, "prefix");
    tighterLower(p, true);
    const succ = prefixSuccessor(p);
    if (succ !== undefined) tighterUpper(succ, false);
  }
  return b;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u);
}

/** A cursor confined to bounds. `release` is called once on close. */
export class BoundedCursor implements KvCursor {
  private inBounds = false;
  private closed = false;

  constructor(
    private readonly it: UserIterator,
    private readonly bounds: Bounds,
    private readonly release: () => void,
  ) {}

  valid(): boolean {
    return this.inBounds;
  }

  seekToFirst(): void {
    this.check();
    const b = this.bounds;
    if (b.lower === undefined) this.it.seekToFirst();
    else {
      this.it.seek(b.lower);
      if (!b.lowerInclusive && this.it.valid() && compareBytes(this.it.key(), b.lower) === 0) this.it.next();
    }
    this.update();
  }

  seekToLast(): void {
    this.check();
    const b = this.bounds;
    if (b.upper === undefined) this.it.seekToLast();
    else {
      this.it.seekForPrev(b.upper);
      if (!b.upperInclusive && this.it.valid() && compareBytes(this.it.key(), b.upper) === 0) this.it.prev();
    }
    this.update();
  }

  seek(target: Bytes): void {
    this.check();
    const t = toBytes(target, "target");
    const b = this.bounds;
    if (b.lower !== undefined && compareBytes(t, b.lower) <= 0) return this.seekToFirst();
    this.it.seek(t);
    this.update();
  }

  seekForPrev(target: Bytes): void {
    this.check();
    const t = toBytes(target, "target");
    const b = this.bounds;
    if (b.upper !== undefined && compareBytes(t, b.upper) >= 0) return this.seekToLast();
    this.it.seekForPrev(t);
    this.update();
  }

  next(): void {
    this.check();
    this.mustBeValid();
    this.it.next();
    this.update();
  }

  prev(): void {
    this.check();
    this.mustBeValid();
    this.it.prev();
    this.update();
  }

  key(): Buffer {
    this.mustBeValid();
    return toBuffer(this.it.key());
  }

  value(): Buffer {
    this.mustBeValid();
    return toBuffer(this.it.value());
  }

  /** The current key without a copy (valid until the next move). */
  rawKey(): Uint8Array {
    return this.it.key();
  }

  rawValue(): Uint8Array {
    return this.it.value();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inBounds = false;
    this.release();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private check(): void {
    if (this.closed) throw new StowageError("STOWAGE_KV_ITERATOR_CLOSED", "iterator is closed");
  }

  private mustBeValid(): void {
    if (!this.inBounds) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "cursor is not positioned on an entry");
  }

  private update(): void {
    if (!this.it.valid()) {
      this.inBounds = false;
      return;
    }
    const k = this.it.key();
    const b = this.bounds;
    if (b.lower !== undefined) {
      const c = compareBytes(k, b.lower);
      if (c < 0 || (c === 0 && !b.lowerInclusive)) {
        this.inBounds = false;
        return;
      }
    }
    if (b.upper !== undefined) {
      const c = compareBytes(k, b.upper);
      if (c > 0 || (c === 0 && !b.upperInclusive)) {
        this.inBounds = false;
        return;
      }
    }
    this.inBounds = true;
  }
}

/** abstract-level-style iteration over a bounded cursor. */
export class EntryIterator implements KvIterator {
  private started = false;
  /** True when the cursor already sits on the entry the next call should yield. */
  private pending = false;
  private remaining: number;
  private readonly reverse: boolean;

  constructor(
    private readonly cursor: BoundedCursor,
    options: IteratorOptions,
  ) {
    this.reverse = options.reverse === true;
    const limit = options.limit ?? -1;
    this.remaining = limit < 0 || !Number.isFinite(limit) ? Infinity : Math.floor(limit);
  }

  nextSync(): Entry | undefined {
    if (this.cursor.isClosed) return undefined;
    if (this.remaining <= 0) {
      this.cursor.close();
      return undefined;
    }
    if (!this.started) {
      this.started = true;
      if (this.reverse) this.cursor.seekToLast();
      else this.cursor.seekToFirst();
    } else if (!this.pending) {
      if (!this.cursor.valid()) return undefined;
      if (this.reverse) this.cursor.prev();
      else this.cursor.next();
    }
    this.pending = false;
    if (!this.cursor.valid()) {
      this.cursor.close();
      return undefined;
    }
    this.remaining--;
    return [this.cursor.key(), this.cursor.value()];
  }

  async next(): Promise<Entry | undefined> {
    return this.nextSync();
  }

  async nextv(size: number): Promise<Entry[]> {
    const out: Entry[] = [];
    while (out.length < size) {
      const e = this.nextSync();
      if (e === undefined) break;
      out.push(e);
    }
    return out;
  }

  async all(): Promise<Entry[]> {
    const out: Entry[] = [];
    try {
      for (let e = this.nextSync(); e !== undefined; e = this.nextSync()) out.push(e);
    } finally {
      this.cursor.close();
    }
    return out;
  }

  seek(target: Bytes): void {
    this.started = true;
    this.pending = true;
    if (this.reverse) this.cursor.seekForPrev(target);
    else this.cursor.seek(target);
  }

  async close(): Promise<void> {
    this.cursor.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Entry> {
    try {
      for (let e = this.nextSync(); e !== undefined; e = this.nextSync()) yield e;
    } finally {
      this.cursor.close();
    }
  }

  *[Symbol.iterator](): Iterator<Entry> {
    try {
      for (let e = this.nextSync(); e !== undefined; e = this.nextSync()) yield e;
    } finally {
      this.cursor.close();
    }
  }
}
