/** DATA/tier-totals.json: a gateway's tier counts added to those of earlier runs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../src/backend/memory.js";
import { MemoryEventLog } from "../../src/events/memory.js";
import { TierManager } from "../../src/tier/manager.js";
import { addTierStats, readTierTotals, writeTierTotals, TIER_TOTALS_FILE } from "../../src/store/tier-totals.js";

test("totals accumulate across runs and survive a damaged file as zero", async () => {
  const dir = mkdtempSync(join(tmpdir(), "stowage-totals-"));
  try {
    assert.deepEqual((await readTierTotals(dir)).requests, {});
    const run = async (): Promise<void> => {
      const tiers = await TierManager.open({ cloud: new MemoryBackend(), local: { backend: new MemoryBackend(), capacityBytes: 1 << 20 }, events: new MemoryEventLog(), markPackUploaded: async () => undefined });
      await tiers.cloudFirst.put("packs/00/a", Buffer.alloc(100));
      await tiers.cloudFirst.get("packs/00/a");
      await tiers.idle();
      await writeTierTotals(dir, addTierStats(await readTierTotals(dir), await tiers.stats()));
    };
    await run();
    await run();
    const t = await readTierTotals(dir);
    assert.equal(t.requests.cloud?.puts, 2);
    assert.equal(t.requests.cloud?.bytesWritten, 200);
    assert.equal(t.requests.local?.puts, 2, "each cloud-first put also wrote the local copy");
    assert.equal(t.requests.local?.gets, 2, "reads were served locally");
    assert.equal(t.requests.cloud?.gets, 0);
    assert.equal(t.requests.secondary, undefined);
    assert.ok(Date.parse(t.updated) > 0);
    writeFileSync(join(dir, TIER_TOTALS_FILE), "{ not json");
    assert.deepEqual((await readTierTotals(dir)).requests, {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
