// Agent handles name an agent platform-wide (relay addresses, card URLs,
// directory entries), so they are lowercase, DNS-label-like, and never one of
// the names the platform itself uses or that would pass for staff.

export const HANDLE_PATTERN = '^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$';
const HANDLE = new RegExp(HANDLE_PATTERN);

const RESERVED = new Set([
  'admin',
  'administrator',
  'agent',
  'agents',
  'api',
  'app',
  'audit',
  'auth',
  'billing',
  'card',
  'cards',
  'dashboard',
  'dev',
  'directory',
  'docs',
  'enclave',
  'help',
  'login',
  'logout',
  'mail',
  'null',
  'openapi',
  'operator',
  'operators',
  'platform',
  'postmaster',
  'profile',
  'recover',
  'relay',
  'root',
  'security',
  'signup',
  'static',
  'status',
  'support',
  'system',
  'undefined',
  'well-known',
  'www',
]);

/** Why a handle is refused, or undefined. The handle is attacker-controlled text. */
export function handleProblem(handle: string): string | undefined {
  if (!HANDLE.test(handle)) {
    return 'must be 3 to 40 characters of a-z, 0-9 and "-", starting and ending with a letter or digit';
  }
  if (handle.includes('--')) return 'must not contain "--"';
  if (RESERVED.has(handle) || handle.startsWith('enclave-')) return 'is reserved';
  return undefined;
}
