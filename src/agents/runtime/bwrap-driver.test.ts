import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import ssh2 from 'ssh2';
import { requireTool } from '../../../test/helpers/system-tools.ts';
import { withTenant } from '../../db/tenant.ts';
import { generateSupportKeyPair } from '../../operator-secrets/support-key.ts';
import { listEgressRecords } from '../egress/records.ts';
import { sandboxHostUid } from './bwrap-args.ts';
import { createBwrapDriver } from './bwrap-driver.ts';
import { detectCgroups, hostLimitSupport } from './limits.ts';
import { createOutputLog, tailLines } from './output-log.ts';
import {
  createRuntime,
  hostDir,
  ingressRequest,
  linesLogger,
  nextExit,
  probeSpec,
  REPO_TEMPLATES,
  type Runtime,
  sandboxProcesses,
  shell,
} from './sandbox-fixtures.testing.ts';
import { HOST_SETUP_FAILED } from './sandbox-run.ts';

// The local driver end to end: real bubblewrap sandboxes, the real egress
// proxy on a test database, the real echo template and small probe agents.
// AGT-5 (support SSH), AGT-6 (limits, start/stop), VLT-5 (secrets at start).

let rt: Runtime;
let tenantId: string;

before(async () => {
  rt = await createRuntime({ allow: ['127.0.0.2/32'] });
  tenantId = await rt.tenant('driver tests');
});
after(() => rt.close());

async function ids(): Promise<{ tenantId: string; agentId: string }> {
  return { tenantId, agentId: await rt.agent(tenantId) };
}

