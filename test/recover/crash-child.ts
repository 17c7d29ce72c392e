/**
 * Child of the recover crash test: opens the repository at argv[2] (passphrase argv[3]) and runs
 * concurrent clients doing puts, overwrites and deletes on bucket `bkt`, one client per key range so
 * each key's operations are sequential. Prints `ready`, then `begin put|del KEY` before and
 * `ack put KEY MD5` / `ack del KEY` after each operation. Runs until killed.
 */
import { createHash } from "node:crypto";
import { openRepository } from "../../src/store/repository.js";
import { bytes } from "../store/helpers.js";

const [dir, pass, seedText] = process.argv.slice(2) as [string, string, string];
const repo = await openRepository(dir, { passphrase: pass, commitDelayMs: 2, journal: true });
const store = repo.store;
await store.createBucket("bkt", { versioning: Number(seedText) % 2 === 0 ? "enabled" : "unversioned" });
process.stdout.write("ready\n");
let seed = Number(seedText) * 1_000_003 + 17;
const rand = (n: number): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
};
const client = async (c: number): Promise<void> => {
  for (let i = 0; ; i++) {
    const key = `c${c}-k${rand(12)}`;
    if (rand(4) === 0) {
      process.stdout.write(`begin del ${key}\n`);
      await store.deleteObject("bkt", key);
      process.stdout.write(`ack del ${key}\n`);
    } else {
      const data = bytes(200 + rand(6000), c * 100_000 + i);
      const md5 = createHash("md5").update(data).digest("hex");
      process.stdout.write(`begin put ${key}\n`);
      await store.putObject("bkt", key, [data], { contentType: "app/" + key, userMetadata: { md5 } });
      process.stdout.write(`ack put ${key} ${md5}\n`);
    }
  }
};
await Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
