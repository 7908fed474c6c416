// Mamba2Model: a causal LM whose layers are all Mamba-2 blocks (model_type "mamba2", and the
// state-spaces/mamba2-* checkpoints).
import type { ModelConfig } from '../config.js';
import { CausalLM, type LoadOptions } from './causal_lm.js';

export class Mamba2Model extends CausalLM {
  static override async load(dir: string, opts: LoadOptions = {}): Promise<Mamba2Model> {
    return (await super.load(dir, opts)) as Mamba2Model;
  }

  protected static override checkConfig(config: ModelConfig): void {
    const other = config.layer_types.findIndex((t) => t !== 'mamba2');
    if (other >= 0) {
      throw new Error(`Mamba2Model runs Mamba-2 layers only, but layer ${other} is "${config.layer_types[other]}" (model_type ${config.model_type})`);
    }
  }
}
