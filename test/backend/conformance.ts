/**
 * The blob backend conformance suite: what every `BlobBackend` must do, whatever it stores into.
 * A backend's test file calls `backendConformance(name, make)`; each test gets a fresh, empty
 * backend from `make()` and calls `cleanup()` afterwards (which must close the backend, possibly
 * already closed by the test, and remove whatever it stored).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../../src/backend/backend.js";

export interface BackendFixture {
  backend: BlobBackend;
  cleanup(): Promise<void>;
}

const MiB = 1024 * 1024;

/** Deterministic pseudo-random bytes (xorshift32), different for each seed. */
export function testBytes(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export async function collect(it: AsyncIterable<BlobInfo>): Promise<BlobInfo[]> {
  const out: BlobInfo[] = [];
  for await (const info of it) out.push(info);
  return out;
}

export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp, context = ""): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `${context}expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  });
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function backendConformance(name: string, make: () => Promise<BackendFixture>): void {
  async function withBackend(fn: (b: BlobBackend) => Promise<void>): Promise<void> {
    const { backend, cleanup } = await make();
    try {
      await fn(backend);
    } finally {
      await cleanup();
    }
  }

  describe(`blob backend conformance: ${name}`, () => {
    test("put/get round trip: empty, 1 byte, multi-part (2,600 parts too), typed-array views, 5 MiB", () =>
      withBackend(async (b) => {
        await b.put("empty", new Uint8Array(0));
        assert.deepEqual(await b.get("empty"), Buffer.alloc(0));
        assert.deepEqual(await b.head("empty"), { key: "empty", size: 0 });

        await b.put("one", Buffer.from([0x5a]));
        assert.deepEqual(await b.get("one"), Buffer.from([0x5a]));

        const parts = [testBytes(1000, 1), new Uint8Array(0), testBytes(1, 2), testBytes(70_000, 3)];
        await b.put("dir/multi", parts);
        assert.deepEqual(await b.get("dir/multi"), Buffer.concat(parts));
        assert.equal((await b.head("dir/multi"))?.size, 71_001);
        await b.put("dir/no-parts", []);
        assert.equal((await b.get("dir/no-parts")).length, 0);
        // More parts than one writev takes (1,024), empty ones among them, views into one buffer.
        const pool = testBytes(64 * 1024, 6);
        const many: Uint8Array[] = [];
        for (let i = 0; i < 2_600; i++) {
          const len = i % 7 === 0 ? 0 : (i * 37) % 300;
          const at = (i * 101) % (pool.length - 300);
          many.push(pool.subarray(at, at + len));
        }
        await b.put("dir/many-parts", many);
        assert.ok((await b.get("dir/many-parts")).equals(Buffer.concat(many)), "2,600-part blob differs");

        // A view into the middle of a larger buffer: only the view's bytes are stored.
        const big = testBytes(100, 4);
        await b.put("view", new Uint8Array(big.buffer, big.byteOffset + 10, 20));
        assert.deepEqual(await b.get("view"), big.subarray(10, 30));

        const large = testBytes(5 * MiB, 5);
        await b.put("a/b/c/large", large);
        const back = await b.get("a/b/c/large");
        assert.equal(back.length, large.length);
        assert.ok(back.equals(large), "5 MiB blob differs");
      }));

    test("a 1024-character key works; every key segment character is allowed", () =>
      withBackend(async (b) => {
        const key1024 = Array.from({ length: 10 }, () => "k".repeat(99)).join("/") + "/" + "z".repeat(24);
        assert.equal(key1024.length, 1024);
        await b.put(key1024, Buffer.from("long"));
        assert.equal((await b.get(key1024)).toString(), "long");
        const odd = "AZaz09._-/x.y..z/-_-";
        await b.put(odd, Buffer.from("odd"));
        assert.equal((await b.get(odd)).toString(), "odd");
        assert.deepEqual(
          (await collect(b.list(""))).map((i) => i.key),
          [odd, key1024].sort(byteOrder),
        );
      }));

    test("overwrite replaces the whole blob (longer, then shorter)", () =>
      withBackend(async (b) => {
        await b.put("k", testBytes(10, 1));
        await b.put("k", testBytes(5000, 2));
        assert.deepEqual(await b.get("k"), testBytes(5000, 2));
        await b.put("k", Buffer.from("xy"));
        assert.deepEqual(await b.get("k"), Buffer.from("xy"));
        assert.deepEqual(await b.head("k"), { key: "k", size: 2 });
        assert.deepEqual(await collect(b.list("")), [{ key: "k", size: 2 }]);
      }));

    test("a ranged get with `into` returns the same bytes whether the backend reads into it or not; a short one is left alone", () =>
      withBackend(async (b) => {
        const data = testBytes(1000, 9);
        await b.put("r/into", data);
        const cases: [ByteRange, Buffer][] = [
          [{ offset: 100, length: 50, into: Buffer.alloc(64, 0xee) }, data.subarray(100, 150)],
          [{ offset: 0, length: 1000, into: Buffer.alloc(1000, 0xee) }, data],
          [{ offset: 990, length: 100, into: Buffer.alloc(100, 0xee) }, data.subarray(990)],
          [{ offset: 5000, length: 10, into: Buffer.alloc(10, 0xee) }, Buffer.alloc(0)],
          [{ offset: 0, length: 0, into: Buffer.alloc(4, 0xee) }, Buffer.alloc(0)],
        ];
        for (const [range, expected] of cases) assert.deepEqual(await b.get("r/into", range), expected, `${range.offset}+${range.length}`);
        // Too short for the range: never written past its end, and the bytes are still right.
        const short = Buffer.alloc(10, 0xee);
        const backing = Buffer.alloc(20, 0xee);
        const view = backing.subarray(0, 10);
        assert.deepEqual(await b.get("r/into", { offset: 200, length: 50, into: short }), data.subarray(200, 250));
        assert.deepEqual(await b.get("r/into", { offset: 200, length: 50, into: view }), data.subarray(200, 250));
        assert.deepEqual(short, Buffer.alloc(10, 0xee));
        assert.deepEqual(backing, Buffer.alloc(20, 0xee));
      }));

    test("ranged gets: start, middle, end, clipped, at and past the end, zero-length", () =>
      withBackend(async (b) => {
        const data = testBytes(1000, 7);
        await b.put("r/blob", data);
        const cases: [ByteRange, Buffer][] = [
          [{ offset: 0, length: 10 }, data.subarray(0, 10)],
          [{ offset: 0, length: 1000 }, data],
          [{ offset: 100, length: 50 }, data.subarray(100, 150)],
          [{ offset: 990, length: 10 }, data.subarray(990)],
          [{ offset: 995, length: 100 }, data.subarray(995)],
          [{ offset: 0, length: 5000 }, data],
          [{ offset: 999, length: 1 }, data.subarray(999)],
          [{ offset: 1000, length: 10 }, Buffer.alloc(0)],
          [{ offset: 5000, length: 10 }, Buffer.alloc(0)],
          [{ offset: 10, length: 0 }, Buffer.alloc(0)],
          [{ offset: 0, length: 0 }, Buffer.alloc(0)],
          [{ offset: Number.MAX_SAFE_INTEGER, length: Number.MAX_SAFE_INTEGER }, Buffer.alloc(0)],
        ];
        for (const [range, expected] of cases) {
          assert.deepEqual(await b.get("r/blob", range), expected, JSON.stringify(range));
        }
        await b.put("r/empty", Buffer.alloc(0));
        assert.equal((await b.get("r/empty", { offset: 0, length: 10 })).length, 0);
      }));

    test("get of a missing blob fails with STOWAGE_BACKEND_NOT_FOUND; head returns undefined", () =>
      withBackend(async (b) => {
        await rejectsWith(b.get("missing"), "STOWAGE_BACKEND_NOT_FOUND");
        await rejectsWith(b.get("missing", { offset: 0, length: 1 }), "STOWAGE_BACKEND_NOT_FOUND");
        await b.put("file", Buffer.from("x"));
        await b.put("dir/inner", Buffer.from("y"));
        // Below a blob, and the "directory" that only holds other blobs: neither is a blob.
        await rejectsWith(b.get("file/below"), "STOWAGE_BACKEND_NOT_FOUND");
        await rejectsWith(b.get("dir"), "STOWAGE_BACKEND_NOT_FOUND");
        await rejectsWith(b.get("no/such/deep/key"), "STOWAGE_BACKEND_NOT_FOUND");
        assert.equal(await b.head("missing"), undefined);
        assert.equal(await b.head("file/below"), undefined);
        assert.equal(await b.head("dir"), undefined);
        assert.deepEqual(await b.head("dir/inner"), { key: "dir/inner", size: 1 });
      }));

    test("list: prefixes, nested keys, partial segments, ascending byte order, sizes", () =>
      withBackend(async (b) => {
        // Byte order differs from locale order ("B" < "a") and from a naive directory walk
        // ("x-1" < "x.1" < "x/1" < "x0" < "xA" < "x_1").
        const keys = [
          "pack/00/aa", "pack/00/ab", "pack/01/b", "pack/0", "pack-x", "pack.y", "packz", "path", "pa", "p",
          "a", "B", "c/d/e/f", "x-1", "x.1", "x/1", "x/1.5", "x0", "xA", "x_1", "nothing",
        ];
        for (const [i, key] of keys.entries()) await b.put(key, testBytes(i, i));
        const sorted = [...keys].sort(byteOrder);
        const prefixes = ["", "p", "pa", "pac", "pack", "pack/", "pack/0", "pack/00", "pack/00/", "pack/00/aa", "x", "x/", "c/d/", "B", "zzz", "pack/00/aaa", "/"];
        for (const prefix of prefixes) {
          const got = await collect(b.list(prefix));
          const expected = sorted.filter((k) => k.startsWith(prefix));
          assert.deepEqual(got.map((i) => i.key), expected, `list(${JSON.stringify(prefix)})`);
          for (const info of got) assert.equal(info.size, keys.indexOf(info.key), info.key);
        }
        const pa = (await collect(b.list("pa"))).map((i) => i.key);
        assert.ok(pa.includes("pack/00/aa") && pa.includes("path") && pa.includes("pa") && !pa.includes("p"));
      }));

    test("delete is idempotent, removes only its blob, and the key can be reused", () =>
      withBackend(async (b) => {
        await b.delete("never-was");
        await b.delete("never/was/nested");
        await b.put("d/1/x", Buffer.from("x"));
        await b.put("d/1/y", Buffer.from("y"));
        await b.put("d/2", Buffer.from("2"));
        await b.delete("d/1/x");
        await b.delete("d/1/x");
        await rejectsWith(b.get("d/1/x"), "STOWAGE_BACKEND_NOT_FOUND");
        assert.equal(await b.head("d/1/x"), undefined);
        assert.deepEqual((await collect(b.list("d/"))).map((i) => i.key), ["d/1/y", "d/2"]);
        await b.delete("d/1"); // not a blob (only holds one): nothing happens
        assert.equal((await b.get("d/1/y")).toString(), "y");
        await b.delete("d/1/y");
        await b.delete("d/2");
        assert.deepEqual(await collect(b.list("")), []);
        await b.put("d/1/x", Buffer.from("again"));
        assert.equal((await b.get("d/1/x")).toString(), "again");
      }));

    test("invalid keys are rejected with STOWAGE_INVALID_ARGUMENT", () =>
      withBackend(async (b) => {
        const bad = ["", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "../x", "a b", "a\0b", "a\\b", "é", "a\nb", "x".repeat(1025)];
        for (const key of bad) {
          const what = `key ${JSON.stringify(key.slice(0, 20))}: `;
          await rejectsWith(b.put(key, Buffer.from("x")), "STOWAGE_INVALID_ARGUMENT", undefined, `put ${what}`);
          await rejectsWith(b.get(key), "STOWAGE_INVALID_ARGUMENT", undefined, `get ${what}`);
          await rejectsWith(b.head(key), "STOWAGE_INVALID_ARGUMENT", undefined, `head ${what}`);
          await rejectsWith(b.delete(key), "STOWAGE_INVALID_ARGUMENT", undefined, `delete ${what}`);
        }
        assert.deepEqual(await collect(b.list("")), []);
      }));

    test("invalid ranges are rejected with STOWAGE_INVALID_ARGUMENT", () =>
      withBackend(async (b) => {
        await b.put("k", testBytes(100, 1));
        const bad: ByteRange[] = [
          { offset: -1, length: 1 },
          { offset: 0, length: -1 },
          { offset: 1.5, length: 1 },
          { offset: 0, length: 0.5 },
          { offset: Number.NaN, length: 1 },
          { offset: 0, length: Number.POSITIVE_INFINITY },
          { offset: 2 ** 53, length: 1 },
          { offset: 0, length: 1, into: new Uint8Array(4) as Buffer },
        ];
        for (const range of bad) await rejectsWith(b.get("k", range), "STOWAGE_INVALID_ARGUMENT");
      }));

    test("concurrent puts to different keys all land", () =>
      withBackend(async (b) => {
        const n = 24;
        await Promise.all(Array.from({ length: n }, (_, i) => b.put(`c/${i % 3}/k${i}`, testBytes(i * 997, i))));
        for (let i = 0; i < n; i++) assert.ok((await b.get(`c/${i % 3}/k${i}`)).equals(testBytes(i * 997, i)), `k${i}`);
        assert.equal((await collect(b.list("c/"))).length, n);
      }));

    test("concurrent puts to one key end with one complete body; readers see whole bodies only", () =>
      withBackend(async (b) => {
        const bodies = Array.from({ length: 6 }, (_, i) => testBytes(128 * 1024 + i * 4099, 100 + i));
        await b.put("same", bodies[0] as Buffer);
        let reading = true;
        const readers = Array.from({ length: 2 }, async () => {
          let reads = 0;
          while (reading || reads === 0) {
            const got = await b.get("same");
            assert.ok(bodies.some((body) => body.equals(got)), `a read saw a mixed or partial body (${got.length} bytes)`);
            reads++;
          }
        });
        await Promise.all(bodies.map((body) => b.put("same", body)));
        reading = false;
        await Promise.all(readers);
        const final = await b.get("same");
        assert.ok(bodies.some((body) => body.equals(final)));
        assert.deepEqual(await collect(b.list("")), [{ key: "same", size: final.length }]);
      }));

    test("buffers are never aliased to stored data", () =>
      withBackend(async (b) => {
        const body = Buffer.from("original");
        const part2 = Buffer.from("-tail");
        await b.put("k", [body, part2]);
        body.fill(0x21); // mutating the caller's buffers after the put changes nothing stored
        part2.fill(0x21);
        const got = await b.get("k");
        assert.equal(got.toString(), "original-tail");
        got.fill(0x3f); // nor does mutating what get returned
        const ranged = await b.get("k", { offset: 1, length: 3 });
        assert.equal(ranged.toString(), "rig");
        ranged.fill(0x3f);
        assert.equal((await b.get("k")).toString(), "original-tail");
      }));

    test("calls after close fail", () =>
      withBackend(async (b) => {
        await b.put("k", Buffer.from("x"));
        await b.close();
        await assert.rejects(b.put("k", Buffer.from("y")));
        await assert.rejects(b.get("k"));
        await assert.rejects(b.head("k"));
        await assert.rejects(b.delete("k"));
        await assert.rejects(collect(b.list("")));
      }));
  });
}
