// The text side of one generation: ids become text through the tokenizer's stream decoder
// (never half a character), and stop strings are looked for in that text, also when one is
// spread over several tokens. Text that might be the start of a stop string is held back until
// the next tokens settle it, so nothing after a stop string is ever emitted.
import type { StreamDecoder } from '../tokenizer.js';

/** Finds the first of several stop strings in text that arrives in pieces. */
export class StopMatcher {
  private held = '';
  private readonly longest: number;

  constructor(readonly stops: readonly string[]) {
    this.longest = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Adds a piece; returns the text that is safe to emit, and whether a stop string was found. */
  push(piece: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text: piece, stopped: false };
    const buf = this.held + piece;
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.held = '';
      return { text: buf.slice(0, at), stopped: true };
    }
    // Hold back the longest tail of the text that a stop string starts with.
    let keep = 0;
    for (let k = Math.min(this.longest - 1, buf.length); k > 0 && keep === 0; k--) {
      const tail = buf.slice(buf.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) keep = k;
    }
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** The held-back text, once no more text will come. */
  flush(): string {
    const h = this.held;
    this.held = '';
    return h;
  }
}

/** Ids in, emitted text out, for one sequence. Without a decoder (no tokenizer) all text is ''. */
export class TextStream {
  private readonly matcher: StopMatcher;

  constructor(
    private readonly decoder: StreamDecoder | null,
    stops: readonly string[],
    /** Ids the decoder knows (a tokenizer may be smaller than the model's vocabulary). */
    private readonly decodable: number,
  ) {
    this.matcher = new StopMatcher(stops);
  }

  /** The text that `id` completes (possibly ''), and whether it completed a stop string. */
  push(id: number): { text: string; stopped: boolean } {
    if (!this.decoder) return { text: '', stopped: false };
    return this.matcher.push(id < this.decodable ? this.decoder.push(id) : '');
  }

  /** Whatever is still held back, once the sequence has ended without a stop string. */
  finish(): { text: string; stopped: boolean } {
    if (!this.decoder) return { text: '', stopped: false };
    const last = this.matcher.push(this.decoder.flush());
    return last.stopped ? last : { text: last.text + this.matcher.flush(), stopped: false };
  }
}
