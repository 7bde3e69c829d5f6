import { type Html, html } from './html.ts';

// Copy buttons (static/copy-text.js): hidden until the script shows them, so
// a page without JavaScript offers no button that does nothing.

/** A button that copies the text of the element with id `targetId`; `what` names it for screen readers. */
export function copyButton(targetId: string, what: string): Html {
  return html`<button type="button" class="copy" data-copy="${targetId}" aria-label="Copy ${what}" hidden>Copy</button>`;
}

/** The script behind the copy buttons; once per page that has any. */
export const COPY_SCRIPT = html`<script src="/static/copy-text.js" defer></script>`;
