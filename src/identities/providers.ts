import { readFile } from 'node:fs/promises';
import { type Config, ConfigError, type Env } from '../config.ts';
import { readSecretFile } from '../operator-secrets/secrets.ts';

// The sign-in providers the operator configured (ACC-9), read once at start:
//   ENCLAVE_OIDC_PROVIDERS_FILE   a JSON array of OpenID Connect providers:
//     [{ "name": "corp", "label": "Corp SSO", "issuer": "https://id.example.com",
//        "client_id": "…", "client_secret_file": "/run/secrets/corp", "scopes": ["openid", "email", "profile"] }]
//   ENCLAVE_GITHUB_CLIENT_ID + ENCLAVE_GITHUB_CLIENT_SECRET_FILE   a GitHub OAuth app
//   ENCLAVE_GITHUB_URL, ENCLAVE_GITHUB_API_URL   GitHub Enterprise Server (default github.com)
// Client secrets come only from files, and are not Config fields: they go to
// the provider client alone. Plain http is accepted only outside production
// (tests and local providers). Errors name the variable and the file, never a secret.

export const OIDC_PROVIDERS_VARIABLE = 'ENCLAVE_OIDC_PROVIDERS_FILE';

/** A provider's name: in URLs (/auth/:name/…) and in the identities table. */
const PROVIDER_NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/;
const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]{1,100}$/;

interface ProviderBase {
  readonly name: string;
  /** Shown on buttons: "Sign in with <label>". */
  readonly label: string;
  readonly clientId: string;
  readonly clientSecret: string;
}

export interface OidcProvider extends ProviderBase {
  readonly kind: 'oidc';
  readonly issuer: string;
  readonly scopes: readonly string[];
}

export interface GithubProvider extends ProviderBase {
  readonly kind: 'github';
  /** github.com, or a GitHub Enterprise Server: the authorize and token endpoints, and the identities' issuer. */
  readonly webUrl: string;
  /** Its REST API (/user, /user/emails). */
  readonly apiUrl: string;
}

export type IdentityProvider = OidcProvider | GithubProvider;

/** Every configured provider by name, in the order the operator listed them (GitHub last). */
export type IdentityProviders = ReadonlyMap<string, IdentityProvider>;

function readVariable(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** An http(s) origin-and-path URL with no credentials, query or fragment; http only outside production. */
function checkUrl(variable: string, raw: unknown, production: boolean): string {
  let url: URL;
  try {
    url = new URL(String(raw));
  } catch {
    throw new ConfigError(variable, `has a URL that is not valid (got "${String(raw).slice(0, 200)}")`);
  }
  const secureEnough = url.protocol === 'https:' || (!production && url.protocol === 'http:');
  if (!secureEnough || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new ConfigError(
      variable,
      `needs an https URL (http only outside production) with no credentials, query or fragment (got "${url.href}")`,
    );
  }
  return url.href.replace(/\/+$/, '');
}

async function clientSecret(variable: string, file: unknown, what: string): Promise<string> {
  if (typeof file !== 'string' || file.trim() === '') {
    throw new ConfigError(
      variable,
      `${what} needs client_secret_file, the path of a file holding its secret`,
    );
  }
  const secret = await readSecretFile(variable, file.trim());
  if (secret === '') throw new ConfigError(variable, `${file} is empty`);
  return secret;
}

// The operator controls the file; its content is checked field by field so a
// mistake stops start-up with a line naming the provider and the field.
async function oidcProvider(entry: unknown, index: number, production: boolean): Promise<OidcProvider> {
  const at = `provider ${index + 1}`;
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `${at} must be an object`);
  }
  const fields = entry as Record<string, unknown>;
  const known = ['name', 'label', 'issuer', 'client_id', 'client_secret_file', 'scopes'];
  const unknown = Object.keys(fields).find((key) => !known.includes(key));
  if (unknown !== undefined) {
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `${at} has an unknown field "${unknown.slice(0, 40)}"`);
  }
  const { name, label, client_id: clientId, scopes } = fields;
  if (typeof name !== 'string' || !PROVIDER_NAME.test(name) || name === 'github') {
    throw new ConfigError(
      OIDC_PROVIDERS_VARIABLE,
      `${at} needs a name of 1 to 40 characters a–z, 0–9, _ and - (not "github", which is ENCLAVE_GITHUB_CLIENT_ID's)`,
    );
  }
  if (label !== undefined && (typeof label !== 'string' || label.trim() === '' || label.length > 60)) {
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `${name}: label must be 1 to 60 characters`);
  }
  if (typeof clientId !== 'string' || clientId === '' || clientId.length > 255) {
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `${name}: client_id must be 1 to 255 characters`);
  }
  const scopeList = scopes ?? ['openid', 'email', 'profile'];
  if (
    !Array.isArray(scopeList) ||
    !scopeList.every((scope) => typeof scope === 'string' && SCOPE.test(scope)) ||
    !scopeList.includes('openid')
  ) {
    throw new ConfigError(
      OIDC_PROVIDERS_VARIABLE,
      `${name}: scopes must be a list of scope names including "openid"`,
    );
  }
  return {
    kind: 'oidc',
    name,
    label: typeof label === 'string' ? label.trim() : name,
    issuer: checkUrl(OIDC_PROVIDERS_VARIABLE, fields.issuer, production),
    clientId,
    clientSecret: await clientSecret(OIDC_PROVIDERS_VARIABLE, fields.client_secret_file, name),
    scopes: Object.freeze([...new Set(scopeList as string[])]),
  };
}

