import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { isAuditError } from './errors.ts';
import { rootFromLeafHashes } from './merkle.ts';
import {
  formatCheckpoint,
  noteKeyId,
  parseCheckpoint,
  parseVerifierKey,
  signNote,
  verifierKeyString,
  verifyCheckpoint,
  verifyNote,
} from './note.ts';

// Checkpoints are C2SP signed notes, so anyone holding the verifier key can
// check them with standard tooling (Go's sumdb/note, transparency-dev). The
// attacker controls the note text and signature lines (a replaced checkpoint
// file, a forged response); only the verifier key is trusted.

// The example from the golang.org/x/mod/sumdb/note package documentation.
const PETER_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const PETER_SKEY_MATERIAL = 'AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz'; // from PRIVATE+KEY+PeterNeumann+c74f20a3+…
const PETER_TEXT =
  "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG =
  '— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
const PETER_NOTE = `${PETER_TEXT}\n${PETER_SIG}`;

// A signed tree head published by sum.golang.org (a C2SP checkpoint with the
// origin "go.sum database tree"), and the Go checksum database's verifier key
// as cmd/go/internal/modfetch/key.go ships it.
const SUMDB_VKEY = 'sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8';
const SUMDB_NOTE =
  'go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n' +
  '— sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n';

const ORIGIN = 'enclave.example/checkpoints';
const key = generateKeyPairSync('ed25519');
const otherKey = generateKeyPairSync('ed25519');
const VKEY = verifierKeyString(ORIGIN, key.publicKey);
const ROOT = rootFromLeafHashes([Buffer.alloc(32, 1), Buffer.alloc(32, 2), Buffer.alloc(32, 3)]);

function refused(code: string) {
  return (error: unknown) => isAuditError(error) && error.code === code;
}

function signedCheckpoint(size: bigint | number = 3): string {
  return signNote(formatCheckpoint({ origin: ORIGIN, size, root: ROOT }), {
    name: ORIGIN,
    privateKey: key.privateKey,
  });
}

describe('signed notes: conformance with published examples', () => {
  test('AUD-4: the Go sumdb/note example note verifies with its published verifier key', () => {
    assert.equal(verifyNote(PETER_NOTE, PETER_VKEY), PETER_TEXT);
    const parsed = parseVerifierKey(PETER_VKEY);
    assert.equal(parsed.keyId.toString('hex'), 'c74f20a3');
    assert.equal(verifierKeyString(parsed.name, parsed.publicKey), PETER_VKEY);
  });

  test('AUD-4: signing the example text with the published private key reproduces the signature byte for byte', () => {
    const material = Buffer.from(PETER_SKEY_MATERIAL, 'base64');
    assert.equal(material[0], 0x01);
    const x = Buffer.from(PETER_VKEY.split('+').slice(2).join('+'), 'base64')
      .subarray(1)
      .toString('base64url');
    const d = material.subarray(1).toString('base64url');
    const privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d, x }, format: 'jwk' });
    assert.equal(signNote(PETER_TEXT, { name: 'PeterNeumann', privateKey }), PETER_NOTE);
  });

  test('AUD-4: a real sum.golang.org signed tree head verifies and parses as a checkpoint', () => {
    const checkpoint = verifyCheckpoint(SUMDB_NOTE, SUMDB_VKEY, 'go.sum database tree');
    assert.equal(checkpoint.size, 65209736n);
    assert.equal(checkpoint.root.toString('base64'), '5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=');
    assert.deepEqual(checkpoint.extensions, []);
    const forged = SUMDB_NOTE.replace('65209736', '65209737');
    assert.throws(() => verifyNote(forged, SUMDB_VKEY), refused('note_signature_invalid'));
  });
});

