/**
 * Errors of the POSIX view: errno names (ENOENT, ENOTDIR, ...) that both front ends hand to their
 * protocol as they are (FUSE wants the negative errno, WebDAV maps them to status codes).
 */
import { isStowageError } from "../errors.js";

export type Errno =
  | "ENOENT"
  | "EEXIST"
  | "ENOTDIR"
  | "EISDIR"
  | "ENOTEMPTY"
  | "EINVAL"
  | "ENAMETOOLONG"
  | "EXDEV"
  | "EBADF"
  | "EPERM"
  | "EBUSY"
  | "ENOSPC"
  | "ENXIO"
  | "EIO";

/** The Linux numbers, for front ends that need them (FUSE returns -errno). */
export const ERRNO: Readonly<Record<Errno, number>> = Object.freeze({
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  ENAMETOOLONG: 36,
  ENOTEMPTY: 39,
});

export class FsError extends Error {
  readonly code: Errno;
  readonly errno: number;

  constructor(code: Errno, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = "FsError";
    this.code = code;
    this.errno = ERRNO[code];
  }
}

export function isFsError(err: unknown, code?: Errno): err is FsError {
  return err instanceof FsError && (code === undefined || err.code === code);
}

/** The errno a store error means to a file-system caller (anything unexpected is EIO). */
export function toFsError(err: unknown, what: string): FsError {
  if (err instanceof FsError) return err;
  if (isStowageError(err)) {
    switch (err.code) {
      case "STOWAGE_NO_SUCH_BUCKET":
      case "STOWAGE_NO_SUCH_KEY":
        return new FsError("ENOENT", `${what}: ${err.message}`, { cause: err });
      case "STOWAGE_BUCKET_EXISTS":
        return new FsError("EEXIST", `${what}: ${err.message}`, { cause: err });
      case "STOWAGE_BUCKET_NOT_EMPTY":
        return new FsError("ENOTEMPTY", `${what}: ${err.message}`, { cause: err });
      case "STOWAGE_INVALID_NAME":
        return new FsError(/longer than/.test(err.message) ? "ENAMETOOLONG" : "EINVAL", `${what}: ${err.message}`, { cause: err });
      case "STOWAGE_INVALID_ARGUMENT":
        return new FsError("EINVAL", `${what}: ${err.message}`, { cause: err });
      case "STOWAGE_NO_SPACE":
        return new FsError("ENOSPC", `${what}: ${err.message}`, { cause: err });
      default:
        break;
    }
  }
  return new FsError("EIO", `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
