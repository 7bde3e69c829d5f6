// Attack: code running as one agent — hostile from its first instruction — tries to reach past its sandbox: to read or list another instance's volume and sockets (of its own tenant or another), see or signal its processes, connect to its port, read the host's data directory and master key, write the system, gain a capability or a user namespace, connect straight to the host's PostgreSQL or control plane, reach the host's loopback or a private address through the egress proxy, or find its own credentials where they should not be: in the host's view of its processes, the instance directory or the logs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { testClusterInfo } from '../../../test/helpers/database.ts';
import { hasTool, requireTool } from '../../../test/helpers/system-tools.ts';
import { withTenant } from '../../db/tenant.ts';
import { listEgressRecords } from '../egress/records.ts';
import {
  createRuntime,
  ingressRequest,
  probeSpec,
  type Runtime,
  type ShellResult,
  sandboxProcesses,
  shell,
} from './sandbox-fixtures.testing.ts';

// Three instances of the probe agent: A1 and A2 of tenant A, B1 of tenant B,
// each on its own port. The probe runs shell scripts inside its sandbox, as
// the agent, so every check below is made from where an attacker would be.

interface Instance {
  readonly name: string;
  readonly tenantId: string;
  readonly agentId: string;
  readonly port: number;
}

const bwrap = hasTool('bwrap');
let rt: Runtime;
let a1: Instance;
let a2: Instance;
let b1: Instance;
let controlPlane: net.Server;
let controlPlanePort: number;
let controlPlaneHits = 0;
let abstractSocket: net.Server;
const abstractName = `\0enclave-test-${randomBytes(6).toString('hex')}`;
const masterKeyCanary = `MASTERKEY${randomBytes(12).toString('hex')}`;
const credentialCanary = `CANARYcred${randomBytes(12).toString('hex')}Zq`;

