/**
 * Versions and the manifest. A Version is the immutable set of live table files per level. Each
 * change (flush, compaction) is a VersionEdit appended to the MANIFEST log and fsynced before it
 * takes effect; CURRENT names the live manifest. Opening replays the edits to rebuild the exact
 * set of live files.
 */
import { StowageError, corruption } from "../errors.js";
import { ByteReader, ByteWriter } from "./coding.js";
import { compareInternalKeys, compareUserKeyTo, compareRange, TRAILER_SIZE } from "./format.js";

export const NUM_LEVELS = 7;
export const MANIFEST_FORMAT_VERSION = 1;

export interface FileMeta {
  readonly number: number;
  readonly size: number;
  /** Smallest and largest internal keys in the file. */
  readonly smallest: Uint8Array;
  readonly largest: Uint8Array;
}

// Edit field tags. Persisted: never renumber or reuse.
const TAG_FORMAT_VERSION = 1;
const TAG_LOG_NUMBER = 2;
const TAG_NEXT_FILE = 3;
const TAG_LAST_SEQUENCE = 4;
const TAG_COMPACT_POINTER = 5;
const TAG_DELETED_FILE = 6;
const TAG_NEW_FILE = 7;

export class VersionEdit {
  formatVersion: number | undefined;
  logNumber: number | undefined;
  nextFileNumber: number | undefined;
  lastSequence: number | undefined;
  compactPointers: [level: number, key: Uint8Array][] = [];
  deletedFiles: [level: number, num: number][] = [];
  newFiles: [level: number, meta: FileMeta][] = [];

  addFile(level: number, meta: FileMeta): void {
    this.newFiles.push([level, meta]);
  }

  deleteFile(level: number, num: number): void {
    this.deletedFiles.push([level, num]);
  }

  encode(): Uint8Array {
    const w = new ByteWriter(256);
    if (this.formatVersion !== undefined) {
      w.varint(TAG_FORMAT_VERSION);
      w.varint(this.formatVersion);
    }
    if (this.logNumber !== undefined) {
      w.varint(TAG_LOG_NUMBER);
      w.varint(this.logNumber);
    }
    if (this.nextFileNumber !== undefined) {
      w.varint(TAG_NEXT_FILE);
      w.varint(this.nextFileNumber);
    }
    if (this.lastSequence !== undefined) {
      w.varint(TAG_LAST_SEQUENCE);
      w.varint(this.lastSequence);
    }
    for (const [level, key] of this.compactPointers) {
      w.varint(TAG_COMPACT_POINTER);
      w.varint(level);
      w.lengthPrefixed(key);
    }
    for (const [level, num] of this.deletedFiles) {
      w.varint(TAG_DELETED_FILE);
      w.varint(level);
      w.varint(num);
    }
    for (const [level, f] of this.newFiles) {
      w.varint(TAG_NEW_FILE);
      w.varint(level);
      w.varint(f.number);
      w.varint(f.size);
      w.lengthPrefixed(f.smallest);
      w.lengthPrefixed(f.largest);
    }
    return w.take();
  }

  static decode(data: Uint8Array, file: string, offset: number): VersionEdit {
    const e = new VersionEdit();
    const r = new ByteReader(data, (off, what) => corruption(file, offset, `manifest record byte ${off}: ${what}`));
    const level = (): number => {
      const l = r.varint();
      if (l >= NUM_LEVELS) throw corruption(file, offset, `manifest names level ${l}`);
      return l;
    };
    while (!r.done) {
      const tag = r.varint();
      switch (tag) {
        case TAG_FORMAT_VERSION:
          e.formatVersion = r.varint();
          if (e.formatVersion > MANIFEST_FORMAT_VERSION) {
            throw new StowageError(
              "STOWAGE_KV_FORMAT_VERSION",
              `${file} has manifest format version ${e.formatVersion}; this build reads up to ${MANIFEST_FORMAT_VERSION}`,
              { file, offset },
            );
          }
          break;
        case TAG_LOG_NUMBER:
          e.logNumber = r.varint();
          break;
        case TAG_NEXT_FILE:
          e.nextFileNumber = r.varint();
          break;
        case TAG_LAST_SEQUENCE:
          e.lastSequence = r.varint();
          break;
        case TAG_COMPACT_POINTER:
          e.compactPointers.push([level(), r.lengthPrefixed().slice()]);
          break;
        case TAG_DELETED_FILE:
          e.deletedFiles.push([level(), r.varint()]);
          break;
        case TAG_NEW_FILE: {
          const l = level();
          const number = r.varint();
          const size = r.varint();
          const smallest = r.lengthPrefixed().slice();
          const largest = r.lengthPrefixed().slice();
          if (smallest.length < TRAILER_SIZE || largest.length < TRAILER_SIZE) {
            throw corruption(file, offset, "manifest file entry has a short key");
          }
          e.newFiles.push([l, { number, size, smallest, largest }]);
          break;
        }
        default:
          throw corruption(file, offset, `unknown manifest tag ${tag}`);
      }
    }
    return e;
  }
}

