/**
 * Writes a sorted table (layout in format.ts) from entries added in increasing internal-key
 * order. Data blocks are cut once they reach `blockSize`; the index block (restart interval 1)
 * maps the last internal key of each data block to its handle (varint offset, varint size); the
 * bloom filter covers the distinct user keys. Output is buffered and handed to the file in chunks
 * of at least 64 KiB. The builder neither syncs nor closes the file.
 */
import { ByteWriter, getFixed64 } from "../coding.js";
import { StowageError } from "../../errors.js";
import { KIND_DELETE, TRAILER_SIZE } from "../format.js";
import type { WritableFile } from "../fs.js";
import { BlockBuilder } from "./block-builder.js";
import { compareInternalRange } from "./block.js";
import { BloomBuilder } from "./bloom.js";
import {
  BLOCK_TRAILER_SIZE,
  COMPRESSION_NONE,
  type BlockHandle,
  type Footer,
  type TableProperties,
  blockChecksum,
  encodeFooter,
  encodeProperties,
} from "./format.js";

export type { TableProperties } from "./format.js";

export interface TableBuilderOptions {
  /** Target uncompressed size of a data block (a block is cut once it reaches this). */
  blockSize: number;
  /** Keys between restart points in data blocks. */
  restartInterval: number;
  /** Bloom filter bits per user key; 0 writes no filter. */
  bloomBitsPerKey: number;
}

/** Pending output is handed to the file once it reaches this many bytes. */
const WRITE_CHUNK = 64 * 1024;

function misuse(what: string): StowageError {
  return new StowageError("STOWAGE_INVALID_ARGUMENT", `TableBuilder: ${what}`);
}

export class TableBuilder {
  private out: ByteWriter;
  /** Bytes already handed to the file. */
  private written = 0;
  private readonly data: BlockBuilder;
  private readonly index = new BlockBuilder(1, 1024);
  private readonly bloom: BloomBuilder | undefined;
  private readonly handleScratch = new ByteWriter(20);
  /** The last key added (a copy), `lastLen` bytes long. */
  private last = new Uint8Array(64);
  private lastLen = 0;
  private entries = 0;
  private deletions = 0;
  private minSeq = Number.MAX_SAFE_INTEGER;
  private maxSeq = 0;
  private smallest: Uint8Array | undefined;
  private closed = false;

  constructor(
    readonly file: WritableFile,
    readonly opts: TableBuilderOptions,
  ) {
    if (!(opts.blockSize > 0)) throw misuse(`blockSize must be positive, got ${opts.blockSize}`);
    if (!(opts.bloomBitsPerKey >= 0)) throw misuse(`bloomBitsPerKey must be >= 0, got ${opts.bloomBitsPerKey}`);
    this.data = new BlockBuilder(opts.restartInterval, opts.blockSize + 1024);
    this.bloom = opts.bloomBitsPerKey > 0 ? new BloomBuilder(opts.bloomBitsPerKey) : undefined;
    this.out = new ByteWriter(WRITE_CHUNK + opts.blockSize + 1024);
  }

  /** Entries added so far. */
  get numEntries(): number {
    return this.entries;
  }

  /** Bytes the file would have now: written + buffered + the pending data block. */
  get estimatedSize(): number {
    return this.written + this.out.len + (this.data.empty ? 0 : this.data.sizeEstimate);
  }

