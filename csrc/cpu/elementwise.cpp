// Elementwise ops: SiLU, softplus, add.
#include <cmath>

#include "kernels.h"
#include "vec_math.h"

namespace taipan::cpu {

namespace {
constexpr int64_t kGrain = 4096;  // elements per task: below this, threading costs more than it saves

__attribute__((target("avx2,fma"))) void silu_avx2(int64_t n, const float* x, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, silu256(_mm256_loadu_ps(x + i)));
  for (; i < n; i++) out[i] = silu_scalar(x[i]);
}
}  // namespace

void silu(ThreadPool& pool, int64_t n, const float* x, float* out) {
  bool vec = use_avx2();
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    if (vec) silu_avx2(e - b, x + b, out + b);
    else for (int64_t i = b; i < e; i++) out[i] = silu_scalar(x[i]);
  }, kGrain);
}

void softplus(ThreadPool& pool, int64_t n, const float* x, float* out) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) out[i] = x[i] > 20.0f ? x[i] : std::log1p(std::exp(x[i]));
  }, kGrain);
}

void add(ThreadPool& pool, int64_t n, const float* a, const float* b, float* out) {
  pool.parallel_for(n, [&](int64_t s, int64_t e, int) {
    for (int64_t i = s; i < e; i++) out[i] = a[i] + b[i];
  }, kGrain);
}

}  // namespace taipan::cpu
