import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connectionListed, HOP_BY_HOP } from '../../http/hop-by-hop.ts';
import { requestHeaders, requestHeadText, responseHeaders, responseHeadText } from './headers.ts';
import {
  headEnd,
  headText,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  RequestFields,
  type RequestHead,
  ResponseFields,
  type ResponseHead,
} from './raw-http.ts';

// AGT-3: the fast path reads heads with a hand-written scanner. The attack: a
// head the scanner reads differently from the strict grammar (a byte let
// through, a field split elsewhere, a framing header missed) so that the
// ingress and the instance disagree on where a request or response ends, or
// a header the rules stop reaches the other side. Each head below, thousands
// of them generated from tricky parts, is read by the scanner and by the
// grammar written as regular expressions (how the fast path read heads
// before; what each field means is read by the same code, raw-http.ts's
// RequestFields and ResponseFields), and both must agree on every field; what
// the fast path passes on must be what the header rules (headers.ts) let
// through.

// The grammar, as regular expressions.
const REQUEST_LINE = /^([A-Z]{1,20}) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
const REQUEST_FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9]{2})(?: [\x20-\x7e\t\x80-\xff]*)?$/;
const RESPONSE_FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t\x80-\xff]*?)[ \t]*$/;

/** The head (its text before the blank line) read by the grammar: what the fast path must make of it. */
function grammarRequest(head: string) {
  const lines = head.split('\r\n');
  const start = REQUEST_LINE.exec(lines[0] ?? '');
  if (start === null || start[1] === 'CONNECT') return undefined;
  const raw: string[] = [];
  const fields = new RequestFields();
  for (const line of lines.slice(1)) {
    const field = REQUEST_FIELD.exec(line);
    if (field === null) return undefined;
    const [, name = '', value = ''] = field;
    if (!fields.take(name.toLowerCase(), value)) return undefined;
    raw.push(name, value);
  }
  const { host, contentLength, forwardedFor, close } = fields;
  if (host === undefined) return undefined;
  return {
    method: start[1],
    target: start[2],
    raw,
    host,
    contentLength: contentLength ?? 0,
    forwardedFor,
    close,
  };
}

function grammarResponse(head: string, method: string) {
  const lines = head.split('\r\n');
  const start = STATUS_LINE.exec(lines[0] ?? '');
  if (start === null) return undefined;
  const status = Number(start[2]);
  const raw: string[] = [];
  const fields = new ResponseFields(start[1] === '0');
  for (const line of lines.slice(1)) {
    const field = RESPONSE_FIELD.exec(line);
    if (field === null) return undefined;
    const [, name = '', value = ''] = field;
    if (!fields.take(name.toLowerCase(), value)) return undefined;
    raw.push(name, value);
  }
  const framing = fields.framing(method, status);
  return framing && { status, raw, framing, keepsOpenMs: fields.keepsOpenMs };
}

