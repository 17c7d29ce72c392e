/**
 * WebDAV properties of the POSIX view's entries: the live properties of RFC 4918 §15 and RFC 4331
 * (quota), computed from the file-system attributes and the object's version. No dead properties
 * are stored (docs/WEBDAV.md).
 */
import { LockManager, type DavLock } from "./locks.js";
import { hrefElement, hrefOf, httpDate, isoDate, statusLine } from "./http.js";
import { DAV_NS, dav, element, escapeXml, type PropName } from "./xml.js";

export type ResourceKind = "root" | "bucket" | "dir" | "file";

/** What the server knows of an entry. */
export interface Resource {
  /** File-system path. */
  path: string;
  kind: ResourceKind;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  mode: number;
  uid: number;
  gid: number;
  /** Files: the object's ETag, without quotes. */
  etag?: string;
  /** Files: the object's content type. */
  contentType?: string;
}

export function isCollection(r: Resource): boolean {
  return r.kind !== "file";
}

/** The quoted ETag of a file. */
export function quotedEtag(r: Resource): string | undefined {
  return r.etag === undefined || r.etag === "" ? undefined : `"${r.etag}"`;
}

const D = (name: string): PropName => ({ ns: DAV_NS, name });

/** Returned by allprop (RFC 4918 §9.1). */
export const ALLPROP: readonly PropName[] = Object.freeze(
  ["creationdate", "displayname", "getcontentlength", "getcontenttype", "getetag", "getlastmodified", "lockdiscovery", "resourcetype", "supportedlock"].map(D),
);
/** RFC 4331: only when asked for by name (not in allprop). */
export const QUOTA_PROPS: readonly PropName[] = Object.freeze(["quota-available-bytes", "quota-used-bytes"].map(D));

export interface PropContext {
  prefix: string;
  locks: LockManager;
  /** Bytes available and used (statfs), computed at most once per request. */
  quota: () => Promise<{ available: number; used: number }>;
}

export function hrefOfLockRoot(prefix: string, l: DavLock): string {
  return hrefOf(prefix, l.root, l.rootIsDir);
}

/** One DAV:activelock element. */
export function activeLock(l: DavLock, ctx: Pick<PropContext, "prefix" | "locks">): string {
  return dav(
    "activelock",
    dav("locktype", dav("write")) +
      dav("lockscope", dav(l.scope)) +
      dav("depth", l.depth) +
      (l.ownerXml === "" ? "" : dav("owner", l.ownerXml)) +
      dav("timeout", `Second-${ctx.locks.remaining(l)}`) +
      dav("locktoken", hrefElement(l.token)) +
      dav("lockroot", hrefElement(hrefOfLockRoot(ctx.prefix, l))),
  );
}

const SUPPORTED_LOCK = ["exclusive", "shared"].map((s) => dav("lockentry", dav("lockscope", dav(s)) + dav("locktype", dav("write")))).join("");

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The value of a property (inner XML, "" for an empty element), or undefined when it has none (404). */
export async function propValue(r: Resource, p: PropName, ctx: PropContext): Promise<string | undefined> {
  if (p.ns !== DAV_NS) return undefined;
  const file = r.kind === "file";
  switch (p.name) {
    case "creationdate":
      return isoDate(r.ctimeMs);
    case "displayname":
      return r.kind === "root" ? undefined : escapeXml(baseName(r.path));
    case "getcontentlength":
      return file ? String(r.size) : undefined;
    case "getcontenttype":
      return file ? escapeXml(r.contentType ?? "application/octet-stream") : undefined;
    case "getetag": {
      const e = quotedEtag(r);
      return file && e !== undefined ? escapeXml(e) : undefined;
    }
    case "getlastmodified":
      return httpDate(r.mtimeMs);
    case "resourcetype":
      return file ? "" : dav("collection");
    case "supportedlock":
      return SUPPORTED_LOCK;
    case "lockdiscovery":
      return ctx.locks
        .covering(r.path)
        .map((l) => activeLock(l, ctx))
        .join("");
    case "quota-available-bytes":
      return String((await ctx.quota()).available);
    case "quota-used-bytes":
      return String((await ctx.quota()).used);
    default:
      return undefined;
  }
}

/** The names every resource answers propname with. */
export function propNames(): PropName[] {
  return [...ALLPROP, ...QUOTA_PROPS];
}

/**
 * One DAV:response of a PROPFIND: found properties under 200, missing ones under 404 (left out
 * with `omitMissing`, for allprop: a collection has no DAV:getcontentlength at all).
 */
export async function propResponse(href: string, r: Resource, props: readonly PropName[] | "names", ctx: PropContext, omitMissing = false): Promise<string> {
  if (props === "names") {
    return dav("response", hrefElement(href) + dav("propstat", dav("prop", propNames().map((p) => element(p)).join("")) + dav("status", statusLine(200))));
  }
  const found: string[] = [];
  const missing: string[] = [];
  for (const p of props) {
    const v = await propValue(r, p, ctx);
    if (v === undefined) {
      if (!omitMissing) missing.push(element(p));
    }
    else found.push(element(p, v));
  }
  let out = hrefElement(href);
  if (found.length > 0) out += dav("propstat", dav("prop", found.join("")) + dav("status", statusLine(200)));
  if (missing.length > 0) out += dav("propstat", dav("prop", missing.join("")) + dav("status", statusLine(404)));
  return dav("response", out);
}
