// The FMA peak of this machine's cores: the ceiling for the prefill GEMM and the SSD scan,
// which are compute bound. Runs the addon's probe (csrc/cpu/fma_peak.cpp, also behind
// `addon().cpuFmaPeak()` and the prefill roofline of `taipan bench`) on 1 and 2 threads.
//
// Build and run (from the repository root):
//   g++ -O3 -std=c++17 -pthread -Icsrc csrc/cpu/fma_peak.cpp csrc/cpu/thread_pool.cpp
//       csrc/cpu/cpu_features.cpp bench/native/fma_peak.cpp -o /tmp/fma_peak   (one line)
//   /tmp/fma_peak
//
// On the 2-core Zen 3 VM (2026-11-23), 2 threads: 173-201 GFLOP/s in fast spells, 145-153 in
// a slow one (the VM's clock and neighbours move it by ~20% within minutes).
#include <cstdio>

#include "cpu/kernels.h"
#include "cpu/thread_pool.h"

int main() {
  for (int threads : {1, 2}) {
    taipan::cpu::ThreadPool pool(threads);
    for (int round = 0; round < 3; round++)
      std::printf("%d thread%s: %.1f GFLOP/s\n", threads, threads == 1 ? "" : "s",
                  taipan::cpu::fma_peak(pool, int64_t(1) << 22, 5) / 1e9);
  }
  return 0;
}
