// taipan: run Taipan language models (and the Mamba-2, Transformer++ and Jamba baselines) from Node.js.
export {
  getBackendInfo,
  resolveBackend,
  setThreads,
  getThreads,
  cudaMemory,
  cudaReleaseCache,
  type BackendName,
  type BackendInfo,
  type CudaMemoryInfo,
} from './backend.js';
export { addon, type NativeTensor, type NativeStream, type DeviceName } from './native.js';
export { Ops } from './ops.js';
export {
  parseConfig,
  loadConfig,
  configToJson,
  countParameters,
  getPreset,
  PRESETS,
  ConfigError,
  type ModelConfig,
  type SsmConfig,
  type SalConfig,
  type AttnConfig,
  type MambaConfig,
  type MoeConfig,
  type JambaVariant,
  type LayerType,
  ffnKind,
} from './config.js';
export { openCheckpoint, writeSafetensors, SafetensorsFile, SafetensorsError, type TensorSource } from './safetensors.js';
export { WeightLoader, CheckpointError, type WeightDType } from './weights.js';
export { Mamba2Block, Mamba2State } from './layers/mamba2_block.js';
export { SelectiveAttentionLayer, SalState, type SalSelection } from './layers/sal.js';
export { AttentionBlock, KvCacheState } from './layers/attention_block.js';
export { Mamba1Block, Mamba1State } from './layers/mamba1_block.js';
export { DenseSwiGlu, MixtureOfExperts, type FeedForward } from './layers/ffn.js';
export {
  CausalLM,
  SequenceState,
  argmax,
  type LoadOptions,
  type PrefillOptions,
  type PrefillResult,
} from './models/causal_lm.js';
export { Mamba2Model } from './models/mamba2.js';
export { TaipanModel } from './models/taipan.js';
export { TransformerModel } from './models/transformer.js';
export { JambaModel } from './models/jamba.js';
export { createRandomModel, randomWeights, Rng, type RandomModelOptions } from './models/random.js';
export { TokenFile, arrayTokens, evaluatePerplexity, type TokenSource, type EvalOptions, type EvalResult, type EvalWindow } from './eval.js';
export { Sampler, validateSamplingOptions, randomSeed, SAMPLING_DEFAULTS, type SamplingOptions, type ResolvedSampling } from './sampler.js';
export { Tokenizer, TokenizerError, type StreamDecoder } from './tokenizer.js';
export {
  loadModel,
  LanguageModel,
  Generation,
  QueueFullError,
  InvalidRequestError,
  type LoadModelOptions,
  type GenerateOptions,
  type GeneratedToken,
  type Completion,
  type ModelInfo,
  type StopReason,
} from './generate.js';
export { createCompletionServer, type CompletionServerOptions } from './server.js';
