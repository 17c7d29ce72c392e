/**
 * The metadata model and its stores. Everything outside src/meta reads and writes metadata through
 * {@link MetadataStore}; nothing else formats storage keys.
 */
export type * from "./types.js";
export { openKvMetadataStore, KvMetadataStore, type KvMetadataStoreOptions, type MetaReadStats } from "./kv-store.js";
