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

void conv1d_update(ThreadPool& pool, int64_t B, int64_t C, int64_t K, const float* x, int64_t ldx,
                   const float* w, const float* bias, float* state, float* out) {
  // One token: the same computation as a prefill of length 1 with the state carried.
  conv1d_silu(pool, B, 1, C, K, x, ldx, w, bias, state, out, state);
}

}  // namespace taipan::cpu
