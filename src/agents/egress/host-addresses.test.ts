import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { describe, test } from 'node:test';
import { type IpRange, parseIpRange } from './destinations.ts';
import {
  interfaceRanges,
  parseFibTrieLocals,
  parseIpv6RouteLocals,
  readHostRanges,
} from './host-addresses.ts';

// Where the egress proxy learns the addresses the host answers on: the
// kernel's local routes, as Linux prints them, and os.networkInterfaces().

const range = (text: string): IpRange => {
  const parsed = parseIpRange(text);
  assert.ok(parsed !== undefined, text);
  return parsed;
};

// A namespace with 10.77.0.1/24 on an interface and 10.50.0.0/16 routed local (AnyIP): the Local table.
const FIB_TRIE = `Local:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.64.0.0/11 2 0 2
        +-- 10.77.0.0/24 2 0 2
           +-- 10.77.0.0/31 1 0 0
              |-- 10.77.0.0
                 /24 link UNICAST
              |-- 10.77.0.1
                 /32 host LOCAL
           |-- 10.77.0.255
              /32 link BROADCAST
     |-- 10.50.0.0
        /16 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
`;

// fd77::/64 on-link, fd77::1 and ::1 local, fd99::/64 routed local, the default route.
const IPV6_ROUTE = `fd770000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001      eg0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd770000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001      eg0
fd990000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 80000001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`;

describe('host addresses', () => {
  test('AGT-4: every LOCAL route of the IPv4 table is a host range, on-link and broadcast routes are not', () => {
    assert.deepEqual(
      parseFibTrieLocals(FIB_TRIE),
      ['10.77.0.1/32', '10.50.0.0/16', '127.0.0.0/8', '127.0.0.1/32'].map(range),
    );
    assert.deepEqual(parseFibTrieLocals(''), []);
  });

  test('AGT-4: every IPv6 route flagged local is a host range, the others are not', () => {
    assert.deepEqual(parseIpv6RouteLocals(IPV6_ROUTE), ['::1/128', 'fd77::1/128', 'fd99::/64'].map(range));
    assert.deepEqual(parseIpv6RouteLocals('garbage\n\n1 2 3'), []);
  });

  test("AGT-4: os.networkInterfaces()'s addresses count as single addresses", () => {
    const common = { netmask: '', mac: '00:00:00:00:00:00', internal: false, cidr: null };
    const v4 = (address: string): NetworkInterfaceInfo => ({ ...common, address, family: 'IPv4' });
    const v6 = (address: string): NetworkInterfaceInfo => ({
      ...common,
      address,
      family: 'IPv6',
      scopeid: 0,
    });
    assert.deepEqual(
      interfaceRanges({
        eth0: [v4('192.0.2.2'), v6('fe80::fc:ff:fe00:1')],
        lo: [v4('127.0.0.1')],
      }),
      ['192.0.2.2/32', 'fe80::fc:ff:fe00:1/128', '127.0.0.1/32'].map(range),
    );
  });

  test("AGT-4: this machine's reading holds its loopback address", () => {
    const ranges = readHostRanges();
    const loopback = parseIpRange('127.0.0.1');
    assert.ok(
      ranges.some((r) => r.family === 4 && loopback !== undefined && r.base === loopback.base),
      'found',
    );
  });
});
