import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isAuditError } from './errors.ts';
import {
  type AuditEvent,
  type AuditEventFields,
  canonicalEvent,
  canonicalEventParts,
  eventHash,
  formatEventTime,
  GENESIS_HASH,
  parseCanonicalEvent,
  readCanonicalEvent,
} from './event.ts';
import { canonicalJson } from './jcs.ts';
import { mutate, oracleParse, pick, randomValue, seededRandom } from './json-oracle.testing.ts';

// The format an independent verifier is written from: the hashed text is the
// JCS form of exactly eight fields, and each hash chains from the one before.
// The known answers below were computed outside this code base (Python's
// json.dumps with sorted keys and no whitespace, which equals JCS for these
// values, and hashlib.sha256), so they pin the format, not our implementation.

const TENANT = '6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f';
const FIRST: AuditEventFields = {
  tenant: TENANT,
  seq: 1,
  ts: '2026-11-21T16:12:38.257Z',
  actor: 'user:0b7e9a52-8c1d-4f3e-a2b4-5c6d7e8f9a0b',
  action: 'session.login',
  target: null,
  data: { method: 'password', ip: '203.0.113.7' },
};
const SECOND: AuditEventFields = {
  tenant: TENANT,
  seq: 2,
  ts: '2026-11-21T16:13:01.004Z',
  actor: 'system',
  action: 'invite.created',
  target: 'invite:Zoë',
  data: { note: '€5 – café', n: [1, 2.5, -3] },
};
const FIRST_CANONICAL =
  '{"action":"session.login","actor":"user:0b7e9a52-8c1d-4f3e-a2b4-5c6d7e8f9a0b","data":{"ip":"203.0.113.7","method":"password"},"seq":1,"target":null,"tenant":"6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f","ts":"2026-11-21T16:12:38.257Z","v":1}';
const FIRST_HASH = 'bc9c262a65e868424198c036e417fe920da30da66257691a2793afa968139cf4';
const SECOND_CANONICAL =
  '{"action":"invite.created","actor":"system","data":{"n":[1,2.5,-3],"note":"€5 – café"},"seq":2,"target":"invite:Zoë","tenant":"6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f","ts":"2026-11-21T16:13:01.004Z","v":1}';
const SECOND_HASH = '29e649c377433aa3d2980b740f538bfcca54ef68b7869fb201ba8d2ebadc1f64';

function refused(code: string) {
  return (error: unknown) => isAuditError(error) && error.code === code;
}

describe('audit event format', () => {
  test('AUD-2: the canonical text is JCS of {v: 1, tenant, seq, ts, actor, action, target, data}', () => {
    assert.equal(canonicalEvent(FIRST), FIRST_CANONICAL);
    assert.equal(canonicalEvent(SECOND), SECOND_CANONICAL);
  });

  test('AUD-2: hash = SHA-256(prev_hash ‖ UTF-8 canonical), seq 1 chaining from 32 zero bytes', () => {
    assert.deepEqual(GENESIS_HASH, Buffer.alloc(32));
    const first = eventHash(GENESIS_HASH, FIRST_CANONICAL);
    assert.equal(first.toString('hex'), FIRST_HASH);
    assert.equal(eventHash(first, SECOND_CANONICAL).toString('hex'), SECOND_HASH);
  });

  test('AUD-2: eventHash refuses a prev_hash that is not 32 bytes', () => {
    assert.throws(() => eventHash(Buffer.alloc(31), FIRST_CANONICAL), refused('event_invalid'));
  });

  test('AUD-2: parseCanonicalEvent returns exactly the fields that were hashed', () => {
    assert.deepEqual(parseCanonicalEvent(FIRST_CANONICAL), { v: 1, ...FIRST });
    assert.deepEqual(parseCanonicalEvent(SECOND_CANONICAL), { v: 1, ...SECOND });
  });

  test('AUD-2: formatEventTime gives RFC 3339 UTC with milliseconds', () => {
    assert.equal(
      formatEventTime(new Date(Date.UTC(2026, 10, 21, 16, 12, 38, 257))),
      '2026-11-21T16:12:38.257Z',
    );
  });

  const badFields: [string, Partial<Record<keyof AuditEventFields, unknown>>][] = [
    ['an uppercase tenant', { tenant: TENANT.toUpperCase() }],
    ['a tenant that is not a UUID', { tenant: 'acme' }],
    ['seq 0', { seq: 0 }],
    ['a fractional seq', { seq: 1.5 }],
    ['an unsafe seq', { seq: 2 ** 53 }],
    ['a seq given as a string', { seq: '1' }],
    ['a ts without milliseconds', { ts: '2026-11-21T16:12:38Z' }],
    ['a ts with an offset', { ts: '2026-11-21T17:12:38.257+01:00' }],
    ['a ts that does not exist', { ts: '2026-02-30T00:00:00.000Z' }],
    ['an empty actor', { actor: '' }],
    ['an actor with a space', { actor: 'user: x' }],
    ['an action without a dot', { action: 'login' }],
    ['an uppercase action', { action: 'Session.Login' }],
    ['an empty target', { target: '' }],
    ['a target with a newline', { target: 'a\nb' }],
    ['an undefined target', { target: undefined }],
    ['data that is an array', { data: [] }],
    ['data that is null', { data: null }],
  ];
  for (const [label, change] of badFields) {
    test(`AUD-2: canonicalEvent refuses ${label}`, () => {
      assert.throws(
        () => canonicalEvent({ ...FIRST, ...change } as AuditEventFields),
        refused('event_invalid'),
      );
    });
  }

  test('AUD-2: canonicalEvent refuses data JCS cannot represent', () => {
    for (const data of [{ at: new Date() }, { n: Number.NaN }, { n: 1n }, { s: '\ud800' }]) {
      assert.throws(() => canonicalEvent({ ...FIRST, data }), refused('jcs_unrepresentable'));
    }
  });
});

