import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openKv } from "../src/kv/index.js";

const BIN = "dist/src/cli/main.js";

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the stowage bin is executable (npx stowage runs it directly)", () => {
  assert.notEqual(statSync(BIN).mode & 0o111, 0);
});

test("stowage serve says it is not implemented and exits 2", () => {
  const r = run("serve", "--data", join(tmpdir(), "stowage-cli-unused"));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /not implemented/);
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
