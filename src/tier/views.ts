/**
 * The two faces the tier manager shows the object store, each a BlobBackend:
 *
 * - cloud-first (the `cloud` durability policy): a put goes to the cloud and the local tier at
 *   once and resolves when the cloud holds the blob; the local copy is a cache whose failure never
 *   fails the put (the hydrator copies it later).
 * - write-back (the `local` policy): a put is a durable local put only; the uploader copies the
 *   pack to the cloud once the store has announced it (`upload-needed`).
 *
 * Both read local first and fall back to the cloud (then the secondary tier), and delete from
 * every tier. See docs/TIERS.md.
 */
import { bodyParts, checkBlobKey, checkRange, notFound, type BlobBackend, type BlobInfo, type ByteRange } from "../backend/backend.js";
import { isStowageError, StowageError } from "../errors.js";
import type { TierCore } from "./core.js";

export type ViewPolicy = "cloud-first" | "write-back";

export class TierView implements BlobBackend {
  readonly location: string;

  constructor(
    private readonly core: TierCore,
    readonly policy: ViewPolicy,
  ) {
    const local = core.local === undefined ? "" : ` + ${core.local.location}`;
    this.location = `tier:${policy}(${core.cloud.location}${local})`;
  }

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    checkBlobKey(key);
    const { length } = bodyParts(body);
    if (this.policy === "write-back") return this.#putWriteBack(key, body, length);
    return this.#putCloudFirst(key, body, length);
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkBlobKey(key);
    checkRange(range);
    const { core } = this;
    const local = core.local;
    let localErr: unknown;
    if (local !== undefined) {
      await core.localWrites.get(key);
      const before = core.index.get(key);
      try {
        const data = await local.get(key, range);
        core.index.touch(key);
        return data;
      } catch (err) {
        localErr = err;
        core.counters.localMisses++;
        // Forget a copy that vanished, unless the index changed meanwhile (a hydration landed).
        if (isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND") && core.index.get(key)?.tick === before?.tick) core.index.remove(key);
      }
    }
    const data = await this.#getRemote(key, range, localErr);
    if (local !== undefined && core.config.readHydrate) {
      core.requestHydration(key, isStowageError(localErr, "STOWAGE_BACKEND_NOT_FOUND") ? "local-missing" : "local-error");
    }
    return data;
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    checkBlobKey(key);
    const { core } = this;
    if (core.local !== undefined) {
      await core.localWrites.get(key);
      try {
        const info = await core.local.head(key);
        if (info !== undefined) return info;
      } catch {
        // ask the cloud
      }
    }
    try {
      return await core.cloud.head(key);
    } catch (cloudErr) {
      if (core.secondary !== undefined) {
        try {
          const info = await core.secondary.head(key);
          if (info !== undefined) return info;
        } catch {
          // the cloud's error says more
        }
      }
      throw cloudErr;
    }
  }

  /**
   * Cloud-first: the cloud's listing (every blob acknowledged through this view is there; local
   * copies are only copies). Write-back: the union of the cloud's and the local tier's listings,
   * since an acknowledged write-back pack may still be local only.
   */
  list(prefix: string): AsyncIterable<BlobInfo> {
    const { core } = this;
    if (this.policy === "cloud-first" || core.local === undefined) return core.cloud.list(prefix);
    return mergeListings(core.cloud.list(prefix), core.local.list(prefix));
  }

  /** Removes the blob from every tier (idempotent); every tier is tried, the first error thrown. */
  async delete(key: string): Promise<void> {
    checkBlobKey(key);
    const { core } = this;
    await core.locks.run(key, async () => {
      let first: unknown;
      const attempt = async (fn: () => Promise<void>): Promise<void> => {
        try {
          await fn();
        } catch (err) {
          first ??= err;
        }
      };
      await attempt(() => core.cloud.delete(key));
      if (core.local !== undefined) {
        const local = core.local;
        await attempt(async () => {
          await local.delete(key);
          core.index.remove(key);
        });
      }
      if (core.secondary !== undefined) {
        const secondary = core.secondary;
        await attempt(() => secondary.delete(key));
      }
      core.pendingUploads.delete(key);
      if (first !== undefined) throw first;
    });
  }

