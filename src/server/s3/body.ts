/**
 * A request body as the store wants it: the decoded bytes of the object, with every integrity
 * promise the client made checked on the way (payload SHA-256, aws-chunked chunk signatures,
 * Content-MD5 is left to the store, x-amz-checksum-* headers and trailers). A failed check throws
 * from the stream before it ends, so the store commits nothing.
 */
import type { IncomingMessage } from "node:http";
import { StowageError } from "../../errors.js";
import type { Authenticated } from "./sigv4.js";
import { Sha256Verifier } from "./sigv4.js";
import { decodeAwsChunked, type ChunkedResult } from "./chunked.js";
import { checksumFromHeaders, newChecksum } from "./checksums.js";
import { s3 } from "./errors.js";
import { header } from "./http.js";

export interface DecodedBody {
  /** The object bytes. */
  stream: AsyncGenerator<Buffer>;
  /** The object's length when known up front (Content-Length or x-amz-decoded-content-length). */
  size: number | undefined;
  /** Set once the stream has ended: the checksum verified, if the client sent one. */
  checksum(): { algorithm: string; value: string } | undefined;
}

function parseLength(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,16}$/.test(text)) throw s3.invalidArgument(`${name} must be a non-negative integer`, name);
  return Number(text);
}

async function* raw(req: IncomingMessage): AsyncGenerator<Buffer> {
  for await (const b of req as AsyncIterable<Buffer>) yield b;
}

export function decodeBody(req: IncomingMessage, auth: Authenticated): DecodedBody {
  const contentLength = parseLength(header(req, "content-length"), "Content-Length");
  const decodedLength = parseLength(header(req, "x-amz-decoded-content-length"), "x-amz-decoded-content-length");
  const announced = checksumFromHeaders(req.headers);
  let trailers: Record<string, string> = {};
  let stream: AsyncGenerator<Buffer>;
  let size: number | undefined;
  const p = auth.payload;
  if (p.kind === "streaming-signed" || p.kind === "streaming-signed-trailer" || p.kind === "streaming-unsigned-trailer") {
    if (decodedLength === undefined) throw s3.missingContentLength();
    size = decodedLength;
    const trailer = p.kind !== "streaming-signed";
    stream = decodeAwsChunked(
      raw(req),
      {
        trailer,
        decodedLength,
        ...(p.kind === "streaming-unsigned-trailer" ? {} : { signed: { signingKey: auth.signingKey, seedSignature: auth.seedSignature, amzDate: auth.amzDate, scope: auth.scope } }),
        ...(announced?.location === "trailer" ? { declaredTrailers: [announced.name] } : {}),
      },
      (r: ChunkedResult) => {
        trailers = r.trailers;
      },
    );
  } else {
    if (contentLength === undefined && header(req, "transfer-encoding") === undefined) throw s3.missingContentLength();
    size = contentLength;
    stream = raw(req);
    if (p.kind === "sha256") {
      const inner = stream;
      const verifier = new Sha256Verifier(p.hex);
      stream = (async function* () {
        for await (const b of inner) {
          verifier.update(b);
          yield b;
        }
        verifier.verify();
      })();
    }
  }
  let verified: { algorithm: string; value: string } | undefined;
  if (announced !== undefined) {
    const inner = stream;
    const sum = newChecksum(announced.algorithm);
    stream = (async function* () {
      for await (const b of inner) {
        sum.update(b);
        yield b;
      }
      const expected = announced.value ?? trailers[announced.name];
      if (expected === undefined) throw s3.invalidRequest(`the ${announced.name} trailer is missing`);
      const actual = sum.digestBase64();
      if (actual !== expected.trim()) {
        throw new StowageError("STOWAGE_BAD_DIGEST", `the ${announced.algorithm} checksum sent (${expected}) does not match the content (${actual})`);
      }
      verified = { algorithm: announced.algorithm, value: actual };
    })();
  }
  // An S3Error thrown inside the decoders is kept as the cause: the server reports it as is.
  return { stream, size, checksum: () => verified };
}
