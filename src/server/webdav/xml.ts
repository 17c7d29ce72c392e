/**
 * The XML of WebDAV (RFC 4918), by hand: a small namespace-aware parser for request bodies
 * (PROPFIND, PROPPATCH, LOCK) and string helpers for the responses.
 *
 * The S3 layer's parser (../s3/xml.ts) strips namespace prefixes, which WebDAV cannot afford:
 * `<D:prop>` and `<Z:Win32LastModifiedTime xmlns:Z="urn:schemas-microsoft-com:">` are told apart
 * by namespace only. This one resolves every element to (namespace URI, local name) with
 * `xmlns` / `xmlns:p` scoping, and keeps mixed content in order so that a lock's `DAV:owner` can be
 * echoed back as the client sent it. Its text escaping is the S3 layer's ({@link escapeXml}).
 *
 * Accepted: XML 1.0 in UTF-8 (a BOM is skipped), the XML declaration, comments, CDATA, the five
 * predefined entities and numeric character references. Refused ({@link DavXmlError}, which the
 * server answers with 400): DOCTYPE and ENTITY declarations (no entity expansion of any kind),
 * processing instructions, undefined entities or namespace prefixes, characters XML forbids,
 * invalid UTF-8, mismatched or unclosed tags, text or a second element outside the root, and
 * documents beyond the byte, depth or element limits.
 */
import { escapeXml } from "../s3/xml.js";

export const DAV_NS = "DAV:";
export const MS_NS = "urn:schemas-microsoft-com:";
const XML_NS = "http://www.w3.org/XML/1998/namespace";

export { escapeXml };

export interface DavElement {
  /** Namespace URI ("" when none). */
  ns: string;
  /** Local name. */
  name: string;
  /** Attributes without namespace declarations, by their name as written. */
  attributes: Record<string, string>;
  /** Child elements and text, in document order. */
  content: Array<DavElement | string>;
}

export class DavXmlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DavXmlError";
  }
}

export interface DavXmlLimits {
  /** Default 1 MiB. */
  maxBytes?: number;
  /** Default 64. */
  maxDepth?: number;
  /** Default 10,000. */
  maxElements?: number;
}

const NC_START = "A-Za-z_\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C\\u200D\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD";
const NC_CHAR = NC_START + "\\-.0-9\\u00B7\\u0300-\\u036F\\u203F\\u2040";
// The ranges are XML's, not grapheme clusters.
// eslint-disable-next-line no-misleading-character-class
const QNAME_AT = new RegExp(`[${NC_START}][${NC_CHAR}]*(?::[${NC_START}][${NC_CHAR}]*)?`, "y");
const FORBIDDEN_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const XML_DECL_AT = /<\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*(?:"1\.[0-9]+"|'1\.[0-9]+')(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(?:"([A-Za-z][A-Za-z0-9._-]*)"|'([A-Za-z][A-Za-z0-9._-]*)'))?(?:[ \t\n]+standalone[ \t\n]*=[ \t\n]*(?:"(?:yes|no)"|'(?:yes|no)'))?[ \t\n]*\?>/y;
const PREDEFINED: Readonly<Record<string, string>> = { lt: "<", gt: ">", amp: "&", apos: "'", quot: '"' };
const UTF8 = new TextDecoder("utf-8", { fatal: true });

interface Frame {
  qname: string;
  el: DavElement;
  scope: ReadonlyMap<string, string>;
}

