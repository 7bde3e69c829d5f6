// Copy buttons for one-time secrets and addresses (#11 item 13). Served from
// /static under the strict CSP (script-src 'self'), no inline script. Without
// JavaScript the buttons stay hidden and the text stays selectable.
// Each button names the element whose text it copies: data-copy="<id>".

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copy(element) {
  // The Clipboard API exists only in a secure context (HTTPS or localhost).
  if (navigator.clipboard !== undefined) {
    await navigator.clipboard.writeText(element.textContent ?? '');
    return true;
  }
  selectText(element);
  return document.execCommand('copy');
}

for (const button of document.querySelectorAll('button[data-copy]')) {
  const target = document.getElementById(button.dataset.copy ?? '');
  if (target === null) continue;
  const label = button.textContent;
  button.hidden = false;
  button.addEventListener('click', async () => {
    let copied = false;
    try {
      copied = await copy(target);
    } catch {
      copied = false;
    }
    // Where copying is refused, the text is left selected for the keyboard's own copy.
    if (!copied) selectText(target);
    button.textContent = copied ? 'Copied' : 'Select and copy';
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  });
}
