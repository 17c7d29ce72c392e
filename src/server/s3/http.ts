/** Small HTTP helpers of the S3 layer: dates, ETags, user metadata, standard headers, ranges. */
import type { IncomingMessage } from "node:http";
import type { VersionHeader } from "../../meta/types.js";
import type { RangeRequest } from "../../store/store.js";
import { S3Error, s3 } from "./errors.js";

/** Headers S3 stores with an object and returns on reads. */
export const STORED_HEADERS = ["cache-control", "content-disposition", "content-encoding", "content-language", "expires"] as const;

/** Most bytes of user metadata (names + values), as S3. */
export const MAX_USER_METADATA = 2048;

export function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

export function isoDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, ".000Z");
}

export function quoteEtag(etag: string): string {
  return `"${etag}"`;
}

export function userMetadataFrom(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  let bytes = 0;
  for (const [name, value] of Object.entries(req.headers)) {
    if (!name.startsWith("x-amz-meta-") || value === undefined) continue;
    const v = Array.isArray(value) ? value.join(",") : value;
    const key = name.slice("x-amz-meta-".length);
    bytes += key.length + Buffer.byteLength(v);
    out[key] = v;
  }
  if (bytes > MAX_USER_METADATA) throw new S3Error("MetadataTooLarge", 400, `Your metadata headers exceed the maximum allowed metadata size (${MAX_USER_METADATA} bytes).`);
  return out;
}

export function storedHeadersFrom(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of STORED_HEADERS) {
    const v = header(req, name);
    if (v !== undefined && !(name === "content-encoding" && v.toLowerCase() === "aws-chunked")) {
      out[name] = name === "content-encoding" ? v.split(",").map((s) => s.trim()).filter((s) => s.toLowerCase() !== "aws-chunked").join(",") : v;
    }
  }
  if (out["content-encoding"] === "") delete out["content-encoding"];
  return out;
}

/** Tags from the `x-amz-tagging` header (URL query form). */
export function tagsFromHeader(value: string | undefined): Record<string, string> | undefined {
  if (value === undefined || value === "") return undefined;
  const tags: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(value)) {
    if (k.length === 0 || k.length > 128 || v.length > 256 || k in tags) throw new S3Error("InvalidTag", 400, "The tag provided was not a valid tag.");
    tags[k] = v;
  }
  if (Object.keys(tags).length > 10) throw new S3Error("InvalidTag", 400, "Object tags cannot be greater than 10");
  return tags;
}

/** Response headers describing a version (not the length or range). */
export function objectHeaders(v: VersionHeader, versioned: boolean): Record<string, string> {
  const h: Record<string, string> = {
    "last-modified": httpDate(v.lastModified),
    etag: quoteEtag(v.etag),
    "content-type": v.contentType,
    "accept-ranges": "bytes",
  };
  if (versioned) h["x-amz-version-id"] = v.versionId;
  for (const [k, val] of Object.entries(v.userMetadata)) h[`x-amz-meta-${k}`] = val;
  for (const [k, val] of Object.entries(v.headers ?? {})) h[k] = val;
  if (v.tags !== undefined) h["x-amz-tagging-count"] = String(Object.keys(v.tags).length);
  if (v.partSizes !== undefined) h["x-amz-mp-parts-count"] = String(v.partSizes.length);
  return h;
}

/** Parses a Range header; undefined when absent or (as S3 does) when not a single byte range. */
export function parseRange(value: string | undefined): RangeRequest | undefined {
  if (value === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (m === null) return undefined;
  const [, a, b] = m;
  if (a === "" && b === "") return undefined;
  if (a === "") return { suffix: Number(b) };
  if (b === "") return { start: Number(a) };
  if (Number(b) < Number(a)) return undefined;
  return { start: Number(a), end: Number(b) };
}

function parseHttpDate(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}

function etagMatches(list: string, etag: string): boolean {
  return list.split(",").some((e) => {
    const t = e.trim();
    return t === "*" || t.replace(/^W\//, "").replace(/^"|"$/g, "") === etag;
  });
}

/**
 * Evaluates If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since as S3 does: 412
 * PreconditionFailed, or "not-modified" (304) for GET/HEAD.
 */
export function checkConditions(req: IncomingMessage, v: VersionHeader): "ok" | "not-modified" {
  const ifMatch = header(req, "if-match");
  const ifNoneMatch = header(req, "if-none-match");
  const since = parseHttpDate(header(req, "if-modified-since"));
  const unmodifiedSince = parseHttpDate(header(req, "if-unmodified-since"));
  const modified = Math.floor(v.lastModified / 1000) * 1000;
  if (ifMatch !== undefined) {
    if (!etagMatches(ifMatch, v.etag)) throw s3.preconditionFailed();
  } else if (unmodifiedSince !== undefined && modified > unmodifiedSince) {
    throw s3.preconditionFailed();
  }
  if (ifNoneMatch !== undefined) {
    if (etagMatches(ifNoneMatch, v.etag)) return "not-modified";
  } else if (since !== undefined && modified <= since) {
    return "not-modified";
  }
  return "ok";
}

/** The copy-source conditions (x-amz-copy-source-if-*): all failures are 412. */
export function checkCopySourceConditions(req: IncomingMessage, v: VersionHeader): void {
  const ifMatch = header(req, "x-amz-copy-source-if-match");
  const ifNoneMatch = header(req, "x-amz-copy-source-if-none-match");
  const since = parseHttpDate(header(req, "x-amz-copy-source-if-modified-since"));
  const unmodifiedSince = parseHttpDate(header(req, "x-amz-copy-source-if-unmodified-since"));
  const modified = Math.floor(v.lastModified / 1000) * 1000;
  if (ifMatch !== undefined && !etagMatches(ifMatch, v.etag)) throw s3.preconditionFailed();
  if (ifMatch === undefined && unmodifiedSince !== undefined && modified > unmodifiedSince) throw s3.preconditionFailed();
  if (ifNoneMatch !== undefined && etagMatches(ifNoneMatch, v.etag)) throw s3.preconditionFailed();
  if (ifNoneMatch === undefined && since !== undefined && modified <= since) throw s3.preconditionFailed();
}

/** `x-amz-copy-source`: `/bucket/key?versionId=..` or `bucket/key`, URL-encoded. */
export function parseCopySource(value: string): { bucket: string; key: string; versionId?: string } {
  let v = value;
  let versionId: string | undefined;
  const q = v.indexOf("?");
  if (q >= 0) {
    const params = new URLSearchParams(v.slice(q + 1));
    versionId = params.get("versionId") ?? undefined;
    v = v.slice(0, q);
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(v);
  } catch {
    throw s3.invalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey", "x-amz-copy-source");
  }
  if (decoded.startsWith("/")) decoded = decoded.slice(1);
  const i = decoded.indexOf("/");
  if (i <= 0 || i === decoded.length - 1) throw s3.invalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey", "x-amz-copy-source");
  return { bucket: decoded.slice(0, i), key: decoded.slice(i + 1), ...(versionId === undefined ? {} : { versionId }) };
}
