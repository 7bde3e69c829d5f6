import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { formatEventLine } from './bundle-format.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from './event.ts';
import { encodeHeadLeaf, headLeafHash } from './leaf.ts';
import { inclusionProof, leafHash, rootFromLeafHashes, verifyInclusion } from './merkle.ts';
import { formatCheckpoint, signNote, verifierKeyString, verifyCheckpoint } from './note.ts';

// AUD-5: docs/audit-format.md is the specification an independent verifier is
// written from, so its worked example must be exactly what the code computes.

const DOC = path.join(import.meta.dirname, '..', '..', 'docs', 'audit-format.md');
const tenant = '0d7e2a52-5d4e-4c44-9d33-7b6f1d1c2a10';
const actor = 'user:7b0d6a70-58a4-4f1e-9a7e-2f7c4c3f9b11';

test('AUD-5: every value of the worked example in docs/audit-format.md is what the code computes', async () => {
  const doc = await readFile(DOC, 'utf8');
  const has = (value: string, what: string) =>
    assert.ok(doc.includes(value), `the document should show ${what}: ${value}`);

  const e1 = canonicalEvent({
    tenant,
    seq: 1,
    ts: '2026-03-01T09:00:00.000Z',
    actor,
    action: 'session.login',
    target: 'session:3c1f9a2e-0b7d-4d8e-8f00-6a5e2b9c1d42',
    data: { method: 'password' },
  });
  const e2 = canonicalEvent({
    tenant,
    seq: 2,
    ts: '2026-03-01T09:00:05.250Z',
    actor,
    action: 'token.minted',
    target: 'token:5a2b7c9d-1e3f-4a5b-8c6d-7e8f9a0b1c2d',
    data: { name: 'ci «deploy»', scope: 'read' },
  });
  const h1 = eventHash(GENESIS_HASH, e1);
  const h2 = eventHash(h1, e2);
  has(e1, 'event 1');
  has(`(${Buffer.byteLength(e1)} bytes)`, 'the length of event 1');
  has(e2, 'event 2');
  has(h1.toString('hex'), 'hash 1');
  has(h2.toString('hex'), 'hash 2');
  has(formatEventLine(h1, GENESIS_HASH, e1), 'event line 1');
  has(formatEventLine(h2, h1, e2), 'event line 2');

  const leafData = encodeHeadLeaf({ tenant, seq: 2, hash: h2 }).toString('hex');
  has(
    `${leafData.slice(0, 2)} ${leafData.slice(2, 34)} ${leafData.slice(34, 50)} ${leafData.slice(50)}`,
    'leaf data',
  );
  const ours = headLeafHash({ tenant, seq: 2, hash: h2 });
  has(ours.toString('hex'), 'the leaf hash');
  const leaves = [
    leafHash(Buffer.from('other tenant head')),
    ours,
    leafHash(Buffer.from('another tenant head')),
  ];
  has((leaves[0] as Buffer).toString('hex'), 'leaf 0');
  has((leaves[2] as Buffer).toString('hex'), 'leaf 2');
  const root = rootFromLeafHashes(leaves);
  has(root.toString('hex'), 'the root');
  const proof = inclusionProof(leaves, 1);
  for (const hash of proof) has(hash.toString('base64'), 'the inclusion proof');
  verifyInclusion(1n, 3n, ours, proof, root);

  const pem = /-----BEGIN PRIVATE KEY-----\n[^-]+-----END PRIVATE KEY-----\n/.exec(doc)?.[0];
  assert.ok(pem !== undefined, 'the document shows the test key');
  const privateKey = createPrivateKey(pem);
  const name = 'enclave.example/enclave/audit';
  const key = verifierKeyString(name, createPublicKey(privateKey));
  has(key, 'the verifier key');
  const note = signNote(formatCheckpoint({ origin: name, size: 3, root }), { name, privateKey });
  has(note, 'the checkpoint note');
  assert.equal(verifyCheckpoint(note, key, name).size, 3n);
});
