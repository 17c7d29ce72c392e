/**
 * The S3-compatible HTTP endpoint. One request at a time per connection, streamed both ways:
 * request bodies flow through decoding and verification into the store's ingest, and object
 * bodies flow from the pack reader to the socket with backpressure, so no object is ever held
 * in memory. Every request is authenticated with SigV4 (anonymous requests are refused), gets a
 * request id, and is logged once when it ends.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import type { Logger } from "pino";
import { StowageError, isStowageError } from "../../errors.js";
import type { ObjectStore } from "../../store/store.js";
import { verifySigV4, type Authenticated, type Credentials } from "./sigv4.js";
import { S3Error, fromStowageError, s3 } from "./errors.js";
import { xml } from "./xml.js";
import { header } from "./http.js";
import { handleBucket, handleService } from "./bucket-handlers.js";
import { handleObject } from "./object-handlers.js";
import type { Metrics } from "../metrics.js";
import { secureRandomBytes } from "../../util/random.js";

export interface S3ServerOptions {
  store: ObjectStore;
  credentials: Credentials;
  /** Default `us-east-1`. */
  region?: string;
  /** Host names under which `bucket.<domain>` is virtual-hosted style. Default: `localhost`. */
  domains?: string[];
  logger: Logger;
  /** Prometheus metrics: served at `GET /_stowage/metrics`, and every request is counted in them. */
  metrics?: Metrics;
  /** Largest header section in bytes. Default 16 KiB (node answers 431 beyond). */
  maxHeaderSize?: number;
  /** Milliseconds a request may take to send its headers. Default 30 s. */
  headersTimeoutMs?: number;
  /** Milliseconds without socket activity before the connection is dropped. Default 120 s. */
  idleTimeoutMs?: number;
  now?: () => number;
}

/** What a handler knows about the request. */
export interface S3Request {
  req: IncomingMessage;
  res: ServerResponse;
  id: string;
  auth: Authenticated;
  bucket: string | undefined;
  key: string | undefined;
  query: URLSearchParams;
  store: ObjectStore;
  region: string;
  log: Logger;
}

/** Sends an XML document. */
export function sendXml(r: S3Request, status: number, root: string, body: Parameters<typeof xml>[1], headers: Record<string, string> = {}): void {
  const text = xml(root, body);
  r.res.writeHead(status, { ...headers, "content-type": "application/xml", "content-length": String(Buffer.byteLength(text)) });
  r.res.end(text);
}

export function sendEmpty(r: S3Request, status: number, headers: Record<string, string> = {}): void {
  r.res.writeHead(status, { ...headers, "content-length": "0" });
  r.res.end();
}

/** Streams `body` as the response, honouring backpressure; a failure mid-way destroys the socket. */
export async function sendStream(r: S3Request, status: number, headers: Record<string, string>, body: AsyncIterable<Buffer>): Promise<void> {
  r.res.writeHead(status, headers);
  if (r.req.method === "HEAD") {
    r.res.end();
    return;
  }
  await pipeline(Readable.from(body), r.res);
}

/** Where `stowage serve` answers Prometheus scrapes (`_stowage` is not a valid bucket name). */
export const METRICS_PATH = "/_stowage/metrics";

function rawPathOf(req: IncomingMessage): string {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}

function requestId(): string {
  return secureRandomBytes(8).toString("hex").toUpperCase();
}

/** Splits the request into bucket and key, path-style or virtual-hosted style. */
export function addressing(rawPath: string, host: string | undefined, domains: readonly string[]): { bucket?: string; key?: string } {
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw s3.invalidArgument("The request path is not valid percent-encoded UTF-8");
  }
  const hostname = (host ?? "").replace(/:\d+$/, "").toLowerCase();
  for (const d of domains) {
    if (hostname.endsWith("." + d)) {
      const bucket = hostname.slice(0, -d.length - 1);
      const key = path.startsWith("/") ? path.slice(1) : path;
      return key === "" ? { bucket } : { bucket, key };
    }
  }
  const rest = path.startsWith("/") ? path.slice(1) : path;
  if (rest === "") return {};
  const i = rest.indexOf("/");
  if (i < 0) return { bucket: rest };
  const key = rest.slice(i + 1);
  return key === "" ? { bucket: rest.slice(0, i) } : { bucket: rest.slice(0, i), key };
}

export class S3Server {
  readonly options: S3ServerOptions;
  readonly #server: Server;
  readonly #domains: string[];
  #inFlight = 0;
  #closing = false;
  #drained: (() => void) | undefined;

