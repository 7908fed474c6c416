// JambaModel: the Jamba baseline (model_type "jamba", MODEL.md section 7). The original has
// Mamba-1 mixers, attention without positions at 1 in 8 layers, and an FFN after every mixer
// (dense or a mixture of experts); the Taipan paper's variant is the Taipan trunk with full RoPE
// attention in place of each SAL. Both are layer patterns CausalLM composes; this class only
// checks that the config is a Jamba.
import { loadConfig, type ModelConfig } from '../config.js';
import { CausalLM, type LoadOptions } from './causal_lm.js';

export class JambaModel extends CausalLM {
  static override async load(dir: string, opts: LoadOptions = {}): Promise<JambaModel> {
    return (await this.fromCheckpoint(loadConfig(dir), dir, opts)) as JambaModel;
  }

  protected static override checkConfig(config: ModelConfig): void {
    if (config.model_type !== 'jamba') throw new Error(`JambaModel runs model_type "jamba", got "${config.model_type}"`);
  }
}
