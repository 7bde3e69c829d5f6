// Strict decoders. Buffer.from(text, 'base64' | 'hex') skips characters it
// does not understand and stops at the first bad pair, so two different
// strings can decode to the same bytes; everything read from a file or a
// request goes through these instead.

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const HEX = /^(?:[0-9a-f]{2})*$/;

/** Standard base64 (RFC 4648 §4) with padding and canonical trailing bits, or undefined. */
export function decodeBase64(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  // Non-zero unused bits in the last character decode to the same bytes; refuse them.
  return bytes.toString('base64') === text ? bytes : undefined;
}

/** Lowercase hex, or undefined. */
export function decodeHex(text: string): Buffer | undefined {
  return HEX.test(text) ? Buffer.from(text, 'hex') : undefined;
}
