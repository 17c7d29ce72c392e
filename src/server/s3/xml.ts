/**
 * The XML of the S3 protocol, written by hand: a writer for response documents and a strict,
 * bounded parser for the request documents S3 accepts, with typed parsers for each of them.
 *
 * Writer ({@link xml}): a plain-data tree (objects, arrays, scalars) becomes a document with the
 * XML declaration and, by default, the S3 namespace on the root. Element order is insertion order.
 *
 * Text escaping policy ({@link escapeXml}):
 * - `&` `<` `>` `"` `'` become `&amp;` `&lt;` `&gt;` `&quot;` `&apos;`;
 * - TAB, LF and CR become `&#9;` `&#10;` `&#13;` (legal in XML 1.0, and a reference survives the
 *   end-of-line and attribute-value normalization every XML parser applies; this is also what the
 *   S3 documentation prescribes for `\r` and `\n` in keys);
 * - characters XML 1.0 forbids (C0 controls other than TAB/LF/CR, U+FFFE, U+FFFF) cannot be
 *   represented in a well-formed document at all, yet S3 keys may hold them. Amazon S3 writes them
 *   as a hexadecimal character reference anyway (`&#x1;`, `&#x1b;`), and so do we: lowercase hex,
 *   no padding. Strict parsers (libxml2, expat, Woodstox, and ours) refuse such a document, which
 *   is why S3 offers `encoding-type=url`: when a request asks for it, the listing handlers must
 *   URL-encode keys before they reach the writer, and no forbidden character remains. The
 *   alternatives are worse: refusing to write the document turns every listing of the bucket into
 *   a 500 until the key is deleted, and substituting U+FFFD returns keys that do not exist (and
 *   can collide). {@link hasForbiddenXmlChars} lets a caller detect the case.
 * - a lone UTF-16 surrogate (impossible in a key decoded from UTF-8) becomes U+FFFD, which is what
 *   the UTF-8 encoding of the response would produce anyway.
 * - everything else (all of Unicode, astral plane included) is written as itself, in UTF-8.
 *
 * Parser ({@link parseXml}): XML 1.0 documents in UTF-8, with the XML declaration, comments, CDATA
 * sections, the five predefined entities and (validated) numeric character references. Everything
 * else a request body has no business holding is refused with S3 `MalformedXML` (the reason is in
 * the error's `cause`): any DOCTYPE or ENTITY declaration (no external entities, no entity
 * expansion), processing instructions, undefined entities, characters XML 1.0 forbids (raw or as
 * references), invalid UTF-8, mismatched or unclosed tags, text or a second element outside the
 * root, and inputs beyond the byte, depth, element-count and attribute-count limits. The parser is
 * iterative (no recursion) and linear in the input.
 */
import { S3Error, s3 } from "./errors.js";

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/**
 * A response tree. Under an object, each key is an element (in insertion order); an array under
 * a key repeats the element once per item; `null` and `undefined` are omitted; strings are
 * escaped; numbers (finite only) and booleans are written as text. Keys that start with `@` are
 * attributes of the element holding the object (e.g. `{ "@xsi:type": "CanonicalUser", ID: id }`).
 *
 * Content that is not a set of distinct names (interleaved `Version` and `DeleteMarker`
 * elements) is an array of objects, written in order: as the body of {@link xml} itself, or
 * under a key as an array inside the array (`{ K: [[{ A: 1 }, { B: 2 }, { A: 3 }]] }` is
 * `<K><A>1</A><B>2</B><A>3</A></K>`).
 */
export type XmlNode = string | number | boolean | null | undefined | XmlNode[] | { [element: string]: XmlNode };

/** The namespace of every S3 response document. */
export const S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/";

export const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>';

export interface XmlWriteOptions {
  /** Put `xmlns="http://s3.amazonaws.com/doc/2006-03-01/"` on the root. Default true. */
  namespace?: boolean;
}

/**
 * Renders `body` as the content of the element `root`, preceded by the XML declaration.
 * Programming errors (an invalid element name, a non-finite number, an object as an attribute
 * value) throw a TypeError.
 */
