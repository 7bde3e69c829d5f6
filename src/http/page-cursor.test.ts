import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isAppError } from '../errors.ts';
import { createPageCursors, type ListScope, pageOf } from './page-cursor.ts';

// A list cursor is opaque to its reader and bound to the list it came from:
// its tenant, its list, and the user or agent the list is of.

const cursors = createPageCursors('a session key for these tests, long enough');
const agents: ListScope = { list: 'agents', tenantId: '00000000-0000-4000-8000-00000000000a' };
const position = { at: '2026-01-02T03:04:05.123456Z', id: '11111111-1111-4111-8111-111111111111' };

function refused(scope: ListScope, cursor: string): boolean {
  try {
    cursors.open(scope, cursor);
    return false;
  } catch (error) {
    return isAppError(error) && error.code === 'cursor_invalid' && error.field === 'after';
  }
}

describe('page cursors', () => {
  test('TEN-7: a cursor opens to its position on its own list only: another tenant, list, user or key refuses it', () => {
    const cursor = cursors.seal(agents, position);
    assert.deepEqual(cursors.open(agents, cursor), position);
    assert.equal(cursors.open(agents, undefined), undefined);
    assert.ok(refused({ ...agents, tenantId: '00000000-0000-4000-8000-00000000000b' }, cursor));
    assert.ok(refused({ ...agents, list: 'members' }, cursor));
    assert.ok(refused({ ...agents, of: '22222222-2222-4222-8222-222222222222' }, cursor));
    const otherKey = createPageCursors('another session key, as another deployment has');
    assert.throws(() => otherKey.open(agents, cursor), { code: 'cursor_invalid' });
  });

  test('TEN-7: an altered, truncated or made-up cursor is cursor_invalid, never an exception of another kind', () => {
    const cursor = cursors.seal(agents, position);
    const [payload = '', tag = ''] = cursor.split('.');
    const forged = Buffer.from(
      JSON.stringify(['2026-01-02T03:04:05.123456Z', position.id.replace('1', '2')]),
    );
    for (const bad of [
      `${payload}.${tag.slice(0, -2)}${tag.endsWith('AA') ? 'BB' : 'AA'}`,
      `${forged.toString('base64url')}.${tag}`,
      payload,
      `${cursor}.x`,
      '.',
      'x',
      '%%%.***',
      `${payload}.`,
    ]) {
      assert.ok(refused(agents, bad), bad);
    }
  });

  test('AGT-1: a page of limit + 1 rows gives limit rows without their positions, and a cursor past the last', () => {
    const rows = [1, 2, 3].map((n) => ({
      n,
      page_at: `2026-01-0${n}T00:00:00.000000Z`,
      page_id: position.id,
    }));
    const full = pageOf(rows, 2, (at) => cursors.seal(agents, at));
    assert.deepEqual(full.rows, [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(cursors.open(agents, full.next ?? ''), { at: rows[1]?.page_at, id: position.id });
    assert.equal(pageOf(rows, 3, (at) => cursors.seal(agents, at)).next, null);
  });
});
