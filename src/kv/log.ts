/**
 * The log format used by the write-ahead log and the manifest (LevelDB's, see docs/FORMATS.md).
 *
 * A file is a sequence of 32 KiB blocks. A record is stored as one or more fragments, each with a
 * 7-byte header: fixed32 CRC-32 (over the type byte and the payload), fixed16 payload length, and a
 * type byte (FULL, FIRST, MIDDLE, LAST). A fragment never crosses a block boundary; a block tail
 * shorter than a header is zero-filled. Because blocks restart at known offsets, a reader can
 * step over a damaged region and tell a torn tail (nothing valid after the damage) from
 * corruption in the middle (valid records follow).
 */
import { crc32, putFixed32 } from "./coding.js";
import type { WritableFile } from "./fs.js";

export const LOG_BLOCK_SIZE = 32768;
export const LOG_HEADER_SIZE = 7;

// Fragment types. Persisted: never renumber.
const ZERO = 0;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4;

const TYPE_CRC = [0, 1, 2, 3, 4].map((t) => crc32(new Uint8Array([t])));

export class LogWriter {
  private blockOffset: number;

  constructor(
    readonly file: WritableFile,
    initialSize = 0,
  ) {
    this.blockOffset = initialSize % LOG_BLOCK_SIZE;
  }

  /** Appends one record; it reaches the OS in a single write call. */
  addRecord(payload: Uint8Array): void {
    // Worst case: a header per block crossed plus block-tail padding.
    const maxOut = payload.length + LOG_HEADER_SIZE * (Math.ceil(payload.length / (LOG_BLOCK_SIZE - LOG_HEADER_SIZE)) + 2) + LOG_HEADER_SIZE;
    const out = new Uint8Array(maxOut);
    let o = 0;
    let p = 0;
    let begin = true;
    do {
      const left = LOG_BLOCK_SIZE - this.blockOffset;
      if (left < LOG_HEADER_SIZE) {
        // Zero-fill the block tail (already zero in `out`).
        o += left;
        this.blockOffset = 0;
      }
      const avail = LOG_BLOCK_SIZE - this.blockOffset - LOG_HEADER_SIZE;
      const n = Math.min(avail, payload.length - p);
      const end = p + n === payload.length;
      const type = begin && end ? FULL : begin ? FIRST : end ? LAST : MIDDLE;
      const frag = payload.subarray(p, p + n);
      putFixed32(out, o, crc32(frag, TYPE_CRC[type]));
      out[o + 4] = n & 0xff;
      out[o + 5] = n >>> 8;
      out[o + 6] = type;
      out.set(frag, o + LOG_HEADER_SIZE);
      o += LOG_HEADER_SIZE + n;
      p += n;
      this.blockOffset += LOG_HEADER_SIZE + n;
      begin = false;
    } while (p < payload.length);
    this.file.append(out.subarray(0, o));
  }

  sync(): Promise<void> {
    return this.file.sync();
  }

  close(): void {
    this.file.close();
  }
}

export interface LogRecord {
  /** Offset of the record's first fragment header. */
  offset: number;
  payload: Uint8Array;
}

export interface LogDamage {
  offset: number;
  bytes: number;
  reason: string;
}

export interface LogReadResult {
  records: LogRecord[];
  /** Damaged regions, in file order. */
  damage: LogDamage[];
  /** Where the valid data ends: after the last good record. */
  validEnd: number;
}

/**
 * Reads every intact record of a log held in memory. Damaged fragments are skipped to the next
 * block and reported; the caller decides whether damage is a torn tail (nothing valid after it)
 * or corruption.
 */
