/**
 * The S3 endpoint driven by the real command-line clients from Debian — awscli, rclone and s3cmd
 * (installed by scripts/install-s3-clients.sh) — as separate processes over HTTP: bucket creation,
 * upload and download of small and multipart files (SHA-256 of the local files compared, the
 * server's ETags checked against S3's formula), listings with prefixes and delimiters, sync of a
 * directory tree (a second sync must transfer nothing, a third only what changed), server-side
 * copy, delete and bucket removal. Each client's configuration lives in a temporary directory
 * (HOME too), so nothing of the machine's own configuration is read.
 *
 * What the server did is checked on the server side as well: the store's listing (keys, ETags,
 * write sequence numbers) and counts of the store calls the requests made (so "server-side copy"
 * and "nothing transferred" are facts, not the client's claim).
 *
 * A client whose binary is missing is skipped with a message; CI installs all three.
 */
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative, sep } from "node:path";
import { isStowageError } from "../../src/errors.js";
import type { ObjectStore } from "../../src/store/store.js";
import { startEndpoint, ACCESS_KEY, SECRET_KEY, type Endpoint } from "./harness.js";

const PART = 5 * 1024 * 1024;
const BIG_SIZE = 20_000_000; // 4 parts of 5 MiB
const SMALL_SIZE = 200_000;

let ep: Endpoint;
let work: string;
let small: string;
let big: string;
let tree: string;
let treeFiles: string[]; // relative paths, "/"-separated
let calls: Map<string, number>;

const sha256File = (p: string): string => createHash("sha256").update(readFileSync(p)).digest("hex");
const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

/** S3's ETag of a multipart upload with fixed-size parts. */
function multipartEtag(data: Buffer, partSize: number): string {
  const digests: Buffer[] = [];
  for (let off = 0; off < data.length; off += partSize) digests.push(createHash("md5").update(data.subarray(off, off + partSize)).digest());
  return `${createHash("md5").update(Buffer.concat(digests)).digest("hex")}-${digests.length}`;
}

/** The files under `root`, as "/"-separated relative paths. */
function walk(root: string, dir = root, out: string[] = []): string[] {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(root, p, out);
    else out.push(relative(root, p).split(sep).join("/"));
  }
  return out;
}

/** An executable on PATH (or one of `preferred` first), or undefined. */
function findBinary(name: string, preferred: string[] = []): string | undefined {
  const candidates = [...preferred, ...(process.env.PATH ?? "").split(delimiter).filter((d) => d !== "").map((d) => join(d, name))];
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** The environment without the machine's AWS/rclone/s3cmd settings, HOME in the temp dir. */
function cleanEnv(home: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(AWS_|RCLONE_|S3CMD)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, HOME: home, LANG: process.env.LANG ?? "C.UTF-8", ...extra };
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 120_000, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new Error(`${bin} ${args.join(" ")} failed (${String(err.code ?? err.signal)}):\n--- stdout\n${stdout}\n--- stderr\n${stderr}`));
        return;
      }
      resolve({ stdout, stderr });
    });
  });
}

/**
 * Counts the store calls that write, by "bucket method" (the destination bucket), so that the
 * clients, each with its own bucket, can run concurrently.
 */
