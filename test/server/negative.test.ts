/**
 * The negative suite of the S3 endpoint, over raw HTTP (node:http and node:net, requests signed
 * with @smithy/signature-v4 or by hand): bad and stale signatures, anonymous requests, truncated
 * and oversized bodies, bad digests, malformed XML, path traversal, key length limits, unicode
 * keys, oversized headers, clients that vanish mid-upload, signed aws-chunked uploads with a
 * tampered chunk, and a slow reader of a large object. Every refusal is checked for its S3 error
 * code and status, for "nothing stored", and for the server still answering afterwards.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SignatureV4 } from "@smithy/signature-v4";
import { isStowageError } from "../../src/errors.js";
import { fsck } from "../../src/store/fsck.js";
import { startEndpoint, ACCESS_KEY, SECRET_KEY, Sha256, type Endpoint } from "./harness.js";

const BUCKET = "neg";
const REGION = "us-east-1";
const UNSIGNED = "UNSIGNED-PAYLOAD";

let ep: Endpoint;
const signer = new SignatureV4({ credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY }, region: REGION, service: "s3", sha256: Sha256, uriEscapePath: false });

before(async () => {
  ep = await startEndpoint({ minPartSize: 5 * 1024 * 1024 });
  const r = await s3({ method: "PUT", path: `/${BUCKET}` });
  assert.equal(r.status, 200, r.text);
});
after(async () => {
  await ep.stop();
});

// ------------------------------------------------------------------------------------------------
// Helpers

const sha256Hex = (b: string | Uint8Array): string => createHash("sha256").update(b).digest("hex");
const md5Hex = (b: string | Uint8Array): string => createHash("md5").update(b).digest("hex");
const hmac = (key: Buffer | string, data: string): Buffer => createHmac("sha256", key).update(data, "utf8").digest();

/** SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ as %XX (UTF-8); `/` kept when asked. */
function sigv4Encode(s: string, keepSlash: boolean): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replace(/%2F/g, "/") : out;
}

/** The wire path of an object: each key byte encoded as SigV4 wants, `/` kept. */
const objectPath = (key: string, bucket = BUCKET): string => `/${bucket}/${sigv4Encode(key, true)}`;

/** A query string exactly as the signer canonicalises it (sorted, SigV4-encoded). */
function queryString(query: Record<string, string>): string {
  return Object.keys(query)
    .sort()
    .map((k) => `${sigv4Encode(k, false)}=${sigv4Encode(query[k]!, false)}`)
    .join("&");
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

interface SignedInput {
  method: string;
  /** Wire path (already encoded). */
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** x-amz-content-sha256; default the body's SHA-256. */
  payloadHash?: string;
  signingDate?: Date;
}

/** Signs a request: the headers to send (host, x-amz-date, x-amz-content-sha256, authorization). */
async function sign(input: SignedInput): Promise<Record<string, string>> {
  const body = input.body === undefined ? Buffer.alloc(0) : Buffer.from(input.body);
  const headers: Record<string, string> = {
    host: `127.0.0.1:${ep.port}`,
    "x-amz-content-sha256": input.payloadHash ?? sha256Hex(body),
    ...(input.method === "PUT" || input.method === "POST" ? { "content-length": String(body.length) } : {}),
    ...input.headers,
  };
  const signed = await signer.sign(
    { method: input.method, protocol: "http:", hostname: "127.0.0.1", port: ep.port, path: input.path, query: input.query ?? {}, headers },
    input.signingDate === undefined ? {} : { signingDate: input.signingDate },
  );
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(signed.headers)) out[k.toLowerCase()] = String(v);
  return out;
}

/** Sends a request on a fresh connection and reads the whole reply. */
function send(method: string, pathAndQuery: string, headers: Record<string, string>, body?: Buffer | string): Promise<Reply> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: ep.port, method, path: pathAndQuery, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (b: Buffer) => parts.push(b));
      res.on("end", () => {
        const buf = Buffer.concat(parts);
        resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body: buf, text: buf.toString("utf8") });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A signed request, sent as signed. */
async function s3(input: SignedInput): Promise<Reply> {
  const headers = await sign(input);
  const q = input.query === undefined ? "" : queryString(input.query);
  return send(input.method, q === "" ? input.path : `${input.path}?${q}`, headers, input.body);
}

