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
} from "./faulty.js";
