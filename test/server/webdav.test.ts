/**
 * The WebDAV server (src/server/webdav) on a real socket over a real store: the raw protocol with
 * Node's fetch and with curl (a separate process), and a real WebDAV client, rclone. Every data
 * check is also made on the S3 side (the store's getObject / listing): what WebDAV writes is an
 * object in the bucket.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { request } from "node:http";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import { StowageFs } from "../../src/fs/fs.js";
import { WebDavServer } from "../../src/server/webdav/server.js";
import { DAV_NS, elementsOf, parseDavXml, textOf, type DavElement } from "../../src/server/webdav/xml.js";
import type { ObjectStore } from "../../src/store/store.js";
import { bytes, makeStore, readAll, type TestStore } from "../store/helpers.js";

const CURL = "/usr/bin/curl";
const RCLONE = "/usr/bin/rclone";
const ACCESS_KEY = "STWWEBDAVTESTKEY01";
const SECRET = "s3cr3t+/=with:colon";
const OTHER_KEY = "STWWEBDAVTESTKEY02";
const OTHER_SECRET = "another-secret";

let t: TestStore;
let fs: StowageFs;
let server: WebDavServer;
let authServer: WebDavServer;
let base: string; // http://127.0.0.1:port (no auth)
let authBase: string; // with Basic auth
let work: string;

before(async () => {
  t = await makeStore();
  fs = new StowageFs(t.store);
  server = new WebDavServer({ fs });
  authServer = new WebDavServer({ fs, credentials: { secretFor: (id) => (id === ACCESS_KEY ? SECRET : id === OTHER_KEY ? OTHER_SECRET : undefined) } });
  const a = await server.listen(0, "127.0.0.1");
  const b = await authServer.listen(0, "127.0.0.1");
  base = `http://127.0.0.1:${a.port}`;
  authBase = `http://127.0.0.1:${b.port}`;
  work = mkdtempSync(join(tmpdir(), "stowage-webdav-"));
});

after(async () => {
  await server.close();
  await authServer.close();
  await t.close();
  rmSync(work, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------------
// Helpers

interface Resp {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

async function dav(method: string, path: string, options: { headers?: Record<string, string>; body?: string | Buffer; base?: string } = {}): Promise<Resp> {
  const r = await fetch((options.base ?? base) + path, { method, headers: options.headers ?? {}, ...(options.body === undefined ? {} : { body: options.body }) });
  const body = Buffer.from(await r.arrayBuffer());
  const headers: Record<string, string> = {};
  r.headers.forEach((v, k) => (headers[k] = v));
  return { status: r.status, headers, body, text: body.toString("utf8") };
}

function run(bin: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env: env ?? process.env, encoding: "buffer", maxBuffer: 64 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new Error(`${bin} ${args.join(" ")} failed (${String(err.code ?? err.signal)}):\n${stdout.toString()}\n${stderr.toString()}`));
        return;
      }
      resolve({ stdout, stderr: stderr.toString() });
    });
  });
}

/** curl as a separate process: status, headers (lowercase, last value wins) and body. */
async function curl(...args: string[]): Promise<Resp> {
  const { stdout } = await run(CURL, ["-s", "-S", "-i", "--http1.1", ...args]);
  let rest = stdout;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    assert.ok(end >= 0, `no header end in curl output: ${rest.toString().slice(0, 200)}`);
    const head = rest.subarray(0, end).toString("latin1").split("\r\n");
    rest = rest.subarray(end + 4);
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head[0] ?? "")?.[1]);
    if (status >= 100 && status < 200) continue;
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { status, headers, body: rest, text: rest.toString("utf8") };
  }
}

interface PropStat {
  status: number;
  el: DavElement;
}
interface DavResponse {
  href: string;
  status: number | undefined;
  /** By local name for DAV: properties, "ns name" for others. */
  props: Map<string, PropStat>;
}

function statusOf(line: string): number {
  return Number(/^HTTP\/[\d.]+ (\d{3})/.exec(line.trim())?.[1]);
}

function child(el: DavElement, name: string): DavElement | undefined {
  return elementsOf(el).find((e) => e.ns === DAV_NS && e.name === name);
}

/** A 207 body, by href. */
function multistatus(text: string): Map<string, DavResponse> {
  const root = parseDavXml(text);
  assert.equal(root.ns, DAV_NS);
  assert.equal(root.name, "multistatus");
  const out = new Map<string, DavResponse>();
  for (const r of elementsOf(root)) {
    assert.equal(r.name, "response");
    const href = textOf(child(r, "href")!);
    const st = child(r, "status");
    const props = new Map<string, PropStat>();
    for (const ps of elementsOf(r).filter((e) => e.name === "propstat")) {
      const status = statusOf(textOf(child(ps, "status")!));
      for (const p of elementsOf(child(ps, "prop")!)) props.set(p.ns === DAV_NS ? p.name : `${p.ns} ${p.name}`, { status, el: p });
    }
    out.set(href, { href, status: st === undefined ? undefined : statusOf(textOf(st)), props });
  }
  return out;
}

function prop(r: DavResponse | undefined, name: string): string {
  assert.ok(r !== undefined, "response present");
  const p = r.props.get(name);
  assert.ok(p !== undefined, `property ${name} present`);
  assert.equal(p.status, 200, `property ${name} found`);
  return textOf(p.el);
}

const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");
const RFC1123 = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

async function keys(store: ObjectStore, bucket: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const page = await store.listObjects(bucket, { prefix, ...(token === undefined ? {} : { continuationToken: token }) });
    out.push(...page.objects.map((o) => o.key));
    token = page.isTruncated ? page.nextContinuationToken : undefined;
  } while (token !== undefined);
  return out;
}

const LOCKINFO = (scope: "exclusive" | "shared", owner = "") =>
  `<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:${scope}/></D:lockscope><D:locktype><D:write/></D:locktype>${owner}</D:lockinfo>`;

async function lock(path: string, scope: "exclusive" | "shared", headers: Record<string, string> = {}): Promise<Resp & { token: string }> {
  const r = await dav("LOCK", path, { headers: { "content-type": "application/xml", ...headers }, body: LOCKINFO(scope, "<D:owner><D:href>mailto:a@example.com</D:href></D:owner>") });
  const token = /^<(.+)>$/.exec(r.headers["lock-token"] ?? "")?.[1] ?? "";
  return { ...r, token };
}

// ------------------------------------------------------------------------------------------------
// Raw protocol


