/**
 * The S3 XML layer: the response writer (shape, escaping, the control-character policy), the
 * strict request parser (features, every rejection, limits, bounded time), the typed parsers for
 * each request document (with the forms real clients send) and a seeded mutation fuzz.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { S3Error } from "../../src/server/s3/errors.js";
import {
  S3_XMLNS,
  child,
  children,
  escapeXml,
  hasForbiddenXmlChars,
  optionalTextOf,
  parseCompleteMultipartUpload,
  parseCreateBucketConfiguration,
  parseDelete,
  parseTagging,
  parseVersioningConfiguration,
  parseXml,
  textOf,
  validateTags,
  xml,
  type XmlElement,
  type XmlNode,
} from "../../src/server/s3/xml.js";
import { mulberry32 as rng } from "../../src/util/random.js";

const DECL = '<?xml version="1.0" encoding="UTF-8"?>\n';

/** Asserts `fn` throws an S3Error with this code (and, for MalformedXML, a cause matching `reason`). */
function throwsS3(fn: () => unknown, code: string, reason?: RegExp, status = 400): S3Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof S3Error, `expected S3Error ${code}, got ${caught === undefined ? "no error" : String(caught)}`);
  assert.equal(caught.code, code, `code (cause: ${String(caught.cause)})`);
  assert.equal(caught.status, status);
  if (reason !== undefined) assert.match(String(caught.cause), reason);
  return caught;
}

const malformedXml = (input: string | Buffer, reason?: RegExp, options?: Parameters<typeof parseXml>[1]): S3Error =>
  throwsS3(() => parseXml(input, options), "MalformedXML", reason);