/** Asserts an S3 error document: status, code, and a RequestId equal to x-amz-request-id. */
function assertS3Error(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text}`);
  assert.match(r.text, new RegExp(`<Code>${code}</Code>`), r.text);
  const id = /<RequestId>([^<]+)<\/RequestId>/.exec(r.text)?.[1];
  assert.ok(id !== undefined && id.length > 0, `the error names its request id: ${r.text}`);
  assert.equal(r.headers["x-amz-request-id"], id);
}

/** Whether the store holds the object (not a delete marker). */
async function stored(key: string, bucket = BUCKET): Promise<boolean> {
  try {
    await ep.repo.store.headObject(bucket, key);
    return true;
  } catch (err) {
    if (isStowageError(err) && err.code === "STOWAGE_NO_SUCH_KEY") return false;
    throw err;
  }
}

async function getObject(key: string): Promise<Reply> {
  return s3({ method: "GET", path: objectPath(key) });
}

async function putObject(key: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<Reply> {
  return s3({ method: "PUT", path: objectPath(key), body, headers });
}

/** The server answers health checks and signed requests. */
async function assertHealthy(): Promise<void> {
  const h = await send("GET", "/health", {});
  assert.equal(h.status, 200, h.text);
  const key = `health-${randomBytes(4).toString("hex")}`;
  assert.equal((await putObject(key, "still here")).status, 200);
  const g = await getObject(key);
  assert.equal(g.status, 200);
  assert.equal(g.text, "still here");
}

/** XML text to a string: the five entities and character references. */
function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#x([0-9a-fA-F]+)|#(\d+));/g, (_m, name: string, hex: string | undefined, dec: string | undefined) => {
    if (hex !== undefined) return String.fromCodePoint(parseInt(hex, 16));
    if (dec !== undefined) return String.fromCodePoint(Number(dec));
    return { lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" }[name]!;
  });
}

/** Keys of a ListObjectsV2 reply (XML-unescaped), and its common prefixes. */
async function list(query: Record<string, string> = {}): Promise<{ keys: string[]; prefixes: string[] }> {
  const r = await s3({ method: "GET", path: `/${BUCKET}`, query: { "list-type": "2", ...query } });
  assert.equal(r.status, 200, r.text);
  const keys = [...r.text.matchAll(/<Contents>[\s\S]*?<Key>([\s\S]*?)<\/Key>/g)].map((m) => unescapeXml(m[1]!));
  const prefixes = [...r.text.matchAll(/<CommonPrefixes>\s*<Prefix>([\s\S]*?)<\/Prefix>/g)].map((m) => unescapeXml(m[1]!));
  return { keys, prefixes };
}

/**
 * Writes a raw request (head + some body bytes) on a socket, then ends or destroys it; resolves
 * with whatever the server answered before closing (possibly nothing).
 */
function rawExchange(head: string, body: Buffer, close: "end" | "destroy", waitMs = 2000): Promise<string> {
  return new Promise((resolvePromise) => {
    const sock = connect(ep.port, "127.0.0.1");
    const got: Buffer[] = [];
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      sock.destroy();
      resolvePromise(Buffer.concat(got).toString("latin1"));
    };
    sock.on("data", (b: Buffer) => got.push(b));
    sock.on("error", finish);
    sock.on("close", finish);
    sock.on("connect", () => {
      sock.write(head);
      sock.write(body, () => {
        if (close === "end") sock.end();
        else setTimeout(() => {
          sock.destroy();
          finish();
        }, 50);
      });
    });
    setTimeout(finish, waitMs).unref();
  });
}

function requestHead(method: string, path: string, headers: Record<string, string>): string {
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n")}\r\n\r\n`;
}

// ------------------------------------------------------------------------------------------------
// Authentication