describe('the canonical text cut around seq and ts (canonicalEventParts, for the one-trip append)', () => {
  test('AUD-2: beforeSeq + seq + beforeTs + ts + afterTs is canonicalEvent of the event, on 3,000 random events (seeded)', () => {
    const random = seededRandom(0x5eb1ce);
    const targets = [null, 'invite:Zoë', 'a"b', 'a\\b', ',"seq":7', '😀', 'x'];
    const actors = ['system', 'anonymous', 'user:0b7e9a52-8c1d-4f3e-a2b4-5c6d7e8f9a0b', 'op"x', '"seq":1'];
    const actions = ['session.login', 'a.b', 'seq.ts', 'x_1.y_2.z'];
    const hex = (n: number) =>
      Array.from({ length: n }, () => '0123456789abcdef'[Math.floor(random() * 16)]).join('');
    let compared = 0;
    for (let i = 0; i < 3000; i++) {
      const data = randomValue(random, 1);
      const fields = {
        tenant: `${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)}`,
        actor: pick(random, actors),
        action: pick(random, actions),
        target: pick(random, targets),
        data: {
          ...(typeof data === 'object' && data !== null && !Array.isArray(data) ? data : { value: data }),
          ...(random() < 0.3 ? { seq: 5, ts: '"ts":"', v: 2 } : {}),
        },
      };
      const seq =
        random() < 0.1 ? Number.MAX_SAFE_INTEGER : 1 + Math.floor(random() * 10 ** (1 + random() * 12));
      const ts = formatEventTime(new Date(Math.floor(random() * 8e12)));
      let whole: string;
      try {
        whole = canonicalEvent({ ...fields, seq, ts });
      } catch {
        assert.throws(() => canonicalEventParts(fields), isAuditError);
        continue; // data the writer refuses (a lone surrogate): refused alike
      }
      const { beforeSeq, beforeTs, afterTs } = canonicalEventParts(fields);
      assert.equal(beforeSeq + seq + beforeTs + ts + afterTs, whole);
      compared++;
    }
    assert.ok(compared > 2000, `${compared} compared`);
  });

  test('AUD-2: the parts of a known event, and the same refusals as canonicalEvent', () => {
    const { seq: _seq, ts: _ts, ...fields } = FIRST;
    assert.deepEqual(canonicalEventParts(fields), {
      beforeSeq:
        '{"action":"session.login","actor":"user:0b7e9a52-8c1d-4f3e-a2b4-5c6d7e8f9a0b","data":{"ip":"203.0.113.7","method":"password"},"seq":',
      beforeTs: ',"target":null,"tenant":"6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f","ts":"',
      afterTs: '","v":1}',
    });
    assert.throws(() => canonicalEventParts({ ...fields, tenant: 'NOT-A-UUID' }), refused('event_invalid'));
    assert.throws(
      () => canonicalEventParts({ ...fields, data: { n: Number.NaN } }),
      refused('jcs_unrepresentable'),
    );
  });
});

describe('parseCanonicalEvent refuses what the writer could not have produced', () => {
  const variants: [string, string, string][] = [
    ['not JSON', '{', 'event_invalid'],
    ['an array', '[]', 'event_invalid'],
    ['an extra key', FIRST_CANONICAL.replace('"v":1}', '"v":1,"w":2}'), 'event_invalid'],
    ['a missing key', FIRST_CANONICAL.replace('"target":null,', ''), 'event_invalid'],
    ['format version 2', FIRST_CANONICAL.replace('"v":1}', '"v":2}'), 'event_invalid'],
    ['seq as a string', FIRST_CANONICAL.replace('"seq":1', '"seq":"1"'), 'event_invalid'],
    ['a bad field', FIRST_CANONICAL.replace('session.login', 'LOGIN'), 'event_invalid'],
    ['whitespace', FIRST_CANONICAL.replace('"seq":1', '"seq": 1'), 'jcs_not_canonical'],
    ['seq written as 1.0', FIRST_CANONICAL.replace('"seq":1', '"seq":1.0'), 'jcs_not_canonical'],
    [
      'unsorted data keys',
      FIRST_CANONICAL.replace(
        '{"ip":"203.0.113.7","method":"password"}',
        '{"method":"password","ip":"203.0.113.7"}',
      ),
      'jcs_not_canonical',
    ],
    ['a needless escape', FIRST_CANONICAL.replace('password', 'p\\u0061ssword'), 'jcs_not_canonical'],
    ['a lone surrogate in data', FIRST_CANONICAL.replace('password', '\\ud800'), 'jcs_not_canonical'],
    ['a duplicated key', FIRST_CANONICAL.replace('"seq":1,', '"seq":1,"seq":1,'), 'jcs_not_canonical'],
  ];
  for (const [label, text, code] of variants) {
    test(`AUD-2: refuses ${label}`, () => {
      assert.throws(() => parseCanonicalEvent(text), refused(code));
    });
  }
});

