/**
 * Issue 7, "the bucket alone is enough", end to end through the S3 API: the real gateway
 * (`stowage serve`, a child process, metadata journal on (the default), cloud durability,
 * the bucket a directory outside the data directory) serves several concurrent AWS SDK v3 clients
 * doing random puts, overwrites, deletes, CopyObject (both metadata directives) and small multipart
 * uploads (completed, aborted or left open) on a few keys of an unversioned and a versioned bucket;
 * in the versioned one also deletes of specific versions. At a random moment the gateway is killed
 * with SIGKILL and its data directory deleted entirely; `stowage recover` rebuilds a new one from
 * the bucket, `serve` runs on it, and everything is checked through the S3 API against a model of
 * what was acknowledged (and what was in flight at the kill, which may or may not have applied):
 *
 * - unversioned keys: the content (md5), content type and user metadata are those of a write that
 *   may be the last one: acknowledged or in flight, and not followed by an acknowledged write that
 *   started after it finished; so no acknowledged write is lost and no acknowledged delete undone;
 * - versioned keys (listed one version per page, newest first): every acknowledged version and
 *   delete marker is there with its bytes and metadata unless a delete of that version id may have
 *   applied, versions deleted with an acknowledgement are gone, every other version is explained by
 *   a distinct write in flight, acknowledged writes are listed in real-time order, and the current
 *   version is the newest;
 * - multipart uploads: acknowledged parts of uploads never completed or aborted are still listed,
 *   completed or aborted ones are gone.
 *
 * Then `serve` stops, `stowage fsck --read-data` must be clean, `stowage gc` recycles packs (which
 * must carry their journal records), and the next round runs on the recovered directory (the model
 * rebased on what was observed), so later rounds also recover a recovered repository and the work
 * of earlier rounds. A second test does the same with the cloud tier on a real S3-compatible server
 * (moto, an s3:// bucket; STOWAGE_CRASH_S3_ROUNDS, default 1). Rounds: STOWAGE_CRASH_ROUNDS (default 3); seed: STOWAGE_CRASH_SEED (printed on
 * failure; it fixes each client's choices, not the interleaving nor the moment of the kill). A
 * failed run keeps its directories and prints where they are.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  ListPartsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { mulberry32 } from "../../src/util/random.js";
import { S3Backend } from "../../src/backend/s3.js";
import { S3TestServer, findS3Servers, INSTALL_HINT } from "../backend/s3-server.js";

/** dist/test/recover/gateway-crash.test.js -> dist/src/cli/main.js, whatever the output directory. */
const BIN = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const PASSPHRASE = "gateway crash test passphrase";
const ACCESS_KEY = "STWGATEWAYCRASHTEST";
const SECRET_KEY = "gateway-crash-test-secret-key";
const ROUNDS = Number(process.env.STOWAGE_CRASH_ROUNDS ?? "3");
const SEED = process.env.STOWAGE_CRASH_SEED !== undefined && process.env.STOWAGE_CRASH_SEED !== "" ? Number(process.env.STOWAGE_CRASH_SEED) >>> 0 : Math.floor(Math.random() * 2 ** 32) >>> 0;
const CLIENTS = 10;
const MiB = 1024 * 1024;
/** The server's minimum size of a part other than the last (src/store/store.ts DEFAULT_MIN_PART_SIZE; not a serve setting). */
const MIN_PART = 5 * MiB;
/** Multipart uploads with a MIN_PART part: at most this many per round (they cost time). */
const BIG_UPLOADS_PER_ROUND = 3;

const PLAIN = "plain";
const VERS = "vers";
const KEYS: Record<string, string[]> = { [PLAIN]: ["k0", "k1", "k2", "k3"], [VERS]: ["k0", "k1", "k2"] };

const md5hex = (b: Uint8Array): string => createHash("md5").update(b).digest("hex");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const unquote = (etag: string | undefined): string => (etag ?? "").replace(/^"+|"+$/g, "");

// ------------------------------------------------------------------------------------------
// Child processes
// ------------------------------------------------------------------------------------------

/** The test's environment without STOWAGE_* variables (the journal is on by default), plus the passphrase and the root key. */
/** More environment for the children (the S3 bucket's credentials). */
let extraEnv: Record<string, string> = {};

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("STOWAGE_")) env[k] = v;
  env.STOWAGE_PASSPHRASE = PASSPHRASE;
  env.STOWAGE_ROOT_ACCESS_KEY = ACCESS_KEY;
  env.STOWAGE_ROOT_SECRET_KEY = SECRET_KEY;
  return { ...env, ...extraEnv };
}

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

async function cliOk(args: string[]): Promise<CliResult> {
  const r = await cli(args);
  assert.equal(r.status, 0, `stowage ${args.join(" ")} exited ${String(r.status)}\nstderr: ${r.stderr.slice(-4000)}\nstdout: ${r.stdout.slice(0, 4000)}`);
  return r;
}

interface Gateway {
  child: ChildProcess;
  url: string;
  stderr(): string;
  exited: Promise<number | null>;
}

async function startGateway(data: string, commitDelayMs: number): Promise<Gateway> {
  const args = ["serve", "--data", data, "--address", "127.0.0.1", "--port", "0", "--log-level", "warn", "--commit-delay", String(commitDelayMs)];
  const child = spawn(process.execPath, [BIN, ...args], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  // The log (stdout) goes with the messages (stderr): both are shown when a round fails.
  child.stdout!.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start in 30 s: ${stderr}`)), 30_000);
    child.stderr!.on("data", (b: Buffer) => {
      stderr += b.toString("utf8");
      const m = /S3 endpoint (http:\/\/\S+)/.exec(stderr);
      if (m !== null && /secret key /.test(stderr)) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited ${String(code)} before listening: ${stderr}`));
    });
  });
  return { child, url, stderr: () => stderr, exited };
}

