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
// One new token per sequence: x row b at x + b*ldx; state [B, C, K-1] updated in place.
void conv1d_update(ThreadPool& pool, int64_t B, int64_t C, int64_t K, const float* x,
                   int64_t ldx, const float* w, const float* bias, float* state, float* out);

// ---- SSD: the Mamba-2 selective state space scan (ssd.cpp) ----------------------------------
struct SsdDims {
  int64_t B;      // sequences
  int64_t L;      // tokens per sequence
  int64_t H;      // heads
  int64_t P;      // head dim
  int64_t G;      // groups (head h uses group h / (H / G))
  int64_t N;      // state dim
  int64_t chunk;  // chunk length for the chunked algorithm (256 by default)
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

}  // namespace taipan::cpu
