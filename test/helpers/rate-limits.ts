import { BUCKETS, type Bucket } from '../../src/http/rate-limits.ts';
import type { TestDatabase } from './database.ts';

// RLY-5 and ACC-5 tests need a bucket at its limit. Spending a few thousand
// points one request at a time costs seconds each, so the limiter's own row
// (rate-limiter-flexible's layout: `bucket:key`, points, expire in epoch
// milliseconds) is written once, as those requests would have left it.

/** Spends every point of `bucket` for `key` for the bucket's whole window: the next consume is refused. */
export async function exhaustBucket(
  db: Pick<TestDatabase, 'superuser'>,
  bucket: Bucket,
  key: string,
): Promise<void> {
  const { points, seconds } = BUCKETS[bucket];
  await db.superuser`
    insert into enclave.rate_limits (key, points, expire)
    values (${`${bucket}:${key.slice(0, 200)}`}, ${points}, ${Date.now() + seconds * 1000}::bigint)
    on conflict (key) do update set points = excluded.points, expire = excluded.expire`;
}
