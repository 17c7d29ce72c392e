/** Packs: the blob format, the group-committing writer, the coalescing reader. */
export * from "./format.js";
export * from "./cache.js";
export * from "./writer.js";
export * from "./reader.js";
