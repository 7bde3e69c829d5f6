import encodeQR from '@paulmillr/qr';
import { escapeHtml, Html } from '../web/html.ts';

// The enrolment QR code, drawn on the server as inline SVG: no script and no
// image request, so the strict CSP holds and the secret never leaves the page.

const OPENING = '<svg ';

/** `text` as a QR code: an <svg> of one square per dark module, with a quiet zone of 4. */
export function qrSvg(text: string, label: string): Html {
  const svg = encodeQR(text, 'svg', { ecc: 'medium', border: 4 });
  // The library's output holds only numbers (a viewBox and rectangles), never `text` itself.
  if (!svg.startsWith(OPENING)) throw new Error('the QR encoder returned no <svg> element');
  return new Html(
    `<svg class="qr" role="img" width="240" height="240" aria-label="${escapeHtml(label)}" ${svg.slice(OPENING.length)}`,
  );
}
