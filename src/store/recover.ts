/**
 * `stowage recover`: rebuilds a complete data directory from the bucket alone (plus the passphrase
 * or the master key), docs/RECOVERY.md. Steps: read the descriptor (`config/stowage.json`) and the
 * sealed key (`keys/<keyId>`); list the packs and read their indexes; fetch every journal record
 * (pack record kind 2); replay the entries in sequence order into a fresh metadata store in
 * NEWDIR/meta; rebuild the chunk index and reference counts from the packs (rebuild.ts); fsck; write
 * NEWDIR/stowage.json last (its presence marks a complete repository).
 *
 * Resumable: the replay commits in batches and records the last sequence applied in
 * NEWDIR/recover-state.json; a rerun skips entries up to it (re-applying one is harmless anyway:
 * replay is idempotent). Everything after the replay is recomputed from scratch on a rerun.
 */
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { StowageError, isStowageError } from "../errors.js";
import { keysFromEnvironment, openKeyFile, type RepositoryKeys } from "../codec/keys.js";
import { DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE } from "../codec/chunker.js";
import { openRecord, readPackIndex, PACK_PREFIX, RECORD_KIND_METADATA, type PackIndexEntry } from "../pack/format.js";
import { openKvMetadataStore } from "../meta/kv-store.js";
import type { BlobBackend } from "../backend/backend.js";
import { locationKind, openLocation, type S3Settings } from "./locations.js";
import {
  CONFIG_FILE,
  DEFAULT_PACK_SIZE,
  DESCRIPTOR_FORMAT,
  DESCRIPTOR_KEY,
  KEY_FILE,
  REPOSITORY_FORMAT,
  REPOSITORY_VERSION,
  checkChunker,
  writeFileDurably,
  type RepositoryConfig,
  type RepositoryDescriptor,
} from "./repository.js";
import { applyEntry, decodeEntry, sequenceOfRecordId, type JournalEntry } from "./journal.js";
import { ObjectStore } from "./store.js";
import { rebuildIndex, type RebuildReport } from "./rebuild.js";
import { fsck, type FsckReport } from "./fsck.js";

export const RECOVER_STATE_FILE = "recover-state.json";
/** Entries replayed per metadata transaction (and per state-file update). */
const REPLAY_BATCH = 512;
/** Journal records of one pack closer than this are fetched with one ranged GET. */
const COALESCE_GAP = 256 * 1024;

export interface RecoverOptions {
  /** The bucket: a directory, file:// URL or s3://BUCKET/PREFIX (a relative path is relative to the working directory). */
  bucket: string;
  s3?: S3Settings;
  passphrase?: string;
  /** The master key (else STOWAGE_MASTER_KEY, else the passphrase opens keys/<keyId>). */
  keys?: RepositoryKeys;
  /** fsck at the end reads and authenticates every chunk. Default false (metadata and pack indexes only). */
  readData?: boolean;
  /** Progress: phase (`indexes`, `journal`, `replay`, `chunks`, `fsck`), done, total. */
  progress?: (phase: string, done: number, total: number) => void;
}

