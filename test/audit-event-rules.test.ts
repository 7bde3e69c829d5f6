// The database stores an audit event only if its text equals enclave.jcs(text::jsonb)
// and its fields follow the format's grammars (AUD-3,
// src/db/migrations/0011_audit_event_rules.sql, with the fast paths of 0033).
// Those checks must be the verifier's rules exactly: an event the database
// accepts and the verifier refuses would fail its tenant's bundle forever.
// These tests hold the SQL canonicaliser to the JavaScript one on the shared
// vectors, on random JSON and at the edges of its fast paths, the SQL
// acceptance to the verifier's canonical-text scanner, and the SQL field
// checks to the verifier's (src/audit/event-fields.ts).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { isCanonicalJsonText } from '../src/audit/canonical-text.ts';
import { eventFieldsProblem } from '../src/audit/event-fields.ts';
import { canonicalJson } from '../src/audit/jcs.ts';
import { withTenant } from '../src/db/tenant.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

const VECTORS = new URL('../../shared/vectors/jcs/', import.meta.url);

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
  // A test-only wrapper: a refused text is a null row rather than an aborted query.
  await db.superuser.unsafe(`
    create function enclave_test_try_jcs(p_text text) returns text language plpgsql as $$
    begin
      return enclave.jcs(p_text::jsonb);
    exception when others then
      return null;
    end $$`);
  await db.superuser.unsafe('grant execute on function enclave_test_try_jcs(text) to enclave_app');
});
after(() => db.drop());

/** enclave.jcs over each text parsed as jsonb, in one round trip; null where PostgreSQL refuses the text or jcs raises. */
async function sqlCanonical(texts: readonly string[]): Promise<(string | null)[]> {
  const rows = await db.app<{ n: number; canonical: string | null }[]>`
    select t.n::int, enclave_test_try_jcs(t.text) as canonical
    from unnest(${texts}::text[]) with ordinality t(text, n) order by t.n`;
  return rows.map((row) => row.canonical);
}

function double(hex: string): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${hex}`));
  return view.getFloat64(0);
}

/** A string PostgreSQL can hold: no NUL (text cannot), no lone surrogate (jsonb refuses it, and JCS cannot represent it). */
function storable(value: string): boolean {
  return value.isWellFormed() && !value.includes('\u0000');
}

/** Every string in the value (names included) storable. */
function allStorable(value: unknown): boolean {
  if (typeof value === 'string') return storable(value);
  if (Array.isArray(value)) return value.every(allStorable);
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value).every(([name, member]) => storable(name) && allStorable(member));
  }
  return true;
}

const json = fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }).filter(allStorable);

describe('enclave.jcs agrees with the JavaScript canonicaliser', () => {
  test('AUD-3: on the RFC 8785 vectors: every input canonicalises to its expected output', async () => {
    const names = readdirSync(new URL('input/', VECTORS));
    const inputs = names.map((name) => readFileSync(new URL(`input/${name}`, VECTORS), 'utf8'));
    const outputs = names.map((name) => readFileSync(new URL(`output/${name}`, VECTORS), 'utf8'));
    assert.deepEqual(await sqlCanonical(inputs), outputs);
  });

  test('AUD-3: on the 10,000 ES6 number serializations, each given in 17 significant digits', async () => {
    const lines = readFileSync(new URL('es6-numbers-10000.txt', VECTORS), 'utf8').trimEnd().split('\n');
    const cases = lines.map((line) => {
      const [hex = '', expected = ''] = line.split(',');
      return { given: double(hex.padStart(16, '0')).toPrecision(17), expected };
    });
    const got = await sqlCanonical(cases.map((c) => c.given));
    const wrong = cases.filter((c, i) => got[i] !== c.expected);
    assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} numbers printed differently`);
  });

  test('AUD-3: on random JSON (fast-check), written with whitespace: jcs(text) = canonicalJson(value)', async () => {
    const values = fc.sample(json, { numRuns: 2000, seed: 11 });
    const texts = values.map((value) => JSON.stringify(value, null, 1));
    const got = await sqlCanonical(texts);
    const wrong = values.filter((value, i) => got[i] !== canonicalJson(value));
    assert.deepEqual(wrong.slice(0, 3), [], `${wrong.length} values canonicalised differently`);
  });

  test('AUD-3: jcs(text) = text exactly when the verifier calls the text canonical, on canonical texts and on mutations of them', async () => {
    const variants = fc.sample(
      json.chain((value) =>
        fc.constantFrom(
          canonicalJson(value),
          JSON.stringify(value),
          canonicalJson(value).replaceAll(':', ': '),
          canonicalJson(value).replace(/(\d)([,\]}])/, '$1.0$2'),
          canonicalJson(value).replace(/"([A-Za-z])/, '"\\u00$1'),
          canonicalJson(value).replace(/\{"([^"]*)":([^,{}]*),"([^"]*)":([^,{}]*)\}/, '{"$3":$4,"$1":$2}'),
        ),
      ),
      { numRuns: 3000, seed: 12 },
    );
    const got = await sqlCanonical(variants);
    const disagreements = variants.filter((text, i) => (got[i] === text) !== isCanonicalJsonText(text));
    assert.deepEqual(disagreements.slice(0, 3), []);
    // The mutations did produce both answers, so the agreement is not vacuous.
    const accepted = variants.filter((text, i) => got[i] === text).length;
    assert.ok(
      accepted > 500 && accepted < variants.length - 500,
      `accepted ${accepted} of ${variants.length}`,
    );
  });

  test('AUD-3: keys are ordered by UTF-16 code units, not code points: "\\u{1F600}" sorts before "\\uFB33"', async () => {
    const value = { '\uFB33': 1, '\u{1F600}': 2, a: 3, '\u00e9': 4 };
    assert.deepEqual(await sqlCanonical([JSON.stringify(value)]), [canonicalJson(value)]);
    assert.ok(canonicalJson(value).indexOf('\u{1F600}') < canonicalJson(value).indexOf('\uFB33'));
  });

  test('AUD-3: at the edges of the fast paths (integers of 15 and 16 digits, -0, 1e21, member names above U+FFFF beside others), jcs(text) = canonicalJson(value)', async () => {
    const numbers = ['0', '0.0', '7', '1e2', '1E2', '100.0', '1.5', '1e-7', '0.000001'];
    const digits = ['999999999999999', '1000000000000000', '9007199254740991', '9007199254740993'];
    const large = ['12345678901234567890', '1e20', '1e21', '1E21', '123456789012345.6', '1e15', '1e14'];
    const texts = [
      ...[...numbers, ...digits, ...large].flatMap((n) => [n, `-${n}`, `[${n}]`, `{"n":${n}}`]),
      `[${digits.join(',')},-0,1e21]`,
      // U+E000–U+FFFF sort after U+10000 and above in UTF-16, before them in UTF-8.
      '{"\uFB33":1,"\uD83D\uDE00":2,"a":3,"\u00e9":4,"\uFFFF":5,"\uE000":6,"\uD800\uDC00":7,"z":8}',
      '{"a\uD83D\uDE00":1,"a\uFFFF":2,"a":3,"ab":4,"a\uE000b":5}',
      '{"b":{"\uD83D\uDE00":1,"\uE000":2},"a":[{"\uFFFD":1,"\uD83C\uDF0D":2},{"x":1,"é":2}]}',
      '{"\uD83D\uDE00":{"\uD83D\uDE01":[1,1e21,-0]},"\uFB33":{"\uFB34":1,"\uFB32":2}}',
    ];
    const expected = texts.map((text) => canonicalJson(JSON.parse(text)));
    assert.deepEqual(await sqlCanonical(texts), expected);
    // Both sides of each edge are there: printed as jsonb has them, and not.
    assert.ok(expected.includes('999999999999999') && expected.includes('1000000000000000'));
    assert.ok(expected.includes('1e+21') && expected.includes('0') && expected.includes('9007199254740992'));
  });

  test('AUD-3: nesting deeper than 100 containers, and numbers beyond a double, are refused', async () => {
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    assert.deepEqual(await sqlCanonical([deep(100), deep(101), '1e400', '-1e400', '[1e308]']), [
      deep(100),
      null,
      null,
      null,
      '[1e+308]',
    ]);
  });
});

