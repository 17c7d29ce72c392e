/**
 * The background thread: flushes and compactions run in a worker thread so they use the second
 * core and never take time from the event loop that serves reads and writes. The worker gets
 * everything it needs in the message (file numbers, key ranges, a copy of the immutable
 * memtable), works on the real file system, and answers with the new files' metadata; the store's
 * thread alone touches the manifest and installs versions.
 *
 * Used when the store runs on the real file system. With an injected FileSystem (fault and crash
 * tests) the same jobs (compaction.ts) run in the store's own thread instead.
 */
import { Worker } from "node:worker_threads";
import { StowageError, type ErrorCode } from "../errors.js";
import type { CompactionJob, TableOptions } from "./compaction.js";
import type { MemtableState } from "./memtable.js";
import type { FileMeta } from "./version.js";

export type WorkerRequest =
  | { id: number; kind: "compact"; job: CompactionJob; numbers: number[] }
  | { id: number; kind: "flush"; dir: string; num: number; table: TableOptions; mem: MemtableState };

export interface WorkerError {
  code: string | undefined;
  message: string;
  file: string | undefined;
  offset: number | undefined;
}

export type WorkerResponse = { id: number; ok: true; files: FileMeta[] } | { id: number; ok: false; error: WorkerError };

type Pending = { resolve: (files: FileMeta[]) => void; reject: (err: unknown) => void };

export class BackgroundThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | undefined;

  constructor() {
    this.worker = new Worker(new URL("./background-worker.js", import.meta.url));
    this.worker.unref();
    this.worker.on("message", (msg: WorkerResponse) => {
      const p = this.pending.get(msg.id);
      if (p === undefined) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.files);
      else p.reject(toError(msg.error));
    });
    this.worker.on("error", (err) => this.fail(err));
    this.worker.on("exit", (code) => this.fail(new Error(`background thread exited with code ${code}`)));
  }

  compact(job: CompactionJob, numbers: number[]): Promise<FileMeta[]> {
    return this.request({ id: 0, kind: "compact", job, numbers });
  }

  async flush(dir: string, num: number, table: TableOptions, mem: MemtableState): Promise<FileMeta | undefined> {
    const files = await this.request({ id: 0, kind: "flush", dir, num, table, mem });
    return files[0];
  }

  /** Stops the thread; jobs still outstanding reject with STOWAGE_KV_CLOSED. */
  async close(): Promise<void> {
    this.fail(new StowageError("STOWAGE_KV_CLOSED", "store closed while background work was running"));
    await this.worker.terminate();
  }

  private request(req: WorkerRequest): Promise<FileMeta[]> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const id = this.nextId++;
    req.id = id;
    return new Promise<FileMeta[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Keep the process alive only while work is outstanding.
      this.worker.ref();
      this.worker.postMessage(req);
    }).finally(() => {
      if (this.pending.size === 0) this.worker.unref();
    });
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

function toError(e: WorkerError): Error {
  if (e.code !== undefined && e.code.startsWith("STOWAGE_")) {
    return new StowageError(e.code as ErrorCode, e.message, { file: e.file, offset: e.offset });
  }
  return new StowageError("STOWAGE_KV_IO", e.message, { file: e.file, offset: e.offset });
}
