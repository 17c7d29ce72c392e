/**
 * The version set: the current Version, the counters that must survive restarts (next file
 * number, last sequence, live log number) and the MANIFEST log that persists them.
 *
 * Every change is appended to the manifest and fsynced before it is installed. A new manifest
 * (starting with a full snapshot of the state) is written at open and whenever the old one grows
 * past a limit; CURRENT is then switched atomically (write temp file, fsync, rename, fsync dir).
 */
import { StowageError, corruption } from "../errors.js";
import { ByteWriter, ByteReader } from "./coding.js";
import { CURRENT_FILE, logFileName, manifestFileName, parseFileName } from "./format.js";
import { joinPath, type FileSystem } from "./fs.js";
import { LogWriter, damageBeforeTail, readLog } from "./log.js";
import { MANIFEST_FORMAT_VERSION, NUM_LEVELS, Version, VersionEdit } from "./version.js";
import { crc32 } from "./coding.js";

const LOG_MAGIC = Buffer.from("STWKVLOG", "latin1");
export const LOG_FILE_VERSION = 1;
export const LOG_KIND_WAL = 1;
export const LOG_KIND_MANIFEST = 2;
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** The first record of every WAL and manifest: magic, format version, kind. */
export function logHeaderRecord(kind: number): Uint8Array {
  const w = new ByteWriter(16);
  w.bytes(LOG_MAGIC);
  w.fixed32(LOG_FILE_VERSION);
  w.byte(kind);
  return w.take();
}

export function checkLogHeader(payload: Uint8Array | undefined, kind: number, file: string): void {
  if (payload === undefined || payload.length !== 13 || !Buffer.from(payload.subarray(0, 8)).equals(LOG_MAGIC)) {
    throw corruption(file, 0, "missing log header (magic STWKVLOG)");
  }
  const r = new ByteReader(payload, (off, what) => corruption(file, off, what), 8);
  const version = r.fixed32();
  if (version > LOG_FILE_VERSION) {
    throw new StowageError(
      "STOWAGE_KV_FORMAT_VERSION",
      `${file} has log format version ${version}; this build reads up to ${LOG_FILE_VERSION}`,
      { file, offset: 8 },
    );
  }
  const k = r.byte();
  if (k !== kind) throw corruption(file, 12, `log kind ${k}, expected ${kind}`);
}

/** CURRENT holds the manifest name and a checksum of it, so a damaged CURRENT is detected. */
export function encodeCurrent(manifestName: string): Uint8Array {
  return Buffer.from(`${manifestName}\ncrc32 ${crc32(Buffer.from(manifestName)).toString(16).padStart(8, "0")}\n`);
}

function decodeCurrent(data: Uint8Array, file: string): string {
  const text = Buffer.from(data).toString("utf8");
  const m = /^(MANIFEST-\d+)\ncrc32 ([0-9a-f]{8})\n$/.exec(text);
  if (!m || crc32(Buffer.from(m[1]!)) !== parseInt(m[2]!, 16)) throw corruption(file, 0, "CURRENT is damaged");
  return m[1]!;
}

export class VersionSet {
  current: Version = Version.empty();
  nextFileNumber = 2;
  /** The newest sequence number assigned; the database advances it as writes commit. */
  lastSequence = 0;
  /** Logs numbered below this hold only data that is in tables. */
  logNumber = 0;
  manifestNumber = 0;
  readonly compactPointers: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(NUM_LEVELS).fill(undefined);

