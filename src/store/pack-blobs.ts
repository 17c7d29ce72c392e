/**
 * Where the reader finds a pack blob when the store has two packers: packs of the write-back packer
 * live in the write-back backend (the local tier) until the tier's uploader has copied them to the
 * cloud (`PackRecord.uploaded === false`); every other pack lives in the cloud backend. A read-only
 * {@link BlobBackend} view that sends each GET/HEAD to the backend the pack record names, and tries
 * the other one when the blob is not found there (a pack being uploaded or purged meanwhile).
 */
import { isStowageError } from "../errors.js";
import type { BlobBackend, BlobInfo, ByteRange } from "../backend/backend.js";
import { StowageError } from "../errors.js";
import type { MetaReader, PackRecord } from "../meta/types.js";

/** The pack id a pack blob key names (`packs/xx/<id>`), or undefined. */
export function packIdOfBlobKey(blobKey: string): string | undefined {
  if (typeof blobKey !== "string") return undefined;
  const last = blobKey.slice(blobKey.lastIndexOf("/") + 1);
  return /^[0-9a-f]{32}$/.test(last) ? last : undefined;
}

export class PackBlobs implements BlobBackend {
  readonly location: string;

  constructor(
    private readonly cloud: BlobBackend,
    private readonly writeBack: BlobBackend | undefined,
    private readonly meta: MetaReader,
  ) {
    this.location = writeBack === undefined ? cloud.location : `${cloud.location} + write-back ${writeBack.location}`;
  }

  /** The backend holding the pack's blob. */
  backendOf(pack: Pick<PackRecord, "uploaded">): BlobBackend {
    return pack.uploaded === false && this.writeBack !== undefined ? this.writeBack : this.cloud;
  }

  async #order(key: string): Promise<BlobBackend[]> {
    if (this.writeBack === undefined) return [this.cloud];
    const id = packIdOfBlobKey(key);
    const pack = id === undefined ? undefined : await this.meta.getPack(id);
    return pack?.uploaded === false ? [this.writeBack, this.cloud] : [this.cloud, this.writeBack];
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const [first, second] = await this.#order(key);
    try {
      return await first!.get(key, range);
    } catch (err) {
      if (second === undefined || !isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) throw err;
      return second.get(key, range);
    }
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    const [first, second] = await this.#order(key);
    return (await first!.head(key)) ?? (await second?.head(key));
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.cloud.list(prefix);
  }

  put(): Promise<void> {
    return Promise.reject(new StowageError("STOWAGE_INVALID_ARGUMENT", "the pack-reading view is read-only"));
  }

  delete(): Promise<void> {
    return Promise.reject(new StowageError("STOWAGE_INVALID_ARGUMENT", "the pack-reading view is read-only"));
  }

  async close(): Promise<void> {}
}
