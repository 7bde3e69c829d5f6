import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isAuditError } from './errors.ts';
import { canonicalJson, isCanonicalJsonText, MAX_JSON_DEPTH, parseCanonicalJson } from './jcs.ts';

// The audit hash covers JCS (RFC 8785) bytes, so any verifier in any language
// must produce the same bytes from the same value. These pin our encoding to
// the published vectors, and pin the refusals: a value JCS cannot represent
// must fail loudly instead of being hashed as something else.

const VECTORS = new URL('../../../shared/vectors/jcs/', import.meta.url);

interface RfcVectors {
  examples: { id: string; inputJson: string; expectedCanonical: string; expectedCanonicalUtf8Hex?: string }[];
  numberSerialization: { vectors: { ieee754Hex: string; expected: string | null; comment: string }[] };
  invalidInputs: { desc: string; inputJson: string }[];
}
const rfc = JSON.parse(readFileSync(new URL('rfc8785-vectors.json', VECTORS), 'utf8')) as RfcVectors;

function double(hex: string): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${hex}`));
  return view.getFloat64(0);
}

function refused(code: string) {
  return (error: unknown) => isAuditError(error) && error.code === code;
}

describe('canonicalJson: RFC 8785 conformance', () => {
  // Listed, not globbed: vector file names are data.
  const names = readdirSync(new URL('input/', VECTORS)).filter((name) => name.endsWith('.json'));

  test('AUD-2: the cyberphone vector set is all there (6 inputs)', () => {
    assert.deepEqual(
      names.toSorted(),
      ['arrays', 'french', 'structures', 'unicode', 'values', 'weird'].map((n) => `${n}.json`),
    );
  });

  for (const name of names) {
    test(`AUD-2: cyberphone ${name} canonicalizes to output/ byte for byte, and to outhex/`, () => {
      const input = JSON.parse(readFileSync(new URL(`input/${name}`, VECTORS), 'utf8'));
      const bytes = Buffer.from(canonicalJson(input), 'utf8');
      assert.deepEqual(bytes, readFileSync(new URL(`output/${name}`, VECTORS)));
      const hex = readFileSync(new URL(`outhex/${name.replace(/\.json$/, '.txt')}`, VECTORS), 'utf8');
      assert.equal(bytes.toString('hex'), hex.replace(/\s+/g, ''));
      assert.ok(isCanonicalJsonText(bytes.toString('utf8')));
    });
  }

  for (const example of rfc.examples) {
    test(`AUD-2: RFC 8785 example ${example.id}`, () => {
      const canonical = canonicalJson(JSON.parse(example.inputJson));
      assert.equal(canonical, example.expectedCanonical);
      if (example.expectedCanonicalUtf8Hex !== undefined) {
        assert.equal(Buffer.from(canonical, 'utf8').toString('hex'), example.expectedCanonicalUtf8Hex);
      }
    });
  }

  test('AUD-2: RFC 8785 Appendix B numbers serialize as printed; NaN and Infinity are refused', () => {
    const { vectors } = rfc.numberSerialization;
    assert.equal(vectors.length, 26);
    for (const { ieee754Hex, expected, comment } of vectors) {
      const value = double(ieee754Hex);
      if (expected === null) {
        assert.throws(() => canonicalJson(value), refused('jcs_unrepresentable'), comment);
        assert.throws(() => canonicalJson({ n: value }), refused('jcs_unrepresentable'), comment);
      } else {
        assert.equal(canonicalJson(value), expected, comment);
      }
    }
  });

  test('AUD-2: RFC 8785 §3.2.2.2 a lone surrogate is refused', () => {
    for (const { desc, inputJson } of rfc.invalidInputs) {
      assert.throws(() => canonicalJson(JSON.parse(inputJson)), refused('jcs_unrepresentable'), desc);
      assert.throws(() => parseCanonicalJson(inputJson), refused('jcs_not_canonical'), desc);
    }
    assert.throws(() => canonicalJson({ '\udead': 1 }), refused('jcs_unrepresentable'));
  });

  test('AUD-2: 10,000 ES6 number serializations (cyberphone corpus) all match', () => {
    const lines = readFileSync(new URL('es6-numbers-10000.txt', VECTORS), 'utf8').split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 10_000);
    for (const line of lines) {
      const [hex = '', expected] = line.split(',');
      assert.equal(canonicalJson(double(hex.padStart(16, '0'))), expected, line);
    }
  });
});

describe('canonicalJson: what JCS cannot represent is refused', () => {
  class Point {
    x = 1;
  }
  const cases: [string, unknown][] = [
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity nested', { a: [Number.NEGATIVE_INFINITY] }],
    ['undefined at the top level', undefined],
    ['undefined in an array', [1, undefined]],
    ['a sparse array', new Array<number>(3)],
    ['BigInt', 10n],
    ['BigInt nested', { n: 1n }],
    ['a function', () => 1],
    ['a function member', { f: () => 1 }],
    ['a symbol', Symbol('s')],
    ['a Date', new Date(0)],
    ['a Map', new Map()],
    ['a Buffer', Buffer.from('x')],
    ['a class instance', new Point()],
    ['a boxed string', Object('s')],
    ['an object with toJSON', { toJSON: () => 'x' }],
  ];
  for (const [label, value] of cases) {
    test(`AUD-2: refuses ${label}`, () => {
      assert.throws(() => canonicalJson(value), refused('jcs_unrepresentable'));
    });
  }

  test('AUD-2: refuses circular structures and nesting deeper than MAX_JSON_DEPTH', () => {
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    assert.throws(() => canonicalJson(loop), refused('jcs_unrepresentable'));
    let deep: unknown = 1;
    for (let i = 0; i < MAX_JSON_DEPTH + 1; i++) deep = [deep];
    assert.throws(() => canonicalJson(deep), refused('jcs_unrepresentable'));
    assert.throws(() => parseCanonicalJson(JSON.stringify(deep)), refused('jcs_not_canonical'));
  });

  test('AUD-2: accepts plain and null-prototype objects; omits undefined members as JSON does; -0 is 0', () => {
    const bare = Object.assign(Object.create(null) as object, { b: 1, a: 2 });
    assert.equal(canonicalJson(bare), '{"a":2,"b":1}');
    assert.equal(canonicalJson({ a: undefined, b: -0 }), '{"b":0}');
    const shared = { x: 1 };
    assert.equal(canonicalJson([shared, shared]), '[{"x":1},{"x":1}]');
  });
});

describe('parseCanonicalJson: only canonical text is accepted', () => {
  test('AUD-2: canonical text round-trips, including integer-like keys that V8 reorders', () => {
    for (const text of ['{"10":1,"9":2,"a":[]}', '{"a":"\\u001f","b":"€","c":1e+21}', '[]', '"x"', 'null']) {
      assert.equal(canonicalJson(parseCanonicalJson(text)), text);
    }
  });

  test('AUD-2: whitespace, unsorted or duplicate keys, non-shortest numbers and needless escapes are refused', () => {
    const texts = [
      '{"a":1 }',
      '{"b":1,"a":2}',
      '{"9":2,"10":1}',
      '{"a":1,"a":1}',
      '{"a":1.0}',
      '{"a":1E3}',
      '{"a":"\\u0041"}',
      '{"a":"\\u001F"}',
      '{"a":"\\/"}',
      '{"a":{"d":1,"c":2}}',
      '[{"b":1,"a":2}]',
      'not json',
    ];
    for (const text of texts)
      assert.throws(() => parseCanonicalJson(text), refused('jcs_not_canonical'), text);
  });
});
