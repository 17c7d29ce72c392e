/**
 * The event log on Apache Kafka (DESIGN.md decision 5), through @platformatic/kafka (a pure-JS
 * client). One topic holds the events; message key = event key (so the default partitioner sends
 * every event of a key to one partition, and per-key order holds), value = the event as JSON
 * (the same body as the embedded log's records), no headers.
 *
 *   const log = await KafkaEventLog.open({ brokers: ["127.0.0.1:9092"], topic: "stowage-events" });
 *
 * - append: an idempotent producer with acks = all; concurrent appends are gathered and sent
 *   one produce request at a time (group commit), so a retried request can never overtake a later
 *   one. Resolves once every in-sync replica has the events.
 * - consumers are Kafka consumer groups with manual commits; a consumer reads the group's
 *   committed offsets (or the start of each partition). Messages from the client's stream go into
 *   a bounded buffer (`consumerBuffer`); the stream is paused while it is full.
 * - `start: "latest"` for a group that has no committed offsets commits the current end offsets
 *   for the group (through the admin API) before joining, so the position is fixed when
 *   `consumer()` resolves, as with the other logs.
 * - lag(group) = sum over partitions of (end offset - max(committed, start offset)).
 * - The topic is created when missing (`partitions`, `replicationFactor`, `retentionMs`).
 *   Kafka's retention is by time (and size) only: it deletes old events whether or not a group
 *   consumed them (unlike the embedded log); set `retentionMs` well above any consumer outage.
 *
 * Broker outages: every client failure becomes STOWAGE_EVENTS_IO with the client's error as the
 * cause. An append during an outage fails after the client's retries (`retries` x
 * `retryDelayMs`, about 3 s by default) and may or may not be durable; the caller (the outbox)
 * appends again later, and consumers are idempotent. A consumer whose stream failed throws
 * STOWAGE_EVENTS_IO from one poll; the next poll reconnects (a new group member, resuming from
 * the group's committed offsets, skipping what this consumer already returned).
 */
import {
  Admin,
  Consumer,
  MessagesStreamFallbackModes,
  MessagesStreamModes,
  ProduceAcks,
  Producer,
  type Message,
  type MessagesStream,
} from "@platformatic/kafka";
import { StowageError, isStowageError } from "../errors.js";
import { parseEventJson } from "./embedded.js";
import { Waiters } from "./waiters.js";
import type { ConsumerOptions, EventConsumer, EventLog, LoggedEvent, StowageEvent } from "./types.js";

export interface KafkaEventLogOptions {
  /** Bootstrap brokers, "host:port". */
  brokers: string[];
  /** Topic of the events. Default "stowage-events". */
  topic?: string;
  /** Partitions when the topic is created. Default 3. */
  partitions?: number;
  /** Replicas when the topic is created. Default: the broker's default.replication.factor. */
  replicationFactor?: number;
  /** retention.ms of the topic when it is created. Default: the broker's (7 days). */
  retentionMs?: number;
  /** Client id prefix. Default "stowage". */
  clientId?: string;
  /** Request timeout. Default 5000 ms. */
  timeoutMs?: number;
  /** Retries of a failed request. Default 3. */
  retries?: number;
  /** Delay between retries. Default 1000 ms. */
  retryDelayMs?: number;
  /** Most messages a consumer buffers before pausing its stream. Default 1000. */
  consumerBuffer?: number;
  /** Consumer group session timeout. Default 10000 ms. */
  sessionTimeoutMs?: number;
  /** Consumer heartbeat interval. Default 1000 ms. */
  heartbeatIntervalMs?: number;
  /** Longest a fetch waits on the broker for new messages. Default 500 ms. */
  fetchWaitMs?: number;
}

type Resolved = Required<Omit<KafkaEventLogOptions, "replicationFactor" | "retentionMs">> &
  Pick<KafkaEventLogOptions, "replicationFactor" | "retentionMs">;

function closed(what: string): StowageError {
  return new StowageError("STOWAGE_EVENTS_CLOSED", `${what} is closed`);
}

/** Client failures become STOWAGE_EVENTS_IO (with the cause); our own errors pass through. */
function ioError(what: string, err: unknown): StowageError {
  if (isStowageError(err)) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new StowageError("STOWAGE_EVENTS_IO", `kafka event log: ${what} failed: ${msg}`, { cause: err });
}

function errorCodeOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const find = (err as { findBy?: (p: string, v: unknown) => unknown }).findBy;
  if (typeof find === "function") {
    const hit = find.call(err, "apiId", "TOPIC_ALREADY_EXISTS");
    if (hit !== null && hit !== undefined) return "TOPIC_ALREADY_EXISTS";
  }
  return undefined;
}

interface PendingAppend {
  events: readonly StowageEvent[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class KafkaEventLog implements EventLog {
  readonly location: string;
  private isClosed = false;
  private pending: PendingAppend[] = [];
  private sending: Promise<void> | undefined;
  private readonly consumers = new Set<KafkaConsumer>();
  private consumerCount = 0;

  private constructor(
    private readonly opts: Resolved,
    private readonly admin: Admin,
    private readonly producer: Producer,
    private readonly partitions: number,
  ) {
    this.location = `kafka://${opts.brokers.join(",")}/${opts.topic}`;
  }

  /** Connects, creates the topic when missing, and starts the producer. */
  static async open(options: KafkaEventLogOptions): Promise<KafkaEventLog> {
    const opts: Resolved = {
      topic: "stowage-events",
      partitions: 3,
      clientId: "stowage",
      timeoutMs: 5000,
      retries: 3,
      retryDelayMs: 1000,
      consumerBuffer: 1000,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 1000,
      fetchWaitMs: 500,
      ...options,
    };
    if (opts.brokers.length === 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "kafka event log: no brokers");
    const base = {
      bootstrapBrokers: opts.brokers,
      timeout: opts.timeoutMs,
      retries: opts.retries,
      retryDelay: opts.retryDelayMs,
    };
    const admin = new Admin({ ...base, clientId: `${opts.clientId}-admin` });
    admin.on("error", () => undefined);
    let producer: Producer | undefined;
    try {
      const partitions = await ensureTopic(admin, opts);
      producer = new Producer({
        ...base,
        clientId: `${opts.clientId}-producer`,
        idempotent: true,
        acks: ProduceAcks.ALL,
        autocreateTopics: false,
      });
      producer.on("error", () => undefined);
      return new KafkaEventLog(opts, admin, producer, partitions);
    } catch (err) {
      await Promise.allSettled([admin.close(), producer?.close(true)]);
      throw ioError(`opening topic ${opts.topic} on ${opts.brokers.join(",")}`, err);
    }
  }

  private check(): void {
    if (this.isClosed) throw closed("event log");
  }

  async append(events: readonly StowageEvent[]): Promise<void> {
    this.check();
    if (events.length === 0) return;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ events, resolve, reject });
      if (this.sending === undefined) this.sending = this.sendLoop();
    });
  }

  /** Sends what is pending, one produce request at a time, until nothing is. */
  private async sendLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      const messages = batch.flatMap((p) =>
        p.events.map((e) => ({
          topic: this.opts.topic,
          key: Buffer.from(e.key, "utf8"),
          value: Buffer.from(JSON.stringify({ id: e.id, kind: e.kind, key: e.key, time: e.time, data: e.data }), "utf8"),
        })),
      );
      try {
        if (this.isClosed) throw closed("event log");
        await this.producer.send({ messages, acks: ProduceAcks.ALL, idempotent: true });
        for (const p of batch) p.resolve();
      } catch (err) {
        const e = ioError("append", err);
        for (const p of batch) p.reject(e);
      }
    }
    this.sending = undefined;
  }

  async consumer(group: string, options: ConsumerOptions = {}): Promise<EventConsumer> {
    this.check();
    if (options.start === "latest") {
      try {
        await this.fixLatest(group);
      } catch (err) {
        throw ioError(`fixing the start position of group ${group}`, err);
      }
    }
    const c = new KafkaConsumer(this, group, this.opts, `${this.opts.clientId}-consumer-${++this.consumerCount}`);
    this.consumers.add(c);
    try {
      await c.connect();
    } catch (err) {
      this.consumers.delete(c);
      await c.close();
      throw ioError(`joining group ${group}`, err);
    }
    this.check();
    return c;
  }

  /** For a group with no committed offsets: commits the current end offsets. */
  private async fixLatest(group: string): Promise<void> {
    const committed = await this.committedOffsets(group);
    if ([...committed.values()].some((o) => o >= 0n)) return;
    const ends = await this.listOffsets(-1n);
    await this.admin.alterConsumerGroupOffsets({
      groupId: group,
      topics: [
        {
          name: this.opts.topic,
          partitionOffsets: [...ends].map(([partition, offset]) => ({ partition, offset })),
        },
      ],
    });
  }

  private partitionIndexes(): number[] {
    return Array.from({ length: this.partitions }, (_, i) => i);
  }

  /** Committed offset per partition (-1n where none). */
  private async committedOffsets(group: string): Promise<Map<number, bigint>> {
    const res = await this.admin.listConsumerGroupOffsets({
      groups: [{ groupId: group, topics: [{ name: this.opts.topic, partitionIndexes: this.partitionIndexes() }] }],
    });
    const out = new Map<number, bigint>();
    for (const g of res) {
      for (const t of g.topics) {
        if (t.name !== this.opts.topic) continue;
        for (const p of t.partitions) out.set(p.partitionIndex, p.committedOffset);
      }
    }
    return out;
  }

  /** Offsets per partition at `timestamp` (-1n: end, -2n: start). */
  private async listOffsets(timestamp: bigint): Promise<Map<number, bigint>> {
    const res = await this.admin.listOffsets({
      topics: [{ name: this.opts.topic, partitions: this.partitionIndexes().map((partitionIndex) => ({ partitionIndex, timestamp })) }],
    });
    const out = new Map<number, bigint>();
    for (const t of res) for (const p of t.partitions) out.set(p.partitionIndex, p.offset);
    return out;
  }

  async lag(group: string): Promise<number> {
    this.check();
    try {
      const [committed, ends, starts] = await Promise.all([
        this.committedOffsets(group),
        this.listOffsets(-1n),
        this.listOffsets(-2n),
      ]);
      let lag = 0n;
      for (const [p, end] of ends) {
        const start = starts.get(p) ?? 0n;
        const c = committed.get(p) ?? -1n;
        const from = c > start ? c : start;
        if (end > from) lag += end - from;
      }
      this.check();
      return Number(lag);
    } catch (err) {
      throw ioError(`lag of group ${group}`, err);
    }
  }

  /** @internal */
  forget(c: KafkaConsumer): void {
    this.consumers.delete(c);
  }

  /** @internal */
  get closedFlag(): boolean {
    return this.isClosed;
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    await Promise.allSettled([...this.consumers].map((c) => c.close()));
    if (this.sending !== undefined) await this.sending;
    await Promise.allSettled([this.producer.close(true), this.admin.close()]);
  }
}

