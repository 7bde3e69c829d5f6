import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, type Env } from '../config.ts';
import { loadSmtpUrl } from './smtp-url.ts';

// The SMTP URL may carry the SMTP password: it is read from ENCLAVE_SMTP_URL
// or ENCLAVE_SMTP_URL_FILE, required in production, and no error echoes it.

const PASSWORD = 'hunter2-secret';
const development = { env: 'development' } as const;
const production = { env: 'production' } as const;

async function smtpError(
  config: typeof development | typeof production,
  env: Env,
  variable: string,
): Promise<ConfigError> {
  let caught: unknown;
  try {
    await loadSmtpUrl(config, env);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError for ${JSON.stringify(env)}`);
  assert.equal(caught.variable, variable);
  assert.ok(caught.message.startsWith(`${variable}:`), `got "${caught.message}"`);
  assert.ok(!caught.message.includes(PASSWORD), `message leaks the password: ${caught.message}`);
  assert.ok(!String(caught.stack).includes(PASSWORD), 'stack leaks the password');
  return caught;
}

const BAD_URLS = [
  `smtp://mailer:${PASSWORD}@mail.example:notaport`,
  `${PASSWORD}`,
  `${PASSWORD}:mail.example`,
  `https://mailer:${PASSWORD}@mail.example`,
  `smtp://mailer:${PASSWORD}@`,
];

describe('loadSmtpUrl', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'enclave-smtp-url-test-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('ENCLAVE_SMTP_URL is required in production, must be smtp(s)://host, and its errors never contain the password', async () => {
    const required = await smtpError(production, {}, 'ENCLAVE_SMTP_URL');
    assert.match(required.message, /ENCLAVE_SMTP_URL_FILE/);
    assert.equal(await loadSmtpUrl(development, {}), undefined);
    const smtps = `smtps://mailer:${PASSWORD}@mail.example:465`;
    assert.equal(await loadSmtpUrl(production, { ENCLAVE_SMTP_URL: ` ${smtps} ` }), smtps);
    for (const bad of BAD_URLS) await smtpError(development, { ENCLAVE_SMTP_URL: bad }, 'ENCLAVE_SMTP_URL');
  });

  test('ENCLAVE_SMTP_URL_FILE names a file holding the URL, checked the same way without echoing it', async () => {
    const file = path.join(dir, 'smtp-url');
    const smtp = `smtp://mailer:${PASSWORD}@mail.example:587`;
    await writeFile(file, `${smtp}\n`, { mode: 0o600 });
    assert.equal(await loadSmtpUrl(production, { ENCLAVE_SMTP_URL_FILE: file }), smtp);
    for (const [index, bad] of BAD_URLS.entries()) {
      const badFile = path.join(dir, `bad-${index}`);
      await writeFile(badFile, `${bad}\n`);
      await smtpError(development, { ENCLAVE_SMTP_URL_FILE: badFile }, 'ENCLAVE_SMTP_URL_FILE');
    }
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '\n');
    await smtpError(production, { ENCLAVE_SMTP_URL_FILE: empty }, 'ENCLAVE_SMTP_URL_FILE');
    const missing = path.join(dir, 'no-such-file');
    const unreadable = await smtpError(
      production,
      { ENCLAVE_SMTP_URL_FILE: missing },
      'ENCLAVE_SMTP_URL_FILE',
    );
    assert.ok(unreadable.message.includes(missing), 'the error names the file');
  });

  test('setting both ENCLAVE_SMTP_URL and ENCLAVE_SMTP_URL_FILE is an error', async () => {
    const file = path.join(dir, 'both');
    await writeFile(file, 'smtp://mail.example:587\n');
    await smtpError(
      development,
      { ENCLAVE_SMTP_URL: `smtp://mailer:${PASSWORD}@mail.example`, ENCLAVE_SMTP_URL_FILE: file },
      'ENCLAVE_SMTP_URL',
    );
  });
});
