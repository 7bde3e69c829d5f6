import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { main } from '../cli/main.ts';
import { freePort } from '../free-port.ts';
import {
  type AgentTemplate,
  BUILT_IN_TEMPLATES_DIR,
  credentialFormatOk,
  loadTemplateCatalog,
  TemplateError,
} from './templates.ts';

// Agent templates are the operator's JSON files, read once at start-up. A
// malformed file stops start-up with one line naming the file, the JSON path
// and what is wrong, never a crash trace; an id defined twice is an error,
// never a silent override. The two shipped agents run as real processes here.

const scratch: string[] = [];
after(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

/** A fresh directory holding `files` (name → JSON value, or raw text/bytes). */
async function templatesDir(files: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-templates-'));
  scratch.push(dir);
  for (const [name, content] of Object.entries(files)) {
    const text =
      typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content, null, 2);
    await writeFile(path.join(dir, name), text);
  }
  return dir;
}

function custom(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'custom',
    name: 'Custom',
    description: 'An agent of the operator',
    command: ['node', 'custom/agent.mjs'],
    port: 9000,
    prefix: 'cu',
    model_gateway: false,
    credentials: [{ name: 'api_token', description: 'Token', required: true, env: 'CUSTOM_TOKEN' }],
    ...overrides,
  };
}

function withCredentials(...credentials: Record<string, unknown>[]): Record<string, unknown> {
  return custom({ credentials });
}

/** The TemplateError that loading `dirs` throws. */
async function loadError(dirs: string[]): Promise<TemplateError> {
  let caught: unknown;
  try {
    await loadTemplateCatalog(dirs);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof TemplateError, `expected a TemplateError, got ${String(caught)}`);
  assert.equal(caught.code, 'template_invalid');
  assert.ok(!caught.message.includes('\n'), 'the message is one line');
  return caught;
}

/** Loads custom.json holding `content` and returns the problems, each without the file prefix. */
async function problemsOf(content: unknown, fileName = 'custom.json'): Promise<string[]> {
  const dir = await templatesDir({ [fileName]: content });
  const error = await loadError([dir]);
  const prefix = `${path.join(dir, fileName)}: `;
  for (const problem of error.problems) assert.ok(problem.startsWith(prefix), `names the file: ${problem}`);
  return error.problems.map((problem) => problem.slice(prefix.length));
}

describe('the built-in templates', () => {
  test('echo and llm-chat load from <repo>/templates, sorted by id, frozen', async () => {
    const catalog = await loadTemplateCatalog([BUILT_IN_TEMPLATES_DIR]);
    assert.equal(BUILT_IN_TEMPLATES_DIR, path.resolve(import.meta.dirname, '..', '..', 'templates'));
    assert.deepEqual(
      catalog.list().map((template) => template.id),
      ['echo', 'llm-chat'],
    );
    const echo = catalog.get('echo') as AgentTemplate;
    assert.deepEqual(
      { ...echo, credentials: echo.credentials.map((c) => ({ ...c })) },
      {
        id: 'echo',
        name: 'Echo',
        description: echo.description,
        command: ['node', 'echo/agent.mjs'],
        port: 8080,
        prefix: 'ec',
        limits: { memoryMb: 128, processes: 32, openFiles: 256, cpuPercent: 100, volumeMb: 64 },
        modelGateway: false,
        relayPath: '/messages',
        credentials: [
          {
            name: 'echo_token',
            description: echo.credentials[0]?.description,
            required: false,
            env: 'ECHO_TOKEN',
            provider: undefined,
            pattern: undefined,
            patternDescription: undefined,
            oneOf: undefined,
          },
        ],
        dir: BUILT_IN_TEMPLATES_DIR,
      },
    );
    const chat = catalog.get('llm-chat') as AgentTemplate;
    assert.equal(chat.modelGateway, true);
    assert.deepEqual(
      chat.credentials.map((c) => [c.name, c.env, c.provider, c.pattern, c.oneOf, c.required]),
      [
        ['anthropic_api_key', undefined, 'anthropic', '^sk-ant-', 'model_provider', false],
        ['openai_api_key', undefined, 'openai', '^sk-(?!ant-)', 'model_provider', false],
      ],
    );
    // Each command's script resolves against the template's directory.
    for (const template of catalog.list()) {
      assert.ok(existsSync(path.resolve(template.dir, template.command[1] ?? '')), template.id);
      assert.ok(Object.isFrozen(template) && Object.isFrozen(template.command));
      assert.ok(Object.isFrozen(template.credentials) && template.credentials.every(Object.isFrozen));
    }
    assert.ok(Object.isFrozen(catalog.list()));
  });

  test('get() is a Map lookup: prototype names and unknown ids find nothing', async () => {
    const catalog = await loadTemplateCatalog([BUILT_IN_TEMPLATES_DIR]);
    for (const id of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'ECHO', 'echo ', '']) {
      assert.equal(catalog.get(id), undefined, id);
    }
  });

  test("credentialFormatOk checks the credential's pattern, and anything passes without one", async () => {
    const catalog = await loadTemplateCatalog([BUILT_IN_TEMPLATES_DIR]);
    const [anthropic, openai] = catalog.get('llm-chat')?.credentials ?? [];
    const echoToken = catalog.get('echo')?.credentials[0];
    assert.ok(anthropic !== undefined && openai !== undefined && echoToken !== undefined);
    assert.equal(credentialFormatOk(anthropic, 'sk-ant-api03-abc'), true);
    assert.equal(credentialFormatOk(anthropic, 'sk-proj-abc'), false);
    assert.equal(credentialFormatOk(anthropic, ' sk-ant-abc'), false);
    assert.equal(credentialFormatOk(openai, 'sk-proj-abc'), true);
    // An Anthropic key in the OpenAI slot would be sent to the wrong provider.
    assert.equal(credentialFormatOk(openai, 'sk-ant-api03-abc'), false);
    assert.equal(credentialFormatOk(echoToken, 'anything at all'), true);
  });
});

