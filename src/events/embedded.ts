/**
 * The embedded event log (the default; DESIGN.md decision 5): a durable, single-partition log on
 * Stowage's own kv store, in a directory of its own.
 *
 *   const log = await EmbeddedEventLog.open("/srv/stowage/events");
 *   await log.append([{ id, kind: "pack-uploaded", key: packId, time: Date.now(), data }]);
 *   const c = await log.consumer("hydrator");
 *   const batch = await c.poll(100, 1000);   ... handle ...   await c.commit(batch);
 *
 * Keys (layout and record formats in docs/FORMATS.md, "Event log (embedded)"):
 *   "e" + offset (8 bytes, big-endian)   one event        (so events sort by offset)
 *   "g" + group name (UTF-8)             a group's committed position (the next offset it reads)
 *   "m" + "low"                          the low watermark: offsets below it were removed by retention
 *
 * Every append is one kv batch written with `sync: true`: it resolves once the batch is on stable
 * storage, and a crash keeps every acknowledged append whole, in order, without gaps. Offsets are
 * given in submission order, and the kv store applies batches in that order, so a reader never
 * sees offset n+1 before n. A poll reads with an iterator from the consumer's position; an empty
 * poll waits for the next append (or waitMs).
 *
 * Retention (`applyRetention`, also run every `retentionIntervalMs`): an event is removed when it
 * is older than `retentionMs` (by the time it was appended) AND every group that has ever
 * committed has committed it. An event some such group has not consumed is kept, however old:
 * a stalled consumer makes the log grow rather than lose events (watch `lag`). Groups that never
 * committed hold nothing back (they start at the oldest retained event). While no group has ever
 * committed, nothing is removed.
 */
import { crc32 } from "node:zlib";
import { StowageError, isStowageError } from "../errors.js";
import { Kv } from "../kv/db.js";
import type { KvOptions } from "../kv/types.js";
import type { ConsumerOptions, EventConsumer, EventKind, EventLog, EventValue, LoggedEvent, StowageEvent } from "./types.js";
import { EVENT_KINDS } from "./types.js";
import { Waiters } from "./waiters.js";

export interface EmbeddedEventLogOptions {
  /** Events older than this (ms since they were appended) may be removed once every group committed them. Default 7 days. */
  retentionMs?: number;
  /** How often retention runs in the background; 0 turns the timer off. Default 60 s. */
  retentionIntervalMs?: number;
  /** The clock for append times and retention (tests move it). Default Date.now. */
  now?: () => number;
  /** Options of the underlying kv store. */
  kv?: KvOptions;
}

/** Record magics and versions (docs/FORMATS.md). */
const EVENT_MAGIC = 0x45; // 'E'
const GROUP_MAGIC = 0x47; // 'G'
const LOW_MAGIC = 0x4c; // 'L'
const VERSION = 1;
const EVENT_HEADER = 2 + 8 + 4; // magic, version, append time, crc32 of the body

const EVENT_PREFIX = 0x65; // 'e'
const GROUP_PREFIX = 0x67; // 'g'
const LOW_KEY = Buffer.from("mlow");
const DAY = 24 * 60 * 60 * 1000;
/** Deletes per retention batch. */
const RETENTION_BATCH = 1000;

function closed(what: string): StowageError {
  return new StowageError("STOWAGE_EVENTS_CLOSED", `${what} is closed`);
}

/** kv failures become STOWAGE_EVENTS_IO (the cause attached); our own errors pass through. */
function ioError(what: string, err: unknown): StowageError {
  if (isStowageError(err) && err.code.startsWith("STOWAGE_EVENTS_")) return err;
  if (isStowageError(err, "STOWAGE_FORMAT_VERSION") || isStowageError(err, "STOWAGE_INTEGRITY")) return err;
  if (isStowageError(err, "STOWAGE_KV_LOCKED")) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new StowageError("STOWAGE_EVENTS_IO", `event log: ${what} failed: ${msg}`, { cause: err });
}

function eventKey(offset: number): Buffer {
  const k = Buffer.allocUnsafe(9);
  k[0] = EVENT_PREFIX;
  k.writeBigUInt64BE(BigInt(offset), 1);
  return k;
}

function groupKey(group: string): Buffer {
  return Buffer.concat([Buffer.from([GROUP_PREFIX]), Buffer.from(group, "utf8")]);
}

