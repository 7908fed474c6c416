// Elementwise ops: SiLU, softplus, add, SwiGLU.
#include <algorithm>
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

__attribute__((target("avx2,fma"))) void swiglu_avx2(int64_t F, const float* up, const float* gate, float* out) {
  int64_t j = 0;
  for (; j + 8 <= F; j += 8)
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_loadu_ps(up + j), silu256(_mm256_loadu_ps(gate + j))));
  for (; j < F; j++) out[j] = up[j] * silu_scalar(gate[j]);
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

void swiglu(ThreadPool& pool, int64_t M, int64_t F, const float* h, int64_t ldh, float* out) {
  bool vec = use_avx2();
  // Rows are split, not elements: each row's up and gate halves are read side by side.
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, F));
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    for (int64_t m = b; m < e; m++) {
      const float* up = h + m * ldh;
      float* o = out + m * F;
      if (vec) swiglu_avx2(F, up, up + F, o);
      else for (int64_t j = 0; j < F; j++) o[j] = up[j] * silu_scalar(up[F + j]);
    }
  }, grain);
}

}  // namespace taipan::cpu
