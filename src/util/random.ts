/**
 * mulberry32: a small, fast, seedable pseudo-random generator (32 bits of state). The same seed
 * gives the same sequence, so fault schedules, jitter and randomized tests can be replayed. It is
 * not cryptographically secure: never use it for keys, nonces or anything an attacker may guess.
 *
 * Returns a function that yields numbers uniform in [0, 1); only the low 32 bits of `seed` count.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
