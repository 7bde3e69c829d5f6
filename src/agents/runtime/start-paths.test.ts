import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { requireTool } from '../../../test/helpers/system-tools.ts';
import { sandboxHostUid } from './bwrap-args.ts';
import type { RuntimeDriver } from './driver.ts';
import { detectCgroups } from './limits.ts';
import {
  createRuntime,
  hostDir,
  nextExit,
  probeSpec,
  type Runtime,
  sandboxProcesses,
  shell,
} from './sandbox-fixtures.testing.ts';
import { HOST_SETUP_FAILED } from './sandbox-run.ts';

// An instance starts one of two ways (docs/runtime.md): with the native
// launcher and starter the host built (native/), in which the agent starts
// beside its supervisor; or, on a host without a C compiler, through
// prlimit, unshare, a shell, mount and setpriv, with the supervisor starting
// the agent. Either way the agent must get the same sandbox.

let rt: Runtime;
let tenantId: string;
let ways: (readonly [string, RuntimeDriver])[];

before(async () => {
  rt = await createRuntime();
  tenantId = await rt.tenant('start paths');
  ways = [
    ['with the native helpers', rt.driver],
    ['without them', rt.driverWith(undefined, { native: false })],
  ];
  // Two Python agents: one connects to the proxy port first thing (and fails if refused), one
  // listens only after half a second. Both answer GET with 200 "ok".
  const firsts = [
    ['proxy-first.py', "socket.create_connection(('127.0.0.1', 3128), timeout=5).close()"],
    ['slow-listen.py', 'time.sleep(0.5)'],
  ] as const;
  for (const [name, first] of firsts) {
    const agent = [
      'import http.server, os, socket, time',
      first,
      'class Handler(http.server.BaseHTTPRequestHandler):',
      '    def do_GET(self):',
      '        self.send_response(200)',
      "        self.send_header('content-length', '2')",
      '        self.end_headers()',
      "        self.wfile.write(b'ok')",
      '    def log_message(self, *args):',
      '        pass',
      "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), Handler).serve_forever()",
      '',
    ];
    await writeFile(path.join(rt.templatesDir, name), agent.join('\n'), { mode: 0o644 });
  }
  await writeFile(path.join(rt.templatesDir, 'not-executable.sh'), '#!/bin/sh\n', { mode: 0o644 });
  await chmod(path.join(rt.templatesDir, 'not-executable.sh'), 0o644);
});
after(() => rt.close());

/** bubblewrap and a C compiler (for the native way), and Python for the agents written in it. */
function prerequisites(t: TestContext, python?: 'python'): boolean {
  return (
    requireTool(t, 'bwrap', 'bubblewrap') &&
    requireTool(t, 'cc', 'gcc') &&
    (python === undefined || requireTool(t, '/usr/bin/python3', 'python3'))
  );
}

/** What the sandbox's first process runs: the starter, or the supervisor itself. */
async function firstProcess(agentId: string): Promise<string> {
  return (await shell(rt, agentId, "tr '\\0' ' ' < /proc/2/cmdline")).stdout.trim();
}

