// The model providers the gateway serves (AGT-7). A leaf with no imports:
// templates name these in their credentials' "provider", and the gateway's
// routes, limits and usage records are keyed by them.

export const MODEL_PROVIDERS = ['anthropic', 'openai', 'google', 'xai'] as const;
export type ModelProvider = (typeof MODEL_PROVIDERS)[number];

/** How people name each provider, for pages and problem details. */
export const PROVIDER_LABELS: Readonly<Record<ModelProvider, string>> = {
  anthropic: 'Anthropic',
  openai: 'OpenAI',
  google: 'Google AI',
  xai: 'xAI',
};
