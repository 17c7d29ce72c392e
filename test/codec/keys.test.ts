import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { isStowageError, type ErrorCode } from "../../src/errors.js";
import {
  DEFAULT_SCRYPT,
  KEY_FILE_BYTES,
  KEY_FILE_MAGIC,
  KEY_PURPOSES,
  MASTER_KEY_ENV,
  RepositoryKeys,
  createKeyFile,
  formatMasterKey,
  inspectKeyFile,
  keysFromEnvironment,
  keysFromMasterKey,
  openKeyFile,
  parseMasterKey,
  sealKeyFile,
  type KeyPurpose,
  type ScryptParams,
} from "../../src/codec/keys.js";

/** Cheap scrypt for tests (the default costs ~0.5 s per open). */
const FAST: ScryptParams = { log2N: 10, r: 8, p: 1 };
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const MASTER = Uint8Array.from({ length: 32 }, (_, i) => i);

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

function throwsWith(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isStowageError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

/** A copy of `file` with `edit` applied and the trailing SHA-256 recomputed (a well-formed forgery). */
function reChecksummed(file: Uint8Array, edit: (b: Buffer) => void): Uint8Array {
  const b = Buffer.from(file);
  edit(b);
  createHash("sha256").update(b.subarray(0, b.length - 32)).digest().copy(b, b.length - 32);
  return b;
}

test("subkeys are HKDF-SHA256 of the master key (known answers), distinct per purpose", () => {
  const keys = keysFromMasterKey(MASTER);
  // Computed independently (Python hmac/hashlib HKDF, RFC 5869, empty salt).
  assert.equal(hex(keys.subkey("chunk-id")), "8c6940f4ea55d1c4157e9a3232d3b75e12678bbd6e38e6496d8739068bc65f6b");
  assert.equal(hex(keys.subkey("data-encryption")), "baab3cc0f6fa6d802d8c7daf867973c53cf1f813e06c37aee45a830504cdc2f4");
  assert.equal(keys.keyIdHex, "900cb5811468cb5b7470a6e143bfe4e9");
  const all = KEY_PURPOSES.map((p) => hex(keys.subkey(p)));
  assert.equal(new Set(all).size, KEY_PURPOSES.length);
  for (const k of all) assert.equal(k.length, 64);
  // Copies: mutating one does not change the next.
  const k1 = keys.subkey("chunk-id");
  k1.fill(0);
  assert.equal(hex(keys.subkey("chunk-id")), all[0]);
  throwsWith(() => keys.subkey("nope" as KeyPurpose), "STOWAGE_INVALID_ARGUMENT");
});

test("generated keys are random; destroy() makes keys unusable", () => {
  const a = RepositoryKeys.generate();
  const b = RepositoryKeys.generate();
  assert.notEqual(a.keyIdHex, b.keyIdHex);
  a.destroy();
  throwsWith(() => a.subkey("chunk-id"), "STOWAGE_INVALID_ARGUMENT");
  throwsWith(() => a.exportMasterKey(), "STOWAGE_INVALID_ARGUMENT");
});

test("key file round trip: same master key, key id and subkeys", async () => {
  const { keys, file } = await createKeyFile("correct horse battery staple", { scrypt: FAST });
  assert.equal(file.length, KEY_FILE_BYTES);
  assert.equal(Buffer.from(file.subarray(0, 8)).toString("latin1"), KEY_FILE_MAGIC);
  const info = inspectKeyFile(file);
  assert.deepEqual(info, { version: 1, kdf: "scrypt", scrypt: FAST, keyId: keys.keyIdHex });
  const opened = await openKeyFile(file, "correct horse battery staple");
  assert.equal(hex(opened.exportMasterKey()), hex(keys.exportMasterKey()));
  assert.equal(opened.keyIdHex, keys.keyIdHex);
  assert.equal(hex(opened.subkey("data-encryption")), hex(keys.subkey("data-encryption")));
});

test("the same master key sealed under two passphrases; raw-byte and NFC-normalized passphrases", async () => {
  const keys = keysFromMasterKey(MASTER);
  const f1 = await sealKeyFile(keys, "caf\u00e9", { scrypt: FAST }); // precomposed é
  const f2 = await sealKeyFile(keys, new Uint8Array([1, 2, 3, 0, 255]), { scrypt: FAST });
  assert.notEqual(hex(f1), hex(f2));
  assert.equal((await openKeyFile(f1, "cafe\u0301")).keyIdHex, keys.keyIdHex); // e + combining acute
  assert.equal((await openKeyFile(f2, new Uint8Array([1, 2, 3, 0, 255]))).keyIdHex, keys.keyIdHex);
  await rejectsWith(openKeyFile(f2, new Uint8Array([1, 2, 3, 0])), "STOWAGE_BAD_PASSPHRASE");
});

test("a wrong passphrase is STOWAGE_BAD_PASSPHRASE", async () => {
  const { file } = await createKeyFile("right", { scrypt: FAST });
  await rejectsWith(openKeyFile(file, "wrong"), "STOWAGE_BAD_PASSPHRASE");
  await rejectsWith(openKeyFile(file, ""), "STOWAGE_INVALID_ARGUMENT");
});

test("any damaged byte, truncation or foreign file is STOWAGE_KEY_FORMAT (never a passphrase error)", async () => {
  const { file } = await createKeyFile("pw", { scrypt: FAST });
  for (let i = 0; i < file.length; i++) {
    const bad = Buffer.from(file);
    bad[i]! ^= 0x04;
    await rejectsWith(openKeyFile(bad, "pw"), "STOWAGE_KEY_FORMAT");
  }
  await rejectsWith(openKeyFile(file.subarray(0, file.length - 1), "pw"), "STOWAGE_KEY_FORMAT");
  await rejectsWith(openKeyFile(new Uint8Array(0), "pw"), "STOWAGE_KEY_FORMAT");
  await rejectsWith(openKeyFile(Buffer.from('{"not":"a key file"}'), "pw"), "STOWAGE_KEY_FORMAT");
  // Extra bytes appended: checksum no longer at the end.
  await rejectsWith(openKeyFile(Buffer.concat([file, Buffer.alloc(4)]), "pw"), "STOWAGE_KEY_FORMAT");
});

test("a newer format version or KDF is STOWAGE_FORMAT_VERSION; absurd KDF parameters are STOWAGE_KEY_FORMAT", async () => {
  const { file } = await createKeyFile("pw", { scrypt: FAST });
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(2, 8)), "pw"), "STOWAGE_FORMAT_VERSION");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(0, 8)), "pw"), "STOWAGE_KEY_FORMAT");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(2, 12)), "pw"), "STOWAGE_FORMAT_VERSION");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(40, 16)), "pw"), "STOWAGE_KEY_FORMAT");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(0, 20)), "pw"), "STOWAGE_KEY_FORMAT");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(1000, 24)), "pw"), "STOWAGE_KEY_FORMAT");
  // A header edited by someone who also fixed the checksum: the GCM tag (header as associated data) catches it.
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => (b[60]! ^= 1)), "pw"), "STOWAGE_BAD_PASSPHRASE");
  await rejectsWith(openKeyFile(reChecksummed(file, (b) => b.writeUInt32LE(11, 16)), "pw"), "STOWAGE_BAD_PASSPHRASE");
});

