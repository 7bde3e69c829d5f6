// The echo agent: a tiny, dependency-free HTTP agent to try Enclave with.
//
//   GET  /                    → { agent: "echo", credential_set, credential_last4 }
//   POST / or POST /messages  → { echo: <the JSON body> }
//   GET  /outbound?url=http://… → { status } of one GET through the platform's egress proxy
//
// It listens on 127.0.0.1:$PORT (default 8080); Enclave's ingress reaches it
// there. ECHO_TOKEN is the optional credential of the template: the agent
// reports only its last 4 characters (and nothing of a value shorter than 8),
// so a user can check which credential reached it without it being shown.
// SIGTERM (or SIGINT) closes the server and exits 0 once in-flight requests finish.

import { createServer, request as httpRequest } from 'node:http';

const MAX_BODY_BYTES = 1024 * 1024;
const STOP_GRACE_MS = 5000;

function listenPort() {
  const raw = process.env.PORT ?? '8080';
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port < 1 || port > 65535) {
    process.stderr.write(`echo agent: PORT must be a port number from 1 to 65535 (got "${raw}")\n`);
    process.exit(2);
  }
  return port;
}

function credentialLast4() {
  const token = process.env.ECHO_TOKEN ?? '';
  // The last 4 of a short value would be most of it.
  return token.length >= 8 ? token.slice(-4) : null;
}

const status = Object.freeze({
  agent: 'echo',
  credential_set: (process.env.ECHO_TOKEN ?? '') !== '',
  credential_last4: credentialLast4(),
});

function send(response, statusCode, body) {
  const text = JSON.stringify(body);
  response.writeHead(statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  response.end(text);
}

/** The request body, or undefined once a 413 has been sent for a body over MAX_BODY_BYTES. */
async function readBody(request, response) {
  const declared = Number(request.headers['content-length'] ?? 0);
  const tooLarge = () => {
    response.setHeader('connection', 'close');
    send(response, 413, { error: 'body_too_large', message: `the body is over ${MAX_BODY_BYTES} bytes` });
    request.resume();
    return undefined;
  };
  if (declared > MAX_BODY_BYTES) return tooLarge();
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * One plain-HTTP GET through HTTP_PROXY, the way any agent's outbound traffic
 * leaves its sandbox: the status the destination (or the proxy) answered.
 */
function outbound(target) {
  const proxy = new URL(process.env.HTTP_PROXY ?? process.env.http_proxy ?? 'http://127.0.0.1:1');
  return new Promise((resolve) => {
    const outgoing = httpRequest(
      {
        host: proxy.hostname,
        port: proxy.port,
        method: 'GET',
        path: target,
        headers: { host: new URL(target).host },
      },
      (answer) => {
        answer.resume();
        answer.on('end', () => resolve({ status: answer.statusCode }));
      },
    );
    outgoing.setTimeout(15_000, () => outgoing.destroy(new Error('timed out')));
    outgoing.on('error', (error) => resolve({ error: error.message }));
    outgoing.end();
  });
}

async function handle(request, response) {
  const { pathname, searchParams } = new URL(request.url ?? '/', 'http://agent.invalid');
  if (pathname === '/outbound' && request.method === 'GET') {
    const target = searchParams.get('url') ?? '';
    if (!/^http:\/\/[^\s/]+(\/\S*)?$/.test(target)) {
      return send(response, 400, { error: 'bad_url', message: 'url must be an http:// URL' });
    }
    return send(response, 200, await outbound(target));
  }
  if (pathname === '/' && (request.method === 'GET' || request.method === 'HEAD')) {
    return send(response, 200, status);
  }
  if (pathname === '/' || pathname === '/messages') {
    if (request.method !== 'POST') {
      response.setHeader('allow', pathname === '/' ? 'GET, HEAD, POST' : 'POST');
      return send(response, 405, { error: 'method_not_allowed' });
    }
    const body = await readBody(request, response);
    if (body === undefined) return;
    let message;
    try {
      message = JSON.parse(body.toString('utf8'));
    } catch {
      return send(response, 400, { error: 'invalid_json', message: 'the body is not valid JSON' });
    }
    return send(response, 200, { echo: message });
  }
  return send(response, 404, { error: 'not_found' });
}

const server = createServer((request, response) => {
  handle(request, response).catch((error) => {
    process.stderr.write(`echo agent: ${error?.message ?? error}\n`);
    if (!response.headersSent) send(response, 500, { error: 'internal' });
    else response.destroy();
  });
});

server.on('error', (error) => {
  process.stderr.write(`echo agent: cannot listen: ${error.message}\n`);
  process.exit(1);
});

server.listen(listenPort(), '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`echo agent listening on http://127.0.0.1:${port}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(1), STOP_GRACE_MS).unref();
}

process.once('SIGTERM', stop);
process.once('SIGINT', stop);
