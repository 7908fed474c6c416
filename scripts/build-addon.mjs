#!/usr/bin/env node
// Builds the native addon (build/Release/taipan.node); `npm install` runs this.
//
// With cmake on the PATH the build goes through cmake-js and CMakeLists.txt, which compiles
// the CUDA backend too when nvcc is found. Without cmake it falls back to node-gyp and
// binding.gyp, which build the CPU backend alone. Environment:
//   TAIPAN_SKIP_BUILD=1      do nothing (e.g. when a prebuilt addon is provided)
//   TAIPAN_CUDA=0            never compile CUDA, even when nvcc is found
//   TAIPAN_CUDA_ARCHS=...    CUDA architectures (default 80-real;90a-real;90-virtual)
//   TAIPAN_BUILD_DEBUG=1     debug build
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const log = (msg) => console.log(`taipan: ${msg}`);

function has(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: process.env });
  if (r.status !== 0) {
    console.error(`taipan: build failed: ${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
}

if (process.env.TAIPAN_SKIP_BUILD === '1') {
  log('TAIPAN_SKIP_BUILD=1, not building the native addon');
  process.exit(0);
}

const parallel = String(Math.max(1, cpus().length));
if (has('cmake')) {
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const args = [cmakeJs, 'compile', '--parallel', parallel, '--log-level', 'warn'];
  if (process.env.TAIPAN_BUILD_DEBUG === '1') args.push('--debug');
  // cmake caches TAIPAN_CUDA and `cmake-js compile` does not reconfigure an existing build, so a
  // build after a TAIPAN_CUDA=0 one would silently stay CPU-only: drop the cache when the choice
  // changed, which makes this compile configure afresh.
  const wantCuda = process.env.TAIPAN_CUDA === '0' ? 'OFF' : 'ON';
  const cacheFile = join(root, 'build', 'CMakeCache.txt');
  if (existsSync(cacheFile)) {
    const had = /TAIPAN_CUDA:BOOL=(\w+)/.exec(readFileSync(cacheFile, 'utf8'))?.[1];
    if (had && had !== wantCuda) rmSync(cacheFile);
  }
  args.push(`--CDTAIPAN_CUDA=${wantCuda}`);
  if (process.env.TAIPAN_CUDA_ARCHS) args.push(`--CDTAIPAN_CUDA_ARCHS=${process.env.TAIPAN_CUDA_ARCHS}`);
  run(process.execPath, args);
  const cache = join(root, 'build', 'CMakeCache.txt');
  const withCuda = existsSync(cache) && /TAIPAN_HAVE_CUDA:INTERNAL=ON/.test(readFileSync(cache, 'utf8'));
  log(withCuda
    ? 'built the CPU and CUDA backends into build/Release/taipan.node'
    : 'nvcc not found (or TAIPAN_CUDA=0): built the CPU backend alone into build/Release/taipan.node');
} else {
  // node-gyp: npm exposes its bundled copy through npm_config_node_gyp.
  const gyp = process.env.npm_config_node_gyp;
  const nodedir = join(dirname(process.execPath), '..');
  const gypArgs = ['rebuild', `--nodedir=${nodedir}`, '-j', parallel];
  if (gyp && existsSync(gyp)) run(process.execPath, [gyp, ...gypArgs]);
  else run('npx', ['--yes', 'node-gyp', ...gypArgs]);
  log('cmake not found: built the CPU backend alone with node-gyp into build/Release/taipan.node');
}