/** A small deterministic generator (mulberry32), so that a failure can be run again. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const REQUEST_LINES = [
  'GET / HTTP/1.1',
  'POST /upload?x=1&y=%20 HTTP/1.1',
  'DELETE /a/b/c HTTP/1.1',
  'ABCDEFGHIJKLMNOPQRST /twenty HTTP/1.1',
  'ABCDEFGHIJKLMNOPQRSTU /twenty-one HTTP/1.1',
  'get / HTTP/1.1',
  'GeT / HTTP/1.1',
  'CONNECT / HTTP/1.1',
  'CONNECT example.com:443 HTTP/1.1',
  'GET http://elsewhere/ HTTP/1.1',
  'GET * HTTP/1.1',
  'GET /a b HTTP/1.1',
  'GET  / HTTP/1.1',
  ' GET / HTTP/1.1',
  'GET / HTTP/1.1 ',
  'GET / HTTP/1.0',
  'GET / HTTP/1.11',
  'GET / HTTP/2',
  'GET / http/1.1',
  'GET /\t HTTP/1.1',
  'GET /\x7f HTTP/1.1',
  'GET /\xe9 HTTP/1.1',
  'GET /\x00 HTTP/1.1',
  'GET / HTTP/1.1\r',
  'GET /',
  'GET',
  '/ HTTP/1.1',
  '',
];
const HOST = 'ecab12cd34.agents.localhost:8080';
const REQUEST_FIELDS = [
  `Host: ${HOST}`,
  `host:${HOST}`,
  `HOST: \t ${HOST} \t `,
  'Host: other.example',
  'Host:',
  'Content-Length: 5',
  'content-length: 0',
  'Content-Length: 007',
  'Content-Length: -1',
  'Content-Length: 5 ',
  'Content-Length: 1234567890123456',
  'Content-Length: 5, 5',
  'Transfer-Encoding: chunked',
  'transfer-encoding: identity',
  'Expect: 100-continue',
  'Upgrade: websocket',
  'Connection: close',
  'connection: keep-alive',
  'Connection: Keep-Alive, Close',
  'Connection: close,keep-alive',
  'Connection: upgrade',
  'Connection: x-secret',
  'Connection: ',
  'Connection: close,',
  'Close: listed when Connection says close',
  'Keep-Alive: timeout=5',
  'TE: trailers',
  'Proxy-Authorization: Basic abc',
  'X-Forwarded-For: 203.0.113.9',
  'x-forwarded-for: 198.51.100.1, 10.0.0.1',
  'X-Forwarded-Proto: https',
  'X-Real-IP: 10.9.9.9',
  'Forwarded: for=10.0.0.1',
  'Cookie: a=1; enclave_session=secret; b=2',
  'cookie: enclave_session=only',
  'Cookie: a=1;b=2',
  'Cookie:  spaced = yes ;  ',
  'Accept: */*',
  'User-Agent: test/1.0 (x; y)',
  'X-Tab: a\tb',
  'X-Lead:\tvalue',
  'X-Trail: value \t ',
  'X-Empty:',
  'X-Blank:    ',
  "!#$%&'*+-.^_`|~09AZaz: token name",
  'X A: space in name',
  'X-A : space before colon',
  ': no name',
  'X-No-Colon value',
  'X-NUL: a\x00b',
  'X-DEL: a\x7fb',
  'X-Obs: caf\xe9',
  'X-CR: a\rb',
  'X-LF: a\nb',
  ' X-Folded: leading space',
  '\tcontinued',
];

const STATUS_LINES = [
  'HTTP/1.1 200 OK',
  'HTTP/1.0 200 OK',
  'HTTP/1.1 200',
  'HTTP/1.1 200 ',
  'HTTP/1.1 200  Two spaces',
  'HTTP/1.1 200\tOK',
  'HTTP/1.1 200OK',
  'HTTP/1.1 204 No Content',
  'HTTP/1.1 304 Not Modified',
  'HTTP/1.1 101 Switching Protocols',
  'HTTP/1.1 100 Continue',
  'HTTP/1.1 599 Custom',
  'HTTP/1.1 600 Too High',
  'HTTP/1.1 099 Too Low',
  'HTTP/1.1 20 Short',
  'HTTP/1.1 2000 Long',
  'HTTP/1.1 2x0 Letter',
  'HTTP/1.2 200 OK',
  'HTTP/2 200 OK',
  'http/1.1 200 OK',
  'HTTP/1.1  200 OK',
  ' HTTP/1.1 200 OK',
  'HTTP/1.1 200 Caf\xe9',
  'HTTP/1.1 200 O\x00K',
  'HTTP/1.1 200 O\x7fK',
  'HTTP/1.1',
  '',
];
const RESPONSE_FIELDS = [
  'Content-Length: 2',
  'content-length: 2',
  'Content-Length: 3',
  'Content-Length: 02',
  'Content-Length: 2 ',
  'Content-Length: -2',
  'Content-Length:',
  'Transfer-Encoding: chunked',
  'Transfer-Encoding: Chunked',
  'transfer-encoding: gzip',
  'Transfer-Encoding: gzip, chunked',
  'Connection: close',
  'Connection: keep-alive',
  'Connection: Keep-Alive, X-Secret',
  'Connection: x-secret',
  'connection: CLOSE',
  'X-Secret: listed',
  'Keep-Alive: timeout=5',
  'Keep-Alive: max=3, timeout=7',
  'Keep-Alive: timeout=abc',
  'Keep-Alive: timeout=1234567',
  'Proxy-Connection: keep-alive',
  'Trailer: X-Sum',
  'Upgrade: h2c',
  'Content-Type: text/plain',
  'Date: Thu, 03 Dec 2026 09:00:00 GMT',
  'Set-Cookie: plain=1; Path=/',
  'Set-Cookie: own=1; Domain=ecab12cd34.agents.localhost',
  'set-cookie: sibling=1; Domain=agents.localhost',
  'Set-Cookie: parent=1; domain=.localhost',
  'X-Obs: caf\xe9',
  'X-Obs-Only: \x80\xff',
  'X-Tab: a\tb',
  'X-Trail: value \t ',
  'X-Empty:',
  'X-NUL: a\x00b',
  'X-DEL: a\x7fb',
  'X-CR: a\rb',
  'X-LF: a\nb',
  'X A: space in name',
  'X-A : space before colon',
  ' X-Folded: leading space',
];