function countStoreCalls(store: ObjectStore): Map<string, number> {
  const counts = new Map<string, number>();
  const target = store as unknown as Record<string, (...args: unknown[]) => unknown>;
  // The argument that names the bucket written to.
  const bucketArg: Record<string, number> = { putObject: 0, uploadPart: 0, copyObject: 2, uploadPartCopy: 0, completeMultipartUpload: 0, deleteObject: 0, createMultipartUpload: 0 };
  for (const [name, index] of Object.entries(bucketArg)) {
    const original = target[name]!;
    target[name] = (...args: unknown[]): unknown => {
      const k = `${String(args[index])} ${name}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
      return original.apply(store, args);
    };
  }
  return counts;
}

/** Store calls writing to `bucket` while `fn` runs, by method. */
async function callsDuring(bucket: string, fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const before = new Map(calls);
  await fn();
  const out: Record<string, number> = {};
  for (const [k, v] of calls) {
    const [b, method] = k.split(" ") as [string, string];
    if (b === bucket && v - (before.get(k) ?? 0) > 0) out[method] = v - (before.get(k) ?? 0);
  }
  return out;
}

interface Stored {
  etag: string;
  size: number;
  sequence: number;
}

/** Every object under `prefix`, from the store itself. */
async function storedObjects(bucket: string, prefix = ""): Promise<Map<string, Stored>> {
  const out = new Map<string, Stored>();
  let token: string | undefined;
  do {
    const page = await ep.repo.store.listObjects(bucket, { prefix, ...(token === undefined ? {} : { continuationToken: token }) });
    for (const o of page.objects) out.set(o.key, { etag: o.etag, size: o.size, sequence: o.sequence });
    token = page.isTruncated ? page.nextContinuationToken : undefined;
  } while (token !== undefined);
  return out;
}

async function bucketExists(bucket: string): Promise<boolean> {
  try {
    await ep.repo.store.headBucket(bucket);
    return true;
  } catch (err) {
    if (isStowageError(err) && err.code === "STOWAGE_NO_SUCH_BUCKET") return false;
    throw err;
  }
}

/** A delimiter listing as the client shows it: common prefixes and keys, relative to the bucket. */
interface Listing {
  dirs: string[];
  files: string[];
}

/** What each client must do; the scenario below is the same for all three. */
interface Client {
  name: string;
  bin: string | undefined;
  setup(dir: string): void;
  listBuckets(): Promise<string[]>;
  mb(bucket: string): Promise<void>;
  /** Upload a file; `multipart` asks for 5 MiB parts. */
  put(local: string, bucket: string, key: string, multipart: boolean): Promise<void>;
  get(bucket: string, key: string, local: string): Promise<void>;
  /** Delimiter `/` listing of `prefix` ("" or ending in "/"). */
  list(bucket: string, prefix: string): Promise<Listing>;
  /** Sync a local tree up; returns how many files the client says it uploaded. */
  syncUp(localDir: string, bucket: string, prefix: string): Promise<number>;
  syncDown(bucket: string, prefix: string, localDir: string): Promise<void>;
  /** Server-side copy. */
  copy(bucket: string, from: string, to: string): Promise<void>;
  rmRecursive(bucket: string, prefix: string): Promise<void>;
  rm(bucket: string, key: string): Promise<void>;
  /** Remove the bucket with whatever is left in it. */
  rb(bucket: string): Promise<void>;
}

const sorted = (a: string[]): string[] => [...a].sort();

// ------------------------------------------------------------------------------------------------
// awscli

function awsClient(): Client {
  const bin = findBinary("aws", ["/usr/bin/aws"]);
  let env: NodeJS.ProcessEnv = {};
  const aws = (...args: string[]): Promise<RunResult> => run(bin!, ["--endpoint-url", ep.url, ...args], env);
  return {
    name: "awscli",
    bin,
    setup(dir) {
      const config = join(dir, "aws-config");
      const credentials = join(dir, "aws-credentials");
      writeFileSync(config, ["[default]", "region = us-east-1", "output = json", "s3 =", "  multipart_threshold = 8MB", "  multipart_chunksize = 5MB", "  addressing_style = path", ""].join("\n"));
      writeFileSync(credentials, ["[default]", `aws_access_key_id = ${ACCESS_KEY}`, `aws_secret_access_key = ${SECRET_KEY}`, ""].join("\n"));
      env = cleanEnv(dir, { AWS_CONFIG_FILE: config, AWS_SHARED_CREDENTIALS_FILE: credentials, AWS_DEFAULT_REGION: "us-east-1", AWS_PAGER: "", AWS_EC2_METADATA_DISABLED: "true" });
    },
    async listBuckets() {
      return (await aws("s3", "ls")).stdout.split("\n").filter((l) => l.trim() !== "").map((l) => l.trim().split(/\s+/).pop()!);
    },
    async mb(bucket) {
      await aws("s3", "mb", `s3://${bucket}`);
    },
    async put(local, bucket, key) {
      // multipart_threshold is 8 MB: the 20 MB file goes in 5 MiB parts, the small one in one PUT.
      await aws("s3", "cp", "--no-progress", local, `s3://${bucket}/${key}`);
    },
    async get(bucket, key, local) {
      await aws("s3", "cp", "--no-progress", `s3://${bucket}/${key}`, local);
    },
    async list(bucket, prefix) {
      const out = JSON.parse((await aws("s3api", "list-objects-v2", "--bucket", bucket, "--delimiter", "/", ...(prefix === "" ? [] : ["--prefix", prefix]))).stdout || "{}") as {
        Contents?: { Key: string }[];
        CommonPrefixes?: { Prefix: string }[];
      };
      const listing = { dirs: (out.CommonPrefixes ?? []).map((p) => p.Prefix), files: (out.Contents ?? []).map((c) => c.Key) };
      // `aws s3 ls s3://bucket/prefix` shows the same, as "PRE name/" and "date time size name"
      // (checked on two prefixes only: every aws invocation costs a second of CPU).
      if (prefix !== "" && prefix !== "tree/") return listing;
      const ls = (await aws("s3", "ls", `s3://${bucket}/${prefix}`)).stdout.split("\n").filter((l) => l.trim() !== "");
      const dirs = ls.filter((l) => /^\s*PRE /.test(l)).map((l) => prefix + l.replace(/^\s*PRE /, ""));
      const files = ls.filter((l) => !/^\s*PRE /.test(l)).map((l) => prefix + l.replace(/^\S+\s+\S+\s+\d+\s/, ""));
      assert.deepEqual({ dirs: sorted(dirs), files: sorted(files) }, { dirs: sorted(listing.dirs), files: sorted(listing.files) }, "aws s3 ls agrees with s3api list-objects-v2");
      return listing;
    },
    async syncUp(localDir, bucket, prefix) {
      const { stdout } = await aws("s3", "sync", "--no-progress", localDir, `s3://${bucket}/${prefix}`);
      return stdout.split("\n").filter((l) => l.startsWith("upload: ")).length;
    },
    async syncDown(bucket, prefix, localDir) {
      await aws("s3", "sync", "--no-progress", `s3://${bucket}/${prefix}`, localDir);
    },
    async copy(bucket, from, to) {
      await aws("s3", "cp", "--no-progress", `s3://${bucket}/${from}`, `s3://${bucket}/${to}`);
    },
    async rmRecursive(bucket, prefix) {
      await aws("s3", "rm", "--recursive", `s3://${bucket}/${prefix}`);
    },
    async rm(bucket, key) {
      await aws("s3", "rm", `s3://${bucket}/${key}`);
    },
    async rb(bucket) {
      await aws("s3", "rb", "--force", `s3://${bucket}`);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// rclone: an env-defined remote "stw"

function rcloneClient(): Client {
  const bin = findBinary("rclone");
  let env: NodeJS.ProcessEnv = {};
  const rclone = (...args: string[]): Promise<RunResult> => run(bin!, args, env);
  return {
    name: "rclone",
    bin,
    setup(dir) {
      const conf = join(dir, "rclone.conf");
      writeFileSync(conf, "");
      env = cleanEnv(dir, {
        RCLONE_CONFIG: conf,
        RCLONE_CONFIG_STW_TYPE: "s3",
        RCLONE_CONFIG_STW_PROVIDER: "Other",
        RCLONE_CONFIG_STW_ENDPOINT: ep.url,
        RCLONE_CONFIG_STW_ACCESS_KEY_ID: ACCESS_KEY,
        RCLONE_CONFIG_STW_SECRET_ACCESS_KEY: SECRET_KEY,
        RCLONE_CONFIG_STW_REGION: "us-east-1",
        RCLONE_CONFIG_STW_FORCE_PATH_STYLE: "true",
        RCLONE_CONFIG_STW_ENV_AUTH: "false",
      });
    },
    async listBuckets() {
      return (await rclone("lsf", "--dirs-only", "stw:")).stdout.split("\n").filter((l) => l !== "").map((l) => l.replace(/\/$/, ""));
    },
    async mb(bucket) {
      await rclone("mkdir", `stw:${bucket}`);
    },
    async put(local, bucket, key, multipart) {
      await rclone("copyto", ...(multipart ? ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"] : []), local, `stw:${bucket}/${key}`);
    },
    async get(bucket, key, local) {
      await rclone("copyto", `stw:${bucket}/${key}`, local);
    },
    async list(bucket, prefix) {
      const names = (await rclone("lsf", `stw:${bucket}/${prefix}`)).stdout.split("\n").filter((l) => l !== "");
      return { dirs: names.filter((n) => n.endsWith("/")).map((n) => prefix + n), files: names.filter((n) => !n.endsWith("/")).map((n) => prefix + n) };
    },
    async syncUp(localDir, bucket, prefix) {
      const { stderr } = await rclone("sync", "-v", "--stats", "0", localDir, `stw:${bucket}/${prefix.replace(/\/$/, "")}`);
      return stderr.split("\n").filter((l) => /: Copied \((new|replaced existing)\)/.test(l)).length;
    },
    async syncDown(bucket, prefix, localDir) {
      await rclone("copy", `stw:${bucket}/${prefix.replace(/\/$/, "")}`, localDir);
    },
    async copy(bucket, from, to) {
      await rclone("copyto", `stw:${bucket}/${from}`, `stw:${bucket}/${to}`);
    },
    async rmRecursive(bucket, prefix) {
      await rclone("delete", `stw:${bucket}/${prefix.replace(/\/$/, "")}`);
    },
    async rm(bucket, key) {
      await rclone("deletefile", `stw:${bucket}/${key}`);
    },
    async rb(bucket) {
      await rclone("purge", `stw:${bucket}`);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// s3cmd: a generated config file

function s3cmdClient(): Client {
  const bin = findBinary("s3cmd");
  let env: NodeJS.ProcessEnv = {};
  let config = "";
  const s3cmd = (...args: string[]): Promise<RunResult> => run(bin!, ["-c", config, ...args], env);
  /** `s3cmd ls` lines: "   DIR  s3://b/p/" and "date time size s3://b/key". */
  const parseLs = (stdout: string, bucket: string): Listing => {
    const lines = stdout.split("\n").filter((l) => l.trim() !== "");
    const strip = (l: string): string => l.slice(l.indexOf(`s3://${bucket}/`) + `s3://${bucket}/`.length);
    return { dirs: lines.filter((l) => /^\s*DIR\s/.test(l)).map(strip), files: lines.filter((l) => !/^\s*DIR\s/.test(l)).map(strip) };
  };
  return {
    name: "s3cmd",
    bin,
    setup(dir) {
      config = join(dir, "s3cfg");
      writeFileSync(
        config,
        [
          "[default]",
          `access_key = ${ACCESS_KEY}`,
          `secret_key = ${SECRET_KEY}`,
          `host_base = 127.0.0.1:${ep.port}`,
          `host_bucket = 127.0.0.1:${ep.port}`,
          "use_https = False",
          "signature_v2 = False",
          "bucket_location = us-east-1",
          "progress_meter = False",
          "",
        ].join("\n"),
      );
      env = cleanEnv(dir, {});
    },
    async listBuckets() {
      return (await s3cmd("ls")).stdout.split("\n").filter((l) => l.includes("s3://")).map((l) => l.slice(l.indexOf("s3://") + 5).replace(/\/$/, ""));
    },
    async mb(bucket) {
      await s3cmd("mb", `s3://${bucket}`);
    },
    async put(local, bucket, key, multipart) {
      await s3cmd("put", ...(multipart ? ["--multipart-chunk-size-mb=5"] : []), local, `s3://${bucket}/${key}`);
    },
    async get(bucket, key, local) {
      await s3cmd("get", "--force", `s3://${bucket}/${key}`, local);
    },
    async list(bucket, prefix) {
      return parseLs((await s3cmd("ls", `s3://${bucket}/${prefix}`)).stdout, bucket);
    },
    async syncUp(localDir, bucket, prefix) {
      const { stdout } = await s3cmd("sync", `${localDir}/`, `s3://${bucket}/${prefix}`);
      return stdout.split("\n").filter((l) => l.startsWith("upload: ")).length;
    },
    async syncDown(bucket, prefix, localDir) {
      await s3cmd("sync", `s3://${bucket}/${prefix}`, `${localDir}/`);
    },
    async copy(bucket, from, to) {
      await s3cmd("cp", `s3://${bucket}/${from}`, `s3://${bucket}/${to}`);
    },
    async rmRecursive(bucket, prefix) {
      await s3cmd("del", "--recursive", "--force", `s3://${bucket}/${prefix}`);
    },
    async rm(bucket, key) {
      await s3cmd("del", `s3://${bucket}/${key}`);
    },
    async rb(bucket) {
      await s3cmd("rb", "--recursive", "--force", `s3://${bucket}`);
    },
  };
}

// ------------------------------------------------------------------------------------------------

before(async () => {
  ep = await startEndpoint({ minPartSize: PART });
  calls = countStoreCalls(ep.repo.store);
  work = mkdtempSync(join(tmpdir(), "stowage-clients-"));
  small = join(work, "small.bin");
  big = join(work, "big.bin");
  writeFileSync(small, randomBytes(SMALL_SIZE));
  writeFileSync(big, randomBytes(BIG_SIZE));
  // A tree of 56 small files over nested directories, one name with a space.
  tree = join(work, "tree");
  for (const d of ["", "a", "a/b", "a/b/c", "d"]) {
    mkdirSync(join(tree, d), { recursive: true });
    for (let i = 0; i < 11; i++) writeFileSync(join(tree, d, `f${i}.txt`), `${d}/${i} ${randomBytes(8 + i * 13).toString("hex")}\n`);
  }
  writeFileSync(join(tree, "a", "with space.txt"), "spaced\n");
  treeFiles = walk(tree);
  assert.equal(treeFiles.length, 56);
});

after(async () => {
  await ep.stop();
  rmSync(work, { recursive: true, force: true });
});

async function scenario(c: Client, bucket: string, t: TestContext): Promise<void> {
  const dir = mkdtempSync(join(work, `${c.name}-`));
  c.setup(dir);
  const bigData = readFileSync(big);
  const smallData = readFileSync(small);
  // One local tree per client, so that the modification in the third sync stays local to it.
  const localTree = join(dir, "tree");
  mkdirSync(localTree);
  for (const f of treeFiles) {
    mkdirSync(join(localTree, f, ".."), { recursive: true });
    writeFileSync(join(localTree, f), readFileSync(join(tree, f)));
  }

  await t.test("make bucket", async () => {
    await c.mb(bucket);
    assert.ok(await bucketExists(bucket), "the bucket exists in the store");
    assert.ok((await c.listBuckets()).includes(bucket), "the client lists the new bucket");
  });

  await t.test("upload and download a small and a multipart file, SHA-256 compared", async () => {
    const up = await callsDuring(bucket, async () => {
      await c.put(small, bucket, "small.bin", false);
      await c.put(big, bucket, "files/nested/big.bin", true);
    });
    assert.equal(up.putObject, 1, `one single PUT: ${JSON.stringify(up)}`);
    assert.equal(up.uploadPart, 4, `four 5 MiB parts: ${JSON.stringify(up)}`);
    assert.equal(up.completeMultipartUpload, 1);
    const stored = await storedObjects(bucket);
    assert.equal(stored.get("small.bin")?.etag, md5(smallData));
    assert.equal(stored.get("small.bin")?.size, SMALL_SIZE);
    assert.equal(stored.get("files/nested/big.bin")?.etag, multipartEtag(bigData, PART), "multipart ETag as S3 computes it");
    assert.equal(stored.get("files/nested/big.bin")?.size, BIG_SIZE);
    const dl = join(dir, "dl");
    mkdirSync(dl);
    await c.get(bucket, "small.bin", join(dl, "small.bin"));
    await c.get(bucket, "files/nested/big.bin", join(dl, "big.bin"));
    assert.equal(sha256File(join(dl, "small.bin")), sha256File(small));
    assert.equal(sha256File(join(dl, "big.bin")), sha256File(big));
  });

  await t.test("sync a directory tree: 56 files up, a second sync transfers nothing, a third only the changes", async () => {
    let reported = 0;
    const first = await callsDuring(bucket, async () => {
      reported = await c.syncUp(localTree, bucket, "tree/");
    });
    assert.equal(reported, 56, "the client reports 56 uploads");
    assert.equal(first.putObject, 56);
    const stored = await storedObjects(bucket, "tree/");
    assert.deepEqual(sorted([...stored.keys()]), sorted(treeFiles.map((f) => `tree/${f}`)));
    for (const f of treeFiles) assert.equal(stored.get(`tree/${f}`)?.etag, md5(readFileSync(join(localTree, f))), f);

    const second = await callsDuring(bucket, async () => {
      reported = await c.syncUp(localTree, bucket, "tree/");
    });
    assert.equal(reported, 0, "the client reports no uploads");
    assert.deepEqual(second, {}, "no object written, copied or deleted on the server");
    assert.deepEqual(await storedObjects(bucket, "tree/"), stored, "same objects, same ETags, same write sequence");

    writeFileSync(join(localTree, "a/b/f3.txt"), "changed, and longer than before: " + randomBytes(40).toString("hex"));
    writeFileSync(join(localTree, "d/new.txt"), "new file\n");
    const third = await callsDuring(bucket, async () => {
      reported = await c.syncUp(localTree, bucket, "tree/");
    });
    assert.equal(reported, 2);
    assert.equal(third.putObject, 2, JSON.stringify(third));
    const after3 = await storedObjects(bucket, "tree/");
    assert.equal(after3.size, 57);
    assert.equal(after3.get("tree/a/b/f3.txt")?.etag, md5(readFileSync(join(localTree, "a/b/f3.txt"))));
    for (const [k, v] of stored) if (k !== "tree/a/b/f3.txt") assert.equal(after3.get(k)?.sequence, v.sequence, `${k} untouched`);

    const down = join(dir, "tree-down");
    mkdirSync(down);
    await c.syncDown(bucket, "tree/", down);
    const localNow = walk(localTree);
    assert.deepEqual(walk(down), localNow, "the same files come back");
    for (const f of localNow) assert.equal(sha256File(join(down, f)), sha256File(join(localTree, f)), `downloaded ${f}`);
  });

  await t.test("list with prefixes and delimiters", async () => {
    const root = await c.list(bucket, "");
    assert.deepEqual(sorted(root.dirs), ["files/", "tree/"]);
    assert.deepEqual(sorted(root.files), ["small.bin"]);
    const files = await c.list(bucket, "files/");
    assert.deepEqual(files, { dirs: ["files/nested/"], files: [] });
    const nested = await c.list(bucket, "files/nested/");
    assert.deepEqual(nested, { dirs: [], files: ["files/nested/big.bin"] });
    const inTree = await c.list(bucket, "tree/");
    assert.deepEqual(sorted(inTree.dirs), ["tree/a/", "tree/d/"]);
    assert.deepEqual(sorted(inTree.files), sorted(treeFiles.filter((f) => !f.includes("/")).map((f) => `tree/${f}`)));
    const deep = await c.list(bucket, "tree/a/b/");
    assert.deepEqual(sorted(deep.dirs), ["tree/a/b/c/"]);
    assert.equal(deep.files.length, 11);
  });

  await t.test("server-side copy", async () => {
    const during = await callsDuring(bucket, async () => {
      await c.copy(bucket, "small.bin", "copies/small.bin");
      await c.copy(bucket, "files/nested/big.bin", "copies/big.bin");
    });
    assert.equal(during.putObject ?? 0, 0, `no object data uploaded: ${JSON.stringify(during)}`);
    assert.equal(during.uploadPart ?? 0, 0, `no part data uploaded: ${JSON.stringify(during)}`);
    assert.ok((during.copyObject ?? 0) + (during.uploadPartCopy ?? 0) >= 2, `copied on the server: ${JSON.stringify(during)}`);
    const stored = await storedObjects(bucket, "copies/");
    assert.equal(stored.get("copies/small.bin")?.etag, md5(smallData));
    assert.equal(stored.get("copies/big.bin")?.size, BIG_SIZE);
    const back = join(dir, "big-copy.bin");
    await c.get(bucket, "copies/big.bin", back);
    assert.equal(sha256File(back), sha256File(big));
  });

  await t.test("delete: recursive, single, then the bucket", async () => {
    await c.rmRecursive(bucket, "tree/");
    assert.equal((await storedObjects(bucket, "tree/")).size, 0, "nothing left under tree/");
    await c.rm(bucket, "small.bin");
    assert.deepEqual(sorted([...(await storedObjects(bucket)).keys()]), ["copies/big.bin", "copies/small.bin", "files/nested/big.bin"]);
    await c.rb(bucket);
    assert.equal(await bucketExists(bucket), false, "the bucket is gone");
  });
}

// The three clients run concurrently (each in its own bucket): they spend most of their time
// starting up and waiting, not on the server.
test("command-line clients", { concurrency: true }, async (t) => {
  await Promise.all(
    [awsClient(), rcloneClient(), s3cmdClient()].map((c) =>
      t.test(`${c.name}${c.bin === undefined ? "" : ` (${c.bin})`}`, async (tc) => {
        if (c.bin === undefined) {
          tc.skip(`${c.name} is not installed (run scripts/install-s3-clients.sh)`);
          return;
        }
        await scenario(c, `${c.name.replace(/[^a-z0-9]/g, "")}-bucket`, tc);
      }),
    ),
  );
});