describe("xml writer", () => {
  test("declaration, S3 namespace, insertion order, repeated elements, omitted nulls", () => {
    const out = xml("ListAllMyBucketsResult", {
      Owner: { ID: "abc", DisplayName: "me" },
      Buckets: { Bucket: [{ Name: "b1", CreationDate: "2024-01-01T00:00:00.000Z" }, { Name: "b2", CreationDate: undefined }] },
      Skipped: null,
      Prefix: "",
      IsTruncated: false,
      MaxKeys: 1000,
    });
    assert.equal(
      out,
      DECL +
        `<ListAllMyBucketsResult xmlns="${S3_XMLNS}">` +
        "<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>" +
        "<Buckets><Bucket><Name>b1</Name><CreationDate>2024-01-01T00:00:00.000Z</CreationDate></Bucket><Bucket><Name>b2</Name></Bucket></Buckets>" +
        "<Prefix></Prefix><IsTruncated>false</IsTruncated><MaxKeys>1000</MaxKeys>" +
        "</ListAllMyBucketsResult>",
    );
  });

  test("namespace off, scalar and empty bodies, arrays as content, attributes", () => {
    assert.equal(xml("Error", { Code: "NoSuchKey" }, { namespace: false }), DECL + "<Error><Code>NoSuchKey</Code></Error>");
    assert.equal(xml("LocationConstraint", "eu-west-1"), DECL + `<LocationConstraint xmlns="${S3_XMLNS}">eu-west-1</LocationConstraint>`);
    assert.equal(xml("LocationConstraint", null), DECL + `<LocationConstraint xmlns="${S3_XMLNS}"></LocationConstraint>`);
    assert.equal(xml("R", [{ A: 1 }, { B: true }, [{ A: 2 }]], { namespace: false }), DECL + "<R><A>1</A><B>true</B><A>2</A></R>");
    assert.equal(xml("R", { A: [[1, 2], 3], B: [] }, { namespace: false }), DECL + "<R><A>12</A><A>3</A></R>");
    // Interleaved content: the root's body as an array, or an array inside an array under a key.
    assert.equal(
      xml("ListVersionsResult", [{ Name: "b" }, { Version: { Key: "a" } }, { DeleteMarker: { Key: "b" } }, { Version: { Key: "c" } }], { namespace: false }),
      DECL + "<ListVersionsResult><Name>b</Name><Version><Key>a</Key></Version><DeleteMarker><Key>b</Key></DeleteMarker><Version><Key>c</Key></Version></ListVersionsResult>",
    );
    assert.equal(
      xml("R", { K: [[{ A: 1 }, { B: 2 }, { A: 3 }], [{ A: 4 }]] }, { namespace: false }),
      DECL + "<R><K><A>1</A><B>2</B><A>3</A></K><K><A>4</A></K></R>",
    );
    assert.equal(
      xml("AccessControlPolicy", {
        "@xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        Grant: { Grantee: { "@xsi:type": "CanonicalUser", "@skip": undefined, ID: "id&" }, Permission: "FULL_CONTROL" },
      }),
      DECL +
        `<AccessControlPolicy xmlns="${S3_XMLNS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">` +
        '<Grant><Grantee xsi:type="CanonicalUser"><ID>id&amp;</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlPolicy>',
    );
    // An explicit @xmlns wins; null removes it.
    assert.equal(xml("R", { "@xmlns": "urn:x" }), DECL + '<R xmlns="urn:x"></R>');
    assert.equal(xml("R", { "@xmlns": null }), DECL + "<R></R>");
  });

  test("programming errors are TypeErrors", () => {
    assert.throws(() => xml("bad name", {}), TypeError);
    assert.throws(() => xml("R", { "1x": "a" }), TypeError);
    assert.throws(() => xml("R", { "a<b": "a" }), TypeError);
    assert.throws(() => xml("R", { N: Number.NaN }), TypeError);
    assert.throws(() => xml("R", { N: Infinity }), TypeError);
    assert.throws(() => xml("R", { E: { "@a": { x: 1 } } }), TypeError);
    assert.throws(() => xml("R", { E: { "@a": [1] } }), TypeError);
  });

  test("escapes the five specials, TAB/LF/CR as references, keeps unicode as itself", () => {
    assert.equal(escapeXml(`a&b<c>d"e'f`), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
    assert.equal(escapeXml("t\tl\nc\r"), "t&#9;l&#10;c&#13;");
    const unicode = "é中文\u00A0\u2028\uE000\uFFFD😀𝄞\u{10FFFF}\u007F\u0085";
    assert.equal(escapeXml(unicode), unicode);
    assert.equal(escapeXml("plain"), "plain");
    assert.equal(escapeXml(""), "");
  });

  test("control characters XML forbids are written as S3 writes them; lone surrogates become U+FFFD", () => {
    assert.equal(escapeXml("a\u0001b"), "a&#x1;b");
    assert.equal(escapeXml("\u0000\u0008\u000B\u000C\u000E\u001B\u001F"), "&#x0;&#x8;&#xb;&#xc;&#xe;&#x1b;&#x1f;");
    assert.equal(escapeXml("\uFFFE\uFFFF"), "&#xfffe;&#xffff;");
    assert.equal(escapeXml("a\uD800b\uDC00c\uD83D"), "a\uFFFDb\uFFFDc\uFFFD");
    assert.equal(hasForbiddenXmlChars("a\u0001"), true);
    assert.equal(hasForbiddenXmlChars("\uFFFF"), true);
    assert.equal(hasForbiddenXmlChars("\uD800"), true);
    assert.equal(hasForbiddenXmlChars("\uDC00x"), true);
    assert.equal(hasForbiddenXmlChars("tab\tnl\ncr\r é 😀 \uFFFD"), false);
    // Not well-formed, so our strict parser (like S3's own) refuses what S3 writes for these keys:
    // clients must use encoding-type=url for them.
    malformedXml(xml("ListBucketResult", { Contents: { Key: "a\u0001" } }), /not allowed/);
  });

  test("every legal character survives the writer and the parser, in text and attributes", () => {
    const nasty = `&<>"'\t\n\r\r\n ]]> <!-- --> <![CDATA[x]]> &amp; &#38; é😀𝄞\u{10FFFF}\uFFFD\u0085\u2028 `;
    const doc = xml("R", { K: nasty, A: { "@v": nasty, "@w": " \t\n " } });
    const root = parseXml(doc);
    assert.equal(textOf(root, "K"), nasty);
    const a = child(root, "A");
    assert.equal(a?.attributes.v, nasty);
    assert.equal(a?.attributes.w, " \t\n ");
    assert.equal(root.attributes.xmlns, S3_XMLNS);
    assert.equal(parseXml(Buffer.from(doc, "utf8")).children[0]?.text, nasty);
  });

  test("random trees round-trip through the writer and the parser", () => {
    const rand = rng(0x5eed);
    const alphabet = ["a", "Z", " ", "&", "<", ">", '"', "'", "\t", "\n", "\r", "]", "é", "中", "😀", "\u{10400}", "\uFFFD", ";", "#"];
    const randText = (): string => {
      let t = "";
      const len = Math.floor(rand() * 12);
      for (let i = 0; i < len; i++) t += alphabet[Math.floor(rand() * alphabet.length)];
      return t;
    };
    const names = ["Key", "Value", "Part", "x", "Contents", "s3_a.b-c"];
    // Builds a tree and the elements the parser should see for it.
    const build = (depth: number): { node: { [k: string]: XmlNode }; expect: XmlElement[] } => {
      const node: { [k: string]: XmlNode } = {};
      const expect: XmlElement[] = [];
      const count = Math.floor(rand() * 4);
      for (let i = 0; i < count; i++) {
        const name = names[Math.floor(rand() * names.length)] as string;
        if (name in node) continue;
        const reps = rand() < 0.3 ? 1 + Math.floor(rand() * 3) : 0;
        const items: XmlNode[] = [];
        for (let r = 0; r < Math.max(reps, 1); r++) {
          if (depth < 4 && rand() < 0.4) {
            const sub = build(depth + 1);
            items.push(sub.node);
            expect.push({ name, attributes: {}, children: sub.expect, text: "" });
          } else {
            const pick = rand();
            const v: XmlNode = pick < 0.1 ? Math.floor(rand() * 1e6) : pick < 0.15 ? rand() < 0.5 : randText();
            items.push(v);
            expect.push({ name, attributes: {}, children: [], text: String(v) });
          }
        }
        node[name] = reps > 0 ? items : items[0];
      }
      return { node, expect };
    };
    for (let i = 0; i < 300; i++) {
      const { node, expect } = build(0);
      const parsed = parseXml(xml("Root", node, { namespace: false }));
      assert.deepEqual(parsed, { name: "Root", attributes: {}, children: expect, text: "" });
    }
  });
});

describe("xml parser: what it accepts", () => {
  test("declaration, BOM, comments, CDATA, entities, character references, attributes, self-closing, whitespace", () => {
    const doc =
      "\uFEFF<?xml version='1.0' encoding='utf-8' standalone=\"yes\" ?>\n<!-- lead -->\n" +
      `<s3:Root xmlns:s3="${S3_XMLNS}" a='1' b = "x &amp; &#65;&#x42;&#x0043;&#0068;" c='"' d="'">` +
      "<!-- inner - no - --><A>&lt;&gt;&amp;&quot;&apos;</A>" +
      "<B><![CDATA[<not> &markup; ]] ]>]]>tail</B>" +
      "<C/><D  />\n  <E\n>t\r\nu\rv&#13;&#10;</E\n>" +
      "<s3:F>😀&#x1F600;&#128512;</s3:F>" +
      "</s3:Root   >\n<!-- trail -->\n ";
    const root = parseXml(doc);
    assert.equal(root.name, "Root");
    assert.deepEqual(root.attributes, { "xmlns:s3": S3_XMLNS, a: "1", b: "x & ABCD", c: '"', d: "'" });
    assert.deepEqual(
      root.children.map((c) => c.name),
      ["A", "B", "C", "D", "E", "F"],
    );
    assert.equal(textOf(root, "A"), `<>&"'`);
    assert.equal(textOf(root, "B"), "<not> &markup; ]] ]>tail");
    assert.equal(textOf(root, "C"), "");
    assert.equal(textOf(root, "E"), "t\nu\nv\r\n");
    assert.equal(textOf(root, "F"), "😀😀😀");
    assert.equal(root.text, "\n  ");
  });

  test("minimal documents; string and Buffer agree; leading zeros in references", () => {
    assert.deepEqual(parseXml("<a/>"), { name: "a", attributes: {}, children: [], text: "" });
    assert.deepEqual(parseXml(Buffer.from("\uFEFF<a>é</a>")), { name: "a", attributes: {}, children: [], text: "é" });
    assert.equal(parseXml("<a>&#x0000000041;&#00000066;</a>").text, "AB");
    assert.equal(parseXml('<?xml version="1.0"?><a/>').name, "a");
    assert.equal(parseXml('<?xml version="1.0" encoding="US-ASCII"?><a/>').name, "a");
  });

  test("attribute values: literal whitespace normalized to spaces, references kept; __proto__ is just a name", () => {
    const root = parseXml('<a v="x\ty\nz" w="&#9;&#10;" __proto__="p" constructor="c"/>');
    assert.equal(root.attributes.v, "x y z");
    assert.equal(root.attributes.w, "\t\n");
    assert.equal(Object.getPrototypeOf(root.attributes), Object.prototype);
    assert.deepEqual(Object.keys(root.attributes), ["v", "w", "__proto__", "constructor"]);
    assert.equal(Object.getOwnPropertyDescriptor(root.attributes, "__proto__")?.value, "p");
  });

  test("helpers: child, children, textOf, optionalTextOf", () => {
    const root = parseXml("<r><a>1</a><b>x</b><a>2</a><c><d/></c></r>");
    assert.equal(child(root, "a")?.text, "1");
    assert.equal(child(root, "zz"), undefined);
    assert.deepEqual(
      children(root, "a").map((e) => e.text),
      ["1", "2"],
    );
    assert.equal(textOf(root, "b"), "x");
    assert.equal(optionalTextOf(root, "zz"), undefined);
    throwsS3(() => textOf(root, "zz"), "MalformedXML", /lacks <zz>/);
    throwsS3(() => textOf(root, "a"), "MalformedXML", /more than one <a>/);
    throwsS3(() => textOf(root, "c"), "MalformedXML", /must hold text/);
  });

  test("limits: exactly at the limit passes, one beyond fails", () => {
    const nest = (d: number): string => "<a>".repeat(d) + "</a>".repeat(d);
    assert.equal(parseXml(nest(32)).name, "a");
    malformedXml(nest(33), /deeper than 32/);
    assert.equal(parseXml(nest(5), { maxDepth: 5 }).name, "a");
    malformedXml(nest(6), /deeper than 5/, { maxDepth: 6 - 1 });
    const flat = (k: number): string => "<r>" + "<x/>".repeat(k - 1) + "</r>";
    assert.equal(parseXml(flat(10), { maxElements: 10 }).children.length, 9);
    malformedXml(flat(11), /more than 10 elements/, { maxElements: 10 });
    const sized = "<a>" + "x".repeat(100 - 7) + "</a>";
    assert.equal(Buffer.byteLength(sized), 100);
    assert.equal(parseXml(sized, { maxBytes: 100 }).name, "a");
    malformedXml(sized + " ", /larger than 100 bytes/, { maxBytes: 100 });
    malformedXml(Buffer.from(sized + " "), /larger than 100 bytes/, { maxBytes: 100 });
    // Multi-byte characters count as their UTF-8 size.
    malformedXml("<a>" + "é".repeat(47) + "</a>", /larger than 100 bytes/, { maxBytes: 100 });
  });
});

describe("xml parser: what it refuses (MalformedXML)", () => {
  const cases: Array<[string, string | Buffer, RegExp]> = [
    // No DTDs at all: no entity expansion, no external entities.
    [
      "billion laughs",
      '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>',
      /DOCTYPE/,
    ],
    ["XXE", '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>', /DOCTYPE/],
    ["DOCTYPE without subset", "<!DOCTYPE r SYSTEM 'http://evil/x.dtd'><r/>", /DOCTYPE/],
    ["ENTITY declaration", '<!ENTITY x "y"><r/>', /ENTITY/],
    ["DOCTYPE inside the root", "<r><!DOCTYPE r></r>", /DOCTYPE/],
    ["ENTITY inside the root", '<r><!ENTITY x "y"></r>', /ENTITY/],
    ["other markup declaration", "<r><!ELEMENT r ANY></r>", /unexpected markup/],
    ["entity use without declaration", "<r>&xxe;</r>", /undefined entity &xxe;/],
    ["entity name with no semicolon", "<r>&amp</r>", /malformed reference/],
    ["predefined entity name prefix", "<r>&ampx;</r>", /undefined entity/],
    ["case matters", "<r>&AMP;</r>", /undefined entity/],
    ["bare ampersand", "<r>a & b;</r>", /malformed reference/],
    ["ampersand at the end", "<r>&", /malformed reference/],
    ["empty reference", "<r>&;</r>", /malformed reference/],
    ["entity in attribute", "<r a='&foo;'/>", /undefined entity/],
    ["empty decimal reference", "<r>&#;</r>", /bad character reference/],
    ["empty hex reference", "<r>&#x;</r>", /bad character reference/],
    ["bad digits", "<r>&#12a;</r>", /bad character reference/],
    ["hex digits in decimal", "<r>&#1F;</r>", /bad character reference/],
    ["unterminated character reference", "<r>&#65</r>", /bad character reference/],
    ["sign in character reference", "<r>&#-65;</r>", /bad character reference/],
    ["uppercase X", "<r>&#X41;</r>", /bad character reference/],
    ["reference to NUL", "<r>&#0;</r>", /not allowed/],
    ["reference to a C0 control", "<r>&#x1;</r>", /not allowed/],
    ["reference to ESC", "<r>&#27;</r>", /not allowed/],
    ["reference to a surrogate", "<r>&#xD800;</r>", /not allowed/],
    ["reference to U+FFFE", "<r>&#xFFFE;</r>", /not allowed/],
    ["reference beyond Unicode", "<r>&#x110000;</r>", /not allowed/],
    ["huge reference", "<r>&#99999999999999999999;</r>", /not allowed/],
    // Processing instructions and the declaration's position.
    ["processing instruction", "<?php echo 1 ?><r/>", /processing instructions/],
    ["processing instruction in the root", "<r><?x y?></r>", /processing instructions/],
    ["xml-stylesheet", '<?xml-stylesheet href="a"?><r/>', /processing instructions/],
    ["declaration not first", ' <?xml version="1.0"?><r/>', /processing instructions/],
    ["second declaration", '<?xml version="1.0"?><?xml version="1.0"?><r/>', /processing instructions/],
    ["declaration without version", "<?xml encoding='UTF-8'?><r/>", /malformed XML declaration/],
    ["declaration with version 2.0", "<?xml version='2.0'?><r/>", /malformed XML declaration/],
    ["unterminated declaration", "<?xml version='1.0'", /malformed XML declaration/],
    ["non-UTF-8 encoding", "<?xml version='1.0' encoding='ISO-8859-1'?><r/>", /unsupported encoding/],
    // Structure.
    ["empty document", "", /no root element/],
    ["whitespace only", " \n\t ", /no root element/],
    ["comment only", "<!-- x -->", /no root element/],
    ["mismatched tags", "<a><b></a></b>", /does not match/],
    ["mismatched prefix", "<x:a></y:a>", /does not match/],
    ["unclosed root", "<a><b></b>", /unclosed element <a>/],
    ["unclosed child", "<a><b>", /unclosed element <b>/],
    ["end tag first", "</a>", /without a start tag/],
    ["text before the root", "x<a/>", /text outside/],
    ["text after the root", "<a/>x", /text outside/],
    ["reference after the root", "<a/>&amp;", /text outside/],
    ["CDATA outside the root", "<![CDATA[x]]><a/>", /unexpected markup/],
    ["two roots", "<a/><b/>", /more than one root/],
    ["two roots with whitespace", "<a></a>\n<a></a>", /more than one root/],
    ["truncated start tag", "<a", /unterminated start tag/],
    ["truncated inside attributes", "<a b='1'", /unterminated start tag/],
    ["truncated end tag", "<a></a", /malformed end tag/],
    ["space before the name", "< a/>", /expected element name/],
    ["numeric element name", "<1a/>", /expected element name/],
    ["two colons", "<a:b:c/>", /expected whitespace/],
    ["leading colon", "<:a/>", /expected element name/],
    ["garbage in end tag", "<a></a b>", /malformed end tag/],
    ["unquoted attribute", "<a b=1/>", /quoted attribute/],
    ["attribute without value", "<a b/>", /"="/],
    ["attributes without space", "<a b='1'c='2'/>", /whitespace before attribute/],
    ["duplicate attribute", "<a b='1' b='2'/>", /duplicate attribute/],
    ["< in attribute", "<a b='<'/>", /"<" in an attribute/],
    ["unterminated attribute", "<a b='1/>", /unterminated attribute/],
    ["]]> in text", "<a>x]]>y</a>", /"\]\]>" in text/],
    ["-- in comment", "<a><!-- a -- b --></a>", /"--" inside a comment/],
    ["comment ending --->", "<a><!-- a ---></a>", /"--" inside a comment/],
    ["unterminated comment", "<a><!-- x", /unterminated comment/],
    ["unterminated CDATA", "<a><![CDATA[x</a>", /unterminated CDATA/],
    // Characters.
    ["raw NUL", "<a>\u0000</a>", /U\+0000 not allowed/],
    ["raw C0 control", "<a>x\u0001</a>", /U\+0001 not allowed/],
    ["raw U+FFFE", "<a>\uFFFE</a>", /U\+FFFE not allowed/],
    ["lone surrogate in a string", "<a>\uD800</a>", /U\+D800 not allowed/],
    ["control in a name", "<a\u0001/>", /not allowed/],
    // Invalid UTF-8.
    ["invalid byte", Buffer.from([0x3c, 0x61, 0x3e, 0xff, 0x3c, 0x2f, 0x61, 0x3e]), /not valid UTF-8/],
    ["bad continuation", Buffer.concat([Buffer.from("<a>"), Buffer.from([0xc3, 0x28]), Buffer.from("</a>")]), /not valid UTF-8/],
    ["overlong encoding of /", Buffer.concat([Buffer.from("<a>"), Buffer.from([0xc0, 0xaf]), Buffer.from("</a>")]), /not valid UTF-8/],
    ["encoded surrogate", Buffer.concat([Buffer.from("<a>"), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from("</a>")]), /not valid UTF-8/],
    ["beyond U+10FFFF", Buffer.concat([Buffer.from("<a>"), Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from("</a>")]), /not valid UTF-8/],
    ["truncated sequence at the end", Buffer.concat([Buffer.from("<a/>"), Buffer.from([0xe2, 0x82])]), /not valid UTF-8/],
    ["UTF-16 with BOM", Buffer.from("\uFEFF<a/>", "utf16le"), /not valid UTF-8/],
    ["UTF-8 encoded NUL", Buffer.from("<a>\u0000</a>"), /U\+0000 not allowed/],
  ];
  for (const [name, input, reason] of cases) {
    test(name, () => {
      malformedXml(input, reason);
    });
  }

  test("huge and deep inputs are refused quickly", { timeout: 30_000 }, () => {
    const t0 = performance.now();
    malformedXml("<a>" + "x".repeat(1024 * 1024) + "</a>", /larger than 1048576 bytes/);
    malformedXml(Buffer.alloc(8 * 1024 * 1024, 0x20), /larger than 1048576 bytes/);
    malformedXml("x".repeat(8 * 1024 * 1024), /larger than/);
    malformedXml("é".repeat(600 * 1024), /larger than/); // fewer UTF-16 units than the limit, more bytes
    malformedXml("<a>".repeat(200_000), /deeper than 32/, { maxBytes: 1 << 30 });
    malformedXml("<r>" + "<x/>".repeat(200_000) + "</r>", /more than 100000 elements/, { maxBytes: 1 << 30 });
    // Pathological-but-legal shapes at the size limit still parse in bounded time.
    const budget = 1024 * 1024 - 16;
    parseXml("<r>" + "&amp;".repeat(Math.floor(budget / 5)) + "</r>");
    const attrs = (k: number): string => "<r " + Array.from({ length: k }, (_, i) => `a${i.toString(36)}=''`).join(" ") + "/>";
    malformedXml(attrs(Math.floor(budget / 12)), /more than 64 attributes/);
    assert.equal(Object.keys(parseXml(attrs(64)).attributes).length, 64);
    assert.equal(Object.keys(parseXml(attrs(5000), { maxAttributes: 5000 }).attributes).length, 5000);
    malformedXml(attrs(5000).replace("/>", " a0=''/>"), /duplicate attribute a0/, { maxAttributes: 6000 });
    parseXml("<r>" + "<!---->".repeat(Math.floor(budget / 7)) + "</r>");
    parseXml("<r>" + "]]".repeat(Math.floor(budget / 2)) + "</r>");
    malformedXml("<r>" + "&".repeat(budget) + "</r>", /malformed reference/);
    malformedXml("<r>" + "&quot;".repeat(Math.floor(budget / 6)) + "&", /malformed reference/);
    malformedXml("<r>" + "&#".repeat(budget / 2) + ";</r>", /bad character reference/);
    malformedXml("<r a='" + "x".repeat(budget), /unterminated attribute/);
    malformedXml("<" + "a".repeat(budget), /unterminated start tag/);
    malformedXml("<r><!--" + "-".repeat(budget) + "</r>", /"--" inside a comment/);
    malformedXml("<r><![CDATA[" + "]".repeat(budget) + "</r>", /unterminated CDATA/);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < 15_000, `took ${elapsed} ms`);
  });
});

