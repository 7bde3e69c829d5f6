import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type ChainRecord,
  type ChainResult,
  ChainVerifier,
  type Utf8ChainRecord,
  verifyChain,
} from './chain.ts';
import { isAuditError } from './errors.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from './event.ts';

// The offline verifier's core (AUD-5). The attacker is anyone who can write
// the exported file or the database rows behind it: they may change, delete,
// reorder, insert or re-hash events. Each test makes one such change and
// checks that the verifier names the first seq where the chain breaks.

const TENANT = '3b0e6a54-1f7c-4d2a-9b8e-7c6d5e4f3a2b';
const OTHER_TENANT = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';

interface Row {
  canonical: string;
  hash: string;
}

function event(seq: number, tenant = TENANT, data: Record<string, unknown> = { n: seq }): string {
  const ts = new Date(Date.UTC(2026, 10, 21, 12, 0, 0, seq)).toISOString();
  return canonicalEvent({ tenant, seq, ts, actor: 'system', action: 'test.event', target: null, data });
}

/** Hashes canonical texts into a chain, as the database does. */
function chainOf(canonicals: string[], prev: Buffer = GENESIS_HASH): Row[] {
  return canonicals.map((canonical) => {
    prev = eventHash(prev, canonical);
    return { canonical, hash: prev.toString('hex') };
  });
}

function chain(count: number): Row[] {
  return chainOf(Array.from({ length: count }, (_, i) => event(i + 1)));
}

function assertFailure(result: ChainResult, seq: number, code: string): void {
  assert.equal(result.ok, false, 'the chain should not verify');
  if (!result.ok) assert.deepEqual({ seq: result.seq, code: result.code }, { seq, code }, result.reason);
}

describe('verifyChain: an intact chain', () => {
  test('AUD-5: an untouched chain verifies and reports its head (hex or raw hashes)', () => {
    const rows = chain(50);
    const head = { seq: 50, hash: Buffer.from(rows[49]?.hash ?? '', 'hex') };
    assert.deepEqual(verifyChain(rows, { tenant: TENANT }), { ok: true, count: 50, head });
    const raw = rows.map(({ canonical, hash }) => ({ canonical, hash: Buffer.from(hash, 'hex') }));
    assert.deepEqual(verifyChain(raw, { tenant: TENANT }), { ok: true, count: 50, head });
  });

  test('AUD-5: an empty chain verifies with the genesis head', () => {
    assert.deepEqual(verifyChain([], { tenant: TENANT }), {
      ok: true,
      count: 0,
      head: { seq: 0, hash: GENESIS_HASH },
    });
  });

  test('AUD-5: a chain continues from a known head (archive segment, then hot events)', () => {
    const rows = chain(20);
    const head10 = Buffer.from(rows[9]?.hash ?? '', 'hex');
    const result = verifyChain(rows.slice(10), {
      tenant: TENANT,
      expectFirstSeq: 11,
      expectPrevHash: head10,
    });
    assert.equal(result.ok && result.head.seq, 20);
    const wrongPrev = verifyChain(rows.slice(10), {
      tenant: TENANT,
      expectFirstSeq: 11,
      expectPrevHash: GENESIS_HASH,
    });
    assertFailure(wrongPrev, 11, 'chain_hash_mismatch');
    assert.throws(
      () => new ChainVerifier({ tenant: TENANT, expectFirstSeq: 11 }),
      (error) => isAuditError(error) && error.code === 'event_invalid',
    );
  });

  test('AUD-5: a tenant that is not a valid id matches no event', () => {
    assertFailure(verifyChain(chain(2), { tenant: 'ACME' }), 1, 'chain_tenant_mismatch');
    const forged = chainOf([event(1).replace(TENANT, 'ACME')]);
    assertFailure(verifyChain(forged, { tenant: 'ACME' }), 1, 'chain_record_invalid');
  });

  test('AUD-5: ChainVerifier streams: push returns each event, nothing after the first failure', () => {
    const rows = chain(5);
    const verifier = new ChainVerifier({ tenant: TENANT });
    assert.equal(verifier.push(rows[0] as Row)?.seq, 1);
    assert.equal(verifier.push(rows[2] as Row), undefined);
    assert.equal(verifier.push(rows[1] as Row), undefined, 'stays failed');
    assertFailure(verifier.result(), 2, 'chain_seq_gap');
    const failed = verifier.result();
    assert.equal(!failed.ok && failed.count, 1);
  });
});

