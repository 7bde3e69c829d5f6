// Test support only (no production code imports this): an independent,
// deliberately plain RFC 8259 parser used as the oracle in differential
// tests, a seeded PRNG and random inputs. It exists because JSON.parse cannot be the
// oracle: in Node 24 and 26 it can return the wrong name for an escaped
// object key after an earlier parse (V8 bug, nodejs/node#63785), which the
// fuzz run below hits within seconds.

/** Parses JSON text (RFC 8259, whitespace allowed, duplicate keys: last wins); throws SyntaxError. */
export function oracleParse(text: string): unknown {
  let at = 0;
  const fail = (): never => {
    throw new SyntaxError(`invalid JSON at ${at}`);
  };
  const skipSpace = () => {
    while (' \t\n\r'.includes(text[at] ?? 'x')) at++;
  };
  const string = (): string => {
    if (text[at] !== '"') fail();
    let out = '';
    for (at++; text[at] !== '"'; at++) {
      const c = text[at] ?? fail();
      if (c < ' ') fail();
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = text[++at] ?? fail();
      const simple: Record<string, string> = {
        '"': '"',
        '\\': '\\',
        '/': '/',
        b: '\b',
        f: '\f',
        n: '\n',
        r: '\r',
        t: '\t',
      };
      if (e in simple) out += simple[e];
      else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(at + 1, at + 5))) {
        out += String.fromCharCode(Number.parseInt(text.slice(at + 1, at + 5), 16));
        at += 4;
      } else fail();
    }
    at++;
    return out;
  };
  const value = (): unknown => {
    skipSpace();
    const c = text[at];
    if (c === '"') return string();
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      const entries: [string, unknown][] = [];
      const items: unknown[] = [];
      at++;
      skipSpace();
      if (text[at] === close) {
        at++;
        return c === '{' ? {} : [];
      }
      for (;;) {
        if (c === '{') {
          skipSpace();
          const key = string();
          skipSpace();
          if (text[at++] !== ':') fail();
          entries.push([key, value()]);
        } else items.push(value());
        skipSpace();
        const next = text[at++];
        if (next === close) return c === '{' ? Object.fromEntries(entries) : items;
        if (next !== ',') fail();
      }
    }
    for (const [literal, result] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(literal, at)) {
        at += literal.length;
        return result;
      }
    }
    const number = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(at))?.[0] ?? fail();
    at += number.length;
    return Number(number);
  };
  const result = value();
  skipSpace();
  if (at !== text.length) fail();
  return result;
}

/** mulberry32: a small seeded PRNG, so a failing case reproduces. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)] as T;
}

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  7,
  10,
  100,
  1e21,
  1e-7,
  1e-6,
  0.1,
  0.5,
  -2.5,
  1.5e300,
  5e-324,
  2 ** 53,
  123456789,
  9.999e20,
  333333333.3333333,
];
const CHARACTERS = [
  'a',
  'b',
  'Z',
  '0',
  '9',
  ' ',
  '"',
  '\\',
  '/',
  '\b',
  '\t',
  '\n',
  '\f',
  '\r',
  '\u0000',
  '\u001f',
  '\u007f',
  'é',
  '€',
  '\u2028',
  '😀',
  'ö',
  '\ufeff',
];
const KEYS = ['', 'a', 'b', 'aa', 'B', '10', '9', '0', '__proto__', 'é', '😀', '\n', '"q"', 'a\\b', '€'];
const MUTATIONS = [
  ' ',
  '\n',
  '"',
  '\\',
  ',',
  ':',
  '0',
  '1',
  'e',
  'E',
  '-',
  '+',
  '.',
  '{',
  '}',
  '[',
  ']',
  'u',
  'a',
  'n',
  '\u0000',
  '\ud800',
  '\udc00',
  '/',
];

/** A random JSON-ish value from small pools full of escapes, surrogates and tricky numbers. */
export function randomValue(random: () => number, depth: number): unknown {
  const kind = Math.floor(random() * (depth > 3 ? 5 : 7));
  if (kind === 0) return null;
  if (kind === 1) return random() < 0.5;
  if (kind === 2)
    return random() < 0.7 ? pick(random, NUMBERS) : (random() - 0.5) * 10 ** Math.floor(random() * 40 - 20);
  if (kind === 3 || kind === 4)
    return Array.from({ length: Math.floor(random() * 6) }, () => pick(random, CHARACTERS)).join('');
  if (kind === 5)
    return Array.from({ length: Math.floor(random() * 4) }, () => randomValue(random, depth + 1));
  const entries = Array.from({ length: Math.floor(random() * 5) }, () => [
    pick(random, KEYS),
    randomValue(random, depth + 1),
  ]);
  return Object.fromEntries(entries);
}

/** One random edit: insert, delete or replace a character, or move a span. */
export function mutate(random: () => number, text: string): string {
  const at = Math.floor(random() * (text.length + 1));
  const choice = random();
  if (choice < 0.35) return text.slice(0, at) + pick(random, MUTATIONS) + text.slice(at);
  if (choice < 0.6) return text.slice(0, at) + text.slice(at + 1);
  if (choice < 0.85) return text.slice(0, at) + pick(random, MUTATIONS) + text.slice(at + 1);
  const other = Math.floor(random() * (text.length + 1));
  const [from, to] = at < other ? [at, other] : [other, at];
  return text.slice(0, from) + text.slice(to) + text.slice(from, to); // move a span
}
