import { test } from "node:test";
import assert from "node:assert/strict";
import { ByteReader, ByteWriter, getFixed64, putFixed64, varintLength } from "../../src/kv/coding.js";

test("varints and fixed64 round-trip up to 2^53", () => {
  const values = [0, 1, 127, 128, 300, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 45, Number.MAX_SAFE_INTEGER];
  const w = new ByteWriter(4);
  for (const v of values) {
    w.varint(v);
    w.fixed64(v);
  }
  const r = new ByteReader(w.take(), (off, what) => new Error(`${what} at ${off}`));
  for (const v of values) {
    assert.equal(r.varint(), v);
    assert.equal(r.fixed64(), v);
  }
  assert.ok(r.done);
  assert.equal(varintLength(127), 1);
  assert.equal(varintLength(128), 2);
  const b = new Uint8Array(8);
  putFixed64(b, 0, 2 ** 40 + 5);
  assert.equal(getFixed64(b, 0), 2 ** 40 + 5);
});

test("truncated varint is reported, not misread", () => {
  const r = new ByteReader(new Uint8Array([0x80, 0x80]), (off, what) => new Error(`${what} at ${off}`));
  assert.throws(() => r.varint(), /bad varint/);
});
