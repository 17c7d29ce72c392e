/**
 * The tier workers. Each is a consumer group looping poll → handle each event in order → commit.
 * Handlers are idempotent (they look at the tiers before copying), so at-least-once delivery is
 * enough. A handler that fails is retried with exponential backoff without committing it or
 * anything after it (what was handled before it in the batch is committed first); stop() ends the
 * loop between attempts and leaves the rest uncommitted for the next start.
 *
 * - hydrator (`hydrate-needed`; `pack-uploaded` when the local copy is missing): cloud → local.
 * - uploader (`upload-needed`): local → cloud, then `markPackUploaded`, then commit.
 * - secondary copier (`pack-uploaded`): local (else cloud) → secondary.
 */
import type { EventConsumer, EventLog, LoggedEvent } from "../events/types.js";
import { isStowageError } from "../errors.js";
import type { TierClock } from "./config.js";
import type { TierCore } from "./core.js";

export type WorkerName = "hydrator" | "uploader" | "secondary";

export type Handler = (event: LoggedEvent) => Promise<void>;

/** A stop signal: sleeps end early once it is raised. */
export class StopSignal {
  readonly #abort = new AbortController();

  get stopped(): boolean {
    return this.#abort.signal.aborted;
  }

  stop(): void {
    this.#abort.abort();
  }

  /** Sleeps `ms` through the clock, or less if stopped meanwhile. */
  async sleep(clock: TierClock, ms: number): Promise<void> {
    if (!this.stopped) await clock.sleep(ms, this.#abort.signal);
  }
}

function blobKeyOf(event: LoggedEvent): string | undefined {
  const k = event.data.blobKey;
  return typeof k === "string" && k !== "" ? k : undefined;
}

function sizeOf(event: LoggedEvent): number | undefined {
  const s = event.data.size;
  return typeof s === "number" && Number.isSafeInteger(s) && s >= 0 ? s : undefined;
}

export function hydratorHandler(core: TierCore): Handler {
  return async (event) => {
    const key = blobKeyOf(event);
    if (key === undefined) return;
    if (event.kind === "hydrate-needed") {
      // A local copy that failed a read is replaced even though it exists.
      await core.hydrate(key, event.data.reason === "local-error");
    } else if (event.kind === "pack-uploaded") {
      if (!core.config.hydrateOnUpload) return;
      // A pack purged moments ago is not fetched back just because its announcement came late, unless pinned.
      if (core.recentlyPurged.has(key) && !core.pinnedCache.has(key)) return;
      await core.hydrate(key, false);
    }
  };
}

export function uploaderHandler(core: TierCore): Handler {
  return async (event) => {
    if (event.kind !== "upload-needed") return;
    const key = blobKeyOf(event);
    const local = core.local;
    if (key === undefined || local === undefined) return;
    const size = sizeOf(event);
    const outcome = await core.locks.run(key, async (): Promise<"uploaded" | "present" | "missing"> => {
      const inCloud = await core.cloud.head(key);
      if (inCloud !== undefined && (size === undefined || inCloud.size === size)) return "present";
      let data: Buffer;
      try {
        data = await local.get(key);
      } catch (err) {
        if (!isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) throw err;
        // Deleted before it was uploaded. (A cloud blob of another size than announced is not
        // this pack: it is not marked uploaded.)
        if (inCloud !== undefined) core.config.onError(new Error(`cloud holds ${key} with ${inCloud.size} bytes, not ${size}`), "upload");
        return "missing";
      }
      await core.cloud.put(key, data);
      core.counters.uploads++;
      core.counters.uploadedBytes += data.length;
      return "uploaded";
    });
    if (outcome === "missing") {
      core.counters.uploadsMissing++;
      core.pendingUploads.delete(key);
      return;
    }
    await core.config.markPackUploaded(key);
    core.pendingUploads.delete(key);
  };
}

export function secondaryHandler(core: TierCore): Handler {
  return async (event) => {
    if (event.kind !== "pack-uploaded") return;
    const key = blobKeyOf(event);
    const secondary = core.secondary;
    if (key === undefined || secondary === undefined) return;
    const size = sizeOf(event);
    const copied = await core.locks.run(key, async (): Promise<number | undefined> => {
      const there = await secondary.head(key);
      if (there !== undefined && (size === undefined || there.size === size)) return undefined;
      let data: Buffer | undefined;
      if (core.local !== undefined && core.index.has(key)) {
        // The local copy costs no egress; it is used only when its size is the announced one.
        data = await core.local.get(key).catch(() => undefined);
        if (data !== undefined && size !== undefined && data.length !== size) data = undefined;
      }
      if (data === undefined) {
        try {
          data = await core.cloud.get(key);
        } catch (err) {
          if (isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) return undefined; // deleted since
          throw err;
        }
      }
      await secondary.put(key, data);
      core.counters.secondaryCopies++;
      core.counters.secondaryCopiedBytes += data.length;
      return data.length;
    });
    if (copied !== undefined) await core.emit("secondary-copied", key, { size: copied });
  };
}

/** Runs one worker until `signal` is raised. Never throws. */
export async function runWorker(
  core: TierCore,
  events: EventLog,
  group: string,
  handle: Handler,
  signal: StopSignal,
  onCaughtUp?: () => void,
): Promise<void> {
  const { clock, retryBaseMs, retryMaxMs, batchSize, pollWaitMs, onError } = core.config;
  const backoff = (attempt: number): number => Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(attempt, 30));
  const isClosed = (err: unknown): boolean => isStowageError(err, "STOWAGE_EVENTS_CLOSED");