describe('the bubblewrap driver', () => {
  test('VLT-5: the echo agent answers through ingress.sock with the last 4 of the credential it was started with', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    const credential = Buffer.from(`echo-${randomBytes(8).toString('hex')}-Wxyz`);
    await rt.driver.start(
      probeSpec(rt, who, {
        command: ['node', 'echo/agent.mjs'],
        templateDir: REPO_TEMPLATES,
        secrets: new Map([['ECHO_TOKEN', credential]]),
      }),
    );
    assert.ok(
      credential.every((byte) => byte === 0),
      'the driver zeroes the secret once handed over',
    );
    const status = rt.driver.status(who.agentId);
    assert.equal(status.state, 'running');
    assert.ok(status.startedAt instanceof Date);
    const response = await ingressRequest(rt, who.agentId);
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), {
      agent: 'echo',
      credential_set: true,
      credential_last4: 'Wxyz',
    });
    await rt.driver.stop(who.agentId);
    assert.equal(rt.driver.status(who.agentId).state, 'stopped');
    assert.equal(existsSync(path.join(hostDir(rt, who.agentId), 'ingress.sock')), false);
    const logs = await rt.driver.logs(who.agentId, 50);
    assert.ok(
      logs.some((line) => line.startsWith('echo agent listening on http://127.0.0.1:8080')),
      logs.join('\n'),
    );
    assert.ok(logs.at(-1)?.includes('[enclave] stopped'));
    assert.deepEqual(await rt.driver.logs(who.agentId, 1), [logs.at(-1)]);
  });

  test('AGT-4, VLT-5: the agent gets PORT, the proxy variables and its env, runs as uid 1000 in /app, and reaches the network only through the egress proxy', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    let webRequests = 0;
    const web = http.createServer((_req, res) => {
      webRequests += 1;
      res.end('from the host web');
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.2', resolve));
    const webPort = (web.address() as net.AddressInfo).port;
    t.after(() => web.close());
    await rt.driver.start(probeSpec(rt, who, { env: { GREETING: 'hello there' } }));
    t.after(() => rt.driver.stop(who.agentId));
    const env = await shell(
      rt,
      who.agentId,
      'echo "$PORT|$HTTP_PROXY|$https_proxy|$NO_PROXY|$GREETING|$HOME"; id -u; pwd',
    );
    assert.equal(
      env.stdout,
      '8080|http://127.0.0.1:3128|http://127.0.0.1:3128|localhost,127.0.0.1|hello there|/data\n1000\n/app\n',
    );
    const fetched = await shell(
      rt,
      who.agentId,
      `node -e "fetch('http://127.0.0.2:${webPort}/').then(r => r.text()).then(t => console.log(t))"`,
    );
    assert.equal(fetched.stdout.trim(), 'from the host web', fetched.stderr);
    const direct = await shell(
      rt,
      who.agentId,
      `node -e "require('net').connect(${webPort}, '127.0.0.2').on('error', e => console.log(e.code)).on('connect', () => console.log('connected'))"`,
    );
    // Its loopback is its own: nothing listens there, and there is no other interface.
    assert.equal(direct.stdout.trim(), 'ECONNREFUSED');
    assert.equal(webRequests, 1, 'the host web server saw the proxied request only');
    const rows = await withTenant(rt.db.app, tenantId, (tx) => listEgressRecords(tx, who.agentId, 10));
    assert.ok(
      rows.some((row) => row.host === '127.0.0.2' && row.allowed),
      'the egress proxy recorded the connection for this agent',
    );
  });

  test('AGT-2: as root, the sandbox runs as the instance’s own host uid, never as host root', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who));
    t.after(() => rt.driver.stop(who.agentId));
    const uid = process.getuid?.() === 0 ? sandboxHostUid(who.agentId) : process.getuid?.();
    const volume = await shell(rt, who.agentId, 'touch /data/mine');
    assert.equal(volume.code, 0);
    const pids = await sandboxProcesses(path.join(rt.instancesDir, who.agentId));
    assert.ok(pids.length >= 4);
    for (const pid of pids) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(status, /^CapEff:\t0000000000000000$/m);
    }
  });

  test('AGT-6: a command that does not exist, one that exits at once and one that never opens its port are refused with the reason', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const missing = await ids();
    await assert.rejects(
      rt.driver.start(probeSpec(rt, missing, { command: ['./no-such-agent', '--flag'] })),
      /command not found: \.\/no-such-agent/,
    );
    assert.equal(rt.driver.status(missing.agentId).state, 'crashed');
    assert.match(rt.driver.status(missing.agentId).reason ?? '', /command not found/);
    await assert.rejects(
      rt.driver.start(probeSpec(rt, missing, { command: ['no-such-program'] })),
      /command not found: no-such-program/,
    );
    const exits = await ids();
    await assert.rejects(
      rt.driver.start(probeSpec(rt, exits, { command: ['node', 'exit-at-once.mjs'] })),
      /exited with code 3/,
    );
    const silent = await ids();
    const quick = rt.driverWith(1500);
    await assert.rejects(
      quick.start(probeSpec(rt, silent, { command: ['node', 'never-listens.mjs'] })),
      /did not open port 8080 within 1\.5 s/,
    );
    assert.equal(quick.status(silent.agentId).state, 'crashed');
    assert.deepEqual(await sandboxProcesses(path.join(rt.instancesDir, silent.agentId)), []);
    assert.equal(existsSync(path.join(hostDir(rt, silent.agentId), 'egress.sock')), false);
  });

  test('VLT-5: a spec the driver cannot pass on as it is refuses the start before anything runs, and its secrets are zeroed', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    const cases: [Partial<Parameters<typeof probeSpec>[2]>, RegExp][] = [
      [{ secrets: new Map([['TOKEN', Buffer.from('ab\0cd')]]) }, /^secret variable TOKEN holds a NUL byte$/],
      [{ secrets: new Map([['BAD-NAME', Buffer.from('abcd')]]) }, /^secret variable BAD-NAME is invalid$/],
      [
        { secrets: new Map([['TOKEN', Buffer.from([0x61, 0xff, 0x62])]]) },
        /^secret variable TOKEN is not UTF-8 text$/,
      ],
      [
        { secrets: new Map([['TOKEN', Buffer.alloc(1024 * 1024, 0x61)]]) },
        /too many or too large \(at most 4000, 960 KiB together\)$/,
      ],
      [
        { env: Object.fromEntries(Array.from({ length: 4001 }, (_, i) => [`V${i}`, 'x'])) },
        /too many or too large/,
      ],
      [{ env: { GREETING: 'hi\0there' } }, /^environment variable GREETING is invalid$/],
      [{ command: [] }, /^the command is empty$/],
      [{ port: 70000 }, /^the port is invalid$/],
    ];
    for (const [overrides, message] of cases) {
      const spec = probeSpec(rt, who, overrides);
      await assert.rejects(rt.driver.start(spec), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'instance_invalid');
        assert.match(error.message, message);
        return true;
      });
      for (const value of spec.secrets.values()) assert.ok(value.every((byte) => byte === 0));
    }
    assert.deepEqual(await sandboxProcesses(path.join(rt.instancesDir, who.agentId)), []);
    assert.equal(existsSync(path.join(rt.instancesDir, who.agentId)), false);
  });

  test('AGT-6: a running agent that exits is reported through onExit with its exit code, once', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who));
    const exited = nextExit(rt, who.agentId);
    await ingressRequest(rt, who.agentId, { path: '/exit?code=7' });
    assert.deepEqual(await exited, { agentId: who.agentId, reason: 'exited with code 7' });
    assert.equal(rt.driver.status(who.agentId).state, 'crashed');
    assert.equal(rt.driver.status(who.agentId).reason, 'exited with code 7');
    await rt.driver.stop(who.agentId);
    assert.equal(rt.driver.status(who.agentId).state, 'stopped');
    assert.equal(rt.exits.filter((exit) => exit.agentId === who.agentId).length, 1);
  });

  test('AGT-6: no single file outgrows the volume (EFBIG), and the volume as a whole ends at its limit (ENOSPC)', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who, { limits: { ...probeLimits(), volumeMb: 4 } }));
    t.after(() => rt.driver.stop(who.agentId));
    const big = await shell(
      rt,
      who.agentId,
      `node -e "try { require('fs').writeFileSync('/data/big', Buffer.alloc(6 << 20)) } catch (e) { console.log(e.code) }"; stat -c %s /data/big`,
    );
    assert.equal(big.stdout, `EFBIG\n${4 << 20}\n`);
    const more = await shell(rt, who.agentId, 'head -c 1048576 /dev/zero > /data/more');
    assert.match(more.stderr, /No space left on device/);
    assert.equal(rt.driver.status(who.agentId).state, 'running');
  });

  test('AGT-6: open files, processes and memory are limited as the host allows', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const support = await hostLimitSupport(rt.instancesDir);
    t.diagnostic(`host limit support: ${JSON.stringify(support)}`);
    const who = await ids();
    const limits = { ...probeLimits(), openFiles: 100, processes: 40, memoryMb: 160 };
    await rt.driver.start(probeSpec(rt, who, { limits }));
    const files = await shell(rt, who.agentId, 'ulimit -n; ulimit -H -n; ulimit -c');
    assert.equal(files.stdout, '100\n100\n0\n');
    if (support.processes) {
      const forks = await shell(
        rt,
        who.agentId,
        'for i in $(seq 1 80); do sleep 30 </dev/null >/dev/null 2>&1 & done 2>/dev/null; ls /proc | grep -c "^[0-9]"',
      );
      assert.ok(Number(forks.stdout.trim().split('\n')[0]) <= limits.processes, forks.stdout);
    } else t.diagnostic('processes: not enforceable on this host');
    // A cgroup kills at the limit; without one, the driver measures and stops it.
    const exited = nextExit(rt, who.agentId);
    await ingressRequest(rt, who.agentId, { path: '/hog' });
    assert.deepEqual(await exited, {
      agentId: who.agentId,
      reason: support.memory ? 'killed: out of memory' : 'memory over its limit',
    });
    await rt.driver.stop(who.agentId);
  });

  test('AGT-6: the CPU limit is a quota per 100 ms period, with a burst of at most one period where the kernel has bursts', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const cgroups = await detectCgroups();
    const parent = cgroups.parents.cpu;
    if (parent === undefined) {
      t.diagnostic('cpu: no cpu cgroup on this host');
      return;
    }
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who, { limits: { ...probeLimits(), cpuPercent: 50 } }));
    const dir = path.join(parent, who.agentId);
    const read = (file: string) =>
      readFile(path.join(dir, file), 'utf8').then(
        (text) => text.trim(),
        () => undefined,
      );
    if (cgroups.version === 2) {
      assert.equal(await read('cpu.max'), '50000 100000');
      const burst = await read('cpu.max.burst');
      if (burst !== undefined) assert.equal(burst, '50000');
    } else {
      assert.equal(await read('cpu.cfs_period_us'), '100000');
      assert.equal(await read('cpu.cfs_quota_us'), '50000');
      const burst = await read('cpu.cfs_burst_us');
      if (burst !== undefined) assert.equal(burst, '50000');
    }
    await rt.driver.stop(who.agentId);
  });

  test('AGT-6: a burst of 200 start and stop calls over four agents leaves no process behind', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const agents = await Promise.all([ids(), ids(), ids(), ids()]);
    // 160 calls at once in random order: most starts are overtaken by a later stop.
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 160; i++) {
      const who = agents[i % agents.length] as { tenantId: string; agentId: string };
      calls.push(
        (randomBytes(1)[0] as number) < 128
          ? rt.driver.start(probeSpec(rt, who)).catch((error: Error) => error)
          : rt.driver.stop(who.agentId, { graceMs: 2000 }),
      );
    }
    // 40 more where each start runs to the end before its stop: four agents at once, five rounds each.
    const rounds = agents.map(async (who) => {
      for (let round = 0; round < 5; round++) {
        await rt.driver.start(probeSpec(rt, who)).catch((error: Error) => error);
        await rt.driver.stop(who.agentId, { graceMs: 2000 });
      }
    });
    const results = await Promise.all(calls);
    await Promise.all(rounds);
    for (const result of results) {
      if (result instanceof Error) assert.match(result.message, /stopped before it (started|was ready)/);
    }
    await rt.driver.stopAll();
    for (const who of agents) assert.equal(rt.driver.status(who.agentId).state, 'stopped');
    let ran = 0;
    for (const who of agents) {
      assert.deepEqual(await sandboxProcesses(path.join(rt.instancesDir, who.agentId)), []);
      ran += (await rt.driver.logs(who.agentId, 1000)).filter((line) =>
        line.includes('running: answering'),
      ).length;
    }
    assert.ok(ran >= 20, `${ran} sandboxes ran and were stopped`);
  });
});