async function oidcProviders(env: Env, production: boolean): Promise<OidcProvider[]> {
  const file = readVariable(env, OIDC_PROVIDERS_VARIABLE);
  if (file === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'not valid JSON';
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `cannot read ${file} (${reason})`);
  }
  if (!Array.isArray(parsed)) {
    throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `${file} must hold a JSON array of providers`);
  }
  const providers = await Promise.all(parsed.map((entry, index) => oidcProvider(entry, index, production)));
  const names = providers.map((provider) => provider.name);
  const twice = names.find((name, index) => names.indexOf(name) !== index);
  if (twice !== undefined) throw new ConfigError(OIDC_PROVIDERS_VARIABLE, `names "${twice}" twice`);
  return providers;
}

async function githubProvider(env: Env, production: boolean): Promise<GithubProvider | undefined> {
  const clientId = readVariable(env, 'ENCLAVE_GITHUB_CLIENT_ID');
  const secretFile = readVariable(env, 'ENCLAVE_GITHUB_CLIENT_SECRET_FILE');
  if (clientId === undefined && secretFile === undefined) return undefined;
  if (clientId === undefined || secretFile === undefined) {
    throw new ConfigError(
      'ENCLAVE_GITHUB_CLIENT_ID',
      'set both ENCLAVE_GITHUB_CLIENT_ID and ENCLAVE_GITHUB_CLIENT_SECRET_FILE, or neither',
    );
  }
  if (!/^[\x21-\x7e]{1,255}$/.test(clientId)) {
    throw new ConfigError('ENCLAVE_GITHUB_CLIENT_ID', 'must be 1 to 255 printable characters');
  }
  return {
    kind: 'github',
    name: 'github',
    label: 'GitHub',
    clientId,
    clientSecret: await clientSecret('ENCLAVE_GITHUB_CLIENT_SECRET_FILE', secretFile, 'GitHub'),
    webUrl: checkUrl(
      'ENCLAVE_GITHUB_URL',
      readVariable(env, 'ENCLAVE_GITHUB_URL') ?? 'https://github.com',
      production,
    ),
    apiUrl: checkUrl(
      'ENCLAVE_GITHUB_API_URL',
      readVariable(env, 'ENCLAVE_GITHUB_API_URL') ?? 'https://api.github.com',
      production,
    ),
  };
}

/** The configured providers; none when nothing is set. A bad setting stops start-up (ConfigError). */
export async function loadIdentityProviders(
  config: Pick<Config, 'env'>,
  env: Env,
): Promise<IdentityProviders> {
  const production = config.env === 'production';
  const github = await githubProvider(env, production);
  const all: IdentityProvider[] = [...(await oidcProviders(env, production)), ...(github ? [github] : [])];
  return new Map(all.map((provider) => [provider.name, Object.freeze(provider)]));
}