/** SIGTERM: the gateway drains and must exit 0. */
async function stopGateway(g: Gateway): Promise<void> {
  g.child.kill("SIGTERM");
  const code = await g.exited;
  assert.equal(code, 0, `serve exited ${String(code)} on SIGTERM: ${g.stderr().slice(-4000)}`);
}

function client(url: string): S3Client {
  return new S3Client({
    endpoint: url,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY },
    // One attempt: an operation is acknowledged exactly when its one request got a success.
    maxAttempts: 1,
  });
}

/** The S3 error code and HTTP status of an SDK error; status undefined for transport errors. */
function s3ErrorOf(err: unknown): { code: string; status: number | undefined; text: string } {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number }; message?: string };
  const status = e.$metadata?.httpStatusCode;
  const code = (e.name === "Unknown" || e.name === undefined ? e.Code : e.name) ?? "?";
  return { code, status, text: `${code} (${String(status)}): ${e.message ?? String(err)}` };
}

// ------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------

/** What a read of one object (or version) showed. */
interface Obs {
  md5: string;
  contentType: string;
  meta: Record<string, string>;
}

type Status = "pending" | "acked" | "maybe" | "failed";

type OpKind = "put" | "mpu" | "copy" | "delete" | "delver" | "baseline";

interface Op {
  id: number;
  kind: OpKind;
  bucket: string;
  key: string;
  /** Logical times: `start` when the request was sent, `end` when its answer arrived (Infinity while unknown). */
  start: number;
  end: number;
  status: Status;
  /** put/mpu/copy with REPLACE: the content type and user metadata written (metadata `w` is the op id). */
  contentType?: string;
  meta?: Record<string, string>;
  /** put/mpu: the content's md5; copy: filled from the response ETag when acknowledged. */
  md5?: string;
  /** copy: the source and directive. */
  source?: { bucket: string; key: string };
  directive?: "COPY" | "REPLACE";
  /** Acknowledged in the versioned bucket: the version id (or delete marker id) created. */
  versionId?: string;
  /** delver: the version id to delete. */
  target?: string;
  /** baseline (a state observed by an earlier round): the observation, undefined when absent / a marker. */
  obs?: Obs;
  /** baseline in the versioned bucket: a delete marker. */
  marker?: boolean;
  error?: string;
}

interface PartRec {
  partNumber: number;
  etag: string;
  status: Status;
}

interface UploadRec {
  bucket: string;
  key: string;
  uploadId: string;
  parts: PartRec[];
  /** Complete (through an mpu op) or abort, and how it ended. */
  finish?: { kind: "complete" | "abort"; status: Status };
  /** Observed open by an earlier round: must stay so, with exactly `parts`. */
  carried: boolean;
  /** Deliberately left open (any client may abort it later). */
  abandoned?: boolean;
}

class Model {
  clock = 0;
  nextId = 1;
  readonly ops = new Map<number, Op>();
  /** Per bucket/key: the ops of the current round (and the baseline from the previous one). */
  readonly byKey = new Map<string, Op[]>();
  readonly etagMd5 = new Map<string, string>();
  readonly allMd5 = new Set<string>();
  uploads: UploadRec[] = [];
  /** Errors no operation should get while the gateway is up. */
  readonly unexpected: string[] = [];
  killed = false;
  readonly counts = new Map<string, number>();

  tick(): number {
    return ++this.clock;
  }

  opsOf(bucket: string, key: string): Op[] {
    const k = `${bucket}/${key}`;
    let list = this.byKey.get(k);
    if (list === undefined) this.byKey.set(k, (list = []));
    return list;
  }

  begin(fields: Omit<Op, "id" | "start" | "end" | "status">, id = this.nextId++): Op {
    const op: Op = { ...fields, id, start: this.tick(), end: Infinity, status: "pending" };
    this.ops.set(op.id, op);
    this.opsOf(op.bucket, op.key).push(op);
    return op;
  }

  ack(op: Op): void {
    op.status = "acked";
    op.end = this.tick();
    this.counts.set(op.kind, (this.counts.get(op.kind) ?? 0) + 1);
  }

  /**
   * A failed request. After the kill it may or may not have applied. Before it, `expected` S3
   * errors are definite failures; anything else is unexpected (recorded) and may have applied.
   */
  fail(op: Op | PartRec | UploadRec["finish"], err: unknown, expected: string[] = []): void {
    const e = s3ErrorOf(err);
    if (op === undefined) return;
    if (this.killed) op.status = "maybe";
    else if (e.status !== undefined && e.status < 500 && expected.includes(e.code)) op.status = "failed";
    else {
      op.status = "maybe";
      this.unexpected.push(`${"kind" in op && "id" in op ? `op ${op.id} ${op.kind} ${op.bucket}/${op.key}` : "request"}: ${e.text}`);
    }
    if ("id" in op) {
      op.error = e.text;
      // The effect, if any, happened before the answer.
      if (!this.killed) op.end = this.tick();
    }
  }

  /** May `op` have produced `obs` (undefined: absent, or a delete marker)? */
  accepts(op: Op, obs: Obs | undefined): boolean {
    if (op.kind === "delete") return obs === undefined;
    if (op.kind === "baseline") return obs === undefined ? op.obs === undefined : op.obs !== undefined && sameObs(op.obs, obs);
    if (op.kind === "delver" || obs === undefined) return false;
    if (op.kind === "copy" && op.directive === "COPY") {
      if (!this.originOk(obs)) return false;
      return op.status !== "acked" || obs.md5 === op.md5;
    }
    return obs.meta.w === String(op.id) && this.originOk(obs);
  }

