/**
 * A seeded, randomized model-based test of the object store: random sequences of puts, overwrites,
 * deletes (with and without version ids), versioning changes, copies, snapshots, multipart uploads
 * (with UploadPartCopy), garbage collection and reopening run against the real store and against a
 * plain in-memory model of S3's semantics, and after every operation a sample of reads, heads and
 * listings is compared with the model (every few operations all of it, plus fsck and stats).
 *
 * Content is drawn so that objects share long runs with each other (slices of a few shared source
 * buffers, edits of the previous version), so dedup, reference counting and gc matter.
 *
 * STOWAGE_SOAK=1 runs more seeds and many more operations; STOWAGE_MODEL_SEED=n runs just seed n
 * (with STOWAGE_MODEL_OPS=m operations, if given); STOWAGE_MODEL_TIMING=1 prints where the time
 * went. A failure names the seed, the operation number
 * and the last operations.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { LocalBackend } from "../../src/backend/local.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import type { Versioning } from "../../src/meta/types.js";
import { computeStats } from "../../src/store/stats.js";
import { collectGarbage } from "../../src/store/gc.js";
import { fsck } from "../../src/store/fsck.js";
import type { ObjectStore, RangeRequest } from "../../src/store/store.js";
import { bytes, collect, makeStore, pieces, type TestStore } from "./helpers.js";
import { mulberry32 } from "../../src/util/random.js";

const SOAK = process.env.STOWAGE_SOAK === "1";
const ONE_SEED = process.env.STOWAGE_MODEL_SEED;
const OPS = Number(process.env.STOWAGE_MODEL_OPS ?? (SOAK ? 1500 : 100));
const SEEDS = ONE_SEED !== undefined ? [Number(ONE_SEED)] : SOAK ? [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] : [1, 2, 3, 4];
/** Full comparison (every version, every listing), fsck with data and stats, every this many ops. */
const FULL_EVERY = 20;

// ---------------------------------------------------------------------------------------------
// Randomness

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32((seed * 0x9e3779b1) >>> 0 || 1);
  }
  /** [0, 1), mulberry32. */
  next(): number {
    return this.#next();
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from nothing");
    return items[Math.floor(this.next() * items.length)]!;
  }
  /** Chooses by weight. */
  weighted<T extends string>(weights: Record<T, number>): T {
    const entries = Object.entries(weights) as Array<[T, number]>;
    let total = 0;
    for (const [, w] of entries) total += w;
    let x = this.next() * total;
    for (const [k, w] of entries) {
      x -= w;
      if (x < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }
}

// ---------------------------------------------------------------------------------------------
// The model

interface MVersion {
  versionId: string;
  deleteMarker: boolean;
  data: Buffer;
  etag: string;
  contentType: string;
  userMetadata: Record<string, string>;
  partSizes: number[] | undefined;
  /** Parts copied from a byte range of another object: they reference chunks only partly. */
  slices: number;
}

interface MBucket {
  versioning: Versioning;
  /** Per key, versions newest first. */
  keys: Map<string, MVersion[]>;
}

interface MPart {
  data: Buffer;
  etag: string;
  /** Pieces referencing part of a chunk (a ranged UploadPartCopy adds one, plus the source's). */
  slices: number;
}

interface MUpload {
  bucket: string;
  key: string;
  uploadId: string;
  contentType: string;
  userMetadata: Record<string, string>;
  parts: Map<number, MPart>;
}

const md5hex = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

function byteCmp(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

class Model {
  readonly buckets = new Map<string, MBucket>();
  readonly uploads = new Map<string, MUpload>();
  readonly versionIds = new Set<string>();

  bucket(name: string): MBucket {
    const b = this.buckets.get(name);
    if (b === undefined) throw new Error(`model: no bucket ${name}`);
    return b;
  }

  current(bucket: string, key: string): MVersion | undefined {
    return this.bucket(bucket).keys.get(key)?.[0];
  }

  live(bucket: string, key: string): MVersion | undefined {
    const v = this.current(bucket, key);
    return v === undefined || v.deleteMarker ? undefined : v;
  }

  /** S3's rules: versioning enabled adds a version; otherwise the new one replaces the `null` version. */
  commit(bucket: string, key: string, v: MVersion): void {
    const b = this.bucket(bucket);
    const list = b.keys.get(key) ?? [];
    const kept = b.versioning === "enabled" ? list : list.filter((x) => x.versionId !== "null");
    b.keys.set(key, [v, ...kept]);
  }

  removeVersion(bucket: string, key: string, versionId: string): void {
    const b = this.bucket(bucket);
    const list = (b.keys.get(key) ?? []).filter((x) => x.versionId !== versionId);
    if (list.length === 0) b.keys.delete(key);
    else b.keys.set(key, list);
  }

  /** Every (bucket, key, version) pair. */
  *allVersions(): Generator<[string, string, MVersion, number]> {
    for (const [bn, b] of this.buckets) for (const [k, list] of b.keys) for (const [i, v] of list.entries()) yield [bn, k, v, i];
  }

  liveKeys(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const [bn, b] of this.buckets) for (const [k, list] of b.keys) if (!list[0]!.deleteMarker) out.push([bn, k]);
    return out;
  }

  logicalBytes(): number {
    let n = 0;
    for (const [, , v] of this.allVersions()) if (!v.deleteMarker) n += v.data.length;
    return n;
  }

  /** Manifest pieces that reference part of a chunk (ranged part copies), in versions and open uploads. */
  slices(): number {
    let n = 0;
    for (const [, , v] of this.allVersions()) n += v.slices;
    for (const u of this.uploads.values()) for (const p of u.parts.values()) n += p.slices;
    return n;
  }

  openPartBytes(): number {
    let n = 0;
    for (const u of this.uploads.values()) for (const p of u.parts.values()) n += p.data.length;
    return n;
  }
}

// ---------------------------------------------------------------------------------------------
// The world: real store, model, content sources

const SEGMENTS = ["a", "b", "a0", "dir", "\u00e4", "\u{FF5E}", "\u{1F600}", "z", "x y"];
const BUCKETS = ["m-one", "m-two", "m-three"];
const NEW_BUCKET = "m-snap";
const DELIMITERS = ["", "/", "/", "a", "\u{1F600}"];

interface World {
  seed: number;
  rng: Rng;
  t: TestStore;
  model: Model;
  sources: Buffer[];
  keyPool: string[];
  log: string[];
  freshSeed: number;
  snapshots: number;
}

function store(w: World): ObjectStore {
  return w.t.store;
}

function note(w: World, what: string): void {
  w.log.push(what);
  if (w.log.length > 12) w.log.shift();
}

function randomKey(w: World): string {
  const { rng } = w;
  if (rng.chance(0.5)) {
    const existing: string[] = [];
    for (const b of w.model.buckets.values()) existing.push(...b.keys.keys());
    if (existing.length > 0) return rng.pick(existing);
  }
  return rng.pick(w.keyPool);
}

/** Some code points of `s` from its start (never splits a surrogate pair). */
function codePointPrefix(s: string, n: number): string {
  return Array.from(s).slice(0, n).join("");
}

function textBytes(n: number, seed: number): Buffer {
  const words = ["frame", "render", "shot", "take", "0001", "exr", "json", "color", "grade", "vfx", "\n"];
  const r = new Rng(seed);
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const wd = r.pick(words);
    parts.push(wd, " ");
    len += wd.length + 1;
  }
  return Buffer.from(parts.join("")).subarray(0, n);
}

