/**
 * Write batches: the unit of atomicity, and the payload of one write-ahead-log record.
 *
 * Encoding: fixed64 first sequence, fixed32 operation count, then per operation a kind byte
 * (format.ts), varint key length, key, and for puts varint value length and value. Operation i
 * gets sequence (first + i). Several batches of one group commit are concatenated into one record.
 */
import { StowageError, corruption } from "../errors.js";
import { ByteWriter, getVarint, putFixed32, putFixed64, getFixed32, getFixed64 } from "./coding.js";
import { KIND_DELETE, KIND_VALUE } from "./format.js";
import type { Bytes } from "./types.js";

export const BATCH_HEADER_SIZE = 12;

export function toBytes(b: Bytes, what: string): Uint8Array {
  if (typeof b === "string") return Buffer.from(b, "utf8");
  if (b instanceof Uint8Array) return b;
  throw new StowageError("STOWAGE_INVALID_ARGUMENT", `${what} must be a string or Uint8Array`);
}

export class WriteBatch {
  /** Header space is reserved at the front so a lone batch is written without copying. */
  readonly data = new ByteWriter(256);
  count = 0;

  constructor() {
    this.data.len = BATCH_HEADER_SIZE;
  }

  put(key: Bytes, value: Bytes): this {
    const k = toBytes(key, "key");
    const v = toBytes(value, "value");
    const w = this.data;
    w.ensure(k.length + v.length + 21);
    w.buf[w.len++] = KIND_VALUE;
    w.varint(k.length);
    w.bytes(k);
    w.varint(v.length);
    w.bytes(v);
    this.count++;
    return this;
  }

  del(key: Bytes): this {
    const k = toBytes(key, "key");
    const w = this.data;
    w.ensure(k.length + 11);
    w.buf[w.len++] = KIND_DELETE;
    w.varint(k.length);
    w.bytes(k);
    this.count++;
    return this;
  }

  clear(): void {
    this.data.len = BATCH_HEADER_SIZE;
    this.count = 0;
  }

  /** Bytes of operations (excluding the header). */
  get byteLength(): number {
    return this.data.len - BATCH_HEADER_SIZE;
  }
}

/** Builds the record for a group of batches starting at sequence `seq`. */
export function encodeGroup(batches: WriteBatch[], seq: number): { record: Uint8Array; count: number } {
  let count = 0;
  for (const b of batches) count += b.count;
  let record: Uint8Array;
  if (batches.length === 1) {
    record = batches[0]!.data.view();
  } else {
    let len = BATCH_HEADER_SIZE;
    for (const b of batches) len += b.byteLength;
    record = new Uint8Array(len);
    let o = BATCH_HEADER_SIZE;
    for (const b of batches) {
      record.set(b.data.buf.subarray(BATCH_HEADER_SIZE, b.data.len), o);
      o += b.byteLength;
    }
  }
  putFixed64(record, 0, seq);
  putFixed32(record, 8, count);
  return { record, count };
}

export interface BatchVisitor {
  (seq: number, kind: number, key: Uint8Array, value: Uint8Array): void;
}

const EMPTY = new Uint8Array(0);

/**
 * Decodes a record, calling `visit` per operation with subarrays of `record` (no copies).
 * Returns the first sequence and the count. Throws corruption (naming `file` and `offset`) on
 * malformed contents.
 */
export function decodeBatch(
  record: Uint8Array,
  file: string,
  offset: number,
  visit: BatchVisitor,
): { seq: number; count: number } {
  if (record.length < BATCH_HEADER_SIZE) throw corruption(file, offset, "write batch shorter than its header");
  const seq = getFixed64(record, 0);
  const count = getFixed32(record, 8);
  const tmp = [0, 0];
  let p = BATCH_HEADER_SIZE;
  const end = record.length;
  for (let i = 0; i < count; i++) {
    if (p >= end) throw corruption(file, offset, `write batch has ${i} of ${count} operations`);
    const kind = record[p++]!;
    getVarint(record, p, end, tmp);
    if (tmp[1]! < 0 || tmp[1]! + tmp[0]! > end) throw corruption(file, offset, "bad key length in write batch");
    const key = record.subarray(tmp[1]!, tmp[1]! + tmp[0]!);
    p = tmp[1]! + tmp[0]!;
    if (kind === KIND_VALUE) {
      getVarint(record, p, end, tmp);
      if (tmp[1]! < 0 || tmp[1]! + tmp[0]! > end) throw corruption(file, offset, "bad value length in write batch");
      const value = record.subarray(tmp[1]!, tmp[1]! + tmp[0]!);
      p = tmp[1]! + tmp[0]!;
      visit(seq + i, kind, key, value);
    } else if (kind === KIND_DELETE) {
      visit(seq + i, kind, key, EMPTY);
    } else {
      throw corruption(file, offset, `unknown operation kind ${kind} in write batch`);
    }
  }
  if (p !== end) throw corruption(file, offset, "trailing bytes in write batch");
  return { seq, count };
}
