/**
 * The memtable: a skip list of internal entries, ordered by user key ascending then sequence
 * descending. It only grows; entries are never removed or changed in place, so an iterator stays
 * valid while writes go on (new entries simply may or may not be seen, and ones newer than the
 * iterator's snapshot are filtered out above).
 */
import { getFixed64 } from "./coding.js";
import { KIND_DELETE, TRAILER_SIZE, compareRange, makeInternalKey } from "./format.js";
import type { InternalIterator } from "./iterator.js";

const MAX_HEIGHT = 12;
/** A node is promoted to the next level with probability 1/4, as in LevelDB. */
const BRANCHING = 4;
/** Rough per-entry bookkeeping overhead in bytes, for memory accounting. */
const NODE_OVERHEAD = 96;

class Node {
  readonly next: (Node | null)[];
  constructor(
    readonly ikey: Uint8Array,
    readonly ulen: number,
    readonly trailer: number,
    readonly value: Uint8Array,
    height: number,
  ) {
    this.next = new Array<Node | null>(height).fill(null);
  }
}

/** Result of a memtable lookup: undefined when the key has no entry at or below the sequence. */
export type LookupResult = { deleted: true } | { deleted: false; value: Uint8Array };

export class Memtable {
  private readonly head = new Node(new Uint8Array(TRAILER_SIZE), 0, 0, new Uint8Array(0), MAX_HEIGHT);
  private height = 1;
  private bytes = 0;
  private count = 0;
  /** xorshift state for level choice: deterministic and allocation-free. */
  private rnd = 0x2545f491;
  private readonly prev: (Node | null)[] = new Array<Node | null>(MAX_HEIGHT).fill(null);

  /** Bytes of keys, values and node overhead held. */
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

  /**
   * Adds an entry. `value` is kept by reference (the caller hands over ownership); the key is
   * copied into a new internal key.
   */
  add(seq: number, kind: number, userKey: Uint8Array, value: Uint8Array): void {
    const ikey = makeInternalKey(userKey, seq, kind);
    const ulen = userKey.length;
    const trailer = seq * 256 + kind;
    // Find the predecessors at every level.
    let x = this.head;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = x.next[level]!;
        if (n === null || compareNode(n, ikey, ulen, trailer) >= 0) break;
        x = n;
      }
      this.prev[level] = x;
    }
    const h = this.randomHeight();
    if (h > this.height) {
      for (let level = this.height; level < h; level++) this.prev[level] = this.head;
      this.height = h;
    }
    const node = new Node(ikey, ulen, trailer, value, h);
    for (let level = 0; level < h; level++) {
      const p = this.prev[level]!;
      node.next[level] = p.next[level]!;
      p.next[level] = node;
    }
    this.bytes += ikey.length + value.length + NODE_OVERHEAD;
    this.count++;
  }

  /** The first node whose internal key is >= (key[0, ulen), trailer); null if none. */
  findGreaterOrEqual(key: Uint8Array, ulen: number, trailer: number): Node | null {
    let x = this.head;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = x.next[level]!;
        if (n === null || compareNode(n, key, ulen, trailer) >= 0) break;
        x = n;
      }
    }
    return x.next[0]!;
  }

  /** The last node whose internal key is < (key, trailer); the head if none. */
  findLessThan(key: Uint8Array, ulen: number, trailer: number): Node {
    let x = this.head;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = x.next[level]!;
        if (n === null || compareNode(n, key, ulen, trailer) >= 0) break;
        x = n;
      }
    }
    return x;
  }

  findLast(): Node {
    let x = this.head;
    for (let level = this.height - 1; level >= 0; level--) {
      for (;;) {
        const n = x.next[level]!;
        if (n === null) break;
        x = n;
      }
    }
    return x;
  }

  isHead(n: Node): boolean {
    return n === this.head;
  }

  /** The newest entry for `userKey` with sequence <= `seq`. */
  get(userKey: Uint8Array, seq: number): LookupResult | undefined {
    const n = this.findGreaterOrEqual(userKey, userKey.length, seq * 256 + 255);
    if (n === null || compareRange(n.ikey, 0, n.ulen, userKey, 0, userKey.length) !== 0) return undefined;
    if (n.trailer % 256 === KIND_DELETE) return { deleted: true };
    return { deleted: false, value: n.value };
  }

  iterator(): InternalIterator {
    return new MemtableIterator(this);
  }
}

/** Compares a node's internal key with (key[0, ulen), trailer). */
function compareNode(n: Node, key: Uint8Array, ulen: number, trailer: number): number {
  const c = compareRange(n.ikey, 0, n.ulen, key, 0, ulen);
  if (c !== 0) return c;
  return n.trailer > trailer ? -1 : n.trailer < trailer ? 1 : 0;
}

class MemtableIterator implements InternalIterator {
  private node: Node | null = null;

  constructor(private readonly mem: Memtable) {}

  valid(): boolean {
    return this.node !== null;
  }
  seekToFirst(): void {
    this.node = this.mem.findGreaterOrEqual(new Uint8Array(0), 0, Number.MAX_SAFE_INTEGER);
  }
  seekToLast(): void {
    const n = this.mem.findLast();
    this.node = this.mem.isHead(n) ? null : n;
  }
  seek(target: Uint8Array): void {
    const ulen = target.length - TRAILER_SIZE;
    this.node = this.mem.findGreaterOrEqual(target, ulen, getFixed64(target, ulen));
  }
  seekForPrev(target: Uint8Array): void {
    this.seek(target);
    if (this.node !== null && compareNodeIkey(this.node, target) === 0) return;
    if (this.node === null) this.seekToLast();
    else this.prev();
  }
  next(): void {
    this.node = this.node!.next[0]!;
  }
  prev(): void {
    const n = this.node!;
    const p = this.mem.findLessThan(n.ikey, n.ulen, n.trailer);
    this.node = this.mem.isHead(p) ? null : p;
  }
  key(): Uint8Array {
    return this.node!.ikey;
  }
  value(): Uint8Array {
    return this.node!.value;
  }
}

function compareNodeIkey(n: Node, ikey: Uint8Array): number {
  const ulen = ikey.length - TRAILER_SIZE;
  return compareNode(n, ikey, ulen, getFixed64(ikey, ulen));
}
