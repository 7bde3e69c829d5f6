import http from 'node:http';

// One raw HTTP request with exactly the headers given (no client library
// adds or rewrites any), its answer read whole as bytes: for tests of what
// a proxy passes on.

export interface RawAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface RawRequest {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  /** A Unix socket to send it over instead of TCP (url is then the path). */
  readonly socketPath?: string;
  readonly agent?: http.Agent | false;
}

export function sendRaw(url: string, options: RawRequest = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const settings: http.RequestOptions = {
      method: options.method ?? 'GET',
      headers: options.headers ?? {},
      agent: options.agent ?? false,
    };
    const onAnswer = (response: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }),
      );
      response.on('error', reject);
    };
    const request =
      options.socketPath === undefined
        ? http.request(url, settings, onAnswer)
        : http.request({ ...settings, socketPath: options.socketPath, path: url }, onAnswer);
    request.on('error', reject);
    request.end(options.body);
  });
}