before(async () => {
  rt = await createRuntime();
  // What the host keeps next to the instances: a master key file and other data.
  await writeFile(path.join(rt.dataDir, 'master.key'), masterKeyCanary, { mode: 0o600 });
  controlPlane = net.createServer((socket) => {
    controlPlaneHits += 1;
    socket.destroy();
  });
  controlPlanePort = await new Promise<number>((resolve) => {
    controlPlane.listen(0, '127.0.0.1', () => resolve((controlPlane.address() as net.AddressInfo).port));
  });
  abstractSocket = net.createServer((socket) => {
    controlPlaneHits += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => abstractSocket.listen(abstractName, resolve));
  if (!bwrap) return;
  const tenantA = await rt.tenant('isolation A');
  const tenantB = await rt.tenant('isolation B');
  const make = async (name: string, tenantId: string, port: number): Promise<Instance> => {
    const agentId = await rt.agent(tenantId);
    const secrets = new Map([['PROBE_CREDENTIAL', Buffer.from(`${credentialCanary}-${name}`)]]);
    await rt.driver.start(probeSpec(rt, { tenantId, agentId }, { port, secrets }));
    await shell(rt, agentId, `echo ${name} > /data/marker-${name}`);
    return { name, tenantId, agentId, port };
  };
  a1 = await make('a1', tenantA, 8080);
  a2 = await make('a2', tenantA, 18081);
  b1 = await make('b1', tenantB, 18082);
});

after(async () => {
  controlPlane.close();
  abstractSocket.close();
  await rt.close();
});

/** Each attacker against each victim: same tenant, other tenant, and back. */
const pairs = (): [Instance, Instance][] => [
  [a1, a2],
  [a1, b1],
  [b1, a1],
];

async function inside(instance: Instance, script: string): Promise<ShellResult> {
  return shell(rt, instance.agentId, script);
}

/** A node one-liner inside the sandbox (the bound node binary). */
function node(source: string): string {
  return `node -e '${source.replaceAll("'", `'"'"'`)}'`;
}

describe('AGT-2: sandbox isolation', () => {
  test('AGT-2: an instance cannot list or read another instance’s volume or sockets, of its own tenant or another', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    for (const [attacker, victim] of pairs()) {
      const victimDir = path.join(rt.instancesDir, victim.agentId);
      const found = await inside(
        attacker,
        'find / \\( -path /proc -o -path /sys -o -path /usr -o -path /dev \\) -prune -o \\( -name "marker-*" -o -name "*.sock" \\) -print 2>/dev/null | sort',
      );
      assert.equal(
        found.stdout,
        `/data/marker-${attacker.name}\n/run/enclave/egress.sock\n`,
        `${attacker.name} sees only its own files and sockets`,
      );
      const direct = await inside(
        attacker,
        `ls ${victimDir}/volume; cat ${victimDir}/volume/marker-${victim.name}; ls ${rt.instancesDir}; echo done`,
      );
      assert.equal(direct.stdout, 'done\n');
      assert.match(direct.stderr, /No such file or directory/);
    }
  });

  test('AGT-2: an instance sees none of another instance’s processes, nor the host’s', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    for (const [attacker, victim] of pairs()) {
      const mark = `${300 + Math.floor(Math.random() * 600)}.${victim.name.length}${attacker.name.length}`;
      await inside(victim, `sleep ${mark} </dev/null >/dev/null 2>&1 &`);
      const seen = await inside(
        attacker,
        'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done; echo "count $(ls -d /proc/[0-9]* | wc -l)"',
      );
      assert.doesNotMatch(seen.stdout, new RegExp(`sleep ${mark.replace('.', '\\.')}`));
      assert.doesNotMatch(seen.stdout, /isolation\.security|postgres|test\/run\.ts/);
      const count = Number(/count (\d+)/.exec(seen.stdout)?.[1]);
      assert.ok(count > 0 && count < 20, `${attacker.name} sees only its own few processes (${count})`);
    }
    // pid 1 is the sandbox's reaper, pid 2 the supervisor: numbers that mean nothing on the host.
    const low = await inside(a1, 'tr "\\0" " " < /proc/2/cmdline');
    assert.match(low.stdout, /supervisor\.mjs/);
  });

  test('AGT-2: an instance cannot connect to another instance’s port, the host’s PostgreSQL, the control plane or a host abstract socket', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const postgresPort = testClusterInfo().server.port;
    for (const [attacker, victim] of pairs()) {
      const targets = [victim.port, postgresPort, controlPlanePort];
      const result = await inside(
        attacker,
        node(`
          const net = require("net");
          const targets = ${JSON.stringify(targets)};
          const tries = targets.map((port) => new Promise((resolve) => {
            net.connect(port, "127.0.0.1").on("connect", () => resolve(port + " connected")).on("error", (e) => resolve(port + " " + e.code));
          }));
          tries.push(new Promise((resolve) => {
            net.connect(${JSON.stringify(abstractName)}).on("connect", () => resolve("abstract connected")).on("error", (e) => resolve("abstract " + e.code));
          }));
          Promise.all(tries).then((lines) => console.log(lines.join("\\n")));
        `),
      );
      assert.equal(
        result.stdout,
        `${targets.map((port) => `${port} ECONNREFUSED`).join('\n')}\nabstract ECONNREFUSED\n`,
        result.stderr,
      );
      const interfaces = await inside(attacker, 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "');
      assert.equal(interfaces.stdout, 'lo\n', 'loopback is its only network interface');
    }
    assert.equal(controlPlaneHits, 0);
  });

  test('AGT-2: an instance cannot read the host’s data directory, master key, home directories or run directory', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const result = await inside(
      a1,
      `cat ${rt.dataDir}/master.key; ls -d /root /home /work /var /srv /mnt /media /boot /sys ${rt.dataDir} 2>&1 | grep -vc "No such file"; ls /run; ls /etc`,
    );
    assert.doesNotMatch(result.stdout, new RegExp(masterKeyCanary));
    const [present, runEntries, ...etc] = result.stdout.trim().split('\n');
    assert.equal(present, '0', 'none of the host directories exists inside');
    assert.equal(runEntries, 'enclave');
    assert.ok(!etc.includes('shadow') && !etc.includes('gshadow') && !etc.includes('ssh'), etc.join(' '));
    const searched = await inside(
      a1,
      `grep -rl ${masterKeyCanary} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=dev 2>/dev/null | wc -l`,
    );
    assert.equal(searched.stdout.trim(), '0');
    const certificates = await inside(a1, 'ls /etc/ssl; ls /etc/ssl/private 2>&1');
    assert.doesNotMatch(certificates.stdout, /^private$/m);
  });

  test('AGT-2: an instance cannot write the system: /, /usr, /etc, /app, /opt/enclave, /proc/sys; only /data and /tmp', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const places = [
      '/',
      '/usr',
      '/usr/bin',
      '/etc',
      '/app',
      '/opt',
      '/opt/enclave/bin',
      '/opt/enclave/supervisor',
      '/opt/enclave/node_modules',
      '/run',
    ];
    const script = places
      .map((place) => `touch ${place}/probe-write 2>/dev/null && echo "wrote ${place}"`)
      .concat([
        'echo x > /etc/passwd 2>/dev/null && echo "wrote /etc/passwd"',
        'chmod 777 /etc/passwd 2>/dev/null && echo "chmod /etc/passwd"',
        'cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness 2>/dev/null && echo "wrote a global sysctl"',
        'echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo "wrote /proc/sys"',
        'echo 1 > /proc/sysrq-trigger 2>/dev/null && echo "wrote sysrq"',
        'touch /data/ok && touch /tmp/ok && echo writable',
      ])
      .join('; ');
    const result = await inside(a1, script);
    assert.equal(result.stdout, 'writable\n');
  });

  test('AGT-2, AGT-3, AGT-5: an agent cannot plant a path the host follows: its socket links change nothing, ingress and support reach only itself', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    // The attack that got through: A1 links its sockets to B1's (the relative path from its own
    // run directory) and to a root-only host socket, then waits for the host to follow them.
    const victimHost = `../../${b1.agentId}/host`;
    const planted = await inside(
      a1,
      [
        `ln -sf ${victimHost}/ingress.sock /run/enclave/ingress.sock 2>/dev/null && echo "linked ingress"`,
        `ln -sf ${victimHost}/support-agent.sock /run/enclave/support.sock 2>/dev/null && echo "linked support"`,
        `ln -sf ${victimHost}/support.hostkey.pub /run/enclave/support.hostkey.pub 2>/dev/null && echo "linked host key"`,
        'rm -f /run/enclave/egress.sock 2>/dev/null; test -S /run/enclave/egress.sock || echo "removed egress"',
        'mv /run/enclave/egress.sock /data/ 2>/dev/null && echo "moved egress"',
        'chmod 777 /run/enclave/egress.sock 2>/dev/null && echo "chmod egress"',
        'mkdir /run/enclave/x 2>/dev/null && echo "made a directory"',
        'ls -A /run/enclave',
      ].join('; '),
    );
    assert.equal(
      planted.stdout,
      'egress.sock\n',
      'nothing in /run/enclave can be written, linked or removed',
    );
    // The host's side of A1 is its own: its directory holds only sockets the host bound.
    const a1Host = path.join(rt.instancesDir, a1.agentId, 'host');
    const entries = await readdir(a1Host, { withFileTypes: true });
    assert.ok(entries.every((entry) => entry.isSocket() || entry.isFile()));
    assert.ok((await stat(a1Host)).uid === (process.getuid?.() ?? 0), 'the host directory is the driver’s');
    // Ingress to A1 still reaches A1.
    assert.equal(JSON.parse((await ingressRequest(rt, a1.agentId)).body).port, a1.port);
  });

  test('AGT-2: an instance holds no capability and cannot gain one or a user namespace', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const result = await inside(
      a1,
      'grep -E "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):" /proc/self/status; id -u; id -g; unshare -U true 2>/dev/null && echo "user namespace"; unshare -r true 2>/dev/null && echo "root map"',
    );
    assert.equal(
      result.stdout,
      'CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n1000\n1000\n',
    );
  });

  test('AGT-2: through the egress proxy an instance reaches neither the host’s loopback nor a private address', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const result = await inside(
      a1,
      node(`
        const net = require("net");
        const ask = (head) => new Promise((resolve) => {
          const socket = net.connect(3128, "127.0.0.1");
          let data = "";
          socket.on("data", (chunk) => { data += chunk; });
          socket.on("close", () => resolve(data.split("\\r\\n")[0]));
          socket.on("error", () => resolve("error"));
          socket.write(head);
        });
        Promise.all([
          ask("CONNECT 127.0.0.1:${controlPlanePort} HTTP/1.1\\r\\nHost: 127.0.0.1:${controlPlanePort}\\r\\n\\r\\n"),
          ask("GET http://127.0.0.1:${controlPlanePort}/ HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n"),
          ask("CONNECT [::1]:${controlPlanePort} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"),
          ask("CONNECT localhost:${controlPlanePort} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"),
        ]).then((lines) => console.log(lines.join("\\n")));
      `),
    );
    for (const line of result.stdout.trim().split('\n'))
      assert.match(line, /^HTTP\/1\.1 403 /, result.stdout);
    assert.equal(controlPlaneHits, 0);
    // Records are written in batches shortly after each connection: wait for the four (at most 5 s).
    const read = () => withTenant(rt.db.app, a1.tenantId, (tx) => listEgressRecords(tx, a1.agentId, 20));
    let rows = await read();
    for (let waited = 0; rows.length < 4 && waited < 5000; waited += 20) {
      await new Promise((next) => setTimeout(next, 20));
      rows = await read();
    }
    assert.ok(rows.length >= 4 && rows.every((row) => !row.allowed), 'every attempt is recorded as refused');
  });
});

