// A tiny byte-level tokenizer.json for tests: id b (0..255) is the byte b, 256 is <s> (BOS),
// 257 is </s> (EOS), and there are no merges, so every multi-byte character spans several
// tokens (what the stream decoder and stop strings must cope with). Fits a model with
// vocab_size 258.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BYTE_VOCAB = 258;
export const BOS = 256;
export const EOS = 257;

/** GPT-2's byte -> printable character table, as byte-level BPE vocabularies spell bytes. */
export function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + n++));
  return out;
}

/** Write tokenizer.json and tokenizer_config.json into `dir`; `eos` names the EOS token's text. */
export function writeByteTokenizer(dir: string, opts: { eos?: string; addBos?: boolean } = {}): void {
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, b) => (vocab[c] = b));
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(BOS, '<s>'), special(EOS, '</s>')],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: opts.eos ?? '</s>', add_bos_token: opts.addBos ?? true }));
}
