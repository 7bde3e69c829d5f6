import type { Sql } from 'postgres';
import type { CheckOutcome } from './runs.ts';

// Key hygiene (OPS-5, VLT-1, VLT-6): how old the newest master-key version
// and the tenants' current data keys are, and that no data key is still
// wrapped under a master version older than the newest (a rotation that did
// not finish, or a retired version still needed). Keys older than
// KEY_MAX_AGE_DAYS fail: rotate them (`enclave keys rotate-master`,
// `enclave keys rotate-tenant`).

export const KEY_MAX_AGE_DAYS = 365;
const DAY_MS = 86_400_000;

const ageDays = (at: Date | null, now: Date): number | null =>
  at === null ? null : Math.floor((now.getTime() - at.getTime()) / DAY_MS);

export async function checkKeyHygiene(sql: Sql): Promise<CheckOutcome> {
  const now = new Date();
  const [master] = await sql<{ version: number; created_at: Date; versions: number }[]>`
    select version, created_at, (select count(*)::int from vault_master_keys) as versions
    from vault_master_keys order by version desc limit 1`;
  const [keys] = await sql<
    { data_keys: string; oldest_current_key_at: Date | null; wrapped_by_retired: string }[]
  >`
    select data_keys::text, oldest_current_key_at, wrapped_by_retired::text from enclave.posture_data_keys()`;
  const figures = {
    master_version: master?.version ?? null,
    master_versions_registered: master?.versions ?? 0,
    master_key_age_days: ageDays(master?.created_at ?? null, now),
    data_keys: Number(keys?.data_keys ?? 0),
    oldest_current_data_key_age_days: ageDays(keys?.oldest_current_key_at ?? null, now),
    data_keys_wrapped_by_retired_master: Number(keys?.wrapped_by_retired ?? 0),
    max_age_days: KEY_MAX_AGE_DAYS,
  };
  const problems = [
    ...(figures.data_keys_wrapped_by_retired_master > 0
      ? [
          `${figures.data_keys_wrapped_by_retired_master} data keys are still wrapped by a retired master version`,
        ]
      : []),
    ...((figures.master_key_age_days ?? 0) > KEY_MAX_AGE_DAYS
      ? [`master key version ${figures.master_version} is ${figures.master_key_age_days} days old`]
      : []),
    ...((figures.oldest_current_data_key_age_days ?? 0) > KEY_MAX_AGE_DAYS
      ? [`a tenant data key is ${figures.oldest_current_data_key_age_days} days old`]
      : []),
  ];
  if (problems.length > 0) return { result: 'failed', details: { summary: problems.join('; '), ...figures } };
  const masterText =
    master === undefined
      ? 'no master key registered yet'
      : `master key version ${master.version}, ${figures.master_key_age_days} days old`;
  return {
    result: 'pass',
    details: {
      summary: `${masterText}; ${figures.data_keys} data keys, none wrapped by a retired master version`,
      ...figures,
    },
  };
}
