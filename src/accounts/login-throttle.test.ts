import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOGIN_THROTTLE, pauseAfterFailures } from './login-throttle.ts';

test('ACC-5: the pause rule: 5 failures pass at once, then 15 s doubling with each failure up to 15 minutes', () => {
  const pauses = Array.from({ length: 14 }, (_, i) => pauseAfterFailures(i + 1));
  assert.deepEqual(pauses, [0, 0, 0, 0, 0, 15, 30, 60, 120, 240, 480, 900, 900, 900]);
  assert.equal(pauseAfterFailures(10_000), LOGIN_THROTTLE.maxPauseSeconds);
});