/** An immutable set of files per level. Level 0 is newest-first; deeper levels sort by key. */
export class Version {
  /** References from iterators and running compactions; the current version holds one too. */
  refs = 0;

  constructor(readonly files: readonly (readonly FileMeta[])[]) {}

  static empty(): Version {
    return new Version(Array.from({ length: NUM_LEVELS }, () => []));
  }

  levelBytes(level: number): number {
    let n = 0;
    for (const f of this.files[level]!) n += f.size;
    return n;
  }

  /** Applies an edit, producing the next version. Throws if the edit does not fit. */
  apply(edit: VersionEdit): Version {
    const deleted = new Set<number>();
    for (const [, num] of edit.deletedFiles) deleted.add(num);
    const files: FileMeta[][] = this.files.map((level) => level.filter((f) => !deleted.has(f.number)));
    for (const [level, f] of edit.newFiles) files[level]!.push(f);
    // Newest first in L0 (file numbers grow with time); key order elsewhere.
    files[0]!.sort((a, b) => b.number - a.number);
    for (let l = 1; l < NUM_LEVELS; l++) files[l]!.sort((a, b) => compareInternalKeys(a.smallest, b.smallest));
    return new Version(files);
  }

  /** Checks that levels >= 1 hold no overlapping files. */
  checkInvariants(): string | undefined {
    for (let l = 1; l < NUM_LEVELS; l++) {
      const fs = this.files[l]!;
      for (let i = 1; i < fs.length; i++) {
        if (compareUserKeys(fs[i - 1]!.largest, fs[i]!.smallest) >= 0) {
          return `level ${l} files ${fs[i - 1]!.number} and ${fs[i]!.number} overlap`;
        }
      }
    }
    return undefined;
  }

  /** Files at `level` whose user-key range intersects [begin, end] (undefined = unbounded). */
  overlapping(level: number, begin: Uint8Array | undefined, end: Uint8Array | undefined): FileMeta[] {
    const out: FileMeta[] = [];
    for (const f of this.files[level]!) {
      if (begin !== undefined && compareUserKeys(f.largest, begin) < 0) continue;
      if (end !== undefined && compareUserKeys(f.smallest, end) > 0) continue;
      out.push(f);
    }
    return out;
  }

  /** Index of the first file in a sorted level whose largest key is >= the user key. */
  findFile(level: number, userKey: Uint8Array): number {
    const fs = this.files[level]!;
    let lo = 0;
    let hi = fs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareUserKeyTo(userKey, fs[mid]!.largest) > 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Compares the user keys of two internal keys. */
export function compareUserKeys(a: Uint8Array, b: Uint8Array): number {
  return compareRange(a, 0, a.length - TRAILER_SIZE, b, 0, b.length - TRAILER_SIZE);
}

/** The smallest and largest internal keys of a set of files. */
export function keyRange(files: readonly FileMeta[]): [Uint8Array, Uint8Array] {
  let smallest = files[0]!.smallest;
  let largest = files[0]!.largest;
  for (const f of files) {
    if (compareInternalKeys(f.smallest, smallest) < 0) smallest = f.smallest;
    if (compareInternalKeys(f.largest, largest) > 0) largest = f.largest;
  }
  return [smallest, largest];
}
