// The scalar functions both selective scans share (ssd.cpp: Mamba-2, mamba1.cpp: Mamba-1),
// so that the two models turn dt_raw + dt_bias into dt, and dt*A into a decay, identically.
//
//  * softplus_f: the model contract's softplus in fp32, identity above 20 (as in mamba_ssm).
//  * exp_neg_avx2: exp(x) for x <= 0 (decay factors), 8 lanes.
//  * softplus256: softplus_f for 8 lanes (same threshold; the log1p is a series, below).
#pragma once
#include <cmath>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TAIPAN_SSM_MATH_X86 1
#endif

namespace taipan::cpu {

inline float softplus_f(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }

#ifdef TAIPAN_SSM_MATH_X86

// exp(x) for x <= 0: Cody-Waite range reduction to r in [-ln2/2, ln2/2], a degree-6
// polynomial (rel. error ~1 ulp), then scaling by 2^n. Inputs below -87 give 0, so no
// denormals reach the products; NaN stays NaN.
__attribute__((target("avx2,fma"))) static inline __m256 exp_neg_avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(lo, x);  // (max returns its second operand when one is NaN)
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// softplus for 8 lanes, identity above 20. Below that,
//   softplus(v) = max(v, 0) + log1p(exp(-|v|)),  log1p(t) = 2 atanh(t / (2 + t)),
// the atanh series in z = t/(2+t) <= 1/3 summed to z^15 (truncation < 2e-8 relative).
__attribute__((target("avx2,fma"))) static inline __m256 softplus256(__m256 x) {
  const __m256 zero = _mm256_setzero_ps(), two = _mm256_set1_ps(2.f),
               sign = _mm256_set1_ps(-0.f), big = _mm256_set1_ps(20.f);
  const __m256 t = exp_neg_avx2(_mm256_or_ps(x, sign));  // exp(-|x|)
  const __m256 z = _mm256_div_ps(t, _mm256_add_ps(two, t));
  const __m256 z2 = _mm256_mul_ps(z, z);
  __m256 q = _mm256_set1_ps(1.f / 15);
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 13));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 11));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 9));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 7));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 5));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f / 3));
  q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(1.f));
  const __m256 log1p_t = _mm256_mul_ps(_mm256_add_ps(z, z), q);
  const __m256 r = _mm256_add_ps(_mm256_max_ps(x, zero), log1p_t);
  return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, big, _CMP_GT_OQ));
}

#endif  // TAIPAN_SSM_MATH_X86

}  // namespace taipan::cpu
