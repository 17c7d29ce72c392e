/**
 * AWS Signature Version 4 verification, as Amazon S3 does it: the `Authorization` header form and
 * the presigned-URL (query string) form.
 *
 * The canonical request follows S3's variant of SigV4: the URI path is not normalized (no removal
 * of `.`/`..`/empty segments) and is encoded once, not twice. The path and the query are taken as
 * received and re-encoded consistently — each path segment and each query name/value is
 * percent-decoded to bytes and encoded again with the SigV4 unreserved set (A-Z a-z 0-9 - _ . ~),
 * `/` kept between path segments. `+` in the query is a literal plus (S3 SigV4 clients encode
 * spaces as `%20` and a plus as `%2B`). If the signature does not match, two other readings are
 * tried: the raw path exactly as sent (some clients sign what they send, e.g. a bare `+` or `!`
 * in a key) and, when the query holds a bare `+`, `+` as a space (form encoding, as MinIO reads
 * it). Each is still a signature over the received bytes, so nothing unsigned gets through.
 *
 * Anything present in the request that starts with `x-amz-` must be signed (S3's rule: "There
 * were headers present in the request which were not signed"); `host` must always be signed.
 * Signatures are compared in constant time.
 *
 * The verifier only authenticates the request line and headers. The body is the caller's: for
 * `sha256` payloads feed it through {@link Sha256Verifier}; for `streaming-*` payloads decode it
 * with `decodeAwsChunked` (./chunked.ts) using the returned signing key, seed signature, date and
 * scope.
 *
 * Headers: pass node's `req.headersDistinct` (arrays) for exact handling of repeated headers —
 * SigV4 joins repeated values with `,` while node's `req.headers` joins most of them with `, `.
 */
import { createHash, createHmac, timingSafeEqual, type Hash } from "node:crypto";
import { S3Error, s3 } from "./errors.js";

export interface Credentials {
  /** The secret access key for an access key id, or undefined when the key is unknown. */
  secretFor(accessKeyId: string): string | undefined;
}

export interface SignedRequestParts {
  method: string;
  /** The request path as received: percent-encoded, without the query. */
  rawPath: string;
  /** The query string after `?`, as received ("" when none). */
  rawQuery: string;
  /** Request headers with lowercase names (node's IncomingHttpHeaders or headersDistinct). */
  headers: Record<string, string | string[] | undefined>;
}

export type PayloadMode =
  | { kind: "unsigned" }
  | { kind: "sha256"; hex: string }
  | { kind: "streaming-signed" }
  | { kind: "streaming-signed-trailer" }
  | { kind: "streaming-unsigned-trailer" };

export interface Authenticated {
  accessKeyId: string;
  region: string;
  /** The request timestamp in ISO 8601 basic format (YYYYMMDD'T'HHMMSS'Z'), as signed. */
  amzDate: string;
  /** The credential scope: `YYYYMMDD/region/s3/aws4_request`. */
  scope: string;
  /** The derived SigV4 signing key (for chunk and trailer signatures). */
  signingKey: Buffer;
  /** The request's (verified) signature: the seed of a streaming body's signature chain. */
  seedSignature: string;
  payload: PayloadMode;
  presigned: boolean;
}

export interface VerifyOptions {
  /** The current time in ms since the epoch (default Date.now()). */
  now?: number;
  /** When set, a credential scope naming another region is rejected (AuthorizationHeaderMalformed). */
  region?: string;
  /** Largest accepted difference between the request time and now (default 15 minutes). */
  maxSkewMs?: number;
}

export const ALGORITHM = "AWS4-HMAC-SHA256";
export const SERVICE = "s3";
const TERMINATOR = "aws4_request";
const DEFAULT_MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGNED_EXPIRES = 604800;

export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
export const STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
export const STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
export const STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ---------------------------------------------------------------------------------------------
// Encoding.

