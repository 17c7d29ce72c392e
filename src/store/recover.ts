/**
 * `stowage recover`: rebuilds a complete data directory from the bucket alone (plus the passphrase
 * or the master key), docs/RECOVERY.md. Steps: read the descriptor (`config/stowage.json`) and the
 * sealed key (`keys/<keyId>`); list the packs and read their indexes; fetch the journal entries
 * (pack records of kind 2); pick the newest readable checkpoint (not newer than `toTime`); apply its
 * rows and replay the chain of entries after it into a fresh metadata store in NEWDIR/meta; rebuild
 * the chunk index and reference counts from the packs (rebuild.ts); fetch and apply the put intents
 * nothing resolved; write the recovery mark; fsck; write NEWDIR/stowage.json last (its presence
 * marks a complete repository).
 *
 * Resumable: the replay commits in batches and records its progress in NEWDIR/recover-state.json;
 * a rerun from the same checkpoint skips what was applied (re-applying is harmless anyway: replay
 * is idempotent). Everything after the replay is recomputed on a rerun.
 */
import { mkdir, readFile, rm } from "node:fs/promises";
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
  exists,
  REPOSITORY_FORMAT,
  REPOSITORY_VERSION,
  checkChunker,
  writeFileDurably,
  type RepositoryConfig,
  type RepositoryDescriptor,
} from "./repository.js";
import { listCheckpoints, readCheckpoint, type Checkpoint } from "./checkpoint.js";
import { applyEntry, decodeEntry, decodeMetadataRecord, encodeEntry, recordingTx, sequenceOfIntentId, type JournalEntry, type JournalOp, type PutIntent } from "./journal.js";
import { ObjectStore, commitVersionRows, plannedVersionId } from "./store.js";
import { rebuildIndex, type RebuildReport } from "./rebuild.js";
import { fsck, type FsckReport } from "./fsck.js";

export const RECOVER_STATE_FILE = "recover-state.json";
/** Entries replayed per metadata transaction (and per state-file update), at most. */
const REPLAY_BATCH = 512;
/** Rows written per replay transaction, at most (unless one entry holds more). */
const REPLAY_ROWS = 4096;
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
  /** Progress: phase (`indexes`, `journal`, `checkpoint`, `checkpoint-rows`, `replay`, `chunks`, `fsck`), done, total. */
  progress?: (phase: string, done: number, total: number) => void;
  /**
   * Recover the repository as it was at this time (ms since the epoch): the newest checkpoint not
   * newer, and the journal entries up to it. Default: everything.
   */
  toTime?: number;
}

export interface RecoverReport {
  dir: string;
  repositoryId: string;
  packs: number;
  packsUnreadable: Array<{ blobKey: string; error: string }>;
  journalRecords: number;
  /** Entries applied in this run (a resumed run skips those applied before). */
  entriesApplied: number;
  /** Entries applied by an interrupted earlier run. */
  entriesSkipped: number;
  /** The last journal index replayed (entries after a gap are not). */
  lastIndex: number;
  /** The checkpoint recovery started from, if any. */
  checkpoint?: string;
  /** Put intents found, and those applied because no replayed entry resolved them. */
  intents: number;
  intentsApplied: number;
  resumed: boolean;
  rebuild: RebuildReport;
  fsck: FsckReport;
  warnings: string[];
  ms: number;
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

/** Fetches and opens the journal records (entries and intents) of one pack (adjacent ones with one GET). */
async function readJournal(backend: BlobBackend, keys: RepositoryKeys, packId: string, blobKey: string, records: PackIndexEntry[]): Promise<Array<{ entry: JournalEntry } | { intent: PutIntent }>> {
  records.sort((a, b) => a.offset - b.offset);
  const out: Array<{ entry: JournalEntry } | { intent: PutIntent }> = [];
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
      out.push(decodeMetadataRecord(e.id, plain));
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
    /** What an interrupted earlier run did: the checkpoint it started from and the chain entries it applied after it. */
    let earlier: { checkpoint: string | null; chainApplied: number } | undefined;
    let resumed = false;
    if (await exists(statePath)) {
      const st = JSON.parse(await readFile(statePath, "utf8")) as { repositoryId?: string; checkpoint?: string | null; chainApplied?: number };
      if (st.repositoryId !== descriptor.repositoryId) throw new StowageError("STOWAGE_REPO_EXISTS", `${statePath} belongs to the recovery of another repository`);
      earlier = { checkpoint: st.checkpoint ?? null, chainApplied: typeof st.chainApplied === "number" ? st.chainApplied : 0 };
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
    /** Intent records by id: fetched later, and only those no entry resolves. */
    const intentRecords = new Map<string, { packId: string; blobKey: string; record: PackIndexEntry; sequence: number }>();
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
        const sequence = sequenceOfIntentId(e.id);
        if (sequence !== undefined) intentRecords.set(hex, { packId: index.packId, blobKey: blob.key, record: e, sequence });
        else records.push(e);
      }
      if (records.length > 0) byPack.push({ packId: index.packId, blobKey: blob.key, records });
    }
    progress("indexes", blobs.length, blobs.length);