  let consumer: EventConsumer | undefined;
  for (let attempt = 0; consumer === undefined && !signal.stopped; attempt++) {
    try {
      consumer = await events.consumer(group);
    } catch (err) {
      if (isClosed(err)) return;
      onError(err, `${group}: open consumer`);
      await signal.sleep(clock, backoff(attempt));
    }
  }
  if (consumer === undefined) return;

  try {
    let pollFailures = 0;
    while (!signal.stopped) {
      let batch: LoggedEvent[];
      try {
        batch = await consumer.poll(batchSize, pollWaitMs);
        pollFailures = 0;
      } catch (err) {
        if (isClosed(err)) return;
        onError(err, `${group}: poll`);
        await signal.sleep(clock, backoff(pollFailures++));
        continue;
      }
      if (batch.length === 0) {
        onCaughtUp?.();
        continue;
      }
      let handled = 0;
      let committed = 0;
      for (const event of batch) {
        let ok = false;
        for (let attempt = 0; !ok && !signal.stopped; attempt++) {
          try {
            await handle(event);
            ok = true;
          } catch (err) {
            core.counters.handlerRetries++;
            onError(err, `${group}: ${event.kind} ${String(event.data.blobKey)} (attempt ${attempt + 1})`);
            if (handled > committed) {
              // What came before the failing event is done: do not make it wait for it.
              await consumer.commit(batch.slice(0, handled)).then(
                () => (committed = handled),
                (e: unknown) => onError(e, `${group}: commit`),
              );
            }
            await signal.sleep(clock, backoff(attempt));
          }
        }
        if (!ok) break;
        handled++;
      }
      if (handled > committed) {
        try {
          await consumer.commit(batch.slice(0, handled));
        } catch (err) {
          // The events will be delivered again (to the next consumer of the group), harmlessly.
          if (isClosed(err)) return;
          onError(err, `${group}: commit`);
        }
      }
    }
  } finally {
    await consumer.close().catch(() => undefined);
  }
}

/**
 * One pass over a group's backlog without waiting: handles every uncommitted event in order and
 * commits it, stopping at the first handler failure (that event and the rest stay uncommitted).
 * For drain(): the workers must not be running (two consumers of one group would both read it).
 */
export async function drainGroup(core: TierCore, events: EventLog, group: string, handle: Handler): Promise<{ handled: number; failed: boolean }> {
  const consumer = await events.consumer(group);
  let handled = 0;
  try {
    for (;;) {
      const batch = await consumer.poll(core.config.batchSize, 0);
      if (batch.length === 0) return { handled, failed: false };
      let done = 0;
      let failed = false;
      for (const event of batch) {
        try {
          await handle(event);
          done++;
        } catch (err) {
          core.config.onError(err, `${group}: ${event.kind} ${String(event.data.blobKey)} (drain)`);
          failed = true;
          break;
        }
      }
      if (done > 0) await consumer.commit(batch.slice(0, done));
      handled += done;
      if (failed) return { handled, failed: true };
    }
  } finally {
    await consumer.close().catch(() => undefined);
  }
}
