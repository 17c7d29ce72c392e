/**
 * A WebDAV server (RFC 4918, classes 1 and 2) on node:http over the POSIX view (src/fs): the same
 * namespace as S3 — `/` lists the buckets, `/bucket/a/b` is the object `a/b` — so a file PUT here
 * is an object in the bucket, and every object is a file here. docs/WEBDAV.md is the user-facing
 * description (methods, status codes, locking, limits).
 *
 * Data paths:
 * - PUT streams the request body into one `ObjectStore.putObject` (memory bounded as for an S3
 *   PUT): a replaced file changes atomically when the whole body is in, an interrupted upload
 *   commits nothing, and no temporary object ever shows in S3 listings.
 * - GET streams the object's current version from the store (range-aware, with backpressure).
 * - COPY of a file is by reference (`ObjectStore.copyObject`: no data is read or written).
 * - MOVE is `StowageFs.rename` (by reference, atomic per call).
 *
 * Locks (./locks.ts) are in memory and bind WebDAV clients only.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { isStowageError } from "../../errors.js";
import { O_RDONLY, type StowageFs } from "../../fs/fs.js";
import { isFsError } from "../../fs/errors.js";
import { META_GID, META_INO, META_MODE, META_MTIME, META_UID, S_IFMT, S_IFREG, mtimeValue, dirPrefix, statOf, typeOfMode, validName, type AttrDefaults } from "../../fs/names.js";
import type { ObjectStore } from "../../store/store.js";
import type { Credentials } from "../s3/sigv4.js";
import {
  HttpError,
  authenticate,
  davPathOf,
  depthOf,
  errorDocument,
  hasBody,
  header,
  hrefElement,
  hrefOf,
  httpDate,
  normalizePrefix,
  overwriteOf,
  rangeOf,
  readBody,
  statusLine,
  toHttpError,
  type DavPath,
} from "./http.js";
import { IfHeaderError, LockManager, etagsMatch, isBelow, parentPath, parseIfHeader, parseTimeout, type DavLock, type LockDepth, type LockScope } from "./locks.js";
import { ALLPROP, activeLock, hrefOfLockRoot, isCollection, propResponse, quotedEtag, type PropContext, type Resource } from "./props.js";
import {
  DAV_NS,
  DavXmlError,
  MS_NS,
  XML_HEAD,
  dav,
  element,
  elementsOf,
  escapeXml,
  isDav,
  isEmptyElement,
  parseDavXml,
  serializeContent,
  textOf,
  type DavElement,
  type PropName,
} from "./xml.js";

export interface WebDavOptions {
  fs: StowageFs;
  /** Basic auth: user = S3 access key id, password = its secret. Undefined = no auth (tests only). */
  credentials?: Credentials;
  logger?: Logger;
  /** URL path prefix the tree is served under. Default "/". */
  prefix?: string;
  /** Largest XML request body (PROPFIND, PROPPATCH, LOCK). Default 1 MiB. */
  maxXmlBytes?: number;
  /** Clock for lock timeouts (tests). */
  now?: () => number;
}

export const ALLOW = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK";


/** Attribute defaults for computing times of listed entries (owner and mode are not shown). */
const LIST_DEFAULTS: AttrDefaults = { uid: 0, gid: 0, fileMode: 0o644, dirMode: 0o755 };

/** Microsoft's file-time properties that are accepted and not stored (docs/WEBDAV.md). */
const MS_IGNORED = new Set(["Win32CreationTime", "Win32LastAccessTime", "Win32FileAttributes"]);

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  target: DavPath;
  user: string | undefined;
}

interface Failure {
  href: string;
  status: number;
  message: string;
}

function split(path: string): { bucket: string; key: string } {
  const parts = path.split("/").slice(1);
  return { bucket: parts[0] ?? "", key: parts.slice(1).join("/") };
}

