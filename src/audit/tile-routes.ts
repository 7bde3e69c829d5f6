import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { AppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { parseTilePath, TILE_HEIGHT, TILE_WIDTH } from './tile-path.ts';

// The checkpoint log's hash tiles (AUD-4), public and read-only, in the C2SP
// tlog-tiles layout under /audit/ (beside /audit/checkpoint), so transparency
// tooling can follow the log and check consistency itself. A tile is the
// run of stored subtree hashes of one height (checkpoint_nodes), which never
// change once written: full and partial tiles alike are immutable.
//
// Entry bundles (tile/entries/…) are not served: a leaf names its tenant, and
// the list of tenants and how often each acts is not public. The leaf hashes
// in level-0 tiles reveal neither.

export function registerTileRoutes(app: App, deps: { sql: Sql }): void {
  const { sql } = deps;
  app.get(
    '/audit/tile/*',
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getAuditTile',
        summary: 'A hash tile of the audit checkpoint log (C2SP tlog-tiles): tile/<L>/<N>[.p/<W>]',
        tags: ['audit'],
        params: Type.Object(
          { '*': Type.String({ maxLength: 64, description: 'the tile path after /audit/tile/' }) },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'W concatenated 32-byte hashes',
            content: {
              'application/octet-stream': {
                schema: Type.Unsafe<Buffer>({ type: 'string', format: 'binary' }),
              },
            },
          },
          404: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const tile = parseTilePath(`tile/${request.params['*']}`);
      if (tile === undefined || tile.level === 'entries') {
        throw new AppError(
          'not_found',
          'no such tile: hash tiles are tile/<L>/<N>[.p/<W>] (entry bundles are not served)',
        );
      }
      const first = tile.index * TILE_WIDTH;
      const rows = await sql<{ hash: Buffer }[]>`
        select hash from checkpoint_nodes
        where level = ${tile.level * TILE_HEIGHT} and idx between ${first} and ${first + tile.width - 1}
        order by idx`;
      if (rows.length !== tile.width) throw new AppError('not_found', 'the log does not have this tile yet');
      return reply
        .type('application/octet-stream')
        .header('cache-control', 'public, max-age=31536000, immutable')
        .send(Buffer.concat(rows.map((row) => row.hash)));
    },
  );
}
