import { type Frame, html, page } from './html.ts';

// The browser's view of a problem (RFC 9457 stays the API's): the title and
// what to do, in the site's frame, with a way on. Only what a problem
// document would say is shown: a 4xx detail is written for the client, a 5xx
// has none (its message is logged, never sent); the request id lets the user
// quote it.

export interface ShownProblem {
  readonly status: number;
  readonly title: string;
  readonly detail?: string | undefined;
  readonly request_id: string;
  readonly errors?: readonly { readonly field: string; readonly message: string }[] | undefined;
}

/** What the status means for the person reading, when the problem carries no detail of its own. */
function explanation(status: number): string {
  if (status === 401) return 'Sign in to see this page.';
  if (status === 403) return 'Your account is not allowed to do this.';
  if (status === 404) return 'There is no page at this address, or it is not yours to see.';
  if (status === 405) return 'This page does not accept that kind of request.';
  if (status === 413) return 'What was sent is larger than this page accepts.';
  if (status === 429) return 'Too many requests in a short time. Wait a little, then try again.';
  if (status === 503) return 'Enclave cannot answer just now. Try again in a minute.';
  if (status >= 500)
    return 'Something went wrong on our side. Try again; if it keeps happening, tell your operator.';
  return 'The request could not be handled.';
}

function sentence(text: string): string {
  const capital = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

export function problemPage(problem: ShownProblem, frame: Frame | undefined): string {
  const detail = problem.status < 500 && problem.detail !== undefined ? sentence(problem.detail) : undefined;
  const wayOn =
    frame === undefined
      ? html`<a href="/">Home</a>${problem.status === 401 || problem.status === 403 ? html` · <a href="/login">Sign in</a>` : ''}`
      : html`<a href="/dashboard">Back to the dashboard</a>`;
  return page(
    problem.title,
    html`<h1>${problem.title}</h1>
<p>${detail ?? explanation(problem.status)}</p>
${
  problem.errors === undefined || problem.errors.length === 0
    ? ''
    : html`<ul class="errors">${problem.errors.map((error) => html`<li>${error.field}: ${error.message}</li>`)}</ul>`
}
<p class="way-on">${wayOn}</p>
<p class="muted">Error ${problem.status} · reference <code>${problem.request_id}</code></p>`,
    frame,
  );
}
