/**
 * The `x-amz-checksum-*` family of S3's "flexible checksums": CRC32, CRC32C, CRC64NVME, SHA1 and
 * SHA256, each rendered as the base64 of its big-endian digest, as S3 sends and expects it.
 *
 * CRC32 uses zlib's (native) implementation when the runtime has `zlib.crc32`; CRC32C and
 * CRC64NVME are table-driven slicing-by-16 implementations written here (Node has neither),
 * reading aligned 32-bit words on little-endian hosts.
 * {@link checksumFromHeaders} works out which checksum a request carries: a header value, or a
 * value announced by `x-amz-trailer` that arrives in the trailers of an aws-chunked body.
 */
import { createHash, type Hash } from "node:crypto";
import * as zlib from "node:zlib";
import { s3 } from "./errors.js";

export type ChecksumAlgorithm = "CRC32" | "CRC32C" | "CRC64NVME" | "SHA1" | "SHA256";

export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

/** A running checksum. `digestBase64` may be called more than once and does not end the computation. */
export interface Checksum {
  readonly algorithm: ChecksumAlgorithm;
  update(b: Uint8Array): void;
  /** The digest as raw big-endian bytes. */
  digest(): Buffer;
  digestBase64(): string;
}

/** Digest sizes in bytes. */
const DIGEST_BYTES: Record<ChecksumAlgorithm, number> = { CRC32: 4, CRC32C: 4, CRC64NVME: 8, SHA1: 20, SHA256: 32 };

/** The request/response header (and trailer) carrying a checksum: `x-amz-checksum-crc32`, ... */
export function checksumHeaderName(alg: ChecksumAlgorithm): string {
  return `x-amz-checksum-${alg.toLowerCase()}`;
}

/** The algorithm named by an `x-amz-checksum-algorithm`/`x-amz-sdk-checksum-algorithm` value (any case), or undefined. */
export function parseChecksumAlgorithm(value: string): ChecksumAlgorithm | undefined {
  const upper = value.trim().toUpperCase();
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(upper) ? (upper as ChecksumAlgorithm) : undefined;
}

// ---------------------------------------------------------------------------------------------
// CRC32 (ISO-HDLC, reflected 0xEDB88320): zlib when available, else the tables below.

const zlibCrc32: ((data: Uint8Array, value?: number) => number) | undefined =
  typeof (zlib as { crc32?: unknown }).crc32 === "function" ? (zlib as { crc32: (d: Uint8Array, v?: number) => number }).crc32 : undefined;

/** Whether typed-array words are little-endian (then input is read 32 bits at a time). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** Inputs shorter than this are processed bytewise (setting up the word view costs more). */
const WORDWISE_MIN = 64;

