import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Type } from 'typebox';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { AppError } from '../errors.ts';
import { BODY_LIMIT_BYTES } from './app.ts';
import { PROBLEM_TYPES } from './problem-types.ts';

// Every error leaves as RFC 9457 problem+json with a stable code and our own
// request id; bodies are size-limited and schema-checked (unknown fields
// rejected); a 5xx's message and stack stay in the log, never the response.

const ctx = useTestApp();

ctx.before(async () => {
  const { app } = ctx.testApp;
  app.post(
    '/test/echo',
    {
      schema: {
        // A probe of the app's body handling, not part of the API: the document leaves it out.
        hide: true,
        body: Type.Object({ name: Type.String({ maxLength: 10 }) }, { additionalProperties: false }),
      },
    },
    async (request) => request.body,
  );
  app.get('/test/crash', async () => {
    throw new Error('db password is hunter2');
  });
  app.get('/test/missing', async () => {
    throw new AppError('not_found', 'no such widget');
  });
  app.get('/test/items/:id', async () => ({ ok: true }));
  await app.ready();
});

function postEcho(payload: string | Buffer, contentType = 'application/json') {
  return ctx.testApp.app.inject({
    method: 'POST',
    url: '/test/echo',
    // Same-origin, so the CSRF check (ACC-4) lets the request reach the body parser.
    headers: { 'content-type': contentType, origin: ctx.testApp.config.publicUrl },
    payload,
  });
}

describe('problem+json errors', () => {
  test('an unknown route is a 404 problem document carrying our request id', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/no/such/route' });
    assert.equal(response.statusCode, 404);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    const body = response.json<ProblemBody>();
    assert.equal(body.type, '/docs/problems#not_found');
    assert.equal(body.title, PROBLEM_TYPES.not_found.title);
    assert.equal(body.status, 404);
    assert.equal(body.code, 'not_found');
    assert.ok(body.request_id.length > 0);
    assert.equal(body.request_id, response.headers['x-request-id']);
  });

  test('a client-sent X-Request-Id is not used as the request id', async () => {
    const response = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/no/such/route',
      headers: { 'x-request-id': 'attacker-chosen-id' },
    });
    const body = response.json<ProblemBody>();
    assert.notEqual(body.request_id, 'attacker-chosen-id');
    assert.notEqual(response.headers['x-request-id'], 'attacker-chosen-id');
    assert.equal(body.request_id, response.headers['x-request-id']);
    assert.ok(!response.body.includes('attacker-chosen-id'));
  });

  test('a valid body passes the schema', async () => {
    const response = await postEcho(JSON.stringify({ name: 'ada' }));
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { name: 'ada' });
  });

  test('malformed JSON is a 400 malformed_body', async () => {
    const response = await postEcho('{"name": "ada"');
    assert.equal(response.statusCode, 400);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assert.equal(response.json<ProblemBody>().code, 'malformed_body');
  });

  test('a body that is not valid UTF-8 is a 400 malformed_body, not silently repaired', async () => {
    const payload = Buffer.concat([Buffer.from('{"name": "a'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    const response = await postEcho(payload);
    assert.equal(response.statusCode, 400);
    assert.equal(response.json<ProblemBody>().code, 'malformed_body');
  });

  test('a JSON body with a "__proto__" key is a 400 malformed_body, at any depth', async () => {
    for (const payload of [
      '{"name": "ada", "__proto__": {"isAdmin": true}}',
      '{"name": {"__proto__": {}}}',
    ]) {
      const response = await postEcho(payload);
      assert.equal(response.statusCode, 400, payload);
      assert.equal(response.json<ProblemBody>().code, 'malformed_body');
    }
  });

  test('a form body is decoded strictly: bad UTF-8, bad percent-encoding, repeated and "__proto__" fields are 400', async () => {
    const ok = await postEcho('name=ada+l%C3%A9', 'application/x-www-form-urlencoded');
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { name: 'ada lé' });
    for (const payload of ['name=%C3%28', 'name=%zz', 'name=a&name=b', '__proto__=x&name=a']) {
      const response = await postEcho(payload, 'application/x-www-form-urlencoded');
      assert.equal(response.statusCode, 400, payload);
      assert.equal(response.json<ProblemBody>().code, 'malformed_body', payload);
    }
  });

  test('an empty body sent as JSON is a 400 malformed_body', async () => {
    const response = await postEcho('');
    assert.equal(response.statusCode, 400);
    assert.equal(response.json<ProblemBody>().code, 'malformed_body');
  });

  test('an unknown field is a 400 validation_failed naming the field', async () => {
    const response = await postEcho(JSON.stringify({ name: 'ada', isAdmin: true }));
    assert.equal(response.statusCode, 400);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'validation_failed');
    assert.equal(body.type, '/docs/problems#validation_failed');
    assert.ok(
      body.errors?.some((error) => error.field === 'body/isAdmin'),
      `errors should name body/isAdmin: ${JSON.stringify(body.errors)}`,
    );
  });

  test('a value of the wrong type is a 400 validation_failed that does not echo the value', async () => {
    const canary = 'canary-value-7d1f3a';
    const response = await postEcho(JSON.stringify({ name: [canary] }));
    assert.equal(response.statusCode, 400);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'validation_failed');
    assert.ok(body.errors?.some((error) => error.field === 'name'));
    assert.ok(!response.body.includes(canary));
    assert.ok(!JSON.stringify(response.headers).includes(canary));
    // Too long is refused the same way, without echoing it.
    const tooLong = await postEcho(JSON.stringify({ name: 'x'.repeat(11) }));
    assert.equal(tooLong.json<ProblemBody>().code, 'validation_failed');
    assert.ok(!tooLong.body.includes('x'.repeat(11)));
  });

  test('a body is validated as sent: a number is not coerced into a string field', async () => {
    for (const name of [42, true, null]) {
      const response = await postEcho(JSON.stringify({ name }));
      assert.equal(response.statusCode, 400, JSON.stringify(name));
      assert.equal(response.json<ProblemBody>().code, 'validation_failed');
    }
  });

  test('a body over the size limit is a 413 body_too_large', async () => {
    const payload = JSON.stringify({ name: 'x'.repeat(BODY_LIMIT_BYTES) });
    assert.ok(Buffer.byteLength(payload) > BODY_LIMIT_BYTES);
    const response = await postEcho(payload);
    assert.equal(response.statusCode, 413);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assert.equal(response.json<ProblemBody>().code, 'body_too_large');
  });

  test('a text/plain body is a 415 unsupported_media_type', async () => {
    const response = await postEcho('name=ada', 'text/plain');
    assert.equal(response.statusCode, 415);
    assert.equal(response.json<ProblemBody>().code, 'unsupported_media_type');
  });

  test('an unexpected error is a 500 internal whose message and stack reach the log, not the client', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/test/crash' });
    assert.equal(response.statusCode, 500);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'internal');
    assert.equal(body.detail, undefined);
    assert.ok(!response.body.includes('hunter2'));
    assert.ok(!response.body.includes('at '), 'no stack frames in the body');
    assert.ok(!response.body.includes('.ts:'), 'no source locations in the body');
    const logged = ctx.testApp
      .logLines()
      .map((line) => JSON.parse(line) as { reqId?: string; err?: { message?: string; stack?: string } })
      .find((line) => line.reqId === body.request_id && line.err?.message === 'db password is hunter2');
    assert.ok(logged, 'the error is logged under the request id');
    assert.match(String(logged.err?.stack), /app\.test\.ts/);
  });

  test('an AppError with a 4xx problem code answers with that status and code', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/test/missing' });
    assert.equal(response.statusCode, 404);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'not_found');
    assert.equal(body.detail, 'no such widget');
  });
});

