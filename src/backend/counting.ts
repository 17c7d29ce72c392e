/**
 * A backend wrapper that counts requests and bytes the way a cloud provider bills them, so the
 * numbers that prove packing pays (requests saved, bytes moved) can be measured on any backend.
 *
 * - Every call that reaches the wrapper counts as one request when it is made, whether or not it
 *   succeeds (providers bill failed requests too). `close` is not counted.
 * - A list counts one request per page of {@link LIST_PAGE_SIZE} blobs, as S3's ListObjectsV2
 *   does: one when iteration starts, one more before each further page.
 * - `bytesWritten` adds the body length of each put that succeeded; `bytesRead` the length of
 *   each get's returned data.
 */
import { bodyParts, zeroCounters, type BackendCounters, type BlobBackend, type BlobInfo, type ByteRange } from "./backend.js";

/** Blobs per billed list request (S3's page size). */
export const LIST_PAGE_SIZE = 1000;

export class CountingBackend implements BlobBackend {
  readonly location: string;
  #counters: BackendCounters = zeroCounters();

  constructor(readonly inner: BlobBackend) {
    this.location = inner.location;
  }

  /** A snapshot of the counters since creation or the last {@link reset}. */
  counters(): BackendCounters {
    return { ...this.#counters };
  }

  /** Sets every counter back to zero. */
  reset(): void {
    this.#counters = zeroCounters();
  }

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#counters.puts++;
    await this.inner.put(key, body);
    // After the put, as bodyParts may reject a malformed body (the inner backend has then failed).
    this.#counters.bytesWritten += bodyParts(body).length;
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.#counters.gets++;
    const data = await this.inner.get(key, range);
    this.#counters.bytesRead += data.length;
    return data;
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    this.#counters.heads++;
    return this.inner.head(key);
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    this.#counters.lists++;
    let n = 0;
    for await (const info of this.inner.list(prefix)) {
      if (n > 0 && n % LIST_PAGE_SIZE === 0) this.#counters.lists++;
      n++;
      yield info;
    }
  }

  async delete(key: string): Promise<void> {
    this.#counters.deletes++;
    return this.inner.delete(key);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
