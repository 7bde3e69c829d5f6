import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  sign as ed25519Sign,
  verify as ed25519Verify,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import { AppError } from '../errors.ts';

// Standard Webhooks signatures (spec/standard-webhooks.md of
// standard-webhooks/standard-webhooks, v1.0.0), used to sign what Enclave sends
// (RLY-7) and to verify what outside services send to an agent (RLY-11).
//
// Terms:
//   secret      `whsec_` + base64 of 24 to 64 random bytes: the HMAC key (`v1`).
//   signing key `whsk_` + base64 of a 32-byte Ed25519 seed (`v1a`); its public
//               key is `whpk_` + base64 of the 32-byte raw Ed25519 public key.
//   signed content  `${webhook-id}.${webhook-timestamp}.${body}`, the body as raw bytes.
//   header      `webhook-signature`: space-separated `<version>,<base64>` entries;
//               versions we do not check (`v2`, …) are skipped, as the spec's libraries do.

export type SignatureErrorCode =
  | 'webhook_secret_invalid'
  | 'webhook_signature_missing_header'
  | 'webhook_signature_malformed'
  | 'webhook_timestamp_too_old'
  | 'webhook_timestamp_too_new'
  | 'webhook_signature_mismatch';

export class SignatureError extends AppError<SignatureErrorCode> {
  constructor(code: SignatureErrorCode, message: string) {
    super(code, message);
    this.name = 'SignatureError';
  }
}

/** How far the timestamp may be from our clock, either way, in seconds (the spec's libraries: 300). */
export const DEFAULT_TOLERANCE_SECONDS = 300;
/**
 * The most entries of a `webhook-signature` header looked at: rotation needs two or three,
 * so a header with more is refused whole (malformed) rather than partly checked, and no
 * request makes us compute more than this many comparisons.
 */
export const MAX_SIGNATURES = 20;
/** The longest `webhook-signature` header read: MAX_SIGNATURES `v1a` entries (93 chars each) fit. */
export const MAX_SIGNATURE_HEADER_LENGTH = 2048;
/** The longest `webhook-id`: it goes into the signed content and into the replay table. */
export const MAX_WEBHOOK_ID_LENGTH = 256;

const SECRET_PREFIX = 'whsec_';
export const SIGNING_KEY_PREFIX = 'whsk_';
const PUBLIC_KEY_PREFIX = 'whpk_';
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;
/** Padded, canonical base64 only: a secret with stray characters is a typo, not a key. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// Fixed DER prefixes of PKCS#8 / SPKI Ed25519 keys, so raw 32-byte keys go through node:crypto.
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function decodeBase64(text: string): Buffer | undefined {
  return text.length > 0 && BASE64.test(text) ? Buffer.from(text, 'base64') : undefined;
}

/** A fresh `whsec_` secret of `bytes` (24–32) random bytes. */
export function generateSecret(bytes = 32): string {
  if (!Number.isInteger(bytes) || bytes < MIN_SECRET_BYTES || bytes > 32) {
    throw new RangeError('a webhook secret has 24 to 32 random bytes');
  }
  return SECRET_PREFIX + randomBytes(bytes).toString('base64');
}

/**
 * The HMAC key of a `whsec_` secret. The prefix is optional (the reference libraries take
 * both); empty, non-base64, unpadded, or shorter than 24 / longer than 64 bytes is refused.
 */
export function parseSecret(secret: string): Buffer {
  const body = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  const key = decodeBase64(body);
  if (key === undefined || key.length < MIN_SECRET_BYTES || key.length > MAX_SECRET_BYTES) {
    throw new SignatureError(
      'webhook_secret_invalid',
      `a webhook secret is whsec_ and the base64 of ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes`,
    );
  }
  return key;
}

function signedContent(id: string, timestamp: number, body: Buffer | string): Buffer {
  return Buffer.concat([Buffer.from(`${id}.${timestamp}.`, 'utf8'), Buffer.from(body)]);
}

function hmacOf(key: Buffer, id: string, timestamp: number, body: Buffer | string): Buffer {
  return createHmac('sha256', key)
    .update(signedContent(id, timestamp, body))
    .digest();
}

/** `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`; `timestamp` in Unix seconds. */
export function signV1(secret: string, id: string, timestamp: number, body: Buffer | string): string {
  return `v1,${hmacOf(parseSecret(secret), id, timestamp, body).toString('base64')}`;
}

/** The `webhook-signature` value for several signatures (rotation: old and new secret). */
export function signatureHeader(signatures: readonly string[]): string {
  return signatures.join(' ');
}

/** A fresh Ed25519 pair for `v1a`: the `whsk_` signing key and its `whpk_` public key. */
export function generateSigningKey(): { signingKey: string; publicKey: string } {
  const seed = randomBytes(32);
  return { signingKey: SIGNING_KEY_PREFIX + seed.toString('base64'), publicKey: publicKeyOf(seed) };
}

function seedOf(signingKey: string): Buffer {
  const seed = signingKey.startsWith(SIGNING_KEY_PREFIX)
    ? decodeBase64(signingKey.slice(SIGNING_KEY_PREFIX.length))
    : undefined;
  if (seed?.length !== 32) {
    throw new SignatureError('webhook_secret_invalid', 'a signing key is whsk_ and the base64 of 32 bytes');
  }
  return seed;
}

function privateKeyOf(seed: Buffer) {
  return createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
}

function publicKeyOf(seed: Buffer): string {
  const der = createPublicKey(privateKeyOf(seed)).export({ format: 'der', type: 'spki' });
  return PUBLIC_KEY_PREFIX + der.subarray(ED25519_SPKI_PREFIX.length).toString('base64');
}

