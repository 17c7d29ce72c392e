/**
 * Every error Stowage raises on purpose carries a stable `code`, declared here and documented in
 * docs/ERRORS.md (a test keeps the two in step). Users match on `err.code`, never on messages.
 */

export const ERROR_CODES = {
  STOWAGE_INVALID_ARGUMENT: "An argument has the wrong type, range or shape.",
  STOWAGE_KV_CLOSED: "The key-value store is closed (or closing); no further operations are accepted.",
  STOWAGE_KV_LOCKED: "Another live process holds the store's LOCK file.",
  STOWAGE_KV_CORRUPTION:
    "A persisted file failed a checksum, magic or structure check; the message names the file and offset.",
  STOWAGE_KV_FORMAT_VERSION: "A persisted file carries a format version this build does not understand.",
  STOWAGE_KV_IO: "The file system failed an operation (write, fsync, rename, ...); the cause is attached.",
  STOWAGE_KV_READ_ONLY:
    "An earlier background or write-ahead-log failure put the store in read-only mode; reopen it to recover.",
  STOWAGE_KV_NOT_FOUND: "The directory holds no store and `createIfMissing` was false.",
  STOWAGE_KV_EXISTS: "The store already exists and `errorIfExists` was true, or a checkpoint target is not empty.",
  STOWAGE_KV_ITERATOR_CLOSED: "The iterator was closed (explicitly, or because its store closed).",
  STOWAGE_FORMAT_VERSION:
    "A persisted structure outside the kv store (key file, sealed chunk, compressed chunk, ...) carries a version or method this build does not understand.",
  STOWAGE_BAD_PASSPHRASE: "The passphrase does not open the key file.",
  STOWAGE_KEY_FORMAT:
    "Key material is malformed: a damaged or truncated key file, or a master key (e.g. STOWAGE_MASTER_KEY) that is not 32 bytes of hex or base64.",
  STOWAGE_INTEGRITY:
    "Stored data failed authentication or decoding (wrong key, flipped bits, wrong associated data, corrupt zstd frame); no unverified bytes are returned.",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorDetails {
  /** The file the error concerns, when there is one. */
  file?: string;
  /** Byte offset within `file`. */
  offset?: number;
  /** The underlying error, for I/O failures. */
  cause?: unknown;
}

export class StowageError extends Error {
  readonly code: ErrorCode;
  readonly file: string | undefined;
  readonly offset: number | undefined;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "StowageError";
    this.code = code;
    this.file = details.file;
    this.offset = details.offset;
  }
}

export function isStowageError(err: unknown, code?: ErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

/** Corruption in `file` at `offset`: the one way a reader reports bytes it cannot trust. */
export function corruption(file: string, offset: number, what: string): StowageError {
  return new StowageError("STOWAGE_KV_CORRUPTION", `corruption in ${file} at offset ${offset}: ${what}`, {
    file,
    offset,
  });
}