/** Slicing-by-16 tables for a reflected 32-bit CRC: 16 × 256 entries, table k at offset 256·k. */
function crc32Tables(poly: number): Int32Array {
  const t = new Int32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 16; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/**
 * An updater of a reflected 32-bit CRC register (pre-inverted) for the tables `t`: slicing-by-16
 * over aligned 32-bit words on little-endian hosts, bytewise for the unaligned head, the tail and
 * short inputs. (The tables are bound in a closure rather than passed: V8 then knows their
 * length and drops the bounds checks, nearly doubling the speed.)
 */
function makeCrc32Update(t: Int32Array): (crc: number, b: Uint8Array) => number {
  return (crc, b) => {
    let c = crc | 0;
    let i = 0;
    const n = b.length;
    if (LITTLE_ENDIAN && n >= WORDWISE_MIN) {
      while (((b.byteOffset + i) & 3) !== 0) c = t[(c ^ b[i++]!) & 0xff]! ^ (c >>> 8);
      const words = (n - i) >>> 4;
      const w = new Int32Array(b.buffer, b.byteOffset + i, words * 4);
      for (let j = 0; j < w.length; j += 4) {
        const a = c ^ w[j]!;
        const x = w[j + 1]!;
        const y = w[j + 2]!;
        const z = w[j + 3]!;
        c =
          t[3840 + (a & 0xff)]! ^
          t[3584 + ((a >>> 8) & 0xff)]! ^
          t[3328 + ((a >>> 16) & 0xff)]! ^
          t[3072 + (a >>> 24)]! ^
          t[2816 + (x & 0xff)]! ^
          t[2560 + ((x >>> 8) & 0xff)]! ^
          t[2304 + ((x >>> 16) & 0xff)]! ^
          t[2048 + (x >>> 24)]! ^
          t[1792 + (y & 0xff)]! ^
          t[1536 + ((y >>> 8) & 0xff)]! ^
          t[1280 + ((y >>> 16) & 0xff)]! ^
          t[1024 + (y >>> 24)]! ^
          t[768 + (z & 0xff)]! ^
          t[512 + ((z >>> 8) & 0xff)]! ^
          t[256 + ((z >>> 16) & 0xff)]! ^
          t[z >>> 24]!;
      }
      i += words * 16;
    }
    while (i < n) c = t[(c ^ b[i++]!) & 0xff]! ^ (c >>> 8);
    return c;
  };
}

const crc32cUpdate = makeCrc32Update(crc32Tables(0x82f63b78));
let crc32JsUpdate: ((crc: number, b: Uint8Array) => number) | undefined;

/** CRC-32 (zlib/PNG/Ethernet) of `b`, continuing from a previous result `prev` (0 to start). */
export function crc32(b: Uint8Array, prev = 0): number {
  if (zlibCrc32 !== undefined) return zlibCrc32(b, prev) >>> 0;
  return crc32Js(b, prev);
}

/** The table-driven CRC-32, used when the runtime has no `zlib.crc32`. */
export function crc32Js(b: Uint8Array, prev = 0): number {
  crc32JsUpdate ??= makeCrc32Update(crc32Tables(0xedb88320));
  return ~crc32JsUpdate(~prev, b) >>> 0;
}

/** CRC-32C (Castagnoli, reflected 0x82F63B78) of `b`, continuing from a previous result `prev`. */
export function crc32c(b: Uint8Array, prev = 0): number {
  return ~crc32cUpdate(~prev, b) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// CRC-64/NVME: reflected polynomial 0x9A6C9329AC4BC9B5, init and xorout all ones. The 64-bit
// register is kept as two 32-bit halves; tables hold the low and high halves separately.

const CRC64_POLY_HI = 0x9a6c9329;
const CRC64_POLY_LO = 0xac4bc9b5;

/** Slicing-by-16 tables for CRC-64/NVME, the low and high 32-bit halves of each entry apart. */
function crc64NvmeTables(): { lo: Int32Array; hi: Int32Array } {
  const lo = new Int32Array(16 * 256);
  const hi = new Int32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let l = n;
    let h = 0;
    for (let k = 0; k < 8; k++) {
      const bit = l & 1;
      l = (l >>> 1) | ((h & 1) << 31);
      h = h >>> 1;
      if (bit) {
        l ^= CRC64_POLY_LO;
        h ^= CRC64_POLY_HI;
      }
    }
    lo[n] = l;
    hi[n] = h;
  }
  for (let n = 0; n < 256; n++) {
    let l = lo[n]!;
    let h = hi[n]!;
    for (let k = 1; k < 16; k++) {
      // c = T0[c & 0xff] ^ (c >>> 8), on the 64-bit register (h:l).
      const idx = l & 0xff;
      const sl = (l >>> 8) | (h << 24);
      const sh = h >>> 8;
      l = lo[idx]! ^ sl;
      h = hi[idx]! ^ sh;
      lo[k * 256 + n] = l;
      hi[k * 256 + n] = h;
    }
  }
  return { lo, hi };
}

// Module-level constants (not a lazily filled cache): V8 then knows the tables' length in the
// hot loop and drops the bounds checks, nearly doubling the speed.
const CRC64_TABLES = crc64NvmeTables();
const CRC64_LO = CRC64_TABLES.lo;
const CRC64_HI = CRC64_TABLES.hi;

/**
 * Update the (pre-inverted) CRC-64/NVME register `[hi, lo]` with `b`; returns the new register.
 * Slicing-by-16 over aligned 32-bit words on little-endian hosts, bytewise otherwise.
 */
function crc64Update(regHi: number, regLo: number, b: Uint8Array): [number, number] {
  const TL = CRC64_LO;
  const TH = CRC64_HI;
  let l = regLo | 0;
  let h = regHi | 0;
  let i = 0;
  const n = b.length;
  if (LITTLE_ENDIAN && n >= WORDWISE_MIN) {
    while (((b.byteOffset + i) & 3) !== 0) {
      const idx = (l ^ b[i++]!) & 0xff;
      const sl = (l >>> 8) | (h << 24);
      const sh = h >>> 8;
      l = TL[idx]! ^ sl;
      h = TH[idx]! ^ sh;
    }
    const words = (n - i) >>> 4;
    const w = new Int32Array(b.buffer, b.byteOffset + i, words * 4);
    for (let j = 0; j < w.length; j += 4) {
      const x = l ^ w[j]!;
      const y = h ^ w[j + 1]!;
      const z = w[j + 2]!;
      const u = w[j + 3]!;
      const i0 = 3840 + (x & 0xff);
      const i1 = 3584 + ((x >>> 8) & 0xff);
      const i2 = 3328 + ((x >>> 16) & 0xff);
      const i3 = 3072 + (x >>> 24);
      const i4 = 2816 + (y & 0xff);
      const i5 = 2560 + ((y >>> 8) & 0xff);
      const i6 = 2304 + ((y >>> 16) & 0xff);
      const i7 = 2048 + (y >>> 24);
      const i8 = 1792 + (z & 0xff);
      const i9 = 1536 + ((z >>> 8) & 0xff);
      const i10 = 1280 + ((z >>> 16) & 0xff);
      const i11 = 1024 + (z >>> 24);
      const i12 = 768 + (u & 0xff);
      const i13 = 512 + ((u >>> 8) & 0xff);
      const i14 = 256 + ((u >>> 16) & 0xff);
      const i15 = u >>> 24;
      l =
        TL[i0]! ^ TL[i1]! ^ TL[i2]! ^ TL[i3]! ^ TL[i4]! ^ TL[i5]! ^ TL[i6]! ^ TL[i7]! ^
        TL[i8]! ^ TL[i9]! ^ TL[i10]! ^ TL[i11]! ^ TL[i12]! ^ TL[i13]! ^ TL[i14]! ^ TL[i15]!;
      h =
        TH[i0]! ^ TH[i1]! ^ TH[i2]! ^ TH[i3]! ^ TH[i4]! ^ TH[i5]! ^ TH[i6]! ^ TH[i7]! ^
        TH[i8]! ^ TH[i9]! ^ TH[i10]! ^ TH[i11]! ^ TH[i12]! ^ TH[i13]! ^ TH[i14]! ^ TH[i15]!;
    }
    i += words * 16;
  }
  while (i < n) {
    const idx = (l ^ b[i++]!) & 0xff;
    const sl = (l >>> 8) | (h << 24);
    const sh = h >>> 8;
    l = TL[idx]! ^ sl;
    h = TH[idx]! ^ sh;
  }
  return [h, l];
}

/** CRC-64/NVME of `b` as a bigint (for tests and one-shot use). */
export function crc64nvme(b: Uint8Array): bigint {
  const [h, l] = crc64Update(-1, -1, b);
  return (BigInt(~h >>> 0) << 32n) | BigInt(~l >>> 0);
}

// ---------------------------------------------------------------------------------------------

class Crc32Like implements Checksum {
  private value = 0;
  constructor(
    readonly algorithm: "CRC32" | "CRC32C",
    private readonly fn: (b: Uint8Array, prev: number) => number,
  ) {}
  update(b: Uint8Array): void {
    this.value = this.fn(b, this.value);
  }
  digest(): Buffer {
    const out = Buffer.allocUnsafe(4);
    out.writeUInt32BE(this.value >>> 0, 0);
    return out;
  }
  digestBase64(): string {
    return this.digest().toString("base64");
  }
}

class Crc64Nvme implements Checksum {
  readonly algorithm = "CRC64NVME" as const;
  private hi = -1;
  private lo = -1;
  update(b: Uint8Array): void {
    [this.hi, this.lo] = crc64Update(this.hi, this.lo, b);
  }
  digest(): Buffer {
    const out = Buffer.allocUnsafe(8);
    out.writeUInt32BE(~this.hi >>> 0, 0);
    out.writeUInt32BE(~this.lo >>> 0, 4);
    return out;
  }
  digestBase64(): string {
    return this.digest().toString("base64");
  }
}

class CryptoChecksum implements Checksum {
  private readonly hash: Hash;
  constructor(readonly algorithm: "SHA1" | "SHA256") {
    this.hash = createHash(algorithm === "SHA1" ? "sha1" : "sha256");
  }
  update(b: Uint8Array): void {
    this.hash.update(b);
  }
  digest(): Buffer {
    return this.hash.copy().digest();
  }
  digestBase64(): string {
    return this.digest().toString("base64");
  }
}

export function newChecksum(alg: ChecksumAlgorithm): Checksum {
  switch (alg) {
    case "CRC32":
      return new Crc32Like("CRC32", crc32);
    case "CRC32C":
      return new Crc32Like("CRC32C", crc32c);
    case "CRC64NVME":
      return new Crc64Nvme();
    case "SHA1":
    case "SHA256":
      return new CryptoChecksum(alg);
  }
}

/** The checksum of a whole buffer, base64 (convenience). */
export function checksumBase64(alg: ChecksumAlgorithm, data: Uint8Array): string {
  const c = newChecksum(alg);
  c.update(data);
  return c.digestBase64();
}

// ---------------------------------------------------------------------------------------------
// Request headers.

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Whether `value` is the canonical base64 of exactly the digest size of `alg`. */
export function isValidChecksumValue(alg: ChecksumAlgorithm, value: string): boolean {
  const bytes = DIGEST_BYTES[alg];
  if (value.length !== 4 * Math.ceil(bytes / 3) || !BASE64_RE.test(value)) return false;
  const decoded = Buffer.from(value, "base64");
  // Round-tripping rejects non-canonical encodings (stray padding, non-zero trailing bits).
  return decoded.length === bytes && decoded.toString("base64") === value;
}

/** Throws InvalidDigest unless `value` is a well-formed `alg` checksum (base64 of the digest). */
export function validateChecksumValue(alg: ChecksumAlgorithm, value: string): void {
  if (!isValidChecksumValue(alg, value)) {
    throw s3.invalidDigest(`The value specified in the ${checksumHeaderName(alg)} header is not a valid ${alg} checksum.`);
  }
}

export interface RequestChecksum {
  algorithm: ChecksumAlgorithm;
  /** "header": `value` is the expected checksum; "trailer": it arrives as the trailer `name`. */
  location: "header" | "trailer";
  /** The header or trailer name, e.g. `x-amz-checksum-crc32`. */
  name: string;
  /** The expected base64 value (header location only; validated). */
  value?: string;
}

type Headers = Record<string, string | string[] | undefined>;

function single(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) {
    if (v.length === 0) return undefined;
    if (v.length > 1) throw s3.invalidRequest(`Multiple ${name} headers are not allowed.`);
    return v[0]!.trim();
  }
  return v.trim();
}