describe('verifyChain: tampering names the first bad seq', () => {
  test('AUD-5: one event changed, its hash left alone → hash mismatch at that seq', () => {
    const rows = chain(10);
    rows[4] = { ...(rows[4] as Row), canonical: event(5, TENANT, { n: 500 }) };
    assertFailure(verifyChain(rows, { tenant: TENANT }), 5, 'chain_hash_mismatch');
  });

  test('AUD-5: one event changed and re-hashed → the next link breaks', () => {
    const rows = chain(10);
    const canonical = event(5, TENANT, { n: 500 });
    rows[4] = {
      canonical,
      hash: eventHash(Buffer.from(rows[3]?.hash ?? '', 'hex'), canonical).toString('hex'),
    };
    assertFailure(verifyChain(rows, { tenant: TENANT }), 6, 'chain_hash_mismatch');
  });

  test('AUD-5: every later hash rewritten consistently → the chain holds but its head moves (the checkpoint pins it)', () => {
    const original = chain(10);
    const texts = original.map((row) => row.canonical);
    texts[4] = event(5, TENANT, { n: 500 });
    const result = verifyChain(chainOf(texts), { tenant: TENANT });
    assert.ok(result.ok);
    assert.notEqual(result.head.hash.toString('hex'), original[9]?.hash);
  });

  test('AUD-5: a middle event deleted → seq gap at the missing seq', () => {
    const rows = chain(10);
    rows.splice(6, 1);
    assertFailure(verifyChain(rows, { tenant: TENANT }), 7, 'chain_seq_gap');
  });

  test('AUD-5: the newest events deleted → the chain verifies with an earlier head (caught against the checkpoint)', () => {
    const result = verifyChain(chain(10).slice(0, 7), { tenant: TENANT });
    assert.equal(result.ok && result.head.seq, 7);
  });

  test('AUD-5: two events swapped → seq gap at the first of them', () => {
    const rows = chain(10);
    [rows[3], rows[4]] = [rows[4] as Row, rows[3] as Row];
    assertFailure(verifyChain(rows, { tenant: TENANT }), 4, 'chain_seq_gap');
  });

  test('AUD-5: a forged event inserted with a correct link → the displaced event repeats its seq', () => {
    const rows = chain(10);
    const [forged] = chainOf([event(4, TENANT, { forged: true })], Buffer.from(rows[2]?.hash ?? '', 'hex'));
    rows.splice(3, 0, forged as Row);
    const result = verifyChain(rows, { tenant: TENANT });
    assertFailure(result, 5, 'chain_seq_gap');
    assert.match(result.ok ? '' : result.reason, /found seq 4/);
  });

  test('AUD-5: a forged event inserted without a valid hash → hash mismatch at its seq', () => {
    const rows = chain(10);
    rows.splice(3, 0, { canonical: event(4, TENANT, { forged: true }), hash: 'ab'.repeat(32) });
    assertFailure(verifyChain(rows, { tenant: TENANT }), 4, 'chain_hash_mismatch');
  });

  test("AUD-5: another tenant's event in the chain → tenant mismatch", () => {
    const texts = chain(5).map((row) => row.canonical);
    texts[2] = event(3, OTHER_TENANT);
    assertFailure(verifyChain(chainOf(texts), { tenant: TENANT }), 3, 'chain_tenant_mismatch');
  });

  test('AUD-5: non-canonical text hashed consistently is still refused', () => {
    const texts = chain(5).map((row) => row.canonical);
    texts[1] = (texts[1] as string).replace('"seq":2', '"seq": 2');
    assertFailure(verifyChain(chainOf(texts), { tenant: TENANT }), 2, 'chain_not_canonical');
  });

  test('AUD-5: an actor or action that differs from the previous event is checked again, and a bad one refused', () => {
    // The verifier skips re-checking an actor or action equal to the last accepted one, never a new one.
    for (const [from, to] of [
      ['"actor":"system"', '"actor":"sys tem"'],
      ['"action":"test.event"', '"action":"Test.event"'],
    ] as const) {
      const texts = chain(5).map((row) => row.canonical);
      texts[3] = (texts[3] as string).replace(from, to);
      assertFailure(verifyChain(chainOf(texts), { tenant: TENANT }), 4, 'chain_record_invalid');
    }
  });

  test('AUD-5: unreadable records are refused: bad JSON, a bad stored hash', () => {
    const rows: ChainRecord[] = chain(5);
    assertFailure(
      verifyChain([...rows.slice(0, 2), { canonical: '{', hash: '' }], { tenant: TENANT }),
      3,
      'chain_record_invalid',
    );
    const upper = rows.map((row, i) =>
      i === 1 ? { ...row, hash: (row.hash as string).toUpperCase() } : row,
    );
    assertFailure(verifyChain(upper, { tenant: TENANT }), 2, 'chain_record_invalid');
    const short = rows.map((row, i) => (i === 0 ? { ...row, hash: Buffer.alloc(31) } : row));
    assertFailure(verifyChain(short, { tenant: TENANT }), 1, 'chain_record_invalid');
  });

  test('AUD-5: only the first failure is reported', () => {
    const rows = chain(10);
    rows.splice(8, 1);
    rows[2] = { ...(rows[2] as Row), hash: '00'.repeat(32) };
    assertFailure(verifyChain(rows, { tenant: TENANT }), 3, 'chain_hash_mismatch');
  });
});