/**
 * Heads made of a start line and fields drawn from the lists: most start with a line the grammar
 * takes and carry `usual` (a Host for requests) somewhere, and one in four has a few bytes changed.
 */
function* heads(
  seed: number,
  starts: readonly string[],
  fields: readonly string[],
  usual?: string,
): Generator<string> {
  const next = random(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)] as T;
  const noise = '\r\n\t :;,\x00\x7f\x80\xffaZ9-';
  for (let i = 0; i < 4000; i++) {
    const lines = [next() < 0.6 ? (starts[Math.floor(next() * 3)] ?? '') : pick(starts)];
    const count = Math.floor(next() * 6);
    for (let j = 0; j < count; j++) lines.push(pick(fields));
    if (usual !== undefined && next() < 0.85) lines.splice(1 + Math.floor(next() * count), 0, usual);
    let head = lines.join('\r\n');
    if (next() < 0.25) {
      const chars = [...head];
      for (let k = 0; k < 1 + Math.floor(next() * 3); k++) {
        chars[Math.floor(next() * chars.length)] = noise[Math.floor(next() * noise.length)] ?? '';
      }
      head = chars.join('');
    }
    yield head;
  }
}

/** The head as received (latin1 bytes) with `after` following it, read as the fast path reads it. */
function read<T>(head: string, after: string, parse: (text: string, end: number) => T): T | undefined {
  const text = headText(Buffer.from(`${head}\r\n\r\n${after}`, 'latin1'));
  const end = headEnd(text);
  return end === -1 ? undefined : parse(text, end);
}

const requestFields = (head: RequestHead | undefined) =>
  head && {
    method: head.method,
    target: head.target,
    raw: head.raw,
    host: head.host,
    contentLength: head.contentLength,
    forwardedFor: head.forwardedFor,
    close: head.close,
  };
const responseFields = (head: ResponseHead | undefined) =>
  head && { status: head.status, raw: head.raw, framing: head.framing, keepsOpenMs: head.keepsOpenMs };

/** Header pairs of a head's text as an HTTP parser reads them: each line after the first, split at its colon, trimmed. */
function pairsOf(text: string): string[] {
  assert.ok(text.endsWith('\r\n\r\n'), 'ends with one blank line');
  const pairs: string[] = [];
  for (const line of text.slice(0, -4).split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    pairs.push(line.slice(0, colon), line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, ''));
  }
  return pairs;
}

const FORWARDING = { host: HOST, clientAddress: '192.0.2.7', proto: 'https' as const };
const INSTANCE_HOST = 'ecab12cd34.agents.localhost';

