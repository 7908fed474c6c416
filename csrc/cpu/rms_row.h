// The first half of a pre-norm, shared by rmsnorm (norm.cpp) and the SAL gate (sal.cpp): fold
// the pending residual delta into the row (r += delta, when given) and return 1/rms(r) =
// rsqrt(mean(r^2) + eps). The callers then scale the row in their own sweep (the gate also
// takes its dot products there).
#pragma once
#include <cmath>
#include <cstdint>

#include "vec_math.h"

namespace taipan::cpu {

// Portable: the sum of squares in double (the portable path is also the precise one).
inline float residual_inv_rms(int64_t d, float* r, const float* delta, float eps) {
  if (delta)
    for (int64_t j = 0; j < d; j++) r[j] += delta[j];
  double ss = 0;
  for (int64_t j = 0; j < d; j++) ss += double(r[j]) * r[j];
  return 1.0f / std::sqrt(float(ss / double(d)) + eps);
}

__attribute__((target("avx2,fma"))) inline float residual_inv_rms_avx2(int64_t d, float* r, const float* delta, float eps) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float tail = 0;
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    __m256 v = _mm256_loadu_ps(r + j);
    if (delta) {
      v = _mm256_add_ps(v, _mm256_loadu_ps(delta + j));
      _mm256_storeu_ps(r + j, v);
    }
    if ((j / 8) & 1) acc1 = _mm256_fmadd_ps(v, v, acc1);
    else acc0 = _mm256_fmadd_ps(v, v, acc0);
  }
  for (; j < d; j++) {
    if (delta) r[j] += delta[j];
    tail += r[j] * r[j];
  }
  return 1.0f / std::sqrt((hsum256(_mm256_add_ps(acc0, acc1)) + tail) / float(d) + eps);
}

}  // namespace taipan::cpu
