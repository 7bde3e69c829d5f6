import type { App } from '../http/app.ts';
import { PROBLEM_TYPES, type ProblemCode } from '../http/problem-types.ts';
import { type Frame, html, page } from './html.ts';

// /docs: the API reference, Swagger UI inside the site's frame (its files come
// from our own origin, under DOCS_UI_PREFIX: see http/openapi.ts), and
// /docs/problems: every problem type the API answers with.

/** Where the Swagger UI plugin serves its files and the document it reads. */
export const DOCS_UI_PREFIX = '/docs/ui';

export function renderDocs(frame?: Frame): string {
  return page(
    'API reference',
    html`<link rel="stylesheet" href="${DOCS_UI_PREFIX}/static/swagger-ui.css">
<p class="muted">Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Error codes: <a href="/docs/problems">/docs/problems</a>.</p>
<div id="swagger-ui"></div>
<script src="${DOCS_UI_PREFIX}/static/swagger-ui-bundle.js" defer></script>
<script src="${DOCS_UI_PREFIX}/static/swagger-ui-standalone-preset.js" defer></script>
<script src="${DOCS_UI_PREFIX}/static/swagger-initializer.js" defer></script>`,
    frame,
  );
}

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
  // Public pages; the header still names a signed-in reader (page-frame.ts).
  app.get('/docs', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html; charset=utf-8').send(renderDocs(await request.pageFrame())),
  );
  app.get('/docs/problems', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html; charset=utf-8').send(renderProblems(await request.pageFrame())),
  );
}
