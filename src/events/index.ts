/** The event layer: the event log interface and its implementations. */
export {
  EVENT_KINDS,
  type ConsumerOptions,
  type EventConsumer,
  type EventKind,
  type EventLog,
  type EventValue,
  type LoggedEvent,
  type StowageEvent,
} from "./types.js";
export { MemoryEventLog } from "./memory.js";
export { EmbeddedEventLog, type EmbeddedEventLogOptions } from "./embedded.js";
export { KafkaEventLog, type KafkaEventLogOptions } from "./kafka.js";
export { OutboxRelay, type OutboxRelayOptions, type OutboxRelayStats, type OutboxSource } from "./outbox.js";
