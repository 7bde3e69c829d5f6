import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newSubdomain, subdomainOf } from './subdomain.ts';

// AGT-3: instance subdomains are the template's prefix and 8 random
// [a-z0-9]; a Host header names one only in the exact form
// `<10 × [a-z0-9]>.<agents domain>[:port]`.

const DOMAIN = 'agents.localhost';

describe('newSubdomain', () => {
  test('AGT-3: a subdomain is the 2-character prefix and 8 characters of [a-z0-9]', () => {
    for (const prefix of ['ec', 'll', 'z9', '00']) {
      const subdomain = newSubdomain(prefix);
      assert.match(subdomain, /^[a-z0-9]{10}$/);
      assert.equal(subdomain.slice(0, 2), prefix);
    }
  });

  test('AGT-3: 10 000 subdomains have no duplicates and use the whole alphabet', () => {
    const made = new Set<string>();
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const subdomain = newSubdomain('ec');
      made.add(subdomain);
      for (const char of subdomain.slice(2)) seen.add(char);
    }
    assert.equal(made.size, 10_000);
    assert.deepEqual([...seen].sort().join(''), '0123456789abcdefghijklmnopqrstuvwxyz');
  });

  test('AGT-3: a prefix that is not exactly 2 characters of [a-z0-9] is refused', () => {
    for (const prefix of ['', 'e', 'ecc', 'EC', 'e-', 'é1']) {
      assert.throws(() => newSubdomain(prefix), TypeError, prefix);
    }
  });
});

describe('subdomainOf', () => {
  test('AGT-3: the exact form names a subdomain, with or without a port, in any case', () => {
    assert.equal(subdomainOf('ab12345678.agents.localhost', DOMAIN), 'ab12345678');
    assert.equal(subdomainOf('ab12345678.agents.localhost:3000', DOMAIN), 'ab12345678');
    assert.equal(subdomainOf('AB12345678.Agents.LOCALHOST:65535', DOMAIN), 'ab12345678');
    assert.equal(subdomainOf('ab12345678.agents.localhost:0', DOMAIN), 'ab12345678');
  });

  test('AGT-3: a Host outside the agents domain is not the ingress’s', () => {
    for (const host of [
      'localhost:3000',
      'enclave.example.com',
      'ab12345678.agents.localhost.evil.test',
      'ab12345678.xagents.localhost',
      'agents.localhost.test',
      '127.0.0.1:3000',
      '[::1]:3000',
      '::1',
      '2001:db8::1',
      '',
      'ab12345678.agénts.localhost',
    ]) {
      assert.equal(subdomainOf(host, DOMAIN), undefined, host);
    }
  });

  test('AGT-3: a malformed Host under the agents domain is malformed, not somebody else’s', () => {
    for (const host of [
      'agents.localhost',
      'agents.localhost:3000',
      '.agents.localhost',
      'a..agents.localhost',
      'ab12345678..agents.localhost',
      'x.agents.localhost',
      'ab1234567.agents.localhost',
      'ab123456789.agents.localhost',
      'a.b12345678.agents.localhost',
      'ab-2345678.agents.localhost',
      'ab_2345678.agents.localhost',
      'ab1234567é.agents.localhost',
      'ab1234567\u212a.agents.localhost', // KELVIN SIGN: lowercases to an ASCII k
      `${'a'.repeat(5000)}.agents.localhost`,
      'ab12345678.agents.localhost.',
      'ab12345678.agents.localhost:',
      'ab12345678.agents.localhost:65536',
      'ab12345678.agents.localhost:123456',
      'ab12345678.agents.localhost:-1',
      'ab12345678.agents.localhost:80a',
      'ab12345678.agents.localhost:80:80',
      'ab12345678.agents.localhost: 80',
      'user@ab12345678.agents.localhost',
    ]) {
      assert.equal(subdomainOf(host, DOMAIN), 'malformed', host);
    }
  });
});