/** Content that often shares long runs with other objects. */
function makeContent(w: World, size: number): Buffer {
  const { rng } = w;
  const out: Buffer[] = [];
  let n = 0;
  while (n < size) {
    const want = size - n;
    const r = rng.next();
    if (r < 0.65) {
      const src = rng.pick(w.sources);
      const len = Math.min(want, rng.int(1, 60_000), src.length);
      const off = rng.int(0, src.length - len);
      out.push(src.subarray(off, off + len));
      n += len;
    } else {
      const len = Math.min(want, rng.int(1, 12_000));
      out.push(rng.chance(0.7) ? bytes(len, w.freshSeed++) : textBytes(len, w.freshSeed++));
      n += len;
    }
  }
  return Buffer.concat(out, size);
}

function randomSize(rng: Rng): number {
  const r = rng.next();
  if (r < 0.1) return rng.int(0, 64);
  if (r < 0.45) return rng.int(65, 4096);
  return rng.int(4097, 200 * 1024);
}

/** A new version of `old`: an insert, an overwrite, a truncation or an append. */
function edit(w: World, old: Buffer): Buffer {
  const { rng } = w;
  const at = rng.int(0, old.length);
  const kind = rng.int(0, 3);
  const patch = makeContent(w, rng.int(1, 8000));
  let out: Buffer;
  if (kind === 0) out = Buffer.concat([old.subarray(0, at), patch, old.subarray(at)]);
  else if (kind === 1) out = Buffer.concat([old.subarray(0, at), patch, old.subarray(Math.min(old.length, at + patch.length))]);
  else if (kind === 2) out = Buffer.from(old.subarray(0, at));
  else out = Buffer.concat([old, patch]);
  return out.subarray(0, 220 * 1024);
}

async function expectError(p: Promise<unknown>, code: ErrorCode, what: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (isStowageError(err, code)) return;
    throw new Error(`${what}: expected ${code}, got ${String(err)}`, { cause: err });
  }
  throw new Error(`${what}: expected ${code}, but it succeeded`);
}

function checkVersionId(w: World, bucket: string, versionId: string, what: string): void {
  const versioning = w.model.bucket(bucket).versioning;
  if (versioning === "enabled") {
    assert.notEqual(versionId, "null", `${what}: a versioned bucket gives real version ids`);
    assert.ok(!w.model.versionIds.has(versionId), `${what}: version id ${versionId} reused`);
    w.model.versionIds.add(versionId);
  } else {
    assert.equal(versionId, "null", `${what}: bucket ${bucket} is ${versioning}, so the version id is null`);
  }
}

function randomMetadata(rng: Rng): { contentType: string; userMetadata: Record<string, string> } {
  const contentType = rng.pick(["application/octet-stream", "video/mp4", "image/x-exr", "application/json"]);
  const userMetadata: Record<string, string> = {};
  for (let i = rng.int(0, 2); i > 0; i--) userMetadata[rng.pick(["shot", "take", "reel", "artist"])] = String(rng.int(0, 999));
  return { contentType, userMetadata };
}

// ---------------------------------------------------------------------------------------------
// Operations

async function opPut(w: World): Promise<void> {
  const { rng, model } = w;
  const bucket = rng.pick([...model.buckets.keys()]);
  const key = randomKey(w);
  const old = model.live(bucket, key);
  const data = old !== undefined && rng.chance(0.4) ? edit(w, old.data) : makeContent(w, randomSize(rng));
  const meta = randomMetadata(rng);
  note(w, `put ${bucket}/${key} ${data.length}B${old !== undefined ? " (overwrite)" : ""}`);
  const r = await store(w).putObject(bucket, key, pieces(data, rng.int(1, 70_000)), meta);
  assert.equal(r.size, data.length);
  assert.equal(r.etag, md5hex(data));
  checkVersionId(w, bucket, r.versionId, "put");
  model.commit(bucket, key, { versionId: r.versionId, deleteMarker: false, data, etag: r.etag, ...meta, partSizes: undefined, slices: 0 });
}

