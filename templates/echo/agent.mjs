// The echo agent: a tiny, dependency-free HTTP agent to try Enclave with.
//
//   GET  /                    → { agent: "echo", credential_set, credential_last4 };
//                               a browser (Accept: text/html) gets a page to talk to it instead
//   POST / or POST /messages  → { echo: <the JSON body> }, plus { text: <its text> } when the body has a
//                               string `text`: a relay message ({ thread_id, message_id, from, text }, the
//                               text inside Enclave's untrusted-content envelope) is answered with its own
//                               text, which becomes the agent's reply in the thread; a form post
//                               (message=…) → the page, with the reply
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

const escapeHtml = (text) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c],
  );

/** The page a browser gets: what reached the agent, and a form whose reply is shown on the next page (no script). */
function page(response, statusCode, exchange) {
  const credential = status.credential_set
    ? status.credential_last4 === null
      ? 'A credential reached it (too short to show any of it).'
      : `A credential ending in <code>${escapeHtml(status.credential_last4)}</code> reached it.`
    : 'No credential reached it.';
  const reply =
    exchange === undefined
      ? ''
      : `<section aria-live="polite"><h2>Reply</h2><p>You said:</p><pre>${escapeHtml(exchange.sent)}</pre>
<p>The agent echoed:</p><pre id="reply">${escapeHtml(exchange.reply)}</pre></section>`;
  const text = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Echo agent</title></head>
<body><main><h1>Echo agent</h1><p>This agent runs in its own sandbox on Enclave. ${credential}</p>
<form method="post" action="/messages"><label for="message">Message</label><br>
<textarea id="message" name="message" rows="3" cols="40" maxlength="4000" required></textarea><br>
<button type="submit">Send</button></form>${reply}
<p>Programs talk to it in JSON: <code>POST /messages</code> with any JSON body.</p></main></body></html>`;
  response.writeHead(statusCode, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
  });
  response.end(text);
}

/** A browser asks for HTML first; programs (curl, fetch, the relay) get JSON as before. */
function wantsHtml(request) {
  const accept = request.headers.accept ?? '';
  return /\btext\/html\b/.test(accept) && !/^\s*application\/json/.test(accept);
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
    return wantsHtml(request) ? page(response, 200, undefined) : send(response, 200, status);
  }
  if (pathname === '/' || pathname === '/messages') {
    if (request.method !== 'POST') {
      response.setHeader('allow', pathname === '/' ? 'GET, HEAD, POST' : 'POST');
      return send(response, 405, { error: 'method_not_allowed' });
    }
    const body = await readBody(request, response);
    if (body === undefined) return;
    if ((request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      const sent = new URLSearchParams(body.toString('utf8')).get('message') ?? '';
      return page(response, 200, { sent, reply: sent });
    }
    let message;
    try {
      message = JSON.parse(body.toString('utf8'));
    } catch {
      return send(response, 400, { error: 'invalid_json', message: 'the body is not valid JSON' });
    }
    // A relay message's answer is its `text` (Enclave's relay contract, README "Relay messages").
    const text = typeof message?.text === 'string' ? { text: message.text } : {};
    return send(response, 200, { ...text, echo: message });
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
