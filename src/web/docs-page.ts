import type { App } from '../http/app.ts';
import { PROBLEM_TYPES, type ProblemCode } from '../http/problem-types.ts';
import { type Frame, type Html, html, page } from './html.ts';

// /docs: a readable API reference rendered on the server from /openapi.json,
// so it needs no client script and holds to the strict CSP.

interface Operation {
  summary?: string;
  description?: string;
  tags?: string[];
  parameters?: { name: string; in: string; required?: boolean; description?: string; schema?: unknown }[];
  requestBody?: { content?: Record<string, { schema?: unknown }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: unknown }> }>;
}

interface Document {
  info?: { title?: string; description?: string };
  paths?: Record<string, Record<string, Operation>>;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

function anchor(method: string, path: string): string {
  return `${method}-${path}`.replace(/[^a-zA-Z0-9]+/g, '-');
}

function schemaBlock(schema: unknown): Html {
  return html`<pre><code>${JSON.stringify(schema, null, 2)}</code></pre>`;
}

function renderOperation(method: string, path: string, op: Operation): Html {
  const body = op.requestBody?.content;
  return html`<section class="route" id="${anchor(method, path)}">
<h3><span class="method">${method.toUpperCase()}</span> <code>${path}</code></h3>
${op.summary ? html`<p><strong>${op.summary}</strong></p>` : ''}
${op.description ? html`<p>${op.description}</p>` : ''}
${
  op.parameters && op.parameters.length > 0
    ? html`<table><thead><tr><th>Parameter</th><th>In</th><th>Required</th><th>Description</th></tr></thead><tbody>${op.parameters.map(
        (p) =>
          html`<tr><td><code>${p.name}</code></td><td>${p.in}</td><td>${p.required ? 'yes' : 'no'}</td><td>${p.description ?? ''}</td></tr>`,
      )}</tbody></table>`
    : ''
}
${body ? Object.entries(body).map(([type, media]) => html`<h4>Request body <code>${type}</code></h4>${schemaBlock(media.schema)}`) : ''}
<h4>Responses</h4>
<table><tbody>${Object.entries(op.responses ?? {}).map(
    ([status, response]) =>
      html`<tr><td><code>${status}</code></td><td>${response.description ?? ''}${Object.entries(
        response.content ?? {},
      ).map(
        ([type, media]) => html`<div class="muted"><code>${type}</code></div>${schemaBlock(media.schema)}`,
      )}</td></tr>`,
  )}</tbody></table>
</section>`;
}

export function renderDocs(doc: Document, frame?: Frame): string {
  const operations: { method: string; path: string; op: Operation }[] = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (op !== undefined) operations.push({ method, path, op });
    }
  }
  return page(
    'API reference',
    html`<h1>${doc.info?.title ?? 'API'}</h1>
<p>${doc.info?.description ?? ''}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Error codes: <a href="/docs/problems">/docs/problems</a>.</p>
<ul class="toc">${operations.map(
      ({ method, path, op }) =>
        html`<li><a href="#${anchor(method, path)}"><span class="method">${method.toUpperCase()}</span> ${path}</a>${op.summary ? html` <span class="muted">— ${op.summary}</span>` : ''}</li>`,
    )}</ul>
${operations.map(({ method, path, op }) => renderOperation(method, path, op))}`,
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
    reply
      .type('text/html; charset=utf-8')
      .send(renderDocs(app.swagger() as Document, await request.pageFrame())),
  );
  app.get('/docs/problems', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html; charset=utf-8').send(renderProblems(await request.pageFrame())),
  );
}
