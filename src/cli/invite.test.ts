import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseExpiry, parseInviteCommand } from './invite.ts';
import { UsageError } from './usage-error.ts';

// The `enclave invite` command line is checked in full before the database
// is opened: a mistake is one usage line (exit 2), never a half-made invite.

const MINUTE = 60_000;

function usage(fn: () => unknown, says: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof UsageError, String(error));
    assert.match(error.message, says);
    assert.ok(!error.message.includes('\n'), 'one line');
    return true;
  });
}

describe('parseExpiry', () => {
  test('takes Nm, Nh or Nd from 1 minute to 90 days', () => {
    assert.equal(parseExpiry('1m'), MINUTE);
    assert.equal(parseExpiry('30m'), 30 * MINUTE);
    assert.equal(parseExpiry('12h'), 12 * 60 * MINUTE);
    assert.equal(parseExpiry('7d'), 7 * 1440 * MINUTE);
    assert.equal(parseExpiry('90d'), 90 * 1440 * MINUTE);
    assert.equal(parseExpiry('2160h'), 90 * 1440 * MINUTE);
  });

  test('refuses anything else with a message naming the accepted forms and bounds', () => {
    for (const bad of [
      '',
      '0m',
      '0d',
      '91d',
      '2161h',
      '129601m',
      '7',
      'd',
      '7w',
      '1.5d',
      '-1d',
      '7 d',
      '7D',
      '1e3m',
      '9999999d',
    ]) {
      usage(() => parseExpiry(bad), /^--expires must be .* from 1m to 90d \(got "/);
    }
  });
});

describe('parseInviteCommand', () => {
  const none = { email: undefined, expires: undefined };

  test('create normalizes the address and defaults to 7 days', () => {
    assert.deepEqual(
      parseInviteCommand({ rest: ['create'], email: ' Ada@Example.TEST ', expires: undefined }),
      {
        action: 'create',
        email: 'ada@example.test',
        expiresMs: 7 * 1440 * MINUTE,
      },
    );
    assert.deepEqual(parseInviteCommand({ rest: ['create'], email: 'a@example.test', expires: '2h' }), {
      action: 'create',
      email: 'a@example.test',
      expiresMs: 120 * MINUTE,
    });
  });

  test('list and revoke', () => {
    assert.deepEqual(parseInviteCommand({ rest: ['list'], ...none }), { action: 'list' });
    const id = '3F2504E0-4F89-41D3-9A0C-0305E82C3301';
    assert.deepEqual(parseInviteCommand({ rest: ['revoke', id], ...none }), {
      action: 'revoke',
      id: id.toLowerCase(),
    });
  });

  test('every mistake is a one-line usage error', () => {
    const cases: [Parameters<typeof parseInviteCommand>[0], RegExp][] = [
      [{ rest: [], ...none }, /needs an action/],
      [{ rest: ['delete'], ...none }, /unknown invite action "delete"/],
      [{ rest: ['create'], ...none }, /needs --email/],
      [{ rest: ['create'], email: 'not-an-address', expires: undefined }, /--email is not an email address/],
      [{ rest: ['create'], email: 'a@b', expires: undefined }, /--email is not an email address/],
      [
        { rest: ['create'], email: 'a@example.test\r\nBcc: x@example.test', expires: undefined },
        /--email is not/,
      ],
      [{ rest: ['create'], email: 'a@example.test', expires: '100d' }, /--expires/],
      [{ rest: ['create', 'extra'], email: 'a@example.test', expires: undefined }, /takes no arguments/],
      [{ rest: ['list', 'extra'], ...none }, /takes no arguments/],
      [{ rest: ['list'], email: 'a@example.test', expires: undefined }, /options of "invite create"/],
      [{ rest: ['revoke'], ...none }, /needs the invite ID/],
      [{ rest: ['revoke', 'not-a-uuid'], ...none }, /is not an invite ID/],
      [{ rest: ['revoke', '3f2504e0-4f89-41d3-9a0c-0305e82c3301', 'more'], ...none }, /takes one ID/],
      [
        { rest: ['revoke', '3f2504e0-4f89-41d3-9a0c-0305e82c3301'], email: undefined, expires: '1d' },
        /options of/,
      ],
    ];
    for (const [args, says] of cases) usage(() => parseInviteCommand(args), says);
  });
});
