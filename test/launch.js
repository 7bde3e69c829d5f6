// `npm test` starts here: plain JavaScript, so that an old Node gets the same
// one-line refusal as `npm start` instead of a stack trace from run.ts.
import { requireNode } from '../bin/node-version.js';

requireNode('npm test', 1);
await import('./run.ts');