/** Parses a request body into its root element; throws {@link DavXmlError} (see the module comment). */
export function parseDavXml(input: Uint8Array | string, limits: DavXmlLimits = {}): DavElement {
  const maxBytes = limits.maxBytes ?? 1024 * 1024;
  const maxDepth = limits.maxDepth ?? 64;
  const maxElements = limits.maxElements ?? 10_000;
  let s: string;
  if (typeof input === "string") {
    if (Buffer.byteLength(input, "utf8") > maxBytes) throw new DavXmlError(`document larger than ${maxBytes} bytes`);
    s = input;
  } else {
    if (input.byteLength > maxBytes) throw new DavXmlError(`document larger than ${maxBytes} bytes`);
    try {
      s = UTF8.decode(input);
    } catch {
      throw new DavXmlError("document is not valid UTF-8");
    }
  }
  if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
  const bad = FORBIDDEN_CHAR.exec(s);
  if (bad !== null) throw new DavXmlError(`character U+${(bad[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")} is not allowed in XML (offset ${bad.index})`);
  if (s.includes("\r")) s = s.replace(/\r\n?/g, "\n");
  const n = s.length;
  let pos = 0;
  let elements = 0;
  let root: DavElement | undefined;
  const stack: Frame[] = [];
  const rootScope: ReadonlyMap<string, string> = new Map([["xml", XML_NS]]);

  const isSpace = (c: number): boolean => c === 0x20 || c === 0x9 || c === 0xa;
  const skipSpace = (): void => {
    while (pos < n && isSpace(s.charCodeAt(pos))) pos++;
  };
  const readQName = (what: string): string => {
    QNAME_AT.lastIndex = pos;
    const m = QNAME_AT.exec(s);
    if (m === null) throw new DavXmlError(`expected ${what} name at offset ${pos}`);
    pos += m[0].length;
    return m[0];
  };
  const readReference = (): string => {
    // On "&".
    const start = pos;
    const semi = s.indexOf(";", pos);
    if (semi < 0 || semi - pos > 12) throw new DavXmlError(`malformed reference at offset ${start}`);
    const body = s.slice(pos + 1, semi);
    pos = semi + 1;
    if (body.startsWith("#")) {
      const m = /^#(?:x([0-9A-Fa-f]+)|([0-9]+))$/.exec(body);
      if (m === null) throw new DavXmlError(`bad character reference at offset ${start}`);
      const cp = m[1] !== undefined ? parseInt(m[1], 16) : parseInt(m[2]!, 10);
      if (!(cp === 9 || cp === 10 || cp === 13 || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff))) {
        throw new DavXmlError(`character reference to a character not allowed in XML at offset ${start}`);
      }
      return String.fromCodePoint(cp);
    }
    const ch = PREDEFINED[body];
    if (ch === undefined) throw new DavXmlError(`undefined entity &${body}; at offset ${start} (only the five predefined ones are accepted)`);
    return ch;
  };
  /** Text up to `<` (quote 0) or the closing quote of an attribute value, references replaced. */
  const readText = (quote: number): string => {
    let out = "";
    for (;;) {
      if (pos >= n) return out;
      const c = s.charCodeAt(pos);
      if (quote === 0 ? c === 0x3c : c === quote) return out;
      if (c === 0x26) {
        out += readReference();
        continue;
      }
      if (quote !== 0 && c === 0x3c) throw new DavXmlError(`"<" in an attribute value at offset ${pos}`);
      let end = pos + 1;
      while (end < n) {
        const d = s.charCodeAt(end);
        if (d === 0x26 || d === 0x3c || (quote !== 0 && d === quote)) break;
        end++;
      }
      let lit = s.slice(pos, end);
      if (quote === 0 && lit.includes("]]>")) throw new DavXmlError(`"]]>" in text at offset ${pos}`);
      if (quote !== 0) lit = lit.replace(/[\t\n]/g, " ");
      out += lit;
      pos = end;
    }
  };
  const skipComment = (): void => {
    const end = s.indexOf("--", pos + 4);
    if (end < 0) throw new DavXmlError(`unterminated comment at offset ${pos}`);
    if (s.charCodeAt(end + 2) !== 0x3e) throw new DavXmlError(`"--" inside a comment at offset ${end}`);
    pos = end + 3;
  };
  const refuseMarkup = (): never => {
    if (s.startsWith("<!DOCTYPE", pos)) throw new DavXmlError(`DOCTYPE declarations are not accepted (offset ${pos})`);
    if (s.startsWith("<!ENTITY", pos)) throw new DavXmlError(`ENTITY declarations are not accepted (offset ${pos})`);
    if (s.startsWith("<?", pos)) throw new DavXmlError(`processing instructions are not accepted (offset ${pos})`);
    throw new DavXmlError(`unexpected markup at offset ${pos}`);
  };
  const resolve = (qname: string, scope: ReadonlyMap<string, string>, isAttr: boolean): { ns: string; local: string } => {
    const colon = qname.indexOf(":");
    if (colon < 0) return { ns: isAttr ? "" : (scope.get("") ?? ""), local: qname };
    const prefix = qname.slice(0, colon);
    const ns = scope.get(prefix);
    if (ns === undefined) throw new DavXmlError(`undeclared namespace prefix "${prefix}" in <${qname}>`);
    return { ns, local: qname.slice(colon + 1) };
  };

  const startTag = (): void => {
    const tagStart = pos;
    pos++;
    const qname = readQName("element");
    const attrs: Array<[string, string]> = [];
    for (;;) {
      const before = pos;
      skipSpace();
      const c = s.charCodeAt(pos);
      if (c === 0x3e || (c === 0x2f && s.charCodeAt(pos + 1) === 0x3e)) break;
      if (pos >= n) throw new DavXmlError(`unterminated start tag at offset ${tagStart}`);
      if (pos === before) throw new DavXmlError(`expected whitespace before an attribute at offset ${pos}`);
      const attr = readQName("attribute");
      skipSpace();
      if (s.charCodeAt(pos) !== 0x3d) throw new DavXmlError(`expected "=" after an attribute at offset ${pos}`);
      pos++;
      skipSpace();
      const quote = s.charCodeAt(pos);
      if (quote !== 0x22 && quote !== 0x27) throw new DavXmlError(`expected a quoted attribute value at offset ${pos}`);
      pos++;
      const value = readText(quote);
      if (pos >= n) throw new DavXmlError(`unterminated attribute value at offset ${tagStart}`);
      pos++;
      if (attrs.some(([a]) => a === attr)) throw new DavXmlError(`duplicate attribute ${attr} at offset ${tagStart}`);
      if (attrs.length >= 64) throw new DavXmlError(`too many attributes at offset ${tagStart}`);
      attrs.push([attr, value]);
    }
    const selfClosing = s.charCodeAt(pos) === 0x2f;
    pos += selfClosing ? 2 : 1;
    if (root !== undefined && stack.length === 0) throw new DavXmlError(`more than one root element (offset ${tagStart})`);
    if (++elements > maxElements) throw new DavXmlError(`more than ${maxElements} elements`);
    if (stack.length + 1 > maxDepth) throw new DavXmlError(`elements nested deeper than ${maxDepth}`);
    const parent = stack.at(-1);
    let scope = parent?.scope ?? rootScope;
    const attributes: Record<string, string> = {};
    for (const [a, v] of attrs) {
      if (a === "xmlns" || a.startsWith("xmlns:")) {
        if (scope === (parent?.scope ?? rootScope)) scope = new Map(scope);
        const prefix = a === "xmlns" ? "" : a.slice(6);
        if (prefix !== "" && v === "") throw new DavXmlError(`empty namespace for prefix "${prefix}" at offset ${tagStart}`);
        (scope as Map<string, string>).set(prefix, v);
      } else {
        Object.defineProperty(attributes, a, { value: v, enumerable: true, writable: true, configurable: true });
      }
    }
    for (const a of Object.keys(attributes)) resolve(a, scope, true);
    const { ns, local } = resolve(qname, scope, false);
    const el: DavElement = { ns, name: local, attributes, content: [] };
    if (parent !== undefined) parent.el.content.push(el);
    else root = el;
    if (!selfClosing) stack.push({ qname, el, scope });
  };

  const endTag = (): void => {
    const tagStart = pos;
    pos += 2;
    const qname = readQName("element");
    skipSpace();
    if (s.charCodeAt(pos) !== 0x3e) throw new DavXmlError(`malformed end tag at offset ${tagStart}`);
    pos++;
    const frame = stack.pop();
    if (frame === undefined) throw new DavXmlError(`end tag </${qname}> without a start tag at offset ${tagStart}`);
    if (frame.qname !== qname) throw new DavXmlError(`end tag </${qname}> does not match <${frame.qname}> at offset ${tagStart}`);
  };

  if (s.startsWith("<?xml", 0)) {
    XML_DECL_AT.lastIndex = 0;
    const m = XML_DECL_AT.exec(s);
    if (m === null) throw new DavXmlError("malformed XML declaration");
    const encoding = (m[1] ?? m[2])?.toLowerCase();
    if (encoding !== undefined && !["utf-8", "utf8", "us-ascii", "ascii"].includes(encoding)) throw new DavXmlError(`unsupported encoding ${encoding} (documents must be UTF-8)`);
    pos = m[0].length;
  }
  while (pos < n) {
    const c = s.charCodeAt(pos);
    const top = stack.at(-1);
    if (top === undefined) {
      if (isSpace(c)) pos++;
      else if (s.startsWith("<!--", pos)) skipComment();
      else if (c === 0x3c && (s.charCodeAt(pos + 1) === 0x21 || s.charCodeAt(pos + 1) === 0x3f)) refuseMarkup();
      else if (c === 0x3c && s.charCodeAt(pos + 1) === 0x2f) throw new DavXmlError(`end tag without a start tag at offset ${pos}`);
      else if (c === 0x3c) startTag();
      else throw new DavXmlError(`text outside the root element at offset ${pos}`);
      continue;
    }
    if (c === 0x3c) {
      const d = s.charCodeAt(pos + 1);
      if (d === 0x2f) endTag();
      else if (d === 0x21) {
        if (s.startsWith("<!--", pos)) skipComment();
        else if (s.startsWith("<![CDATA[", pos)) {
          const end = s.indexOf("]]>", pos + 9);
          if (end < 0) throw new DavXmlError(`unterminated CDATA section at offset ${pos}`);
          pushText(top.el, s.slice(pos + 9, end));
          pos = end + 3;
        } else refuseMarkup();
      } else if (d === 0x3f) refuseMarkup();
      else startTag();
    } else {
      pushText(top.el, readText(0));
    }
  }
  const open = stack.at(-1);
  if (open !== undefined) throw new DavXmlError(`unclosed element <${open.qname}>`);
  if (root === undefined) throw new DavXmlError("no root element");
  return root;
}