function probeLimits() {
  return { memoryMb: 192, processes: 48, openFiles: 256, cpuPercent: 100, volumeMb: 16 };
}

describe('AGT-2: a deleted agent’s instance', () => {
  test('AGT-2: removing it stops the sandbox and deletes its directory; links the agent left in its volume are removed, never followed', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    const outside = path.join(rt.dataDir, `keep-${randomBytes(4).toString('hex')}`);
    await mkdir(outside);
    await writeFile(path.join(outside, 'precious'), 'host data');
    await rt.driver.start(probeSpec(rt, who));
    // Inside, the host's paths do not exist; the links only point where the host would go if it followed them.
    await shell(
      rt,
      who.agentId,
      `ln -s ${outside} /data/dir-link; ln -s ${outside}/precious /data/file-link; mkdir -p /data/a/b`,
    );
    await rt.driver.remove(who.agentId);
    assert.equal(rt.driver.status(who.agentId).state, 'stopped');
    assert.equal(existsSync(path.join(rt.instancesDir, who.agentId)), false);
    assert.equal(await readFile(path.join(outside, 'precious'), 'utf8'), 'host data');
    assert.deepEqual(await sandboxProcesses(path.join(rt.instancesDir, who.agentId)), []);
    await rt.driver.remove(who.agentId); // idempotent
  });
});

