import { test } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, randomBytes } from "node:crypto";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import { keysFromMasterKey, RepositoryKeys } from "../../src/codec/keys.js";
import { AeadCipher, SEALED_OVERHEAD, aeadCipher, open, seal, sealedLength } from "../../src/codec/aead.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function throwsWith(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

test("round trips at sizes around the 256 KiB sealing step, with and without associated data", () => {
  const keys = RepositoryKeys.generate();
  const id = randomBytes(32);
  for (const n of [0, 1, 15, 16, 17, 4096, 262143, 262144, 262145, 1048576 + 7]) {
    const plain = randomBytes(n);
    const sealed = seal(keys, plain, id);
    assert.equal(sealed.length, sealedLength(n));
    assert.equal(sealed.length, n + SEALED_OVERHEAD);
    assert.equal(sealed[0], 1);
    assert.equal(hex(open(keys, sealed, id)), hex(plain));
    const noAad = seal(keys, plain);
    assert.equal(hex(open(keys, noAad)), hex(plain));
  }
});

test("the format is version || nonce || AES-256-GCM(ciphertext) || tag, with version || aad authenticated", () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
  const nonce = Buffer.alloc(12, 7);
  const aad = Buffer.from("chunk-id-bytes");
  const plain = Buffer.from("the quick brown fox");
  const c = createCipheriv("aes-256-gcm", key, nonce);
  c.setAAD(Buffer.concat([Buffer.from([1]), aad]));
  const ct = Buffer.concat([c.update(plain), c.final()]);
  const sealed = Buffer.concat([Buffer.from([1]), nonce, ct, c.getAuthTag()]);
  assert.equal(Buffer.from(new AeadCipher(key).open(sealed, aad)).toString(), "the quick brown fox");
});

test("nonces are fresh: sealing the same plaintext twice gives different bytes", () => {
  const cipher = new AeadCipher(randomBytes(32));
  const plain = Buffer.alloc(1000);
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) seen.add(hex(cipher.seal(plain).subarray(1, 13)));
  assert.equal(seen.size, 1000);
});

test("a wrong key, wrong or missing associated data, or another purpose's key is STOWAGE_INTEGRITY", () => {
  const keys = RepositoryKeys.generate();
  const id = randomBytes(32);
  const sealed = seal(keys, randomBytes(5000), id);
  throwsWith(() => open(RepositoryKeys.generate(), sealed, id), "STOWAGE_INTEGRITY");
  throwsWith(() => open(keys, sealed, randomBytes(32)), "STOWAGE_INTEGRITY");
  throwsWith(() => open(keys, sealed), "STOWAGE_INTEGRITY");
  throwsWith(() => aeadCipher(keys, "index-encryption").open(sealed, id), "STOWAGE_INTEGRITY");
  // Same master key, new object: same subkey.
  const again = keysFromMasterKey(keys.exportMasterKey());
  assert.equal(open(again, sealed, id).length, 5000);
});

test("every flipped bit and every truncation is STOWAGE_INTEGRITY, never plaintext", () => {
  const cipher = new AeadCipher(randomBytes(32));
  const id = randomBytes(32);
  const sealed = cipher.seal(randomBytes(64), id);
  for (let bit = 0; bit < sealed.length * 8; bit++) {
    const bad = Buffer.from(sealed);
    bad[bit >> 3]! ^= 1 << (bit & 7);
    throwsWith(() => cipher.open(bad, id), "STOWAGE_INTEGRITY");
  }
  for (let len = 0; len < sealed.length; len++) throwsWith(() => cipher.open(sealed.subarray(0, len), id), "STOWAGE_INTEGRITY");
  throwsWith(() => cipher.open(Buffer.concat([sealed, Buffer.from([0])]), id), "STOWAGE_INTEGRITY");
});

test("an unknown version that is not a damaged version-1 chunk is STOWAGE_FORMAT_VERSION", () => {
  const cipher = new AeadCipher(randomBytes(32));
  const future = randomBytes(100);
  future[0] = 2;
  throwsWith(() => cipher.open(future), "STOWAGE_FORMAT_VERSION");
  future[0] = 0;
  throwsWith(() => cipher.open(future), "STOWAGE_INTEGRITY");
});

test("argument checks", () => {
  throwsWith(() => new AeadCipher(new Uint8Array(16)), "STOWAGE_INVALID_ARGUMENT");
  const cipher = new AeadCipher(randomBytes(32));
  throwsWith(() => cipher.seal("text" as unknown as Uint8Array), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => cipher.open(new Uint8Array(40), "id" as unknown as Uint8Array), "STOWAGE_INVALID_ARGUMENT");
});
