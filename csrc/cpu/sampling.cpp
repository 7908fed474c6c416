// Token sampling (MODEL.md §9): one draw per sequence from its row of logits.
//
// The pipeline per row: penalise the seen ids, take the greedy argmax or turn the logits into
// weights w_i = exp((l_i - l_max) / T), narrow the candidates (top-k, top-p, min-p), draw.
// Everything that decides which token comes out is spelled exactly, so that the TypeScript
// reference (test/reference/sampler.ts) and a future GPU kernel make the same choice:
//   * candidates are ordered by (logit descending, id ascending): ties go to the smaller id;
//   * the draw walks the final candidates in ascending id order and takes the first whose
//     running weight sum exceeds u * total, with u = sampling_uniform(seed, step);
//   * logits stay fp32 (the penalty is an fp32 multiply or divide); weights and every sum are
//     double, summed in ascending id order (top-p's running sum goes in candidate order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace taipan::cpu {

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;  // SplitMix64's increment (2^64 / phi)

// SplitMix64's output function (Stafford's "mix13"): a bijection on 64 bits whose every
// output bit depends on every input bit, so neighbouring counters give unrelated outputs.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Per-thread buffers sized to the vocabulary, kept between calls: a 128K vocabulary needs
// about 3 MB, and allocating that per call would cost page faults on every token.
struct Scratch {
  std::vector<float> logits;   // the row after the repetition penalty
  std::vector<double> weight;  // exp((l - l_max) / T), valid for the current candidates
  std::vector<uint64_t> keys;  // order_key of the candidates, for top-k / top-p selection
  std::vector<int32_t> ids;    // the current candidates, ascending
  std::vector<int32_t> seen;   // the row's distinct seen ids
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// The candidate order (logit descending, id ascending) as one unsigned integer, so selection
// and sorting compare plain uint64s instead of chasing ids into the logits: the high half is
// the logit's bits mapped to an integer that decreases as the logit grows, the low half the id.
uint64_t order_key(float l, int32_t id) {
  if (l == 0) l = 0;  // -0 and +0 are the same logit: the id decides between them
  uint32_t u;
  std::memcpy(&u, &l, 4);
  uint32_t up = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // increases with the float
  return (uint64_t(~up) << 32) | uint32_t(id);
}

int32_t key_id(uint64_t key) { return int32_t(key & 0xFFFFFFFFu); }

// The ids of keys[0, n), ascending, into ids.
void ids_of(const uint64_t* keys, int64_t n, int32_t* ids) {
  for (int64_t j = 0; j < n; j++) ids[j] = key_id(keys[j]);
  std::sort(ids, ids + n);
}

// Keep the smallest prefix of keys[0, n), in key order, whose weight reaches `need`; returns
// its length (at least 1). Only that prefix ends up sorted: the next block of candidates is
// selected with nth_element and sorted, the block growing 4x each time, so a peaked
// distribution over 128K ids costs one partition and a flat one a handful, not a full sort.
int64_t top_p_prefix(uint64_t* keys, int64_t n, const double* w, double need) {
  int64_t kept = 0, sorted_end = 0, block = 128;
  double cum = 0;
  while (kept < n) {
    if (kept == sorted_end) {
      int64_t m = std::min(n, sorted_end + block);
      if (m < n) std::nth_element(keys + sorted_end, keys + m, keys + n);
      std::sort(keys + sorted_end, keys + m);
      sorted_end = m;
      block *= 4;
    }
    cum += w[key_id(keys[kept++])];
    if (cum >= need) break;
  }
  return kept;
}

SampleFailure sample_row(const float* row, int64_t V, const int32_t* seen, int64_t S,
                         const SamplingRow& p, int32_t* token, float* logprob) {
  Scratch& s = scratch();
  s.logits.assign(row, row + V);  // ids >= V are padding: never copied, never drawn
  float* l = s.logits.data();

  // Repetition penalty, once per distinct id (a token seen twice is not penalised twice).
  if (p.repetition_penalty != 1.0f && S > 0) {
    s.seen.assign(seen, seen + S);
    std::sort(s.seen.begin(), s.seen.end());
    s.seen.erase(std::unique(s.seen.begin(), s.seen.end()), s.seen.end());
    for (int32_t id : s.seen) {
      if (id < 0 || id >= V) continue;  // -1 is padding; padded ids are dropped anyway
      l[id] = l[id] < 0 ? l[id] * p.repetition_penalty : l[id] / p.repetition_penalty;
    }
  }

  // The max and the argmax (strict > keeps the smallest id on ties), checking the row.
  int64_t arg = -1;
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; i++) {
    float x = l[i];
    if (std::isnan(x)) return {0, i, "the logits contain NaN"};
    if (x > mx) {
      mx = x;
      arg = i;
    }
  }
  if (mx == INFINITY) return {0, arg, "a logit is +Infinity"};
  if (arg < 0) return {0, -1, "every logit is -Infinity, so there is nothing to draw"};
  const double m = mx;

