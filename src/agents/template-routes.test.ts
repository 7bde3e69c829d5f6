import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';

// GET /api/v1/templates lists the agent templates with the credentials each
// takes, to signed-in users only. Templates are the operator's: a template's
// command, port and directory never appear in a response (the response
// schema is an allowlist), and an unknown id — whatever it looks like — is
// the same 404 as any other unknown resource.

const ctx = useTestApp();
let account: TestAccount;

ctx.before(async () => {
  account = await createAccount(ctx.db, ctx.testApp);
});

function get(url: string, headers: Record<string, string> = { authorization: `Bearer ${account.apiToken}` }) {
  return ctx.testApp.app.inject({ method: 'GET', url, headers });
}

const ECHO_CREDENTIALS = [
  {
    name: 'echo_token',
    description:
      'Any test value. The echo agent reports only its last 4 characters, so you can check which credential reached it.',
    required: false,
    env: 'ECHO_TOKEN',
    provider: null,
    pattern: null,
    pattern_description: null,
    one_of: null,
  },
];

describe('GET /api/v1/templates', () => {
  test('lists the built-in templates, sorted by id, with the credentials each takes', async () => {
    const response = await get('/api/v1/templates');
    assert.equal(response.statusCode, 200, response.body);
    const { templates } = response.json<{ templates: Record<string, unknown>[] }>();
    assert.deepEqual(
      templates.map((template) => template.id),
      ['echo', 'llm-chat'],
    );
    const [echo, chat] = templates;
    assert.deepEqual(echo, {
      id: 'echo',
      name: 'Echo',
      description: ctx.testApp.templates.get('echo')?.description,
      model_gateway: false,
      credentials: ECHO_CREDENTIALS,
    });
    assert.equal(chat?.model_gateway, true);
    assert.deepEqual(
      ((chat?.credentials ?? []) as Record<string, unknown>[]).map(({ description: _d, ...rest }) => rest),
      [
        {
          name: 'anthropic_api_key',
          required: false,
          env: null,
          provider: 'anthropic',
          pattern: '^sk-ant-',
          pattern_description: 'starts with sk-ant-',
          one_of: 'model_provider',
        },
        {
          name: 'openai_api_key',
          required: false,
          env: null,
          provider: 'openai',
          pattern: '^sk-(?!ant-)',
          pattern_description: 'starts with sk-, and not with sk-ant-',
          one_of: 'model_provider',
        },
      ],
    );
  });

  test("never shows a template's command, port or directory", async () => {
    const body = (await get('/api/v1/templates')).body;
    for (const field of [
      '"command"',
      '"port"',
      '"dir"',
      'agent.mjs',
      '8080',
      ctx.testApp.templates.list()[0]?.dir,
    ]) {
      assert.ok(!body.includes(String(field)), `response mentions ${field}`);
    }
  });

  test('answers a browser session too', async () => {
    const response = await get('/api/v1/templates', { cookie: account.sessionCookie });
    assert.equal(response.statusCode, 200);
  });

  test('refuses an anonymous request with 401', async () => {
    const response = await get('/api/v1/templates', {});
    assert.equal(response.statusCode, 401);
    assert.equal(response.json<ProblemBody>().code, 'unauthenticated');
  });
});

describe('GET /api/v1/templates/:id', () => {
  test('answers one template', async () => {
    const response = await get('/api/v1/templates/echo');
    assert.equal(response.statusCode, 200);
    const template = response.json<Record<string, unknown>>();
    assert.deepEqual(Object.keys(template).sort(), [
      'credentials',
      'description',
      'id',
      'model_gateway',
      'name',
    ]);
    assert.deepEqual(template.credentials, ECHO_CREDENTIALS);
  });

  test('an unknown id, prototype names included, is a 404 problem', async () => {
    for (const id of [
      'nope',
      '__proto__',
      'constructor',
      'toString',
      'ECHO',
      '5b0e6a3c-2f4c-4a57-9a38-1d1c3f0e9d2b',
    ]) {
      const response = await get(`/api/v1/templates/${encodeURIComponent(id)}`);
      assert.equal(response.statusCode, 404, id);
      assert.equal(response.json<ProblemBody>().code, 'not_found');
    }
  });

  test('refuses an anonymous request with 401', async () => {
    const response = await get('/api/v1/templates/echo', {});
    assert.equal(response.statusCode, 401);
  });
});