describe('ChainVerifier.pushUtf8: records as bytes', () => {
  /** A record laid out in a buffer as hash, prev_hash and canonical text, each at an offset. */
  function asBytes(canonical: string, hash: string, prevHash: string): Utf8ChainRecord {
    const bytes = Buffer.from(`#${hash}#${prevHash}#${canonical}#`);
    return { bytes, hashAt: 1, prevHashAt: 66, canonicalStart: 131, canonicalEnd: bytes.length - 1 };
  }

  test('AUD-5: a record given as bytes is accepted just as given as text; one refused (a hash, prev_hash or byte changed) changes nothing, and push says why', () => {
    // The third is larger than the verifier's first scratch buffer (64 KiB), which grows for it.
    const rows = chainOf([
      event(1),
      event(2, TENANT, { note: 'ci «deploy» ✓ 😀' }),
      event(3, TENANT, { note: 'é'.repeat(40_000) }),
    ]);
    const prev = (i: number) => (i === 0 ? GENESIS_HASH.toString('hex') : (rows[i - 1] as Row).hash);
    const verifier = new ChainVerifier({ tenant: TENANT });
    const second = rows[1] as Row;
    assert.equal(verifier.pushUtf8(asBytes(event(1), (rows[0] as Row).hash, prev(0)))?.seq, 1);
    const refused = [
      asBytes(second.canonical, second.hash.toUpperCase(), prev(1)),
      asBytes(
        second.canonical,
        second.hash,
        prev(1).replace(/^./, (c) => (c === '0' ? '1' : '0')),
      ),
      asBytes(second.canonical.replace('ci «', 'ci »'), second.hash, prev(1)),
      asBytes(second.canonical.replace('"seq":2', '"seq":3'), second.hash, prev(1)),
    ];
    for (const record of refused) {
      assert.equal(verifier.pushUtf8(record), undefined);
      assert.deepEqual(verifier.result(), {
        ok: true,
        count: 1,
        head: { seq: 1, hash: Buffer.from((rows[0] as Row).hash, 'hex') },
      });
    }
    assert.equal(verifier.pushUtf8(asBytes(second.canonical, second.hash, prev(1)))?.seq, 2);
    assert.equal(verifier.headHex(), second.hash);
    // Refused as bytes, a record is pushed as text, which fails it with the reason.
    const third = rows[2] as Row;
    assert.equal(verifier.pushUtf8(asBytes(third.canonical, '00'.repeat(32), prev(2))), undefined);
    const again = new ChainVerifier({
      tenant: TENANT,
      expectFirstSeq: 3,
      expectPrevHash: Buffer.from(second.hash, 'hex'),
    });
    assert.equal(again.pushUtf8(asBytes(third.canonical, third.hash, prev(2)))?.seq, 3);
    assert.equal(verifier.push({ canonical: third.canonical, hash: '00'.repeat(32) }), undefined);
    assertFailure(verifier.result(), 3, 'chain_hash_mismatch');
    assert.equal(verifier.headHex(), second.hash, 'the head stays at the last record accepted');
  });
});
