import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compress } from "zstd-napi";
import {
  type DatasetEntry,
  type DatasetPlan,
  MB,
  PRESETS,
  entryBytes,
  entryPieces,
  parseKinds,
  planDataset,
  writeDataset,
} from "../../bench/dataset.js";
import { type ChunkerOptions, chunkBoundaries } from "../../src/codec/chunker.js";

/**
 * Small chunks, so that files of a few MB have as many chunks as the real ones (~100 MB videos,
 * ~1 MiB chunks) and the edits cost the same share of them.
 */
const SMALL_CHUNKS: ChunkerOptions = { minSize: 4 * 1024, avgSize: 16 * 1024, maxSize: 64 * 1024 };

function digest(e: DatasetEntry): string {
  const h = createHash("sha256");
  for (const p of entryPieces(e, 256 * 1024)) h.update(p);
  return h.digest("hex");
}

function concat(plan: DatasetPlan, kind: string): Uint8Array {
  return Buffer.concat(plan.entries.filter((e) => e.kind === kind).map(entryBytes));
}

function zstdRatio(b: Uint8Array): number {
  return b.length / compress(b, { compressionLevel: 3 }).length;
}

/** Chunk digests of `data` → the byte ranges. */
function chunks(data: Uint8Array): { id: string; length: number }[] {
  const ends = chunkBoundaries(data, SMALL_CHUNKS);
  return ends.map((end, i) => {
    const start = i === 0 ? 0 : ends[i - 1]!;
    return { id: createHash("sha1").update(data.subarray(start, end)).digest("hex"), length: end - start };
  });
}

/** Fraction of `child`'s bytes that lie in chunks `parent` also has. */
function sharedFraction(parent: Uint8Array, child: Uint8Array): number {
  const have = new Set(chunks(parent).map((c) => c.id));
  let shared = 0;
  for (const c of chunks(child)) if (have.has(c.id)) shared += c.length;
  return shared / child.length;
}

test("same seed, same plan and bytes; another seed, other bytes", () => {
  const opts = { seed: 7, sizeMB: 6, kinds: PRESETS.all };
  const a = planDataset(opts);
  const b = planDataset(opts);
  assert.deepEqual(
    a.entries.map((e) => [e.path, e.size]),
    b.entries.map((e) => [e.path, e.size]),
  );
  for (const kind of PRESETS.all) assert.ok(a.filesByKind[kind] > 0, `no ${kind} files`);
  for (let i = 0; i < a.entries.length; i += a.entries[i]!.kind === "sidecars" ? 37 : 1) {
    assert.equal(digest(a.entries[i]!), digest(b.entries[i]!), a.entries[i]!.path);
  }
  const c = planDataset({ ...opts, seed: 8 });
  const va = a.entries.find((e) => e.kind === "video")!;
  const vc = c.entries.find((e) => e.kind === "video")!;
  const n = Math.min(va.size, vc.size, 1 << 20);
  assert.notDeepEqual(entryBytes(va).subarray(0, n), entryBytes(vc).subarray(0, n));
  const la = a.entries.find((e) => e.kind === "logs")!;
  const lc = c.entries.find((e) => e.kind === "logs")!;
  assert.notEqual(digest(la), digest(lc));
});

