/**
 * The FUSE mount (src/fs/fuse.ts) with real tools: `stowage serve --mount` in a child process, then
 * cp -r, rsync -a (twice), tar, dd, git, sqlite3 and mv on the mount, every result also read back
 * through the S3 API of the same process; S3 writes seen through the mount; SIGKILL of the gateway
 * in the middle of a writer (every file whose close returned is intact after a restart); clean
 * unmount on SIGTERM; errors for bad mount points.
 *
 * Needs Linux, root and /dev/fuse (CI has them; elsewhere the tests skip with a message) and the
 * tools from scripts/install-fs-tools.sh.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, fchmodSync, fstatSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

const execFileP = promisify(execFile);
const BIN = "dist/src/cli/main.js";
const ACCESS = "mountaccess";
const SECRET = "mountsecret-0123456789";

function unavailable(): string | undefined {
  if (process.platform !== "linux") return "FUSE mounts need Linux";
  if (process.getuid?.() !== 0) return "mounting needs root";
  if (!existsSync("/dev/fuse")) return "/dev/fuse is missing";
  return undefined;
}

function missingTools(tools: string[]): string[] {
  return tools.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
}

interface Gateway {
  child: ChildProcess;
  s3: S3Client;
  stderr(): string;
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

function env(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const k of Object.keys(e)) if (k.startsWith("STOWAGE_")) delete e[k];
  e["STOWAGE_ROOT_ACCESS_KEY"] = ACCESS;
  e["STOWAGE_ROOT_SECRET_KEY"] = SECRET;
  return e;
}

/** Starts `stowage serve --mount`; resolves once the mount is ready. */
async function startGateway(data: string, mnt: string, extra: string[] = []): Promise<Gateway> {
  const child = spawn(process.execPath, [BIN, "serve", "--data", data, "--port", "0", "--log-level", "warn", "--mount", mnt, ...extra], {
    env: env(),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const endpoint = await new Promise<string>((resolve, reject) => {
    child.stderr!.on("data", (b: Buffer) => {
      err += b.toString();
      const m = /S3 endpoint (http:\/\/\S+)/.exec(err);
      if (m !== null && /stowage: mounted /.test(err)) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
  const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: ACCESS, secretAccessKey: SECRET }, maxAttempts: 1 });
  return {
    child,
    s3,
    stderr: () => err,
    exited,
    async stop() {
      s3.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

function mounted(mnt: string): boolean {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((l) => l.split(" ")[1] === mnt);
}

/** A temp directory with a data dir and a mount point; unmounts leftovers and removes it after. */
function workspace(t: TestContext): { data: string; mnt: string; local: string } {
  const root = mkdtempSync(join(tmpdir(), "stowage-mount-"));
  const w = { data: join(root, "data"), mnt: join(root, "mnt"), local: join(root, "local") };
  mkdirSync(w.mnt);
  mkdirSync(w.local);
  t.after(() => {
    if (mounted(w.mnt)) spawnSync("umount", ["-l", w.mnt]);
    rmSync(root, { recursive: true, force: true });
  });
  return w;
}

async function getBytes(s3: S3Client, bucket: string, key: string): Promise<Buffer> {
  const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }));
    for (const o of r.Contents ?? []) keys.push(o.Key!);
    token = r.IsTruncated === true ? r.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Every file under `localDir` is the object `prefix/<relative path>`, byte for byte, and no other file object is there. */
async function assertTreeInS3(s3: S3Client, bucket: string, prefix: string, localDir: string): Promise<number> {
  const files = walk(localDir);
  const want = new Map(files.map((f) => [`${prefix}/${relative(localDir, f)}`, f]));
  const keys = (await listKeys(s3, bucket, `${prefix}/`)).filter((k) => !k.endsWith("/"));
  assert.deepEqual([...keys].sort(), [...want.keys()].sort(), `objects under ${prefix}/`);
  for (const [key, file] of want) {
    const got = await getBytes(s3, bucket, key);
    assert.ok(got.equals(readFileSync(file)), `${key} differs from ${file}`);
  }
  return files.length;
}

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** A small tree: nested directories, text and random files (one over the 1 MiB FUSE write size). */
function makeTree(dir: string): void {
  let seed = 7;
  const rnd = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      b[i] = seed >>> 24;
    }
    return b;
  };
  for (const d of ["a", "a/b", "a/b/c", "docs", "empty-dir"]) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, "top.txt"), "top level\n");
  writeFileSync(join(dir, "a/one.bin"), rnd(70_000));
  writeFileSync(join(dir, "a/b/two.bin"), rnd(1_500_000));
  writeFileSync(join(dir, "a/b/c/three.txt"), "x".repeat(10_000));
  writeFileSync(join(dir, "a/b/c/empty"), "");
  writeFileSync(join(dir, "docs/ünïcode name.md"), "# héllo\n");
  for (let i = 0; i < 40; i++) writeFileSync(join(dir, "docs", `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
}

const skip = unavailable();

test("real tools on the mount: cp -r, rsync twice, tar, dd, mv; every result read back through S3", { skip }, async (t) => {
  const missing = missingTools(["rsync", "tar", "dd"]);
  if (missing.length > 0) return t.skip(`missing ${missing.join(", ")} (run scripts/install-fs-tools.sh)`);
  const w = workspace(t);
  const src = join(w.local, "src");
  makeTree(src);
  const gw = await startGateway(w.data, w.mnt);
  try {
    const b = join(w.mnt, "bkt");
    mkdirSync(b);

    // cp -r
    await execFileP("cp", ["-r", src, join(b, "cp")]);
    assert.equal(await assertTreeInS3(gw.s3, "bkt", "cp", src), 46);
    assert.equal(spawnSync("diff", ["-r", src, join(b, "cp")]).status, 0, "cp -r: the mount's tree equals the source");

    // rsync -a twice: the second run transfers nothing (sizes and mtimes are kept exactly).
    await execFileP("rsync", ["-a", `${src}/`, join(b, "rs") + "/"]);
    const again = await execFileP("rsync", ["-a", "--stats", `${src}/`, join(b, "rs") + "/"]);
    assert.match(again.stdout, /Number of regular files transferred: 0\b/, again.stdout);
    await assertTreeInS3(gw.s3, "bkt", "rs", src);
    const st = statSync(join(b, "rs/a/b/two.bin"));
    assert.equal(Math.floor(st.mtimeMs), Math.floor(statSync(join(src, "a/b/two.bin")).mtimeMs), "rsync -a kept the mtime");

    // tar: create on the mount, extract on the mount; the archive and the tree through S3.
    await execFileP("tar", ["-C", src, "-cf", join(b, "tree.tar"), "."]);
    await execFileP("tar", ["-C", src, "-cf", join(w.local, "tree.tar"), "."]);
    const tarS3 = await getBytes(gw.s3, "bkt", "tree.tar");
    assert.equal(tarS3.length, statSync(join(w.local, "tree.tar")).size);
    mkdirSync(join(b, "untar"));
    await execFileP("tar", ["-C", join(b, "untar"), "-xf", join(b, "tree.tar")]);
    await assertTreeInS3(gw.s3, "bkt", "untar", src);

    // dd: a 4 MiB file, then 3 bytes at an offset with conv=notrunc, and a write past the end (a hole).
    const model = Buffer.alloc(4 << 20);
    for (let i = 0; i < model.length; i += 4096) model.writeUInt32LE(i, i);
    writeFileSync(join(w.local, "dd.src"), model);
    await execFileP("dd", [`if=${join(w.local, "dd.src")}`, `of=${join(b, "dd.bin")}`, "bs=1M", "status=none"]);
    writeFileSync(join(w.local, "patch"), "XYZ");
    await execFileP("dd", [`if=${join(w.local, "patch")}`, `of=${join(b, "dd.bin")}`, "bs=1", "seek=1000001", "conv=notrunc", "status=none"]);
    model.write("XYZ", 1_000_001);
    await execFileP("dd", [`if=${join(w.local, "patch")}`, `of=${join(b, "dd.bin")}`, "bs=1", `seek=${(4 << 20) + 100_000}`, "conv=notrunc", "status=none"]);
    const expected = Buffer.concat([model, Buffer.alloc(100_000), Buffer.from("XYZ")]);
    assert.equal(sha(await getBytes(gw.s3, "bkt", "dd.bin")), sha(expected), "dd seek/notrunc through S3");
    assert.equal(sha(await readFile(join(b, "dd.bin"))), sha(expected), "dd seek/notrunc through the mount");

    // mv across directories: a file and a directory; S3 sees the new keys and not the old.
    mkdirSync(join(b, "mv/from/sub"), { recursive: true });
    writeFileSync(join(b, "mv/from/sub/f.txt"), "moved file\n");
    writeFileSync(join(b, "mv/from/g.txt"), "moved too\n");
    mkdirSync(join(b, "mv/to"));
    await execFileP("mv", [join(b, "mv/from/sub"), join(b, "mv/to/")]);
    await execFileP("mv", [join(b, "mv/from/g.txt"), join(b, "mv/to/renamed.txt")]);
    assert.equal((await getBytes(gw.s3, "bkt", "mv/to/sub/f.txt")).toString(), "moved file\n");
    assert.equal((await getBytes(gw.s3, "bkt", "mv/to/renamed.txt")).toString(), "moved too\n");
    assert.deepEqual((await listKeys(gw.s3, "bkt", "mv/from/")).filter((k) => !k.endsWith("/")), []);
  } finally {
    assert.equal(await gw.stop(), 0, gw.stderr());
  }
  assert.equal(mounted(w.mnt), false, "SIGTERM unmounted");
});

test("git and sqlite3 on the mount: commit, clone, fsck; a database with random writes and fsync reads back through S3", { skip }, async (t) => {
  const missing = missingTools(["git", "sqlite3"]);
  if (missing.length > 0) return t.skip(`missing ${missing.join(", ")} (run scripts/install-fs-tools.sh)`);
  const w = workspace(t);
  const gw = await startGateway(w.data, w.mnt);
  try {
    const b = join(w.mnt, "bkt");
    mkdirSync(b);
    const repo = join(b, "repo");
    mkdirSync(repo);
    const git = (cwd: string, ...args: string[]): Promise<{ stdout: string }> =>
      execFileP("git", ["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main", ...args], { cwd });
    await git(repo, "init", "-q");
    makeTree(join(repo, "tree"));
    await git(repo, "add", ".");
    await git(repo, "commit", "-qm", "first");
    writeFileSync(join(repo, "tree/top.txt"), "changed\n");
    await git(repo, "commit", "-qam", "second");
    assert.equal((await git(repo, "log", "--oneline")).stdout.trim().split("\n").length, 2);
    await git(repo, "fsck", "--strict");
    await git(w.local, "clone", "-q", repo, join(w.local, "clone"));
    assert.equal(readFileSync(join(w.local, "clone/tree/top.txt"), "utf8"), "changed\n");
    await git(b, "clone", "-q", repo, join(b, "clone2"));
    assert.equal((await getBytes(gw.s3, "bkt", "clone2/tree/top.txt")).toString(), "changed\n");
    assert.equal(sha(await getBytes(gw.s3, "bkt", "clone2/tree/a/b/two.bin")), sha(readFileSync(join(w.local, "clone/tree/a/b/two.bin"))));

    // sqlite3: inserts, updates scattered over the file, deletes, each in a transaction (fsync).
    const db = join(b, "data.db");
    const sql = ["pragma journal_mode=delete;", "create table t(id integer primary key, v text);"];
    for (let round = 0; round < 5; round++) {
      sql.push("begin;");
      for (let i = 0; i < 400; i++) sql.push(`insert into t(v) values('r${round}-${i}-${"p".repeat((i * 37) % 300)}');`);
      sql.push(`update t set v = v || '-u${round}' where id % 7 = ${round};`, `delete from t where id % 11 = ${round};`, "commit;");
    }
    writeFileSync(join(w.local, "load.sql"), sql.join("\n"));
    await execFileP("sqlite3", [db, `.read ${join(w.local, "load.sql")}`]);
    const q = "pragma integrity_check; select count(*), sum(length(v)) from t;";
    const onMount = (await execFileP("sqlite3", [db, q])).stdout;
    assert.match(onMount, /^ok\n\d+\|\d+\n$/);
    writeFileSync(join(w.local, "copy.db"), await getBytes(gw.s3, "bkt", "data.db"));
    assert.equal((await execFileP("sqlite3", [join(w.local, "copy.db"), q])).stdout, onMount, "the database read through S3 is the same database");
  } finally {
    assert.equal(await gw.stop(), 0, gw.stderr());
  }
});

test("S3 and the mount see each other: put shows up as a file, a file as an object; stable inode numbers across a remount", { skip }, async (t) => {
  const w = workspace(t);
  // --mount-bucket names a bucket that must exist: a clear error and no mount.
  const missing = spawnSync(process.execPath, [BIN, "mount", "--data", w.data, "nope", w.mnt], { env: env(), encoding: "utf8", timeout: 30_000 });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /STOWAGE_NO_SUCH_BUCKET/);
  assert.equal(mounted(w.mnt), false);
  let ino: number;
  let gw: Gateway;
  gw = await startGateway(w.data, w.mnt);
  try {
    mkdirSync(join(w.mnt, "media"));
    assert.equal((await gw.s3.send(new ListObjectsV2Command({ Bucket: "media" }))).KeyCount, 0, "mkdir at the top made a bucket");
    await gw.s3.send(new PutObjectCommand({ Bucket: "media", Key: "clips/a.mov", Body: Buffer.from("from s3") }));
    assert.equal(readFileSync(join(w.mnt, "media/clips/a.mov"), "utf8"), "from s3");
    writeFileSync(join(w.mnt, "media/clips/b.txt"), "from the mount");
    assert.equal((await getBytes(gw.s3, "media", "clips/b.txt")).toString(), "from the mount");
    // An S3 overwrite is seen by an open once the attribute cache (1 s) has passed.
    await gw.s3.send(new PutObjectCommand({ Bucket: "media", Key: "clips/b.txt", Body: Buffer.from("overwritten through S3, longer") }));
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(readFileSync(join(w.mnt, "media/clips/b.txt"), "utf8"), "overwritten through S3, longer");
    ino = (await stat(join(w.mnt, "media/clips/b.txt"))).ino;
    assert.ok(ino > 0);

    // Special files: a FIFO made on the mount is an empty object with its mode, and a pipe there.
    mkdirSync(join(w.mnt, "media/special"));
    await execFileP("mkfifo", ["-m", "0640", join(w.mnt, "media/special/pipe")]);
    const head = await gw.s3.send(new HeadObjectCommand({ Bucket: "media", Key: "special/pipe" }));
    assert.equal(head.ContentType, "inode/fifo");
    assert.equal(head.ContentLength, 0);
    assert.equal(Number(head.Metadata?.mode), 0o010640, "the object records the FIFO's type and mode");
    const piped = await execFileP("sh", ["-c", `echo through-the-pipe > '${join(w.mnt, "media/special/pipe")}' & cat '${join(w.mnt, "media/special/pipe")}'; wait`], { timeout: 10_000 });
    assert.equal(piped.stdout, "through-the-pipe\n");
    // The mount is nosuid and nodev: modes and owners are whatever S3 writers put there, so a
    // device node (here one naming /dev/null, 1:3) never opens a device.
    assert.match(readFileSync("/proc/self/mounts", "utf8").split("\n").find((l) => l.includes(` ${w.mnt} `)) ?? "", /\bnosuid\b.*\bnodev\b|\bnodev\b.*\bnosuid\b/);
    await gw.s3.send(new PutObjectCommand({ Bucket: "media", Key: "special/null", Body: Buffer.alloc(0), Metadata: { mode: String(0o020666), rdev: String((1 << 8) | 3) } }));
    const dev = await stat(join(w.mnt, "media/special/null"));
    assert.ok(dev.isCharacterDevice(), "an object with a character-device mode shows as one");
    assert.equal(dev.rdev, (1 << 8) | 3);
    assert.throws(() => readFileSync(join(w.mnt, "media/special/null")), /EACCES/, "nodev: the device cannot be opened");
    // A file unlinked while open: fstat, fchmod, ftruncate and reads go on through the descriptor.
    const tmp = join(w.mnt, "media/special/tmp");
    const fd = openSync(tmp, "w+");
    try {
      writeSync(fd, "hello world");
      unlinkSync(tmp);
      assert.deepEqual([fstatSync(fd).size, fstatSync(fd).nlink], [11, 0], "fstat after unlink");
      fchmodSync(fd, 0o640);
      assert.equal(fstatSync(fd).mode & 0o7777, 0o640);
      ftruncateSync(fd, 5);
      const back = Buffer.alloc(16);
      assert.equal(readSync(fd, back, 0, 16, 0), 5);
      assert.equal(back.subarray(0, 5).toString(), "hello");
    } finally {
      closeSync(fd);
    }
    assert.equal(existsSync(tmp), false);
    // rsync -a copies a tree holding a FIFO, and a second run finds nothing to do.
    if (missingTools(["rsync"]).length === 0) {
      const tree = join(w.local, "with-fifo");
      mkdirSync(tree);
      writeFileSync(join(tree, "plain.txt"), "plain\n");
      await execFileP("mkfifo", [join(tree, "fifo")]);
      await execFileP("rsync", ["-a", `${tree}/`, join(w.mnt, "media/rs") + "/"]);
      assert.ok(statSync(join(w.mnt, "media/rs/fifo")).isFIFO());
      const again = await execFileP("rsync", ["-a", "-i", `${tree}/`, join(w.mnt, "media/rs") + "/"]);
      assert.equal(again.stdout, "", "the second rsync -a changes nothing");
    }
  } finally {
    assert.equal(await gw.stop(), 0, gw.stderr());
  }
  gw = await startGateway(w.data, w.mnt, ["--mount-bucket", "media"]);
  try {
    assert.equal(Number(statSync(join(w.mnt, "clips/b.txt")).ino), ino, "inode number kept across a remount");
    assert.deepEqual(readdirSync(join(w.mnt, "clips")).sort(), ["a.mov", "b.txt"]);
    // A process working inside the mount does not keep SIGTERM from unmounting (lazily) and exiting.
    const busy = spawn("sleep", ["30"], { cwd: join(w.mnt, "clips"), stdio: "ignore" });
    t.after(() => busy.kill("SIGKILL"));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await gw.stop(), 0, gw.stderr());
    assert.equal(mounted(w.mnt), false, "unmounted although busy");
  } finally {
    await gw.stop();
  }
});

test("SIGKILL of the gateway under a writer: every file whose close returned is intact after a restart", { skip }, async (t) => {
  const w = workspace(t);
  let gw = await startGateway(w.data, w.mnt);
  mkdirSync(join(w.mnt, "bkt"));
  // The writer: writes files with content derived from their number, prints the number once close returned.
  const writer = spawn(
    process.execPath,
    [
      "-e",
      `const fs = require("fs");
       const dir = process.argv[1];
       (async () => {
         for (let i = 0; ; i++) {
           const data = Buffer.alloc(1000 + (i * 7919) % 300000, String(i % 10));
           data.write("file " + i + " ", 0);
           try {
             const h = await fs.promises.open(dir + "/f" + i, "w");
             await h.write(data, 0, data.length, 0);
             if (i % 3 === 0) await h.write(Buffer.from("tail"), 0, 4, 50);
             await h.close();
           } catch (e) { console.error(String(e)); process.exit(0); }
           console.log(i);
         }
       })();`,
      join(w.mnt, "bkt"),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let acked = "";
  writer.stdout!.on("data", (b: Buffer) => (acked += b.toString()));
  const writerDone = new Promise<void>((resolve) => writer.on("exit", () => resolve()));
  await new Promise((r) => setTimeout(r, 1500 + Math.floor(Math.random() * 1500)));
  gw.child.kill("SIGKILL");
  await gw.exited;
  await writerDone;
  const done = acked
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
  assert.ok(done.length >= 5, `the writer finished ${done.length} files before the kill`);
  assert.equal(mounted(w.mnt), true, "the killed gateway left its mount behind");

  gw = await startGateway(w.data, w.mnt);
  try {
    for (const i of done) {
      const data = Buffer.alloc(1000 + ((i * 7919) % 300000), String(i % 10));
      data.write(`file ${i} `, 0);
      if (i % 3 === 0) data.write("tail", 50);
      assert.equal(sha(readFileSync(join(w.mnt, "bkt", `f${i}`))), sha(data), `f${i} through the mount`);
      assert.equal(sha(await getBytes(gw.s3, "bkt", `f${i}`)), sha(data), `f${i} through S3`);
    }
  } finally {
    assert.equal(await gw.stop(), 0, gw.stderr());
  }
});

test("mount errors: a missing mount point and a file as mount point fail with STOWAGE_MOUNT and change nothing", { skip }, (t) => {
  const w = workspace(t);
  const r1 = spawnSync(process.execPath, [BIN, "mount", "--data", w.data, join(w.local, "missing")], { env: env(), encoding: "utf8", timeout: 30_000 });
  assert.equal(r1.status, 1, r1.stderr);
  assert.match(r1.stderr, /STOWAGE_MOUNT: cannot mount at .*missing: ENOENT/);
  writeFileSync(join(w.local, "file"), "");
  const r2 = spawnSync(process.execPath, [BIN, "mount", "--data", w.data, join(w.local, "file")], { env: env(), encoding: "utf8", timeout: 30_000 });
  assert.equal(r2.status, 1, r2.stderr);
  assert.match(r2.stderr, /STOWAGE_MOUNT: cannot mount at .*file: not a directory/);
});

test("randomized: the same writes, truncates, renames and unlinks on the mount and on a local directory give the same tree", { skip }, async (t) => {
  const w = workspace(t);
  const gw = await startGateway(w.data, w.mnt);
  const seed = Number(process.env["STOWAGE_TEST_SEED"] ?? Date.now() % 100_000);
  let s = seed;
  const rnd = (n: number): number => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s % n;
  };
  const { open, rename, unlink, mkdir, readFile: rf, readdir } = await import("node:fs/promises");
  try {
    mkdirSync(join(w.mnt, "bkt"));
    const roots = [join(w.mnt, "bkt"), w.local];
    const names: string[] = [];
    for (let step = 0; step < 150; step++) {
      const op = names.length === 0 ? 0 : rnd(10);
      const name = names.length === 0 ? "" : names[rnd(names.length)]!;
      const what = `seed ${seed} step ${step} op ${op} ${name}`;
      if (op <= 1) {
        const fresh = `${rnd(3) === 0 ? "d/" : ""}f${step}`;
        for (const r of roots) {
          await mkdir(join(r, "d"), { recursive: true });
          await (await open(join(r, fresh), "w")).close();
        }
        names.push(fresh);
      } else if (op <= 5) {
        // A write at a random offset, sometimes past the end (a hole), sometimes large.
        const len = rnd(4) === 0 ? 1 + rnd(3_000_000) : 1 + rnd(5000);
        const at = rnd(2_000_000);
        const data = Buffer.alloc(len, 97 + (step % 26));
        data.writeUInt32LE(step, 0);
        for (const r of roots) {
          const h = await open(join(r, name), "r+");
          await h.write(data, 0, len, at);
          if (rnd(2) === 0) await h.sync();
          await h.close();
        }
      } else if (op === 6) {
        const size = rnd(1_500_000);
        for (const r of roots) {
          const h = await open(join(r, name), "r+");
          await h.truncate(size);
          await h.close();
        }
      } else if (op === 7) {
        const to = rnd(2) === 0 || names.length < 2 ? `r${step}` : names.find((n) => n !== name)!;
        for (const r of roots) await rename(join(r, name), join(r, to));
        names.splice(names.indexOf(name), 1);
        if (!names.includes(to)) names.push(to);
      } else if (op === 8) {
        for (const r of roots) await unlink(join(r, name));
        names.splice(names.indexOf(name), 1);
      } else {
        const [a, b] = await Promise.all(roots.map((r) => rf(join(r, name))));
        assert.equal(sha(a!), sha(b!), what);
      }
    }
    const sorted = async (d: string): Promise<string[]> => (await readdir(d, { recursive: true })).map(String).sort();
    assert.deepEqual(await sorted(roots[0]!), await sorted(roots[1]!), `seed ${seed}: the trees list the same names`);
    for (const n of names) {
      const local = readFileSync(join(w.local, n));
      assert.equal(sha(readFileSync(join(w.mnt, "bkt", n))), sha(local), `seed ${seed}: ${n} through the mount`);
      assert.equal(sha(await getBytes(gw.s3, "bkt", n)), sha(local), `seed ${seed}: ${n} through S3`);
    }
  } finally {
    assert.equal(await gw.stop(), 0, gw.stderr());
  }
});

test("stowage mount alone: serves the mount until someone runs umount, then closes the store and exits 0", { skip }, async (t) => {
  const w = workspace(t);
  const child = spawn(process.execPath, [BIN, "mount", "--data", w.data, "--log-level", "warn", w.mnt], { env: env(), stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let err = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (b: Buffer) => {
      err += b.toString();
      if (/stowage: mounted all buckets at /.test(err)) resolve();
    });
    void exited.then((code) => reject(new Error(`mount exited ${code}: ${err}`)));
  });
  mkdirSync(join(w.mnt, "solo"));
  writeFileSync(join(w.mnt, "solo/f.txt"), "alone");
  assert.equal(spawnSync("umount", [w.mnt]).status, 0);
  assert.equal(await exited, 0, err);
  // The store was closed cleanly: the repository opens and holds the file.
  const ls = spawnSync(process.execPath, [BIN, "ls", "--data", w.data, "solo"], { env: env(), encoding: "utf8" });
  assert.equal(ls.status, 0, ls.stderr);
  assert.match(ls.stdout, /f\.txt/);
});