export interface RecoverReport {
  dir: string;
  repositoryId: string;
  packs: number;
  packsUnreadable: Array<{ blobKey: string; error: string }>;
  journalRecords: number;
  /** Entries applied in this run (a resumed run skips those applied before). */
  entriesApplied: number;
  entriesSkipped: number;
  lastSequence: number;
  resumed: boolean;
  rebuild: RebuildReport;
  fsck: FsckReport;
  warnings: string[];
  ms: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readDescriptor(backend: BlobBackend, warnings: string[]): Promise<RepositoryDescriptor> {
  let bytes: Buffer | undefined;
  try {
    bytes = await backend.get(DESCRIPTOR_KEY);
  } catch (err) {
    if (!isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) throw err;
  }
  if (bytes === undefined) {
    // A repository created before descriptors: the key id from the only key file, default parameters.
    const keyIds: string[] = [];
    for await (const b of backend.list("keys/")) keyIds.push(b.key.slice("keys/".length));
    if (keyIds.length !== 1) throw new StowageError("STOWAGE_REPO_NOT_FOUND", `the bucket has no ${DESCRIPTOR_KEY} and ${keyIds.length} key files: not a Stowage bucket, or ambiguous`);
    warnings.push(`the bucket has no ${DESCRIPTOR_KEY}: default chunker and pack parameters assumed (they only affect new writes)`);
    return {
      format: DESCRIPTOR_FORMAT,
      version: 1,
      repositoryId: "00000000000000000000000000000000",
      keyId: keyIds[0]!,
      created: new Date().toISOString(),
      chunker: { minSize: DEFAULT_MIN_SIZE, avgSize: DEFAULT_AVG_SIZE, maxSize: DEFAULT_MAX_SIZE },
      packTargetSize: DEFAULT_PACK_SIZE,
    };
  }
  let d: Partial<RepositoryDescriptor>;
  try {
    d = JSON.parse(bytes.toString("utf8")) as Partial<RepositoryDescriptor>;
  } catch {
    throw new StowageError("STOWAGE_INTEGRITY", `${DESCRIPTOR_KEY} in the bucket is not valid JSON`);
  }
  if (d.format !== DESCRIPTOR_FORMAT) throw new StowageError("STOWAGE_REPO_NOT_FOUND", `${DESCRIPTOR_KEY} is not a Stowage repository descriptor`);
  if (typeof d.version !== "number" || d.version > 1) throw new StowageError("STOWAGE_FORMAT_VERSION", `repository descriptor version ${String(d.version)} is newer than this build reads (1)`);
  if (typeof d.keyId !== "string" || typeof d.repositoryId !== "string" || d.chunker === undefined || typeof d.packTargetSize !== "number") {
    throw new StowageError("STOWAGE_INTEGRITY", `${DESCRIPTOR_KEY} is missing fields`);
  }
  checkChunker(d.chunker);
  return d as RepositoryDescriptor;
}

async function loadRecoveryKeys(backend: BlobBackend, keyId: string, options: RecoverOptions): Promise<{ keys: RepositoryKeys; keyFile?: Buffer }> {
  const supplied = options.keys ?? keysFromEnvironment();
  if (supplied !== undefined) {
    if (supplied.keyIdHex !== keyId) throw new StowageError("STOWAGE_WRONG_KEY", `the master key supplied (key id ${supplied.keyIdHex}) is not this repository's (key id ${keyId})`);
    return { keys: supplied };
  }
  if (options.passphrase === undefined) throw new StowageError("STOWAGE_NO_KEY", "recover needs STOWAGE_PASSPHRASE (to open the key in the bucket) or STOWAGE_MASTER_KEY");
  let file: Buffer;
  try {
    file = await backend.get(`keys/${keyId}`);
  } catch (err) {
    if (isStowageError(err, "STOWAGE_BACKEND_NOT_FOUND")) throw new StowageError("STOWAGE_NO_KEY", `the bucket has no keys/${keyId}: supply the key with STOWAGE_MASTER_KEY`);
    throw err;
  }
  return { keys: await openKeyFile(file, options.passphrase), keyFile: file };
}

/** Fetches and opens the journal records of one pack (adjacent ones with one GET). */
async function readJournal(backend: BlobBackend, keys: RepositoryKeys, packId: string, blobKey: string, records: PackIndexEntry[]): Promise<JournalEntry[]> {
  records.sort((a, b) => a.offset - b.offset);
  const out: JournalEntry[] = [];
  let i = 0;
  while (i < records.length) {
    let j = i + 1;
    while (j < records.length && records[j]!.offset - (records[j - 1]!.offset + records[j - 1]!.storedLength) <= COALESCE_GAP) j++;
    const start = records[i]!.offset;
    const end = records[j - 1]!.offset + records[j - 1]!.storedLength;
    const bytes = await backend.get(blobKey, { offset: start, length: end - start });
    for (let k = i; k < j; k++) {
      const e = records[k]!;
      const plain = openRecord(keys, e, bytes.subarray(e.offset - start, e.offset - start + e.storedLength), packId);
      out.push(decodeEntry(plain));
    }
    i = j;
  }
  return out;
}

export async function recoverRepository(dir: string, options: RecoverOptions): Promise<RecoverReport> {
  const started = Date.now();
  dir = resolve(dir);
  if (await exists(join(dir, CONFIG_FILE))) throw new StowageError("STOWAGE_REPO_EXISTS", `${dir} already holds a Stowage repository`);
  const bucket = locationKind(options.bucket) === "file" && !options.bucket.startsWith("file://") ? resolve(options.bucket) : options.bucket;
  const progress = options.progress ?? ((): void => undefined);
  const warnings: string[] = [];
  const backend = await openLocation(bucket, dir, options.s3);
  try {
    const descriptor = await readDescriptor(backend, warnings);
    const { keys, keyFile } = await loadRecoveryKeys(backend, descriptor.keyId, options);
    await mkdir(dir, { recursive: true });
    const statePath = join(dir, RECOVER_STATE_FILE);
    let lastApplied = -1;
    let resumed = false;
    if (await exists(statePath)) {
      const st = JSON.parse(await readFile(statePath, "utf8")) as { repositoryId?: string; lastSequence?: number };
      if (st.repositoryId !== descriptor.repositoryId) throw new StowageError("STOWAGE_REPO_EXISTS", `${statePath} belongs to the recovery of another repository`);
      lastApplied = typeof st.lastSequence === "number" ? st.lastSequence : -1;
      resumed = true;
    } else if (await exists(join(dir, "meta"))) {
      // Left by a run that died before its first state write: start over.
      await rm(join(dir, "meta"), { recursive: true, force: true });
    }

    // 1. The packs' indexes: where the journal records are.
    const blobs: Array<{ key: string; size: number }> = [];
    for await (const b of backend.list(PACK_PREFIX)) blobs.push({ key: b.key, size: b.size });
    const packsUnreadable: Array<{ blobKey: string; error: string }> = [];
    const byPack: Array<{ packId: string; blobKey: string; records: PackIndexEntry[] }> = [];
    const seen = new Set<string>();
    let journalRecords = 0;
    for (let i = 0; i < blobs.length; i++) {
      progress("indexes", i, blobs.length);
      const blob = blobs[i]!;
      let index;
      try {
        index = await readPackIndex(backend, keys, blob.key, blob.size);
      } catch (err) {
        if (!isStowageError(err)) throw err;
        packsUnreadable.push({ blobKey: blob.key, error: err.message });
        continue;
      }
      const records: PackIndexEntry[] = [];
      for (const e of index.entries) {
        if (e.kind !== RECORD_KIND_METADATA) continue;
        const hex = Buffer.from(e.id).toString("hex");
        // gc copies records into new packs; the old pack may still be there (grace period).
        if (seen.has(hex)) continue;
        seen.add(hex);
        journalRecords++;
        const seq = sequenceOfRecordId(e.id);
        if (seq !== undefined && seq <= lastApplied) continue;
        records.push(e);
      }
      if (records.length > 0) byPack.push({ packId: index.packId, blobKey: blob.key, records });
    }
    progress("indexes", blobs.length, blobs.length);

    // 2. The journal entries, in sequence order.
    const entries: JournalEntry[] = [];
    for (let i = 0; i < byPack.length; i++) {
      progress("journal", i, byPack.length);
      const p = byPack[i]!;
      entries.push(...(await readJournal(backend, keys, p.packId, p.blobKey, p.records)));
    }
    progress("journal", byPack.length, byPack.length);
    entries.sort((a, b) => a.sequence - b.sequence);

    // 3. Replay into a fresh metadata store, in batches, recording progress.
    const meta = await openKvMetadataStore(join(dir, "meta"));
    let store: ObjectStore | undefined;
    try {
      let applied = 0;
      let skipped = journalRecords - entries.length;
      let lastSequence = lastApplied;
      for (let i = 0; i < entries.length; i += REPLAY_BATCH) {
        progress("replay", i, entries.length);
        const batch = entries.slice(i, i + REPLAY_BATCH);
        await meta.transaction(async (tx) => {
          for (const e of batch) {
            if (e.sequence <= lastSequence) {
              skipped++;
              continue;
            }
            applyEntry(tx, e);
            applied++;
            lastSequence = e.sequence;
          }
        });
        await writeFileDurably(statePath, JSON.stringify({ repositoryId: descriptor.repositoryId, lastSequence }) + "\n");
      }
      progress("replay", entries.length, entries.length);

      // 4. Chunk index, pack records and reference counts from the packs; then check.
      store = new ObjectStore(meta, backend, keys, { chunker: descriptor.chunker, packTargetSize: descriptor.packTargetSize, events: false, journal: false, encoderThreads: 0 });
      const rebuild = await rebuildIndex(store, { progress: (d, t) => progress("chunks", d, t) });
      const report = await fsck(store, { readData: options.readData ?? false, progress: (d, t) => progress("fsck", d, t) });
      await store.close();
      store = undefined;
      await meta.close();

      // 5. The key file and the configuration, last.
      if (keyFile !== undefined) await writeFileDurably(join(dir, KEY_FILE), keyFile);
      const config: RepositoryConfig = {
        format: REPOSITORY_FORMAT,
        version: REPOSITORY_VERSION,
        repositoryId: descriptor.repositoryId,
        keyId: descriptor.keyId,
        created: descriptor.created,
        chunker: descriptor.chunker,
        packTargetSize: descriptor.packTargetSize,
        bucket,
        ...(options.s3 === undefined ? {} : { s3: options.s3 }),
      };
      await writeFileDurably(join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + "\n");
      await rm(statePath, { force: true });
      return {
        dir,
        repositoryId: descriptor.repositoryId,
        packs: blobs.length,
        packsUnreadable,
        journalRecords,
        entriesApplied: applied,
        entriesSkipped: skipped,
        lastSequence,
        resumed,
        rebuild,
        fsck: report,
        warnings,
        ms: Date.now() - started,
      };
    } catch (err) {
      await store?.close().catch(() => undefined);
      await meta.close().catch(() => undefined);
      throw err;
    }
  } finally {
    await backend.close();
  }
}
