// Attack: an agent reaches a service of the host that listens on 0.0.0.0 through the egress proxy by naming one of the host's own non-loopback addresses (or its mapped IPv6 form), which an operator allow range such as 10.0.0.0/8 seems to cover, with CONNECT or with plain HTTP.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { insertAgent } from '../../../test/helpers/agents.ts';
import { createTenant } from '../../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/database.ts';
import { runProcess } from '../../../test/helpers/process.ts';
import { requireTool } from '../../../test/helpers/system-tools.ts';
import { withTenant } from '../../db/tenant.ts';
import type { ProbeInput, ProbeOutput } from './host-namespace-probe.testing.ts';
import { listEgressRecords } from './records.ts';

// The host is played by a network namespace of the test's own, so nothing
// leaves it: a veth pair with 10.77.0.1 and fd77::1 on one end (both ends up,
// as an ordinary interface), and a second pair whose end holding 10.88.0.1
// stays down. The kernel still delivers to 10.88.0.1 locally, though
// os.networkInterfaces() does not list it (like docker0 with no container).
const SETUP = [
  'ip link set lo up',
  'ip link add eg0 type veth peer name eg1',
  'ip addr add 10.77.0.1/24 dev eg0',
  'ip -6 addr add fd77::1/64 dev eg0 nodad',
  'ip link set eg0 up',
  'ip link set eg1 up',
  'ip link add eh0 type veth peer name eh1',
  'ip addr add 10.88.0.1/24 dev eh0',
].join(' && ');
const HOSTS = ['10.77.0.1', '::ffff:10.77.0.1', 'fd77::1', '10.88.0.1'];
const PROBE = path.join(import.meta.dirname, 'host-namespace-probe.testing.ts');

let db: TestDatabase;
let tenantId: string;
let dir: string;
let bridge: net.Server;

before(async () => {
  db = await createTestDatabase();
  tenantId = await createTenant(db, 'egress host');
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-egress-host-'));
  // The namespace has no route to the database's TCP address; a Unix socket crosses into it.
  bridge = net.createServer((client) => {
    const server = net.connect({ host: db.target.host, port: db.target.port });
    client.on('error', () => server.destroy());
    server.on('error', () => client.destroy());
    client.pipe(server).pipe(client);
  });
  await new Promise<void>((resolve) => bridge.listen(path.join(dir, `.s.PGSQL.${db.target.port}`), resolve));
});

after(async () => {
  bridge.close();
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

function newAgent(): Promise<string> {
  return insertAgent(db.app, tenantId, 'egress');
}

/** Runs the probe in a new network namespace (a user namespace too when not root) and returns its report. */
async function probeInNamespace(input: ProbeInput): Promise<ProbeOutput> {
  const namespaces = process.getuid?.() === 0 ? ['--net'] : ['--user', '--map-root-user', '--net'];
  const { code, stdout, stderr } = await runProcess(
    'unshare',
    [
      ...namespaces,
      '--',
      'sh',
      '-c',
      `${SETUP} && exec "$0" "$1" "$2"`,
      process.execPath,
      PROBE,
      JSON.stringify(input),
    ],
    { cwd: dir, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } },
  );
  assert.equal(code, 0, `the probe failed: ${stderr}`);
  return JSON.parse(stdout) as ProbeOutput;
}

test("AGT-4: the host's own non-loopback addresses are refused even inside an allow range, by CONNECT and plain HTTP; only an exact allow re-opens one", {
  timeout: 60_000,
}, async (t) => {
  if (!requireTool(t, 'unshare', 'util-linux')) return;
  if (!requireTool(t, 'ip', 'iproute2', ['-V'])) return;
  const wide = await newAgent();
  const exact = await newAgent();
  const report = await probeInNamespace({
    dir,
    dbPort: db.target.port,
    database: db.name,
    sslmode: db.target.sslmode,
    user: db.appCredentials.user,
    password: db.appCredentials.password,
    tenantId,
    runs: [
      { name: 'wide', agentId: wide, allow: ['10.0.0.0/8', 'fd00::/8'] },
      { name: 'exact', agentId: exact, allow: ['10.77.0.1/32'] },
    ],
    hosts: HOSTS,
  });
  for (const host of HOSTS) assert.equal(report.direct[host], 'connected', `the service answers at ${host}`);

  const refused = Object.entries(report.runs.wide ?? {}).filter(([, answer]) => answer.status === 403);
  assert.deepEqual(
    refused.map(([attempt]) => attempt),
    HOSTS.flatMap((host) => [`CONNECT ${host}`, `GET ${host}`]),
    'every attempt inside the wide range is refused',
  );
  for (const [attempt, answer] of refused) assert.match(answer.body, /^host address /, attempt);

  const reopened = report.runs.exact ?? {};
  assert.equal(reopened['CONNECT 10.77.0.1']?.status, 200);
  assert.equal(reopened['GET 10.77.0.1']?.status, 200);
  assert.equal(reopened['CONNECT ::ffff:10.77.0.1']?.status, 200, 'the mapped form of the one allowed');
  assert.equal(reopened['CONNECT 10.88.0.1']?.status, 403, 'and no other host address');

  const rows = await withTenant(db.app, tenantId, (tx) => listEgressRecords(tx, wide, 50));
  assert.equal(rows.length, HOSTS.length * 2);
  assert.ok(rows.every((row) => !row.allowed && /^host address /.test(row.reason ?? '')));
});
