/** A mistake on the command line: reported in one line with a pointer to --help, exit status 2. */
export class UsageError extends Error {}
