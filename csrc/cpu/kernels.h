// The CPU backend's kernels: plain functions over raw fp32 activations.
//
// Every function here assumes its arguments were validated by the op layer (csrc/ops/),
// so kernels never check shapes; they only compute. Activations are fp32 and row-major.
// Large weight matrices (GEMM, embedding) may be f32, f16 or bf16; every other weight
// (norm weights, conv weights and bias, A_log, D, dt_bias) is converted to fp32 at load.
//
// Each kernel has an AVX2+FMA path (compiled with function target attributes, so no
// global -mavx2 flag is needed) and a portable path; use_avx2() picks one at run time.
#pragma once
#include <cstdint>

#include "../dtype.h"
#include "thread_pool.h"

namespace taipan::cpu {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
};
const CpuFeatures& cpu_features();
// True when AVX2, FMA and F16C are present and TAIPAN_CPU_PORTABLE is not set.
bool use_avx2();
// Force the portable path (tests use this to check both paths); returns the previous value.
bool set_force_portable(bool on);

// ---- GEMM (gemm.cpp) --------------------------------------------------------------------
// y[m, n] = sum_k x[m, k] * W[n, k] for m < M, n < N.
// x: fp32, row m at x + m*ldx. W: [N, K] contiguous in wdt (f32, f16 or bf16).
// y: fp32, row m at y + m*ldy. Accumulation is fp32. Fast for M = 1..8 (decode, bound by
// reading W once) and for large M (prefill, compute bound).
void gemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx,
          const void* W, DType wdt, float* y, int64_t ldy);

// ---- Memory bandwidth (bandwidth.cpp) ----------------------------------------------------
// Bytes per second at which the pool's threads read x[0, n) (best of `rounds` passes), with
// the decode GEMV's access pattern. x should be far larger than the caches.
double read_bandwidth(ThreadPool& pool, const float* x, int64_t n, int rounds);

// ---- FMA peak (fma_peak.cpp) ----------------------------------------------------------------
// fp32 FLOP/s (a multiply-add counts 2) of the pool's threads each running `steps` steps of
// independent FMA chains (best of `rounds`), with the kernels' instruction set (AVX2 or not).
double fma_peak(ThreadPool& pool, int64_t steps, int rounds);

// ---- Embedding (embedding.cpp) ------------------------------------------------------------
// out[i, :] = E[ids[i], :] as fp32. ids were bounds-checked by the caller.
void embedding(ThreadPool& pool, const int32_t* ids, int64_t n, const void* E, DType edt,
               int64_t d, float* out);

// ---- Norms (norm.cpp) ---------------------------------------------------------------------
// If delta != nullptr: r += delta (the residual add). Then out = r * rsqrt(mean(r^2) + eps) * w.
// r and out are [M, d] contiguous; out may not alias r.
void rmsnorm(ThreadPool& pool, int64_t M, int64_t d, float* r, const float* delta,
             const float* w, float eps, float* out);
// out[m, :] = rms_g(y[m, :] * silu(z[m, :])) * w, RMS taken over each of G groups of d/G
// contiguous channels. y, out: [M, d] contiguous; z row m at z + m*ldz.
void gated_rmsnorm(ThreadPool& pool, int64_t M, int64_t d, int64_t G, const float* y,
                   const float* z, int64_t ldz, const float* w, float eps, float* out);

// ---- Causal depthwise conv1d + SiLU (conv.cpp) ----------------------------------------------
// For each sequence b < B, token t < L, channel c < C:
//   out[b,t,c] = silu(bias[c] + sum_k w[c,k] * in(t - (K-1) + k, c))
// where in(s, c) = x[(b*L + s)*ldx + c] for s >= 0 and state_in[b, c, K-1+s] for s < 0
// (zeros when state_in is null). state_in/state_out: [B, C, K-1], the last K-1 raw inputs,
// oldest first; state_out may alias state_in. out: [B, L, C] contiguous. K <= 16.
void conv1d_silu(ThreadPool& pool, int64_t B, int64_t L, int64_t C, int64_t K, const float* x,
                 int64_t ldx, const float* w, const float* bias, const float* state_in,
                 float* out, float* state_out);
// One new token per sequence: x row b at x + b*ldx; states[b] ([C, K-1]) updated in place.
void conv1d_update(ThreadPool& pool, int64_t B, int64_t C, int64_t K, const float* x,
                   int64_t ldx, const float* w, const float* bias, float* const* states, float* out);

