import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { declaredTitles } from './test-declarations.ts';

// The control catalog of /security and /security.json (OPS-5), read from
// docs/controls.md when the server starts: the page can claim nothing the
// mapping does not, and CI checks the mapping. A row's "Proven by" cell names
// test files in backquotes, each followed by the quoted titles of its tests
// ("…" ends a shortened title). A row the document calls enforced is shown as
// enforced only if it names at least one test and every title it names is
// declared in its file by a test(…) or it(…) that runs (test-declarations.ts:
// not skipped, not todo, not a describe, not commented out); otherwise it is
// shown as `unproven`.

export const REPO_ROOT = path.join(import.meta.dirname, '..', '..');
export const CONTROLS_FILE = path.join(REPO_ROOT, 'docs', 'controls.md');

export interface NamedTests {
  readonly file: string;
  readonly titles: readonly string[];
}

export type ShownStatus = 'enforced' | 'partial' | 'unproven';

export interface Control {
  readonly id: string;
  /** The status cell as the document has it (`enforced`, `partial: …`, `enforced (…)`). */
  readonly documented: string;
  readonly status: ShownStatus;
  readonly promise: string;
  readonly code: string;
  readonly tests: readonly NamedTests[];
  /** Titles named in the row that no named test file contains. */
  readonly missing: readonly string[];
}

const ROW = /^\| ([A-Z]{3}-\d+) \| /;
const TEST_FILE = /`([^`\s]+\.test\.ts)`/g;
/** A quoted title; a `"` inside one is written `\\"`. */
const TITLE = /"((?:[^"\\]|\\.)+)"/g;

/** The test files a "Proven by" cell names, each with the quoted titles that follow it. */
export function parseProvenBy(cell: string): NamedTests[] {
  const marks = [...cell.matchAll(TEST_FILE)];
  return marks.map((mark, i) => {
    const end = marks[i + 1]?.index ?? cell.length;
    const text = cell.slice((mark.index ?? 0) + mark[0].length, end);
    const titles = [...text.matchAll(TITLE)].map((title) => (title[1] ?? '').replaceAll('\\"', '"'));
    return { file: mark[1] ?? '', titles };
  });
}

/** Rows of the table: ID, status, promise, code, tests (cells are separated by " | "). */
export function parseControlRows(markdown: string): Omit<Control, 'status' | 'missing'>[] {
  return markdown
    .split('\n')
    .filter((line) => ROW.test(line))
    .map((line) => {
      const cells = line
        .replace(/^\| /, '')
        .replace(/ \|\s*$/, '')
        .split(' | ');
      const [id = '', documented = '', promise = '', code = '', provenBy = ''] = cells;
      return { id, documented, promise, code, tests: parseProvenBy(provenBy) };
    });
}

/** Apostrophes and quotes as one form, so ’ in a test and ' in the document agree. */
const plain = (text: string): string => text.replaceAll('’', "'");

/**
 * Patterns for the titles a test file declares: a template literal's ${…}
 * parts match any text, since titles such as `${control}: … shows a page` are
 * built in loops. A pattern matches a named title whole, or its start when the
 * document shortened it with "…".
 */
export interface TitlePattern {
  /** The literal as written, ${…} parts and all (escapes undone). */
  readonly raw: string;
  /** The whole literal, ${…} parts matching any text. */
  readonly whole: RegExp;
  /** The same, matching the start of a text. */
  readonly start: RegExp;
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function titlePatterns(source: string): TitlePattern[] {
  return declaredTitles(source).map((title) => {
    const body = title.parts.map((part) => escapeRegExp(plain(part))).join('.+?');
    return { raw: plain(title.raw), whole: new RegExp(`^${body}$`), start: new RegExp(`^${body}`) };
  });
}

/**
 * Whether a file declares `title`. The document may shorten a title with "…"
 * (at its end, or for a part a test builds with ${…}): each "…" then matches
 * any text of the literal as written.
 */
export function declaresTitle(patterns: readonly TitlePattern[], title: string): boolean {
  const wanted = plain(title);
  if (!wanted.includes('…')) return patterns.some((pattern) => pattern.whole.test(wanted));
  const shortened = wanted.endsWith('…');
  const pieces = wanted.split(/\s*…/).map(escapeRegExp);
  const elided = new RegExp(`^${pieces.join('.*?')}${shortened ? '' : '$'}`);
  const prefix = wanted.replace(/\s*…$/, '');
  return patterns.some(
    (pattern) =>
      elided.test(pattern.raw) || (shortened && !prefix.includes('…') && pattern.start.test(prefix)),
  );
}

export function shownStatus(documented: string, named: number, missing: number): ShownStatus {
  if (named === 0 || missing > 0) return documented.startsWith('partial') ? 'partial' : 'unproven';
  return documented.startsWith('enforced') ? 'enforced' : 'partial';
}

/** Reads docs/controls.md and the test files it names under `root`. */
export async function loadControls(root: string = REPO_ROOT): Promise<Control[]> {
  const rows = parseControlRows(await readFile(path.join(root, 'docs', 'controls.md'), 'utf8'));
  const sources = new Map<string, TitlePattern[] | undefined>();
  const source = async (file: string) => {
    if (!sources.has(file)) {
      // The file name comes from the repository's own document; it is read, never run.
      const text = await readFile(path.join(root, file), 'utf8').then(titlePatterns, () => undefined);
      sources.set(file, text);
    }
    return sources.get(file);
  };
  const controls: Control[] = [];
  for (const row of rows) {
    const missing: string[] = [];
    let named = 0;
    for (const tests of row.tests) {
      const text = await source(tests.file);
      for (const title of tests.titles) {
        named++;
        if (text === undefined || !declaresTitle(text, title)) missing.push(`${tests.file}: ${title}`);
      }
    }
    controls.push({ ...row, status: shownStatus(row.documented, named, missing.length), missing });
  }
  return controls;
}

let repositoryCatalog: Promise<Control[]> | undefined;

/**
 * The catalog of this build, read once per process: its files do not change
 * while it runs, and every app built in it (a test run builds hundreds) would
 * otherwise parse docs/controls.md and every test file it names again.
 */
export function repositoryControls(): Promise<Control[]> {
  repositoryCatalog ??= loadControls(REPO_ROOT);
  // A failed read is not kept: the next app build tries again.
  repositoryCatalog.catch(() => {
    repositoryCatalog = undefined;
  });
  return repositoryCatalog;
}
