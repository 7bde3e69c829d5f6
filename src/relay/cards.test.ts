import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { describe, test } from 'node:test';
import { cardSigningPayload, createCardSigner } from './card-signing.ts';
import { buildAgentCard, type CardAgent } from './cards.ts';

// RLY-1, RLY-13 without HTTP: what a card says about an agent whatever its
// template's state, and that the signature covers the RFC 8785 form of the
// card without its signatures.

const agent: CardAgent = {
  handle: 'helper-1',
  name: 'Helper',
  description: '',
  template: 'gone',
  updated_at: new Date('2026-01-02T03:04:05.000Z'),
};

describe('cards', () => {
  test('RLY-1: an agent without a description, whose template was removed, still gets a complete card', () => {
    const card = buildAgentCard('https://enclave.example', agent, undefined);
    assert.equal(card.description, 'Helper, an agent built from the gone template.');
    assert.deepEqual(card.skills, [
      { id: 'gone', name: 'gone', description: card.description, tags: ['gone'] },
    ]);
    assert.equal(card.version, '2026-01-02T03:04:05.000Z');
    assert.equal(card.supportedInterfaces[0]?.url, 'https://enclave.example/a2a/helper-1');
  });

  test('RLY-13: the signature is EdDSA over header.payload, the payload the RFC 8785 card without signatures', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const signer = createCardSigner(privateKey, 'https://enclave.example');
    const card = buildAgentCard('https://enclave.example', agent, {
      id: 'echo',
      name: 'Echo',
      description: 'Echoes.',
    });
    const signed = signer.sign(card);
    const [signature] = signed.signatures;
    assert.ok(signature !== undefined);
    assert.equal(
      cardSigningPayload(signed),
      cardSigningPayload(card),
      'signatures are not part of the payload',
    );
    assert.ok(
      cardSigningPayload(card).startsWith('{"capabilities":{"pushNotifications":false,"streaming":false}'),
    );
    const header = JSON.parse(Buffer.from(signature.protected, 'base64url').toString('utf8'));
    assert.deepEqual(header, {
      alg: 'EdDSA',
      kid: signer.kid,
      typ: 'JOSE',
      jku: 'https://enclave.example/.well-known/jwks.json',
    });
    const input = `${signature.protected}.${Buffer.from(cardSigningPayload(card)).toString('base64url')}`;
    assert.ok(verify(null, Buffer.from(input), publicKey, Buffer.from(signature.signature, 'base64url')));
    const other = signer.sign({ ...card, name: 'Helper!' }).signatures[0];
    assert.notEqual(other?.signature, signature.signature);
  });
});