test("bad signatures: tampered header, path, query or signature → 403 SignatureDoesNotMatch with RequestId", async () => {
  assert.equal((await putObject("auth/a.txt", "A")).status, 200);
  assert.equal((await putObject("auth/b.txt", "B")).status, 200);

  // The control: the same signing, untampered, works.
  const ok = await sign({ method: "GET", path: objectPath("auth/a.txt"), headers: { "x-amz-meta-probe": "one", range: "bytes=0-0" } });
  const good = await send("GET", objectPath("auth/a.txt"), ok);
  assert.equal(good.status, 206, good.text);
  assert.equal(good.text, "A");

  // A signed header changed after signing.
  assertS3Error(await send("GET", objectPath("auth/a.txt"), { ...ok, "x-amz-meta-probe": "two" }), 403, "SignatureDoesNotMatch");
  assertS3Error(await send("GET", objectPath("auth/a.txt"), { ...ok, range: "bytes=0-10" }), 403, "SignatureDoesNotMatch");
  // An unsigned x-amz-* header added.
  const extra = await send("GET", objectPath("auth/a.txt"), { ...ok, "x-amz-meta-sneaky": "1" });
  assert.equal(extra.status, 403, extra.text);
  // The path: a request signed for a.txt sent to b.txt.
  assertS3Error(await send("GET", objectPath("auth/b.txt"), ok), 403, "SignatureDoesNotMatch");
  // The query: signed for prefix=auth/a, sent with prefix=auth/b.
  const lq = await sign({ method: "GET", path: `/${BUCKET}`, query: { "list-type": "2", prefix: "auth/a" } });
  const lgood = await send("GET", `/${BUCKET}?${queryString({ "list-type": "2", prefix: "auth/a" })}`, lq);
  assert.equal(lgood.status, 200, lgood.text);
  assertS3Error(await send("GET", `/${BUCKET}?${queryString({ "list-type": "2", prefix: "auth/b" })}`, lq), 403, "SignatureDoesNotMatch");
  assertS3Error(await send("GET", `/${BUCKET}?${queryString({ "list-type": "2", prefix: "auth/a", "max-keys": "1" })}`, lq), 403, "SignatureDoesNotMatch");
  // The signature itself, one hex digit flipped.
  const flipped = ok.authorization!.replace(/Signature=([0-9a-f])/, (_m, c: string) => `Signature=${c === "0" ? "1" : "0"}`);
  assertS3Error(await send("GET", objectPath("auth/a.txt"), { ...ok, authorization: flipped }), 403, "SignatureDoesNotMatch");
  // A wrong secret.
  const wrong = new SignatureV4({ credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: "not-the-secret" }, region: REGION, service: "s3", sha256: Sha256, uriEscapePath: false });
  const w = await wrong.sign({ method: "GET", protocol: "http:", hostname: "127.0.0.1", port: ep.port, path: objectPath("auth/a.txt"), query: {}, headers: { host: `127.0.0.1:${ep.port}`, "x-amz-content-sha256": sha256Hex("") } });
  assertS3Error(await send("GET", objectPath("auth/a.txt"), w.headers as Record<string, string>), 403, "SignatureDoesNotMatch");
  // A tampered PUT stores nothing.
  const put = await sign({ method: "PUT", path: objectPath("auth/tampered.txt"), body: "payload", headers: { "x-amz-meta-owner": "alice" } });
  assertS3Error(await send("PUT", objectPath("auth/tampered.txt"), { ...put, "x-amz-meta-owner": "mallory" }, "payload"), 403, "SignatureDoesNotMatch");
  assert.equal(await stored("auth/tampered.txt"), false);
});

test("presigned URLs: expired → 403 AccessDenied; a stretched expiry → SignatureDoesNotMatch; a fresh one works", async () => {
  assert.equal((await putObject("pre/file.txt", "presigned")).status, 200);
  const presign = async (expiresIn: number, signingDate: Date): Promise<string> => {
    // As the S3 presigner does: UNSIGNED-PAYLOAD, not sent as a header.
    const p = await signer.presign(
      { method: "GET", protocol: "http:", hostname: "127.0.0.1", port: ep.port, path: objectPath("pre/file.txt"), query: {}, headers: { host: `127.0.0.1:${ep.port}`, "x-amz-content-sha256": UNSIGNED } },
      { expiresIn, signingDate, unsignableHeaders: new Set(["x-amz-content-sha256"]), unhoistableHeaders: new Set(["x-amz-content-sha256"]) },
    );
    const q: Record<string, string> = {};
    for (const [k, v] of Object.entries(p.query ?? {})) q[k] = String(v);
    return `${objectPath("pre/file.txt")}?${queryString(q)}`;
  };
  const fresh = await send("GET", await presign(60, new Date()), { host: `127.0.0.1:${ep.port}` });
  assert.equal(fresh.status, 200, fresh.text);
  assert.equal(fresh.text, "presigned");
  const expiredUrl = await presign(60, new Date(Date.now() - 5 * 60_000));
  assertS3Error(await send("GET", expiredUrl, { host: `127.0.0.1:${ep.port}` }), 403, "AccessDenied");
  // Extending X-Amz-Expires on the expired URL breaks its signature.
  const stretched = expiredUrl.replace("X-Amz-Expires=60", "X-Amz-Expires=3600");
  assert.notEqual(stretched, expiredUrl);
  assertS3Error(await send("GET", stretched, { host: `127.0.0.1:${ep.port}` }), 403, "SignatureDoesNotMatch");
});

