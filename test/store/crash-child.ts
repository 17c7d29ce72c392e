/**
 * The child process of the object-store crash test (crash.test.ts). It opens the repository, then
 * runs a seeded random workload on it — puts (with content shared between objects, so chunks are
 * deduplicated), overwrites, deletes, copies, multipart uploads (completed or aborted), snapshots,
 * pruning of noncurrent versions and garbage collection (grace 0) — a few operations at a time,
 * until the parent kills it with SIGKILL (or its time runs out: then it finishes cleanly).
 *
 * Usage: node dist/test/store/crash-child.js CONFIG.json   (a StoreChildConfig, see below)
 *
 * Protocol: one JSON object per line on fd 1, each written with one synchronous write(2) of less
 * than PIPE_BUF bytes (so a SIGKILL never leaves half a line, and a line is in the pipe before the
 * step after it runs):
 *
 *   {"t":"start"}                        before the repository is opened
 *   {"t":"open"}                         after it is open
 *   {"t":"begin","id":N,"op":"put","eff":[["bucket/key","<md5 hex>"|null], ...]}
 *                                        before operation N makes its first call; `eff` is what
 *                                        must hold once it is acknowledged (a null md5: the key
 *                                        reads as missing)
 *   {"t":"ack","id":N}                   after operation N's promise resolved
 *   {"t":"done"}                         clean end (time ran out)
 *
 * The child never runs two operations on one key at once (every operation marks the keys it reads
 * or writes busy until it settles), so per key the acknowledged operations are ordered, and at most
 * one is in flight when the kill lands. Any failed operation is a bug: the child reports it on
 * stderr and exits with status 2.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { keysFromMasterKey, parseMasterKey } from "../../src/codec/keys.js";
import { openRepository } from "../../src/store/repository.js";
import { collectGarbage } from "../../src/store/gc.js";
import type { ObjectStore } from "../../src/store/store.js";
import { bytes } from "./helpers.js";
import { mulberry32 } from "../../src/util/random.js";

export interface StoreChildConfig {
  dir: string;
  /** The master key, 64 hex digits. */
  keyHex: string;
  seed: number;
  /** Distinguishes snapshot destinations of different runs. */
  run: number;
  concurrency: number;
  /** Clean stop after this long (the parent normally kills the child first). */
  runMs: number;
  /** Keys ("bucket/key") known to hold content, with its MD5. */
  present: Record<string, string>;
  /** Keys whose state is not known (an operation on them was in flight at an earlier kill). */
  uncertain: string[];
}

function emitTo(fd: number, line: string): void {
  const buf = Buffer.from(line + "\n");
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
  }
}
const emit = (obj: object): void => emitTo(1, JSON.stringify(obj));

const md5 = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");

/** Object keys the workload writes: bucket `crash` (unversioned) and `vers` (versioning on). */
export const CRASH_PREFIXES = 4;
export const KEYS_PER_PREFIX = 6;
export const VERSIONED_KEYS = 6;

function universe(): string[] {
  const out: string[] = [];
  for (let p = 0; p < CRASH_PREFIXES; p++) for (let k = 0; k < KEYS_PER_PREFIX; k++) out.push(`crash/p${p}/k${k}`);
  for (let v = 0; v < VERSIONED_KEYS; v++) out.push(`vers/v${v}`);
  return out;
}

function split(full: string): [bucket: string, key: string] {
  const i = full.indexOf("/");
  return [full.slice(0, i), full.slice(i + 1)];
}

