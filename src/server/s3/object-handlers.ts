/** Object-level S3 operations: get, head, put, copy, delete, tagging and multipart uploads. */
import { StowageError } from "../../errors.js";
import { MAX_PUT_SIZE, normalizeEtag } from "../../store/store.js";
import type { VersionHeader } from "../../meta/types.js";
import { S3Error, s3 } from "./errors.js";
import {
  checkConditions,
  checkCopySourceConditions,
  header,
  isoDate,
  objectHeaders,
  parseCopySource,
  parseRange,
  quoteEtag,
  storedHeadersFrom,
  tagsFromHeader,
  userMetadataFrom,
} from "./http.js";
import { decodeBody } from "./body.js";
import { readBody } from "./read-body.js";
import { parseCompleteMultipartUpload, parseTagging } from "./xml.js";
import { sendEmpty, sendStream, sendXml, type S3Request } from "./server.js";

const RESPONSE_OVERRIDES: Record<string, string> = {
  "response-content-type": "content-type",
  "response-content-language": "content-language",
  "response-expires": "expires",
  "response-cache-control": "cache-control",
  "response-content-disposition": "content-disposition",
  "response-content-encoding": "content-encoding",
};

async function versioned(r: S3Request): Promise<boolean> {
  return (await r.store.headBucket(r.bucket!)).versioning !== "unversioned";
}

function versionIdParam(r: S3Request): string | undefined {
  const v = r.query.get("versionId");
  if (v === null) return undefined;
  if (v === "" || v.length > 64) throw s3.invalidArgument("Invalid version id specified", "versionId");
  return v;
}

export async function handleObject(r: S3Request): Promise<void> {
  const q = r.query;
  switch (r.req.method) {
    case "GET":
    case "HEAD":
      if (q.has("uploadId")) return listParts(r);
      if (q.has("tagging")) return getTagging(r);
      if (q.has("acl")) {
        await r.store.headObject(r.bucket!, r.key!);
        sendXml(r, 200, "AccessControlPolicy", { Owner: { ID: "stowage" }, AccessControlList: { Grant: { Grantee: { "@xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance", "@xsi:type": "CanonicalUser", ID: "stowage" }, Permission: "FULL_CONTROL" } } });
        return;
      }
      return getObject(r);
    case "PUT":
      if (q.has("tagging")) return putTagging(r);
      if (q.has("uploadId") || q.has("partNumber")) {
        if (header(r.req, "x-amz-copy-source") !== undefined) return uploadPartCopy(r);
        return uploadPart(r);
      }
      if (header(r.req, "x-amz-copy-source") !== undefined) return copyObject(r);
      if (q.has("acl")) throw s3.notImplemented("object ACLs are not implemented");
      return putObject(r);
    case "DELETE":
      if (q.has("uploadId")) {
        await r.store.abortMultipartUpload(r.bucket!, q.get("uploadId")!);
        sendEmpty(r, 204);
        return;
      }
      if (q.has("tagging")) {
        await r.store.putObjectTagging(r.bucket!, r.key!, {}, versionIdParam(r) === undefined ? {} : { versionId: versionIdParam(r)! });
        sendEmpty(r, 204);
        return;
      }
      return deleteObject(r);
    case "POST":
      if (q.has("uploads")) return createUpload(r);
      if (q.has("uploadId")) return completeUpload(r);
      throw s3.methodNotAllowed();
    default:
      throw s3.methodNotAllowed();
  }
}

