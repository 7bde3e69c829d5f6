// Attack: an agent in its real sandbox looks for its tenant's model key (its environment, every file it can read, its own process) or calls the gateway as another agent; and the official SDKs, unmodified, must still work there with nothing but the variables the platform sets.
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type GatewayAgent, type GatewayFixture, startGatewayFixture } from '../../test/helpers/gateway.ts';
import { hasTool, requireTool } from '../../test/helpers/system-tools.ts';
import { createEgressProxy } from '../agents/egress/proxy.ts';
import { createBwrapDriver } from '../agents/runtime/bwrap-driver.ts';
import type { RuntimeDriver } from '../agents/runtime/driver.ts';
import {
  ingressRequest,
  linesLogger,
  type Runtime,
  SMALL_LIMITS,
  sandboxProcesses,
} from '../agents/runtime/sandbox-fixtures.testing.ts';

const ANTHROPIC_CANARY = 'sk-ant-CANARY-5b1e3d7f9a2c4e6b8d0f1a3c5e7b9d1f';
const OPENAI_CANARY = 'sk-CANARY-openai-8c2e4a6b0d1f3e5a7c9b1d3f5a7c9e1b';

/**
 * An agent that uses the providers' SDKs exactly as their READMEs say,
 * `new Anthropic()` and `new OpenAI()`, with no key or URL of its own: only
 * the variables the platform sets. The SDKs come from the platform's
 * node_modules, bound read-only at /opt/enclave/node_modules.
 */
