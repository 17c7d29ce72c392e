/**
 * The event log: how the parts of Stowage tell each other what happened to packs and objects
 * (a pack was uploaded, a local copy is missing, a pack was purged, ...), durably and in order.
 * One interface, several implementations (DESIGN.md decision 5): the embedded log on the kv store
 * (the default), Apache Kafka, and an in-memory log for unit tests. All pass one conformance suite
 * (test/events/conformance.ts).
 *
 * Delivery is at least once: an event a consumer group has not committed is delivered again after
 * a crash or restart, so every consumer is idempotent (handling an event twice changes nothing the
 * second time). Events with the same `key` are delivered in the order they were appended.
 */

/** What happened. Pack events are keyed by pack id, object events by `bucket/key`. */
export const EVENT_KINDS = [
  /** A pack is durable in the cloud tier. data: { blobKey, size } */
  "pack-uploaded",
  /** A pack (write-back policy) is durable only in the local tier and must be uploaded. data: { blobKey, size } */
  "upload-needed",
  /** The local tier lacks a copy of a pack it should hold. data: { blobKey, size?, reason } */
  "hydrate-needed",
  /** The local tier now holds a copy of the pack. data: { blobKey, size } */
  "hydrated",
  /** The purger chose a pack to drop from the local tier. data: { blobKey, size } */
  "purge-candidate",
  /** The local copy of a pack was dropped (the cloud, and the secondary tier if any, confirmed theirs). data: { blobKey, size } */
  "purged",
  /** The secondary tier now holds a copy of the pack. data: { blobKey, size } */
  "secondary-copied",
  /** An object version was committed. data: { bucket, key, versionId, size, etag } */
  "object-created",
  /** A version was removed or a delete marker written. data: { bucket, key, versionId, deleteMarker } */
  "object-deleted",
] as const;

export type EventKind = (typeof EVENT_KINDS)[number];

export type EventValue = string | number | boolean;

export interface StowageEvent {
  /**
   * Unique id given by the producer (for example `outbox-<sequence>` or a random hex string): a
   * consumer may use it to recognise a redelivery; logs never invent or change it.
   */
  id: string;
  kind: EventKind;
  /** Ordering key: events with the same key are delivered in append order. */
  key: string;
  /** When it happened, ms since the epoch (producer's clock). */
  time: number;
  /** Kind-specific fields (see {@link EVENT_KINDS}). */
  data: Record<string, EventValue>;
}

/** An event as a consumer receives it: with its position in the log. */
export interface LoggedEvent extends StowageEvent {
  /** Partition it lives in (0 for single-partition logs). */
  partition: number;
  /** Position within its partition: strictly increasing in append order. */
  offset: number;
}

export interface ConsumerOptions {
  /**
   * Where a group with no committed position starts: the oldest retained event (default), or
   * only events appended after the consumer was created. "latest" fixes the group's position when
   * `consumer()` resolves: it becomes the group's committed position (so a later consumer of the
   * group starts there too, and `lag` counts from there). A group with a committed position
   * ignores `start`.
   */
  start?: "earliest" | "latest";
}

export interface EventConsumer {
  readonly group: string;
  /**
   * Up to `max` events after this consumer's position, waiting at most `waitMs` for the first one
   * to arrive (an empty array when none came). Each call continues after the previous batch, even
   * before it is committed. Events of one partition come in offset order.
   */
  poll(max: number, waitMs: number): Promise<LoggedEvent[]>;
  /**
   * Durably records that the group has handled these events (and, per partition, everything
   * before them): a new consumer of the group resumes after the highest committed offset of each
   * partition. Uncommitted events are delivered again to the next consumer of the group.
   */
  commit(events: readonly LoggedEvent[]): Promise<void>;
  /** Leaves the group; uncommitted events stay uncommitted. */
  close(): Promise<void>;
}

export interface EventLog {
  /** Human-readable location, e.g. `kv:/srv/stowage/events` or `kafka://127.0.0.1:9092/stowage-events`. */
  readonly location: string;
  /**
   * Appends the events; resolves when they are durable (embedded: synced to disk; Kafka: acknowledged
   * by all in-sync replicas). Events passed together with the same key keep their order.
   */
  append(events: readonly StowageEvent[]): Promise<void>;
  /** A consumer in `group` (several groups consume the same events independently). */
  consumer(group: string, options?: ConsumerOptions): Promise<EventConsumer>;
  /** Events appended but not yet committed by `group` (0 for a group that has consumed everything). */
  lag(group: string): Promise<number>;
  /** Releases resources; further calls fail with STOWAGE_EVENTS_CLOSED. */
  close(): Promise<void>;
}