  // Greedy: the argmax; its log-probability under the penalised logits at temperature 1.
  if (p.temperature <= 0 || p.top_k == 1) {
    *token = int32_t(arg);
    if (logprob) {
      double z = 0;
      for (int64_t i = 0; i < V; i++) z += std::exp(double(l[i]) - m);
      *logprob = float(-std::log(z));
    }
    return {};
  }

  const double T = p.temperature;
  const bool use_k = p.top_k > 0 && p.top_k < V;
  const bool use_p = p.top_p < 1.0f;
  const bool use_min = p.min_p > 0.0f;
  s.weight.resize(V);
  s.ids.resize(V);
  double* w = s.weight.data();
  int32_t* ids = s.ids.data();
  uint64_t* keys = nullptr;
  if (use_k || use_p) {
    s.keys.resize(V);
    keys = s.keys.data();
    for (int64_t i = 0; i < V; i++) keys[i] = order_key(l[i], int32_t(i));
  }

  // The candidates: 0..V-1 while `all`, else ids[0, n) ascending; w holds their weights.
  bool all = true;
  int64_t n = V;
  if (use_k) {
    // Selection, not a sort: nth_element leaves the k best keys in front, in some order.
    n = p.top_k;
    std::nth_element(keys, keys + n, keys + V);
    ids_of(keys, n, ids);
    all = false;
    for (int64_t j = 0; j < n; j++) w[ids[j]] = std::exp((double(l[ids[j]]) - m) / T);
  } else {
    for (int64_t i = 0; i < V; i++) w[i] = std::exp((double(l[i]) - m) / T);
  }
  auto id_at = [&](int64_t j) { return all ? int32_t(j) : ids[j]; };

  if (use_p) {
    // The mass is relative to the candidates left by top-k (it renormalises over them), and
    // keys[0, n) are exactly those candidates.
    double total = 0;
    for (int64_t j = 0; j < n; j++) total += w[id_at(j)];
    n = top_p_prefix(keys, n, w, double(p.top_p) * total);
    ids_of(keys, n, ids);
    all = false;
  }
  if (use_min) {
    // prob_i / max_prob = w_i / w_max, and w_max = exp(0) = 1: renormalising cancels out.
    // The argmax has w = 1 >= min_p, so at least one candidate always survives.
    int64_t kept = 0;
    for (int64_t j = 0; j < n; j++) {
      int32_t id = id_at(j);  // read before the write below; kept <= j, so nothing is lost
      if (w[id] >= double(p.min_p)) ids[kept++] = id;
    }
    n = kept;
    all = false;
  }

  // The draw.
  double total = 0;
  for (int64_t j = 0; j < n; j++) total += w[id_at(j)];  // >= 1: the argmax is a candidate
  double target = sampling_uniform(p.seed, p.step) * total;
  double cum = 0;
  int32_t pick = -1, last = -1;
  for (int64_t j = 0; j < n; j++) {
    int32_t id = id_at(j);
    if (w[id] <= 0) continue;  // an id with no weight is never drawn
    last = id;
    cum += w[id];
    if (target < cum) {
      pick = id;
      break;
    }
  }
  if (pick < 0) pick = last;  // rounding left target at or past the final sum
  *token = pick;
  if (logprob) *logprob = float((double(l[pick]) - m) / T - std::log(total));
  return {};
}

}  // namespace

double sampling_uniform(uint32_t seed, uint32_t step) {
  uint64_t key = mix64(seed);
  uint64_t z = mix64(key + (uint64_t(step) + 1) * kGamma);
  return double(z >> 11) * 0x1.0p-53;  // the top 53 bits: exactly representable, in [0, 1)
}

SampleFailure sample(ThreadPool& pool, int64_t B, int64_t vocab, const float* logits,
                     int64_t ld, const int32_t* seen, int64_t S, const SamplingRow* rows,
                     int32_t* tokens, float* logprobs) {
  std::vector<SampleFailure> failures(B);
  pool.parallel_for(B, [&](int64_t b0, int64_t b1, int) {
    for (int64_t b = b0; b < b1; b++) {
      failures[b] = sample_row(logits + b * ld, vocab, seen ? seen + b * S : nullptr, S, rows[b],
                               tokens + b, logprobs ? logprobs + b : nullptr);
      if (failures[b].what) failures[b].row = b;
    }
  });
  for (auto& f : failures)
    if (f.what) return f;
  return {};
}

}  // namespace taipan::cpu
