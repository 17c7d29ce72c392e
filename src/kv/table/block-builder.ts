/**
 * Builds LevelDB-style blocks (see block.ts for the reader and the byte format):
 *
 *   entry*  restart[0..n) as fixed32  n as fixed32
 *   entry = varint shared | varint unshared | varint valueLength | key[shared..] | value
 *
 * Each key is prefix-compressed against the previous one, except at restart points (every
 * `restartInterval` entries, the first entry included) where the full key is stored. Keys must be
 * added in increasing order; the table builder checks that.
 */
import { ByteWriter } from "../coding.js";

export class BlockBuilder {
  private readonly out: ByteWriter;
  private restarts: number[] = [0];
  private counter = 0;
  private last = new Uint8Array(64);
  private lastLen = 0;
  private entries = 0;
  private finished = false;

  constructor(
    readonly restartInterval = 16,
    initialCapacity = 4096,
  ) {
    if (!Number.isInteger(restartInterval) || restartInterval < 1) {
      throw new RangeError(`restartInterval must be a positive integer, got ${restartInterval}`);
    }
    this.out = new ByteWriter(initialCapacity);
  }

  get empty(): boolean {
    return this.entries === 0;
  }

  get numEntries(): number {
    return this.entries;
  }

  /** The size the block would have if finished now. */
  get sizeEstimate(): number {
    return this.out.len + this.restarts.length * 4 + 4;
  }

  /** Appends an entry; `key` must sort after the previous key. The bytes are copied. */
  add(key: Uint8Array, value: Uint8Array): void {
    if (this.finished) throw new Error("BlockBuilder.add after finish");
    let shared = 0;
    if (this.counter < this.restartInterval) {
      const last = this.last;
      const n = this.lastLen < key.length ? this.lastLen : key.length;
      while (shared < n && last[shared] === key[shared]) shared++;
    } else {
      this.restarts.push(this.out.len);
      this.counter = 0;
    }
    const unshared = key.length - shared;
    const out = this.out;
    out.ensure(30 + unshared + value.length);
    const buf = out.buf;
    let p = out.len;
    if (shared < 0x80 && unshared < 0x80 && value.length < 0x80) {
      buf[p++] = shared;
      buf[p++] = unshared;
      buf[p++] = value.length;
      out.len = p;
    } else {
      out.varint(shared);
      out.varint(unshared);
      out.varint(value.length);
    }
    out.bytes(shared === 0 ? key : key.subarray(shared));
    out.bytes(value);

    if (this.last.length < key.length) {
      const grown = new Uint8Array(Math.max(key.length, this.last.length * 2));
      grown.set(this.last.subarray(0, shared));
      this.last = grown;
    }
    for (let i = shared; i < key.length; i++) this.last[i] = key[i]!;
    this.lastLen = key.length;
    this.counter++;
    this.entries++;
  }

  /**
   * Appends the restart array and returns the block bytes. The view shares memory with the
   * builder: copy or write it out before `reset`.
   */
  finish(): Uint8Array {
    if (!this.finished) {
      for (const r of this.restarts) this.out.fixed32(r);
      this.out.fixed32(this.restarts.length);
      this.finished = true;
    }
    return this.out.view();
  }

  /** Starts a new, empty block (reusing the buffers). */
  reset(): void {
    this.out.reset();
    this.restarts = [0];
    this.counter = 0;
    this.lastLen = 0;
    this.entries = 0;
    this.finished = false;
  }
}
