/**
 * The memtable: a skip list of internal entries, ordered by user key ascending then sequence
 * descending. It only grows; entries are never removed or changed in place, so an iterator stays
 * valid while writes go on (new entries may or may not be seen; entries newer than the
 * iterator's snapshot are filtered out above).
 *
 * Layout: no object per entry. Keys and values are copied into one growable byte arena (each
 * key stored as a complete internal key, user key ++ 8-byte trailer, so iterators hand out
 * subarrays); nodes are indices into typed arrays, and each node's forward pointers live in one
 * shared Int32Array. This keeps a multi-megabyte memtable out of the garbage collector's way:
 * with one JS object per entry, every entry survives young-generation collections and is copied.
 */
import { getFixed64, putFixed64 } from "./coding.js";
import { KIND_DELETE, TRAILER_SIZE } from "./format.js";
import type { InternalIterator } from "./iterator.js";
import { bloomHash } from "./table/bloom.js";

const MAX_HEIGHT = 12;
/** A node is promoted to the next level with probability 1/4, as in LevelDB. */
const BRANCHING = 4;
const HEAD = 0;
const NIL = -1;
// Node field offsets (see Memtable.nodeArr).
const F_ULEN = 1;
const F_VLEN = 2;
const F_HEIGHT = 3;
const F_LINKS = 4;
/** Bookkeeping bytes per entry (node arrays and forward pointers), for memory accounting. */
const NODE_OVERHEAD = 40;
/** Probes of the memtable's key filter (about 1% false positives at 10 bits per key). */
const FILTER_PROBES = 6;

/** A memtable's contents in transferable form (for a flush in the background thread). */
export interface MemtableState {
  arena: Uint8Array;
  nodes: Int32Array;
  height: number;
  count: number;
  bytes: number;
}

/** Result of a memtable lookup: undefined when the key has no entry at or below the sequence. */
export type LookupResult = { deleted: true } | { deleted: false; value: Uint8Array };

export class Memtable {
  /** Bytes: internal keys and values. */
  private arena: Uint8Array;
  private arenaUsed = 0;
  /**
   * Nodes, each a run of int32s at its index: key offset in the arena, user key length, value
   * length, height, then `height` forward pointers. Keeping a node's fields and links together
   * costs one cache line per step of a search instead of one per field.
   */
  private nodeArr: Int32Array;
  private nodeUsed = 0;
  private count = 0;
  private height = 1;
  private bytes = 0;
  /** xorshift state for level choice: deterministic and allocation-free. */
  private rnd = 0x2545f491;
  private readonly prev = new Int32Array(MAX_HEIGHT);
  /**
   * A bloom filter over the user keys added, so a point read of a key the memtable does not
   * hold (most reads) costs one hash instead of a skip-list search. Sized for the expected
   * entry count; more entries only raise its false-positive rate.
   */
  private filter: Int32Array;
  private arenaView: DataView;
  /** The key being searched for, copied so it can be compared four bytes at a time. */
  private sk = new Uint8Array(256);
  private skView = new DataView(this.sk.buffer);

  constructor(expectedBytes = 1 << 20) {
    this.arena = new Uint8Array(Math.max(4096, expectedBytes));
    this.arenaView = new DataView(this.arena.buffer);
    // About 10 bits per entry of ~64 bytes, rounded up to a power of two.
    let words = 32;
    while (words * 32 < (expectedBytes / 64) * 10) words *= 2;
    this.filter = new Int32Array(words);
    this.nodeArr = new Int32Array(Math.max(1024, Math.ceil(expectedBytes / 16)));
    // The head node: no key, a pointer at every level.
    this.nodeArr[F_HEIGHT] = MAX_HEIGHT;
    this.nodeArr.fill(NIL, F_LINKS, F_LINKS + MAX_HEIGHT);
    this.nodeUsed = F_LINKS + MAX_HEIGHT;
  }

  /** A copy of the contents (the memtable must no longer change: it is immutable by then). */
  exportState(): MemtableState {
    return {
      arena: this.arena.slice(0, this.arenaUsed),
      nodes: this.nodeArr.slice(0, this.nodeUsed),
      height: this.height,
      count: this.count,
      bytes: this.bytes,
    };
  }

  static fromState(s: MemtableState): Memtable {
    // Only iterated (for a flush), never searched by key, so the filter stays empty.
    const m = new Memtable(0);
    m.arena = s.arena;
    m.arenaView = new DataView(s.arena.buffer, s.arena.byteOffset, s.arena.byteLength);
    m.arenaUsed = s.arena.length;
    m.nodeArr = s.nodes;
    m.nodeUsed = s.nodes.length;
    m.height = s.height;
    m.count = s.count;
    m.bytes = s.bytes;
    return m;
  }