function encodeOffsetRecord(magic: number, offset: number, time: number): Buffer {
  const b = Buffer.allocUnsafe(18);
  b[0] = magic;
  b[1] = VERSION;
  b.writeBigUInt64BE(BigInt(offset), 2);
  b.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(time))), 10);
  return b;
}

function checkHeader(b: Buffer, magic: number, minLength: number, what: string): void {
  if (b.length < 2 || b[0] !== magic) {
    throw new StowageError("STOWAGE_INTEGRITY", `event log: ${what} record has a bad magic byte`);
  }
  if (b[1] !== VERSION) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      `event log: ${what} record has format version ${b[1]}; this build reads version ${VERSION}`,
    );
  }
  if (b.length < minLength) throw new StowageError("STOWAGE_INTEGRITY", `event log: ${what} record is truncated`);
}

function decodeOffsetRecord(b: Buffer, magic: number, what: string): number {
  checkHeader(b, magic, 18, what);
  return Number(b.readBigUInt64BE(2));
}

/** @internal Exported for tests: the value stored for one event. */
export function encodeEvent(e: StowageEvent, appendTime: number): Buffer {
  const body = Buffer.from(JSON.stringify({ id: e.id, kind: e.kind, key: e.key, time: e.time, data: e.data }), "utf8");
  const b = Buffer.allocUnsafe(EVENT_HEADER + body.length);
  b[0] = EVENT_MAGIC;
  b[1] = VERSION;
  b.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(appendTime))), 2);
  b.writeUInt32BE(crc32(body), 10);
  body.copy(b, EVENT_HEADER);
  return b;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks a decoded JSON event body (shared with the Kafka log, whose message values are the same JSON). */
export function parseEventJson(text: string, where: string): StowageEvent {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new StowageError("STOWAGE_INTEGRITY", `${where}: event is not valid JSON`, { cause: err });
  }
  const bad = (what: string): StowageError => new StowageError("STOWAGE_INTEGRITY", `${where}: event ${what}`);
  if (!isRecord(v)) throw bad("is not an object");
  const { id, kind, key, time, data } = v;
  if (typeof id !== "string") throw bad("has no id");
  if (typeof kind !== "string" || !(EVENT_KINDS as readonly string[]).includes(kind)) throw bad(`has an unknown kind`);
  if (typeof key !== "string") throw bad("has no key");
  if (typeof time !== "number") throw bad("has no time");
  if (!isRecord(data)) throw bad("has no data");
  const out: Record<string, EventValue> = {};
  for (const [k, x] of Object.entries(data)) {
    if (typeof x !== "string" && typeof x !== "number" && typeof x !== "boolean") throw bad(`field data.${k} has a bad type`);
    out[k] = x;
  }
  return { id, kind: kind as EventKind, key, time, data: out };
}

function decodeEvent(b: Buffer, offset: number): { event: StowageEvent; appendTime: number } {
  const where = `event log: event at offset ${offset}`;
  checkHeader(b, EVENT_MAGIC, EVENT_HEADER, `event at offset ${offset}`);
  const body = b.subarray(EVENT_HEADER);
  if (crc32(body) !== b.readUInt32BE(10)) throw new StowageError("STOWAGE_INTEGRITY", `${where} fails its checksum`);
  return { event: parseEventJson(body.toString("utf8"), where), appendTime: Number(b.readBigUInt64BE(2)) };
}

function appendTimeOf(b: Buffer, offset: number): number {
  checkHeader(b, EVENT_MAGIC, EVENT_HEADER, `event at offset ${offset}`);
  return Number(b.readBigUInt64BE(2));
}

export class EmbeddedEventLog implements EventLog {
  readonly location: string;
  /** The next offset to give. */
  private next: number;
  /** Offsets below this were removed by retention. */
  private low: number;
  private lastAppendTime = 0;
  private readonly waiters = new Waiters();
  private readonly inFlight = new Set<Promise<unknown>>();
  private isClosed = false;
  private retentionTimer: NodeJS.Timeout | undefined;
  private retentionRunning: Promise<void> | undefined;
  private readonly retentionMs: number;
  private readonly now: () => number;

