/**
 * The blob backend: where packs (and, later, metadata logs and key files) live. One interface, many
 * places: a local directory (the embedded default "bucket"), memory (tests), S3-compatible
 * services (issue 5), and wrappers that inject faults or count requests. Every implementation
 * passes the conformance suite in test/backend/conformance.ts.
 *
 * Keys are relative paths: 1–1024 bytes of `[A-Za-z0-9._-]` segments joined by `/`, no empty,
 * `.` or `..` segment, no leading or trailing `/` (see {@link checkBlobKey}).
 */
import { StowageError } from "../errors.js";

export interface BlobInfo {
  key: string;
  size: number;
}

/** A byte range of a blob: `length` bytes from `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
  /**
   * A buffer of the caller's that the backend may read the bytes into, when it holds at least
   * `length` bytes: the result is then a view of it. The caller must not reuse it while it still
   * uses that result. A backend that cannot read into a given buffer (or one too short) ignores
   * it and returns a new buffer, as without it. (The pack reader recycles its large request
   * buffers this way: on a 1 GiB GET from a local bucket, a fresh buffer per 8 MiB read cost
   * about a fifth of the server's CPU in garbage collection and page faults.)
   */
  into?: Buffer;
}

/** Request counters, as a cloud provider would bill them. */
export interface BackendCounters {
  puts: number;
  gets: number;
  heads: number;
  lists: number;
  deletes: number;
  bytesWritten: number;
  bytesRead: number;
}

export interface BlobBackend {
  /** Human-readable location, e.g. `file:///srv/stowage/bucket` or `memory:`. */
  readonly location: string;

  /**
   * Stores `body` (one buffer, or several written back to back) under `key`, replacing any blob
   * there. Atomic: a reader sees the old blob or all of the new one, never a part. Durable when
   * the promise resolves (the local backend has fsynced the file and its directory).
   * Errors: `STOWAGE_NO_SPACE`, `STOWAGE_BACKEND_IO`; after a failure no partial blob is visible.
   */
  put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void>;

  /**
   * The blob's bytes, or the bytes of `range` clipped to the blob's end (a range starting at or
   * past the end returns an empty buffer). Errors: `STOWAGE_BACKEND_NOT_FOUND`, `STOWAGE_BACKEND_IO`.
   */
  get(key: string, range?: ByteRange): Promise<Buffer>;

  /** The blob's size, or `undefined` when there is none. */
  head(key: string): Promise<BlobInfo | undefined>;

  /** Every blob whose key starts with `prefix`, in ascending byte order of key. */
  list(prefix: string): AsyncIterable<BlobInfo>;

  /** Removes the blob; a missing blob is not an error (idempotent). */
  delete(key: string): Promise<void>;

  /** Releases resources; further calls fail. */
  close(): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Longest valid blob key, in characters (all ASCII, so also bytes). */
export const MAX_BLOB_KEY_LENGTH = 1024;

/** Whether `seg` may be one `/`-separated segment of a blob key. */
export function isBlobKeySegment(seg: string): boolean {
  return SEGMENT.test(seg) && seg !== "." && seg !== "..";
}

/** Throws `STOWAGE_INVALID_ARGUMENT` unless `key` is a valid blob key. */
export function checkBlobKey(key: string): void {
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_BLOB_KEY_LENGTH) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `blob key must be 1–${MAX_BLOB_KEY_LENGTH} characters`);
  }
  for (const seg of key.split("/")) {
    if (!isBlobKeySegment(seg)) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", `invalid blob key ${JSON.stringify(key)}`);
    }
  }
}

/** Throws `STOWAGE_INVALID_ARGUMENT` unless `range` is a sane non-negative integer range. */
export function checkRange(range: ByteRange | undefined): void {
  if (range === undefined) return;
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `invalid byte range offset=${offset} length=${length}`);
  }
  if (range.into !== undefined && !Buffer.isBuffer(range.into)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "a byte range's `into` must be a Buffer");
}

/** The body as one list of buffers, and its total length. */
export function bodyParts(body: Uint8Array | readonly Uint8Array[]): { parts: readonly Uint8Array[]; length: number } {
  const parts = body instanceof Uint8Array ? [body] : body;
  let length = 0;
  for (const p of parts) {
    if (!(p instanceof Uint8Array)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "blob body must be Uint8Array(s)");
    length += p.length;
  }
  return { parts, length };
}

export function notFound(location: string, key: string): StowageError {
  return new StowageError("STOWAGE_BACKEND_NOT_FOUND", `no blob ${JSON.stringify(key)} in ${location}`);
}

export function zeroCounters(): BackendCounters {
  return { puts: 0, gets: 0, heads: 0, lists: 0, deletes: 0, bytesWritten: 0, bytesRead: 0 };
}
