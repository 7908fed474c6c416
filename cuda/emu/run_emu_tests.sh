#!/usr/bin/env bash
# Runs bench/native/cuda_kernels_test.cpp against the CUDA kernels executed by the CPU
# emulator in this directory (no GPU, no CUDA driver needed; g++ with C++20 and python3).
#   cuda/emu/run_emu_tests.sh [source_dir_of_.cu_files (default: cuda)] [test filter]
# Each cuda/*.cu file is copied to a build folder with its `kernel<<<cfg>>>(args)` launches
# rewritten as `::emu::Launch(cfg)(kernel, args)`, then compiled by g++ with
# -DTAIPAN_CUDA_EMU and -Icuda/emu first on the include path (the emulated CUDA headers).
# This checks the kernels' index arithmetic and results, not their speed or their memory
# ordering on a real GPU (blocks run one at a time; cp.async is synchronous).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
src="${1:-$repo/cuda}"
filter="${2:-}"
build="${TAIPAN_EMU_BUILD:-/tmp/taipan_cuda_emu}"
mkdir -p "$build"
python3 - "$src" "$build" <<'PY'
import re, sys, pathlib
src, build = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
launch = re.compile(r'(\b[A-Za-z_]\w*(?:<[^;<>()]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)
for f in sorted(src.glob('*.cu')):
    text = f.read_text()
    out, n = launch.subn(lambda m: '::emu::Launch(%s)(%s, ' % (m.group(2), m.group(1)), text)
    (build / (f.stem + '.cpp')).write_text('#line 1 "%s"\n' % f + out)
    print('  %-16s %d launches rewritten' % (f.name, n))
PY
objs=()
pids=()
for f in "$build"/*.cpp; do
  o="${f%.cpp}.o"
  g++ -std=c++20 -O2 -g -pthread -DTAIPAN_CUDA_EMU -I"$here" -I"$repo/cuda" -I"$src" \
      -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi -c "$f" -o "$o" &
  pids+=($!)
  objs+=("$o")
done
g++ -std=c++20 -O2 -g -pthread -DTAIPAN_CUDA_EMU -I"$here" -Wall -Wextra \
    -c "$repo/bench/native/cuda_kernels_test.cpp" -o "$build/test_main.o" &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done   # set -e stops at the first failed compile
g++ -pthread "${objs[@]}" "$build/test_main.o" -o "$build/cuda_kernels_test_emu"
echo "running $build/cuda_kernels_test_emu $filter"
"$build/cuda_kernels_test_emu" $filter
