/** A backend in memory: for tests and benchmarks. Same semantics as the others, no durability. */
import { StowageError } from "../errors.js";
import { bodyParts, checkBlobKey, checkRange, notFound, type BlobBackend, type BlobInfo, type ByteRange } from "./backend.js";

export class MemoryBackend implements BlobBackend {
  readonly location = "memory:";
  readonly #blobs = new Map<string, Buffer>();
  #closed = false;

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#check();
    checkBlobKey(key);
    const { parts, length } = bodyParts(body);
    this.#blobs.set(key, Buffer.concat(parts, length));
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.#check();
    checkBlobKey(key);
    checkRange(range);
    const blob = this.#blobs.get(key);
    if (blob === undefined) throw notFound(this.location, key);
    if (range === undefined) return Buffer.from(blob);
    const start = Math.min(range.offset, blob.length);
    return Buffer.from(blob.subarray(start, Math.min(blob.length, start + range.length)));
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    this.#check();
    checkBlobKey(key);
    const blob = this.#blobs.get(key);
    return blob === undefined ? undefined : { key, size: blob.length };
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    this.#check();
    const keys = [...this.#blobs.keys()].filter((k) => k.startsWith(prefix)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const key of keys) {
      const blob = this.#blobs.get(key);
      if (blob !== undefined) yield { key, size: blob.length };
    }
  }

  async delete(key: string): Promise<void> {
    this.#check();
    checkBlobKey(key);
    this.#blobs.delete(key);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  /** Test hook: the stored bytes themselves (mutable), to flip bits in. */
  rawForTesting(key: string): Buffer | undefined {
    return this.#blobs.get(key);
  }

  #check(): void {
    if (this.#closed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "backend is closed");
  }
}
