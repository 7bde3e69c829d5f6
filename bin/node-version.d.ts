// Types of node-version.js, which stays plain JavaScript so that an old Node can load it.
export function nodeTooOld(program: string, version: string): string | undefined;
export function requireNode(program: string, exitCode: number): void;
