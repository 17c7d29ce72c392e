/**
 * A readers-writer lock for the object store: writes (put, copy, delete, multipart, snapshot) share
 * it, the garbage collector takes it alone. GC needs it because a chunk with no references may be
 * about to gain one: a put found it by its id and will reference it when it commits.
 */
export class SharedExclusiveLock {
  #shared = 0;
  #exclusive = false;
  #waiting: Array<{ exclusive: boolean; resolve: () => void }> = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire(false);
    try {
      return await fn();
    } finally {
      this.#release(false);
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire(true);
    try {
      return await fn();
    } finally {
      this.#release(true);
    }
  }

  #acquire(exclusive: boolean): Promise<void> {
    // FIFO with no barging: once a writer waits, later readers queue behind it.
    if (this.#waiting.length === 0 && this.#canEnter(exclusive)) {
      this.#enter(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push({ exclusive, resolve }));
  }

  #canEnter(exclusive: boolean): boolean {
    return exclusive ? !this.#exclusive && this.#shared === 0 : !this.#exclusive;
  }

  #enter(exclusive: boolean): void {
    if (exclusive) this.#exclusive = true;
    else this.#shared++;
  }

  #release(exclusive: boolean): void {
    if (exclusive) this.#exclusive = false;
    else this.#shared--;
    while (this.#waiting.length > 0 && this.#canEnter(this.#waiting[0]!.exclusive)) {
      const next = this.#waiting.shift()!;
      this.#enter(next.exclusive);
      next.resolve();
    }
  }
}