async function opDelete(w: World): Promise<void> {
  const { rng, model } = w;
  const bucket = rng.pick([...model.buckets.keys()]);
  const key = randomKey(w);
  const b = model.bucket(bucket);
  note(w, `delete ${bucket}/${key} (${b.versioning})`);
  const r = await store(w).deleteObject(bucket, key);
  if (b.versioning === "unversioned") {
    assert.equal(r.deleteMarker, false);
    model.removeVersion(bucket, key, "null");
  } else {
    assert.equal(r.deleteMarker, true);
    assert.ok(r.versionId !== undefined);
    checkVersionId(w, bucket, r.versionId, "delete marker");
    model.commit(bucket, key, { versionId: r.versionId, deleteMarker: true, data: Buffer.alloc(0), etag: "", contentType: "", userMetadata: {}, partSizes: undefined, slices: 0 });
  }
}

async function opDeleteVersion(w: World): Promise<void> {
  const { rng, model } = w;
  const all = [...model.allVersions()];
  if (all.length === 0 || rng.chance(0.1)) {
    // A version that does not exist: nothing happens.
    const bucket = rng.pick([...model.buckets.keys()]);
    const key = randomKey(w);
    if ((model.bucket(bucket).keys.get(key) ?? []).some((v) => v.versionId === "null")) return;
    note(w, `delete ${bucket}/${key}?versionId=null (absent)`);
    const r = await store(w).deleteObject(bucket, key, { versionId: "null" });
    assert.equal(r.deleteMarker, false);
    return;
  }
  const [bucket, key, v] = rng.pick(all);
  note(w, `delete ${bucket}/${key}?versionId=${v.versionId}${v.deleteMarker ? " (marker)" : ""}`);
  const r = await store(w).deleteObject(bucket, key, { versionId: v.versionId });
  assert.equal(r.versionId, v.versionId);
  assert.equal(r.deleteMarker, v.deleteMarker);
  model.removeVersion(bucket, key, v.versionId);
}

async function opSetVersioning(w: World): Promise<void> {
  const { rng, model } = w;
  const bucket = rng.pick([...model.buckets.keys()]);
  const state = rng.chance(0.6) ? "enabled" : "suspended";
  note(w, `setVersioning ${bucket} ${state}`);
  const rec = await store(w).setVersioning(bucket, state);
  const b = model.bucket(bucket);
  if (!(b.versioning === "unversioned" && state === "suspended")) b.versioning = state;
  assert.equal(rec.versioning, b.versioning);
}

async function opCopy(w: World): Promise<void> {
  const { rng, model } = w;
  const dstBucket = rng.pick([...model.buckets.keys()]);
  const dstKey = randomKey(w);
  const candidates = [...model.allVersions()];
  if (candidates.length === 0 || rng.chance(0.05)) {
    const srcBucket = rng.pick([...model.buckets.keys()]);
    const srcKey = randomKey(w);
    if (model.live(srcBucket, srcKey) !== undefined) return;
    note(w, `copy from missing ${srcBucket}/${srcKey}`);
    await expectError(store(w).copyObject(srcBucket, srcKey, dstBucket, dstKey), "STOWAGE_NO_SUCH_KEY", "copy of a missing source");
    return;
  }
  const [srcBucket, srcKey, src, index] = rng.pick(candidates);
  const byVersion = index > 0 || rng.chance(0.3);
  const replace = rng.chance(0.4);
  const meta = randomMetadata(rng);
  note(w, `copy ${srcBucket}/${srcKey}${byVersion ? `@${src.versionId}` : ""} -> ${dstBucket}/${dstKey} ${replace ? "REPLACE" : "COPY"}`);
  const p = store(w).copyObject(srcBucket, srcKey, dstBucket, dstKey, {
    ...(byVersion ? { sourceVersionId: src.versionId } : {}),
    metadataDirective: replace ? "REPLACE" : "COPY",
    ...(replace ? meta : {}),
  });
  if (src.deleteMarker) {
    await expectError(p, "STOWAGE_NO_SUCH_KEY", "copy of a delete marker");
    return;
  }
  const r = await p;
  assert.equal(r.etag, src.etag, "a copy keeps the ETag");
  assert.equal(r.size, src.data.length);
  checkVersionId(w, dstBucket, r.versionId, "copy");
  model.commit(dstBucket, dstKey, {
    versionId: r.versionId,
    deleteMarker: false,
    data: src.data,
    etag: src.etag,
    contentType: replace ? meta.contentType : src.contentType,
    userMetadata: replace ? meta.userMetadata : { ...src.userMetadata },
    partSizes: src.partSizes,
    slices: src.slices,
  });
}

async function opSnapshot(w: World): Promise<void> {
  const { rng, model } = w;
  const srcBucket = rng.pick([...model.buckets.keys()]);
  const srcKeys = [...model.bucket(srcBucket).keys.keys()];
  const srcPrefix = srcKeys.length > 0 && rng.chance(0.85) ? codePointPrefix(rng.pick(srcKeys), rng.int(1, 3)) : "";
  const dstBucket = !model.buckets.has(NEW_BUCKET) && rng.chance(0.3) ? NEW_BUCKET : rng.pick([...model.buckets.keys()]);
  const dstPrefix = rng.chance(0.1) ? srcPrefix : `snap${w.snapshots++}/`;
  note(w, `snapshot ${srcBucket}/${srcPrefix} -> ${dstBucket}/${dstPrefix}`);
  if (srcBucket === dstBucket && (dstPrefix.startsWith(srcPrefix) || srcPrefix.startsWith(dstPrefix))) {
    await expectError(store(w).snapshot(srcBucket, srcPrefix, dstBucket, dstPrefix), "STOWAGE_INVALID_ARGUMENT", "overlapping snapshot");
    return;
  }
  const sources: Array<[string, MVersion]> = [];
  for (const [k, list] of model.bucket(srcBucket).keys) if (k.startsWith(srcPrefix) && !list[0]!.deleteMarker) sources.push([k, list[0]!]);
  const r = await store(w).snapshot(srcBucket, srcPrefix, dstBucket, dstPrefix);
  if (!model.buckets.has(dstBucket)) model.buckets.set(dstBucket, { versioning: "unversioned", keys: new Map() });
  assert.equal(r.objects, sources.length, "snapshot object count");
  assert.equal(r.bytes, sources.reduce((n, [, v]) => n + v.data.length, 0), "snapshot byte count");
  for (const [k, v] of sources) {
    const key = dstPrefix + k.slice(srcPrefix.length);
    // The snapshot reports no version ids: read the new current one's id from the store.
    const h = await store(w).headObject(dstBucket, key);
    checkVersionId(w, dstBucket, h.versionId, "snapshot");
    model.commit(dstBucket, key, { ...v, versionId: h.versionId, userMetadata: { ...v.userMetadata } });
  }
}