async function main(): Promise<void> {
  const cfgPath = process.argv[2];
  if (cfgPath === undefined) throw new Error("usage: crash-child.js CONFIG.json");
  const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8")) as StoreChildConfig;
  const rand = mulberry32(cfg.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

  /**
   * Content: 1–4 segments, most of them prefixes of a few shared pseudo-random streams (so
   * objects share chunks and dedup happens), some unique; 0 to 300 KB in all.
   */
  const content = (maxSize: number, minSize = 0): Buffer => {
    if (minSize === 0 && rand() < 0.05) return Buffer.alloc(0);
    const total = minSize + Math.floor(rand() * (maxSize - minSize + 1));
    const segs: Buffer[] = [];
    let n = 0;
    while (n < total) {
      const len = Math.min(total - n, 1 + Math.floor(rand() * 120_000));
      const seed = rand() < 0.75 ? 1 + Math.floor(rand() * 16) : 1000 + Math.floor(rand() * 1e9);
      segs.push(bytes(len, seed));
      n += len;
    }
    return Buffer.concat(segs, total);
  };

  /** The data as a stream of random-sized pieces. */
  const pieces = (data: Buffer): Generator<Uint8Array> => piecesOf(data, 1 + Math.floor(rand() * 40_000));
  function* piecesOf(data: Buffer, piece: number): Generator<Uint8Array> {
    let off = 0;
    while (off < data.length) {
      yield data.subarray(off, Math.min(data.length, off + piece));
      off += piece;
    }
  }

  emit({ t: "start" });
  const repo = await openRepository(cfg.dir, { keys: keysFromMasterKey(parseMasterKey(cfg.keyHex)), minPartSize: 1 });
  emit({ t: "open" });
  const store: ObjectStore = repo.store;

  const present = new Map(Object.entries(cfg.present));
  const uncertain = new Set(cfg.uncertain);
  const busy = new Set<string>();
  const keys = universe();
  let nextId = 1;
  let snapshots = 0;

  interface Planned {
    op: string;
    eff: Array<[string, string | null]>;
    /** Keys read or written: busy while the operation runs. */
    touches: string[];
    run: () => Promise<void>;
  }

  const free = (k: string): boolean => !busy.has(k);
  const freeKeys = (): string[] => keys.filter(free);

  const put = (): Planned | undefined => {
    const known = [...present.keys()].filter((k) => free(k) && !k.startsWith("snap/"));
    const target = rand() < 0.5 && known.length > 0 ? pick(known) : pick(freeKeys());
    if (target === undefined || !free(target)) return undefined;
    const data = content(300_000);
    const sum = md5(data);
    const [b, k] = split(target);
    return {
      op: "put",
      eff: [[target, sum]],
      touches: [target],
      run: async () => {
        const r = await store.putObject(b, k, pieces(data), {
          size: data.length,
          contentMD5: Buffer.from(sum, "hex").toString("base64"),
          contentType: "application/octet-stream",
        });
        if (r.etag !== sum) throw new Error(`put ${target}: etag ${r.etag}, expected ${sum}`);
      },
    };
  };

  const del = (): Planned | undefined => {
    let candidates = [...present.keys()].filter(free);
    const snaps = candidates.filter((k) => k.startsWith("snap/"));
    if (snaps.length > 12 && rand() < 0.7) candidates = snaps;
    if (candidates.length === 0) return undefined;
    const target = pick(candidates);
    const [b, k] = split(target);
    return { op: "delete", eff: [[target, null]], touches: [target], run: async () => void (await store.deleteObject(b, k)) };
  };

  const copy = (): Planned | undefined => {
    const sources = [...present.keys()].filter(free);
    if (sources.length === 0) return undefined;
    const src = pick(sources);
    const dst = pick(freeKeys().filter((k) => k !== src));
    if (dst === undefined) return undefined;
    const [sb, sk] = split(src);
    const [db, dk] = split(dst);
    return { op: "copy", eff: [[dst, present.get(src)!]], touches: [src, dst], run: async () => void (await store.copyObject(sb, sk, db, dk)) };
  };

  const multipart = (): Planned | undefined => {
    const target = pick(freeKeys());
    if (target === undefined) return undefined;
    const nParts = 2 + Math.floor(rand() * 3);
    const parts: Buffer[] = [];
    for (let i = 0; i < nParts; i++) parts.push(content(100_000, 1));
    const whole = Buffer.concat(parts);
    const abort = rand() < 0.15;
    const [b, k] = split(target);
    return {
      op: abort ? "multipart-abort" : "multipart",
      eff: abort ? [] : [[target, md5(whole)]],
      touches: [target],
      run: async () => {
        const up = await store.createMultipartUpload(b, k);
        const done: Array<{ partNumber: number; etag: string }> = [];
        for (const [i, p] of parts.entries()) {
          const rec = await store.uploadPart(b, up.uploadId, i + 1, pieces(p), { size: p.length });
          done.push({ partNumber: i + 1, etag: rec.etag });
        }
        if (abort) await store.abortMultipartUpload(b, up.uploadId);
        else await store.completeMultipartUpload(b, up.uploadId, done);
      },
    };
  };

  const snapshot = (): Planned | undefined => {
    const p = Math.floor(rand() * CRASH_PREFIXES);
    const srcKeys = keys.filter((k) => k.startsWith(`crash/p${p}/`));
    if (srcKeys.some((k) => busy.has(k) || uncertain.has(k))) return undefined;
    const dstPrefix = `r${cfg.run}s${++snapshots}/`;
    const eff: Array<[string, string | null]> = [];
    for (const k of srcKeys) {
      const sum = present.get(k);
      if (sum !== undefined) eff.push([`snap/${dstPrefix}${k.slice(`crash/p${p}/`.length)}`, sum]);
    }
    return {
      op: "snapshot",
      eff,
      touches: [...srcKeys, ...eff.map(([k]) => k)],
      run: async () => {
        const r = await store.snapshot("crash", `p${p}/`, "snap", dstPrefix);
        if (r.objects !== eff.length) throw new Error(`snapshot of crash/p${p}/ copied ${r.objects} objects, expected ${eff.length}`);
      },
    };
  };

  const gc = (): Planned => ({
    op: "gc",
    eff: [],
    touches: [],
    run: async () => void (await collectGarbage(store, { graceMs: 0, minLiveFraction: 0.3 + rand() * 0.6 })),
  });

  const prune = (): Planned | undefined => {
    const target = pick(keys.filter((k) => k.startsWith("vers/") && free(k)));
    if (target === undefined) return undefined;
    const [b, k] = split(target);
    return {
      op: "prune",
      eff: [],
      touches: [target],
      run: async () => {
        const r = await store.listObjectVersions(b, { prefix: k });
        for (const v of r.versions) if (v.key === k && !v.isLatest) await store.deleteObject(b, k, { versionId: v.versionId });
      },
    };
  };

  const kinds: Array<[() => Planned | undefined, number]> = [
    [put, 34],
    [del, 12],
    [copy, 10],
    [multipart, 12],
    [snapshot, 6],
    [gc, 7],
    [prune, 5],
  ];
  const totalWeight = kinds.reduce((a, [, w]) => a + w, 0);
  const plan = (): Planned | undefined => {
    for (let tries = 0; tries < 20; tries++) {
      let x = rand() * totalWeight;
      for (const [make, w] of kinds) {
        if ((x -= w) < 0) {
          const p = make();
          if (p !== undefined) return p;
          break;
        }
      }
    }
    return undefined;
  };

  const inFlight = new Set<Promise<void>>();
  const start = (p: Planned): void => {
    const id = nextId++;
    for (const k of p.touches) busy.add(k);
    emit({ t: "begin", id, op: p.op, eff: p.eff });
    const promise = p.run().then(
      () => {
        emit({ t: "ack", id });
        for (const [k, v] of p.eff) {
          if (v === null) present.delete(k);
          else present.set(k, v);
          uncertain.delete(k);
        }
        for (const k of p.touches) busy.delete(k);
        inFlight.delete(promise);
      },
      (err: unknown) => {
        emitTo(2, `crash-child: operation ${id} (${p.op} ${JSON.stringify(p.eff)}) failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        process.exit(2);
      },
    );
    inFlight.add(promise);
  };

  const deadline = Date.now() + cfg.runMs;
  while (Date.now() < deadline) {
    while (inFlight.size < cfg.concurrency) {
      const p = plan();
      if (p === undefined) break;
      start(p);
    }
    if (inFlight.size === 0) throw new Error("no operation could be planned");
    await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await repo.close();
  emit({ t: "done" });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    emitTo(2, `crash-child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(2);
  },
);
