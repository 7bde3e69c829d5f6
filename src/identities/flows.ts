import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import type { FlowChecks } from './provider-client.ts';

// ACC-9: a provider sign-in in flight (identity_flows, 0029). The browser that
// starts it holds a random secret in a cookie; the row holds only the hash of
// that secret and the hash of `state`. The PKCE verifier and the nonce are
// derived from the secret and the state, so a copy of the database cannot
// finish a flow, and the flow survives a restart (nothing lives in memory).
// A row is used once, within FLOW_MINUTES.

export const FLOW_MINUTES = 10;
/** The cookie that binds flows to their browser. */
export const FLOW_COOKIE = 'enclave_identity_flow';

export type FlowPurpose = 'sign_in' | 'link';

export interface NewFlow {
  readonly provider: string;
  readonly purpose: FlowPurpose;
  /** For 'link': the signed-in user asking. */
  readonly linkUserId: string | null;
  /** The invite a sign-up through the provider redeems (inviteTokenHash). */
  readonly inviteHash: string | null;
  readonly nextPath: string | null;
}

export interface Flow extends NewFlow {
  readonly stateHash: string;
}

const BROWSER_SECRET = /^[A-Za-z0-9_-]{43}$/;

function sha256(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

/** The browser's flow secret from its cookie, if well-formed (a browser may run two flows at once); otherwise a fresh one. */
export function browserSecret(cookie: string | undefined): string {
  return cookie !== undefined && BROWSER_SECRET.test(cookie) ? cookie : randomBytes(32).toString('base64url');
}

/** The state, nonce and PKCE verifier of one flow: the nonce and verifier are keyed by the browser's secret. */
export function flowChecks(secret: string, state: string): FlowChecks {
  const derive = (purpose: string) =>
    createHmac('sha256', secret).update(`${purpose}\n${state}`).digest('base64url');
  return { state, nonce: derive('nonce'), codeVerifier: derive('pkce') };
}

export function newState(): string {
  return randomBytes(32).toString('base64url');
}

export async function insertFlow(sql: Sql, flow: NewFlow, secret: string, state: string): Promise<void> {
  await sql`
    insert into identity_flows
      (state_hash, browser_hash, provider, purpose, link_user_id, invite_hash, next_path, expires_at)
    values (${sha256(state)}, ${sha256(secret)}, ${flow.provider}, ${flow.purpose}, ${flow.linkUserId}::uuid,
            ${flow.inviteHash}, ${flow.nextPath}, now() + make_interval(mins => ${FLOW_MINUTES}))`;
}

/**
 * Uses the unexpired, unused flow that `state` names for this browser and
 * provider, once: a replayed callback, another browser's state or an expired
 * one find nothing. Both values are attacker-controlled; only their hashes
 * are compared, by the database.
 */
export async function takeFlow(
  sql: Sql,
  provider: string,
  state: string,
  secret: string | undefined,
): Promise<Flow | undefined> {
  if (secret === undefined || !BROWSER_SECRET.test(secret)) return undefined;
  const [row] = await sql<
    {
      state_hash: string;
      provider: string;
      purpose: FlowPurpose;
      link_user_id: string | null;
      invite_hash: string | null;
      next_path: string | null;
    }[]
  >`
    update identity_flows set used_at = now()
    where state_hash = ${sha256(state)} and browser_hash = ${sha256(secret)} and provider = ${provider}
      and used_at is null and expires_at > now()
    returning state_hash, provider, purpose, link_user_id, invite_hash, next_path`;
  if (row === undefined) return undefined;
  return {
    stateHash: row.state_hash,
    provider: row.provider,
    purpose: row.purpose,
    linkUserId: row.link_user_id,
    inviteHash: row.invite_hash,
    nextPath: row.next_path,
  };
}
