/**
 * The command-line contract, end to end: every test spawns `node dist/src/cli/main.js` in a
 * controlled environment (no inherited STOWAGE_* variables) against its own temporary repository.
 * Each CLI invocation is a new node process, so the tests run concurrently and keep their
 * invocations few; repositories use a cheap key-file KDF (`--kdf-cost 10`).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** dist/test/cli/repo.test.js -> dist/src/cli/main.js, whatever the working directory. */
const BIN = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const PASSPHRASE = "correct horse battery staple";

interface RunResult {
  status: number | null;
  stdout: Buffer;
  /** stdout as UTF-8. */
  out: string;
  stderr: string;
}

interface RunOptions {
  /** Extra environment; `undefined` removes a variable. STOWAGE_PASSPHRASE is set unless overridden. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to stdin (which is always a pipe, never a terminal), then closed. */
  input?: Buffer | string;
}

/** The environment of the test process without any STOWAGE_* variable, plus `extra`. */
function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("STOWAGE_")) env[k] = v;
  const merged: Record<string, string | undefined> = { STOWAGE_PASSPHRASE: PASSPHRASE, ...extra };
  for (const [k, v] of Object.entries(merged)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function run(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? tmpdir(),
      env: cleanEnv(options.env),
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", reject);
    child.on("close", (status) => {
      const stdout = Buffer.concat(out);
      resolvePromise({ status, stdout, out: stdout.toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

function describeRun(args: string[], r: RunResult): string {
  return `stowage ${args.join(" ")} -> ${String(r.status)}\nstderr: ${r.stderr}\nstdout: ${r.out.slice(0, 2000)}`;
}

/** A repository in a fresh temporary directory; `cli` appends `--data DIR`. */
class Repo {
  constructor(
    readonly root: string,
    readonly data: string,
  ) {}

  static async create(name: string): Promise<Repo> {
    const root = await mkdtemp(join(tmpdir(), `stowage-cli-${name}-`));
    const repo = new Repo(root, join(root, "data"));
    await repo.ok(["init", "--kdf-cost", "10"]);
    return repo;
  }

  cli(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run([...args, "--data", this.data], options);
  }

  /** Runs and asserts exit status 0. */
  async ok(args: string[], options: RunOptions = {}): Promise<RunResult> {
    const r = await this.cli(args, options);
    assert.equal(r.status, 0, describeRun(args, r));
    return r;
  }

  /** Runs and asserts status 1 and `stowage: CODE:` on stderr. */
  async fails(code: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const r = await this.cli(args, options);
    assert.equal(r.status, 1, describeRun(args, r));
    assert.match(r.stderr, new RegExp(`^stowage: ${code}: `, "m"), describeRun(args, r));
    return r;
  }

  async json<T>(args: string[]): Promise<T> {
    const r = await this.ok([...args, "--json"]);
    return JSON.parse(r.out) as T;
  }

  async stats(): Promise<Stats> {
    const r = await this.ok(["stats", "--json"]);
    const parsed = JSON.parse(r.out) as unknown;
    assert.ok(typeof parsed === "object" && parsed !== null && !Array.isArray(parsed), "stats --json prints one JSON object");
    return parsed as Stats;
  }

  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  async dispose(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}

interface Stats {
  logicalBytes: number;
  storedBytes: number;
  journalBytes: number;
  dedupRatio: number;
  compressionRatio: number;
  objects: number;
  chunks: number;
  packs: number;
  backendPuts: number;
  plainPuts: number;
  monthlyCost: number;
  plainMonthlyCost: number;
}

const STATS_FIELDS = [
  "logicalBytes",
  "storedBytes",
  "journalBytes",
  "dedupRatio",
  "compressionRatio",
  "objects",
  "chunks",
  "packs",
  "backendPuts",
  "plainPuts",
  "monthlyCost",
  "plainMonthlyCost",
] as const;

function checkStatsShape(s: Stats): void {
  for (const f of STATS_FIELDS) {
    const v: unknown = s[f];
    assert.ok(typeof v === "number" && Number.isFinite(v) && v >= 0, `stats.${f} = ${JSON.stringify(v)}`);
  }
  for (const f of ["logicalBytes", "storedBytes", "objects", "chunks", "packs", "backendPuts", "plainPuts"] as const) {
    assert.ok(Number.isInteger(s[f]), `stats.${f} is an integer`);
  }
}

interface ListedObject {
  key: string;
  size: number;
  etag: string;
  lastModified: string;
  contentType: string;
  versionId: string;
  deleteMarker?: boolean;
}

/** Every regular file under `dir`, relative with `/` separators, sorted, with contents. */
async function readTree(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  async function visit(d: string, rel: string): Promise<void> {
    const entries = await readdir(d, { withFileTypes: true });
    for (const e of entries) {
      const r = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) await visit(join(d, e.name), r);
      else files.set(r, await readFile(join(d, e.name)));
    }
  }
  await visit(dir, "");
  return new Map([...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

async function writeTree(dir: string, files: Record<string, Buffer | string>): Promise<void> {
  for (const [rel, body] of Object.entries(files)) {
    const p = join(dir, ...rel.split("/"));
    await mkdir(join(p, ".."), { recursive: true });
    await writeFile(p, body);
  }
}

/** Every file under DATA/bucket/packs/ with its size. */
async function packFiles(data: string): Promise<Array<{ path: string; size: number }>> {
  const found: Array<{ path: string; size: number }> = [];
  async function visit(d: string): Promise<void> {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await visit(p);
      else if (e.isFile()) found.push({ path: p, size: (await stat(p)).size });
    }
  }
  await visit(join(data, "bucket", "packs"));
  return found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** About `bytes` of repetitive log text: compresses well. */
function logText(bytes: number): string {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const line = `2026-11-26T12:${String(i % 60).padStart(2, "0")}:00Z INFO request served method=GET path=/media/clip-${i % 17}.mov status=200 bytes=${(i * 7919) % 100000}\n`;
    lines.push(line);
    n += line.length;
  }
  return lines.join("");
}

describe("stowage CLI on a repository", { concurrency: true }, () => {
  test("init, a second init, missing repository, missing or wrong key, and where the data directory comes from", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-cli-init-"));
    try {
      const data = join(root, "repo");
      const first = await run(["init", "--data", data, "--kdf-cost", "10"]);
      assert.equal(first.status, 0, first.stderr);
      assert.match(first.out, /initialized/);
      assert.ok(existsSync(join(data, "stowage.json")));

      const again = await run(["init", "--data", data, "--kdf-cost", "10"]);
      assert.equal(again.status, 1);
      assert.match(again.stderr, /^stowage: STOWAGE_REPO_EXISTS: /m);

      // A directory that holds no repository (and one that does not exist at all).
      const empty = join(root, "empty");
      await mkdir(empty);
      await writeFile(join(root, "f.txt"), "x");
      const notFound = await run(["put", join(root, "f.txt"), "media/f.txt", "--data", empty]);
      assert.equal(notFound.status, 1, notFound.stderr);
      assert.match(notFound.stderr, /^stowage: STOWAGE_REPO_NOT_FOUND: /m);
      assert.deepEqual(await readdir(empty), [], "a failed command creates nothing");

      // No passphrase in the environment and stdin is a pipe, not a terminal: a clear error, no prompt.
      const noKey = await run(["ls", "--data", data], { env: { STOWAGE_PASSPHRASE: undefined } });
      assert.equal(noKey.status, 1, noKey.stderr);
      assert.match(noKey.stderr, /^stowage: STOWAGE_NO_KEY: .*STOWAGE_PASSPHRASE/m);
      assert.doesNotMatch(noKey.stderr, /passphrase: $/);
      const noKeyInit = await run(["init", "--data", join(root, "nokey"), "--kdf-cost", "10"], { env: { STOWAGE_PASSPHRASE: undefined } });
      assert.equal(noKeyInit.status, 1, noKeyInit.stderr);
      assert.match(noKeyInit.stderr, /^stowage: STOWAGE_NO_KEY: /m);
      assert.equal(existsSync(join(root, "nokey", "stowage.json")), false);

      const wrong = await run(["ls", "--data", data], { env: { STOWAGE_PASSPHRASE: "not the passphrase" } });
      assert.equal(wrong.status, 1, wrong.stderr);
      assert.match(wrong.stderr, /^stowage: STOWAGE_BAD_PASSPHRASE: /m);

      // STOWAGE_DATA when --data is absent (relative to the working directory); --data wins over it.
      const viaEnv = await run(["init", "--kdf-cost", "10"], { cwd: root, env: { STOWAGE_DATA: "from-env" } });
      assert.equal(viaEnv.status, 0, viaEnv.stderr);
      assert.ok(existsSync(join(root, "from-env", "stowage.json")));
      const flagWins = await run(["ls", "--json", "--data", join(root, "from-env")], { env: { STOWAGE_DATA: empty } });
      assert.equal(flagWins.status, 0, flagWins.stderr);
      assert.deepEqual(JSON.parse(flagWins.out), []);

      // Neither: ./stowage-data under the working directory, for init and for the other commands.
      const cwd = join(root, "work");
      await mkdir(cwd);
      const viaDefault = await run(["init", "--kdf-cost", "10"], { cwd });
      assert.equal(viaDefault.status, 0, viaDefault.stderr);
      assert.ok(existsSync(join(cwd, "stowage-data", "stowage.json")));
      const lsDefault = await run(["ls", "--json"], { cwd });
      assert.equal(lsDefault.status, 0, lsDefault.stderr);
      assert.deepEqual(JSON.parse(lsDefault.out), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test("put and get: files, stdin, stdout, ranges, whole directories, ls, rm", async () => {
    const repo = await Repo.create("putget");
    try {
      const clip = randomBytes(700_000);
      await writeFile(repo.path("clip.bin"), clip);

      // A fresh repository has no bucket: the first put creates it.
      await repo.ok(["put", repo.path("clip.bin"), "media/clip.bin"]);
      const buckets = await repo.json<Array<{ name: string; created: string; versioning: string }>>(["ls"]);
      assert.equal(buckets.length, 1);
      assert.equal(buckets[0]!.name, "media");
      assert.ok(!Number.isNaN(Date.parse(buckets[0]!.created)));
      assert.equal(typeof buckets[0]!.versioning, "string");

      // LOCAL ending in "/" is a directory (created when missing): the file keeps the key's base name.
      await repo.ok(["get", "media/clip.bin", repo.path("out") + "/"]);
      assert.deepEqual(await readdir(repo.path("out")), ["clip.bin"]);
      assert.ok((await readFile(repo.path("out", "clip.bin"))).equals(clip), "get returns the bytes put");

      const notes = Buffer.from("notes from standard input\n".repeat(40));
      await repo.ok(["put", "-", "media/notes.txt"], { input: notes });
      const toStdout = await repo.ok(["get", "media/notes.txt", "-"]);
      assert.ok(toStdout.stdout.equals(notes), "put - / get - round-trip through stdin and stdout");

      const ranged = await repo.ok(["get", "media/clip.bin", "-", "--range", "10-19"]);
      assert.equal(ranged.stdout.length, 10);
      assert.ok(ranged.stdout.equals(clip.subarray(10, 20)));

      // A directory tree, recursively, under a prefix.
      const tree: Record<string, Buffer> = {
        "a.json": Buffer.from('{"shot":1}'),
        "b.txt": Buffer.from("b"),
        "frames/0001.exr": randomBytes(30_000),
        "frames/0002.exr": randomBytes(30_000),
        "frames/deep/er/x.bin": randomBytes(5_000),
        "empty.dat": Buffer.alloc(0),
      };
      await writeTree(repo.path("tree"), tree);
      await repo.ok(["put", repo.path("tree"), "media/shots/"]);
      const listed = await repo.json<ListedObject[]>(["ls", "media/shots/", "--recursive"]);
      const expectedKeys = Object.keys(tree)
        .map((k) => `shots/${k}`)
        .sort();
      assert.deepEqual(
        listed.map((o) => o.key),
        expectedKeys,
      );
      for (const o of listed) assert.equal(o.size, tree[o.key.slice("shots/".length)]!.length, o.key);

      await repo.ok(["get", "media/shots/", repo.path("restored")]);
      const restored = await readTree(repo.path("restored"));
      assert.deepEqual([...restored.keys()], Object.keys(tree).sort());
      for (const [rel, body] of restored) assert.ok(body.equals(tree[rel]!), `restored ${rel} is identical`);

      // ls BUCKET groups by "/": the tree shows as one prefix.
      const grouped = await repo.json<{ objects: ListedObject[]; prefixes: string[] }>(["ls", "media"]);
      assert.deepEqual(
        grouped.objects.map((o) => o.key),
        ["clip.bin", "notes.txt"],
      );
      assert.deepEqual(grouped.prefixes, ["shots/"]);
      const clipEntry = grouped.objects[0]!;
      assert.equal(clipEntry.size, clip.length);
      assert.match(clipEntry.etag, /^[0-9a-f]{32}/);
      assert.ok(!Number.isNaN(Date.parse(clipEntry.lastModified)));
      assert.equal(typeof clipEntry.contentType, "string");
      assert.equal(typeof clipEntry.versionId, "string");
      const groupedText = await repo.ok(["ls", "media/shots/"]);
      assert.match(groupedText.out, /PRE\s+shots\/frames\/$/m);
      assert.match(groupedText.out, /\s1\d\s+shots\/a\.json$/m);

      // rm, then the object is gone: get fails and writes no file; a second rm fails too.
      await repo.ok(["rm", "media/notes.txt"]);
      const gone = await repo.fails("STOWAGE_NO_SUCH_KEY", ["get", "media/notes.txt", repo.path("gone.txt")]);
      assert.equal(gone.out, "");
      assert.equal(existsSync(repo.path("gone.txt")), false);
      await repo.fails("STOWAGE_NO_SUCH_KEY", ["rm", "media/notes.txt"]);
    } finally {
      await repo.dispose();
    }
  });

  test("cp and snapshot cost no storage; versioning keeps old versions; invalid names and missing files fail", async () => {
    const repo = await Repo.create("cpver");
    try {
      const body = randomBytes(400_000);
      await writeFile(repo.path("src.bin"), body);
      await writeTree(repo.path("set"), { "one.txt": "one", "sub/two.txt": "two" });
      await repo.ok(["put", repo.path("src.bin"), "media/src.bin"]);
      await repo.ok(["put", repo.path("set"), "media/set/"]);
      const before = await repo.stats();

      await repo.ok(["cp", "media/src.bin", "archive/copy.bin"]);
      const afterCopy = await repo.stats();
      // A copy stores no data: only its journal entry (a few hundred bytes and its manifest), in a
      // pack whose framing (index and trailer) costs a few hundred bytes more.
      const dataBytes = (s: Stats): number => s.storedBytes - s.journalBytes;
      assert.ok(Math.abs(dataBytes(afterCopy) - dataBytes(before)) < 1024, `a copy stores no data: ${dataBytes(before)} -> ${dataBytes(afterCopy)}`);
      assert.ok(afterCopy.journalBytes - before.journalBytes < 16 * 1024, `journal bytes ${before.journalBytes} -> ${afterCopy.journalBytes}`);
      assert.equal(afterCopy.logicalBytes, before.logicalBytes + body.length);
      assert.equal(afterCopy.objects, before.objects + 1);
      const original = await repo.ok(["get", "media/src.bin", "-"]);
      assert.ok(original.stdout.equals(body), "the source still reads back");
      await repo.ok(["get", "archive/copy.bin", repo.path("copy.bin")]);
      assert.ok((await readFile(repo.path("copy.bin"))).equals(body), "the copy reads back");

      const snap = await repo.json<{ objects: number; bytes: number }>(["snapshot", "media/set/", "archive/snap/"]);
      assert.equal(snap.objects, 2);
      assert.equal(snap.bytes, 6);
      await repo.ok(["get", "archive/snap/", repo.path("snapout")]);
      const snapTree = await readTree(repo.path("snapout"));
      assert.deepEqual(
        [...snapTree.entries()].map(([k, v]) => [k, v.toString()]),
        [
          ["one.txt", "one"],
          ["sub/two.txt", "two"],
        ],
      );
      const afterSnap = await repo.stats();
      assert.ok(Math.abs(dataBytes(afterSnap) - dataBytes(before)) < 2048, `a snapshot stores no data: ${dataBytes(before)} -> ${dataBytes(afterSnap)}`);
      assert.equal(afterSnap.objects, before.objects + 3);

      // Versioning: an overwrite keeps the old version, readable by its id.
      await writeFile(repo.path("v1.txt"), "version one of the document");
      await writeFile(repo.path("v2.txt"), "version two, a little longer than one");
      const on = await repo.ok(["versioning", "docs", "on"]);
      assert.match(on.out, /enabled/);
      await repo.ok(["put", repo.path("v1.txt"), "docs/doc.txt"]);
      await repo.ok(["put", repo.path("v2.txt"), "docs/doc.txt"]);
      const versions = await repo.json<ListedObject[]>(["ls", "docs", "--versions"]);
      assert.equal(versions.length, 2);
      assert.ok(versions.every((v) => v.key === "doc.txt" && v.deleteMarker !== true));
      assert.notEqual(versions[0]!.versionId, versions[1]!.versionId);
      const old = versions.find((v) => v.size === "version one of the document".length);
      assert.ok(old !== undefined, JSON.stringify(versions));
      const oldBody = await repo.ok(["get", "docs/doc.txt", "-", "--version-id", old.versionId]);
      assert.equal(oldBody.out, "version one of the document");

      // Invalid names and missing local files.
      const short = await repo.fails("STOWAGE_INVALID_NAME", ["put", repo.path("v1.txt"), "ab/KEY"]);
      assert.match(short.stderr, /"ab"/);
      const missing = await repo.cli(["put", repo.path("no-such-file.bin"), "media/x.bin"]);
      assert.notEqual(missing.status, 0);
      assert.match(missing.stderr, /^stowage: /m);
      assert.match(missing.stderr, /no-such-file\.bin/);
      assert.match(missing.stderr, /ENOENT|no such file/i);
    } finally {
      await repo.dispose();
    }
  });

  test("stats --json: dedup of one file under three keys", async () => {
    const repo = await Repo.create("dedup");
    try {
      const size = 2 * 1024 * 1024;
      const body = randomBytes(size);
      // Two copies uploaded at once (one process), a third by a later process.
      await writeTree(repo.path("two"), { "a.mov": body, "b.mov": body });
      await writeFile(repo.path("c.mov"), body);
      await repo.ok(["put", repo.path("two"), "media/"]);
      await repo.ok(["put", repo.path("c.mov"), "media/c.mov"]);
      const r = await repo.ok(["stats", "--json"]);
      const s = JSON.parse(r.out) as Stats;
      assert.ok(typeof s === "object" && !Array.isArray(s));
      checkStatsShape(s);
      assert.equal(s.logicalBytes, 3 * size);
      assert.equal(s.objects, 3);
      assert.ok(Math.abs(s.dedupRatio - 3) < 0.01, `dedupRatio ${s.dedupRatio}`);
      assert.ok(s.storedBytes >= size && s.storedBytes < size * 1.05, `storedBytes ${s.storedBytes}`);
      assert.ok(s.compressionRatio >= 0.99 && s.compressionRatio < 1.05, `random data does not compress: ${s.compressionRatio}`);
      assert.ok(s.chunks >= 1 && s.packs >= 1);
      assert.equal(s.plainPuts, 3);
      assert.ok(s.backendPuts >= 1 && s.backendPuts <= 3);
      assert.ok(s.monthlyCost > 0 && s.monthlyCost < s.plainMonthlyCost, `${s.monthlyCost} < ${s.plainMonthlyCost}`);
    } finally {
      await repo.dispose();
    }
  });

  test("checkpoint, then recover from the bucket alone: the bucket from STOWAGE_BUCKET (or a clear error), to now and to an earlier time", async () => {
    const repo = await Repo.create("recover");
    try {
      const body = randomBytes(50_000);
      await writeFile(repo.path("f"), body);
      await repo.ok(["put", repo.path("f"), "media/f"]);
      const cp = await repo.json<{ key: string; index: number }>(["checkpoint"]);
      assert.match(cp.key, /^checkpoints\/[0-9a-f]{16}-[0-9a-f]{8}$/);
      await new Promise((r) => setTimeout(r, 50));
      const before = new Date().toISOString();
      await new Promise((r) => setTimeout(r, 50));
      await repo.ok(["rm", "media/f"]);
      const env = { STOWAGE_BUCKET: repo.path("data", "bucket") };

      const now = new Repo(repo.root, repo.path("now"));
      await now.fails("STOWAGE_INVALID_ARGUMENT", ["recover"]);
      const r = JSON.parse((await now.ok(["recover", "--json"], { env })).out) as { checkpoint?: string; fsck: { ok: boolean } };
      assert.equal(r.checkpoint, cp.key);
      assert.ok(r.fsck.ok);
      assert.doesNotMatch((await now.ok(["ls", "media"])).out, /\bf\b/, "deleted after the checkpoint: gone");

      const then = new Repo(repo.root, repo.path("then"));
      await then.fails("STOWAGE_INVALID_ARGUMENT", ["recover", "--to-time", "yesterday"], { env });
      await then.ok(["recover", "--to-time", before], { env });
      assert.ok((await then.ok(["get", "media/f", "-"])).stdout.equals(body), "as it was before the delete");
    } finally {
      await repo.dispose();
    }
  });

  test("init with tiers; stats shows them, and still answers when the Kafka event log is unreachable", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-cli-tiers-"));
    const repo = new Repo(root, join(root, "data"));
    try {
      await repo.ok(["init", "--kdf-cost", "10", "--local-tier", join(root, "local"), "--local-capacity", "10MiB", "--secondary", `file://${join(root, "secondary")}`]);
      const config = JSON.parse(await readFile(join(repo.data, "stowage.json"), "utf8")) as { tiers: { local: { capacityBytes: number } } };
      assert.equal(config.tiers.local.capacityBytes, 10 * 1024 * 1024);
      await writeFile(repo.path("f"), randomBytes(300_000));
      await repo.ok(["put", repo.path("f"), "media/f"]);
      const text = await repo.ok(["stats"]);
      // Two packs: the bucket's creation (its journal entry, waited for), then the data with its put intent.
      assert.match(text.out, /^local tier +29[0-9]\.[0-9] KiB in 2 blobs, capacity 10\.0 MiB/m, text.out);
      assert.match(text.out, /^hydrator backlog +0 events/m, text.out);
      // The events are in the outbox until a gateway relays them.
      assert.match(text.out, /^outbox +[1-9][0-9]* events/m, text.out);
      // Point the event log at a port where no broker listens: stats still answers.
      const withKafka = { ...JSON.parse(await readFile(join(repo.data, "stowage.json"), "utf8")), events: { kind: "kafka", brokers: ["127.0.0.1:1"] } } as object;
      await writeFile(join(repo.data, "stowage.json"), JSON.stringify(withKafka));
      const down = await repo.ok(["stats"]);
      assert.match(down.out, /^hydrator backlog +unknown/m, down.out);
      assert.match(down.out, /^event log +unavailable: kafka event log/m, down.out);
      await repo.fails("STOWAGE_INVALID_ARGUMENT", ["init", "--local-tier", join(root, "x")], { env: {} });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test("stats --json: compression of text and fewer PUTs than a plain upload of 50 small files", async () => {
    const repo = await Repo.create("small");
    try {
      const files: Record<string, string> = {};
      for (let i = 0; i < 50; i++) files[`s${String(i).padStart(2, "0")}.json`] = JSON.stringify({ frame: i, shot: `sh${i % 7}`, note: "x".repeat(i) });
      await writeTree(repo.path("sidecars"), files);
      const log = logText(1_000_000);
      await writeFile(repo.path("server.log"), log);
      await repo.ok(["put", repo.path("sidecars"), "meta/sidecars/"]);
      await repo.ok(["put", repo.path("server.log"), "meta/server.log"]);
      const s = await repo.stats();
      checkStatsShape(s);
      assert.equal(s.objects, 51);
      const smallBytes = Object.values(files).reduce((n, f) => n + Buffer.byteLength(f), 0);
      assert.equal(s.logicalBytes, smallBytes + log.length);
      assert.ok(s.compressionRatio > 2, `compressionRatio ${s.compressionRatio}`);
      assert.ok(s.storedBytes < s.logicalBytes / 2, `storedBytes ${s.storedBytes} of ${s.logicalBytes}`);
      assert.ok(Math.abs(s.dedupRatio - 1) < 0.01, `dedupRatio ${s.dedupRatio}`);
      assert.equal(s.plainPuts, 51);
      assert.ok(s.backendPuts < s.plainPuts, `backendPuts ${s.backendPuts} < plainPuts ${s.plainPuts}`);
      assert.ok(s.packs >= 1 && s.packs <= s.backendPuts);
      assert.ok(s.chunks >= 51);
      assert.ok(s.monthlyCost < s.plainMonthlyCost);
    } finally {
      await repo.dispose();
    }
  });

  test("gc --dry-run changes nothing, gc reclaims; fsck; rebuild-index; a flipped byte fails fsck --read-data and get with no output file", async () => {
    const repo = await Repo.create("gc");
    try {
      const keep = randomBytes(1_500_000);
      const small = Buffer.from("small and safe\n");
      await writeTree(repo.path("keep"), { "keep.bin": keep, "small.txt": small });
      await writeFile(repo.path("doomed.bin"), randomBytes(800_000));
      await repo.ok(["put", repo.path("keep"), "vault/data/"]);
      await repo.ok(["put", repo.path("doomed.bin"), "vault/doomed.bin"]);
      await repo.ok(["rm", "vault/doomed.bin"]);

      const s1 = await repo.stats();
      const packs1 = await packFiles(repo.data);
      const dry = await repo.json<{ dryRun: boolean; bytesReclaimable: number; deadBytes: number; packsRecycled: number }>(["gc", "--dry-run"]);
      assert.equal(dry.dryRun, true);
      assert.ok(dry.bytesReclaimable >= 800_000, `dry run reports reclaimable bytes: ${JSON.stringify(dry)}`);
      assert.ok(dry.deadBytes >= 800_000);
      assert.ok(dry.packsRecycled >= 1);
      assert.deepEqual(await repo.stats(), s1, "a dry run changes nothing");
      assert.deepEqual(await packFiles(repo.data), packs1, "a dry run leaves the packs alone");

      const gc = await repo.json<{ dryRun: boolean; bytesReclaimed: number; packsDeleted: number }>(["gc", "--grace", "0"]);
      assert.equal(gc.dryRun, false);
      assert.ok(gc.packsDeleted >= 1, JSON.stringify(gc));
      assert.ok(gc.bytesReclaimed >= 800_000, JSON.stringify(gc));
      const s2 = await repo.stats();
      assert.ok(s2.storedBytes <= s1.storedBytes - 800_000, `storedBytes ${s1.storedBytes} -> ${s2.storedBytes}`);
      assert.equal(s2.logicalBytes, s1.logicalBytes);

      const ok = await repo.json<{ ok: boolean; problems: unknown[] }>(["fsck"]);
      assert.equal(ok.ok, true);
      assert.deepEqual(ok.problems, []);
      const rebuilt = await repo.json<{ packsRead: number; chunksIndexed: number; missingChunks: number }>(["rebuild-index"]);
      assert.ok(rebuilt.packsRead >= 1 && rebuilt.chunksIndexed >= 2, JSON.stringify(rebuilt));
      assert.equal(rebuilt.missingChunks, 0);
      await repo.ok(["get", "vault/data/", repo.path("intact")]);
      const intact = await readTree(repo.path("intact"));
      assert.ok(intact.get("keep.bin")?.equals(keep) === true, "keep.bin reads back after gc and rebuild-index");
      assert.ok(intact.get("small.txt")?.equals(small) === true);

      // Flip one byte in the middle of the biggest pack: keep.bin's data.
      const packs = await packFiles(repo.data);
      assert.ok(packs.length >= 1);
      const target = packs.reduce((a, b) => (b.size > a.size ? b : a));
      assert.ok(target.size > 1_000_000, JSON.stringify(packs));
      const bytes = await readFile(target.path);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = bytes[at]! ^ 0x5a;
      await writeFile(target.path, bytes);

      const damaged = await repo.cli(["fsck", "--read-data"]);
      assert.notEqual(damaged.status, 0, describeRun(["fsck", "--read-data"], damaged));
      assert.match(damaged.out, /data\/keep\.bin/, "fsck names the affected object");
      assert.doesNotMatch(damaged.out, /small\.txt/);

      const dir = repo.path("target");
      await mkdir(dir);
      const failed = await repo.fails("STOWAGE_INTEGRITY", ["get", "vault/data/keep.bin", join(dir, "keep.bin")]);
      assert.match(failed.stderr, /keep\.bin/);
      assert.deepEqual(await readdir(dir), [], "no output file, partial or temporary, is left");
      await repo.fails("STOWAGE_INTEGRITY", ["get", "vault/data/", repo.path("tree-out")]);
      const partial = existsSync(repo.path("tree-out")) ? await readdir(repo.path("tree-out")) : [];
      assert.ok(
        partial.every((f) => f === "small.txt"),
        `only intact files may be written: ${JSON.stringify(partial)}`,
      );
    } finally {
      await repo.dispose();
    }
  });

  test("durability: shown, set to cloud (creating the bucket), local refused without a local tier, bad policy refused", async () => {
    const repo = await Repo.create("durability");
    try {
      await repo.fails("STOWAGE_NO_SUCH_BUCKET", ["durability", "media"]);
      const set = await repo.ok(["durability", "media", "cloud"]);
      assert.match(set.out, /^media: durability cloud$/m);
      assert.deepEqual(await repo.json<{ bucket: string; durability: string }>(["durability", "media"]), { bucket: "media", durability: "cloud" });
      const local = await repo.fails("STOWAGE_INVALID_ARGUMENT", ["durability", "media", "local"]);
      assert.match(local.stderr, /write-back durability needs a local tier/);
      await repo.fails("STOWAGE_INVALID_ARGUMENT", ["durability", "fresh", "local"]);
      await repo.fails("STOWAGE_NO_SUCH_BUCKET", ["durability", "fresh"]);
      await repo.fails("STOWAGE_INVALID_ARGUMENT", ["durability", "media", "tape"]);
      const buckets = await repo.json<Array<{ name: string; durability: string }>>(["ls"]);
      assert.deepEqual(buckets.map((b) => [b.name, b.durability]), [["media", "cloud"]]);
    } finally {
      await repo.dispose();
    }
  });
});
