/**
 * WebDAV write locks (RFC 4918 §6, §7), in memory: exclusive and shared, depth 0 or infinity, with
 * timeouts, keyed by the file-system path of their root; and the `If` header (§10.4).
 *
 * Locks are advisory to the storage: they bind WebDAV clients only (S3 and FUSE writers do not see
 * them) and vanish with the process. An expired lock is dropped the next time any lock is looked at.
 */
import { randomUUID } from "node:crypto";

export type LockScope = "exclusive" | "shared";
export type LockDepth = "0" | "infinity";

export interface DavLock {
  /** `urn:uuid:...` */
  token: string;
  /** File-system path of the locked resource ("/bucket/key"). */
  root: string;
  /** True when the root was a collection when locked (for its href). */
  rootIsDir: boolean;
  depth: LockDepth;
  scope: LockScope;
  /** The content of the client's DAV:owner element, as XML ("" when none). */
  ownerXml: string;
  /** The authenticated user that took the lock (undefined without authentication). */
  principal: string | undefined;
  /** Seconds asked for (after capping). */
  timeoutSeconds: number;
  /** ms since the epoch. */
  expires: number;
}

export const DEFAULT_LOCK_SECONDS = 600;
export const MAX_LOCK_SECONDS = 3600;

/** True when `inner` is strictly below `outer` (paths as "/a/b"). */
export function isBelow(outer: string, inner: string): boolean {
  if (outer === "/") return inner !== "/";
  return inner.startsWith(outer + "/");
}

