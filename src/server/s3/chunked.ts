/**
 * Decoder for `Content-Encoding: aws-chunked` request bodies (S3's streaming uploads):
 *
 *     hex-size[;chunk-signature=<sig>]\r\n <size bytes> \r\n   ... repeated ...
 *     0[;chunk-signature=<sig>]\r\n
 *     [name:value\r\n ...  [x-amz-trailer-signature:<sig>\r\n]]     (trailer modes)
 *     \r\n
 *
 * Signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) form a chain: each signature is
 * HMAC(signingKey, "AWS4-HMAC-SHA256-PAYLOAD\n<amzDate>\n<scope>\n<previous signature>\n
 * <sha256("")>\n<sha256(chunk data)>"), seeded by the request's signature; the trailer signature
 * is HMAC(signingKey, "AWS4-HMAC-SHA256-TRAILER\n<amzDate>\n<scope>\n<previous signature>\n
 * <sha256 of the trailer lines as "name:value\n">").
 *
 * Memory is bounded: a signed chunk is held (as the received slices) until its signature is
 * verified — so a forged chunk's bytes are never yielded — and unsigned chunk data is yielded as
 * it arrives. Chunk sizes above `maxChunkSize` are refused. The generator throws (an S3Error) at
 * the first problem; the consumer must not commit anything unless the generator completes.
 */
import { createHash, createHmac } from "node:crypto";
import { S3Error, s3 } from "./errors.js";

export interface ChunkedOptions {
  /** Present for signed streaming modes: the key and chain seed from the verified request. */
  signed?: { signingKey: Buffer; seedSignature: string; amzDate: string; scope: string };
  /** Whether trailers follow the final chunk (the *-TRAILER modes). */
  trailer: boolean;
  /** x-amz-decoded-content-length: the exact number of data bytes expected. */
  decodedLength?: number;
  /** Largest accepted chunk (default 16 MiB). */
  maxChunkSize?: number;
  /** The x-amz-trailer header's names (lowercase): every one must arrive, nothing else may. */
  declaredTrailers?: string[];
}

export interface ChunkedResult {
  /** Trailer values by lowercase name (the trailer signature excluded). */
  trailers: Record<string, string>;
}

const DEFAULT_MAX_CHUNK = 16 * 1024 * 1024;
const MAX_LINE = 4096;
const MAX_TRAILERS = 64;
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SIG_RE = /^[0-9a-f]{64}$/;

function malformed(m: string): S3Error {
  return s3.invalidRequest(`The aws-chunked request body is malformed: ${m}`);
}

function truncated(): S3Error {
  return s3.incompleteBody("The request body ended before the end of the aws-chunked encoding.");
}

/** Pulls bytes from an async iterable, with line and sized reads across arbitrary splits. */
class Reader {
  private cur: Buffer = Buffer.alloc(0);
  private pos = 0;
  private ended = false;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** Ensure unread bytes are available; false at end of input. */
  async fill(): Promise<boolean> {
    while (this.pos >= this.cur.length) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done === true) {
        this.ended = true;
        return false;
      }
      const v = r.value;
      this.cur = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.pos = 0;
    }
    return true;
  }

  /**
   * A CRLF-terminated line without its CRLF, or undefined at a clean end of input (no byte read).
   * Throws on a line longer than `max`, a bare LF, or end of input inside the line.
   */
  async readLine(max: number): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let len = 0;
    for (;;) {
      if (!(await this.fill())) {
        if (len === 0) return undefined;
        throw truncated();
      }
      const nl = this.cur.indexOf(0x0a, this.pos);
      const end = nl < 0 ? this.cur.length : nl;
      const piece = this.cur.subarray(this.pos, end);
      len += piece.length;
      if (len > max + 1) throw malformed("a chunk header or trailer line is too long.");
      parts.push(piece);
      if (nl < 0) {
        this.pos = this.cur.length;
        continue;
      }
      this.pos = nl + 1;
      const line = parts.length === 1 ? parts[0]! : Buffer.concat(parts, len);
      if (line.length === 0 || line[line.length - 1] !== 0x0d) throw malformed("a line does not end with CRLF.");
      return line.subarray(0, line.length - 1);
    }
  }

  /** Up to `n` (> 0) bytes, as a slice of the input; undefined at end of input. */
  async take(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    const end = Math.min(this.cur.length, this.pos + n);
    const out = this.cur.subarray(this.pos, end);
    this.pos = end;
    return out;
  }

  /** Consume exactly CRLF. */
  async expectCrlf(): Promise<void> {
    for (const want of [0x0d, 0x0a]) {
      if (!(await this.fill())) throw truncated();
      if (this.cur[this.pos] !== want) throw malformed("chunk data is not followed by CRLF.");
      this.pos++;
    }
  }

  /** Whether any unread input remains (reads ahead if needed). */
  async hasMore(): Promise<boolean> {
    return this.fill();
  }
}

