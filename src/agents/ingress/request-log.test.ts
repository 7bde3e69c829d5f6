import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { createLogger, REDACT_PATHS } from '../../logger.ts';
import { createRequestLog } from './request-log.ts';

// AGT-3: the ingress's one line per request is built as a template for speed;
// it must say exactly what the logger itself would (and nothing more: never
// a subdomain, path or header), and no line may be lost or reordered.

const AGENT = '0b7e2d0e-6a0c-4d59-9d0a-5b1e7f6b2a11';

/** A log destination that records each write it gets. */
function recorder(): { stream: Writable; writes: string[] } {
  const writes: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      writes.push(chunk.toString('utf8'));
      done();
    },
  });
  return { stream, writes };
}

const lines = (writes: readonly string[]): string[] =>
  writes.flatMap((write) => write.split('\n')).filter((line) => line !== '');
const withoutTime = (line: string): string => line.replace(/,"time":\d+/, ',"time":0');
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('AGT-3: a request line is the line the logger’s own info() writes for the same fields, time aside', async () => {
  const cases = [
    ['http', 'GET', 200, AGENT, 3],
    ['http', 'POST', 502, AGENT, 0],
    ['http', 'GET', 404, undefined, 12],
    ['upgrade', 'GET', 101, AGENT, 1],
    ['upgrade', undefined, 503, undefined, 0],
  ] as const;
  const ours = recorder();
  const requestLog = createRequestLog(createLogger('info', ours.stream));
  const theirs = recorder();
  const logger = createLogger('info', theirs.stream);
  for (const [kind, method, status, agentId, ms] of cases) {
    requestLog.line(kind, method, status, agentId, ms);
    logger
      .child({ ingress: kind }, { redact: [] })
      .info({ method, status, agent_id: agentId, ms }, 'ingress request');
  }
  await nextTurn();
  assert.deepEqual(lines(ours.writes).map(withoutTime), lines(theirs.writes).map(withoutTime));
  assert.equal(lines(ours.writes).length, cases.length);
  for (const line of lines(ours.writes)) assert.doesNotThrow(() => JSON.parse(line), line);
});

test('AGT-3: request lines reach the log in the order they were made, in one write at the end of the turn', async () => {
  const { stream, writes } = recorder();
  const requestLog = createRequestLog(createLogger('info', stream));
  for (let ms = 0; ms < 5; ms++) requestLog.line('http', 'GET', 200, AGENT, ms);
  assert.equal(writes.length, 0);
  await nextTurn();
  assert.equal(writes.length, 1);
  assert.deepEqual(
    lines(writes).map((line) => (JSON.parse(line) as { ms: number }).ms),
    [0, 1, 2, 3, 4],
  );
  // Server shutdown writes what is left at once.
  requestLog.line('upgrade', 'GET', 101, AGENT, 7);
  requestLog.flush();
  assert.equal(lines(writes).length, 6);
  await nextTurn();
  assert.equal(writes.length, 2);
});

test('AGT-3: a logger whose lines the template does not follow (a mixin, a hook) writes each request line through its own info(), at once', () => {
  for (const options of [
    { mixin: () => ({ extra: 'mixed in' }) },
    { hooks: { streamWrite: (line: string) => line.replace('"msg"', '"hooked":true,"msg"') } },
  ]) {
    const { stream, writes } = recorder();
    const logger = pino(
      { level: 'info', base: { service: 'enclave' }, redact: { paths: REDACT_PATHS }, ...options },
      stream,
    );
    createRequestLog(logger).line('http', 'GET', 200, AGENT, 2);
    // Written at once, as info() writes, with what the logger adds.
    assert.equal(lines(writes).length, 1);
    assert.match(lines(writes)[0] ?? '', /"extra":"mixed in"|"hooked":true/);
    assert.match(lines(writes)[0] ?? '', /"ingress":"http",(.*,)?"method":"GET","status":200,/);
  }
});

test('AGT-3: below the info level no request line is written', async () => {
  const { stream, writes } = recorder();
  createRequestLog(createLogger('warn', stream)).line('http', 'GET', 200, AGENT, 1);
  await nextTurn();
  assert.deepEqual(writes, []);
});
