/**
 * Repository key management: one random 32-byte master key, purpose-bound subkeys derived from it
 * with HKDF-SHA256, and a key file that seals the master key under a passphrase (scrypt + AES-256-GCM).
 *
 * **Subkeys.** `subkey(purpose)` = `HKDF-SHA256(ikm = master key, salt = "" (empty),
 * info = "stowage/keys/v1/" + purpose, length = 32)` (RFC 5869, node:crypto `hkdfSync`). Purposes
 * are a closed list ({@link KEY_PURPOSES}) so a typo cannot silently derive an unrelated key; adding
 * a purpose never changes the keys of the existing ones. The *key id* is the first 16 bytes of the
 * same derivation with purpose `"key-id"`: a public fingerprint of the master key (it reveals
 * nothing about the key, HKDF outputs being independent), stored in every key file sealing that
 * master key and usable to check that a key belongs to a repository.
 *
 * **Key file, format version 1** (168 bytes; integers little-endian, as everywhere in Stowage):
 *
 * | offset | bytes | field |
 * |---|---|---|
 * | 0   | 8  | magic `"STWKEYFL"` |
 * | 8   | 4  | fixed32 format version (`1`) |
 * | 12  | 4  | fixed32 KDF id (*persisted*): `1` = scrypt |
 * | 16  | 4  | fixed32 scrypt log2(N) |
 * | 20  | 4  | fixed32 scrypt r |
 * | 24  | 4  | fixed32 scrypt p |
 * | 28  | 32 | scrypt salt (random) |
 * | 60  | 16 | key id of the sealed master key |
 * | 76  | 12 | AES-GCM nonce (random) |
 * | 88  | 32 | AES-256-GCM ciphertext of the 32-byte master key |
 * | 120 | 16 | AES-GCM tag |
 * | 136 | 32 | SHA-256 of bytes 0–135 |
 *
 * The wrapping key is `scrypt(passphrase, salt, 32, {N, r, p})`; the passphrase is a string
 * (Unicode NFC-normalized, then UTF-8) or raw bytes. The GCM associated data is bytes 0–87 (the
 * whole header, so KDF parameters and key id cannot be altered undetected). The trailing SHA-256
 * is not a secret check; it tells a damaged file (`STOWAGE_KEY_FORMAT`) from a wrong passphrase
 * (`STOWAGE_BAD_PASSPHRASE`): an intact file whose tag fails to verify means the passphrase is
 * wrong. *Invariant for every future version:* the magic comes first and the file ends with the
 * SHA-256 of everything before it, so the checksum is verified before the version is trusted (a
 * flipped version byte reads as damage, not as "written by a newer Stowage").
 *
 * Readers accept scrypt parameters with 1 <= log2(N) <= 24, 1 <= r <= 32, 1 <= p <= 16 and a
 * memory cost 128·N·r of at most 1 GiB; anything else is `STOWAGE_KEY_FORMAT`.
 * Default parameters: N = 2^16, r = 8, p = 1 (64 MiB, measured 0.3–0.9 s on this project's 2-core
 * build machine under load; 2^17 took 1.2–1.5 s).
 *
 * **Master key from the environment:** `STOWAGE_MASTER_KEY` holds the 32 bytes as 64 hex digits or
 * as base64 / base64url (43 characters, optionally one `=`); see {@link keysFromEnvironment}.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { StowageError } from "../errors.js";

export const MASTER_KEY_BYTES = 32;
export const SUBKEY_BYTES = 32;
export const KEY_ID_BYTES = 16;

/** What a subkey is for. Append new purposes; never rename one (that would change its key). */
export const KEY_PURPOSES = [
  "chunk-id",
  "chunker-gear",
  "data-encryption",
  "index-encryption",
  "metadata-encryption",
] as const;
export type KeyPurpose = (typeof KEY_PURPOSES)[number];

const HKDF_INFO_PREFIX = "stowage/keys/v1/";

function hkdf(master: Uint8Array, label: string, length: number): Buffer {
  return Buffer.from(hkdfSync("sha256", master, new Uint8Array(0), HKDF_INFO_PREFIX + label, length));
}

/**
 * The keys of one repository. Holds the master key and derives subkeys lazily (cached). Subkeys
 * and the master key are handed out as copies; `destroy()` zeroes what this object holds.
 */
export class RepositoryKeys {
  readonly #master: Buffer;
  readonly #subkeys = new Map<KeyPurpose, Buffer>();
  #destroyed = false;
  /** Public fingerprint of the master key (16 bytes). */
  readonly keyId: Uint8Array;

