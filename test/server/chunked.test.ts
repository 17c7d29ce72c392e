/**
 * The aws-chunked decoder: AWS's published signed-streaming example (chunk signatures) and the
 * AWS CRT's trailer-signature vector, bodies captured from @aws-sdk/client-s3 (unsigned payload
 * with checksum trailers, every algorithm), signed-trailer bodies built per the spec with seeds
 * from @smithy/signature-v4, arbitrary splitting of the input, and every failure: tampered data
 * or signatures (no forged byte is ever yielded), truncation, wrong decoded length, malformed
 * framing and trailers.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHash, randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { SignatureV4 } from "@smithy/signature-v4";
import { Sha256 } from "./sha256.js";
import { PutObjectCommand, S3Client, type ChecksumAlgorithm as SdkChecksumAlgorithm } from "@aws-sdk/client-s3";
import { S3Error } from "../../src/server/s3/errors.js";
import { chunkSignature, decodeAwsChunked, type ChunkedOptions, type ChunkedResult } from "../../src/server/s3/chunked.js";
import { signingKey, verifySigV4, type Authenticated, type Credentials } from "../../src/server/s3/sigv4.js";
import { checksumBase64, checksumFromHeaders, validateChecksumValue, type ChecksumAlgorithm } from "../../src/server/s3/checksums.js";
import { mulberry32 as rng } from "../../src/util/random.js";

// ---------------------------------------------------------------------------------------------
// Helpers.

/** Split `buf` into random pieces of 1..maxPiece bytes. */
function splitRandom(buf: Buffer, seed: number, maxPiece: number): Buffer[] {
  const r = rng(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = 1 + Math.floor(r() * maxPiece);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

async function* source(pieces: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of pieces) yield p;
}

interface Decoded {
  data: Buffer;
  result: ChunkedResult;
  fromDone: ChunkedResult | undefined;
}

async function decode(pieces: Uint8Array[], options: ChunkedOptions): Promise<Decoded> {
  const out: Buffer[] = [];
  let fromDone: ChunkedResult | undefined;
  const gen = decodeAwsChunked(source(pieces), options, (r) => {
    fromDone = r;
  });
  for (;;) {
    const n = await gen.next();
    if (n.done === true) return { data: Buffer.concat(out), result: n.value, fromDone };
    out.push(n.value);
  }
}

/** Decode expecting failure with `code`; returns what was yielded before the error. */
async function decodeFails(pieces: Uint8Array[], options: ChunkedOptions, code: string): Promise<Buffer> {
  const out: Buffer[] = [];
  let caught: unknown;
  try {
    for await (const b of decodeAwsChunked(source(pieces), options)) out.push(b);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof S3Error, `expected S3Error ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, `expected ${code}, got ${caught.code}: ${caught.message}`);
  return Buffer.concat(out);
}

const EMPTY_SHA = createHash("sha256").update("").digest("hex");
const sha256Hex = (b: Uint8Array | string): string => createHash("sha256").update(b).digest("hex");

// ---------------------------------------------------------------------------------------------
// AWS's published example: PUT /examplebucket/chunkObject.txt, 66560 bytes of 'a' as chunks of
// 65536 and 1024 bytes and the final empty chunk (Signature Version 4, "Transferring payload in
// multiple chunks"). The trailer signature is the AWS CRT's test vector for trailers
// first:1st, second:2nd, third:3rd after the same chunks.

const EX_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EX_DATE = "20130524T000000Z";
const EX_SCOPE = "20130524/us-east-1/s3/aws4_request";
const EX_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const EX_SIGS = [
  "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
  "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
  "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];
const EX_TRAILER_SIG = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c";
const EX_KEY = signingKey(EX_SECRET, "20130524", "us-east-1", "s3");
const EX_SIGNED = { signingKey: EX_KEY, seedSignature: EX_SEED, amzDate: EX_DATE, scope: EX_SCOPE };

function exampleBody(opts: { corruptChunk2?: boolean; trailers?: string } = {}): Buffer {
  const parts: Buffer[] = [];
  const sizes = [65536, 1024, 0];
  sizes.forEach((size, i) => {
    const data = Buffer.alloc(size, "a");
    if (opts.corruptChunk2 === true && i === 1) data[10] = 0x62;
    parts.push(Buffer.from(`${size.toString(16)};chunk-signature=${EX_SIGS[i]}\r\n`), data);
    if (i < 2 || opts.trailers === undefined) parts.push(Buffer.from("\r\n"));
  });
  if (opts.trailers !== undefined) parts.push(Buffer.from(opts.trailers));
  return Buffer.concat(parts);
}

describe("AWS's signed streaming example", () => {
  const body = exampleBody();
  const options: ChunkedOptions = { signed: EX_SIGNED, trailer: false, decodedLength: 66560 };

  test("the body is 66824 bytes and decodes to 66560 'a's, however it is split", async () => {
    assert.equal(body.length, 66824);
    const splits: Buffer[][] = [[body], splitRandom(body, 1, 7), splitRandom(body, 2, 4096), splitRandom(body, 3, 70000)];
    for (const pieces of splits) {
      const { data, result, fromDone } = await decode(pieces, options);
      assert.equal(data.length, 66560);
      assert.ok(data.equals(Buffer.alloc(66560, "a")));
      assert.deepEqual(result.trailers, {});
      assert.deepEqual(fromDone, result);
    }
  });

  test("the seed comes from verifying the example's Authorization header", async () => {
    const auth = verifySigV4(
      {
        method: "PUT",
        rawPath: "/examplebucket/chunkObject.txt",
        rawQuery: "",
        headers: {
          host: "s3.amazonaws.com",
          "x-amz-date": EX_DATE,
          "x-amz-storage-class": "REDUCED_REDUNDANCY",
          authorization: `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/${EX_SCOPE},SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=${EX_SEED}`,
          "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
          "content-encoding": "aws-chunked",
          "x-amz-decoded-content-length": "66560",
          "content-length": "66824",
        },
      },
      { secretFor: () => EX_SECRET },
      { now: Date.UTC(2013, 4, 24) },
    );
    const { data } = await decode(splitRandom(body, 9, 1000), { signed: auth, trailer: false, decodedLength: 66560 });
    assert.equal(data.length, 66560);
  });

  test("a tampered chunk is refused before any of its bytes are yielded", async () => {
    const yielded = await decodeFails(splitRandom(exampleBody({ corruptChunk2: true }), 4, 5000), options, "SignatureDoesNotMatch");
    assert.equal(yielded.length, 65536, "only the first (valid) chunk was yielded");
    assert.ok(!yielded.includes(0x62));
  });

  test("wrong, missing, reordered or reused signatures are refused", async () => {
    const swap = (from: string, to: string): Buffer => Buffer.from(body.toString("latin1").replace(from, to), "latin1");
    await decodeFails([swap(EX_SIGS[0]!, EX_SIGS[0]!.replace(/^a/, "b"))], options, "SignatureDoesNotMatch");
    await decodeFails([swap(EX_SIGS[2]!, EX_SIGS[1]!)], options, "SignatureDoesNotMatch");
    await decodeFails([swap(`;chunk-signature=${EX_SIGS[1]}`, "")], options, "SignatureDoesNotMatch");
    await decodeFails([swap(EX_SIGS[1]!, EX_SIGS[1]!.toUpperCase())], options, "SignatureDoesNotMatch");
    await decodeFails([body], { ...options, signed: { ...EX_SIGNED, seedSignature: EX_SIGS[0]! } }, "SignatureDoesNotMatch");
    await decodeFails([body], { ...options, signed: { ...EX_SIGNED, signingKey: signingKey("other", "20130524", "us-east-1", "s3") } }, "SignatureDoesNotMatch");
    await decodeFails([body], { ...options, signed: { ...EX_SIGNED, amzDate: "20130524T000001Z" } }, "SignatureDoesNotMatch");
    // Dropping the second chunk (its data and signature) breaks the chain.
    const chunk2Start = body.indexOf("400;chunk-signature");
    const finalStart = body.indexOf("0;chunk-signature", chunk2Start + 1024);
    const dropped = Buffer.concat([body.subarray(0, chunk2Start), body.subarray(finalStart)]);
    await decodeFails([dropped], { ...options, decodedLength: undefined }, "SignatureDoesNotMatch");
  });

  test("a truncated body is IncompleteBody wherever it is cut", async () => {
    const cuts = [0, 1, 10, 86, 87, 88, 1000, 65623, 65624, 65625, 65626, 65700, 66737, 66738, 66740, 66800, 66823];
    for (const cut of cuts) {
      await decodeFails(splitRandom(body.subarray(0, cut), cut, 3000), options, "IncompleteBody");
    }
    // Ending right after the (verified) final chunk header, without its CRLF, is tolerated.
    const { data } = await decode([body.subarray(0, 66822)], options);
    assert.equal(data.length, 66560);
  });

  test("a decoded length that differs is refused; excess data is never yielded", async () => {
    await decodeFails([body], { ...options, decodedLength: 66561 }, "IncompleteBody");
    const yielded = await decodeFails([body], { ...options, decodedLength: 66000 }, "InvalidArgument");
    assert.equal(yielded.length, 65536);
    await decodeFails([body], { ...options, decodedLength: 0 }, "InvalidArgument");
  });

  test("chunks above maxChunkSize are refused before their data is read", async () => {
    let pulled = 0;
    async function* counting(): AsyncGenerator<Buffer> {
      for (const p of splitRandom(body, 5, 100)) {
        pulled += p.length;
        yield p;
      }
    }
    let caught: unknown;
    try {
      for await (const _ of decodeAwsChunked(counting(), { ...options, maxChunkSize: 65535 })) assert.fail("nothing is yielded");
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof S3Error && caught.code === "InvalidArgument", String(caught));
    assert.ok(pulled < 200, `only the chunk header was read (${pulled} bytes)`);
  });

  test("the AWS CRT trailer-signature vector verifies; a tampered trailer does not", async () => {
    const trailers = `first:1st\r\nsecond:2nd\r\nthird:3rd\r\nx-amz-trailer-signature:${EX_TRAILER_SIG}\r\n\r\n`;
    const withTrailers = exampleBody({ trailers });
    const opts: ChunkedOptions = { signed: EX_SIGNED, trailer: true, decodedLength: 66560, declaredTrailers: ["first", "second", "third"] };
    for (const seed of [1, 2, 3]) {
      const { data, result } = await decode(splitRandom(withTrailers, seed, seed * 997), opts);
      assert.equal(data.length, 66560);
      assert.deepEqual(result.trailers, { first: "1st", second: "2nd", third: "3rd" });
    }
    const tampered = exampleBody({ trailers: trailers.replace("2nd", "2ND") });
    await decodeFails([tampered], opts, "SignatureDoesNotMatch");
    const unsigned = exampleBody({ trailers: trailers.replace(/x-amz-trailer-signature:.*\r\n/, "") });
    await decodeFails([unsigned], opts, "SignatureDoesNotMatch");
    await decodeFails([withTrailers], { ...opts, declaredTrailers: ["first", "second"] }, "InvalidRequest");
    await decodeFails([withTrailers], { ...opts, declaredTrailers: ["first", "second", "third", "fourth"] }, "InvalidRequest");
  });
});

// ---------------------------------------------------------------------------------------------
// Signed streaming with trailers, end to end: the seed from a request signed by
// @smithy/signature-v4 and verified by verifySigV4; chunk and trailer signatures computed by the
// SDK's signer over string-to-signs built from the spec.


describe("signed streaming with trailers (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER)", () => {
  const SECRET = "trailer-secret";
  const CREDS: Credentials = { secretFor: (id) => (id === "AKIDTRAILER" ? SECRET : undefined) };
  const NOW = Date.UTC(2025, 0, 15, 10, 0, 0);
  const sdkSigner = new SignatureV4({
    service: "s3",
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDTRAILER", secretAccessKey: SECRET },
    sha256: Sha256,
    uriEscapePath: false,
  });
  const data = randomBytes(200_000);
  const chunkSizes = [65536, 65536, 65536, 3392];
  let auth: Authenticated;
  let body: Buffer;
  let crc: string;

  async function build(trailerLines: (sig: string) => string): Promise<Buffer> {
    const signingDate = new Date(NOW);
    const parts: Buffer[] = [];
    let prev = auth.seedSignature;
    let off = 0;
    for (const size of [...chunkSizes, 0]) {
      const chunk = data.subarray(off, off + size);
      off += size;
      const sts = ["AWS4-HMAC-SHA256-PAYLOAD", auth.amzDate, auth.scope, prev, EMPTY_SHA, sha256Hex(chunk)].join("\n");
      const sig = await sdkSigner.sign(sts, { signingDate });
      parts.push(Buffer.from(`${size.toString(16)};chunk-signature=${sig}\r\n`), chunk);
      if (size > 0) parts.push(Buffer.from("\r\n"));
      prev = sig;
    }
    const canonical = `x-amz-checksum-crc32c:${crc}\n`;
    const sts = ["AWS4-HMAC-SHA256-TRAILER", auth.amzDate, auth.scope, prev, sha256Hex(canonical)].join("\n");
    const trailerSig = await sdkSigner.sign(sts, { signingDate });
    parts.push(Buffer.from(trailerLines(trailerSig)));
    return Buffer.concat(parts);
  }

  before(async () => {
    crc = checksumBase64("CRC32C", data);
    const signedReq = await sdkSigner.sign(
      {
        method: "PUT",
        protocol: "https:",
        hostname: "s3.example.com",
        path: "/bucket/object",
        query: {},
        headers: {
          host: "s3.example.com",
          "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
          "content-encoding": "aws-chunked",
          "x-amz-decoded-content-length": String(data.length),
          "x-amz-trailer": "x-amz-checksum-crc32c",
          "x-amz-sdk-checksum-algorithm": "CRC32C",
        },
      },
      { signingDate: new Date(NOW) },
    );
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(signedReq.headers)) headers[k.toLowerCase()] = v;
    auth = verifySigV4({ method: "PUT", rawPath: "/bucket/object", rawQuery: "", headers }, CREDS, { now: NOW });
    assert.deepEqual(auth.payload, { kind: "streaming-signed-trailer" });
    const declared = checksumFromHeaders(headers);
    assert.deepEqual(declared, { algorithm: "CRC32C", location: "trailer", name: "x-amz-checksum-crc32c" });
    body = await build((sig) => `x-amz-checksum-crc32c:${crc}\r\nx-amz-trailer-signature:${sig}\r\n\r\n`);
  });

  const opts = (): ChunkedOptions => ({ signed: auth, trailer: true, decodedLength: data.length, declaredTrailers: ["x-amz-checksum-crc32c"] });

  test("decodes under random splitting; the trailer carries the checksum of the data", async () => {
    for (const seed of [11, 12, 13, 14]) {
      const { data: out, result } = await decode(splitRandom(body, seed, seed === 11 ? 257 : 50_000), opts());
      assert.ok(out.equals(data));
      assert.equal(result.trailers["x-amz-checksum-crc32c"], crc);
      assert.equal(checksumBase64("CRC32C", out), result.trailers["x-amz-checksum-crc32c"]);
    }
  });

  test("a tampered trailer value, a dropped trailer signature or extra trailers are refused", async () => {
    const text = body.toString("latin1");
    const other = checksumBase64("CRC32C", Buffer.from("other"));
    await decodeFails([Buffer.from(text.replace(`crc32c:${crc}`, `crc32c:${other}`), "latin1")], opts(), "SignatureDoesNotMatch");
    await decodeFails([Buffer.from(text.replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ""), "latin1")], opts(), "SignatureDoesNotMatch");
    await decodeFails([Buffer.from(text.replace("x-amz-trailer-signature", "x-amz-meta-x:1\r\nx-amz-trailer-signature"), "latin1")], opts(), "InvalidRequest");
    await decodeFails([Buffer.from(text.replace(/\r\n\r\n$/, "\r\nx-amz-meta-after:1\r\n\r\n"), "latin1")], opts(), "InvalidRequest");
    await decodeFails([Buffer.concat([body, Buffer.from("junk")])], opts(), "InvalidRequest");
    // The trailers missing altogether while x-amz-trailer declared one.
    const bare = Buffer.from(text.slice(0, text.indexOf("x-amz-checksum-crc32c:")) + "\r\n", "latin1");
    await decodeFails([bare], opts(), "InvalidRequest");
  });

  test("a tampered data byte anywhere is refused", async () => {
    for (const at of [100, 70_000, 199_000]) {
      const bad = Buffer.from(body);
      const pos = body.indexOf(data.subarray(at, at + 32));
      assert.ok(pos > 0);
      bad[pos]! ^= 1;
      await decodeFails(splitRandom(bad, at, 9000), opts(), "SignatureDoesNotMatch");
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Bodies captured from @aws-sdk/client-s3: STREAMING-UNSIGNED-PAYLOAD-TRAILER with checksums.

interface Captured {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

describe("bodies sent by @aws-sdk/client-s3 (unsigned payload, checksum trailer)", () => {
  let server: http.Server;
  let s3c: S3Client;
  const captured: Captured[] = [];
  const CREDS: Credentials = { secretFor: (id) => (id === "AKIDSDK" ? "sdk-secret" : undefined) };

  before(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        captured.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { etag: '"0"', "content-length": "0" });
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    s3c = new S3Client({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "AKIDSDK", secretAccessKey: "sdk-secret" },
      requestChecksumCalculation: "WHEN_SUPPORTED",
      maxAttempts: 1,
    });
  });

  after(() => {
    s3c.destroy();
    server.closeAllConnections();
    server.close();
  });

  async function put(alg: SdkChecksumAlgorithm | undefined, pieces: Buffer[]): Promise<Captured> {
    const n = captured.length;
    const total = pieces.reduce((s, p) => s + p.length, 0);
    try {
      await s3c.send(
        new PutObjectCommand({ Bucket: "bucket", Key: "streamed/object", Body: Readable.from(pieces), ContentLength: total, ...(alg === undefined ? {} : { ChecksumAlgorithm: alg }) }),
      );
    } catch {
      // The stub's empty response may not satisfy the client; the request is what matters.
    }
    assert.equal(captured.length, n + 1);
    return captured[n]!;
  }

  function optionsFor(c: Captured): { options: ChunkedOptions; alg: ChecksumAlgorithm; trailer: string } {
    const q = c.url.indexOf("?");
    const auth = verifySigV4({ method: c.method, rawPath: c.url.slice(0, q < 0 ? undefined : q), rawQuery: q < 0 ? "" : c.url.slice(q + 1), headers: c.headers }, CREDS);
    assert.deepEqual(auth.payload, { kind: "streaming-unsigned-trailer" });
    assert.equal(c.headers["content-encoding"], "aws-chunked");
    const declared = checksumFromHeaders(c.headers);
    assert.ok(declared !== undefined && declared.location === "trailer");
    return {
      options: { trailer: true, decodedLength: Number(c.headers["x-amz-decoded-content-length"]), declaredTrailers: [declared.name] },
      alg: declared.algorithm,
      trailer: declared.name,
    };
  }

  test("every checksum algorithm: the decoded data and the trailer checksum match", async () => {
    const data = randomBytes(150_000);
    const pieces = splitRandom(data, 21, 40_000);
    for (const alg of ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] as const) {
      const c = await put(alg, pieces);
      const { options, alg: found, trailer } = optionsFor(c);
      assert.equal(found, alg);
      for (const seed of [1, 2]) {
        const { data: out, result } = await decode(splitRandom(c.body, seed, seed === 1 ? 701 : 30_000), options);
        assert.ok(out.equals(data), `${alg}: data round-trips`);
        const value = result.trailers[trailer];
        assert.ok(value !== undefined);
        validateChecksumValue(alg, value);
        assert.equal(checksumBase64(alg, out), value, `${alg}: our checksum agrees with the SDK's trailer`);
      }
    }
  });

  test("the default (CRC32) trailer, an empty body, and a bad trailer checksum", async () => {
    const c = await put(undefined, [Buffer.from("hello "), Buffer.from("world")]);
    const { options, alg, trailer } = optionsFor(c);
    assert.equal(alg, "CRC32");
    const { data, result } = await decode([c.body], options);
    assert.equal(data.toString(), "hello world");
    // Split into single bytes, every boundary of the framing is crossed.
    const bytewise = await decode([...c.body].map((x) => Buffer.of(x)), options);
    assert.equal(bytewise.data.toString(), "hello world");
    assert.deepEqual(bytewise.result, result);
    assert.equal(result.trailers[trailer], checksumBase64("CRC32", data));

    // A body whose trailer carries another (well-formed) checksum decodes, but no longer matches.
    const forged = Buffer.from(c.body.toString("latin1").replace(result.trailers[trailer]!, checksumBase64("CRC32", Buffer.from("x"))), "latin1");
    const again = await decode([forged], options);
    assert.notEqual(again.result.trailers[trailer], checksumBase64("CRC32", again.data));
    // A malformed one is InvalidDigest.
    const broken = Buffer.from(c.body.toString("latin1").replace(result.trailers[trailer]!, "not-base64!"), "latin1");
    const r = await decode([broken], options);
    assert.throws(() => validateChecksumValue("CRC32", r.result.trailers[trailer]!), (e: unknown) => e instanceof S3Error && e.code === "InvalidDigest");

    // Truncated anywhere → IncompleteBody; wrong decoded length → refused.
    for (const cut of [1, 3, 10, c.body.length - 3]) await decodeFails([c.body.subarray(0, cut)], options, "IncompleteBody");
    await decodeFails([c.body], { ...options, decodedLength: 12 }, "IncompleteBody");
    await decodeFails([c.body], { ...options, decodedLength: 10 }, "InvalidArgument");

    const empty = await put(undefined, []);
    const e = optionsFor(empty);
    const decodedEmpty = await decode([empty.body], e.options);
    assert.equal(decodedEmpty.data.length, 0);
    assert.equal(decodedEmpty.result.trailers[e.trailer], checksumBase64("CRC32", Buffer.alloc(0)));
  });
});

