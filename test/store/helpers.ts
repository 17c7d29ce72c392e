/** Shared set-up for object-store tests: a store on a chosen backend with small chunks and packs. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RepositoryKeys } from "../../src/codec/keys.js";
import { MemoryBackend } from "../../src/backend/memory.js";
import type { BlobBackend } from "../../src/backend/backend.js";
import { openKvMetadataStore } from "../../src/meta/kv-store.js";
import type { MetadataStore } from "../../src/meta/types.js";
import { ObjectStore, type ObjectStoreOptions } from "../../src/store/store.js";
import { fsck } from "../../src/store/fsck.js";

export const SMALL_CHUNKS = { minSize: 1024, avgSize: 4096, maxSize: 16384 };

export interface TestStore {
  store: ObjectStore;
  meta: MetadataStore;
  backend: BlobBackend;
  keys: RepositoryKeys;
  dir: string;
  /** Closes the store and metadata, and opens them again on the same backend and directory. */
  reopen(): Promise<void>;
  close(): Promise<void>;
}

export async function makeStore(options: ObjectStoreOptions & { backend?: BlobBackend; keys?: RepositoryKeys } = {}): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), "stowage-store-"));
  const backend = options.backend ?? new MemoryBackend();
  const keys = options.keys ?? RepositoryKeys.generate();
  // The metadata journal is off unless a test asks for it: these tests count packs and PUTs of the
  // data path itself (the journal has its own tests in test/recover).
  const storeOptions: ObjectStoreOptions = { chunker: SMALL_CHUNKS, packTargetSize: 64 * 1024, minPartSize: 1, journal: false, ...options };
  const t: TestStore = {
    store: undefined as unknown as ObjectStore,
    meta: undefined as unknown as MetadataStore,
    backend,
    keys,
    dir,
    async reopen() {
      await t.store.close();
      await t.meta.close();
      t.meta = await openKvMetadataStore(join(dir, "meta"));
      t.store = new ObjectStore(t.meta, backend, keys, storeOptions);
    },
    async close() {
      await t.store.close();
      await t.meta.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  t.meta = await openKvMetadataStore(join(dir, "meta"));
  t.store = new ObjectStore(t.meta, backend, keys, storeOptions);
  return t;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 255;
  }
  return b;
}

export async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of body) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/** The bytes as a stream of pieces of `piece` bytes. */
export function* pieces(data: Uint8Array, piece = 7001): Generator<Uint8Array> {
  for (let i = 0; i < data.length; i += piece) yield data.subarray(i, Math.min(data.length, i + piece));
}

export async function readAll(store: ObjectStore, bucket: string, key: string, versionId?: string): Promise<Buffer> {
  const r = await store.getObject(bucket, key, versionId === undefined ? {} : { versionId });
  return collect(r.body);
}

/** Asserts fsck finds nothing wrong (with data read), printing the problems otherwise. */
export async function assertClean(store: ObjectStore): Promise<void> {
  const r = await fsck(store, { readData: true });
  if (!r.ok) throw new Error(`fsck found problems:\n${r.problems.map((p) => `${p.kind}: ${p.message}`).join("\n")}`);
}
