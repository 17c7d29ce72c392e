/**
 * Keeps docs/ERRORS.md in step with ERROR_CODES: every code is documented exactly once, and the
 * docs name no code that does not exist.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ERROR_CODES, StowageError, isStowageError } from "../src/errors.js";

// Compiled to dist/test/errors.test.js, so the repository root is two levels up.
const DOCS = new URL("../../docs/ERRORS.md", import.meta.url);

/** Codes in the first column of the table rows: "| `STOWAGE_...` | meaning | raised by |". */
function documentedCodes(markdown: string): string[] {
  const codes: string[] = [];
  for (const line of markdown.split("\n")) {
    const m = /^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|/.exec(line);
    if (m) codes.push(m[1]!);
  }
  return codes;
}

test("docs/ERRORS.md documents every error code, once, and no other", () => {
  const documented = documentedCodes(readFileSync(DOCS, "utf8"));
  const declared = Object.keys(ERROR_CODES);

  const missing = declared.filter((c) => !documented.includes(c));
  const extra = documented.filter((c) => !declared.includes(c));
  const duplicated = documented.filter((c, i) => documented.indexOf(c) !== i);

  assert.deepEqual(missing, [], `codes missing from docs/ERRORS.md: ${missing.join(", ")}`);
  assert.deepEqual(extra, [], `docs/ERRORS.md lists codes not in ERROR_CODES: ${extra.join(", ")}`);
  assert.deepEqual(duplicated, [], `codes documented more than once: ${duplicated.join(", ")}`);
});

test("every code has a description and follows the STOWAGE_ naming scheme", () => {
  for (const [code, description] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^STOWAGE_[A-Z0-9_]+$/);
    assert.ok(description.length > 0, `${code} has no description`);
  }
});

test("StowageError carries its code, file and offset", () => {
  const err = new StowageError("STOWAGE_KV_CORRUPTION", "bad block", { file: "000005.sst", offset: 4096 });
  assert.equal(isStowageError(err), true);
  assert.equal(isStowageError(err, "STOWAGE_KV_CORRUPTION"), true);
  assert.equal(isStowageError(err, "STOWAGE_KV_IO"), false);
  assert.equal(isStowageError(new Error("plain")), false);
  assert.equal(err.code, "STOWAGE_KV_CORRUPTION");
  assert.equal(err.file, "000005.sst");
  assert.equal(err.offset, 4096);
});
