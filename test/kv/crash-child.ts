/**
 * The child process of the crash test (crash.test.ts): opens the store (through a
 * CrashingFileSystem when the config names a crash point), then writes synced batches, up to
 * `concurrency` in flight at once, and reports each on stdout (protocol in crash-workload.ts)
 * until it is killed, crashes itself, or its time runs out (then it closes the store cleanly).
 *
 * Usage: node dist/test/kv/crash-child.js '<ChildConfig as JSON>'
 *
 * Protocol lines go out with one synchronous write(2) on fd 1 each: a line the parent must see
 * (a `submit` before its batch can reach the log) is in the pipe before the next step runs, and
 * survives the SIGKILL. process.stdout is never touched (on POSIX it writes pipes asynchronously).
 */
import * as fs from "node:fs";
import { CrashingFileSystem } from "../../src/kv/crash-fs.js";
import { openKv } from "../../src/kv/index.js";
import { nodeFileSystem } from "../../src/kv/fs.js";
import {
  CRASH_STORE_OPTIONS,
  SHARED_KEYS,
  batchOps,
  dataKey,
  dataValue,
  formatSubmit,
  mulberry32,
  type BatchSpec,
  type ChildConfig,
} from "./crash-workload.js";

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

const emit = (line: string): void => emitTo(1, line);

/** What the store was doing, judged from the call stack (async frames included). */
const PHASES: [RegExp, string][] = [
  [/Kv\.recover|Kv\.open/, "open"],
  [/Kv\.close/, "close"],
  [/deleteObsoleteFiles/, "cleanup"],
  // Edits run on a promise chain: who asked for one (flush, compaction, open) is not on the stack.
  [/VersionSet\.(apply|writeNewManifest|setCurrent)/, "manifest-edit"],
  [/runCompaction/, "compaction"],
  [/flushImmutable|writeLevel0Table/, "flush"],
  [/switchMemtable|openNewWal/, "switch"],
  [/writerLoop/, "write"],
];
function phase(): string {
  const stack = new Error().stack ?? "";
  return PHASES.find(([re]) => re.test(stack))?.[1] ?? "other";
}
Error.stackTraceLimit = 50;

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "") as ChildConfig;
  const rand = mulberry32(cfg.seed);
  const crashFs =
    cfg.crash === undefined
      ? undefined
      : new CrashingFileSystem(nodeFileSystem, {
          ...cfg.crash,
          random: rand,
          onCrash: (i) =>
            emit(
              `crash ${i.target} ${i.op} ${i.after ? "after" : "before"} ${i.wrote ?? "-"}/${i.of ?? "-"} ${phase()} ${i.file}`,
            ),
        });

  emit("start");
  // Without a crash point the store runs as configured by default (flush and compaction in a
  // worker thread); an injected file system keeps them in this thread, where its I/O is seen.
  const db = await openKv(cfg.dir, crashFs === undefined ? CRASH_STORE_OPTIONS : { ...CRASH_STORE_OPTIONS, fs: crashFs });
  emit("open");

  const live = cfg.live.slice();
  /** Batches whose data keys a submitted batch deletes. */
  const deleted = new Set<number>();
  const inFlight = new Set<Promise<void>>();
  const deadline = Date.now() + cfg.runMs;
  let next = cfg.firstBatch;

  const makeBatch = (): BatchSpec => {
    const b = next++;
    const m = 1 + Math.floor(rand() * 20);
    const shared: number[] = [];
    const nShared = Math.floor(rand() * 3);
    for (let k = 0; k < nShared; k++) {
      const j = Math.floor(rand() * SHARED_KEYS);
      if (!shared.includes(j)) shared.push(j);
    }
    let del: [number, number] | undefined;
    if (live.length > 24) {
      del = live.shift()!;
    } else if (live.length > 0 && rand() < 0.25) {
      del = live.splice(Math.floor(rand() * live.length), 1)[0]!;
    }
    if (del !== undefined) deleted.add(del[0]);
    live.push([b, m]);
    return { b, m, shared, del };
  };

  const submit = (): void => {
    const spec = makeBatch();
    const batch = db.batch();
    for (const op of batchOps(spec)) {
      if (op.type === "put") batch.put(op.key, op.value);
      else batch.del(op.key);
    }
    emit(formatSubmit(spec));
    const p = batch.write({ sync: true }).then(async () => {
      emit(`ack ${spec.b}`);
      // Read back one key now and then: the write must be visible once acknowledged (unless a
      // later batch, maybe already committed, deletes it).
      if (rand() < 0.2 && !deleted.has(spec.b)) {
        const i = Math.floor(rand() * spec.m);
        const v = await db.get(dataKey(spec.b, i));
        if (v?.toString() !== dataValue(spec.b, i)) throw new Error(`read-back of ${dataKey(spec.b, i)} after ack failed`);
      }
    });
    inFlight.add(p);
    p.then(
      () => inFlight.delete(p),
      () => undefined,
    );
  };

  while (Date.now() < deadline) {
    while (inFlight.size < cfg.concurrency) submit();
    await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await db.close();
  if (crashFs !== undefined) emit(`ops ${JSON.stringify(crashFs.opsByTarget)}`);
  emit("done");
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    emitTo(2, `crash-child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(2);
  },
);
