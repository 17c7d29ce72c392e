/**
 * What a bucket name and an object key may be. Bucket names follow S3's rules for new buckets;
 * object keys are 1–1024 bytes of UTF-8 with no NUL (the metadata layout uses NUL as separator,
 * and no S3 client can send one in XML anyway) and no lone surrogates (they have no UTF-8 form).
 */
import { StowageError } from "../errors.js";

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IP_LIKE = /^\d+\.\d+\.\d+\.\d+$/;
/** With the u flag a surrogate pair is one code point, so this matches only unpaired halves. */
const LONE_SURROGATE = /\p{Cs}/u;

export function bucketNameProblem(name: string): string | undefined {
  if (typeof name !== "string") return "not a string";
  if (name.length < 3 || name.length > 63) return "must be 3 to 63 characters long";
  if (!BUCKET.test(name)) return "may hold only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit";
  if (name.includes("..")) return "must not contain '..'";
  if (IP_LIKE.test(name)) return "must not look like an IP address";
  if (name.startsWith("xn--") || name.endsWith("-s3alias")) return "uses a reserved prefix or suffix";
  return undefined;
}

export function checkBucketName(name: string): void {
  const problem = bucketNameProblem(name);
  if (problem !== undefined) throw new StowageError("STOWAGE_INVALID_NAME", `invalid bucket name ${JSON.stringify(name)}: ${problem}`);
}

export function objectKeyProblem(key: string): string | undefined {
  if (typeof key !== "string") return "not a string";
  if (key.length === 0) return "must not be empty";
  if (key.includes("\u0000")) return "must not contain NUL";
  if (LONE_SURROGATE.test(key)) return "is not valid Unicode (lone surrogate)";
  if (Buffer.byteLength(key, "utf8") > 1024) return "is longer than 1024 bytes of UTF-8";
  return undefined;
}

export function checkObjectKey(key: string): void {
  const problem = objectKeyProblem(key);
  if (problem !== undefined) throw new StowageError("STOWAGE_INVALID_NAME", `invalid object key ${JSON.stringify(key.slice(0, 100))}: ${problem}`);
}

/** A key prefix (for list, snapshot): may be empty; otherwise the rules of keys. */
export function checkPrefix(prefix: string): void {
  if (prefix === "") return;
  checkObjectKey(prefix);
}
