// TaipanModel: a causal LM of Mamba-2 blocks and Selective Attention Layers in any pattern
// (model_type "taipan"; a pure Mamba-2 config is the special case with no SAL).
import type { ModelConfig } from '../config.js';
import { CausalLM, type LoadOptions } from './causal_lm.js';

export class TaipanModel extends CausalLM {
  static override async load(dir: string, opts: LoadOptions = {}): Promise<TaipanModel> {
    return (await super.load(dir, opts)) as TaipanModel;
  }

  protected static override checkConfig(config: ModelConfig): void {
    const other = config.layer_types.findIndex((t) => t !== 'mamba2' && t !== 'sal');
    if (other >= 0) {
      throw new Error(`TaipanModel runs Mamba-2 and SAL layers only, but layer ${other} is "${config.layer_types[other]}"`);
    }
  }
}
