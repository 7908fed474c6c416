// Causal depthwise conv1d + SiLU over the x|B|C channels of Mamba-2, for prefill (many
// tokens, optional carried state) and for decode (one token, state updated in place).
//
// Each channel is an independent K-tap filter. Prefill walks the tokens in order and, for
// each, runs across 8 channels at a time: a token's inputs for 8 channels are contiguous in
// its row, and the rows of x are read in order (walking one channel block down the whole
// sequence instead strides through a new cache line and page at every token). Decode has
// its own kernel, per channel, below.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "vec_math.h"

namespace taipan::cpu {

namespace {

// Input at relative time s (s < 0 reads the carried state, which holds the last K-1 inputs
// oldest first) for channel c of one sequence.
inline float conv_input(const float* x, int64_t ldx, const float* st, int64_t K, int64_t s, int64_t c) {
  if (s >= 0) return x[s * ldx + c];
  return st ? st[c * (K - 1) + (K - 1 + s)] : 0.0f;
}

// One sequence, channels [c0, c1).
void conv_seq_portable(int64_t L, int64_t K, int64_t c0, int64_t c1, const float* x, int64_t ldx,
                       const float* w, const float* bias, const float* st, float* out, int64_t ldo) {
  for (int64_t t = 0; t < L; t++)
    for (int64_t c = c0; c < c1; c++) {
      float acc = bias ? bias[c] : 0.0f;
      for (int64_t k = 0; k < K; k++) acc += w[c * K + k] * conv_input(x, ldx, st, K, t - (K - 1) + k, c);
      out[t * ldo + c] = silu_scalar(acc);
    }
}

constexpr int64_t kMaxK = 16;

__attribute__((target("avx2,fma"))) void silu_inplace_avx2(float* v, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, silu256(_mm256_loadu_ps(v + i)));
  for (; i < n; i++) v[i] = silu_scalar(v[i]);
}

// Tokens [t0, t1) of one sequence, channels [c0, c1), with t0 >= K-1 so that every input is
// in x. Token-major: a token's inputs for 8 channels are one vector in each of K rows, and
// taps are read from the transposed copy wt ([K, C]) as vectors too, so every load is a
// contiguous run of a row that the previous tokens have just brought into cache.
__attribute__((target("avx2,fma"))) void conv_tokens_avx2(int64_t t0, int64_t t1, int64_t K, int64_t c0,
                                                         int64_t c1, const float* x, int64_t ldx,
                                                         const float* wt, int64_t C,
                                                         const float* bias, float* out, int64_t ldo) {
  for (int64_t t = t0; t < t1; t++) {
    const float* xs = x + (t - (K - 1)) * ldx;
    float* o = out + t * ldo;
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      __m256 acc = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
      for (int64_t k = 0; k < K; k++)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(wt + k * C + c), _mm256_loadu_ps(xs + k * ldx + c), acc);
      _mm256_storeu_ps(o + c, silu256(acc));
    }
    for (; c < c1; c++) {
      float acc = bias ? bias[c] : 0.0f;
      for (int64_t k = 0; k < K; k++) acc += wt[k * C + c] * xs[k * ldx + c];
      o[c] = silu_scalar(acc);
    }
  }
}

// New state = the last K-1 inputs of (old state ++ x), oldest first.
void update_state(int64_t L, int64_t K, int64_t c0, int64_t c1, const float* x, int64_t ldx, const float* st_in, float* st_out) {
  float tmp[kMaxK];  // staged, because st_out may alias st_in
  for (int64_t c = c0; c < c1; c++) {
    for (int64_t i = 0; i < K - 1; i++) tmp[i] = conv_input(x, ldx, st_in, K, L - (K - 1) + i, c);
    std::memcpy(st_out + c * (K - 1), tmp, size_t(K - 1) * 4);
  }
}

}  // namespace

