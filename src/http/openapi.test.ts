import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { FastifyReply } from 'fastify';
import { Type } from 'typebox';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { buildTestApp, useTestApp } from '../../test/helpers/app.ts';
import { createConformanceCheck, type OpenApiDocument } from '../../test/helpers/openapi-conformance.ts';

// /openapi.json says what the server does: errors as problem+json, the
// checkpoint notes as text and the exports as NDJSON, the credentials each
// operation takes, and request schemas that refuse what the server refuses.
// Every response of the suites is checked against it (test/helpers/app.ts);
// here that check is shown to catch a response that differs.

interface Operation {
  operationId?: string;
  security?: Record<string, string[]>[];
  description?: string;
  requestBody?: { content: Record<string, { schema: object }> };
  responses: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>;
}

interface Document extends OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, object>; securitySchemes: Record<string, { type: string }> };
}

const ctx = useTestApp();
let owner: TestAccount;
let document: Document;
ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  document = (await ctx.testApp.app.inject({ method: 'GET', url: '/openapi.json' })).json();
});

function operations(): { name: string; operation: Operation }[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({
      name: `${method.toUpperCase()} ${path}`,
      operation,
    })),
  );
}

/** Whether the document accepts this request body for the operation (its own JSON Schema, with ajv). */
function documentAccepts(method: string, path: string, body: unknown): boolean {
  const operation = document.paths[path]?.[method];
  const schema = operation?.requestBody?.content['application/json']?.schema;
  assert.ok(schema, `${method} ${path} documents a JSON body`);
  // The conformance check validates bodies; a made-up 200 response carrying the request body reuses it.
  const check = createConformanceCheck({
    components: document.components,
    paths: { '/probe': { post: { responses: { '200': { content: { 'application/json': { schema } } } } } } },
  });
  return (
    check({
      method: 'POST',
      route: '/probe',
      status: 200,
      contentType: 'application/json',
      body: JSON.stringify(body),
    }) === undefined
  );
}

