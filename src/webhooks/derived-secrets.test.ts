// Derived webhook secrets: what a copy of the database (the salts) cannot give, and what one label's secret says of another's.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { createSecretDeriver } from './derived-secrets.ts';
import { parseSecret, publicKeyFor, signV1, signV1a, verifyWebhook } from './signature.ts';

test('RLY-7: a derived secret and signing key are valid, stable for one id and salt, and differ by key, label, id and salt', () => {
  const id = randomUUID();
  const salt = randomBytes(16);
  const callbacks = createSecretDeriver('session-key-one', 'enclave.callback.secret.v1');
  const secret = callbacks.secret(id, salt);
  assert.equal(parseSecret(secret).length, 32);
  assert.equal(callbacks.secret(id, salt), secret);
  for (const other of [
    createSecretDeriver('session-key-two', 'enclave.callback.secret.v1').secret(id, salt),
    createSecretDeriver('session-key-one', 'enclave.inbound-webhook.secret.v1').secret(id, salt),
    callbacks.secret(randomUUID(), salt),
    callbacks.secret(id, randomBytes(16)),
  ]) {
    assert.notEqual(other, secret);
  }
  const body = '{"type":"thread.closed"}';
  const now = Math.floor(Date.now() / 1000);
  const v1 = signV1(secret, 'msg_1', now, body);
  assert.doesNotThrow(() =>
    verifyWebhook(
      { 'webhook-id': 'msg_1', 'webhook-timestamp': String(now), 'webhook-signature': v1 },
      body,
      [secret],
      { now },
    ),
  );
  const signingKey = callbacks.signingKey(id, salt);
  assert.notEqual(signingKey.slice(5), secret.slice(6));
  const v1a = signV1a(signingKey, 'msg_1', now, body);
  assert.doesNotThrow(() =>
    verifyWebhook(
      { 'webhook-id': 'msg_1', 'webhook-timestamp': String(now), 'webhook-signature': v1a },
      body,
      [publicKeyFor(signingKey)],
      { now },
    ),
  );
});
