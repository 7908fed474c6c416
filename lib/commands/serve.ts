// taipan serve --model DIR|PRESET [--port 8000] [--host 127.0.0.1]: the completions endpoint
// (lib/server.ts) until SIGINT or SIGTERM, then a clean shutdown.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

import { loadModel } from '../generate.js';
import { createCompletionServer } from '../server.js';
import { loadOptions, positiveInt } from './common.js';
import { MODEL_ARGS } from './generate.js';

export async function serveCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...MODEL_ARGS,
      port: { type: 'string', default: '8000' },
      host: { type: 'string', default: '127.0.0.1' },
      'max-sequences': { type: 'string' },
      'max-queue': { type: 'string' },
    },
  });
  if (!values.model) throw new Error('serve needs --model DIR|PRESET');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be an integer in [0, 65535], got "${values.port}"`);
  const maxQueue = values['max-queue'] === undefined ? undefined : Number(values['max-queue']);
  if (maxQueue !== undefined && !(Number.isInteger(maxQueue) && maxQueue >= 0)) throw new Error(`--max-queue must be an integer >= 0, got "${values['max-queue']}"`);

  const { backend, threads } = loadOptions(values);
  process.stderr.write(`loading ${values.model} ...\n`);
  const model = await loadModel(values.model, {
    backend,
    threads,
    prefillChunk: positiveInt(values['prefill-chunk'], '--prefill-chunk'),
    maxSequences: positiveInt(values['max-sequences'], '--max-sequences'),
    maxQueue,
    tokenizer: values.tokenizer,
    onProgress: (m) => process.stderr.write(m + '\n'),
  });
  const server = createCompletionServer(model);
  try {
    server.listen(port, values.host);
    await once(server, 'listening');
    const { address, port: bound } = server.address() as AddressInfo;
    const tok = model.info.tokenizer ? `tokenizer ${model.info.tokenizer}` : 'no tokenizer: token-id prompts only';
    process.stderr.write(`serving ${model.info.name} (${tok}) on http://${address}:${bound}  POST /v1/completions, GET /health\n`);
    const [signal] = await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')]);
    process.stderr.write(`${String(signal)}: shutting down\n`);
    return 0;
  } finally {
    server.close();
    server.closeAllConnections();
    await model[Symbol.asyncDispose]();
  }
}
