/**
 * Per-key mutual exclusion. Every step that changes which tiers hold a blob (a local write, a
 * hydration, an upload, a secondary copy, a purge, a delete) runs under its key's lock, so a
 * delete can never be followed by a hydration or upload that read the blob before it (which would
 * bring a deleted pack back), and a purge never races the copy it checks.
 */
export class KeyLocks {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of `key` is done; the lock is released however it ends. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Whether someone holds or waits for `key`. */
  busy(key: string): boolean {
    return this.#tails.has(key);
  }
}
