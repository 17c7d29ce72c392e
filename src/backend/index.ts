/** The backend layer: the blob backend interface, its implementations and its test wrappers. */
export {
  MAX_BLOB_KEY_LENGTH,
  bodyParts,
  checkBlobKey,
  checkRange,
  isBlobKeySegment,
  notFound,
  zeroCounters,
  type BackendCounters,
  type BlobBackend,
  type BlobInfo,
  type ByteRange,
} from "./backend.js";
export { MemoryBackend } from "./memory.js";
export { LocalBackend } from "./local.js";
export { CountingBackend, LIST_PAGE_SIZE } from "./counting.js";
export {
  BACKEND_OPS,
  FaultyBackend,
  type BackendOp,
  type Fault,
  type FaultKind,
  type FaultRule,
  type FaultyBackendOptions,
  type Outage,
  type OutageRule,
} from "./faulty.js";
export {
  BackendIoError,
  RetryingBackend,
  isRetryable,
  isThrottle,
  type BackendIoHints,
  type RetryOptions,
  type RetryStats,
} from "./retry.js";
export {
  S3Backend,
  S3_MAX_PARTS,
  S3_MIN_PART_SIZE,
  keyShard,
  mapS3Error,
  parseBucketUrl,
  type BucketUrl,
  type S3BackendOptions,
  type S3Credentials,
} from "./s3.js";
