/** A mistake on the command line: reported in one line with a pointer to --help, exit status 2. */
export class UsageError extends Error {}

/** A command-line argument quoted for a one-line message: control characters (a pasted CR/LF) escaped, long values cut. */
export function shown(value: string | undefined): string {
  return JSON.stringify((value ?? '').slice(0, 100));
}