/** Every regular file under dir, read. */
async function filesUnder(dir: string): Promise<{ file: string; text: Buffer }[]> {
  const found: { file: string; text: Buffer }[] = [];
  for (const name of await readdir(dir, { recursive: true })) {
    const file = path.join(dir, name);
    const info = await stat(file).catch(() => undefined);
    if (info?.isFile() === true) found.push({ file, text: await readFile(file) });
  }
  return found;
}

describe('VLT-5: a credential exists only inside the agent it was given to', () => {
  test('VLT-5: no host-visible process has the credential in its argv or environ except the agent itself; nor the instance directory or the logs', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const needles = (value: string) => [
      Buffer.from(value),
      Buffer.from(Buffer.from(value).toString('hex')),
      Buffer.from(Buffer.from(value).toString('base64')),
    ];
    const canary = `${credentialCanary}-a1`;
    const seen = await inside(a1, 'echo "$PROBE_CREDENTIAL"');
    assert.equal(seen.stdout, `${canary}\n`, 'the agent has its credential');
    const processes = await sandboxProcesses(rt.instancesDir);
    assert.ok(processes.length >= 3 * 4, 'bwrap, its reaper, the supervisor and the agent of each instance');
    const holders: string[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const cmdline = await readFile(`/proc/${entry}/cmdline`).catch(() => Buffer.alloc(0));
      for (const needle of needles(credentialCanary)) {
        assert.equal(cmdline.includes(needle), false, `pid ${entry}'s argv`);
      }
      const environ = await readFile(`/proc/${entry}/environ`).catch(() => Buffer.alloc(0));
      if (environ.includes(credentialCanary))
        holders.push(cmdline.toString('utf8').replaceAll('\0', ' ').trim());
    }
    // The agents (and what they started) hold their credentials; the launcher, bwrap, its reaper and the supervisor do not.
    assert.equal(holders.filter((cmdline) => cmdline === '/opt/enclave/bin/node probe.mjs').length, 3);
    for (const cmdline of holders)
      assert.doesNotMatch(cmdline, /bwrap|supervisor\.mjs|enclave-launch|prlimit|setpriv/);
    const fds = await inside(a1, 'ls /proc/self/fd | tr "\\n" " "');
    assert.equal(fds.stdout, '0 1 2 3 ', 'the config and control pipes never reach the agent');
    for (const { file, text } of await filesUnder(rt.instancesDir)) {
      if (file.includes(`${path.sep}volume${path.sep}`)) continue; // the agent's own files
      for (const needle of needles(credentialCanary)) assert.equal(text.includes(needle), false, file);
    }
    for (const needle of needles(credentialCanary)) {
      assert.equal(
        rt.logLines.some((line) => line.includes(needle.toString())),
        false,
      );
    }
  });
});