test("skewed clocks: x-amz-date 20 minutes off either way → 403 RequestTimeTooSkewed; 10 minutes is accepted", async () => {
  assert.equal((await putObject("skew.txt", "tick")).status, 200);
  for (const offset of [-20 * 60_000, 20 * 60_000]) {
    const r = await s3({ method: "GET", path: objectPath("skew.txt"), signingDate: new Date(Date.now() + offset) });
    assertS3Error(r, 403, "RequestTimeTooSkewed");
  }
  const late = await s3({ method: "PUT", path: objectPath("skew-put.txt"), body: "late", signingDate: new Date(Date.now() - 20 * 60_000) });
  assertS3Error(late, 403, "RequestTimeTooSkewed");
  assert.equal(await stored("skew-put.txt"), false);
  const within = await s3({ method: "GET", path: objectPath("skew.txt"), signingDate: new Date(Date.now() - 10 * 60_000) });
  assert.equal(within.status, 200, within.text);
});

test("anonymous requests → 403 AccessDenied, and an anonymous PUT stores nothing", async () => {
  assert.equal((await putObject("anon.txt", "private")).status, 200);
  const host = { host: `127.0.0.1:${ep.port}` };
  assertS3Error(await send("GET", objectPath("anon.txt"), host), 403, "AccessDenied");
  assertS3Error(await send("GET", `/${BUCKET}?list-type=2`, host), 403, "AccessDenied");
  assertS3Error(await send("GET", "/", host), 403, "AccessDenied");
  assertS3Error(await send("PUT", objectPath("anon-put.txt"), { ...host, "content-length": "4" }, "evil"), 403, "AccessDenied");
  assert.equal(await stored("anon-put.txt"), false);
  assertS3Error(await send("DELETE", objectPath("anon.txt"), host), 403, "AccessDenied");
  assert.equal(await stored("anon.txt"), true, "an anonymous DELETE deletes nothing");
});

// ------------------------------------------------------------------------------------------------
// Bodies and digests

test("wrong Content-Length: a body shorter than announced, then the client closes → nothing stored, server keeps serving", async (t) => {
  for (const [key, close] of [["short-end.bin", "end"], ["short-destroy.bin", "destroy"]] as const) {
    const headers = await sign({ method: "PUT", path: objectPath(key), payloadHash: UNSIGNED, headers: { "content-length": "100000" } });
    const reply = await rawExchange(requestHead("PUT", objectPath(key), headers), randomBytes(1000), close);
    t.diagnostic(`${close}: ${reply === "" ? "connection closed without a reply" : reply.split("\r\n")[0]!}`);
    if (reply !== "") assert.match(reply, /^HTTP\/1\.1 4\d\d /, `a refusal if anything: ${reply}`);
    assert.equal(await stored(key), false, `${key}: nothing stored`);
  }
  await assertHealthy();
  assert.equal(await stored("short-end.bin"), false);
});

test("a body that does not match the signed x-amz-content-sha256 → 400 XAmzContentSHA256Mismatch, nothing stored", async () => {
  const headers = await sign({ method: "PUT", path: objectPath("sha-mismatch.txt"), payloadHash: sha256Hex("hello"), headers: { "content-length": "11" } });
  const r = await send("PUT", objectPath("sha-mismatch.txt"), headers, "hello world");
  assertS3Error(r, 400, "XAmzContentSHA256Mismatch");
  assert.equal(await stored("sha-mismatch.txt"), false);
  // Same length, other bytes.
  const h2 = await sign({ method: "PUT", path: objectPath("sha-mismatch.txt"), payloadHash: sha256Hex("hello"), headers: { "content-length": "5" } });
  assertS3Error(await send("PUT", objectPath("sha-mismatch.txt"), h2, "jello"), 400, "XAmzContentSHA256Mismatch");
  assert.equal(await stored("sha-mismatch.txt"), false);
});

test("bad Content-MD5 and bad x-amz-checksum-crc32 → 400 BadDigest; nothing stored, an existing object is kept", async () => {
  assert.equal((await putObject("digest.txt", "original")).status, 200);
  const body = "replacement";
  const badMd5 = createHash("md5").update("something else").digest("base64");
  assertS3Error(await putObject("digest.txt", body, { "content-md5": badMd5 }), 400, "BadDigest");
  assertS3Error(await putObject("digest-new.txt", body, { "content-md5": badMd5 }), 400, "BadDigest");
  // x-amz-checksum-crc32 of other content (CRC32 of "abc" is 0x352441c2).
  assertS3Error(await putObject("digest.txt", body, { "x-amz-checksum-crc32": Buffer.from([0x35, 0x24, 0x41, 0xc2]).toString("base64") }), 400, "BadDigest");
  assertS3Error(await putObject("digest-new.txt", body, { "x-amz-checksum-crc32": "AAAAAA==" }), 400, "BadDigest");
  assert.equal(await stored("digest-new.txt"), false);
  assert.equal((await getObject("digest.txt")).text, "original");
  // The right digests are accepted (so the refusals above were about the values).
  const crc = await putObject("crc-ok.txt", "abc", { "x-amz-checksum-crc32": Buffer.from([0x35, 0x24, 0x41, 0xc2]).toString("base64") });
  assert.equal(crc.status, 200, crc.text);
  const md5ok = await putObject("md5-ok.txt", body, { "content-md5": createHash("md5").update(body).digest("base64") });
  assert.equal(md5ok.status, 200, md5ok.text);
  assert.equal(md5ok.headers.etag, `"${md5Hex(body)}"`);
});

