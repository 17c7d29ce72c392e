/** Shared by the recovery tests. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ObjectStore } from "../../src/store/store.js";
import { collect } from "../store/helpers.js";

/** Everything a client can see: buckets, every version's header, the bytes of each, uploads and parts. */
export async function snapshotOf(store: ObjectStore): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const b of await store.listBuckets()) {
    const versions: unknown[] = [];
    for await (const h of store.meta.listVersions(b.name)) {
      const v = await store.meta.getVersion(b.name, h.key, h.versionId);
      assert.ok(v !== undefined);
      const { manifest: _m, ...header } = v;
      const content = h.deleteMarker ? null : createHash("md5").update(await collect((await store.getObject(b.name, h.key, { versionId: h.versionId })).body)).digest("hex");
      versions.push({ ...header, content });
    }
    const uploads: unknown[] = [];
    for (const u of await store.listMultipartUploads(b.name)) uploads.push({ ...u, parts: (await store.listParts(b.name, u.uploadId)).parts });
    out[b.name] = { bucket: b, versions, uploads };
  }
  return out;
}
