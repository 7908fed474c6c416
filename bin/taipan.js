#!/usr/bin/env node
// The `taipan` command: see lib/cli.ts (compiled to dist/cli.js by `npm install`).
import { main } from '../dist/cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`taipan: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
