import { StringDecoder } from 'node:string_decoder';
import type { UsageFormat } from './providers.ts';

// A call's token counts, read from the provider's answer as it passes
// through (the bytes go to the agent unchanged; this reads a copy). A JSON
// answer is read once it ends; a server-sent-event stream line by line,
// parsing only the lines that carry usage, so a long stream costs a scan.

export interface TokenCounts {
  readonly input: number;
  readonly output: number;
}

export interface UsageTap {
  write(chunk: Buffer): void;
  /** The counts the answer carried, or undefined when it carried none (or more than the tap reads). */
  end(): TokenCounts | undefined;
}

/** A JSON answer larger than this is passed on but not read for usage. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
/** An event-stream line longer than this is skipped (usage lines are short). */
const MAX_LINE_BYTES = 1024 * 1024;

type Json = unknown;

interface Counting {
  input?: number | undefined;
  output?: number | undefined;
}

function member(value: Json, ...names: string[]): Json {
  let current = value;
  for (const name of names) {
    if (typeof current !== 'object' || current === null || Array.isArray(current)) return undefined;
    current = (current as Record<string, Json>)[name];
  }
  return current;
}

function count(value: Json): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/** Folds one parsed JSON answer or stream event into the counts so far. */
function fold(format: UsageFormat, value: Json, so: Counting): void {
  switch (format) {
    case 'anthropic': {
      // Messages: `usage`; stream: message_start's `message.usage`, then message_delta's cumulative `usage`.
      const usage = member(value, 'usage') ?? member(value, 'message', 'usage');
      so.input = count(member(usage, 'input_tokens')) ?? so.input;
      so.output = count(member(usage, 'output_tokens')) ?? so.output;
      return;
    }
    case 'openai-chat': {
      const usage = member(value, 'usage');
      so.input = count(member(usage, 'prompt_tokens')) ?? so.input;
      so.output = count(member(usage, 'completion_tokens')) ?? so.output;
      return;
    }
    case 'openai-responses': {
      // Non-streamed: the response object; streamed: response.completed carries it as `response`.
      const usage = member(value, 'usage') ?? member(value, 'response', 'usage');
      so.input = count(member(usage, 'input_tokens')) ?? so.input;
      so.output = count(member(usage, 'output_tokens')) ?? so.output;
      return;
    }
    case 'google': {
      // A streamed answer without alt=sse is one JSON array of the same chunks.
      for (const item of Array.isArray(value) ? value : [value]) {
        const usage = member(item, 'usageMetadata');
        const candidates = count(member(usage, 'candidatesTokenCount'));
        const thoughts = count(member(usage, 'thoughtsTokenCount')) ?? 0;
        so.input = count(member(usage, 'promptTokenCount')) ?? so.input;
        if (candidates !== undefined) so.output = candidates + thoughts;
      }
      return;
    }
    case 'none':
      return;
  }
}

function parse(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function result(so: Counting): TokenCounts | undefined {
  if (so.input === undefined && so.output === undefined) return undefined;
  return { input: so.input ?? 0, output: so.output ?? 0 };
}

export function createUsageTap(format: UsageFormat, contentType: string | undefined): UsageTap {
  const so: Counting = {};
  if (format === 'none') return { write: () => undefined, end: () => undefined };
  if (contentType?.toLowerCase().startsWith('text/event-stream') === true) {
    const decoder = new StringDecoder('utf8');
    let partial = '';
    let skipping = false;
    const line = (text: string) => {
      // Only `data:` lines that mention usage are parsed.
      if (!text.startsWith('data:') || !text.includes('sage')) return;
      fold(format, parse(text.slice(5).trim()), so);
    };
    return {
      write(chunk) {
        let text = decoder.write(chunk);
        while (text.length > 0) {
          const newline = text.indexOf('\n');
          if (newline === -1) {
            if (!skipping) partial += text;
            if (partial.length > MAX_LINE_BYTES) {
              partial = '';
              skipping = true;
            }
            return;
          }
          if (!skipping) line((partial + text.slice(0, newline)).replace(/\r$/, ''));
          partial = '';
          skipping = false;
          text = text.slice(newline + 1);
        }
      },
      end() {
        if (!skipping && partial.length > 0) line(partial.replace(/\r$/, ''));
        return result(so);
      },
    };
  }
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    write(chunk) {
      size += chunk.length;
      if (size <= MAX_JSON_BYTES) chunks.push(chunk);
    },
    end() {
      if (size > MAX_JSON_BYTES) return undefined;
      fold(format, parse(Buffer.concat(chunks).toString('utf8')), so);
      return result(so);
    },
  };
}
