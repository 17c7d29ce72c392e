/**
 * A one-line progress display on stderr for long operations. Silent when stderr is not a terminal
 * (scripts and tests see only the final output), and redrawn at most ten times a second.
 */
export class Progress {
  readonly #label: string;
  readonly #total: number;
  readonly #unit: "bytes" | "items";
  readonly #enabled: boolean;
  readonly #started = Date.now();
  #done = 0;
  #lastDraw = 0;

  constructor(label: string, total: number, unit: "bytes" | "items" = "bytes", enabled = process.stderr.isTTY === true) {
    this.#label = label;
    this.#total = total;
    this.#unit = unit;
    this.#enabled = enabled;
  }

  add(n: number): void {
    this.#done += n;
    this.#draw(false);
  }

  set(done: number): void {
    this.#done = done;
    this.#draw(false);
  }

  finish(): void {
    this.#draw(true);
    if (this.#enabled) process.stderr.write("\n");
  }

  #draw(force: boolean): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const frac = this.#total > 0 ? Math.min(1, this.#done / this.#total) : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const secs = Math.max(0.001, (now - this.#started) / 1000);
    const amount = this.#unit === "bytes" ? `${formatBytes(this.#done)}/${formatBytes(this.#total)} ${formatBytes(this.#done / secs)}/s` : `${this.#done}/${this.#total}`;
    process.stderr.write(`\r${this.#label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${amount}\x1b[K`);
  }
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(1)} ${units[i]}`;
}
