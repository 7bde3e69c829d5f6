import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
  generateSecret,
  generateSigningKey,
  MAX_SIGNATURES,
  parseSecret,
  publicKeyFor,
  type SignatureErrorCode,
  signatureHeader,
  signV1,
  signV1a,
  verifyWebhook,
  type WebhookHeaders,
} from './signature.ts';

// The shared Standard Webhooks vectors (/work/shared/vectors/webhooks, sources in its README),
// then our signatures against `standardwebhooks`, someone else's verifier, and back.

interface Vectors {
  signVectors: {
    secret: string;
    msgId: string;
    timestamp: number;
    payload: string;
    expectedSignature: string;
    secretKeyHex: string;
  }[];
  verifyCases: {
    cases: {
      desc: string;
      secret: string;
      headers: Record<string, string>;
      payload: string;
      now: number;
      expected: 'valid' | 'error';
      errorKind?: string;
    }[];
  };
  secretParsing: {
    secret: string;
    expected: 'ok' | 'error' | 'optional';
    secretKeyHex?: string;
    desc: string;
  }[];
}

const vectors = JSON.parse(
  readFileSync('/work/shared/vectors/webhooks/standard-webhooks-vectors.json', 'utf8'),
) as Vectors;

/** The vectors' suggested error kinds, in our codes. */
const KIND: Readonly<Record<string, SignatureErrorCode>> = {
  'missing-header': 'webhook_signature_missing_header',
  'invalid-timestamp': 'webhook_signature_malformed',
  'timestamp-too-old': 'webhook_timestamp_too_old',
  'timestamp-too-new': 'webhook_timestamp_too_new',
  'no-matching-signature': 'webhook_signature_mismatch',
};

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? 'thrown';
  }
}

const now = () => Math.floor(Date.now() / 1000);

function signed(secret: string, body: string, at = now(), id = 'msg_test1') {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(at),
    'webhook-signature': signV1(secret, id, at, body),
  };
}

describe('RLY-7 (signing): the Standard Webhooks vectors', () => {
  for (const vector of vectors.signVectors) {
    test(`RLY-7: signV1 gives the published signature for ${vector.msgId}`, () => {
      assert.equal(
        signV1(vector.secret, vector.msgId, vector.timestamp, vector.payload),
        vector.expectedSignature,
      );
      assert.equal(parseSecret(vector.secret).toString('hex'), vector.secretKeyHex);
    });
  }
  for (const vector of vectors.verifyCases.cases) {
    test(`RLY-7: verifyWebhook, ${vector.desc}`, () => {
      const code = codeOf(() =>
        verifyWebhook(vector.headers, vector.payload, [vector.secret], { now: vector.now }),
      );
      assert.equal(code, vector.expected === 'valid' ? undefined : KIND[vector.errorKind ?? '']);
    });
  }
  for (const vector of vectors.secretParsing) {
    test(`RLY-7: parseSecret, ${vector.desc}`, () => {
      // 'optional' (unpadded base64): we refuse it; only canonical, padded base64 is a secret.
      if (vector.expected === 'ok')
        assert.equal(parseSecret(vector.secret).toString('hex'), vector.secretKeyHex);
      else
        assert.equal(
          codeOf(() => parseSecret(vector.secret)),
          'webhook_secret_invalid',
        );
    });
  }
});

describe('RLY-7 (signing): secrets and keys', () => {
  test('RLY-7: generated secrets are whsec_ and 24 to 32 random bytes; bad secrets are refused', () => {
    const secret = generateSecret();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.equal(parseSecret(secret).length, 32);
    assert.equal(parseSecret(generateSecret(24)).length, 24);
    assert.notEqual(generateSecret(), secret);
    assert.throws(() => generateSecret(16), RangeError);
    for (const bad of ['whsec_c2hvcnQ=', 'whsec_not base64!', `whsec_${'A'.repeat(88)}`, 'whsk_AAAA']) {
      assert.equal(
        codeOf(() => parseSecret(bad)),
        'webhook_secret_invalid',
        bad,
      );
    }
  });
});