export function xml(root: string, body: XmlNode, options: XmlWriteOptions = {}): string {
  const out: string[] = [XML_DECLARATION, "\n"];
  const rootAttrs: Record<string, XmlNode> = {};
  if (options.namespace ?? true) rootAttrs["@xmlns"] = S3_XMLNS;
  if (isRecord(body)) {
    for (const key of Object.keys(body)) if (key.startsWith("@")) rootAttrs[key] = body[key];
  }
  checkName(root);
  out.push("<", root);
  writeAttributes(out, rootAttrs);
  out.push(">");
  writeContent(out, body);
  out.push("</", root, ">");
  return out.join("");
}

function isRecord(node: XmlNode): node is { [element: string]: XmlNode } {
  return typeof node === "object" && node !== null && !Array.isArray(node);
}

const WRITER_NAME = /^[A-Za-z_][A-Za-z0-9._-]*(?::[A-Za-z_][A-Za-z0-9._-]*)?$/;

function checkName(name: string): void {
  if (!WRITER_NAME.test(name)) throw new TypeError(`xml: invalid element or attribute name ${JSON.stringify(name)}`);
}

function writeElement(out: string[], name: string, value: XmlNode): void {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) {
      if (!Array.isArray(item)) writeElement(out, name, item);
      else {
        // An array inside the array: the content of one element, as a sequence.
        checkName(name);
        out.push("<", name, ">");
        writeContent(out, item);
        out.push("</", name, ">");
      }
    }
    return;
  }
  checkName(name);
  out.push("<", name);
  if (isRecord(value)) writeAttributes(out, value);
  out.push(">");
  writeContent(out, value);
  out.push("</", name, ">");
}

function writeAttributes(out: string[], obj: { [element: string]: XmlNode }): void {
  for (const key of Object.keys(obj)) {
    if (!key.startsWith("@")) continue;
    const v = obj[key];
    if (v === undefined || v === null) continue;
    const name = key.slice(1);
    checkName(name);
    out.push(" ", name, '="', scalarText(v, key), '"');
  }
}

function scalarText(v: XmlNode, where: string): string {
  if (typeof v === "string") return escapeXml(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError(`xml: non-finite number at ${where}`);
    return String(v);
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  throw new TypeError(`xml: ${where} must be a string, number or boolean`);
}

function writeContent(out: string[], value: XmlNode): void {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) writeContent(out, item);
  } else if (isRecord(value)) {
    for (const key of Object.keys(value)) {
      if (key.startsWith("@")) continue;
      writeElement(out, key, value[key]);
    }
  } else {
    out.push(scalarText(value, "text"));
  }
}

/** True when a character is allowed in an XML 1.0 document (the `Char` production). */
export function isXmlChar(codePoint: number): boolean {
  return (
    codePoint === 0x9 ||
    codePoint === 0xa ||
    codePoint === 0xd ||
    (codePoint >= 0x20 && codePoint <= 0xd7ff) ||
    (codePoint >= 0xe000 && codePoint <= 0xfffd) ||
    (codePoint >= 0x10000 && codePoint <= 0x10ffff)
  );
}

/**
 * True when `s` holds a character XML 1.0 forbids (a C0 control other than TAB/LF/CR, U+FFFE,
 * U+FFFF, or a lone surrogate): such a string cannot appear in a well-formed document, and the
 * writer falls back to S3's (non-well-formed) character reference for it.
 */
export function hasForbiddenXmlChars(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0xd800) continue;
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
      return true;
    }
    if (!isXmlChar(c)) return true;
  }
  return false;
}

/** Escapes text for element content or a double- or single-quoted attribute value (policy above). */
export function escapeXml(s: string): string {
  let out = "";
  let last = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let rep: string | undefined;
    if (c >= 0x20 && c < 0xd800) {
      if (c === 0x26) rep = "&amp;";
      else if (c === 0x3c) rep = "&lt;";
      else if (c === 0x3e) rep = "&gt;";
      else if (c === 0x22) rep = "&quot;";
      else if (c === 0x27) rep = "&apos;";
      else continue;
    } else if (c === 0x9) rep = "&#9;";
    else if (c === 0xa) rep = "&#10;";
    else if (c === 0xd) rep = "&#13;";
    else if (c < 0x20 || c === 0xfffe || c === 0xffff) rep = `&#x${c.toString(16)};`; // S3's choice
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
      rep = "\uFFFD";
    } else if (c >= 0xdc00 && c <= 0xdfff) rep = "\uFFFD";
    else continue;
    out += s.slice(last, i) + rep;
    last = i + 1;
  }
  return last === 0 ? s : out + s.slice(last);
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

