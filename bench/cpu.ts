// CPU benchmark script: the same as `taipan bench` (see lib/bench/cpu.ts), runnable from source.
//
//   npm run bench
//   npm run bench -- --preset mamba2-130m --threads 2 --prompts 512,2048 --decode 64 --repeats 3
//   npm run bench -- --json bench/results/cpu.json
import { main } from '../lib/cli.js';

process.exitCode = await main(['bench', ...process.argv.slice(2)]);