/**
 * Which flexible checksum a request carries, if any: exactly one `x-amz-checksum-<alg>` header,
 * or one `x-amz-checksum-<alg>` named in `x-amz-trailer` (its value then comes in the aws-chunked
 * trailers — validate it with {@link validateChecksumValue} once received). When
 * `x-amz-sdk-checksum-algorithm` is present it must agree. Malformed values → InvalidDigest;
 * conflicting or incomplete declarations → InvalidRequest.
 */
export function checksumFromHeaders(headers: Headers): RequestChecksum | undefined {
  const found: RequestChecksum[] = [];
  for (const alg of CHECKSUM_ALGORITHMS) {
    const name = checksumHeaderName(alg);
    const value = single(headers, name);
    if (value !== undefined) found.push({ algorithm: alg, location: "header", name, value });
  }
  const trailerHeader = single(headers, "x-amz-trailer");
  if (trailerHeader !== undefined && trailerHeader !== "") {
    for (const raw of trailerHeader.split(",")) {
      const name = raw.trim().toLowerCase();
      if (name === "") continue;
      if (!name.startsWith("x-amz-checksum-")) continue;
      const alg = parseChecksumAlgorithm(name.slice("x-amz-checksum-".length));
      if (alg === undefined) throw s3.invalidRequest(`The trailer ${name} names an unsupported checksum algorithm.`);
      found.push({ algorithm: alg, location: "trailer", name });
    }
  }
  if (found.length > 1) {
    throw s3.invalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.");
  }
  const sdkAlg = single(headers, "x-amz-sdk-checksum-algorithm");
  let declared: ChecksumAlgorithm | undefined;
  if (sdkAlg !== undefined && sdkAlg !== "") {
    declared = parseChecksumAlgorithm(sdkAlg);
    if (declared === undefined) throw s3.invalidRequest("Value for x-amz-sdk-checksum-algorithm header is invalid.");
  }
  const result = found[0];
  if (result === undefined) {
    if (declared !== undefined) {
      throw s3.invalidRequest(
        "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found.",
      );
    }
    return undefined;
  }
  if (declared !== undefined && declared !== result.algorithm) {
    throw s3.invalidRequest("Value for x-amz-sdk-checksum-algorithm header is invalid.");
  }
  if (result.value !== undefined) validateChecksumValue(result.algorithm, result.value);
  return result;
}
