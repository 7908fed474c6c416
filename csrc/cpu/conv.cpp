// Causal depthwise conv1d + SiLU over the x|B|C channels of Mamba-2, for prefill (many
// tokens, optional carried state) and for decode (one token, state updated in place).
//
// Each channel is an independent K-tap filter, so channels are the unit of parallelism and
// the inner loop runs across 8 channels at a time: a token's inputs for 8 channels are
// contiguous, and the filter taps of those channels are gathered once per block.
#include <algorithm>
#include <cstring>

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

__attribute__((target("avx2,fma"))) void conv_seq_avx2(int64_t L, int64_t K, int64_t c0, int64_t c1, const float* x, int64_t ldx,
                                                      const float* w, const float* bias, const float* st, float* out, int64_t ldo) {
  int64_t c = c0;
  for (; c + 8 <= c1; c += 8) {
    // Taps of 8 channels, transposed so tap k of all 8 is one vector.
    __m256 taps[kMaxK];
    for (int64_t k = 0; k < K; k++) {
      alignas(32) float tk[8];
      for (int j = 0; j < 8; j++) tk[j] = w[(c + j) * K + k];
      taps[k] = _mm256_load_ps(tk);
    }
    __m256 b = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
    // The first K-1 tokens may read the carried state; after that every input is in x.
    int64_t head = std::min<int64_t>(L, K - 1);
    for (int64_t t = 0; t < head; t++) {
      __m256 acc = b;
      for (int64_t k = 0; k < K; k++) {
        int64_t s = t - (K - 1) + k;
        __m256 in;
        if (s >= 0) in = _mm256_loadu_ps(x + s * ldx + c);
        else {
          alignas(32) float v[8];
          for (int j = 0; j < 8; j++) v[j] = conv_input(x, ldx, st, K, s, c + j);
          in = _mm256_load_ps(v);
        }
        acc = _mm256_fmadd_ps(taps[k], in, acc);
      }
      _mm256_storeu_ps(out + t * ldo + c, silu256(acc));
    }
    for (int64_t t = head; t < L; t++) {
      __m256 acc = b;
      const float* xs = x + (t - (K - 1)) * ldx + c;
      for (int64_t k = 0; k < K; k++) acc = _mm256_fmadd_ps(taps[k], _mm256_loadu_ps(xs + k * ldx), acc);
      _mm256_storeu_ps(out + t * ldo + c, silu256(acc));
    }
  }
  if (c < c1) conv_seq_portable(L, K, c, c1, x, ldx, w, bias, st, out, ldo);
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
  bool vec = use_avx2();
  // Blocks of 64 channels per task (times B sequences) keep both threads busy even for one
  // short sequence, and each block's taps stay in registers for the whole sequence.
  const int64_t cb = 64;
  int64_t nblocks = (C + cb - 1) / cb;
  pool.parallel_for(B * nblocks, [&](int64_t b0, int64_t b1, int) {
    for (int64_t i = b0; i < b1; i++) {
      int64_t b = i / nblocks, c0 = (i % nblocks) * cb, c1 = std::min(C, c0 + cb);
      const float* xb = x + b * L * ldx;
      const float* sb = state_in ? state_in + b * C * (K - 1) : nullptr;
      float* ob = out + b * L * C;
      if (vec) conv_seq_avx2(L, K, c0, c1, xb, ldx, w, bias, sb, ob, C);
      else conv_seq_portable(L, K, c0, c1, xb, ldx, w, bias, sb, ob, C);
      if (state_out) update_state(L, K, c0, c1, xb, ldx, sb, state_out + b * C * (K - 1));
    }
  });
}

// Decode: one token per sequence. The prefill kernel would gather taps and state across 8
// channels per vector for a single token, which costs more than the arithmetic; here each
// channel is a short contiguous dot product (its K taps and its K-1 state values are adjacent
// in memory), and SiLU runs vectorised over the block afterwards.
void conv1d_update(ThreadPool& pool, int64_t B, int64_t C, int64_t K, const float* x, int64_t ldx,
                   const float* w, const float* bias, float* const* states, float* out) {
  bool vec = use_avx2();
  // Blocks of 128 channels handed out one at a time (the mamba2-130m layer has 14).
  const int64_t block = 128;
  int64_t nblocks = (C + block - 1) / block;
  pool.parallel_tasks(B * nblocks, [&](int64_t i, int) {
    int64_t b = i / nblocks, c0 = (i % nblocks) * block, c1 = std::min(C, c0 + block);
    float* st = states[b];
    const float* xb = x + b * ldx;
    float* ob = out + b * C;
    for (int64_t c = c0; c < c1; c++) {
      const float* wc = w + c * K;
      float* s = st + c * (K - 1);
      float xin = xb[c];
      float acc = (bias ? bias[c] : 0.0f) + wc[K - 1] * xin;
      for (int64_t k = 0; k < K - 1; k++) acc += wc[k] * s[k];
      for (int64_t k = 0; k + 1 < K - 1; k++) s[k] = s[k + 1];  // shift the window by one
      if (K > 1) s[K - 2] = xin;
      ob[c] = acc;
    }
    if (vec) silu_inplace_avx2(ob + c0, c1 - c0);
    else for (int64_t c = c0; c < c1; c++) ob[c] = silu_scalar(ob[c]);
  });
}

}  // namespace taipan::cpu