  /** The write that created `obs`'s content type and metadata (metadata `w`) could have written its bytes. */
  originOk(obs: Obs): boolean {
    const origin = this.ops.get(Number(obs.meta.w));
    if (origin === undefined || origin.meta === undefined || origin.kind === "delete" || origin.kind === "delver" || origin.kind === "baseline") return false;
    if (origin.status === "failed" || origin.status === "pending") return false;
    if (obs.contentType !== origin.contentType || !sameMeta(obs.meta, origin.meta)) return false;
    if (origin.kind === "copy" && origin.status !== "acked") return this.allMd5.has(obs.md5);
    return obs.md5 === origin.md5;
  }

  /** After a round's checks: what was observed becomes the acknowledged starting state. */
  rebase(plain: Map<string, Obs | undefined>, vers: Map<string, VersionEntry[]>, uploads: UploadRec[]): void {
    const t = this.tick();
    this.byKey.clear();
    const baseline = (bucket: string, key: string, fields: Partial<Op>): void => {
      const op: Op = { id: this.nextId++, kind: "baseline", bucket, key, start: t, end: t, status: "acked", ...fields };
      this.ops.set(op.id, op);
      this.opsOf(bucket, key).push(op);
    };
    for (const [key, obs] of plain) baseline(PLAIN, key, obs === undefined ? {} : { obs });
    for (const [key, entries] of vers) {
      for (const e of entries) baseline(VERS, key, { versionId: e.versionId, marker: e.marker, ...(e.obs === undefined ? {} : { obs: e.obs }) });
    }
    this.uploads = uploads.map((u) => ({ ...u, carried: true, abandoned: true, parts: u.parts.map((p) => ({ ...p, status: "acked" as Status })) }));
    for (const u of this.uploads) delete u.finish;
    this.unexpected.length = 0;
    this.counts.clear();
    this.killed = false;
  }
}

function sameMeta(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function sameObs(a: Obs, b: Obs): boolean {
  return a.md5 === b.md5 && a.contentType === b.contentType && sameMeta(a.meta, b.meta);
}

function showObs(o: Obs | undefined): string {
  return o === undefined ? "absent" : `md5 ${o.md5} ${o.contentType} ${JSON.stringify(o.meta)}`;
}

function showOp(op: Op): string {
  const extra = [
    op.md5 === undefined ? "" : `md5 ${op.md5}`,
    op.source === undefined ? "" : `from ${op.source.bucket}/${op.source.key} ${op.directive ?? ""}`,
    op.versionId === undefined ? "" : `version ${op.versionId}`,
    op.target === undefined ? "" : `target ${op.target}`,
    op.kind === "baseline" ? (op.marker === true ? "marker" : showObs(op.obs)) : "",
    op.error === undefined ? "" : `error ${op.error}`,
  ].filter((s) => s !== "");
  return `#${op.id} ${op.kind} ${op.status} [${op.start}, ${op.end === Infinity ? "∞" : op.end}] ${extra.join(" ")}`;
}

// ------------------------------------------------------------------------------------------
// The clients
// ------------------------------------------------------------------------------------------

interface Load {
  model: Model;
  s3: S3Client;
  round: number;
  stopping: () => boolean;
  bigUploads: number;
}

function body(rnd: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  if (rnd() < 0.5) {
    // Incompressible.
    let i = 0;
    for (; i + 4 <= size; i += 4) b.writeUInt32LE(Math.floor(rnd() * 2 ** 32), i);
    for (; i < size; i++) b[i] = Math.floor(rnd() * 256);
  } else {
    // Compressible, yet unique.
    const line = Buffer.from(`frame ${Math.floor(rnd() * 1e9)} of a media sidecar file; timecode ${rnd()}\n`);
    for (let i = 0; i < size; i++) b[i] = line[i % line.length]!;
    if (size >= 8) b.writeUInt32LE(Math.floor(rnd() * 2 ** 32), size - 8);
  }
  return b;
}

function smallSize(rnd: () => number): number {
  const r = rnd();
  if (r < 0.05) return 0;
  if (r < 0.4) return 1 + Math.floor(rnd() * 2048);
  if (r < 0.85) return 2048 + Math.floor(rnd() * 62 * 1024);
  return 64 * 1024 + Math.floor(rnd() * 320 * 1024);
}

function pick<T>(rnd: () => number, items: readonly T[]): T {
  return items[Math.floor(rnd() * items.length)]!;
}

async function runClient(load: Load, ci: number, rnd: () => number): Promise<void> {
  const { model, s3 } = load;
  const bodies: Buffer[] = [];
  while (!load.stopping()) {
    const bucket = rnd() < 0.5 ? PLAIN : VERS;
    const key = pick(rnd, KEYS[bucket]!);
    const r = rnd();
    const tag = `r${load.round}c${ci}`;
    if (r < 0.36) {
      // Put (an overwrite when the key exists); sometimes bytes written before (dedup).
      const data = bodies.length > 0 && rnd() < 0.15 ? pick(rnd, bodies) : body(rnd, smallSize(rnd));
      if (bodies.length < 8) bodies.push(data);
      const md5 = md5hex(data);
      model.etagMd5.set(md5, md5);
      model.allMd5.add(md5);
      const op = model.begin({ kind: "put", bucket, key, md5, contentType: "", meta: {} });
      op.contentType = `application/x-stowage-${op.id}`;
      op.meta = { w: String(op.id), c: tag };
      try {
        const res = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data, ContentType: op.contentType, Metadata: op.meta }));
        model.ack(op);
        if (unquote(res.ETag) !== md5) model.unexpected.push(`put #${op.id}: ETag ${String(res.ETag)}, expected ${md5}`);
        if (bucket === VERS) op.versionId = res.VersionId;
      } catch (err) {
        model.fail(op, err);
      }
    } else if (r < 0.5) {
      const op = model.begin({ kind: "delete", bucket, key });
      try {
        const res = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
        model.ack(op);
        if (bucket === VERS) {
          op.versionId = res.VersionId;
          if (res.DeleteMarker !== true) model.unexpected.push(`delete #${op.id} in the versioned bucket placed no delete marker`);
        }
      } catch (err) {
        model.fail(op, err);
      }
    } else if (r < 0.64) {
      const srcBucket = rnd() < 0.5 ? PLAIN : VERS;
      const srcKey = pick(rnd, KEYS[srcBucket]!.filter((k) => srcBucket !== bucket || k !== key));
      const directive = rnd() < 0.5 ? "COPY" : "REPLACE";
      const op = model.begin({ kind: "copy", bucket, key, source: { bucket: srcBucket, key: srcKey }, directive });
      if (directive === "REPLACE") {
        op.contentType = `text/x-stowage-copy-${op.id}`;
        op.meta = { w: String(op.id), c: tag, copy: "replace" };
      }
      try {
        const res = await s3.send(
          new CopyObjectCommand({
            Bucket: bucket,
            Key: key,
            CopySource: `${srcBucket}/${srcKey}`,
            MetadataDirective: directive,
            ...(directive === "REPLACE" ? { ContentType: op.contentType, Metadata: op.meta } : {}),
          }),
        );
        model.ack(op);
        const etag = unquote(res.CopyObjectResult?.ETag);
        op.md5 = model.etagMd5.get(etag);
        if (op.md5 === undefined) model.unexpected.push(`copy #${op.id}: ETag ${etag} of no content written`);
        if (bucket === VERS) op.versionId = res.VersionId;
      } catch (err) {
        // The source may not exist (never written, deleted, a delete marker).
        model.fail(op, err, ["NoSuchKey"]);
      }
    } else if (r < 0.78) {
      await multipart(load, bucket, key, rnd, tag);
    } else if (r < 0.86 && bucket === VERS) {
      // Delete one version for good: one whose id an acknowledged write (or an earlier round) returned.
      const candidates = model.opsOf(VERS, key).filter((o) => o.status === "acked" && o.versionId !== undefined);
      if (candidates.length === 0) continue;
      const target = pick(rnd, candidates).versionId!;
      const op = model.begin({ kind: "delver", bucket, key, target });
      try {
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: target }));
        model.ack(op);
      } catch (err) {
        model.fail(op, err);
      }
    } else if (r < 0.9 && model.uploads.length > 0) {
      // Abort an upload left open (this round or an earlier one).
      const open = model.uploads.filter((u) => u.finish === undefined && u.abandoned === true);
      if (open.length === 0) continue;
      const u = pick(rnd, open);
      u.finish = { kind: "abort", status: "pending" };
      try {
        await s3.send(new AbortMultipartUploadCommand({ Bucket: u.bucket, Key: u.key, UploadId: u.uploadId }));
        u.finish.status = "acked";
      } catch (err) {
        model.fail(u.finish, err);
      }
    } else {
      await sleep(Math.floor(rnd() * 30));
    }
    if (rnd() < 0.2) await sleep(Math.floor(rnd() * 40));
  }
}

