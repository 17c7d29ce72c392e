/**
 * An event log in memory: one partition, nothing durable. For unit tests of event consumers (and
 * as the simplest implementation of the interface, held to the same conformance suite).
 */
import { StowageError } from "../errors.js";
import { Waiters } from "./waiters.js";
import type { ConsumerOptions, EventConsumer, EventLog, LoggedEvent, StowageEvent } from "./types.js";

function closed(what: string): StowageError {
  return new StowageError("STOWAGE_EVENTS_CLOSED", `${what} is closed`);
}

export class MemoryEventLog implements EventLog {
  readonly location = "memory:";
  private readonly events: LoggedEvent[] = [];
  /** Next offset each group resumes at. */
  private readonly committed = new Map<string, number>();
  private readonly waiters = new Waiters();
  private isClosed = false;

  async append(events: readonly StowageEvent[]): Promise<void> {
    if (this.isClosed) throw closed("event log");
    for (const e of events) {
      this.events.push({ ...e, data: { ...e.data }, partition: 0, offset: this.events.length });
    }
    this.waiters.wakeAll();
  }

  async consumer(group: string, options: ConsumerOptions = {}): Promise<EventConsumer> {
    if (this.isClosed) throw closed("event log");
    if (!this.committed.has(group) && options.start === "latest") this.committed.set(group, this.events.length);
    return new MemoryConsumer(this, group, this.committed.get(group) ?? 0);
  }

  async lag(group: string): Promise<number> {
    if (this.isClosed) throw closed("event log");
    return this.events.length - (this.committed.get(group) ?? 0);
  }

  async close(): Promise<void> {
    this.isClosed = true;
    this.waiters.wakeAll();
  }

  /** @internal */
  read(from: number, max: number): LoggedEvent[] {
    if (this.isClosed) throw closed("event log");
    return this.events.slice(from, from + max).map((e) => ({ ...e, data: { ...e.data } }));
  }

  /** @internal Resolves when an event is appended, the log closes, or `ms` pass. */
  waitForAppend(ms: number): Promise<void> {
    return this.waiters.wait(ms);
  }

  /** @internal */
  commitOffset(group: string, next: number): void {
    if (this.isClosed) throw closed("event log");
    if (next > (this.committed.get(group) ?? 0)) this.committed.set(group, next);
  }
}

class MemoryConsumer implements EventConsumer {
  private isClosed = false;

  constructor(
    private readonly log: MemoryEventLog,
    readonly group: string,
    private position: number,
  ) {}

  async poll(max: number, waitMs: number): Promise<LoggedEvent[]> {
    if (this.isClosed) throw closed(`consumer of group ${this.group}`);
    let batch = this.log.read(this.position, max);
    if (batch.length === 0 && waitMs > 0) {
      await this.log.waitForAppend(waitMs);
      if (this.isClosed) throw closed(`consumer of group ${this.group}`);
      batch = this.log.read(this.position, max);
    }
    if (batch.length > 0) this.position = batch[batch.length - 1]!.offset + 1;
    return batch;
  }

  async commit(events: readonly LoggedEvent[]): Promise<void> {
    if (this.isClosed) throw closed(`consumer of group ${this.group}`);
    let next = -1;
    for (const e of events) next = Math.max(next, e.offset + 1);
    if (next >= 0) this.log.commitOffset(this.group, next);
  }

  async close(): Promise<void> {
    this.isClosed = true;
  }
}