async function getObject(r: S3Request): Promise<void> {
  const versionId = versionIdParam(r);
  const isVersioned = await versioned(r);
  const partParam = r.query.get("partNumber");
  let partNumber: number | undefined;
  if (partParam !== null) {
    if (!/^\d+$/.test(partParam) || Number(partParam) < 1 || Number(partParam) > 10000) throw s3.invalidArgument("Part number must be an integer between 1 and 10000, inclusive", "partNumber");
    partNumber = Number(partParam);
  }
  const head = await r.store.headObject(r.bucket!, r.key!, versionId === undefined ? {} : { versionId });
  const headers = objectHeaders(head, isVersioned);
  if (checkConditions(r.req, head) === "not-modified") {
    const h: Record<string, string> = { etag: headers.etag!, "last-modified": headers["last-modified"]! };
    if (isVersioned) h["x-amz-version-id"] = head.versionId;
    r.res.writeHead(304, h);
    r.res.end();
    return;
  }
  for (const [param, name] of Object.entries(RESPONSE_OVERRIDES)) {
    const v = r.query.get(param);
    if (v !== null) headers[name] = v;
  }
  if (head.checksum !== undefined && header(r.req, "x-amz-checksum-mode")?.toUpperCase() === "ENABLED" && partNumber === undefined && header(r.req, "range") === undefined) {
    headers[`x-amz-checksum-${head.checksum.algorithm.toLowerCase()}`] = head.checksum.value;
  }
  const range = partNumber === undefined ? parseRange(header(r.req, "range")) : undefined;
  const result = await r.store.getObject(r.bucket!, r.key!, {
    versionId: head.versionId,
    ...(range === undefined ? {} : { range }),
    ...(partNumber === undefined ? {} : { partNumber }),
  });
  const { span } = result;
  headers["content-length"] = String(span.end - span.start);
  let status = 200;
  if (result.partial) {
    status = 206;
    headers["content-range"] = `bytes ${span.start}-${span.end - 1}/${head.size}`;
  }
  if (head.size === 0 && result.partial) headers["content-range"] = `bytes */0`;
  if (r.req.method === "HEAD") {
    await result.body.return(undefined);
    r.res.writeHead(status, headers);
    r.res.end();
    return;
  }
  await sendStream(r, status, headers, result.body);
}

function putOptions(r: S3Request): { contentType: string; userMetadata: Record<string, string>; headers: Record<string, string>; tags?: Record<string, string> } {
  const tags = tagsFromHeader(header(r.req, "x-amz-tagging"));
  return {
    contentType: header(r.req, "content-type") ?? "application/octet-stream",
    userMetadata: userMetadataFrom(r.req),
    headers: storedHeadersFrom(r.req),
    ...(tags === undefined ? {} : { tags }),
  };
}

function contentMD5(r: S3Request): string | undefined {
  const v = header(r.req, "content-md5");
  if (v === undefined) return undefined;
  if (Buffer.from(v, "base64").length !== 16) throw s3.invalidDigest();
  return v;
}

async function putObject(r: S3Request): Promise<void> {
  const body = decodeBody(r.req, r.auth);
  if (body.size !== undefined && body.size > MAX_PUT_SIZE) throw s3.entityTooLarge();
  const md5 = contentMD5(r);
  const ifNoneMatch = header(r.req, "if-none-match");
  if (ifNoneMatch !== undefined && ifNoneMatch.trim() === "*") {
    try {
      await r.store.headObject(r.bucket!, r.key!);
      throw s3.preconditionFailed();
    } catch (err) {
      if (!(err instanceof StowageError && err.code === "STOWAGE_NO_SUCH_KEY")) throw err;
    }
  }
  const result = await r.store.putObject(r.bucket!, r.key!, body.stream, {
    ...putOptions(r),
    ...(body.size === undefined ? {} : { size: body.size }),
    ...(md5 === undefined ? {} : { contentMD5: md5 }),
    checksum: body.checksum,
  });
  const headers: Record<string, string> = { etag: quoteEtag(result.etag) };
  if (result.versionId !== "null") headers["x-amz-version-id"] = result.versionId;
  const sum = body.checksum();
  if (sum !== undefined) headers[`x-amz-checksum-${sum.algorithm.toLowerCase()}`] = sum.value;
  sendEmpty(r, 200, headers);
}

async function sourceVersion(r: S3Request, source: { bucket: string; key: string; versionId?: string }): Promise<VersionHeader> {
  const v = await r.store.headObject(source.bucket, source.key, source.versionId === undefined ? {} : { versionId: source.versionId });
  checkCopySourceConditions(r.req, v);
  return v;
}

