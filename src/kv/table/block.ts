/**
 * Reads LevelDB-style blocks (written by block-builder.ts). Byte format:
 *
 *   entry*                      entries, keys in increasing internal-key order
 *   restart[i]  fixed32 × n     offset of each restart entry (restart[0] = 0, increasing)
 *   n           fixed32         restart count (>= 1, also for an empty block)
 *   entry = varint shared | varint unshared | varint valueLength | key[shared..shared+unshared) | value
 *
 * `shared` is the length of the prefix taken from the previous key; it is 0 at restart points, so
 * a seek binary-searches the restart keys in place (no copy) and then scans forward. `prev` goes
 * back to the previous restart point and scans forward (as LevelDB does).
 *
 * Any malformed structure throws `corruption(file, blockOffset + innerOffset, ...)`.
 */
import { getFixed32, getVarint } from "../coding.js";
import { corruption } from "../../errors.js";
import type { InternalIterator } from "../iterator.js";
import { TRAILER_SIZE, compareInternalRange } from "../format.js";

export { compareInternalRange };

/** Common user-key prefix length found by the last `compareFrom` call. */
let lcpOut = 0;

/**
 * compareInternalRange(a[aStart, aStart + aLen), t) for a caller that knows the first `from`
 * user-key bytes of both are equal; leaves their common user-key prefix length in `lcpOut`.
 * (Seeks use it to skip prefixes already matched by earlier comparisons.)
 */
function compareFrom(a: Uint8Array, aStart: number, aLen: number, t: Uint8Array, from: number): number {
  const aUser = aLen - TRAILER_SIZE;
  const tUser = t.length - TRAILER_SIZE;
  const n = aUser < tUser ? aUser : tUser;
  let i = from < n ? from : n;
  while (i < n && a[aStart + i] === t[i]) i++;
  lcpOut = i;
  if (i < n) return a[aStart + i] - t[i];
  if (aUser !== tUser) return aUser - tUser;
  const ab = aStart + aUser;
  for (let j = TRAILER_SIZE - 1; j >= 0; j--) {
    const d = t[tUser + j] - a[ab + j];
    if (d !== 0) return d;
  }
  return 0;
}

/** A parsed, immutable block. Cheap to construct: only the restart array is validated. */
export class Block {
  /** Offset where the entries end and the restart array begins. */
  readonly restartsOffset: number;
  readonly numRestarts: number;

  /**
   * @param data the block contents (without the trailer); kept, not copied
   * @param file path of the file, for error messages
   * @param offset offset of the block in the file, for error messages
   * @param fileNumber the owning table's number (lets a block cache check the identity of a hit)
   */
  constructor(
    readonly data: Uint8Array,
    readonly file: string,
    readonly offset: number,
    readonly fileNumber = -1,
  ) {
    const len = data.length;
    if (len < 4) throw corruption(file, offset, `block of ${len} bytes is too short`);
    const n = getFixed32(data, len - 4);
    if (n < 1 || n > (len - 4) / 4) {
      throw corruption(file, offset + len - 4, `bad block restart count ${n} for a block of ${len} bytes`);
    }
    const limit = len - 4 - 4 * n;
    this.restartsOffset = limit;
    this.numRestarts = n;
    let prev = -1;
    for (let i = 0; i < n; i++) {
      const r = getFixed32(data, limit + 4 * i);
      const ok = i === 0 ? r === 0 : r > prev && r < limit;
      if (!ok) throw corruption(file, offset + limit + 4 * i, `bad block restart point ${i}: ${r}`);
      prev = r;
    }
  }

  /** Bytes of block contents (the block cache charge). */
  get byteLength(): number {
    return this.data.length;
  }

  iterator(): BlockIterator {
    return new BlockIterator(this);
  }
}

const EMPTY = new Uint8Array(0);
/** Key lengths below this get one reusable buffer each per iterator. */
const KEY_BUFFER_SLOTS = 256;

/**
 * Iterates one block. `key()` returns a buffer owned by the iterator that is overwritten by later
 * moves (buffers are reused per key length, so keys of a fixed size cost no allocation): copy it
 * to keep it. `value()` is a view into the block and stays valid.
 *
 * The iterator can be re-pointed at another block with `reset`, keeping its buffers.
 */
