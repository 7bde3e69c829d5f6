import type { App } from '../../src/http/app.ts';

/**
 * Every (method, path) the app serves, from `printRoutes({ commonPrefix: false })`:
 * a tree whose children print their path relative to their parent.
 */
export function registeredRoutes(app: App): { method: string; path: string }[] {
  const text = app.printRoutes({ commonPrefix: false });
  const stack: { depth: number; path: string }[] = [];
  const routes: { method: string; path: string }[] = [];
  for (const line of text.split('\n')) {
    const match = /^([\s│├└─]*)(\S.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (match === null) continue;
    const [, indent = '', segment = '', methods] = match;
    if (segment.startsWith('(empty root node)')) continue;
    const depth = indent.length;
    while (stack.length > 0 && (stack.at(-1)?.depth ?? 0) >= depth) stack.pop();
    const path = `${stack.at(-1)?.path ?? ''}${segment}`;
    stack.push({ depth, path });
    for (const method of methods?.split(',').map((m) => m.trim()) ?? []) routes.push({ method, path });
  }
  return routes;
}