describe("typed parsers", () => {
  test("CompleteMultipartUpload as the AWS SDK sends it", () => {
    const body =
      '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>';
    assert.deepEqual(parseCompleteMultipartUpload(body), { parts: [{ partNumber: 1, etag: '"abc"' }] });
    assert.deepEqual(parseCompleteMultipartUpload(Buffer.from(body)), { parts: [{ partNumber: 1, etag: '"abc"' }] });
  });

  test("CompleteMultipartUpload: pretty-printed, prefixed, with checksums, no namespace", () => {
    const pretty = `<?xml version="1.0" encoding="UTF-8"?>
<s3:CompleteMultipartUpload xmlns:s3="${S3_XMLNS}">
  <s3:Part>
    <s3:PartNumber> 2 </s3:PartNumber>
    <s3:ETag>"d41d8cd98f00b204e9800998ecf8427e"</s3:ETag>
    <s3:ChecksumCRC32>AAAAAA==</s3:ChecksumCRC32>
    <s3:ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</s3:ChecksumSHA256>
  </s3:Part>
  <s3:Part><s3:PartNumber>1</s3:PartNumber><s3:ETag>abc</s3:ETag></s3:Part>
</s3:CompleteMultipartUpload>
`;
    assert.deepEqual(parseCompleteMultipartUpload(pretty), {
      parts: [
        {
          partNumber: 2,
          etag: '"d41d8cd98f00b204e9800998ecf8427e"',
          checksums: { CRC32: "AAAAAA==", SHA256: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
        },
        { partNumber: 1, etag: "abc" },
      ],
    });
    const bare = "<CompleteMultipartUpload><Part><PartNumber>10000</PartNumber><ETag>x</ETag><ChecksumCRC64NVME>q</ChecksumCRC64NVME></Part></CompleteMultipartUpload>";
    assert.deepEqual(parseCompleteMultipartUpload(bare).parts, [{ partNumber: 10000, etag: "x", checksums: { CRC64NVME: "q" } }]);
  });

  test("CompleteMultipartUpload: 10,000 parts with checksums fit the default limit", () => {
    const part = (i: number): string =>
      `<Part><PartNumber>${i}</PartNumber><ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>` +
      "<ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256></Part>";
    const body = `<CompleteMultipartUpload xmlns="${S3_XMLNS}">` + Array.from({ length: 10000 }, (_, i) => part(i + 1)).join("") + "</CompleteMultipartUpload>";
    assert.ok(body.length > 1024 * 1024);
    assert.equal(parseCompleteMultipartUpload(body).parts.length, 10000);
  });

  test("CompleteMultipartUpload: rejections", () => {
    const wrap = (parts: string): string => `<CompleteMultipartUpload>${parts}</CompleteMultipartUpload>`;
    const p = (n: string, etag = "<ETag>e</ETag>"): string => `<Part><PartNumber>${n}</PartNumber>${etag}</Part>`;
    throwsS3(() => parseCompleteMultipartUpload(wrap("")), "MalformedXML", /no Part/);
    throwsS3(() => parseCompleteMultipartUpload("<Complete>" + p("1") + "</Complete>"), "MalformedXML", /expected root/);
    throwsS3(() => parseCompleteMultipartUpload(""), "MalformedXML", /no root/);
    for (const bad of ["x", "1.5", "1e3", "", " ", "0x10", "１"]) {
      throwsS3(() => parseCompleteMultipartUpload(wrap(p(bad))), "MalformedXML", /not an integer/);
    }
    for (const out of ["0", "-1", "10001", "99999999999999999999999"]) {
      const err = throwsS3(() => parseCompleteMultipartUpload(wrap(p(out))), "InvalidArgument");
      assert.deepEqual(err.details, { ArgumentName: "partNumber" });
    }
    throwsS3(() => parseCompleteMultipartUpload(wrap("<Part><ETag>e</ETag></Part>")), "MalformedXML", /lacks <PartNumber>/);
    throwsS3(() => parseCompleteMultipartUpload(wrap(p("1", ""))), "MalformedXML", /lacks <ETag>/);
    throwsS3(() => parseCompleteMultipartUpload(wrap(p("1", "<ETag>a</ETag><ETag>b</ETag>"))), "MalformedXML", /more than one <ETag>/);
    throwsS3(() => parseCompleteMultipartUpload(wrap(p("<n>1</n>"))), "MalformedXML", /must hold text/);
  });

  test("Delete as the AWS SDK sends it, and keys kept verbatim", () => {
    const body =
      `<Delete xmlns="${S3_XMLNS}"><Object><Key>a</Key></Object><Object><Key>dir/b c</Key><VersionId>v1</VersionId></Object>` +
      "<Object><Key> sp&amp;&lt;&#13;&#10;é😀 </Key></Object><Quiet>true</Quiet></Delete>";
    assert.deepEqual(parseDelete(body), {
      quiet: true,
      objects: [{ key: "a" }, { key: "dir/b c", versionId: "v1" }, { key: " sp&<\r\né😀 " }],
    });
    const pretty = '<?xml version="1.0" encoding="UTF-8"?>\n<Delete>\n  <Quiet>false</Quiet>\n  <Object>\n    <Key>k</Key>\n  </Object>\n</Delete>\n';
    assert.deepEqual(parseDelete(pretty), { quiet: false, objects: [{ key: "k" }] });
    assert.deepEqual(parseDelete("<Delete><Object><Key></Key></Object><Quiet>1</Quiet></Delete>"), { quiet: true, objects: [{ key: "" }] });
    assert.equal(parseDelete("<Delete><Object><Key>k</Key></Object><Quiet>0</Quiet></Delete>").quiet, false);
  });

  test("Delete: at most 1000 objects, each with one Key", () => {
    const objs = (k: number, key = (i: number): string => `key-${i}`): string =>
      "<Delete>" + Array.from({ length: k }, (_, i) => `<Object><Key>${key(i)}</Key></Object>`).join("") + "</Delete>";
    assert.equal(parseDelete(objs(1000)).objects.length, 1000);
    throwsS3(() => parseDelete(objs(1001)), "MalformedXML", /more than 1000/);
    throwsS3(() => parseDelete(objs(0)), "MalformedXML", /no Object/);
    // 1000 maximal keys, every character escaped: more than 1 MiB, still accepted.
    const longKey = "&quot;".repeat(1024);
    const big = objs(1000, () => longKey);
    assert.ok(big.length > 6_000_000);
    assert.equal(parseDelete(big).objects[999]?.key, '"'.repeat(1024));
    throwsS3(() => parseDelete("<Delete><Object><Key>1</Key><Key>2</Key></Object></Delete>"), "MalformedXML", /more than one <Key>/);
    throwsS3(() => parseDelete("<Delete><Object><VersionId>1</VersionId></Object></Delete>"), "MalformedXML", /lacks <Key>/);
    throwsS3(() => parseDelete("<Delete><Object><Key>k</Key></Object><Quiet>yes</Quiet></Delete>"), "MalformedXML", /Quiet/);
    throwsS3(() => parseDelete("<Delete><Object><Key>&#x1;</Key></Object></Delete>"), "MalformedXML", /not allowed/);
    throwsS3(() => parseDelete("<DeleteObjects><Object><Key>k</Key></Object></DeleteObjects>"), "MalformedXML", /expected root/);
  });

  test("VersioningConfiguration", () => {
    assert.deepEqual(parseVersioningConfiguration(`<VersioningConfiguration xmlns="${S3_XMLNS}"><Status>Enabled</Status></VersioningConfiguration>`), {
      status: "Enabled",
    });
    assert.deepEqual(
      parseVersioningConfiguration("<VersioningConfiguration>\n <Status>Suspended</Status>\n <MfaDelete>Disabled</MfaDelete>\n</VersioningConfiguration>"),
      { status: "Suspended", mfaDelete: "Disabled" },
    );
    assert.deepEqual(parseVersioningConfiguration("<VersioningConfiguration/>"), {});
    throwsS3(() => parseVersioningConfiguration("<VersioningConfiguration><Status>enabled</Status></VersioningConfiguration>"), "MalformedXML", /Status/);
    throwsS3(() => parseVersioningConfiguration("<VersioningConfiguration><Status></Status></VersioningConfiguration>"), "MalformedXML", /Status/);
    throwsS3(() => parseVersioningConfiguration("<Versioning><Status>Enabled</Status></Versioning>"), "MalformedXML", /expected root/);
    throwsS3(() => parseVersioningConfiguration(""), "MalformedXML", /no root/);
  });

  test("CreateBucketConfiguration, including an empty body", () => {
    assert.deepEqual(parseCreateBucketConfiguration(""), {});
    assert.deepEqual(parseCreateBucketConfiguration(Buffer.alloc(0)), {});
    assert.deepEqual(parseCreateBucketConfiguration(" \r\n"), {});
    assert.deepEqual(parseCreateBucketConfiguration(Buffer.from("\n")), {});
    assert.deepEqual(
      parseCreateBucketConfiguration(`<CreateBucketConfiguration xmlns="${S3_XMLNS}"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>`),
      { locationConstraint: "eu-west-1" },
    );
    assert.deepEqual(parseCreateBucketConfiguration("<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"), {});
    assert.deepEqual(parseCreateBucketConfiguration("<CreateBucketConfiguration></CreateBucketConfiguration>"), {});
    throwsS3(() => parseCreateBucketConfiguration("<Other/>"), "MalformedXML", /expected root/);
    throwsS3(() => parseCreateBucketConfiguration("garbage"), "MalformedXML", /text outside/);
  });

  test("Tagging and S3's tag rules", () => {
    const tagging = (tags: Array<[string, string]>): string =>
      `<Tagging xmlns="${S3_XMLNS}"><TagSet>` +
      tags.map(([k, v]) => `<Tag><Key>${escapeXml(k)}</Key><Value>${escapeXml(v)}</Value></Tag>`).join("") +
      "</TagSet></Tagging>";
    assert.deepEqual(
      parseTagging(tagging([
        ["project", "stowage"],
        ["a b+c-d=e.f_g:h/i@j", ""],
        ["ключ", "值 ٣"],
      ])),
      [
        { key: "project", value: "stowage" },
        { key: "a b+c-d=e.f_g:h/i@j", value: "" },
        { key: "ключ", value: "值 ٣" },
      ],
    );
    assert.deepEqual(parseTagging("<Tagging><TagSet/></Tagging>"), []);
    const ten = Array.from({ length: 10 }, (_, i): [string, string] => [`k${i}`, `v${i}`]);
    assert.equal(parseTagging(tagging(ten)).length, 10);
    throwsS3(() => parseTagging(tagging([...ten, ["k10", "v"]])), "InvalidTag");
    assert.equal(parseTagging(tagging([...ten, ["k10", "v"]]), { maxTags: 50 }).length, 11);
    // Lengths are in characters, not bytes or UTF-16 units.
    assert.equal(parseTagging(tagging([["é".repeat(128), "\u{10400}".repeat(256)]]))[0]?.value.length, 512);
    throwsS3(() => parseTagging(tagging([["k", "😀"]])), "InvalidTag"); // emoji are symbols, not letters
    throwsS3(() => parseTagging(tagging([["k".repeat(129), "v"]])), "InvalidTag");
    throwsS3(() => parseTagging(tagging([["k", "v".repeat(257)]])), "InvalidTag");
    throwsS3(() => parseTagging(tagging([["k", "1"], ["k", "2"]])), "InvalidTag");
    throwsS3(() => parseTagging(tagging([["", "v"]])), "InvalidTag");
    throwsS3(() => parseTagging(tagging([["k<", "v"]])), "InvalidTag");
    throwsS3(() => parseTagging(tagging([["k", "v\n"]])), "InvalidTag");
    assert.equal(throwsS3(() => validateTags([{ key: "a", value: "*" }]), "InvalidTag").message, "The TagValue you have provided is invalid");
    throwsS3(() => parseTagging("<Tagging></Tagging>"), "MalformedXML", /exactly one TagSet/);
    throwsS3(() => parseTagging("<Tagging><TagSet/><TagSet/></Tagging>"), "MalformedXML", /exactly one TagSet/);
    throwsS3(() => parseTagging("<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>"), "MalformedXML", /lacks <Value>/);
    throwsS3(() => parseTagging("<Tags><TagSet/></Tags>"), "MalformedXML", /expected root/);
  });
});

describe("fuzz: mutated documents", () => {
  const seeds: string[] = [
    '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>',
    "<?xml version='1.0' encoding='UTF-8'?>\n<Delete><Quiet>true</Quiet><Object><Key>a &amp; b</Key><VersionId>v</VersionId></Object><!-- c --><Object><Key><![CDATA[<k>]]></Key></Object></Delete>",
    "<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Disabled</MfaDelete></VersioningConfiguration>",
    "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>",
    "<Tagging><TagSet><Tag><Key>k&#x41;</Key><Value>v&#66;é😀</Value></Tag></TagSet></Tagging>",
    xml("R", { A: { "@x": "1&2", B: ["t\r\n", "é😀"], C: "" } }),
  ];
  const tokens = ["<", ">", "/", "&", ";", "#", "x", "!", "?", "[", "]", "-", "'", '"', "=", " ", "\n", ":", "<!--", "-->", "<![CDATA[", "]]>", "&#", "&#x", "<!DOCTYPE a [", "<!ENTITY e 'x'>", "<?x?>", "&amp;", "\u0000", "\uD800", "\uFFFF", "é", "😀", "9", "A"];
  const parsers: Array<(input: string | Buffer) => unknown> = [
    (i) => parseXml(i),
    (i) => parseXml(i, { maxDepth: 3, maxElements: 8, maxBytes: 256 }),
    parseCompleteMultipartUpload,
    parseDelete,
    parseVersioningConfiguration,
    parseCreateBucketConfiguration,
    parseTagging,
  ];

  function mutate(doc: string, rand: () => number): string {
    let s = doc;
    const ops = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < ops; k++) {
      const at = Math.floor(rand() * (s.length + 1));
      const op = Math.floor(rand() * 6);
      if (op === 0) s = s.slice(0, at) + (tokens[Math.floor(rand() * tokens.length)] as string) + s.slice(at);
      else if (op === 1) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 8));
      else if (op === 2) s = s.slice(0, at);
      else if (op === 3) {
        const len = Math.floor(rand() * 20);
        s = s.slice(0, at) + s.slice(at, at + len) + s.slice(at);
      } else if (op === 4) s = s.slice(0, at) + String.fromCharCode(Math.floor(rand() * 0x80)) + s.slice(at + 1);
      else s = s.slice(at) + s.slice(0, at);
    }
    return s;
  }

  // Bounded: a hang fails the test instead of wedging the run. Time limits are generous because
  // CI machines are shared; a real regression (exponential or quadratic work) blows through them.
  test("random mutations never throw anything but S3Error and never hang", { timeout: 30_000 }, () => {
    const rand = rng(20240604);
    const t0 = performance.now();
    let rejected = 0;
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const seed = seeds[i % seeds.length] as string;
      const text = mutate(seed, rand);
      let input: string | Buffer = text;
      if (i % 3 === 0) {
        const buf = Buffer.from(text, "utf8");
        // Byte-level damage too: flip a byte now and then.
        if (buf.length > 0 && rand() < 0.5) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
        input = buf;
      }
      for (const parse of parsers) {
        const start = performance.now();
        try {
          parse(input);
          accepted++;
        } catch (err) {
          if (!(err instanceof S3Error)) {
            assert.fail(`iteration ${i}: ${String(err)} for input ${JSON.stringify(typeof input === "string" ? input : input.toString("base64"))}`);
          }
          assert.ok(err.status === 400, `status ${err.status}`);
          rejected++;
        }
        assert.ok(performance.now() - start < 1000, `iteration ${i} took too long`);
      }
    }
    assert.ok(rejected > 0 && accepted > 0, `accepted ${accepted}, rejected ${rejected}`);
    assert.ok(performance.now() - t0 < 20_000);
  });

  test("whatever the parser accepts, the writer can say again and the parser reads back the same", () => {
    const rand = rng(7);
    // Elements and text (attribute round trips are covered above); mixed content keeps the elements.
    const toNode = (el: XmlElement): XmlNode =>
      el.children.length === 0 ? el.text : [el.children.map((c) => ({ [c.name]: toNode(c) }))];
    const strip = (el: XmlElement): XmlElement => ({
      name: el.name,
      attributes: {},
      children: el.children.map(strip),
      text: el.children.length === 0 ? el.text : "",
    });
    let checked = 0;
    for (let i = 0; i < 3000; i++) {
      let parsed: XmlElement;
      try {
        parsed = parseXml(mutate(seeds[i % seeds.length] as string, rand));
      } catch {
        continue;
      }
      checked++;
      const body: XmlNode = parsed.children.length === 0 ? parsed.text : parsed.children.map((c) => ({ [c.name]: toNode(c) }));
      const again = parseXml(xml(parsed.name, body, { namespace: false }));
      assert.deepEqual(strip(again), strip(parsed));
    }
    assert.ok(checked > 50, `only ${checked} mutations parsed`);
  });
});
