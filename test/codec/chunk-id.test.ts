import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Blake3Hasher, blake3 } from "@napi-rs/blake-hash";
import { isStowageError } from "../../src/errors.js";
import { keysFromMasterKey, RepositoryKeys } from "../../src/codec/keys.js";
import { CHUNK_ID_BYTES, ChunkIdHasher, chunkId, chunkIdHex } from "../../src/codec/chunk-id.js";

const MASTER = Uint8Array.from({ length: 32 }, (_, i) => i);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("the BLAKE3 binding matches the official test vectors (empty input)", () => {
  assert.equal(hex(blake3(Buffer.alloc(0))), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  const key = Buffer.from("whats the Elvish word for friend");
  assert.equal(
    hex(Blake3Hasher.newKeyed(key).update(Buffer.alloc(0)).digestBuffer()),
    "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
  );
});

test("chunk ids are keyed BLAKE3 under the chunk-id subkey: 32 bytes, deterministic, pinned", () => {
  const keys = keysFromMasterKey(MASTER);
  const data = Buffer.from("abc");
  const id = chunkId(keys, data);
  assert.equal(id.length, CHUNK_ID_BYTES);
  assert.equal(hex(id), hex(Blake3Hasher.newKeyed(Buffer.from(keys.subkey("chunk-id"))).update(data).digestBuffer()));
  // Regression pin: changing this changes every chunk id of every repository.
  assert.equal(chunkIdHex(id), PINNED_ABC);
  assert.equal(hex(chunkId(keysFromMasterKey(MASTER), data)), hex(id));
});

test("ids depend on the key and on every byte", () => {
  const data = randomBytes(100_000);
  const a = RepositoryKeys.generate();
  const b = RepositoryKeys.generate();
  assert.notEqual(hex(chunkId(a, data)), hex(chunkId(b, data)));
  const flipped = Buffer.from(data);
  flipped[77_777]! ^= 1;
  assert.notEqual(hex(chunkId(a, data)), hex(chunkId(a, flipped)));
  assert.equal(hex(chunkId(a, new Uint8Array(0))).length, 64);
  // One hasher serves many calls: no state carries from one id to the next.
  const h = new ChunkIdHasher(a);
  const reference = (bytes: Uint8Array): string => hex(Blake3Hasher.newKeyed(Buffer.from(a.subkey("chunk-id"))).update(Buffer.from(bytes)).digestBuffer());
  for (const bytes of [data, flipped, new Uint8Array(0), data.subarray(0, 5), data]) assert.equal(hex(h.id(bytes)), reference(bytes));
});

test("streaming ids equal one-shot ids however the input is split; views are hashed by their bytes", () => {
  const keys = RepositoryKeys.generate();
  const hasher = new ChunkIdHasher(keys);
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const whole = hex(hasher.id(data));
  for (const pieces of [1, 2, 7, 1000]) {
    const s = hasher.stream();
    const step = Math.ceil(data.length / pieces);
    for (let off = 0; off < data.length; off += step) s.update(data.subarray(off, off + step));
    assert.equal(hex(s.digest()), whole);
  }
  const backing = new Uint8Array(data.length + 10);
  backing.set(data, 5);
  assert.equal(hex(hasher.id(backing.subarray(5, 5 + data.length))), whole);
  const s = hasher.stream();
  s.digest();
  assert.throws(() => s.digest(), (e: unknown) => isStowageError(e, "STOWAGE_INVALID_ARGUMENT"));
  assert.throws(() => hasher.id("text" as unknown as Uint8Array), (e: unknown) => isStowageError(e, "STOWAGE_INVALID_ARGUMENT"));
});

const PINNED_ABC = "02ee6271738322371726ee0552fc7c2cca10024f912b7c6995981b5be5db91f9";
