// TransformerModel: the Transformer++ baseline (model_type "transformer", MODEL.md section 7):
// Llama-style blocks of RoPE attention over a growing KV cache, GQA, and a SwiGLU MLP.
import { loadConfig, type ModelConfig } from '../config.js';
import { CausalLM, type LoadOptions } from './causal_lm.js';

export class TransformerModel extends CausalLM {
  static override async load(dir: string, opts: LoadOptions = {}): Promise<TransformerModel> {
    // Through `this`, so that checkConfig below runs and the model is a TransformerModel.
    return (await this.fromCheckpoint(loadConfig(dir), dir, opts)) as TransformerModel;
  }

  protected static override checkConfig(config: ModelConfig): void {
    const other = config.layer_types.findIndex((t) => t !== 'attention');
    if (other >= 0) {
      throw new Error(`TransformerModel runs attention layers only, but layer ${other} is "${config.layer_types[other]}" (model_type ${config.model_type})`);
    }
  }
}
