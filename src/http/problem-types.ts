// Every problem type the HTTP surface can answer with, keyed by the stable
// code that errors carry. `type` URIs point at /docs/problems, which renders
// this same table, so a client can always look a code up.
export interface ProblemType {
  readonly status: number;
  readonly title: string;
  readonly description: string;
}

export const PROBLEM_TYPES = {
  not_found: {
    status: 404,
    title: 'Not found',
    description:
      'No such route or resource, or one that belongs to another tenant (the two are indistinguishable).',
  },
  validation_failed: {
    status: 400,
    title: 'Request is not valid',
    description: 'A parameter, query or body field failed its schema; `errors` lists each field and why.',
  },
  malformed_body: {
    status: 400,
    title: 'Body could not be parsed',
    description:
      'The body is not valid for its Content-Type (for example, broken JSON), or is empty where one is required.',
  },
  cursor_invalid: {
    status: 400,
    title: 'Cursor not valid',
    description:
      'The `after` cursor is not one this list gave out: altered, or of another list, user, agent or tenant.',
  },
  bad_request: { status: 400, title: 'Bad request', description: 'The request could not be understood.' },
  uri_too_long: {
    status: 414,
    title: 'Path too long',
    description: 'A path segment is longer than any route accepts (100 characters).',
  },
  body_too_large: {
    status: 413,
    title: 'Body too large',
    description: 'The body is larger than this route accepts.',
  },
  unsupported_media_type: {
    status: 415,
    title: 'Unsupported media type',
    description: 'The Content-Type is not one this route accepts.',
  },
  invite_invalid: {
    status: 400,
    title: 'Invite not valid',
    description: 'The invite does not exist, or was used, revoked or has expired.',
  },
  link_invalid: {
    status: 400,
    title: 'Link not valid',
    description: 'The one-time link does not exist, or was used or has expired (links last 60 minutes).',
  },
  login_failed: {
    status: 401,
    title: 'Sign-in failed',
    description:
      'The login or password is not correct. The answer is the same whether or not the account exists.',
  },
  unauthenticated: {
    status: 401,
    title: 'Not signed in',
    description:
      'The request carries no valid session cookie or API token, or it was revoked or has expired.',
  },
  token_wrong_kind: {
    status: 401,
    title: 'Wrong kind of token',
    description:
      'The Bearer token is of another kind than this endpoint takes: the API takes API tokens (enc_live_…), starting and following up relay threads relay tokens (enc_relay_…), reading, answering and closing a thread thread tokens (enc_thread_…).',
  },
  relay_token_invalid: {
    status: 401,
    title: 'Relay token not valid',
    description:
      'Starting a relay thread or following one up needs Authorization: Bearer enc_relay_… of an approved connection. The token is missing, unknown, or its connection was revoked.',
  },
  thread_token_invalid: {
    status: 401,
    title: 'Thread token not valid',
    description:
      'Reading, answering or closing a relay thread needs Authorization: Bearer enc_thread_… (POST /api/v1/threads/{id}/access-token). The token is missing, unknown or past its 60 minutes.',
  },
  csrf_rejected: {
    status: 403,
    title: 'Cross-site request refused',
    description:
      'A state-changing request without a Bearer token must come from this site (its Origin, or Sec-Fetch-Site: same-origin).',
  },
  forbidden: {
    status: 403,
    title: 'Not allowed',
    description:
      'The credentials are valid but do not allow this action (for example, a read-scoped token writing).',
  },
  reauth_required: {
    status: 403,
    title: 'Sign in again',
    description:
      'Turning off a second factor, changing the email, unlinking an identity and creating an API token need a session signed in within the last 10 minutes (ACC-8). Sign in again and retry.',
  },
  second_factor_required: {
    status: 403,
    title: 'Second factor required',
    description:
      'The tenant requires a second factor of every member. Until this account sets one up on /profile, only the setup pages are open (ACC-8).',
  },
  last_owner: {
    status: 409,
    title: 'Last owner',
    description:
      'A tenant keeps at least one owner: make another member an owner before demoting or removing this one.',
  },
  identity_failed: {
    status: 400,
    title: 'Provider sign-in failed',
    description:
      'The sign-in provider did not confirm who you are: the flow was refused, or its answer failed a check (state, nonce, audience, expiry, signature).',
  },
  identity_flow_invalid: {
    status: 400,
    title: 'Provider sign-in not valid',
    description:
      'The provider sign-in this answer belongs to was not started in this browser, was already used, or has expired (flows last 10 minutes).',
  },
  invite_needed: {
    status: 403,
    title: 'Invite needed',
    description:
      'No account is linked to this identity or its verified email, and accounts are made only by invite: open your invite link, then sign up with the provider there.',
  },
  identity_in_use: {
    status: 409,
    title: 'Identity linked elsewhere',
    description: 'This identity at the provider is already linked to another account.',
  },
  last_sign_in_method: {
    status: 409,
    title: 'Last way to sign in',
    description:
      'An account keeps at least one way to sign in: set a password, add a passkey or link another identity before unlinking this one.',
  },
  handle_taken: {
    status: 409,
    title: 'Handle taken',
    description:
      'Agent handles are unique across the whole platform and another agent already has this one; choose another.',
  },
  template_unavailable: {
    status: 409,
    title: 'Agent template not installed',
    description:
      "The agent's template is no longer installed on this platform, so its credentials cannot be checked; ask the operator to restore it.",
  },
  connection_exists: {
    status: 409,
    title: 'Connection already requested',
    description:
      'This requester (the agent, or the person) already has a pending or approved connection to that agent.',
  },
  connection_state: {
    status: 409,
    title: 'Connection already decided',
    description:
      'The connection is not in a state that allows this step (approved or denied already, or revoked); nothing changed.',
  },
  card_unpublished: {
    status: 409,
    title: 'Card not published',
    description: 'A directory listing is of a published card: publish the agent’s card first (RLY-1).',
  },
  listing_state: {
    status: 409,
    title: 'No directory listing',
    description: 'The agent has no directory listing to withdraw; nothing changed.',
  },
  relay_token_claimed: {
    status: 409,
    title: 'Relay token already claimed',
    description:
      'A relay token is handed out exactly once (RLY-3); ask the owner to revoke this connection and request a new one.',
  },
  message_too_large: {
    status: 413,
    title: 'Message too large',
    description: 'A relay message is at most 32 KiB of UTF-8 text (MAX_MESSAGE_BYTES); nothing was written.',
  },
  thread_state: {
    status: 409,
    title: 'Thread not open',
    description:
      'The thread was closed, or revoked with its connection (RLY-3); it takes no more messages. Start a new thread over an approved connection.',
  },
  idempotency_key_invalid: {
    status: 400,
    title: 'Idempotency-Key not valid',
    description:
      'The Idempotency-Key header is missing where the route requires it, or is not one quoted string (RFC 8941 sf-string) of 1 to 255 printable ASCII characters, as in Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324".',
  },
  idempotency_key_reused: {
    status: 422,
    title: 'Idempotency-Key used for another request',
    description:
      'Within the last 24 hours this Idempotency-Key was sent with another request (method, path or body). Nothing was done; send a new key for a new request.',
  },
  idempotency_request_in_flight: {
    status: 409,
    title: 'Request with this Idempotency-Key still running',
    description:
      'The first request with this Idempotency-Key has not finished. Retry shortly with the same key and body: once it has, the retry gets its answer.',
  },
  rate_limited: {
    status: 429,
    title: 'Too many requests',
    description: 'This action is rate-limited. Retry after the number of seconds in the Retry-After header.',
  },
  password_checks_busy: {
    status: 429,
    title: 'Too many password checks',
    description:
      'Every password worker is busy and the queue in front of them is full (ENCLAVE_PASSWORD_WORKERS, ENCLAVE_PASSWORD_QUEUE). Nothing was checked or counted against the account: retry after the number of seconds in the Retry-After header.',
  },
  client_gone: {
    status: 499,
    title: 'Client closed the request',
    description:
      'The client disconnected while its request was waiting, so the work was dropped. Nobody receives this answer; it appears in logs only.',
  },
  not_ready: {
    status: 503,
    title: 'Not ready',
    description: 'The database is unreachable or its schema is behind this version; retry later.',
  },
  database_unavailable: {
    status: 503,
    title: 'Database unavailable',
    description:
      'The database could not be reached or did not answer in time (ENCLAVE_DB_TIMEOUT_MS, 5 s by default). Nothing needs restarting: retry after the number of seconds in the Retry-After header.',
  },
  method_not_allowed: {
    status: 405,
    title: 'Method not allowed',
    description: 'The path is served, but not with this method; the Allow header names the one it takes.',
  },
  agent_token_invalid: {
    status: 401,
    title: 'Agent token not valid',
    description:
      "The model gateway takes only the calling instance's own agent token (enc_agent_…), in the header the provider's SDK sends its key in. Missing, malformed, revoked, or another agent's token: all the same.",
  },
  agent_not_running: {
    status: 403,
    title: 'Agent not running',
    description: 'The model gateway serves an agent only while its instance is starting or running.',
  },
  model_not_served: {
    status: 400,
    title: 'Model not served',
    description:
      "The request names no model, or one that is not that provider's (claude-… for Anthropic, gpt-…/o… for OpenAI, gemini-… for Google AI, grok-… for xAI). No upstream call was made.",
  },
  provider_key_missing: {
    status: 409,
    title: 'No key for this provider',
    description:
      "The agent's tenant gave this agent no key for the provider it called. Add one on the agent's page (or PUT /api/v1/agents/{id}/credentials/{name}); the next call uses it.",
  },
  usage_required: {
    status: 400,
    title: 'Usage must be streamed',
    description:
      'The agent has a tokens-per-day limit, and a streamed chat completion counts against it only if it asks for its usage: set stream_options.include_usage to true.',
  },
  token_limit_reached: {
    status: 429,
    title: 'Daily token limit reached',
    description:
      "The agent has used its tokens per day (a UTC day) through the model gateway. Retry-After says when the day ends; the tenant can raise the limit on the agent's page.",
  },
  gateway_busy: {
    status: 503,
    title: 'Model gateway busy',
    description:
      'The instance has as many calls in flight, or as many request bytes buffered, as the gateway allows one instance. Retry after the number of seconds in Retry-After.',
  },
  upstream_unreachable: {
    status: 502,
    title: 'Provider unreachable',
    description:
      "The model gateway could not reach the provider's API, or it broke off. The detail names the provider; nothing else was sent to it.",
  },
  upstream_timeout: {
    status: 504,
    title: 'Provider timed out',
    description:
      "The provider's API did not answer within the gateway's timeout (ENCLAVE_GATEWAY_TIMEOUT_MS).",
  },
  auto_unsupported: {
    status: 400,
    title: '"auto" not possible here',
    description:
      'The model "auto" on /v1/messages answers through OpenAI only unstreamed and with text content: ask without stream, or name a model.',
  },
  callback_url_invalid: {
    status: 400,
    title: 'Callback URL not valid',
    description: 'The callback URL is not an absolute URL with a host.',
  },
  callback_url_too_long: {
    status: 400,
    title: 'Callback URL too long',
    description: 'A callback URL is at most 2,000 characters.',
  },
  callback_url_credentials: {
    status: 400,
    title: 'Credentials in the callback URL',
    description:
      'A callback URL must not carry a user name or password (https://user:pass@…): receivers verify the signature instead.',
  },
  callback_url_scheme: {
    status: 400,
    title: 'Callback URL scheme not allowed',
    description: 'Callbacks go to https URLs; http is allowed only when ENCLAVE_ENV is development.',
  },
  callback_url_unresolvable: {
    status: 400,
    title: 'Callback host does not resolve',
    description: 'The host name of the callback URL has no address in DNS now.',
  },
  callback_destination_forbidden: {
    status: 400,
    title: 'Callback destination not allowed',
    description:
      'The callback URL names, or its host resolves to, an address that is not public (loopback, private, link-local, shared, multicast, unspecified, cloud metadata, or one of the host itself), and the operator has not allowed its range in ENCLAVE_CALLBACK_ALLOW (RLY-12).',
  },
  passkey_challenge_invalid: {
    status: 400,
    title: 'No passkey request waiting',
    description:
      'A passkey answer needs the challenge its options gave, from the same session or browser, within 5 minutes, once. Ask for new options and try again.',
  },
  passkey_rejected: {
    status: 400,
    title: 'Passkey not verified',
    description:
      'The passkey answer did not verify: another origin or RP ID, another challenge, no user verification, or a bad signature.',
  },
  passkey_exists: {
    status: 409,
    title: 'Passkey already registered',
    description: 'This passkey (its credential id) is already registered.',
  },
  passkey_limit: {
    status: 409,
    title: 'Too many passkeys',
    description: 'An account holds at most 20 passkeys: remove one before adding another.',
  },
  internal: {
    status: 500,
    title: 'Internal error',
    description: 'Something failed on the server. The details are in the server log under the request id.',
  },
  webhook_unauthorized: {
    status: 401,
    title: 'Webhook signature not valid',
    description:
      "POST /hooks/{endpoint_id} takes only Standard Webhooks-signed requests: webhook-id, webhook-timestamp (within 5 minutes of our clock) and a webhook-signature that verifies under the endpoint's secret. Missing, malformed, stale, wrongly signed, or an unknown endpoint: all the same. Nothing was recorded.",
  },
  inbound_endpoint_limit: {
    status: 409,
    title: 'Too many inbound endpoints',
    description: 'An agent has at most 20 inbound webhook endpoints: delete one first.',
  },
  callback_endpoint_limit: {
    status: 409,
    title: 'Too many webhook endpoints',
    description: 'An agent, or a connection, has at most 20 callback webhook endpoints: delete one first.',
  },
} as const satisfies Record<string, ProblemType>;

export type ProblemCode = keyof typeof PROBLEM_TYPES;

export function problemTypeUri(code: ProblemCode): string {
  return `/docs/problems#${code}`;
}

export function isProblemCode(code: string): code is ProblemCode {
  return Object.hasOwn(PROBLEM_TYPES, code);
}
