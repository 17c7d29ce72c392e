/**
 * Reads a sorted table (layout in format.ts). Opening reads the footer, the index block, the
 * bloom filter and the properties block and keeps them in memory; data blocks are read on demand
 * through the shared block cache (key `blockCacheKey(fileNumber, offset)`, charge = block bytes).
 *
 * `iterator()` is a two-level iterator (index block -> data block) supporting every
 * InternalIterator move across block boundaries. `get()` is the point-lookup path: bloom check,
 * index seek, block seek, with reusable cursors instead of a new iterator per call.
 *
 * The table owns `file` once `open` succeeds (`close()` closes it); if `open` throws, the caller
 * still owns it. Cached blocks outlive the Table: call `cache.evictFile(fileNumber)` when the file
 * is deleted.
 */
import { getVarint } from "../coding.js";
import { corruption } from "../../errors.js";
import { TRAILER_SIZE } from "../format.js";
import type { RandomAccessFile } from "../fs.js";
import type { InternalIterator } from "../iterator.js";
import { type LruCache, blockCacheKey } from "../cache.js";

const TWO_32 = 0x1_0000_0000;
import { Block, BlockIterator } from "./block.js";
import { bloomMayContain } from "./bloom.js";
import {
  BLOCK_TRAILER_SIZE,
  FOOTER_SIZE,
  type TableProperties,
  decodeFooter,
  decodeProperties,
  hasFilter,
  readBlock,
} from "./format.js";

export type { TableProperties } from "./format.js";

export interface TableOpenOptions {
  /** Verify the crc of every data block read from the file (meta blocks are always verified). */
  verifyChecksums: boolean;
}

/** Copies a view into its own exact-size buffer (so it does not pin a larger read buffer). */
function own(view: Uint8Array): Uint8Array {
  return new Uint8Array(view);
}

export class Table {
  readonly path: string;
  private readonly index: Block;
  private readonly filter: Uint8Array | undefined;
  private readonly propsBytes: number;
  /** Cursors reused by get() (lookups are synchronous, so one pair per table suffices). */
  private getIndex: BlockIterator | undefined;
  private getData: BlockIterator | undefined;
  private readonly tmp = [0, 0];
  /** blockCacheKey(fileNumber, 0): a block's key is this plus its offset (below 2^32). */
  private readonly cacheBase: number;
  private closed = false;

  private constructor(
    readonly file: RandomAccessFile,
    readonly fileNumber: number,
    private readonly cache: LruCache<Block> | undefined,
    private readonly verifyChecksums: boolean,
    index: Block,
    filter: Uint8Array | undefined,
    readonly props: TableProperties,
    propsBytes: number,
  ) {
    this.path = file.path;
    this.index = index;
    this.filter = filter;
    this.propsBytes = propsBytes;
    this.cacheBase = blockCacheKey(fileNumber, 0);
  }

  /**
   * Opens the table in `file`: checks the footer and loads the index, filter and properties.
   * Throws STOWAGE_KV_CORRUPTION for damaged bytes and STOWAGE_KV_FORMAT_VERSION for a footer
   * version other than 1.
   */
  static open(
    file: RandomAccessFile,
    fileNumber: number,
    cache: LruCache<Block> | undefined,
    opts: TableOpenOptions,
  ): Table {
    const path = file.path;
    const size = file.size;
    if (size < FOOTER_SIZE) throw corruption(path, 0, `file of ${size} bytes is too short to be a table`);
    const footerOffset = size - FOOTER_SIZE;
    const footer = decodeFooter(file.read(footerOffset, FOOTER_SIZE), path, footerOffset);

    const ih = footer.index;
    const index = new Block(own(readBlock(file, ih.offset, ih.size, true)), path, ih.offset, fileNumber);
    let filter: Uint8Array | undefined;
    if (hasFilter(footer)) filter = own(readBlock(file, footer.filter.offset, footer.filter.size, true));
    const ph = footer.properties;
    const props = decodeProperties(readBlock(file, ph.offset, ph.size, true), path, ph.offset, size);
    const metaStart = filter !== undefined ? Math.min(footer.filter.offset, ph.offset) : ph.offset;
    if (props.dataBytes > Math.min(metaStart, ih.offset)) {
      throw corruption(path, ph.offset, `properties claim ${props.dataBytes} data bytes, past the meta blocks`);
    }
    return new Table(file, fileNumber, cache, opts.verifyChecksums, index, filter, props, ph.size);
  }