// ---- SSD: the Mamba-2 selective state space scan (ssd.cpp) ----------------------------------
struct SsdDims {
  int64_t B;      // sequences
  int64_t L;      // tokens per sequence
  int64_t H;      // heads
  int64_t P;      // head dim
  int64_t G;      // groups (head h uses group h / (H / G))
  int64_t N;      // state dim
  int64_t chunk;  // chunk length for the chunked algorithm (the model's chunk_size, 256)
  // The longest chunk ssd_scan runs: a longer `chunk` is cut down to it (see ssd.cpp).
  int64_t max_chunk = 64;
};
// Token (b, t) is row b*L + t. x: H*P values at x + row*ldx (head-major h*P + p).
// Bm, Cm: G*N values at Bm + row*ldb, Cm + row*ldc (group-major g*N + n).
// dt_raw: H values at dt_raw + row*lddt. dt = softplus(dt_raw + dt_bias) (identity above 20),
// A = -exp(A_log). Recurrence per head h:  S_t = exp(dt_t*A) S_{t-1} + dt_t x_t B_t^T,
// y_t = S_t C_t + D x_t.  state_in/state_out: [B, H, P, N] fp32 (state_in null = zeros;
// state_out may alias state_in). y: [B*L, H*P] contiguous.
// ssd_scan computes this with the chunked SSD algorithm (per-chunk cumsum of dt*A, decay
// exp(min(cs_l - cs_s, 0))); it must equal the recurrence to rounding.
void ssd_scan(ThreadPool& pool, const SsdDims& dims, const float* x, int64_t ldx,
              const float* Bm, int64_t ldb, const float* Cm, int64_t ldc, const float* dt_raw,
              int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
              const float* state_in, float* y, float* state_out);
// One token per sequence (dims.L must be 1): state [B, H, P, N] updated in place.
void ssd_step(ThreadPool& pool, const SsdDims& dims, const float* x, int64_t ldx,
              const float* Bm, int64_t ldb, const float* Cm, int64_t ldc, const float* dt_raw,
              int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
              float* state, float* y);

// ---- Elementwise (elementwise.cpp) ----------------------------------------------------------
void silu(ThreadPool& pool, int64_t n, const float* x, float* out);
void softplus(ThreadPool& pool, int64_t n, const float* x, float* out);
// out = a + b
void add(ThreadPool& pool, int64_t n, const float* a, const float* b, float* out);
// SwiGLU: out[m, j] = h[m, j] * silu(h[m, F + j]); h row m at h + m*ldh, out [M, F] contiguous.
void swiglu(ThreadPool& pool, int64_t M, int64_t F, const float* h, int64_t ldh, float* out);

// ---- Selective Attention Layer (sal.cpp) ---------------------------------------------------
// The gate with its feature pruning, for rows m < M of width d (all [M, d] contiguous):
//   r += delta (if delta != nullptr);  x = rms(r) * norm;  s = x @ gw^T + gb  (gw [2, d])
//   prob[m] = sigmoid(s1 - s0);  mask[m] = s1 > s0;
//   index[0..count) = the rows with mask 1, increasing;  *count = their number;
//   gathered[k] = x[index[k]] for k < count. index and gathered past count are not written.
void sal_gate(ThreadPool& pool, int64_t M, int64_t d, float* r, const float* delta,
              const float* norm, const float* gw, const float* gb, float eps, float* x,
              float* prob, int32_t* mask, int32_t* index, int32_t* count, float* gathered);

// Rotary embedding in place, rotate-half convention, on rows r < R of x (row r at x + r*ldx,
// `cols` = heads * head_dim values). Row r is token row = index ? index[r] : r of a chunk of
// B sequences of L tokens; its position is start[row / L] + row % L. Rows whose index is
// outside [0, B*L) are skipped. Angles are pos * theta^(-2i/head_dim), formed in double.
void rope(ThreadPool& pool, int64_t R, int64_t cols, int64_t head_dim, float* x, int64_t ldx,
          const int32_t* index, const int32_t* start, int64_t B, int64_t L, double theta);

// Sparse sliding-window attention of the selected queries (see sal.cpp for the layout).
struct SalAttnArgs {
  int64_t M, B, L;      // chunk rows M = B*L
  int64_t W;            // window
  int64_t H, hd;        // heads, head dim; HD = H*hd values per row
  int64_t n;            // queries (count, already clamped to [0, M])
  const float* q;       // query k at q + k*ldq, chunk row index[k]
  int64_t ldq;
  const int32_t* index;
  const float *k, *v;   // every chunk row's key/value at k + row*ldk, v + row*ldv
  int64_t ldk, ldv;
  const int32_t* mask;  // chunk rows usable as keys; nullptr = all (kv = "all")
  const int32_t* start; // [B] position of each sequence's first chunk token
  const float* const* k_cache;      // B ring buffers [W, HD]
  const float* const* v_cache;      // B ring buffers [W, HD]
  const int32_t* const* cache_pos;  // B arrays [W]: position held by each slot, -1 = none
  float* out;           // context of query k at out + k*ldo
  int64_t ldo;
};
void sal_attention(ThreadPool& pool, const SalAttnArgs& a);

// The ring buffers after a chunk: for each sequence b and t in [max(0, L-W), L), position
// p = start[b] + t goes to slot p % W (k, v rows copied and cache_pos = p) when mask is null
// or mask[b*L+t] != 0, else the slot is emptied (cache_pos = -1).
void sal_kv_write(ThreadPool& pool, int64_t B, int64_t L, int64_t W, int64_t HD, const float* k,
                  int64_t ldk, const float* v, int64_t ldv, const int32_t* mask,
                  const int32_t* start, float* const* k_cache, float* const* v_cache,
                  int32_t* const* cache_pos);