export interface XmlElement {
  /** Local name: a namespace prefix (`s3:Delete`) is stripped. */
  name: string;
  /** Attributes by their name as written (prefix and `xmlns` declarations included). */
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The character data directly inside this element (text and CDATA, whitespace included). */
  text: string;
}

export interface XmlParseOptions {
  /** Largest input in bytes (UTF-8). Default 1 MiB. */
  maxBytes?: number;
  /** Deepest element nesting (the root is depth 1). Default 32. */
  maxDepth?: number;
  /** Most elements in the document. Default 100,000. */
  maxElements?: number;
  /** Most attributes on one element. Default 64 (S3 documents carry one or two). */
  maxAttributes?: number;
}

export const XML_PARSE_DEFAULTS: Readonly<Required<XmlParseOptions>> = Object.freeze({
  maxBytes: 1024 * 1024,
  maxDepth: 32,
  maxElements: 100_000,
  maxAttributes: 64,
});

/** S3 `MalformedXML`, with the specific reason in `cause` (for logs; clients see S3's message). */
export function malformed(reason: string): S3Error {
  const err = s3.malformedXML();
  err.cause = reason;
  return err;
}

const NAME_START =
  "A-Z_a-z\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C\\u200D" +
  "\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD\\u{10000}-\\u{EFFFF}";
const NAME_CHAR = NAME_START + "\\-.0-9\\u00B7\\u0300-\\u036F\\u203F\\u2040";
const NCNAME = `[${NAME_START}][${NAME_CHAR}]*`;
/** A qualified name (`prefix:local` or `local`), matched at `lastIndex`. */
// The ranges are XML's, not grapheme clusters: ZWJ/ZWNJ and combining marks are name characters.
// eslint-disable-next-line no-misleading-character-class
const QNAME_AT = new RegExp(`${NCNAME}(?::${NCNAME})?`, "uy");
/** A character outside XML 1.0's `Char` (lone surrogates included, thanks to the `u` flag). */
const FORBIDDEN_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const XML_DECL_AT =
  /<\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*(?:"1\.[0-9]+"|'1\.[0-9]+')(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(?:"([A-Za-z][A-Za-z0-9._-]*)"|'([A-Za-z][A-Za-z0-9._-]*)'))?(?:[ \t\n]+standalone[ \t\n]*=[ \t\n]*(?:"(?:yes|no)"|'(?:yes|no)'))?[ \t\n]*\?>/y;
/** The five predefined entities, by the first character of their name. */
const PREDEFINED: Readonly<Record<number, ReadonlyArray<readonly [string, string]>>> = {
  0x6c: [["lt;", "<"]],
  0x67: [["gt;", ">"]],
  0x61: [
    ["amp;", "&"],
    ["apos;", "'"],
  ],
  0x71: [["quot;", '"']],
};

interface Frame {
  qname: string;
  el: XmlElement;
}

/** Stateless between calls (no streaming), so one instance serves every parse. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

function decodeInput(input: string | Uint8Array, maxBytes: number): string {
  let s: string;
  if (typeof input === "string") {
    // Every UTF-16 unit is at least one UTF-8 byte: the cheap test first.
    if (input.length > maxBytes || Buffer.byteLength(input, "utf8") > maxBytes) {
      throw malformed(`document larger than ${maxBytes} bytes`);
    }
    s = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  } else {
    if (input.byteLength > maxBytes) throw malformed(`document larger than ${maxBytes} bytes`);
    try {
      // fatal: invalid UTF-8 throws; a leading BOM is consumed.
      s = UTF8.decode(input);
    } catch {
      throw malformed("document is not valid UTF-8");
    }
  }
  return s;
}

/**
 * Parses a request body into its root element. Throws S3 `MalformedXML` for anything that is not
 * a well-formed, DTD-free, UTF-8 XML 1.0 document within the limits (see the module comment).
 */
