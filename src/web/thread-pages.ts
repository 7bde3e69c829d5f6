import type { RelayMessage, Thread } from '../relay/threads.ts';
import type { FormErrors } from './account-pages.ts';
import { time } from './dashboard-pages.ts';
import { errorBox, noticeBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// /dashboard/threads (RLY-4): the threads other tenants opened with this
// tenant's agents, and one thread with its messages, who wrote each, the
// owner's reply form and the close step. Every action is a POST form and
// works without JavaScript. A payload retention deleted (RLY-9) is shown as
// expired, never as an empty message.

const NOTICES: Readonly<Record<string, string>> = {
  replied: 'Your reply was added to the thread.',
  closed: 'The thread was closed: it takes no more messages.',
};

/** The notice a redirect named (?notice=…), from the fixed list only: the query is attacker-controlled. */
export function threadNoticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice) ? NOTICES[notice] : undefined;
}

export const EXPIRED_TEXT = 'expired (deleted after 30 days)';

/** The byte count in words a person reads. */
function size(bytes: number): string {
  return bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} KiB`;
}

function requester(thread: Thread): Html {
  return thread.requester_handle === null
    ? html`<span class="muted">a person</span>`
    : html`<code>${thread.requester_handle}</code>`;
}

export interface ThreadsPageInput {
  readonly threads: readonly Thread[];
  readonly pager: ListPager;
  /** Agent id → handle, for the threads shown. */
  readonly handles: ReadonlyMap<string, string>;
  /** The agent the list is filtered by (?agent_id=). */
  readonly agent?: { readonly id: string; readonly handle: string } | undefined;
}

export function threadsPage(frame: Frame, input: ThreadsPageInput): string {
  const handle = (thread: Thread) => input.handles.get(thread.agent_id) ?? thread.agent_id;
  return page(
    'Threads',
    html`<h1>Threads</h1>
<p>Conversations that other tenants started with your agents over an approved connection, most recently active first.</p>
${
  input.agent === undefined
    ? ''
    : html`<p>With <a href="/dashboard/agents/${input.agent.id}"><code>${input.agent.handle}</code></a> only. <a href="/dashboard/threads">All threads</a></p>`
}
${
  input.threads.length === 0
    ? html`<p class="muted">No threads yet.</p>`
    : html`<table>
<thead><tr><th>Agent</th><th>Requester</th><th>State</th><th>Messages</th><th>Last activity</th><th><span class="visually-hidden">Open</span></th></tr></thead>
<tbody>${input.threads.map(
        (thread) => html`<tr>
<td><code>${handle(thread)}</code></td>
<td>${requester(thread)}</td>
<td>${thread.state}</td>
<td>${thread.message_count}</td>
<td>${time(thread.updated_at)}</td>
<td><a href="/dashboard/threads/${thread.id}" aria-label="Open the thread of ${thread.requester_handle ?? 'a person'} with ${handle(thread)}">Open</a></td>
</tr>`,
      )}</tbody>
</table>`
}
${pagerNav(input.pager, 'Pages of threads')}`,
    frame,
  );
}

export interface ThreadPageInput {
  readonly thread: Thread;
  readonly agentHandle: string;
  readonly messages: readonly RelayMessage[];
  readonly pager: ListPager;
  /** Owner message id → the username of who wrote it. */
  readonly ownerNames: ReadonlyMap<string, string>;
  readonly values?: { readonly text?: string | undefined };
  readonly errors?: FormErrors;
  readonly notice?: string | undefined;
  readonly error?: string | undefined;
}

function author(input: ThreadPageInput, message: RelayMessage): Html {
  if (message.author === 'caller') return requester(input.thread);
  if (message.author === 'agent') return html`the agent <code>${input.agentHandle}</code>`;
  return html`${input.ownerNames.get(message.id) ?? 'owner'} <span class="muted">(owner)</span>`;
}

function messageItem(input: ThreadPageInput, message: RelayMessage): Html {
  return html`<li class="message" id="m-${message.seq}">
<p class="meta"><strong>${author(input, message)}</strong> · ${time(message.created_at)}${
    message.delivery === null ? '' : html` · <span class="delivery">${message.delivery}</span>`
  }</p>
${
  message.body === null
    ? html`<p class="muted expired">${EXPIRED_TEXT}</p>`
    : html`<pre>${message.body}</pre>`
}
</li>`;
}

function replyForm(input: ThreadPageInput): Html {
  const fields = input.errors?.fields ?? {};
  const error = Object.hasOwn(fields, 'text') ? fields.text : undefined;
  return html`<h2>Reply</h2>
${errorBox(input.errors?.form)}
<form method="post" action="/dashboard/threads/${input.thread.id}/messages" class="stack">
<div class="field${error === undefined ? '' : ' invalid'}">
<label for="f-text">Your reply, as the owner</label>
<textarea id="f-text" name="text" rows="4" required${
    error === undefined ? '' : html` aria-invalid="true" aria-describedby="f-text-error"`
  }>${input.values?.text ?? ''}</textarea>
${error === undefined ? '' : html`<p class="error" id="f-text-error">${error}</p>`}
</div>
<button type="submit">Send reply</button>
</form>
<p><a href="/dashboard/threads/${input.thread.id}/close">Close the thread…</a></p>`;
}

export function threadPage(frame: Frame, input: ThreadPageInput): string {
  const { thread } = input;
  return page(
    `Thread with ${input.agentHandle}`,
    html`<h1>Thread with <code>${input.agentHandle}</code></h1>
${noticeBox(input.notice)}
${errorBox(input.error)}
<dl class="facts">
<dt>State</dt><dd>${thread.state}</dd>
<dt>Agent</dt><dd><a href="/dashboard/agents/${thread.agent_id}"><code>${input.agentHandle}</code></a></dd>
<dt>Requester</dt><dd>${requester(thread)}</dd>
<dt>Connection</dt><dd><a href="/dashboard/connections"><code>${thread.connection_id}</code></a></dd>
<dt>Created</dt><dd>${time(thread.created_at)}</dd>
<dt>Last activity</dt><dd>${time(thread.updated_at)}</dd>
${thread.closed_at === null ? '' : html`<dt>Ended</dt><dd>${time(thread.closed_at)}</dd>`}
<dt>Messages</dt><dd>${thread.message_count} (${size(thread.payload_bytes)})</dd>
</dl>
<h2>Messages</h2>
${
  input.messages.length === 0
    ? html`<p class="muted">No messages on this page.</p>`
    : html`<ol class="messages">${input.messages.map((message) => messageItem(input, message))}</ol>`
}
${pagerNav(input.pager, 'Pages of messages')}
${
  thread.state === 'open'
    ? replyForm(input)
    : html`<p class="muted">This thread is ${thread.state}: it takes no more messages.</p>`
}
<p><a href="/dashboard/threads?agent_id=${thread.agent_id}">All threads with this agent</a></p>`,
    frame,
  );
}
