/**
 * Bloom filters over user keys (the filter block of a table). Byte format:
 *
 *   bits[m/8]  k:uint8
 *
 * m = max(64, ceil(n * bitsPerKey)) rounded up to a multiple of 8; k = round(bitsPerKey * 0.69)
 * clamped to [1, 30]. A key sets k bits chosen by double hashing (LevelDB's scheme): with h the
 * 32-bit hash of the key and delta = rotr(h, 17), probe i tests bit (h + i * delta) mod m, all in
 * uint32 arithmetic. The hash is LevelDB's murmur-like `Hash(data, seed = 0xbc9f1d34)`.
 * A k byte above 30 is reserved for future encodings and matches everything.
 */

const M = 0xc6a4a793 | 0;
const SEED = 0xbc9f1d34;

/** LevelDB's 32-bit hash of data[start, end) with the bloom seed (unsigned result). */
export function bloomHash(data: Uint8Array, start = 0, end = data.length): number {
  const n = end - start;
  let h = (SEED ^ Math.imul(n, M)) | 0;
  let p = start;
  const stop = end - 3;
  while (p < stop) {
    const w = data[p] | (data[p + 1] << 8) | (data[p + 2] << 16) | (data[p + 3] << 24);
    p += 4;
    h = Math.imul((h + w) | 0, M);
    h ^= h >>> 16;
  }
  const rest = end - p;
  if (rest > 0) {
    if (rest === 3) h = (h + (data[p + 2] << 16)) | 0;
    if (rest >= 2) h = (h + (data[p + 1] << 8)) | 0;
    h = Math.imul((h + data[p]) | 0, M);
    h ^= h >>> 24;
  }
  return h >>> 0;
}

/** The probe count for `bitsPerKey`. */
export function bloomProbes(bitsPerKey: number): number {
  const k = Math.round(bitsPerKey * 0.69);
  return k < 1 ? 1 : k > 30 ? 30 : k;
}

/** Collects key hashes and produces a filter. */
export class BloomBuilder {
  private hashes: number[] = [];

  constructor(readonly bitsPerKey: number) {
    if (!(bitsPerKey > 0)) throw new RangeError(`bitsPerKey must be positive, got ${bitsPerKey}`);
  }

  get numKeys(): number {
    return this.hashes.length;
  }

  /** Adds the user key data[start, end). */
  addKey(data: Uint8Array, start = 0, end = data.length): void {
    this.hashes.push(bloomHash(data, start, end));
  }

  /** Builds the filter for the keys added so far and clears the builder. */
  finish(): Uint8Array {
    const k = bloomProbes(this.bitsPerKey);
    let bits = Math.ceil(this.hashes.length * this.bitsPerKey);
    if (bits < 64) bits = 64;
    const bytes = (bits + 7) >>> 3;
    bits = bytes * 8;
    const out = new Uint8Array(bytes + 1);
    out[bytes] = k;
    for (const hash of this.hashes) {
      let h = hash;
      const delta = ((h >>> 17) | (h << 15)) >>> 0;
      for (let j = 0; j < k; j++) {
        const pos = h % bits;
        out[pos >>> 3] |= 1 << (pos & 7);
        h = (h + delta) >>> 0;
      }
    }
    this.hashes = [];
    return out;
  }
}

/** Whether a key with bloom hash `hash` may be in `filter` (never false for an added key). */
export function bloomMayContainHash(filter: Uint8Array, hash: number): boolean {
  const len = filter.length;
  if (len < 2) return true; // not a filter we wrote: cannot exclude anything
  const k = filter[len - 1];
  if (k > 30) return true;
  const bits = (len - 1) * 8;
  let h = hash;
  const delta = ((h >>> 17) | (h << 15)) >>> 0;
  for (let j = 0; j < k; j++) {
    const pos = h % bits;
    if ((filter[pos >>> 3] & (1 << (pos & 7))) === 0) return false;
    h = (h + delta) >>> 0;
  }
  return true;
}

/** Whether user key data[start, end) may be in `filter`. */
export function bloomMayContain(filter: Uint8Array, data: Uint8Array, start = 0, end = data.length): boolean {
  return bloomMayContainHash(filter, bloomHash(data, start, end));
}

/** Alias of `bloomMayContain` for a whole user key. */
export function mayContain(filter: Uint8Array, userKey: Uint8Array): boolean {
  return bloomMayContainHash(filter, bloomHash(userKey, 0, userKey.length));
}
