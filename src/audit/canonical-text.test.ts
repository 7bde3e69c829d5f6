import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isCanonicalJsonText, MAX_JSON_DEPTH, parseCanonicalJsonText } from './canonical-text.ts';
import { canonicalJson } from './jcs.ts';
import { mutate, oracleParse, randomValue, seededRandom } from './json-oracle.testing.ts';

// The verifier accepts a hashed text only if it is exactly canonical. It
// decides that with a one-pass scanner instead of parse + re-serialize, so
// the scanner must agree with the definition on every input an attacker can
// write: canonicalJson(parse(text)) === text. These tests hold it to that
// definition on the vectors and on a seeded differential fuzz run, and check
// that the value it returns is the value the text denotes.

const VECTORS = new URL('../../../shared/vectors/jcs/', import.meta.url);

/** The definition the scanner must match, over an independent parser (JSON.parse has a key bug, see json-oracle.testing.ts). */
function referenceIsCanonical(text: string): boolean {
  try {
    return canonicalJson(oracleParse(text)) === text;
  } catch {
    return false;
  }
}

describe('isCanonicalJsonText agrees with canonicalJson(parse(text)) === text', () => {
  test('AUD-2: on the cyberphone vectors: outputs are canonical, inputs are not', () => {
    for (const name of readdirSync(new URL('input/', VECTORS))) {
      const output = readFileSync(new URL(`output/${name}`, VECTORS), 'utf8');
      const input = readFileSync(new URL(`input/${name}`, VECTORS), 'utf8');
      assert.equal(isCanonicalJsonText(output), true, name);
      assert.equal(isCanonicalJsonText(input), referenceIsCanonical(input), name);
      assert.equal(isCanonicalJsonText(input), false, name);
    }
  });

  test('AUD-2: on hand-picked edge cases', () => {
    const cases = [
      '',
      ' ',
      '0',
      '-0',
      '1.0',
      '1e3',
      '1E21',
      '1e+21',
      '1e21',
      '0.0000001',
      '1e-7',
      '5e-324',
      '4e-324',
      '-',
      '01',
      '"a"',
      '"\\u0041"',
      '"\\u001f"',
      '"\\u001F"',
      '"\\u000a"',
      '"\\n"',
      '"\\/"',
      '"/"',
      '"\u007f"',
      '"\u2028"',
      '"\\ud83d\\ude00"',
      '"😀"',
      '"\\udead"',
      '"\ud800"',
      '"\t"',
      '"a',
      'true',
      'tru',
      'nul',
      'null ',
      '[1,2]',
      '[1, 2]',
      '[,]',
      '[1,]',
      '{}',
      '{"a":1}',
      '{"a":1,"a":1}',
      '{"b":1,"a":2}',
      '{"10":1,"9":2}',
      '{"9":2,"10":1}',
      '{"a":1,}',
      '{"a"1}',
      '{"\\n":1,"a":2}',
      '{"a":2,"\\n":1}',
      '{"\\"":1,"\\\\":2}',
      '{"\\\\":2,"\\"":1}',
      '{"é":1,"😀":2}',
      '{"😀":2,"é":1}',
      '{"\ufb33":1,"😀":2}',
      '{"😀":2,"\ufb33":1}',
      '"\\u0000"',
      '"\\u0008"',
      '"\\b"',
      '[[[]]]',
      '{"a":{"b":{"c":[1,{"d":null}]}}}',
      '123456789012345',
      '1234567890123456',
      '12345678901234567890',
      '100000000000000000000',
      '1e+400',
      '-1.5e-7',
      '0.1',
      '.1',
      '+1',
      '1.',
      '1.50',
      '2e-7',
      '2.0e-7',
    ];
    for (const text of cases)
      assert.equal(isCanonicalJsonText(text), referenceIsCanonical(text), JSON.stringify(text));
  });

  test('AUD-2: at and past the nesting limit', () => {
    for (const depth of [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1]) {
      const arrays = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const objects = `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`;
      for (const text of [arrays, objects]) {
        assert.equal(isCanonicalJsonText(text), referenceIsCanonical(text), `depth ${depth}`);
      }
    }
    assert.equal(isCanonicalJsonText(`${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`), true);
    assert.equal(
      isCanonicalJsonText(`${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`),
      false,
    );
  });

  test('AUD-2: on 4,000 random canonical texts and 40,000 mutations of them (seeded)', () => {
    const random = seededRandom(0x5eed);
    let [generated, mutated, stillCanonical] = [0, 0, 0];
    while (generated < 4000) {
      let text: string;
      try {
        text = canonicalJson(randomValue(random, 0));
      } catch {
        continue; // a lone surrogate from splitting 😀 is not representable; the writer refuses it too
      }
      generated++;
      assert.equal(isCanonicalJsonText(text), true, text);
      assert.deepEqual(parseCanonicalJsonText(text), oracleParse(text));
      for (let i = 0; i < 10; i++) {
        const candidate = mutate(random, text);
        const expected = referenceIsCanonical(candidate);
        assert.equal(isCanonicalJsonText(candidate), expected, JSON.stringify(candidate));
        if (expected) assert.deepEqual(parseCanonicalJsonText(candidate), oracleParse(candidate));
        else assert.equal(parseCanonicalJsonText(candidate), undefined);
        mutated++;
        if (expected) stillCanonical++;
      }
    }
    assert.equal(mutated, 40_000);
    assert.ok(
      stillCanonical > 100,
      `some mutations stay canonical (${stillCanonical}), so both answers are exercised`,
    );
  });

  test('AUD-2: the oracle parser agrees with JSON.parse on texts without escapes', () => {
    const random = seededRandom(0x0dac1e);
    for (let i = 0; i < 2000; i++) {
      const text = mutate(random, JSON.stringify(randomValue(random, 0)));
      if (text.includes('\\')) continue;
      let native: unknown;
      try {
        native = JSON.parse(text);
      } catch {
        assert.throws(() => oracleParse(text), SyntaxError, text);
        continue;
      }
      assert.deepEqual(oracleParse(text), native, text);
    }
  });
});

describe('parseCanonicalJsonText reads escaped keys right where JSON.parse may not', () => {
  test('AUD-2: an escaped key is decoded correctly after an earlier parse poisoned V8 (nodejs/node#63785)', () => {
    // Attack: an earlier event carries the key "c\\" (c, backslash); in Node 24/26 JSON.parse then reads
    // the later key "c\t" (c, tab) as "c\\" too, so a verifier built on JSON.parse would show other data.
    JSON.parse('{"c\\\\":1}');
    const text = '{"c\\t":2}';
    assert.deepEqual(Object.keys(parseCanonicalJsonText(text) as object), ['c\t']);
    assert.equal(canonicalJson(parseCanonicalJsonText(text)), text);
  });
});
