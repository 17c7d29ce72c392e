/**
 * A fault-injecting backend: wraps another and makes chosen calls fail, the way a flaky network,
 * a full disk or a bad drive would. For tests: every failure must end in a clear error or a
 * correct retry, never in wrong data.
 *
 *   const b = new FaultyBackend(new MemoryBackend(), { seed: 42 });
 *   b.inject({ op: "put", times: 2 });                          // the next two puts fail
 *   b.inject({ op: "get", probability: 0.1 });                  // 10 % of gets fail (seeded)
 *   b.inject({ op: "get", key: /^pack\//, kind: "corrupt" });   // pack reads come back bit-flipped
 *   const f = b.inject({ op: "put", kind: "lost-ack" });        // puts land but report failure
 *   b.inject({ op: "put", kind: "throttle", times: 3 });       // 503 SlowDown, as S3 throttles
 *   f.remove();
 *   b.outage({ ms: 2000 });                                     // every call fails for 2 s
 *   b.outage({ ms: 500, op: "put", kind: "throttle" });         // puts are throttled for 0.5 s
 *   b.latencyMs = 5;                                           // every call waits 5 ms first
 *   b.opLatencyMs = { get: 30 };                               // gets wait 30 ms instead
 *
 * Kinds of fault (`FaultRule.kind`):
 * - `io` (default): the call fails with `STOWAGE_BACKEND_IO` without reaching the inner backend.
 *   A put that fails this way stores nothing: puts are atomic, so there is no torn blob to model.
 * - `no-space`: like `io`, but `STOWAGE_NO_SPACE`, as a full disk reports it.
 * - `lost-ack` (put and delete only): the inner backend performs the call, then the caller gets
 *   `STOWAGE_BACKEND_IO` anyway, as when a reply is lost after the server committed. Callers must
 *   not assume a failed put stored nothing, nor that a failed delete removed nothing.
 * - `corrupt` (get only): the call succeeds but one bit of the returned bytes is flipped (a copy;
 *   the stored blob is untouched). An empty result has no bit to flip and is returned as is.
 * - `throttle`: like `io`, but the error is the one a throttling service produces (a
 *   {@link BackendIoError} with `throttled: true`, recognised by {@link isThrottle}), as the S3
 *   backend reports HTTP 503 SlowDown or 429.
 *
 * Outages (`outage({ ms, op?, key?, kind? })`) are rules that fire on every matching call made
 * during the next `ms` milliseconds of the clock (`options.now`, default `performance.now`), then
 * are spent and disarm themselves; kind `io` (default), `throttle` or `no-space`. They take part
 * in the rule order like any rule (their position is where `outage` was called).
 *
 * Every injected error is a StowageError whose message starts with "injected fault".
 *
 * Which rule fires is decided synchronously when the call is made, from the rules in injection
 * order: the first rule whose `op` and `key` match, whose `after` calls have passed, that is not
 * spent (`times`) and whose probability draw succeeds, fires; later rules do not see that call.
 * Draws come from a PRNG seeded by `options.seed`, and are taken only for rules with
 * `probability < 1` and for `corrupt` faults (the bit to flip). So the same seed, rules and
 * sequence of calls always inject the same faults. A list's fault is decided when `list` is
 * called and raised when iteration starts. Invalid arguments (keys, ranges) are rejected with
 * `STOWAGE_INVALID_ARGUMENT` before any rule is consulted, and `close` is never faulted.
 */
import { StowageError } from "../errors.js";
import { checkBlobKey, checkRange, type BlobBackend, type BlobInfo, type ByteRange } from "./backend.js";
import { BackendIoError } from "./retry.js";
import { mulberry32 } from "../util/random.js";

export type BackendOp = "put" | "get" | "head" | "list" | "delete";

export const BACKEND_OPS: readonly BackendOp[] = ["put", "get", "head", "list", "delete"];

export type FaultKind = "io" | "no-space" | "lost-ack" | "corrupt" | "throttle";

const FAULT_KINDS: readonly FaultKind[] = ["io", "no-space", "lost-ack", "corrupt", "throttle"];

/** An outage: every matching call fails for a while. */
export interface OutageRule {
  /** How long, in ms of the backend's clock, from the call to `outage`. */
  ms: number;
  /** The operations affected. Default all. */
  op?: BackendOp | readonly BackendOp[];
  /** Only calls whose key (for `list`, the prefix) matches. Default every call. */
  key?: RegExp | ((key: string) => boolean);
  /** How the calls fail. Default `io`. */
  kind?: "io" | "throttle" | "no-space";
}

/** An outage once started: a {@link Fault} with its end. */
export interface Outage extends Fault {
  /** The clock reading (`options.now`) at which the outage ends. */
  readonly endsAt: number;
}