test("malformed XML: CompleteMultipartUpload and DeleteObjects → 400 MalformedXML, state unchanged", async () => {
  const created = await s3({ method: "POST", path: objectPath("mpu-xml.bin"), query: { uploads: "" } });
  assert.equal(created.status, 200, created.text);
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created.text)![1]!;
  const part = await s3({ method: "PUT", path: objectPath("mpu-xml.bin"), query: { partNumber: "1", uploadId }, body: "part one" });
  assert.equal(part.status, 200, part.text);
  for (const bad of ["<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>", "not xml at all", `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${part.headers.etag}</ETag></Part></Wrong>`, ""]) {
    const r = await s3({ method: "POST", path: objectPath("mpu-xml.bin"), query: { uploadId }, body: bad });
    assertS3Error(r, 400, "MalformedXML");
  }
  assert.equal(await stored("mpu-xml.bin"), false, "no object from a failed complete");
  const parts = await s3({ method: "GET", path: objectPath("mpu-xml.bin"), query: { uploadId } });
  assert.equal(parts.status, 200, "the upload is still there");
  assert.match(parts.text, /<PartNumber>1<\/PartNumber>/);

  assert.equal((await putObject("keep-me.txt", "kept")).status, 200);
  for (const bad of ["<Delete><Object><Key>keep-me.txt</Key></Object>", "<Delete><Object><Key>keep-me.txt</Key></Object></Delete><extra/>", "{\"Delete\":[]}"]) {
    const r = await s3({ method: "POST", path: `/${BUCKET}`, query: { delete: "" }, body: bad, headers: { "content-md5": createHash("md5").update(bad).digest("base64") } });
    assertS3Error(r, 400, "MalformedXML");
  }
  assert.equal(await stored("keep-me.txt"), true);
  // The well-formed document works.
  const good = "<Delete><Object><Key>keep-me.txt</Key></Object></Delete>";
  const d = await s3({ method: "POST", path: `/${BUCKET}`, query: { delete: "" }, body: good, headers: { "content-md5": createHash("md5").update(good).digest("base64") } });
  assert.equal(d.status, 200, d.text);
  assert.equal(await stored("keep-me.txt"), false);
});

// ------------------------------------------------------------------------------------------------
// Keys

function allFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) {
      out.push(p);
      allFiles(p, out);
    } else out.push(p);
  }
  return out;
}

test("path traversal in keys: stored as ordinary keys in the bucket, nothing written outside the data directory", async () => {
  const tag = `stowage-traversal-${randomBytes(6).toString("hex")}`;
  const passwd = readFileSync("/etc/passwd");
  const keys = ["../../etc/passwd", "a/../../b", `../../../../../../../../../..${tmpdir()}/${tag}`, `../${tag}`, `a/../../${tag}`, `./${tag}/./x`, `..\\..\\${tag}`, `%2e%2e/${tag}`];
  for (const [i, key] of keys.entries()) {
    const body = `traversal ${i}`;
    // The path exactly as typed (`..` segments unencoded on the wire), and percent-encoded dots.
    const wire = `/${BUCKET}/${key.split("/").map((s) => (s === ".." || s === "." ? s : sigv4Encode(s, false))).join("/")}`;
    const put = await s3({ method: "PUT", path: wire, body });
    assert.equal(put.status, 200, `${key}: ${put.text}`);
    assert.equal(put.headers.etag, `"${md5Hex(body)}"`);
    const got = await s3({ method: "GET", path: objectPath(key) });
    assert.equal(got.status, 200, `${key} reads back under its literal name`);
    assert.equal(got.text, body);
  }
  // Percent-encoded dots name the same key (signed, as SigV4 wants, over the canonical form).
  const encodedDots = await send("GET", `/${BUCKET}/%2E%2E/%2E%2E/etc/passwd`, await sign({ method: "GET", path: objectPath("../../etc/passwd") }));
  assert.equal(encodedDots.text, "traversal 0", "%2E%2E is the same key as ..");
  const listed = await list({ prefix: "" });
  for (const key of keys) assert.ok(listed.keys.includes(key), `listed: ${key}`);
  // Nothing outside the data directory: /etc/passwd untouched, no file named by the tag anywhere
  // the traversals could reach, and nothing inside the data directory named after the keys.
  assert.ok(readFileSync("/etc/passwd").equals(passwd), "/etc/passwd unchanged");
  const inside = allFiles(ep.dir);
  assert.ok(!inside.some((p) => p.includes(tag) || p.endsWith("/passwd")), "keys never become file names");
  for (const base of [ep.dir, ...inside.filter((p) => statSync(p).isDirectory()), process.cwd(), "/"]) {
    for (const key of keys) assert.equal(existsSync(resolve(base, key)) && resolve(base, key).includes(tag), false, `${resolve(base, key)} not created`);
  }
  assert.equal(existsSync(join(tmpdir(), tag)), false);
  assert.equal(existsSync(join(dirname(ep.dir), tag)), false);
  assert.equal(existsSync(join("/", tag)), false);
});