describe("the database's field rules are the verifier's", () => {
  const storableText = (text: fc.Arbitrary<string>) => text.filter(storable);
  const fields = fc.record({
    action: storableText(
      fc.oneof(
        { arbitrary: fc.stringMatching(/^[a-z][a-z0-9_]{0,4}(\.[a-z][a-z0-9_]{0,4}){1,3}$/), weight: 6 },
        fc.string({ unit: 'binary', maxLength: 12 }),
        fc.constantFrom('Evil Action!', 'a.b', 'a..b', 'a.B', '1a.b', 'a.b.', '.a.b', 'é.b', 'a_.b9'),
        fc.constantFrom(`${'x'.repeat(64)}.${'y'.repeat(63)}`, `${'x'.repeat(64)}.${'y'.repeat(64)}`),
      ),
    ),
    actor: storableText(
      fc.oneof(
        { arbitrary: fc.constantFrom('system', 'user:1', '~'.repeat(256)), weight: 4 },
        fc.constantFrom('evil actor', '~'.repeat(257), '', 'é', '\u007f'),
        fc.string({ unit: 'binary', maxLength: 10 }),
      ),
    ),
    target: fc.oneof(
      { arbitrary: fc.constant(null), weight: 3 },
      storableText(fc.string({ unit: 'binary', maxLength: 10 })),
      fc.constantFrom('', 'a'.repeat(512), 'a'.repeat(513), '\u{1F600}'.repeat(512), '\u{1F600}'.repeat(513)),
      fc.constantFrom('tab\there', 'del\u007f', 'c1\u0085', 'é'.repeat(512)),
    ),
  });

  test('AUD-3: an event is appended exactly when the verifier accepts its actor, action and target (fast-check, 400 events)', async () => {
    const tenant = randomUUID();
    await withTenant(db.app, tenant, (tx) => tx`insert into tenants (id, name) values (${tenant}, 'rules')`);
    const samples = fc.sample(fields, { numRuns: 400, seed: 13 });
    const disagreements: unknown[] = [];
    let accepted = 0;
    for (const { action, actor, target } of samples) {
      const parts = {
        beforeSeq: `{"action":${canonicalJson(action)},"actor":${canonicalJson(actor)},"data":{},"seq":`,
        beforeTs: `,"target":${canonicalJson(target)},"tenant":"${tenant}","ts":"`,
      };
      const stored = await withTenant(db.app, tenant, async (tx) => {
        await tx`select enclave.audit_append_event(${parts.beforeSeq}, ${parts.beforeTs}, '","v":1}')`;
        return true;
      }).catch((error: { code?: string }) => {
        if (error.code !== '22023') throw error;
        return false;
      });
      const verifierAccepts =
        eventFieldsProblem({
          tenant,
          seq: 1,
          ts: '2026-12-02T10:00:00.000Z',
          actor,
          action,
          target,
          data: {},
        }) === undefined;
      if (stored) accepted += 1;
      if (stored !== verifierAccepts) disagreements.push({ action, actor, target, stored });
    }
    assert.deepEqual(disagreements.slice(0, 3), []);
    assert.ok(accepted > 80 && accepted < samples.length - 80, `accepted ${accepted} of ${samples.length}`);
  });
});
