/**
 * Blob backends: the conformance suite on every implementation and wrapper, then what is
 * specific to each: the local backend's files, temporaries and error mapping, the counters, and
 * every fault mode of the fault-injecting wrapper.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { StowageError, isStowageError } from "../../src/errors.js";
import {
  CountingBackend,
  FaultyBackend,
  LIST_PAGE_SIZE,
  LocalBackend,
  MemoryBackend,
  zeroCounters,
  type FaultRule,
} from "../../src/backend/index.js";
import { LOCAL_TEMP_DIR, mapFsError } from "../../src/backend/local.js";
import { backendConformance, collect, rejectsWith, testBytes, type BackendFixture } from "./conformance.js";

function tempRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "stowage-backend-"));
}

async function memoryFixture(): Promise<BackendFixture> {
  const backend = new MemoryBackend();
  return { backend, cleanup: () => backend.close() };
}

async function localFixture(): Promise<BackendFixture & { root: string; local: LocalBackend }> {
  const root = tempRoot();
  const local = await LocalBackend.open(path.join(root, "bucket"));
  return {
    root,
    local,
    backend: local,
    cleanup: async () => {
      await local.close();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

backendConformance("MemoryBackend", memoryFixture);
backendConformance("LocalBackend", localFixture);
backendConformance("CountingBackend(MemoryBackend)", async () => {
  const inner = await memoryFixture();
  return { backend: new CountingBackend(inner.backend), cleanup: inner.cleanup };
});
backendConformance("FaultyBackend(LocalBackend) without faults", async () => {
  const inner = await localFixture();
  return { backend: new FaultyBackend(inner.backend, { seed: 7 }), cleanup: inner.cleanup };
});

/** Runs `fn` on a fresh LocalBackend in a temporary directory, removed afterwards. */
async function withLocal(fn: (b: LocalBackend, bucket: string) => Promise<void>): Promise<void> {
  const f = await localFixture();
  try {
    await fn(f.local, f.local.root);
  } finally {
    await f.cleanup();
  }
}

function tempEntries(bucket: string): string[] {
  return fs.readdirSync(path.join(bucket, LOCAL_TEMP_DIR));
}