async function apiStatus(method: 'POST' | 'PUT', url: string, payload: object): Promise<number> {
  const response = await ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${owner.apiToken}` },
    payload,
  });
  return response.statusCode;
}

describe('the OpenAPI document', () => {
  test('every operation has a unique camelCase operationId and a security requirement', () => {
    const ids = operations().map(({ name, operation }) => {
      assert.match(operation.operationId ?? '', /^[a-z][a-zA-Z0-9]*$/, `${name} has a camelCase operationId`);
      assert.ok(Array.isArray(operation.security), `${name} states its security`);
      return operation.operationId;
    });
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
    assert.deepEqual(document.paths['/api/v1/agents']?.get?.security, [
      { apiToken: [] },
      { sessionCookie: [] },
    ]);
    assert.deepEqual(document.paths['/audit/checkpoint']?.get?.security, []);
    assert.equal(document.components.securitySchemes.apiToken?.type, 'http');
    assert.equal(document.components.securitySchemes.sessionCookie?.type, 'apiKey');
  });

  test('every error is application/problem+json and refers to the one Problem schema', () => {
    let errors = 0;
    for (const { name, operation } of operations()) {
      for (const [status, answer] of Object.entries(operation.responses)) {
        if (Number(status) < 400) continue;
        errors += 1;
        assert.deepEqual(
          Object.keys(answer.content ?? {}),
          ['application/problem+json'],
          `${name} ${status}`,
        );
        assert.equal(
          answer.content?.['application/problem+json']?.schema?.$ref,
          '#/components/schemas/Problem',
        );
      }
    }
    assert.ok(errors > 50, 'errors are documented');
    assert.ok(document.components.schemas.Problem, 'the Problem schema is a component');
  });

  test('checkpoint notes and the key are text/plain; the export and the bundle are application/x-ndjson', () => {
    const mediaTypes = (path: string) =>
      Object.keys(document.paths[path]?.get?.responses['200']?.content ?? {});
    assert.deepEqual(mediaTypes('/audit/checkpoint'), ['text/plain']);
    assert.deepEqual(mediaTypes('/audit/checkpoints/{size}'), ['text/plain']);
    assert.deepEqual(mediaTypes('/.well-known/enclave-checkpoint-key'), ['text/plain']);
    assert.deepEqual(mediaTypes('/api/v1/audit/export'), ['application/x-ndjson']);
    assert.deepEqual(mediaTypes('/api/v1/audit/bundle'), ['application/x-ndjson']);
  });

  test('every operation documents what the central checks answer: a control character in the query, a body it cannot read, no credentials', async () => {
    // The suites' response check fails on an undocumented status; here every operation is sent each one.
    const probes: { what: string; query: string; headers: Record<string, string>; payload?: string }[] = [
      { what: 'a NUL in the query', query: '?q=%00', headers: { authorization: `Bearer ${owner.apiToken}` } },
      {
        what: 'a body in a charset it does not read',
        query: '',
        headers: {
          authorization: `Bearer ${owner.apiToken}`,
          'content-type': 'application/json; charset=utf-16',
        },
        payload: '{}',
      },
      { what: 'no credentials', query: '', headers: {} },
    ];
    for (const { name, operation } of operations()) {
      const [method = '', path = ''] = name.split(' ');
      const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
      for (const probe of probes) {
        if (probe.payload !== undefined && (method === 'GET' || method === 'HEAD')) continue;
        const response = await ctx.testApp.app.inject({
          method: method as 'GET',
          url: `${url}${probe.query}`,
          headers: probe.headers,
          ...(probe.payload === undefined ? {} : { payload: probe.payload }),
        });
        assert.ok(
          operation.responses[String(response.statusCode)] !== undefined,
          `${name}, ${probe.what}: ${response.statusCode} is not in the document`,
        );
      }
    }
  });

  test('the main operations carry a curl example', () => {
    for (const id of [
      'listAgents',
      'createAgent',
      'putCredential',
      'startAgent',
      'mintToken',
      'listAuditEvents',
    ]) {
      const found = operations().find(({ operation }) => operation.operationId === id);
      assert.match(found?.operation.description ?? '', /curl .*\$ENCLAVE_URL/, `${id} has a curl example`);
    }
  });
});

describe('request schemas refuse what the server refuses', () => {
  const agent = { name: 'Echo', handle: 'doc-echo', template: 'echo' };
  const refused: [string, string, string, object, string][] = [
    [
      'a template that is not installed',
      'post',
      '/api/v1/agents',
      { ...agent, template: 'nope' },
      '/api/v1/agents',
    ],
    [
      'a credential name the template does not take',
      'post',
      '/api/v1/agents',
      { ...agent, credentials: { api_key: 'x'.repeat(20) } },
      '/api/v1/agents',
    ],
    [
      'an empty credential value',
      'post',
      '/api/v1/agents',
      { ...agent, credentials: { echo_token: '' } },
      '/api/v1/agents',
    ],
    ['a 3-character email', 'post', '/api/v1/invites', { email: 'a@b' }, '/api/v1/invites'],
  ];
  for (const [what, method, path, body, url] of refused) {
    test(`${what}: the document refuses it, and so does the server (400)`, async () => {
      assert.equal(documentAccepts(method, path, body), false, 'the document refuses it');
      assert.equal(await apiStatus('POST', url, body), 400, 'the server refuses it');
    });
  }

  test('an empty value for an existing credential: the document refuses it, and so does the server (400)', async () => {
    const created = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/agents',
      headers: { authorization: `Bearer ${owner.apiToken}` },
      payload: { name: 'Echo', handle: 'doc-echo-2', template: 'echo' },
    });
    assert.equal(created.statusCode, 201);
    const url = `/api/v1/agents/${created.json().id}/credentials/echo_token`;
    assert.equal(documentAccepts('put', '/api/v1/agents/{id}/credentials/{name}', { value: '' }), false);
    assert.equal(await apiStatus('PUT', url, { value: '' }), 400);
  });

  test('an expiry in the past: the document says it in words, and the server refuses it (400)', async () => {
    const schema = document.paths['/api/v1/tokens']?.post?.requestBody?.content['application/json']?.schema;
    assert.match(JSON.stringify(schema), /expires_at[^}]*in the future/);
    assert.equal(
      await apiStatus('POST', '/api/v1/tokens', { name: 'old', expires_at: '2020-01-01T00:00:00Z' }),
      400,
    );
    assert.equal(
      await apiStatus('POST', '/api/v1/invites', {
        email: 'new@example.test',
        expires_at: '2020-01-01T00:00:00Z',
      }),
      400,
    );
  });

  test('a valid onboarding body is accepted by the document', () => {
    assert.equal(
      documentAccepts('post', '/api/v1/agents', { ...agent, credentials: { echo_token: 'secret' } }),
      true,
    );
    assert.equal(documentAccepts('post', '/api/v1/invites', { email: ' New.Member@example.com ' }), true);
  });
});

describe('the response check', () => {
  test('names a status, content type or body that differs from the document', () => {
    const check = createConformanceCheck(document);
    const problem = JSON.stringify({
      type: '/docs/problems#not_found',
      title: 'Not found',
      status: 404,
      code: 'not_found',
      request_id: 'r',
    });
    const base = { method: 'GET', route: '/api/v1/agents/:id', contentType: 'application/problem+json' };
    assert.equal(check({ ...base, status: 404, body: problem }), undefined, 'a documented problem passes');
    assert.match(check({ ...base, status: 418, body: problem }) ?? '', /status 418 is not documented/);
    assert.match(
      check({ ...base, status: 404, contentType: 'application/json', body: problem }) ?? '',
      /content type application\/json is not documented/,
    );
    assert.match(
      check({ ...base, status: 404, body: JSON.stringify({ error: 'gone' }) }) ?? '',
      /does not match the schema/,
    );
    assert.match(
      check({
        method: 'GET',
        route: '/audit/checkpoint',
        status: 200,
        contentType: 'application/json',
        body: '"x"',
      }) ?? '',
      /content type application\/json is not documented/,
    );
  });

  test('a test app whose route answers differently from the document fails to close, naming the response', async () => {
    const other = await buildTestApp(ctx.db);
    other.app.get(
      '/api/v1/conformance-probe',
      { schema: { operationId: 'conformanceProbe', response: { 200: Type.Object({ ok: Type.Boolean() }) } } },
      // Untyped, so it can answer a status its schema leaves out, as a route with a wrong schema would.
      async (_request, reply: FastifyReply) => reply.status(201).send({ ok: true }),
    );
    const response = await other.app.inject({ method: 'GET', url: '/api/v1/conformance-probe' });
    assert.equal(response.statusCode, 201);
    assert.deepEqual(other.openApiMismatches(), [
      'GET /api/v1/conformance-probe → 201: status 201 is not documented',
    ]);
    await assert.rejects(other.app.close(), /responses differ from \/openapi\.json/);
  });
});
