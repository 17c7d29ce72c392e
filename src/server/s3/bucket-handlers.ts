/** Service- and bucket-level S3 operations. */
import { StowageError } from "../../errors.js";
import type { VersionHeader } from "../../meta/types.js";
import { S3Error, fromStowageError, s3 } from "./errors.js";
import { isoDate, quoteEtag, header } from "./http.js";
import { parseCreateBucketConfiguration, parseDelete, parseVersioningConfiguration, type XmlNode } from "./xml.js";
import { readBody } from "./read-body.js";
import { sendEmpty, sendXml, type S3Request } from "./server.js";

const OWNER = { ID: "stowage", DisplayName: "stowage" };

export async function handleService(r: S3Request): Promise<void> {
  if (r.req.method !== "GET") throw s3.methodNotAllowed();
  const buckets = await r.store.listBuckets();
  sendXml(r, 200, "ListAllMyBucketsResult", {
    Owner: OWNER,
    Buckets: { Bucket: buckets.map((b) => ({ Name: b.name, CreationDate: isoDate(b.created) })) },
  });
}

function maxKeys(r: S3Request): number {
  const v = r.query.get("max-keys");
  if (v === null) return 1000;
  if (!/^\d+$/.test(v)) throw s3.invalidArgument("max-keys must be a non-negative integer", "max-keys");
  return Math.min(1000, Number(v));
}

/** With `encoding-type=url`, keys and prefixes in listings are URL-encoded (as S3). */
function encoder(r: S3Request): (s: string) => string {
  const t = r.query.get("encoding-type");
  if (t === null) return (s) => s;
  if (t !== "url") throw s3.invalidArgument("Invalid Encoding Method specified in Request", "encoding-type");
  return (s) => encodeURIComponent(s).replace(/%2F/g, "/");
}

function objectEntry(o: VersionHeader, enc: (s: string) => string): Record<string, XmlNode> {
  return { Key: enc(o.key), LastModified: isoDate(o.lastModified), ETag: quoteEtag(o.etag), Size: o.size, StorageClass: "STANDARD" };
}

