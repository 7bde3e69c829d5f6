// Attack: the owner of a callback URL answers its first DNS query with an allowed address and the next with a private one (DNS rebinding), redirects to an internal address, answers with 100 MB, or trickles its answer for minutes, to reach inside or to hold the platform's delivery workers.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { requireTool } from '../../test/helpers/system-tools.ts';
import type { LookupFn } from '../agents/egress/resolver.ts';
import { freePort } from '../free-port.ts';
import { createCallbackRules } from './destination.ts';
import { RESPONSE_PREFIX_BYTES, sendCallback } from './send.ts';

// The receiver listens on 127.0.0.1, which the operator range of these tests
// allows (ENCLAVE_CALLBACK_ALLOW=127.0.0.1/32): it stands for a public
// receiver. The names are answered by fake resolvers, at the resolver
// boundary (DNS is outside the machine).

const MB = 1024 * 1024;

interface Received {
  readonly path: string;
  readonly host: string | undefined;
  /** The address the connection arrived at: which address the sender connected to. */
  readonly localAddress: string | undefined;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

const received: Received[] = [];
/** Resolved with the bytes written when the 100 MB answer's connection closes. */
let hugeClosed = Promise.withResolvers<number>();
/** Resolved when a trickling or silent answer's connection closes. */
let slowClosed = Promise.withResolvers<string>();

function trickle(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.write('x');
  const timer = setInterval(() => res.write('x'), 20);
  res.once('close', () => {
    clearInterval(timer);
    slowClosed.resolve('trickle');
  });
}

function huge(res: ServerResponse): void {
  const chunk = Buffer.alloc(64 * 1024, 'a');
  let written = 0;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(100 * MB) });
  const pump = (): void => {
    while (written < 100 * MB) {
      written += chunk.byteLength;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.once('close', () => hugeClosed.resolve(written));
  pump();
}

const server = http.createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const path = req.url ?? '';
  received.push({
    path,
    host: req.headers.host,
    localAddress: req.socket.localAddress,
    headers: req.headers,
    body: Buffer.concat(chunks).toString(),
  });
  if (path === '/ok') res.writeHead(200, { 'content-type': 'text/plain' }).end(`ok\0${'y'.repeat(2000)}`);
  else if (path === '/redirect') res.writeHead(302, { location: 'http://169.254.169.254/latest' }).end();
  else if (path === '/huge') huge(res);
  else if (path === '/trickle') trickle(res);
  else if (path === '/silent') res.once('close', () => slowClosed.resolve('silent'));
  else res.writeHead(500).end('no such path');
});
let port: number;

before(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  server.close();
  await once(server, 'close');
});

/** Rules with the test receiver's address allowed, in development (http) unless said otherwise. */
const rulesWith = (lookup: LookupFn, env: 'development' | 'production' = 'development') =>
  createCallbackRules({ env, callbackAllow: ['127.0.0.1/32'] }, lookup);

const receiverDns: LookupFn = async () => [{ address: '127.0.0.1', family: 4 }];

test('RLY-12: each attempt resolves the name once and connects to the address it checked; a rebinding answer on the next attempt is refused before any connection', async () => {
  // The rebinding resolver: its first answer is the allowed receiver, every later one the metadata address.
  const asked: string[] = [];
  const rebinding: LookupFn = async (host) => {
    asked.push(host);
    return [{ address: asked.length === 1 ? '127.0.0.1' : '169.254.169.254', family: 4 }];
  };
  const rules = rulesWith(rebinding);
  const before = received.length;
  const first = await sendCallback(
    { url: `http://hooks.rebind.test:${port}/ok`, headers: { 'webhook-id': 'msg_1' }, body: '{"a":1}' },
    rules,
  );
  assert.equal(first.status, 200);
  assert.equal(first.error, undefined);
  assert.equal(first.address, '127.0.0.1');
  // One lookup for the check, none for the connection: the checked answer is the one connected to.
  assert.deepEqual(asked, ['hooks.rebind.test']);
  const got = received.slice(before);
  assert.equal(got.length, 1);
  assert.equal(got[0]?.localAddress, '127.0.0.1');
  // Host is the name, not the address; the caller's headers and body arrive as sent.
  assert.equal(got[0]?.host, `hooks.rebind.test:${port}`);
  assert.equal(got[0]?.headers['webhook-id'], 'msg_1');
  assert.equal(got[0]?.body, '{"a":1}');

  const second = await sendCallback({ url: `http://hooks.rebind.test:${port}/ok`, body: '{}' }, rules);
  assert.equal(second.error, 'forbidden_destination');
  assert.equal(second.status, undefined);
  assert.equal(second.address, undefined);
  assert.match(second.reason ?? '', /metadata/);
  assert.deepEqual(asked, ['hooks.rebind.test', 'hooks.rebind.test']);
  assert.equal(received.length, before + 1);
});

test('RLY-12: an attempt to a name resolving to a forbidden class, or to a forbidden literal, connects nowhere', async () => {
  const before = received.length;
  const strict = createCallbackRules({ env: 'development', callbackAllow: [] }, receiverDns);
  for (const url of [
    `http://hooks.example.test:${port}/ok`, // resolves to the receiver's 127.0.0.1, not allowed here
    `http://127.0.0.1:${port}/ok`,
    `http://[::ffff:127.0.0.1]:${port}/ok`,
  ]) {
    const attempt = await sendCallback({ url, body: '{}' }, strict);
    assert.equal(attempt.error, 'forbidden_destination', url);
    assert.equal(attempt.address, undefined, url);
  }
  for (const address of ['10.0.0.1', 'fd00::1', '169.254.169.254', '100.64.1.1', '::ffff:192.168.0.1']) {
    const attempt = await sendCallback(
      { url: `http://hooks.example.test:${port}/ok`, body: '{}' },
      rulesWith(async () => [{ address, family: address.includes(':') ? 6 : 4 }]),
    );
    assert.equal(attempt.error, 'forbidden_destination', address);
  }
  assert.equal(received.length, before);
});

