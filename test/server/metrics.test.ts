/** `GET /_stowage/metrics`: Prometheus text with request counters and the store's savings. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CreateBucketCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { startEndpoint } from "./harness.js";
import { Metrics } from "../../src/server/metrics.js";

function value(text: string, line: RegExp): number {
  const m = text.split("\n").find((l) => line.test(l));
  assert.ok(m !== undefined, `no line matching ${line}`);
  return Number(m.slice(m.lastIndexOf(" ") + 1));
}

test("metrics count requests and report the store's figures", async () => {
  const ep = await startEndpoint({ metrics: true });
  try {
    const s3 = ep.client();
    await s3.send(new CreateBucketCommand({ Bucket: "met" }));
    const body = Buffer.alloc(100_000, 7);
    await s3.send(new PutObjectCommand({ Bucket: "met", Key: "a", Body: body }));
    await s3.send(new PutObjectCommand({ Bucket: "met", Key: "b", Body: body }));
    const res = await fetch(`${ep.url}/_stowage/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
    const text = await res.text();
    assert.equal(value(text, /^stowage_s3_requests_total\{method="PUT",status="200"\}/), 3);
    assert.equal(value(text, /^stowage_objects /), 2);
    assert.equal(value(text, /^stowage_logical_bytes /), 200_000);
    assert.equal(value(text, /^stowage_buckets /), 1);
    assert.ok(value(text, /^stowage_dedup_ratio /) >= 1.9, "identical objects dedup");
    assert.ok(value(text, /^stowage_stored_bytes /) < 200_000);
    // The scrape itself is not counted, and an unsigned request elsewhere still is refused.
    const again = await (await fetch(`${ep.url}/_stowage/metrics`)).text();
    assert.doesNotMatch(again, /method="GET",status="200"/);
    assert.equal((await fetch(`${ep.url}/met`)).status, 403);
  } finally {
    await ep.stop();
  }
});

test("a source is re-read only after its interval; gauges of one name keep one label set", async () => {
  let now = 0;
  let reads = 0;
  const m = new Metrics({ defaultMetrics: false, now: () => now });
  m.addSource(async () => {
    reads++;
    return [{ name: "tier_bytes", help: "h", labels: { tier: "local" }, value: reads }];
  }, 1000);
  assert.match(await m.render(), /stowage_tier_bytes\{tier="local"\} 1/);
  now = 500;
  assert.match(await m.render(), /stowage_tier_bytes\{tier="local"\} 1/);
  now = 1500;
  assert.match(await m.render(), /stowage_tier_bytes\{tier="local"\} 2/);
  m.addSource(async () => [{ name: "tier_bytes", help: "h", labels: { other: "x" }, value: 1 }]);
  await assert.rejects(m.render(), /labels/);
});