/** A source for UploadPartCopy: a version with data, and a range of it (or the whole). */
interface CopySource {
  bucket: string;
  key: string;
  versionId?: string;
  range?: { start: number; end: number };
  data: Buffer;
  slices: number;
}

function partCopySource(w: World): CopySource | undefined {
  const { rng, model } = w;
  const all = [...model.allVersions()].filter(([, , v]) => !v.deleteMarker);
  if (all.length === 0) return undefined;
  const [bucket, key, v, index] = rng.pick(all);
  const out: CopySource = { bucket, key, data: v.data, slices: v.slices };
  if (index > 0 || rng.chance(0.3)) out.versionId = v.versionId;
  if (v.data.length > 0 && rng.chance(0.7)) {
    const start = rng.int(0, v.data.length - 1);
    const end = rng.int(start, Math.min(v.data.length - 1, start + 90_000));
    out.range = { start, end };
    out.data = v.data.subarray(start, end + 1);
  }
  return out;
}

async function addParts(w: World, u: MUpload, count: number): Promise<void> {
  const { rng } = w;
  for (let i = 0; i < count; i++) {
    const partNumber = u.parts.size > 0 && rng.chance(0.15) ? rng.pick([...u.parts.keys()]) : rng.int(1, 12);
    const copy = rng.chance(0.4) ? partCopySource(w) : undefined;
    if (copy !== undefined) {
      note(w, `uploadPartCopy ${u.key}#${partNumber} <- ${copy.bucket}/${copy.key}${copy.range ? ` ${copy.range.start}-${copy.range.end}` : ""}`);
      const source: { bucket: string; key: string; versionId?: string; range?: { start: number; end: number } } = { bucket: copy.bucket, key: copy.key };
      if (copy.versionId !== undefined) source.versionId = copy.versionId;
      if (copy.range !== undefined) source.range = copy.range;
      const p = await store(w).uploadPartCopy(u.bucket, u.uploadId, partNumber, source);
      assert.equal(p.size, copy.data.length);
      assert.equal(p.etag, md5hex(copy.data), "a part's ETag is the MD5 of its bytes");
      u.parts.set(partNumber, { data: copy.data, etag: p.etag, slices: copy.slices + (copy.range !== undefined ? 1 : 0) });
    } else {
      const data = makeContent(w, rng.chance(0.1) ? rng.int(0, 10) : rng.int(1, 70_000));
      note(w, `uploadPart ${u.key}#${partNumber} ${data.length}B`);
      const p = await store(w).uploadPart(u.bucket, u.uploadId, partNumber, pieces(data, rng.int(1, 30_000)));
      assert.equal(p.etag, md5hex(data));
      assert.equal(p.size, data.length);
      u.parts.set(partNumber, { data, etag: p.etag, slices: 0 });
    }
  }
}

async function opMultipart(w: World): Promise<void> {
  const { rng, model } = w;
  const open = [...model.uploads.values()];
  if (open.length === 0 || rng.chance(0.4)) {
    const bucket = rng.pick([...model.buckets.keys()]);
    const key = randomKey(w);
    const meta = randomMetadata(rng);
    note(w, `createMultipartUpload ${bucket}/${key}`);
    const up = await store(w).createMultipartUpload(bucket, key, meta);
    const u: MUpload = { bucket, key, uploadId: up.uploadId, ...meta, parts: new Map() };
    model.uploads.set(up.uploadId, u);
    await addParts(w, u, rng.int(1, 4));
    // Often left open, to be finished later (across gc and reopen).
    if (rng.chance(0.5)) return;
    await finishUpload(w, u);
    return;
  }
  const u = rng.pick(open);
  if (rng.chance(0.3)) await addParts(w, u, rng.int(1, 2));
  else await finishUpload(w, u);
}