function depthOfPath(path: string): number {
  return path === "/" ? 0 : path.split("/").length - 1;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function childPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

export class WebDavServer {
  readonly #fs: StowageFs;
  readonly #store: ObjectStore;
  readonly #credentials: Credentials | undefined;
  readonly #log: Logger | undefined;
  readonly #prefix: string;
  readonly #maxXml: number;
  readonly #locks: LockManager;
  #server: Server | undefined;
  #inFlight = 0;
  #closing = false;
  #drained: (() => void) | undefined;
  /** Request bodies of uploads in progress (destroyed at close, so that they commit nothing). */
  readonly #uploads = new Set<IncomingMessage>();

  constructor(options: WebDavOptions) {
    this.#fs = options.fs;
    this.#store = options.fs.store;
    this.#credentials = options.credentials;
    this.#log = options.logger;
    this.#prefix = normalizePrefix(options.prefix);
    this.#maxXml = options.maxXmlBytes ?? 1024 * 1024;
    this.#locks = new LockManager(options.now);
  }

  /** The locks (for tests and diagnostics). */
  get locks(): LockManager {
    return this.#locks;
  }

  async listen(port: number, address: string): Promise<AddressInfo> {
    if (this.#server !== undefined) throw new Error("WebDavServer is already listening");
    const server = createServer({ requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) => this.handle(req, res));
    server.setTimeout(120_000);
    server.on("clientError", (err, socket) => {
      this.#log?.debug({ err: err.message }, "webdav client error");
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      else socket.destroy();
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, address, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  /**
   * Stops accepting connections, waits for requests in flight (up to `timeoutMs`), cuts off the
   * uploads that did not finish (they commit nothing), and drops the locks.
   */
  async close(timeoutMs = 30_000): Promise<void> {
    this.#closing = true;
    const server = this.#server;
    const closed = server === undefined ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    server?.closeIdleConnections();
    if (this.#inFlight > 0) {
      await Promise.race([new Promise<void>((resolve) => (this.#drained = resolve)), new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    }
    server?.closeAllConnections();
    for (const req of this.#uploads) req.destroy();
    await closed;
    this.#server = undefined;
    this.#locks.clear();
  }

  /** Serves one request (for embedding in another node:http server). */
  handle(req: IncomingMessage, res: ServerResponse): void {
    void this.#handle(req, res);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    this.#inFlight++;
    const method = (req.method ?? "GET").toUpperCase();
    let user: string | undefined;
    try {
      res.setHeader("server", "Stowage");
      if (this.#closing) res.setHeader("connection", "close");
      if (this.#credentials !== undefined) user = authenticate(req, this.#credentials);
      const url = req.url ?? "/";
      if (url === "*" && method === "OPTIONS") {
        this.#send(res, 200, { dav: "1, 2", allow: ALLOW, "ms-author-via": "DAV" });
        return;
      }
      const q = url.indexOf("?");
      const target = davPathOf(q < 0 ? url : url.slice(0, q), this.#prefix);
      if (target === undefined) throw new HttpError(404, `not under ${this.#prefix}`);
      const ctx: Ctx = { req, res, method, target, user };
      switch (method) {
        case "OPTIONS":
          this.#options(ctx);
          break;
        case "PROPFIND":
          await this.#propfind(ctx);
          break;
        case "PROPPATCH":
          await this.#proppatch(ctx);
          break;
        case "GET":
        case "HEAD":
          await this.#get(ctx);
          break;
        case "PUT":
          await this.#put(ctx);
          break;
        case "MKCOL":
          await this.#mkcol(ctx);
          break;
        case "DELETE":
          await this.#delete(ctx);
          break;
        case "COPY":
          await this.#copy(ctx);
          break;
        case "MOVE":
          await this.#move(ctx);
          break;
        case "LOCK":
          await this.#lock(ctx);
          break;
        case "UNLOCK":
          await this.#unlock(ctx);
          break;
        default:
          throw new HttpError(405, `method ${method} is not supported`, { headers: { allow: ALLOW } });
      }
    } catch (err) {
      this.#fail(req, res, method, err);
    } finally {
      if (!req.complete) {
        // An unread body (an answer before the upload was read): do not keep the connection.
        if (!res.headersSent) res.setHeader("connection", "close");
        req.resume();
      }
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      this.#log?.info({ method, url: req.url, status: res.statusCode, ms: Math.round(ms * 10) / 10, user }, "webdav request");
      this.#inFlight--;
      if (this.#inFlight === 0) this.#drained?.();
    }
  }

  #fail(req: IncomingMessage, res: ServerResponse, method: string, err: unknown): void {
    const e = toHttpError(err);
    if (e.status >= 500) this.#log?.error({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "webdav error");
    if (res.headersSent) {
      // The body had started: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    const xmlBody = e.condition !== undefined;
    const body = method === "HEAD" ? "" : xmlBody ? errorDocument(e.condition!) : `${e.message}\n`;
    const headers: Record<string, string> = {
      ...e.headers,
      "content-type": xmlBody ? 'application/xml; charset="utf-8"' : "text/plain; charset=utf-8",
      "content-length": String(Buffer.byteLength(body)),
    };
    if (!req.complete) headers.connection = "close";
    res.writeHead(e.status, headers);
    res.end(body);
  }

  // ------------------------------------------------------------------------------------------
  // Resources

  /** What is at `path`, or undefined. */
  async #resource(path: string): Promise<Resource | undefined> {
    let st;
    try {
      st = await this.#fs.getattr(path);
    } catch (err) {
      if (isFsError(err, "ENOENT") || isFsError(err, "ENOTDIR")) return undefined;
      throw err;
    }
    const level = depthOfPath(path);
    const kind = level === 0 ? "root" : level === 1 ? "bucket" : typeOfMode(st.mode) === "dir" ? "dir" : "file";
    const r: Resource = { path, kind, size: kind === "file" ? st.size : 0, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, mode: st.mode, uid: st.uid, gid: st.gid };
    if (kind === "file") {
      const { bucket, key } = split(path);
      try {
        const h = await this.#store.headObject(bucket, key);
        r.etag = h.etag;
        r.contentType = h.contentType;
      } catch (err) {
        if (!isStowageError(err, "STOWAGE_NO_SUCH_KEY")) throw err;
      }
    }
    return r;
  }

  async #mustExist(path: string): Promise<Resource> {
    const r = await this.#resource(path);
    if (r === undefined) throw new HttpError(404, `${path} does not exist`);
    return r;
  }

  /**
   * The entries of a collection, with their attributes from the listing itself (one store listing
   * instead of a getattr per entry). Same rules as `StowageFs.readdir`: names the view cannot show
   * are skipped, a directory shadows a file of the same name.
   */
  async #children(dir: Resource): Promise<Resource[]> {
    if (dir.kind === "root") {
      const out: Resource[] = [];
      for (const e of await this.#fs.readdir("/")) {
        const r = await this.#resource(`/${e.name}`);
        if (r !== undefined) out.push(r);
      }
      return out;
    }
    const { bucket, key } = split(dir.path);
    const prefix = dirPrefix(key);
    const out = new Map<string, Resource>();
    let token: string | undefined;
    do {
      const page = await this.#store.listObjects(bucket, { prefix, delimiter: "/", ...(token === undefined ? {} : { continuationToken: token }) });
      for (const o of page.objects) {
        if (o.key === prefix) continue;
        const name = o.key.slice(prefix.length);
        if (!validName(name) || out.has(name)) continue;
        const st = statOf(bucket, o.key, o, false, LIST_DEFAULTS);
        out.set(name, { path: childPath(dir.path, name), kind: "file", size: o.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, mode: st.mode, uid: st.uid, gid: st.gid, etag: o.etag, contentType: o.contentType });
      }
      for (const cp of page.commonPrefixes) {
        const name = cp.slice(prefix.length, -1);
        if (!validName(name)) continue;
        const marker = await this.#store.meta.getCurrent(bucket, cp);
        const st = statOf(bucket, cp.slice(0, -1), marker !== undefined && !marker.deleteMarker ? marker : undefined, true, LIST_DEFAULTS);
        out.set(name, { path: childPath(dir.path, name), kind: "dir", size: 0, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, mode: st.mode, uid: st.uid, gid: st.gid });
      }
      token = page.isTruncated ? page.nextContinuationToken : undefined;
    } while (token !== undefined);
    return [...out.values()];
  }

  #href(path: string, isDir: boolean): string {
    return hrefOf(this.#prefix, path, isDir);
  }

  /** The Destination header as a path in this tree (502 when it names another server or prefix). */
  #destination(ctx: Ctx): DavPath {
    const d = header(ctx.req, "destination");
    if (d === undefined || d.trim() === "") throw new HttpError(400, "Destination header required");
    const host = header(ctx.req, "host");
    let url: URL;
    try {
      url = new URL(d.trim(), `http://${host ?? "localhost"}`);
    } catch {
      throw new HttpError(400, `invalid Destination ${JSON.stringify(d)}`);
    }
    if (host !== undefined && url.host.toLowerCase() !== host.toLowerCase()) throw new HttpError(502, `Destination ${d} is on another server`);
    const p = davPathOf(url.pathname, this.#prefix);
    if (p === undefined) throw new HttpError(502, `Destination ${d} is outside ${this.#prefix}`);
    return p;
  }

  // ------------------------------------------------------------------------------------------
  // If header and lock checks

  /** A tagged list's resource as a path here, or undefined when it is not one of ours. */
  #tagPath(ctx: Ctx, uri: string): string | undefined {
    try {
      const host = header(ctx.req, "host");
      const url = new URL(uri, `http://${host ?? "localhost"}`);
      if (host !== undefined && url.host.toLowerCase() !== host.toLowerCase()) return undefined;
      return davPathOf(url.pathname, this.#prefix)?.path;
    } catch {
      return undefined;
    }
  }

  /** A state token matches a resource in the lock's scope (or a member of a locked collection). */
  #tokenMatches(token: string, path: string): boolean {
    const l = this.#locks.get(token);
    if (l === undefined) return false;
    return LockManager.covers(l, path) || (path !== "/" && l.root === parentPath(path));
  }

  /**
   * Evaluates the If header (412 when false, 400 when malformed) and returns the lock tokens it
   * submits. `known` is the resource of the request URI when already looked up.
   */
  async #evaluateIf(ctx: Ctx, known?: Resource | null): Promise<Set<string>> {
    const v = header(ctx.req, "if");
    const submitted = new Set<string>();
    if (v === undefined) return submitted;
    let lists;
    try {
      lists = parseIfHeader(v);
    } catch (err) {
      if (err instanceof IfHeaderError) throw new HttpError(400, err.message);
      throw err;
    }
    const etags = new Map<string, string | undefined>();
    if (known !== undefined) etags.set(ctx.target.path, known === null ? undefined : quotedEtag(known));
    const etagOf = async (path: string): Promise<string | undefined> => {
      if (!etags.has(path)) {
        const r = await this.#resource(path);
        etags.set(path, r === undefined ? undefined : quotedEtag(r));
      }
      return etags.get(path);
    };
    let any = false;
    for (const list of lists) {
      const path = list.resource === undefined ? ctx.target.path : this.#tagPath(ctx, list.resource);
      let ok = true;
      for (const c of list.conditions) {
        let m = false;
        if (path !== undefined) {
          if (c.kind === "token") m = this.#tokenMatches(c.value, path);
          else {
            const e = await etagOf(path);
            m = e !== undefined && etagsMatch(e, c.value);
          }
        }
        if (c.not) m = !m;
        if (!m) {
          ok = false;
          break;
        }
      }
      if (ok) {
        any = true;
        break;
      }
    }
    if (!any) throw new HttpError(412, "the conditions of the If header are not met");
    for (const list of lists) for (const c of list.conditions) if (c.kind === "token" && !c.not) submitted.add(c.value);
    return submitted;
  }

  /**
   * 423 unless each group of locks had one of its tokens submitted (by the user who holds it). A
   * group is the set of locks on one protected resource: any one of several shared locks, or the
   * one exclusive lock, lets the write through (RFC 4918 §6.1).
   */
  #requireTokens(ctx: Ctx, submitted: ReadonlySet<string>, groups: Iterable<readonly DavLock[]>): void {
    for (const group of groups) {
      if (group.length === 0) continue;
      if (group.some((l) => submitted.has(l.token) && (l.principal === undefined || l.principal === ctx.user))) continue;
      const l = group[0]!;
      throw new HttpError(423, `${l.root} is locked (submit its lock token in an If header)`, {
        condition: dav("lock-token-submitted", group.map((g) => hrefElement(hrefOfLockRoot(this.#prefix, g))).join("")),
      });
    }
  }

  /** Locks protecting `path` itself (its content and properties). */
  #resourceLocks(path: string): DavLock[][] {
    return [this.#locks.covering(path)];
  }

  /** Locks protecting the membership of `path`'s parent collection (adding or removing `path`). */
  #membershipLocks(path: string): DavLock[][] {
    return path === "/" ? [] : [this.#locks.covering(parentPath(path))];
  }

  /** Locks on `path` and on everything below it, one group per locked resource. */
  #treeLocks(path: string): DavLock[][] {
    const roots = new Set<string>([path, ...this.#locks.within(path).map((l) => l.root)]);
    return [...roots].map((r) => this.#locks.covering(r));
  }

  // ------------------------------------------------------------------------------------------
  // Responses

  async #write(res: ServerResponse, chunk: string): Promise<void> {
    if (res.write(chunk)) return;
    if (res.destroyed) throw new Error("connection closed");
    await new Promise<void>((resolve) => {
      const done = (): void => {
        res.off("drain", done);
        res.off("close", done);
        resolve();
      };
      res.on("drain", done);
      res.on("close", done);
    });
    if (res.destroyed) throw new Error("connection closed");
  }

  #send(res: ServerResponse, status: number, headers: Record<string, string> = {}, body = ""): void {
    res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)) });
    res.end(body);
  }

  #sendXml(res: ServerResponse, status: number, xml: string, headers: Record<string, string> = {}): void {
    this.#send(res, status, { ...headers, "content-type": 'application/xml; charset="utf-8"' }, XML_HEAD + xml);
  }

  /** A 207 listing the members that failed (DELETE, COPY, MOVE). */
  #sendFailures(res: ServerResponse, failures: readonly Failure[]): void {
    const body = failures.map((f) => dav("response", hrefElement(f.href) + dav("status", statusLine(f.status)) + dav("responsedescription", escapeXml(f.message)))).join("");
    this.#sendXml(res, 207, `<D:multistatus xmlns:D="${DAV_NS}">${body}</D:multistatus>`);
  }

  #failure(path: string, isDir: boolean, err: unknown): Failure {
    const e = toHttpError(err);
    return { href: this.#href(path, isDir), status: e.status, message: e.message };
  }

  async #xmlBody(ctx: Ctx): Promise<DavElement | undefined> {
    const body = await readBody(ctx.req, this.#maxXml);
    if (body.toString("utf8").trim() === "") return undefined;
    try {
      return parseDavXml(body, { maxBytes: this.#maxXml });
    } catch (err) {
      if (err instanceof DavXmlError) throw new HttpError(400, `malformed XML request body: ${err.message}`);
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------------
  // OPTIONS, PROPFIND, PROPPATCH

  #options(ctx: Ctx): void {
    this.#send(ctx.res, 200, { dav: "1, 2", allow: ALLOW, "ms-author-via": "DAV", "accept-ranges": "bytes" });
  }

  async #propfind(ctx: Ctx): Promise<void> {
    const depth = depthOf(ctx.req, "infinity");
    if (depth === "infinity") {
      throw new HttpError(403, "PROPFIND with Depth: infinity is not supported; use Depth 0 or 1", { condition: dav("propfind-finite-depth") });
    }
    const doc = await this.#xmlBody(ctx);
    let props: readonly PropName[] | "names" = ALLPROP;
    let allprop = true;
    if (doc !== undefined) {
      if (!isDav(doc, "propfind")) throw new HttpError(400, `expected a DAV:propfind document, got <${doc.name}> in namespace ${JSON.stringify(doc.ns)}`);
      const kids = elementsOf(doc);
      const main = kids.find((k) => k.ns === DAV_NS && (k.name === "allprop" || k.name === "propname" || k.name === "prop"));
      if (main === undefined) throw new HttpError(400, "DAV:propfind needs one of DAV:allprop, DAV:propname or DAV:prop");
      if (main.name === "propname") props = "names";
      else if (main.name === "prop") {
        props = elementsOf(main).map((e) => ({ ns: e.ns, name: e.name }));
        allprop = false;
      } else {
        const include = kids.find((k) => isDav(k, "include"));
        const extra = include === undefined ? [] : elementsOf(include).map((e) => ({ ns: e.ns, name: e.name }));
        props = [...ALLPROP, ...extra.filter((e) => !ALLPROP.some((a) => a.ns === e.ns && a.name === e.name))];
      }
    }
    const r = await this.#mustExist(ctx.target.path);
    await this.#evaluateIf(ctx, r);
    const members = depth === "1" && isCollection(r) ? await this.#children(r) : [];
    let quota: Promise<{ available: number; used: number }> | undefined;
    const pctx: PropContext = {
      prefix: this.#prefix,
      locks: this.#locks,
      quota: () =>
        (quota ??= this.#fs.statfs().then((s) => ({ available: s.bavail * s.bsize, used: (s.blocks - s.bfree) * s.bsize }))),
    };
    const res = ctx.res;
    res.writeHead(207, { "content-type": 'application/xml; charset="utf-8"' });
    let buf = `${XML_HEAD}<D:multistatus xmlns:D="${DAV_NS}">`;
    buf += await propResponse(this.#href(r.path, isCollection(r)), r, props, pctx, allprop);
    for (const m of members) {
      buf += await propResponse(this.#href(m.path, isCollection(m)), m, props, pctx, allprop);
      if (buf.length >= 64 * 1024) {
        await this.#write(res, buf);
        buf = "";
      }
    }
    buf += "</D:multistatus>";
    await this.#write(res, buf);
    res.end();
  }

  async #proppatch(ctx: Ctx): Promise<void> {
    const r = await this.#mustExist(ctx.target.path);
    const submitted = await this.#evaluateIf(ctx, r);
    this.#requireTokens(ctx, submitted, this.#resourceLocks(r.path));
    const doc = await this.#xmlBody(ctx);
    if (doc === undefined || !isDav(doc, "propertyupdate")) throw new HttpError(400, "PROPPATCH needs a DAV:propertyupdate document");
    const ops: Array<{ op: "set" | "remove"; prop: DavElement }> = [];
    for (const ins of elementsOf(doc)) {
      if (ins.ns !== DAV_NS || (ins.name !== "set" && ins.name !== "remove")) throw new HttpError(400, `unexpected <${ins.name}> in DAV:propertyupdate`);
      for (const p of elementsOf(ins)) {
        if (!isDav(p, "prop")) throw new HttpError(400, `unexpected <${p.name}> in DAV:${ins.name}`);
        for (const prop of elementsOf(p)) ops.push({ op: ins.name, prop });
      }
    }
    if (ops.length === 0) throw new HttpError(400, "DAV:propertyupdate names no property");
    const results: Array<{ prop: PropName; status: number; message?: string; condition?: string }> = [];
    let mtimeMs: number | undefined;
    for (const { op, prop } of ops) {
      const name: PropName = { ns: prop.ns, name: prop.name };
      const isMtime = (prop.ns === DAV_NS && prop.name === "getlastmodified") || (prop.ns === MS_NS && prop.name === "Win32LastModifiedTime");
      if (isMtime) {
        if (op === "remove") {
          results.push({ prop: name, status: 403, message: "the modification time cannot be removed", condition: dav("cannot-modify-protected-property") });
          continue;
        }
        const ms = Date.parse(textOf(prop).trim());
        if (!Number.isFinite(ms)) {
          results.push({ prop: name, status: 409, message: `not a date: ${JSON.stringify(textOf(prop).trim().slice(0, 80))}` });
        } else if (r.kind === "root" || r.kind === "bucket") {
          results.push({ prop: name, status: 403, message: "buckets keep no attributes" });
        } else {
          mtimeMs = ms;
          results.push({ prop: name, status: 200 });
        }
      } else if (prop.ns === MS_NS && MS_IGNORED.has(prop.name)) {
        // Accepted so that Windows' PROPPATCH (which also sets the modification time) succeeds; not stored.
        results.push({ prop: name, status: 200 });
      } else if (prop.ns === DAV_NS) {
        results.push({ prop: name, status: 403, message: "a protected live property", condition: dav("cannot-modify-protected-property") });
      } else {
        results.push({ prop: name, status: 403, message: "dead properties are not stored by this server" });
      }
    }
    const failed = results.some((x) => x.status !== 200);
    if (failed) {
      for (const x of results) if (x.status === 200) Object.assign(x, { status: 424, message: "not applied: another property of this request failed" });
    } else if (mtimeMs !== undefined) {
      await this.#fs.setattr(r.path, { mtimeMs });
    }
    // One propstat per status.
    const byStatus = new Map<number, typeof results>();
    for (const x of results) byStatus.set(x.status, [...(byStatus.get(x.status) ?? []), x]);
    let body = hrefElement(this.#href(r.path, isCollection(r)));
    for (const [status, xs] of byStatus) {
      const conditions = [...new Set(xs.map((x) => x.condition).filter((c): c is string => c !== undefined))].join("");
      const messages = [...new Set(xs.map((x) => x.message).filter((m): m is string => m !== undefined))].join("; ");
      body += dav(
        "propstat",
        dav("prop", xs.map((x) => element(x.prop)).join("")) +
          dav("status", statusLine(status)) +
          (conditions === "" ? "" : dav("error", conditions)) +
          (messages === "" ? "" : dav("responsedescription", escapeXml(messages))),
      );
    }
    this.#sendXml(ctx.res, 207, `<D:multistatus xmlns:D="${DAV_NS}">${dav("response", body)}</D:multistatus>`);
  }

  // ------------------------------------------------------------------------------------------
  // GET, HEAD

  async #get(ctx: Ctx): Promise<void> {
    const { req, res } = ctx;
    const r = await this.#mustExist(ctx.target.path);
    await this.#evaluateIf(ctx, r);
    const lastModified = httpDate(r.mtimeMs);
    if (isCollection(r)) {
      const html = ctx.method === "HEAD" ? "" : await this.#indexPage(r);
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "last-modified": lastModified, ...(ctx.method === "HEAD" ? {} : { "content-length": String(Buffer.byteLength(html)) }) });
      res.end(html);
      return;
    }
    const etag = quotedEtag(r);
    this.#checkPreconditions(ctx, r);
    const ifNoneMatch = header(req, "if-none-match");
    const ims = header(req, "if-modified-since");
    const notModified =
      ifNoneMatch !== undefined
        ? etag !== undefined && (ifNoneMatch.trim() === "*" || ifNoneMatch.split(",").some((e) => etagsMatch(e, etag)))
        : ims !== undefined && Number.isFinite(Date.parse(ims)) && Math.floor(r.mtimeMs / 1000) * 1000 <= Date.parse(ims);
    const common: Record<string, string> = { "last-modified": lastModified, "accept-ranges": "bytes", ...(etag === undefined ? {} : { etag }) };
    if (notModified) {
      res.writeHead(304, common);
      res.end();
      return;
    }
    let rangeHeader = header(req, "range");
    const ifRange = header(req, "if-range");
    if (rangeHeader !== undefined && ifRange !== undefined) {
      const t = ifRange.trim();
      const fresh = t.startsWith('"') || t.startsWith("W/") ? etag !== undefined && !t.startsWith("W/") && t === etag : Number.isFinite(Date.parse(t)) && Math.floor(r.mtimeMs / 1000) * 1000 <= Date.parse(t);
      if (!fresh) rangeHeader = undefined;
    }
    const range = rangeOf(rangeHeader, r.size);
    if (range === "unsatisfiable") {
      throw new HttpError(416, `range ${rangeHeader ?? ""} is not satisfiable for ${r.size} bytes`, { headers: { "content-range": `bytes */${r.size}` } });
    }
    const contentType = r.contentType ?? "application/octet-stream";
    if (ctx.method === "HEAD") {
      const len = range === "ignore" ? r.size : range.end - range.start;
      res.writeHead(range === "ignore" ? 200 : 206, {
        ...common,
        "content-type": contentType,
        "content-length": String(len),
        ...(range === "ignore" ? {} : { "content-range": `bytes ${range.start}-${range.end - 1}/${r.size}` }),
      });
      res.end();
      return;
    }
    const { bucket, key } = split(r.path);
    const got = await this.#store.getObject(bucket, key, range === "ignore" || r.size === 0 ? {} : { range: { start: range.start, end: range.end - 1 } });
    const v = got.version;
    const headers: Record<string, string> = {
      ...common,
      etag: `"${v.etag}"`,
      "content-type": v.contentType,
      "content-length": String(got.span.end - got.span.start),
    };
    if (got.partial) headers["content-range"] = `bytes ${got.span.start}-${got.span.end - 1}/${v.size}`;
    res.writeHead(got.partial ? 206 : 200, headers);
    try {
      await pipeline(Readable.from(got.body), res);
    } catch (err) {
      // The client went away, or the read failed after the headers: cut the connection.
      this.#log?.debug({ err: (err as Error).message, path: r.path }, "webdav GET stream ended early");
      res.destroy();
    }
  }

  /** If-Match and If-Unmodified-Since (412). */
  #checkPreconditions(ctx: Ctx, r: Resource | undefined): void {
    const etag = r === undefined ? undefined : quotedEtag(r);
    const im = header(ctx.req, "if-match");
    if (im !== undefined) {
      const ok = im.trim() === "*" ? r !== undefined : etag !== undefined && im.split(",").some((e) => !e.trim().startsWith("W/") && e.trim() === etag);
      if (!ok) throw new HttpError(412, "If-Match does not match");
    }
    const ius = header(ctx.req, "if-unmodified-since");
    if (im === undefined && ius !== undefined && r !== undefined && Number.isFinite(Date.parse(ius)) && Math.floor(r.mtimeMs / 1000) * 1000 > Date.parse(ius)) {
      throw new HttpError(412, "modified since If-Unmodified-Since");
    }
  }

  async #indexPage(r: Resource): Promise<string> {
    const rows = (await this.#children(r))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
      .map((c) => {
        const dir = isCollection(c);
        const name = baseName(c.path) + (dir ? "/" : "");
        return `<li><a href="${escapeXml(this.#href(c.path, dir))}">${escapeXml(name)}</a>${dir ? "" : ` ${c.size} bytes`}</li>`;
      })
      .join("\n");
    const title = escapeXml(this.#href(r.path, true));
    return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1><ul>\n${rows}\n</ul></body></html>\n`;
  }

  // ------------------------------------------------------------------------------------------
  // PUT

  async #put(ctx: Ctx): Promise<void> {
    const { req, res, target } = ctx;
    if (target.segments.length < 2) throw new HttpError(405, "files live in buckets: PUT needs /bucket/name", { headers: { allow: "OPTIONS, PROPFIND, MKCOL, DELETE, COPY, MOVE, LOCK, UNLOCK" } });
    if (header(req, "content-range") !== undefined) throw new HttpError(400, "partial PUT (Content-Range) is not supported");
    const existing = await this.#resource(target.path);
    if (existing !== undefined && isCollection(existing)) throw new HttpError(409, `${target.path} is a collection`);
    const submitted = await this.#evaluateIf(ctx, existing ?? null);
    this.#requireTokens(ctx, submitted, existing !== undefined ? this.#resourceLocks(target.path) : this.#membershipLocks(target.path));
    this.#checkPreconditions(ctx, existing);
    const inm = header(req, "if-none-match");
    if (inm !== undefined && existing !== undefined) {
      const etag = quotedEtag(existing);
      if (inm.trim() === "*" || (etag !== undefined && inm.split(",").some((e) => etagsMatch(e, etag)))) throw new HttpError(412, "If-None-Match matches");
    }
    const parent = await this.#resource(parentPath(target.path));
    if (parent === undefined || !isCollection(parent)) throw new HttpError(409, `the parent of ${target.path} ${parent === undefined ? "does not exist" : "is not a collection"}`);
    let mtimeMs: number | undefined;
    const ocMtime = header(req, "x-oc-mtime");
    if (ocMtime !== undefined) {
      const secs = Number(ocMtime.trim());
      if (ocMtime.trim() !== "" && Number.isFinite(secs) && secs >= 0) mtimeMs = Math.round(secs * 1000);
    }

    // One streamed PutObject: the file changes atomically when the whole body is in (S3's
    // semantics), and an upload cut off or refused commits nothing.
    const { bucket, key } = split(target.path);
    const userMetadata: Record<string, string> = {};
    if (existing !== undefined && (existing.mode & S_IFMT) === S_IFREG) {
      // A replaced file keeps its mode, owner and inode number (a replaced symlink becomes a
      // regular file with the default mode).
      Object.assign(userMetadata, { [META_MODE]: String(existing.mode), [META_UID]: String(existing.uid), [META_GID]: String(existing.gid) });
      const ino = (await this.#store.headObject(bucket, key).catch(() => undefined))?.userMetadata[META_INO];
      if (ino !== undefined) userMetadata[META_INO] = ino;
    }
    if (mtimeMs !== undefined) userMetadata[META_MTIME] = mtimeValue(mtimeMs);
    const length = header(req, "content-length");
    const contentMD5 = header(req, "content-md5");
    const contentType = header(req, "content-type");
    const uploads = this.#uploads;
    async function* body(): AsyncGenerator<Buffer> {
      for await (const chunk of req as AsyncIterable<Buffer>) yield chunk;
      if (!req.complete) throw new HttpError(400, "request body incomplete");
    }
    let put;
    uploads.add(req);
    try {
      put = await this.#store.putObject(bucket, key, body(), {
        userMetadata,
        ...(contentType === undefined || contentType.trim() === "" ? {} : { contentType: contentType.trim() }),
        ...(length === undefined ? {} : { size: Number(length) }),
        ...(contentMD5 === undefined ? {} : { contentMD5: contentMD5.trim() }),
      });
    } catch (err) {
      if (isStowageError(err, "STOWAGE_INCOMPLETE_BODY") || isStowageError(err, "STOWAGE_BAD_DIGEST")) throw new HttpError(400, err.message);
      throw err;
    } finally {
      uploads.delete(req);
    }
    const headers: Record<string, string> = { etag: `"${put.etag}"` };
    if (mtimeMs !== undefined) headers["x-oc-mtime"] = "accepted";
    this.#send(res, existing === undefined ? 201 : 204, headers);
  }

  // ------------------------------------------------------------------------------------------
  // MKCOL, DELETE

  async #mkcol(ctx: Ctx): Promise<void> {
    const { req, res, target } = ctx;
    if (hasBody(req)) throw new HttpError(415, "MKCOL with a request body is not supported");
    if (target.path === "/") throw new HttpError(405, "/ exists", { headers: { allow: ALLOW } });
    const existing = await this.#resource(target.path);
    if (existing !== undefined) throw new HttpError(405, `${target.path} exists`, { headers: { allow: ALLOW } });
    const submitted = await this.#evaluateIf(ctx, null);
    this.#requireTokens(ctx, submitted, this.#membershipLocks(target.path));
    if (target.segments.length >= 2) {
      const parent = await this.#resource(parentPath(target.path));
      if (parent === undefined || !isCollection(parent)) throw new HttpError(409, `the parent of ${target.path} ${parent === undefined ? "does not exist" : "is not a collection"}`);
    }
    try {
      await this.#fs.mkdir(target.path);
    } catch (err) {
      if (isFsError(err, "EEXIST")) throw new HttpError(405, `${target.path} exists`, { headers: { allow: ALLOW } });
      if (isFsError(err, "ENOENT") || isFsError(err, "ENOTDIR")) throw new HttpError(409, (err as Error).message);
      throw err;
    }
    this.#send(res, 201);
  }

  /** Deletes a file or a whole tree, collecting what failed; true when `r` is gone. */
  async #deleteTree(r: Resource, failures: Failure[]): Promise<boolean> {
    if (r.kind === "file") {
      try {
        await this.#fs.unlink(r.path);
        return true;
      } catch (err) {
        if (isFsError(err, "ENOENT")) return true;
        failures.push(this.#failure(r.path, false, err));
        return false;
      }
    }
    let ok = true;
    for (const c of await this.#children(r)) if (!(await this.#deleteTree(c, failures))) ok = false;
    if (!ok) return false;
    try {
      await this.#fs.rmdir(r.path);
      return true;
    } catch (err) {
      if (isFsError(err, "ENOENT")) return true;
      failures.push(this.#failure(r.path, true, err));
      return false;
    }
  }

  async #delete(ctx: Ctx): Promise<void> {
    const { target, res } = ctx;
    if (target.path === "/") throw new HttpError(403, "/ cannot be deleted");
    const r = await this.#mustExist(target.path);
    if (isCollection(r) && depthOf(ctx.req, "infinity") !== "infinity") throw new HttpError(400, "DELETE of a collection needs Depth: infinity");
    const submitted = await this.#evaluateIf(ctx, r);
    this.#requireTokens(ctx, submitted, [...this.#membershipLocks(r.path), ...this.#treeLocks(r.path)]);
    this.#checkPreconditions(ctx, r);
    const failures: Failure[] = [];
    await this.#deleteTree(r, failures);
    if (failures.length > 0) {
      this.#sendFailures(res, failures);
      return;
    }
    this.#locks.removeWithin(r.path);
    this.#send(res, 204);
  }

  // ------------------------------------------------------------------------------------------
  // COPY, MOVE

  /** Makes writes pending in the view (other handles of a shared StowageFs) visible to the store. */
  async #settle(path: string): Promise<void> {
    const fh = await this.#fs.open(path, O_RDONLY);
    try {
      await this.#fs.fsync(fh);
    } finally {
      await this.#fs.release(fh);
    }
  }

  /** Copies a file by reference (same chunks, no data read); the copy gets a new inode number and mtime. */
  async #copyFile(src: Resource, dstPath: string): Promise<void> {
    if (depthOfPath(dstPath) < 2) throw new HttpError(409, "files live in buckets: a file cannot be copied to the top level");
    await this.#settle(src.path);
    const s = split(src.path);
    const d = split(dstPath);
    const h = await this.#store.headObject(s.bucket, s.key);
    const { [META_INO]: _ino, [META_MTIME]: _mtime, ...userMetadata } = h.userMetadata;
    await this.#store.copyObject(s.bucket, s.key, d.bucket, d.key, {
      metadataDirective: "REPLACE",
      contentType: h.contentType,
      userMetadata,
      ...(h.headers === undefined ? {} : { headers: h.headers }),
    });
  }

  async #copyTree(src: Resource, dstPath: string, depth: LockDepth, failures: Failure[]): Promise<void> {
    await this.#fs.mkdir(dstPath);
    if (depth === "0") return;
    for (const c of await this.#children(src)) {
      const to = childPath(dstPath, baseName(c.path));
      try {
        if (c.kind === "file") await this.#copyFile(c, to);
        else await this.#copyTree(c, to, "infinity", failures);
      } catch (err) {
        failures.push(this.#failure(to, isCollection(c), err));
      }
    }
  }

  /** What COPY and MOVE check before acting: the source, destination, Overwrite and locks. */
  async #transferPlan(ctx: Ctx, move: boolean): Promise<{ src: Resource; dest: DavPath; existing: Resource | undefined; depth: LockDepth }> {
    const src = await this.#mustExist(ctx.target.path);
    if (src.kind === "root") throw new HttpError(403, `/ cannot be ${move ? "moved" : "copied"}`);
    let depth: LockDepth = "infinity";
    if (isCollection(src)) {
      const d = depthOf(ctx.req, "infinity");
      if (d === "1" || (move && d !== "infinity")) throw new HttpError(400, `${move ? "MOVE" : "COPY"} of a collection needs Depth: infinity${move ? "" : " or 0"}`);
      depth = d;
    }
    const dest = this.#destination(ctx);
    if (dest.path === src.path) throw new HttpError(403, "source and destination are the same");
    if (isCollection(src) && (move || depth === "infinity") && isBelow(src.path, dest.path)) throw new HttpError(403, "cannot copy or move a collection into itself");
    const overwrite = overwriteOf(ctx.req);
    const existing = await this.#resource(dest.path);
    const submitted = await this.#evaluateIf(ctx, src);
    const needed = [...this.#membershipLocks(dest.path), ...(existing === undefined ? [] : this.#treeLocks(dest.path))];
    if (move) needed.push(...this.#membershipLocks(src.path), ...this.#treeLocks(src.path));
    this.#requireTokens(ctx, submitted, needed);
    this.#checkPreconditions(ctx, src);
    if (existing !== undefined && !overwrite) throw new HttpError(412, `${dest.path} exists and Overwrite is F`);
    if (dest.segments.length >= 2) {
      const parent = await this.#resource(parentPath(dest.path));
      if (parent === undefined || !isCollection(parent)) throw new HttpError(409, `the parent of ${dest.path} ${parent === undefined ? "does not exist" : "is not a collection"}`);
    }
    return { src, dest, existing, depth };
  }

  async #copy(ctx: Ctx): Promise<void> {
    const { src, dest, existing, depth } = await this.#transferPlan(ctx, false);
    if (src.kind === "file" && dest.segments.length < 2) throw new HttpError(409, "files live in buckets: a file cannot be copied to the top level");
    const failures: Failure[] = [];
    // Overwrite: the destination is deleted first (RFC 4918 §9.8.4), except file over file, which
    // the copy replaces in one step.
    if (existing !== undefined && !(src.kind === "file" && existing.kind === "file")) {
      if (!(await this.#deleteTree(existing, failures))) {
        this.#sendFailures(ctx.res, failures);
        return;
      }
      this.#locks.removeWithin(existing.path);
    }
    if (src.kind === "file") await this.#copyFile(src, dest.path);
    else await this.#copyTree(src, dest.path, depth, failures);
    if (failures.length > 0) this.#sendFailures(ctx.res, failures);
    else this.#send(ctx.res, existing === undefined ? 201 : 204);
  }

  async #move(ctx: Ctx): Promise<void> {
    const { src, dest, existing } = await this.#transferPlan(ctx, true);
    if (src.kind === "bucket" || dest.segments.length < 2) throw new HttpError(502, "buckets cannot be renamed, nor anything made into a bucket (copy instead)");
    if (existing !== undefined && !(src.kind === "file" && existing.kind === "file")) {
      const failures: Failure[] = [];
      if (!(await this.#deleteTree(existing, failures))) {
        this.#sendFailures(ctx.res, failures);
        return;
      }
      this.#locks.removeWithin(existing.path);
    }
    await this.#fs.rename(src.path, dest.path);
    this.#locks.removeWithin(src.path);
    this.#send(ctx.res, existing === undefined ? 201 : 204);
  }

  // ------------------------------------------------------------------------------------------
  // LOCK, UNLOCK

  #lockResponse(ctx: Ctx, status: number, lock: DavLock, headers: Record<string, string> = {}): void {
    const body = `<D:prop xmlns:D="${DAV_NS}">${dav("lockdiscovery", activeLock(lock, { prefix: this.#prefix, locks: this.#locks }))}</D:prop>`;
    this.#sendXml(ctx.res, status, body, headers);
  }

  async #lock(ctx: Ctx): Promise<void> {
    const { req, target } = ctx;
    const timeout = parseTimeout(header(req, "timeout"));
    const doc = await this.#xmlBody(ctx);
    const r = await this.#resource(target.path);
    if (doc === undefined) {
      // A refresh: the lock is named in the If header.
      if (header(req, "if") === undefined) throw new HttpError(400, "a LOCK without a body is a refresh and needs the lock token in an If header");
      if (r === undefined) throw new HttpError(404, `${target.path} does not exist`);
      const submitted = await this.#evaluateIf(ctx, r);
      const locks = this.#locks.covering(target.path).filter((l) => submitted.has(l.token) && (l.principal === undefined || l.principal === ctx.user));
      if (locks.length === 0) throw new HttpError(412, "no lock of this resource was named in the If header", { condition: dav("lock-token-matches-request-uri") });
      for (const l of locks) this.#locks.refresh(l, timeout);
      this.#lockResponse(ctx, 200, locks[0]!);
      return;
    }
    if (!isDav(doc, "lockinfo")) throw new HttpError(400, `expected a DAV:lockinfo document, got <${doc.name}>`);
    const scopeEl = elementsOf(doc).find((e) => isDav(e, "lockscope"));
    const typeEl = elementsOf(doc).find((e) => isDav(e, "locktype"));
    const ownerEl = elementsOf(doc).find((e) => isDav(e, "owner"));
    const scopeName = scopeEl === undefined ? undefined : elementsOf(scopeEl)[0];
    if (scopeName === undefined || scopeName.ns !== DAV_NS || (scopeName.name !== "exclusive" && scopeName.name !== "shared")) {
      throw new HttpError(400, "DAV:lockinfo needs DAV:lockscope with DAV:exclusive or DAV:shared");
    }
    const typeName = typeEl === undefined ? undefined : elementsOf(typeEl)[0];
    if (typeName === undefined || !isDav(typeName, "write")) throw new HttpError(400, "DAV:lockinfo needs DAV:locktype with DAV:write (the only lock type)");
    const scope: LockScope = scopeName.name;
    const d = depthOf(req, "infinity");
    if (d === "1") throw new HttpError(400, "LOCK Depth must be 0 or infinity");
    const depth: LockDepth = d;
    const submitted = await this.#evaluateIf(ctx, r ?? null);
    const conflicts = this.#locks.conflicts(target.path, depth, scope);
    if (conflicts.length > 0) {
      const c = conflicts[0]!;
      throw new HttpError(423, `${target.path} is locked (${c.scope} lock on ${c.root})`, {
        condition: dav("no-conflicting-lock", conflicts.map((l) => hrefElement(hrefOfLockRoot(this.#prefix, l))).join("")),
      });
    }
    let created = false;
    if (r === undefined) {
      // A lock on an unmapped URL creates an empty file (RFC 4918 §7.3).
      if (target.segments.length < 2) throw new HttpError(409, "files live in buckets: cannot lock an unmapped top-level name");
      this.#requireTokens(ctx, submitted, this.#membershipLocks(target.path));
      const parent = await this.#resource(parentPath(target.path));
      if (parent === undefined || !isCollection(parent)) throw new HttpError(409, `the parent of ${target.path} ${parent === undefined ? "does not exist" : "is not a collection"}`);
      const fh = await this.#fs.create(target.path);
      await this.#fs.release(fh);
      created = true;
    }
    const lock = this.#locks.create({
      root: target.path,
      rootIsDir: r !== undefined && isCollection(r),
      depth,
      scope,
      ownerXml: ownerEl === undefined || isEmptyElement(ownerEl) ? "" : serializeContent(ownerEl),
      principal: ctx.user,
      timeoutSeconds: timeout,
    });
    this.#lockResponse(ctx, created ? 201 : 200, lock, { "lock-token": `<${lock.token}>` });
  }

  async #unlock(ctx: Ctx): Promise<void> {
    const v = header(ctx.req, "lock-token");
    const m = v === undefined ? null : /^\s*<([^<>\s]+)>\s*$/.exec(v);
    if (m === null) throw new HttpError(400, "UNLOCK needs a Lock-Token header: <token>");
    const token = m[1]!;
    const lock = this.#locks.get(token);
    if (lock === undefined || !LockManager.covers(lock, ctx.target.path)) {
      throw new HttpError(409, `${token} is not a lock of ${ctx.target.path}`, { condition: dav("lock-token-matches-request-uri") });
    }
    if (lock.principal !== undefined && lock.principal !== ctx.user) throw new HttpError(403, "the lock belongs to another user");
    this.#locks.remove(token);
    this.#send(ctx.res, 204);
  }
}