export async function handleBucket(r: S3Request): Promise<void> {
  const bucket = r.bucket!;
  const q = r.query;
  const { store } = r;
  switch (r.req.method) {
    case "HEAD":
      await store.headBucket(bucket);
      sendEmpty(r, 200, { "x-amz-bucket-region": r.region });
      return;
    case "PUT": {
      if (q.has("versioning")) {
        const cfg = parseVersioningConfiguration(await readBody(r.req));
        await store.headBucket(bucket);
        if (cfg.status !== undefined) await store.setVersioning(bucket, cfg.status === "Enabled" ? "enabled" : "suspended");
        sendEmpty(r, 200);
        return;
      }
      if ([...q.keys()].length > 0) throw s3.notImplemented();
      const cfg = parseCreateBucketConfiguration(await readBody(r.req));
      if (cfg.locationConstraint !== undefined && cfg.locationConstraint !== "" && cfg.locationConstraint !== r.region) {
        throw new S3Error("InvalidLocationConstraint", 400, `The specified location-constraint is not valid: this endpoint serves ${r.region}`);
      }
      // Stowage's extension: the bucket's durability policy (docs/ARCHITECTURE.md, "Durability").
      const durability = header(r.req, "x-stowage-durability");
      if (durability !== undefined && durability !== "cloud" && durability !== "local") {
        throw s3.invalidArgument("x-stowage-durability must be cloud or local", "x-stowage-durability");
      }
      await store.createBucket(bucket, durability === undefined ? {} : { durability });
      sendEmpty(r, 200, { location: `/${bucket}` });
      return;
    }
    case "DELETE":
      if ([...q.keys()].length > 0) throw s3.notImplemented();
      await store.deleteBucket(bucket);
      sendEmpty(r, 204);
      return;
    case "POST":
      if (q.has("delete")) {
        await deleteObjects(r);
        return;
      }
      throw s3.methodNotAllowed();
    case "GET":
      break;
    default:
      throw s3.methodNotAllowed();
  }
  // GET subresources
  if (q.has("location")) {
    await store.headBucket(bucket);
    sendXml(r, 200, "LocationConstraint", r.region === "us-east-1" ? "" : r.region);
    return;
  }
  if (q.has("versioning")) {
    const b = await store.headBucket(bucket);
    sendXml(r, 200, "VersioningConfiguration", b.versioning === "unversioned" ? {} : { Status: b.versioning === "enabled" ? "Enabled" : "Suspended" });
    return;
  }
  if (q.has("versions")) {
    await listVersions(r);
    return;
  }
  if (q.has("uploads")) {
    const prefix = q.get("prefix") ?? "";
    const enc = encoder(r);
    const uploads = await store.listMultipartUploads(bucket, prefix === "" ? {} : { prefix });
    sendXml(r, 200, "ListMultipartUploadsResult", {
      Bucket: bucket,
      KeyMarker: "",
      UploadIdMarker: "",
      Prefix: enc(prefix),
      MaxUploads: 1000,
      IsTruncated: false,
      Upload: uploads.map((u) => ({ Key: enc(u.key), UploadId: u.uploadId, Initiator: OWNER, Owner: OWNER, StorageClass: "STANDARD", Initiated: isoDate(u.initiated) })),
    });
    return;
  }
  for (const unsupported of ["acl", "policy", "cors", "lifecycle", "tagging", "website", "logging", "notification", "replication", "encryption", "object-lock", "accelerate", "requestPayment", "ownershipControls", "publicAccessBlock"]) {
    if (q.has(unsupported)) {
      if (unsupported === "acl") {
        await store.headBucket(bucket);
        sendXml(r, 200, "AccessControlPolicy", { Owner: OWNER, AccessControlList: { Grant: { Grantee: { "@xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance", "@xsi:type": "CanonicalUser", ...OWNER }, Permission: "FULL_CONTROL" } } });
        return;
      }
      throw s3.notImplemented(`the ${unsupported} subresource is not implemented`);
    }
  }
  await listObjects(r);
}

async function listObjects(r: S3Request): Promise<void> {
  const q = r.query;
  const v2 = q.get("list-type") === "2";
  const enc = encoder(r);
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const max = maxKeys(r);
  if (v2) {
    const token = q.get("continuation-token");
    const startAfter = q.get("start-after") ?? "";
    let result;
    try {
      result = await r.store.listObjects(r.bucket!, { prefix, delimiter, maxKeys: max, ...(startAfter === "" ? {} : { startAfter }), ...(token === null ? {} : { continuationToken: token }) });
    } catch (err) {
      if (err instanceof StowageError && err.code === "STOWAGE_INVALID_ARGUMENT" && token !== null) throw s3.invalidArgument("The continuation token provided is incorrect", "continuation-token");
      throw err;
    }
    sendXml(r, 200, "ListBucketResult", {
      Name: r.bucket,
      Prefix: enc(prefix),
      ...(delimiter === "" ? {} : { Delimiter: enc(delimiter) }),
      MaxKeys: max,
      ...(q.has("encoding-type") ? { EncodingType: "url" } : {}),
      KeyCount: result.objects.length + result.commonPrefixes.length,
      ...(token === null ? {} : { ContinuationToken: token }),
      ...(startAfter === "" ? {} : { StartAfter: enc(startAfter) }),
      IsTruncated: result.isTruncated,
      ...(result.nextContinuationToken === undefined ? {} : { NextContinuationToken: result.nextContinuationToken }),
      Contents: result.objects.map((o) => objectEntry(o, enc)),
      CommonPrefixes: result.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
    });
    return;
  }
  // ListObjects (v1): `marker` is start-after; NextMarker only with a delimiter (as S3).
  const marker = q.get("marker") ?? "";
  const result = await r.store.listObjects(r.bucket!, { prefix, delimiter, maxKeys: max, ...(marker === "" ? {} : { startAfter: marker }) });
  const last = [...result.objects.map((o) => o.key), ...result.commonPrefixes].sort().at(-1);
  sendXml(r, 200, "ListBucketResult", {
    Name: r.bucket,
    Prefix: enc(prefix),
    Marker: enc(marker),
    ...(delimiter === "" ? {} : { Delimiter: enc(delimiter) }),
    MaxKeys: max,
    ...(q.has("encoding-type") ? { EncodingType: "url" } : {}),
    IsTruncated: result.isTruncated,
    ...(result.isTruncated && delimiter !== "" && last !== undefined ? { NextMarker: enc(last) } : {}),
    Contents: result.objects.map((o) => ({ ...objectEntry(o, enc), Owner: OWNER })),
    CommonPrefixes: result.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
  });
}

