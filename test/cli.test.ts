// The command line, called in-process.
import { describe, expect, it } from 'vitest';

import { main } from '../lib/cli.js';
import { runCli } from './helpers/cli.js';
import { tempDir, smallMamba2Config } from './helpers/models.js';
import { createRandomModel } from '../lib/models/random.js';

describe('taipan CLI', () => {
  it('doctor and doctor --json describe the backends', async () => {
    const text = await runCli(['doctor']);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/CPU backend: (avx2|portable) kernels/);
    expect(text.out).toMatch(/backend "auto" uses: (cpu|cuda)/);
    const json = await runCli(['doctor', '--json']);
    const info = JSON.parse(json.out);
    expect(info.cpu.threads).toBeGreaterThan(0);
    expect(info.cuda).toHaveProperty('reason');
  });

  it('generate runs greedy decoding on a checkpoint', async () => {
    const dir = tempDir();
    try {
      await createRandomModel(smallMamba2Config(), dir.dir, { seed: 3 });
      const r = await runCli(['generate', '--model', dir.dir, '--ids', '1,2,3', '--max-tokens', '5', '--backend', 'cpu']);
      expect(r.code).toBe(0);
      const ids = r.out.trim().split(',').map(Number);
      expect(ids).toHaveLength(5);
      expect(ids.every((i) => Number.isInteger(i) && i >= 0 && i < 100)).toBe(true);
    } finally {
      dir.cleanup();
    }
  });

  it('<command> --help prints the usage, with every preset including the Jamba ones', async () => {
    for (const argv of [['bench', '--help'], ['bench', 'latency', '-h'], ['generate', '--help']]) {
      const r = await runCli(argv);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^usage: taipan <command>/);
      expect(r.out).toMatch(/presets: .*jamba-190m/);
    }
  });

  it('rejects unknown commands and bad options', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(1);
    await expect(main(['generate', '--model', '/nonexistent', '--ids', '1,x'])).rejects.toThrow(/--ids must be comma-separated integers/);
    await expect(main(['random', '--preset', 'mamba2-130m'])).rejects.toThrow(/--preset and --out/);
  });
});