describe('AGT-2: what an owner is told', () => {
  test('AGT-2: a host failure at start reaches the owner as a plain reason, without a host path; the operator’s log has the details', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const lines: string[] = [];
    const logger = linesLogger(lines);
    const hostPath = path.join(rt.instancesDir, 'somewhere', 'egress.sock');
    const driver = createBwrapDriver({
      instancesDir: rt.instancesDir,
      egress: {
        listen: async () => {
          throw Object.assign(new Error(`listen EINVAL: invalid argument ${hostPath}`), { code: 'EINVAL' });
        },
      },
      logger,
    });
    const who = await ids();
    const failure = await driver.start(probeSpec(rt, who)).then(
      () => assert.fail('started'),
      (error: Error) => error,
    );
    assert.equal(failure.message, HOST_SETUP_FAILED);
    assert.equal(driver.status(who.agentId).reason, HOST_SETUP_FAILED);
    assert.ok(!failure.message.includes(rt.dataDir));
    assert.ok(
      lines.some((line) => line.includes(hostPath)),
      'the operator’s log names what failed',
    );
  });
});

describe('AGT-5: support SSH into an instance', () => {
  // Checked to parse: about 4 in 1,000 keys ssh2 generates are ones it cannot read back.
  const operator = generateSupportKeyPair();
  const stranger = generateSupportKeyPair();

  function connect(agentId: string, privateKey: string): Promise<ssh2.Client> {
    const hostKeyFile = path.join(hostDir(rt, agentId), 'support.hostkey.pub');
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      client.once('ready', () => resolve(client));
      client.once('error', reject);
      client.connect({
        sock: net.connect(path.join(hostDir(rt, agentId), 'support.sock')),
        username: 'support',
        privateKey,
        // Pinned: the host key the supervisor generated for this start.
        hostVerifier: (key: Buffer) =>
          readFileSync(hostKeyFile, 'utf8').trim().split(' ')[1] === key.toString('base64'),
      });
    });
  }

  function exec(client: ssh2.Client, command: string): Promise<{ code: number; stdout: string }> {
    return new Promise((resolve, reject) => {
      client.exec(command, (error, channel) => {
        if (error !== undefined) return reject(error);
        let stdout = '';
        let code = -1;
        channel.on('data', (chunk: Buffer) => {
          stdout += chunk.toString('utf8');
        });
        channel.on('exit', (exitCode: number) => {
          code = exitCode;
        });
        channel.on('close', () => resolve({ code, stdout }));
        channel.stderr.resume();
      });
    });
  }

  test('AGT-5: with the operator key a started instance gives exec and shell as the agent; a wrong key is refused', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who, { supportKey: operator.public }));
    t.after(() => rt.driver.stop(who.agentId));
    const client = await connect(who.agentId, operator.private);
    const result = await exec(client, 'id -u; pwd; echo $PORT');
    assert.deepEqual(result, { code: 0, stdout: '1000\n/data\n8080\n' });
    // Only its own descriptors (3 is ls reading the directory): none of the supervisor's channels or listeners.
    const fds = await exec(client, 'ls /proc/self/fd | tr "\\n" " "');
    assert.deepEqual(fds, { code: 0, stdout: '0 1 2 3 ' });
    const shellOutput = await new Promise<string>((resolve, reject) => {
      client.shell(false, (error, channel) => {
        if (error !== undefined) return reject(error);
        let text = '';
        channel.on('data', (chunk: Buffer) => {
          text += chunk.toString('utf8');
        });
        channel.on('close', () => resolve(text));
        channel.end('echo from-the-shell; exit\n');
      });
    });
    assert.equal(shellOutput, 'from-the-shell\n');
    client.end();
    await assert.rejects(connect(who.agentId, stranger.private), /authentication methods failed/);
  });

  test('AGT-5: support is off without a key: no socket; turning it on opens it, turning it off ends an open session and removes it', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who));
    t.after(() => rt.driver.stop(who.agentId));
    const socket = path.join(hostDir(rt, who.agentId), 'support.sock');
    assert.equal(existsSync(socket), false);
    const listening = await shell(rt, who.agentId, 'ls /run/enclave');
    assert.equal(listening.stdout, 'egress.sock\n');
    await rt.driver.setSupportAccess(who.agentId, operator.public);
    assert.equal(existsSync(socket), true);
    const client = await connect(who.agentId, operator.private);
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    // A shell that is open and busy, with the promise of its channel's close.
    const { ended } = await new Promise<{ ended: Promise<string> }>((resolve, reject) => {
      client.shell(false, (error, channel) => {
        if (error !== undefined) return reject(error);
        const closed = new Promise<string>((done) => channel.on('close', () => done('closed')));
        channel.on('data', (chunk: Buffer) => {
          if (chunk.toString('utf8').includes('open')) resolve({ ended: closed });
        });
        channel.write('echo open; sleep 600\n');
      });
    });
    await rt.driver.setSupportAccess(who.agentId, undefined);
    assert.equal(await ended, 'closed');
    await closed;
    assert.equal(existsSync(socket), false);
    assert.equal(existsSync(path.join(hostDir(rt, who.agentId), 'support.hostkey.pub')), false);
    const refused = await new Promise<string>((resolve) => {
      net.connect(socket).once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? ''));
    });
    assert.equal(refused, 'ENOENT');
    const leftovers = await shell(
      rt,
      who.agentId,
      'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done | grep -c "^sleep 600"',
    );
    assert.equal(leftovers.stdout.trim(), '0', 'the session’s shell and its children are gone too');
  });
});

describe('the output log', () => {
  test('is capped: past its size it rotates once, and the tail reads across both files', async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'enclave-log-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'output.log');
    for (let round = 0; round < 3; round++) {
      const log = createOutputLog(file, 100);
      for (let i = 0; i < 10; i++) log.write(Buffer.from(`round ${round} line ${i}\n`));
      log.note('done');
      await new Promise<void>((resolve) => log.end(resolve));
    }
    assert.ok((await stat(file)).size <= 100);
    assert.ok((await stat(`${file}.1`)).size <= 100);
    const lines = await tailLines(file, 3);
    assert.deepEqual(lines, ['round 2 line 8', 'round 2 line 9', '[enclave] done']);
    assert.deepEqual(await tailLines(path.join(dir, 'missing.log'), 5), []);
    assert.deepEqual(await tailLines(file, 0), []);
  });
});
