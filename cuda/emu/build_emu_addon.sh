#!/usr/bin/env bash
# Builds the whole addon -- csrc/ with TAIPAN_WITH_CUDA=1 and cuda/*.cu run by the CPU emulator
# in this directory -- into one taipan.node, a stand-in for a GPU build on a machine without a
# GPU. The emulated runtime reports one device ("taipan CPU emulator"), so the CUDA paths of
# the ops, the caching allocator, device tensors and the model's bf16 path all run:
#
#   cuda/emu/build_emu_addon.sh                      # prints the path of the built addon
#   TAIPAN_ADDON=/tmp/taipan_emu_addon/taipan.node npx vitest run test/cuda.test.ts
#
# TEST BUILDS ONLY (see cuda_runtime.h here): kernels run one block at a time on CPU threads,
# streams are synchronous and CUDA graphs are recorded closures replayed in order, so this
# checks what the code computes, which memory it touches (copies are checked against the
# cudaMalloc blocks) and that captured work makes no host step, not speed or concurrency. Needs g++ (C++20), python3 and node_modules (node-addon-api).
# Output folder: $TAIPAN_EMU_ADDON_BUILD (default /tmp/taipan_emu_addon); rebuilds only what
# changed (any header change rebuilds everything).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${TAIPAN_EMU_ADDON_BUILD:-/tmp/taipan_emu_addon}"
mkdir -p "$out/cu" "$out/obj"
cd "$repo"

napi_inc="$repo/node_modules/node-api-headers/include"
addon_inc="$(node -p "require('node-addon-api').include_dir")"
addon_inc="$(cd "$repo" && realpath "$addon_inc")"
[ -f "$napi_inc/node_api.h" ] || { echo "node-api-headers not found under node_modules (run npm install)" >&2; exit 1; }

# The same launch rewrite as run_emu_tests.sh: k<<<cfg>>>(args) -> ::emu::Launch(cfg)(k, args).
python3 - "$repo/cuda" "$out/cu" <<'PY'
import re, sys, pathlib
src, build = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
launch = re.compile(r'(\b[A-Za-z_]\w*(?:<[^;<>()]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)
for f in sorted(src.glob('*.cu')):
    out, n = launch.subn(lambda m: '::emu::Launch(%s)(%s, ' % (m.group(2), m.group(1)), f.read_text())
    text = '#line 1 "%s"\n' % f + out
    dst = build / (f.stem + '.cpp')
    if not dst.exists() or dst.read_text() != text:  # keep the timestamp when unchanged
        dst.write_text(text)
PY

newest_header=$(find csrc cuda -name '*.h' -o -name '*.cuh' | xargs stat -c %Y | sort -n | tail -1)
common=(-O2 -g -fPIC -pthread -Wall -Wno-unused-function -DTAIPAN_WITH_CUDA=1
        -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED)
jobs=()
objs=()
compile() {  # source, object, extra flags...
  local src="$1" obj="$2"
  shift 2
  objs+=("$obj")
  if [ -f "$obj" ] && [ "$(stat -c %Y "$obj")" -ge "$(stat -c %Y "$src")" ] &&
     [ "$(stat -c %Y "$obj")" -ge "$newest_header" ]; then
    return
  fi
  g++ "${common[@]}" "$@" -c "$src" -o "$obj" &
  jobs+=($!)
  if [ "${#jobs[@]}" -ge "$(nproc)" ]; then wait "${jobs[0]}"; jobs=("${jobs[@]:1}"); fi
}
for f in csrc/*.cpp csrc/cpu/*.cpp csrc/ops/*.cpp; do
  compile "$f" "$out/obj/$(echo "$f" | tr / _).o" -std=c++17 -I"$napi_inc" -I"$addon_inc" -Icsrc -I.
done
for f in "$out"/cu/*.cpp; do
  compile "$f" "$out/obj/cu_$(basename "$f" .cpp).o" -std=c++20 -DTAIPAN_CUDA_EMU -I"$here" -Icuda \
    -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi
done
for p in "${jobs[@]}"; do wait "$p"; done
g++ -shared -pthread "${objs[@]}" -o "$out/taipan.node.tmp"
mv "$out/taipan.node.tmp" "$out/taipan.node"
echo "$out/taipan.node"