describe("the verifier's fast reader (readCanonicalEvent)", () => {
  const TARGETS = [null, 'invite:Zoë', 'a"b', 'a\\b', 'line\u2028sep', '😀', 'x'];
  const ACTORS = ['system', 'anonymous', 'user:0b7e9a52-8c1d-4f3e-a2b4-5c6d7e8f9a0b', 'op"x', 'a\\b'];

  /** Accepted by the definition: canonical over an independent parser, and a valid event. */
  function reference(text: string): AuditEvent | undefined {
    try {
      if (canonicalJson(oracleParse(text)) !== text) return undefined;
      return parseCanonicalEvent(text);
    } catch {
      return undefined;
    }
  }

  test('AUD-5: returns the same fields as parseCanonicalEvent; data is read on demand', () => {
    const event = readCanonicalEvent(SECOND_CANONICAL);
    assert.ok(event !== undefined);
    assert.deepEqual({ ...event, data: event.data }, parseCanonicalEvent(SECOND_CANONICAL));
    assert.deepEqual(JSON.parse(JSON.stringify(event)), { v: 1, ...SECOND });
    assert.equal(readCanonicalEvent(SECOND_CANONICAL, { tenant: TENANT })?.seq, 2);
  });

  test('AUD-5: a raw control character anywhere in the text is refused, as the definition does, and never throws', () => {
    // The reader searches only data for one: every other string has a stricter rule of its own.
    const known = { tenant: TENANT, actor: SECOND.actor, action: SECOND.action };
    const withControl = [
      SECOND_CANONICAL.replace('"note":"€5', '"note":"€\t5'), // in a data value
      SECOND_CANONICAL.replace('"note":', '"no\u0001te":'), // in a data key
      SECOND_CANONICAL.replace('"note":', '"no\\"\nte":'), // in a data key with an escape
      SECOND_CANONICAL.replace('"n":[1,2.5,-3],"note"', '"\\\\":[1,2.5,-3],"n\u0001ote"'), // after an escaped key
      SECOND_CANONICAL.replace('invite:Zoë', 'invite:\nZoë'), // in the target
      SECOND_CANONICAL.replace('invite:Zoë', 'invite:\\"\rZoë'), // in the target, after an escape
      SECOND_CANONICAL.replace('"actor":"system"', '"actor":"sys\ttem"'),
      SECOND_CANONICAL.replace('"actor":"system"', '"actor":"sys\\"\ttem"'),
      SECOND_CANONICAL.replace('invite.created', 'invite.cr\u0000eated'),
      SECOND_CANONICAL.replace(TENANT, `${TENANT}\n`),
      SECOND_CANONICAL.replace('2026-11-21T16:13:01.004Z', '2026-11-21T16:13:01.004Z\u001f'),
    ];
    for (const text of withControl) {
      assert.ok(
        [...text].some((c) => c < ' '),
        JSON.stringify(text),
      );
      assert.equal(reference(text), undefined, JSON.stringify(text));
      assert.equal(readCanonicalEvent(text), undefined, JSON.stringify(text));
      assert.equal(readCanonicalEvent(text, known), undefined, JSON.stringify(text));
    }
  });

  test('AUD-5: accepts exactly what the definition accepts, on 2,000 random events and 30,000 mutations (seeded)', () => {
    const random = seededRandom(0xa0d15);
    let [accepted, checked] = [0, 0];
    for (let i = 0; i < 2000; i++) {
      const data = randomValue(random, 1);
      const fields = {
        ...FIRST,
        seq: 1 + Math.floor(random() * 1e9),
        actor: pick(random, ACTORS),
        target: pick(random, TARGETS),
        data: typeof data === 'object' && data !== null && !Array.isArray(data) ? data : { value: data },
      };
      let text: string;
      try {
        text = canonicalEvent(fields as AuditEventFields);
      } catch {
        continue; // fields the writer refuses
      }
      for (const candidate of [text, ...Array.from({ length: 15 }, () => mutate(random, text))]) {
        const expected = reference(candidate);
        const got = readCanonicalEvent(candidate, random() < 0.5 ? { tenant: TENANT } : undefined);
        assert.equal(got !== undefined, expected !== undefined, JSON.stringify(candidate));
        if (got !== undefined) {
          assert.deepEqual({ ...got, data: got.data }, expected);
          accepted++;
        }
        checked++;
      }
    }
    assert.ok(accepted > 1000 && checked > 20_000, `${accepted} accepted of ${checked}`);
  });
});
