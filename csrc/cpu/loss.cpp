// Cross-entropy of next-token predictions: nll[i] = logsumexp(logits[i, :vocab]) - logits[i, target[i]].
// Evaluation runs it on every position, so it stays on the backend next to the LM head instead
// of copying [tokens, vocab] logits to JavaScript.
#include <cmath>

#include "kernels.h"
#include "vec_math.h"

namespace taipan::cpu {
namespace {

// log(sum_j exp(x_j)) over n values, stable: shift by the maximum first.
float logsumexp_portable(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; j++) m = std::isnan(x[j]) || x[j] > m ? x[j] : m;
  if (std::isnan(m)) return m;
  if (std::isinf(m)) return m;
  double s = 0;
  for (int64_t j = 0; j < n; j++) s += std::exp(double(x[j]) - m);
  return float(m + std::log(s));
}

__attribute__((target("avx2,fma"))) float logsumexp_avx2(const float* x, int64_t n) {
  // The maximum, and whether any value is NaN (max_ps would silently drop it).
  __m256 vm = _mm256_set1_ps(-INFINITY), vnan = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vm = _mm256_max_ps(vm, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  float m = lanes[0];
  for (int k = 1; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
  bool nan = _mm256_movemask_ps(vnan) != 0;
  for (; j < n; j++) {
    nan |= std::isnan(x[j]);
    m = x[j] > m ? x[j] : m;
  }
  if (nan) return NAN;
  if (std::isinf(m)) return m;
  __m256 vs = _mm256_setzero_ps(), shift = _mm256_set1_ps(m);
  double s = 0;
  for (j = 0; j + 8 <= n; j += 8) {
    vs = _mm256_add_ps(vs, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), shift)));
    if ((j & 1023) == 1016) {  // flush to double now and then: 128K terms would lose bits in fp32
      s += hsum256(vs);
      vs = _mm256_setzero_ps();
    }
  }
  s += hsum256(vs);
  for (; j < n; j++) s += std::exp(double(x[j]) - m);
  return float(m + std::log(s));
}

}  // namespace

void cross_entropy(ThreadPool& pool, int64_t M, int64_t vocab, const float* logits, int64_t ld,
                   const int32_t* targets, float* nll) {
  bool avx = use_avx2();
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      if (targets[i] < 0) {  // no next token to score (e.g. the end of the text)
        nll[i] = 0;
        continue;
      }
      const float* row = logits + i * ld;
      float lse = avx ? logsumexp_avx2(row, vocab) : logsumexp_portable(row, vocab);
      nll[i] = lse - row[targets[i]];
    }
  });
}

}  // namespace taipan::cpu