async function multipart(load: Load, bucket: string, key: string, rnd: () => number, tag: string): Promise<void> {
  const { model, s3 } = load;
  const big = load.bigUploads < BIG_UPLOADS_PER_ROUND && rnd() < 0.15;
  if (big) load.bigUploads++;
  const parts = big ? [body(rnd, MIN_PART), body(rnd, 1 + Math.floor(rnd() * 100_000))] : [body(rnd, 1 + Math.floor(rnd() * 200_000))];
  const whole = md5hex(Buffer.concat(parts));
  const etag = `${createHash("md5").update(Buffer.concat(parts.map((p) => createHash("md5").update(p).digest()))).digest("hex")}-${parts.length}`;
  model.etagMd5.set(etag, whole);
  model.allMd5.add(whole);
  const id = model.nextId++;
  const contentType = `video/x-stowage-mpu-${id}`;
  const meta = { w: String(id), c: tag, mpu: String(parts.length) };
  const pause = rnd() < 0.3;
  let uploadId: string | undefined;
  try {
    const res = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: contentType, Metadata: meta }));
    uploadId = res.UploadId;
  } catch (err) {
    // No upload id: nothing to check later.
    if (!model.killed) model.unexpected.push(`CreateMultipartUpload ${bucket}/${key}: ${s3ErrorOf(err).text}`);
    return;
  }
  if (uploadId === undefined) {
    model.unexpected.push("CreateMultipartUpload returned no UploadId");
    return;
  }
  const u: UploadRec = { bucket, key, uploadId, parts: [], carried: false };
  model.uploads.push(u);
  for (let i = 0; i < parts.length; i++) {
    if (load.stopping()) return;
    if (pause) await sleep(20 + Math.floor(rnd() * 250));
    const p: PartRec = { partNumber: i + 1, etag: md5hex(parts[i]!), status: "pending" };
    u.parts.push(p);
    try {
      const res = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: p.partNumber, Body: parts[i]! }));
      p.status = "acked";
      if (unquote(res.ETag) !== p.etag) model.unexpected.push(`part ${p.partNumber} of ${uploadId}: ETag ${String(res.ETag)}, expected ${p.etag}`);
    } catch (err) {
      model.fail(p, err);
      return;
    }
  }
  if (load.stopping()) return;
  if (pause) await sleep(20 + Math.floor(rnd() * 250));
  const r = rnd();
  if (r < 0.1) {
    // Left open: checked after recovery, maybe aborted later.
    u.abandoned = true;
    return;
  }
  if (r < 0.2) {
    u.finish = { kind: "abort", status: "pending" };
    try {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
      u.finish.status = "acked";
    } catch (err) {
      model.fail(u.finish, err);
    }
    return;
  }
  // The object appears only at completion: the op (on the key) starts here.
  u.finish = { kind: "complete", status: "pending" };
  const op = model.begin({ kind: "mpu", bucket, key, md5: whole, contentType, meta }, id);
  try {
    const res = await s3.send(
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: u.parts.map((p) => ({ PartNumber: p.partNumber, ETag: `"${p.etag}"` })) } }),
    );
    model.ack(op);
    u.finish.status = "acked";
    if (unquote(res.ETag) !== etag) model.unexpected.push(`complete #${id}: ETag ${String(res.ETag)}, expected ${etag}`);
    if (bucket === VERS) op.versionId = res.VersionId;
  } catch (err) {
    model.fail(op, err);
    u.finish.status = op.status;
  }
}