    // 2. The journal entries by index (an entry shipped twice, after a failed pack, counts once).
    const entries = new Map<number, JournalEntry>();
    for (let i = 0; i < byPack.length; i++) {
      progress("journal", i, byPack.length);
      const p = byPack[i]!;
      for (const r of await readJournal(backend, keys, p.packId, p.blobKey, p.records)) {
        if ("entry" in r && !entries.has(r.entry.index)) entries.set(r.entry.index, r.entry);
      }
    }
    progress("journal", byPack.length, byPack.length);
    // Marks of earlier recoveries: each voids the entries between its `recovered` and itself, and
    // checkpoints taken there (history that was abandoned).
    const marks = new Map<number, JournalEntry>();
    let maxIndex = 0;
    for (const e of entries.values()) {
      maxIndex = Math.max(maxIndex, e.index);
      if (e.recovered === undefined) continue;
      const m = marks.get(e.recovered);
      if (m === undefined || e.index < m.index) marks.set(e.recovered, e);
    }
    const voided = (index: number): boolean => [...marks.values()].some((m) => index > m.recovered! && index < m.index);

    // The newest checkpoint that reads back (not newer than `toTime`); older ones are the fallback.
    const toTime = options.toTime;
    let checkpoint: Checkpoint | undefined;
    const unreadable: string[] = [];
    const all = await listCheckpoints(backend);
    const abandoned = all.filter((c) => voided(c.index)).map((c) => c.key);
    const candidates = all.filter((c) => !voided(c.index)).reverse();
    for (const c of candidates) {
      try {
        const cp = await readCheckpoint(backend, keys, c.key);
        if (toTime !== undefined && cp.time > toTime) continue;
        checkpoint = cp;
        break;
      } catch (err) {
        if (!isStowageError(err)) throw err;
        unreadable.push(`${c.key}: ${err.message}`);
        warnings.push(`checkpoint ${c.key} is unreadable, falling back to an older one: ${err.message}`);
      }
    }
    progress("checkpoint", checkpoint === undefined ? 0 : 1, 1);
    const base = checkpoint?.index ?? 0;

