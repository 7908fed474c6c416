// The CUDA kernels, run by the CPU emulator in cuda/emu/ against a float64 reference
// (bench/native/cuda_kernels_test.cpp). This checks their indexing and numerics on machines
// without a GPU; speed and memory ordering need a real device.
import { spawnSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import { tempDir } from './helpers/models.js';

const haveTools = ['g++', 'python3'].every((t) => spawnSync(t, ['--version'], { stdio: 'ignore' }).status === 0);

describe.skipIf(!haveTools)('CUDA kernels on the CPU emulator', () => {
  it('every kernel matches its reference', () => {
    const build = tempDir('taipan-emu-');
    try {
      const r = spawnSync('bash', ['cuda/emu/run_emu_tests.sh'], {
        encoding: 'utf8',
        env: { ...process.env, TAIPAN_EMU_BUILD: build.dir },
        maxBuffer: 64 * 1024 * 1024,
      });
      const out = `${r.stdout}\n${r.stderr}`;
      expect(out, out.slice(-4000)).toMatch(/PASSED: 0 failure\(s\)/);
      expect(r.status).toBe(0);
    } finally {
      build.cleanup();
    }
  }, 600_000);
});
