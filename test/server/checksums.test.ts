/**
 * The x-amz-checksum-* family: the catalogue check values ("123456789"), agreement with the AWS
 * SDK's own implementations on random data (its checksum package, and the headers
 * @aws-sdk/client-s3 actually sends), incremental updates, header parsing and value validation,
 * and a throughput measurement of the hand-written CRCs.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHash, randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { S3Error } from "../../src/server/s3/errors.js";
import {
  CHECKSUM_ALGORITHMS,
  checksumBase64,
  checksumFromHeaders,
  checksumHeaderName,
  crc32,
  crc32Js,
  crc32c,
  crc64nvme,
  isValidChecksumValue,
  newChecksum,
  parseChecksumAlgorithm,
  validateChecksumValue,
  type ChecksumAlgorithm,
} from "../../src/server/s3/checksums.js";
import { mulberry32 as rng } from "../../src/util/random.js";

function expectS3(code: string, fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => e instanceof S3Error && e.code === code, `expected ${code}`);
}

const CHECK = Buffer.from("123456789");

describe("check values", () => {
  test("'123456789' gives the catalogue values", () => {
    assert.equal(crc32(CHECK).toString(16), "cbf43926");
    assert.equal(crc32Js(CHECK).toString(16), "cbf43926");
    assert.equal(crc32c(CHECK).toString(16), "e3069283");
    assert.equal(crc64nvme(CHECK).toString(16), "ae8b14860a799888");
    const hex = (alg: ChecksumAlgorithm): string => {
      const c = newChecksum(alg);
      c.update(CHECK);
      return c.digest().toString("hex");
    };
    assert.equal(hex("CRC32"), "cbf43926");
    assert.equal(hex("CRC32C"), "e3069283");
    assert.equal(hex("CRC64NVME"), "ae8b14860a799888");
    assert.equal(hex("SHA1"), createHash("sha1").update(CHECK).digest("hex"));
    assert.equal(hex("SHA256"), createHash("sha256").update(CHECK).digest("hex"));
  });

  test("empty input and base64 rendering", () => {
    assert.equal(checksumBase64("CRC32", Buffer.alloc(0)), "AAAAAA==");
    assert.equal(checksumBase64("CRC32C", Buffer.alloc(0)), "AAAAAA==");
    assert.equal(checksumBase64("CRC64NVME", Buffer.alloc(0)), "AAAAAAAAAAA=");
    assert.equal(checksumBase64("SHA256", Buffer.alloc(0)), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert.equal(checksumBase64("CRC32", CHECK), Buffer.from("cbf43926", "hex").toString("base64"));
    assert.equal(checksumBase64("CRC64NVME", CHECK), Buffer.from("ae8b14860a799888", "hex").toString("base64"));
  });

  test("incremental updates (any split, unaligned views) equal one-shot digests; digest does not end the sum", () => {
    const r = rng(7);
    const data = randomBytes(100_003);
    for (const alg of CHECKSUM_ALGORITHMS) {
      const whole = checksumBase64(alg, data);
      for (let round = 0; round < 5; round++) {
        const c = newChecksum(alg);
        let i = 0;
        while (i < data.length) {
          const n = Math.floor(r() * (round === 0 ? 16 : 20_000));
          c.update(data.subarray(i, i + n));
          i += n;
          if (round === 1) c.digestBase64();
        }
        assert.equal(c.digestBase64(), whole, `${alg} round ${round}`);
        assert.equal(c.digestBase64(), whole);
      }
    }
    // The zlib and table CRC-32 agree, including continuation.
    for (const n of [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099, 65_536]) {
      const d = data.subarray(3, 3 + n);
      assert.equal(crc32Js(d), crc32(d));
      assert.equal(crc32Js(d.subarray(5), crc32Js(d.subarray(0, 5))), crc32(d));
    }
  });
});

interface SdkChecksum {
  update(data: Uint8Array): void;
  digest(): Promise<Uint8Array>;
}
type SdkChecksumCtor = new () => SdkChecksum;

describe("agreement with the AWS SDK's implementations", () => {
  let sdk: Partial<Record<"Crc32" | "Crc32cJs" | "Crc32c" | "Crc64NvmeJs" | "Crc64Nvme", SdkChecksumCtor>> | undefined;

  before(async () => {
    // The SDK's checksum package, as installed with @aws-sdk/client-s3 (a dependency of it, not of
    // ours: skipped when the layout differs).
    const spec: string = "@aws-sdk/checksums/crc";
    try {
      sdk = (await import(spec)) as typeof sdk;
    } catch {
      sdk = undefined;
    }
  });

  test("random data of many lengths, one-shot and split", async (t) => {
    if (sdk === undefined) {
      t.skip("@aws-sdk/checksums is not resolvable");
      return;
    }
    const pairs: [ChecksumAlgorithm, SdkChecksumCtor | undefined][] = [
      ["CRC32", sdk.Crc32],
      ["CRC32C", sdk.Crc32cJs],
      ["CRC32C", sdk.Crc32c],
      ["CRC64NVME", sdk.Crc64NvmeJs],
      ["CRC64NVME", sdk.Crc64Nvme],
    ];
    const r = rng(99);
    const lengths = [...Array.from({ length: 70 }, (_, i) => i), 255, 256, 257, 1000, 4095, 65_537, 300_001];
    let compared = 0;
    for (const [alg, Ctor] of pairs) {
      if (Ctor === undefined) continue;
      for (const n of lengths) {
        const data = randomBytes(n);
        const theirs: SdkChecksum = new Ctor();
        const cut = Math.floor(r() * (n + 1));
        theirs.update(data.subarray(0, cut));
        theirs.update(data.subarray(cut));
        const expected: string = Buffer.from(await theirs.digest()).toString("base64");
        assert.equal(checksumBase64(alg, data), expected, `${alg} of ${n} bytes`);
        compared++;
      }
    }
    assert.ok(compared >= 3 * lengths.length, "the SDK's CRC32, CRC32C and CRC64NVME were compared");
  });

  describe("the checksum headers @aws-sdk/client-s3 sends", () => {
    let server: http.Server;
    let s3c: S3Client;
    const seen: http.IncomingHttpHeaders[] = [];

    before(async () => {
      server = http.createServer((req, res) => {
        req.resume();
        req.on("end", () => {
          seen.push(req.headers);
          res.writeHead(200, { etag: '"0"', "content-length": "0" });
          res.end();
        });
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      s3c = new S3Client({
        endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId: "AKID", secretAccessKey: "SECRET" },
        maxAttempts: 1,
      });
    });

    after(() => {
      s3c.destroy();
      server.closeAllConnections();
      server.close();
    });

    test("every algorithm, random bodies: checksumFromHeaders finds the value and it is ours", async () => {
      for (const alg of CHECKSUM_ALGORITHMS) {
        for (const n of [0, 1, 13, 4096, 100_000]) {
          const body = randomBytes(n);
          const before = seen.length;
          try {
            await s3c.send(new PutObjectCommand({ Bucket: "b", Key: "k", Body: body, ChecksumAlgorithm: alg }));
          } catch {
            // The stub's reply is not what matters.
          }
          const headers = seen[before];
          assert.ok(headers !== undefined);
          const found = checksumFromHeaders(headers);
          assert.ok(found !== undefined, `${alg}: a checksum was sent`);
          assert.equal(found.algorithm, alg);
          assert.equal(found.location, "header");
          assert.equal(found.name, checksumHeaderName(alg));
          assert.equal(found.value, checksumBase64(alg, body), `${alg} of ${n} bytes`);
        }
      }
    });
  });
});

describe("request headers", () => {
  const good: Record<ChecksumAlgorithm, string> = {
    CRC32: checksumBase64("CRC32", CHECK),
    CRC32C: checksumBase64("CRC32C", CHECK),
    CRC64NVME: checksumBase64("CRC64NVME", CHECK),
    SHA1: checksumBase64("SHA1", CHECK),
    SHA256: checksumBase64("SHA256", CHECK),
  };

  test("a header value, a trailer, or nothing", () => {
    assert.equal(checksumFromHeaders({ "content-type": "x" }), undefined);
    assert.deepEqual(checksumFromHeaders({ "x-amz-checksum-crc32c": good.CRC32C, "x-amz-sdk-checksum-algorithm": "crc32c" }), {
      algorithm: "CRC32C",
      location: "header",
      name: "x-amz-checksum-crc32c",
      value: good.CRC32C,
    });
    assert.deepEqual(checksumFromHeaders({ "x-amz-trailer": "x-amz-checksum-crc64nvme", "x-amz-sdk-checksum-algorithm": "CRC64NVME" }), {
      algorithm: "CRC64NVME",
      location: "trailer",
      name: "x-amz-checksum-crc64nvme",
    });
    assert.equal(checksumFromHeaders({ "x-amz-checksum-sha1": [good.SHA1] })?.value, good.SHA1);
    for (const alg of CHECKSUM_ALGORITHMS) assert.equal(checksumFromHeaders({ [checksumHeaderName(alg)]: good[alg] })?.algorithm, alg);
  });

  test("conflicting or incomplete declarations are InvalidRequest", () => {
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-checksum-crc32": good.CRC32, "x-amz-checksum-sha1": good.SHA1 }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-checksum-crc32": good.CRC32, "x-amz-trailer": "x-amz-checksum-crc32" }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-checksum-crc32": good.CRC32, "x-amz-sdk-checksum-algorithm": "SHA256" }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-sdk-checksum-algorithm": "CRC32" }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-sdk-checksum-algorithm": "MD5", "x-amz-checksum-crc32": good.CRC32 }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-trailer": "x-amz-checksum-md5" }));
    expectS3("InvalidRequest", () => checksumFromHeaders({ "x-amz-checksum-crc32": [good.CRC32, good.CRC32] }));
  });

  test("malformed values are InvalidDigest", () => {
    const bad: [ChecksumAlgorithm, string][] = [
      ["CRC32", ""],
      ["CRC32", "AAAA"],
      ["CRC32", "AAAAAAA="],
      ["CRC32", "AAAAAAA=="],
      ["CRC32", "AAAAAB=="], // non-zero padding bits: not canonical
      ["CRC32", "AA*AAA=="],
      ["CRC32", good.CRC64NVME],
      ["CRC64NVME", good.CRC32],
      ["SHA256", good.SHA1],
      ["SHA1", good.SHA1.slice(0, -1)],
      ["SHA256", good.SHA256.replace(/=$/, "A")],
    ];
    for (const [alg, value] of bad) {
      assert.equal(isValidChecksumValue(alg, value), false, `${alg} ${value}`);
      expectS3("InvalidDigest", () => validateChecksumValue(alg, value));
      expectS3("InvalidDigest", () => checksumFromHeaders({ [checksumHeaderName(alg)]: value }));
    }
    for (const alg of CHECKSUM_ALGORITHMS) assert.equal(isValidChecksumValue(alg, good[alg]), true);
    assert.equal(parseChecksumAlgorithm(" crc64nvme "), "CRC64NVME");
    assert.equal(parseChecksumAlgorithm("md5"), undefined);
  });
});

describe("throughput", () => {
  test("crc32c and crc64nvme (measured, not asserted)", (t) => {
    const data = randomBytes(4 << 20);
    // Rates per second of wall time and per second of CPU time (the latter is the meaningful one
    // on a shared, busy machine).
    const rate = (f: () => void): { wall: number; cpu: number } => {
      f();
      const start = process.hrtime.bigint();
      const cpu0 = process.cpuUsage();
      let rounds = 0;
      do {
        f();
        rounds++;
      } while (process.hrtime.bigint() - start < 150_000_000n);
      const wall = Number(process.hrtime.bigint() - start) / 1e9;
      const used = process.cpuUsage(cpu0);
      const cpu = (used.user + used.system) / 1e6;
      const mb = (rounds * data.length) / 1e6;
      return { wall: mb / wall, cpu: mb / cpu };
    };
    const c32c = rate(() => crc32c(data));
    const c64 = rate(() => {
      const c = newChecksum("CRC64NVME");
      c.update(data);
      c.digest();
    });
    const c32 = rate(() => crc32(data));
    const fmt = (r: { wall: number; cpu: number }): string => `${r.cpu.toFixed(0)} MB/s per CPU-second (${r.wall.toFixed(0)} wall)`;
    t.diagnostic(`crc32c ${fmt(c32c)}; crc64nvme ${fmt(c64)}; crc32 (zlib) ${fmt(c32)}`);
    assert.ok(c32c.cpu > 0 && c64.cpu > 0);
  });
});
