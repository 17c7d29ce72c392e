/**
 * The POSIX view (src/fs): files, directories, symlinks, attributes, renames and their errno
 * errors, S3-side visibility both ways, write buffering and close-to-open consistency.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { StowageFs, O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } from "../../src/fs/fs.js";
import { isFsError, type Errno } from "../../src/fs/errors.js";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from "../../src/fs/names.js";
import { collectGarbage } from "../../src/store/gc.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { assertClean, bytes, makeStore, readAll, type TestStore } from "../store/helpers.js";

async function withFs(fn: (fs: StowageFs, t: TestStore) => Promise<void>, options: ConstructorParameters<typeof StowageFs>[1] = {}): Promise<void> {
  const t = await makeStore();
  try {
    await t.store.createBucket("bkt");
    await fn(new StowageFs(t.store, options), t);
  } finally {
    await t.close();
  }
}

async function rejectsWith(p: Promise<unknown>, code: Errno): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isFsError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

async function writeFile(fs: StowageFs, path: string, data: Uint8Array): Promise<void> {
  const fh = await fs.create(path);
  await fs.write(fh, 0, data);
  await fs.release(fh);
}

async function readFile(fs: StowageFs, path: string): Promise<Buffer> {
  const fh = await fs.open(path, O_RDONLY);
  try {
    const s = await fs.getattr(path);
    return await fs.read(fh, 0, s.size);
  } finally {
    await fs.release(fh);
  }
}

async function names(fs: StowageFs, path: string): Promise<string[]> {
  return (await fs.readdir(path)).map((e) => e.name).sort();
}

test("files written through the view are objects, and objects are files", async () => {
  await withFs(async (fs, t) => {
    const data = bytes(100_000, 1);
    await fs.mkdir("/bkt/docs");
    await writeFile(fs, "/bkt/docs/a.bin", data);
    assert.ok((await readAll(t.store, "bkt", "docs/a.bin")).equals(data), "getObject reads what the view wrote");
    const head = await t.store.headObject("bkt", "docs/a.bin");
    assert.equal(head.etag, createHash("md5").update(data).digest("hex"), "a sequentially written file has its MD5 as ETag");
    // Attribute changes are new versions with the same content: the ETag stays (S3 sync tools compare it).
    await fs.setattr("/bkt/docs/a.bin", { mode: 0o600, mtimeMs: 1_600_000_000_000 });
    const after = await t.store.headObject("bkt", "docs/a.bin");
    assert.equal(after.userMetadata.mode, String(S_IFREG | 0o600));
    assert.equal(after.etag, head.etag, "chmod/utime keep the ETag");
    const fh = await fs.open("/bkt/docs/a.bin", O_RDWR);
    await fs.write(fh, 5, Buffer.from("changed"));
    await fs.release(fh);
    assert.notEqual((await t.store.headObject("bkt", "docs/a.bin")).etag, head.etag, "a content change changes it");
    await t.store.putObject("bkt", "docs/s3.txt", [Buffer.from("from s3")]);
    await t.store.putObject("bkt", "deep/er/x", [Buffer.from("implied dirs")]);
    assert.deepEqual(await names(fs, "/bkt/docs"), ["a.bin", "s3.txt"]);
    assert.deepEqual(await names(fs, "/bkt"), ["deep", "docs"]);
    assert.deepEqual(await names(fs, "/"), ["bkt"]);
    assert.equal((await readFile(fs, "/bkt/docs/s3.txt")).toString(), "from s3");
    assert.equal((await fs.getattr("/bkt/deep/er")).mode & S_IFMT, S_IFDIR);
    const implied = await fs.getattr("/bkt/deep/er");
    assert.ok(Math.abs(implied.mtimeMs - (await t.store.headObject("bkt", "deep/er/x")).lastModified) < 1000, "an implied directory shows its first object's time, not 1970");
    assert.ok((await fs.getattr("/")).mtimeMs > 1e12, "the root shows when the view started");
    assert.equal((await fs.getattr("/bkt/docs/s3.txt")).mode, S_IFREG | 0o644);
    const listed = await t.store.listObjects("bkt", { prefix: "docs/" });
    assert.deepEqual(listed.objects.map((o) => o.key), ["docs/", "docs/a.bin", "docs/s3.txt"], "mkdir made a marker object");
    await rejectsWith(fs.getattr("/bkt/nope"), "ENOENT");
    await rejectsWith(fs.getattr("/nobucket"), "ENOENT");
    await rejectsWith(fs.readdir("/bkt/docs/a.bin"), "ENOTDIR");
    await rejectsWith(fs.open("/bkt/docs/missing"), "ENOENT");
    await rejectsWith(fs.open("/bkt/docs"), "EISDIR");
    await rejectsWith(fs.create("/bkt/nodir/x"), "ENOENT");
    await rejectsWith(fs.create("/bkt/docs/a.bin/x"), "ENOTDIR");
    await rejectsWith(fs.open("/bkt/docs/a.bin", O_CREAT | O_EXCL | O_WRONLY), "EEXIST");
    await rejectsWith(fs.mkdir("/bkt/docs"), "EEXIST");
    await rejectsWith(fs.mkdir("/BadBucket"), "EINVAL");
    await fs.mkdir("/newbucket");
    assert.deepEqual(await names(fs, "/"), ["bkt", "newbucket"]);
    await fs.rmdir("/newbucket");
    await assertClean(t.store);
  });
});

test("random writes, truncation, sparse files and appends through handles", async () => {
  // A small dirty bound so that flushes happen in the middle of writing.
  await withFs(
    async (fs, t) => {
      let model = Buffer.alloc(0);
      const fh = await fs.create("/bkt/f");
      let seed = 1;
      const rnd = (n: number): number => {
        seed = (seed * 1103515245 + 12345) >>> 0;
        return seed % n;
      };
      for (let i = 0; i < 150; i++) {
        const op = rnd(10);
        if (op < 6) {
          const off = rnd(model.length + 5000);
          const data = bytes(1 + rnd(9000), i);
          await fs.write(fh, off, data);
          const next = Buffer.alloc(Math.max(model.length, off + data.length));
          model.copy(next);
          data.copy(next, off);
          model = next;
        } else if (op < 8) {
          const size = rnd(2) === 0 ? rnd(model.length + 1) : model.length + rnd(20_000);
          await fs.ftruncate(fh, size);
          model = size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
        } else if (op < 9) {
          await fs.fsync(fh);
          assert.ok((await readAll(t.store, "bkt", "f")).equals(model), `after fsync ${i}`);
        } else {
          const off = rnd(model.length + 1);
          const len = rnd(20_000);
          const got = await fs.read(fh, off, len);
          assert.ok(got.equals(model.subarray(off, off + len)), `read ${i} at ${off}+${len}`);
          // readv (what FUSE uses): the chunks' own bytes where nothing is pending, else a copy.
          assert.ok(Buffer.concat(await fs.readv(fh, off, len)).equals(model.subarray(off, off + len)), `readv ${i} at ${off}+${len}`);
        }
        assert.equal((await fs.getattr("/bkt/f")).size, model.length);
      }
      await fs.release(fh);
      assert.ok((await readAll(t.store, "bkt", "f")).equals(model));
      assert.ok((await readFile(fs, "/bkt/f")).equals(model));
      // O_APPEND and O_TRUNC.
      const ah = await fs.open("/bkt/f", O_WRONLY | O_APPEND);
      await fs.write(ah, 0, Buffer.from("tail"));
      await fs.release(ah);
      assert.equal((await readAll(t.store, "bkt", "f")).subarray(-4).toString(), "tail");
      const th = await fs.open("/bkt/f", O_RDWR | O_TRUNC);
      assert.equal((await fs.getattr("/bkt/f")).size, 0);
      await fs.write(th, 3, Buffer.from("x"));
      await fs.release(th);
      assert.deepEqual(await readAll(t.store, "bkt", "f"), Buffer.from("\0\0\0x"));
      await fs.truncate("/bkt/f", 1 << 20);
      assert.equal((await t.store.headObject("bkt", "f")).size, 1 << 20);
      await assertClean(t.store);
      await collectGarbage(t.store, { graceMs: 0 });
      await assertClean(t.store);
    },
    { maxDirtyPerFile: 20_000 },
  );
});

test("a file written sequentially over many flushes has its content MD5 as ETag", async () => {
  await withFs(
    async (fs, t) => {
      const data = bytes(300_000, 11);
      const fh = await fs.create("/bkt/seq.bin");
      for (let off = 0; off < data.length; off += 7_000) {
        const piece = Buffer.from(data.subarray(off, off + 7_000));
        // Handed over (owned): the view keeps this buffer; a copied write may be changed after.
        await fs.write(fh, off, piece, { owned: off % 14_000 === 0 });
        if (off % 14_000 !== 0) piece.fill(0);
      }
      await fs.release(fh);
      assert.ok((await readAll(t.store, "bkt", "seq.bin")).equals(data));
      assert.equal((await t.store.headObject("bkt", "seq.bin")).etag, createHash("md5").update(data).digest("hex"), "ETag is the MD5 of all the bytes");
      await assertClean(t.store);
    },
    { maxDirtyPerFile: 50_000 },
  );
});

test("close-to-open: handles share writes; release publishes; open sees S3 changes", async () => {
  await withFs(async (fs, t) => {
    await writeFile(fs, "/bkt/c", Buffer.from("one"));
    const w = await fs.open("/bkt/c", O_RDWR);
    const r = await fs.open("/bkt/c", O_RDONLY);
    await fs.write(w, 0, Buffer.from("TWO"));
    assert.equal((await fs.read(r, 0, 3)).toString(), "TWO", "same file, same process: seen at once");
    assert.equal((await readAll(t.store, "bkt", "c")).toString(), "one", "not published before close");
    await fs.release(w);
    assert.equal((await readAll(t.store, "bkt", "c")).toString(), "TWO");
    await fs.release(r);
    await t.store.putObject("bkt", "c", [Buffer.from("three")]);
    assert.equal((await readFile(fs, "/bkt/c")).toString(), "three");
    await rejectsWith(fs.write(r, 0, Buffer.from("x")), "EBADF");
  });
});

test("rename: files, directories, replacement and errors", async () => {
  await withFs(async (fs, t) => {
    await fs.mkdir("/bkt/d1");
    await fs.mkdir("/bkt/d1/sub");
    await writeFile(fs, "/bkt/d1/a", Buffer.from("A"));
    await writeFile(fs, "/bkt/d1/sub/b", Buffer.from("B"));
    await writeFile(fs, "/bkt/x", Buffer.from("X"));
    await writeFile(fs, "/bkt/y", Buffer.from("Y"));
    const inoX = (await fs.getattr("/bkt/x")).ino;
    const inoD1 = (await fs.getattr("/bkt/d1")).ino;

    // File over file: the target is replaced, the inode number travels.
    await fs.rename("/bkt/x", "/bkt/y");
    assert.equal((await readFile(fs, "/bkt/y")).toString(), "X");
    assert.equal((await fs.getattr("/bkt/y")).ino, inoX);
    await rejectsWith(fs.getattr("/bkt/x"), "ENOENT");

    // Directory rename, with everything under it.
    await fs.rename("/bkt/d1", "/bkt/d2");
    assert.deepEqual(await names(fs, "/bkt/d2"), ["a", "sub"]);
    assert.equal((await readFile(fs, "/bkt/d2/sub/b")).toString(), "B");
    assert.equal((await fs.getattr("/bkt/d2")).ino, inoD1);
    await rejectsWith(fs.getattr("/bkt/d1"), "ENOENT");
    assert.deepEqual((await t.store.listObjects("bkt")).objects.map((o) => o.key), ["d2/", "d2/a", "d2/sub/", "d2/sub/b", "y"]);

    // Over an existing empty directory; not over a non-empty one.
    await fs.mkdir("/bkt/empty");
    await fs.rename("/bkt/d2/sub", "/bkt/empty");
    assert.deepEqual(await names(fs, "/bkt/empty"), ["b"]);
    await fs.mkdir("/bkt/full");
    await writeFile(fs, "/bkt/full/f", Buffer.from("f"));
    await rejectsWith(fs.rename("/bkt/empty", "/bkt/full"), "ENOTEMPTY");
    await rejectsWith(fs.rmdir("/bkt/full"), "ENOTEMPTY");

    // Errors.
    await rejectsWith(fs.rename("/bkt/missing", "/bkt/z"), "ENOENT");
    await rejectsWith(fs.rename("/bkt/y", "/bkt/nodir/z"), "ENOENT");
    await rejectsWith(fs.rename("/bkt/y", "/bkt/full"), "EISDIR");
    await rejectsWith(fs.rename("/bkt/full", "/bkt/y"), "ENOTDIR");
    await rejectsWith(fs.rename("/bkt/full", "/bkt/full/inside"), "EINVAL");
    await rejectsWith(fs.rename("/bkt/y", "/bkt/d2/a", { noReplace: true }), "EEXIST");
    await rejectsWith(fs.rename("/bkt", "/bkt2"), "EXDEV");
    await rejectsWith(fs.rmdir("/bkt/y"), "ENOTDIR");
    await rejectsWith(fs.unlink("/bkt/full"), "EISDIR");
    await rejectsWith(fs.unlink("/bkt/nothing"), "ENOENT");

    // Across buckets (top-level directories).
    await fs.mkdir("/other");
    await fs.rename("/bkt/full", "/other/moved");
    assert.equal((await readAll(t.store, "other", "moved/f")).toString(), "f");

    // The last entry of a directory leaves the directory in place.
    await fs.unlink("/bkt/empty/b");
    assert.deepEqual(await names(fs, "/bkt/empty"), []);
    await fs.rmdir("/bkt/empty");
    await t.store.putObject("bkt", "implied/only", [Buffer.from("1")]);
    await fs.unlink("/bkt/implied/only");
    assert.equal((await fs.getattr("/bkt/implied")).mode & S_IFMT, S_IFDIR);
    await assertClean(t.store);
  });
});

test("renaming a directory with many entries is one transaction", async () => {
  await withFs(async (fs, t) => {
    const n = 2000;
    await t.store.putObjects(
      "bkt",
      Array.from({ length: n }, (_, i) => ({ key: `big/d${i % 20}/f${i}`, source: () => [Buffer.from(`file ${i}`)] })),
    );
    const started = Date.now();
    await fs.rename("/bkt/big", "/bkt/moved");
    const ms = Date.now() - started;
    console.log(`# rename of a directory with ${n} files and 20 subdirectories: ${ms} ms`);
    assert.equal((await t.store.listObjects("bkt", { prefix: "big/" })).objects.length, 0);
    const all = [];
    let token: string | undefined;
    do {
      const page = await t.store.listObjects("bkt", { prefix: "moved/", ...(token === undefined ? {} : { continuationToken: token }) });
      all.push(...page.objects);
      token = page.nextContinuationToken;
    } while (token !== undefined);
    assert.equal(all.length, n + 1, "every file, and the marker the implied directory got");
    assert.equal((await readFile(fs, "/bkt/moved/d7/f1007")).toString(), "file 1007");
    await assertClean(t.store);
  });
});

test("special files: mknod of FIFOs, devices and sockets are empty objects with their mode", async () => {
  await withFs(async (fs, t) => {
    await fs.mkdir("/bkt/dev");
    await fs.mknod("/bkt/dev/pipe", S_IFIFO | 0o640, 0, { uid: 1000, gid: 100 });
    await fs.mknod("/bkt/dev/null", S_IFCHR | 0o666, (1 << 8) | 3);
    await fs.mknod("/bkt/dev/disk", S_IFBLK | 0o660, (8 << 8) | 1);
    await fs.mknod("/bkt/dev/sock", S_IFSOCK | 0o755);
    const pipe = await fs.getattr("/bkt/dev/pipe");
    assert.equal(pipe.mode, S_IFIFO | 0o640);
    assert.deepEqual([pipe.uid, pipe.gid, pipe.size, pipe.rdev], [1000, 100, 0, 0]);
    assert.equal((await fs.getattr("/bkt/dev/null")).rdev, (1 << 8) | 3);
    assert.equal((await fs.getattr("/bkt/dev/disk")).mode, S_IFBLK | 0o660);
    assert.equal((await fs.getattr("/bkt/dev/sock")).mode & S_IFMT, S_IFSOCK);
    assert.deepEqual(
      (await fs.readdir("/bkt/dev")).map((e) => [e.name, e.type]).sort(),
      [["disk", "block"], ["null", "char"], ["pipe", "fifo"], ["sock", "socket"]],
    );
    // Over S3: empty objects, typed, with the mode (and device number) in their metadata.
    const h = await t.store.headObject("bkt", "dev/null");
    assert.deepEqual([h.size, h.contentType, h.userMetadata.mode, h.userMetadata.rdev], [0, "inode/chardevice", String(S_IFCHR | 0o666), String((1 << 8) | 3)]);
    assert.equal((await t.store.headObject("bkt", "dev/pipe")).contentType, "inode/fifo");
    // What they refuse.
    await rejectsWith(fs.mknod("/bkt/dev/pipe", S_IFIFO | 0o600), "EEXIST");
    await rejectsWith(fs.mknod("/bkt/dev/reg", S_IFREG | 0o600), "EINVAL");
    await rejectsWith(fs.mknod("/bkt/dev/d", S_IFDIR | 0o700), "EINVAL");
    await rejectsWith(fs.mknod("/bkt/nodir/p", S_IFIFO | 0o600), "ENOENT");
    await rejectsWith(fs.open("/bkt/dev/pipe"), "ENXIO");
    await rejectsWith(fs.truncate("/bkt/dev/pipe", 10), "EINVAL");
    await rejectsWith(fs.mkdir("/bkt/dev/pipe/x"), "ENOTDIR");
    await rejectsWith(fs.rename("/bkt/dev", "/bkt/dev/pipe"), "EINVAL");
    // chmod and chown keep the type; rename moves them; unlink removes them.
    await fs.setattr("/bkt/dev/pipe", { mode: 0o600, uid: 7 });
    assert.equal((await fs.getattr("/bkt/dev/pipe")).mode, S_IFIFO | 0o600);
    await fs.rename("/bkt/dev/pipe", "/bkt/pipe2");
    assert.equal((await fs.getattr("/bkt/pipe2")).mode, S_IFIFO | 0o600);
    await rejectsWith(fs.rename("/bkt/dev", "/bkt/pipe2"), "ENOTDIR");
    await fs.rename("/bkt/dev/sock", "/bkt/pipe2");
    assert.equal((await fs.getattr("/bkt/pipe2")).mode & S_IFMT, S_IFSOCK, "a special file replaces another");
    await fs.unlink("/bkt/pipe2");
    await rejectsWith(fs.getattr("/bkt/pipe2"), "ENOENT");
    await assertClean(t.store);
  });
});

test("a file unlinked while open: its handles read, write and fstat it until closed; memory bounded", async () => {
  await withFs(
    async (fs, t) => {
      await writeFile(fs, "/bkt/tmp", Buffer.from("hello world"));
      const fh = await fs.open("/bkt/tmp", O_RDWR);
      await fs.setattr("/bkt/tmp", { mode: 0o600 });
      await fs.unlink("/bkt/tmp");
      await rejectsWith(fs.getattr("/bkt/tmp"), "ENOENT");
      let st = await fs.fgetattr(fh);
      assert.deepEqual([st.size, st.nlink, st.mode], [11, 0, S_IFREG | 0o600], "fstat shows the unlinked file");
      await fs.write(fh, 11, Buffer.from("!!"));
      await fs.fsetattr(fh, { mode: 0o640 });
      await fs.ftruncate(fh, 5);
      st = await fs.fgetattr(fh);
      assert.deepEqual([st.size, st.mode], [5, S_IFREG | 0o640]);
      assert.equal((await fs.read(fh, 0, 100)).toString(), "hello");
      // Its bytes live in memory only: past the per-file bound, writes fail instead of growing.
      await fs.write(fh, 0, Buffer.alloc(40_000));
      await rejectsWith(fs.write(fh, 40_000, Buffer.alloc(20_000)), "ENOSPC");
      await fs.release(fh);
      await rejectsWith(fs.getattr("/bkt/tmp"), "ENOENT");
      assert.deepEqual((await t.store.listObjects("bkt")).objects.map((o) => o.key), [], "nothing of it was stored");
      // A file replaced by a rename is the same for its open handles.
      await writeFile(fs, "/bkt/a", Buffer.from("old"));
      await writeFile(fs, "/bkt/b", Buffer.from("new"));
      const old = await fs.open("/bkt/a", O_RDONLY);
      await fs.rename("/bkt/b", "/bkt/a");
      assert.equal((await fs.fgetattr(old)).nlink, 0);
      assert.equal((await fs.read(old, 0, 10)).toString(), "old");
      await fs.release(old);
      assert.equal((await readFile(fs, "/bkt/a")).toString(), "new");
      await assertClean(t.store);
    },
    { maxDirtyPerFile: 50_000 },
  );
});

test("readdir gives each entry the attributes getattr gives it (FUSE READDIRPLUS answers from them)", async () => {
  await withFs(async (fs, t) => {
    await fs.mkdir("/bkt/d");
    await fs.mkdir("/bkt/d/explicit", 0o700);
    await t.store.putObject("bkt", "d/implied/x", [Buffer.from("x")]);
    await writeFile(fs, "/bkt/d/file", Buffer.from("12345"));
    await fs.setattr("/bkt/d/file", { mode: 0o600, mtimeMs: 1_600_000_000_000 });
    await fs.symlink("file", "/bkt/d/link");
    await fs.mknod("/bkt/d/pipe", S_IFIFO | 0o644);
    const open = await fs.open("/bkt/d/file", O_RDWR);
    await fs.write(open, 5, Buffer.from("678")); // not flushed: the listing must show the open size
    const listed = await fs.readdir("/bkt/d");
    assert.deepEqual(listed.map((e) => e.name).sort(), ["explicit", "file", "implied", "link", "pipe"]);
    for (const e of listed) assert.deepEqual(e.stat, await fs.getattr(`/bkt/d/${e.name}`), `${e.name}: readdir's stat is getattr's`);
    assert.equal(listed.find((e) => e.name === "file")!.stat.size, 8);
    assert.ok(listed.find((e) => e.name === "implied")!.stat.mtimeMs > 0, "an implied directory shows its first key's time");
    await fs.release(open);
    for (const e of await fs.readdir("/")) assert.deepEqual(e.stat, await fs.getattr(`/${e.name}`), `bucket ${e.name}`);
  });
});

test("modification times keep microseconds and never round up across a millisecond", async () => {
  await withFs(async (fs, t) => {
    await writeFile(fs, "/bkt/f", Buffer.from("x"));
    for (const ms of [1_795_781_949_499.6, 1_795_781_949_499 + 0.9995, 1_600_000_000_123, 1_600_000_000_000]) {
      await fs.setattr("/bkt/f", { mtimeMs: ms });
      const got = (await fs.getattr("/bkt/f")).mtimeMs;
      assert.equal(Math.floor(got), Math.floor(ms), `${ms}: the millisecond is kept (rsync and make compare whole units)`);
      assert.ok(Math.abs(got - ms) < 0.001, `${ms}: microseconds kept (got ${got})`);
    }
    assert.equal((await t.store.headObject("bkt", "f")).userMetadata.mtime, "1600000000.000", "whole milliseconds keep rclone's three decimals");
  });
});

test("symlinks, attributes, inode numbers, statfs", async () => {
  await withFs(async (fs, t) => {
    await writeFile(fs, "/bkt/target", Buffer.from("t"));
    await fs.symlink("target", "/bkt/link");
    assert.equal(await fs.readlink("/bkt/link"), "target");
    assert.equal((await fs.getattr("/bkt/link")).mode & S_IFMT, S_IFLNK);
    assert.deepEqual((await fs.readdir("/bkt")).map((e) => [e.name, e.type]).sort(), [["link", "symlink"], ["target", "file"]]);
    await rejectsWith(fs.readlink("/bkt/target"), "EINVAL");
    await rejectsWith(fs.symlink("x", "/bkt/target"), "EEXIST");

    const before = await fs.getattr("/bkt/target");
    await fs.setattr("/bkt/target", { mode: 0o600, uid: 1234, gid: 99, mtimeMs: 1_000_000_000_000 });
    const after = await fs.getattr("/bkt/target");
    assert.equal(after.mode, S_IFREG | 0o600);
    assert.equal(after.uid, 1234);
    assert.equal(after.gid, 99);
    assert.equal(after.mtimeMs, 1_000_000_000_000);
    assert.equal(after.ino, before.ino, "inode number stable across attribute changes");
    const fh = await fs.open("/bkt/target", O_RDWR);
    await fs.write(fh, 1, Buffer.from("more"));
    await fs.release(fh);
    assert.equal((await fs.getattr("/bkt/target")).ino, before.ino, "and across writes");
    assert.equal((await t.store.headObject("bkt", "target")).userMetadata.mode, String(S_IFREG | 0o600), "attributes are S3 user metadata");

    await fs.mkdir("/bkt/dir", 0o700);
    assert.equal((await fs.getattr("/bkt/dir")).mode, S_IFDIR | 0o700);
    await fs.setattr("/bkt/dir", { mode: 0o750 });
    assert.equal((await fs.getattr("/bkt/dir")).mode, S_IFDIR | 0o750);

    const a = await fs.getattr("/bkt/dir");
    const b = await fs.getattr("/bkt/target");
    assert.notEqual(a.ino, b.ino);
    const s = await fs.statfs();
    assert.ok(s.blocks > s.bfree && s.bfree > 0, "statfs shows the bucket's usage");
    await assertClean(t.store);
  });
});

test("names valid on one side only", async () => {
  await withFs(async (fs, t) => {
    // `a` and `a/b` both objects: the directory shadows the file.
    await t.store.putObject("bkt", "a", [Buffer.from("file a")]);
    await t.store.putObject("bkt", "a/b", [Buffer.from("file a/b")]);
    assert.equal((await fs.getattr("/bkt/a")).mode & S_IFMT, S_IFDIR);
    assert.deepEqual(await names(fs, "/bkt"), ["a"]);
    // Keys with empty, `.` or `..` segments are not shown.
    for (const k of ["c//d", "/lead", "e/./f", "g/../h", "trail/"]) await t.store.putObject("bkt", k, [Buffer.from(k)]);
    assert.deepEqual(await names(fs, "/bkt"), ["a", "c", "e", "g", "trail"]);
    assert.deepEqual(await names(fs, "/bkt/c"), []);
    assert.deepEqual(await names(fs, "/bkt/e"), []);
    assert.deepEqual(await names(fs, "/bkt/trail"), []);
    await rejectsWith(fs.getattr("/bkt/e/./f"), "EINVAL");
    await rejectsWith(fs.create(`/bkt/${"n".repeat(256)}`), "ENAMETOOLONG");
    await rejectsWith(fs.create(`/bkt/${"d/".repeat(600)}x`), "ENAMETOOLONG");
  });
});

test("write buffering stays bounded across files", async () => {
  await withFs(
    async (fs, t) => {
      const handles = [];
      for (let i = 0; i < 4; i++) handles.push(await fs.create(`/bkt/f${i}`));
      for (let round = 0; round < 10; round++) {
        for (let i = 0; i < 4; i++) await fs.write(handles[i]!, round * 10_000, bytes(10_000, round * 4 + i));
      }
      // The bound (60 KB over all files) forced flushes before release.
      let stored = 0;
      for (let i = 0; i < 4; i++) stored += (await t.store.headObject("bkt", `f${i}`)).size;
      assert.ok(stored > 0, "something was flushed early");
      for (const h of handles) await fs.release(h);
      for (let i = 0; i < 4; i++) assert.equal((await t.store.headObject("bkt", `f${i}`)).size, 100_000);
    },
    { maxDirtyBytes: 60_000, maxDirtyPerFile: 1 << 30 },
  );
});

test("lazyMetadata (the mount's mode): namespace changes return before their journal entry reaches the bucket; close, fsync and syncMetadata wait for it", async () => {
  const mem = new MemoryBackend();
  let open = true;
  let release: () => void = () => undefined;
  let gate = Promise.resolve();
  const puts: string[] = [];
  const backend: BlobBackend = {
    put: async (key, body) => {
      await gate;
      puts.push(key);
      return mem.put(key, body);
    },
    get: (key, range) => mem.get(key, range),
    head: (key) => mem.head(key),
    list: (prefix) => mem.list(prefix),
    delete: (key) => mem.delete(key),
    close: () => mem.close(),
    location: "memory (gated)",
  };
  const shut = (): void => {
    open = false;
    gate = new Promise((r) => (release = r));
  };
  const reopen = (): void => {
    open = true;
    release();
  };
  const t = await makeStore({ backend, journal: true });
  try {
    await t.store.createBucket("bkt");
    const settled = async (p: Promise<unknown>): Promise<boolean> => {
      let done = false;
      void p.then(
        () => (done = true),
        () => (done = true),
      );
      await new Promise((r) => setTimeout(r, 150));
      return done;
    };
    // The S3 contract (default): a mkdir is acknowledged only once its entry is in the bucket.
    const strict = new StowageFs(t.store);
    shut();
    const m = strict.mkdir("/bkt/strict");
    assert.equal(await settled(m), false, "a strict mkdir waits for the bucket");
    reopen();
    await m;

    const fs = new StowageFs(t.store, { lazyMetadata: true });
    shut();
    await fs.mkdir("/bkt/d"); // returns with the bucket unreachable
    const fh = await fs.create("/bkt/d/f");
    await fs.rename("/bkt/d", "/bkt/e");
    await fs.setattr("/bkt/e", { mode: 0o700 });
    assert.equal(open, false);
    const closing = fs.release(fh);
    assert.equal(await settled(closing), false, "close (no data of its own) waits until the changes before it are durable");
    const syncing = fs.syncMetadata();
    assert.equal(await settled(syncing), false);
    const before = puts.length;
    reopen();
    await closing;
    await syncing;
    assert.ok(puts.length > before, "the journal entries went to the bucket");
    assert.equal((await t.store.headObject("bkt", "e/f")).size, 0);
    assert.equal((await fs.getattr("/bkt/e")).mode & 0o777, 0o700);
    // A read-only close does not wait.
    shut();
    await fs.mkdir("/bkt/later");
    const ro = await fs.open("/bkt/e/f", O_RDONLY);
    assert.equal(await settled(fs.release(ro)), true, "a read-only close returns at once");
    reopen();
    await fs.syncMetadata();
  } finally {
    reopen();
    await t.close();
  }
});
