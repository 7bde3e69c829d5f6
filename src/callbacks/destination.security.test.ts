// Attack: a relay caller or agent owner registers a callback URL that points, literally or through a name they control, at the host's loopback, a private network, link-local or cloud metadata address, so that the platform POSTs there from inside.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LookupFn, ResolvedAddress } from '../agents/egress/resolver.ts';
import { isProblemCode, PROBLEM_TYPES } from '../http/problem-types.ts';
import {
  type CallbackRules,
  CallbackUrlError,
  type CallbackUrlErrorCode,
  checkCallbackUrl,
  createCallbackRules,
} from './destination.ts';

/** A fake DNS answer at the resolver boundary: each name's addresses, as a DNS server could answer them. */
function fakeDns(answers: Readonly<Record<string, readonly string[]>>): LookupFn {
  return async (host) => {
    const found = answers[host];
    if (found === undefined) throw Object.assign(new Error('queryA ENOTFOUND'), { code: 'ENOTFOUND' });
    return found.map((address): ResolvedAddress => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
}

/** One name per forbidden class and form: IPv4, IPv6, IPv4-mapped and NAT64 IPv6. */
const FORBIDDEN: Readonly<Record<string, string>> = {
  'loopback.test': '127.0.0.1',
  'loopback-other.test': '127.3.2.1',
  'loopback6.test': '::1',
  'private10.test': '10.1.2.3',
  'private172.test': '172.16.5.4',
  'private192.test': '192.168.1.1',
  'private6.test': 'fd12:3456::1',
  'link-local.test': '169.254.10.20',
  'link-local6.test': 'fe80::1',
  'cgnat.test': '100.64.0.1',
  'multicast.test': '224.0.0.251',
  'multicast6.test': 'ff02::1',
  'unspecified.test': '0.0.0.0',
  'unspecified6.test': '::',
  'metadata.test': '169.254.169.254',
  'metadata-alibaba.test': '100.100.100.200',
  'metadata6.test': 'fd00:ec2::254',
  'mapped-loopback.test': '::ffff:127.0.0.1',
  'mapped-metadata.test': '::ffff:a9fe:a9fe',
  'mapped-private.test': '::ffff:10.0.0.1',
  'nat64-private.test': '64:ff9b::a00:1',
};

const PUBLIC = '93.184.216.34';

const dns = fakeDns({
  ...Object.fromEntries(Object.entries(FORBIDDEN).map(([name, address]) => [name, [address]])),
  'public.test': [PUBLIC, '2606:2800:220:1:248:1893:25c8:1946'],
  'mixed.test': [PUBLIC, '10.0.0.7'],
  'nothing.test': [],
});

const development = createCallbackRules({ env: 'development', callbackAllow: [] }, dns);
const production = createCallbackRules({ env: 'production', callbackAllow: [] }, dns);

async function refused(
  text: string,
  rules: CallbackRules,
  code: CallbackUrlErrorCode,
  field = 'url',
): Promise<void> {
  await assert.rejects(checkCallbackUrl(text, rules, field), (error: unknown) => {
    assert.ok(error instanceof CallbackUrlError, `${text}: ${String(error)}`);
    assert.equal(error.code, code, text);
    assert.equal(error.field, field, text);
    // The central error handler answers it as 400 problem+json naming the field, never a 500.
    assert.ok(isProblemCode(error.code), error.code);
    assert.equal(PROBLEM_TYPES[error.code].status, 400);
    return true;
  });
}

test('RLY-12: a name resolving to each forbidden class (loopback, private, link-local, CGNAT, multicast, unspecified, cloud metadata; IPv4, IPv6, IPv4-mapped) is refused at registration', async () => {
  for (const name of Object.keys(FORBIDDEN)) {
    await refused(`https://${name}/hook`, production, 'callback_destination_forbidden');
  }
  // One forbidden address among public ones is enough: the attacker's DNS may answer both.
  await refused('https://mixed.test/hook', production, 'callback_destination_forbidden');
  // localhost never reaches DNS (resolver.ts answers it with loopback), and is refused like it.
  const real = createCallbackRules({ env: 'production', callbackAllow: [] });
  await refused('https://localhost/hook', real, 'callback_destination_forbidden');
  await refused('https://a.localhost./hook', real, 'callback_destination_forbidden');
});

test('RLY-12: literal addresses of each forbidden class, in every spelling the URL parser reads, are refused without a lookup', async () => {
  const neverAsked: LookupFn = async (host) => assert.fail(`looked up ${host}`);
  const rules = createCallbackRules({ env: 'development', callbackAllow: [] }, neverAsked);
  for (const host of [
    ...Object.values(FORBIDDEN).map((address) => (address.includes(':') ? `[${address}]` : address)),
    '2130706433', // 127.0.0.1 as one integer
    '0x7f.1', // hex and short form
    '0177.0.0.1', // octal
    '127.1',
    '0',
    '[::ffff:169.254.169.254]',
    '[0:0:0:0:0:ffff:7f00:1]',
    '[2002:a9fe:a9fe::1]', // 6to4 around the metadata address
  ]) {
    await refused(`http://${host}:8080/hook`, rules, 'callback_destination_forbidden');
  }
  assert.equal((await checkCallbackUrl(`https://${PUBLIC}/hook`, rules)).hostname, PUBLIC);
});

test('RLY-12: not a URL, over 2,000 characters, credentials in it and a scheme other than https in production are refused with their code, naming the field (a 400 problem type)', async () => {
  for (const text of ['', 'not a url', '/relative/path', 'https://', 'http://[::1/']) {
    await refused(text, development, 'callback_url_invalid', 'callback_url');
  }
  const long = `https://public.test/${'a'.repeat(2001 - 'https://public.test/'.length)}`;
  assert.equal(long.length, 2001);
  await refused(long, development, 'callback_url_too_long');
  await refused(`https://public.test/${'a'.repeat(10_000_000)}`, development, 'callback_url_too_long');
  assert.ok(await checkCallbackUrl(long.slice(0, 2000), development));
  for (const text of [
    'https://user:pass@public.test/',
    'https://user@public.test/',
    'https://:pass@public.test/',
  ]) {
    await refused(text, development, 'callback_url_credentials');
  }
  await refused('http://public.test/hook', production, 'callback_url_scheme');
  for (const text of [
    'ftp://public.test/',
    'file:///etc/passwd',
    'javascript:alert(1)',
    'gopher://public.test/',
  ]) {
    await refused(text, development, 'callback_url_scheme');
    await refused(text, production, 'callback_url_scheme');
  }
  // Development allows http; https passes in both.
  assert.equal((await checkCallbackUrl('http://public.test:8080/hook', development)).port, 8080);
  assert.equal((await checkCallbackUrl('https://Public.TEST./hook?a=1', production)).hostname, 'public.test');
  await refused('https://nothing.test/hook', production, 'callback_url_unresolvable');
  await refused('https://unknown.test/hook', production, 'callback_url_unresolvable');
});

test('RLY-12: a range the operator allowed (ENCLAVE_CALLBACK_ALLOW) passes; loopback and metadata only when named alone', async () => {
  const allowing = createCallbackRules(
    { env: 'production', callbackAllow: ['10.0.0.0/8', '127.0.0.1/32', '0.0.0.0/0'] },
    dns,
  );
  assert.ok(await checkCallbackUrl('https://private10.test/hook', allowing));
  assert.ok(await checkCallbackUrl('https://mapped-private.test/hook', allowing));
  assert.ok(await checkCallbackUrl('https://loopback.test/hook', allowing));
  assert.ok(await checkCallbackUrl('https://cgnat.test/hook', allowing)); // inside 0.0.0.0/0
  // A wide range does not re-open another loopback address or the metadata address (egress's rule, reused).
  await refused('https://loopback-other.test/hook', allowing, 'callback_destination_forbidden');
  await refused('https://metadata.test/hook', allowing, 'callback_destination_forbidden');
  await refused('https://private6.test/hook', allowing, 'callback_destination_forbidden');
});

test('RLY-12: the refusal names the field and the rule, never the address the name resolved to', async () => {
  await assert.rejects(checkCallbackUrl('https://private10.test/hook', production), (error: unknown) => {
    assert.ok(error instanceof CallbackUrlError);
    assert.doesNotMatch(error.message, /10\.1\.2\.3/);
    return true;
  });
});