test("key length: 1024 bytes of UTF-8 are accepted, 1025 → 400 KeyTooLongError", async () => {
  const ascii1024 = "k".repeat(1024);
  const wide1024 = "é".repeat(512); // 2 bytes each
  for (const key of [ascii1024, wide1024]) {
    assert.equal(Buffer.byteLength(key), 1024);
    const put = await putObject(key, "long");
    assert.equal(put.status, 200, put.text);
    assert.equal((await getObject(key)).text, "long");
  }
  for (const key of ["k".repeat(1025), "a" + "é".repeat(512)]) {
    assert.equal(Buffer.byteLength(key), 1025);
    assertS3Error(await putObject(key, "too long"), 400, "KeyTooLongError");
  }
  assert.deepEqual((await list({ prefix: "kkkk" })).keys, [ascii1024], "only the 1024-byte key exists");
  assert.deepEqual((await list({ prefix: "aé" })).keys, []);
});

test("unicode keys (CJK, emoji, combining characters, % and +) round-trip and list correctly", async () => {
  const keys = [
    "uni/日本語/ファイル名.txt",
    "uni/中文 文件.mp4",
    "uni/📦/🎬 clip 🎞️.mov",
    "uni/e\u0301", // e + combining acute
    "uni/\u00e9", // precomposed é: another key
    "uni/100% done.txt",
    "uni/a+b=c&d.txt",
    "uni/%2F literal percent-two-f",
    "uni/<tag> & 'quote\".xml",
    "uni/ﬁ ligature Ω ß",
  ];
  for (const [i, key] of keys.entries()) {
    const put = await putObject(key, `body ${i}`);
    assert.equal(put.status, 200, `${key}: ${put.text}`);
  }
  for (const [i, key] of keys.entries()) {
    const r = await getObject(key);
    assert.equal(r.status, 200, key);
    assert.equal(r.text, `body ${i}`, key);
  }
  assert.notEqual((await getObject("uni/e\u0301")).text, (await getObject("uni/\u00e9")).text, "no Unicode normalisation of keys");
  const all = await list({ prefix: "uni/" });
  assert.deepEqual(all.keys, [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))), "listed in UTF-8 byte order, exactly");
  const dirs = await list({ prefix: "uni/", delimiter: "/" });
  assert.deepEqual(dirs.prefixes, ["uni/日本語/", "uni/📦/"]);
  const cjk = await list({ prefix: "uni/日本語/" });
  assert.deepEqual(cjk.keys, ["uni/日本語/ファイル名.txt"]);
  const plus = await list({ prefix: "uni/a+b" });
  assert.deepEqual(plus.keys, ["uni/a+b=c&d.txt"], "+ in a prefix is a plus, not a space");
  // encoding-type=url: every key decodes back to itself.
  const r = await s3({ method: "GET", path: `/${BUCKET}`, query: { "list-type": "2", prefix: "uni/", "encoding-type": "url" } });
  assert.equal(r.status, 200, r.text);
  const rawKeys = [...r.text.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => unescapeXml(m[1]!));
  assert.ok(rawKeys.every((k) => /^[\x21-\x7e]*$/.test(k)), `url-encoded keys are printable ASCII: ${rawKeys.join(" | ")}`);
  const encoded = rawKeys.map((k) => decodeURIComponent(k.replace(/\+/g, "%20")));
  assert.deepEqual(encoded, all.keys);
});

// ------------------------------------------------------------------------------------------------
// Connections