describe('ENCLAVE_TEMPLATES_DIR', () => {
  test("adds the operator's templates after the built-in ones; other files and subdirectories are ignored", async () => {
    const dir = await templatesDir({
      'custom.json': custom(),
      'README.md': '# not a template',
      'custom.json.bak': '{ not even json',
      '.hidden': 'x',
    });
    await mkdir(path.join(dir, 'custom'));
    await writeFile(path.join(dir, 'custom', 'nested.json'), '{ ignored: the code of the agent');
    const catalog = await loadTemplateCatalog([BUILT_IN_TEMPLATES_DIR, dir]);
    assert.deepEqual(
      catalog.list().map((template) => [template.id, template.dir]),
      [
        ['custom', dir],
        ['echo', BUILT_IN_TEMPLATES_DIR],
        ['llm-chat', BUILT_IN_TEMPLATES_DIR],
      ],
    );
    assert.deepEqual(catalog.get('custom')?.credentials[0], {
      name: 'api_token',
      description: 'Token',
      required: true,
      env: 'CUSTOM_TOKEN',
      provider: undefined,
      pattern: undefined,
      patternDescription: undefined,
      oneOf: undefined,
    });
  });

  test('an id in both directories is an error naming both files, not an override', async () => {
    const dir = await templatesDir({ 'echo.json': custom({ id: 'echo' }) });
    const error = await loadError([BUILT_IN_TEMPLATES_DIR, dir]);
    assert.deepEqual(error.problems, [
      `${path.join(dir, 'echo.json')}: /id: "echo" is already defined by ${path.join(BUILT_IN_TEMPLATES_DIR, 'echo.json')}`,
    ]);
  });

  test('a directory that does not exist, or is a file, is a clear error', async () => {
    const parent = await templatesDir({ 'plain-file': 'x' });
    const missing = path.join(parent, 'missing');
    assert.deepEqual((await loadError([missing])).problems, [
      `${missing}: cannot read the templates directory (does not exist)`,
    ]);
    const file = path.join(parent, 'plain-file');
    assert.deepEqual((await loadError([file])).problems, [
      `${file}: cannot read the templates directory (is not a directory)`,
    ]);
  });

  test('`enclave start` with a malformed template prints one line naming the file and path, and exits 1 before the database', async () => {
    const dir = await templatesDir({ 'custom.json': custom({ port: 80 }) });
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      ['start'],
      { ENCLAVE_TEMPLATES_DIR: dir, ENCLAVE_DATA_DIR: path.join(dir, 'data'), ENCLAVE_LOG_LEVEL: 'silent' },
      { out: (line) => out.push(line), err: (line) => err.push(line) },
    );
    assert.equal(code, 1);
    assert.deepEqual(out, []);
    assert.deepEqual(err, [
      `enclave: agent templates are not valid: ${path.join(dir, 'custom.json')}: /port: must be >= 1024`,
    ]);
    assert.equal(existsSync(path.join(dir, 'data')), false, 'nothing was started');
  });
});