/** Unreserved bytes of RFC 3986 (SigV4's set): A-Z a-z 0-9 - _ . ~ */
const UNRESERVED = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  UNRESERVED[c] =
    (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f || c === 0x2e || c === 0x7e
      ? 1
      : 0;
}
const HEX = "0123456789ABCDEF";

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * The bytes of a string received from node's HTTP parser, which decodes the request line and
 * header values as latin1 (one char per byte): latin1 when every char fits a byte, else UTF-8
 * (a string built in JavaScript).
 */
export function wireBytes(s: string): Buffer {
  // eslint-disable-next-line no-control-regex
  return /^[\u0000-\u00ff]*$/.test(s) ? Buffer.from(s, "latin1") : Buffer.from(s, "utf8");
}

/** Percent-decode `s` to bytes; `%` not followed by two hex digits is kept literally; `+` stays `+`. */
export function percentDecodeBytes(s: string): Buffer {
  const src = wireBytes(s);
  if (!src.includes(0x25)) return src;
  const out = Buffer.allocUnsafe(src.length);
  let o = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x25 && i + 2 < src.length) {
      const h = hexVal(src[i + 1]!);
      const l = hexVal(src[i + 2]!);
      if (h >= 0 && l >= 0) {
        out[o++] = (h << 4) | l;
        i += 2;
        continue;
      }
    }
    out[o++] = c;
  }
  return out.subarray(0, o);
}

/** Percent-decode to a string (UTF-8; invalid sequences become U+FFFD). */
export function percentDecode(s: string): string {
  return percentDecodeBytes(s).toString("utf8");
}

/** SigV4 URI-encode bytes: unreserved bytes as-is, everything else `%XX` (uppercase hex). */
function encodeBytes(b: Uint8Array): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let out = "";
  let runStart = 0;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]!;
    if (UNRESERVED[c] === 1) continue;
    if (i > runStart) out += buf.toString("latin1", runStart, i);
    out += "%" + HEX[c >> 4]! + HEX[c & 15]!;
    runStart = i + 1;
  }
  if (runStart < buf.length) out += buf.toString("latin1", runStart, buf.length);
  return out;
}

/** SigV4 URI-encode a string (UTF-8), `/` included. */
export function uriEncode(s: string): string {
  return encodeBytes(Buffer.from(s, "utf8"));
}

/** Re-encode a received component: percent-decode to bytes, then SigV4-encode. */
function reencode(raw: string): string {
  // Fast path: already canonical (only unreserved characters and uppercase %XX escapes).
  if (/^(?:[A-Za-z0-9\-_.~]|%[0-9A-F]{2})*$/.test(raw)) {
    // Escapes of unreserved characters (e.g. %41) must still be decoded; rare, so check.
    if (!/%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)/.test(raw)) return raw;
  }
  return encodeBytes(percentDecodeBytes(raw));
}

/** The canonical URI of a raw path: every segment re-encoded, `/` kept; never normalized. */
export function canonicalUri(rawPath: string): string {
  if (rawPath === "") return "/";
  return rawPath.split("/").map(reencode).join("/");
}

interface QueryParam {
  rawName: string;
  rawValue: string;
  /** Decoded name (UTF-8). */
  name: string;
}

function parseQuery(rawQuery: string): QueryParam[] {
  const out: QueryParam[] = [];
  if (rawQuery === "") return out;
  for (const piece of rawQuery.split("&")) {
    if (piece === "") continue;
    const eq = piece.indexOf("=");
    const rawName = eq < 0 ? piece : piece.slice(0, eq);
    const rawValue = eq < 0 ? "" : piece.slice(eq + 1);
    out.push({ rawName, rawValue, name: percentDecode(rawName) });
  }
  return out;
}

/**
 * The canonical query string: names and values re-encoded, sorted by name then value. `+` is a
 * literal plus unless `plusAsSpace` (the form-encoding reading, tried only as a fallback).
 */
