// C2SP tlog-tiles paths (https://c2sp.org/tlog-tiles) for the checkpoint log:
//
//   tile/<L>/<N>[.p/<W>]         hashes: the nodes of height 8·L, N·256 … N·256 + W − 1
//   tile/entries/<N>[.p/<W>]     the leaves themselves (entry bundle)
//
// <N> is written in groups of three digits, each but the last prefixed with
// `x` (1234067 → x001/x234/067). W, when present, is 1 … 255; without it a
// tile is full (256). Only the canonical spelling of a tile is accepted, so
// one tile has one URL and caches hold each tile once.

export const TILE_HEIGHT = 8;
export const TILE_WIDTH = 2 ** TILE_HEIGHT;
/** The highest tile level whose nodes (height 8·L) fit the stored tree (heights 0 … 62). */
export const MAX_TILE_LEVEL = 7;

export interface TileRef {
  /** A hash tile's level, or 'entries' for an entry bundle. */
  readonly level: number | 'entries';
  readonly index: number;
  readonly width: number;
}

export function tilePath(tile: TileRef): string {
  const digits = String(tile.index).padStart(3, '0');
  const groups: string[] = [];
  for (let end = digits.length; end > 0; end -= 3) groups.unshift(digits.slice(Math.max(0, end - 3), end));
  const first = (groups[0] as string).padStart(3, '0');
  const index = [first, ...groups.slice(1)].map((group, i, all) =>
    i < all.length - 1 ? `x${group}` : group,
  );
  return `tile/${tile.level}/${index.join('/')}${tile.width === TILE_WIDTH ? '' : `.p/${tile.width}`}`;
}

/** The tile a path names, or undefined when it is not a canonical tile path of this log. */
export function parseTilePath(path: string): TileRef | undefined {
  const match = /^tile\/(entries|[0-9])\/((?:x[0-9]{3}\/){0,4}[0-9]{3})(?:\.p\/([0-9]{1,3}))?$/.exec(path);
  if (match === null) return undefined;
  const [, levelText = '', indexText = '', widthText] = match;
  const level: TileRef['level'] = levelText === 'entries' ? 'entries' : Number(levelText);
  if (level !== 'entries' && level > MAX_TILE_LEVEL) return undefined;
  const index = Number(indexText.replaceAll('x', '').replaceAll('/', ''));
  const width = widthText === undefined ? TILE_WIDTH : Number(widthText);
  if (width < 1 || width > TILE_WIDTH) return undefined;
  const tile: TileRef = { level, index, width };
  return tilePath(tile) === path ? tile : undefined;
}