describe('relay_path', () => {
  test('RLY-3: relay_path defaults to /messages; a declared one is kept; one that is not a plain absolute path, climbs with .., or is too long is refused by path', async () => {
    const dir = await templatesDir({ 'custom.json': custom({ relay_path: '/relay/in-box_1.json' }) });
    assert.equal((await loadTemplateCatalog([dir])).get('custom')?.relayPath, '/relay/in-box_1.json');
    const plain = await templatesDir({ 'custom.json': custom() });
    assert.equal((await loadTemplateCatalog([plain])).get('custom')?.relayPath, '/messages');
    for (const bad of [
      'messages',
      '',
      'http://elsewhere/x',
      '/a?b=1',
      '/a#b',
      '/a b',
      '/%2e%2e/x',
      '/x\\y',
    ]) {
      const problems = await problemsOf(custom({ relay_path: bad }));
      assert.equal(problems.length, 1, `${bad}: ${problems.join('; ')}`);
      assert.ok(problems[0]?.startsWith('/relay_path: '), problems[0]);
    }
    for (const climbing of ['/a/../admin', '//host/x']) {
      assert.deepEqual(await problemsOf(custom({ relay_path: climbing })), [
        '/relay_path: must not contain ".." or "//"',
      ]);
    }
    const long = await problemsOf(custom({ relay_path: `/${'a'.repeat(200)}` }));
    assert.ok(long[0]?.startsWith('/relay_path: '), long[0]);
  });
});