describe('RLY-7 (signing): interoperability with the standardwebhooks package', () => {
  test('RLY-7: our v1 signatures verify with standardwebhooks, and its signatures with ours', () => {
    const secret = generateSecret();
    const body = '{"type":"thread.message","data":{"text":"héllo"}}';
    const ours = signed(secret, body);
    assert.deepEqual(new Webhook(secret).verify(body, ours), JSON.parse(body));
    const at = now();
    const theirs = new Webhook(secret).sign('msg_theirs', new Date(at * 1000), body);
    const headers = {
      'webhook-id': 'msg_theirs',
      'webhook-timestamp': String(at),
      'webhook-signature': theirs,
    };
    assert.deepEqual(verifyWebhook(headers, body, [secret], { now: now() }), {
      id: 'msg_theirs',
      timestamp: at,
    });
  });

  test('RLY-7: a changed body, an old timestamp and a wrong secret each fail, ours and theirs', () => {
    const secret = generateSecret();
    const body = '{"n":1}';
    const good = signed(secret, body);
    const stale = signed(secret, body, now() - 360);
    const cases: [string, WebhookHeaders, string, string, SignatureErrorCode][] = [
      ['changed body', good, '{"n":2}', secret, 'webhook_signature_mismatch'],
      ['old timestamp', stale, body, secret, 'webhook_timestamp_too_old'],
      ['wrong secret', good, body, generateSecret(), 'webhook_signature_mismatch'],
    ];
    for (const [what, headers, payload, key, code] of cases) {
      assert.equal(
        codeOf(() => verifyWebhook(headers, payload, [key], { now: now() })),
        code,
        what,
      );
      assert.throws(() => new Webhook(key).verify(payload, headers as Record<string, string>), what);
    }
  });

  test('RLY-7: rotation sends two signatures, and each secret alone verifies the header', () => {
    const [oldSecret, newSecret] = [generateSecret(), generateSecret()];
    const at = now();
    const header = signatureHeader([
      signV1(newSecret, 'msg_rot', at, 'x'),
      signV1(oldSecret, 'msg_rot', at, 'x'),
    ]);
    assert.equal(header.split(' ').length, 2);
    const headers = { 'webhook-id': 'msg_rot', 'webhook-timestamp': String(at), 'webhook-signature': header };
    for (const secret of [oldSecret, newSecret]) {
      assert.equal(verifyWebhook(headers, 'x', [secret], { now: at }).id, 'msg_rot');
      new Webhook(secret).verify('x', headers, { jsonParse: false });
    }
  });
});

describe('RLY-7 (signing): asymmetric v1a', () => {
  test('RLY-7: v1a Ed25519 signatures verify under the whpk_ key and fail under another or a changed body', () => {
    const { signingKey, publicKey } = generateSigningKey();
    assert.match(signingKey, /^whsk_[A-Za-z0-9+/]{43}=$/);
    assert.match(publicKey, /^whpk_[A-Za-z0-9+/]{43}=$/);
    assert.equal(publicKeyFor(signingKey), publicKey);
    const at = now();
    const signature = signV1a(signingKey, 'msg_a', at, '{"a":1}');
    assert.match(signature, /^v1a,[A-Za-z0-9+/]{86}==$/);
    const headers = {
      'webhook-id': 'msg_a',
      'webhook-timestamp': String(at),
      'webhook-signature': signature,
    };
    assert.equal(verifyWebhook(headers, '{"a":1}', [publicKey], { now: at }).id, 'msg_a');
    assert.equal(
      codeOf(() => verifyWebhook(headers, '{"a":2}', [publicKey], { now: at })),
      'webhook_signature_mismatch',
    );
    const other = generateSigningKey().publicKey;
    assert.equal(
      codeOf(() => verifyWebhook(headers, '{"a":1}', [other], { now: at })),
      'webhook_signature_mismatch',
    );
    // A v1a entry is not checked against a whsec_ secret, nor a v1 entry against a public key.
    assert.equal(
      codeOf(() => verifyWebhook(headers, '{"a":1}', [generateSecret()], { now: at })),
      'webhook_signature_mismatch',
    );
  });
});

describe('RLY-7 (signing): bounded, malformed headers', () => {
  const secret = generateSecret();
  const body = '{}';

  test(`RLY-7: a header with 100 signatures is refused whole (at most ${MAX_SIGNATURES} are looked at), even with a good one in it`, () => {
    const good = signed(secret, body);
    const junk = Array.from({ length: 99 }, () =>
      signV1(generateSecret(), 'msg_test1', Number(good['webhook-timestamp']), body),
    );
    const headers = { ...good, 'webhook-signature': signatureHeader([...junk, good['webhook-signature']]) };
    assert.equal(
      codeOf(() => verifyWebhook(headers, body, [secret], { now: now() })),
      'webhook_signature_malformed',
    );
    const twenty = {
      ...good,
      'webhook-signature': signatureHeader([...junk.slice(0, 19), good['webhook-signature']]),
    };
    assert.equal(verifyWebhook(twenty, body, [secret], { now: now() }).id, 'msg_test1');
  });

  test('RLY-7: an over-long header, a bad id, a repeated header and a non-integer timestamp are malformed', () => {
    const good = signed(secret, body);
    const cases: WebhookHeaders[] = [
      { ...good, 'webhook-signature': `v1,${'A'.repeat(3000)}` },
      { ...good, 'webhook-id': 'a.b' },
      { ...good, 'webhook-id': 'x'.repeat(257) },
      { ...good, 'webhook-id': 'has space' },
      { ...good, 'webhook-timestamp': '1e9' },
      { ...good, 'webhook-timestamp': '-5' },
      { ...good, 'webhook-timestamp': ' 1700000000' },
      { ...good, 'webhook-signature': [good['webhook-signature'], good['webhook-signature']] },
    ];
    for (const headers of cases) {
      assert.equal(
        codeOf(() => verifyWebhook(headers, body, [secret], { now: now() })),
        'webhook_signature_malformed',
        JSON.stringify(headers),
      );
    }
  });

  test('RLY-7: a timestamp in the future beyond the tolerance fails; the tolerance is configurable', () => {
    const ahead = signed(secret, body, now() + 360);
    assert.equal(
      codeOf(() => verifyWebhook(ahead, body, [secret], { now: now() })),
      'webhook_timestamp_too_new',
    );
    assert.equal(verifyWebhook(ahead, body, [secret], { now: now(), toleranceSeconds: 600 }).id, 'msg_test1');
  });
});
