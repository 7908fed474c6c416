// Vectorised exp and SiLU for AVX2 kernels (SiLU runs on millions of values per prefill
// layer, so a scalar expf there would cost more than the layer's convolution).
//
// exp(x) = 2^n * exp(r) with n = round(x / ln2) and r = x - n*ln2 in [-ln2/2, ln2/2]; ln2 is
// split into a high and a low part so r keeps full precision, and exp(r) is a degree-6
// Taylor polynomial (error below 2e-7 relative on that interval). Inputs are clamped to the
// range where the result is a normal float; NaN propagates.
#pragma once
#include <immintrin.h>

#include <cmath>

namespace taipan::cpu {

__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365478515625f);
  __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // Scale by 2^n through the exponent field; n is in [-126, 127] after the clamp.
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_blendv_ps(y, x, nan_mask);
}

// silu(v) = v / (1 + exp(-v))
__attribute__((target("avx2,fma"))) static inline __m256 silu256(__m256 v) {
  __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), v)));
  return _mm256_div_ps(v, d);
}

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float silu_scalar(float v) { return v / (1.0f + std::exp(-v)); }

}  // namespace taipan::cpu