async function ensureTopic(admin: Admin, opts: Resolved): Promise<number> {
  const existing = await admin.listTopics();
  if (!existing.includes(opts.topic)) {
    try {
      await admin.createTopics({
        topics: [opts.topic],
        partitions: opts.partitions,
        replicas: opts.replicationFactor ?? -1,
        configs:
          opts.retentionMs === undefined ? [] : [{ name: "retention.ms", value: String(opts.retentionMs) }],
      });
    } catch (err) {
      if (errorCodeOf(err) !== "TOPIC_ALREADY_EXISTS") throw err;
    }
  }
  // The topic's leaders may take a moment to be known after creation.
  for (let i = 0; ; i++) {
    const md = await admin.metadata({ topics: [opts.topic], forceUpdate: true });
    const t = md.topics.get(opts.topic);
    if (t !== undefined && t.partitionsCount > 0 && t.partitions.every((p) => p.leader >= 0)) return t.partitionsCount;
    if (i >= 50) throw new Error(`topic ${opts.topic} has no leader`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

class KafkaConsumer implements EventConsumer {
  private isClosed = false;
  private client: Consumer | undefined;
  private stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined;
  private buffer: Message[] = [];
  private failure: unknown;
  private readonly waiters = new Waiters();
  /** Next offset this consumer returns, per partition (skips redeliveries after a reconnect). */
  private readonly position = new Map<number, bigint>();
  /** Highest offset committed through this consumer, per partition (commits never go back). */
  private readonly committed = new Map<number, bigint>();

  constructor(
    private readonly log: KafkaEventLog,
    readonly group: string,
    private readonly opts: Resolved,
    private readonly clientId: string,
  ) {}

  private check(): void {
    if (this.isClosed || this.log.closedFlag) throw closed(`consumer of group ${this.group}`);
  }

  /** @internal Joins the group and starts the message stream. */
  async connect(): Promise<void> {
    const client = new Consumer({
      clientId: this.clientId,
      groupId: this.group,
      bootstrapBrokers: this.opts.brokers,
      timeout: this.opts.timeoutMs,
      retries: this.opts.retries,
      retryDelay: this.opts.retryDelayMs,
      autocommit: false,
      sessionTimeout: this.opts.sessionTimeoutMs,
      // A restarted member rejoins within one session timeout, not the client's two-minute default.
      rebalanceTimeout: this.opts.sessionTimeoutMs,
      heartbeatInterval: this.opts.heartbeatIntervalMs,
      maxWaitTime: this.opts.fetchWaitMs,
      highWaterMark: Math.max(16, Math.min(this.opts.consumerBuffer, 1024)),
    });
    client.on("error", (err: unknown) => this.fail(err));
    this.client = client;
    const stream = await client.consume({
      topics: [this.opts.topic],
      mode: MessagesStreamModes.COMMITTED,
      fallbackMode: MessagesStreamFallbackModes.EARLIEST,
      autocommit: false,
    });
    if (this.isClosed) {
      await stream.close().catch(() => undefined);
      return;
    }
    this.stream = stream;
    stream.on("data", (m: Message) => {
      if (this.stream !== stream) return;
      this.buffer.push(m);
      if (this.buffer.length >= this.opts.consumerBuffer) stream.pause();
      this.wake();
    });
    stream.on("error", (err: unknown) => {
      if (this.stream === stream) this.fail(err);
    });
  }

  private fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    this.wake();
  }

  private wake(): void {
    this.waiters.wakeAll();
  }

  private wait(ms: number): Promise<void> {
    return this.waiters.wait(ms);
  }

  /** Drops the failed client; the next poll connects again. */
  private async disconnect(): Promise<void> {
    const { client, stream } = this;
    this.client = undefined;
    this.stream = undefined;
    this.buffer = [];
    await Promise.allSettled([stream?.close(), client?.close(true)]);
  }

  async poll(max: number, waitMs: number): Promise<LoggedEvent[]> {
    this.check();
    if (this.failure !== undefined) {
      const err = this.failure;
      this.failure = undefined;
      await this.disconnect();
      throw ioError(`consuming for group ${this.group}`, err);
    }
    if (this.client === undefined) {
      try {
        await this.connect();
      } catch (err) {
        await this.disconnect();
        throw ioError(`rejoining group ${this.group}`, err);
      }
    }
    const deadline = Date.now() + waitMs;
    for (;;) {
      const out = this.take(max);
      if (out.length > 0) return out;
      this.check();
      if (this.failure !== undefined) return this.poll(max, Math.max(0, deadline - Date.now()));
      const left = deadline - Date.now();
      if (left <= 0) return [];
      await this.wait(left);
      this.check();
    }
  }

  /** Up to `max` buffered events, skipping any this consumer already returned. */
  private take(max: number): LoggedEvent[] {
    const out: LoggedEvent[] = [];
    let i = 0;
    while (i < this.buffer.length && out.length < max) {
      const m = this.buffer[i++]!;
      const next = this.position.get(m.partition);
      if (next !== undefined && m.offset < next) continue;
      this.position.set(m.partition, m.offset + 1n);
      const event = parseEventJson(
        (m.value ?? Buffer.alloc(0)).toString("utf8"),
        `kafka event log: ${m.topic}/${m.partition} offset ${m.offset}`,
      );
      out.push({ ...event, partition: m.partition, offset: Number(m.offset) });
    }
    this.buffer.splice(0, i);
    if (this.stream !== undefined && this.stream.isPaused() && this.buffer.length < this.opts.consumerBuffer / 2) {
      this.stream.resume();
    }
    return out;
  }

  async commit(events: readonly LoggedEvent[]): Promise<void> {
    this.check();
    const next = new Map<number, bigint>();
    for (const e of events) {
      const o = BigInt(e.offset) + 1n;
      if (o > (next.get(e.partition) ?? -1n)) next.set(e.partition, o);
    }
    const offsets = [...next]
      .filter(([p, o]) => o > (this.committed.get(p) ?? -1n))
      .map(([partition, offset]) => ({ topic: this.opts.topic, partition, offset, leaderEpoch: -1 }));
    if (offsets.length === 0) return;
    try {
      if (this.client === undefined) await this.connect();
      await this.client!.commit({ offsets });
    } catch (err) {
      throw ioError(`committing for group ${this.group}`, err);
    }
    for (const o of offsets) this.committed.set(o.partition, o.offset);
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    this.wake();
    this.log.forget(this);
    const { client, stream } = this;
    this.client = undefined;
    this.stream = undefined;
    this.buffer = [];
    // Leave the group cleanly (so the next member need not wait for the session timeout).
    await stream?.close().catch(() => undefined);
    if (client !== undefined) {
      try {
        await client.close(false);
      } catch {
        await Promise.resolve(client.close(true)).catch(() => undefined);
      }
    }
  }
}