export interface FaultRule {
  /** The operation(s) the rule applies to. Default: all of them (only for `io`, `no-space`, `throttle`). */
  op?: BackendOp | readonly BackendOp[];
  /** What happens when the rule fires. Default `io`. */
  kind?: FaultKind;
  /** Only calls whose key (for `list`, the prefix) matches. Default: every call. */
  key?: RegExp | ((key: string) => boolean);
  /** Matching calls let through before the rule can fire. Default 0. */
  after?: number;
  /** The rule fires at most this many times, then is spent. Default: no limit. */
  times?: number;
  /** Each eligible call fires with this probability (seeded PRNG). Default 1. */
  probability?: number;
}

/** A rule once injected: how often it matched and fired; `remove()` disarms it. */
export interface Fault {
  readonly rule: Readonly<FaultRule>;
  /** Matching calls seen by this rule (whether it fired or not). */
  readonly seen: number;
  /** Calls this rule faulted. */
  readonly fired: number;
  remove(): void;
}

export interface FaultyBackendOptions {
  /** Seed of the PRNG behind `probability` and `corrupt`. Default 1. */
  seed?: number;
  /** Delay added before every call (see {@link FaultyBackend.latencyMs}). Default 0. */
  latencyMs?: number;
  /** Per-operation delays overriding `latencyMs` (see {@link FaultyBackend.opLatencyMs}). */
  opLatencyMs?: Partial<Record<BackendOp, number>>;
  /** The clock outages are timed by, in ms. Default `performance.now`. */
  now?: () => number;
}

class ActiveFault implements Outage {
  seen = 0;
  fired = 0;
  readonly #ops: ReadonlySet<BackendOp>;

  constructor(
    readonly rule: Readonly<FaultRule>,
    private readonly owner: Set<ActiveFault>,
    /** For outages: when the rule stops matching (and removes itself). */
    readonly endsAt = Number.POSITIVE_INFINITY,
  ) {
    this.#ops = new Set(rule.op === undefined ? BACKEND_OPS : typeof rule.op === "string" ? [rule.op] : rule.op);
  }

  matches(op: BackendOp, key: string, now: () => number): boolean {
    if (!this.#ops.has(op)) return false;
    if (this.endsAt !== Number.POSITIVE_INFINITY && now() >= this.endsAt) {
      this.remove();
      return false;
    }
    const k = this.rule.key;
    if (k === undefined) return true;
    if (k instanceof RegExp) {
      k.lastIndex = 0; // a /g or /y pattern would otherwise remember where it stopped
      return k.test(key);
    }
    return k(key);
  }

  remove(): void {
    this.owner.delete(this);
  }
}

/** The fault chosen for one call, with the PRNG draws it needs already taken. */
interface Decision {
  kind: FaultKind;
  /** corrupt: which byte (fraction of the length) and which bit. */
  at: number;
  bit: number;
}

function checkRule(rule: FaultRule): void {
  const bad = (what: string): never => {
    throw new StowageError("STOWAGE_INVALID_ARGUMENT", `invalid fault rule: ${what}`);
  };
  const ops = rule.op === undefined ? BACKEND_OPS : typeof rule.op === "string" ? [rule.op] : rule.op;
  if (ops.length === 0 || ops.some((op) => !BACKEND_OPS.includes(op))) bad(`op ${JSON.stringify(rule.op)}`);
  const kind = rule.kind ?? "io";
  if (!FAULT_KINDS.includes(kind)) bad(`kind ${JSON.stringify(kind)}`);
  if (kind === "lost-ack" && (rule.op === undefined || ops.some((op) => op !== "put" && op !== "delete"))) {
    bad("lost-ack applies to put and delete only; name them in op");
  }
  if (kind === "corrupt" && (rule.op === undefined || ops.some((op) => op !== "get"))) {
    bad("corrupt applies to get only; name it in op");
  }
  for (const field of ["after", "times"] as const) {
    const v = rule[field];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) bad(`${field} must be a non-negative integer`);
  }
  const p = rule.probability;
  if (p !== undefined && !(p >= 0 && p <= 1)) bad("probability must be in [0, 1]");
}

function injectedError(kind: FaultKind, op: BackendOp, key: string): StowageError {
  const what = `${op} ${JSON.stringify(key)}`;
  if (kind === "no-space") return new StowageError("STOWAGE_NO_SPACE", `injected fault: no space left for ${what}`);
  if (kind === "lost-ack") {
    return new StowageError("STOWAGE_BACKEND_IO", `injected fault: ${what} was performed but its acknowledgement was lost`);
  }
  if (kind === "throttle") {
    return new BackendIoError(`injected fault: ${what} throttled: SlowDown (HTTP 503)`, { throttled: true, httpStatus: 503 });
  }
  return new StowageError("STOWAGE_BACKEND_IO", `injected fault: ${what} failed`);
}

