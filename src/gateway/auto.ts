// `"model": "auto"` on the platform's own /v1/messages (what templates/llm-chat
// calls): an Anthropic Messages request answered by whichever provider the
// tenant gave a key for. With an Anthropic key it goes to Anthropic as is,
// with the model filled in. With only an OpenAI key, a text-only,
// unstreamed request is put as a Chat Completions request and the answer
// put back as an Anthropic message; anything else is refused (auto_unsupported).

type Json = unknown;

export class AutoUnsupported extends Error {}

function text(content: Json): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw new AutoUnsupported('content must be text');
  return content
    .map((block: Json) => {
      const { type, text: value } = (block ?? {}) as { type?: unknown; text?: unknown };
      if (type !== 'text' || typeof value !== 'string') throw new AutoUnsupported('only text blocks');
      return value;
    })
    .join('');
}

/** An Anthropic Messages body as an OpenAI Chat Completions body for `model`. */
export function toChatCompletion(body: Record<string, Json>, model: string): Record<string, Json> {
  if (body.stream === true) throw new AutoUnsupported('streaming');
  const messages: { role: string; content: string }[] = [];
  if (body.system !== undefined) messages.push({ role: 'system', content: text(body.system) });
  if (!Array.isArray(body.messages)) throw new AutoUnsupported('messages must be a list');
  for (const message of body.messages as Json[]) {
    const { role, content } = (message ?? {}) as { role?: unknown; content?: unknown };
    if (role !== 'user' && role !== 'assistant') throw new AutoUnsupported('roles are user and assistant');
    messages.push({ role, content: text(content) });
  }
  const chat: Record<string, Json> = { model, messages };
  if (typeof body.max_tokens === 'number') chat.max_completion_tokens = body.max_tokens;
  if (typeof body.temperature === 'number') chat.temperature = body.temperature;
  return chat;
}

const STOP_REASONS: Readonly<Record<string, string>> = {
  stop: 'end_turn',
  length: 'max_tokens',
  content_filter: 'refusal',
  tool_calls: 'tool_use',
};

/** An OpenAI chat completion as an Anthropic message; undefined when it is not one. */
export function toAnthropicMessage(completion: Json): Record<string, Json> | undefined {
  if (typeof completion !== 'object' || completion === null) return undefined;
  const { id, model, choices, usage } = completion as {
    id?: unknown;
    model?: unknown;
    choices?: unknown;
    usage?: { prompt_tokens?: unknown; completion_tokens?: unknown };
  };
  if (!Array.isArray(choices) || choices.length === 0) return undefined;
  const choice = choices[0] as { message?: { content?: unknown }; finish_reason?: unknown };
  const content = typeof choice.message?.content === 'string' ? choice.message.content : '';
  return {
    id: typeof id === 'string' ? id : 'msg_auto',
    type: 'message',
    role: 'assistant',
    model: typeof model === 'string' ? model : 'auto',
    content: [{ type: 'text', text: content }],
    stop_reason: STOP_REASONS[String(choice.finish_reason)] ?? 'end_turn',
    stop_sequence: null,
    usage: {
      input_tokens: typeof usage?.prompt_tokens === 'number' ? usage.prompt_tokens : 0,
      output_tokens: typeof usage?.completion_tokens === 'number' ? usage.completion_tokens : 0,
    },
  };
}
