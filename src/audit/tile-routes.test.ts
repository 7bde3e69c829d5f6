import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import { nodeHash, rootFromLeafHashes } from './merkle.ts';
import { parseTilePath, TILE_WIDTH, tilePath } from './tile-path.ts';

// AUD-4: the checkpoint log's hash tiles, public at /audit/tile/ in the C2SP
// tlog-tiles layout. A client holding only tiles computes the same roots as
// the log. The nodes here are stored as the checkpoint function stores them.

const SIZE = 70_000; // a full level-1 tile (65,536 leaves) and partial tiles at both levels
const ctx = useTestApp();
const leaves = Array.from({ length: SIZE }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest());

ctx.before(async () => {
  await ctx.db.superuser`
    select enclave.checkpoint_add_leaf_node(i, sha256(convert_to('leaf ' || i, 'UTF8')))
    from generate_series(0, ${SIZE - 1}) i order by i`;
});

const get = (path: string) => ctx.testApp.app.inject({ method: 'GET', url: `/audit/${path}` });

describe('tile paths', () => {
  test('AUD-4: indices are written in x-prefixed groups of three digits, partial tiles with .p/<W>', () => {
    assert.equal(tilePath({ level: 0, index: 1_234_067, width: 256 }), 'tile/0/x001/x234/067');
    assert.equal(tilePath({ level: 1, index: 5, width: 17 }), 'tile/1/005.p/17');
    assert.equal(tilePath({ level: 2, index: 1000, width: 256 }), 'tile/2/x001/000');
    assert.deepEqual(parseTilePath('tile/0/x001/x234/067'), { level: 0, index: 1_234_067, width: 256 });
    assert.deepEqual(parseTilePath('tile/entries/000.p/3'), { level: 'entries', index: 0, width: 3 });
  });

  test('AUD-4: only the canonical spelling of a tile parses', () => {
    for (const path of [
      'tile/0/5',
      'tile/0/x000/005',
      'tile/0/005.p/0',
      'tile/0/005.p/256',
      'tile/0/005.p/007',
      'tile/8/000',
      'tile/0/000/',
      'tile/-1/000',
      'tile/0/x001/x002/x003/x004/x005/006',
    ]) {
      assert.equal(parseTilePath(path), undefined, path);
    }
  });
});

describe('/audit/tile/', () => {
  test('AUD-4: a level-0 tile holds 256 leaf hashes; a level-1 tile holds the roots of 256 level-0 tiles', async () => {
    const level0 = await get('tile/0/001');
    assert.equal(level0.statusCode, 200);
    assert.equal(level0.headers['content-type'], 'application/octet-stream');
    assert.match(level0.headers['cache-control'] ?? '', /immutable/);
    assert.deepEqual(level0.rawPayload, Buffer.concat(leaves.slice(256, 512)));
    const level1 = await get('tile/1/000');
    assert.equal(level1.rawPayload.length, 256 * 32);
    assert.deepEqual(level1.rawPayload.subarray(32, 64), rootFromLeafHashes(leaves.slice(256, 512)));
  });

  test('AUD-4: partial tiles at the edge; a tile beyond the log, an entry bundle or a malformed path is 404 problem+json', async () => {
    const fullTiles = Math.floor(SIZE / TILE_WIDTH);
    const edge = await get(`tile/0/${String(fullTiles).padStart(3, '0')}.p/${SIZE % TILE_WIDTH}`);
    assert.equal(edge.statusCode, 200);
    assert.deepEqual(edge.rawPayload, Buffer.concat(leaves.slice(fullTiles * TILE_WIDTH)));
    for (const path of [
      `tile/0/${String(fullTiles).padStart(3, '0')}`,
      `tile/0/${String(fullTiles).padStart(3, '0')}.p/${(SIZE % TILE_WIDTH) + 1}`,
      'tile/1/001',
      'tile/entries/000',
      'tile/0/5',
      `tile/0/${'x999/'.repeat(4)}999`,
      'tile/0/000.p/0',
    ]) {
      const response = await get(path);
      assert.equal(response.statusCode, 404, path);
      assert.match(response.headers['content-type'] ?? '', /^application\/problem\+json/, path);
    }
  });

  test('AUD-4: a client holding only tiles computes the root of the log', async () => {
    // Root of the first 65,536 + 256 leaves: the level-1 tile's 256 hashes make the left 65,536; one level-0 tile the rest.
    const level1 = (await get('tile/1/000')).rawPayload;
    const subtrees = Array.from({ length: 256 }, (_, i) => level1.subarray(i * 32, (i + 1) * 32));
    let left = subtrees;
    while (left.length > 1)
      left = Array.from({ length: left.length / 2 }, (_, i) =>
        nodeHash(left[2 * i] as Buffer, left[2 * i + 1] as Buffer),
      );
    const tail = (await get('tile/0/256')).rawPayload;
    const right = rootFromLeafHashes(
      Array.from({ length: 256 }, (_, i) => tail.subarray(i * 32, (i + 1) * 32)),
    );
    const size = 65_536 + 256;
    assert.deepEqual(nodeHash(left[0] as Buffer, right), rootFromLeafHashes(leaves.slice(0, size)));
  });
});