  private constructor(
    private readonly db: Kv,
    dir: string,
    next: number,
    low: number,
    options: EmbeddedEventLogOptions,
  ) {
    this.location = `kv:${dir}`;
    this.next = next;
    this.low = low;
    this.retentionMs = options.retentionMs ?? 7 * DAY;
    this.now = options.now ?? Date.now;
    const every = options.retentionIntervalMs ?? 60_000;
    if (every > 0) {
      this.retentionTimer = setInterval(() => {
        this.applyRetention().catch(() => undefined); // reported by the next explicit call or operation
      }, every);
      this.retentionTimer.unref();
    }
  }

  /** Opens (creating if needed) the event log in `dir`. */
  static async open(dir: string, options: EmbeddedEventLogOptions = {}): Promise<EmbeddedEventLog> {
    let db: Kv;
    try {
      db = await Kv.open(dir, options.kv);
    } catch (err) {
      throw ioError(`opening ${dir}`, err);
    }
    try {
      const lowValue = await db.get(LOW_KEY);
      const low = lowValue === undefined ? 0 : decodeOffsetRecord(lowValue, LOW_MAGIC, "low watermark");
      const last = await db.iterator({ gte: eventKey(0), lt: Buffer.from([EVENT_PREFIX + 1]), reverse: true, limit: 1 }).all();
      let next = low;
      let lastTime = 0;
      if (last.length > 0) {
        const [k, v] = last[0]!;
        const offset = Number(k.readBigUInt64BE(1));
        next = Math.max(next, offset + 1);
        lastTime = appendTimeOf(v, offset);
      }
      const log = new EmbeddedEventLog(db, dir, next, low, options);
      log.lastAppendTime = lastTime;
      return log;
    } catch (err) {
      await db.close().catch(() => undefined);
      throw ioError(`opening ${dir}`, err);
    }
  }

  private check(): void {
    if (this.isClosed) throw closed("event log");
  }

  /** Runs `fn` as a tracked operation (close waits for it). */
  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const done = (): void => void this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  async append(events: readonly StowageEvent[]): Promise<void> {
    this.check();
    if (events.length === 0) return;
    // Append times never go backwards, so retention can stop at the first young event.
    const t = Math.max(this.now(), this.lastAppendTime);
    this.lastAppendTime = t;
    const batch = this.db.batch();
    for (const e of events) batch.put(eventKey(this.next++), encodeEvent(e, t));
    await this.track(
      batch.write({ sync: true }).catch((err: unknown) => {
        throw ioError("append", err);
      }),
    );
    this.wake();
  }

  private wake(): void {
    this.waiters.wakeAll();
  }

  async consumer(group: string, options: ConsumerOptions = {}): Promise<EventConsumer> {
    this.check();
    let position = await this.track(this.committed(group));
    if (position === undefined) {
      if (options.start === "latest") {
        // "latest" fixes the group's position now: it becomes the group's committed position.
        position = this.next;
        await this.track(this.writeCommitted(group, position));
      } else {
        position = this.low;
      }
    }
    return new EmbeddedConsumer(this, group, position);
  }

  async lag(group: string): Promise<number> {
    this.check();
    const c = await this.track(this.committed(group));
    return this.next - Math.max(c ?? this.low, this.low);
  }

  /** The group's committed position (next offset), or undefined if it never committed. */
  private async committed(group: string): Promise<number | undefined> {
    let v: Buffer | undefined;
    try {
      v = await this.db.get(groupKey(group));
    } catch (err) {
      throw ioError(`reading the position of group ${group}`, err);
    }
    return v === undefined ? undefined : decodeOffsetRecord(v, GROUP_MAGIC, `group ${group}`);
  }

  private async writeCommitted(group: string, next: number): Promise<void> {
    try {
      await this.db.put(groupKey(group), encodeOffsetRecord(GROUP_MAGIC, next, this.now()), { sync: true });
    } catch (err) {
      throw ioError(`committing group ${group}`, err);
    }
  }

  /** @internal */
  async read(from: number, max: number): Promise<LoggedEvent[]> {
    this.check();
    const start = Math.max(from, this.low);
    if (start >= this.next || max <= 0) return [];
    let entries: [Buffer, Buffer][];
    try {
      entries = await this.track(
        this.db.iterator({ gte: eventKey(start), lt: Buffer.from([EVENT_PREFIX + 1]), limit: max }).all(),
      );
    } catch (err) {
      throw ioError("reading events", err);
    }
    return entries.map(([k, v]) => {
      const offset = Number(k.readBigUInt64BE(1));
      return { ...decodeEvent(v, offset).event, partition: 0, offset };
    });
  }

