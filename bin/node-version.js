// The Node.js version check of every entry point (enclave, enclave-verify,
// npm test). Plain JavaScript, loaded before any TypeScript: an older Node
// cannot load .ts files at all and would end in ERR_UNKNOWN_FILE_EXTENSION.

/** The one-line refusal for `version` (e.g. "20.20.2"), or undefined when it is new enough. */
export function nodeTooOld(program, version) {
  const [major, minor] = version.split('.').map(Number);
  if (major > 22 || (major === 22 && minor >= 18)) return undefined;
  return `${program}: Node.js 22.18 or newer is required (this is v${version})`;
}

/** Exits with `exitCode` and one line on stderr when this Node is too old. */
export function requireNode(program, exitCode) {
  const refusal = nodeTooOld(program, process.versions.node);
  if (refusal === undefined) return;
  process.stderr.write(`${refusal}\n`);
  process.exit(exitCode);
}
