import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { type GatewayFixture, startGatewayFixture } from '../../test/helpers/gateway.ts';
import { sendRaw } from '../../test/helpers/http.ts';
import { withTenant } from '../db/tenant.ts';

// AGT-7: what passes through the gateway is the provider's and the agent's
// own bytes. A raw upstream (standing in for xAI here, at the network
// boundary) records the request exactly as it arrived and answers with a
// stream whose bytes no HTTP library would write itself: CRLF and LF lines,
// a comment, non-ASCII text, and chunks cut mid-line and mid-character.

const ANSWER = [
  ': keep-alive comment\r\n\r\n',
  'data: {"choices":[{"delta":{"content":"h\u00e9llo \u2603"}}]}\n\n',
  'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\r\n\r\n',
  'data: [DONE]\n\n',
].join('');

let upstream: http.Server;
let seen: { headers: http.IncomingHttpHeaders; body: Buffer; url: string } | undefined;
let fx: GatewayFixture;

before(async () => {
  upstream = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      seen = { headers: request.headers, body: Buffer.concat(chunks), url: request.url ?? '' };
      response.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': 'req-raw-1' });
      const bytes = Buffer.from(ANSWER, 'utf8');
      // Cut inside a line and inside the two-byte é: the gateway must not care.
      const cuts = [3, 37, bytes.indexOf(0xa9) > 0 ? bytes.indexOf(0xa9) : 40, 90, bytes.length];
      let from = 0;
      for (const to of cuts) {
        response.write(bytes.subarray(from, to));
        from = to;
      }
      response.end();
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  fx = await startGatewayFixture({
    gateway: { upstreams: { anthropic: url, openai: url, google: url, xai: url } },
  });
});

after(async () => {
  await fx.close();
  await new Promise((resolve) => upstream.close(resolve));
});

test('AGT-7: the agent’s body reaches the provider byte for byte and the streamed answer comes back byte for byte; only the key header is replaced', async () => {
  const tenant = await fx.tenant();
  const agent = await fx.agent(tenant, { xai: 'xai-raw-key-0123456789' });
  const body = Buffer.from(
    '{ "model" : "grok-4",\n  "stream": true, "stream_options": {"include_usage": true},\n  "messages": [{"role": "user", "content": "caf\u00e9 \\u2603"}] }',
    'utf8',
  );
  const answer = await sendRaw(`${agent.url}/xai/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${agent.token}`,
      'content-type': 'application/json',
      'x-custom-trace': 'trace-1',
      cookie: 'session=should-not-pass',
      'proxy-authorization': 'Basic c2hvdWxkOm5vdA==',
      'x-forwarded-for': '10.0.0.1',
      // Hop-by-hop for this message only (RFC 9110 §7.6.1): named in Connection, never passed on.
      connection: 'close, x-hop-only',
      'x-hop-only': 'not for the provider',
    },
    body,
  });
  assert.equal(answer.status, 200);
  assert.ok(answer.body.equals(Buffer.from(ANSWER, 'utf8')), 'the answer changed on the way');
  assert.equal(answer.headers['x-request-id'], 'req-raw-1');
  assert.ok(seen !== undefined);
  assert.ok(seen.body.equals(body), 'the request body changed on the way');
  assert.equal(seen.url, '/v1/chat/completions');
  assert.equal(seen.headers.authorization, 'Bearer xai-raw-key-0123456789');
  assert.equal(seen.headers['x-custom-trace'], 'trace-1');
  for (const dropped of ['cookie', 'proxy-authorization', 'x-forwarded-for', 'x-api-key', 'x-hop-only']) {
    assert.equal(seen.headers[dropped], undefined, dropped);
  }
  assert.ok(!JSON.stringify(seen.headers).includes(agent.token));
  // The usage was read from the stream as it passed.
  await agent.listener.close();
  const [row] = await withTenant(
    fx.db.app,
    tenant,
    (tx) => tx<{ input_tokens: number; output_tokens: number }[]>`
      select input_tokens::float8 as input_tokens, output_tokens::float8 as output_tokens
      from gateway_calls where agent_id = ${agent.agentId}::uuid`,
  );
  assert.deepEqual({ ...row }, { input_tokens: 7, output_tokens: 2 });
});