// ------------------------------------------------------------------------------------------
// Verification through the S3 API
// ------------------------------------------------------------------------------------------

interface VersionEntry {
  versionId: string;
  marker: boolean;
  isLatest: boolean;
  obs?: Obs;
}

async function read(s3: S3Client, bucket: string, key: string, versionId?: string): Promise<Obs | undefined> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(versionId === undefined ? {} : { VersionId: versionId }) }));
    const bytes = await r.Body!.transformToByteArray();
    return { md5: md5hex(bytes), contentType: r.ContentType ?? "", meta: r.Metadata ?? {} };
  } catch (err) {
    const e = s3ErrorOf(err);
    if (e.status === 404 && (e.code === "NoSuchKey" || e.code === "NoSuchVersion")) return undefined;
    throw err;
  }
}

/** Every version and delete marker of `key`, newest first, one per page (so their order is S3's). */
async function versionsOf(s3: S3Client, bucket: string, key: string, problems: string[]): Promise<VersionEntry[]> {
  const out: VersionEntry[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (let page = 0; page < 100_000; page++) {
    const r = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key, MaxKeys: 1, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }));
    const entries = [
      ...(r.Versions ?? []).map((v) => ({ key: v.Key, versionId: v.VersionId ?? "", marker: false, isLatest: v.IsLatest === true })),
      ...(r.DeleteMarkers ?? []).map((d) => ({ key: d.Key, versionId: d.VersionId ?? "", marker: true, isLatest: d.IsLatest === true })),
    ];
    if (entries.length > 1) problems.push(`${bucket}/${key}: ListObjectVersions with MaxKeys 1 returned ${entries.length} entries`);
    for (const e of entries) {
      if (e.key !== key) problems.push(`${bucket}/${key}: listing prefix ${key} returned ${String(e.key)}`);
      else out.push({ versionId: e.versionId, marker: e.marker, isLatest: e.isLatest });
    }
    if (r.IsTruncated !== true) return out;
    keyMarker = r.NextKeyMarker;
    versionIdMarker = r.NextVersionIdMarker;
  }
  problems.push(`${bucket}/${key}: version listing does not end`);
  return out;
}

/** A maximum matching of extra versions to distinct in-flight writes (augmenting paths; tiny sets). */
function matchExtras(extras: VersionEntry[], maybeOps: Op[], model: Model): Map<VersionEntry, Op> | undefined {
  const ok = (e: VersionEntry, op: Op): boolean => (e.marker ? op.kind === "delete" : op.kind !== "delete" && model.accepts(op, e.obs));
  const owner = new Map<Op, VersionEntry>();
  const tryAssign = (e: VersionEntry, seen: Set<Op>): boolean => {
    for (const op of maybeOps) {
      if (seen.has(op) || !ok(e, op)) continue;
      seen.add(op);
      const prev = owner.get(op);
      if (prev === undefined || tryAssign(prev, seen)) {
        owner.set(op, e);
        return true;
      }
    }
    return false;
  };
  for (const e of extras) if (!tryAssign(e, new Set())) return undefined;
  return new Map([...owner].map(([op, e]) => [e, op]));
}

interface Verified {
  plain: Map<string, Obs | undefined>;
  vers: Map<string, VersionEntry[]>;
  uploads: UploadRec[];
  problems: string[];
  summary: string;
}