async function copyObject(r: S3Request): Promise<void> {
  const source = parseCopySource(header(r.req, "x-amz-copy-source")!);
  const src = await sourceVersion(r, source);
  const directive = (header(r.req, "x-amz-metadata-directive") ?? "COPY").toUpperCase();
  const taggingDirective = (header(r.req, "x-amz-tagging-directive") ?? "COPY").toUpperCase();
  if (directive !== "COPY" && directive !== "REPLACE") throw s3.invalidArgument("Unknown metadata directive.", "x-amz-metadata-directive");
  if (taggingDirective !== "COPY" && taggingDirective !== "REPLACE") throw s3.invalidArgument("Unknown tagging directive.", "x-amz-tagging-directive");
  if (source.bucket === r.bucket && source.key === r.key && directive === "COPY" && source.versionId === undefined) {
    throw s3.invalidRequest("This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
  }
  const opts = putOptions(r);
  const result = await r.store.copyObject(source.bucket, source.key, r.bucket!, r.key!, {
    sourceVersionId: src.versionId,
    metadataDirective: directive,
    taggingDirective,
    contentType: opts.contentType,
    userMetadata: opts.userMetadata,
    headers: opts.headers,
    ...(opts.tags === undefined ? {} : { tags: opts.tags }),
  });
  const headers: Record<string, string> = {};
  if (result.versionId !== "null") headers["x-amz-version-id"] = result.versionId;
  if (src.versionId !== "null") headers["x-amz-copy-source-version-id"] = src.versionId;
  // From the copy itself: reading the new version back could race with a delete or put that
  // followed it, failing a copy that succeeded.
  const lastModified = result.lastModified ?? (await r.store.headObject(r.bucket!, r.key!, { versionId: result.versionId })).lastModified;
  sendXml(r, 200, "CopyObjectResult", { LastModified: isoDate(lastModified), ETag: quoteEtag(result.etag) }, headers);
}

async function deleteObject(r: S3Request): Promise<void> {
  const versionId = versionIdParam(r);
  await r.store.headBucket(r.bucket!);
  const res = await r.store.deleteObject(r.bucket!, r.key!, versionId === undefined ? {} : { versionId });
  const headers: Record<string, string> = {};
  if (res.deleteMarker) headers["x-amz-delete-marker"] = "true";
  if (res.versionId !== undefined && res.versionId !== "null") headers["x-amz-version-id"] = res.versionId;
  else if (versionId !== undefined) headers["x-amz-version-id"] = versionId;
  sendEmpty(r, 204, headers);
}

async function getTagging(r: S3Request): Promise<void> {
  const versionId = versionIdParam(r);
  const v = await r.store.headObject(r.bucket!, r.key!, versionId === undefined ? {} : { versionId });
  sendXml(r, 200, "Tagging", { TagSet: { Tag: Object.entries(v.tags ?? {}).map(([Key, Value]) => ({ Key, Value })) } }, v.versionId === "null" ? {} : { "x-amz-version-id": v.versionId });
}

async function putTagging(r: S3Request): Promise<void> {
  const versionId = versionIdParam(r);
  const tags = parseTagging(await readBody(r.req, { verifyChecksums: true }));
  const v = await r.store.putObjectTagging(r.bucket!, r.key!, Object.fromEntries(tags.map((t) => [t.key, t.value])), versionId === undefined ? {} : { versionId });
  sendEmpty(r, 200, v.versionId === "null" ? {} : { "x-amz-version-id": v.versionId });
}

// ------------------------------------------------------------------------------------------------
// Multipart uploads
// ------------------------------------------------------------------------------------------------

async function createUpload(r: S3Request): Promise<void> {
  const opts = putOptions(r);
  const upload = await r.store.createMultipartUpload(r.bucket!, r.key!, opts);
  sendXml(r, 200, "InitiateMultipartUploadResult", { Bucket: r.bucket, Key: r.key, UploadId: upload.uploadId });
}

function partNumberParam(r: S3Request): number {
  const v = r.query.get("partNumber");
  if (v === null || !/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 10000) {
    throw s3.invalidArgument("Part number must be an integer between 1 and 10000, inclusive", "partNumber");
  }
  return Number(v);
}

function uploadIdParam(r: S3Request): string {
  const v = r.query.get("uploadId");
  if (v === null || v === "") throw s3.invalidArgument("This operation needs an uploadId", "uploadId");
  return v;
}

async function uploadPart(r: S3Request): Promise<void> {
  const partNumber = partNumberParam(r);
  const uploadId = uploadIdParam(r);
  const body = decodeBody(r.req, r.auth);
  if (body.size !== undefined && body.size > MAX_PUT_SIZE) throw s3.entityTooLarge();
  const md5 = contentMD5(r);
  const part = await r.store.uploadPart(r.bucket!, uploadId, partNumber, body.stream, {
    ...(body.size === undefined ? {} : { size: body.size }),
    ...(md5 === undefined ? {} : { contentMD5: md5 }),
  });
  const headers: Record<string, string> = { etag: quoteEtag(part.etag) };
  const sum = body.checksum();
  if (sum !== undefined) headers[`x-amz-checksum-${sum.algorithm.toLowerCase()}`] = sum.value;
  sendEmpty(r, 200, headers);
}

async function uploadPartCopy(r: S3Request): Promise<void> {
  const partNumber = partNumberParam(r);
  const uploadId = uploadIdParam(r);
  const source = parseCopySource(header(r.req, "x-amz-copy-source")!);
  const src = await sourceVersion(r, source);
  let range: { start: number; end: number } | undefined;
  const rangeHeader = header(r.req, "x-amz-copy-source-range");
  if (rangeHeader !== undefined) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader.trim());
    if (m === null) throw s3.invalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last", "x-amz-copy-source-range");
    range = { start: Number(m[1]), end: Number(m[2]) };
    if (range.end >= src.size || range.start > range.end) throw new S3Error("InvalidRange", 416, "The requested range is not satisfiable");
  }
  const part = await r.store.uploadPartCopy(r.bucket!, uploadId, partNumber, { bucket: source.bucket, key: source.key, versionId: src.versionId, ...(range === undefined ? {} : { range }) });
  sendXml(r, 200, "CopyPartResult", { LastModified: isoDate(part.lastModified), ETag: quoteEtag(part.etag) }, src.versionId === "null" ? {} : { "x-amz-copy-source-version-id": src.versionId });
}

