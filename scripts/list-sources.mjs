// Prints the C++ sources of the CPU backend for binding.gyp (node-gyp has no glob).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dirs = ['csrc', 'csrc/cpu', 'csrc/ops'];
const files = dirs.flatMap((d) =>
  readdirSync(d).filter((f) => f.endsWith('.cpp')).sort().map((f) => join(d, f)),
);
files.push('cuda/cuda_stub.cpp');
console.log(files.join(' '));
