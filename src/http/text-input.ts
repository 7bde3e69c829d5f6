import type { FastifyRequest } from 'fastify';

// Which characters a text field may hold, checked for every string the
// server is sent: body fields through the schema compiler (validation.ts),
// query strings and path parameters by one hook on every route. The client
// controls every character; what reaches PostgreSQL or a page holds no NUL
// (PostgreSQL cannot store it: a 500 before), no other control character,
// and on one-line fields no bidi override or isolate, which would make
// "Echo \u202Egnp.exe" read as "Echo exe.png".

/**
 * The two kinds of text. 'line' (every string unless its schema says
 * otherwise): one line, no control characters, no bidi overrides or isolates.
 * 'multiline' (descriptions, textareas, secrets): also tab, line feed and
 * carriage return; right-to-left marks are left to the writer.
 */
export type TextKind = 'line' | 'multiline';

/** The schema keyword that names a string's kind; strings without it are 'line'. */
export const TEXT_KIND_KEYWORD = 'x-text';

/** Schema options for a string that may span lines: `Type.String({ ...MULTILINE, maxLength })`. */
export const MULTILINE = { [TEXT_KIND_KEYWORD]: 'multiline' } as const;

// C0 controls, DEL and C1 controls (U+0085 is a line break in Unicode).
const isControl = (code: number) => code <= 0x1f || (code >= 0x7f && code <= 0x9f);
const isTabOrLineBreak = (code: number) => code === 0x09 || code === 0x0a || code === 0x0d;
const isBidiOverride = (code: number) =>
  (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);

/** Why `text` is not acceptable as `kind`, in words for the client; undefined when it is. */
export function textProblem(kind: TextKind, text: string): string | undefined {
  let bidi = false;
  // Every character these rules name is in the BMP, so UTF-16 code units suffice.
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (kind === 'multiline') {
      if (isControl(code) && !isTabOrLineBreak(code)) {
        return 'must not contain control characters other than tab and line breaks';
      }
    } else if (isControl(code)) {
      return 'must be one line without control characters (such as NUL, tab or a line break)';
    } else if (isBidiOverride(code)) {
      bidi = true;
    }
  }
  return bidi ? 'must not contain bidirectional override or isolate characters' : undefined;
}

export function isTextKind(value: unknown): value is TextKind {
  return value === 'line' || value === 'multiline';
}

/** A query or path refusal, shaped as Fastify's schema errors so it is answered as one (problems.ts). */
export class TextInputError extends Error {
  readonly statusCode = 400;
  readonly validationContext: 'querystring' | 'params';
  readonly validation: { instancePath: string; message: string }[];

  constructor(context: 'querystring' | 'params', field: string, message: string) {
    super(`${context}/${field} ${message}`);
    this.validationContext = context;
    this.validation = [{ instancePath: `/${field}`, message }];
  }
}

function firstRefusal(context: 'querystring' | 'params', values: unknown): TextInputError | undefined {
  if (values === null || typeof values !== 'object') return undefined;
  for (const [field, value] of Object.entries(values)) {
    // A repeated query key arrives as an array of strings.
    for (const text of Array.isArray(value) ? value : [value]) {
      if (typeof text !== 'string') continue;
      const problem = textProblem('line', text);
      if (problem !== undefined) return new TextInputError(context, field, problem);
    }
  }
  return undefined;
}

/** Query strings and path parameters are one-line text on every route, with or without a schema. */
export function checkQueryAndParams(request: FastifyRequest): void {
  const refusal = firstRefusal('querystring', request.query) ?? firstRefusal('params', request.params);
  if (refusal !== undefined) throw refusal;
}