async function completeUpload(r: S3Request): Promise<void> {
  const uploadId = uploadIdParam(r);
  const body = await readBody(r.req, { verifyChecksums: true });
  const { parts } = parseCompleteMultipartUpload(body);
  const result = await r.store.completeMultipartUpload(
    r.bucket!,
    uploadId,
    parts.map((p) => ({ partNumber: p.partNumber, etag: normalizeEtag(p.etag) })),
  );
  const headers: Record<string, string> = {};
  if (result.versionId !== "null") headers["x-amz-version-id"] = result.versionId;
  sendXml(r, 200, "CompleteMultipartUploadResult", { Location: `/${r.bucket}/${r.key}`, Bucket: r.bucket, Key: result.key, ETag: quoteEtag(result.etag) }, headers);
}

async function listParts(r: S3Request): Promise<void> {
  const uploadId = uploadIdParam(r);
  const { upload, parts } = await r.store.listParts(r.bucket!, uploadId);
  if (upload.key !== r.key) throw new S3Error("NoSuchUpload", 404, "The specified upload does not exist.");
  const marker = Number(r.query.get("part-number-marker") ?? "0");
  const max = Math.min(1000, Number(r.query.get("max-parts") ?? "1000"));
  const after = parts.filter((p) => p.partNumber > marker);
  const page = after.slice(0, max);
  sendXml(r, 200, "ListPartsResult", {
    Bucket: r.bucket,
    Key: r.key,
    UploadId: uploadId,
    Initiator: { ID: "stowage" },
    Owner: { ID: "stowage" },
    StorageClass: "STANDARD",
    PartNumberMarker: marker,
    ...(page.length > 0 ? { NextPartNumberMarker: page[page.length - 1]!.partNumber } : {}),
    MaxParts: max,
    IsTruncated: after.length > page.length,
    Part: page.map((p) => ({ PartNumber: p.partNumber, LastModified: isoDate(p.lastModified), ETag: quoteEtag(p.etag), Size: p.size })),
  });
}

