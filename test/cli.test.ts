import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { openKv } from "../src/kv/index.js";

const BIN = "dist/src/cli/main.js";

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the stowage bin is executable (npx stowage runs it directly)", () => {
  assert.notEqual(statSync(BIN).mode & 0o111, 0);
});

test("run as an executable, the bin starts node with its shebang's V8 flags, which this node accepts", () => {
  const first = readFileSync(BIN, "utf8").split("\n", 1)[0]!;
  const m = /^#!\/usr\/bin\/env -S node (.+)$/.exec(first);
  assert.ok(m !== null, `unexpected shebang ${first}`);
  const flags = m[1]!.split(" ");
  assert.ok(flags.includes("--initial-old-space-size=64"), first);
  // A flag this node does not know would make every `npx stowage` fail before any of our code runs.
  const probe = spawnSync(process.execPath, [...flags, "-e", "process.stdout.write(process.execArgv.join(' '))"], { encoding: "utf8" });
  assert.equal(probe.status, 0, probe.stderr);
  assert.ok(probe.stdout.startsWith(flags.join(" ")), probe.stdout);
  const direct = spawnSync(BIN, ["--version"], { encoding: "utf8", env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env["PATH"] ?? ""}` } });
  assert.equal(direct.status, 0, direct.stderr);
  assert.match(direct.stdout, /^\d+\.\d+\.\d+/);
});

test("stowage serve starts on a bare data directory, prints endpoint and credentials, serves /health, drains on SIGTERM", async () => {
  const dir = mkdtempSync(join(tmpdir(), "stowage-serve-"));
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("STOWAGE_")) delete env[k];
  const child = spawn(process.execPath, [BIN, "serve", "--data", dir, "--port", "0", "--log-level", "warn"], { env, stdio: ["ignore", "pipe", "pipe"] });
  try {
    let stderr = "";
    const endpoint = await new Promise<string>((resolve, reject) => {
      child.stderr.on("data", (b: Buffer) => {
        stderr += b.toString();
        const m = /S3 endpoint (http:\/\/[^ ]+)/.exec(stderr);
        if (m !== null && /secret key /.test(stderr)) resolve(m[1]!);
      });
      child.on("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
    assert.match(stderr, /access key STW[A-Z2-7]{17}/);
    assert.match(stderr, /secret key \S{20,}/);
    const health = await fetch(`${endpoint}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const anon = await fetch(`${endpoint}/`);
    assert.equal(anon.status, 403);
    assert.ok(statSync(join(dir, "stowage.json")).isFile(), "the repository was created");
    assert.equal(statSync(join(dir, "credentials.json")).mode & 0o077, 0, "credentials are private");
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    // The other commands open a repository serve created, with no key in the environment.
    const stats = spawnSync(process.execPath, [BIN, "stats", "--json", "--data", dir], { env, encoding: "utf8" });
    assert.equal(stats.status, 0, stats.stderr);
    assert.equal((JSON.parse(stats.stdout) as { objects: number }).objects, 0);
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("stowage kv-stats --json reports a store's sequence and levels; a missing store fails", async () => {
  const dir = mkdtempSync(join(tmpdir(), "stowage-cli-"));
  try {
    const db = await openKv(join(dir, "kv"));
    await db.put("a", "1");
    await db.put("b", "2");
    await db.close();
    const r = run("kv-stats", join(dir, "kv"), "--json");
    assert.equal(r.status, 0, r.stderr);
    const stats = JSON.parse(r.stdout) as { sequence: number; levels: unknown[] };
    assert.equal(stats.sequence, 2);
    assert.equal(stats.levels.length, 7);
    const missing = run("kv-stats", join(dir, "nope"), "--json");
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /STOWAGE_KV_NOT_FOUND/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("stowage serve --webdav: a WebDAV endpoint beside S3, behind the same access keys; SIGTERM stops both", async () => {
  const dir = mkdtempSync(join(tmpdir(), "stowage-dav-"));
  const env: NodeJS.ProcessEnv = { ...process.env, STOWAGE_ROOT_ACCESS_KEY: "davaccess", STOWAGE_ROOT_SECRET_KEY: "davsecret-123456" };
  for (const k of Object.keys(env)) if (k.startsWith("STOWAGE_") && !k.startsWith("STOWAGE_ROOT_")) delete env[k];
  const child = spawn(process.execPath, [BIN, "serve", "--data", dir, "--port", "0", "--webdav", "0", "--log-level", "warn"], { env, stdio: ["ignore", "pipe", "pipe"] });
  try {
    let stderr = "";
    const dav = await new Promise<string>((resolve, reject) => {
      child.stderr.on("data", (b: Buffer) => {
        stderr += b.toString();
        const m = /WebDAV endpoint (http:\/\/\S+)/.exec(stderr);
        if (m !== null) resolve(m[1]!);
      });
      child.on("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
    const auth = { Authorization: `Basic ${Buffer.from("davaccess:davsecret-123456").toString("base64")}` };
    assert.equal((await fetch(dav, { method: "PROPFIND", headers: { Depth: "0" } })).status, 401);
    assert.equal((await fetch(`${dav}media`, { method: "MKCOL", headers: auth })).status, 201);
    assert.equal((await fetch(`${dav}media/a.txt`, { method: "PUT", headers: auth, body: "over webdav" })).status, 201);
    const listing = await fetch(`${dav}media/`, { method: "PROPFIND", headers: { ...auth, Depth: "1" } });
    assert.equal(listing.status, 207);
    assert.match(await listing.text(), /<D:href>\/media\/a\.txt<\/D:href>/i);
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    const ls = spawnSync(process.execPath, [BIN, "ls", "--data", dir, "media"], { env, encoding: "utf8" });
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /a\.txt/);
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
