#!/usr/bin/env node
// Packs what a device (GPU) machine needs to run test/cuda.test.ts, test/cuda_graph.test.ts and
// bench/cuda.ts, into a folder that .gitignore already ignores (default .device/), for the
// `run` tool's `carry`:
//   - cuda_test.mjs (both tests), bench_cuda.mjs: the tests and the benchmark bundled by esbuild with every
//     import (lib/, test helpers), vitest replaced by cuda/device/vitest_shim.mjs: no
//     node_modules needed there;
//   - taipan.node: build/Release/taipan.node, which must have been built with CUDA here;
//   - node.xz: this machine's node binary, xz-compressed (the device image is not known to
//     have node; python3's lzma module unpacks it there).
// About 26 MiB in all (the limit for a call is 64 MiB). Usage:
//   flock /tmp/taipan-build.lock node scripts/build-addon.mjs     # with CUDA
//   node cuda/device/pack.mjs [outdir]
// then the printed command, with carry [".device"].
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = resolve(root, process.argv[2] ?? '.device');
const require = createRequire(join(root, 'package.json'));
mkdirSync(out, { recursive: true });

const addon = join(root, 'build', 'Release', 'taipan.node');
const cache = join(root, 'build', 'CMakeCache.txt');
if (!existsSync(addon) || !existsSync(cache) || !/TAIPAN_HAVE_CUDA:INTERNAL=ON/.test(readFileSync(cache, 'utf8'))) {
  console.error('pack: build/Release/taipan.node is missing or was built without CUDA; run `node scripts/build-addon.mjs` with nvcc first');
  process.exit(1);
}
copyFileSync(addon, join(out, 'taipan.node'));

const esbuild = require('esbuild');
const common = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  absWorkingDir: root,
  alias: { vitest: './cuda/device/vitest_shim.mjs' },
  // Bundled CommonJS dependencies call require(); give the ES module one.
  banner: { js: "import { createRequire as __taipanRequire } from 'node:module'; const require = __taipanRequire(import.meta.url);" },
  logLevel: 'warning',
};
await esbuild.build({
  ...common,
  stdin: {
    contents: "import './test/cuda.test.ts';\nimport './test/cuda_graph.test.ts';\nimport { run } from 'vitest';\nawait run();\n",
    resolveDir: root,
    sourcefile: 'cuda-test-entry.mjs',
    loader: 'js',
  },
  outfile: join(out, 'cuda_test.mjs'),
});
await esbuild.build({ ...common, entryPoints: [join(root, 'bench', 'cuda.ts')], outfile: join(out, 'bench_cuda.mjs') });

const nodeXz = join(out, 'node.xz');
if (!existsSync(nodeXz) || statSync(nodeXz).mtimeMs < statSync(process.execPath).mtimeMs) {
  writeFileSync(nodeXz, execFileSync('xz', ['-T2', '-6', '-c', process.execPath], { maxBuffer: 1 << 30 }));
}

const rel = relative(root, out);
let total = 0;
for (const f of ['cuda_test.mjs', 'bench_cuda.mjs', 'taipan.node', 'node.xz']) {
  const n = statSync(join(out, f)).size;
  total += n;
  console.log(`  ${rel}/${f}: ${(n / 2 ** 20).toFixed(1)} MiB`);
}
console.log(`  total ${(total / 2 ** 20).toFixed(1)} MiB (a device call carries at most 64 MiB)`);
console.log(`
On the device machine (run tool, carry ["${rel}"]):
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('${rel}/node.xz'), open('/tmp/node','wb'))" && chmod +x /tmp/node &&
  export TAIPAN_ADDON=$PWD/${rel}/taipan.node &&
  /tmp/node ${rel}/cuda_test.mjs 2>&1 | tee $OUT/cuda_test.log;
  /tmp/node ${rel}/bench_cuda.mjs --quick --json $OUT/cuda-bench.json 2>&1 | tee $OUT/bench.log`);