async function verify(s3: S3Client, model: Model): Promise<Verified> {
  const problems: string[] = [];
  const live = (op: Op): boolean => op.status === "acked" || op.status === "maybe";
  const history = (bucket: string, key: string): string => model.opsOf(bucket, key).map((o) => `    ${showOp(o)}`).join("\n");

  // Unversioned: the object is what one of the possibly-last writes left.
  const plain = new Map<string, Obs | undefined>();
  for (const key of KEYS[PLAIN]!) {
    const obs = await read(s3, PLAIN, key);
    plain.set(key, obs);
    const ops = model.opsOf(PLAIN, key).filter(live);
    const acked = ops.filter((o) => o.status === "acked");
    const candidates = ops.filter((o) => !acked.some((a) => a.start > o.end));
    if (!candidates.some((o) => model.accepts(o, obs))) {
      problems.push(`${PLAIN}/${key}: found ${showObs(obs)}; possible last writes:\n${candidates.map((o) => `    ${showOp(o)}`).join("\n")}\n  history:\n${history(PLAIN, key)}`);
    }
  }
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: PLAIN }));
  const listedKeys = (listed.Contents ?? []).map((o) => o.Key ?? "").sort();
  const presentKeys = [...plain].filter(([, o]) => o !== undefined).map(([k]) => k).sort();
  if (JSON.stringify(listedKeys) !== JSON.stringify(presentKeys)) problems.push(`${PLAIN}: ListObjectsV2 shows ${JSON.stringify(listedKeys)}, GET finds ${JSON.stringify(presentKeys)}`);

  // Versioned: acknowledged versions survive (unless deleted by id), extras are explained, order is real time.
  const vers = new Map<string, VersionEntry[]>();
  let versionsChecked = 0;
  for (const key of KEYS[VERS]!) {
    const entries = await versionsOf(s3, VERS, key, problems);
    vers.set(key, entries);
    for (const e of entries) if (!e.marker) e.obs = await read(s3, VERS, key, e.versionId);
    const ops = model.opsOf(VERS, key);
    const byVid = new Map(entries.map((e, i) => [e.versionId, i]));
    const writes = ops.filter((o) => o.kind !== "delver");
    const delvers = ops.filter((o) => o.kind === "delver" && live(o));
    const where = (): string => `  listed (newest first): ${entries.map((e) => `${e.versionId}${e.marker ? " (marker)" : ""}`).join(", ")}\n  history:\n${history(VERS, key)}`;
    if (entries.length > 0 && (!entries[0]!.isLatest || entries.slice(1).some((e) => e.isLatest))) problems.push(`${VERS}/${key}: IsLatest is not exactly the first entry\n${where()}`);
    const current = await read(s3, VERS, key);
    const top = entries[0];
    const expectCurrent = top === undefined || top.marker ? undefined : top.obs;
    if ((current === undefined) !== (expectCurrent === undefined) || (current !== undefined && !sameObs(current, expectCurrent!))) {
      problems.push(`${VERS}/${key}: GET shows ${showObs(current)}, the newest version is ${top === undefined ? "none" : top.marker ? "a delete marker" : showObs(top.obs)}`);
    }
    const ackedAt = new Map<number, Op>();
    // (A baseline without a version id is the key before anything was written.)
    for (const op of writes.filter((o) => o.status === "acked" && !(o.kind === "baseline" && o.versionId === undefined))) {
      if (op.versionId === undefined) {
        problems.push(`${VERS}/${key}: acknowledged ${showOp(op)} returned no version id`);
        continue;
      }
      const deletedForGood = delvers.some((d) => d.target === op.versionId && d.status === "acked");
      const mayBeDeleted = delvers.some((d) => d.target === op.versionId);
      const i = byVid.get(op.versionId);
      if (i === undefined) {
        if (!mayBeDeleted) problems.push(`${VERS}/${key}: acknowledged version ${op.versionId} is missing: ${showOp(op)}\n${where()}`);
        continue;
      }
      if (deletedForGood) {
        problems.push(`${VERS}/${key}: version ${op.versionId} was deleted (acknowledged) but is listed\n${where()}`);
        continue;
      }
      const e = entries[i]!;
      versionsChecked++;
      ackedAt.set(i, op);
      const isMarker = op.kind === "delete" || (op.kind === "baseline" && op.marker === true);
      if (e.marker !== isMarker) problems.push(`${VERS}/${key}: version ${op.versionId} is ${e.marker ? "" : "not "}a delete marker: ${showOp(op)}`);
      else if (!isMarker && !model.accepts(op, e.obs)) problems.push(`${VERS}/${key}: version ${op.versionId} reads ${showObs(e.obs)}, written by ${showOp(op)}`);
    }
    // Listed newest first: an acknowledged write that finished before another started is older.
    const positions = [...ackedAt.keys()].sort((a, b) => a - b);
    for (let a = 0; a < positions.length; a++) {
      for (let b = a + 1; b < positions.length; b++) {
        const newer = ackedAt.get(positions[a]!)!;
        const older = ackedAt.get(positions[b]!)!;
        if (newer.end < older.start) problems.push(`${VERS}/${key}: ${showOp(newer)} is listed newer than ${showOp(older)}, which started after it was acknowledged`);
      }
    }
    const known = new Set(writes.filter((o) => o.status === "acked").map((o) => o.versionId));
    const extras = entries.filter((e) => !known.has(e.versionId));
    if (extras.length > 0) {
      const maybeWrites = writes.filter((o) => o.status === "maybe");
      if (matchExtras(extras, maybeWrites, model) === undefined) {
        // Name the acknowledged write an extra version looks like (its version id changed?).
        const like = (e: VersionEntry): string => {
          const op = writes.find((o) => o.status === "acked" && o.kind !== "baseline" && (e.marker ? o.kind === "delete" : o.kind !== "delete" && model.accepts(o, e.obs)) && !byVid.has(o.versionId ?? ""));
          return op === undefined ? "" : ` (the bytes and metadata of ${showOp(op)}: acknowledged under another version id)`;
        };
        problems.push(
          `${VERS}/${key}: versions no acknowledged or in-flight write explains: ${extras.map((e) => `${e.versionId} ${e.marker ? "marker" : showObs(e.obs)}${like(e)}`).join("; ")}\n${where()}`,
        );
      }
    }
  }
  const listedVers = await s3.send(new ListObjectsV2Command({ Bucket: VERS }));
  const versKeys = (listedVers.Contents ?? []).map((o) => o.Key ?? "").sort();
  const versPresent = [...vers].filter(([, e]) => e.length > 0 && !e[0]!.marker).map(([k]) => k).sort();
  if (JSON.stringify(versKeys) !== JSON.stringify(versPresent)) problems.push(`${VERS}: ListObjectsV2 shows ${JSON.stringify(versKeys)}, the versions say ${JSON.stringify(versPresent)}`);

  // Multipart uploads: open ones keep their acknowledged parts, finished ones are gone.
  const uploads: UploadRec[] = [];
  let uploadsOpen = 0;
  for (const u of model.uploads) {
    let parts: Array<{ partNumber: number; etag: string }> | undefined;
    try {
      const r = await s3.send(new ListPartsCommand({ Bucket: u.bucket, Key: u.key, UploadId: u.uploadId }));
      parts = (r.Parts ?? []).map((p) => ({ partNumber: p.PartNumber ?? 0, etag: unquote(p.ETag) }));
    } catch (err) {
      const e = s3ErrorOf(err);
      if (e.status !== 404 || e.code !== "NoSuchUpload") throw err;
    }
    const what = `upload ${u.uploadId} (${u.bucket}/${u.key}${u.carried ? ", from an earlier round" : ""}, ${u.finish === undefined ? "not finished" : `${u.finish.kind} ${u.finish.status}`})`;
    const finished = u.finish?.status === "acked";
    const mayBeFinished = finished || u.finish?.status === "maybe";
    if (parts === undefined) {
      if (!mayBeFinished) problems.push(`${what}: gone`);
      continue;
    }
    if (finished) {
      problems.push(`${what}: still open`);
      continue;
    }
    uploadsOpen++;
    for (const p of u.parts.filter((x) => x.status === "acked")) {
      const found = parts.find((x) => x.partNumber === p.partNumber);
      if (found === undefined || found.etag !== p.etag) problems.push(`${what}: acknowledged part ${p.partNumber} (${p.etag}) is ${found === undefined ? "missing" : `listed with ETag ${found.etag}`}`);
    }
    for (const p of parts) {
      const sent = u.parts.find((x) => x.partNumber === p.partNumber && x.status !== "failed");
      if (sent === undefined || sent.etag !== p.etag) problems.push(`${what}: part ${p.partNumber} (${p.etag}) was never sent`);
    }
    uploads.push({ ...u, parts: parts.map((p) => ({ ...p, status: "acked" })) });
  }
  const summary = `plain: ${[...plain.values()].filter((o) => o !== undefined).length}/${plain.size} keys present; vers: ${[...vers.values()].reduce((n, e) => n + e.length, 0)} versions listed, ${versionsChecked} acknowledged ones checked; ${uploadsOpen} open uploads`;
  return { plain, vers, uploads, problems, summary };
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