  private manifest: LogWriter | undefined;
  private readonly live = new Map<Version, number>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
  ) {
    this.live.set(this.current, 1);
  }

  newFileNumber(): number {
    return this.nextFileNumber++;
  }

  /** Reads CURRENT and replays the manifest it names. */
  recover(): void {
    const currentPath = joinPath(this.dir, CURRENT_FILE);
    const name = decodeCurrent(this.fs.readFile(currentPath), currentPath);
    const path = joinPath(this.dir, name);
    if (!this.fs.exists(path)) throw corruption(path, 0, "manifest named by CURRENT is missing");
    const data = this.fs.readFile(path);
    const read = readLog(data);
    const { records, validEnd } = read;
    const mid = damageBeforeTail(data, read);
    if (mid !== undefined) throw corruption(path, mid.offset, `manifest ${mid.reason}`);
    checkLogHeader(records[0]?.payload, LOG_KIND_MANIFEST, path);
    let v = Version.empty();
    let haveNext = false;
    let haveLog = false;
    let haveSeq = false;
    for (let i = 1; i < records.length; i++) {
      const rec = records[i]!;
      const edit = VersionEdit.decode(rec.payload, path, rec.offset);
      try {
        v = v.apply(edit);
      } catch (err) {
        throw corruption(path, rec.offset, `manifest edit does not apply: ${(err as Error).message}`);
      }
      if (edit.logNumber !== undefined) {
        this.logNumber = edit.logNumber;
        haveLog = true;
      }
      if (edit.nextFileNumber !== undefined) {
        this.nextFileNumber = edit.nextFileNumber;
        haveNext = true;
      }
      if (edit.lastSequence !== undefined) {
        this.lastSequence = edit.lastSequence;
        haveSeq = true;
      }
      for (const [level, key] of edit.compactPointers) this.compactPointers[level] = key;
    }
    if (!haveNext || !haveLog || !haveSeq) throw corruption(path, validEnd, "manifest lacks next-file, log or sequence entries");
    // A torn tail is an edit that never took effect, so the log that edit would have retired is
    // still there. If it is gone, the damaged edit had taken effect: dropping it would lose data.
    const tail = read.damage[0];
    if (tail !== undefined && this.logNumber > 0 && !this.fs.exists(joinPath(this.dir, logFileName(this.logNumber)))) {
      throw corruption(path, tail.offset, `manifest ${tail.reason} in an edit that had taken effect (log ${this.logNumber} is gone)`);
    }
    const bad = v.checkInvariants();
    if (bad !== undefined) throw corruption(path, 0, bad);
    const parsed = parseFileName(name);
    this.manifestNumber = parsed.num;
    if (this.nextFileNumber <= parsed.num) this.nextFileNumber = parsed.num + 1;
    this.install(v);
    // The next logAndApply writes a fresh manifest.
    this.manifest = undefined;
  }

  /** Persists `edit` (fsynced) and installs the resulting version. Calls are serialized. */
  logAndApply(edit: VersionEdit): Promise<void> {
    const run = this.chain.then(() => this.apply(edit));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async apply(edit: VersionEdit): Promise<void> {
    if (edit.logNumber === undefined) edit.logNumber = this.logNumber;
    edit.lastSequence ??= this.lastSequence;
    const v = this.current.apply(edit);
    const bad = v.checkInvariants();
    if (bad !== undefined) throw new Error(`internal error: edit breaks level invariants: ${bad}`);
    try {
      // New tables (and logs) must be durable directory entries before an edit names them.
      if (edit.newFiles.length > 0) await this.fs.syncDir(this.dir);
      if (this.manifest === undefined || this.manifest.file.size > MAX_MANIFEST_BYTES) {
        await this.writeNewManifest(v, edit);
      } else {
        edit.nextFileNumber = this.nextFileNumber;
        this.manifest.addRecord(edit.encode());
        await this.manifest.sync();
      }
    } catch (err) {
      // The manifest's tail is now unknown; the next edit starts a new one.
      try {
        this.manifest?.close();
      } catch {
        // already failing
      }
      this.manifest = undefined;
      throw err;
    }
    this.logNumber = edit.logNumber;
    for (const [level, key] of edit.compactPointers) this.compactPointers[level] = key;
    this.install(v);
  }

  private async writeNewManifest(v: Version, edit: VersionEdit): Promise<void> {
    const num = this.newFileNumber();
    const path = joinPath(this.dir, manifestFileName(num));
    const file = this.fs.createWritable(path);
    const w = new LogWriter(file);
    try {
      w.addRecord(logHeaderRecord(LOG_KIND_MANIFEST));
      const snap = new VersionEdit();
      snap.formatVersion = MANIFEST_FORMAT_VERSION;
      snap.logNumber = edit.logNumber;
      snap.nextFileNumber = this.nextFileNumber;
      snap.lastSequence = edit.lastSequence;
      for (let l = 0; l < NUM_LEVELS; l++) {
        const cp = edit.compactPointers.find(([lv]) => lv === l)?.[1] ?? this.compactPointers[l];
        if (cp !== undefined) snap.compactPointers.push([l, cp]);
        for (const f of v.files[l]!) snap.addFile(l, f);
      }
      w.addRecord(snap.encode());
      await w.sync();
      await this.setCurrent(num);
    } catch (err) {
      w.close();
      throw err;
    }
    this.manifest?.close();
    this.manifest = w;
    this.manifestNumber = num;
  }

  private async setCurrent(manifestNum: number): Promise<void> {
    const tmp = joinPath(this.dir, `${manifestNum}.tmp`);
    const f = this.fs.createWritable(tmp);
    try {
      f.append(encodeCurrent(manifestFileName(manifestNum)));
      await f.sync();
    } finally {
      f.close();
    }
    this.fs.rename(tmp, joinPath(this.dir, CURRENT_FILE));
    await this.fs.syncDir(this.dir);
  }

  /** Writes the manifest and CURRENT of a brand-new, empty store. */
  async create(): Promise<void> {
    const edit = new VersionEdit();
    edit.logNumber = 0;
    edit.lastSequence = 0;
    await this.logAndApply(edit);
  }

  private install(v: Version): void {
    const old = this.current;
    this.current = v;
    this.ref(v);
    this.unref(old);
  }

  ref(v: Version): void {
    this.live.set(v, (this.live.get(v) ?? 0) + 1);
  }

  /** Drops one reference; true when that was the last one (the version's files may be obsolete now). */
  unref(v: Version): boolean {
    const n = (this.live.get(v) ?? 1) - 1;
    if (n <= 0) {
      this.live.delete(v);
      return true;
    }
    this.live.set(v, n);
    return false;
  }

  /** Table files referenced by any live version. */
  liveFiles(): Set<number> {
    const out = new Set<number>();
    for (const v of this.live.keys()) for (const level of v.files) for (const f of level) out.add(f.number);
    return out;
  }

  get liveVersions(): number {
    return this.live.size;
  }

  close(): void {
    try {
      this.manifest?.close();
    } finally {
      this.manifest = undefined;
    }
  }
}