test("sealKeyFile validates its scrypt parameters; the defaults are N=2^16, r=8, p=1", async () => {
  assert.deepEqual({ ...DEFAULT_SCRYPT }, { log2N: 16, r: 8, p: 1 });
  const keys = keysFromMasterKey(MASTER);
  await rejectsWith(sealKeyFile(keys, "pw", { scrypt: { log2N: 25, r: 8, p: 1 } }), "STOWAGE_INVALID_ARGUMENT");
  await rejectsWith(sealKeyFile(keys, "pw", { scrypt: { log2N: 10, r: 0, p: 1 } }), "STOWAGE_INVALID_ARGUMENT");
  await rejectsWith(sealKeyFile(keys, "pw", { scrypt: { log2N: 10.5, r: 8, p: 1 } }), "STOWAGE_INVALID_ARGUMENT");
});

test("master keys from hex, base64, base64url and the environment", () => {
  const h = hex(MASTER);
  assert.equal(hex(parseMasterKey(h)), h);
  assert.equal(hex(parseMasterKey(` ${h.toUpperCase()}\n`)), h);
  assert.equal(hex(parseMasterKey(Buffer.from(MASTER).toString("base64"))), h);
  assert.equal(hex(parseMasterKey(Buffer.from(MASTER).toString("base64").replace(/=$/, ""))), h);
  const url = Buffer.from(Uint8Array.from({ length: 32 }, () => 0xfb)).toString("base64url");
  assert.ok(/[-_]/.test(url));
  assert.equal(hex(parseMasterKey(url)), "fb".repeat(32));
  for (const bad of ["", "00", h.slice(2), h + "00", "zz" + h.slice(2), Buffer.alloc(31).toString("base64"), "!".repeat(43)]) {
    throwsWith(() => parseMasterKey(bad), "STOWAGE_KEY_FORMAT");
  }
  throwsWith(() => keysFromMasterKey(new Uint8Array(31)), "STOWAGE_KEY_FORMAT");

  const keys = keysFromMasterKey(MASTER);
  assert.equal(formatMasterKey(keys), h);
  assert.equal(keysFromEnvironment({}), undefined);
  assert.equal(keysFromEnvironment({ [MASTER_KEY_ENV]: "" }), undefined);
  assert.equal(keysFromEnvironment({ [MASTER_KEY_ENV]: h })?.keyIdHex, keys.keyIdHex);
  const secretish = "not-a-key-0123456789";
  assert.throws(
    () => keysFromEnvironment({ [MASTER_KEY_ENV]: secretish }),
    (err: unknown) =>
      isStowageError(err, "STOWAGE_KEY_FORMAT") && err.message.includes(MASTER_KEY_ENV) && !err.message.includes(secretish),
  );
});
