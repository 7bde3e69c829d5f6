import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  type CredentialAddress,
  credentialAad,
  dataKeyAad,
  open,
  type Sealed,
  seal,
  unwrapKey,
  WRAPPED_KEY_BYTES,
  wrapKey,
} from './envelope.ts';

// VLT-1: AES-256-GCM with associated data naming where a ciphertext belongs.
// Attack: someone who can write the database moves, edits or swaps sealed
// bytes, hoping they decrypt somewhere else or decrypt to something else.

const rejected = { name: 'VaultError', code: 'ciphertext_rejected' };

const address: CredentialAddress = { tenantId: randomUUID(), agentId: randomUUID(), name: 'openai_api_key' };
const value = Buffer.from('sk-proj-0123456789abcdefghijklmnop', 'utf8');

function flipBit(buffer: Buffer, index: number): Buffer {
  const copy = Buffer.from(buffer);
  copy[index] = (copy[index] ?? 0) ^ 0x01;
  return copy;
}

describe('seal and open', () => {
  test('VLT-1: a sealed value opens with the same key and associated data', () => {
    const key = randomBytes(32);
    const aad = credentialAad(address, 1);
    const sealed = seal(key, value, aad);
    assert.equal(sealed.nonce.length, 12);
    assert.equal(sealed.tag.length, 16);
    assert.notDeepEqual(sealed.ciphertext, value);
    assert.deepEqual(open(key, sealed, aad), value);
  });

  test('VLT-1: a ciphertext opened as another tenant, agent, name or key version is rejected', () => {
    const key = randomBytes(32);
    const sealed = seal(key, value, credentialAad(address, 1));
    const elsewhere: [string, Buffer][] = [
      ['another tenant', credentialAad({ ...address, tenantId: randomUUID() }, 1)],
      ['another agent', credentialAad({ ...address, agentId: randomUUID() }, 1)],
      ['another name', credentialAad({ ...address, name: 'github_token' }, 1)],
      ['another key version', credentialAad(address, 2)],
    ];
    for (const [where, aad] of elsewhere) {
      assert.throws(() => open(key, sealed, aad), rejected, where);
    }
  });

  test('VLT-1: a ciphertext opened with another key is rejected', () => {
    const aad = credentialAad(address, 1);
    const sealed = seal(randomBytes(32), value, aad);
    assert.throws(() => open(randomBytes(32), sealed, aad), rejected);
  });

  test('VLT-1: one flipped bit in the ciphertext, the tag or the nonce is rejected', () => {
    const key = randomBytes(32);
    const aad = credentialAad(address, 1);
    const sealed = seal(key, value, aad);
    const tampered: [string, Sealed][] = [
      ['first ciphertext byte', { ...sealed, ciphertext: flipBit(sealed.ciphertext, 0) }],
      [
        'last ciphertext byte',
        { ...sealed, ciphertext: flipBit(sealed.ciphertext, sealed.ciphertext.length - 1) },
      ],
      ['tag', { ...sealed, tag: flipBit(sealed.tag, 7) }],
      ['nonce', { ...sealed, nonce: flipBit(sealed.nonce, 11) }],
      ['truncated tag', { ...sealed, tag: sealed.tag.subarray(0, 12) }],
      ['truncated nonce', { ...sealed, nonce: sealed.nonce.subarray(0, 8) }],
    ];
    for (const [what, changed] of tampered) {
      assert.throws(() => open(key, changed, aad), rejected, what);
    }
    // The untouched original still opens: the failures above are the tampering.
    assert.deepEqual(open(key, sealed, aad), value);
  });

  test('VLT-1: two seals of the same value under the same key differ (a fresh nonce each time)', () => {
    const key = randomBytes(32);
    const aad = credentialAad(address, 1);
    const first = seal(key, value, aad);
    const second = seal(key, value, aad);
    assert.notDeepEqual(first.nonce, second.nonce);
    assert.notDeepEqual(first.ciphertext, second.ciphertext);
    assert.deepEqual(open(key, first, aad), open(key, second, aad));
  });
});

describe('wrapKey and unwrapKey', () => {
  test('VLT-1: a data key wrapped under a master key unwraps to the same 32 bytes', () => {
    const kek = randomBytes(32);
    const dataKey = randomBytes(32);
    const aad = dataKeyAad(address.tenantId, 1);
    const wrapped = wrapKey(kek, dataKey, aad);
    assert.equal(wrapped.length, WRAPPED_KEY_BYTES);
    assert.equal(wrapped.indexOf(dataKey), -1, 'the wrapped form does not contain the key');
    assert.deepEqual(unwrapKey(kek, wrapped, aad), dataKey);
  });

  test('VLT-1: a wrapped data key does not unwrap under another master key, tenant or version', () => {
    const kek = randomBytes(32);
    const wrapped = wrapKey(kek, randomBytes(32), dataKeyAad(address.tenantId, 1));
    assert.throws(() => unwrapKey(randomBytes(32), wrapped, dataKeyAad(address.tenantId, 1)), rejected);
    assert.throws(() => unwrapKey(kek, wrapped, dataKeyAad(randomUUID(), 1)), rejected);
    assert.throws(() => unwrapKey(kek, wrapped, dataKeyAad(address.tenantId, 2)), rejected);
    assert.throws(() => unwrapKey(kek, flipBit(wrapped, 20), dataKeyAad(address.tenantId, 1)), rejected);
    assert.throws(() => unwrapKey(kek, wrapped.subarray(1), dataKeyAad(address.tenantId, 1)), rejected);
  });

  test('VLT-1: a wrapped data key cannot pass for a credential ciphertext (the associated data is domain-separated)', () => {
    const kek = randomBytes(32);
    const wrapped = wrapKey(kek, randomBytes(32), dataKeyAad(address.tenantId, 1));
    const asCredential: Sealed = {
      nonce: wrapped.subarray(0, 12),
      ciphertext: wrapped.subarray(12, 44),
      tag: wrapped.subarray(44),
    };
    assert.throws(() => open(kek, asCredential, credentialAad(address, 1)), rejected);
  });
});