export class FaultyBackend implements BlobBackend {
  readonly location: string;
  /** Milliseconds every call (but `close`) waits before doing anything; may be changed any time. */
  latencyMs: number;
  /** Per-operation delays; an operation listed here waits this instead of `latencyMs`. */
  opLatencyMs: Partial<Record<BackendOp, number>>;
  readonly #faults = new Set<ActiveFault>();
  readonly #rand: () => number;
  readonly #now: () => number;

  constructor(
    readonly inner: BlobBackend,
    options: FaultyBackendOptions = {},
  ) {
    this.location = inner.location;
    this.latencyMs = options.latencyMs ?? 0;
    this.opLatencyMs = { ...options.opLatencyMs };
    this.#rand = mulberry32(options.seed ?? 1);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Arms a rule (see the module comment); returns its handle. */
  inject(rule: FaultRule): Fault {
    checkRule(rule);
    const fault = new ActiveFault({ ...rule }, this.#faults);
    this.#faults.add(fault);
    return fault;
  }

  /**
   * Starts an outage: every call matching `op` and `key` fails (`kind`, default `io`) until `ms`
   * milliseconds of the clock have passed; then the rule disarms itself. `remove()` ends it early.
   */
  outage(o: OutageRule): Outage {
    const kind = o.kind ?? "io";
    if (!Number.isFinite(o.ms) || o.ms < 0) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `invalid outage: ms must be a non-negative number, got ${o.ms}`);
    if (!["io", "throttle", "no-space"].includes(kind)) throw new StowageError("STOWAGE_INVALID_ARGUMENT", `invalid outage: kind ${JSON.stringify(kind)}`);
    const rule: FaultRule = { kind, ...(o.op === undefined ? {} : { op: o.op }), ...(o.key === undefined ? {} : { key: o.key }) };
    checkRule(rule);
    const fault = new ActiveFault(rule, this.#faults, this.#now() + o.ms);
    this.#faults.add(fault);
    return fault;
  }

  /** Disarms every rule. */
  clear(): void {
    this.#faults.clear();
  }

  async put(key: string, body: Uint8Array | readonly Uint8Array[]): Promise<void> {
    checkBlobKey(key);
    const fault = this.#decide("put", key);
    await this.#delay("put");
    if (fault?.kind === "lost-ack") {
      await this.inner.put(key, body);
      throw injectedError("lost-ack", "put", key);
    }
    if (fault !== undefined) throw injectedError(fault.kind, "put", key);
    return this.inner.put(key, body);
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkBlobKey(key);
    checkRange(range);
    const fault = this.#decide("get", key);
    await this.#delay("get");
    if (fault?.kind === "corrupt") {
      const data = Buffer.from(await this.inner.get(key, range)); // a copy: never damage the store
      if (data.length > 0) {
        const i = Math.min(data.length - 1, Math.floor(fault.at * data.length));
        data[i] = (data[i] as number) ^ (1 << fault.bit);
      }
      return data;
    }
    if (fault !== undefined) throw injectedError(fault.kind, "get", key);
    return this.inner.get(key, range);
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    checkBlobKey(key);
    const fault = this.#decide("head", key);
    await this.#delay("head");
    if (fault !== undefined) throw injectedError(fault.kind, "head", key);
    return this.inner.head(key);
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    // Not an async generator itself, so the fault is decided at call time, in call order.
    const fault = this.#decide("list", prefix);
    return this.#list(prefix, fault);
  }

  async delete(key: string): Promise<void> {
    checkBlobKey(key);
    const fault = this.#decide("delete", key);
    await this.#delay("delete");
    if (fault?.kind === "lost-ack") {
      await this.inner.delete(key);
      throw injectedError("lost-ack", "delete", key);
    }
    if (fault !== undefined) throw injectedError(fault.kind, "delete", key);
    return this.inner.delete(key);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  async *#list(prefix: string, fault: Decision | undefined): AsyncGenerator<BlobInfo> {
    await this.#delay("list");
    if (fault !== undefined) throw injectedError(fault.kind, "list", prefix);
    yield* this.inner.list(prefix);
  }

  #decide(op: BackendOp, key: string): Decision | undefined {
    for (const fault of this.#faults) {
      if (!fault.matches(op, key, this.#now)) continue;
      fault.seen++;
      const { after = 0, times, probability = 1 } = fault.rule;
      if (fault.seen <= after) continue;
      if (times !== undefined && fault.fired >= times) continue;
      if (probability < 1 && !(this.#rand() < probability)) continue;
      fault.fired++;
      const kind = fault.rule.kind ?? "io";
      if (kind === "corrupt") return { kind, at: this.#rand(), bit: Math.floor(this.#rand() * 8) };
      return { kind, at: 0, bit: 0 };
    }
    return undefined;
  }

  async #delay(op: BackendOp): Promise<void> {
    const ms = this.opLatencyMs[op] ?? this.latencyMs;
    if (ms > 0) await new Promise<void>((resolve) => setTimeout(resolve, ms));
  }
}