  /** Adds an entry; `ikey` must sort strictly after the previous key. Both are copied. */
  add(ikey: Uint8Array, value: Uint8Array): void {
    if (this.closed) throw misuse("add after finish or abandon");
    const klen = ikey.length;
    if (klen < TRAILER_SIZE) throw misuse(`internal key of ${klen} bytes is shorter than its trailer`);
    const last = this.last;
    if (this.entries > 0) {
      if (compareInternalRange(last, 0, this.lastLen, ikey, 0, klen) >= 0) {
        throw misuse("keys must be added in strictly increasing internal-key order");
      }
    } else {
      this.smallest = ikey.slice();
    }
    const userLen = klen - TRAILER_SIZE;
    if (this.bloom !== undefined) {
      // Keys arrive sorted, so a user key differs from every earlier one iff it differs from the last.
      let distinct = this.entries === 0 || this.lastLen - TRAILER_SIZE !== userLen;
      if (!distinct) {
        for (let i = 0; i < userLen; i++) {
          if (last[i] !== ikey[i]) {
            distinct = true;
            break;
          }
        }
      }
      if (distinct) this.bloom.addKey(ikey, 0, userLen);
    }
    const trailer = getFixed64(ikey, userLen);
    const seq = Math.floor(trailer / 256);
    if (seq < this.minSeq) this.minSeq = seq;
    if (seq > this.maxSeq) this.maxSeq = seq;
    if (ikey[userLen] === KIND_DELETE) this.deletions++;

    this.data.add(ikey, value);
    if (last.length < klen) this.last = new Uint8Array(Math.max(klen, last.length * 2));
    this.last.set(ikey);
    this.lastLen = klen;
    this.entries++;
    if (this.data.sizeEstimate >= this.opts.blockSize) this.flushDataBlock();
  }

  /**
   * Writes the pending data block, the filter, properties and index blocks and the footer, and
   * hands everything to the file. Returns the table's properties.
   */
  finish(): TableProperties {
    if (this.closed) throw misuse("finish after finish or abandon");
    this.flushDataBlock();
    this.closed = true;
    const dataBytes = this.written + this.out.len;

    let filter: BlockHandle = { offset: 0, size: 0 };
    if (this.bloom !== undefined) filter = this.writeBlock(this.bloom.finish());

    const props: TableProperties = {
      numEntries: this.entries,
      smallest: this.smallest ?? new Uint8Array(0),
      largest: this.last.slice(0, this.lastLen),
      minSeq: this.entries > 0 ? this.minSeq : 0,
      maxSeq: this.maxSeq,
      numDeletions: this.deletions,
      dataBytes,
      fileSize: 0,
    };
    const properties = this.writeBlock(encodeProperties(props));
    const index = this.writeBlock(this.index.finish());
    const footer: Footer = { index, filter, properties };
    this.out.bytes(encodeFooter(footer));
    this.flushOutput();
    props.fileSize = this.written;
    return props;
  }

  /** Stops building; the file holds whatever was already handed to it. */
  abandon(): void {
    this.closed = true;
  }

  private flushDataBlock(): void {
    if (this.data.empty) return;
    const handle = this.writeBlock(this.data.finish());
    this.data.reset();
    const h = this.handleScratch;
    h.reset();
    h.varint(handle.offset);
    h.varint(handle.size);
    this.index.add(this.last.subarray(0, this.lastLen), h.view());
    if (this.out.len >= WRITE_CHUNK) this.flushOutput();
  }

  /** Buffers `contents` plus its trailer; returns its handle. */
  private writeBlock(contents: Uint8Array): BlockHandle {
    const out = this.out;
    const offset = this.written + out.len;
    const size = contents.length;
    out.ensure(size + BLOCK_TRAILER_SIZE);
    const start = out.len;
    out.bytes(contents);
    out.byte(COMPRESSION_NONE);
    out.fixed32(blockChecksum(out.buf.subarray(start, start + size + 1)));
    return { offset, size };
  }

  private flushOutput(): void {
    const out = this.out;
    if (out.len === 0) return;
    // The buffer is handed over, not reused: a file wrapper may keep a reference to it.
    try {
      this.file.append(out.buf.subarray(0, out.len));
    } catch (err) {
      this.closed = true; // the file now ends at an unknown point: the table must be abandoned
      throw err;
    }
    this.written += out.len;
    this.out = new ByteWriter(Math.max(WRITE_CHUNK + this.opts.blockSize + 1024, 4096));
  }
}