async function finishUpload(w: World, u: MUpload): Promise<void> {
  const { rng, model } = w;
  const s = store(w);
  const listed = await s.listParts(u.bucket, u.uploadId);
  assert.deepEqual(
    listed.parts.map((p) => [p.partNumber, p.size, p.etag]),
    [...u.parts.entries()].sort((a, b) => a[0] - b[0]).map(([n, p]) => [n, p.data.length, p.etag]),
    "listParts",
  );
  if (u.parts.size === 0 || rng.chance(0.2)) {
    note(w, `abortMultipartUpload ${u.key}`);
    await s.abortMultipartUpload(u.bucket, u.uploadId);
    model.uploads.delete(u.uploadId);
    await expectError(s.listParts(u.bucket, u.uploadId), "STOWAGE_NO_SUCH_UPLOAD", "listParts after abort");
    return;
  }
  const numbers = [...u.parts.keys()].sort((a, b) => a - b);
  const chosen = rng.chance(0.7) ? numbers : numbers.filter(() => rng.chance(0.6));
  if (chosen.length === 0) chosen.push(numbers[0]!);
  const parts = chosen.map((n) => u.parts.get(n)!);
  note(w, `completeMultipartUpload ${u.bucket}/${u.key} parts ${chosen.join(",")}`);
  const p = s.completeMultipartUpload(
    u.bucket,
    u.uploadId,
    chosen.map((n) => ({ partNumber: n, etag: rng.chance(0.5) ? `"${u.parts.get(n)!.etag}"` : u.parts.get(n)!.etag })),
  );
  if (parts.slice(0, -1).some((x) => x.data.length < 1)) {
    // An empty part that is not the last is below the minimum part size (1 byte here).
    await expectError(p, "STOWAGE_ENTITY_TOO_SMALL", "complete with an empty inner part");
    return;
  }
  const r = await p;
  const data = Buffer.concat(parts.map((x) => x.data));
  const etag = md5hex(Buffer.concat(parts.map((x) => Buffer.from(x.etag, "hex")))) + `-${parts.length}`;
  assert.equal(r.etag, etag, "multipart ETag");
  assert.equal(r.size, data.length);
  assert.equal(r.key, u.key);
  checkVersionId(w, u.bucket, r.versionId, "complete");
  model.uploads.delete(u.uploadId);
  model.commit(u.bucket, u.key, {
    versionId: r.versionId,
    deleteMarker: false,
    data,
    etag,
    contentType: u.contentType,
    userMetadata: u.userMetadata,
    partSizes: parts.map((x) => x.data.length),
    slices: parts.reduce((n, x) => n + x.slices, 0),
  });
}

/** Everything gc could change: stats, the backend's blobs, chunk and pack records. */
async function fingerprint(w: World): Promise<string> {
  const t = w.t;
  const s = await computeStats(t.meta);
  const blobs: string[] = [];
  for await (const b of t.backend.list("")) blobs.push(`${b.key}:${b.size}`);
  const chunks: string[] = [];
  for await (const [id, c] of t.meta.listChunks()) chunks.push(`${id.toString("hex")}:${JSON.stringify(c)}`);
  const packs: string[] = [];
  for await (const p of t.meta.listPacks()) packs.push(JSON.stringify(p));
  return JSON.stringify({ s, blobs, chunks, packs });
}

async function opGc(w: World): Promise<void> {
  const { rng } = w;
  const minLiveFraction = rng.pick([0.3, 0.5, 0.5, 0.8, 1]);
  const dryRun = rng.chance(0.35);
  note(w, `gc minLive=${minLiveFraction}${dryRun ? " (dry run first)" : ""}`);
  if (dryRun) {
    const before = await fingerprint(w);
    const dry = await collectGarbage(store(w), { dryRun: true, graceMs: 0, minLiveFraction });
    assert.equal(dry.dryRun, true);
    assert.equal(await fingerprint(w), before, "a dry run changes nothing");
    const real = await collectGarbage(store(w), { graceMs: 0, minLiveFraction });
    assert.equal(real.packsRecycled, dry.packsRecycled, "the dry run predicts the packs recycled");
    assert.equal(real.bytesReclaimable, dry.bytesReclaimable, "the dry run predicts the bytes reclaimable");
  } else {
    await collectGarbage(store(w), { graceMs: 0, minLiveFraction });
  }
  // With no grace period nothing stays retired, and the bucket holds exactly the packs the metadata names.
  const s = await computeStats(w.t.meta);
  assert.equal(s.retiredPacks, 0, "no retired packs after gc with graceMs 0");
  const blobs = new Map<string, number>();
  for await (const b of w.t.backend.list("packs/")) blobs.set(b.key, b.size);
  const records = new Map<string, number>();
  for await (const p of w.t.meta.listPacks()) records.set(p.blobKey, p.size);
  assert.deepEqual([...records].sort(), [...blobs].sort(), "pack records and pack blobs agree after gc");
  assert.equal(s.storedBytes, [...blobs.values()].reduce((a, b) => a + b, 0));
  if (minLiveFraction === 1) assert.equal(s.unreferencedChunks, 0, "gc with minLiveFraction 1 leaves no unreferenced chunk");
}

async function opReopen(w: World): Promise<void> {
  note(w, "reopen");
  await w.t.reopen();
}

// ---------------------------------------------------------------------------------------------
// Checks

function randomRange(rng: Rng, size: number): { range: RangeRequest; start: number; end: number } | undefined {
  if (size === 0) return undefined;
  const kind = rng.int(0, 3);
  if (kind === 0) {
    const suffix = rng.int(1, size + 10);
    return { range: { suffix }, start: Math.max(0, size - suffix), end: size };
  }
  const start = rng.int(0, size - 1);
  if (kind === 1) return { range: { start }, start, end: size };
  const end = kind === 2 ? rng.int(start, size - 1) : rng.int(start, size + 5000);
  return { range: { start, end }, start, end: Math.min(size, end + 1) };
}