async function listVersions(r: S3Request): Promise<void> {
  const q = r.query;
  const enc = encoder(r);
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const keyMarker = q.get("key-marker") ?? "";
  const versionIdMarker = q.get("version-id-marker") ?? "";
  const max = maxKeys(r);
  const result = await r.store.listObjectVersions(r.bucket!, {
    prefix,
    delimiter,
    maxKeys: max,
    ...(keyMarker === "" ? {} : { keyMarker }),
    ...(versionIdMarker === "" ? {} : { versionIdMarker }),
  });
  const versions: XmlNode[] = [];
  const markers: XmlNode[] = [];
  for (const v of result.versions) {
    const common = { Key: enc(v.key), VersionId: v.versionId, IsLatest: v.isLatest, LastModified: isoDate(v.lastModified), Owner: OWNER };
    if (v.deleteMarker) markers.push(common);
    else versions.push({ ...common, ETag: quoteEtag(v.etag), Size: v.size, StorageClass: "STANDARD" });
  }
  sendXml(r, 200, "ListVersionsResult", {
    Name: r.bucket,
    Prefix: enc(prefix),
    KeyMarker: enc(keyMarker),
    VersionIdMarker: versionIdMarker,
    ...(delimiter === "" ? {} : { Delimiter: enc(delimiter) }),
    MaxKeys: max,
    ...(q.has("encoding-type") ? { EncodingType: "url" } : {}),
    IsTruncated: result.isTruncated,
    ...(result.nextKeyMarker === undefined ? {} : { NextKeyMarker: enc(result.nextKeyMarker) }),
    ...(result.nextVersionIdMarker === undefined ? {} : { NextVersionIdMarker: result.nextVersionIdMarker }),
    Version: versions,
    DeleteMarker: markers,
    CommonPrefixes: result.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
  });
}

async function deleteObjects(r: S3Request): Promise<void> {
  if (header(r.req, "content-md5") === undefined && !Object.keys(r.req.headers).some((h) => h.startsWith("x-amz-checksum-") || h === "x-amz-sdk-checksum-algorithm")) {
    throw s3.invalidRequest("Missing required header for this request: Content-MD5");
  }
  const body = await readBody(r.req, { verifyChecksums: true });
  const { quiet, objects } = parseDelete(body);
  await r.store.headBucket(r.bucket!);
  const deleted: XmlNode[] = [];
  const errors: XmlNode[] = [];
  for (const o of objects) {
    try {
      const res = await r.store.deleteObject(r.bucket!, o.key, o.versionId === undefined ? {} : { versionId: o.versionId });
      if (!quiet) {
        deleted.push({
          Key: o.key,
          ...(o.versionId === undefined ? {} : { VersionId: o.versionId }),
          ...(res.deleteMarker ? { DeleteMarker: true, ...(res.versionId === undefined ? {} : { DeleteMarkerVersionId: res.versionId }) } : {}),
        });
      }
    } catch (err) {
      const e = fromStowageError(err);
      errors.push({ Key: o.key, ...(o.versionId === undefined ? {} : { VersionId: o.versionId }), Code: e.code, Message: e.message });
    }
  }
  sendXml(r, 200, "DeleteResult", { Deleted: deleted, Error: errors });
}
