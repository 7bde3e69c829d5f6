import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deliveryLogSection } from './delivery-pages.ts';

const at = new Date('2026-12-01T10:00:00Z');
const delivery = {
  id: '00000000-0000-4000-8000-000000000001',
  endpoint_id: '00000000-0000-4000-8000-000000000002',
  event_type: 'thread.message_received',
  webhook_id: 'msg_1',
  state: 'failed' as const,
  attempts: 1,
  last_status: 500,
  next_attempt_at: null,
  created_at: at,
  finished_at: at,
  payload_bytes: 36,
  payload_deleted_at: null,
};

test('RLY-7: the delivery log section lists deliveries and one delivery’s attempts, escaping what the receiver and the event said', () => {
  const section = deliveryLogSection({
    base: '/dashboard/webhooks/00000000-0000-4000-8000-000000000002',
    deliveries: [delivery],
    nextAfter: 'cursor+/=',
    detail: {
      ...delivery,
      payload: '{"text":"<script>alert(1)</script>"}',
      attempt_log: [
        {
          number: 1,
          attempted_at: at,
          status: 500,
          latency_ms: 12,
          error: null,
          response_prefix: '<img src=x onerror=alert(2)>',
        },
      ],
    },
  }).toString();
  assert.ok(!section.includes('<script>alert(1)'));
  assert.ok(!section.includes('<img src=x'));
  assert.ok(section.includes('&lt;script&gt;'));
  assert.ok(section.includes('?after=cursor%2B%2F%3D'));
  assert.ok(section.includes('?delivery=00000000-0000-4000-8000-000000000001'));
  assert.match(section, /<td>1<\/td><td><time[^>]*>[^<]*<\/time><\/td><td>500<\/td><td>12 ms<\/td>/);
});

test('RLY-9: a delivery whose payload expired shows as expired, with its size, time and attempts, not an empty body', () => {
  const deletedAt = new Date('2026-12-31T10:00:00Z');
  const section = deliveryLogSection({
    base: '/dashboard/webhooks/00000000-0000-4000-8000-000000000002',
    deliveries: [{ ...delivery, payload_deleted_at: deletedAt }],
    nextAfter: null,
    detail: {
      ...delivery,
      payload_deleted_at: deletedAt,
      payload: null,
      attempt_log: [
        { number: 1, attempted_at: at, status: 500, latency_ms: 12, error: null, response_prefix: null },
      ],
    },
  }).toString();
  assert.match(
    section,
    /Payload expired: the body sent \(36 bytes\) and the answers were deleted <time datetime="2026-12-31T10:00:00.000Z">/,
  );
  assert.match(section, /<td>500<\/td><td>12 ms<\/td><td><span class="muted">expired<\/span><\/td>/);
  assert.ok(!section.includes('<pre></pre>'), 'no empty body is shown as if it were the payload');
});