describe('malformed template files: file, JSON path and what is wrong', () => {
  test('not JSON, not UTF-8, too large, not an object', async () => {
    const [json] = await problemsOf('{ "id": "custom", }');
    assert.match(json ?? '', /^is not valid JSON \(.+\)$/);
    assert.deepEqual(await problemsOf(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d])), ['is not valid UTF-8']);
    assert.deepEqual(await problemsOf(JSON.stringify(custom({ description: 'x'.repeat(70_000) }))), [
      'is larger than 64 KiB',
    ]);
    assert.deepEqual(await problemsOf([custom()]), ['/: must be object']);
  });

  test('unknown fields are refused, at the top level and in a credential, "__proto__" included', async () => {
    assert.deepEqual(await problemsOf(custom({ image: 'ubuntu' })), ['/image: is not an accepted field']);
    assert.deepEqual(
      await problemsOf(
        withCredentials({
          name: 'api_token',
          description: 'Token',
          required: true,
          env: 'X_TOKEN',
          value: 's',
        }),
      ),
      ['/credentials/0/value: is not an accepted field'],
    );
    const proto = JSON.stringify(custom()).replace(/^\{/, '{"__proto__":{"port":1},');
    assert.deepEqual(await problemsOf(proto), ['/__proto__: is not an accepted field']);
  });

  test('missing fields and wrong types name the path', async () => {
    const { port: _port, ...noPort } = custom();
    assert.deepEqual(await problemsOf(noPort), ['/port: is required']);
    assert.deepEqual(await problemsOf(custom({ port: 80 })), ['/port: must be >= 1024']);
    assert.deepEqual(await problemsOf(custom({ port: '8080' })), ['/port: must be integer']);
    assert.deepEqual(await problemsOf(custom({ command: [] })), [
      '/command: must not have fewer than 1 items',
    ]);
    assert.deepEqual(await problemsOf(custom({ model_gateway: 'yes' })), ['/model_gateway: must be boolean']);
    assert.deepEqual(await problemsOf(custom({ id: 'Custom' }), 'Custom.json'), [
      '/id: must match pattern "^[a-z][a-z0-9-]{1,39}$"',
    ]);
    assert.deepEqual(
      await problemsOf(
        withCredentials({ name: 'key', description: 'Key', required: true, provider: 'gemini' }),
      ),
      ['/credentials/0/provider: must be one of "anthropic", "openai", "google", "xai"'],
    );
  });

  test('the file name must be <id>.json', async () => {
    assert.deepEqual(await problemsOf(custom({ id: 'other' })), [
      '/id: "other" must match the file name (expected other.json)',
    ]);
  });

  test('a command argument may not hold a NUL byte', async () => {
    assert.deepEqual(await problemsOf(custom({ command: ['node', 'a\u0000b'] })), [
      '/command/1: contains a NUL byte',
    ]);
  });

  test('a credential has exactly one of env or provider, and a provider credential needs model_gateway', async () => {
    assert.deepEqual(
      await problemsOf(
        withCredentials(
          { name: 'both', description: 'd', required: false, env: 'BOTH', provider: 'openai' },
          { name: 'neither', description: 'd', required: false },
        ),
      ),
      [
        '/credentials/0: must have exactly one of "env" (the agent reads it) or "provider" (the model gateway uses it)',
        '/credentials/0/provider: a provider credential needs "model_gateway": true',
        '/credentials/1: must have exactly one of "env" (the agent reads it) or "provider" (the model gateway uses it)',
      ],
    );
    assert.deepEqual(
      await problemsOf(
        withCredentials({ name: 'key', description: 'd', required: true, provider: 'anthropic' }),
      ),
      ['/credentials/0/provider: a provider credential needs "model_gateway": true'],
    );
  });

  test('a credential may not set a variable the platform sets', async () => {
    const envs = [
      'PATH',
      'PORT',
      'LD_PRELOAD',
      'NODE_OPTIONS',
      'HTTPS_PROXY',
      'ENCLAVE_AGENT_TOKEN',
      'ANTHROPIC_API_KEY',
      'OPENAI_BASE_URL',
    ];
    const problems = await problemsOf(
      withCredentials(...envs.map((env, n) => ({ name: `c${n}`, description: 'd', required: false, env }))),
    );
    assert.deepEqual(problems, [
      '/credentials/0/env: "PATH" is reserved: the platform sets it',
      '/credentials/1/env: "PORT" is reserved: the platform sets it',
      '/credentials/2/env: "LD_PRELOAD" is reserved: the platform sets it',
      '/credentials/3/env: "NODE_OPTIONS" is reserved: the platform sets it',
      '/credentials/4/env: "HTTPS_PROXY" is reserved: the platform sets it',
      '/credentials/5/env: "ENCLAVE_AGENT_TOKEN" is reserved: ENCLAVE_* is set by the platform',
      // The model SDKs' variables point an agent at its gateway (AGT-7): a credential cannot take them over.
      '/credentials/6/env: "ANTHROPIC_API_KEY" is reserved: the platform sets it',
      '/credentials/7/env: "OPENAI_BASE_URL" is reserved: the platform sets it',
    ]);
    assert.deepEqual(
      await problemsOf(withCredentials({ name: 'p', description: 'd', required: false, env: 'http_proxy' })),
      ['/credentials/0/env: must match pattern "^[A-Z][A-Z0-9_]{0,127}$"'],
    );
  });

  test('names, variables and providers are unique within a template', async () => {
    assert.deepEqual(
      await problemsOf(
        withCredentials(
          { name: 'token', description: 'd', required: false, env: 'A_TOKEN' },
          { name: 'token', description: 'd', required: false, env: 'A_TOKEN' },
        ),
      ),
      [
        '/credentials/1/name: "token" is already used by /credentials/0',
        '/credentials/1/env: "A_TOKEN" is already used by /credentials/0',
      ],
    );
    // The gateway would not know which of two keys for one provider to use.
    assert.deepEqual(
      await problemsOf(
        custom({
          model_gateway: true,
          credentials: [
            { name: 'key_a', description: 'd', required: false, provider: 'openai', one_of: 'keys' },
            { name: 'key_b', description: 'd', required: false, provider: 'openai', one_of: 'keys' },
          ],
        }),
      ),
      ['/credentials/1/provider: "openai" is already used by /credentials/0'],
    );
  });

  test('a pattern must compile with the u flag and be at most 200 characters', async () => {
    const [invalid] = await problemsOf(
      withCredentials({ name: 'k', description: 'd', required: false, env: 'K', pattern: '^sk-(' }),
    );
    assert.match(invalid ?? '', /^\/credentials\/0\/pattern: is not a valid regular expression \(.+\)$/);
    // Valid without the u flag, not with it.
    const [unicode] = await problemsOf(
      withCredentials({ name: 'k', description: 'd', required: false, env: 'K', pattern: '\\-' }),
    );
    assert.match(unicode ?? '', /^\/credentials\/0\/pattern: is not a valid regular expression/);
    const [long] = await problemsOf(
      withCredentials({ name: 'k', description: 'd', required: false, env: 'K', pattern: 'a'.repeat(201) }),
    );
    assert.match(long ?? '', /^\/credentials\/0\/pattern: must not have more than 200 characters/);
  });

  test('pattern_description puts a pattern in words for pages, and needs a pattern to describe', async () => {
    assert.deepEqual(
      await problemsOf(
        withCredentials({
          name: 'k',
          description: 'd',
          required: false,
          env: 'K',
          pattern_description: 'starts with k',
        }),
      ),
      ['/credentials/0/pattern_description: describes a "pattern", and there is none'],
    );
    const dir = await templatesDir({
      'custom.json': withCredentials({
        name: 'k',
        description: 'd',
        required: false,
        env: 'K',
        pattern: '^k',
        pattern_description: 'starts with k',
      }),
    });
    const catalog = await loadTemplateCatalog([dir]);
    assert.equal(catalog.get('custom')?.credentials[0]?.patternDescription, 'starts with k');
  });

  test('a one_of credential is optional and its label is shared by at least two credentials', async () => {
    assert.deepEqual(
      await problemsOf(
        withCredentials(
          { name: 'a', description: 'd', required: true, env: 'A', one_of: 'pair' },
          { name: 'b', description: 'd', required: false, env: 'B', one_of: 'pair' },
          { name: 'c', description: 'd', required: false, env: 'C', one_of: 'alone' },
        ),
      ),
      [
        '/credentials/0/required: must be false for a "one_of" credential (one of the group is required)',
        '/credentials/2/one_of: "alone" must be shared by at least two credentials',
      ],
    );
  });

  test('every problem of every file is reported at once, on one line', async () => {
    const dir = await templatesDir({
      'a-one.json': custom({ id: 'a-one', port: 1 }),
      'b-two.json': '[',
      'c-three.json': custom({ id: 'c-three' }),
    });
    const error = await loadError([dir]);
    assert.equal(error.problems.length, 2);
    assert.ok(error.message.startsWith('agent templates are not valid: '));
    assert.ok(error.message.includes(`${path.join(dir, 'a-one.json')}: /port: must be >= 1024; `));
    assert.ok(error.message.includes(`${path.join(dir, 'b-two.json')}: is not valid JSON`));
    assert.ok(!error.message.includes('c-three'), 'a valid file is not mentioned');
  });
});