test(`SIGKILL of a serving gateway, data directory lost: recover from the bucket keeps every acknowledged S3 operation (${ROUNDS} rounds)`, { timeout: 60_000 + ROUNDS * 60_000 }, async (t: TestContext) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-gwcrash-"));
  const bucketDir = path.join(root, "bucket");
  await crashRounds(t, root, pathToFileURL(bucketDir).href, [], ROUNDS, (data) => assert.ok(!bucketDir.startsWith(data + path.sep), "the bucket is outside the data directory"));
});

// The same with the cloud tier on a real S3-compatible server (moto): one round by default.
const haveMoto = findS3Servers().includes("moto");
const S3_ROUNDS = Number(process.env.STOWAGE_CRASH_S3_ROUNDS ?? "1");
test(
  `SIGKILL of a serving gateway whose cloud tier is on a real S3-compatible server (moto), data directory lost: recover keeps every acknowledged S3 operation (${S3_ROUNDS} rounds)`,
  { skip: haveMoto ? false : `moto is not installed: run ${INSTALL_HINT}`, timeout: 90_000 + S3_ROUNDS * 90_000 },
  async (t: TestContext) => {
    const srv = await S3TestServer.start("moto");
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "stowage-gwcrash-s3-"));
    extraEnv = { STOWAGE_S3_ACCESS_KEY: "test", STOWAGE_S3_SECRET_KEY: "test" };
    try {
      const bucketName = `stowage-gwcrash-${process.pid}`;
      const admin = new S3Backend({ bucket: bucketName, endpoint: srv.endpoint, forcePathStyle: true, credentials: { accessKeyId: "test", secretAccessKey: "test" } });
      await admin.client.send(new CreateBucketCommand({ Bucket: bucketName }));
      await admin.close();
      await crashRounds(t, root, `s3://${bucketName}/repo`, ["--s3-endpoint", srv.endpoint, "--s3-path-style"], S3_ROUNDS, (data) =>
        assert.equal(fs.existsSync(path.join(data, "bucket")), false, "nothing is written to a local bucket directory"),
      );
    } finally {
      extraEnv = {};
      await srv.stop();
    }
  },
);

/**
 * Rounds of load, SIGKILL, loss of the data directory, `stowage recover` from `bucketUrl` (with
 * `bucketArgs` for init and recover), verification, fsck and gc. Removes `root` when all pass.
 */