export function parseXml(text: string | Buffer, options: XmlParseOptions = {}): XmlElement {
  const maxBytes = options.maxBytes ?? XML_PARSE_DEFAULTS.maxBytes;
  const maxDepth = options.maxDepth ?? XML_PARSE_DEFAULTS.maxDepth;
  const maxElements = options.maxElements ?? XML_PARSE_DEFAULTS.maxElements;
  const maxAttributes = options.maxAttributes ?? XML_PARSE_DEFAULTS.maxAttributes;
  let s = decodeInput(text, maxBytes);
  const bad = FORBIDDEN_CHAR.exec(s);
  if (bad !== null) {
    const cp = bad[0].codePointAt(0) ?? 0;
    throw malformed(`character U+${cp.toString(16).toUpperCase().padStart(4, "0")} not allowed in XML at offset ${bad.index}`);
  }
  // End-of-line normalization (XML 1.0 §2.11); references like &#13; are not affected.
  if (s.includes("\r")) s = s.replace(/\r\n?/g, "\n");
  const n = s.length;
  let pos = 0;
  let elements = 0;
  let nextAmp = -1; // position of the next "&" at or after pos, once searched
  let root: XmlElement | undefined;
  const stack: Frame[] = [];

  const isSpace = (c: number): boolean => c === 0x20 || c === 0x9 || c === 0xa;
  const skipSpace = (): void => {
    while (pos < n && isSpace(s.charCodeAt(pos))) pos++;
  };
  const readQName = (what: string): string => {
    QNAME_AT.lastIndex = pos;
    const m = QNAME_AT.exec(s);
    if (m === null) throw malformed(`expected ${what} name at offset ${pos}`);
    pos += m[0].length;
    return m[0];
  };
  /** A reference at `pos` (on the `&`): the character it stands for; `pos` moves past its `;`. */
  const readReference = (): string => {
    const start = pos;
    if (s.charCodeAt(pos + 1) === 0x23 /* # */) {
      let i = pos + 2;
      const hex = s.charCodeAt(i) === 0x78; /* x */
      if (hex) i++;
      const digits = i;
      let cp = 0;
      for (; i < n; i++) {
        const d = s.charCodeAt(i);
        let v: number;
        if (d >= 0x30 && d <= 0x39) v = d - 0x30;
        else if (hex && d >= 0x61 && d <= 0x66) v = d - 0x57;
        else if (hex && d >= 0x41 && d <= 0x46) v = d - 0x37;
        else break;
        cp = Math.min(cp * (hex ? 16 : 10) + v, 0x110000); // saturates: any overflow is invalid anyway
      }
      if (i === digits || s.charCodeAt(i) !== 0x3b) throw malformed(`bad character reference at offset ${start}`);
      if (!isXmlChar(cp)) throw malformed(`character reference to a character not allowed in XML at offset ${start}`);
      pos = i + 1;
      return String.fromCodePoint(cp);
    }
    const predefined = PREDEFINED[s.charCodeAt(pos + 1)];
    if (predefined !== undefined) {
      for (const [name, ch] of predefined) {
        if (s.startsWith(name, pos + 1)) {
          pos += name.length + 1;
          return ch;
        }
      }
    }
    QNAME_AT.lastIndex = pos + 1;
    const m = QNAME_AT.exec(s);
    if (m !== null && s.charCodeAt(pos + 1 + m[0].length) === 0x3b) throw malformed(`undefined entity &${m[0]}; at offset ${start}`);
    throw malformed(`malformed reference at offset ${start}`);
  };
  /**
   * Character data from `pos` up to (not including) `<` or, in an attribute value, the closing
   * quote, with references replaced. In attribute values literal TAB/LF become spaces (XML 1.0
   * attribute-value normalization).
   */
  const readCharData = (quote: number): string => {
    const stop = quote === 0 ? "<" : String.fromCharCode(quote);
    let end = s.indexOf(stop, pos);
    if (end < 0) end = n;
    let parts: string[] | undefined;
    for (;;) {
      if (nextAmp < pos) {
        nextAmp = s.indexOf("&", pos);
        if (nextAmp < 0) nextAmp = n; // none left: never searched again
      }
      const to = Math.min(end, nextAmp);
      if (to > pos) {
        let lit = s.slice(pos, to);
        if (quote === 0) {
          const cdataEnd = lit.indexOf("]]>");
          if (cdataEnd >= 0) throw malformed(`"]]>" in text at offset ${pos + cdataEnd}`);
        } else {
          const lt = lit.indexOf("<");
          if (lt >= 0) throw malformed(`"<" in an attribute value at offset ${pos + lt}`);
          if (lit.includes("\t") || lit.includes("\n")) lit = lit.replace(/[\t\n]/g, " ");
        }
        (parts ??= []).push(lit);
        pos = to;
      }
      if (to === end) return parts === undefined ? "" : parts.length === 1 ? (parts[0] as string) : parts.join("");
      // A reference never extends past `end`: neither "<" nor a quote can be part of one.
      (parts ??= []).push(readReference());
    }
  };
  const skipComment = (): void => {
    // On "<!--". "--" may not occur inside; the comment ends at the first "--", which must be "-->".
    const end = s.indexOf("--", pos + 4);
    if (end < 0) throw malformed(`unterminated comment at offset ${pos}`);
    if (s.charCodeAt(end + 2) !== 0x3e) throw malformed(`"--" inside a comment at offset ${end}`);
    pos = end + 3;
  };
  /** Refuses a markup declaration or processing instruction at `pos` (on "<!" or "<?"). */
  const refuseMarkup = (): never => {
    if (s.startsWith("<!DOCTYPE", pos)) throw malformed(`DOCTYPE declarations are not accepted (offset ${pos})`);
    if (s.startsWith("<!ENTITY", pos)) throw malformed(`ENTITY declarations are not accepted (offset ${pos})`);
    if (s.startsWith("<?", pos)) throw malformed(`processing instructions are not accepted (offset ${pos})`);
    throw malformed(`unexpected markup at offset ${pos}`);
  };

  const startTag = (): void => {
    // On "<" followed by a name.
    const tagStart = pos;
    pos++;
    const qname = readQName("element");
    const attrs: Array<[string, string]> = [];
    let attrNames: Set<string> | undefined; // only for elements with many attributes
    for (;;) {
      const before = pos;
      skipSpace();
      const c = s.charCodeAt(pos);
      if (c === 0x3e /* > */ || (c === 0x2f /* / */ && s.charCodeAt(pos + 1) === 0x3e)) break;
      if (pos >= n) throw malformed(`unterminated start tag at offset ${tagStart}`);
      if (pos === before) throw malformed(`expected whitespace before attribute at offset ${pos}`);
      const attr = readQName("attribute");
      skipSpace();
      if (s.charCodeAt(pos) !== 0x3d /* = */) throw malformed(`expected "=" after attribute at offset ${pos}`);
      pos++;
      skipSpace();
      const quote = s.charCodeAt(pos);
      if (quote !== 0x22 && quote !== 0x27) throw malformed(`expected a quoted attribute value at offset ${pos}`);
      pos++;
      const value = readCharData(quote);
      if (pos >= n) throw malformed(`unterminated attribute value at offset ${tagStart}`);
      pos++; // the closing quote
      if (attrs.length >= 8) attrNames ??= new Set(attrs.map(([a]) => a));
      if (attrNames !== undefined ? attrNames.has(attr) : attrs.some(([a]) => a === attr)) {
        throw malformed(`duplicate attribute ${attr} at offset ${tagStart}`);
      }
      if (attrs.length >= maxAttributes) throw malformed(`more than ${maxAttributes} attributes at offset ${tagStart}`);
      attrNames?.add(attr);
      attrs.push([attr, value]);
    }
    const selfClosing = s.charCodeAt(pos) === 0x2f;
    pos += selfClosing ? 2 : 1;
    if (root !== undefined && stack.length === 0) throw malformed(`more than one root element (offset ${tagStart})`);
    if (++elements > maxElements) throw malformed(`more than ${maxElements} elements`);
    if (stack.length + 1 > maxDepth) throw malformed(`elements nested deeper than ${maxDepth}`);
    const colon = qname.indexOf(":");
    // fromEntries defines own properties: an attribute named __proto__ is just a name.
    const attributes: Record<string, string> = attrs.length === 0 ? {} : Object.fromEntries(attrs);
    const el: XmlElement = { name: colon < 0 ? qname : qname.slice(colon + 1), attributes, children: [], text: "" };
    const parent = stack.at(-1);
    if (parent !== undefined) parent.el.children.push(el);
    else root = el;
    if (!selfClosing) stack.push({ qname, el });
  };

  const endTag = (): void => {
    // On "</".
    const tagStart = pos;
    pos += 2;
    const qname = readQName("element");
    skipSpace();
    if (s.charCodeAt(pos) !== 0x3e) throw malformed(`malformed end tag at offset ${tagStart}`);
    pos++;
    const frame = stack.pop();
    if (frame === undefined) throw malformed(`end tag </${qname}> without a start tag at offset ${tagStart}`);
    if (frame.qname !== qname) throw malformed(`end tag </${qname}> does not match <${frame.qname}> at offset ${tagStart}`);
  };

  // Prolog: the optional declaration (first thing in the document), then whitespace and comments.
  if (s.startsWith("<?xml", 0)) {
    XML_DECL_AT.lastIndex = 0;
    const m = XML_DECL_AT.exec(s);
    if (m === null) {
      if (/^<\?xml[ \t\n?]/.test(s)) throw malformed("malformed XML declaration");
      refuseMarkup(); // e.g. <?xml-stylesheet ...?>
    } else {
      const encoding = (m[1] ?? m[2])?.toLowerCase();
      if (encoding !== undefined && encoding !== "utf-8" && encoding !== "utf8" && encoding !== "us-ascii" && encoding !== "ascii") {
        throw malformed(`unsupported encoding ${encoding} (documents must be UTF-8)`);
      }
      pos = m[0].length;
    }
  }

  while (pos < n) {
    const c = s.charCodeAt(pos);
    if (stack.length === 0) {
      // Outside the root element: whitespace, comments, then one element.
      if (isSpace(c)) pos++;
      else if (s.startsWith("<!--", pos)) skipComment();
      else if (c === 0x3c && (s.charCodeAt(pos + 1) === 0x21 || s.charCodeAt(pos + 1) === 0x3f)) refuseMarkup();
      else if (c === 0x3c && s.charCodeAt(pos + 1) === 0x2f) throw malformed(`end tag without a start tag at offset ${pos}`);
      else if (c === 0x3c) startTag();
      else throw malformed(`text outside the root element at offset ${pos}`);
      continue;
    }
    const frame = stack[stack.length - 1] as Frame;
    if (c === 0x3c) {
      const d = s.charCodeAt(pos + 1);
      if (d === 0x2f) endTag();
      else if (d === 0x21) {
        if (s.startsWith("<!--", pos)) skipComment();
        else if (s.startsWith("<![CDATA[", pos)) {
          const end = s.indexOf("]]>", pos + 9);
          if (end < 0) throw malformed(`unterminated CDATA section at offset ${pos}`);
          frame.el.text += s.slice(pos + 9, end);
          pos = end + 3;
        } else refuseMarkup();
      } else if (d === 0x3f) refuseMarkup();
      else startTag();
    } else {
      frame.el.text += readCharData(0);
    }
  }
  const open = stack.at(-1);
  if (open !== undefined) throw malformed(`unclosed element <${open.qname}>`);
  if (root === undefined) throw malformed("no root element");
  return root;
}