    // The replay chain: entries base+1, base+2, ... up to the first missing index. An entry after a
    // gap was never acknowledged (an operation waits for every entry before its own) and applying
    // it without the missing one could build a state that never existed — unless an earlier
    // recovery continued the history there: its mark (`recovered: N`) follows entry N, skipping the rest.
    maxIndex = Math.max(maxIndex, base);
    const fullChain: JournalEntry[] = [];
    for (let next = base + 1; ; ) {
      // A mark wins over an entry at the same place: that entry reached the bucket only after the
      // recovery that wrote the mark had read it.
      const e = marks.get(next - 1) ?? entries.get(next);
      if (e === undefined) break;
      fullChain.push(e);
      next = e.index + 1;
    }
    if (fullChain.length === 0 && [...entries.keys()].some((i) => i > base + 1)) {
      // Never a silently partial namespace: the history between base and the entries present is gone.
      const first = Math.min(...[...entries.keys()].filter((i) => i > base));
      throw new StowageError(
        "STOWAGE_INTEGRITY",
        `journal entries ${base + 1}..${first - 1} are not in the bucket (dropped by gc after a checkpoint) and ` +
          (candidates.length === 0 ? "there is no checkpoint" : `no checkpoint covering them could be read: ${unreadable.join("; ") || "none old enough"}`),
      );
    }
    // Recovery to a point in time: the chain up to the last entry at or before it.
    const cut = toTime === undefined ? fullChain.length : fullChain.findIndex((e) => e.time > toTime);
    const chain = cut < 0 ? fullChain : fullChain.slice(0, cut);
    const end = chain.length === 0 ? base : chain[chain.length - 1]!.index;
    const beyond = [...entries.keys()].filter((i) => i > end).length - (fullChain.length - chain.length);
    if (beyond > 0) warnings.push(`journal entry ${(fullChain.at(-1)?.index ?? base) + 1} is missing (lost with the gateway before it reached the bucket): ${beyond} entries after it, of operations never acknowledged, are not replayed`);
    if (chain.length < fullChain.length) warnings.push(`recovering to ${new Date(toTime!).toISOString()}: ${fullChain.length - chain.length} later journal entries not replayed`);
    // Intents resolved by the (whole) chain or the checkpoint, or voided by a restart mark (their put never committed).
    // (Sequences come from the record ids: only the intents left open are fetched.)
    const resolved = new Set<string>(checkpoint?.resolved ?? []);
    const bySequence = [...intentRecords.entries()].sort((a, b) => a[1].sequence - b[1].sequence);
    for (const [id, it] of bySequence) {
      if (it.sequence >= (checkpoint?.intentFloor ?? 0)) break;
      resolved.add(id);
    }
    for (const e of fullChain) {
      for (const id of e.intents ?? []) resolved.add(id);
      if (e.restart !== undefined) for (const [id, it] of bySequence) {
        if (it.sequence >= e.restart) break;
        resolved.add(id);
      }
    }
    const openRecords = new Map<string, { packId: string; blobKey: string; records: PackIndexEntry[] }>();
    for (const [id, it] of bySequence) {
      if (resolved.has(id)) continue;
      const p = openRecords.get(it.blobKey) ?? { packId: it.packId, blobKey: it.blobKey, records: [] };
      p.records.push(it.record);
      openRecords.set(it.blobKey, p);
    }
    const intents = new Map<string, PutIntent>();
    for (const p of openRecords.values()) {
      for (const r of await readJournal(backend, keys, p.packId, p.blobKey, p.records)) if ("intent" in r) intents.set(r.intent.id, r.intent);
    }