export class BlockIterator implements InternalIterator {
  private block!: Block;
  private data: Uint8Array = EMPTY;
  private limit = 0;
  private numRestarts = 0;
  /** Offset of the current entry; equals `limit` when not valid. */
  private cur = 0;
  /** Offset just past the current entry. */
  private nextOff = 0;
  /** The restart region holding `cur` (restart[restartIdx] <= cur). */
  private restartIdx = 0;
  /** Offset of the restart point after `restartIdx` (Infinity for the last). */
  private nextRestart = Infinity;
  /** The current key, exactly `klen` bytes long (or stale when klen is 0 after a restart jump). */
  private kbuf: Uint8Array = EMPTY;
  private klen = 0;
  /** Bytes the current key shares with the previous one (its entry's `shared` field). */
  private shared = 0;
  private readonly kbufs: (Uint8Array | undefined)[] = [];
  private vview: Uint8Array | undefined;
  private readonly tmp = [0, 0];
  /** Where the current value starts in `blockData` (read-only outside this class). */
  valueOffset = 0;
  /** Length of the current value. */
  valueLength = 0;

  constructor(block?: Block) {
    if (block !== undefined) this.reset(block);
  }

  /** Points the iterator at `block`, unpositioned. */
  reset(block: Block): void {
    this.block = block;
    this.data = block.data;
    this.limit = block.restartsOffset;
    this.numRestarts = block.numRestarts;
    this.markInvalid();
  }

  /** The contents of the block being iterated (the value lives at valueOffset). */
  get blockData(): Uint8Array {
    return this.data;
  }

  valid(): boolean {
    return this.cur < this.limit;
  }

  key(): Uint8Array {
    return this.kbuf;
  }

  value(): Uint8Array {
    let v = this.vview;
    if (v === undefined) {
      v = this.data.subarray(this.valueOffset, this.valueOffset + this.valueLength);
      this.vview = v;
    }
    return v;
  }

  /** Compares the current key with `target` (internal-key order), without allocating. */
  compareKey(target: Uint8Array): number {
    return compareInternalRange(this.kbuf, 0, this.klen, target, 0, target.length);
  }

  seekToFirst(): void {
    this.seekToRestart(0);
    this.parseAt(this.nextOff);
  }

  seekToLast(): void {
    this.seekToRestart(this.numRestarts - 1);
    if (!this.parseAt(this.nextOff)) return;
    while (this.nextOff < this.limit) this.parseAt(this.nextOff);
  }

  seek(target: Uint8Array): void {
    const data = this.data;
    // Find the last restart point whose key is < target. Every key between the bounds found so
    // far shares min(lcpLo, lcpHi) user-key bytes with target, so comparisons start there.
    let left = 0;
    let right = this.numRestarts - 1;
    let lcpLo = 0;
    let lcpHi = 0;
    while (left < right) {
      const mid = (left + right + 1) >>> 1;
      const start = this.restartKey(mid);
      if (compareFrom(data, start, this.klen, target, lcpLo < lcpHi ? lcpLo : lcpHi) < 0) {
        left = mid;
        lcpLo = lcpOut;
      } else {
        right = mid - 1;
        lcpHi = lcpOut;
      }
    }
    this.seekToRestart(left);
    // Scan forward. The next key shares `shared` bytes with the previous one, which shared
    // `matched` user-key bytes with target: both agree with target on min(shared, matched) bytes.
    let matched = lcpLo < lcpHi ? lcpLo : lcpHi; // the restart key lies between the bounds
    if (!this.parseAt(this.nextOff)) return;
    while (compareFrom(this.kbuf, 0, this.klen, target, matched) < 0) {
      matched = lcpOut;
      if (!this.parseAt(this.nextOff)) return;
      if (this.shared < matched) matched = this.shared;
    }
  }

  seekForPrev(target: Uint8Array): void {
    this.seek(target);
    if (!this.valid()) this.seekToLast();
    else if (compareInternalRange(this.kbuf, 0, this.klen, target, 0, target.length) > 0) this.prev();
  }

  next(): void {
    if (this.cur >= this.limit) return;
    this.parseAt(this.nextOff);
  }

  prev(): void {
    const original = this.cur;
    if (original >= this.limit) return;
    let ri = this.restartIdx;
    while (this.restartPoint(ri) >= original) {
      if (ri === 0) {
        this.markInvalid();
        return;
      }
      ri--;
    }
    this.seekToRestart(ri);
    do {
      if (!this.parseAt(this.nextOff)) return;
    } while (this.nextOff < original);
  }

  private markInvalid(): void {
    this.cur = this.limit;
    this.nextOff = this.limit;
    this.restartIdx = this.numRestarts;
    this.nextRestart = Infinity;
    this.klen = 0;
    this.vview = undefined;
  }

  private restartPoint(i: number): number {
    return getFixed32(this.data, this.limit + 4 * i);
  }