describe('/docs/problems', () => {
  test('lists every problem code with its status', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/docs/problems' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/html/);
    for (const [code, type] of Object.entries(PROBLEM_TYPES)) {
      assert.ok(response.body.includes(`id="${code}"`), `missing row for ${code}`);
      assert.ok(response.body.includes(`<td>${type.status}</td>`), `missing status ${type.status}`);
    }
  });
});

describe('request logging', () => {
  test('request log lines carry the route pattern, never the path or query string', async () => {
    const health = await ctx.testApp.app.inject({ method: 'GET', url: '/healthz?token=secret123' });
    assert.equal(health.statusCode, 200);
    const item = await ctx.testApp.app.inject({ method: 'GET', url: '/test/items/item-secret-456' });
    assert.equal(item.statusCode, 200);
    const lines = ctx.testApp.logLines();
    assert.ok(!lines.some((line) => line.includes('secret123')));
    assert.ok(!lines.some((line) => line.includes('item-secret-456')));
    const requests = lines
      .map((line) => JSON.parse(line) as { msg?: string; reqId?: string; route?: string; status?: number })
      .filter((line) => line.msg === 'request');
    assert.ok(
      requests.some(
        (line) =>
          line.reqId === health.headers['x-request-id'] && line.route === '/healthz' && line.status === 200,
      ),
    );
    assert.ok(
      requests.some(
        (line) => line.reqId === item.headers['x-request-id'] && line.route === '/test/items/:id',
      ),
    );
  });
});