describe('two ways to start an instance', () => {
  test('AGT-2, AGT-6, VLT-5: either way the agent gets the same uid, directory, environment, rlimits, seccomp and capabilities, and every process is in its cgroups under its own host uid', async (t) => {
    if (!prerequisites(t)) return;
    const secret = randomBytes(12).toString('hex');
    const seen: string[] = [];
    const cgroups = await detectCgroups();
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      await driver.start(
        probeSpec(
          rt,
          { tenantId, agentId },
          {
            env: { GREETING: 'hello' },
            secrets: new Map([['PROBE_SECRET', Buffer.from(secret)]]),
          },
        ),
      );
      const first = await firstProcess(agentId);
      if (way === 'without them') assert.match(first, /^\/opt\/enclave\/bin\/node .*supervisor\.mjs$/);
      else
        assert.match(
          first,
          /^\/opt\/enclave\/bin\/enclave-starter \/opt\/enclave\/bin\/node .*supervisor\.mjs --starter$/,
        );
      const inside = await shell(
        rt,
        agentId,
        [
          'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd)"',
          'env | grep -v "^PWD=" | sort',
          'echo "nofile=$(ulimit -n) fsize=$(ulimit -f) core=$(ulimit -c)"',
          "grep -E '^(Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status",
          // What the agent's processes hold: none of the supervisor's channels or listening sockets.
          'echo "fds=$(ls /proc/self/fd | tr "\\n" " ")"',
        ].join('\n'),
      );
      assert.equal(inside.code, 0, inside.stderr);
      seen.push(inside.stdout);
      assert.match(inside.stdout, new RegExp(`^PROBE_SECRET=${secret}$`, 'm'));
      assert.match(inside.stdout, /^fds=0 1 2 3 $/m, way);
      const processes = await sandboxProcesses(path.join(rt.instancesDir, agentId));
      assert.ok(processes.length >= 3, `${way}: ${processes.length} processes`);
      for (const pid of processes) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
        if (status === '') continue; // gone since (the probe's shell)
        if (process.getuid?.() === 0) {
          const uid = sandboxHostUid(agentId);
          assert.match(
            status,
            new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'),
            `${way}: pid ${pid}`,
          );
        }
        const membership = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
        for (const controller of ['memory', 'pids', 'cpu'] as const) {
          if (cgroups.parents[controller] === undefined || membership === '') continue;
          assert.match(
            membership,
            new RegExp(`/enclave/${agentId}$`, 'm'),
            `${way}: pid ${pid} in ${controller}`,
          );
        }
      }
      await driver.stop(agentId);
    }
    assert.equal(seen[0], seen[1]);
  });

  test('AGT-6: either way, a command that does not exist, one that cannot be run and one that exits at once are refused with the reason', async (t) => {
    if (!prerequisites(t)) return;
    for (const [way, driver] of ways) {
      const start = async (command: string[]) => {
        const agentId = await rt.agent(tenantId);
        await driver.start(probeSpec(rt, { tenantId, agentId }, { command }));
      };
      await assert.rejects(start(['no-such-program']), /command not found: no-such-program/, way);
      await assert.rejects(
        start(['./not-executable.sh']),
        /command not executable: \.\/not-executable\.sh/,
        way,
      );
      await assert.rejects(start(['node', 'exit-at-once.mjs']), /exited with code 3/, way);
    }
  });

  test('AGT-2: either way, an agent that prints what looks like a setup failure and kills its supervisor is not taken for one: the operator’s log stays clean', async (t) => {
    if (!prerequisites(t)) return;
    const script = [
      'printf "enclave-launch: planted\\nbwrap: planted\\n" >&2',
      'for p in /proc/[0-9]*; do grep -q "supervisor[.]mjs" "$p/cmdline" 2>/dev/null && kill -9 "$(basename "$p")"; done',
      'sleep 5',
    ].join('; ');
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      await assert.rejects(
        driver.start(probeSpec(rt, { tenantId, agentId }, { command: ['/bin/sh', '-c', script] })),
        (error: Error) => {
          assert.notEqual(error.message, HOST_SETUP_FAILED, way);
          return true;
        },
      );
      assert.ok(!rt.logLines.some((line) => line.includes('planted')), way);
    }
  });

  test('AGT-4: either way, the agent’s first connection to the proxy port, made as it starts, is taken', async (t) => {
    if (!prerequisites(t, 'python')) return;
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      // A Python agent starts before a Node supervisor could listen: the port was bound for it.
      await driver.start(
        probeSpec(rt, { tenantId, agentId }, { command: ['/usr/bin/python3', 'proxy-first.py'] }),
      );
      assert.equal(driver.status(agentId).state, 'running', way);
      await driver.stop(agentId);
    }
  });

  test('AGT-3: either way, a connection made before the agent listens is answered once it does, even when it ended its side after the request', async (t) => {
    if (!prerequisites(t, 'python')) return;
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      const starting = driver.start(
        probeSpec(rt, { tenantId, agentId }, { command: ['/usr/bin/python3', 'slow-listen.py'] }),
      );
      const socketPath = path.join(hostDir(rt, agentId), 'ingress.sock');
      // Once the sandbox runs, the socket is the sandbox's alone (the host closes its copy as it spawns).
      const marker = path.join(rt.instancesDir, agentId);
      while ((await sandboxProcesses(marker)).length === 0) await new Promise((next) => setTimeout(next, 5));
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ path: socketPath });
        let text = '';
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1');
        });
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
        socket.setTimeout(20_000, () => reject(new Error(`${way}: no answer within 20 s`)));
        socket.end('GET / HTTP/1.0\r\nHost: agent.localhost\r\n\r\n');
      });
      await starting;
      assert.match(answer, /^HTTP\/1\.0 200 /, way);
      assert.match(answer, /\r\n\r\nok$/, way);
      await driver.stop(agentId);
    }
  });

  test('VLT-5: either way, the secrets are in the agent’s environment only: not in its supervisor’s or starter’s, nor in any command line', async (t) => {
    if (!prerequisites(t)) return;
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      const secret = randomBytes(12).toString('hex');
      await driver.start(
        probeSpec(rt, { tenantId, agentId }, { secrets: new Map([['PROBE_SECRET', Buffer.from(secret)]]) }),
      );
      // The secret in two halves, joined in a file: no command line of the search holds it whole.
      const [head, tail] = [secret.slice(0, 12), secret.slice(12)];
      const found = await shell(
        rt,
        agentId,
        `printf '%s%s\\n' ${head} ${tail} > /tmp/secret
         for p in /proc/[0-9]*; do
           if grep -qFf /tmp/secret "$p/environ" 2>/dev/null; then tr '\\0' ' ' < "$p/cmdline"; echo; fi
           if grep -qFf /tmp/secret "$p/cmdline" 2>/dev/null; then echo "argv of $p"; fi
         done`,
      );
      const holders = found.stdout.trim().split('\n');
      assert.ok(
        holders.some((line) => line.includes('probe.mjs')),
        `${way}: the agent holds it`,
      );
      for (const line of holders) {
        assert.ok(!/supervisor\.mjs|enclave-starter|^argv of/.test(line), `${way}: ${line}`);
      }
      await driver.stop(agentId);
    }
  });

  test('AGT-6: either way, when the supervisor dies the agent goes with it, and the instance ends', async (t) => {
    if (!prerequisites(t)) return;
    for (const [way, driver] of ways) {
      const agentId = await rt.agent(tenantId);
      await driver.start(probeSpec(rt, { tenantId, agentId }));
      const marker = path.join(rt.instancesDir, agentId);
      let supervisor: number | undefined;
      for (const pid of await sandboxProcesses(marker)) {
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline.includes('supervisor.mjs') && !cmdline.includes('enclave-starter')) supervisor = pid;
      }
      assert.ok(supervisor !== undefined, way);
      const exited = nextExit(rt, agentId);
      process.kill(supervisor, 'SIGKILL');
      await exited;
      assert.equal(driver.status(agentId).state, 'crashed', way);
      assert.deepEqual(await sandboxProcesses(marker), [], way);
    }
  });
});