interface ChunkHeader {
  size: number;
  signature: string | undefined;
}

function parseChunkHeader(line: Buffer, maxChunkSize: number): ChunkHeader {
  const text = line.toString("latin1");
  const parts = text.split(";");
  const sizeText = parts[0]!.trim();
  if (!/^[0-9a-fA-F]{1,13}$/.test(sizeText)) throw malformed(`bad chunk size "${sizeText.slice(0, 32)}".`);
  const size = parseInt(sizeText, 16);
  if (size > maxChunkSize) throw s3.invalidArgument(`Chunk size ${size} exceeds the maximum of ${maxChunkSize} bytes.`);
  let signature: string | undefined;
  for (let i = 1; i < parts.length; i++) {
    const ext = parts[i]!.trim();
    const eq = ext.indexOf("=");
    const name = (eq < 0 ? ext : ext.slice(0, eq)).trim();
    if (name === "chunk-signature") {
      if (signature !== undefined) throw malformed("repeated chunk-signature.");
      signature = eq < 0 ? "" : ext.slice(eq + 1).trim();
    }
  }
  return { size, signature };
}

function hmacHex(key: Buffer, data: string): string {
  return createHmac("sha256", key).update(data, "utf8").digest("hex");
}

function sigEqual(expected: string, provided: string): boolean {
  if (!SIG_RE.test(provided)) return false;
  // Both are 64 hex chars; compare without early exit.
  let diff = 0;
  for (let i = 0; i < 64; i++) diff |= expected.charCodeAt(i) ^ provided.charCodeAt(i);
  return diff === 0;
}

/** The signature of a chunk whose data hashes to `dataSha256Hex`. */
export function chunkSignature(
  signed: { signingKey: Buffer; amzDate: string; scope: string },
  previousSignature: string,
  dataSha256Hex: string,
): string {
  return hmacHex(
    signed.signingKey,
    `AWS4-HMAC-SHA256-PAYLOAD\n${signed.amzDate}\n${signed.scope}\n${previousSignature}\n${EMPTY_SHA256}\n${dataSha256Hex}`,
  );
}

/** The signature of a trailer section whose canonical form ("name:value\n" lines) is `canonical`. */
export function trailerSignature(signed: { signingKey: Buffer; amzDate: string; scope: string }, previousSignature: string, canonical: string): string {
  const hash = createHash("sha256").update(canonical, "utf8").digest("hex");
  return hmacHex(signed.signingKey, `AWS4-HMAC-SHA256-TRAILER\n${signed.amzDate}\n${signed.scope}\n${previousSignature}\n${hash}`);
}

/**
 * Decode an aws-chunked body, yielding its data (verified, for signed modes). Completes — calling
 * `done` with the trailers and returning them — only when the whole encoding was well-formed,
 * every signature matched, the data length equals `decodedLength` and the declared trailers
 * arrived. Errors: IncompleteBody (truncated, or fewer bytes than declared), InvalidArgument (more
 * bytes than declared, oversized chunk), InvalidRequest (malformed framing or trailers),
 * SignatureDoesNotMatch (a chunk or trailer signature).
 */
