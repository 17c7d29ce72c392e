/**
 * Child of the journal tests: opens the repository at argv[2] (passphrase argv[3]) with a lazy
 * journal that never flushes on its own, puts argv[4] objects into bucket `bkt` (created here,
 * versioning argv[5]), prints `acked KEY VERSIONID MD5` for each, then `done`, and waits to be
 * killed. Its journal entries are committed locally but (mostly) not shipped when it dies.
 */
import { createHash } from "node:crypto";
import { openRepository } from "../../src/store/repository.js";
import { bytes } from "../store/helpers.js";

const [dir, pass, countText, versioning] = process.argv.slice(2) as [string, string, string, string];
const repo = await openRepository(dir, { passphrase: pass, journal: true, journalLazyMs: 600_000 });
const store = repo.store;
await store.createBucket("bkt", { versioning: versioning === "enabled" ? "enabled" : "unversioned" });
for (let i = 0; i < Number(countText); i++) {
  const data = bytes(300 + i * 37, 7000 + i);
  const md5 = createHash("md5").update(data).digest("hex");
  const r = await store.putObject("bkt", `k${i % 5}`, [data], { contentType: `t/${i}` });
  process.stdout.write(`acked k${i % 5} ${r.versionId} ${md5}\n`);
}
process.stdout.write("done\n");
setInterval(() => undefined, 1000);