  private seekToRestart(i: number): void {
    this.restartIdx = i;
    this.nextRestart = i + 1 < this.numRestarts ? this.restartPoint(i + 1) : Infinity;
    this.nextOff = this.restartPoint(i);
    this.klen = 0;
  }

  /**
   * Decodes the header of restart entry `i` (shared must be 0) and returns where its key starts;
   * the key length goes in `klen`. Does not move the iterator's position (but clobbers klen,
   * which is reset by the seekToRestart that follows).
   */
  private restartKey(i: number): number {
    const p = this.restartPoint(i);
    const data = this.data;
    const limit = this.limit;
    let unshared: number;
    let vlen: number;
    let q: number;
    if (p + 3 <= limit && (data[p] | data[p + 1] | data[p + 2]) < 0x80) {
      if (data[p] !== 0) throw this.bad(p, "restart entry shares a prefix");
      unshared = data[p + 1];
      vlen = data[p + 2];
      q = p + 3;
    } else {
      const tmp = this.tmp;
      getVarint(data, p, limit, tmp);
      if (tmp[1] < 0 || tmp[0] !== 0) throw this.bad(p, "bad restart entry header");
      getVarint(data, tmp[1], limit, tmp);
      if (tmp[1] < 0) throw this.bad(p, "bad restart entry header");
      unshared = tmp[0];
      getVarint(data, tmp[1], limit, tmp);
      if (tmp[1] < 0) throw this.bad(p, "bad restart entry header");
      vlen = tmp[0];
      q = tmp[1];
    }
    if (unshared < TRAILER_SIZE || q + unshared + vlen > limit) throw this.bad(p, "restart entry overruns block");
    this.klen = unshared;
    return q;
  }

  /** Decodes the entry at `p` into the current position; false (and invalid) at the end. */
  private parseAt(p: number): boolean {
    const limit = this.limit;
    if (p >= limit) {
      this.markInvalid();
      return false;
    }
    const data = this.data;
    let shared: number;
    let unshared: number;
    let vlen: number;
    let q: number;
    if (p + 3 <= limit && (data[p] | data[p + 1] | data[p + 2]) < 0x80) {
      shared = data[p];
      unshared = data[p + 1];
      vlen = data[p + 2];
      q = p + 3;
    } else {
      const tmp = this.tmp;
      getVarint(data, p, limit, tmp);
      if (tmp[1] < 0) throw this.bad(p, "bad entry header");
      shared = tmp[0];
      getVarint(data, tmp[1], limit, tmp);
      if (tmp[1] < 0) throw this.bad(p, "bad entry header");
      unshared = tmp[0];
      getVarint(data, tmp[1], limit, tmp);
      if (tmp[1] < 0) throw this.bad(p, "bad entry header");
      vlen = tmp[0];
      q = tmp[1];
    }
    const len = shared + unshared;
    if (shared > this.klen || len < TRAILER_SIZE || q + unshared + vlen > limit) {
      throw this.bad(p, "block entry overruns block or previous key");
    }
    let kb = this.kbuf;
    if (kb.length !== len) {
      const next = this.keyBuffer(len);
      for (let i = 0; i < shared; i++) next[i] = kb[i];
      kb = next;
      this.kbuf = next;
    }
    if (unshared < 64) {
      for (let i = 0; i < unshared; i++) kb[shared + i] = data[q + i];
    } else {
      kb.set(data.subarray(q, q + unshared), shared);
    }
    this.klen = len;
    this.shared = shared;
    this.cur = p;
    this.valueOffset = q + unshared;
    this.valueLength = vlen;
    this.nextOff = q + unshared + vlen;
    this.vview = undefined;
    if (p >= this.nextRestart) {
      do {
        this.restartIdx++;
        this.nextRestart = this.restartIdx + 1 < this.numRestarts ? this.restartPoint(this.restartIdx + 1) : Infinity;
      } while (p >= this.nextRestart);
    }
    return true;
  }

  private keyBuffer(len: number): Uint8Array {
    if (len >= KEY_BUFFER_SLOTS) return new Uint8Array(len);
    let b = this.kbufs[len];
    if (b === undefined) {
      while (this.kbufs.length < len) this.kbufs.push(undefined);
      b = new Uint8Array(len);
      this.kbufs[len] = b;
    }
    return b;
  }

  /** Leaves the iterator invalid and returns the corruption error to throw. */
  private bad(innerOffset: number, what: string): Error {
    this.markInvalid();
    return corruption(this.block.file, this.block.offset + innerOffset, what);
  }
}
