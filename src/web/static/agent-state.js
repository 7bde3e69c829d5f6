// The agent page's live state (AGT-6): while a start or stop is under way,
// polls GET /dashboard/agents/:id/state and updates the state line and the
// Start / Stop / Restart buttons in place, until the instance settles. The
// page works without this file: its Refresh link reloads it by hand.

const POLL_MS = 1500;
/** A safety net: a page left open does not poll for ever. */
const MAX_POLLS = 400;

function apply(root, view) {
  const line = root.querySelector('[data-state-line]');
  if (line !== null) line.textContent = view.line;
  for (const button of root.querySelectorAll('button[data-action]')) {
    button.disabled = view.actions[button.dataset.action] !== true;
  }
  const refresh = root.querySelector('[data-refresh]');
  if (refresh !== null) refresh.hidden = !view.settling;
}

async function poll(root, url, left) {
  let view;
  try {
    const response = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store' });
    if (!response.ok) return; // signed out or the agent is gone: the Refresh link says the rest
    view = await response.json();
  } catch {
    return;
  }
  apply(root, view);
  if (view.settling && left > 1) setTimeout(() => poll(root, url, left - 1), POLL_MS);
}

const root = document.getElementById('instance-state');
if (root?.hasAttribute('data-settling')) {
  setTimeout(() => poll(root, root.dataset.stateUrl, MAX_POLLS), POLL_MS);
}
