// RMSNorm (with the residual add fused in front) and the gated, grouped RMSNorm of Mamba-2.
// Both work row by row; rows are independent, so threads split the rows.
#include <cmath>

#include "kernels.h"
#include "rms_row.h"
#include "vec_math.h"

namespace taipan::cpu {

namespace {

// ---- portable ----
void rmsnorm_row(int64_t d, float* r, const float* delta, const float* w, float eps, float* out) {
  float inv = residual_inv_rms(d, r, delta, eps);
  for (int64_t j = 0; j < d; j++) out[j] = r[j] * inv * w[j];
}

void gated_row(int64_t d, int64_t G, const float* y, const float* z, const float* w, float eps, float* out) {
  int64_t gs = d / G;
  for (int64_t g = 0; g < G; g++) {
    double ss = 0;
    for (int64_t j = g * gs; j < (g + 1) * gs; j++) {
      out[j] = y[j] * silu_scalar(z[j]);
      ss += double(out[j]) * out[j];
    }
    float inv = 1.0f / std::sqrt(float(ss / double(gs)) + eps);
    for (int64_t j = g * gs; j < (g + 1) * gs; j++) out[j] = out[j] * inv * w[j];
  }
}

// ---- AVX2 ----
__attribute__((target("avx2,fma"))) void rmsnorm_row_avx2(int64_t d, float* r, const float* delta, const float* w, float eps, float* out) {
  float inv = residual_inv_rms_avx2(d, r, delta, eps);
  int64_t j = 0;
  __m256 vinv = _mm256_set1_ps(inv);
  for (; j + 8 <= d; j += 8)
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(r + j), vinv), _mm256_loadu_ps(w + j)));
  for (; j < d; j++) out[j] = r[j] * inv * w[j];
}

__attribute__((target("avx2,fma"))) void gated_row_avx2(int64_t d, int64_t G, const float* y, const float* z, const float* w, float eps, float* out) {
  int64_t gs = d / G;
  for (int64_t g = 0; g < G; g++) {
    int64_t j = g * gs, end = (g + 1) * gs;
    __m256 acc = _mm256_setzero_ps();
    float tail = 0;
    for (; j + 8 <= end; j += 8) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(y + j), silu256(_mm256_loadu_ps(z + j)));
      _mm256_storeu_ps(out + j, v);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    for (; j < end; j++) {
      out[j] = y[j] * silu_scalar(z[j]);
      tail += out[j] * out[j];
    }
    float inv = 1.0f / std::sqrt((hsum256(acc) + tail) / float(gs) + eps);
    __m256 vinv = _mm256_set1_ps(inv);
    for (j = g * gs; j + 8 <= end; j += 8)
      _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(out + j), vinv), _mm256_loadu_ps(w + j)));
    for (; j < end; j++) out[j] = out[j] * inv * w[j];
  }
}

}  // namespace

void rmsnorm(ThreadPool& pool, int64_t M, int64_t d, float* r, const float* delta, const float* w,
             float eps, float* out) {
  bool vec = use_avx2();
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    for (int64_t m = b; m < e; m++) {
      const float* dm = delta ? delta + m * d : nullptr;
      if (vec) rmsnorm_row_avx2(d, r + m * d, dm, w, eps, out + m * d);
      else rmsnorm_row(d, r + m * d, dm, w, eps, out + m * d);
    }
  }, 4);
}

void gated_rmsnorm(ThreadPool& pool, int64_t M, int64_t d, int64_t G, const float* y, const float* z,
                   int64_t ldz, const float* w, float eps, float* out) {
  bool vec = use_avx2();
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    for (int64_t m = b; m < e; m++) {
      if (vec) gated_row_avx2(d, G, y + m * d, z + m * ldz, w, eps, out + m * d);
      else gated_row(d, G, y + m * d, z + m * ldz, w, eps, out + m * d);
    }
  }, 2);
}

}  // namespace taipan::cpu