describe('checkpoints: sign and verify', () => {
  test('AUD-4: a checkpoint is origin, decimal size and base64 root, each line ending in a newline', () => {
    const text = formatCheckpoint({ origin: ORIGIN, size: 3n, root: ROOT });
    assert.equal(text, `${ORIGIN}\n3\n${ROOT.toString('base64')}\n`);
    assert.deepEqual(parseCheckpoint(text), { origin: ORIGIN, size: 3n, root: ROOT, extensions: [] });
    const withExtension = formatCheckpoint({ origin: ORIGIN, size: 0, root: ROOT, extensions: ['ext one'] });
    assert.deepEqual(parseCheckpoint(withExtension).extensions, ['ext one']);
    const max = (1n << 64n) - 1n;
    assert.equal(parseCheckpoint(formatCheckpoint({ origin: ORIGIN, size: max, root: ROOT })).size, max);
  });

  test('AUD-4: the note is the checkpoint, a blank line and an em-dash signature line with the key ID', () => {
    const note = signedCheckpoint();
    const [, signatureLine] = note.split('\n\n');
    assert.match(signatureLine ?? '', /^\u2014 enclave\.example\/checkpoints [A-Za-z0-9+/]{91}=\n$/);
    const signature = Buffer.from((signatureLine ?? '').split(' ')[2] ?? '', 'base64');
    assert.equal(signature.length, 68);
    assert.deepEqual(signature.subarray(0, 4), noteKeyId(ORIGIN, key.publicKey));
  });

  test('AUD-4: round trip: the signed checkpoint verifies with the verifier key string', () => {
    assert.match(VKEY, /^enclave\.example\/checkpoints\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    const checkpoint = verifyCheckpoint(signedCheckpoint(), VKEY, ORIGIN);
    assert.deepEqual(checkpoint, { origin: ORIGIN, size: 3n, root: ROOT, extensions: [] });
    assert.equal(
      verifyNote(Buffer.from(signedCheckpoint()), parseVerifierKey(VKEY)),
      formatCheckpoint({ origin: ORIGIN, size: 3, root: ROOT }),
    );
  });

  test('AUD-4: a tampered body is refused', () => {
    const note = signedCheckpoint();
    assert.throws(() => verifyNote(note.replace('\n3\n', '\n4\n'), VKEY), refused('note_signature_invalid'));
    assert.throws(
      () => verifyNote(note.replace(ORIGIN, 'enclave.example/other'), VKEY),
      refused('note_signature_invalid'),
    );
  });

  test('AUD-4: a note signed by another key, or under another name, is not verified', () => {
    const byOther = signNote(formatCheckpoint({ origin: ORIGIN, size: 3, root: ROOT }), {
      name: ORIGIN,
      privateKey: otherKey.privateKey,
    });
    assert.throws(() => verifyNote(byOther, VKEY), refused('note_unverified'));
    assert.throws(
      () => verifyNote(signedCheckpoint(), verifierKeyString('enclave.example/other', key.publicKey)),
      refused('note_unverified'),
    );
    assert.throws(
      () => verifyCheckpoint(signedCheckpoint(), VKEY, 'enclave.example/other'),
      refused('checkpoint_malformed'),
    );
  });

  test("AUD-4: other signers' lines are ignored; a bad line from the trusted key rejects the note", () => {
    const note = signedCheckpoint();
    const cosigned = `${note}${signNote('x\n', { name: 'witness.example', privateKey: otherKey.privateKey }).split('\n\n')[1]}`;
    assert.equal(verifyNote(cosigned, VKEY), formatCheckpoint({ origin: ORIGIN, size: 3, root: ROOT }));
    const keyId = noteKeyId(ORIGIN, key.publicKey);
    const badLine = `— ${ORIGIN} ${Buffer.concat([keyId, Buffer.alloc(64)]).toString('base64')}\n`;
    assert.throws(() => verifyNote(`${note}${badLine}`, VKEY), refused('note_signature_invalid'));
    assert.throws(
      () => verifyNote(note.replace('\n\n', `\n\n${badLine}`), VKEY),
      refused('note_signature_invalid'),
    );
  });

  test('AUD-4: malformed notes are refused', () => {
    const note = signedCheckpoint();
    const [text = '', line = ''] = note.split('\n\n');
    const malformed = [
      note.slice(0, -1), // no final newline
      note.replace('\n\n', '\n'), // no blank line
      `${text}\n\n${line.replace('—', '-')}`, // ASCII hyphen instead of the em dash
      `${text}\n\n${line.replace(' ', '  ')}`, // two spaces
      `${text}\n\n${line.replace(/=\n$/, '!\n')}`, // not base64
      `${text}\n\n— ${ORIGIN} AAAA\n`, // shorter than a key ID and a signature byte
      `${text}\n\n${line}\n`, // an empty signature line
      `${text}\n\n`, // no signature lines
      note.replaceAll('\n', '\r\n'), // control characters
      `${text}\n\n${line.repeat(101)}`, // too many signatures
    ];
    for (const bad of malformed)
      assert.throws(() => verifyNote(bad, VKEY), refused('note_malformed'), JSON.stringify(bad));
    const invalidUtf8 = Buffer.concat([Buffer.from(note), Buffer.of(0xff)]);
    assert.throws(() => verifyNote(invalidUtf8, VKEY), refused('note_malformed'));
  });
});

describe('keys and checkpoint syntax', () => {
  test('AUD-4: malformed verifier keys are refused (the Go sumdb/note bad-key cases)', () => {
    const bad = [
      'PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==', // wrong length
      'PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW', // key ID mismatch
      'PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW', // uppercase key ID
      'Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW', // space in the name
      'PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW', // unknown algorithm 0x65
      'PeterNeumann+c74f20a3',
      'PeterNeumann+c74f20a3+!!!!',
      '',
    ];
    for (const vkey of bad) assert.throws(() => parseVerifierKey(vkey), refused('note_key_invalid'), vkey);
  });

  test('AUD-4: signNote refuses text without a final newline, bad names and keys that are not Ed25519 private keys', () => {
    const signer = { name: ORIGIN, privateKey: key.privateKey };
    assert.throws(() => signNote('no newline', signer), refused('note_malformed'));
    assert.throws(() => signNote('a\rb\n', signer), refused('note_malformed'));
    assert.throws(() => signNote('x\n', { ...signer, name: 'a+b' }), refused('note_key_invalid'));
    assert.throws(() => signNote('x\n', { ...signer, name: '' }), refused('note_key_invalid'));
    assert.throws(
      () => signNote('x\n', { ...signer, privateKey: key.publicKey }),
      refused('note_key_invalid'),
    );
    const ed448 = generateKeyPairSync('ed448');
    assert.throws(
      () => signNote('x\n', { ...signer, privateKey: ed448.privateKey }),
      refused('note_key_invalid'),
    );
  });

  test('AUD-4: checkpoint text that is not origin / size / 32-byte root / non-empty extensions is refused', () => {
    const root = ROOT.toString('base64');
    const bad = [
      `${ORIGIN}\n3\n${root}`, // no final newline
      `${ORIGIN}\n3\n`, // no root
      `\n3\n${root}\n`, // empty origin
      `${ORIGIN}\n03\n${root}\n`, // leading zero
      `${ORIGIN}\n-1\n${root}\n`,
      `${ORIGIN}\n18446744073709551616\n${root}\n`, // 2^64
      `${ORIGIN}\n3\n${Buffer.alloc(31).toString('base64')}\n`, // 31-byte root
      `${ORIGIN}\n3\n${root.replace(/=$/, 'B')}\n`, // bad padding
      `${ORIGIN}\n3\n${root}\n\n`, // empty extension line
    ];
    for (const text of bad)
      assert.throws(() => parseCheckpoint(text), refused('checkpoint_malformed'), JSON.stringify(text));
    assert.throws(
      () => formatCheckpoint({ origin: 'a\nb', size: 1, root: ROOT }),
      refused('checkpoint_malformed'),
    );
    assert.throws(
      () => formatCheckpoint({ origin: ORIGIN, size: -1, root: ROOT }),
      refused('checkpoint_malformed'),
    );
    assert.throws(
      () => formatCheckpoint({ origin: ORIGIN, size: 1.5, root: ROOT }),
      refused('checkpoint_malformed'),
    );
    assert.throws(
      () => formatCheckpoint({ origin: ORIGIN, size: 1, root: ROOT.subarray(1) }),
      refused('checkpoint_malformed'),
    );
  });
});