export function readLog(data: Uint8Array): LogReadResult {
  const records: LogRecord[] = [];
  const damage: LogDamage[] = [];
  let validEnd = 0;
  let pending: Uint8Array[] | null = null;
  let pendingStart = 0;
  let pos = 0;

  const report = (offset: number, bytes: number, reason: string): void => {
    const last = damage[damage.length - 1];
    if (last && last.offset + last.bytes === offset && last.reason === reason) last.bytes += bytes;
    else damage.push({ offset, bytes, reason });
  };
  const dropPending = (upTo: number, reason: string): void => {
    if (pending !== null) {
      report(pendingStart, upTo - pendingStart, reason);
      pending = null;
    }
  };

  while (pos < data.length) {
    const blockEnd = Math.min(data.length, (Math.floor(pos / LOG_BLOCK_SIZE) + 1) * LOG_BLOCK_SIZE);
    if (blockEnd - pos < LOG_HEADER_SIZE) {
      // Block trailer padding, or a header cut short at the end of the file.
      if (blockEnd === data.length && !isZero(data, pos, blockEnd)) {
        dropPending(pos, "truncated record");
        report(pos, blockEnd - pos, "truncated header");
      }
      pos = blockEnd;
      continue;
    }
    const len = data[pos + 4]! | (data[pos + 5]! << 8);
    const type = data[pos + 6]!;
    if (type === ZERO && len === 0 && isZero(data, pos, pos + LOG_HEADER_SIZE)) {
      // Zeroed space (preallocation): skip the rest of the block.
      if (!isZero(data, pos, blockEnd)) report(pos, blockEnd - pos, "garbage after zero header");
      pos = blockEnd;
      continue;
    }
    if (pos + LOG_HEADER_SIZE + len > blockEnd) {
      dropPending(pos, "record fragment lost");
      report(pos, blockEnd - pos, pos + LOG_HEADER_SIZE + len > data.length ? "truncated record" : "bad fragment length");
      pos = blockEnd;
      continue;
    }
    const frag = data.subarray(pos + LOG_HEADER_SIZE, pos + LOG_HEADER_SIZE + len);
    const stored = (data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16)) + data[pos + 3]! * 0x1000000;
    if (type > LAST || crc32(frag, TYPE_CRC[type]) !== stored) {
      // Step over this fragment only (its length fits its block, so is most likely intact): the
      // records after it in the block are read, and the damage is seen to lie mid-log. If the
      // length was the damaged part, the next header fails its own checks.
      dropPending(pos, "record fragment lost");
      report(pos, LOG_HEADER_SIZE + len, "checksum mismatch");
      pos += LOG_HEADER_SIZE + len;
      continue;
    }
    const fragStart = pos;
    pos += LOG_HEADER_SIZE + len;
    switch (type) {
      case FULL:
        dropPending(fragStart, "record fragment lost");
        records.push({ offset: fragStart, payload: frag });
        validEnd = pos;
        break;
      case FIRST:
        dropPending(fragStart, "record fragment lost");
        pending = [frag];
        pendingStart = fragStart;
        break;
      case MIDDLE:
        if (pending === null) report(fragStart, pos - fragStart, "orphan fragment");
        else pending.push(frag);
        break;
      case LAST:
        if (pending === null) report(fragStart, pos - fragStart, "orphan fragment");
        else {
          pending.push(frag);
          records.push({ offset: pendingStart, payload: concat(pending) });
          pending = null;
          validEnd = pos;
        }
        break;
    }
  }
  dropPending(data.length, "truncated record");
  return { records, damage, validEnd };
}

/**
 * The first damage in `data` (read by readLog into `r`) that is not a torn tail, or undefined.
 * A torn write leaves nothing intact after itself; so damage before the last intact record is
 * corruption, and so is damage followed, in the rest of its block, by an intact fragment (a
 * damaged length field makes the reader skip the records after it in the block).
 */
export function damageBeforeTail(data: Uint8Array, r: LogReadResult): LogDamage | undefined {
  for (const d of r.damage) {
    if (d.offset < r.validEnd) return d;
    const blockEnd = Math.min(data.length, (Math.floor(d.offset / LOG_BLOCK_SIZE) + 1) * LOG_BLOCK_SIZE);
    for (let pos = d.offset + 1; pos + LOG_HEADER_SIZE <= blockEnd; pos++) {
      const type = data[pos + 6]!;
      if (type < FULL || type > LAST) continue;
      const len = data[pos + 4]! | (data[pos + 5]! << 8);
      if (pos + LOG_HEADER_SIZE + len > blockEnd) continue;
      const stored = (data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16)) + data[pos + 3]! * 0x1000000;
      if (crc32(data.subarray(pos + LOG_HEADER_SIZE, pos + LOG_HEADER_SIZE + len), TYPE_CRC[type]) === stored) return d;
    }
  }
  return undefined;
}

function isZero(data: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (data[i] !== 0) return false;
  return true;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
