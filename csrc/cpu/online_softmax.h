// One block of keys for one (query, head) of an online-softmax attention, shared by the full
// causal attention (attention.cpp) and the SAL's sparse sliding-window attention (sal.cpp).
//
// The state of a (query, head) is the max score so far `m`, the sum `l` of exp(score - m), and
// the unnormalised context `acc` (hd floats); the caller divides acc by l at the end. A block
// of n keys: scores q . k_i (q already scaled by 1/sqrt(hd)), rescale the state if the max
// grew, then add the block's exp(score - m) and exp(score - m) * v_i. All in fp32.
//
// Rows of keys and values are reached through a row accessor, so contiguous caches
// (StridedRows) and gathered rows from two places (ListedRows) share one kernel.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "vec_math.h"

namespace taipan::cpu {

struct OnlineSoftmax {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0;
};

// Row i at base + i * ld.
struct StridedRows {
  const float* base;
  int64_t ld;
  const float* operator[](int64_t i) const { return base + i * ld; }
};

// Row i at rows[i] + off (rows gathered from a ring buffer and a chunk; off picks the head).
struct ListedRows {
  const float* const* rows;
  int64_t off;
  const float* operator[](int64_t i) const { return rows[i] + off; }
};

// Portable path.
template <class Rows>
void attend_block(int64_t n, Rows k, Rows v, const float* q, int64_t hd, float* s, OnlineSoftmax& st, float* acc) {
  float bm = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; i++) {
    const float* kr = k[i];
    float dot = 0;
    for (int64_t c = 0; c < hd; c++) dot += q[c] * kr[c];
    s[i] = dot;
    bm = std::max(bm, dot);
  }
  if (bm > st.m) {
    float corr = std::exp(st.m - bm);  // 0 on the first block (m = -inf)
    st.l *= corr;
    for (int64_t c = 0; c < hd; c++) acc[c] *= corr;
    st.m = bm;
  }
  for (int64_t i = 0; i < n; i++) {
    float p = std::exp(s[i] - st.m);
    st.l += p;
    const float* vr = v[i];
    for (int64_t c = 0; c < hd; c++) acc[c] += p * vr[c];
  }
}

__attribute__((target("avx2,fma"))) inline float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), s1);
  }
  for (; c + 8 <= n; c += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
  float t = hsum256(_mm256_add_ps(s0, s1));
  for (; c < n; c++) t += a[c] * b[c];
  return t;
}

template <class Rows>
__attribute__((target("avx2,fma"))) void attend_block_avx2(int64_t n, Rows k, Rows v, const float* q, int64_t hd,
                                                           float* s, OnlineSoftmax& st, float* acc) {
  // Scores, four keys at a time: four independent FMA chains hide the FMA latency.
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float *k0 = k[i], *k1 = k[i + 1], *k2 = k[i + 2], *k3 = k[i + 3];
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t c = 0;
    for (; c + 8 <= hd; c += 8) {
      __m256 qv = _mm256_loadu_ps(q + c);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + c), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + c), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + c), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + c), a3);
    }
    float d0 = hsum256(a0), d1 = hsum256(a1), d2 = hsum256(a2), d3 = hsum256(a3);
    for (; c < hd; c++) {
      d0 += q[c] * k0[c];
      d1 += q[c] * k1[c];
      d2 += q[c] * k2[c];
      d3 += q[c] * k3[c];
    }
    s[i] = d0, s[i + 1] = d1, s[i + 2] = d2, s[i + 3] = d3;
  }
  for (; i < n; i++) s[i] = dot_avx2(q, k[i], hd);
  float bm = -std::numeric_limits<float>::infinity();
  for (i = 0; i < n; i++) bm = std::max(bm, s[i]);
  if (bm > st.m) {
    float corr = std::exp(st.m - bm);
    st.l *= corr;
    __m256 vc = _mm256_set1_ps(corr);
    int64_t c = 0;
    for (; c + 8 <= hd; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(_mm256_loadu_ps(acc + c), vc));
    for (; c < hd; c++) acc[c] *= corr;
    st.m = bm;
  }
  // The block's probabilities in one vectorised sweep.
  __m256 vm = _mm256_set1_ps(st.m), vsum = _mm256_setzero_ps();
  float tsum = 0;
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
    _mm256_storeu_ps(s + i, p);
    vsum = _mm256_add_ps(vsum, p);
  }
  for (; i < n; i++) {
    s[i] = std::exp(s[i] - st.m);
    tsum += s[i];
  }
  st.l += hsum256(vsum) + tsum;
  // acc += sum_i p_i v_i, 32 columns at a time with the keys inside: four accumulators stay
  // in registers for the whole block.
  int64_t c = 0;
  for (; c + 32 <= hd; c += 32) {
    __m256 a0 = _mm256_loadu_ps(acc + c), a1 = _mm256_loadu_ps(acc + c + 8);
    __m256 a2 = _mm256_loadu_ps(acc + c + 16), a3 = _mm256_loadu_ps(acc + c + 24);
    for (i = 0; i < n; i++) {
      const float* vr = v[i] + c;
      __m256 p = _mm256_set1_ps(s[i]);
      a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr), a0);
      a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8), a1);
      a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 16), a2);
      a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 24), a3);
    }
    _mm256_storeu_ps(acc + c, a0);
    _mm256_storeu_ps(acc + c + 8, a1);
    _mm256_storeu_ps(acc + c + 16, a2);
    _mm256_storeu_ps(acc + c + 24, a3);
  }
  for (; c + 8 <= hd; c += 8) {
    __m256 a = _mm256_loadu_ps(acc + c);
    for (i = 0; i < n; i++) a = _mm256_fmadd_ps(_mm256_set1_ps(s[i]), _mm256_loadu_ps(v[i] + c), a);
    _mm256_storeu_ps(acc + c, a);
  }
  for (; c < hd; c++) {
    float a = acc[c];
    for (i = 0; i < n; i++) a += s[i] * v[i][c];
    acc[c] = a;
  }
}

}  // namespace taipan::cpu