  private constructor(master: Buffer) {
    this.#master = master;
    this.keyId = new Uint8Array(hkdf(master, "key-id", KEY_ID_BYTES));
  }

  /** Takes a copy of `masterKey` (32 bytes). Prefer {@link keysFromMasterKey}. */
  static fromMasterKey(masterKey: Uint8Array): RepositoryKeys {
    if (!(masterKey instanceof Uint8Array) || masterKey.length !== MASTER_KEY_BYTES) {
      throw new StowageError(
        "STOWAGE_KEY_FORMAT",
        `a master key must be ${MASTER_KEY_BYTES} bytes, got ${masterKey instanceof Uint8Array ? `${masterKey.length} bytes` : typeof masterKey}`,
      );
    }
    return new RepositoryKeys(Buffer.from(masterKey));
  }

  /** A fresh repository key from the operating system's CSPRNG. */
  static generate(): RepositoryKeys {
    return new RepositoryKeys(randomBytes(MASTER_KEY_BYTES));
  }

  get keyIdHex(): string {
    return Buffer.from(this.keyId).toString("hex");
  }

  /** The 32-byte subkey for `purpose` (a copy). */
  subkey(purpose: KeyPurpose): Uint8Array {
    return new Uint8Array(this.#subkey(purpose));
  }

  #subkey(purpose: KeyPurpose): Buffer {
    this.#checkAlive();
    let key = this.#subkeys.get(purpose);
    if (key === undefined) {
      if (!(KEY_PURPOSES as readonly string[]).includes(purpose)) {
        throw new StowageError("STOWAGE_INVALID_ARGUMENT", `unknown key purpose ${JSON.stringify(purpose)}`);
      }
      key = hkdf(this.#master, purpose, SUBKEY_BYTES);
      this.#subkeys.set(purpose, key);
    }
    return key;
  }

  /** A copy of the master key, e.g. to seal it in another key file or to export it. Handle with care. */
  exportMasterKey(): Uint8Array {
    this.#checkAlive();
    return new Uint8Array(this.#master);
  }

  /** Zeroes the master key and the cached subkeys; the object is unusable afterwards. */
  destroy(): void {
    this.#master.fill(0);
    for (const k of this.#subkeys.values()) k.fill(0);
    this.#subkeys.clear();
    this.#destroyed = true;
  }

  #checkAlive(): void {
    if (this.#destroyed) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "these repository keys were destroyed");
  }
}

/** Keys from a master key supplied directly (32 bytes; copied). */
export function keysFromMasterKey(masterKey: Uint8Array): RepositoryKeys {
  return RepositoryKeys.fromMasterKey(masterKey);
}

/** Parses a master key written as 64 hex digits, or base64 / base64url (43 characters + optional `=`). */
export function parseMasterKey(text: string): Uint8Array {
  const s = text.trim();
  let bytes: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(s)) bytes = Buffer.from(s, "hex");
  else if (/^[A-Za-z0-9+/]{43}=?$/.test(s)) bytes = Buffer.from(s, "base64");
  else if (/^[A-Za-z0-9_-]{43}=?$/.test(s)) bytes = Buffer.from(s, "base64url");
  if (bytes === undefined || bytes.length !== MASTER_KEY_BYTES) {
    throw new StowageError(
      "STOWAGE_KEY_FORMAT",
      `a master key must be ${MASTER_KEY_BYTES} bytes written as 64 hex digits or base64 (${s.length} characters given)`,
    );
  }
  return new Uint8Array(bytes);
}

/** The master key as 64 lowercase hex digits (the form {@link parseMasterKey} reads back). */
export function formatMasterKey(keys: RepositoryKeys): string {
  const master = keys.exportMasterKey();
  const hex = Buffer.from(master).toString("hex");
  master.fill(0);
  return hex;
}

export const MASTER_KEY_ENV = "STOWAGE_MASTER_KEY";

/**
 * Keys from `STOWAGE_MASTER_KEY` when it is set and non-empty, else `undefined`. A malformed value is
 * a `STOWAGE_KEY_FORMAT` error naming the variable (never its value).
 */
export function keysFromEnvironment(env: NodeJS.ProcessEnv = process.env): RepositoryKeys | undefined {
  const value = env[MASTER_KEY_ENV];
  if (value === undefined || value.trim() === "") return undefined;
  try {
    return keysFromMasterKey(parseMasterKey(value));
  } catch (err) {
    throw new StowageError("STOWAGE_KEY_FORMAT", `${MASTER_KEY_ENV} is malformed: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Key file
// ---------------------------------------------------------------------------------------------

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  log2N: number;
  /** Block size. */
  r: number;
  /** Parallelism. */
  p: number;
}

export const DEFAULT_SCRYPT: Readonly<ScryptParams> = Object.freeze({ log2N: 16, r: 8, p: 1 });

export const KEY_FILE_MAGIC = "STWKEYFL";
export const KEY_FILE_VERSION = 1;
export const KEY_FILE_BYTES = 168;
/** KDF ids (*persisted*). */
export const KDF_SCRYPT = 1;

const OFF_VERSION = 8;
const OFF_KDF = 12;
const OFF_LOG2N = 16;
const OFF_R = 20;
const OFF_P = 24;
const OFF_SALT = 28;
const OFF_KEY_ID = 60;
const OFF_NONCE = 76;
const OFF_CIPHERTEXT = 88;
const OFF_TAG = 120;
const OFF_CHECKSUM = 136;
const SALT_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MAX_SCRYPT_MEMORY = 1 << 30;

function scryptParamsProblem(params: ScryptParams): string | undefined {
  const { log2N, r, p } = params;
  if (!Number.isInteger(log2N) || log2N < 1 || log2N > 24) return `log2(N) ${log2N} outside [1, 24]`;
  if (!Number.isInteger(r) || r < 1 || r > 32) return `r ${r} outside [1, 32]`;
  if (!Number.isInteger(p) || p < 1 || p > 16) return `p ${p} outside [1, 16]`;
  if (128 * 2 ** log2N * r > MAX_SCRYPT_MEMORY) return `memory cost 128·N·r above 1 GiB`;
  return undefined;
}

function deriveWrappingKey(passphrase: string | Uint8Array, salt: Uint8Array, params: ScryptParams): Promise<Buffer> {
  const pass = typeof passphrase === "string" ? Buffer.from(passphrase.normalize("NFC"), "utf8") : passphrase;
  const N = 2 ** params.log2N;
  const maxmem = 128 * N * params.r + 128 * params.r * params.p + (16 << 20);
  return new Promise((resolve, reject) => {
    scrypt(pass, salt, 32, { N, r: params.r, p: params.p, maxmem }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function checkPassphrase(passphrase: string | Uint8Array): void {
  if (typeof passphrase !== "string" && !(passphrase instanceof Uint8Array)) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", "a passphrase must be a string or a Uint8Array");
  }
  if (passphrase.length === 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "the passphrase is empty");
}

export interface KeyFileOptions {
  /** scrypt cost; defaults to {@link DEFAULT_SCRYPT}. Tests pass low values. */
  scrypt?: ScryptParams;
}

/** Seals the master key of `keys` under `passphrase`: the bytes of a key file (format version 1). */
export async function sealKeyFile(
  keys: RepositoryKeys,
  passphrase: string | Uint8Array,
  options: KeyFileOptions = {},
): Promise<Uint8Array> {
  checkPassphrase(passphrase);
  const params = options.scrypt ?? DEFAULT_SCRYPT;
  const problem = scryptParamsProblem(params);
  if (problem !== undefined) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `scrypt parameters: ${problem}`);

  const file = Buffer.alloc(KEY_FILE_BYTES);
  file.write(KEY_FILE_MAGIC, 0, "latin1");
  file.writeUInt32LE(KEY_FILE_VERSION, OFF_VERSION);
  file.writeUInt32LE(KDF_SCRYPT, OFF_KDF);
  file.writeUInt32LE(params.log2N, OFF_LOG2N);
  file.writeUInt32LE(params.r, OFF_R);
  file.writeUInt32LE(params.p, OFF_P);
  randomBytes(SALT_BYTES).copy(file, OFF_SALT);
  file.set(keys.keyId, OFF_KEY_ID);
  randomBytes(NONCE_BYTES).copy(file, OFF_NONCE);

  const wrappingKey = await deriveWrappingKey(passphrase, file.subarray(OFF_SALT, OFF_SALT + SALT_BYTES), params);
  const master = keys.exportMasterKey();
  try {
    const cipher = createCipheriv("aes-256-gcm", wrappingKey, file.subarray(OFF_NONCE, OFF_NONCE + NONCE_BYTES));
    cipher.setAAD(file.subarray(0, OFF_CIPHERTEXT));
    const ct = Buffer.concat([cipher.update(master), cipher.final()]);
    ct.copy(file, OFF_CIPHERTEXT);
    cipher.getAuthTag().copy(file, OFF_TAG);
  } finally {
    master.fill(0);
    wrappingKey.fill(0);
  }
  createHash("sha256").update(file.subarray(0, OFF_CHECKSUM)).digest().copy(file, OFF_CHECKSUM);
  return new Uint8Array(file.buffer, file.byteOffset, file.length);
}

/** A new repository: a random master key and its key file sealed under `passphrase`. */
export async function createKeyFile(
  passphrase: string | Uint8Array,
  options: KeyFileOptions = {},
): Promise<{ keys: RepositoryKeys; file: Uint8Array }> {
  const keys = RepositoryKeys.generate();
  const file = await sealKeyFile(keys, passphrase, options);
  return { keys, file };
}

/** What a key file says about itself, read without the passphrase (after its checksum is verified). */
export interface KeyFileInfo {
  version: number;
  kdf: "scrypt";
  scrypt: ScryptParams;
  /** Key id of the sealed master key, hex. */
  keyId: string;
}

function damaged(what: string): StowageError {
  return new StowageError("STOWAGE_KEY_FORMAT", `key file is damaged or not a Stowage key file: ${what}`);
}

/** Verifies magic, checksum, version and parameters; throws the right StowageError otherwise. */
export function inspectKeyFile(bytes: Uint8Array): KeyFileInfo {
  if (!(bytes instanceof Uint8Array)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "a key file must be a Uint8Array");
  const file = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (file.length < 8 || file.toString("latin1", 0, 8) !== KEY_FILE_MAGIC) throw damaged("bad magic");
  if (file.length < 8 + 4 + 32) throw damaged(`truncated (${file.length} bytes)`);
  const body = file.subarray(0, file.length - 32);
  const sum = createHash("sha256").update(body).digest();
  if (!timingSafeEqual(sum, file.subarray(file.length - 32))) throw damaged("checksum mismatch");
  const version = file.readUInt32LE(OFF_VERSION);
  if (version > KEY_FILE_VERSION) {
    throw new StowageError(
      "STOWAGE_FORMAT_VERSION",
      `key file format version ${version} is newer than this build understands (${KEY_FILE_VERSION}); upgrade Stowage`,
    );
  }
  if (version !== KEY_FILE_VERSION) throw damaged(`format version ${version}`);
  if (file.length !== KEY_FILE_BYTES) throw damaged(`${file.length} bytes, expected ${KEY_FILE_BYTES}`);
  const kdf = file.readUInt32LE(OFF_KDF);
  if (kdf !== KDF_SCRYPT) {
    throw new StowageError("STOWAGE_FORMAT_VERSION", `key file uses KDF id ${kdf}, which this build does not know`);
  }
  const params: ScryptParams = {
    log2N: file.readUInt32LE(OFF_LOG2N),
    r: file.readUInt32LE(OFF_R),
    p: file.readUInt32LE(OFF_P),
  };
  const problem = scryptParamsProblem(params);
  if (problem !== undefined) throw damaged(`scrypt parameters: ${problem}`);
  return {
    version,
    kdf: "scrypt",
    scrypt: params,
    keyId: file.toString("hex", OFF_KEY_ID, OFF_KEY_ID + KEY_ID_BYTES),
  };
}

/**
 * Opens a key file. Errors: `STOWAGE_KEY_FORMAT` (not a key file, truncated, damaged),
 * `STOWAGE_FORMAT_VERSION` (written by a newer Stowage), `STOWAGE_BAD_PASSPHRASE` (intact file,
 * wrong passphrase).
 */
export async function openKeyFile(bytes: Uint8Array, passphrase: string | Uint8Array): Promise<RepositoryKeys> {
  checkPassphrase(passphrase);
  const info = inspectKeyFile(bytes);
  const file = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const wrappingKey = await deriveWrappingKey(passphrase, file.subarray(OFF_SALT, OFF_SALT + SALT_BYTES), info.scrypt);
  let master: Buffer;
  try {
    const decipher = createDecipheriv("aes-256-gcm", wrappingKey, file.subarray(OFF_NONCE, OFF_NONCE + NONCE_BYTES));
    decipher.setAAD(file.subarray(0, OFF_CIPHERTEXT));
    decipher.setAuthTag(file.subarray(OFF_TAG, OFF_TAG + TAG_BYTES));
    const head = decipher.update(file.subarray(OFF_CIPHERTEXT, OFF_TAG));
    try {
      master = Buffer.concat([head, decipher.final()]);
    } finally {
      head.fill(0);
    }
  } catch {
    throw new StowageError("STOWAGE_BAD_PASSPHRASE", "wrong passphrase: it does not open this key file");
  } finally {
    wrappingKey.fill(0);
  }
  try {
    const keys = RepositoryKeys.fromMasterKey(master);
    if (keys.keyIdHex !== info.keyId) {
      keys.destroy();
      throw damaged("the sealed master key does not match the key id in the header");
    }
    return keys;
  } finally {
    master.fill(0);
  }
}