// ---------------------------------------------------------------- the shipped agents

async function startAgent(
  script: string,
  env: Record<string, string>,
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(BUILT_IN_TEMPLATES_DIR, script)], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const listening = Promise.withResolvers<void>();
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.includes('listening on')) listening.resolve();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  child.once('exit', (code) => listening.reject(new Error(`${script} exited (${code}): ${output}`)));
  await listening.promise;
  return { child, url: `http://127.0.0.1:${port}`, output: () => output };
}

async function stopAgent(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  return code;
}

function post(url: string, body: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
}

describe('the echo agent (templates/echo/agent.mjs)', () => {
  test('reports the last 4 of its credential, echoes JSON messages, refuses bad bodies, stops on SIGTERM', async () => {
    const token = 'echo-test-credential-7f3a';
    const agent = await startAgent('echo/agent.mjs', { ECHO_TOKEN: token });
    try {
      const status = await fetch(`${agent.url}/`);
      assert.equal(status.status, 200);
      assert.deepEqual(await status.json(), {
        agent: 'echo',
        credential_set: true,
        credential_last4: '7f3a',
      });

      const message = { text: 'hello', nested: { n: [1, 2, 3] } };
      for (const route of ['/', '/messages']) {
        const echoed = await post(`${agent.url}${route}`, JSON.stringify(message));
        assert.equal(echoed.status, 200, route);
        // A string `text` is answered as the relay expects it (README "Relay messages").
        assert.deepEqual(await echoed.json(), { text: 'hello', echo: message });
      }
      const invalid = await post(`${agent.url}/messages`, '{ not json');
      assert.equal(invalid.status, 400);
      assert.equal(((await invalid.json()) as { error: string }).error, 'invalid_json');
      const large = await post(`${agent.url}/messages`, JSON.stringify({ text: 'x'.repeat(1024 * 1024) }));
      assert.equal(large.status, 413);
      assert.equal((await fetch(`${agent.url}/elsewhere`)).status, 404);
      assert.equal((await fetch(`${agent.url}/messages`)).status, 405);
    } finally {
      assert.equal(await stopAgent(agent.child), 0, 'SIGTERM stops it cleanly');
    }
    assert.ok(!agent.output().includes(token.slice(0, -4)), 'the credential is never printed');
  });

  test('without a credential, or with one too short to show a part of, it reports none', async () => {
    for (const env of [{}, { ECHO_TOKEN: 'short' }]) {
      const agent = await startAgent('echo/agent.mjs', env);
      try {
        const status = (await (await fetch(`${agent.url}/`)).json()) as Record<string, unknown>;
        assert.equal(status.credential_last4, null);
        assert.equal(status.credential_set, 'ECHO_TOKEN' in env);
      } finally {
        await stopAgent(agent.child);
      }
    }
  });
});

