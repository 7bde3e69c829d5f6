import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mintAgentIdentity } from '../../src/agents/identity.ts';
import {
  BUILT_IN_TEMPLATES_DIR,
  loadTemplateCatalog,
  type TemplateCatalog,
} from '../../src/agents/templates.ts';
import { withTenant } from '../../src/db/tenant.ts';
import {
  createGateway,
  type Gateway,
  type GatewayDeps,
  type GatewayListener,
} from '../../src/gateway/gateway.ts';
import type { ModelProvider } from '../../src/gateway/provider-names.ts';
import { DEFAULT_MODELS } from '../../src/gateway/providers.ts';
import { createLogger } from '../../src/logger.ts';
import type { Vault } from '../../src/vault/service.ts';
import { lineSink, testVault } from './app.ts';
import { createTenant } from './audit.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { type FakeProviders, startFakeProviders } from './fake-providers.ts';

// The model gateway as a platform worker runs it, against a test database and
// the fake providers (test/helpers/fake-providers.ts, the one mock), with
// agents whose instances are "running". Each agent's gateway socket is bridged
// to a loopback port exactly as its supervisor bridges it inside a sandbox, so
// SDKs are pointed at `http://127.0.0.1:<port>/<provider>`.

/** A template whose agents may hold a key for every provider (only the gateway ever reads them). */
export const GATEWAY_TEMPLATE = 'gateway-test';
const PROVIDER_CREDENTIALS: Readonly<Record<ModelProvider, string>> = {
  anthropic: 'anthropic_api_key',
  openai: 'openai_api_key',
  google: 'google_api_key',
  xai: 'xai_api_key',
};

export interface GatewayAgent {
  readonly tenantId: string;
  readonly agentId: string;
  /** The agent's identity token, as its instance gets it in ENCLAVE_AGENT_TOKEN. */
  readonly token: string;
  /** The loopback base URL of its gateway (ENCLAVE_GATEWAY_URL inside a sandbox). */
  readonly url: string;
  readonly listener: GatewayListener;
}

export interface GatewayFixture {
  readonly db: TestDatabase;
  readonly fakes: FakeProviders;
  readonly gateway: Gateway;
  readonly vault: Vault;
  readonly templates: TemplateCatalog;
  readonly logLines: () => string[];
  /** Every lent key, as it was handed back (zeroed). */
  readonly returnedKeys: Buffer[];
  /** A new tenant. */
  tenant(): Promise<string>;
  /** An agent of `template` in `tenantId` with these provider keys, its instance running and its gateway listening. */
  agent(
    tenantId: string,
    keys: Partial<Record<ModelProvider, string>>,
    template?: string,
  ): Promise<GatewayAgent>;
  /** Replaces one provider key, as PUT …/credentials/:name does. */
  setKey(agent: GatewayAgent, provider: ModelProvider, value: string): Promise<void>;
  close(): Promise<void>;
}