async function checkVersion(w: World, bucket: string, key: string, v: MVersion, byId: boolean): Promise<void> {
  const { rng } = w;
  const s = store(w);
  const opts = byId ? { versionId: v.versionId } : {};
  const what = `${bucket}/${key}${byId ? `@${v.versionId}` : ""}`;
  if (v.deleteMarker) {
    await expectError(s.getObject(bucket, key, opts), "STOWAGE_NO_SUCH_KEY", `get ${what} (delete marker)`);
    await expectError(s.headObject(bucket, key, opts), "STOWAGE_NO_SUCH_KEY", `head ${what} (delete marker)`);
    return;
  }
  const h = await s.headObject(bucket, key, opts);
  assert.equal(h.versionId, v.versionId, `head ${what}: version id`);
  assert.equal(h.size, v.data.length, `head ${what}: size`);
  assert.equal(h.etag, v.etag, `head ${what}: etag`);
  assert.equal(h.contentType, v.contentType, `head ${what}: content type`);
  assert.deepEqual(h.userMetadata, v.userMetadata, `head ${what}: user metadata`);
  assert.deepEqual(h.partSizes, v.partSizes, `head ${what}: part sizes`);
  const whole = await collect((await s.getObject(bucket, key, opts)).body);
  assert.ok(whole.equals(v.data), `get ${what}: ${whole.length} bytes differ from the model's ${v.data.length}`);
  if (v.etag.includes("-") === false) assert.equal(md5hex(whole), v.etag);
  const r = randomRange(rng, v.data.length);
  if (r !== undefined) {
    const got = await s.getObject(bucket, key, { ...opts, range: r.range });
    assert.deepEqual(got.span, { start: r.start, end: r.end }, `range ${JSON.stringify(r.range)} of ${what}`);
    const body = await collect(got.body);
    assert.ok(body.equals(v.data.subarray(r.start, r.end)), `range ${JSON.stringify(r.range)} of ${what}`);
  } else {
    await expectError(s.getObject(bucket, key, { ...opts, range: { start: 0 } }), "STOWAGE_INVALID_RANGE", `range of empty ${what}`);
  }
  if (v.partSizes !== undefined && rng.chance(0.5)) {
    const n = rng.int(1, v.partSizes.length);
    let start = 0;
    for (let i = 0; i < n - 1; i++) start += v.partSizes[i]!;
    const body = await collect((await s.getObject(bucket, key, { ...opts, partNumber: n })).body);
    assert.ok(body.equals(v.data.subarray(start, start + v.partSizes[n - 1]!)), `part ${n} of ${what}`);
  }
}

async function checkKey(w: World, bucket: string, key: string, all: boolean): Promise<void> {
  const list = w.model.bucket(bucket).keys.get(key) ?? [];
  if (list.length === 0) {
    await expectError(store(w).getObject(bucket, key), "STOWAGE_NO_SUCH_KEY", `get ${bucket}/${key} (absent)`);
    return;
  }
  await checkVersion(w, bucket, key, list[0]!, false);
  if (all) {
    for (const v of list) await checkVersion(w, bucket, key, v, true);
  } else if (list.length > 1) {
    await checkVersion(w, bucket, key, w.rng.pick(list), true);
  }
}

type Entry = { key: string; etag: string; size: number } | { prefix: string };

function entryName(e: Entry): string {
  return "prefix" in e ? `prefix:${e.prefix}` : `key:${e.key}:${e.size}:${e.etag}`;
}

function entrySortKey(e: Entry): string {
  return "prefix" in e ? e.prefix : e.key;
}

function modelListing(b: MBucket, prefix: string, delimiter: string, startAfter: string): Entry[] {
  const keys = [...b.keys.entries()]
    .filter(([k, list]) => !list[0]!.deleteMarker && k.startsWith(prefix) && byteCmp(k, startAfter) > 0)
    .sort((x, y) => byteCmp(x[0], y[0]));
  const out: Entry[] = [];
  for (const [k, list] of keys) {
    const i = delimiter === "" ? -1 : k.indexOf(delimiter, prefix.length);
    if (i >= 0) {
      const cp = k.slice(0, i + delimiter.length);
      const last = out[out.length - 1];
      if (last !== undefined && "prefix" in last && last.prefix === cp) continue;
      out.push({ prefix: cp });
    } else out.push({ key: k, etag: list[0]!.etag, size: list[0]!.data.length });
  }
  return out;
}

function randomPrefix(w: World, bucket: string): string {
  const { rng } = w;
  const keys = [...w.model.bucket(bucket).keys.keys()];
  if (keys.length === 0 || rng.chance(0.3)) return "";
  return codePointPrefix(rng.pick(keys), rng.int(1, 4));
}

/** Start-after markers in U+E000..U+FFFF: they sort after astral characters in UTF-16, before them in UTF-8. */
const HIGH_BMP_MARKERS = ["\u{FF5E}", "\u{FFFD}", "\u{E000}"];

async function checkListing(w: World, bucket: string, fixed: { prefix?: string; startAfter?: string; maxKeys?: number } = {}): Promise<void> {
  const { rng } = w;
  const prefix = fixed.prefix ?? randomPrefix(w, bucket);
  const delimiter = rng.pick(DELIMITERS);
  const startAfter = fixed.startAfter ?? (rng.chance(0.2) ? codePointPrefix(randomKey(w), rng.int(1, 5)) : rng.chance(0.15) ? rng.pick([...HIGH_BMP_MARKERS, "a/"]) : "");
  const maxKeys = fixed.maxKeys ?? (rng.chance(0.3) ? 1000 : rng.int(1, 4));
  const want = modelListing(w.model.bucket(bucket), prefix, delimiter, startAfter);
  const what = `list ${bucket} prefix=${JSON.stringify(prefix)} delimiter=${JSON.stringify(delimiter)} startAfter=${JSON.stringify(startAfter)} maxKeys=${maxKeys}`;
  let token: string | undefined;
  let page = 0;
  for (;;) {
    // StartAfter is sent again with every page, as SDK paginators do.
    const r = await store(w).listObjects(bucket, {
      prefix,
      delimiter,
      maxKeys,
      ...(startAfter === "" ? {} : { startAfter }),
      ...(token === undefined ? {} : { continuationToken: token }),
    });
    const got: Entry[] = [...r.objects.map((o) => ({ key: o.key, etag: o.etag, size: o.size })), ...r.commonPrefixes.map((p) => ({ prefix: p }))].sort((x, y) =>
      byteCmp(entrySortKey(x), entrySortKey(y)),
    );
    const expected = want.slice(page * maxKeys, (page + 1) * maxKeys);
    assert.deepEqual(got.map(entryName), expected.map(entryName), `${what}: page ${page}`);
    const more = (page + 1) * maxKeys < want.length;
    assert.equal(r.isTruncated, more, `${what}: isTruncated on page ${page}`);
    if (!more) break;
    assert.ok(r.nextContinuationToken !== undefined, `${what}: a truncated page has a token`);
    token = r.nextContinuationToken;
    page++;
  }
}