function canonicalQuery(params: QueryParam[], exclude: string | undefined, plusAsSpace = false): string {
  const pairs: [string, string][] = [];
  const re = plusAsSpace ? (raw: string): string => reencode(raw.replace(/\+/g, "%20")) : reencode;
  for (const p of params) {
    if (exclude !== undefined && p.name === exclude) continue;
    pairs.push([re(p.rawName), re(p.rawValue)]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join("&");
}

function canonicalHeaderValue(v: string | string[] | undefined): string {
  if (v === undefined) return "";
  const one = (s: string): string => s.replace(/\s+/g, " ").trim();
  return Array.isArray(v) ? v.map(one).join(",") : one(v);
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures.

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The SigV4 signing key: HMAC chain over date (YYYYMMDD), region, service and "aws4_request". */
export function signingKey(secret: string, date: string, region: string, service: string = SERVICE): Buffer {
  const kDate = hmac(`AWS4${secret}`, date);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, TERMINATOR);
}

const keyCache = new Map<string, { secret: string; key: Buffer }>();
const KEY_CACHE_MAX = 256;

function cachedSigningKey(accessKeyId: string, secret: string, date: string, region: string): Buffer {
  const id = `${accessKeyId}\u0000${date}\u0000${region}`;
  const hit = keyCache.get(id);
  if (hit !== undefined && hit.secret === secret) return hit.key;
  const key = signingKey(secret, date, region, SERVICE);
  keyCache.delete(id);
  keyCache.set(id, { secret, key });
  if (keyCache.size > KEY_CACHE_MAX) {
    const oldest = keyCache.keys().next().value;
    if (oldest !== undefined) keyCache.delete(oldest);
  }
  return key;
}

/** Hex HMAC-SHA256 of a string to sign under a signing key. */
export function signString(key: Buffer, stringToSign: string): string {
  return createHmac("sha256", key).update(stringToSign, "utf8").digest("hex");
}

const SIG_RE = /^[0-9a-f]{64}$/;

/** Constant-time comparison of two lowercase hex signatures (false if `provided` is malformed). */
export function signaturesEqual(expectedHex: string, provided: string): boolean {
  if (!SIG_RE.test(provided) || !SIG_RE.test(expectedHex)) return false;
  return timingSafeEqual(Buffer.from(expectedHex, "hex"), Buffer.from(provided, "hex"));
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers.

function headerOne(headers: SignedRequestParts["headers"], name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.length === 0 ? undefined : v.join(",");
  return v;
}

const AMZ_DATE_RE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

/** Parse an ISO 8601 basic timestamp (20130524T000000Z) to ms, or undefined. */
export function parseAmzDate(s: string): number | undefined {
  const m = AMZ_DATE_RE.exec(s);
  if (m === null) return undefined;
  const [y, mo, d, h, mi, se] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  const back = new Date(t);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) return undefined;
  return t;
}

/** Format ms as an ISO 8601 basic timestamp. */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z").replace(/[-:]/g, "");
}

interface ParsedCredential {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
}

/** Parse `AKID/YYYYMMDD/region/s3/aws4_request`; `fail(msg)` builds the error to throw. */
function parseCredential(value: string, fail: (m: string) => S3Error, expectRegion: string | undefined): ParsedCredential {
  const parts = value.split("/");
  if (parts.length !== 5 || parts[0] === "" || !/^\d{8}$/.test(parts[1]!) || parts[2] === "") {
    throw fail(`the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  }
  const [accessKeyId, date, region, service, terminator] = parts as [string, string, string, string, string];
  if (service !== SERVICE) throw fail(`incorrect service "${service}". This endpoint belongs to "${SERVICE}".`);
  if (terminator !== TERMINATOR) throw fail(`incorrect terminal "${terminator}". This endpoint uses "${TERMINATOR}".`);
  if (expectRegion !== undefined && region !== expectRegion) {
    const err = fail(`the region '${region}' is wrong; expecting '${expectRegion}'`);
    err.details["Region"] = expectRegion;
    throw err;
  }
  return { accessKeyId, date, region, service };
}

function parsePayloadMode(value: string): PayloadMode | undefined {
  switch (value) {
    case UNSIGNED_PAYLOAD:
      return { kind: "unsigned" };
    case STREAMING_SIGNED:
      return { kind: "streaming-signed" };
    case STREAMING_SIGNED_TRAILER:
      return { kind: "streaming-signed-trailer" };
    case STREAMING_UNSIGNED_TRAILER:
      return { kind: "streaming-unsigned-trailer" };
    default:
      return /^[0-9a-fA-F]{64}$/.test(value) ? { kind: "sha256", hex: value.toLowerCase() } : undefined;
  }
}

function invalidContentSha256(): S3Error {
  return s3.invalidArgument(
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
    "x-amz-content-sha256",
  );
}

/** Parse and validate a SignedHeaders list; `fail` builds the error for a malformed list. */
function parseSignedHeaders(value: string, fail: (m: string) => S3Error): string[] {
  if (value === "") throw fail("the SignedHeaders list is empty.");
  const names = value.split(";");
  for (const n of names) {
    if (n === "" || n !== n.toLowerCase() || /[\s:]/.test(n)) throw fail(`the SignedHeaders list is mal-formed ("${value}").`);
  }
  if (!names.includes("host")) throw fail("'Host' must be a 'SignedHeader' in the AWS Authorization.");
  return names;
}

/** Every `x-amz-*` header present must be signed (S3's rule). */
function checkUnsignedAmzHeaders(headers: SignedRequestParts["headers"], signed: string[]): void {
  const set = new Set(signed);
  const missing: string[] = [];
  for (const name of Object.keys(headers)) {
    if (headers[name] === undefined) continue;
    const lower = name.toLowerCase();
    if (lower.startsWith("x-amz-") && !set.has(lower)) missing.push(lower);
  }
  if (missing.length > 0) {
    throw new S3Error("AccessDenied", 403, "There were headers present in the request which were not signed", {
      HeadersNotSigned: missing.sort().join(", "),
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Verification.

interface SignatureInput {
  req: SignedRequestParts;
  params: QueryParam[];
  excludeParam: string | undefined;
  signedHeaders: string[];
  signedHeadersRaw: string;
  payloadHash: string;
  amzDate: string;
  scope: string;
  key: Buffer;
  accessKeyId: string;
  provided: string;
}

/** The canonical request as bytes (header values and a raw path are hashed as received on the wire). */
function canonicalRequestFor(input: SignatureInput, uri: string, query: string): Buffer {
  const parts: Buffer[] = [wireBytes(`${input.req.method.toUpperCase()}\n${uri}\n${query}\n`)];
  for (const name of input.signedHeaders) {
    parts.push(Buffer.from(`${name}:`, "latin1"), wireBytes(canonicalHeaderValue(input.req.headers[name])), NEWLINE);
  }
  parts.push(Buffer.from(`\n${input.signedHeadersRaw}\n${input.payloadHash}`, "utf8"));
  return Buffer.concat(parts);
}
const NEWLINE = Buffer.from("\n");

function stringToSignFor(amzDate: string, scope: string, canonicalRequest: Buffer): string {
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
}

/**
 * Compute and compare the signature: the re-encoded path and `+` as a literal plus first; on a
 * mismatch, the raw path as sent and `+` in the query as a space (form encoding) too — readings
 * some clients sign by. Every candidate is a signature over the same received bytes.
 */
function checkSignature(input: SignatureInput): void {
  const query = canonicalQuery(input.params, input.excludeParam);
  const uri = canonicalUri(input.req.rawPath);
  const canonical = canonicalRequestFor(input, uri, query);
  const sts = stringToSignFor(input.amzDate, input.scope, canonical);
  if (signaturesEqual(signString(input.key, sts), input.provided)) return;
  const rawUri = input.req.rawPath === "" ? "/" : input.req.rawPath;
  const uris = rawUri !== uri ? [uri, rawUri] : [uri];
  const queries = input.req.rawQuery.includes("+") ? [query, canonicalQuery(input.params, input.excludeParam, true)] : [query];
  for (const u of uris) {
    for (const q of queries) {
      if (u === uri && q === query) continue;
      const alt = stringToSignFor(input.amzDate, input.scope, canonicalRequestFor(input, u, q));
      if (signaturesEqual(signString(input.key, alt), input.provided)) return;
    }
  }
  const err = s3.signatureDoesNotMatch();
  Object.assign(err.details, {
    AWSAccessKeyId: input.accessKeyId,
    StringToSign: sts,
    SignatureProvided: input.provided,
    CanonicalRequest: canonical.toString("utf8"),
  });
  throw err;
}

function skewed(now: number, maxSkewMs: number, t: number): S3Error {
  const err = s3.requestTimeTooSkewed();
  Object.assign(err.details, {
    RequestTime: new Date(t).toISOString(),
    ServerTime: new Date(now).toISOString(),
    MaxAllowedSkewMilliseconds: String(maxSkewMs),
  });
  return err;
}

/**
 * Authenticate a request signed with SigV4 (Authorization header or presigned URL). Returns what
 * the body decoder needs; throws an S3Error (AccessDenied, SignatureDoesNotMatch,
 * InvalidAccessKeyId, RequestTimeTooSkewed, AuthorizationHeaderMalformed,
 * AuthorizationQueryParametersError, InvalidArgument, InvalidRequest) otherwise.
 */
export function verifySigV4(req: SignedRequestParts, credentials: Credentials, options: VerifyOptions = {}): Authenticated {
  const now = options.now ?? Date.now();
  const maxSkewMs = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  const params = parseQuery(req.rawQuery);
  const authorization = headerOne(req.headers, "authorization");
  const queryAuth = params.some((p) => p.name === "X-Amz-Algorithm" || p.name === "X-Amz-Credential" || p.name === "X-Amz-Signature");

  if (authorization !== undefined && queryAuth) {
    throw s3.invalidArgument(
      "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
      "Authorization",
    );
  }
  if (queryAuth) return verifyPresigned(req, params, credentials, now, maxSkewMs, options.region);
  if (authorization !== undefined) return verifyHeader(req, params, authorization, credentials, now, maxSkewMs, options.region);
  if (params.some((p) => p.name === "AWSAccessKeyId") && params.some((p) => p.name === "Signature")) {
    throw s3.invalidRequest("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.");
  }
  throw s3.accessDenied();
}

function verifyHeader(
  req: SignedRequestParts,
  params: QueryParam[],
  authorization: string,
  credentials: Credentials,
  now: number,
  maxSkewMs: number,
  expectRegion: string | undefined,
): Authenticated {
  const malformed = (m: string): S3Error => s3.authorizationHeaderMalformed(`The authorization header is malformed; ${m}`);
  const auth = authorization.trim();
  const sp = auth.search(/\s/);
  const scheme = sp < 0 ? auth : auth.slice(0, sp);
  if (scheme !== ALGORITHM) {
    if (scheme === "AWS" || scheme === "AWS4-ECDSA-P256-SHA256") {
      throw s3.invalidRequest("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.");
    }
    throw s3.invalidArgument("Unsupported Authorization Type", "Authorization");
  }
  const fields = new Map<string, string>();
  for (const piece of (sp < 0 ? "" : auth.slice(sp + 1)).split(",")) {
    const item = piece.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    if (eq <= 0) throw malformed(`the authorization component "${item}" is malformed.`);
    const k = item.slice(0, eq).trim();
    const v = item.slice(eq + 1).trim();
    if (fields.has(k)) throw malformed(`the authorization component "${k}" is repeated.`);
    fields.set(k, v);
  }
  const credential = fields.get("Credential");
  const signedHeadersRaw = fields.get("SignedHeaders");
  const signature = fields.get("Signature");
  if (credential === undefined) throw malformed("the Credential component is missing.");
  if (signedHeadersRaw === undefined) throw malformed("the SignedHeaders component is missing.");
  if (signature === undefined) throw malformed("the Signature component is missing.");
  for (const k of fields.keys()) {
    if (k !== "Credential" && k !== "SignedHeaders" && k !== "Signature") throw malformed(`unknown authorization component "${k}".`);
  }
  const cred = parseCredential(credential, malformed, expectRegion);
  const signedHeaders = parseSignedHeaders(signedHeadersRaw, malformed);

  // The request time: x-amz-date, else Date.
  let t: number | undefined;
  let dateHeader: string;
  const xAmzDate = headerOne(req.headers, "x-amz-date");
  if (xAmzDate !== undefined) {
    t = parseAmzDate(xAmzDate.trim());
    dateHeader = "x-amz-date";
  } else {
    const date = headerOne(req.headers, "date");
    if (date !== undefined) {
      const ms = Date.parse(date);
      t = Number.isNaN(ms) ? undefined : Math.floor(ms / 1000) * 1000;
    }
    dateHeader = "date";
  }
  if (t === undefined) throw s3.accessDenied("AWS authentication requires a valid Date or x-amz-date header");
  if (!signedHeaders.includes(dateHeader)) {
    throw s3.accessDenied(`The ${dateHeader} header must be signed ('x-amz-date' or 'date' in SignedHeaders).`);
  }
  const amzDate = formatAmzDate(t);
  if (cred.date !== amzDate.slice(0, 8)) {
    throw malformed(`Invalid credential date "${cred.date}". This date is not the same as X-Amz-Date: "${amzDate.slice(0, 8)}".`);
  }
  if (Math.abs(now - t) > maxSkewMs) throw skewed(now, maxSkewMs, t);

  const secret = credentials.secretFor(cred.accessKeyId);
  if (secret === undefined) throw s3.invalidAccessKeyId();

  const contentSha = headerOne(req.headers, "x-amz-content-sha256");
  if (contentSha === undefined) throw s3.invalidRequest("Missing required header for this request: x-amz-content-sha256");
  const payload = parsePayloadMode(contentSha.trim());
  if (payload === undefined) throw invalidContentSha256();

  checkUnsignedAmzHeaders(req.headers, signedHeaders);

  const scope = `${cred.date}/${cred.region}/${SERVICE}/${TERMINATOR}`;
  const key = cachedSigningKey(cred.accessKeyId, secret, cred.date, cred.region);
  checkSignature({
    req,
    params,
    excludeParam: undefined,
    signedHeaders,
    signedHeadersRaw,
    payloadHash: contentSha.trim(),
    amzDate,
    scope,
    key,
    accessKeyId: cred.accessKeyId,
    provided: signature,
  });
  return { accessKeyId: cred.accessKeyId, region: cred.region, amzDate, scope, signingKey: key, seedSignature: signature, payload, presigned: false };
}

function verifyPresigned(
  req: SignedRequestParts,
  params: QueryParam[],
  credentials: Credentials,
  now: number,
  maxSkewMs: number,
  expectRegion: string | undefined,
): Authenticated {
  const qerr = (m: string): S3Error => s3.authorizationQueryParametersError(m);
  const get = (name: string, anyCase = false): string | undefined => {
    let found: string | undefined;
    const lower = name.toLowerCase();
    for (const p of params) {
      if (anyCase ? p.name.toLowerCase() !== lower : p.name !== name) continue;
      if (found !== undefined) throw qerr(`The ${name} parameter must be given once.`);
      found = percentDecode(p.rawValue);
    }
    return found;
  };
  const algorithm = get("X-Amz-Algorithm");
  const credential = get("X-Amz-Credential");
  const date = get("X-Amz-Date");
  const expires = get("X-Amz-Expires");
  const signedHeadersRaw = get("X-Amz-SignedHeaders");
  const signature = get("X-Amz-Signature");
  if (
    algorithm === undefined ||
    credential === undefined ||
    date === undefined ||
    expires === undefined ||
    signedHeadersRaw === undefined ||
    signature === undefined
  ) {
    throw qerr(
      "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
    );
  }
  if (algorithm !== ALGORITHM) throw qerr(`X-Amz-Algorithm only supports "${ALGORITHM}"`);
  const cred = parseCredential(credential, (m) => qerr(`Error parsing the X-Amz-Credential parameter; ${m}`), expectRegion);
  const t = parseAmzDate(date);
  if (t === undefined) throw qerr(`X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'"`);
  if (!/^\d{1,7}$/.test(expires)) throw qerr("X-Amz-Expires should be a number");
  const expiresSec = Number(expires);
  if (expiresSec < 1) throw qerr("X-Amz-Expires must be non-negative");
  if (expiresSec > MAX_PRESIGNED_EXPIRES) throw qerr(`X-Amz-Expires must be less than a week (in seconds) that is ${MAX_PRESIGNED_EXPIRES}`);
  if (cred.date !== date.slice(0, 8)) {
    throw qerr(`Invalid credential date "${cred.date}". This date is not the same as X-Amz-Date: "${date.slice(0, 8)}".`);
  }
  const signedHeaders = parseSignedHeaders(signedHeadersRaw, (m) => qerr(`Error parsing the X-Amz-SignedHeaders parameter; ${m}`));

  if (t - now > maxSkewMs) throw s3.accessDenied("Request is not valid yet");
  if (now > t + expiresSec * 1000) {
    const err = s3.accessDenied("Request has expired");
    Object.assign(err.details, {
      "X-Amz-Expires": String(expiresSec),
      Expires: new Date(t + expiresSec * 1000).toISOString(),
      ServerTime: new Date(now).toISOString(),
    });
    throw err;
  }

  const secret = credentials.secretFor(cred.accessKeyId);
  if (secret === undefined) throw s3.invalidAccessKeyId();

  // Signers that hoist a lowercase x-amz-content-sha256 header into the query name it so.
  const contentSha = get("X-Amz-Content-Sha256", true);
  let payloadHash = UNSIGNED_PAYLOAD;
  let payload: PayloadMode = { kind: "unsigned" };
  if (contentSha !== undefined) {
    const mode = parsePayloadMode(contentSha);
    if (mode === undefined) throw invalidContentSha256();
    payloadHash = contentSha;
    payload = mode;
  }

  checkUnsignedAmzHeaders(req.headers, signedHeaders);

  const scope = `${cred.date}/${cred.region}/${SERVICE}/${TERMINATOR}`;
  const key = cachedSigningKey(cred.accessKeyId, secret, cred.date, cred.region);
  checkSignature({
    req,
    params,
    excludeParam: "X-Amz-Signature",
    signedHeaders,
    signedHeadersRaw,
    payloadHash,
    amzDate: date,
    scope,
    key,
    accessKeyId: cred.accessKeyId,
    provided: signature,
  });
  return { accessKeyId: cred.accessKeyId, region: cred.region, amzDate: date, scope, signingKey: key, seedSignature: signature, payload, presigned: true };
}

// ---------------------------------------------------------------------------------------------

/**
 * Verifies a body against the hex SHA-256 the request signed (`x-amz-content-sha256`). Feed every
 * body byte to `update`, then call `verify` before committing anything.
 */
export class Sha256Verifier {
  private readonly hash: Hash = createHash("sha256");
  private readonly expected: string;

  constructor(expectedHex: string) {
    this.expected = expectedHex.toLowerCase();
  }

  update(b: Uint8Array): void {
    this.hash.update(b);
  }

  /** Throws XAmzContentSHA256Mismatch (400) when the body's hash differs. Returns the hex digest. */
  verify(): string {
    const actual = this.hash.digest("hex");
    if (!signaturesEqual(actual, this.expected)) {
      throw new S3Error("XAmzContentSHA256Mismatch", 400, "The provided 'x-amz-content-sha256' header does not match what was computed.", {
        ClientComputedContentSHA256: this.expected,
        S3ComputedContentSHA256: actual,
      });
    }
    return actual;
  }
}
