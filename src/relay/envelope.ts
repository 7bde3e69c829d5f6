import { HANDLE_PATTERN } from '../agents/handles.ts';
import { AppError } from '../errors.ts';

// The untrusted-content envelope (RLY-8). Text a caller wrote reaches the
// target agent, and any model, only as
//
//   <untrusted_caller_content from="HANDLE">
//   …text…
//   </untrusted_caller_content>
//
// so the reader can tell the caller's words from its own instructions. The
// caller controls all of the text and will try to close the envelope early
// or open a fake one (`</untrusted_caller_content>` followed by "system:
// …"), spelled in any way a model might still read as the tag.
//
// The escaping rule. The text is read as a sequence of units: an HTML
// character reference (`&lt;`, `&LT`, `&#60;`, `&#x3c;`, also behind any
// number of `&amp;`), a percent-encoded byte (`%3C`, `%253C`) or UTF-8 sequence
// (`%EF%BC%9C`), a backslash escape (`\u003c`, `\u3c`, `\u{3c}`, `\x3c`) or one code
// point. Each unit is decoded and folded to a skeleton: compatibility
// decomposition (NFKD, i.e. NFKC's folding, with accents then dropped),
// lowercase, look-alike brackets, slashes and letters folded to their ASCII
// form (`‹` `〈` `❮` → `<`, Cyrillic `е` → `e`, `0` → `o`, `I` → `l`, …), and
// whitespace, `_`, dashes, control, format and zero-width characters
// dropped. Wherever the skeleton reads `<untrusted` or `</untrusted` (the
// envelope's tag names and anything that starts like them), the unit that
// forms the `<` is replaced by `[`. The rest of the text is kept as written;
// a tag without its `<` is just words. The rule is one-way: nothing reverses
// it, and text that merely resembles the tag (`a <untrusted b`) is changed too.

export type EnvelopeErrorCode = 'envelope_handle_invalid';

export const ENVELOPE_TAG = 'untrusted_caller_content';

/** What a neutralised `<` becomes: not a bracket, and folded to nothing bracket-like. */
export const NEUTRALISED_BRACKET = '[';

const HANDLE = new RegExp(HANDLE_PATTERN);

/** Look-alikes NFKD leaves alone, folded to the ASCII character they pass for. */
const CONFUSABLES: Readonly<Record<string, string>> = {
  // <
  '\u2039': '<', // ‹
  '\u00ab': '<', // «
  '\u3008': '<', // 〈 (U+2329 decomposes to it)
  '\u27e8': '<', // ⟨
  '\u276c': '<', // ❬
  '\u276e': '<', // ❮
  '\u02c2': '<', // ˂
  '\u1438': '<', // ᐸ
  '\u16b2': '<', // ᚲ
  '\u2329': '<', // 〈
  // /
  '\u2215': '/', // ∕
  '\u2044': '/', // ⁄
  '\u29f8': '/', // ⧸
  '\u2571': '/', // ╱
  '\u27cb': '/', // ⟋
  '\u3033': '/', // 〳
  '\\': '/',
  // the letters of the tag names: u n t r s e d c a l o
  '\u03c5': 'u', // υ
  '\u057d': 'u', // ս
  '\u1d1c': 'u', // ᴜ
  '\u028b': 'u', // ʋ
  '\u0578': 'n', // ո
  '\u043f': 'n', // п
  '\u03b7': 'n', // η
  '\u03bd': 'n', // ν (Ν lowercased)
  '\u0274': 'n', // ɴ
  '\u0442': 't', // т
  '\u03c4': 't', // τ
  '\u1d1b': 't', // ᴛ
  '\u0433': 'r', // г
  '\u0280': 'r', // ʀ
  '\u1d26': 'r', // ᴦ
  '\u0455': 's', // ѕ
  '\ua731': 's', // ꜱ
  '\u0435': 'e', // е
  '\u03b5': 'e', // ε
  '\u04bd': 'e', // ҽ
  '\u212e': 'e', // ℮
  '\u1d07': 'e', // ᴇ
  '\u0501': 'd', // ԁ
  '\u1d05': 'd', // ᴅ
  '\u0441': 'c', // с
  '\u03f2': 'c', // ϲ
  '\u1d04': 'c', // ᴄ
  '\u0430': 'a', // а
  '\u03b1': 'a', // α
  '\u0251': 'a', // ɑ
  '\u1d00': 'a', // ᴀ
  // The tag names have no i or 1, so everything that passes for an l folds to l.
  i: 'l',
  '1': 'l',
  '|': 'l',
  '\u0131': 'l', // ı
  '\u0456': 'l', // і
  '\u04cf': 'l', // ӏ
  '\u01c0': 'l', // ǀ
  '\u03b9': 'l', // ι
  '\u043e': 'o', // о
  '\u03bf': 'o', // ο
  '\u0585': 'o', // օ
  '\u1d0f': 'o', // ᴏ
  '0': 'o',
};

/** Dropped from the skeleton: separators and characters that render as nothing. */
const IGNORED = /[\s\p{Z}\p{Cc}\p{Cf}\p{Pd}_\p{Default_Ignorable_Code_Point}\p{M}]/gu;