export async function startGatewayFixture(
  options: { keys?: Partial<Record<ModelProvider, readonly string[]>>; gateway?: Partial<GatewayDeps> } = {},
): Promise<GatewayFixture> {
  const db = await createTestDatabase();
  const fakes = await startFakeProviders(options.keys === undefined ? {} : { keys: options.keys });
  const dir = mkdtempSync(path.join(tmpdir(), 'enclave-gateway-'));
  const templateDir = path.join(dir, 'templates');
  const hostDir = path.join(dir, 'host');
  mkdirSync(templateDir);
  mkdirSync(hostDir, { mode: 0o700 });
  writeFileSync(
    path.join(templateDir, `${GATEWAY_TEMPLATE}.json`),
    JSON.stringify({
      id: GATEWAY_TEMPLATE,
      name: 'Gateway test',
      description: 'An agent whose model keys only the gateway reads.',
      command: ['node', 'gateway-test/agent.mjs'],
      port: 8080,
      prefix: 'gt',
      model_gateway: true,
      credentials: Object.entries(PROVIDER_CREDENTIALS).map(([provider, name]) => ({
        name,
        description: `${provider} key`,
        required: false,
        provider,
      })),
      limits: { memory_mb: 128, processes: 32, open_files: 256, volume_mb: 64 },
    }),
  );
  const templates = await loadTemplateCatalog([BUILT_IN_TEMPLATES_DIR, templateDir]);
  const vault = await testVault(db);
  const lines: string[] = [];
  const logger = createLogger('debug', lineSink(lines));
  const returnedKeys: Buffer[] = [];
  const gateway = createGateway({
    sql: db.app,
    vault,
    templates,
    logger,
    upstreams: {
      anthropic: fakes.anthropic.url,
      openai: fakes.openai.url,
      google: fakes.google.url,
      xai: fakes.xai.url,
    },
    autoModels: DEFAULT_MODELS,
    timeoutMs: 10_000,
    onKeyReturned: (key) => returnedKeys.push(key),
    ...options.gateway,
  });
  const closers: (() => Promise<void>)[] = [];

  async function agent(
    tenantId: string,
    keys: Partial<Record<ModelProvider, string>>,
    template = GATEWAY_TEMPLATE,
  ): Promise<GatewayAgent> {
    const handle = `gw-${randomBytes(6).toString('hex')}`;
    const { agentId, token } = await withTenant(db.app, tenantId, async (tx) => {
      const [row] = await tx<{ id: string }[]>`
        insert into agents (tenant_id, handle, name, template_id)
        values (${tenantId}::uuid, ${handle}, 'gateway test', ${template}) returning id`;
      assert.ok(row !== undefined);
      await tx`
        insert into agent_instances (agent_id, tenant_id, subdomain, desired_state, state)
        values (${row.id}::uuid, ${tenantId}::uuid, ${`gt${randomBytes(4).toString('hex')}`}, 'running', 'running')`;
      const minted = await mintAgentIdentity(tx, row.id);
      assert.ok(minted !== undefined);
      for (const [provider, value] of Object.entries(keys)) {
        const name = credentialName(templates, template, provider as ModelProvider);
        await vault.putCredential(tx, { tenantId, agentId: row.id, name }, value);
      }
      return { agentId: row.id, token: minted };
    });
    const socketPath = path.join(hostDir, `gw-${agentId.slice(0, 8)}.sock`);
    const listener = await gateway.listen(socketPath, { tenantId, agentId });
    const bridge = await bridgeToSocket(socketPath);
    closers.push(async () => {
      await bridge.close();
      await listener.close();
    });
    return { tenantId, agentId, token, url: `http://127.0.0.1:${bridge.port}`, listener };
  }

  return {
    db,
    fakes,
    gateway,
    vault,
    templates,
    logLines: () => [...lines],
    returnedKeys,
    tenant: () => createTenant(db, `gateway tenant ${randomBytes(3).toString('hex')}`),
    agent,
    async setKey(target, provider, value) {
      await withTenant(db.app, target.tenantId, async (tx) => {
        const [row] = await tx<{ template_id: string }[]>`
          select template_id from agents where id = ${target.agentId}::uuid`;
        assert.ok(row !== undefined);
        const name = credentialName(templates, row.template_id, provider);
        await vault.putCredential(tx, { tenantId: target.tenantId, agentId: target.agentId, name }, value);
      });
    },
    async close() {
      for (const close of closers.reverse()) await close();
      gateway.close();
      await fakes.close();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function credentialName(templates: TemplateCatalog, template: string, provider: ModelProvider): string {
  const name = templates.get(template)?.credentials.find((c) => c.provider === provider)?.name;
  assert.ok(name !== undefined, `template ${template} takes no ${provider} key`);
  return name;
}

/** What an instance's supervisor does: a loopback port whose connections go to the gateway socket. */
async function bridgeToSocket(socketPath: string): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(socketPath);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
