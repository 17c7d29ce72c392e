/**
 * Byte encodings shared by every persisted kv format: little-endian fixed-width integers,
 * LEB128 varints and CRC-32. Numbers up to 2^53 are carried in 64-bit fields.
 */
import { crc32 as zlibCrc32 } from "node:zlib";

const TWO_32 = 0x1_0000_0000;

/** CRC-32 (IEEE), computed natively by zlib. `init` continues a running checksum. */
export function crc32(data: Uint8Array, init = 0): number {
  return zlibCrc32(data, init) >>> 0;
}

export function putFixed32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
  buf[off + 2] = (v >>> 16) & 0xff;
  buf[off + 3] = (v >>> 24) & 0xff;
}

export function getFixed32(buf: Uint8Array, off: number): number {
  return (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16)) + buf[off + 3]! * 0x1000000;
}

/** Writes a non-negative integer below 2^53 as a little-endian 64-bit value. */
export function putFixed64(buf: Uint8Array, off: number, v: number): void {
  const lo = v % TWO_32;
  putFixed32(buf, off, lo);
  putFixed32(buf, off + 4, (v - lo) / TWO_32);
}

export function getFixed64(buf: Uint8Array, off: number): number {
  return getFixed32(buf, off) + getFixed32(buf, off + 4) * TWO_32;
}

/** Bytes needed for `v` as a varint. */
export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Writes `v` (0 <= v < 2^53) as an LEB128 varint; returns the offset after it. */
export function putVarint(buf: Uint8Array, off: number, v: number): number {
  if (v < 0x80) {
    buf[off] = v;
    return off + 1;
  }
  while (v >= 0x80) {
    buf[off++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[off++] = v;
  return off;
}

/**
 * Decodes the varint at `off`. The value goes in `out[0]`, the offset after it in `out[1]`;
 * on truncated or overlong input `out[1]` is -1. (An out-parameter keeps the hot path allocation-free.)
 */
export function getVarint(buf: Uint8Array, off: number, end: number, out: number[]): void {
  let b = off < end ? buf[off]! : -1;
  if (b >= 0 && b < 0x80) {
    out[0] = b;
    out[1] = off + 1;
    return;
  }
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (off >= end) break;
    b = buf[off++]!;
    result += (b & 0x7f) * mul;
    if (b < 0x80) {
      out[0] = result;
      out[1] = off;
      return;
    }
    mul *= 128;
  }
  out[0] = 0;
  out[1] = -1;
}

/** A growable byte buffer for building records and blocks. */
export class ByteWriter {
  buf: Uint8Array;
  len = 0;

  constructor(initial = 4096) {
    this.buf = new Uint8Array(initial);
  }

  ensure(extra: number): void {
    const need = this.len + extra;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  byte(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v;
  }

  varint(v: number): void {
    this.ensure(10);
    this.len = putVarint(this.buf, this.len, v);
  }

  fixed32(v: number): void {
    this.ensure(4);
    putFixed32(this.buf, this.len, v);
    this.len += 4;
  }

  fixed64(v: number): void {
    this.ensure(8);
    putFixed64(this.buf, this.len, v);
    this.len += 8;
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** A varint length followed by the bytes. */
  lengthPrefixed(b: Uint8Array): void {
    this.varint(b.length);
    this.bytes(b);
  }

  /** A view of what was written (shares memory with the writer until the next write). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }

  /** A copy of what was written. */
  take(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  reset(): void {
    this.len = 0;
  }
}

/** A cursor over bytes that throws a corruption error (via `fail`) on malformed input. */
export class ByteReader {
  off: number;
  private readonly tmp = [0, 0];

  constructor(
    readonly buf: Uint8Array,
    readonly fail: (offset: number, what: string) => Error,
    off = 0,
    readonly end = buf.length,
  ) {
    this.off = off;
  }

  get done(): boolean {
    return this.off >= this.end;
  }

  byte(): number {
    if (this.off >= this.end) throw this.fail(this.off, "unexpected end of record");
    return this.buf[this.off++]!;
  }

  varint(): number {
    getVarint(this.buf, this.off, this.end, this.tmp);
    if (this.tmp[1]! < 0) throw this.fail(this.off, "bad varint");
    this.off = this.tmp[1]!;
    return this.tmp[0]!;
  }

  fixed32(): number {
    if (this.off + 4 > this.end) throw this.fail(this.off, "unexpected end of record");
    const v = getFixed32(this.buf, this.off);
    this.off += 4;
    return v;
  }

  fixed64(): number {
    if (this.off + 8 > this.end) throw this.fail(this.off, "unexpected end of record");
    const v = getFixed64(this.buf, this.off);
    this.off += 8;
    return v;
  }

  bytes(n: number): Uint8Array {
    if (n < 0 || this.off + n > this.end) throw this.fail(this.off, "length exceeds record");
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }

  lengthPrefixed(): Uint8Array {
    return this.bytes(this.varint());
  }
}