// ---------------------------------------------------------------------------------------------
// Helpers over parsed elements
// ---------------------------------------------------------------------------------------------

/** The first child element with this local name. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** Every child element with this local name, in document order. */
export function children(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

function leafText(el: XmlElement): string {
  if (el.children.length > 0) throw malformed(`<${el.name}> must hold text, not elements`);
  return el.text;
}

/** The text of a required child that occurs once and holds only text; otherwise MalformedXML. */
export function textOf(el: XmlElement, name: string): string {
  const v = optionalTextOf(el, name);
  if (v === undefined) throw malformed(`<${el.name}> lacks <${name}>`);
  return v;
}

/** The text of an optional child (at most once, text only); undefined when absent. */
export function optionalTextOf(el: XmlElement, name: string): string | undefined {
  const found = children(el, name);
  if (found.length > 1) throw malformed(`<${el.name}> has more than one <${name}>`);
  const first = found[0];
  return first === undefined ? undefined : leafText(first);
}

function requireRoot(el: XmlElement, name: string): XmlElement {
  if (el.name !== name) throw malformed(`expected root element <${name}>, got <${el.name}>`);
  return el;
}

// ---------------------------------------------------------------------------------------------
// Typed parsers for the request documents
// ---------------------------------------------------------------------------------------------

/**
 * Default byte limit for the two documents whose legal size can exceed 1 MiB: 10,000 parts with
 * checksums, or 1,000 keys of 1,024 bytes each with every character escaped.
 */
export const LARGE_DOCUMENT_MAX_BYTES = 8 * 1024 * 1024;

export const CHECKSUM_ELEMENTS: Readonly<Record<string, string>> = Object.freeze({
  ChecksumCRC32: "CRC32",
  ChecksumCRC32C: "CRC32C",
  ChecksumCRC64NVME: "CRC64NVME",
  ChecksumSHA1: "SHA1",
  ChecksumSHA256: "SHA256",
});

export interface CompletedPartXml {
  partNumber: number;
  /** As sent (clients usually quote it); compare with `normalizeEtag`. */
  etag: string;
  /** By algorithm as in `x-amz-checksum-*` (`CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`). */
  checksums?: Record<string, string>;
}

/**
 * CompleteMultipartUpload: at least one Part, each with PartNumber and ETag (any order; order
 * and duplicates are the store's to judge, as InvalidPartOrder). A PartNumber that is not an
 * integer is MalformedXML; one outside 1..10000 is InvalidArgument, as S3 answers.
 */
export function parseCompleteMultipartUpload(body: string | Buffer, options: XmlParseOptions = {}): { parts: CompletedPartXml[] } {
  const root = requireRoot(parseXml(body, { ...options, maxBytes: options.maxBytes ?? LARGE_DOCUMENT_MAX_BYTES }), "CompleteMultipartUpload");
  const partEls = children(root, "Part");
  if (partEls.length === 0) throw malformed("CompleteMultipartUpload names no Part");
  const parts = partEls.map((p): CompletedPartXml => {
    const raw = textOf(p, "PartNumber").trim();
    if (!/^[+-]?[0-9]+$/.test(raw)) throw malformed(`PartNumber ${JSON.stringify(raw)} is not an integer`);
    const partNumber = Number(raw);
    if (!(partNumber >= 1 && partNumber <= 10000)) {
      throw s3.invalidArgument("Part number must be an integer between 1 and 10000, inclusive", "partNumber");
    }
    const part: CompletedPartXml = { partNumber, etag: textOf(p, "ETag").trim() };
    for (const [element, algorithm] of Object.entries(CHECKSUM_ELEMENTS)) {
      const v = optionalTextOf(p, element);
      if (v !== undefined) (part.checksums ??= {})[algorithm] = v.trim();
    }
    return part;
  });
  return { parts };
}

/** The most keys one DeleteObjects request may name. */
export const MAX_DELETE_OBJECTS = 1000;

/** DeleteObjects: 1 to 1000 Object elements, each with a Key (verbatim) and maybe a VersionId. */
export function parseDelete(
  body: string | Buffer,
  options: XmlParseOptions = {},
): { quiet: boolean; objects: Array<{ key: string; versionId?: string }> } {
  const root = requireRoot(parseXml(body, { ...options, maxBytes: options.maxBytes ?? LARGE_DOCUMENT_MAX_BYTES }), "Delete");
  const quietText = optionalTextOf(root, "Quiet")?.trim();
  let quiet = false;
  if (quietText !== undefined) {
    if (quietText === "true" || quietText === "1") quiet = true;
    else if (quietText !== "false" && quietText !== "0") throw malformed(`Quiet ${JSON.stringify(quietText)} is not a boolean`);
  }
  const objectEls = children(root, "Object");
  if (objectEls.length === 0) throw malformed("Delete names no Object");
  if (objectEls.length > MAX_DELETE_OBJECTS) throw malformed(`Delete names more than ${MAX_DELETE_OBJECTS} objects`);
  const objects = objectEls.map((o) => {
    const key = textOf(o, "Key");
    const versionId = optionalTextOf(o, "VersionId");
    return versionId === undefined ? { key } : { key, versionId };
  });
  return { quiet, objects };
}

/** PutBucketVersioning: Status (Enabled or Suspended; anything else is MalformedXML) and MfaDelete. */
export function parseVersioningConfiguration(
  body: string | Buffer,
  options: XmlParseOptions = {},
): { status?: "Enabled" | "Suspended"; mfaDelete?: string } {
  const root = requireRoot(parseXml(body, options), "VersioningConfiguration");
  const out: { status?: "Enabled" | "Suspended"; mfaDelete?: string } = {};
  const status = optionalTextOf(root, "Status")?.trim();
  if (status !== undefined) {
    if (status !== "Enabled" && status !== "Suspended") throw malformed(`versioning Status ${JSON.stringify(status)}`);
    out.status = status;
  }
  const mfaDelete = optionalTextOf(root, "MfaDelete")?.trim();
  if (mfaDelete !== undefined) out.mfaDelete = mfaDelete;
  return out;
}

/**
 * CreateBucket's optional body. An empty (or all-whitespace) body is `{}`; so is an empty
 * LocationConstraint (which S3 reads as us-east-1).
 */
export function parseCreateBucketConfiguration(body: string | Buffer, options: XmlParseOptions = {}): { locationConstraint?: string } {
  if (isBlank(body)) return {};
  const root = requireRoot(parseXml(body, options), "CreateBucketConfiguration");
  const lc = optionalTextOf(root, "LocationConstraint")?.trim();
  return lc === undefined || lc === "" ? {} : { locationConstraint: lc };
}

function isBlank(body: string | Uint8Array): boolean {
  if (body.length > 4096) return false; // a blank body that large is malformed: let the parser say so
  if (typeof body === "string") return /^[ \t\r\n]*$/.test(body);
  return body.every((b) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d);
}

export interface Tag {
  key: string;
  value: string;
}

export interface TaggingOptions extends XmlParseOptions {
  /** Most tags allowed: 10 for objects (the default), 50 for buckets. */
  maxTags?: number;
}

/** S3 `InvalidTag` (400). */
export function invalidTag(message: string): S3Error {
  return new S3Error("InvalidTag", 400, message);
}

/** The characters S3 allows in tag keys and values. */
const TAG_CHARS = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

/**
 * Checks a tag set against S3's rules (also for the `x-amz-tagging` header): at most `maxTags`
 * tags, keys of 1 to 128 and values of 0 to 256 Unicode characters from S3's character set,
 * no key twice. Violations are InvalidTag.
 */
export function validateTags(tags: readonly Tag[], maxTags = 10): void {
  if (tags.length > maxTags) throw invalidTag(`Object tags cannot be greater than ${maxTags}`);
  const seen = new Set<string>();
  for (const { key, value } of tags) {
    const keyLength = [...key].length;
    if (keyLength === 0 || !TAG_CHARS.test(key)) throw invalidTag("The TagKey you have provided is invalid");
    if (keyLength > 128) throw invalidTag("The TagKey you have provided is too long, max 128");
    if (!TAG_CHARS.test(value)) throw invalidTag("The TagValue you have provided is invalid");
    if ([...value].length > 256) throw invalidTag("The TagValue you have provided is too long, max 256");
    if (seen.has(key)) throw invalidTag("Cannot provide multiple Tags with the same key");
    seen.add(key);
  }
}

/** PutObjectTagging / PutBucketTagging: Tagging > TagSet > Tag (Key, Value), validated. */
export function parseTagging(body: string | Buffer, options: TaggingOptions = {}): Tag[] {
  const root = requireRoot(parseXml(body, options), "Tagging");
  const tagSets = children(root, "TagSet");
  const tagSet = tagSets[0];
  if (tagSet === undefined || tagSets.length > 1) throw malformed("Tagging must hold exactly one TagSet");
  const tags = children(tagSet, "Tag").map((t) => ({ key: textOf(t, "Key"), value: textOf(t, "Value") }));
  validateTags(tags, options.maxTags ?? 10);
  return tags;
}
