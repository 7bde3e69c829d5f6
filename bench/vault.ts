import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { credentialAad, dataKeyAad, open, seal, unwrapKey, wrapKey } from '../src/vault/envelope.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// The vault's cost, as ratios against baselines run in the same process:
// (1) a credential sealed and opened the way the vault does it — unwrap the
//     tenant data key under the master key, seal with associated data, then
//     unwrap again and open — against a bare AES-256-GCM encrypt + decrypt of
//     the same bytes under one key;
// (2) PUT /api/v1/agents/:id/credentials/:name (token lookup, tenant
//     transaction, data key, upsert, audit event) against an authenticated
//     GET /api/v1/me, through app.inject.
// Both in interleaved rounds (bench/ab.ts).

const ROUND_MS = 700;
const VALUE = Buffer.from(`sk-ant-${'x'.repeat(100)}`);

function rawRoundTrip(key: Buffer): void {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const ciphertext = Buffer.concat([cipher.update(VALUE), cipher.final()]);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAuthTag(cipher.getAuthTag());
  const plain = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  if (plain.length !== VALUE.length) throw new Error('raw round trip lost bytes');
}

export async function runVaultBench(db: TestDatabase): Promise<void> {
  const masterKey = randomBytes(32);
  const rawKey = randomBytes(32);
  const tenantId = '3f1e0c1a-8a34-4c52-9d2b-6f1e7d7c2a10';
  const wrapped = wrapKey(masterKey, randomBytes(32), dataKeyAad(tenantId, 1));
  const address = { tenantId, agentId: 'b0c1d2e3-f405-4617-8829-3a4b5c6d7e8f', name: 'anthropic_api_key' };

  await compare({
    name: 'credential envelope vs raw AES-256-GCM',
    ratio: 'throughput',
    per: { ms: ROUND_MS },
    a: {
      label: 'vault: unwrap data key, seal, unwrap, open',
      op: async () => {
        const sealKey = unwrapKey(masterKey, wrapped, dataKeyAad(tenantId, 1));
        const sealed = seal(sealKey, VALUE, credentialAad(address, 1));
        sealKey.fill(0);
        const openKey = unwrapKey(masterKey, wrapped, dataKeyAad(tenantId, 1));
        const plain = open(openKey, sealed, credentialAad(address, 1));
        openKey.fill(0);
        plain.fill(0);
      },
    },
    b: { label: 'raw AES-256-GCM encrypt + decrypt', op: async () => rawRoundTrip(rawKey) },
  });

  const testApp = await buildTestApp(db, {}, { passwordCost: 'production' });
  try {
    const account = await createAccount(db, testApp);
    const authorization = `Bearer ${account.apiToken}`;
    const created = await testApp.app.inject({
      method: 'POST',
      url: '/api/v1/agents',
      headers: { authorization },
      payload: { name: 'Bench', handle: 'bench-echo', template: 'echo' },
    });
    if (created.statusCode !== 201) throw new Error(`onboarding: ${created.statusCode} ${created.body}`);
    const url = `/api/v1/agents/${created.json<{ id: string }>().id}/credentials/echo_token`;
    let n = 0;
    await compare({
      name: 'credential PUT vs authenticated GET /api/v1/me',
      ratio: 'throughput',
      per: { ms: ROUND_MS },
      aim: { atLeast: 0.3 },
      a: {
        label: 'PUT a credential',
        op: async () => {
          n += 1;
          const response = await testApp.app.inject({
            method: 'PUT',
            url,
            headers: { authorization },
            payload: { value: `bench-credential-value-${n}` },
          });
          if (response.statusCode !== 200 && response.statusCode !== 201)
            throw new Error(`PUT: ${response.statusCode}`);
        },
      },
      b: {
        label: 'GET /api/v1/me (authenticated)',
        op: async () => {
          const response = await testApp.app.inject({
            method: 'GET',
            url: '/api/v1/me',
            headers: { authorization },
          });
          if (response.statusCode !== 200) throw new Error(`GET: ${response.statusCode}`);
        },
      },
    });
  } finally {
    await testApp.app.close();
  }
}