  /** Bytes of keys, values and node bookkeeping held. */
  get approximateBytes(): number {
    return this.bytes;
  }

  get entries(): number {
    return this.count;
  }

  private randomHeight(): number {
    let h = 1;
    let x = this.rnd;
    while (h < MAX_HEIGHT) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      if ((x >>> 0) % BRANCHING !== 0) break;
      h++;
    }
    this.rnd = x;
    return h;
  }

  private reserveArena(n: number): number {
    if (this.arenaUsed + n > this.arena.length) {
      let cap = this.arena.length * 2;
      while (cap < this.arenaUsed + n) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.arena.subarray(0, this.arenaUsed));
      this.arena = next;
      this.arenaView = new DataView(next.buffer);
    }
    const off = this.arenaUsed;
    this.arenaUsed += n;
    return off;
  }

  /** Makes `key[0, ulen)` the search key. */
  private setSearchKey(key: Uint8Array, ulen: number): void {
    if (ulen > this.sk.length) {
      this.sk = new Uint8Array(ulen * 2);
      this.skView = new DataView(this.sk.buffer);
    }
    this.sk.set(ulen === key.length ? key : key.subarray(0, ulen));
  }

  /** Compares node `n`'s internal key with (search key[0, ulen), trailer). */
  private compareNode(n: number, ulen: number, trailer: number): number {
    const na = this.nodeArr;
    const off = na[n]!;
    const alen = na[n + F_ULEN]!;
    const m = alen < ulen ? alen : ulen;
    const av = this.arenaView;
    const kv = this.skView;
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const x = av.getUint32(off + i);
      const y = kv.getUint32(i);
      if (x !== y) return x < y ? -1 : 1;
    }
    const a = this.arena;
    const k = this.sk;
    for (; i < m; i++) {
      const d = a[off + i]! - k[i]!;
      if (d !== 0) return d;
    }
    if (alen !== ulen) return alen - ulen;
    const t = getFixed64(a, off + alen);
    return t > trailer ? -1 : t < trailer ? 1 : 0;
  }

  /**
   * Adds an entry; key and value are copied. Entries must be unique in (key, seq), which holds
   * because every operation has its own sequence number.
   */
  add(seq: number, kind: number, userKey: Uint8Array, value: Uint8Array): void {
    const ulen = userKey.length;
    const trailer = seq * 256 + kind;
    this.addToFilter(userKey);
    this.setSearchKey(userKey, ulen);
    let na = this.nodeArr;
    let x = HEAD;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = na[x + F_LINKS + level]!;
        if (n === NIL || this.compareNode(n, ulen, trailer) >= 0) break;
        x = n;
      }
      this.prev[level] = x;
    }
    const h = this.randomHeight();
    if (h > this.height) {
      for (let level = this.height; level < h; level++) this.prev[level] = HEAD;
      this.height = h;
    }
    if (this.nodeUsed + F_LINKS + h > na.length) {
      const next = new Int32Array(na.length * 2);
      next.set(na);
      this.nodeArr = na = next;
    }
    const node = this.nodeUsed;
    this.nodeUsed += F_LINKS + h;
    const koff = this.reserveArena(ulen + TRAILER_SIZE + value.length);
    const arena = this.arena;
    arena.set(userKey, koff);
    putFixed64(arena, koff + ulen, trailer);
    arena.set(value, koff + ulen + TRAILER_SIZE);
    na[node] = koff;
    na[node + F_ULEN] = ulen;
    na[node + F_VLEN] = value.length;
    na[node + F_HEIGHT] = h;
    for (let level = 0; level < h; level++) {
      const po = this.prev[level]! + F_LINKS + level;
      na[node + F_LINKS + level] = na[po]!;
      na[po] = node;
    }
    this.count++;
    this.bytes += ulen + TRAILER_SIZE + value.length + NODE_OVERHEAD;
  }

  /** The first node whose internal key is >= (key[0, ulen), trailer); NIL if none. */
  findGreaterOrEqual(key: Uint8Array, ulen: number, trailer: number): number {
    return this.nodeArr[this.findLessThan(key, ulen, trailer) + F_LINKS]!;
  }

  /** The last node whose internal key is < (key, trailer); HEAD if none. */
  findLessThan(key: Uint8Array, ulen: number, trailer: number): number {
    this.setSearchKey(key, ulen);
    const na = this.nodeArr;
    let x = HEAD;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = na[x + F_LINKS + level]!;
        if (n === NIL || this.compareNode(n, ulen, trailer) >= 0) break;
        x = n;
      }
    }
    return x;
  }

  findLast(): number {
    const na = this.nodeArr;
    let x = HEAD;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = na[x + F_LINKS + level]!;
        if (n === NIL) break;
        x = n;
      }
    }
    return x;
  }

  nextOf(n: number): number {
    return this.nodeArr[n + F_LINKS]!;
  }

  /** The node's internal key (a view into the arena; valid while the memtable lives). */
  keyOf(n: number): Uint8Array {
    const off = this.nodeArr[n]!;
    return this.arena.subarray(off, off + this.nodeArr[n + F_ULEN]! + TRAILER_SIZE);
  }

  valueOf(n: number): Uint8Array {
    const off = this.nodeArr[n]! + this.nodeArr[n + F_ULEN]! + TRAILER_SIZE;
    return this.arena.subarray(off, off + this.nodeArr[n + F_VLEN]!);
  }

  trailerOf(n: number): number {
    return getFixed64(this.arena, this.nodeArr[n]! + this.nodeArr[n + F_ULEN]!);
  }

  private addToFilter(key: Uint8Array): void {
    const f = this.filter;
    const mask = f.length * 32 - 1;
    let h = bloomHash(key);
    const delta = (h >>> 17) | (h << 15);
    for (let i = 0; i < FILTER_PROBES; i++) {
      const bit = h & mask;
      f[bit >>> 5]! |= 1 << (bit & 31);
      h = (h + delta) | 0;
    }
  }

  private mayContain(key: Uint8Array): boolean {
    const f = this.filter;
    const mask = f.length * 32 - 1;
    let h = bloomHash(key);
    const delta = (h >>> 17) | (h << 15);
    for (let i = 0; i < FILTER_PROBES; i++) {
      const bit = h & mask;
      if ((f[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
      h = (h + delta) | 0;
    }
    return true;
  }

  /** The newest entry for `userKey` with sequence <= `seq`. */
  get(userKey: Uint8Array, seq: number): LookupResult | undefined {
    if (!this.mayContain(userKey)) return undefined;
    const ulen = userKey.length;
    const n = this.findGreaterOrEqual(userKey, ulen, seq * 256 + 255);
    if (n === NIL || this.nodeArr[n + F_ULEN] !== ulen) return undefined;
    const a = this.arena;
    const off = this.nodeArr[n]!;
    for (let i = 0; i < ulen; i++) if (a[off + i] !== userKey[i]) return undefined;
    if (a[off + ulen] === KIND_DELETE) return { deleted: true };
    return { deleted: false, value: this.valueOf(n) };
  }

  iterator(): InternalIterator {
    return new MemtableIterator(this);
  }
}

class MemtableIterator implements InternalIterator {
  private node = NIL;

  constructor(private readonly mem: Memtable) {}

  valid(): boolean {
    return this.node !== NIL;
  }
  seekToFirst(): void {
    this.node = this.mem.nextOf(HEAD);
  }
  seekToLast(): void {
    const n = this.mem.findLast();
    this.node = n === HEAD ? NIL : n;
  }
  seek(target: Uint8Array): void {
    const ulen = target.length - TRAILER_SIZE;
    this.node = this.mem.findGreaterOrEqual(target, ulen, getFixed64(target, ulen));
  }
  seekForPrev(target: Uint8Array): void {
    // The last entry <= target is the one before the first entry > target.
    const ulen = target.length - TRAILER_SIZE;
    const t = getFixed64(target, ulen);
    const ge = this.mem.findGreaterOrEqual(target, ulen, t);
    if (ge !== NIL && this.mem.trailerOf(ge) === t && sameUserKey(this.mem.keyOf(ge), target, ulen)) {
      this.node = ge;
      return;
    }
    const p = this.mem.findLessThan(target, ulen, t);
    this.node = p === HEAD ? NIL : p;
  }
  next(): void {
    this.node = this.mem.nextOf(this.node);
  }
  prev(): void {
    const k = this.mem.keyOf(this.node);
    const ulen = k.length - TRAILER_SIZE;
    const p = this.mem.findLessThan(k, ulen, this.mem.trailerOf(this.node));
    this.node = p === HEAD ? NIL : p;
  }
  key(): Uint8Array {
    return this.mem.keyOf(this.node);
  }
  value(): Uint8Array {
    return this.mem.valueOf(this.node);
  }
}

function sameUserKey(ikey: Uint8Array, target: Uint8Array, ulen: number): boolean {
  if (ikey.length - TRAILER_SIZE !== ulen) return false;
  for (let i = 0; i < ulen; i++) if (ikey[i] !== target[i]) return false;
  return true;
}