const SDK_AGENT = `import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, lstatSync } from 'node:fs';
const require = createRequire('/opt/enclave/node_modules/');
const Anthropic = require('@anthropic-ai/sdk').default;
const OpenAI = require('openai').default;
/** Every readable file under dir whose bytes contain needle (proc, sys and dev left out). */
function scan(dir, needle, hits, budget) {
  let names = [];
  try { names = readdirSync(dir); } catch { return; }
  for (const name of names) {
    const full = dir === '/' ? '/' + name : dir + '/' + name;
    if (['/proc', '/sys', '/dev'].includes(full) || budget.files-- <= 0) continue;
    let stat;
    try { stat = lstatSync(full); } catch { continue; }
    if (stat.isDirectory()) scan(full, needle, hits, budget);
    else if (stat.isFile() && stat.size < 64 << 20) {
      try { if (readFileSync(full).includes(needle)) hits.push(full); } catch {}
    }
  }
}
const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://agent.invalid');
  const send = (status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
  try {
    if (url.pathname === '/anthropic') {
      const message = await new Anthropic({ maxRetries: 0 }).messages.create({
        model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'from the sandbox' }],
      });
      return send(200, { text: message.content[0].text });
    }
    if (url.pathname === '/openai') {
      const completion = await new OpenAI({ maxRetries: 0 }).chat.completions.create({
        model: 'gpt-4.1-mini', messages: [{ role: 'user', content: 'openai from the sandbox' }],
      });
      return send(200, { text: completion.choices[0].message.content });
    }
    if (url.pathname === '/as') {
      const answer = await fetch(process.env.ENCLAVE_GATEWAY_URL + '/anthropic/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': url.searchParams.get('token'), 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
      });
      return send(200, { status: answer.status, body: await answer.text() });
    }
    if (url.pathname === '/scan') {
      const needle = url.searchParams.get('needle');
      const hits = [];
      scan('/', needle, hits, { files: 20000 });
      for (const file of ['/proc/self/environ', '/proc/self/cmdline', '/proc/1/environ', '/proc/1/cmdline']) {
        try { if (readFileSync(file).includes(needle)) hits.push(file); } catch {}
      }
      if (JSON.stringify(process.env).includes(needle)) hits.push('process.env');
      const keys = ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'XAI_API_KEY'];
      return send(200, {
        hits,
        gateway: process.env.ENCLAVE_GATEWAY_URL,
        keysAreTheAgentToken: keys.every((name) => process.env[name] === process.env.ENCLAVE_AGENT_TOKEN),
      });
    }
    send(200, { agent: 'sdk' });
  } catch (error) {
    send(502, { error: String(error && error.message) });
  }
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

const bwrap = hasTool('bwrap');
let fx: GatewayFixture;
let driver: RuntimeDriver;
let runtime: Pick<Runtime, 'instancesDir'>;
let dataDir: string;
let templateDir: string;
let agent: GatewayAgent;
let neighbour: GatewayAgent;

before(async () => {
  if (!bwrap) return;
  fx = await startGatewayFixture({ keys: { anthropic: [ANTHROPIC_CANARY], openai: [OPENAI_CANARY] } });
  dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-gateway-sandbox-'));
  await chmod(dataDir, 0o711);
  const instancesDir = path.join(dataDir, 'instances');
  await mkdir(instancesDir, { mode: 0o711 });
  templateDir = path.join(dataDir, 'template');
  await mkdir(templateDir, { mode: 0o755 });
  await writeFile(path.join(templateDir, 'sdk-agent.mjs'), SDK_AGENT, { mode: 0o644 });
  runtime = { instancesDir };
  const logger = linesLogger([]);
  driver = createBwrapDriver({
    instancesDir,
    egress: createEgressProxy({ sql: fx.db.app, logger, allow: [] }),
    gateway: fx.gateway,
    logger,
  });
  const tenant = await fx.tenant();
  agent = await fx.agent(tenant, { anthropic: ANTHROPIC_CANARY, openai: OPENAI_CANARY });
  neighbour = await fx.agent(tenant, { anthropic: ANTHROPIC_CANARY });
  await driver.start({
    agentId: agent.agentId,
    tenantId: tenant,
    command: ['node', 'sdk-agent.mjs'],
    templateDir,
    port: 8080,
    limits: SMALL_LIMITS,
    egress: { tenantId: tenant, agentId: agent.agentId, allowlist: undefined },
    modelGateway: true,
    env: {},
    secrets: new Map([['ENCLAVE_AGENT_TOKEN', Buffer.from(agent.token)]]),
    supportKey: undefined,
  });
});

after(async () => {
  if (!bwrap) return;
  await driver.stopAll();
  await fx.close();
  await rm(dataDir, { recursive: true, force: true });
});

async function fromAgent(pathAndQuery: string): Promise<Record<string, unknown>> {
  const answer = await ingressRequest(runtime as Runtime, agent.agentId, { path: pathAndQuery });
  assert.equal(answer.status, 200, answer.body);
  return JSON.parse(answer.body) as Record<string, unknown>;
}

test('AGT-7: inside its sandbox, an unmodified agent using the Anthropic and OpenAI SDKs gets answers, and the providers get the tenant’s keys', async (t) => {
  if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
  assert.deepEqual(await fromAgent('/anthropic'), { text: 'echo: from the sandbox' });
  assert.equal(fx.fakes.anthropic.calls.at(-1)?.key, ANTHROPIC_CANARY);
  assert.deepEqual(await fromAgent('/openai'), { text: 'echo: openai from the sandbox' });
  assert.equal(fx.fakes.openai.calls.at(-1)?.key, OPENAI_CANARY);
});

test('AGT-7: the key is nowhere the agent can look: not its environment, its process, nor any file it can read; its SDK key variables hold its own token', async (t) => {
  if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
  const found = await fromAgent('/scan?needle=CANARY');
  assert.deepEqual(found.hits, []);
  assert.match(String(found.gateway), /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(found.keysAreTheAgentToken, true);
  // From the host too: every process of the sandbox, and the instance's directory.
  for (const pid of await sandboxProcesses(dataDir)) {
    const environ = await readFile(`/proc/${pid}/environ`).catch(() => Buffer.alloc(0));
    assert.ok(!environ.includes('CANARY'), `process ${pid} holds the key in its environment`);
  }
  const files = await readdir(path.join(runtime.instancesDir, agent.agentId), { recursive: true });
  for (const name of files) {
    const bytes = await readFile(path.join(runtime.instancesDir, agent.agentId, name)).catch(() =>
      Buffer.alloc(0),
    );
    assert.ok(!bytes.includes('CANARY'), `${name} holds the key`);
  }
});

test('AGT-7: from inside the sandbox, another agent’s token on this instance’s gateway is refused, and no call is made', async (t) => {
  if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
  const calls = fx.fakes.anthropic.calls.length;
  const answer = await fromAgent(`/as?token=${neighbour.token}`);
  assert.equal(answer.status, 401);
  assert.match(String(answer.body), /agent_token_invalid/);
  assert.equal(fx.fakes.anthropic.calls.length, calls);
});
