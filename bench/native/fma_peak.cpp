// The FMA peak of this machine's cores: the ceiling for the prefill GEMM and the SSD scan,
// which are compute bound. Every thread runs 12 independent chains of 8-wide fused
// multiply-adds (enough to cover the FMA latency on both of Zen 3's FMA pipes).
//
// Build and run (from the repository root):
//   g++ -O3 -pthread bench/native/fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak [threads]
//
// On the 2-core Zen 3 VM (2026-11-23), 2 threads: 173-185 GFLOP/s in a fast spell, 145-153 in
// a slow one (the VM's clock and neighbours move it by ~20% within minutes).
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr int kChains = 12;

__attribute__((target("avx2,fma"))) float fma_chains(long steps) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 m = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(0.0001f);
  for (long s = 0; s < steps; s++)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, b);
  __m256 t = acc[0];
  for (int i = 1; i < kChains; i++) t = _mm256_add_ps(t, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, t);
  return lanes[0];  // returned so that the chains are not optimised away
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const long steps = 50'000'000;
  for (int round = 0; round < 5; round++) {
    std::vector<float> sums(static_cast<size_t>(threads), 0.f);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++)
      pool.emplace_back([&, t] { sums[static_cast<size_t>(t)] = fma_chains(steps); });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double flops = 2.0 * 8 * kChains * double(steps) * threads;
    volatile float sink = sums[0];  // the chains' results must look used
    (void)sink;
    std::printf("%d threads: %.1f GFLOP/s\n", threads, flops / s / 1e9);
  }
  return 0;
}
