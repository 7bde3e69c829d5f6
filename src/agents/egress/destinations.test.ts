import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  allowlistVerdict,
  classifyIp,
  type DestinationClass,
  destinationVerdict,
  parseAllowRanges,
  parseConnectTarget,
  parseHttpTarget,
  parseIp,
} from './destinations.ts';

// AGT-4's destination policy as tables: every class of address the proxy
// refuses, every spelling of an address that must be recognised as what it
// is, the operator's allow ranges, and the per-agent allowlist.

function classOf(text: string): DestinationClass {
  const address = parseIp(text);
  assert.ok(address !== undefined, `${text} parses`);
  return classifyIp(address);
}

describe('destination classes', () => {
  const cases: [string, DestinationClass][] = [
    ['8.8.8.8', 'public'],
    ['93.184.216.34', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['169.254.1.1', 'link-local'],
    ['169.254.169.254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'],
    ['100.64.0.1', 'shared'],
    ['100.127.255.255', 'shared'],
    ['100.128.0.1', 'public'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.255', 'benchmarking'],
    ['192.0.2.1', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['192.0.0.8', 'reserved'],
    ['2606:4700:4700::1111', 'public'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['fd00:ec2::254', 'metadata'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['3fff::1', 'documentation'],
    ['2001::1', 'reserved'],
    ['100::1', 'reserved'],
    ['fec0::1', 'private'],
    ['4000::1', 'reserved'],
    // IPv6 spellings of IPv4 addresses are what they stand for.
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:a9fe:a9fe', 'metadata'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'metadata'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['64:ff9b:1::1', 'private'],
    ['2002:7f00:1::1', 'loopback'],
    ['2002:0808:0808::1', 'public'],
    ['::127.0.0.1', 'reserved'],
  ];
  for (const [address, kind] of cases) {
    test(`AGT-4: ${address} is ${kind}`, () => assert.equal(classOf(address), kind));
  }
});

describe('address parsing', () => {
  test('AGT-4: only canonical forms parse as IP addresses (the URL parser normalises the rest first)', () => {
    for (const text of [
      '2130706433',
      '0x7f.1',
      '0177.0.0.1',
      '127.1',
      '127.0.0.01',
      '256.0.0.1',
      '1.2.3.4.5',
      'localhost',
      '1::2::3',
      '1:2:3:4:5:6:7:8:9',
      '::ffff:1.2.3',
      '',
    ]) {
      assert.equal(parseIp(text), undefined, text);
    }
    assert.deepEqual(parseIp('[::1]'), { family: 6, value: 1n });
    assert.deepEqual(parseIp('1:2:3:4:5:6:7::'), {
      family: 6,
      value: 0x0001_0002_0003_0004_0005_0006_0007_0000n,
    });
  });

  test('AGT-4: CONNECT targets are normalised like URLs, so no spelling of a refused address sneaks through', () => {
    const cases: [string, string | undefined][] = [
      ['example.com:443', 'example.com'],
      ['EXAMPLE.com.:443', 'example.com'],
      ['2130706433:80', '127.0.0.1'],
      ['0x7f.1:80', '127.0.0.1'],
      ['0177.0.0.1:80', '127.0.0.1'],
      ['127.1:80', '127.0.0.1'],
      ['[::ffff:127.0.0.1]:443', '::ffff:7f00:1'],
      ['[::1]:22', '::1'],
      ['example.com', undefined],
      ['example.com:0', undefined],
      ['example.com:65536', undefined],
      ['user@example.com:443', undefined],
      ['example.com/path:443', undefined],
      ['127.0.0.%31:80', undefined],
      [':443', undefined],
      ['foo.123:80', undefined],
    ];
    for (const [authority, host] of cases) {
      assert.equal(parseConnectTarget(authority)?.host, host, authority);
    }
    assert.ok(parseConnectTarget('2130706433:80')?.ip !== undefined, 'an integer IPv4 is an IP literal');
    assert.equal(parseConnectTarget('example.com:443')?.ip, undefined);
  });

  test('AGT-4: plain-HTTP targets must be absolute http:// URLs', () => {
    const ok = parseHttpTarget('http://Example.COM:8080/a/b?c=d#frag');
    assert.ok(ok.ok);
    assert.deepEqual(
      [ok.target.host, ok.target.port, ok.path, ok.authority],
      ['example.com', 8080, '/a/b?c=d', 'example.com:8080'],
    );
    const numeric = parseHttpTarget('http://2130706433/');
    assert.ok(numeric.ok && numeric.target.host === '127.0.0.1' && numeric.target.port === 80);
    const origin = parseHttpTarget('/index.html');
    assert.ok(!origin.ok && origin.target === undefined);
    const https = parseHttpTarget('https://example.com/');
    assert.ok(!https.ok && https.target?.host === 'example.com' && https.target.port === 443, 'host known');
    assert.ok(!parseHttpTarget('http://[::1/').ok);
  });
});

describe('operator allow ranges', () => {
  test('AGT-4: an allow range admits its private addresses, and only those', () => {
    const allow = parseAllowRanges(['10.1.0.0/16', '127.0.0.2', 'fd00:1::/32']);
    assert.deepEqual(destinationVerdict('10.1.2.3', allow, []), { allowed: true });
    assert.equal(destinationVerdict('10.2.0.1', allow, []).allowed, false);
    assert.deepEqual(destinationVerdict('127.0.0.2', allow, []), { allowed: true });
    assert.equal(destinationVerdict('127.0.0.1', allow, []).allowed, false);
    assert.deepEqual(
      destinationVerdict('::ffff:127.0.0.2', allow, []),
      { allowed: true },
      'mapped form of an allowed one',
    );
    assert.deepEqual(destinationVerdict('fd00:1:2::3', allow, []), { allowed: true });
    assert.equal(destinationVerdict('fd00:2::3', allow, []).allowed, false);
    assert.deepEqual(destinationVerdict('8.8.8.8', [], []), { allowed: true });
    assert.deepEqual(destinationVerdict('127.0.0.1', [], []), {
      allowed: false,
      reason: 'loopback address 127.0.0.1',
    });
    assert.equal(destinationVerdict('not-an-ip', allow, []).allowed, false);
    assert.throws(() => parseAllowRanges(['10.0.0.0/33']));
  });

  test('AGT-4: a cloud-metadata address needs a range naming it alone, not a wider one', () => {
    assert.equal(
      destinationVerdict('169.254.169.254', parseAllowRanges(['169.254.0.0/16']), []).allowed,
      false,
    );
    assert.equal(destinationVerdict('169.254.169.254', parseAllowRanges(['0.0.0.0/0']), []).allowed, false);
    assert.equal(destinationVerdict('169.254.1.1', parseAllowRanges(['169.254.0.0/16']), []).allowed, true);
    assert.equal(
      destinationVerdict('169.254.169.254', parseAllowRanges(['169.254.169.254/32']), []).allowed,
      true,
    );
  });
});

describe("the host's own addresses", () => {
  // What host-addresses.ts reads, and the platform's public address (a public one here).
  const host = parseAllowRanges(['10.77.0.1', 'fd77::1', '10.50.0.0/16', '93.184.216.34']);
  const wide = parseAllowRanges(['10.0.0.0/8', 'fd00::/8', '0.0.0.0/0', '::/0']);

  test('AGT-4: an address the host answers on is refused as a host address in every spelling, inside any allow range', () => {
    for (const text of [
      '10.77.0.1',
      '::ffff:10.77.0.1',
      '::ffff:a4d:1',
      '64:ff9b::a4d:1', // NAT64
      '2002:a4d:1::1', // 6to4
      'fd77::1',
      '10.50.3.4', // inside a range routed local
      '93.184.216.34', // the platform's public address, public by class
    ]) {
      assert.deepEqual(destinationVerdict(text, wide, host), {
        allowed: false,
        reason: `host address ${text}`,
      });
    }
    assert.deepEqual(
      destinationVerdict('10.77.0.2', wide, host),
      { allowed: true },
      'a neighbour is not the host',
    );
    assert.deepEqual(destinationVerdict('93.184.216.35', [], host), { allowed: true });
  });

  test('AGT-4: a host, loopback or unspecified address is re-opened only by an allow entry naming it alone', () => {
    const exact = parseAllowRanges(['10.77.0.1/32', 'fd77::1/128', '127.0.0.2/32']);
    assert.deepEqual(destinationVerdict('10.77.0.1', exact, host), { allowed: true });
    assert.deepEqual(
      destinationVerdict('::ffff:10.77.0.1', exact, host),
      { allowed: true },
      'its mapped form',
    );
    assert.deepEqual(destinationVerdict('fd77::1', exact, host), { allowed: true });
    assert.equal(destinationVerdict('10.50.3.4', parseAllowRanges(['10.50.0.0/16']), host).allowed, false);
    assert.deepEqual(destinationVerdict('127.0.0.2', exact, host), { allowed: true });
    assert.deepEqual(destinationVerdict('127.0.0.3', parseAllowRanges(['127.0.0.0/8']), host), {
      allowed: false,
      reason: 'loopback address 127.0.0.3',
    });
    assert.equal(destinationVerdict('0.0.0.0', parseAllowRanges(['0.0.0.0/8']), host).allowed, false);
    assert.equal(destinationVerdict('::', parseAllowRanges(['::/0']), host).allowed, false);
    assert.equal(destinationVerdict('::1', parseAllowRanges(['::/0']), host).allowed, false);
  });

  test('AGT-4: loopback keeps its own name even when the host lists it', () => {
    assert.deepEqual(destinationVerdict('127.0.0.1', [], parseAllowRanges(['127.0.0.0/8', '127.0.0.1'])), {
      allowed: false,
      reason: 'loopback address 127.0.0.1',
    });
  });
});

describe('agent allowlist', () => {
  const target = (authority: string) => {
    const parsed = parseConnectTarget(authority);
    assert.ok(parsed !== undefined, authority);
    return parsed;
  };
  const allowed = (authority: string, list: readonly string[] | undefined) =>
    allowlistVerdict(target(authority), list).allowed;

  test('AGT-4: no allowlist is open; an allowlist admits exact names and subdomains of *.suffix', () => {
    const list = ['api.example.com', '*.Models.test.', 'WWW.Example.org'];
    assert.equal(allowed('anything.test:443', undefined), true);
    assert.equal(allowed('api.example.com:443', list), true);
    assert.equal(allowed('API.EXAMPLE.COM.:443', list), true, 'case and trailing dot do not matter');
    assert.equal(allowed('www.example.org:80', list), true);
    assert.equal(allowed('example.com:443', list), false);
    assert.equal(allowed('other.api.example.com:443', list), false, 'an exact entry is not a wildcard');
    assert.equal(allowed('a.models.test:443', list), true);
    assert.equal(allowed('a.b.models.test:443', list), true);
    assert.equal(allowed('models.test:443', list), false, '*.suffix is subdomains only');
    assert.equal(allowed('evilmodels.test:443', list), false);
    assert.equal(allowed('models.test.evil.test:443', list), false);
    assert.equal(allowed('anything.test:443', []), false, 'an empty allowlist admits nothing');
  });

  test('AGT-4: with an allowlist, IP literals pass only when listed exactly', () => {
    assert.equal(allowed('93.184.216.34:443', ['*.example.com']), false);
    assert.equal(allowed('93.184.216.34:443', ['93.184.216.34']), true);
    assert.equal(
      allowed('1572395042:443', ['93.184.216.34']),
      true,
      'an integer spelling is the same address',
    );
    assert.equal(allowed('[2606:4700::1]:443', ['[2606:4700:0::1]']), true);
    assert.equal(allowed('93.184.216.35:443', ['93.184.216.34']), false);
    assert.equal(allowed('93.184.216.34:443', undefined), true);
  });
});