/** The `whpk_` public key of a `whsk_` signing key (what an endpoint's owner publishes). */
export function publicKeyFor(signingKey: string): string {
  return publicKeyOf(seedOf(signingKey));
}

function parsePublicKey(publicKey: string) {
  const raw = publicKey.startsWith(PUBLIC_KEY_PREFIX)
    ? decodeBase64(publicKey.slice(PUBLIC_KEY_PREFIX.length))
    : undefined;
  if (raw?.length !== 32) {
    throw new SignatureError('webhook_secret_invalid', 'a public key is whpk_ and the base64 of 32 bytes');
  }
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** `v1a,<base64 Ed25519 signature over id.timestamp.body>`. */
export function signV1a(signingKey: string, id: string, timestamp: number, body: Buffer | string): string {
  const signature = ed25519Sign(null, signedContent(id, timestamp, body), privateKeyOf(seedOf(signingKey)));
  return `v1a,${signature.toString('base64')}`;
}

/** What a header set holds: any case of name; a repeated header (string[]) counts as malformed. */
export type WebhookHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyOptions {
  /** Our clock, Unix seconds. */
  readonly now: number;
  readonly toleranceSeconds?: number;
}

export interface VerifiedWebhook {
  readonly id: string;
  readonly timestamp: number;
}

function headerOf(headers: WebhookHeaders, name: string): string | undefined {
  let found: string | readonly string[] | undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) found = value;
  }
  if (found === undefined || found === '') return undefined;
  if (typeof found !== 'string') {
    throw new SignatureError('webhook_signature_malformed', `${name} is given more than once`);
  }
  return found;
}

/** The header's entries, bounded: the sender controls its length and count. */
function signatureEntries(header: string): { version: string; value: string }[] {
  if (header.length > MAX_SIGNATURE_HEADER_LENGTH) {
    throw new SignatureError(
      'webhook_signature_malformed',
      `webhook-signature is over ${MAX_SIGNATURE_HEADER_LENGTH} characters`,
    );
  }
  const parts = header.split(' ').filter((part) => part !== '');
  if (parts.length > MAX_SIGNATURES) {
    throw new SignatureError(
      'webhook_signature_malformed',
      `webhook-signature has more than ${MAX_SIGNATURES} signatures`,
    );
  }
  return parts.map((part) => {
    const comma = part.indexOf(',');
    return comma < 0
      ? { version: '', value: '' }
      : { version: part.slice(0, comma), value: part.slice(comma + 1) };
  });
}

function equalBytes(a: Buffer, b: Buffer): boolean {
  // timingSafeEqual needs equal lengths; the length of a signature is not a secret.
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Checks a request against `secrets` (`whsec_` secrets and `whpk_` public keys), in order: the three headers are there, the
 * id and timestamp are well-formed, the timestamp is within the tolerance, and one `v1`
 * entry matches a secret or one `v1a` entry verifies under a public key. Throws a
 * SignatureError naming which check failed; returns the id and timestamp.
 */
export function verifyWebhook(
  headers: WebhookHeaders,
  body: Buffer | string,
  secrets: readonly string[],
  options: VerifyOptions,
): VerifiedWebhook {
  const id = headerOf(headers, 'webhook-id');
  const timestampText = headerOf(headers, 'webhook-timestamp');
  const header = headerOf(headers, 'webhook-signature');
  if (id === undefined || timestampText === undefined || header === undefined) {
    throw new SignatureError(
      'webhook_signature_missing_header',
      'webhook-id, webhook-timestamp and webhook-signature are all required',
    );
  }
  // The sender controls the id: a `.` in it could shift where the timestamp starts in the signed content.
  if (id.length > MAX_WEBHOOK_ID_LENGTH || !/^[\x21-\x7e]+$/.test(id) || id.includes('.')) {
    throw new SignatureError(
      'webhook_signature_malformed',
      `webhook-id is 1 to ${MAX_WEBHOOK_ID_LENGTH} printable characters without '.'`,
    );
  }
  if (!/^[0-9]{1,12}$/.test(timestampText)) {
    throw new SignatureError('webhook_signature_malformed', 'webhook-timestamp is integer Unix seconds');
  }
  const timestamp = Number(timestampText);
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const now = Math.floor(options.now);
  if (now - timestamp > tolerance) {
    throw new SignatureError('webhook_timestamp_too_old', 'webhook-timestamp is too old');
  }
  if (timestamp > now + tolerance) {
    throw new SignatureError('webhook_timestamp_too_new', 'webhook-timestamp is in the future');
  }
  const entries = signatureEntries(header);
  // The prefix says the scheme (the spec's reason for prefixes): `whpk_` checks `v1a`, a secret `v1`.
  const hmacs = secrets
    .filter((secret) => !secret.startsWith(PUBLIC_KEY_PREFIX))
    .map((secret) => hmacOf(parseSecret(secret), id, timestamp, body));
  const publicKeys = secrets.filter((key) => key.startsWith(PUBLIC_KEY_PREFIX)).map(parsePublicKey);
  const content = publicKeys.length > 0 ? signedContent(id, timestamp, body) : Buffer.alloc(0);
  for (const entry of entries) {
    const given = decodeBase64(entry.value);
    if (given === undefined) continue;
    if (entry.version === 'v1' && hmacs.some((hmac) => equalBytes(hmac, given))) return { id, timestamp };
    if (
      entry.version === 'v1a' &&
      given.length === 64 &&
      publicKeys.some((key) => ed25519Verify(null, content, key, given))
    ) {
      return { id, timestamp };
    }
  }
  throw new SignatureError('webhook_signature_mismatch', 'no signature matches');
}
