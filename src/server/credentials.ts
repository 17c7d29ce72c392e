/**
 * S3 access keys. The root key comes from STOWAGE_ROOT_ACCESS_KEY / STOWAGE_ROOT_SECRET_KEY when
 * both are set; otherwise from DATA/credentials.json, where a root key is generated at first start.
 * More keys are added with `stowage keys add` (all keys have full access: there are no policies).
 */
import { open as openFile, readFile, rename } from "node:fs/promises";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { StowageError } from "../errors.js";
import type { Credentials } from "./s3/sigv4.js";

export const CREDENTIALS_FILE = "credentials.json";
export const ROOT_ACCESS_ENV = "STOWAGE_ROOT_ACCESS_KEY";
export const ROOT_SECRET_ENV = "STOWAGE_ROOT_SECRET_KEY";

export interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
  created: string;
  root?: boolean;
}

interface CredentialsFile {
  version: 1;
  keys: AccessKey[];
}

const ACCESS_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

export function generateAccessKey(root = false): AccessKey {
  const bytes = randomBytes(16);
  let id = "STW";
  for (let i = 0; i < 17; i++) id += ACCESS_ALPHABET[bytes[i % 16]! % 32];
  return { accessKeyId: id, secretAccessKey: randomBytes(30).toString("base64").replace(/[+/]/g, "A"), created: new Date().toISOString(), ...(root ? { root: true } : {}) };
}

async function readKeys(dir: string): Promise<AccessKey[] | undefined> {
  let text: string;
  try {
    text = await readFile(join(resolve(dir), CREDENTIALS_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as CredentialsFile;
    if (parsed.version !== 1 || !Array.isArray(parsed.keys)) throw new Error("bad shape");
    return parsed.keys.filter((k) => typeof k.accessKeyId === "string" && typeof k.secretAccessKey === "string");
  } catch {
    throw new StowageError("STOWAGE_KEY_FORMAT", `${join(resolve(dir), CREDENTIALS_FILE)} is damaged`);
  }
}

async function writeKeys(dir: string, keys: AccessKey[]): Promise<void> {
  const path = join(resolve(dir), CREDENTIALS_FILE);
  const tmp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
  const fh = await openFile(tmp, "w", 0o600);
  try {
    await fh.writeFile(JSON.stringify({ version: 1, keys } satisfies CredentialsFile, null, 2) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export class KeyRing implements Credentials {
  readonly #keys = new Map<string, string>();
  constructor(keys: readonly AccessKey[]) {
    for (const k of keys) this.#keys.set(k.accessKeyId, k.secretAccessKey);
  }
  secretFor(accessKeyId: string): string | undefined {
    return this.#keys.get(accessKeyId);
  }
}

export interface LoadedCredentials {
  ring: KeyRing;
  root: AccessKey;
  /** True when the root key was generated just now. */
  generated: boolean;
  /** Where the root key comes from. */
  source: "environment" | "file";
}

export async function loadCredentials(dir: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedCredentials> {
  const fileKeys = (await readKeys(dir)) ?? [];
  const envId = env[ROOT_ACCESS_ENV];
  const envSecret = env[ROOT_SECRET_ENV];
  if ((envId === undefined) !== (envSecret === undefined)) {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `set both ${ROOT_ACCESS_ENV} and ${ROOT_SECRET_ENV}, or neither`);
  }
  if (envId !== undefined && envSecret !== undefined) {
    if (envId.length < 3 || envSecret.length < 8) throw new StowageError("STOWAGE_INVALID_ARGUMENT", "root access key must be at least 3 characters and the secret at least 8");
    const root: AccessKey = { accessKeyId: envId, secretAccessKey: envSecret, created: "", root: true };
    return { ring: new KeyRing([root, ...fileKeys.filter((k) => k.root !== true)]), root, generated: false, source: "environment" };
  }
  let root = fileKeys.find((k) => k.root === true);
  let generated = false;
  if (root === undefined) {
    root = generateAccessKey(true);
    fileKeys.unshift(root);
    await writeKeys(dir, fileKeys);
    generated = true;
  }
  return { ring: new KeyRing(fileKeys), root, generated, source: "file" };
}

/** Adds a new (non-root) access key to DATA/credentials.json and returns it. */
export async function addAccessKey(dir: string): Promise<AccessKey> {
  const keys = (await readKeys(dir)) ?? [];
  const key = generateAccessKey(false);
  keys.push(key);
  await writeKeys(dir, keys);
  return key;
}

export async function listAccessKeys(dir: string): Promise<AccessKey[]> {
  return (await readKeys(dir)) ?? [];
}

export async function removeAccessKey(dir: string, accessKeyId: string): Promise<boolean> {
  const keys = (await readKeys(dir)) ?? [];
  const left = keys.filter((k) => k.accessKeyId !== accessKeyId || k.root === true);
  if (left.length === keys.length) return false;
  await writeKeys(dir, left);
  return true;
}
