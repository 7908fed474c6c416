// A one-line progress bar on stderr for long benchmark runs: redrawn in place (at most ten
// times a second) when stderr is a terminal, silent otherwise, so logs and CI output only get
// the benchmark's own summary lines.
const WIDTH = 30;

export class ProgressBar {
  private last = 0;
  private drawn = false;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  /** `done` of `total` units (e.g. tokens); the bar is drawn when it changed enough to show. */
  update(done: number, total: number, unit = 'tokens'): void {
    if (!this.tty) return;
    const t = Date.now();
    if (done < total && t - this.last < 100) return;
    this.last = t;
    const filled = Math.round((WIDTH * Math.min(done, total)) / Math.max(total, 1));
    this.stream.write(`\r  ${this.label} [${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${done}/${total} ${unit}\x1b[K`);
    this.drawn = true;
  }

  /** Clear the bar's line so that the next log line starts clean. */
  clear(): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
