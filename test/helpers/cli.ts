// Run the `taipan` command line in-process and collect what it prints.
import { vi } from 'vitest';

import { main } from '../../lib/cli.js';

/** stdout and console.error lines joined; stderr progress output is swallowed. */
export async function runCli(argv: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a) => void lines.push(a.join(' ')));
  const err = vi.spyOn(console, 'error').mockImplementation((...a) => void lines.push(a.join(' ')));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    const code = await main(argv);
    return { code, out: lines.join('\n') };
  } finally {
    log.mockRestore();
    err.mockRestore();
    stderr.mockRestore();
  }
}