export function parentPath(path: string): string {
  if (path === "/") return "/";
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/**
 * The Timeout header: a comma-separated list of `Second-N` / `Infinite`; the first usable one,
 * capped at {@link MAX_LOCK_SECONDS} (Infinite is the cap). Default when absent or unusable.
 */
export function parseTimeout(header: string | undefined): number {
  if (header === undefined) return DEFAULT_LOCK_SECONDS;
  for (const part of header.split(",")) {
    const t = part.trim();
    if (/^infinite$/i.test(t)) return MAX_LOCK_SECONDS;
    const m = /^second-(\d{1,12})$/i.exec(t);
    if (m !== null) return Math.max(1, Math.min(MAX_LOCK_SECONDS, Number(m[1])));
  }
  return DEFAULT_LOCK_SECONDS;
}

export class LockManager {
  readonly #locks = new Map<string, DavLock>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  #purge(): void {
    const now = this.#now();
    for (const [t, l] of this.#locks) if (l.expires <= now) this.#locks.delete(t);
  }

  get size(): number {
    this.#purge();
    return this.#locks.size;
  }

  get(token: string): DavLock | undefined {
    this.#purge();
    return this.#locks.get(token);
  }

  /** True when the lock's scope includes `path` (its root, or below it for depth infinity). */
  static covers(l: DavLock, path: string): boolean {
    return l.root === path || (l.depth === "infinity" && isBelow(l.root, path));
  }

  /** Locks whose scope includes `path`. */
  covering(path: string): DavLock[] {
    this.#purge();
    return [...this.#locks.values()].filter((l) => LockManager.covers(l, path));
  }

  /** Locks rooted at `path` or below it. */
  within(path: string): DavLock[] {
    this.#purge();
    return [...this.#locks.values()].filter((l) => l.root === path || isBelow(path, l.root));
  }

  /** Existing locks a new lock on `path` with `depth` and `scope` would conflict with. */
  conflicts(path: string, depth: LockDepth, scope: LockScope): DavLock[] {
    this.#purge();
    return [...this.#locks.values()].filter((l) => {
      const overlap = LockManager.covers(l, path) || (depth === "infinity" && isBelow(path, l.root));
      return overlap && (scope === "exclusive" || l.scope === "exclusive");
    });
  }

  create(fields: Omit<DavLock, "token" | "expires">): DavLock {
    const lock: DavLock = { ...fields, token: `urn:uuid:${randomUUID()}`, expires: this.#now() + fields.timeoutSeconds * 1000 };
    this.#locks.set(lock.token, lock);
    return lock;
  }

  refresh(lock: DavLock, timeoutSeconds: number): void {
    lock.timeoutSeconds = timeoutSeconds;
    lock.expires = this.#now() + timeoutSeconds * 1000;
  }

  /** Seconds left (at least 0). */
  remaining(lock: DavLock): number {
    return Math.max(0, Math.ceil((lock.expires - this.#now()) / 1000));
  }

  remove(token: string): boolean {
    return this.#locks.delete(token);
  }

  /** Drops every lock rooted at `path` or below (the resources are gone or moved away). */
  removeWithin(path: string): void {
    for (const l of this.within(path)) this.#locks.delete(l.token);
  }

  clear(): void {
    this.#locks.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// The If header (RFC 4918 §10.4)

export interface IfCondition {
  not: boolean;
  kind: "token" | "etag";
  /** The state token (without `<>`) or the entity tag as written (with quotes, maybe `W/`). */
  value: string;
}

export interface IfList {
  /** The Resource-Tag (without `<>`) of a tagged list; undefined for an untagged one. */
  resource: string | undefined;
  conditions: IfCondition[];
}

export class IfHeaderError extends Error {}

/**
 * Parses `If = 1*No-tag-list | 1*Tagged-list` into its lists (each with the resource it applies
 * to). Mixing tagged and untagged lists, which the grammar does not allow, is accepted: an
 * untagged list applies to the request URI wherever it appears.
 */
export function parseIfHeader(value: string): IfList[] {
  const s = value;
  const n = s.length;
  let pos = 0;
  const lists: IfList[] = [];
  let tag: string | undefined;
  let tagHasList = true;
  const skip = (): void => {
    while (pos < n && (s[pos] === " " || s[pos] === "\t" || s[pos] === "\r" || s[pos] === "\n")) pos++;
  };
  const until = (close: string, what: string): string => {
    const end = s.indexOf(close, pos + 1);
    if (end < 0) throw new IfHeaderError(`unterminated ${what} in If header`);
    const v = s.slice(pos + 1, end);
    pos = end + 1;
    return v;
  };
  for (;;) {
    skip();
    if (pos >= n) break;
    const c = s[pos];
    if (c === "<") {
      if (!tagHasList) throw new IfHeaderError("a resource tag without a list in If header");
      tag = until(">", "resource tag");
      if (tag === "") throw new IfHeaderError("empty resource tag in If header");
      tagHasList = false;
      continue;
    }
    if (c !== "(") throw new IfHeaderError(`unexpected ${JSON.stringify(c)} in If header at ${pos}`);
    pos++;
    const conditions: IfCondition[] = [];
    for (;;) {
      skip();
      if (pos >= n) throw new IfHeaderError("unterminated list in If header");
      if (s[pos] === ")") {
        pos++;
        break;
      }
      let not = false;
      if (/^not(?=[\s<[])/i.test(s.slice(pos, pos + 4))) {
        not = true;
        pos += 3;
        skip();
      }
      const d = s[pos];
      if (d === "<") conditions.push({ not, kind: "token", value: until(">", "state token") });
      else if (d === "[") conditions.push({ not, kind: "etag", value: until("]", "entity tag") });
      else throw new IfHeaderError(`unexpected ${JSON.stringify(d)} in an If header list at ${pos}`);
    }
    if (conditions.length === 0) throw new IfHeaderError("empty list in If header");
    lists.push({ resource: tag, conditions });
    tagHasList = true;
  }
  if (!tagHasList) throw new IfHeaderError("a resource tag without a list in If header");
  if (lists.length === 0) throw new IfHeaderError("empty If header");
  return lists;
}

/** Compares two entity tags (weak comparison: `W/` ignored). */
export function etagsMatch(a: string, b: string): boolean {
  const norm = (e: string): string => e.trim().replace(/^W\//, "");
  return norm(a) === norm(b);
}
