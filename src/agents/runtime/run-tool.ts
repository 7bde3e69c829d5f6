import { spawn } from 'node:child_process';

// A host tool run to its end for its exit code and a bounded share of what
// it printed (stdout and stderr together): the sandbox host's probes and the
// native helpers' build and check. It never throws: a tool that cannot be
// started has code null and the reason as its output.

export interface ToolResult {
  readonly code: number | null;
  readonly output: string;
}

const MAX_OUTPUT = 64 * 1024;

export function runTool(command: string, args: readonly string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let output = '';
    const collect = (chunk: Buffer) => {
      if (output.length < MAX_OUTPUT) output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', (error) => resolve({ code: null, output: output === '' ? error.message : output }));
    child.once('close', (code) => resolve({ code, output }));
  });
}
