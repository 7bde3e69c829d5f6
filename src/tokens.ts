import { createHash, randomBytes } from 'node:crypto';

// Bearer secrets: enc_<kind>_<32 random bytes in base62>. Only SHA-256 of a
// token is stored; lookups hash then compare. The prefix makes a leaked
// token greppable and tells a handler at once it was given the wrong kind.

export type TokenKind = 'live' | 'relay' | 'thread' | 'agent' | 'inv' | 'rec' | 'ver';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** ceil(256 / log2(62)): every 32-byte value fits in 43 base62 digits. */
const BODY_LENGTH = 43;
const TOKEN = /^enc_([a-z]+)_([0-9A-Za-z]{43})$/;

function base62(bytes: Buffer): string {
  let value = BigInt(`0x${bytes.toString('hex')}`);
  let out = '';
  while (value > 0n) {
    out = ALPHABET[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out.padStart(BODY_LENGTH, '0');
}

export interface MintedToken {
  /** Shown to its holder once; never stored or logged. */
  readonly token: string;
  readonly hash: Buffer;
  /** Last four characters, for recognising a token in a list. */
  readonly last4: string;
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function mintToken(kind: TokenKind): MintedToken {
  const bytes = randomBytes(32);
  const token = `enc_${kind}_${base62(bytes)}`;
  bytes.fill(0);
  return { token, hash: hashToken(token), last4: token.slice(-4) };
}

/** The token's kind if it is well-formed, else undefined. The value is attacker-controlled. */
export function tokenKind(token: string): TokenKind | undefined {
  const match = TOKEN.exec(token);
  if (match === null) return undefined;
  const kind = match[1];
  return ['live', 'relay', 'thread', 'agent', 'inv', 'rec', 'ver'].includes(kind ?? '')
    ? (kind as TokenKind)
    : undefined;
}
