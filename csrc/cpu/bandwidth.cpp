// How fast this machine streams memory into the cores: the roofline for decode.
//
// Decode reads every weight once per token, so on a CPU its speed is bounded by the rate at
// which the cores can read DRAM. The benchmark measures that rate in the same run as the
// model (a shared VM's bandwidth moves by tens of percent within minutes) and reports decode
// as a fraction of it. The read pattern is the decode GEMV's (gemm.cpp): chunks handed out
// to the threads, each chunk read as kStreams sequential streams side by side, which is the
// fastest way found to read DRAM here (bench/native/gemv_streams.cpp).
#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TAIPAN_BW_X86 1
#endif

namespace taipan::cpu {
namespace {

constexpr int64_t kStreams = 6;

// The sum of x[0, n) read as kStreams interleaved streams (the sum keeps the reads alive).
#ifdef TAIPAN_BW_X86
__attribute__((target("avx2"))) float read_streams_avx2(const float* x, int64_t n) {
  const int64_t per = n / kStreams / 8 * 8;
  __m256 acc[kStreams];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < per; i += 8)
#pragma GCC unroll 6
    for (int64_t s = 0; s < kStreams; s++) acc[s] = _mm256_add_ps(acc[s], _mm256_loadu_ps(x + s * per + i));
  alignas(32) float lanes[8];
  __m256 t = acc[0];
  for (int64_t s = 1; s < kStreams; s++) t = _mm256_add_ps(t, acc[s]);
  _mm256_store_ps(lanes, t);
  float sum = 0;
  for (float v : lanes) sum += v;
  for (int64_t i = kStreams * per; i < n; i++) sum += x[i];
  return sum;
}
#endif

float read_streams_portable(const float* x, int64_t n) {
  const int64_t per = n / kStreams;
  float acc[kStreams] = {};
  for (int64_t i = 0; i < per; i++)
    for (int64_t s = 0; s < kStreams; s++) acc[s] += x[s * per + i];
  float sum = 0;
  for (float a : acc) sum += a;
  for (int64_t i = kStreams * per; i < n; i++) sum += x[i];
  return sum;
}

}  // namespace

double read_bandwidth(ThreadPool& pool, const float* x, int64_t n, int rounds) {
  const bool avx2 = use_avx2();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(8 * pool.size(), n / (1 << 16)));
  std::vector<float> sums(size_t(pool.size()), 0.0f);
  double best = 0;
  for (int r = 0; r < rounds; r++) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_tasks(chunks, [&](int64_t c, int thread) {
      const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
#ifdef TAIPAN_BW_X86
      if (avx2) {
        sums[size_t(thread)] += read_streams_avx2(x + b, e - b);
        return;
      }
#endif
      sums[size_t(thread)] += read_streams_portable(x + b, e - b);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n) * sizeof(float) / s);
  }
  // The sums must look used, or the reads could be optimised away.
  volatile float sink = 0;
  for (float v : sums) sink = sink + v;
  (void)avx2;
  return best;
}

}  // namespace taipan::cpu
