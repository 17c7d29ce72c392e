/**
 * The S3 backend on a real S3-compatible server (moto's server, installed by
 * `scripts/services/s3-server.sh install`; SeaweedFS too with STOWAGE_S3_TEST_SEAWEEDFS=1 when
 * built). The server is spawned by this file on a free 127.0.0.1 port; every test gets a fresh
 * bucket. Without the server the tests are skipped with a message, except under CI (then fail).
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { DeleteBucketCommand, DeleteObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { isStowageError } from "../../src/errors.js";
import { BackendIoError, RetryingBackend, S3Backend, keyShard, parseBucketUrl, type S3BackendOptions } from "../../src/backend/index.js";
import { backendConformance, collect, rejectsWith, testBytes, type BackendFixture } from "./conformance.js";
import { INSTALL_HINT, S3TestServer, findS3Servers, freePort, type S3ServerImpl } from "./s3-server.js";

const MiB = 1024 * 1024;
const CREDENTIALS = { accessKeyId: "stowagetest", secretAccessKey: "stowagetestsecret" };
const impls = findS3Servers();

if (impls.length === 0) {
  const message = `no S3-compatible server installed; run ${INSTALL_HINT}`;
  if (process.env["CI"] !== undefined && process.env["CI"] !== "") {
    test("S3 backend: an S3-compatible server is installed", () => assert.fail(message));
  } else {
    test("S3 backend (skipped)", { skip: message }, () => undefined);
  }
}

const servers = new Map<S3ServerImpl, Promise<S3TestServer>>();
function server(impl: S3ServerImpl): Promise<S3TestServer> {
  let s = servers.get(impl);
  if (s === undefined) {
    s = S3TestServer.start(impl);
    servers.set(impl, s);
  }
  return s;
}
after(async () => {
  for (const s of servers.values()) await (await s).stop();
});

let bucketSeq = 0;
function freshBucket(): string {
  return `stowage-t${process.pid}-${++bucketSeq}`;
}

function adminClient(endpoint: string): S3Client {
  return new S3Client({ endpoint, region: "us-east-1", credentials: CREDENTIALS, forcePathStyle: true });
}

/** Deletes every object of `bucket` and the bucket (best effort). */
async function dropBucket(endpoint: string, bucket: string): Promise<void> {
  const client = adminClient(endpoint);
  try {
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ...(token === undefined ? {} : { ContinuationToken: token }) }));
      for (const o of page.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key }));
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } catch {
    // the server may be gone (killed by the test)
  } finally {
    client.destroy();
  }
}

async function s3Fixture(impl: S3ServerImpl, options: Partial<S3BackendOptions> = {}): Promise<BackendFixture & { s3: S3Backend; srv: S3TestServer }> {
  const srv = await server(impl);
  const bucket = freshBucket();
  const s3 = new S3Backend({ endpoint: srv.endpoint, credentials: CREDENTIALS, forcePathStyle: true, bucket, prefix: "stow/test", ...options });
  await s3.ensureBucket();
  return {
    s3,
    srv,
    backend: s3,
    cleanup: async () => {
      await s3.close();
      await dropBucket(srv.endpoint, bucket);
    },
  };
}

async function withS3(impl: S3ServerImpl, options: Partial<S3BackendOptions>, fn: (b: S3Backend, srv: S3TestServer) => Promise<void>): Promise<void> {
  const f = await s3Fixture(impl, options);
  try {
    await fn(f.s3, f.srv);
  } finally {
    await f.cleanup();
  }
}

