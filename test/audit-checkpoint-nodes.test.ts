// The checkpoint log as the database stores it (perfect subtrees in
// enclave.checkpoint_nodes, written once each by checkpoint_add_leaf_node)
// must give RFC 6962's roots and proofs (src/audit/merkle.ts, which passes the
// shared vectors) for every size.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { proofsFromNodes } from '../src/audit/checkpoint-log.ts';
import {
  consistencyProof,
  consistencyRanges,
  inclusionProof,
  inclusionRanges,
  rootFromLeafHashes,
} from '../src/audit/merkle.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

const SIZE = 10_000;
let db: TestDatabase;
const leaves = Array.from({ length: SIZE }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest());

before(async () => {
  db = await createTestDatabase();
  // Only the definer functions may store nodes; the superuser stands in for them here.
  await db.superuser`
    select enclave.checkpoint_add_leaf_node(i, sha256(convert_to('leaf ' || i, 'UTF8')))
    from generate_series(0, ${SIZE - 1}) i order by i`;
});
after(() => db.drop());

test('AUD-4: the stored tree has each node once: about 2n nodes for n leaves', async () => {
  const [row] = await db.app<{ n: number }[]>`select count(*)::int as n from checkpoint_nodes`;
  assert.equal(row?.n, 2 * SIZE - [...SIZE.toString(2)].filter((bit) => bit === '1').length);
});

test('AUD-4: checkpoint_root equals the RFC 6962 root at random sizes up to 10,000 (fast-check)', async () => {
  const sizes = [
    1,
    2,
    3,
    255,
    256,
    257,
    SIZE,
    ...fc.sample(fc.integer({ min: 1, max: SIZE }), { numRuns: 40, seed: 31 }),
  ];
  const rows = await db.app<{ size: number; root: Buffer }[]>`
    select s.size::int, enclave.checkpoint_root(s.size) as root from unnest(${sizes}::bigint[]) s(size)`;
  for (const row of rows)
    assert.deepEqual(row.root, rootFromLeafHashes(leaves.slice(0, row.size)), `size ${row.size}`);
  const [empty] = await db.app<{ root: Buffer }[]>`select enclave.checkpoint_root(0) as root`;
  assert.deepEqual(empty?.root, rootFromLeafHashes([]));
  await assert.rejects(db.app`select enclave.checkpoint_root(${SIZE + 1})`, /fewer than/);
});

test('AUD-4: inclusion and consistency proofs read from the stored nodes equal RFC 6962 (fast-check)', async () => {
  const cases = fc.sample(
    fc
      .integer({ min: 1, max: SIZE })
      .chain((size) =>
        fc.tuple(fc.constant(size), fc.nat({ max: size - 1 }), fc.integer({ min: 1, max: size })),
      ),
    { numRuns: 30, seed: 32 },
  );
  for (const [size, index, oldSize] of cases) {
    const [inclusion, consistency] = await proofsFromNodes(db.app, [
      inclusionRanges(size, index),
      consistencyRanges(size, oldSize),
    ]);
    const tree = leaves.slice(0, size);
    assert.deepEqual(inclusion, inclusionProof(tree, index), `inclusion of ${index} in ${size}`);
    assert.deepEqual(consistency, consistencyProof(tree, oldSize), `consistency ${oldSize} → ${size}`);
  }
});
