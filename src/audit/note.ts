import { createHash, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { decodeBase64, decodeHex } from './encoding.ts';
import { AuditError } from './errors.ts';

// C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, and the
// checkpoint body they carry (https://c2sp.org/tlog-checkpoint), AUD-4:
//
//   <origin>\n<tree size>\n<base64 root hash>\n[<extension line>\n …]
//   \n
//   — <key name> <base64(key ID[4] ‖ Ed25519 signature[64])>\n      (one line per signer; U+2014)
//
//   key ID       = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]
//   verifier key = <key name>+<hex key ID>+<base64(0x01 ‖ public key)>
//
// The signature covers the text up to and including its final newline, not
// the blank line. Lines from other keys are ignored (witness cosignatures, a
// rotated key); a failing line from the trusted key rejects the whole note.

export interface NoteVerifierKey {
  readonly name: string;
  /** The 4-byte key ID. */
  readonly keyId: Buffer;
  readonly publicKey: KeyObject;
}

export interface NoteSigner {
  readonly name: string;
  /** An Ed25519 private key. */
  readonly privateKey: KeyObject;
}

export interface Checkpoint {
  readonly origin: string;
  readonly size: bigint;
  readonly root: Buffer;
  readonly extensions: readonly string[];
}

export interface CheckpointFields {
  readonly origin: string;
  readonly size: bigint | number;
  readonly root: Uint8Array;
  readonly extensions?: readonly string[];
}

const ED25519 = 0x01;
const SIGNATURE_PREFIX = '\u2014 ';
/** Go's sumdb/note limit; the spec asks verifiers to accept at least 16. */
const MAX_SIGNATURES = 100;
const MAX_NOTE_CHARS = 1024 * 1024;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
const CONTROL_EXCEPT_NEWLINE = /[\u0000-\u0009\u000b-\u001f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
const KEY_NAME = /^[^\s\u0085+\u0000-\u001f]+$/u;
const SIZE = /^(?:0|[1-9][0-9]{0,19})$/;
const UINT64_LIMIT = 1n << 64n;

/** The checkpoint note text: origin, decimal size, base64 root, extension lines, each ending in a newline. */
export function formatCheckpoint(fields: CheckpointFields): string {
  const { origin, root, extensions = [] } = fields;
  if (typeof fields.size === 'number' && !Number.isSafeInteger(fields.size)) {
    throw malformedCheckpoint('tree size must be an integer');
  }
  const size = BigInt(fields.size);
  if (!isNoteLine(origin)) throw malformedCheckpoint('origin must be one non-empty line');
  if (size < 0n || size >= UINT64_LIMIT) throw malformedCheckpoint('tree size must be in 0 … 2^64 − 1');
  if (root.length !== 32) throw malformedCheckpoint('root hash must be 32 bytes');
  if (!extensions.every(isNoteLine)) throw malformedCheckpoint('extension lines must be non-empty lines');
  const lines = [origin, size.toString(), Buffer.from(root).toString('base64'), ...extensions];
  return `${lines.join('\n')}\n`;
}

/** Reads a checkpoint note text (the body verifyNote returns). Throws AuditError `checkpoint_malformed`. */
export function parseCheckpoint(text: string): Checkpoint {
  // Attacker-controlled: the whole text, until a trusted signature covers it.
  if (!text.endsWith('\n')) throw malformedCheckpoint('text must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3 || !lines.every(isNoteLine)) {
    throw malformedCheckpoint('text must be at least three non-empty lines: origin, size, root hash');
  }
  const [origin, sizeLine, rootLine, ...extensions] = lines as [string, string, string, ...string[]];
  const size = SIZE.test(sizeLine) ? BigInt(sizeLine) : UINT64_LIMIT;
  if (size >= UINT64_LIMIT) throw malformedCheckpoint('tree size must be decimal in 0 … 2^64 − 1');
  const root = decodeBase64(rootLine);
  if (root?.length !== 32) throw malformedCheckpoint('root hash must be the base64 of 32 bytes');
  return { origin, size, root, extensions };
}

/** SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]. */
export function noteKeyId(name: string, publicKey: KeyObject): Buffer {
  const hash = createHash('sha256').update(`${name}\n`, 'utf8');
  return hash.update(Buffer.of(ED25519)).update(rawPublicKey(publicKey)).digest().subarray(0, 4);
}

/** `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`, what verifiers are given. */
export function verifierKeyString(name: string, publicKey: KeyObject): string {
  if (!KEY_NAME.test(name))
    throw new AuditError('note_key_invalid', 'key name must be non-empty, no spaces or +');
  const material = Buffer.concat([Buffer.of(ED25519), rawPublicKey(publicKey)]).toString('base64');
  return `${name}+${noteKeyId(name, publicKey).toString('hex')}+${material}`;
}

/** Reads a verifier key string. Throws AuditError `note_key_invalid`. */
export function parseVerifierKey(text: string): NoteVerifierKey {
  // Attacker-influenced: a key string pasted or downloaded by the person verifying.
  const [name = '', keyIdHex = ''] = text.split('+', 2);
  const keyId = decodeHex(keyIdHex);
  const material = decodeBase64(text.slice(name.length + keyIdHex.length + 2));
  if (!KEY_NAME.test(name) || keyId?.length !== 4 || material?.length !== 33 || material[0] !== ED25519) {
    throw new AuditError('note_key_invalid', 'not an Ed25519 verifier key <name>+<8 hex>+<base64 key>');
  }
  let publicKey: KeyObject;
  try {
    const x = material.subarray(1).toString('base64url');
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch (cause) {
    throw new AuditError('note_key_invalid', 'verifier key is not an Ed25519 public key', { cause });
  }
  if (!noteKeyId(name, publicKey).equals(keyId)) {
    throw new AuditError('note_key_invalid', 'verifier key ID does not match its name and key');
  }
  return { name, keyId, publicKey };
}

/** The note: text, a blank line and one signature line. Throws AuditError `note_malformed` or `note_key_invalid`. */
export function signNote(text: string, signer: NoteSigner): string {
  assertNoteText(text);
  if (!text.endsWith('\n')) throw new AuditError('note_malformed', 'note text must end with a newline');
  if (!KEY_NAME.test(signer.name)) {
    throw new AuditError('note_key_invalid', 'key name must be non-empty, no spaces or +');
  }
  const { privateKey } = signer;
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new AuditError('note_key_invalid', 'the signing key must be an Ed25519 private key');
  }
  const keyId = noteKeyId(signer.name, createPublicKey(privateKey));
  const signature = sign(null, Buffer.from(text, 'utf8'), privateKey);
  const line = `${SIGNATURE_PREFIX}${signer.name} ${Buffer.concat([keyId, signature]).toString('base64')}\n`;
  return `${text}\n${line}`;
}

/**
 * Opens a signed note with one trusted key and returns its text (ending in a
 * newline). Throws AuditError `note_malformed`, `note_key_invalid`,
 * `note_signature_invalid` (a line from the trusted key fails) or
 * `note_unverified` (no line from the trusted key).
 */
export function verifyNote(note: string | Uint8Array, verifierKey: string | NoteVerifierKey): string {
  const key = typeof verifierKey === 'string' ? parseVerifierKey(verifierKey) : verifierKey;
  // Attacker-controlled: the whole note. Invariant: the text returned is covered by a valid
  // signature of the trusted (name, key ID, key), and no line of that key fails.
  const message = typeof note === 'string' ? note : decodeUtf8(note);
  assertNoteText(message);
  const split = message.lastIndexOf('\n\n');
  if (split < 0 || !message.endsWith('\n')) {
    throw new AuditError(
      'note_malformed',
      'a note is text, a blank line and signature lines, each ending in newline',
    );
  }
  const text = message.slice(0, split + 1);
  const lines = message.slice(split + 2, -1).split('\n');
  if (lines.length > MAX_SIGNATURES) throw new AuditError('note_malformed', 'note has too many signatures');
  const body = Buffer.from(text, 'utf8');
  let verified = false;
  for (const { name, keyId, signature } of lines.map(parseSignatureLine)) {
    if (name !== key.name || !keyId.equals(key.keyId)) continue; // another signer: ignored
    if (signature.length !== 64 || !verify(null, body, key.publicKey, signature)) {
      throw new AuditError('note_signature_invalid', `the signature of ${name} does not verify`);
    }
    verified = true;
  }
  if (!verified) throw new AuditError('note_unverified', `note has no signature from ${key.name}`);
  return text;
}

/** verifyNote, then parseCheckpoint, then that the origin is the expected one. */
export function verifyCheckpoint(
  note: string | Uint8Array,
  verifierKey: string | NoteVerifierKey,
  origin: string,
): Checkpoint {
  const checkpoint = parseCheckpoint(verifyNote(note, verifierKey));
  if (checkpoint.origin !== origin) throw malformedCheckpoint(`origin is not ${origin}`);
  return checkpoint;
}

function parseSignatureLine(line: string): { name: string; keyId: Buffer; signature: Buffer } {
  const [name = '', encoded = ''] = line.slice(SIGNATURE_PREFIX.length).split(' ', 2);
  const bytes = line.startsWith(SIGNATURE_PREFIX) ? decodeBase64(encoded) : undefined;
  const rest = line.slice(SIGNATURE_PREFIX.length + name.length + 1 + encoded.length);
  if (!KEY_NAME.test(name) || bytes === undefined || bytes.length < 5 || rest !== '') {
    throw new AuditError('note_malformed', 'a signature line is "— <name> <base64(key ID ‖ signature)>"');
  }
  return { name, keyId: bytes.subarray(0, 4), signature: bytes.subarray(4) };
}

function assertNoteText(text: string): void {
  if (text.length > MAX_NOTE_CHARS) throw new AuditError('note_malformed', 'note is larger than 1 MiB');
  if (!text.isWellFormed() || CONTROL_EXCEPT_NEWLINE.test(text)) {
    throw new AuditError('note_malformed', 'a note is UTF-8 text with no control characters but newline');
  }
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (cause) {
    throw new AuditError('note_malformed', 'note is not valid UTF-8', { cause });
  }
}

function rawPublicKey(key: KeyObject): Buffer {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  if (publicKey.asymmetricKeyType !== 'ed25519')
    throw new AuditError('note_key_invalid', 'not an Ed25519 key');
  const { x } = publicKey.export({ format: 'jwk' });
  return Buffer.from(x ?? '', 'base64url');
}

function isNoteLine(line: string): boolean {
  return line.length > 0 && !line.includes('\n') && !CONTROL_EXCEPT_NEWLINE.test(line) && line.isWellFormed();
}

function malformedCheckpoint(why: string): AuditError<'checkpoint_malformed'> {
  return new AuditError('checkpoint_malformed', `checkpoint: ${why}`);
}