  /** Bytes held in memory for the table's lifetime (index, filter, properties). */
  get memoryBytes(): number {
    return this.index.byteLength + (this.filter?.length ?? 0) + this.propsBytes;
  }

  /** False only if no key with this user key is in the table (bloom filter; true without one). */
  mayContain(userKey: Uint8Array): boolean {
    return this.filter === undefined || bloomMayContain(this.filter, userKey, 0, userKey.length);
  }

  /**
   * A two-level iterator over the whole table. `fillCache = false` reads blocks that are not
   * cached without inserting them (for scans that should not wipe the cache).
   */
  iterator(fillCache = true): InternalIterator {
    return new TableIterator(this, fillCache);
  }

  /**
   * The first entry whose internal key is >= `target` (an internal key, e.g. userKey + (seq,
   * KIND_FOR_SEEK)), or undefined. Returns undefined early when the bloom filter excludes the
   * target's user key, so the caller must check that the returned key has the user key it wants.
   * `key` is a fresh copy; `value` is a view into the (immutable) block.
   */
  get(target: Uint8Array, fillCache = true): { key: Uint8Array; value: Uint8Array } | undefined {
    const c = this.lookup(target, fillCache);
    return c === undefined ? undefined : { key: c.key().slice(), value: c.value() };
  }

  /**
   * The allocation-free form of `get`: the table's own cursor positioned at the first entry
   * >= `target`, or undefined (also when the bloom filter excludes the user key). The cursor and
   * its key bytes are only valid until the next `lookup`/`get` on this table; `value()` is a view
   * into the block that stays valid. Do not move the cursor.
   */
  lookup(target: Uint8Array, fillCache = true): BlockIterator | undefined {
    const filter = this.filter;
    if (filter !== undefined && !bloomMayContain(filter, target, 0, target.length - TRAILER_SIZE)) {
      return undefined;
    }
    let ix = this.getIndex;
    let dc = this.getData;
    if (ix === undefined || dc === undefined) {
      ix = new BlockIterator(this.index);
      dc = new BlockIterator();
      this.getIndex = ix;
      this.getData = dc;
    }
    ix.seek(target);
    while (ix.valid()) {
      dc.reset(this.blockAt(ix, fillCache));
      dc.seek(target);
      if (dc.valid()) return dc;
      ix.next(); // only reached when an index key is below its block's last key
    }
    return undefined;
  }

  /** Closes the file. Iterators must not be used afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file.close();
  }

  /** @internal A new cursor over the index block. */
  indexIterator(): BlockIterator {
    return new BlockIterator(this.index);
  }

