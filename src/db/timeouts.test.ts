import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, test } from 'node:test';
import { AppError } from '../errors.ts';
import { asDatabaseUnavailable, DatabaseUnavailableError, watchedSocket } from './timeouts.ts';

describe('watchedSocket', () => {
  test('a write the peer never answers ends the connection with database_unavailable', async () => {
    // A peer that accepts and then says nothing, as a stopped PostgreSQL does (its kernel still accepts).
    const peer = net.createServer(() => {}).listen(0, '127.0.0.1');
    await once(peer, 'listening');
    try {
      const socket = watchedSocket(200).connect((peer.address() as net.AddressInfo).port, '127.0.0.1');
      socket.write('query');
      const [error] = (await once(socket, 'error')) as [unknown];
      assert.ok(error instanceof DatabaseUnavailableError);
      assert.equal(error.code, 'database_unavailable');
      assert.ok(socket.destroyed);
    } finally {
      peer.close();
    }
  });

  test('an answered write leaves the connection open', async (t) => {
    // The bound's timer is mocked: on a loaded machine a real 200 ms can pass before the echo arrives.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const peer = net
      .createServer((client) => client.on('data', (data) => client.write(data)))
      .listen(0, '127.0.0.1');
    await once(peer, 'listening');
    const socket = watchedSocket(200).connect((peer.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      socket.write('ping');
      await once(socket, 'data');
      // Far past the bound after the answer: nothing is awaited, so nothing may time out.
      t.mock.timers.tick(10_000);
      assert.equal(socket.destroyed, false);
    } finally {
      socket.destroy();
      peer.close();
    }
  });
});

describe('asDatabaseUnavailable', () => {
  const cases: [string, unknown, boolean][] = [
    ['postgres.js connect timeout', Object.assign(new Error('x'), { code: 'CONNECT_TIMEOUT' }), true],
    ['a closed connection', Object.assign(new Error('x'), { code: 'CONNECTION_CLOSED' }), true],
    ['statement_timeout (57014)', Object.assign(new Error('x'), { code: '57014' }), true],
    ['lock_timeout (55P03)', Object.assign(new Error('x'), { code: '55P03' }), true],
    ['server shutting down (57P01)', Object.assign(new Error('x'), { code: '57P01' }), true],
    ['a connection exception (08006)', Object.assign(new Error('x'), { code: '08006' }), true],
    ['refused, on a query', Object.assign(new Error('x'), { code: 'ECONNREFUSED', query: 'select 1' }), true],
    ['refused, from some other peer', Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), false],
    ['a wrapped one', new AppError('internal', 'x', { cause: new DatabaseUnavailableError('y') }), true],
    ['a constraint violation (23505)', Object.assign(new Error('x'), { code: '23505' }), false],
    ['an app error', new AppError('not_found', 'x'), false],
  ];
  for (const [name, error, expected] of cases) {
    test(`${name}: ${expected ? 'database_unavailable' : 'not the database being unavailable'}`, () => {
      assert.equal(asDatabaseUnavailable(error) !== undefined, expected);
    });
  }

  test('node-postgres reports a lost connection by message only: counted where the caller talks only to the database', () => {
    const lost = new Error('Connection terminated unexpectedly');
    assert.equal(asDatabaseUnavailable(lost), undefined);
    assert.ok(asDatabaseUnavailable(lost, true) instanceof DatabaseUnavailableError);
  });
});
