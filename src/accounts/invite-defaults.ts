// Apart from invites.ts so that `enclave invite --help` can show the default
// without loading the database modules.
export const DEFAULT_INVITE_DAYS = 7;
