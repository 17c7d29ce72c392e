/** MemoryEventLog against the event log conformance suite. */
import { MemoryEventLog } from "../../src/events/memory.js";
import { eventLogConformance } from "./conformance.js";

eventLogConformance("memory", async () => {
  const log = new MemoryEventLog();
  return { log, cleanup: () => log.close() };
});
