// The command line, called in-process.
import { describe, expect, it } from 'vitest';

import { main } from '../lib/cli.js';
import { runCli } from './helpers/cli.js';
import { tempDir, smallMamba2Config } from './helpers/models.js';
import { createRandomModel } from '../lib/models/random.js';
import { formatCpuBenchmark, formatOpProfile, prefillFlopsPerToken, profileOps, rooflineTokensPerSecond, type CpuBenchResult } from '../lib/bench/cpu.js';
import { getPreset } from '../lib/config.js';
import { Mamba2Model } from '../lib/models/mamba2.js';
import { addon } from '../lib/native.js';

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

  it('bench tables give each row its share of the measured roofline', () => {
    const decode = { weights: 'bf16', tokensPerSecond: 50, msPerToken: 20, bytesPerToken: 250e6, readBandwidth: 20e9 };
    const result: CpuBenchResult = {
      date: '2026-11-23', preset: 'mamba2-130m', parameters: 129e6, threads: 2, cpu: 'test', path: 'avx2', repeats: 3,
      rows: [
        { weights: 'bf16', test: 'prefill 512', tokensPerSecond: 600, msPerToken: 1.67, flopsPerToken: 200e6, fmaPeak: 160e9 },
        { weights: 'bf16', test: 'prefill 2048', tokensPerSecond: 700, msPerToken: 1.43 },
        { ...decode, test: 'decode after 16' },
        { ...decode, test: 'decode after 2048', tokensPerSecond: 60, msPerToken: 16.7 },
      ],
    };
    expect(rooflineTokensPerSecond(result.rows[0]!)).toBeCloseTo(800);
    expect(rooflineTokensPerSecond(result.rows[1]!)).toBeUndefined();
    expect(rooflineTokensPerSecond(result.rows[2]!)).toBeCloseTo(80);
    const table = formatCpuBenchmark(result);
    expect(table).toContain('| bf16 | prefill 512 | 600.0 | 1.67 | - | 75% of 800.0 |');
    expect(table).toContain('| bf16 | prefill 2048 | 700.0 | 1.43 | - | - |');
    expect(table).toContain('| bf16 | decode after 16 | 50.0 | 20.00 | - | 63% of 80.0 |');
    expect(table).toContain('| bf16 | decode after 2048 | 60.0 | 16.70 | - | 75% of 80.0 |');
    expect(table).toMatch(/prefill 512 200 MFLOP\), at the CPU threads' FMA peak measured in this run \(bf16 160\.0 GFLOP\/s\)/);
    expect(table).toMatch(/bf16 250 MB at 20\.0 GB\/s/);
    expect(table.match(/bf16 250 MB/g)).toHaveLength(1); // one entry per weight dtype
  });

  it('prefill FLOPs per token: the projections, the conv, the scan in chunks of 64 and the LM head once', () => {
    // mamba2-130m by hand, per layer: in_proj 768 x 3352, conv 1792 channels x 4 taps, the scan
    // (24 heads x (Q/2 x 64 intra-chunk + 2 x 128 x 64 state and output) + Q/2 x 128 for C B^T),
    // out_proj 1536 x 768; the LM head 768 x 50288 for the last position only.
    const cfg = getPreset('mamba2-130m');
    const byHand = (L: number, Q: number) =>
      2 * (24 * (768 * 3352 + 1792 * 4 + 24 * ((Q / 2) * 64 + 2 * 128 * 64) + (Q / 2) * 128 + 1536 * 768) + (768 * 50288) / L);
    expect(prefillFlopsPerToken(cfg, 2048)).toBe(byHand(2048, 64));
    expect(prefillFlopsPerToken(cfg, 16)).toBe(byHand(16, 16)); // a prompt shorter than a chunk
    expect(prefillFlopsPerToken(cfg, 2048)! / 1e6).toBeCloseTo(202.0, 1);
    // Only pure Mamba-2 models: other layers' work is not counted.
    expect(prefillFlopsPerToken(getPreset('taipan-190m'), 512)).toBeUndefined();
    expect(prefillFlopsPerToken(getPreset('transformer-190m'), 512)).toBeUndefined();
  });

  it('bench --profile: the ops a prefill and a decode step ran, with their calls, as a table', async () => {
    const cfg = smallMamba2Config();
    const dir = tempDir();
    try {
      await createRandomModel(cfg, dir.dir, { seed: 5 });
      const model = await Mamba2Model.load(dir.dir, { backend: 'cpu' });
      const s = model.createState();
      try {
        const wasOn = addon().setProfiling(false);
        const prefill = await profileOps('f32', 'prefill 12', 12, () => model.prefill([...Array(12).keys()], { states: [s] }));
        const decode = await profileOps('f32', 'decode 3', 3, async () => {
          for (const t of [1, 2, 3]) await model.step([t], [s]);
        });
        expect(addon().setProfiling(wasOn)).toBe(false); // restored to what it was
        const calls = (p: typeof prefill) => Object.fromEntries(p.ops.map((x) => [x.op, x.calls]));
        const L = cfg.n_layer;
        // Per layer: in_proj and out_proj; then the LM head, on the last position only.
        expect(calls(prefill)).toMatchObject({ embedding: 1, linear: 2 * L + 1, conv1d_silu: L, ssd_scan: L, gated_rmsnorm: L });
        expect(calls(decode)).toMatchObject({ embedding: 3, linear: 3 * (2 * L + 1), conv1d_update: 3 * L, ssd_step: 3 * L });
        for (const p of [prefill, decode]) {
          const seconds = p.ops.map((x) => x.seconds);
          expect(seconds).toEqual([...seconds].sort((a, b) => b - a));
          expect(p.ops.reduce((a, x) => a + x.seconds, 0)).toBeLessThanOrEqual(p.seconds);
        }
      } finally {
        s.dispose();
        model.dispose();
      }
    } finally {
      dir.cleanup();
    }
    const table = formatOpProfile({
      weights: 'bf16', test: 'decode 4', tokens: 4, seconds: 0.08,
      ops: [{ op: 'linear', calls: 196, seconds: 0.06 }, { op: 'ssd_step', calls: 96, seconds: 0.01 }],
    });
    expect(table).toContain('Profile, bf16 decode 4: 20.00 ms/token with every op timed');
    expect(table).toContain('| linear | 75.0% | 15.000 | 196 |');
    expect(table).toContain('| ssd_step | 12.5% | 2.500 | 96 |');
    expect(table).toContain('| (between ops) | 12.5% | 2.500 | - |');
  });

  it('rejects unknown commands and bad options', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(1);
    await expect(main(['generate', '--model', '/nonexistent', '--ids', '1,x'])).rejects.toThrow(/--ids must be comma-separated integers/);
    await expect(main(['random', '--preset', 'mamba2-130m'])).rejects.toThrow(/--preset and --out/);
  });
});