for (const impl of impls) {
  backendConformance(`S3Backend (${impl})`, () => s3Fixture(impl));
  // Hashed and unhashed keys side by side (listings of 257 merged sources), no bucket prefix.
  // Only keys starting with "x" are hashed: every listing that can hold hashed keys costs 257
  // requests, and moto answers one request at a time.
  backendConformance(`S3Backend (${impl}), keys starting with x hashed`, () => s3Fixture(impl, { prefix: "", hashedPrefixes: ["x"] }));
  backendConformance(`RetryingBackend(S3Backend (${impl}), no keep-alive)`, async () => {
    const f = await s3Fixture(impl, { keepAlive: false });
    return { backend: new RetryingBackend(f.s3), cleanup: f.cleanup };
  });

  describe(`S3Backend on ${impl}`, () => {
    test("a ranged get reads the body into the caller's buffer when it is long enough", () =>
      withS3(impl, {}, async (b) => {
        const data = testBytes(300_000, 5);
        await b.put("packs/into", data);
        const into = Buffer.alloc(200_000, 0xee);
        const r = await b.get("packs/into", { offset: 1000, length: 150_000, into });
        assert.ok(r.equals(data.subarray(1000, 151_000)));
        assert.equal(r.buffer, into.buffer, "a view of into");
        assert.deepEqual(into.subarray(150_000), Buffer.alloc(50_000, 0xee));
        // Clipped by the end of the blob.
        const tail = await b.get("packs/into", { offset: 250_000, length: 100_000, into });
        assert.ok(tail.equals(data.subarray(250_000)));
        assert.equal(tail.buffer, into.buffer);
      }));

    test("hashedPrefixes: packs/<id> is stored as <prefix>/<hh>/packs/<id>; others as <prefix>/<key>; list merges in byte order", () =>
      withS3(impl, { hashedPrefixes: true }, async (b, srv) => {
        const keys = ["packs/00/p1", "packs/ff/p2", "packs/7a/p3", "keys/k1", "meta/m", "packsx", "a"];
        for (const k of keys) await b.put(k, Buffer.from(k));
        const client = adminClient(srv.endpoint);
        try {
          const stored = (await client.send(new ListObjectsV2Command({ Bucket: b.bucket }))).Contents?.map((o) => o.Key).sort();
          const expected = keys.map((k) => (k.startsWith("packs/") ? `stow/test/${keyShard(k)}/${k}` : `stow/test/${k}`)).sort();
          assert.deepEqual(stored, expected);
        } finally {
          client.destroy();
        }
        const sorted = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        assert.deepEqual((await collect(b.list(""))).map((i) => i.key), sorted);
        assert.deepEqual((await collect(b.list("packs/"))).map((i) => i.key), sorted.filter((k) => k.startsWith("packs/")));
        assert.deepEqual((await collect(b.list("pack"))).map((i) => i.key), sorted.filter((k) => k.startsWith("pack")));
        assert.deepEqual(await collect(b.list("keys/")), [{ key: "keys/k1", size: 7 }]);
        assert.equal((await b.get("packs/7a/p3")).toString(), "packs/7a/p3");
        // An unhashed key shaped like a hashed key's object is refused (it would collide).
        await rejectsWith(b.put(`${keyShard("packs/q")}/packs/q`, Buffer.from("x")), "STOWAGE_INVALID_ARGUMENT", /reserved/);
        await b.put("ab/other", Buffer.from("fine"));
        assert.ok((await collect(b.list(""))).some((i) => i.key === "ab/other"));
      }));

    test("multipart: a blob above the threshold goes up in parts, reads back whole and by ranges", () =>
      withS3(impl, { multipartThreshold: 6 * MiB, partSize: 5 * MiB, partConcurrency: 2 }, async (b, srv) => {
        const data = testBytes(11 * MiB + 123, 42);
        // Given as uneven pieces, so parts are cut across them.
        await b.put("packs/big", [data.subarray(0, 3 * MiB + 7), data.subarray(3 * MiB + 7, 9 * MiB), data.subarray(9 * MiB)]);
        assert.deepEqual(await b.head("packs/big"), { key: "packs/big", size: data.length });
        assert.ok((await b.get("packs/big")).equals(data));
        const across = { offset: 5 * MiB - 10, length: 20 };
        assert.ok((await b.get("packs/big", across)).equals(data.subarray(across.offset, across.offset + across.length)));
        assert.ok((await b.get("packs/big", { offset: 11 * MiB, length: MiB })).equals(data.subarray(11 * MiB)));
        const client = adminClient(srv.endpoint);
        try {
          const head = await client.send(new HeadObjectCommand({ Bucket: b.bucket, Key: b.objectKey("packs/big") }));
          assert.match(head.ETag ?? "", /-3"?$/, "a three-part multipart ETag");
          const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: b.bucket }));
          assert.equal(uploads.Uploads?.length ?? 0, 0);
        } finally {
          client.destroy();
        }
        // A small blob stays a single PUT.
        await b.put("packs/small", testBytes(1000, 1));
        assert.equal((await b.get("packs/small")).length, 1000);
      }));

    test("a failed multipart upload is aborted: no object, no upload left", () =>
      withS3(impl, { multipartThreshold: 6 * MiB, partSize: 5 * MiB }, async (b, srv) => {
        // The second UploadPart fails (a middleware on the SDK client), after CreateMultipartUpload.
        let parts = 0;
        b.client.middlewareStack.add(
          (next, context) => async (args) => {
            if (context.commandName === "UploadPartCommand" && ++parts === 2) throw new Error("injected part failure");
            return next(args);
          },
          { step: "initialize", name: "failSecondPart" },
        );
        await rejectsWith(b.put("packs/broken", testBytes(11 * MiB, 3)), "STOWAGE_BACKEND_IO", /put \(multipart\) "packs\/broken".*injected part failure/);
        assert.ok(parts >= 2);
        assert.equal(await b.head("packs/broken"), undefined);
        const client = adminClient(srv.endpoint);
        try {
          const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: b.bucket }));
          assert.equal(uploads.Uploads?.length ?? 0, 0);
        } finally {
          client.destroy();
        }
      }));

    test("a missing bucket: STOWAGE_BACKEND_IO naming the bucket, not retryable; head too", async () => {
      const srv = await server(impl);
      const b = new S3Backend({ endpoint: srv.endpoint, credentials: CREDENTIALS, forcePathStyle: true, bucket: "no-such-bucket-here" });
      try {
        const check = (err: unknown): boolean => {
          assert.ok(isStowageError(err, "STOWAGE_BACKEND_IO"), String(err));
          assert.match(err.message, /no-such-bucket-here/);
          assert.match(err.message, /does not exist|NoSuchBucket/);
          assert.ok(err instanceof BackendIoError && !err.retryable && !err.throttled);
          return true;
        };
        await assert.rejects(b.put("k", Buffer.from("x")), check);
        await assert.rejects(b.get("k"), check);
        await assert.rejects(b.head("k"), check);
        await assert.rejects(collect(b.list("")), check);
        // Not retried by the wrapper: it fails at once.
        const r = new RetryingBackend(b, { sleep: () => Promise.reject(new Error("must not sleep")) });
        await assert.rejects(r.get("k"), check);
        assert.equal(r.stats().retries, 0);
      } finally {
        await b.close();
      }
    });

    test("an unreachable endpoint: STOWAGE_BACKEND_IO with the network error, retryable", async () => {
      const srv = await server(impl);
      const b = new S3Backend({ endpoint: `http://127.0.0.1:${await freePort()}`, credentials: CREDENTIALS, forcePathStyle: true, bucket: "whatever" });
      try {
        await assert.rejects(b.put("k", Buffer.from("x")), (err: unknown) => {
          assert.ok(err instanceof BackendIoError, String(err));
          assert.match(err.message, /put "k" in bucket "whatever" failed: ECONNREFUSED/);
          assert.ok(err.retryable && err.cause !== undefined);
          return true;
        });
      } finally {
        await b.close();
      }
      assert.ok(srv.running);
    });

    test("server killed mid-test: STOWAGE_BACKEND_IO, then RetryingBackend succeeds once it is back", async () => {
      // Its own server: killing the shared one would disturb the other tests.
      const srv = await S3TestServer.start(impl);
      const bucket = freshBucket();
      const b = new S3Backend({ endpoint: srv.endpoint, credentials: CREDENTIALS, forcePathStyle: true, bucket, prefix: "k" });
      let restarted: Promise<void> | undefined;
      let sleeps = 0;
      const r = new RetryingBackend(b, {
        maxAttempts: 10,
        // The first backoff restarts the server (and, for a server that forgets, the bucket).
        sleep: async () => {
          sleeps++;
          restarted ??= (async () => {
            await srv.start();
            if (!srv.persistent) await b.ensureBucket();
          })();
          await restarted;
        },
      });
      try {
        await b.ensureBucket();
        await r.put("before", Buffer.from("1"));
        await srv.kill();
        await rejectsWith(b.put("during", Buffer.from("2")), "STOWAGE_BACKEND_IO", /ECONNREFUSED|ECONNRESET|socket/);
        await rejectsWith(b.get("before"), "STOWAGE_BACKEND_IO");
        const data = testBytes(100_000, 9);
        await r.put("after", data);
        assert.ok(sleeps >= 1);
        assert.ok(r.stats().retries >= 1, JSON.stringify(r.stats()));
        assert.ok((await r.get("after")).equals(data));
        assert.deepEqual(await r.head("after"), { key: "after", size: data.length });
      } finally {
        await r.close();
        await srv.stop();
      }
    });

    if (impl === "moto") {
      test("wrong credentials: STOWAGE_BACKEND_IO saying so, not retryable", async () => {
        const srv = await S3TestServer.start(impl, { enforceAuth: true });
        const b = new S3Backend({ endpoint: srv.endpoint, credentials: { accessKeyId: "AKIDWRONG", secretAccessKey: "nope" }, forcePathStyle: true, bucket: "any-bucket" });
        try {
          for (const call of [() => b.put("k", Buffer.from("x")), () => b.get("k"), () => b.head("k"), () => collect(b.list(""))]) {
            await assert.rejects(call(), (err: unknown) => {
              assert.ok(err instanceof BackendIoError, String(err));
              assert.match(err.message, /HTTP 403/);
              assert.match(err.message, /access key|access denied|credentials/i);
              assert.equal(err.retryable, false);
              return true;
            });
          }
        } finally {
          await b.close();
          await srv.stop();
        }
      });
    }
  });
}

