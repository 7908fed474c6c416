// The engine worker: loads the model and its tokenizer, runs a BatchEngine, and relays
// messages (lib/engine/protocol.ts). Everything slow (writing a preset, loading weights and the
// tokenizer, encoding prompts, sampling) happens on this thread, never on the caller's.
import { parentPort, workerData } from 'node:worker_threads';

import { countParameters } from '../config.js';
import { CausalLM } from '../models/causal_lm.js';
import { BatchEngine } from './engine.js';
import { pickTokenizer, resolveModelDir } from './model_source.js';
import { errorInfo, type EngineEvent, type FromWorker, type ToWorker, type WorkerConfig } from './protocol.js';

const port = parentPort;
if (!port) throw new Error('lib/engine/worker.ts runs as a worker thread (see loadModel)');
const config = workerData as WorkerConfig;
const post = (m: FromWorker) => port.postMessage(m);

// Events of one engine step go out together, as one message.
let pending: EngineEvent[] = [];
let flushScheduled = false;
function flush(): void {
  flushScheduled = false;
  if (pending.length === 0) return;
  post({ type: 'events', events: pending });
  pending = [];
}
function emit(e: EngineEvent): void {
  pending.push(e);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

let model: CausalLM | null = null;
let engine: BatchEngine | null = null;

async function start(): Promise<void> {
  const { dir, name } = await resolveModelDir(config.model, (message) => post({ type: 'progress', message }));
  model = await CausalLM.load(dir, {
    backend: config.backend,
    threads: config.threads,
    weightDtype: config.weightDtype,
    prefillChunk: config.prefillChunk,
  });
  const tokenizer = pickTokenizer(config.tokenizer, dir, model.config);
  engine = new BatchEngine(model, tokenizer, config, emit);
  post({
    type: 'ready',
    info: {
      name,
      dir,
      modelType: model.config.model_type,
      vocabSize: model.config.vocab_size,
      parameters: countParameters(model.config),
      device: model.device,
      tokenizer: tokenizer?.source ?? null,
      eosIds: tokenizer?.eosIds ?? [],
      maxSequences: config.maxSequences,
      maxQueue: config.maxQueue,
      prefillChunk: config.prefillChunk,
    },
  });
}

async function close(): Promise<void> {
  try {
    await engine?.close();
  } finally {
    model?.dispose();
    flush();
    post({ type: 'closed' });
    port!.close();
  }
}

port.on('message', (m: ToWorker) => {
  if (m.type === 'generate') engine!.submit(m.id, m.prompt, m.options);
  else if (m.type === 'cancel') engine!.cancel(m.id);
  else if (m.type === 'close') void close();
});

start().catch((e) => {
  model?.dispose();
  post({ type: 'loadError', error: errorInfo(e) });
  port.close();
});