    // 3. Replay into a fresh metadata store, in batches, recording progress. A resumed run goes on
    // from where the last one stopped if it started from the same checkpoint, else starts over.
    let chainApplied = 0;
    let checkpointApplied = false;
    if (earlier !== undefined) {
      if (earlier.checkpoint === (checkpoint?.key ?? null)) {
        chainApplied = earlier.chainApplied;
        checkpointApplied = true;
      } else {
        await rm(join(dir, "meta"), { recursive: true, force: true });
      }
    }
    const meta = await openKvMetadataStore(join(dir, "meta"));
    let store: ObjectStore | undefined;
    try {
      let applied = 0;
      const saveState = (chainDone: number): Promise<void> =>
        writeFileDurably(statePath, JSON.stringify({ repositoryId: descriptor.repositoryId, checkpoint: checkpoint?.key ?? null, chainApplied: chainDone }) + "\n");
      if (checkpoint !== undefined && !checkpointApplied) {
        for (let i = 0; i < checkpoint.ops.length; i += REPLAY_ROWS) {
          progress("checkpoint-rows", i, checkpoint.ops.length);
          const ops = checkpoint.ops.slice(i, i + REPLAY_ROWS);
          await meta.transaction(async (tx) => applyEntry(tx, { index: checkpoint!.index, time: checkpoint!.time, ops }));
        }
        await saveState(0);
      }
      const skipped = Math.min(chainApplied, chain.length);
      // Batches of at most REPLAY_BATCH entries and REPLAY_ROWS rows (an entry of a large putObjects
      // batch holds thousands), so one transaction never holds the whole namespace.
      for (let i = skipped; i < chain.length; ) {
        progress("replay", i, chain.length);
        let j = i;
        let rows = 0;
        while (j < chain.length && j - i < REPLAY_BATCH && (j === i || rows + chain[j]!.ops.length <= REPLAY_ROWS)) rows += chain[j++]!.ops.length;
        const batch = chain.slice(i, j);
        await meta.transaction(async (tx) => {
          for (const e of batch) applyEntry(tx, e);
        });
        applied += batch.length;
        i = j;
        await saveState(i);
      }
      progress("replay", chain.length, chain.length);
      const lastIndex = end;

      // 4. Chunk index, pack records and reference counts from the packs.
      store = new ObjectStore(meta, backend, keys, { chunker: descriptor.chunker, packTargetSize: descriptor.packTargetSize, events: false, journal: false, encoderThreads: 0 });
      const rebuild = await rebuildIndex(store, { progress: (d, t) => progress("chunks", d, t) });

      // 5. Put intents no replayed entry resolved: puts whose data and intent reached the bucket but
      // whose entry did not (acknowledged or not). Applied as the put would have committed them, in
      // sequence order, when their bucket exists and every chunk they name is there.
      const open = [...intents.values()].filter((it) => !resolved.has(it.id) && (toTime === undefined || it.version.lastModified <= toTime)).sort((a, b) => a.version.sequence - b.version.sequence);
      let intentsApplied = 0;
      const recoveredOps: JournalOp[] = [];
      for (const it of open) {
        const v = it.version;
        const done = await meta.transaction(async (tx) => {
          const b = await tx.getBucket(v.bucket);
          if (b === undefined) return `bucket ${v.bucket} does not exist`;
          for (const e of v.manifest) if ((await tx.getChunk(e.chunkId)) === undefined) return "its data is incomplete";
          const rec = recordingTx(tx);
          await commitVersionRows(rec.tx, b, { ...v, versionId: plannedVersionId(b.versioning, v) }, true, true);
          recoveredOps.push(...rec.ops);
          return undefined;
        });
        if (done === undefined) intentsApplied++;
        else warnings.push(`put intent for ${v.bucket}/${v.key} (sequence ${v.sequence}) not applied: ${done}`);
      }

      // 6. The recovery mark: the history continues after `end` (entries beyond it are void), with
      // the rows just applied and every intent judged. It waits in the journal rows and is shipped
      // when the recovered repository first opens, so a later recovery reaches the same state.
      let marked = false;
      for await (const p of meta.listJournal()) if (decodeEntry(p.entry).recovered !== undefined) marked = true;
      if (!marked) {
        await meta.transaction(async (tx) => {
          tx.observeJournal(maxIndex);
          const time = Date.now();
          tx.appendJournal((index) => encodeEntry({ index, time, ops: recoveredOps, intents: open.map((it) => it.id), recovered: end }));
        });
      }

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
        ...(abandoned.length === 0 ? {} : { abandonedCheckpoints: abandoned }),
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
        lastIndex,
        ...(checkpoint === undefined ? {} : { checkpoint: checkpoint.key }),
        intents: intentRecords.size,
        intentsApplied,
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