describe("S3 backend helpers (no server)", () => {
  test("parseBucketUrl", () => {
    assert.deepEqual(parseBucketUrl("s3://media"), { bucket: "media", prefix: "" });
    assert.deepEqual(parseBucketUrl("s3://media/"), { bucket: "media", prefix: "" });
    assert.deepEqual(parseBucketUrl("s3://my.bucket-1/stowage/prod/"), { bucket: "my.bucket-1", prefix: "stowage/prod" });
    for (const bad of ["media", "http://media/x", "s3://", "s3://UPPER", "s3://ab", "s3://a..b", "s3://ok-bucket/a//b", "s3://ok-bucket/a b", "s3://ok-bucket/../x"]) {
      assert.throws(() => parseBucketUrl(bad), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"), bad);
    }
  });

  test("fromUrl and options: location, prefix, object keys, hashing; bad options refused", async () => {
    const b = S3Backend.fromUrl("s3://media/stowage/x", { endpoint: "http://127.0.0.1:1", region: "eu-west-1", hashedPrefixes: true });
    assert.equal(b.location, "s3://media/stowage/x");
    assert.equal(b.bucket, "media");
    assert.equal(b.prefix, "stowage/x");
    assert.equal(b.objectKey("keys/k"), "stowage/x/keys/k");
    assert.match(b.objectKey("packs/p"), /^stowage\/x\/[0-9a-f]{2}\/packs\/p$/);
    assert.equal(b.objectKey("packs/p"), `stowage/x/${keyShard("packs/p")}/packs/p`);
    assert.equal(keyShard("packs/p"), keyShard("packs/p"));
    await b.close();
    await rejectsWith(b.get("k"), "STOWAGE_INVALID_ARGUMENT", /closed/);
    for (const bad of [{ partSize: MiB }, { maxSockets: 0 }, { multipartThreshold: 0 }, { prefix: "a//b" }, { hashedPrefixes: ["a b"] }]) {
      assert.throws(() => new S3Backend({ bucket: "media", ...bad }), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"), JSON.stringify(bad));
    }
    // Spread: 4096 pack keys land in all 256 shards.
    assert.equal(new Set(Array.from({ length: 4096 }, (_, i) => keyShard(`packs/${i}`))).size, 256);
  });
});