/** Watches the store's PutObject calls: how many, the pieces their bodies arrived in, how many failed. */
function spyPuts(store: ObjectStore): { calls: number; failed: number; pieces: number[]; received(): number; restore(): void } {
  const original = store.putObject.bind(store);
  const spy = {
    calls: 0,
    failed: 0,
    pieces: [] as number[],
    received: () => spy.pieces.reduce((x, y) => x + y, 0),
    restore: () => {
      store.putObject = original;
    },
  };
  store.putObject = async (bucket, key, source, options) => {
    spy.calls++;
    async function* watched(): AsyncGenerator<Uint8Array> {
      for await (const piece of source) {
        spy.pieces.push(piece.length);
        yield piece;
      }
    }
    try {
      return await original(bucket, key, watched(), options);
    } catch (err) {
      spy.failed++;
      throw err;
    }
  };
  return spy;
}

test("OPTIONS and PROPFIND: depth 0 and 1, live properties, encoded hrefs, infinity refused", async () => {
  await t.store.createBucket("props");
  const data = bytes(1000, 1);
  await t.store.putObject("props", "top.bin", [data]);
  await t.store.putObject("props", "dir/ä b&c.txt", [Buffer.from("hello")]);

  const o = await dav("OPTIONS", "/props/");
  assert.equal(o.status, 200);
  assert.match(o.headers.dav ?? "", /^1, 2$/);
  for (const m of ["PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "COPY", "MOVE", "MKCOL"]) assert.ok(o.headers.allow?.includes(m), `Allow lists ${m}`);

  const d0 = await dav("PROPFIND", "/props", { headers: { depth: "0" } });
  assert.equal(d0.status, 207);
  assert.match(d0.headers["content-type"] ?? "", /xml/);
  let ms = multistatus(d0.text);
  assert.deepEqual([...ms.keys()], ["/props/"], "a collection's href ends in /");
  assert.ok(child(ms.get("/props/")!.props.get("resourcetype")!.el, "collection"), "a bucket is a collection");

  const d1 = await dav("PROPFIND", "/props/", { headers: { depth: "1" } });
  assert.equal(d1.status, 207);
  ms = multistatus(d1.text);
  assert.deepEqual([...ms.keys()].sort(), ["/props/", "/props/dir/", "/props/top.bin"]);
  const top = ms.get("/props/top.bin");
  const head = await t.store.headObject("props", "top.bin");
  assert.equal(prop(top, "getcontentlength"), "1000");
  assert.equal(prop(top, "getetag"), `"${md5(data)}"`);
  assert.equal(prop(top, "getetag"), `"${head.etag}"`);
  assert.match(prop(top, "getlastmodified"), RFC1123);
  assert.equal(prop(top, "getlastmodified"), new Date(head.lastModified).toUTCString());
  assert.match(prop(top, "creationdate"), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
  assert.equal(prop(top, "displayname"), "top.bin");
  assert.equal(elementsOf(top!.props.get("resourcetype")!.el).length, 0, "a file's resourcetype is empty");
  assert.equal(elementsOf(top!.props.get("supportedlock")!.el).length, 2, "exclusive and shared write locks");
  assert.equal(ms.get("/props/dir/")!.props.get("getcontentlength"), undefined, "no length for a collection");

  // Non-ASCII, space and & in a name: percent-encoded href, escaped XML, decoded displayname.
  const sub = await curl("-X", "PROPFIND", "-H", "Depth: 1", `${base}/props/dir/`);
  assert.equal(sub.status, 207);
  assert.ok(sub.text.includes("<D:href>/props/dir/%C3%A4%20b%26c.txt</D:href>"), sub.text);
  ms = multistatus(sub.text);
  assert.equal(prop(ms.get("/props/dir/%C3%A4%20b%26c.txt"), "displayname"), "ä b&c.txt");
  assert.equal(prop(ms.get("/props/dir/%C3%A4%20b%26c.txt"), "getcontentlength"), "5");
  // The same file addressed by its encoded URL.
  const g = await dav("GET", "/props/dir/%C3%A4%20b%26c.txt");
  assert.equal(g.text, "hello");

  // Named properties: found ones under 200, unknown ones under 404; quota from statfs.
  const named = await dav("PROPFIND", "/props/top.bin", {
    headers: { depth: "0" },
    body: `<?xml version="1.0"?><propfind xmlns="DAV:" xmlns:x="urn:example"><prop><getcontentlength/><x:colour/><quota-available-bytes/><quota-used-bytes/></prop></propfind>`,
  });
  assert.equal(named.status, 207);
  const n = multistatus(named.text).get("/props/top.bin")!;
  assert.equal(prop(n, "getcontentlength"), "1000");
  assert.equal(n.props.get("urn:example colour")?.status, 404);
  assert.ok(Number(prop(n, "quota-available-bytes")) > 0);
  assert.ok(Number(prop(n, "quota-used-bytes")) >= 0);
  assert.equal(n.props.get("getetag"), undefined, "only what was asked for");

  const names = await dav("PROPFIND", "/props/top.bin", { headers: { depth: "0" }, body: `<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>` });
  const pn = multistatus(names.text).get("/props/top.bin")!;
  assert.equal(pn.props.get("getetag")?.status, 200);
  assert.equal(textOf(pn.props.get("getetag")!.el), "", "propname gives names only");

  // Root lists buckets.
  const root = multistatus((await dav("PROPFIND", "/", { headers: { depth: "1" } })).text);
  assert.ok(root.has("/") && root.has("/props/"));

  for (const depth of ["infinity", undefined]) {
    const inf = await dav("PROPFIND", "/props/", depth === undefined ? {} : { headers: { depth } });
    assert.equal(inf.status, 403, `Depth ${String(depth)}`);
    assert.ok(inf.text.includes("propfind-finite-depth"), inf.text);
  }
  assert.equal((await dav("PROPFIND", "/props/nope", { headers: { depth: "0" } })).status, 404);
  assert.equal((await dav("PROPFIND", "/nobucket/", { headers: { depth: "0" } })).status, 404);
});

test("PUT, GET, HEAD, Range and conditional GET; what WebDAV writes is read back through S3", async () => {
  await t.store.createBucket("iobkt");
  const a = Buffer.from("first version\n");
  let r = await dav("PUT", "/iobkt/a.txt", { body: a });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.headers.etag, `"${md5(a)}"`);
  assert.ok((await readAll(t.store, "iobkt", "a.txt")).equals(a), "S3 reads what WebDAV wrote");
  const b = Buffer.from("second, longer version\n");
  r = await dav("PUT", "/iobkt/a.txt", { body: b });
  assert.equal(r.status, 204, "replacing is 204");
  assert.ok((await readAll(t.store, "iobkt", "a.txt")).equals(b));
  assert.equal((await t.store.headObject("iobkt", "a.txt")).etag, md5(b), "a streamed file has its MD5 as ETag");

  // A large body is streamed into the store in pieces, never as one buffer.
  const big = bytes(3 * 1024 * 1024 + 123, 7);
  const local = join(work, "big.bin");
  writeFileSync(local, big);
  let spy = spyPuts(t.store);
  try {
    r = await curl("-T", local, `${base}/iobkt/big.bin`);
  } finally {
    spy.restore();
  }
  assert.equal(r.status, 201, r.text);
  assert.equal(spy.calls, 1, "one PutObject");
  assert.ok(spy.pieces.length > 10 && Math.max(...spy.pieces) < big.length / 4, `body read in ${spy.pieces.length} pieces, largest ${Math.max(...spy.pieces)}`);
  assert.equal(spy.pieces.reduce((x, y) => x + y, 0), big.length);
  assert.ok((await readAll(t.store, "iobkt", "big.bin")).equals(big), "S3 reads the 3 MiB file");
  assert.equal(r.headers.etag, `"${md5(big)}"`, "the PUT answers the content MD5 as ETag");

  const got = await curl(`${base}/iobkt/big.bin`);
  assert.equal(got.status, 200);
  assert.ok(got.body.equals(big), "GET returns the bytes");
  assert.equal(got.headers.etag, `"${md5(big)}"`);
  assert.equal(got.headers["accept-ranges"], "bytes");

  // Ranges.
  r = await curl("-H", "Range: bytes=100-199", `${base}/iobkt/big.bin`);
  assert.equal(r.status, 206);
  assert.equal(r.headers["content-range"], `bytes 100-199/${big.length}`);
  assert.ok(r.body.equals(big.subarray(100, 200)));
  r = await dav("GET", "/iobkt/big.bin", { headers: { range: "bytes=-10" } });
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(big.subarray(big.length - 10)));
  r = await dav("GET", "/iobkt/big.bin", { headers: { range: `bytes=${big.length - 5}-` } });
  assert.equal(r.status, 206);
  assert.equal(r.headers["content-range"], `bytes ${big.length - 5}-${big.length - 1}/${big.length}`);
  assert.ok(r.body.equals(big.subarray(big.length - 5)));
  r = await dav("GET", "/iobkt/big.bin", { headers: { range: `bytes=${big.length}-` } });
  assert.equal(r.status, 416);
  assert.equal(r.headers["content-range"], `bytes */${big.length}`);
  r = await dav("GET", "/iobkt/a.txt", { headers: { range: "bytes=0-1,4-5" } });
  assert.equal(r.status, 200, "several ranges: the whole body");
  assert.ok(r.body.equals(b));
  r = await dav("GET", "/iobkt/a.txt", { headers: { range: "bytes=0-5", "if-range": '"not-the-etag"' } });
  assert.equal(r.status, 200, "If-Range with a stale ETag: the whole body");

  // HEAD and conditionals.
  r = await curl("-I", `${base}/iobkt/big.bin`);
  assert.equal(r.status, 200);
  assert.equal(r.headers["content-length"], String(big.length));
  assert.equal(r.body.length, 0);
  const etag = r.headers.etag!;
  assert.equal((await dav("GET", "/iobkt/big.bin", { headers: { "if-none-match": etag } })).status, 304);
  assert.equal((await dav("GET", "/iobkt/big.bin", { headers: { "if-none-match": '"other"' } })).status, 200);
  assert.equal((await dav("GET", "/iobkt/a.txt", { headers: { "if-modified-since": new Date(Date.now() + 60_000).toUTCString() } })).status, 304);
  assert.equal((await dav("GET", "/iobkt/a.txt", { headers: { "if-modified-since": new Date(0).toUTCString() } })).status, 200);
  assert.equal((await dav("PUT", "/iobkt/a.txt", { headers: { "if-none-match": "*" }, body: "x" })).status, 412, "If-None-Match: * on an existing file");
  assert.equal((await dav("PUT", "/iobkt/a.txt", { headers: { "if-match": '"nope"' }, body: "x" })).status, 412);
  assert.ok((await readAll(t.store, "iobkt", "a.txt")).equals(b), "refused PUTs changed nothing");

  // Where a PUT cannot go.
  assert.equal((await dav("PUT", "/iobkt/missing/x.txt", { body: "x" })).status, 409, "missing parent");
  assert.equal((await dav("PUT", "/iobkt/a.txt/x.txt", { body: "x" })).status, 409, "parent is a file");
  assert.equal((await dav("MKCOL", "/iobkt/d")).status, 201);
  assert.equal((await dav("PUT", "/iobkt/d", { body: "x" })).status, 409, "onto a collection");
  assert.equal((await dav("PUT", "/iobkt", { body: "x" })).status, 405, "a bucket is not a file");
  assert.equal((await dav("GET", "/iobkt/nope")).status, 404);

  // A name with a space and non-ASCII characters, via curl and an encoded URL.
  r = await curl("-X", "PUT", "--data-binary", "ünïcode", `${base}/iobkt/d/sp%20%C3%A9.txt`);
  assert.equal(r.status, 201);
  assert.equal((await readAll(t.store, "iobkt", "d/sp é.txt")).toString(), "ünïcode");

  // Overwriting keeps the file's mode and inode number; X-OC-Mtime (ownCloud's header) sets the
  // modification time.
  await fs.setattr("/iobkt/a.txt", { mode: 0o600 });
  const inoBefore = (await fs.getattr("/iobkt/a.txt")).ino;
  r = await curl("-X", "PUT", "-H", "X-OC-Mtime: 1600000000", "--data-binary", "third", `${base}/iobkt/a.txt`);
  assert.equal(r.status, 204);
  assert.equal(r.headers["x-oc-mtime"], "accepted");
  assert.equal((await fs.getattr("/iobkt/a.txt")).mode & 0o7777, 0o600, "mode kept across a PUT");
  assert.equal((await fs.getattr("/iobkt/a.txt")).ino, inoBefore, "inode number kept across a PUT");
  const third = await t.store.headObject("iobkt", "a.txt");
  assert.equal(third.userMetadata.mtime, "1600000000.000");
  assert.equal(third.etag, md5(Buffer.from("third")), "attributes set with the upload keep the content MD5 as ETag");
  assert.equal((await dav("HEAD", "/iobkt/a.txt")).headers["last-modified"], new Date(1600000000_000).toUTCString());
  assert.equal((await readAll(t.store, "iobkt", "a.txt")).toString(), "third");

  // The request's Content-Type is kept; a Content-MD5 that does not match is 400 and changes nothing.
  r = await dav("PUT", "/iobkt/typed.json", { headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(r.status, 201);
  assert.equal((await t.store.headObject("iobkt", "typed.json")).contentType, "application/json");
  r = await dav("PUT", "/iobkt/typed.json", { headers: { "content-md5": createHash("md5").update("other").digest("base64") }, body: "{ }" });
  assert.equal(r.status, 400, r.text);
  assert.equal((await readAll(t.store, "iobkt", "typed.json")).toString(), "{}", "a PUT with a wrong Content-MD5 changed nothing");

  // An upload cut off half-way commits nothing: the old content stays, no other key appears.
  // (Waits until the server's PutObject has given up, i.e. it has finished with the request.)
  const keysBefore = await keys(t.store, "iobkt");
  let keysDuring: string[] | undefined;
  spy = spyPuts(t.store);
  try {
    await new Promise<void>((resolve) => {
      const req = request(`${base}/iobkt/a.txt`, { method: "PUT", headers: { "content-length": "1000000" } });
      req.on("error", () => resolve());
      req.write(bytes(300_000, 9), () => {
        // Cut the connection once the server is reading the body into the store (after a look at
        // the bucket: nothing of the upload is visible while it runs).
        const cut = (tries: number): void => {
          if (spy.received() > 0 || tries === 0) {
            void keys(t.store, "iobkt").then(
              (k) => ((keysDuring = k), req.destroy()),
              () => req.destroy(),
            );
          } else setTimeout(() => cut(tries - 1), 10);
        };
        cut(500);
      });
      req.on("close", () => resolve());
    });
    for (let i = 0; i < 200 && spy.failed === 0; i++) await new Promise((res) => setTimeout(res, 20));
  } finally {
    spy.restore();
  }
  assert.equal(spy.failed, 1, "the aborted upload's PutObject failed");
  assert.ok(spy.received() > 0 && spy.received() < 1_000_000, `the server had received part of the body (${spy.received()} bytes)`);
  assert.deepEqual(keysDuring, keysBefore, "nothing of the upload shows in the bucket while it runs");
  assert.deepEqual(await keys(t.store, "iobkt"), keysBefore, "no key appeared");
  assert.equal((await readAll(t.store, "iobkt", "a.txt")).toString(), "third", "an interrupted PUT does not change the file");
});

test("MKCOL, COPY, MOVE with Overwrite, DELETE: checked in the bucket", async () => {
  let r = await curl("-X", "MKCOL", `${base}/ops`);
  assert.equal(r.status, 201, "MKCOL /name makes a bucket");
  await t.store.headBucket("ops");
  assert.equal((await curl("-X", "MKCOL", `${base}/ops/d1/`)).status, 201);
  assert.deepEqual(await keys(t.store, "ops"), ["d1/"], "a directory marker object");
  assert.equal((await curl("-X", "MKCOL", `${base}/ops/d1`)).status, 405, "exists");
  assert.equal((await curl("-X", "MKCOL", `${base}/ops/x/y`)).status, 409, "missing parent");
  assert.equal((await curl("-X", "MKCOL", "--data-binary", "<x/>", `${base}/ops/withbody`)).status, 415);
  assert.equal((await curl("-X", "MKCOL", `${base}/Bad_Bucket`)).status, 400, "not a bucket name");
  assert.equal((await dav("MKCOL", "/ops/d1/sub")).status, 201);
  const f1 = bytes(50_000, 3);
  const f2 = bytes(70_000, 4);
  assert.equal((await dav("PUT", "/ops/d1/f1", { body: f1 })).status, 201);
  assert.equal((await dav("PUT", "/ops/d1/sub/f2", { body: f2 })).status, 201);

  // COPY a file: by reference (the store's copy), the data the same.
  let copies = 0;
  const copyObject = t.store.copyObject.bind(t.store);
  t.store.copyObject = async (...args: Parameters<ObjectStore["copyObject"]>) => {
    copies++;
    return copyObject(...args);
  };
  try {
    r = await curl("-X", "COPY", "-H", `Destination: ${base}/ops/f1copy`, `${base}/ops/d1/f1`);
    assert.equal(r.status, 201);
    assert.equal(copies, 1, "copied by reference");
    assert.ok((await readAll(t.store, "ops", "f1copy")).equals(f1));
    assert.equal((await t.store.headObject("ops", "f1copy")).etag, md5(f1));
    r = await curl("-X", "COPY", "-H", `Destination: ${base}/ops/f1copy`, "-H", "Overwrite: F", `${base}/ops/d1/sub/f2`);
    assert.equal(r.status, 412, "Overwrite: F onto an existing file");
    assert.ok((await readAll(t.store, "ops", "f1copy")).equals(f1), "unchanged");
    r = await curl("-X", "COPY", "-H", `Destination: ${base}/ops/f1copy`, "-H", "Overwrite: T", `${base}/ops/d1/sub/f2`);
    assert.equal(r.status, 204);
    assert.ok((await readAll(t.store, "ops", "f1copy")).equals(f2));

    // COPY a tree (Depth infinity) and a collection alone (Depth 0).
    r = await dav("COPY", "/ops/d1/", { headers: { destination: `${base}/ops/d2/` } });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(await keys(t.store, "ops", "d2/"), ["d2/", "d2/f1", "d2/sub/", "d2/sub/f2"]);
    assert.ok((await readAll(t.store, "ops", "d2/sub/f2")).equals(f2));
    r = await dav("COPY", "/ops/d1/", { headers: { destination: "/ops/d3/", depth: "0" } });
    assert.equal(r.status, 201, "an absolute path as Destination");
    assert.deepEqual(await keys(t.store, "ops", "d3"), ["d3/"], "Depth 0 copies the collection only");
  } finally {
    t.store.copyObject = copyObject;
  }
  assert.equal((await dav("COPY", "/ops/d1/f1", { headers: { destination: `${base}/ops/d1/f1` } })).status, 403, "onto itself");
  assert.equal((await dav("COPY", "/ops/d1/", { headers: { destination: `${base}/ops/d1/sub/deeper/` } })).status, 403, "into itself");
  assert.equal((await dav("COPY", "/ops/d1/f1", { headers: { destination: "http://elsewhere.example/ops/x" } })).status, 502, "another server");
  assert.equal((await dav("COPY", "/ops/d1/f1", { headers: { destination: `${base}/ops/nodir/x` } })).status, 409, "missing destination parent");
  assert.equal((await dav("COPY", "/ops/d1/f1", {})).status, 400, "no Destination");

  // MOVE a file; Overwrite F and T.
  r = await curl("-X", "MOVE", "-H", `Destination: ${base}/ops/moved`, `${base}/ops/f1copy`);
  assert.equal(r.status, 201);
  assert.equal((await dav("GET", "/ops/f1copy")).status, 404);
  const ks = await keys(t.store, "ops");
  assert.ok(ks.includes("moved") && !ks.includes("f1copy"));
  assert.ok((await readAll(t.store, "ops", "moved")).equals(f2));
  r = await curl("-X", "MOVE", "-H", `Destination: ${base}/ops/d1/f1`, "-H", "Overwrite: F", `${base}/ops/moved`);
  assert.equal(r.status, 412);
  assert.ok((await readAll(t.store, "ops", "d1/f1")).equals(f1), "unchanged");
  r = await curl("-X", "MOVE", "-H", `Destination: ${base}/ops/d1/f1`, "-H", "Overwrite: T", `${base}/ops/moved`);
  assert.equal(r.status, 204);
  assert.ok((await readAll(t.store, "ops", "d1/f1")).equals(f2), "replaced");
  assert.ok(!(await keys(t.store, "ops")).includes("moved"));
  // A file over a non-empty directory: the directory is deleted first.
  r = await dav("MOVE", "/ops/d1/f1", { headers: { destination: `${base}/ops/d2`, overwrite: "T" } });
  assert.equal(r.status, 204);
  assert.deepEqual(await keys(t.store, "ops", "d2"), ["d2"], "d2 is now the file, nothing under d2/");
  assert.ok((await readAll(t.store, "ops", "d2")).equals(f2));
  // A directory (with every key under it).
  r = await dav("MOVE", "/ops/d1/", { headers: { destination: `${base}/ops/d4/` } });
  assert.equal(r.status, 201);
  assert.deepEqual(await keys(t.store, "ops", "d4/"), ["d4/", "d4/sub/", "d4/sub/f2"]);
  assert.deepEqual(await keys(t.store, "ops", "d1"), []);
  assert.equal((await dav("MOVE", "/ops/d4/", { headers: { destination: `${base}/otherbucket/` } })).status, 502, "buckets cannot be made by MOVE");

  // DELETE a tree, a file, and what is not there.
  assert.equal((await curl("-X", "DELETE", `${base}/ops/d4/`)).status, 204);
  assert.deepEqual(await keys(t.store, "ops", "d4"), []);
  assert.equal((await curl("-X", "DELETE", `${base}/ops/d4/`)).status, 404);
  assert.equal((await dav("DELETE", "/ops/d2")).status, 204);
  assert.deepEqual(await keys(t.store, "ops"), ["d3/"]);
  assert.equal((await dav("DELETE", "/ops")).status, 204, "a bucket and its content");
  await assert.rejects(t.store.headBucket("ops"));
});

test("LOCK and UNLOCK: a second client gets 423 until it sends the token; shared, depth, refresh, expiry", async () => {
  await t.store.createBucket("locks");
  assert.equal((await dav("PUT", "/locks/f.txt", { body: "v1" })).status, 201);

  // Client A (fetch) takes an exclusive lock.
  const a = await lock("/locks/f.txt", "exclusive", { timeout: "Second-600" });
  assert.equal(a.status, 200, a.text);
  assert.match(a.token, /^urn:uuid:[0-9a-f-]{36}$/);
  assert.ok(a.text.includes(a.token) && a.text.includes("mailto:a@example.com"), "lockdiscovery with the token and owner");
  assert.match(a.text, /<D:timeout>Second-(600|599)<\/D:timeout>/);
  assert.ok(a.text.includes("<D:lockroot><D:href>/locks/f.txt</D:href></D:lockroot>"));

  // Client B (curl) without the token: 423 for every write.
  let r = await curl("-X", "PUT", "--data-binary", "v2", `${base}/locks/f.txt`);
  assert.equal(r.status, 423);
  assert.ok(r.text.includes("lock-token-submitted"), r.text);
  assert.equal((await curl("-X", "DELETE", `${base}/locks/f.txt`)).status, 423);
  assert.equal((await curl("-X", "MOVE", "-H", `Destination: ${base}/locks/g.txt`, `${base}/locks/f.txt`)).status, 423);
  assert.equal((await curl("-X", "DELETE", `${base}/locks/`)).status, 423, "deleting the parent needs the token too");
  assert.equal((await curl("-X", "PROPPATCH", "--data-binary", `<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getlastmodified>Wed, 01 Jan 2020 00:00:00 GMT</D:getlastmodified></D:prop></D:set></D:propertyupdate>`, `${base}/locks/f.txt`)).status, 423);
  assert.equal((await readAll(t.store, "locks", "f.txt")).toString(), "v1", "nothing changed");
  assert.equal((await curl(`${base}/locks/f.txt`)).status, 200, "reads are not locked");
  // A wrong token: the If header is false, 412.
  assert.equal((await curl("-X", "PUT", "-H", "If: (<urn:uuid:00000000-0000-0000-0000-000000000000>)", "--data-binary", "v2", `${base}/locks/f.txt`)).status, 412);
  // With the token: success.
  r = await curl("-X", "PUT", "-H", `If: (<${a.token}>)`, "--data-binary", "v2", `${base}/locks/f.txt`);
  assert.equal(r.status, 204);
  assert.equal((await readAll(t.store, "locks", "f.txt")).toString(), "v2");
  // Tagged list with the token and the current ETag.
  const etag = (await dav("HEAD", "/locks/f.txt")).headers.etag!;
  r = await curl("-X", "PUT", "-H", `If: <${base}/locks/f.txt> (<${a.token}> [${etag}])`, "--data-binary", "v3", `${base}/locks/f.txt`);
  assert.equal(r.status, 204);
  r = await curl("-X", "PUT", "-H", `If: (<${a.token}> ["stale"])`, "--data-binary", "v4", `${base}/locks/f.txt`);
  assert.equal(r.status, 412, "a stale ETag in the If header");
  assert.equal((await readAll(t.store, "locks", "f.txt")).toString(), "v3");

  // Conflicts, discovery, UNLOCK.
  assert.equal((await lock("/locks/f.txt", "shared")).status, 423, "shared over exclusive");
  assert.equal((await lock("/locks/", "exclusive")).status, 423, "a depth-infinity lock over a locked member");
  const disc = multistatus((await dav("PROPFIND", "/locks/f.txt", { headers: { depth: "0" }, body: `<D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>` })).text);
  prop(disc.get("/locks/f.txt"), "lockdiscovery");
  const active = elementsOf(disc.get("/locks/f.txt")!.props.get("lockdiscovery")!.el);
  assert.equal(active.length, 1, "one active lock");
  assert.equal(textOf(child(child(active[0]!, "locktoken")!, "href")!), a.token);
  assert.ok(child(child(active[0]!, "lockscope")!, "exclusive"));
  assert.equal((await curl("-X", "UNLOCK", "-H", "Lock-Token: <urn:uuid:00000000-0000-0000-0000-000000000000>", `${base}/locks/f.txt`)).status, 409);
  assert.equal((await curl("-X", "UNLOCK", `${base}/locks/f.txt`)).status, 400, "no Lock-Token");
  assert.equal((await curl("-X", "UNLOCK", "-H", `Lock-Token: <${a.token}>`, `${base}/locks/`)).status, 409, "the token of another resource");
  assert.equal((await curl("-X", "UNLOCK", "-H", `Lock-Token: <${a.token}>`, `${base}/locks/f.txt`)).status, 204);
  assert.equal((await curl("-X", "PUT", "--data-binary", "v5", `${base}/locks/f.txt`)).status, 204, "unlocked");
  assert.equal((await readAll(t.store, "locks", "f.txt")).toString(), "v5");

  // Shared locks coexist; an exclusive one then conflicts; one shared token lets a write through.
  const s1 = await lock("/locks/f.txt", "shared");
  const s2 = await lock("/locks/f.txt", "shared");
  assert.equal(s1.status, 200);
  assert.equal(s2.status, 200);
  assert.notEqual(s1.token, s2.token);
  assert.equal((await lock("/locks/f.txt", "exclusive")).status, 423);
  assert.equal((await dav("PUT", "/locks/f.txt", { body: "v6" })).status, 423);
  assert.equal((await dav("PUT", "/locks/f.txt", { body: "v6", headers: { if: `(<${s2.token}>)` } })).status, 204);
  assert.equal((await dav("UNLOCK", "/locks/f.txt", { headers: { "lock-token": `<${s1.token}>` } })).status, 204);
  assert.equal((await dav("UNLOCK", "/locks/f.txt", { headers: { "lock-token": `<${s2.token}>` } })).status, 204);

  // A depth-infinity lock on a collection protects new members; a tagged If names the collection.
  assert.equal((await dav("MKCOL", "/locks/dir")).status, 201);
  const d = await lock("/locks/dir/", "exclusive", { depth: "infinity" });
  assert.equal(d.status, 200);
  assert.ok(d.text.includes("<D:lockroot><D:href>/locks/dir/</D:href></D:lockroot>"));
  assert.equal((await curl("-X", "PUT", "--data-binary", "n", `${base}/locks/dir/new.txt`)).status, 423);
  assert.equal((await curl("-X", "MKCOL", `${base}/locks/dir/sub`)).status, 423);
  r = await curl("-X", "PUT", "-H", `If: <${base}/locks/dir/> (<${d.token}>)`, "--data-binary", "n", `${base}/locks/dir/new.txt`);
  assert.equal(r.status, 201);
  assert.equal((await readAll(t.store, "locks", "dir/new.txt")).toString(), "n");
  assert.equal((await lock("/locks/dir/new.txt", "exclusive")).status, 423, "a member of a locked tree");

  // A depth-0 lock on a collection protects its membership, not its members' content; an
  // untagged If with the collection's token admits a new member.
  assert.equal((await dav("MKCOL", "/locks/d0")).status, 201);
  assert.equal((await dav("PUT", "/locks/d0/old.txt", { body: "o" })).status, 201);
  const z = await lock("/locks/d0/", "exclusive", { depth: "0" });
  assert.equal(z.status, 200);
  assert.match(z.text, /<D:depth>0<\/D:depth>/);
  assert.equal((await dav("PUT", "/locks/d0/old.txt", { body: "o2" })).status, 204, "a member's content is not locked by depth 0");
  assert.equal((await dav("PUT", "/locks/d0/new.txt", { body: "n" })).status, 423, "a new member is");
  assert.equal((await dav("DELETE", "/locks/d0/old.txt")).status, 423, "and so is removing one");
  assert.equal((await dav("PUT", "/locks/d0/new.txt", { body: "n", headers: { if: `(<${z.token}>)` } })).status, 201);
  assert.deepEqual(await keys(t.store, "locks", "d0/"), ["d0/", "d0/new.txt", "d0/old.txt"]);

  // Refresh: empty body, the token in If.
  r = await dav("LOCK", "/locks/dir/", { headers: { if: `(<${d.token}>)`, timeout: "Second-100" } });
  assert.equal(r.status, 200, r.text);
  assert.match(r.text, /<D:timeout>Second-(100|99)<\/D:timeout>/);
  assert.equal((await dav("LOCK", "/locks/dir/", { headers: { if: "(<urn:uuid:00000000-0000-0000-0000-000000000000>)" } })).status, 412);
  assert.equal((await dav("DELETE", "/locks/dir/", { headers: { if: `(<${d.token}>)` } })).status, 204, "DELETE with the token");
  assert.equal(server.locks.get(d.token), undefined, "a deleted resource's lock is gone");

  // A lock on an unmapped URL creates an empty file.
  const nul = await lock("/locks/new-by-lock.txt", "exclusive");
  assert.equal(nul.status, 201);
  const h = await t.store.headObject("locks", "new-by-lock.txt");
  assert.equal(h.size, 0);
  assert.equal((await dav("PUT", "/locks/new-by-lock.txt", { body: "filled", headers: { if: `(<${nul.token}>)` } })).status, 204);
  assert.equal((await readAll(t.store, "locks", "new-by-lock.txt")).toString(), "filled");
  assert.equal((await lock("/locks/nodir/x.txt", "exclusive")).status, 409, "unmapped URL under a missing parent");

  // Expiry.
  const e = await lock("/locks/f.txt", "exclusive", { timeout: "Second-1" });
  assert.equal(e.status, 200);
  assert.match(e.text, /<D:timeout>Second-1<\/D:timeout>/);
  assert.equal((await dav("PUT", "/locks/f.txt", { body: "v7" })).status, 423);
  await new Promise((res) => setTimeout(res, 1100));
  assert.equal((await dav("PUT", "/locks/f.txt", { body: "v7" })).status, 204, "the lock expired");
  assert.equal((await readAll(t.store, "locks", "f.txt")).toString(), "v7");
  assert.equal((await dav("UNLOCK", "/locks/f.txt", { headers: { "lock-token": `<${e.token}>` } })).status, 409, "an expired token is unknown");
});

test("PROPPATCH: the modification time is set, dead properties are refused and nothing is applied", async () => {
  await t.store.createBucket("ppbkt");
  assert.equal((await dav("PUT", "/ppbkt/f", { body: "x" })).status, 201);
  const when = "Wed, 01 Jan 2020 00:00:00 GMT";
  let r = await dav("PROPPATCH", "/ppbkt/f", {
    body: `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32LastModifiedTime>${when}</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>`,
  });
  assert.equal(r.status, 207, r.text);
  let ms = multistatus(r.text).get("/ppbkt/f")!;
  assert.equal(ms.props.get("urn:schemas-microsoft-com: Win32LastModifiedTime")?.status, 200);
  assert.equal(ms.props.get("urn:schemas-microsoft-com: Win32FileAttributes")?.status, 200);
  assert.equal((await t.store.headObject("ppbkt", "f")).userMetadata.mtime, "1577836800.000", "the mtime attribute in the object's metadata");
  const pf = multistatus((await dav("PROPFIND", "/ppbkt/f", { headers: { depth: "0" } })).text);
  assert.equal(prop(pf.get("/ppbkt/f"), "getlastmodified"), when);
  assert.equal((await dav("HEAD", "/ppbkt/f")).headers["last-modified"], when);

  r = await dav("PROPPATCH", "/ppbkt/f", {
    body: `<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getlastmodified>Fri, 01 Jan 2021 00:00:00 GMT</D:getlastmodified><c:colour xmlns:c="urn:example">blue</c:colour></D:prop></D:set></D:propertyupdate>`,
  });
  assert.equal(r.status, 207);
  ms = multistatus(r.text).get("/ppbkt/f")!;
  assert.equal(ms.props.get("urn:example colour")?.status, 403, "dead properties are refused");
  assert.equal(ms.props.get("getlastmodified")?.status, 424, "and the rest is not applied");
  assert.equal((await t.store.headObject("ppbkt", "f")).userMetadata.mtime, "1577836800.000", "unchanged");

  r = await dav("PROPPATCH", "/ppbkt/f", { body: `<D:propertyupdate xmlns:D="DAV:"><D:remove><D:prop><D:getetag/></D:prop></D:remove></D:propertyupdate>` });
  assert.equal(multistatus(r.text).get("/ppbkt/f")!.props.get("getetag")?.status, 403);
  assert.ok(r.text.includes("cannot-modify-protected-property"));
  r = await dav("PROPPATCH", "/ppbkt/f", { body: `<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getlastmodified>yesterday-ish</D:getlastmodified></D:prop></D:set></D:propertyupdate>` });
  assert.equal(multistatus(r.text).get("/ppbkt/f")!.props.get("getlastmodified")?.status, 409, "not a date");
});

test("malformed XML, bad headers and unknown methods are refused with clear messages", async () => {
  await t.store.createBucket("bad");
  assert.equal((await dav("PUT", "/bad/f", { body: "x" })).status, 201);
  const cases: Array<[string, string, string, RegExp]> = [
    ["PROPFIND", "/bad/", `<D:propfind xmlns:D="DAV:"><D:prop>`, /unclosed element/],
    ["PROPFIND", "/bad/", `<D:propfind><D:prop/></D:propfind>`, /undeclared namespace prefix "D"/],
    ["PROPFIND", "/bad/", `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><D:propfind xmlns:D="DAV:"><D:prop>&e;</D:prop></D:propfind>`, /DOCTYPE/],
    ["PROPFIND", "/bad/", `<propfind xmlns="urn:not-dav"><prop/></propfind>`, /DAV:propfind/],
    ["PROPFIND", "/bad/", `not xml at all`, /text outside the root/],
    ["LOCK", "/bad/f", `<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>`, /malformed XML/],
    ["LOCK", "/bad/f", `<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope></D:lockinfo>`, /locktype/],
    ["PROPPATCH", "/bad/f", `<D:propertyupdate xmlns:D="DAV:"><D:set></D:propertyupdate>`, /does not match/],
  ];
  for (const [method, path, body, message] of cases) {
    const r = await curl("-X", method, "-H", "Depth: 0", "-H", "Content-Type: application/xml", "--data-binary", body, `${base}${path}`);
    assert.equal(r.status, 400, `${method} ${body}`);
    assert.match(r.text, message);
  }
  assert.equal((await dav("PROPFIND", "/bad/", { headers: { depth: "2" } })).status, 400, "bad Depth");
  assert.equal((await dav("PUT", "/bad/f", { headers: { if: "(<unterminated" }, body: "x" })).status, 400, "bad If header");
  assert.equal((await dav("COPY", "/bad/f", { headers: { destination: `${base}/bad/g`, overwrite: "maybe" } })).status, 400, "bad Overwrite");
  assert.equal((await dav("GET", "/bad/%E0%A4%A")).status, 400, "bad percent-encoding");
  assert.equal((await dav("GET", "/bad/a%2Fb")).status, 400, "an encoded slash");
  const post = await dav("POST", "/bad/f", { body: "x" });
  assert.equal(post.status, 405);
  assert.ok(post.headers.allow?.includes("PROPFIND"));
  assert.equal((await readAll(t.store, "bad", "f")).toString(), "x");
});

test("Basic auth: 401 with a challenge; the S3 access key and secret get in", async () => {
  let r = await dav("PROPFIND", "/", { base: authBase, headers: { depth: "0" } });
  assert.equal(r.status, 401);
  assert.match(r.headers["www-authenticate"] ?? "", /^Basic realm="stowage"/);
  r = await curl("-u", `${ACCESS_KEY}:wrong`, "-X", "PROPFIND", "-H", "Depth: 0", `${authBase}/`);
  assert.equal(r.status, 401);
  r = await curl("-u", `NOSUCHKEY:${SECRET}`, "-X", "PROPFIND", "-H", "Depth: 0", `${authBase}/`);
  assert.equal(r.status, 401);
  r = await curl("-u", `${ACCESS_KEY}:${SECRET}`, "-X", "PROPFIND", "-H", "Depth: 0", `${authBase}/`);
  assert.equal(r.status, 207);
  r = await curl("-u", `${ACCESS_KEY}:${SECRET}`, "-X", "MKCOL", `${authBase}/authed`);
  assert.equal(r.status, 201);
  await t.store.headBucket("authed");
  // A lock taken by one user binds the token to that user.
  assert.equal((await curl("-u", `${ACCESS_KEY}:${SECRET}`, "-X", "PUT", "--data-binary", "a", `${authBase}/authed/f`)).status, 201);
  r = await curl("-u", `${ACCESS_KEY}:${SECRET}`, "-X", "LOCK", "--data-binary", LOCKINFO("exclusive"), `${authBase}/authed/f`);
  assert.equal(r.status, 200);
  const token = /^<(.+)>$/.exec(r.headers["lock-token"] ?? "")?.[1] ?? "";
  r = await curl("-u", `${OTHER_KEY}:${OTHER_SECRET}`, "-X", "PUT", "-H", `If: (<${token}>)`, "--data-binary", "b", `${authBase}/authed/f`);
  assert.equal(r.status, 423, "the token of another user's lock does not count");
  r = await curl("-u", `${OTHER_KEY}:${OTHER_SECRET}`, "-X", "UNLOCK", "-H", `Lock-Token: <${token}>`, `${authBase}/authed/f`);
  assert.equal(r.status, 403, "nor can another user unlock it");
  assert.equal((await curl("-u", `${ACCESS_KEY}:${SECRET}`, "-X", "PUT", "-H", `If: (<${token}>)`, "--data-binary", "b", `${authBase}/authed/f`)).status, 204);
  assert.equal((await readAll(t.store, "authed", "f")).toString(), "b");
});

// ------------------------------------------------------------------------------------------------
// A real client

/** The files under `root`, as "/"-separated relative paths. */
function walk(root: string, dir = root, out: string[] = []): string[] {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(root, p, out);
    else out.push(relative(root, p).split(sep).join("/"));
  }
  return out;
}

test("rclone (webdav backend, Basic auth): copy a tree, lsjson, check, moveto, delete, copy again", async () => {
  const home = join(work, "rclone-home");
  mkdirSync(home, { recursive: true });
  const conf = join(home, "rclone.conf");
  writeFileSync(conf, "");
  const base64 = (await run(RCLONE, ["obscure", SECRET])).stdout.toString().trim();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("RCLONE_")) env[k] = v;
  Object.assign(env, {
    HOME: home,
    RCLONE_CONFIG: conf,
    RCLONE_CONFIG_DAV_TYPE: "webdav",
    RCLONE_CONFIG_DAV_URL: authBase + "/",
    RCLONE_CONFIG_DAV_VENDOR: "other",
    RCLONE_CONFIG_DAV_USER: ACCESS_KEY,
    RCLONE_CONFIG_DAV_PASS: base64,
  });
  const rclone = async (...args: string[]): Promise<{ stdout: string; stderr: string }> => {
    const r = await run(RCLONE, ["--low-level-retries", "1", "--retries", "1", ...args], env);
    return { stdout: r.stdout.toString(), stderr: r.stderr };
  };
  const copied = (stderr: string): string[] =>
    stderr
      .split("\n")
      .filter((l) => /: Copied \((new|replaced existing)\)/.test(l))
      .map((l) => /INFO\s+:\s+(.*): Copied/.exec(l)?.[1] ?? l);

  // A local tree: nested directories, random sizes, two files over 1 MiB, awkward names.
  const tree = join(work, "tree");
  const files: Record<string, Buffer> = {
    "a.txt": Buffer.from("alpha\n"),
    "big one.bin": bytes(1_572_864 + 11, 21),
    "docs/readme.md": bytes(3_000, 22),
    "docs/deep/er/x.bin": bytes(200_000, 23),
    "docs/deep/er/empty": Buffer.alloc(0),
    "media/clip ü.bin": bytes(2_300_000, 24),
    "media/thumbs/t1.bin": bytes(10_000, 25),
    "media/thumbs/t2.bin": bytes(12_345, 26),
  };
  for (const [rel, data] of Object.entries(files)) {
    mkdirSync(join(tree, rel, ".."), { recursive: true });
    writeFileSync(join(tree, rel), data);
  }

  await rclone("mkdir", "dav:rcbkt");
  await t.store.headBucket("rcbkt");
  let out = await rclone("copy", "-v", "--stats", "0", tree, "dav:rcbkt/tree");
  assert.deepEqual(copied(out.stderr).sort(), Object.keys(files).sort(), "every file transferred once");
  for (const [rel, data] of Object.entries(files)) assert.ok((await readAll(t.store, "rcbkt", `tree/${rel}`)).equals(data), `S3 reads ${rel}`);

  // A second copy transfers nothing.
  out = await rclone("copy", "-v", "--stats", "0", tree, "dav:rcbkt/tree");
  assert.deepEqual(copied(out.stderr), [], out.stderr);

  const listed = JSON.parse((await rclone("lsjson", "-R", "--files-only", "dav:rcbkt/tree")).stdout) as Array<{ Path: string; Size: number; IsDir: boolean }>;
  assert.deepEqual(
    listed.map((e) => [e.Path, e.Size]).sort(),
    Object.entries(files)
      .map(([k, v]) => [k, v.length])
      .sort(),
  );
  // check --download compares the bytes (GET), not only sizes.
  await rclone("check", "--download", tree, "dav:rcbkt/tree");

  // moveto is a server-side MOVE: the object is renamed in the bucket.
  await rclone("moveto", "dav:rcbkt/tree/a.txt", "dav:rcbkt/tree/docs/a-moved.txt");
  const ks = await keys(t.store, "rcbkt", "tree/");
  assert.ok(!ks.includes("tree/a.txt") && ks.includes("tree/docs/a-moved.txt"), ks.join(","));
  assert.ok((await readAll(t.store, "rcbkt", "tree/docs/a-moved.txt")).equals(files["a.txt"]!));

  // delete removes the files of a subtree (the directories stay, as markers).
  await rclone("delete", "dav:rcbkt/tree/media");
  assert.deepEqual(
    (await keys(t.store, "rcbkt", "tree/media/")).filter((k) => !k.endsWith("/")),
    [],
    "no file objects left under media/",
  );
  const gone = JSON.parse((await rclone("lsjson", "-R", "dav:rcbkt/tree/media")).stdout) as Array<{ Path: string; IsDir: boolean }>;
  assert.deepEqual(gone.filter((e) => !e.IsDir), []);

  // Copy again: exactly what moveto and delete took away comes back.
  out = await rclone("copy", "-v", "--stats", "0", tree, "dav:rcbkt/tree");
  assert.deepEqual(copied(out.stderr).sort(), ["a.txt", "media/clip ü.bin", "media/thumbs/t1.bin", "media/thumbs/t2.bin"]);
  await rclone("check", "--download", "--one-way", tree, "dav:rcbkt/tree");
  const back = join(work, "back");
  await rclone("copy", "dav:rcbkt/tree", back);
  assert.deepEqual(walk(back).sort(), [...Object.keys(files), "docs/a-moved.txt"].sort());
  for (const [rel, data] of Object.entries(files)) assert.ok(readFileSync(join(back, rel)).equals(data), `downloaded ${rel}`);

  // rclone's "owncloud" vendor sends X-OC-Mtime: modification times are kept, and compared.
  const timed = join(work, "timed");
  mkdirSync(timed, { recursive: true });
  writeFileSync(join(timed, "old.txt"), "from 2017");
  utimesSync(join(timed, "old.txt"), 1_500_000_000, 1_500_000_000);
  const oc = { ...env, RCLONE_CONFIG_DAV_VENDOR: "owncloud" };
  await run(RCLONE, ["copy", timed, "dav:rcbkt/timed"], oc);
  assert.equal((await t.store.headObject("rcbkt", "timed/old.txt")).userMetadata.mtime, "1500000000.000");
  const lj = JSON.parse((await run(RCLONE, ["lsjson", "dav:rcbkt/timed"], oc)).stdout.toString()) as Array<{ Path: string; ModTime: string }>;
  assert.equal(Date.parse(lj[0]!.ModTime), 1_500_000_000_000);
  const again = await run(RCLONE, ["copy", "-v", "--stats", "0", timed, "dav:rcbkt/timed"], oc);
  assert.deepEqual(copied(again.stderr), [], "same size and time: nothing to transfer");
});