test("pieces are independent of the piece size, and files are written as planned", () => {
  const plan = planDataset({ seed: 3, sizeMB: 3, kinds: PRESETS.all });
  for (const e of plan.entries.filter((_, i) => i % 25 === 0 || _.kind !== "sidecars")) {
    const whole = entryBytes(e);
    assert.equal(whole.length, e.size, e.path);
    const h = createHash("sha256");
    for (const p of entryPieces(e, 4099)) h.update(p);
    assert.equal(h.digest("hex"), createHash("sha256").update(whole).digest("hex"), e.path);
  }
  const dir = mkdtempSync(join(tmpdir(), "stowage-dataset-"));
  try {
    const small = planDataset({ seed: 3, sizeMB: 0.5, kinds: ["sidecars", "logs"] });
    const res = writeDataset(dir, small, () => {
      const h = createHash("sha256");
      return { update: (p) => h.update(p), end: () => h.digest("hex") };
    });
    assert.equal(res.files.length, small.entries.length);
    for (const f of res.files.slice(0, 40)) {
      const onDisk = readFileSync(join(dir, f.path));
      assert.equal(onDisk.length, f.size);
      assert.equal(createHash("sha256").update(onDisk).digest("hex"), f.digest);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("presets, kinds and sizes", () => {
  assert.deepEqual(parseKinds("incompressible"), ["video", "versions", "frames"]);
  assert.deepEqual(parseKinds("compressible"), ["logs", "sidecars"]);
  assert.deepEqual(parseKinds("frames,logs"), ["frames", "logs"]);
  assert.throws(() => parseKinds("audio"), /unknown kind/);
  for (const [preset, sizeMB] of [
    ["incompressible", 200],
    ["compressible", 20],
    ["all", 60],
  ] as const) {
    const plan = planDataset({ seed: 1, sizeMB, kinds: PRESETS[preset] });
    const rel = plan.totalBytes / (sizeMB * MB);
    assert.ok(rel > 0.9 && rel < 1.1, `${preset}: ${plan.totalBytes} bytes for ${sizeMB} MB`);
    for (const e of plan.entries) assert.ok(PRESETS[preset].includes(e.kind), `${preset} has ${e.path}`);
    assert.equal(new Set(plan.entries.map((e) => e.path)).size, plan.entries.length, "paths are unique");
  }
  const inc = planDataset({ seed: 1, sizeMB: 2000, kinds: PRESETS.incompressible });
  const videos = inc.entries.filter((e) => e.kind === "video");
  assert.ok(videos.every((v) => v.size >= 20 * MB && v.size <= 400 * MB), "videos are tens to hundreds of MB");
  const frames = inc.entries.filter((e) => e.kind === "frames");
  assert.ok(frames.every((f) => /^frames\/shot\d{3}\/frame\.\d{4}\.exr$/.test(f.path)), frames[0]?.path);
  assert.ok(frames.every((f) => f.size >= 2 * MB && f.size <= 8 * MB), "frames are 2-8 MB");
  const versions = inc.entries.filter((e) => e.kind === "versions");
  assert.ok(versions.length >= videos.length / 2, `${versions.length} versions of ${videos.length} videos`);
  assert.ok(versions.every((v) => v.parent !== undefined && Math.abs(v.size / inc.entries.find((e) => e.path === v.parent)!.size - 1) < 0.1));
  // Versions without their originals: the videos are planned (parents) but not emitted.
  const vOnly = planDataset({ seed: 1, sizeMB: 50, kinds: ["versions"] });
  assert.ok(vOnly.entries.length > 0 && vOnly.entries.every((e) => e.kind === "versions"));
});

test("compressible preset: logs compress 4-10x with zstd -3, sidecars are small and well-formed", () => {
  const plan = planDataset({ seed: 5, sizeMB: 6, kinds: PRESETS.compressible });
  const logs = concat(plan, "logs");
  const r = zstdRatio(logs);
  assert.ok(r >= 4 && r <= 10, `logs compress ${r.toFixed(2)}x`);
  const side = plan.entries.filter((e) => e.kind === "sidecars");
  assert.ok(side.length >= 100, `${side.length} sidecars`);
  assert.ok(side.every((e) => e.size >= 64 && e.size <= 40_000));
  const sr = zstdRatio(concat(plan, "sidecars"));
  assert.ok(sr >= 2, `sidecars compress ${sr.toFixed(2)}x`);
  for (const e of side.slice(0, 60)) {
    const text = Buffer.from(entryBytes(e)).toString("latin1");
    if (e.path.endsWith(".json")) assert.doesNotThrow(() => JSON.parse(text), e.path);
    else if (e.path.endsWith(".mhl")) assert.match(text, /^<\?xml /);
    else assert.match(text, /^TITLE: /);
  }
  const text = Buffer.from(logs.subarray(0, 4096)).toString("latin1");
  assert.match(text, /^2024-03-0\d \d\d:\d\d:\d\d\.\d{3} (INFO |DEBUG|WARN |ERROR) \[render-node-\d\d\] /m);
});

test("incompressible preset: media does not compress; versions and frames dedup against their parents", () => {
  const plan = planDataset({ seed: 9, sizeMB: 32, kinds: PRESETS.incompressible });
  const byPath = new Map(plan.entries.map((e) => [e.path, e]));
  const video = plan.entries.find((e) => e.kind === "video")!;
  const vb = entryBytes(video);
  assert.ok(zstdRatio(vb) < 1.01, "video bytes are incompressible");

  const versions = plan.entries.filter((e) => e.kind === "versions");
  assert.ok(versions.length >= 2);
  for (const v of versions.slice(0, 4)) {
    const parent = byPath.get(v.parent!)!;
    const f = sharedFraction(entryBytes(parent), entryBytes(v));
    assert.ok(f >= 0.75 && f < 1, `${v.path}: ${(f * 100).toFixed(1)}% in ${parent.path}'s chunks`);
  }

  const frames = plan.entries.filter((e) => e.kind === "frames" && e.parent !== undefined).slice(0, 3);
  assert.ok(frames.length > 0);
  for (const fr of frames) {
    const prev = entryBytes(byPath.get(fr.parent!)!);
    const cur = entryBytes(fr);
    assert.equal(prev.length, cur.length);
    let same = 0;
    for (let i = 0; i < cur.length; i++) if (cur[i] === prev[i]) same++;
    assert.ok(same / cur.length > 0.9, `${fr.path}: ${((same / cur.length) * 100).toFixed(1)}% bytes unchanged`);
    const f = sharedFraction(prev, cur);
    assert.ok(f >= 0.6 && f < 1, `${fr.path}: ${(f * 100).toFixed(1)}% in the previous frame's chunks`);
  }
});
