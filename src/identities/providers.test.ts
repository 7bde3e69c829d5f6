import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ConfigError } from '../config.ts';
import { loadIdentityProviders } from './providers.ts';

// Provider settings are read once at start; a mistake stops start-up with a
// line naming the variable, and never prints a client secret.

let dir: string;
let secretFile: string;
const SECRET = 'provider-client-secret-value';

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-providers-'));
  secretFile = path.join(dir, 'secret');
  await writeFile(secretFile, `${SECRET}\n`);
});

after(() => rm(dir, { recursive: true, force: true }));

async function providersFile(content: unknown): Promise<Record<string, string>> {
  const file = path.join(dir, `providers-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return { ENCLAVE_OIDC_PROVIDERS_FILE: file };
}

const corp = () => ({
  name: 'corp',
  issuer: 'https://id.example.com',
  client_id: 'enclave',
  client_secret_file: secretFile,
});

async function refusal(env: Record<string, string>, production = false): Promise<ConfigError> {
  try {
    await loadIdentityProviders({ env: production ? 'production' : 'development' }, env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.ok(!error.message.includes(SECRET));
    return error;
  }
  assert.fail('expected a configuration error');
}

test('ACC-9: OIDC providers come from a JSON file, their secrets from files; GitHub from its client id and secret file', async () => {
  const env = {
    ...(await providersFile([{ ...corp(), label: 'Corp SSO', scopes: ['openid', 'email'] }])),
    ENCLAVE_GITHUB_CLIENT_ID: 'Iv1.abc',
    ENCLAVE_GITHUB_CLIENT_SECRET_FILE: secretFile,
  };
  const providers = await loadIdentityProviders({ env: 'production' }, env);
  assert.deepEqual([...providers.keys()], ['corp', 'github']);
  const found = providers.get('corp');
  assert.equal(found?.kind, 'oidc');
  assert.equal(found?.clientSecret, SECRET);
  assert.deepEqual(found?.kind === 'oidc' ? found.scopes : [], ['openid', 'email']);
  const github = providers.get('github');
  assert.equal(github?.kind === 'github' ? github.apiUrl : '', 'https://api.github.com');
  assert.equal((await loadIdentityProviders({ env: 'production' }, {})).size, 0);
});

test('ACC-9: a bad provider setting stops start-up with a line naming the variable, never the secret', async () => {
  const cases: [Record<string, string>, RegExp, boolean?][] = [
    [await providersFile('not json'), /ENCLAVE_OIDC_PROVIDERS_FILE: cannot read/],
    [await providersFile({ name: 'corp' }), /JSON array/],
    [await providersFile([{ ...corp(), name: 'Bad Name' }]), /needs a name/],
    [await providersFile([{ ...corp(), name: 'github' }]), /not "github"/],
    [await providersFile([corp(), corp()]), /names "corp" twice/],
    [await providersFile([{ ...corp(), extra: 1 }]), /unknown field "extra"/],
    [await providersFile([{ ...corp(), scopes: ['email'] }]), /including "openid"/],
    [await providersFile([{ ...corp(), client_secret_file: undefined }]), /client_secret_file/],
    [await providersFile([{ ...corp(), client_secret_file: path.join(dir, 'missing') }]), /ENOENT/],
    [await providersFile([{ ...corp(), issuer: 'http://id.example.com' }]), /needs an https URL/, true],
    [{ ENCLAVE_GITHUB_CLIENT_ID: 'Iv1.abc' }, /set both/],
    [
      {
        ENCLAVE_GITHUB_CLIENT_ID: 'Iv1.abc',
        ENCLAVE_GITHUB_CLIENT_SECRET_FILE: secretFile,
        ENCLAVE_GITHUB_API_URL: 'http://x',
      },
      /ENCLAVE_GITHUB_API_URL/,
      true,
    ],
  ];
  for (const [env, message, production] of cases) {
    assert.match((await refusal(env, production)).message, message);
  }
  // Plain http is for development only.
  const local = await providersFile([{ ...corp(), issuer: 'http://127.0.0.1:9000' }]);
  assert.equal((await loadIdentityProviders({ env: 'development' }, local)).size, 1);
});
