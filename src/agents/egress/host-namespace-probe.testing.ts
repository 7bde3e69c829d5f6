// Test support only (no production code imports this): run by
// host-addresses.security.test.ts inside a network namespace of its own,
// whose interfaces the test has set up. It plays the host: a service bound to
// 0.0.0.0 (and ::), and the real egress proxy, whose records reach the test's
// database through a Unix socket the test bridges to it (the namespace has no
// route to the database's TCP address). It prints one JSON line: what a
// direct connection and what each proxy answered.
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { connect as connectDb } from '../../db/target.ts';
import { createLogger } from '../../logger.ts';
import { createEgressProxy } from './proxy.ts';

export interface ProbeInput {
  /** The directory holding the bridged `.s.PGSQL.<port>` socket, and the listeners' sockets. */
  readonly dir: string;
  readonly dbPort: number;
  readonly database: string;
  readonly sslmode: string | undefined;
  readonly user: string;
  readonly password: string;
  readonly tenantId: string;
  /** One agent per proxy run, keyed by the run's name. */
  readonly runs: readonly { readonly name: string; readonly agentId: string; readonly allow: string[] }[];
  /** Addresses to try: each as a CONNECT authority host and in a plain-HTTP URL. */
  readonly hosts: readonly string[];
}

export interface ProbeAnswer {
  readonly status: number;
  readonly body: string;
}

export interface ProbeOutput {
  readonly port: number;
  /** Without the proxy: the service answers at every address (so a refusal is the proxy's doing). */
  readonly direct: Record<string, string>;
  /** run name → `CONNECT <host>` / `GET <host>` → answer. */
  readonly runs: Record<string, Record<string, ProbeAnswer>>;
}

const input = JSON.parse(process.argv[2] ?? '') as ProbeInput;
const bracket = (host: string): string => (host.includes(':') ? `[${host}]` : host);

function listen(server: net.Server, options: net.ListenOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => resolve((server.address() as net.AddressInfo).port));
  });
}

function direct(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

function viaConnect(socketPath: string, authority: string): Promise<ProbeAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let received = '';
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      const status = Number(received.split(' ')[1]);
      if (status === 200) {
        socket.destroy();
        resolve({ status, body: '' });
      }
    });
    socket.on('end', () => {
      const [head = '', body = ''] = received.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), body: body.trim() });
    });
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

function viaHttp(socketPath: string, url: string): Promise<ProbeAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: url, method: 'GET', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
    });
    req.on('error', reject);
    req.end();
  });
}

const service = (_req: http.IncomingMessage, res: http.ServerResponse) => res.end('a host service');
const v4 = http.createServer(service);
const v6 = http.createServer(service);
const port = await listen(v4, { host: '0.0.0.0', port: 0 });
await listen(v6, { host: '::', port, ipv6Only: true });

const sql = connectDb(
  {
    host: input.dir, // a directory: postgres.js connects to <dir>/.s.PGSQL.<port>
    port: input.dbPort,
    database: input.database,
    sslmode: input.sslmode,
    admin: { user: input.user, password: input.password },
  },
  { user: input.user, password: input.password },
  { max: 2 },
);
const logger = createLogger('error', process.stderr);
const output: ProbeOutput = { port, direct: {}, runs: {} };
try {
  for (const host of input.hosts) output.direct[host] = await direct(host, port);
  for (const run of input.runs) {
    const proxy = createEgressProxy({ sql, logger, allow: run.allow });
    const socketPath = path.join(input.dir, `${run.agentId}.sock`);
    const listener = await proxy.listen(socketPath, {
      tenantId: input.tenantId,
      agentId: run.agentId,
      allowlist: undefined,
    });
    const answers: Record<string, ProbeAnswer> = {};
    try {
      for (const host of input.hosts) {
        answers[`CONNECT ${host}`] = await viaConnect(socketPath, `${bracket(host)}:${port}`);
        answers[`GET ${host}`] = await viaHttp(socketPath, `http://${bracket(host)}:${port}/`);
      }
    } finally {
      await listener.close();
    }
    output.runs[run.name] = answers;
  }
} finally {
  v4.close();
  v6.close();
  await sql.end({ timeout: 5 });
}
process.stdout.write(`${JSON.stringify(output)}\n`);