type VEntry = { key: string; versionId: string; deleteMarker: boolean; isLatest: boolean; size: number; etag: string } | { prefix: string };

function ventryName(e: VEntry): string {
  return "prefix" in e ? `prefix:${e.prefix}` : `${e.key}@${e.versionId}:${e.deleteMarker ? "DM" : `${e.size}:${e.etag}`}${e.isLatest ? ":latest" : ""}`;
}

function modelVersions(b: MBucket, prefix: string, delimiter: string): VEntry[] {
  const keys = [...b.keys.entries()].filter(([k]) => k.startsWith(prefix)).sort((x, y) => byteCmp(x[0], y[0]));
  const out: VEntry[] = [];
  for (const [k, list] of keys) {
    const i = delimiter === "" ? -1 : k.indexOf(delimiter, prefix.length);
    if (i >= 0) {
      const cp = k.slice(0, i + delimiter.length);
      const last = out[out.length - 1];
      if (last !== undefined && "prefix" in last && last.prefix === cp) continue;
      out.push({ prefix: cp });
      continue;
    }
    for (const [j, v] of list.entries()) {
      out.push({ key: k, versionId: v.versionId, deleteMarker: v.deleteMarker, isLatest: j === 0, size: v.deleteMarker ? 0 : v.data.length, etag: v.etag });
    }
  }
  return out;
}