describe('the llm-chat agent (templates/llm-chat/agent.mjs)', () => {
  test('starts, and without ENCLAVE_GATEWAY_URL answers a message with a clear 503', async () => {
    const agent = await startAgent('llm-chat/agent.mjs', { ENCLAVE_AGENT_TOKEN: 'enc_agent_test' });
    try {
      const status = await fetch(`${agent.url}/`);
      assert.deepEqual(await status.json(), { agent: 'llm-chat', gateway_configured: false });
      const answer = await post(`${agent.url}/messages`, JSON.stringify({ text: 'hello' }));
      assert.equal(answer.status, 503);
      const body = (await answer.json()) as { error: string; message: string };
      assert.equal(body.error, 'model_gateway_not_configured');
      assert.match(body.message, /ENCLAVE_GATEWAY_URL is not set/);
      const empty = await post(`${agent.url}/messages`, JSON.stringify({ text: '' }));
      assert.equal(empty.status, 400);
    } finally {
      assert.equal(await stopAgent(agent.child), 0);
    }
  });

  test('with a gateway, it sends one Anthropic Messages request with its identity token and answers with the text', async () => {
    const seen: { url: string | undefined; headers: IncomingHttpHeaders; body: unknown }[] = [];
    const gateway = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        seen.push({
          url: request.url,
          headers: request.headers,
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
        });
        response.setHeader('content-type', 'application/json');
        response.end(
          JSON.stringify({
            content: [
              { type: 'text', text: 'Hi ' },
              { type: 'text', text: 'there' },
            ],
          }),
        );
      });
    });
    gateway.listen(0, '127.0.0.1');
    await once(gateway, 'listening');
    const { port } = gateway.address() as AddressInfo;
    const agent = await startAgent('llm-chat/agent.mjs', {
      ENCLAVE_GATEWAY_URL: `http://127.0.0.1:${port}/`,
      ENCLAVE_AGENT_TOKEN: 'enc_agent_test',
    });
    try {
      const answer = await post(`${agent.url}/messages`, JSON.stringify({ text: 'hello' }));
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { text: 'Hi there' });
      assert.equal(seen.length, 1);
      assert.equal(seen[0]?.url, '/v1/messages');
      assert.equal(seen[0]?.headers.authorization, 'Bearer enc_agent_test');
      assert.equal(seen[0]?.headers['anthropic-version'], '2023-06-01');
      assert.deepEqual(seen[0]?.body, {
        model: 'auto',
        max_tokens: 1024,
        messages: [{ role: 'user', content: 'hello' }],
      });
    } finally {
      await stopAgent(agent.child);
      gateway.close();
    }
  });
});
