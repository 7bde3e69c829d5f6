// Passkeys (ACC-8): the one place the pages run WebAuthn. Served from this
// origin under the strict CSP (script-src 'self'), after
// /passkeys/simplewebauthn-browser.js, which defines SimpleWebAuthnBrowser.
//
// Each passkey form says what it does in data attributes:
//   data-passkey="register" | "authenticate", data-options="<url>".
// On submit the script asks the options URL for the ceremony's options
// (POST {} as JSON), lets the browser create or use a passkey, puts the
// browser's answer into the form's hidden `credential` field and submits the
// form: the server answers it as it answers any form (a redirect, or the page
// again with the reason). Without WebAuthn the forms stay hidden and each
// [data-passkey-fallback] note stays shown.

const webauthn = globalThis.SimpleWebAuthnBrowser;

function say(form, message) {
  const box = form.querySelector('[data-passkey-error]');
  if (box === null) return;
  box.textContent = message;
  box.hidden = message === '';
}

/** What the person is told when the browser's passkey prompt fails. */
function failureMessage(failure) {
  if (failure instanceof Error && failure.name === 'NotAllowedError') {
    return 'The passkey prompt was closed or timed out. Try again.';
  }
  if (failure instanceof Error && failure.name === 'InvalidStateError') {
    return 'This device already holds a passkey for your account.';
  }
  if (failure instanceof Error && failure.message !== '') return failure.message;
  return 'The passkey could not be used. Try again.';
}

async function optionsFor(form) {
  const response = await fetch(form.dataset.options, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: '{}',
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ?? body.title ?? 'The passkey request failed. Try again.');
  return body;
}

async function ceremony(form, button) {
  say(form, '');
  button.disabled = true;
  try {
    const optionsJSON = await optionsFor(form);
    const answer =
      form.dataset.passkey === 'register'
        ? await webauthn.startRegistration({ optionsJSON })
        : await webauthn.startAuthentication({ optionsJSON });
    form.elements.namedItem('credential').value = JSON.stringify(answer);
    // submit() sends the form without firing this listener again.
    form.submit();
  } catch (failure) {
    say(form, failureMessage(failure));
    button.disabled = false;
  }
}

if (webauthn?.browserSupportsWebAuthn() === true) {
  for (const note of document.querySelectorAll('[data-passkey-fallback]')) note.hidden = true;
  for (const form of document.querySelectorAll('form[data-passkey]')) {
    const button = form.querySelector('button[type="submit"]');
    if (button === null) continue;
    form.hidden = false;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      // The browser checks the form's own rules (a name is required) before this runs.
      // ceremony catches its own failures and shows them.
      void ceremony(form, button);
    });
  }
}