// Residual update of the n selected rows: for k < n, i = index[k] (skipped outside [0, M)),
// a = prob[i]:  r_i = (1-a) r_i + a o_k,  or with `normalized`  r_i += (1-a) x_i + a o_k.
void sal_mix(ThreadPool& pool, int64_t M, int64_t d, int64_t n, float* r, int64_t ldr,
             const float* o, int64_t ldo, const int32_t* index, const float* prob,
             const float* x, int64_t ldx, bool normalized);

// ---- Cross-entropy (loss.cpp) ----------------------------------------------------------------
// nll[i] = logsumexp(logits[i, :vocab]) - logits[i, targets[i]]; rows with target -1 get 0.
// Row i at logits + i*ld. NaN logits give NaN.
void cross_entropy(ThreadPool& pool, int64_t M, int64_t vocab, const float* logits, int64_t ld,
                   const int32_t* targets, float* nll);

// ---- Sampling (sampling.cpp) -----------------------------------------------------------------
// One sequence's settings (MODEL.md §9), validated by the op layer.
struct SamplingRow {
  float temperature;         // <= 0: greedy
  int64_t top_k;             // 0 or >= vocab: off; 1: greedy
  float top_p;               // 1: off; else in (0, 1)
  float min_p;               // 0: off; else in (0, 1]
  float repetition_penalty;  // 1: off; else > 0
  uint32_t seed;
  uint32_t step;  // index of the token being generated
};
// The draw's uniform number in [0, 1), a pure function of (seed, step) (no generator state,
// so a seed replays a generation and a GPU kernel can compute the same number):
//   mix64(z) = SplitMix64's finaliser: z ^= z>>30; z *= 0xBF58476D1CE4E5B9;
//              z ^= z>>27; z *= 0x94D049BB133111EB; z ^= z>>31   (all mod 2^64)
//   u = (mix64(mix64(seed) + (step + 1) * 0x9E3779B97F4A7C15) >> 11) * 2^-53
// i.e. output number `step` of a SplitMix64 stream whose state starts at mix64(seed).
double sampling_uniform(uint32_t seed, uint32_t step);
// Why a row could not be sampled; row < 0 means every row succeeded.
struct SampleFailure {
  int64_t row = -1;
  int64_t id = -1;  // the offending logit's id, or -1
  const char* what = nullptr;
};
// For each row b < B: logits at logits + b*ld, of which ids [0, vocab) are candidates (the
// padding beyond is never read); seen ids at seen + b*S (seen may be null; -1 and ids
// >= vocab are skipped). Writes tokens[b] and, when logprobs is not null, logprobs[b].
// A row with a NaN or +Infinity logit, or only -Infinity ones, fails (its outputs unset).
SampleFailure sample(ThreadPool& pool, int64_t B, int64_t vocab, const float* logits,
                     int64_t ld, const int32_t* seen, int64_t S, const SamplingRow* rows,
                     int32_t* tokens, float* logprobs);

// ---- Causal attention with a growing KV cache (attention.cpp) -----------------------------------
// A chunk of B sequences x L new tokens, chunk row b*L + t at position start[b] + t. The query
// at position p attends to positions 0..p of its sequence: cache rows 0..start[b]-1, then chunk
// rows b*L .. b*L + t. fp32 online softmax, scores scaled by 1/sqrt(hd). Query head h reads KV
// head h / (Hq / Hkv) (GQA). The caller guarantees start[b] >= 0 and Hq % Hkv == 0, and that
// every cache holds start[b] rows.
struct AttnArgs {
  int64_t B, L;         // sequences, new tokens per sequence
  int64_t Hq, Hkv, hd;  // query heads, key/value heads, head dim
  const float* q;       // [B*L, Hq*hd], row at q + row*ldq
  int64_t ldq;
  const float *k, *v;   // [B*L, Hkv*hd], the chunk's keys (after RoPE) and values
  int64_t ldk, ldv;
  const int32_t* start;            // [B]
  const float* const* k_cache;     // B caches, row p (Hkv*hd contiguous values) = position p
  const float* const* v_cache;
  float* out;           // [B*L, Hq*hd], row at out + row*ldo
  int64_t ldo;
};
void attention(ThreadPool& pool, const AttnArgs& a);

// The chunk's keys and values into the caches: row b*L + t goes to cache row start[b] + t
// (HD values each). The caller guarantees start[b] + L <= the capacity of sequence b.
void kv_append(ThreadPool& pool, int64_t B, int64_t L, int64_t HD, const float* k, int64_t ldk,
               const float* v, int64_t ldv, const int32_t* start, float* const* k_cache,
               float* const* v_cache);

}  // namespace taipan::cpu