  constructor(options: S3ServerOptions) {
    this.options = options;
    this.#domains = options.domains ?? ["localhost"];
    this.#server = createServer(
      {
        maxHeaderSize: options.maxHeaderSize ?? 16 * 1024,
        headersTimeout: options.headersTimeoutMs ?? 30_000,
        requestTimeout: 0,
        keepAliveTimeout: 5_000,
      },
      (req, res) => void this.#handle(req, res),
    );
    this.#server.setTimeout(options.idleTimeoutMs ?? 120_000);
    this.#server.on("clientError", (err, socket) => {
      options.logger.debug({ err: err.message }, "client error");
      const status = (err as { code?: string }).code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      else socket.destroy();
    });
  }

  async listen(port: number, host = "127.0.0.1"): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(port, host, () => {
        this.#server.off("error", reject);
        resolve();
      });
    });
    return this.#server.address() as AddressInfo;
  }

  /** Stops accepting connections, waits for requests in flight (up to `timeoutMs`), then closes. */
  async close(timeoutMs = 30_000): Promise<void> {
    this.#closing = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    if (this.#inFlight > 0) {
      await Promise.race([new Promise<void>((resolve) => (this.#drained = resolve)), new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    }
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const id = requestId();
    const started = process.hrtime.bigint();
    this.#inFlight++;
    res.setHeader("x-amz-request-id", id);
    res.setHeader("x-amz-id-2", id);
    res.setHeader("server", "Stowage");
    if (this.#closing) res.setHeader("connection", "close");
    const log = this.options.logger.child({ req: id });
    let s3req: S3Request | undefined;
    let bucket: string | undefined;
    let key: string | undefined;
    try {
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const rawPath = q < 0 ? url : url.slice(0, q);
      const rawQuery = q < 0 ? "" : url.slice(q + 1);
      if (req.method === "GET" && rawPath === "/health") {
        const body = JSON.stringify({ status: this.#closing ? "draining" : "ok" });
        res.writeHead(this.#closing ? 503 : 200, { "content-type": "application/json", "content-length": String(body.length) });
        res.end(body);
        return;
      }
      if (req.method === "GET" && rawPath === METRICS_PATH && this.options.metrics !== undefined) {
        const body = await this.options.metrics.render();
        res.writeHead(200, { "content-type": this.options.metrics.contentType, "content-length": String(Buffer.byteLength(body)) });
        res.end(body);
        return;
      }
      ({ bucket, key } = addressing(rawPath, header(req, "host"), this.#domains));
      const auth = verifySigV4(
        { method: req.method ?? "GET", rawPath, rawQuery, headers: req.headers },
        this.options.credentials,
        { region: this.options.region ?? "us-east-1", ...(this.options.now === undefined ? {} : { now: this.options.now() }) },
      );
      s3req = {
        req,
        res,
        id,
        auth,
        bucket,
        key,
        query: new URLSearchParams(rawQuery),
        store: this.options.store,
        region: this.options.region ?? "us-east-1",
        log,
      };
      if (bucket === undefined) await handleService(s3req);
      else if (key === undefined) await handleBucket(s3req);
      else await handleObject(s3req);
    } catch (err) {
      this.#fail(req, res, id, log, err, bucket, key);
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (rawPathOf(req) !== METRICS_PATH) this.options.metrics?.observeRequest(req.method ?? "?", res.statusCode, ms / 1000);
      log.info({ method: req.method, url: req.url, status: res.statusCode, ms: Math.round(ms * 10) / 10, bucket, key }, "request");
      if (!req.complete) {
        // Unread body (e.g. an error before the upload was read): do not keep the connection.
        if (!res.headersSent) res.setHeader("connection", "close");
        req.resume();
      }
      this.#inFlight--;
      if (this.#inFlight === 0) this.#drained?.();
    }
  }

  #fail(req: IncomingMessage, res: ServerResponse, id: string, log: Logger, err: unknown, bucket: string | undefined, key: string | undefined): void {
    let e: S3Error;
    const cause = (err as { cause?: unknown }).cause;
    if (err instanceof S3Error) e = err;
    else if (isStowageError(err) && cause instanceof S3Error) e = cause;
    else e = fromStowageError(err);
    if (e.code === "InternalError") log.error({ err: err instanceof Error ? { message: err.message, stack: err.stack, code: (err as StowageError).code } : String(err) }, "internal error");
    if (res.headersSent) {
      // The body had started: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    const resource = bucket === undefined ? "/" : key === undefined ? `/${bucket}` : `/${bucket}/${key}`;
    const details: Record<string, string> = { ...e.details };
    if (e.code === "NoSuchKey" && key !== undefined) details.Key = key;
    if (e.code === "NoSuchBucket" && bucket !== undefined) details.BucketName = bucket;
    const body = req.method === "HEAD" ? "" : xml("Error", { Code: e.code, Message: e.message, ...details, Resource: resource, RequestId: id }, { namespace: false });
    const headers: Record<string, string> = { "content-type": "application/xml", "content-length": String(Buffer.byteLength(body)) };
    if (!req.complete) headers.connection = "close";
    res.writeHead(e.status, headers);
    res.end(body);
  }
}