const NAMED_REFERENCES: Readonly<Record<string, string>> = {
  lt: '<',
  gt: '>',
  sol: '/',
  bsol: '\\',
  lsaquo: '\u2039',
  laquo: '\u00ab',
  langle: '\u27e8',
  lang: '\u27e8',
  amp: '&',
};

// One alternative per kind of unit; `(?:amp;)*` and `(?:25)*` take double (and deeper) encoding.
// Numbers are read as loosely as any decoder might: leading zeros (`&#00060;`,
// `\u{00003c}`), `\u` with fewer than four digits, a brace missing or stray
// (`\u{3c`, `\u003c}`).
const UNIT =
  /&(?:amp;)*(?:#x0*([0-9a-f]{1,6})|#0*([0-9]{1,7})|(lt|gt|sol|bsol|lsaquo|laquo|langle|lang));?|((?:%(?:25)*[89a-f][0-9a-f])+|%(?:25)*[0-7][0-9a-f])|\\u\{0*([0-9a-f]{1,6})\}?|\\u([0-9a-f]{1,4})\}?|\\x([0-9a-f]{2})/iy;

function fromCodePoint(hex: string | undefined, decimal: string | undefined): string {
  const value = hex === undefined ? Number(decimal) : Number.parseInt(hex, 16);
  return value <= 0x10ffff ? String.fromCodePoint(value) : '';
}

function decodePercentRun(run: string): string {
  const bytes = (run.match(/%(?:25)*[0-9a-f]{2}/gi) ?? []).map((byte) => Number.parseInt(byte.slice(-2), 16));
  return new TextDecoder().decode(Uint8Array.from(bytes));
}

/** The decoded text of the unit that starts at `at`, and where the next one starts. */
function readUnit(text: string, at: number): { decoded: string; end: number } {
  UNIT.lastIndex = at;
  const match = UNIT.exec(text);
  if (match === null) {
    const codePoint = String.fromCodePoint(text.codePointAt(at) ?? 0);
    return { decoded: codePoint, end: at + codePoint.length };
  }
  const [whole, entityHex, entityDecimal, entityName, percentRun, braced, u4, x2] = match;
  const end = at + whole.length;
  if (entityName !== undefined) return { decoded: NAMED_REFERENCES[entityName.toLowerCase()] ?? '', end };
  if (entityHex !== undefined || entityDecimal !== undefined) {
    return { decoded: fromCodePoint(entityHex, entityDecimal), end };
  }
  if (percentRun !== undefined) return { decoded: decodePercentRun(percentRun), end };
  return { decoded: fromCodePoint(braced ?? u4 ?? x2, undefined), end };
}

function skeletonOf(decoded: string): string {
  let out = '';
  for (const char of decoded.normalize('NFKD').toLowerCase()) {
    out += CONFUSABLES[char] ?? char;
  }
  return out.replace(IGNORED, '');
}

interface Unit {
  readonly start: number;
  readonly end: number;
}

const TAG_START = /<\/?untrusted/g;

/** The units of `text` whose `<` opens something that reads as the envelope's tag. */
function tagBrackets(text: string): Unit[] {
  const units: Unit[] = [];
  // unitAt[k] is the unit that produced character k of the skeleton.
  const unitAt: number[] = [];
  let skeleton = '';
  for (let at = 0; at < text.length; ) {
    const { decoded, end } = readUnit(text, at);
    const folded = skeletonOf(decoded);
    for (let k = 0; k < folded.length; k += 1) unitAt.push(units.length);
    skeleton += folded;
    units.push({ start: at, end });
    at = end;
  }
  const found: Unit[] = [];
  for (const match of skeleton.matchAll(TAG_START)) {
    const unit = units[unitAt[match.index] ?? -1];
    if (unit !== undefined) found.push(unit);
  }
  return found;
}

/** Whether `text` holds anything that reads as the envelope's opening or closing tag. */
export function containsEnvelopeTag(text: string): boolean {
  return tagBrackets(text).length > 0;
}

/** `text` with every look-alike of the envelope's tags neutralised (the rule above). */
export function neutraliseEnvelopeTags(text: string): string {
  let out = '';
  let from = 0;
  for (const unit of tagBrackets(text)) {
    // A unit that decodes to several characters may open more than one match.
    if (unit.start < from) continue;
    out += text.slice(from, unit.start) + NEUTRALISED_BRACKET;
    from = unit.end;
  }
  return out + text.slice(from);
}

/**
 * Wraps caller-authored `text` for the target agent or a model. `handle` is
 * the caller's agent handle; anything that is not one is refused, so the
 * attribute cannot be broken out of.
 */
export function wrapUntrusted(handle: string, text: string): string {
  if (!HANDLE.test(handle)) {
    throw new AppError<EnvelopeErrorCode>('envelope_handle_invalid', 'the envelope needs an agent handle');
  }
  return `<${ENVELOPE_TAG} from="${handle}">\n${neutraliseEnvelopeTags(text)}\n</${ENVELOPE_TAG}>`;
}
