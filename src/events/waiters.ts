/** Callers waiting for something to happen (an append, a fetch), each for at most some time. */
export class Waiters {
  #waiting: (() => void)[] = [];

  /** Resolves at the next {@link wakeAll}, or after `ms`. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = this.#waiting.filter((w) => w !== wake);
        resolve();
      }, ms);
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.#waiting.push(wake);
    });
  }

  /** Ends every wait now. */
  wakeAll(): void {
    const w = this.#waiting;
    this.#waiting = [];
    for (const wake of w) wake();
  }
}
