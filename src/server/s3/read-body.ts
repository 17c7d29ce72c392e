/** Reads a small request body (an XML document) whole, with a size limit and digest checks. */
import type { IncomingMessage } from "node:http";
import { createHash } from "node:crypto";
import { s3 } from "./errors.js";
import { header } from "./http.js";
import { checksumFromHeaders, newChecksum } from "./checksums.js";

export const MAX_XML_BODY = 1024 * 1024;

export async function readBody(req: IncomingMessage, options: { maxBytes?: number; verifyChecksums?: boolean } = {}): Promise<Buffer> {
  const max = options.maxBytes ?? MAX_XML_BODY;
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of req as AsyncIterable<Buffer>) {
    n += b.length;
    if (n > max) throw s3.malformedXML(`The request body is larger than ${max} bytes`);
    parts.push(b);
  }
  const body = Buffer.concat(parts, n);
  const declared = header(req, "content-length");
  if (declared !== undefined && Number(declared) !== n) throw s3.incompleteBody();
  const md5 = header(req, "content-md5");
  if (md5 !== undefined && createHash("md5").update(body).digest("base64") !== md5.trim()) throw s3.badDigest();
  if (options.verifyChecksums === true) {
    const announced = checksumFromHeaders(req.headers);
    if (announced?.value !== undefined) {
      const sum = newChecksum(announced.algorithm);
      sum.update(body);
      if (sum.digestBase64() !== announced.value) throw s3.badDigest();
    }
  }
  return body;
}