test("an oversized header section (> 16 KiB) → 431 or 400; the server stays healthy", async (t) => {
  const big = requestHead("GET", "/health", { host: `127.0.0.1:${ep.port}`, "x-pad": "a".repeat(20 * 1024) });
  const reply = await rawExchange(big, Buffer.alloc(0), "end");
  assert.match(reply, /^HTTP\/1\.1 (431|400) /, reply.slice(0, 200));
  const many: Record<string, string> = { host: `127.0.0.1:${ep.port}` };
  for (let i = 0; i < 400; i++) many[`x-h-${i}`] = "v".repeat(60);
  const reply2 = await rawExchange(requestHead("GET", "/health", many), Buffer.alloc(0), "end");
  assert.match(reply2, /^HTTP\/1\.1 (431|400) /, reply2.slice(0, 200));
  // A signed request with an oversized (signed) header is refused the same way, not half-handled.
  const headers = await sign({ method: "PUT", path: objectPath("huge-header.txt"), body: "x", headers: { "x-amz-meta-big": "b".repeat(17 * 1024) } });
  const reply3 = await rawExchange(requestHead("PUT", objectPath("huge-header.txt"), headers), Buffer.from("x"), "end");
  assert.match(reply3, /^HTTP\/1\.1 (431|400) /, reply3.slice(0, 200));
  assert.equal(await stored("huge-header.txt"), false);
  t.diagnostic([reply, reply2, reply3].map((r) => r.split("\r\n")[0]!).join("; "));
  await assertHealthy();
});

