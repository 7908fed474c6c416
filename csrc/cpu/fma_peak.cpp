// How fast this machine's cores multiply and add: the roofline for prefill.
//
// Prefill is compute bound (the projections' GEMMs and the SSD scan's products), so on a CPU
// its speed is bounded by the fp32 FMA rate of the threads. As with the read bandwidth
// (bandwidth.cpp), the benchmark measures it in the same run as the model, because a shared
// VM's clock and neighbours move it by ~20% within minutes, and reports prefill as a fraction
// of it. Each thread runs independent chains of fused multiply-adds, enough of them to cover
// the FMA latency on every FMA pipe (12 chains of 8 lanes on AVX2; Zen 3 has 2 pipes with a
// latency of 4 cycles).
#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TAIPAN_PEAK_X86 1
#endif

namespace taipan::cpu {
namespace {

constexpr int kChains = 12;
constexpr int kLanes = 8;  // floats per chain step (one AVX2 vector)

#ifdef TAIPAN_PEAK_X86
__attribute__((target("avx2,fma"))) float fma_chains_avx2(int64_t steps) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 m = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(0.0001f);
  for (int64_t s = 0; s < steps; s++)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, b);
  __m256 t = acc[0];
  for (int i = 1; i < kChains; i++) t = _mm256_add_ps(t, acc[i]);
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, t);
  return lanes[0];
}
#endif

// The same multiply-adds as plain C++, which is what the portable kernels get.
float fma_chains_portable(int64_t steps) {
  float acc[kChains][kLanes];
  for (int i = 0; i < kChains; i++)
    for (int l = 0; l < kLanes; l++) acc[i][l] = 0.001f * float(i + l);
  for (int64_t s = 0; s < steps; s++)
    for (int i = 0; i < kChains; i++)
      for (int l = 0; l < kLanes; l++) acc[i][l] = acc[i][l] * 0.9999f + 0.0001f;
  float sum = 0;
  for (auto& chain : acc)
    for (float v : chain) sum += v;
  return sum;
}

}  // namespace

double fma_peak(ThreadPool& pool, int64_t steps, int rounds) {
  const bool avx2 = use_avx2();
  std::vector<float> sums(size_t(pool.size()), 0.0f);
  double best = 0;
  for (int r = 0; r < rounds; r++) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run_on_all([&](int thread, int) {
#ifdef TAIPAN_PEAK_X86
      if (avx2) {
        sums[size_t(thread)] += fma_chains_avx2(steps);
        return;
      }
#endif
      sums[size_t(thread)] += fma_chains_portable(steps);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * kChains * kLanes * double(steps) * pool.size() / s);
  }
  // The sums must look used, or the chains could be optimised away.
  volatile float sink = 0;
  for (float v : sums) sink = sink + v;
  (void)avx2;
  return best;
}

}  // namespace taipan::cpu