describe('reading request heads', () => {
  test('AGT-3: request heads are taken or left to Node exactly as the strict grammar says, field for field', () => {
    let taken = 0;
    for (const head of heads(1, REQUEST_LINES, REQUEST_FIELDS, `Host: ${HOST}`)) {
      const ours = requestFields(read(head, 'GET / HTTP/1.1\r\n', parseRequestHead));
      assert.deepEqual(ours, grammarRequest(head), JSON.stringify(head));
      if (ours !== undefined) taken++;
    }
    // The generated heads reach both outcomes often enough to mean something.
    assert.ok(taken > 200 && taken < 3800, `${taken} taken`);
  });

  test('AGT-3: the head an instance receives carries exactly the headers the rules let through, each passed as the bytes it arrived as', () => {
    let passed = 0;
    for (const head of heads(2, REQUEST_LINES, REQUEST_FIELDS, `Host: ${HOST}`)) {
      const request = read(head, '', parseRequestHead);
      if (request === undefined) continue;
      const line = `${request.method} ${request.target} HTTP/1.1`;
      const text = requestHeadText(line, request, FORWARDING);
      assert.ok(text.startsWith(`${line}\r\n`), JSON.stringify(head));
      assert.deepEqual(pairsOf(text), requestHeaders(request.raw, FORWARDING), JSON.stringify(head));
      // A line passed unchanged is one the client sent; any other is a Cookie without the platform's cookies.
      const sent = new Set(head.split('\r\n'));
      for (const out of text.slice(0, -4).split('\r\n').slice(1, -4)) {
        assert.ok(
          sent.has(out) || /^cookie:/i.test(out),
          `${JSON.stringify(out)} in ${JSON.stringify(head)}`,
        );
        if (/^cookie:/i.test(out)) assert.doesNotMatch(out, /enclave_/);
        passed++;
      }
    }
    assert.ok(passed > 200, `${passed} lines passed`);
  });
});

describe('reading response heads', () => {
  test('AGT-3: response heads are refused or read exactly as the strict grammar says: status, fields, framing and keep-alive', () => {
    let taken = 0;
    for (const [i, head] of [...heads(3, STATUS_LINES, RESPONSE_FIELDS)].entries()) {
      const method = i % 5 === 0 ? 'HEAD' : 'GET';
      const ours = responseFields(read(head, 'ok', (text, end) => parseResponseHead(text, end, method)));
      assert.deepEqual(ours, grammarResponse(head, method), JSON.stringify(head));
      if (ours !== undefined) taken++;
    }
    assert.ok(taken > 200 && taken < 3800, `${taken} taken`);
  });

  test('AGT-3: the head a client receives carries exactly the headers the rules let through, then the ingress’s own', () => {
    let passed = 0;
    for (const head of heads(4, STATUS_LINES, RESPONSE_FIELDS)) {
      const response = read(head, '', (text, end) => parseResponseHead(text, end, 'GET'));
      if (response === undefined) continue;
      for (const keep of [new Set<string>(), new Set(['transfer-encoding'])]) {
        const text = responseHeadText(
          'HTTP/1.1 200 OK',
          response,
          INSTANCE_HOST,
          keep,
          'connection: close\r\n',
        );
        const expected: string[] = [
          ...responseHeaders(response.raw, INSTANCE_HOST, keep),
          'connection',
          'close',
        ];
        assert.deepEqual(pairsOf(text), expected, JSON.stringify(head));
        const listed = connectionListed(response.raw);
        for (let i = 0; i + 1 < expected.length - 2; i += 2) {
          const name = (expected[i] ?? '').toLowerCase();
          assert.ok(keep.has(name) || (!HOP_BY_HOP.has(name) && !listed.has(name)), name);
          passed++;
        }
      }
    }
    assert.ok(passed > 200, `${passed} lines passed`);
  });
});

test('AGT-3: a head that has not ended within 16 KiB is not read, even when it arrives whole', () => {
  const long = `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
  assert.equal(headEnd(headText(Buffer.from(long, 'latin1'))), -1);
  const short = `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n${'b'.repeat(2 * MAX_HEAD_BYTES)}`;
  assert.equal(headEnd(headText(Buffer.from(short, 'latin1'))), short.indexOf('\r\n\r\n') + 4);
});