async function crashRounds(t: TestContext, root: string, bucketUrl: string, bucketArgs: string[], rounds: number, checkInit: (data: string) => void): Promise<void> {
  const ROUNDS = rounds;
  const rnd = mulberry32(SEED);
  let failed = true;
  let stage = "init";
  const times: string[] = [];
  let mark = Date.now();
  /** Starts the next stage, noting how long the one before took. */
  const next = (name: string): void => {
    const now = Date.now();
    times.push(`${stage.replace(/^round \d+: /, "")} ${((now - mark) / 1000).toFixed(1)}`);
    mark = now;
    stage = name;
  };
  let gateway: Gateway | undefined;
  const clients: S3Client[] = [];
  try {
    let data = path.join(root, "data-0");
    await cliOk(["init", "--data", data, "--bucket", bucketUrl, ...bucketArgs, "--kdf-cost", "10", "--chunk-min", "1024", "--chunk-avg", "4096", "--chunk-max", "16384", "--pack-size", "65536"]);
    checkInit(data);
    const model = new Model();
    for (let round = 1; round <= ROUNDS; round++) {
      const t0 = Date.now();
      const commitDelay = pick(rnd, [5, 20, 200]);
      if (round === 1) next("round 1: serve");
      gateway = await startGateway(data, commitDelay);
      const setup = client(gateway.url);
      clients.push(setup);
      if (round === 1) {
        await setup.send(new CreateBucketCommand({ Bucket: PLAIN }));
        await setup.send(new CreateBucketCommand({ Bucket: VERS }));
        await setup.send(new PutBucketVersioningCommand({ Bucket: VERS, VersioningConfiguration: { Status: "Enabled" } }));
        for (const [bucket, keys] of Object.entries(KEYS)) for (const key of keys) model.opsOf(bucket, key).push({ id: model.nextId++, kind: "baseline", bucket, key, start: 0, end: 0, status: "acked" });
      }

      // Load, then SIGKILL at a random moment.
      next(`round ${round}: load`);
      const killAfter = 1500 + Math.floor(rnd() * 2500);
      const roundStart = model.clock;
      let stopping = false;
      const load: Load = { model, s3: client(gateway.url), round, stopping: () => stopping, bigUploads: 0 };
      clients.push(load.s3);
      const running = Array.from({ length: CLIENTS }, (_, ci) => runClient(load, ci, mulberry32(SEED + round * 7919 + ci * 104_729)));
      await sleep(killAfter);
      stopping = true;
      model.killed = true;
      const killedAt = model.tick();
      gateway.child.kill("SIGKILL");
      await gateway.exited;
      await Promise.all(running);
      for (const c of clients.splice(0)) c.destroy();
      const inFlight = [...model.ops.values()].filter((o) => o.start > roundStart && o.status === "maybe" && o.end === Infinity).length;
      const acked = [...model.counts].map(([k, n]) => `${n} ${k}`).join(", ");
      const unexpected = [...model.unexpected];

      // The data directory is lost; only the bucket is left.
      next(`round ${round}: recover`);
      fs.rmSync(data, { recursive: true, force: true });
      const recovered = path.join(root, `data-${round}`);
      const rec = await cliOk(["recover", "--data", recovered, "--bucket", bucketUrl, ...bucketArgs, "--json"]);
      const report = JSON.parse(rec.stdout) as { packs: number; journalRecords: number; entriesApplied: number; ms: number; fsck: { ok: boolean } };
      assert.ok(report.fsck.ok, `recover's fsck: ${rec.stdout}`);
      data = recovered;

      next(`round ${round}: verify`);
      gateway = await startGateway(data, commitDelay);
      const reader = client(gateway.url);
      clients.push(reader);
      const v = await verify(reader, model);
      reader.destroy();
      clients.length = 0;
      const problems = [...unexpected.map((u) => `unexpected error while the gateway was up: ${u}`), ...v.problems];
      assert.ok(problems.length === 0, `round ${round}, killed after ${killAfter} ms (logical time ${killedAt}):\n${problems.slice(0, 20).join("\n")}${problems.length > 20 ? `\n... ${problems.length - 20} more` : ""}`);
      next(`round ${round}: stop`);
      await stopGateway(gateway);
      gateway = undefined;

      next(`round ${round}: fsck`);
      const f = await cliOk(["fsck", "--read-data", "--json", "--data", data]);
      const fr = JSON.parse(f.stdout) as { ok: boolean; problems: unknown[]; chunksRead: number; packs: number };
      assert.ok(fr.ok, `fsck --read-data after recovery: ${f.stdout}`);
      if (round < ROUNDS) {
        // Recycle packs: their journal records must move with them for the next round's recovery.
        next(`round ${round}: gc`);
        await cliOk(["gc", "--grace", "0", "--min-live", "0.9", "--json", "--data", data]);
      }
      model.rebase(v.plain, v.vers, v.uploads);
      next(`round ${round + 1}: serve`);
      t.diagnostic(
        `round ${round}: commit delay ${commitDelay} ms, killed after ${killAfter} ms; acknowledged ${acked}; ${inFlight} in flight; ` +
          `recover: ${report.packs} packs, ${report.journalRecords} journal records, ${report.entriesApplied} entries in ${report.ms} ms; ` +
          `fsck read ${fr.chunksRead} chunks in ${fr.packs} packs; ${v.summary}; ${((Date.now() - t0) / 1000).toFixed(1)} s (${times.join(", ")})`,
      );
      times.length = 0;
    }
    failed = false;
  } catch (err) {
    const where = `gateway crash test failed at ${stage}; seed ${SEED} (rerun with STOWAGE_CRASH_SEED=${SEED}); directories kept in ${root}`;
    console.error(where);
    if (gateway !== undefined) console.error(`gateway stderr:\n${gateway.stderr().slice(-4000)}`);
    if (err instanceof Error) err.message = `${where}\n${err.message}`;
    throw err;
  } finally {
    for (const c of clients) c.destroy();
    if (gateway !== undefined && gateway.child.exitCode === null) {
      gateway.child.kill("SIGKILL");
      await gateway.exited;
    }
    if (!failed) fs.rmSync(root, { recursive: true, force: true });
  }
}