describe("LocalBackend", () => {
  test("a ranged get reads into the caller's buffer when it is long enough (the result is a view of it)", () =>
    withLocal(async (b) => {
      const data = Buffer.from("0123456789abcdefghij");
      await b.put("p/x", data);
      const into = Buffer.alloc(32, 0xee);
      const r = await b.get("p/x", { offset: 5, length: 10, into });
      assert.equal(r.toString(), "56789abcde");
      assert.equal(r.buffer, into.buffer);
      assert.equal(r.byteOffset, into.byteOffset);
      assert.equal(into.subarray(0, 10).toString(), "56789abcde");
      assert.deepEqual(into.subarray(10), Buffer.alloc(22, 0xee));
      // Clipped at the end of the blob: a shorter view.
      const tail = await b.get("p/x", { offset: 15, length: 10, into });
      assert.equal(tail.toString(), "fghij");
      assert.equal(tail.buffer, into.buffer);
    }));

  test("key a/b/c is the file <root>/a/b/c; location is the root's file URL; no temporaries left", () =>
    withLocal(async (b, bucket) => {
      assert.equal(b.location, pathToFileURL(bucket).href);
      assert.ok(b.location.startsWith("file:///"));
      await b.put("a/b/c", Buffer.from("abc"));
      assert.equal(fs.readFileSync(path.join(bucket, "a", "b", "c"), "utf8"), "abc");
      assert.deepEqual(tempEntries(bucket), []);
    }));

  // A timeout: a put that stops advancing through its parts would otherwise write forever.
  test("a put's parts survive short writev calls (each writes at most 777 bytes, cutting parts anywhere)", { timeout: 10_000 }, () =>
    withLocal(async (b) => {
      const probe = await fs.promises.open(path.join(os.tmpdir(), `stowage-writev-probe-${process.pid}`), "w");
      const proto = Object.getPrototypeOf(probe) as { writev: (buffers: Uint8Array[], position?: number) => Promise<{ bytesWritten: number; buffers: Uint8Array[] }> };
      await probe.close();
      fs.rmSync(path.join(os.tmpdir(), `stowage-writev-probe-${process.pid}`), { force: true });
      const original = proto.writev;
      let calls = 0;
      proto.writev = function (this: unknown, buffers: Uint8Array[], position?: number) {
        calls++;
        const cut: Uint8Array[] = [];
        let room = 777;
        for (const buf of buffers) {
          if (room === 0) break;
          const piece = buf.subarray(0, Math.min(buf.length, room));
          cut.push(piece);
          room -= piece.length;
        }
        return original.call(this, cut, position);
      };
      try {
        const parts = [testBytes(1000, 1), new Uint8Array(0), testBytes(1, 2), testBytes(5000, 3), testBytes(776, 4), testBytes(778, 5)];
        await b.put("short/writes", parts);
        assert.ok((await b.get("short/writes")).equals(Buffer.concat(parts)), "blob differs after short writes");
        assert.ok(calls >= Math.ceil(7555 / 777), `only ${calls} writev calls`);
      } finally {
        proto.writev = original;
      }
    }));

  test("ranged reads through cached open files match a model under random puts, deletes and evictions; close releases them", () =>
    withLocal(async (b) => {
      const openFds = (): number => fs.readdirSync("/proc/self/fd").length;
      const fdsBefore = openFds();
      const model = new Map<string, Buffer>();
      let seed = 12345;
      const rand = (n: number): number => {
        seed = (seed * 1103515245 + 12345) >>> 0;
        return seed % n;
      };
      // More keys than the backend keeps open, so reads evict each other's files.
      const keys = Array.from({ length: 48 }, (_, i) => `packs/${String(i).padStart(2, "0")}`);
      const check = async (key: string): Promise<void> => {
        const offset = rand(3000);
        const length = 1 + rand(2000);
        const want = model.get(key);
        if (want === undefined) {
          await rejectsWith(b.get(key, { offset, length }), "STOWAGE_BACKEND_NOT_FOUND");
          return;
        }
        const got = await b.get(key, { offset, length });
        assert.deepEqual(got, want.subarray(Math.min(offset, want.length), Math.min(want.length, offset + length)), `${key} @${offset}+${length}`);
      };
      for (let step = 0; step < 600; step++) {
        const key = keys[rand(keys.length)]!;
        const op = rand(10);
        if (op < 2) {
          const data = testBytes(1 + rand(4000), step);
          await b.put(key, data);
          model.set(key, Buffer.from(data));
        } else if (op < 3) {
          await b.delete(key);
          model.delete(key);
        } else {
          // A burst of concurrent reads over several keys: shared cached files, evictions mid-read.
          await Promise.all(Array.from({ length: 1 + rand(8) }, () => check(keys[rand(keys.length)]!)));
        }
      }
      for (const key of keys) await check(key);
      await b.close();
      // Closes run in the background once the last read of a file is done.
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(openFds() <= fdsBefore, `open files: ${openFds()} after close, ${fdsBefore} before`);
    }));

  test("blobs survive close and reopen", () =>
    withLocal(async (b, bucket) => {
      await b.put("p/1", Buffer.from("one"));
      await b.close();
      const again = await LocalBackend.open(bucket);
      assert.equal((await again.get("p/1")).toString(), "one");
      await again.close();
    }));

  test("a put whose parent path is a regular file fails cleanly: IO error, no temporary, no partial blob", () =>
    withLocal(async (b, bucket) => {
      await b.put("f", Buffer.from("file"));
      await assert.rejects(b.put("f/g", testBytes(100_000, 1)), (err: unknown) => {
        assert.ok(isStowageError(err, "STOWAGE_BACKEND_IO"), String(err));
        assert.match(err.message, /ENOTDIR/);
        assert.ok(err.cause !== undefined);
        return true;
      });
      assert.deepEqual(tempEntries(bucket), []);
      assert.equal((await b.get("f")).toString(), "file");
      assert.deepEqual(await collect(b.list("")), [{ key: "f", size: 4 }]);
    }));

  test("a put onto a key that is a directory of other blobs fails cleanly", () =>
    withLocal(async (b, bucket) => {
      await b.put("d/x", Buffer.from("x"));
      await rejectsWith(b.put("d", testBytes(1000, 2)), "STOWAGE_BACKEND_IO");
      assert.deepEqual(tempEntries(bucket), []);
      assert.deepEqual(await collect(b.list("")), [{ key: "d/x", size: 1 }]);
    }));

  test("open removes temporaries of dead writers and unknown names, keeps those of live processes", async () => {
    const root = tempRoot();
    try {
      const bucket = path.join(root, "bucket");
      const tmp = path.join(bucket, LOCAL_TEMP_DIR);
      fs.mkdirSync(tmp, { recursive: true });
      // Linux pids never exceed 2^22, so 999999999 is no live process.
      const stale = ["999999999-1-deadbeef", "junk", "0-1-zero"];
      const live = [`${process.pid}-1-mine`, `${process.ppid}-3-parent`];
      for (const name of [...stale, ...live]) fs.writeFileSync(path.join(tmp, name), "partial");
      fs.mkdirSync(path.join(tmp, "999999998-stale-dir"));
      const b = await LocalBackend.open(bucket);
      assert.deepEqual(fs.readdirSync(tmp).sort(), [...live].sort());
      assert.deepEqual(await collect(b.list("")), []);
      await b.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test("delete removes directories it left empty, up to but not including the root", () =>
    withLocal(async (b, bucket) => {
      await b.put("a/b/c/d", Buffer.from("1"));
      await b.put("a/x", Buffer.from("2"));
      await b.delete("a/b/c/d");
      assert.ok(!fs.existsSync(path.join(bucket, "a", "b")));
      assert.ok(fs.existsSync(path.join(bucket, "a", "x")));
      await b.delete("a/x");
      assert.deepEqual(fs.readdirSync(bucket), [LOCAL_TEMP_DIR]);
    }));

  test("puts racing deletes that prune their parent directories still land", () =>
    withLocal(async (b) => {
      for (let i = 0; i < 25; i++) {
        await b.put("race/q/old", Buffer.from("old"));
        await Promise.all([b.delete("race/q/old"), b.put("race/q/new", Buffer.from(`new${i}`))]);
        assert.equal((await b.get("race/q/new")).toString(), `new${i}`);
        await b.delete("race/q/new");
      }
      assert.deepEqual(await collect(b.list("")), []);
    }));

  test("list skips entries that cannot be blobs: temporaries, bad names, symlinks", () =>
    withLocal(async (b, bucket) => {
      await b.put("ok/1", Buffer.from("1"));
      fs.writeFileSync(path.join(bucket, "has space"), "x");
      fs.writeFileSync(path.join(bucket, "ok", "é"), "x");
      fs.writeFileSync(path.join(bucket, LOCAL_TEMP_DIR, `${process.pid}-9-inflight`), "x");
      fs.symlinkSync(path.join(bucket, "ok", "1"), path.join(bucket, "link"));
      assert.deepEqual(await collect(b.list("")), [{ key: "ok/1", size: 1 }]);
    }));

  test("mapFsError: ENOSPC and EDQUOT are STOWAGE_NO_SPACE naming the path; others STOWAGE_BACKEND_IO with cause", () => {
    const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: oops`), { code });
    for (const code of ["ENOSPC", "EDQUOT"]) {
      const cause = errno(code);
      const err = mapFsError("put", "/srv/bucket/pack/01", cause);
      assert.equal(err.code, "STOWAGE_NO_SPACE");
      assert.match(err.message, /\/srv\/bucket\/pack\/01/);
      assert.match(err.message, new RegExp(code));
      assert.equal(err.cause, cause);
      assert.equal(err.file, "/srv/bucket/pack/01");
    }
    const io = mapFsError("get", "/srv/x", errno("EIO"));
    assert.equal(io.code, "STOWAGE_BACKEND_IO");
    assert.match(io.message, /get \/srv\/x failed: EIO/);
    assert.ok(io.cause instanceof Error);
    assert.equal(mapFsError("get", "/srv/x", new Error("no errno")).code, "STOWAGE_BACKEND_IO");
    const own = new StowageError("STOWAGE_BACKEND_NOT_FOUND", "gone");
    assert.equal(mapFsError("get", "/srv/x", own), own);
  });
});

describe("CountingBackend", () => {
  test("counts every request when made, and bytes actually moved", async () => {
    const b = new CountingBackend(new MemoryBackend());
    assert.equal(b.location, "memory:");
    assert.deepEqual(b.counters(), zeroCounters());
    await b.put("a", Buffer.from("abc"));
    await b.put("b", [Buffer.from("de"), Buffer.from("fgh")]);
    await b.get("b");
    await b.get("b", { offset: 1, length: 2 });
    await b.get("b", { offset: 10, length: 2 });
    await rejectsWith(b.get("missing"), "STOWAGE_BACKEND_NOT_FOUND");
    await rejectsWith(b.put("", Buffer.from("zzz")), "STOWAGE_INVALID_ARGUMENT");
    await b.head("a");
    await b.head("missing");
    assert.equal((await collect(b.list(""))).length, 2);
    await b.delete("a");
    await b.delete("a");
    assert.deepEqual(b.counters(), { puts: 3, gets: 4, heads: 2, lists: 1, deletes: 2, bytesWritten: 8, bytesRead: 7 });
    const snapshot = b.counters();
    snapshot.puts = 99; // a copy: changing it changes nothing
    assert.equal(b.counters().puts, 3);
    b.reset();
    assert.deepEqual(b.counters(), zeroCounters());
  });

  test("a list is billed per page of LIST_PAGE_SIZE blobs actually listed", async () => {
    const b = new CountingBackend(new MemoryBackend());
    const total = 2 * LIST_PAGE_SIZE + 1;
    for (let i = 0; i < total; i++) await b.inner.put(`k/${String(i).padStart(5, "0")}`, new Uint8Array(0));
    const pages = async (prefix: string, stopAfter = Infinity): Promise<number> => {
      b.reset();
      let n = 0;
      for await (const _ of b.list(prefix)) if (++n >= stopAfter) break;
      return b.counters().lists;
    };
    assert.equal(await pages("k/"), 3);
    assert.equal(await pages("k/", 10), 1);
    assert.equal(await pages("k/", LIST_PAGE_SIZE), 1);
    assert.equal(await pages("k/", LIST_PAGE_SIZE + 1), 2);
    assert.equal(await pages("none"), 1);
  });
});

describe("FaultyBackend", () => {
  const make = (seed = 1): { inner: MemoryBackend; b: FaultyBackend } => {
    const inner = new MemoryBackend();
    return { inner, b: new FaultyBackend(inner, { seed }) };
  };

  test("times: the next N matching calls fail with an injected STOWAGE_BACKEND_IO, storing nothing", async () => {
    const { inner, b } = make();
    const f = b.inject({ op: "put", times: 2 });
    await rejectsWith(b.put("k", Buffer.from("1")), "STOWAGE_BACKEND_IO", /injected/);
    await rejectsWith(b.put("k", Buffer.from("2")), "STOWAGE_BACKEND_IO", /injected/);
    assert.equal(await inner.head("k"), undefined);
    await b.put("k", Buffer.from("3"));
    assert.equal((await b.get("k")).toString(), "3");
    assert.equal(f.fired, 2);
    assert.equal(f.seen, 3);
  });

  test("after: the first matching calls pass, then the rule fires", async () => {
    const { b } = make();
    await b.put("k", Buffer.from("v"));
    b.inject({ op: "get", after: 1, times: 1 });
    await b.get("k");
    await rejectsWith(b.get("k"), "STOWAGE_BACKEND_IO", /injected/);
    await b.get("k");
  });

  test("no-space: STOWAGE_NO_SPACE, nothing stored", async () => {
    const { inner, b } = make();
    b.inject({ op: "put", kind: "no-space", times: 1 });
    await rejectsWith(b.put("k", Buffer.from("v")), "STOWAGE_NO_SPACE", /injected/);
    assert.equal(await inner.head("k"), undefined);
    await b.put("k", Buffer.from("v"));
  });

  test("key: only calls whose key (list: prefix) matches a RegExp or predicate fail", async () => {
    const { b } = make();
    b.inject({ op: ["put", "get"], key: /^pack\// });
    b.inject({ op: ["delete", "list"], key: (k) => k.endsWith("x") });
    await b.put("meta/1", Buffer.from("m"));
    await rejectsWith(b.put("pack/1", Buffer.from("p")), "STOWAGE_BACKEND_IO", /injected/);
    await b.get("meta/1");
    await rejectsWith(b.delete("meta/x"), "STOWAGE_BACKEND_IO", /injected/);
    await b.delete("meta/y");
    await rejectsWith(collect(b.list("pref-x")), "STOWAGE_BACKEND_IO", /injected/);
    assert.deepEqual((await collect(b.list("meta/"))).map((i) => i.key), ["meta/1"]);
  });

  test("a rule without op faults every operation; close is never faulted; remove and clear disarm", async () => {
    const { b } = make();
    await b.put("k", Buffer.from("v"));
    const all = b.inject({});
    await rejectsWith(b.put("k", Buffer.from("w")), "STOWAGE_BACKEND_IO");
    await rejectsWith(b.get("k"), "STOWAGE_BACKEND_IO");
    await rejectsWith(b.head("k"), "STOWAGE_BACKEND_IO");
    await rejectsWith(collect(b.list("")), "STOWAGE_BACKEND_IO");
    await rejectsWith(b.delete("k"), "STOWAGE_BACKEND_IO");
    // Invalid arguments are reported as such, before any rule is consulted.
    await rejectsWith(b.put("", Buffer.from("w")), "STOWAGE_INVALID_ARGUMENT");
    await rejectsWith(b.get("k", { offset: -1, length: 1 }), "STOWAGE_INVALID_ARGUMENT");
    assert.equal(all.fired, 5);
    all.remove();
    assert.equal((await b.get("k")).toString(), "v");
    b.inject({ op: "get" });
    b.inject({ op: "head" });
    b.clear();
    await b.get("k");
    await b.head("k");
    await b.close();
    await assert.rejects(b.get("k")); // closed inner backend
  });

  test("probability: failures follow the seeded PRNG, reproducibly", async () => {
    const pattern = async (seed: number): Promise<string> => {
      const { b } = make(seed);
      await b.put("k", Buffer.from("v"));
      b.inject({ op: "get", probability: 0.3 });
      let s = "";
      for (let i = 0; i < 200; i++) s += await b.get("k").then(() => ".", () => "x");
      return s;
    };
    const a = await pattern(42);
    assert.equal(await pattern(42), a);
    assert.notEqual(await pattern(43), a);
    const failures = [...a].filter((c) => c === "x").length;
    assert.ok(failures > 30 && failures < 90, `${failures} of 200 failed at p = 0.3`);
  });

  test("lost-ack: the put (or delete) happens in the inner backend, yet reports failure", async () => {
    const { inner, b } = make();
    b.inject({ op: "put", kind: "lost-ack", times: 1 });
    await rejectsWith(b.put("k", Buffer.from("landed")), "STOWAGE_BACKEND_IO", /injected.*acknowledgement was lost/);
    assert.equal((await inner.get("k")).toString(), "landed");
    assert.equal((await b.get("k")).toString(), "landed");
    b.inject({ op: "delete", kind: "lost-ack", times: 1 });
    await rejectsWith(b.delete("k"), "STOWAGE_BACKEND_IO", /injected/);
    assert.equal(await inner.head("k"), undefined);
  });

  test("corrupt: get returns the bytes with exactly one bit flipped; the stored blob is untouched", async () => {
    const flipped = async (seed: number): Promise<number[]> => {
      const { inner, b } = make(seed);
      const data = testBytes(4096, 9);
      await b.put("pack/1", data);
      await b.put("empty", new Uint8Array(0));
      b.inject({ op: "get", kind: "corrupt" });
      const positions: number[] = [];
      for (const range of [undefined, { offset: 1000, length: 100 }]) {
        const got = await b.get("pack/1", range);
        const want = range === undefined ? data : data.subarray(range.offset, range.offset + range.length);
        assert.equal(got.length, want.length);
        let bits = 0;
        for (let i = 0; i < got.length; i++) {
          const diff = (got[i] as number) ^ (want[i] as number);
          if (diff !== 0) positions.push(i * 8 + Math.log2(diff));
          for (let d = diff; d !== 0; d &= d - 1) bits++;
        }
        assert.equal(bits, 1);
      }
      assert.ok((await inner.get("pack/1")).equals(data));
      assert.equal((await b.get("empty")).length, 0);
      return positions;
    };
    const a = await flipped(5);
    assert.deepEqual(await flipped(5), a);
  });

  test("latencyMs delays every call", async () => {
    const inner = new MemoryBackend();
    const b = new FaultyBackend(inner, { latencyMs: 40 });
    await inner.put("k", Buffer.from("v"));
    let t = performance.now();
    await b.get("k");
    assert.ok(performance.now() - t >= 35, "get was not delayed");
    t = performance.now();
    await collect(b.list(""));
    assert.ok(performance.now() - t >= 35, "list was not delayed");
    b.latencyMs = 0;
    t = performance.now();
    await b.head("k");
    assert.ok(performance.now() - t < 30);
  });

  test("invalid rules are rejected with STOWAGE_INVALID_ARGUMENT", () => {
    const { b } = make();
    const bad: FaultRule[] = [
      { kind: "corrupt" },
      { op: "put", kind: "corrupt" },
      { kind: "lost-ack" },
      { op: ["put", "get"], kind: "lost-ack" },
      { op: "put", probability: 1.5 },
      { op: "put", probability: Number.NaN },
      { op: "put", times: -1 },
      { op: "put", after: 0.5 },
      { op: [] },
      { op: "bogus" as unknown as "put" },
      { op: "put", kind: "weird" as unknown as "io" },
    ];
    for (const rule of bad) {
      assert.throws(() => b.inject(rule), (err: unknown) => isStowageError(err, "STOWAGE_INVALID_ARGUMENT"), JSON.stringify(rule));
    }
  });

  test("wrapping a LocalBackend: an injected put failure leaves nothing behind", () =>
    withLocal(async (local, bucket) => {
      const b = new FaultyBackend(local);
      b.inject({ op: "put", kind: "no-space" });
      await rejectsWith(b.put("a/b", Buffer.from("x")), "STOWAGE_NO_SPACE");
      assert.deepEqual(fs.readdirSync(bucket), [LOCAL_TEMP_DIR]);
      assert.deepEqual(tempEntries(bucket), []);
    }));
});