test("a client that disconnects mid-upload leaves nothing committed; fsck is clean; the server answers", async () => {
  const size = 4 * 1024 * 1024;
  const headers = await sign({ method: "PUT", path: objectPath("cut.bin"), payloadHash: UNSIGNED, headers: { "content-length": String(size) } });
  await rawExchange(requestHead("PUT", objectPath("cut.bin"), headers), randomBytes(size / 2), "destroy");
  // A multipart part cut the same way.
  const created = await s3({ method: "POST", path: objectPath("cut-mpu.bin"), query: { uploads: "" } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created.text)![1]!;
  const ph = await sign({ method: "PUT", path: objectPath("cut-mpu.bin"), query: { partNumber: "1", uploadId }, payloadHash: UNSIGNED, headers: { "content-length": String(size) } });
  await rawExchange(requestHead("PUT", `${objectPath("cut-mpu.bin")}?${queryString({ partNumber: "1", uploadId })}`, ph), randomBytes(size / 2), "destroy");
  await sleep(300);
  await assertHealthy();
  assert.equal(await stored("cut.bin"), false);
  const parts = await s3({ method: "GET", path: objectPath("cut-mpu.bin"), query: { uploadId } });
  assert.equal(parts.status, 200, parts.text);
  assert.doesNotMatch(parts.text, /<Part>/, "no part recorded");
  const report = await fsck(ep.repo.store, { readData: true });
  assert.ok(report.ok, JSON.stringify(report.problems));
});

// ------------------------------------------------------------------------------------------------
// Signed aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), chunk signatures by hand

/** The SigV4 signing key, derived by hand. */
function signingKey(date: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${SECRET_KEY}`, date), REGION), "s3"), "aws4_request");
}

/** aws-chunked body with the chunk-signature chain seeded by `seed`; `tamper` edits data after signing. */
function chunkedBody(data: Buffer, chunkSize: number, amzDate: string, seed: string, tamper?: (chunks: Buffer[]) => void): Buffer {
  const date = amzDate.slice(0, 8);
  const scope = `${date}/${REGION}/s3/aws4_request`;
  const key = signingKey(date);
  const chunks: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunkSize) chunks.push(Buffer.from(data.subarray(off, off + chunkSize)));
  chunks.push(Buffer.alloc(0));
  let prev = seed;
  const sigs = chunks.map((c) => {
    const sts = ["AWS4-HMAC-SHA256-PAYLOAD", amzDate, scope, prev, sha256Hex(""), sha256Hex(c)].join("\n");
    prev = hmac(key, sts).toString("hex");
    return prev;
  });
  tamper?.(chunks);
  return Buffer.concat(chunks.flatMap((c, i) => [Buffer.from(`${c.length.toString(16)};chunk-signature=${sigs[i]!}\r\n`), c, Buffer.from("\r\n")]));
}

async function chunkedPut(key: string, data: Buffer, tamper?: (chunks: Buffer[]) => void): Promise<Reply> {
  const chunkSize = 64 * 1024;
  // The encoded length does not depend on the signatures' values.
  const encodedLength = chunkedBody(data, chunkSize, "20000101T000000Z", "0".repeat(64)).length;
  const headers = await sign({
    method: "PUT",
    path: objectPath(key),
    payloadHash: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    headers: { "content-encoding": "aws-chunked", "x-amz-decoded-content-length": String(data.length), "content-length": String(encodedLength) },
  });
  const seed = /Signature=([0-9a-f]{64})/.exec(headers.authorization!)![1]!;
  const body = chunkedBody(data, chunkSize, headers["x-amz-date"]!, seed, tamper);
  assert.equal(body.length, encodedLength);
  return send("PUT", objectPath(key), headers, body);
}

test("signed aws-chunked upload: hand-computed chunk signatures succeed; a tampered chunk is refused and nothing stored", async () => {
  const data = randomBytes(200_000 + 123);
  const ok = await chunkedPut("chunked/ok.bin", data);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers.etag, `"${md5Hex(data)}"`);
  const back = await getObject("chunked/ok.bin");
  assert.ok(back.body.equals(data), "the decoded bytes, without the chunk framing");

  // One byte of the second chunk changed after signing.
  const bad = await chunkedPut("chunked/tampered.bin", data, (chunks) => {
    chunks[1]![100] = chunks[1]![100]! ^ 0xff;
  });
  assertS3Error(bad, 403, "SignatureDoesNotMatch");
  assert.equal(await stored("chunked/tampered.bin"), false);
  // Two chunks swapped (each signature valid on its own, the chain is not).
  const swapped = await chunkedPut("chunked/swapped.bin", data, (chunks) => {
    const t = chunks[0]!;
    chunks[0] = chunks[1]!;
    chunks[1] = t;
  });
  assertS3Error(swapped, 403, "SignatureDoesNotMatch");
  assert.equal(await stored("chunked/swapped.bin"), false);
  await assertHealthy();
});

// ------------------------------------------------------------------------------------------------
// Slow reader

/** Deterministic pseudo-random bytes (AES-256-CTR of zeros), generated as they are sent. */
function* pseudoRandom(total: number, seed: number): Generator<Buffer> {
  const cipher = createCipheriv("aes-256-ctr", createHash("sha256").update(String(seed)).digest(), Buffer.alloc(16));
  const zeros = Buffer.alloc(1024 * 1024);
  for (let left = total; left > 0; left -= zeros.length) yield cipher.update(zeros.subarray(0, Math.min(left, zeros.length)));
}

test("slow reader: a 50 MB GET read at ~300 KB/s does not make the server hold the object in memory", async (t) => {
  const size = 50 * 1024 * 1024;
  const headers = await sign({ method: "PUT", path: objectPath("large.bin"), payloadHash: UNSIGNED, headers: { "content-length": String(size) } });
  const md5 = createHash("md5");
  const putStatus = await new Promise<number>((resolvePromise, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: ep.port, method: "PUT", path: objectPath("large.bin"), headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolvePromise(res.statusCode ?? 0));
    });
    req.on("error", reject);
    const gen = pseudoRandom(size, 7);
    const pump = (): void => {
      for (;;) {
        const next = gen.next();
        if (next.done === true) {
          req.end();
          return;
        }
        md5.update(next.value);
        if (!req.write(next.value)) {
          req.once("drain", pump);
          return;
        }
      }
    };
    pump();
  });
  assert.equal(putStatus, 200);
  assert.equal((await ep.repo.store.headObject(BUCKET, "large.bin")).etag, md5.digest("hex"));

  await sleep(200);
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 50);
  const rate = 300 * 1024;
  const getHeaders = await sign({ method: "GET", path: objectPath("large.bin") });
  let received = 0;
  let status = 0;
  let contentLength = "";
  await new Promise<void>((resolvePromise, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: ep.port, method: "GET", path: objectPath("large.bin"), headers: getHeaders, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      contentLength = String(res.headers["content-length"]);
      const started = Date.now();
      let reading = true;
      res.on("data", (b: Buffer) => {
        received += b.length;
        res.pause();
        const due = started + (received / rate) * 1000;
        setTimeout(() => {
          if (reading) res.resume();
        }, Math.max(0, due - Date.now()));
      });
      // Read slowly for a second, then stay paused (the server sees a stalled reader).
      setTimeout(() => {
        reading = false;
        res.pause();
        setTimeout(() => {
          peak = Math.max(peak, process.memoryUsage().rss);
          req.destroy();
          resolvePromise();
        }, 700);
      }, 1000);
      res.on("error", () => undefined);
    });
    req.on("error", (err) => {
      if (received === 0) reject(err);
    });
    req.end();
  });
  clearInterval(sampler);
  assert.equal(status, 200);
  assert.equal(contentLength, String(size));
  assert.ok(received > 100 * 1024 && received < 5 * 1024 * 1024, `read slowly: ${received} bytes`);
  const growth = peak - baseline;
  t.diagnostic(`read ${received} bytes slowly; peak RSS growth ${(growth / 1048576).toFixed(1)} MiB`);
  assert.ok(growth < 30 * 1024 * 1024, `RSS grew by ${(growth / 1048576).toFixed(1)} MiB while a reader stalled on a 50 MiB object`);
  await assertHealthy();
});