export async function* decodeAwsChunked(
  source: AsyncIterable<Uint8Array>,
  options: ChunkedOptions,
  done?: (r: ChunkedResult) => void,
): AsyncGenerator<Buffer, ChunkedResult, undefined> {
  const signed = options.signed;
  const maxChunkSize = options.maxChunkSize ?? DEFAULT_MAX_CHUNK;
  const decodedLength = options.decodedLength;
  const it = source[Symbol.asyncIterator]();
  const reader = new Reader(it);
  let finished = false;
  let previous = signed?.seedSignature ?? "";
  let total = 0;

  try {
    // Chunks, up to and including the final zero-length one.
    for (;;) {
      const line = await reader.readLine(MAX_LINE);
      if (line === undefined) throw truncated();
      const { size, signature } = parseChunkHeader(line, maxChunkSize);
      if (signed !== undefined && signature === undefined) throw s3.signatureDoesNotMatch("A chunk of the request body has no chunk-signature.");
      if (decodedLength !== undefined && total + size > decodedLength) {
        throw s3.invalidArgument("The aws-chunked body holds more data than x-amz-decoded-content-length declares.", "x-amz-decoded-content-length");
      }
      if (size === 0) {
        if (signed !== undefined) {
          const expected = chunkSignature(signed, previous, EMPTY_SHA256);
          if (!sigEqual(expected, signature!)) throw s3.signatureDoesNotMatch("The final chunk signature of the request body does not match.");
          previous = signature!;
        }
        break;
      }
      if (signed !== undefined) {
        const hash = createHash("sha256");
        const parts: Buffer[] = [];
        let remaining = size;
        while (remaining > 0) {
          const piece = await reader.take(remaining);
          if (piece === undefined) throw truncated();
          hash.update(piece);
          parts.push(piece);
          remaining -= piece.length;
        }
        const expected = chunkSignature(signed, previous, hash.digest("hex"));
        if (!sigEqual(expected, signature!)) throw s3.signatureDoesNotMatch("A chunk signature of the request body does not match.");
        previous = signature!;
        await reader.expectCrlf();
        total += size;
        // Many small slices (a finely split input) are joined: one yield per chunk, not per slice.
        if (parts.length === 1) yield parts[0]!;
        else if (parts.length <= 8) for (const p of parts) yield p;
        else yield Buffer.concat(parts, size);
      } else {
        let remaining = size;
        while (remaining > 0) {
          const piece = await reader.take(remaining);
          if (piece === undefined) throw truncated();
          remaining -= piece.length;
          total += piece.length;
          yield piece;
        }
        await reader.expectCrlf();
      }
    }

    // After the final chunk: an empty line (or, tolerated, the end of input), or the trailers.
    const trailers: Record<string, string> = {};
    if (!options.trailer) {
      const end = await reader.readLine(MAX_LINE);
      if (end !== undefined && end.length !== 0) throw malformed("unexpected data after the final chunk.");
    } else {
      let canonical = "";
      let count = 0;
      let trailerSig: string | undefined;
      for (;;) {
        const l = await reader.readLine(MAX_LINE);
        if (l === undefined || l.length === 0) break;
        if (trailerSig !== undefined) throw malformed("x-amz-trailer-signature must be the last trailer.");
        const text = l.toString("utf8");
        const colon = text.indexOf(":");
        if (colon <= 0) throw malformed("a trailer line is not name:value.");
        const name = text.slice(0, colon).trim().toLowerCase();
        const value = text.slice(colon + 1).trim();
        if (name === "" || /\s/.test(name)) throw malformed("a trailer name is not valid.");
        if (name === "x-amz-trailer-signature") {
          if (signed !== undefined) trailerSig = value;
          continue;
        }
        if (++count > MAX_TRAILERS) throw malformed("too many trailers.");
        if (Object.prototype.hasOwnProperty.call(trailers, name)) throw malformed(`repeated trailer ${name}.`);
        if (options.declaredTrailers !== undefined && !options.declaredTrailers.includes(name)) {
          throw s3.invalidRequest(`The trailer ${name} was not declared in the x-amz-trailer header.`);
        }
        trailers[name] = value;
        canonical += `${name}:${value}\n`;
      }
      if (signed !== undefined && (count > 0 || trailerSig !== undefined)) {
        if (trailerSig === undefined) throw s3.signatureDoesNotMatch("The trailers of the request body are not signed (no x-amz-trailer-signature).");
        const expected = trailerSignature(signed, previous, canonical);
        if (!sigEqual(expected, trailerSig)) throw s3.signatureDoesNotMatch("The trailer signature of the request body does not match.");
      }
    }
    if (await reader.hasMore()) throw malformed("unexpected data after the end of the aws-chunked encoding.");
    finished = true;

    if (decodedLength !== undefined && total !== decodedLength) {
      throw s3.incompleteBody("The aws-chunked body holds less data than x-amz-decoded-content-length declares.");
    }
    for (const name of options.declaredTrailers ?? []) {
      if (!Object.prototype.hasOwnProperty.call(trailers, name)) {
        throw s3.invalidRequest(`The trailer ${name} declared in the x-amz-trailer header was not sent.`);
      }
    }
    const result: ChunkedResult = { trailers };
    done?.(result);
    return result;
  } finally {
    if (!finished) {
      try {
        await it.return?.();
      } catch {
        // The source's own cleanup failure must not mask the decoding error.
      }
    }
  }
}
