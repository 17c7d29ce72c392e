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
  STOWAGE_BACKEND_NOT_FOUND: "A blob backend was asked for a blob that does not exist.",
  STOWAGE_BACKEND_IO:
    "A blob backend failed an operation (write, read, fsync, rename, network); the cause is attached. Nothing half-written is visible.",
  STOWAGE_NO_SPACE: "A disk is full (ENOSPC/EDQUOT): the operation was refused and nothing was half-committed.",
  STOWAGE_REPO_NOT_FOUND: "The data directory holds no Stowage repository (run `stowage init`).",
  STOWAGE_REPO_EXISTS: "`stowage init` found a repository already in the data directory or bucket.",
  STOWAGE_NO_KEY:
    "The repository key is needed but no passphrase (STOWAGE_PASSPHRASE, or a terminal to prompt on) or master key (STOWAGE_MASTER_KEY) was given.",
  STOWAGE_WRONG_KEY: "The master key supplied does not belong to this repository (its key id differs).",
  STOWAGE_INVALID_NAME: "A bucket name or object key is not valid (length, characters, reserved forms).",
  STOWAGE_NO_SUCH_BUCKET: "The bucket does not exist.",
  STOWAGE_BUCKET_EXISTS: "The bucket already exists.",
  STOWAGE_BUCKET_NOT_EMPTY: "The bucket still holds objects, versions or multipart uploads.",
  STOWAGE_NO_SUCH_KEY: "The object (or the requested version of it) does not exist, or its current version is a delete marker.",
  STOWAGE_NO_SUCH_UPLOAD: "The multipart upload does not exist (never created, completed or aborted).",
  STOWAGE_INVALID_PART: "A part named in a multipart completion was not uploaded, or its ETag does not match.",
  STOWAGE_INVALID_PART_ORDER: "The parts of a multipart completion are not in ascending order of part number.",
  STOWAGE_ENTITY_TOO_SMALL: "A part other than the last of a multipart upload is smaller than the minimum part size.",
  STOWAGE_INVALID_RANGE: "The requested byte range does not overlap the object.",
  STOWAGE_BAD_DIGEST: "The content does not match the digest the client sent (Content-MD5 or a checksum).",
  STOWAGE_INCOMPLETE_BODY: "The request body ended before the announced length, or the source stream failed; nothing was committed.",
  STOWAGE_EVENTS_CLOSED: "The event log or consumer is closed; no further operations are accepted.",
  STOWAGE_MOUNT:
    "A file system could not be mounted or unmounted (FUSE missing, mount point missing, not a directory or in use); the cause is attached.",
  STOWAGE_EVENTS_IO:
    "The event log failed an operation (disk, or the Kafka broker unreachable or refusing); the cause is attached. An append that failed may or may not be durable.",
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