function pushText(el: DavElement, text: string): void {
  if (text === "") return;
  const last = el.content.at(-1);
  if (typeof last === "string") el.content[el.content.length - 1] = last + text;
  else el.content.push(text);
}

// ---------------------------------------------------------------------------------------------
// Helpers over parsed elements

export function isDav(el: DavElement, name: string): boolean {
  return el.ns === DAV_NS && el.name === name;
}

/** The child elements (text dropped). */
export function elementsOf(el: DavElement): DavElement[] {
  return el.content.filter((c): c is DavElement => typeof c !== "string");
}

/** The text directly inside an element. */
export function textOf(el: DavElement): string {
  return el.content.filter((c): c is string => typeof c === "string").join("");
}

/** True when the element holds only whitespace text (no elements). */
export function isEmptyElement(el: DavElement): boolean {
  return el.content.every((c) => typeof c === "string" && c.trim() === "");
}

// ---------------------------------------------------------------------------------------------
// Writing

export const XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n';

/** A property name, as it appears in PROPFIND and PROPPATCH. */
export interface PropName {
  ns: string;
  name: string;
}

export function propKey(p: PropName): string {
  return `${p.ns} ${p.name}`;
}

/**
 * An element in the response: `D:` for DAV:, otherwise the name with its own default-namespace
 * declaration (every response declares `xmlns:D="DAV:"` on its root, so DAV: children of a
 * foreign element still resolve).
 */
export function element(p: PropName, inner?: string, attributes = ""): string {
  const open = p.ns === DAV_NS ? `D:${p.name}` : p.name;
  const decl = p.ns === DAV_NS ? "" : ` xmlns="${escapeXml(p.ns)}"`;
  return inner === undefined || inner === "" ? `<${open}${decl}${attributes}/>` : `<${open}${decl}${attributes}>${inner}</${open}>`;
}

/** A DAV: element with content (already XML) or empty. */
export function dav(name: string, inner?: string): string {
  return element({ ns: DAV_NS, name }, inner);
}

/** A parsed element written back (namespaces made explicit; unprefixed attributes kept). */
export function serialize(el: DavElement): string {
  let attrs = "";
  for (const [k, v] of Object.entries(el.attributes)) if (!k.includes(":")) attrs += ` ${k}="${escapeXml(v)}"`;
  return element({ ns: el.ns, name: el.name }, serializeContent(el), attrs);
}

/** The content of a parsed element, written back. */
export function serializeContent(el: DavElement): string {
  return el.content.map((c) => (typeof c === "string" ? escapeXml(c) : serialize(c))).join("");
}
