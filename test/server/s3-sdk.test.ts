/**
 * The S3 endpoint driven by the real AWS SDK for JavaScript v3 over HTTP: every operation of
 * issue 4, presigned URLs, both streaming upload modes, conditional requests and S3's errors.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketLocationCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  ListPartsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { request as httpRequest } from "node:http";
import { SignatureV4 } from "@smithy/signature-v4";
import { startEndpoint, ACCESS_KEY, SECRET_KEY, Sha256, type Endpoint } from "./harness.js";


let ep: Endpoint;
let c: S3Client;

before(async () => {
  ep = await startEndpoint({ minPartSize: 5 * 1024 * 1024 });
  c = ep.client();
});
after(async () => {
  await ep.stop();
});

const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

async function bodyBytes(out: { Body?: unknown }): Promise<Buffer> {
  const body = out.Body as { transformToByteArray(): Promise<Uint8Array> };
  return Buffer.from(await body.transformToByteArray());
}

async function s3Error(p: Promise<unknown>, code: string, status?: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    if (/^\d+$/.test(code)) {
      assert.equal(e.$metadata?.httpStatusCode, Number(code));
      return true;
    }
    assert.equal(e.name === "Unknown" || e.name === undefined ? e.Code : e.name, code, `expected ${code}, got ${String(e.name)} ${String(err)}`);
    if (status !== undefined) assert.equal(e.$metadata?.httpStatusCode, status);
    return true;
  });
}

test("buckets: create, head, list, location, versioning, delete; errors as S3", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "alpha" }));
  await s3Error(c.send(new CreateBucketCommand({ Bucket: "alpha" })), "BucketAlreadyOwnedByYou", 409);
  await c.send(new HeadBucketCommand({ Bucket: "alpha" }));
  await s3Error(c.send(new HeadBucketCommand({ Bucket: "nope-nope" })), "NotFound", 404);
  const list = await c.send(new ListBucketsCommand({}));
  assert.ok(list.Buckets?.some((b) => b.Name === "alpha"));
  const loc = await c.send(new GetBucketLocationCommand({ Bucket: "alpha" }));
  assert.ok(loc.LocationConstraint === undefined || (loc.LocationConstraint as string) === "");
  assert.equal((await c.send(new GetBucketVersioningCommand({ Bucket: "alpha" }))).Status, undefined);
  await c.send(new PutBucketVersioningCommand({ Bucket: "alpha", VersioningConfiguration: { Status: "Enabled" } }));
  assert.equal((await c.send(new GetBucketVersioningCommand({ Bucket: "alpha" }))).Status, "Enabled");
  await c.send(new PutObjectCommand({ Bucket: "alpha", Key: "x", Body: "x" }));
  await s3Error(c.send(new DeleteBucketCommand({ Bucket: "alpha" })), "BucketNotEmpty", 409);
  await s3Error(c.send(new CreateBucketCommand({ Bucket: "UPPER" })), "InvalidBucketName", 400);
  await c.send(new CreateBucketCommand({ Bucket: "empty-one" }));
  await c.send(new DeleteBucketCommand({ Bucket: "empty-one" }));
  await s3Error(c.send(new DeleteBucketCommand({ Bucket: "empty-one" })), "NoSuchBucket", 404);
});

test("objects: put/get/head with metadata and standard headers; ranges; response overrides", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "objs" }));
  const data = randomBytes(700_000);
  const put = await c.send(
    new PutObjectCommand({
      Bucket: "objs",
      Key: "dir/ünïcode file+name.bin",
      Body: data,
      ContentType: "video/mp4",
      Metadata: { shot: "010", take: "3" },
      CacheControl: "max-age=60",
      ContentDisposition: "attachment",
    }),
  );
  assert.equal(put.ETag, `"${md5(data)}"`);
  const got = await c.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin" }));
  assert.ok((await bodyBytes(got)).equals(data));
  assert.equal(got.ContentType, "video/mp4");
  assert.deepEqual(got.Metadata, { shot: "010", take: "3" });
  assert.equal(got.CacheControl, "max-age=60");
  assert.equal(got.ContentDisposition, "attachment");
  assert.equal(got.ContentLength, data.length);
  const head = await c.send(new HeadObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin" }));
  assert.equal(head.ETag, put.ETag);
  assert.equal(head.ContentLength, data.length);
  const ranged = await c.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin", Range: "bytes=1000-99999" }));
  assert.equal(ranged.ContentRange, `bytes 1000-99999/${data.length}`);
  assert.ok((await bodyBytes(ranged)).equals(data.subarray(1000, 100_000)));
  const suffix = await c.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin", Range: "bytes=-10" }));
  assert.ok((await bodyBytes(suffix)).equals(data.subarray(data.length - 10)));
  await s3Error(c.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin", Range: `bytes=${data.length}-` })), "InvalidRange", 416);
  const over = await c.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/ünïcode file+name.bin", ResponseContentType: "text/plain", ResponseContentDisposition: "inline" }));
  assert.equal(over.ContentType, "text/plain");
  assert.equal(over.ContentDisposition, "inline");
  await bodyBytes(over);
  await s3Error(c.send(new GetObjectCommand({ Bucket: "objs", Key: "missing" })), "NoSuchKey", 404);
  await s3Error(c.send(new GetObjectCommand({ Bucket: "no-such-bucket", Key: "x" })), "NoSuchBucket", 404);
  // Empty object.
  await c.send(new PutObjectCommand({ Bucket: "objs", Key: "empty", Body: new Uint8Array(0) }));
  const empty = await c.send(new GetObjectCommand({ Bucket: "objs", Key: "empty" }));
  assert.equal((await bodyBytes(empty)).length, 0);
  assert.equal(empty.ETag, '"d41d8cd98f00b204e9800998ecf8427e"');
});

test("conditional requests: If-Match, If-None-Match (304), If-Modified-Since, If-Unmodified-Since", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "cond" }));
  const put = await c.send(new PutObjectCommand({ Bucket: "cond", Key: "k", Body: "hello" }));
  await s3Error(c.send(new GetObjectCommand({ Bucket: "cond", Key: "k", IfMatch: '"0000"' })), "PreconditionFailed", 412);
  const ok = await c.send(new GetObjectCommand({ Bucket: "cond", Key: "k", IfMatch: put.ETag }));
  assert.equal((await bodyBytes(ok)).toString(), "hello");
  await s3Error(c.send(new GetObjectCommand({ Bucket: "cond", Key: "k", IfNoneMatch: put.ETag })), "304", 304);
  await s3Error(c.send(new GetObjectCommand({ Bucket: "cond", Key: "k", IfModifiedSince: new Date(Date.now() + 3600_000) })), "304", 304);
  await s3Error(c.send(new GetObjectCommand({ Bucket: "cond", Key: "k", IfUnmodifiedSince: new Date(Date.now() - 3600_000) })), "PreconditionFailed", 412);
  // Conditional create.
  await s3Error(c.send(new PutObjectCommand({ Bucket: "cond", Key: "k", Body: "again", IfNoneMatch: "*" })), "PreconditionFailed", 412);
});

test("listing: v1 and v2 with prefix, delimiter, pagination; versions", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "lists" }));
  const keys = ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d"];
  await Promise.all(keys.map((k) => c.send(new PutObjectCommand({ Bucket: "lists", Key: k, Body: k }))));
  const v2 = await c.send(new ListObjectsV2Command({ Bucket: "lists", Delimiter: "/" }));
  assert.deepEqual(v2.Contents?.map((o) => o.Key), ["b", "d"]);
  assert.deepEqual(v2.CommonPrefixes?.map((p) => p.Prefix), ["a/", "c/"]);
  const inA = await c.send(new ListObjectsV2Command({ Bucket: "lists", Prefix: "a/" }));
  assert.deepEqual(inA.Contents?.map((o) => o.Key), ["a/1", "a/2", "a/b/3"]);
  const seen: string[] = [];
  let token: string | undefined;
  do {
    const page = await c.send(new ListObjectsV2Command({ Bucket: "lists", MaxKeys: 2, ...(token === undefined ? {} : { ContinuationToken: token }) }));
    seen.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  assert.deepEqual(seen, [...keys].sort());
  const v1 = await c.send(new ListObjectsCommand({ Bucket: "lists", Marker: "b" }));
  assert.deepEqual(v1.Contents?.map((o) => o.Key), ["c/1", "c/2", "d"]);
  const after = await c.send(new ListObjectsV2Command({ Bucket: "lists", StartAfter: "c/1" }));
  assert.deepEqual(after.Contents?.map((o) => o.Key), ["c/2", "d"]);

  await c.send(new CreateBucketCommand({ Bucket: "vers" }));
  await c.send(new PutBucketVersioningCommand({ Bucket: "vers", VersioningConfiguration: { Status: "Enabled" } }));
  const p1 = await c.send(new PutObjectCommand({ Bucket: "vers", Key: "k", Body: "one" }));
  const p2 = await c.send(new PutObjectCommand({ Bucket: "vers", Key: "k", Body: "two" }));
  const del = await c.send(new DeleteObjectCommand({ Bucket: "vers", Key: "k" }));
  assert.equal(del.DeleteMarker, true);
  const versions = await c.send(new ListObjectVersionsCommand({ Bucket: "vers" }));
  assert.deepEqual(versions.Versions?.map((v) => v.VersionId), [p2.VersionId, p1.VersionId]);
  assert.equal(versions.DeleteMarkers?.length, 1);
  assert.equal(versions.DeleteMarkers?.[0]?.IsLatest, true);
  const old = await c.send(new GetObjectCommand({ Bucket: "vers", Key: "k", VersionId: p1.VersionId }));
  assert.equal((await bodyBytes(old)).toString(), "one");
  await s3Error(c.send(new GetObjectCommand({ Bucket: "vers", Key: "k" })), "NoSuchKey", 404);
});

test("delete objects (multi), copy object with directives, tagging", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "ops" }));
  for (const k of ["x1", "x2", "x3"]) await c.send(new PutObjectCommand({ Bucket: "ops", Key: k, Body: k, Metadata: { k } }));
  const res = await c.send(new DeleteObjectsCommand({ Bucket: "ops", Delete: { Objects: [{ Key: "x1" }, { Key: "x2" }, { Key: "never" }] } }));
  assert.deepEqual(res.Deleted?.map((d) => d.Key).sort(), ["never", "x1", "x2"]);
  const left = await c.send(new ListObjectsV2Command({ Bucket: "ops" }));
  assert.deepEqual(left.Contents?.map((o) => o.Key), ["x3"]);
  const copy = await c.send(new CopyObjectCommand({ Bucket: "ops", Key: "y", CopySource: "ops/x3" }));
  assert.equal(copy.CopyObjectResult?.ETag, `"${md5(Buffer.from("x3"))}"`);
  assert.deepEqual((await c.send(new HeadObjectCommand({ Bucket: "ops", Key: "y" }))).Metadata, { k: "x3" });
  await c.send(new CopyObjectCommand({ Bucket: "ops", Key: "z", CopySource: "/ops/x3", MetadataDirective: "REPLACE", Metadata: { fresh: "yes" }, ContentType: "text/plain" }));
  const z = await c.send(new HeadObjectCommand({ Bucket: "ops", Key: "z" }));
  assert.deepEqual(z.Metadata, { fresh: "yes" });
  assert.equal(z.ContentType, "text/plain");
  await s3Error(c.send(new CopyObjectCommand({ Bucket: "ops", Key: "w", CopySource: "ops/missing" })), "NoSuchKey", 404);
  await c.send(new PutObjectTaggingCommand({ Bucket: "ops", Key: "z", Tagging: { TagSet: [{ Key: "project", Value: "film" }] } }));
  const tags = await c.send(new GetObjectTaggingCommand({ Bucket: "ops", Key: "z" }));
  assert.deepEqual(tags.TagSet, [{ Key: "project", Value: "film" }]);
});

test("multipart: explicit API with part copy ranges, list parts/uploads, errors; lib-storage Upload", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "mpu" }));
  const p1 = randomBytes(5 * 1024 * 1024);
  const p2 = randomBytes(5 * 1024 * 1024 + 3);
  const src = randomBytes(300_000);
  await c.send(new PutObjectCommand({ Bucket: "mpu", Key: "src", Body: src }));
  const up = await c.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "big", ContentType: "video/quicktime", Metadata: { a: "b" } }));
  const uploadId = up.UploadId!;
  const r1 = await c.send(new UploadPartCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, PartNumber: 1, Body: p1 }));
  const r2 = await c.send(new UploadPartCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, PartNumber: 2, Body: p2 }));
  const r3 = await c.send(new UploadPartCopyCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, PartNumber: 3, CopySource: "mpu/src", CopySourceRange: "bytes=100-199999" }));
  const r4 = await c.send(new UploadPartCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, PartNumber: 4, Body: "tail" }));
  const parts = await c.send(new ListPartsCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId }));
  assert.deepEqual(parts.Parts?.map((p) => [p.PartNumber, p.Size]), [[1, p1.length], [2, p2.length], [3, 199_900], [4, 4]]);
  const uploads = await c.send(new ListMultipartUploadsCommand({ Bucket: "mpu" }));
  assert.deepEqual(uploads.Uploads?.map((u) => u.UploadId), [uploadId]);
  await s3Error(
    c.send(new CompleteMultipartUploadCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, MultipartUpload: { Parts: [{ PartNumber: 2, ETag: r2.ETag }, { PartNumber: 1, ETag: r1.ETag }] } })),
    "InvalidPartOrder",
    400,
  );
  await s3Error(
    c.send(new CompleteMultipartUploadCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"deadbeef"' }] } })),
    "InvalidPart",
    400,
  );
  await s3Error(
    c.send(
      new CompleteMultipartUploadCommand({
        Bucket: "mpu",
        Key: "big",
        UploadId: uploadId,
        MultipartUpload: { Parts: [{ PartNumber: 3, ETag: r3.CopyPartResult?.ETag }, { PartNumber: 4, ETag: r4.ETag }] },
      }),
    ),
    "EntityTooSmall",
    400,
  );
  const done = await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "mpu",
      Key: "big",
      UploadId: uploadId,
      MultipartUpload: { Parts: [{ PartNumber: 1, ETag: r1.ETag }, { PartNumber: 2, ETag: r2.ETag }, { PartNumber: 3, ETag: r3.CopyPartResult?.ETag }] },
    }),
  );
  const whole = Buffer.concat([p1, p2, src.subarray(100, 200_000)]);
  const expected = createHash("md5").update(Buffer.concat([p1, p2, src.subarray(100, 200_000)].map((b) => createHash("md5").update(b).digest()))).digest("hex");
  assert.equal(done.ETag, `"${expected}-3"`);
  const got = await c.send(new GetObjectCommand({ Bucket: "mpu", Key: "big" }));
  assert.ok((await bodyBytes(got)).equals(whole));
  assert.equal(got.ContentType, "video/quicktime");
  const part2 = await c.send(new GetObjectCommand({ Bucket: "mpu", Key: "big", PartNumber: 2 }));
  assert.ok((await bodyBytes(part2)).equals(p2));
  assert.equal(part2.PartsCount, 3);
  await s3Error(c.send(new UploadPartCommand({ Bucket: "mpu", Key: "big", UploadId: uploadId, PartNumber: 1, Body: "x" })), "NoSuchUpload", 404);
  const ab = await c.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "gone" }));
  await c.send(new UploadPartCommand({ Bucket: "mpu", Key: "gone", UploadId: ab.UploadId, PartNumber: 1, Body: "abc" }));
  await c.send(new AbortMultipartUploadCommand({ Bucket: "mpu", Key: "gone", UploadId: ab.UploadId }));
  await s3Error(c.send(new ListPartsCommand({ Bucket: "mpu", Key: "gone", UploadId: ab.UploadId })), "NoSuchUpload", 404);

  // lib-storage: a stream of unknown length, split into 5 MiB parts uploaded 3 at a time.
  const big = randomBytes(13 * 1024 * 1024 + 12345);
  const upload = new Upload({ client: c, params: { Bucket: "mpu", Key: "streamed", Body: Readable.from([big.subarray(0, 7_000_000), big.subarray(7_000_000)]) }, partSize: 5 * 1024 * 1024, queueSize: 3 });
  const res = await upload.done();
  assert.match(res.ETag ?? "", /-3"$/);
  const back = await c.send(new GetObjectCommand({ Bucket: "mpu", Key: "streamed" }));
  assert.ok((await bodyBytes(back)).equals(big));
});

test("presigned URLs: GET and PUT work until they expire; anonymous and wrong-secret requests are refused", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "pre" }));
  await c.send(new PutObjectCommand({ Bucket: "pre", Key: "file.txt", Body: "presigned content" }));
  const getUrl = await getSignedUrl(c, new GetObjectCommand({ Bucket: "pre", Key: "file.txt" }), { expiresIn: 60 });
  const r = await fetch(getUrl);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), "presigned content");
  const putUrl = await getSignedUrl(c, new PutObjectCommand({ Bucket: "pre", Key: "uploaded.txt" }), { expiresIn: 60 });
  const pr = await fetch(putUrl, { method: "PUT", body: "via presigned put" });
  assert.equal(pr.status, 200, await pr.text());
  const got = await c.send(new GetObjectCommand({ Bucket: "pre", Key: "uploaded.txt" }));
  assert.equal((await bodyBytes(got)).toString(), "via presigned put");
  const expired = await getSignedUrl(c, new GetObjectCommand({ Bucket: "pre", Key: "file.txt" }), { expiresIn: 1, signingDate: new Date(Date.now() - 10_000) });
  const er = await fetch(expired);
  assert.equal(er.status, 403);
  assert.match(await er.text(), /<Code>AccessDenied<\/Code>/);
  const anon = await fetch(`${ep.url}/pre/file.txt`);
  assert.equal(anon.status, 403);
  assert.match(await anon.text(), /<Code>AccessDenied<\/Code>[\s\S]*<RequestId>/);
  const bad = ep.client({ secret: "wrong-secret-wrong-secret" });
  await s3Error(bad.send(new GetObjectCommand({ Bucket: "pre", Key: "file.txt" })), "SignatureDoesNotMatch", 403);
});

test("checksums: the SDK's streaming trailer mode and header checksums are verified end to end", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "sums" }));
  // A stream of unknown length: the SDK sends aws-chunked with an x-amz-checksum-crc32 trailer.
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const up = new Upload({ client: c, params: { Bucket: "sums", Key: "trailer", Body: Readable.from([data]), ChecksumAlgorithm: "CRC32C" }, partSize: 8 * 1024 * 1024 });
  await up.done();
  const back = await c.send(new GetObjectCommand({ Bucket: "sums", Key: "trailer" }));
  assert.ok((await bodyBytes(back)).equals(data));
  for (const alg of ["CRC32", "CRC32C", "SHA1", "SHA256"] as const) {
    await c.send(new PutObjectCommand({ Bucket: "sums", Key: `h-${alg}`, Body: data.subarray(0, 100_000), ChecksumAlgorithm: alg }));
    const head = await c.send(new HeadObjectCommand({ Bucket: "sums", Key: `h-${alg}`, ChecksumMode: "ENABLED" }));
    const field = { CRC32: head.ChecksumCRC32, CRC32C: head.ChecksumCRC32C, SHA1: head.ChecksumSHA1, SHA256: head.ChecksumSHA256 }[alg];
    assert.ok(field !== undefined && field.length > 0, `${alg} checksum returned`);
  }
  // A wrong Content-MD5 is BadDigest and stores nothing.
  await s3Error(c.send(new PutObjectCommand({ Bucket: "sums", Key: "bad", Body: "abc", ContentMD5: createHash("md5").update("abd").digest("base64") })), "BadDigest", 400);
  await s3Error(c.send(new HeadObjectCommand({ Bucket: "sums", Key: "bad" })), "NotFound", 404);
  // A wrong checksum header is BadDigest too.
  await s3Error(c.send(new PutObjectCommand({ Bucket: "sums", Key: "bad2", Body: "abc", ChecksumSHA256: createHash("sha256").update("abd").digest("base64") })), "BadDigest", 400);
});

test("virtual-hosted-style addressing works beside path style", async () => {
  await c.send(new CreateBucketCommand({ Bucket: "vhost" }));
  const host = `vhost.localhost:${ep.port}`;
  const signer = new SignatureV4({ credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY }, region: "us-east-1", service: "s3", sha256: Sha256, uriEscapePath: false });
  const body = "virtual";
  const signed = await signer.sign({
    method: "PUT",
    protocol: "http:",
    hostname: "vhost.localhost",
    port: ep.port,
    path: "/v/key.txt",
    headers: { host, "x-amz-content-sha256": createHash("sha256").update(body).digest("hex"), "content-length": String(body.length) },
    body,
  });
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: ep.port, method: "PUT", path: "/v/key.txt", headers: signed.headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body);
  });
  assert.equal(status, 200);
  const got = await c.send(new GetObjectCommand({ Bucket: "vhost", Key: "v/key.txt" }));
  assert.equal((await bodyBytes(got)).toString(), "virtual");
});

test("CreateBucket with x-stowage-durability: cloud accepted; local needs a local tier; a bad value is InvalidArgument", async () => {
  const withDurability = (bucket: string, value: string): CreateBucketCommand => {
    const cmd = new CreateBucketCommand({ Bucket: bucket });
    cmd.middlewareStack.add(
      (next) => async (args) => {
        (args.request as { headers: Record<string, string> }).headers["x-stowage-durability"] = value;
        return next(args);
      },
      { step: "build", name: "stowageDurabilityHeader" },
    );
    return cmd;
  };
  await c.send(withDurability("dur-cloud", "cloud"));
  assert.equal((await ep.repo.store.headBucket("dur-cloud")).durability, "cloud");
  // This endpoint's store has no write-back backend.
  await s3Error(c.send(withDurability("dur-local", "local")), "InvalidArgument", 400);
  await s3Error(c.send(withDurability("dur-bad", "tape")), "InvalidArgument", 400);
  await s3Error(c.send(new HeadBucketCommand({ Bucket: "dur-local" })), "NotFound", 404);
  await s3Error(c.send(new HeadBucketCommand({ Bucket: "dur-bad" })), "NotFound", 404);
});
