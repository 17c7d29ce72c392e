/**
 * Dirty ranges of an open file: bytes written and not yet flushed, as sorted, non-overlapping
 * ranges. Sequential writes are appended to the last range without copying what it holds.
 */
export interface DirtyRange {
  start: number;
  end: number;
  pieces: Buffer[];
}

function flat(r: DirtyRange): Buffer {
  if (r.pieces.length !== 1) r.pieces = [Buffer.concat(r.pieces)];
  return r.pieces[0]!;
}

export class DirtyRanges {
  ranges: DirtyRange[] = [];
  bytes = 0;

  get empty(): boolean {
    return this.ranges.length === 0;
  }

  /** End of the last range (0 when empty). */
  get end(): number {
    return this.ranges.length === 0 ? 0 : this.ranges[this.ranges.length - 1]!.end;
  }

  /** Records `data` at `offset` (copied, unless `owned`: then kept as it is); later writes win. */
  write(offset: number, data: Uint8Array, owned = false): void {
    if (data.length === 0) return;
    const copy = owned ? Buffer.from(data.buffer, data.byteOffset, data.length) : Buffer.from(data);
    const end = offset + copy.length;
    const last = this.ranges[this.ranges.length - 1];
    if (last === undefined || offset > last.end) {
      this.ranges.push({ start: offset, end, pieces: [copy] });
      this.bytes += copy.length;
      return;
    }
    if (offset === last.end) {
      last.pieces.push(copy);
      last.end = end;
      this.bytes += copy.length;
      return;
    }
    // Overlapping or touching ranges [i, j) merge with the write into one.
    let i = 0;
    while (i < this.ranges.length && this.ranges[i]!.end < offset) i++;
    let j = i;
    while (j < this.ranges.length && this.ranges[j]!.start <= end) j++;
    if (i === j) {
      this.ranges.splice(i, 0, { start: offset, end, pieces: [copy] });
      this.bytes += copy.length;
      return;
    }
    const start = Math.min(offset, this.ranges[i]!.start);
    const mergedEnd = Math.max(end, this.ranges[j - 1]!.end);
    const buf = Buffer.alloc(mergedEnd - start);
    let old = 0;
    for (let k = i; k < j; k++) {
      const r = this.ranges[k]!;
      flat(r).copy(buf, r.start - start);
      old += r.end - r.start;
    }
    copy.copy(buf, offset - start);
    this.ranges.splice(i, j - i, { start, end: mergedEnd, pieces: [buf] });
    this.bytes += buf.length - old;
  }

  /** Drops everything at or past `size`. */
  truncate(size: number): void {
    const keep: DirtyRange[] = [];
    let bytes = 0;
    for (const r of this.ranges) {
      if (r.start >= size) continue;
      if (r.end > size) {
        const b = flat(r).subarray(0, size - r.start);
        keep.push({ start: r.start, end: size, pieces: [b] });
      } else keep.push(r);
      bytes += Math.min(r.end, size) - r.start;
    }
    this.ranges = keep;
    this.bytes = bytes;
  }

  /** True when any dirty byte falls in [start, end). */
  overlaps(start: number, end: number): boolean {
    for (const r of this.ranges) {
      if (r.start >= end) return false;
      if (r.end > start) return true;
    }
    return false;
  }

  /** Copies the dirty bytes that fall in [offset, offset + out.length) into `out`, below `limit`. */
  overlay(out: Buffer, offset: number, limit = Infinity): void {
    const end = Math.min(offset + out.length, limit);
    for (const r of this.ranges) {
      if (r.end <= offset) continue;
      if (r.start >= end) break;
      let pos = r.start;
      for (const p of r.pieces) {
        const pEnd = pos + p.length;
        if (pEnd > offset && pos < end) {
          const from = Math.max(offset, pos);
          const to = Math.min(end, pEnd);
          p.copy(out, from - offset, from - pos, to - pos);
        }
        pos = pEnd;
        if (pos >= end) break;
      }
    }
  }

  /** Applies `newer` on top of this (for putting back a failed flush under later writes). */
  absorb(newer: DirtyRanges): void {
    for (const r of newer.ranges) {
      let pos = r.start;
      for (const p of r.pieces) {
        this.write(pos, p);
        pos += p.length;
      }
    }
  }
}