async function checkVersionListing(w: World, bucket: string): Promise<void> {
  const { rng } = w;
  const prefix = randomPrefix(w, bucket);
  const delimiter = rng.chance(0.3) ? rng.pick(DELIMITERS) : "";
  const maxKeys = rng.chance(0.4) ? 1000 : rng.int(1, 5);
  const want = modelVersions(w.model.bucket(bucket), prefix, delimiter);
  const what = `listObjectVersions ${bucket} prefix=${JSON.stringify(prefix)} delimiter=${JSON.stringify(delimiter)} maxKeys=${maxKeys}`;
  const got: VEntry[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (let page = 0; ; page++) {
    assert.ok(page <= want.length + 1, `${what}: paging does not end (${page} pages for ${want.length} entries)`);
    const r = await store(w).listObjectVersions(bucket, {
      prefix,
      delimiter,
      maxKeys,
      ...(keyMarker === undefined ? {} : { keyMarker }),
      ...(versionIdMarker === undefined ? {} : { versionIdMarker }),
    });
    assert.ok(r.versions.length + r.commonPrefixes.length <= maxKeys, `${what}: page ${page} larger than maxKeys`);
    const entries: VEntry[] = [
      ...r.versions.map((v) => ({ key: v.key, versionId: v.versionId, deleteMarker: v.deleteMarker, isLatest: v.isLatest, size: v.size, etag: v.etag })),
      ...r.commonPrefixes.map((p) => ({ prefix: p })),
    ];
    // Within a page, versions come in listing order; common prefixes are interleaved by key.
    entries.sort((x, y) => byteCmp("prefix" in x ? x.prefix : x.key, "prefix" in y ? y.prefix : y.key));
    got.push(...entries);
    if (!r.isTruncated) break;
    assert.ok(r.nextKeyMarker !== undefined, `${what}: a truncated page has a key marker`);
    keyMarker = r.nextKeyMarker;
    versionIdMarker = r.nextVersionIdMarker;
  }
  assert.deepEqual(got.map(ventryName), want.map(ventryName), what);
}

async function checkStats(w: World): Promise<void> {
  const s = await computeStats(w.t.meta);
  const m = w.model;
  let versions = 0;
  let objects = 0;
  for (const b of m.buckets.values()) {
    for (const list of b.keys.values()) {
      versions += list.length;
      if (!list[0]!.deleteMarker) objects++;
    }
  }
  assert.equal(s.logicalBytes, m.logicalBytes(), "stats.logicalBytes = bytes of every version in the model");
  assert.equal(s.versions, versions, "stats.versions");
  assert.equal(s.objects, objects, "stats.objects");
  assert.equal(s.buckets, m.buckets.size, "stats.buckets");
  // Distinct chunks referenced are at most the bytes referenced, but for chunks referenced only in
  // part (a ranged part copy cuts at most two chunks, each at most the 16 KiB maximum).
  const slack = 2 * 16384 * m.slices();
  assert.ok(
    s.uniqueBytes <= s.logicalBytes + m.openPartBytes() + slack,
    `uniqueBytes ${s.uniqueBytes} > logical ${s.logicalBytes} + open parts ${m.openPartBytes()} + slices ${slack}`,
  );
  assert.ok(s.compressedBytes <= s.uniqueBytes + s.chunks * 64, "compression never grows a chunk by more than its framing");
  assert.deepEqual((await store(w).listBuckets()).map((b) => b.name).sort(), [...m.buckets.keys()].sort(), "buckets");
  for (const [name, b] of m.buckets) {
    const uploads = (await store(w).listMultipartUploads(name)).map((u) => u.uploadId).sort();
    assert.deepEqual(uploads, [...m.uploads.values()].filter((u) => u.bucket === name).map((u) => u.uploadId).sort(), `uploads of ${name}`);
    assert.equal((await store(w).headBucket(name)).versioning, b.versioning, `versioning of ${name}`);
  }
}

async function checkSample(w: World): Promise<void> {
  const { rng, model } = w;
  const live = model.liveKeys();
  if (live.length > 0) {
    const [b, k] = rng.pick(live);
    await checkKey(w, b, k, false);
  }
  // A key that may be absent or deleted.
  await checkKey(w, rng.pick([...model.buckets.keys()]), randomKey(w), false);
  if (rng.chance(0.3)) await checkListing(w, rng.pick([...model.buckets.keys()]));
  if (rng.chance(0.2)) await checkVersionListing(w, rng.pick([...model.buckets.keys()]));
}

/** Every key's current version (and, with `everyVersion`, every version), every bucket's listings, fsck and stats. */
async function checkAll(w: World, everyVersion: boolean): Promise<void> {
  for (const [bn, b] of w.model.buckets) {
    for (const k of b.keys.keys()) await checkKey(w, bn, k, everyVersion);
    await checkListing(w, bn);
    await checkListing(w, bn);
    // Paging one entry at a time past astral-plane keys, with the start-after marker resent.
    await checkListing(w, bn, { prefix: "", startAfter: w.rng.pick(HIGH_BMP_MARKERS), maxKeys: 1 });
    await checkVersionListing(w, bn);
  }
  const r = await fsck(store(w), { readData: true });
  assert.ok(r.ok, `fsck found problems:\n${r.problems.map((p) => `${p.kind}: ${p.message}`).join("\n")}`);
  await checkStats(w);
}

// ---------------------------------------------------------------------------------------------
// The run

const OPERATIONS = {
  put: opPut,
  delete: opDelete,
  deleteVersion: opDeleteVersion,
  setVersioning: opSetVersioning,
  copy: opCopy,
  snapshot: opSnapshot,
  multipart: opMultipart,
  gc: opGc,
  reopen: opReopen,
} satisfies Record<string, (w: World) => Promise<void>>;

const WEIGHTS: Record<keyof typeof OPERATIONS, number> = { put: 30, delete: 8, deleteVersion: 6, setVersioning: 4, copy: 8, snapshot: 2, multipart: 9, gc: 4, reopen: 2 };

async function run(seed: number, ops: number): Promise<{ ops: Record<string, number>; logical: number; unique: number; stored: number }> {
  const rng = new Rng(seed);
  // Seeds vary the setting: the local-directory backend, and no chunk cache (every read hits the packs).
  let dir: string | undefined;
  let backend: BlobBackend;
  if (seed % 4 === 0) {
    dir = mkdtempSync(join(tmpdir(), "stowage-model-"));
    backend = await LocalBackend.open(dir);
  } else backend = new MemoryBackend();
  const t = await makeStore({ backend, cacheBytes: seed % 2 === 1 ? 0 : 4 * 1024 * 1024, packTargetSize: rng.pick([32 * 1024, 64 * 1024, 256 * 1024]) });
  const sources = [bytes(300_000, seed * 7 + 1), bytes(300_000, seed * 7 + 2), textBytes(200_000, seed * 7 + 3)];
  const keyPool: string[] = [];
  for (let i = 0; i < 24; i++) {
    const depth = rng.int(1, 3);
    const segs: string[] = [];
    for (let j = 0; j < depth; j++) segs.push(rng.pick(SEGMENTS));
    keyPool.push(segs.join("/") + (rng.chance(0.2) ? "/" : ""));
  }
  const w: World = { seed, rng, t, model: new Model(), sources, keyPool, log: [], freshSeed: seed * 1_000_003, snapshots: 0 };
  const counts: Record<string, number> = {};
  const timing: Record<string, number> = { sample: 0, all: 0 };
  let i = 0;
  try {
    for (const name of BUCKETS) {
      await t.store.createBucket(name);
      w.model.buckets.set(name, { versioning: "unversioned", keys: new Map() });
    }
    for (i = 1; i <= ops; i++) {
      const op = rng.weighted(WEIGHTS);
      counts[op] = (counts[op] ?? 0) + 1;
      const t0 = Date.now();
      await OPERATIONS[op](w);
      const t1 = Date.now();
      await checkSample(w);
      const t2 = Date.now();
      if (i % FULL_EVERY === 0) await checkAll(w, i % (2 * FULL_EVERY) === 0);
      timing[op] = (timing[op] ?? 0) + t1 - t0;
      timing.sample! += t2 - t1;
      timing.all! += Date.now() - t2;
    }
    // Finish: complete or abort what is open, collect everything, and check it all once more.
    for (const u of [...w.model.uploads.values()]) await finishUpload(w, u);
    for (const u of [...w.model.uploads.values()]) {
      await t.store.abortMultipartUpload(u.bucket, u.uploadId);
      w.model.uploads.delete(u.uploadId);
    }
    await collectGarbage(t.store, { graceMs: 0, minLiveFraction: 1 });
    await t.reopen();
    await checkAll(w, true);
    const s = await computeStats(t.meta);
    assert.equal(s.unreferencedChunks, 0, "after the final gc every chunk is referenced");
    if (process.env.STOWAGE_MODEL_TIMING === "1") console.log(`seed ${seed}: ms per kind ${JSON.stringify(timing)}, operations ${JSON.stringify(counts)}`);
    return { ops: counts, logical: s.logicalBytes, unique: s.uniqueBytes, stored: s.storedBytes };
  } catch (err) {
    const msg = `model test failed: seed ${seed} at operation ${i} of ${ops} (rerun: STOWAGE_MODEL_SEED=${seed} STOWAGE_MODEL_OPS=${ops})\nlast operations:\n  ${w.log.join("\n  ")}\n${err instanceof Error ? err.message : String(err)}`;
    throw new Error(msg, { cause: err });
  } finally {
    await t.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }
}

for (const seed of SEEDS) {
  test(`model: seed ${seed}, ${OPS} random operations agree with the S3 model`, { timeout: SOAK ? 3_600_000 : 120_000 }, async () => {
    const started = Date.now();
    const r = await run(seed, OPS);
    // Content is drawn to share runs, and copies/snapshots share everything: dedup must show.
    if (r.logical > 0) assert.ok(r.unique < r.logical, `no dedup at all: unique ${r.unique} of logical ${r.logical} bytes`);
    if (SOAK) console.log(`seed ${seed}: ${JSON.stringify(r)} in ${Date.now() - started} ms`);
  });
}