  /** @internal The data block the index cursor `ix` (valid) points at. */
  blockAt(ix: BlockIterator, fillCache: boolean): Block;
  /** @internal As above, but undefined (and no read) when the block is at `unlessOffset`. */
  blockAt(ix: BlockIterator, fillCache: boolean, unlessOffset: number): Block | undefined;
  blockAt(ix: BlockIterator, fillCache: boolean, unlessOffset = -1): Block | undefined {
    const data = ix.blockData;
    const start = ix.valueOffset;
    const end = start + ix.valueLength;
    let offset: number;
    let size: number;
    let p: number;
    const b0 = data[start];
    if (b0 < 0x80) {
      offset = b0;
      p = start + 1;
    } else {
      getVarint(data, start, end, this.tmp);
      offset = this.tmp[0];
      p = this.tmp[1];
    }
    const b1 = data[p];
    if (p >= 0 && p < end && b1 < 0x80) {
      size = b1;
      p++;
    } else {
      if (p >= 0) getVarint(data, p, end, this.tmp);
      size = this.tmp[0];
      p = p < 0 ? p : this.tmp[1];
    }
    if (p !== end || offset + size + BLOCK_TRAILER_SIZE > this.props.dataBytes) {
      throw corruption(this.path, this.index.offset + start, "bad data block handle in index");
    }
    if (offset === unlessOffset) return undefined;
    const cache = this.cache;
    if (cache === undefined) return this.readDataBlock(offset, size);
    const key = offset < TWO_32 ? this.cacheBase + offset : blockCacheKey(this.fileNumber, offset);
    const hit = cache.get(key);
    // Keys of files 2^21 numbers apart coincide: only trust a block that names this file.
    if (hit !== undefined && hit.offset === offset && hit.fileNumber === this.fileNumber) return hit;
    const block = this.readDataBlock(offset, size);
    if (fillCache) cache.set(key, block, size);
    return block;
  }

  private readDataBlock(offset: number, size: number): Block {
    return new Block(readBlock(this.file, offset, size, this.verifyChecksums), this.path, offset, this.fileNumber);
  }
}

/** Index block -> data block. Empty data blocks (never written, but tolerated) are skipped. */
class TableIterator implements InternalIterator {
  private readonly indexIt: BlockIterator;
  private readonly dataIt = new BlockIterator();
  private hasData = false;
  private dataOffset = -1;

  constructor(
    private readonly table: Table,
    private readonly fillCache: boolean,
  ) {
    this.indexIt = table.indexIterator();
  }

  valid(): boolean {
    return this.hasData && this.dataIt.valid();
  }

  seekToFirst(): void {
    this.indexIt.seekToFirst();
    if (this.initData()) this.dataIt.seekToFirst();
    this.skipForward();
  }

  seekToLast(): void {
    this.indexIt.seekToLast();
    if (this.initData()) this.dataIt.seekToLast();
    this.skipBackward();
  }

  seek(target: Uint8Array): void {
    this.indexIt.seek(target);
    if (this.initData()) this.dataIt.seek(target);
    this.skipForward();
  }

  seekForPrev(target: Uint8Array): void {
    // The block that would hold target is the first whose last key is >= target (or the last).
    this.indexIt.seek(target);
    if (!this.indexIt.valid()) this.indexIt.seekToLast();
    if (this.initData()) this.dataIt.seekForPrev(target);
    this.skipBackward();
  }

  next(): void {
    this.dataIt.next();
    this.skipForward();
  }

  prev(): void {
    this.dataIt.prev();
    this.skipBackward();
  }

  key(): Uint8Array {
    return this.dataIt.key();
  }

  value(): Uint8Array {
    return this.dataIt.value();
  }

  /** Loads the block the index points at (kept if already loaded); false when the index is done. */
  private initData(): boolean {
    const ix = this.indexIt;
    if (!ix.valid()) {
      this.hasData = false;
      this.dataOffset = -1;
      return false;
    }
    const prevOffset = this.hasData ? this.dataOffset : -1;
    this.hasData = false;
    const block = this.table.blockAt(ix, this.fillCache, prevOffset);
    if (block !== undefined) {
      this.dataIt.reset(block);
      this.dataOffset = block.offset;
    }
    this.hasData = true;
    return true;
  }

  private skipForward(): void {
    while (this.hasData && !this.dataIt.valid()) {
      this.indexIt.next();
      if (this.initData()) this.dataIt.seekToFirst();
    }
  }

  private skipBackward(): void {
    while (this.hasData && !this.dataIt.valid()) {
      this.indexIt.prev();
      if (this.initData()) this.dataIt.seekToLast();
    }
  }
}
