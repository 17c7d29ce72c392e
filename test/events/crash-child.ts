/**
 * The child process of the embedded event log's crash test (embedded.test.ts): opens the log and
 * appends batches of 1-5 events, up to 4 appends in flight, until it is killed (SIGKILL) or its
 * time runs out. Event ids are `e-<n>` with n counting up from `first` in submission order;
 * keys rotate over 5 values.
 *
 * Protocol (one synchronous write(2) on fd 1 per line, so a line is in the pipe before the next
 * step runs and survives the SIGKILL): `open`, then `submit <first> <last>` before each append
 * and `ack <first> <last>` when it resolved, and `done` after a clean close.
 *
 * Usage: node crash-child.js <dir> <first> <runMs>
 */
import * as fs from "node:fs";
import { EmbeddedEventLog } from "../../src/events/embedded.js";
import type { StowageEvent } from "../../src/events/types.js";

function emit(line: string): void {
  const buf = Buffer.from(line + "\n");
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off, buf.length - off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
  }
}

export function crashEvent(n: number): StowageEvent {
  return { id: `e-${n}`, kind: "pack-uploaded", key: `k${n % 5}`, time: n, data: { blobKey: `p/${n}`, size: n } };
}

async function main(): Promise<void> {
  const [dir, firstArg, runArg] = process.argv.slice(2);
  let n = Number(firstArg);
  const deadline = Date.now() + Number(runArg);
  const log = await EmbeddedEventLog.open(dir!, { retentionIntervalMs: 0 });
  emit("open");
  const inFlight = new Set<Promise<void>>();
  let seed = n * 7 + 1;
  while (Date.now() < deadline) {
    while (inFlight.size < 4) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const count = 1 + (seed % 5);
      const first = n;
      const batch = Array.from({ length: count }, () => crashEvent(n++));
      emit(`submit ${first} ${n - 1}`);
      const p = log.append(batch).then(() => emit(`ack ${first} ${first + count - 1}`));
      inFlight.add(p);
      void p.then(() => inFlight.delete(p), () => undefined);
    }
    await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await log.close();
  emit("done");
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    fs.writeSync(2, `crash-child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(2);
  },
);
