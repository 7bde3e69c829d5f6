// The tests a test file declares, read from its source without running it
// (OPS-5): the title literal of each test(…) or it(…) call in code. A title
// inside a comment or a string, given to test.skip / test.todo / it.skip /
// describe, or to a call whose options say `skip: true` or `todo: '…'`, is
// not a test that runs, so it proves nothing. A test that may skip itself at
// run time (t.skip() in its body, or `{ skip }` from a condition such as a
// missing browser) cannot be told from its source and still counts.

export interface DeclaredTitle {
  /** The literal with escapes undone; a template keeps its ${…} parts as written. */
  readonly raw: string;
  /** The text between a template's ${…} parts (the whole text for a plain string). */
  readonly parts: readonly string[];
}

/** A call of node:test's test or it itself: not t.test, test.skip, test.todo or describe. */
const CALL = /(?<![\w$.])(?:test|it)\s*\(\s*(['"`])/g;
/** Options that always skip the test or mark it todo: `true` or a non-empty string literal (strings are blanked). */
const SKIPPING_OPTION = /(?<![\w$])(?:skip|todo)\s*:\s*(?:true\b|(['"`])(?!\1))/;
/** Words after which a `/` starts a regular expression, not a division. */
const BEFORE_REGEX_WORDS = new Set([
  'return',
  'typeof',
  'case',
  'do',
  'else',
  'in',
  'of',
  'new',
  'delete',
  'void',
  'throw',
  'yield',
  'await',
]);
const BEFORE_REGEX_CHARS = '(,=:[!&|?{};+-*%<>~^';

/** Index just past the quote that closes the string opening at `start`. */
function stringEnd(source: string, start: number): number {
  const quote = source[start];
  for (let i = start + 1; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === quote) return i + 1;
    else if (c === '\n') return i;
  }
  return source.length;
}

/** Index just past the `/` (and flags) that closes the regular expression opening at `start`. */
function regexEnd(source: string, start: number): number {
  let inClass = false;
  for (let i = start + 1; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === '\n') return i;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '/') return i + 1 + (/^[a-z]*/.exec(source.slice(i + 1))?.[0].length ?? 0);
  }
  return source.length;
}

/** Index just past the comment at `start`, or `start` when none begins there. */
function commentEnd(source: string, start: number): number {
  if (source.startsWith('//', start)) {
    const end = source.indexOf('\n', start);
    return end === -1 ? source.length : end;
  }
  if (source.startsWith('/*', start)) {
    const end = source.indexOf('*/', start + 2);
    return end === -1 ? source.length : end + 2;
  }
  return start;
}

/** Index just past the `}` closing the ${…} part whose expression begins at `start`. */
function expressionEnd(source: string, start: number): number {
  let depth = 0;
  for (let i = start; i < source.length; ) {
    const c = source[i];
    const skipped = commentEnd(source, i);
    if (skipped > i) i = skipped;
    else if (c === "'" || c === '"') i = stringEnd(source, i);
    else if (c === '`') i = templateEnd(source, i);
    else if (c === '}' && depth === 0) return i + 1;
    else {
      if (c === '{') depth++;
      else if (c === '}') depth--;
      i++;
    }
  }
  return source.length;
}

/** Index just past the backquote closing the template opening at `start`, ${…} parts and all. */
function templateEnd(source: string, start: number): number {
  for (let i = start + 1; i < source.length; ) {
    const c = source[i];
    if (c === '\\') i += 2;
    else if (c === '`') return i + 1;
    else if (c === '$' && source[i + 1] === '{') i = expressionEnd(source, i + 2);
    else i++;
  }
  return source.length;
}

function regexMayStart(code: readonly string[], at: number): boolean {
  const before = code
    .slice(Math.max(0, at - 40), at)
    .join('')
    .trimEnd();
  const last = before.at(-1);
  if (last === undefined || BEFORE_REGEX_CHARS.includes(last)) return true;
  const word = /[\w$]+$/.exec(before)?.[0];
  return word !== undefined && BEFORE_REGEX_WORDS.has(word);
}

/**
 * The source with comments blanked and the insides of strings, templates and
 * regular expressions blanked (delimiters kept), at the same offsets: what is
 * left is code, so a call found in it is a call.
 */
function codeOnly(source: string): string {
  // One entry per UTF-16 unit, so offsets into `code` are offsets into `source`.
  const code = source.split('');
  const blank = (from: number, to: number) => {
    for (let i = from; i < to; i++) if (code[i] !== '\n') code[i] = ' ';
  };
  for (let i = 0; i < source.length; ) {
    const c = source[i];
    const skipped = commentEnd(source, i);
    let end = i;
    if (skipped > i) {
      blank(i, skipped);
      i = skipped;
      continue;
    }
    if (c === "'" || c === '"') end = stringEnd(source, i);
    else if (c === '`') end = templateEnd(source, i);
    else if (c === '/' && regexMayStart(code, i)) end = regexEnd(source, i);
    if (end > i) {
      blank(i + 1, end - 1);
      i = end;
    } else i++;
  }
  return code.join('');
}

const undoEscapes = (text: string): string => text.replace(/\\(.)/g, '$1');

/** The literal opening at `start` (a quote or backquote) as a DeclaredTitle, and where it ends. */
function readLiteral(source: string, start: number): { title: DeclaredTitle; end: number } {
  if (source[start] !== '`') {
    const end = stringEnd(source, start);
    const raw = undoEscapes(source.slice(start + 1, end - 1));
    return { title: { raw, parts: [raw] }, end };
  }
  const end = templateEnd(source, start);
  const parts: string[] = [];
  let raw = '';
  let from = start + 1;
  for (let i = from; i < end - 1; ) {
    if (source[i] === '\\') i += 2;
    else if (source[i] === '$' && source[i + 1] === '{') {
      const text = undoEscapes(source.slice(from, i));
      const close = expressionEnd(source, i + 2);
      parts.push(text);
      raw += text + source.slice(i, close);
      i = from = close;
    } else i++;
  }
  const tail = undoEscapes(source.slice(from, end - 1));
  parts.push(tail);
  return { title: { raw: raw + tail, parts }, end };
}

/** Index of the `}` matching the `{` at `open` in code (strings already blanked). */
function braceEnd(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === '{') depth++;
    else if (code[i] === '}' && --depth === 0) return i;
  }
  return code.length;
}

/** The titles of the tests `source` declares, in source order. */
export function declaredTitles(source: string): DeclaredTitle[] {
  const code = codeOnly(source);
  const titles: DeclaredTitle[] = [];
  for (const call of code.matchAll(CALL)) {
    const quote = (call.index ?? 0) + call[0].length - 1;
    const { title, end } = readLiteral(source, quote);
    const options = /^\s*,\s*\{/.exec(code.slice(end));
    if (options !== null) {
      const open = end + options[0].length - 1;
      if (SKIPPING_OPTION.test(code.slice(open, braceEnd(code, open) + 1))) continue;
    }
    titles.push(title);
  }
  return titles;
}
