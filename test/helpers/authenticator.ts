import { generateHOTP } from '@oslojs/otp';
import decodeQR from '@paulmillr/qr/decode.js';

// An authenticator app as a phone runs it: it sees the QR code as pixels,
// reads the otpauth:// URI from them, and computes RFC 6238 codes from the
// URI's secret with a library of its own (not the server's code).

const MODULE_PIXELS = 6;

/**
 * Reads the otpauth:// URI out of a page's inline SVG QR code: draws each
 * dark module (a 1×1 <rect>) as black pixels on white, then decodes the
 * picture with @paulmillr/qr's decoder, as a camera frame would be.
 */
export function scanQrSvg(page: string): string {
  const svg = /<svg[^>]*class="qr"[^>]*>[\s\S]*?<\/svg>/.exec(page)?.[0];
  if (svg === undefined) throw new Error('the page has no QR code');
  const viewBox = /viewBox="0 0 (\d+) (\d+)"/.exec(svg);
  const modules = Number(viewBox?.[1]);
  if (!Number.isInteger(modules) || modules !== Number(viewBox?.[2])) throw new Error('no square viewBox');
  const size = modules * MODULE_PIXELS;
  const data = new Uint8ClampedArray(size * size * 4).fill(255);
  for (const rect of svg.matchAll(/<rect x="(\d+)" y="(\d+)" width="1" height="1"\s*\/>/g)) {
    const mx = Number(rect[1]);
    const my = Number(rect[2]);
    for (let y = my * MODULE_PIXELS; y < (my + 1) * MODULE_PIXELS; y++) {
      for (let x = mx * MODULE_PIXELS; x < (mx + 1) * MODULE_PIXELS; x++) {
        data.fill(0, (y * size + x) * 4, (y * size + x) * 4 + 3);
      }
    }
  }
  return decodeQR({ width: size, height: size, data });
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (no padding) to bytes. */
export function base32Decode(text: string): Buffer {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of text.replace(/=+$/, '')) {
    const index = BASE32.indexOf(ch);
    if (index === -1) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

export interface Authenticator {
  readonly uri: URL;
  readonly secret: Buffer;
  /** The code for the step `offset` steps from now (0: now, -1: the previous window). */
  code(offset?: number): string;
  /** The code of a given RFC 6238 step. */
  codeAt(step: bigint): string;
  /** The current step. */
  step(): bigint;
}

export function authenticatorFrom(uri: string): Authenticator {
  const parsed = new URL(uri);
  const secret = base32Decode(parsed.searchParams.get('secret') ?? '');
  const period = Number(parsed.searchParams.get('period') ?? '30');
  const digits = Number(parsed.searchParams.get('digits') ?? '6');
  const step = () => BigInt(Math.floor(Date.now() / 1000 / period));
  const codeAt = (at: bigint) => generateHOTP(secret, at, digits);
  return { uri: parsed, secret, step, codeAt, code: (offset = 0) => codeAt(step() + BigInt(offset)) };
}