  /** Nothing to release: the manager's owner closes the tiers' backends. */
  async close(): Promise<void> {}

  async #putWriteBack(key: string, body: Uint8Array | readonly Uint8Array[], size: number): Promise<void> {
    const { core } = this;
    const local = core.local;
    if (local === undefined) {
      throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the write-back policy needs a local tier");
    }
    try {
      await core.locks.run(key, async () => {
        await local.put(key, body);
        core.index.set(key, size);
        core.pendingUploads.add(key);
      });
    } finally {
      core.schedulePurge();
    }
  }

  async #putCloudFirst(key: string, body: Uint8Array | readonly Uint8Array[], size: number): Promise<void> {
    const { core } = this;
    const local = core.local;
    if (local === undefined) return core.cloud.put(key, body);

    // Both writes start now; the local one runs under the key's lock (and so waits behind, say, a
    // purge of the same key) and reads wait for it.
    let localErr: unknown;
    const localWrite = core.locks
      .run(key, async () => {
        await local.put(key, body);
        core.index.set(key, size);
      })
      .then(
        () => true,
        (err: unknown) => {
          localErr = err;
          return false;
        },
      );
    const settled = localWrite.then(() => undefined);
    core.localWrites.set(key, settled);
    void settled.then(() => {
      if (core.localWrites.get(key) === settled) core.localWrites.delete(key);
    });

    try {
      await core.cloud.put(key, body);
    } catch (cloudErr) {
      // The put fails. Best effort: the local copy must not outlive it (it would be an orphan the
      // purger could never drop, as the cloud does not confirm it).
      if (await localWrite) {
        await core.locks
          .run(key, async () => {
            await local.delete(key);
            core.index.remove(key);
          })
          .catch((err: unknown) => core.config.onError(err, `remove local copy of failed put ${key}`));
      }
      throw cloudErr;
    }

    core.background(
      localWrite.then((ok) => {
        if (ok) {
          core.schedulePurge();
          return;
        }
        core.counters.localWriteFailures++;
        core.config.onError(localErr, `local copy of ${key}`);
        if (isStowageError(localErr, "STOWAGE_NO_SPACE")) core.schedulePurge();
        core.requestHydration(key, "local-write-failed", size);
      }),
      `local copy of ${key}`,
    );
  }

  async #getRemote(key: string, range: ByteRange | undefined, localErr: unknown): Promise<Buffer> {
    const { core } = this;
    let cloudErr: unknown;
    try {
      return await core.cloud.get(key, range);
    } catch (err) {
      cloudErr = err;
    }
    if (core.secondary !== undefined) {
      try {
        const data = await core.secondary.get(key, range);
        core.counters.secondaryReads++;
        return data;
      } catch {
        // report the cloud's (or the local tier's) error
      }
    }
    // A local copy that failed to read (not missing) says more than a cloud that never had it.
    if (isStowageError(cloudErr, "STOWAGE_BACKEND_NOT_FOUND") && localErr !== undefined && !isStowageError(localErr, "STOWAGE_BACKEND_NOT_FOUND")) {
      throw localErr;
    }
    if (isStowageError(cloudErr, "STOWAGE_BACKEND_NOT_FOUND")) throw notFound(this.location, key);
    throw cloudErr;
  }
}

/** Merges two ascending listings into one, each key once (the first listing's entry wins). */
async function* mergeListings(a: AsyncIterable<BlobInfo>, b: AsyncIterable<BlobInfo>): AsyncGenerator<BlobInfo> {
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  let na = await ia.next();
  let nb = await ib.next();
  try {
    while (na.done !== true || nb.done !== true) {
      if (nb.done === true || (na.done !== true && na.value.key <= nb.value.key)) {
        const v = na.value as BlobInfo;
        if (nb.done !== true && nb.value.key === v.key) nb = await ib.next();
        yield v;
        na = await ia.next();
      } else {
        yield nb.value;
        nb = await ib.next();
      }
    }
  } finally {
    if (na.done !== true) await ia.return?.();
    if (nb.done !== true) await ib.return?.();
  }
}