void conv1d_silu(ThreadPool& pool, int64_t B, int64_t L, int64_t C, int64_t K, const float* x,
                 int64_t ldx, const float* w, const float* bias, const float* state_in, float* out,
                 float* state_out) {
  if (!use_avx2()) {
    // Portable: one task per (sequence, 64-channel block), each over the whole sequence.
    const int64_t cb = 64, nblocks = (C + cb - 1) / cb;
    pool.parallel_tasks(B * nblocks, [&](int64_t i, int) {
      int64_t b = i / nblocks, c0 = (i % nblocks) * cb, c1 = std::min(C, c0 + cb);
      const float* xb = x + b * L * ldx;
      const float* sb = state_in ? state_in + b * C * (K - 1) : nullptr;
      conv_seq_portable(L, K, c0, c1, xb, ldx, w, bias, sb, out + b * L * C, C);
      if (state_out) update_state(L, K, c0, c1, xb, ldx, sb, state_out + b * C * (K - 1));
    });
    return;
  }
  // The taps transposed to [K, C], so that tap k of 8 adjacent channels is one vector.
  std::vector<float> wt(size_t(K * C));
  for (int64_t c = 0; c < C; c++)
    for (int64_t k = 0; k < K; k++) wt[size_t(k * C + c)] = w[c * K + k];
  // Tasks of (sequence, 64 tokens, 256 channels): a task's rows of x and out (1 KiB each)
  // stay in L1 while its K-row window slides down them, and a 512-token prompt of the
  // mamba2-130m shape makes 56 tasks, enough to keep both threads busy to the end.
  const int64_t tb = 64, cb = 256;
  const int64_t ntb = (L + tb - 1) / tb, ncb = (C + cb - 1) / cb;
  pool.parallel_tasks(B * ntb * ncb, [&](int64_t i, int) {
    const int64_t b = i / (ntb * ncb), t0 = i / ncb % ntb * tb, t1 = std::min(L, t0 + tb);
    const int64_t c0 = i % ncb * cb, c1 = std::min(C, c0 + cb);
    const float* xb = x + b * L * ldx;
    float* ob = out + b * L * C;
    // The first K-1 tokens may read the carried state: channel by channel, as the portable
    // path does. Only the first token block has them.
    const int64_t head = std::min(t1, K - 1);
    const float* sb = state_in ? state_in + b * C * (K - 1) : nullptr;
    if (t0 < head) conv_seq_portable(head, K, c0, c1, xb, ldx, w, bias, sb, ob, C);
    conv_tokens_avx2(std::max(t0, head), t1, K, c0, c1, xb, ldx, wt.data(), C, bias, ob, C);
    // The new state, written by the task that read the old one (state_out may alias it).
    if (state_out && t0 == 0) update_state(L, K, c0, c1, xb, ldx, sb, state_out + b * C * (K - 1));
  });
}

// Decode, channels [c0, c1) of one sequence: each channel's K taps and K-1 state values are
// adjacent in memory, so a channel is a short contiguous dot product. KK is K when it is known
// at compile time (0 otherwise): with the tap loops unrolled, the channels' independent
// chains overlap instead of each paying a loop of K-dependent trip counts.
template <int KK>
void update_channels(int64_t K_, int64_t c0, int64_t c1, const float* x, const float* w, const float* bias,
                     float* st, float* out) {
  const int64_t K = KK > 0 ? KK : K_;
  for (int64_t c = c0; c < c1; c++) {
    const float* wc = w + c * K;
    float* s = st + c * (K - 1);
    float xin = x[c];
    float acc = (bias ? bias[c] : 0.0f) + wc[K - 1] * xin;
    for (int64_t k = 0; k < K - 1; k++) acc += wc[k] * s[k];
    for (int64_t k = 0; k + 1 < K - 1; k++) s[k] = s[k + 1];  // shift the window by one
    if (K > 1) s[K - 2] = xin;
    out[c] = acc;
  }
}

// Decode: one token per sequence. The prefill kernel would gather taps and state across 8
// channels per vector for a single token, which costs more than the arithmetic; here each
// channel is its own dot product, and SiLU runs vectorised over the block afterwards.
void conv1d_update(ThreadPool& pool, int64_t B, int64_t C, int64_t K, const float* x, int64_t ldx,
                   const float* w, const float* bias, float* const* states, float* out) {
  bool vec = use_avx2();
  auto channels = K == 4   ? update_channels<4>
                  : K == 3 ? update_channels<3>
                  : K == 2 ? update_channels<2>
                           : update_channels<0>;
  // Blocks of 128 channels handed out one at a time (the mamba2-130m layer has 14).
  const int64_t block = 128;
  int64_t nblocks = (C + block - 1) / block;
  pool.parallel_tasks(B * nblocks, [&](int64_t i, int) {
    int64_t b = i / nblocks, c0 = (i % nblocks) * block, c1 = std::min(C, c0 + block);
    float* ob = out + b * C;
    channels(K, c0, c1, x + b * ldx, w, bias, states[b], ob);
    if (vec) silu_inplace_avx2(ob + c0, c1 - c0);
    else for (int64_t c = c0; c < c1; c++) ob[c] = silu_scalar(ob[c]);
  });
}

}  // namespace taipan::cpu