// ---------------------------------------------------------------------------------------------

describe("framing", () => {
  const unsigned: ChunkedOptions = { trailer: false };
  const b = (s: string): Buffer[] => [Buffer.from(s, "latin1")];

  test("a small signed body split into single bytes", async () => {
    // The first 300 bytes of AWS's example are not a whole body, so build one from its key:
    // one 5-byte chunk, signed with the example's seed.
    const sig1 = chunkSignature(EX_SIGNED, EX_SEED, sha256Hex("hello"));
    const sig2 = chunkSignature(EX_SIGNED, sig1, EMPTY_SHA);
    const small = Buffer.from(`5;chunk-signature=${sig1}\r\nhello\r\n0;chunk-signature=${sig2}\r\n\r\n`);
    const { data } = await decode([...small].map((x) => Buffer.of(x)), { signed: EX_SIGNED, trailer: false, decodedLength: 5 });
    assert.equal(data.toString(), "hello");
  });

  test("well-formed unsigned bodies, with extensions ignored and uppercase hex", async () => {
    assert.equal((await decode(b("3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n"), unsigned)).data.toString(), "abc0123456789");
    assert.equal((await decode(b("0\r\n\r\n"), unsigned)).data.length, 0);
    // The SDK ends an unsigned body without a checksum right after "0\r\n".
    assert.equal((await decode(b("3\r\nabc\r\n0\r\n"), { trailer: true })).data.toString(), "abc");
    const r = await decode(b("3\r\nabc\r\n0\r\nx-amz-checksum-crc32: NSRBwg== \r\n\r\n"), { trailer: true, declaredTrailers: ["x-amz-checksum-crc32"] });
    assert.deepEqual(r.result.trailers, { "x-amz-checksum-crc32": "NSRBwg==" });
  });

  test("malformed framing is InvalidRequest; truncation is IncompleteBody", async () => {
    const bad: [string, string][] = [
      ["zz\r\nabc\r\n0\r\n\r\n", "InvalidRequest"],
      ["\r\nabc\r\n0\r\n\r\n", "InvalidRequest"],
      ["-3\r\nabc\r\n0\r\n\r\n", "InvalidRequest"],
      ["3\r\nabcd\r\n0\r\n\r\n", "InvalidRequest"],
      ["3\nabc\r\n0\r\n\r\n", "InvalidRequest"],
      ["3\r\nabc\n0\r\n\r\n", "InvalidRequest"],
      ["3\r\nabc\r\n0\r\nx-amz-meta: 1\r\n\r\n", "InvalidRequest"],
      ["3\r\nabc\r\n0\r\n\r\nextra", "InvalidRequest"],
      ["3" + "0".repeat(5000) + "\r\n", "InvalidRequest"],
      ["ffffffffffffffff\r\n", "InvalidRequest"],
      ["1000001\r\n", "InvalidArgument"],
      ["", "IncompleteBody"],
      ["3\r\nab", "IncompleteBody"],
      ["3\r\nabc", "IncompleteBody"],
      ["3\r\nabc\r", "IncompleteBody"],
      ["3\r\nabc\r\n", "IncompleteBody"],
      ["3\r\nabc\r\n0", "IncompleteBody"],
      ["3\r\nabc\r\n0\r\n\r", "IncompleteBody"],
    ];
    for (const [text, code] of bad) await decodeFails(b(text), unsigned, code);
    const trailerBad: [string, string][] = [
      ["0\r\nno-colon\r\n\r\n", "InvalidRequest"],
      ["0\r\n:value\r\n\r\n", "InvalidRequest"],
      ["0\r\na:1\r\na:2\r\n\r\n", "InvalidRequest"],
      ["0\r\na:1\r\nb", "IncompleteBody"],
      ["0\r\n" + Array.from({ length: 100 }, (_, i) => `t${i}:1\r\n`).join("") + "\r\n", "InvalidRequest"],
    ];
    for (const [text, code] of trailerBad) await decodeFails(b(text), { trailer: true }, code);
  });

  test("a consumer that stops early releases the source", async () => {
    let cleaned = false;
    async function* src(): AsyncGenerator<Buffer> {
      try {
        yield Buffer.from("3\r\nabc\r\n");
        yield Buffer.from("3\r\ndef\r\n");
        yield Buffer.from("0\r\n\r\n");
      } finally {
        cleaned = true;
      }
    }
    for await (const chunk of decodeAwsChunked(src(), unsigned)) {
      assert.equal(chunk.toString(), "abc");
      break;
    }
    assert.ok(cleaned);
  });

  test("unsigned chunk data streams out before the chunk ends (bounded memory)", async () => {
    let sent = 0;
    const seen: number[] = [];
    async function* src(): AsyncGenerator<Buffer> {
      yield Buffer.from("100000\r\n");
      for (let i = 0; i < 16; i++) {
        sent += 65536;
        yield Buffer.alloc(65536, i);
      }
      yield Buffer.from("\r\n0\r\n\r\n");
    }
    let total = 0;
    for await (const chunk of decodeAwsChunked(src(), { trailer: false, decodedLength: 1 << 20 })) {
      total += chunk.length;
      seen.push(sent - total);
    }
    assert.equal(total, 1 << 20);
    assert.ok(seen.every((lag) => lag <= 65536), "data is yielded as it arrives");
  });
});
