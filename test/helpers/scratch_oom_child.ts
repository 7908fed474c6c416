// Run by tensor.test.ts in a child process with TAIPAN_TEST_SCRATCH_LIMIT set, so that any
// kernel scratch request above the limit fails as if memory had run out. It prints one JSON
// line: each attempted op's error message (or "ok"), and whether the stream still computes
// correctly afterwards. A crash of this process is what the test exists to catch.
import { addon } from '../../lib/native.js';
import { Ops } from '../../lib/ops.js';

const native = addon();
native.setThreads(2);
const ops = new Ops('cpu');
const fill = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const results: Record<string, string> = {};

async function attempt(name: string, enqueue: () => void): Promise<void> {
  try {
    enqueue();
    await ops.sync();
    results[name] = 'ok';
  } catch (e) {
    results[name] = (e as Error).message;
  }
}

// 49 rows (the packed GEMM): the caller packs x (54 x 256 floats, 54 KiB), then every thread
// of the pool packs 256-column weight panels (256 KiB each), which is where it fails.
await attempt('gemm', () => {
  const [M, K, N] = [49, 256, 4096];
  ops.linear(native.tensor(fill(M * K, (i) => (i % 7) - 3), [M, K]), native.tensor(fill(N * K, (i) => (i % 5) - 2), [N, K]), native.empty([M, N]));
});

// The chunked scan's per-call arena (states and chunk matrices for 8 heads x 64 x 64).
await attempt('ssd_scan', () => {
  const [L, H, P, N] = [300, 8, 64, 64];
  ops.ssdScan(
    {
      x: native.tensor(fill(L * H * P, (i) => Math.sin(i)), [L, H * P]),
      B: native.tensor(fill(L * N, (i) => Math.cos(i)), [L, N]),
      C: native.tensor(fill(L * N, (i) => Math.sin(3 * i)), [L, N]),
      dt: native.tensor(fill(L * H, () => 0.1), [L, H]),
      dt_bias: native.tensor(fill(H, () => 0), [H]),
      A_log: native.tensor(fill(H, () => 0), [H]),
      D: native.tensor(fill(H, () => 1), [H]),
    },
    native.empty([L, H * P]),
    { batch: 1, groups: 1, chunk: 256 },
  );
});

// The same stream goes on: a small GEMM (f32 weights, 2 rows: no scratch) still gives the
// right answer.
const y = native.empty([2, 3]);
await attempt('after', () =>
  ops.linear(native.tensor(Float32Array.from([1, 2, 3, 4]), [2, 2]), native.tensor(Float32Array.from([1, 0, 0, 1, 1, 1]), [3, 2]), y),
);
const after = results.after === 'ok' ? Array.from(y.toArray()).join(',') : results.after;

console.log(JSON.stringify({ ...results, after }));