  /** @internal Resolves when an event is appended, the log closes, or `ms` pass. */
  waitForAppend(ms: number): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return this.waiters.wait(ms);
  }

  /** @internal */
  async commitOffset(group: string, next: number): Promise<void> {
    this.check();
    // Positions only move forward. Commits of one group are rare and small: read, then write.
    const current = await this.track(this.committed(group));
    if (current !== undefined && current >= next) return;
    await this.track(this.writeCommitted(group, next));
  }

  /** @internal The next offset to be given (for tests and lag). */
  get endOffset(): number {
    return this.next;
  }

  /**
   * Removes events older than `retentionMs` that every group that has ever committed has
   * committed (see the file comment). Returns how many events were removed.
   */
  async applyRetention(): Promise<number> {
    this.check();
    while (this.retentionRunning !== undefined) await this.retentionRunning;
    let removed = 0;
    const run = (async () => {
      removed = await this.retain();
    })();
    this.retentionRunning = run;
    try {
      await this.track(run);
    } finally {
      this.retentionRunning = undefined;
    }
    return removed;
  }

  private async retain(): Promise<number> {
    let minCommitted: number | undefined;
    try {
      for await (const [, v] of this.db.iterator({ prefix: Buffer.from([GROUP_PREFIX]) })) {
        const c = decodeOffsetRecord(v, GROUP_MAGIC, "group");
        minCommitted = minCommitted === undefined ? c : Math.min(minCommitted, c);
      }
    } catch (err) {
      throw ioError("reading group positions", err);
    }
    if (minCommitted === undefined) return 0;
    const limit = Math.min(minCommitted, this.next);
    const cutoff = this.now() - this.retentionMs;
    let removed = 0;
    for (;;) {
      if (this.isClosed || this.low >= limit) break;
      let entries: [Buffer, Buffer][];
      try {
        entries = await this.db
          .iterator({ gte: eventKey(this.low), lt: eventKey(limit), limit: RETENTION_BATCH })
          .all();
      } catch (err) {
        throw ioError("reading events for retention", err);
      }
      const batch = this.db.batch();
      let newLow = this.low;
      let young = false;
      for (const [k, v] of entries) {
        const offset = Number(k.readBigUInt64BE(1));
        if (appendTimeOf(v, offset) > cutoff) {
          young = true;
          break;
        }
        batch.del(k);
        newLow = offset + 1;
      }
      if (entries.length === 0) newLow = limit; // a gap (an append that failed half-way): skip it
      if (newLow === this.low) break;
      batch.put(LOW_KEY, encodeOffsetRecord(LOW_MAGIC, newLow, this.now()));
      try {
        await batch.write({ sync: true });
      } catch (err) {
        throw ioError("applying retention", err);
      }
      removed += batch.length - 1;
      this.low = newLow;
      if (young || entries.length < RETENTION_BATCH) break;
    }
    return removed;
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.retentionTimer !== undefined) clearInterval(this.retentionTimer);
    this.wake();
    await Promise.allSettled([...this.inFlight]);
    try {
      await this.db.close();
    } catch (err) {
      throw ioError("close", err);
    }
  }
}

class EmbeddedConsumer implements EventConsumer {
  private isClosed = false;

  constructor(
    private readonly log: EmbeddedEventLog,
    readonly group: string,
    private position: number,
  ) {}

  private check(): void {
    if (this.isClosed) throw closed(`consumer of group ${this.group}`);
  }

  async poll(max: number, waitMs: number): Promise<LoggedEvent[]> {
    this.check();
    const deadline = Date.now() + waitMs;
    let batch = await this.log.read(this.position, max);
    while (batch.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await this.log.waitForAppend(left);
      this.check();
      batch = await this.log.read(this.position, max);
    }
    if (batch.length > 0) this.position = batch[batch.length - 1]!.offset + 1;
    return batch;
  }

  async commit(events: readonly LoggedEvent[]): Promise<void> {
    this.check();
    let next = -1;
    for (const e of events) next = Math.max(next, e.offset + 1);
    if (next >= 0) await this.log.commitOffset(this.group, next);
  }

  async close(): Promise<void> {
    this.isClosed = true;
  }
}
