/**
 * HTTP pieces of the WebDAV server: URL paths to file-system paths and back (hrefs), the status a
 * file-system error means, Basic authentication, byte ranges and bodies.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { STATUS_CODES } from "node:http";
import { isStowageError } from "../../errors.js";
import { isFsError, toFsError, type Errno } from "../../fs/errors.js";
import { parsePath } from "../../fs/names.js";
import type { Credentials } from "../s3/sigv4.js";
import { DAV_NS, XML_HEAD, dav, escapeXml } from "./xml.js";

/** An error answered with `status`; `body` is a DAV:error precondition element (XML) when set. */
export class HttpError extends Error {
  readonly status: number;
  readonly condition: string | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: { condition?: string; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.condition = options.condition;
    this.headers = options.headers ?? {};
  }
}

export function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}`;
}

/** A DAV:error document for a precondition or postcondition code (already XML). */
export function errorDocument(condition: string): string {
  return `${XML_HEAD}<D:error xmlns:D="${DAV_NS}">${condition}</D:error>`;
}

/** The status an errno means to a WebDAV client (docs/WEBDAV.md). */
export function statusOfErrno(code: Errno): number {
  switch (code) {
    case "ENOENT":
      return 404;
    case "EEXIST":
      return 412;
    case "ENOTEMPTY":
    case "ENOTDIR":
    case "EISDIR":
      return 409;
    case "EINVAL":
      return 400;
    case "ENAMETOOLONG":
      return 414;
    case "EXDEV":
      return 502;
    case "EPERM":
      return 403;
    case "ENOSPC":
      return 507;
    default:
      return 500;
  }
}

/** Any error as an HttpError (FsErrors and store errors by their errno). */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isStowageError(err) && err.code === "STOWAGE_INVALID_RANGE") return new HttpError(416, err.message);
  const fe = isFsError(err) ? err : toFsError(err, "webdav");
  return new HttpError(statusOfErrno(fe.code), fe.message);
}

// ---------------------------------------------------------------------------------------------
// Paths and hrefs

/** A request target inside the served tree. */
export interface DavPath {
  /** File-system path: "/", "/bucket", "/bucket/a/b". */
  path: string;
  /** Its decoded segments ([] for the root). */
  segments: string[];
}

/** Normalizes the configured prefix to "/" or "/x/y/". */
export function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? "/").trim();
  const parts = p.split("/").filter((s) => s !== "");
  return parts.length === 0 ? "/" : `/${parts.join("/")}/`;
}

/**
 * Maps a raw (percent-encoded) URL path to the file-system path, or undefined when it is outside
 * `prefix`. Segments are decoded one by one (a `%2F` cannot smuggle a slash into a name); empty
 * segments are ignored. Invalid encodings and names the view refuses are HttpErrors (400, 414).
 */
export function davPathOf(rawPath: string, prefix: string): DavPath | undefined {
  let rest: string;
  if (rawPath === prefix || rawPath + "/" === prefix) rest = "";
  else if (rawPath.startsWith(prefix)) rest = rawPath.slice(prefix.length);
  else return undefined;
  const segments: string[] = [];
  for (const raw of rest.split("/")) {
    if (raw === "") continue;
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      throw new HttpError(400, `the path segment ${JSON.stringify(raw)} is not valid percent-encoded UTF-8`);
    }
    if (seg.includes("/")) throw new HttpError(400, `a name cannot contain "/" (${JSON.stringify(raw)})`);
    segments.push(seg);
  }
  const path = "/" + segments.join("/");
  try {
    parsePath(path);
  } catch (err) {
    throw toHttpError(err);
  }
  return { path, segments };
}

/** Percent-encodes one segment (RFC 3986 unreserved characters and a few safe sub-delims stay). */
export function encodeSegment(seg: string): string {
  return encodeURIComponent(seg);
}

/** The href of a file-system path: prefix + encoded segments, a trailing "/" for collections. */
export function hrefOf(prefix: string, path: string, isDir: boolean): string {
  if (path === "/") return prefix;
  const segs = path.split("/").slice(1);
  return prefix + segs.map(encodeSegment).join("/") + (isDir ? "/" : "");
}

// ---------------------------------------------------------------------------------------------
// Headers

export function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(", ") : v;
}

/** The Depth header: "0", "1", "infinity", or `dflt` when absent; anything else is 400. */
export function depthOf(req: IncomingMessage, dflt: "0" | "1" | "infinity"): "0" | "1" | "infinity" {
  const v = header(req, "depth");
  if (v === undefined) return dflt;
  const t = v.trim().toLowerCase();
  if (t === "0" || t === "1" || t === "infinity") return t;
  throw new HttpError(400, `invalid Depth header ${JSON.stringify(v)}`);
}

/** The Overwrite header: true unless "F". */
export function overwriteOf(req: IncomingMessage): boolean {
  const v = header(req, "overwrite");
  if (v === undefined) return true;
  const t = v.trim().toUpperCase();
  if (t === "T") return true;
  if (t === "F") return false;
  throw new HttpError(400, `invalid Overwrite header ${JSON.stringify(v)}`);
}

/** RFC 1123 date (HTTP-date). */
export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** RFC 3339 date-time, whole seconds (DAV:creationdate). */
export function isoDate(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/** True when the request announces a body (Content-Length > 0, or a Transfer-Encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const te = header(req, "transfer-encoding");
  if (te !== undefined && te.trim() !== "") return true;
  const cl = header(req, "content-length");
  return cl !== undefined && Number(cl) > 0;
}

/** Reads a (small) request body: at most `max` bytes, else 413. */
export async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const cl = header(req, "content-length");
  if (cl !== undefined && Number(cl) > max) throw new HttpError(413, `request body larger than ${max} bytes`);
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    total += b.length;
    if (total > max) throw new HttpError(413, `request body larger than ${max} bytes`);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/**
 * A `Range: bytes=...` header against `size`: one span [start, end), "ignore" (absent, several
 * ranges, another unit or a syntax error: the whole body is sent, as RFC 7233 allows), or
 * "unsatisfiable" (416).
 */
export function rangeOf(value: string | undefined, size: number): { start: number; end: number } | "ignore" | "unsatisfiable" {
  if (value === undefined) return "ignore";
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value);
  if (m === null) return "ignore";
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return "ignore";
  if (a === "") {
    const suffix = Number(b);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(a);
  const last = b === "" ? Infinity : Number(b);
  if (!Number.isSafeInteger(start) || (b !== "" && !Number.isSafeInteger(last)) || last < start) return "ignore";
  if (start >= size) return "unsatisfiable";
  return { start, end: Math.min(size, last + 1) };
}

/** Constant-time comparison of two secrets. */
function sameSecret(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * Basic authentication against the S3 keys: user = access key id, password = its secret. Returns
 * the access key id, or throws 401 with a Basic challenge.
 */
export function authenticate(req: IncomingMessage, credentials: Credentials): string {
  const challenge = { headers: { "www-authenticate": 'Basic realm="stowage", charset="UTF-8"' } };
  const v = header(req, "authorization");
  if (v === undefined) throw new HttpError(401, "authentication required (Basic: access key id and secret)", challenge);
  const m = /^\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(v);
  if (m === null) throw new HttpError(401, "only Basic authentication is supported", challenge);
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) throw new HttpError(401, "malformed Basic credentials", challenge);
  const user = decoded.slice(0, colon);
  const pass = decoded.slice(colon + 1);
  const secret = credentials.secretFor(user);
  // Compare even for unknown users, so timing does not tell which ids exist.
  const ok = sameSecret(pass, secret ?? "\u0000unknown");
  if (secret === undefined || !ok) throw new HttpError(401, "invalid access key id or secret", challenge);
  return user;
}

/** A DAV:href element. */
export function hrefElement(href: string): string {
  return dav("href", escapeXml(href));
}
