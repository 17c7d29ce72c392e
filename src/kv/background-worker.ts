/**
 * Entry point of the background thread (see background.ts): runs flush and compaction jobs on
 * the real file system and answers with the new files' metadata.
 */
import { parentPort } from "node:worker_threads";
import { StowageError } from "../errors.js";
import type { WorkerRequest, WorkerResponse } from "./background.js";
import { runCompactionJob, writeTable } from "./compaction.js";
import { tableFileName } from "./format.js";
import { joinPath, nodeFileSystem } from "./fs.js";
import { Memtable } from "./memtable.js";
import { Table } from "./table/table.js";
import type { FileMeta } from "./version.js";

const noPause = (): Promise<void> => Promise.resolve();

async function handle(req: WorkerRequest): Promise<FileMeta[]> {
  if (req.kind === "flush") {
    const mem = Memtable.fromState(req.mem);
    const meta = await writeTable(nodeFileSystem, req.dir, req.num, mem.iterator(), req.table, noPause);
    return meta === undefined ? [] : [meta];
  }
  const numbers = req.numbers;
  let next = 0;
  const dir = req.job.dir;
  return runCompactionJob(req.job, {
    fs: nodeFileSystem,
    openTable(num) {
      const file = nodeFileSystem.openRandomAccess(joinPath(dir, tableFileName(num)));
      try {
        const table = Table.open(file, num, undefined, { verifyChecksums: true });
        return { iter: table.iterator(false), release: () => table.close() };
      } catch (err) {
        file.close();
        throw err;
      }
    },
    newFileNumber() {
      if (next >= numbers.length) throw new Error("compaction ran out of reserved file numbers");
      return numbers[next++]!;
    },
    pause: noPause,
  });
}

parentPort!.on("message", (req: WorkerRequest) => {
  handle(req).then(
    (files) => parentPort!.postMessage({ id: req.id, ok: true, files } satisfies WorkerResponse),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      const se = err instanceof StowageError ? err : undefined;
      const code = se?.code ?? (err as NodeJS.ErrnoException | undefined)?.code;
      parentPort!.postMessage({
        id: req.id,
        ok: false,
        error: { code, message: e.message, file: se?.file, offset: se?.offset },
      } satisfies WorkerResponse);
    },
  );
});
