// The mixture-of-experts kernels (see moe.h): the router's softmax + top-k with its per-expert
// compaction, and the row gather / weighted scatter that move rows in and out of an expert.
#include "moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace taipan::cpu {

namespace {

constexpr int64_t kGrain = 4096;  // values per task: below this, waking a thread costs more

// p = softmax(l[0..E)) in fp32; false (and p untouched) when the row has no defined softmax:
// a NaN or +Infinity logit, or all of them -Infinity (exp(-inf - -inf) would be NaN).
bool softmax_row(int64_t E, const float* l, float* p) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t e = 0; e < E; e++) {
    if (std::isnan(l[e])) return false;
    mx = std::max(mx, l[e]);
  }
  if (!std::isfinite(mx)) return false;
  float sum = 0;
  for (int64_t e = 0; e < E; e++) sum += (p[e] = std::exp(l[e] - mx));
  // sum >= 1 (the maximum contributes exp(0)), so the division is always defined.
  for (int64_t e = 0; e < E; e++) p[e] /= sum;
  return true;
}

}  // namespace

void moe_route(ThreadPool& pool, int64_t M, int64_t E, int64_t top_k, const float* logits, int64_t ld,
               int32_t* index, float* weight, int32_t* count) {
  // Pass 1, parallel over rows: each row's top_k experts (best first) and their probabilities.
  std::vector<int32_t> chosen(static_cast<size_t>(M * top_k));
  std::vector<float> chosen_p(static_cast<size_t>(M * top_k));
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    std::vector<float> p(static_cast<size_t>(E));
    std::vector<int32_t> order(static_cast<size_t>(E));
    for (int64_t m = b; m < e; m++) {
      int32_t* ce = chosen.data() + m * top_k;
      float* cp = chosen_p.data() + m * top_k;
      if (!softmax_row(E, logits + m * ld, p.data())) {
        // Every p is NaN, so every expert ties: the tie rule picks the lowest indices.
        for (int64_t j = 0; j < top_k; j++) ce[j] = int32_t(j), cp[j] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      for (int64_t x = 0; x < E; x++) order[x] = int32_t(x);
      // A strict total order (no NaN here): larger p first, then the lower expert index.
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t u, int32_t v) {
        return p[u] > p[v] || (p[u] == p[v] && u < v);
      });
      for (int64_t j = 0; j < top_k; j++) ce[j] = order[j], cp[j] = p[order[j]];
    }
  }, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, E)));
  // Pass 2, serial: appending rows in increasing m keeps every expert's list ordered, and it is
  // M * top_k stores, cheaper than a parallel prefix sum would be to set up. Each row names
  // top_k distinct experts, so no list grows past M.
  std::fill(count, count + E, 0);
  for (int64_t m = 0; m < M; m++) {
    for (int64_t j = 0; j < top_k; j++) {
      int64_t ex = chosen[size_t(m * top_k + j)];
      int64_t slot = ex * M + count[ex]++;
      index[slot] = int32_t(m);
      weight[slot] = chosen_p[size_t(m * top_k + j)];
    }
  }
}

void gather_rows(ThreadPool& pool, int64_t M, int64_t d, int64_t n, const float* x, int64_t ldx,
                 const int32_t* index, float* out, int64_t ldo) {
  size_t bytes = size_t(d) * sizeof(float);
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; k++) {
      int64_t i = index[k];
      float* o = out + k * ldo;
      // An index from outside our router is not trusted: zeros instead of stale memory, so
      // whatever reads the row next sees a defined value.
      if (i < 0 || i >= M) std::fill(o, o + d, 0.0f);
      else std::memcpy(o, x + i * ldx, bytes);
    }
  }, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, d)));
}

void moe_scatter(ThreadPool& pool, int64_t M, int64_t d, int64_t n, float* r, int64_t ldr, const float* y,
                 int64_t ldy, const int32_t* index, const float* weight) {
  if (n <= 0) return;
  // Column blocks (multiples of 16 floats, 64 bytes) of at least kGrain values in all: each
  // thread owns its columns of every row, so even a repeated index cannot race, and each
  // element's additions happen in increasing k whatever the thread count.
  int64_t grain = (std::max<int64_t>(16, (kGrain + n - 1) / n) + 15) / 16 * 16;
  pool.parallel_for(d, [&](int64_t c0, int64_t c1, int) {
    for (int64_t k = 0; k < n; k++) {
      int64_t i = index[k];
      if (i < 0 || i >= M) continue;
      float w = weight[k];
      float* ri = r + i * ldr;
      const float* yk = y + k * ldy;
      for (int64_t c = c0; c < c1; c++) ri[c] += w * yk[c];
    }
  }, grain);
}

}  // namespace taipan::cpu
