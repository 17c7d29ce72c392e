/**
 * Internal keys: every entry the store keeps is `userKey ++ trailer`, where the 8-byte trailer
 * is fixed64-LE(sequence * 256 + kind). Internal keys sort by user key ascending (bytewise), then
 * by trailer descending, so the newest version of a key comes first.
 *
 * Kinds are persisted in the WAL and in tables: never renumber them.
 */
import { getFixed64, putFixed64 } from "./coding.js";

export const KIND_DELETE = 0;
export const KIND_VALUE = 1;
/** Seeking for (key, seq) uses the highest kind so the search lands on entries with sequence <= seq. */
export const KIND_FOR_SEEK = KIND_VALUE;

export const TRAILER_SIZE = 8;
/** Sequence numbers must stay below 2^45 so that seq * 256 + kind is an exact double. */
export const MAX_SEQUENCE = 2 ** 45 - 1;

export function makeInternalKey(userKey: Uint8Array, seq: number, kind: number): Uint8Array {
  const out = new Uint8Array(userKey.length + TRAILER_SIZE);
  out.set(userKey, 0);
  putFixed64(out, userKey.length, seq * 256 + kind);
  return out;
}

export function trailerOf(ikey: Uint8Array): number {
  return getFixed64(ikey, ikey.length - TRAILER_SIZE);
}

export function seqOf(ikey: Uint8Array): number {
  return Math.floor(trailerOf(ikey) / 256);
}

export function kindOf(ikey: Uint8Array): number {
  return ikey[ikey.length - TRAILER_SIZE]!;
}

export function userKeyOf(ikey: Uint8Array): Uint8Array {
  return ikey.subarray(0, ikey.length - TRAILER_SIZE);
}

/** Bytewise comparison of a[aStart, aEnd) and b[bStart, bEnd). */
export function compareRange(
  a: Uint8Array,
  aStart: number,
  aEnd: number,
  b: Uint8Array,
  bStart: number,
  bEnd: number,
): number {
  const alen = aEnd - aStart;
  const blen = bEnd - bStart;
  const n = alen < blen ? alen : blen;
  for (let i = 0; i < n; i++) {
    const d = a[aStart + i]! - b[bStart + i]!;
    if (d !== 0) return d;
  }
  return alen - blen;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return compareRange(a, 0, a.length, b, 0, b.length);
}

/**
 * The internal-key order (user key ascending, then trailer descending) on byte ranges, without
 * creating views. Both ranges must hold complete internal keys (>= 8 bytes).
 */
export function compareInternalRange(
  a: Uint8Array,
  aStart: number,
  aEnd: number,
  b: Uint8Array,
  bStart: number,
  bEnd: number,
): number {
  const aUser = aEnd - TRAILER_SIZE;
  const bUser = bEnd - TRAILER_SIZE;
  const c = compareRange(a, aStart, aUser, b, bStart, bUser);
  if (c !== 0) return c;
  // Trailers are little-endian: compare from the most significant byte; larger sorts first.
  for (let i = TRAILER_SIZE - 1; i >= 0; i--) {
    const d = b[bUser + i]! - a[aUser + i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** The internal-key order: user key ascending, then trailer (sequence, kind) descending. */
export function compareInternalKeys(a: Uint8Array, b: Uint8Array): number {
  return compareInternalRange(a, 0, a.length, b, 0, b.length);
}

/** Compares the user-key parts of two internal keys. */
export function compareUserKeysOf(a: Uint8Array, b: Uint8Array): number {
  return compareRange(a, 0, a.length - TRAILER_SIZE, b, 0, b.length - TRAILER_SIZE);
}

/** Compares a plain user key with the user key inside an internal key. */
export function compareUserKeyTo(userKey: Uint8Array, ikey: Uint8Array): number {
  return compareRange(userKey, 0, userKey.length, ikey, 0, ikey.length - TRAILER_SIZE);
}

// File names inside a store directory. Numbers are unique across kinds (one counter).
export function tableFileName(num: number): string {
  return `${String(num).padStart(6, "0")}.sst`;
}
export function logFileName(num: number): string {
  return `${String(num).padStart(6, "0")}.log`;
}
export function manifestFileName(num: number): string {
  return `MANIFEST-${String(num).padStart(6, "0")}`;
}
export const CURRENT_FILE = "CURRENT";
export const LOCK_FILE = "LOCK";

export type ParsedFileName =
  | { kind: "table" | "log" | "manifest" | "temp"; num: number }
  | { kind: "current" | "lock" | "other"; num: -1 };

export function parseFileName(name: string): ParsedFileName {
  let m = /^(\d+)\.(sst|log)$/.exec(name);
  if (m) return { kind: m[2] === "sst" ? "table" : "log", num: Number(m[1]) };
  m = /^MANIFEST-(\d+)$/.exec(name);
  if (m) return { kind: "manifest", num: Number(m[1]) };
  m = /^(\d+)\.tmp$/.exec(name);
  if (m) return { kind: "temp", num: Number(m[1]) };
  if (name === CURRENT_FILE) return { kind: "current", num: -1 };
  if (name === LOCK_FILE) return { kind: "lock", num: -1 };
  return { kind: "other", num: -1 };
}