test('RLY-12: a 100 MB answer is cut at the response cap: too_large, its first 1 KB kept, the connection closed long before 100 MB', async () => {
  hugeClosed = Promise.withResolvers<number>();
  const attempt = await sendCallback(
    { url: `http://hooks.example.test:${port}/huge`, body: '{}', maxResponseBytes: 256 * 1024 },
    rulesWith(receiverDns),
  );
  assert.equal(attempt.error, 'too_large');
  assert.equal(attempt.status, 200);
  assert.equal(Buffer.byteLength(attempt.responsePrefix), RESPONSE_PREFIX_BYTES);
  assert.equal(attempt.responsePrefix, 'a'.repeat(RESPONSE_PREFIX_BYTES));
  const written = await hugeClosed.promise;
  assert.ok(written < 100 * MB, `the receiver wrote ${written} bytes before the sender hung up`);
});

test('RLY-12: an answer trickled byte by byte, or never sent, is cut at the attempt timeout', async () => {
  const rules = rulesWith(receiverDns);
  slowClosed = Promise.withResolvers<string>();
  const trickled = await sendCallback(
    { url: `http://hooks.example.test:${port}/trickle`, body: '{}', timeoutMs: 300 },
    rules,
  );
  assert.equal(trickled.error, 'timeout');
  assert.equal(trickled.status, 200);
  assert.match(trickled.responsePrefix, /^x+$/);
  assert.equal(await slowClosed.promise, 'trickle');

  slowClosed = Promise.withResolvers<string>();
  const silent = await sendCallback(
    { url: `http://hooks.example.test:${port}/silent`, body: '{}', timeoutMs: 300 },
    rules,
  );
  assert.equal(silent.error, 'timeout');
  assert.equal(silent.status, undefined);
  assert.equal(await slowClosed.promise, 'silent');

  // A resolver that never answers is cut by the same timer.
  const stuck = await sendCallback(
    { url: `http://hooks.example.test:${port}/ok`, body: '{}', timeoutMs: 300 },
    rulesWith(() => new Promise(() => {})),
  );
  assert.equal(stuck.error, 'timeout');
  assert.equal(stuck.address, undefined);
});

test('RLY-12: a redirect is not followed: the 302 is the attempt status and the receiver sees one request', async () => {
  const before = received.length;
  const attempt = await sendCallback(
    { url: `http://hooks.example.test:${port}/redirect`, body: '{}' },
    rulesWith(receiverDns),
  );
  assert.equal(attempt.status, 302);
  assert.equal(attempt.error, undefined);
  assert.deepEqual(
    received.slice(before).map((entry) => entry.path),
    ['/redirect'],
  );
});

test('RLY-12: a refused connection, a DNS failure and an http URL in production are outcomes with their code, never a throw', async () => {
  const closed = await freePort();
  const refused = await sendCallback(
    { url: `http://hooks.example.test:${closed}/ok`, body: '{}' },
    rulesWith(receiverDns),
  );
  assert.equal(refused.error, 'refused');
  assert.equal(refused.address, undefined);

  const noName = await sendCallback(
    { url: `http://hooks.example.test:${port}/ok`, body: '{}' },
    rulesWith(async () => {
      throw Object.assign(new Error('queryA ENOTFOUND'), { code: 'ENOTFOUND' });
    }),
  );
  assert.equal(noName.error, 'dns');

  const plain = await sendCallback(
    { url: `http://hooks.example.test:${port}/ok`, body: '{}' },
    rulesWith(receiverDns, 'production'),
  );
  assert.equal(plain.error, 'invalid_url');

  // The answer's first 1 KB is kept, NULs replaced (the log is a text column).
  const ok = await sendCallback(
    { url: `http://hooks.example.test:${port}/ok`, body: '{}' },
    rulesWith(receiverDns),
  );
  assert.equal(ok.status, 200);
  assert.equal(Buffer.byteLength(ok.responsePrefix), RESPONSE_PREFIX_BYTES + 2);
  assert.ok(ok.responsePrefix.startsWith('ok\uFFFDy'));
});

test('RLY-12: over https the connection goes to the checked address with the name as SNI, and a certificate not valid for the name fails as tls', async (t) => {
  if (!requireTool(t, 'openssl', 'openssl', ['version'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'enclave-callback-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A self-signed certificate for the name: no CA trusts it, so the sender must refuse it after the handshake starts.
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=hooks.tls.test',
      '-addext',
      'subjectAltName=DNS:hooks.tls.test',
      '-keyout',
      path.join(dir, 'key.pem'),
      '-out',
      path.join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  const names: string[] = [];
  const tls = https.createServer(
    {
      key: readFileSync(path.join(dir, 'key.pem')),
      cert: readFileSync(path.join(dir, 'cert.pem')),
      SNICallback: (name, done) => {
        names.push(name);
        done(null);
      },
    },
    (_req, res) => res.end('never'),
  );
  tls.listen(0, '127.0.0.1');
  await once(tls, 'listening');
  t.after(() => {
    tls.closeAllConnections();
    tls.close();
  });
  const tlsPort = (tls.address() as AddressInfo).port;
  const attempt = await sendCallback(
    { url: `https://hooks.tls.test:${tlsPort}/ok`, body: '{}' },
    rulesWith(receiverDns, 'production'),
  );
  assert.equal(attempt.error, 'tls');
  assert.equal(attempt.status, undefined);
  assert.equal(attempt.address, '127.0.0.1');
  assert.deepEqual(names, ['hooks.tls.test']);
});
