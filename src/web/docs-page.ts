import type { App } from '../http/app.ts';
import { PROBLEM_TYPES, type ProblemCode } from '../http/problem-types.ts';
import { type Frame, html, page } from './html.ts';

// /docs/problems: every problem type the API answers with. /docs itself is
// the Swagger UI reference (http/openapi.ts).

export function renderProblems(frame?: Frame): string {
  const codes = Object.keys(PROBLEM_TYPES) as ProblemCode[];
  return page(
    'Problem types',
    html`<h1>Problem types</h1>
<p>Every error is an <a href="https://www.rfc-editor.org/rfc/rfc9457">RFC 9457</a> problem document with
<code>Content-Type: application/problem+json</code>. Its <code>type</code> links to a row below; <code>code</code>
is the same identifier, stable across versions; <code>request_id</code> finds the request in the server log.</p>
<table><thead><tr><th>Code</th><th>Status</th><th>Title</th><th>Meaning</th></tr></thead><tbody>${codes.map(
      (code) =>
        html`<tr id="${code}"><td><code>${code}</code></td><td>${PROBLEM_TYPES[code].status}</td><td>${PROBLEM_TYPES[code].title}</td><td>${PROBLEM_TYPES[code].description}</td></tr>`,
    )}</tbody></table>`,
    frame,
  );
}

export function registerDocsRoutes(app: App): void {
  // A public page; the header still names a signed-in reader (page-frame.ts).
  app.get('/docs/problems', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html; charset=utf-8').send(renderProblems(await request.pageFrame())),
  );
}
