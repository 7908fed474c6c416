// The Mamba-1 selective scan (Jamba's mixer) on the CPU, fp32.
//
// Per sequence, channel c and state index n, token by token (mamba1.h has the contract):
//     delta = softplus(dt_t,c + dt_bias_c),  A_c,n = -exp(A_log_c,n)
//     h_c,n = exp(delta A_c,n) h_c,n + delta B_t,n x_t,c
//     out_t,c = (sum_n C_t,n h_c,n + D_c x_t,c) silu(z_t,c)
// Unlike Mamba-2, the decay differs per (c, n), so there is no matrix form to chunk: every
// token costs di*N exponentials, and those are the kernel's main cost. The recurrence runs
// literally, and the work is cut into (sequence, block of channels) tasks on the thread pool;
// channels never interact, so tasks are independent.
//
// AVX2 paths (picked at run time by use_avx2(), else the portable loops below):
//  * Prefill (L > 1), scan_block_avx2: 8 channels per vector. A block's state and A are
//    transposed once into [channel group][n][8 lanes] scratch, which stays in L1 for the
//    whole sequence, so each (token, n) step is one exp, two FMAs and broadcasts of B and C,
//    with no horizontal sums; the block's 64 channels of a row are 256 contiguous bytes.
//  * Decode (L == 1), step_block_avx2: the state is touched once, so transposing it would
//    cost as much as the step. Vectors run along n of each channel's contiguous state row
//    instead (N = 16 for Jamba: two vectors), with one horizontal sum per channel. A =
//    -exp(A_log) (as many exponentials as the step itself) is computed once per channel
//    block and reused for every sequence of the batch that the task covers.
// Channel and state tails (di or N not a multiple of 8) use masked loads and stores, with
// the masked lanes given x = 0 and A = 0, so they compute harmless values that are never
// stored.
#include "mamba1.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.h"
#include "scratch.h"
#include "ssm_math.h"
#include "vec_math.h"

namespace taipan::cpu {
namespace {

constexpr int64_t kBlock = 64;      // channels per task at most (a row's share: 4 cache lines)
constexpr int64_t kPrefetchRows = 4;  // prefill: rows ahead whose lines are requested early

// Per-thread scratch, kept between calls (sizes are a few KiB: 2*64*N floats).
thread_local ScratchBuffer t_scratch;

// ---- Portable -------------------------------------------------------------------------------

// One sequence b, channels [c0, c1), all L tokens. The state is updated in place (or a zeroed
// scratch copy is used when there is none).
void scan_block_portable(const Mamba1Args& a, int64_t b, int64_t c0, int64_t c1) {
  const int64_t N = a.N, W = c1 - c0;
  float* A = t_scratch.get(size_t(2 * W * N), "mamba1_scan");
  for (int64_t i = 0; i < W * N; i++) A[i] = -std::exp(a.A_log[c0 * N + i]);
  float* h = a.states ? a.states[b] + c0 * N : A + W * N;
  if (!a.states) std::fill(h, h + W * N, 0.f);
  for (int64_t t = 0; t < a.L; t++) {
    const int64_t row = b * a.L + t;
    const float* Bt = a.Bm + row * a.ldb;
    const float* Ct = a.Cm + row * a.ldc;
    for (int64_t c = c0; c < c1; c++) {
      const float delta = softplus_f(a.dt[row * a.lddt + c] + a.dt_bias[c]);
      const float xv = a.x[row * a.ldx + c], dx = delta * xv;
      float* hc = h + (c - c0) * N;
      const float* Ac = A + (c - c0) * N;
      float y = 0.f;
      for (int64_t n = 0; n < N; n++) {
        hc[n] = std::exp(delta * Ac[n]) * hc[n] + dx * Bt[n];
        y += Ct[n] * hc[n];
      }
      a.out[row * a.di + c] = (y + a.D[c] * xv) * silu_scalar(a.z[row * a.ldz + c]);
    }
  }
}

// ---- AVX2 + FMA -----------------------------------------------------------------------------
#ifdef TAIPAN_SSM_MATH_X86

// Lanes [0, n) set, for masked loads and stores of a partial vector (n in 1..8).
__attribute__((target("avx2,fma"))) inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// dst[i] = -exp(src[i]) for i < n.
__attribute__((target("avx2,fma"))) void neg_exp_avx2(const float* src, int64_t n, float* dst) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_xor_ps(sign, exp256(_mm256_loadu_ps(src + i))));
  for (; i < n; i++) dst[i] = -std::exp(src[i]);
}

__attribute__((target("avx2,fma"))) inline void prefetch_row(const float* p, int64_t n) {
  for (int64_t off = 0; off < n; off += 16) _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + n - 1), _MM_HINT_T0);
}

// Prefill: sequence b, channels [c0, c1) (at most kBlock), all L tokens.
__attribute__((target("avx2,fma"))) void scan_block_avx2(const Mamba1Args& a, int64_t b,
                                                         int64_t c0, int64_t c1) {
  const int64_t N = a.N, W = c1 - c0, G = (W + 7) / 8;
  // Scratch: A and h as [G][N][8], then bias and D as [G][8], then A in A_log's layout.
  float* buf = t_scratch.get(size_t(2 * G * N * 8 + 2 * G * 8 + W * N), "mamba1_scan");
  float *At = buf, *Ht = At + G * N * 8, *bias = Ht + G * N * 8, *Dv = bias + G * 8;
  float* Arow = Dv + G * 8;
  neg_exp_avx2(a.A_log + c0 * N, W * N, Arow);
  const float* st = a.states ? a.states[b] + c0 * N : nullptr;
  std::memset(buf, 0, size_t(2 * G * N * 8 + 2 * G * 8) * sizeof(float));  // padding lanes: 0
  for (int64_t w = 0; w < W; w++) {
    const int64_t base = w / 8 * N * 8 + w % 8;
    for (int64_t n = 0; n < N; n++) {
      At[base + n * 8] = Arow[w * N + n];
      if (st) Ht[base + n * 8] = st[w * N + n];
    }
    bias[w] = a.dt_bias[c0 + w];
    Dv[w] = a.D[c0 + w];
  }

  const __m256i tail = lane_mask(W - (G - 1) * 8);  // lanes of the last group
  for (int64_t t = 0; t < a.L; t++) {
    const int64_t row = b * a.L + t;
    if (t + kPrefetchRows < a.L) {
      // Rows lie a whole row of the matrix apart (tens of KiB), which the hardware
      // prefetchers do not follow: ask for the lines of a later token now.
      const int64_t r = row + kPrefetchRows;
      prefetch_row(a.x + r * a.ldx + c0, W);
      prefetch_row(a.dt + r * a.lddt + c0, W);
      prefetch_row(a.z + r * a.ldz + c0, W);
      prefetch_row(a.Bm + r * a.ldb, N);
      prefetch_row(a.Cm + r * a.ldc, N);
    }
    const float* xr = a.x + row * a.ldx + c0;
    const float* dtr = a.dt + row * a.lddt + c0;
    const float* zr = a.z + row * a.ldz + c0;
    const float* Bt = a.Bm + row * a.ldb;
    const float* Ct = a.Cm + row * a.ldc;
    float* yr = a.out + row * a.di + c0;
    for (int64_t g = 0; g < G; g++) {
      const bool full = g * 8 + 8 <= W;
      const __m256 xv = full ? _mm256_loadu_ps(xr + g * 8) : _mm256_maskload_ps(xr + g * 8, tail);
      const __m256 dv = full ? _mm256_loadu_ps(dtr + g * 8) : _mm256_maskload_ps(dtr + g * 8, tail);
      const __m256 zv = full ? _mm256_loadu_ps(zr + g * 8) : _mm256_maskload_ps(zr + g * 8, tail);
      const __m256 delta = softplus256(_mm256_add_ps(dv, _mm256_load_ps(bias + g * 8)));
      const __m256 dx = _mm256_mul_ps(delta, xv);
      const float* ag = At + g * N * 8;
      float* hg = Ht + g * N * 8;
      __m256 y = _mm256_setzero_ps();
      for (int64_t n = 0; n < N; n++) {
        const __m256 dA = exp_neg_avx2(_mm256_mul_ps(delta, _mm256_load_ps(ag + n * 8)));
        const __m256 h = _mm256_fmadd_ps(dA, _mm256_load_ps(hg + n * 8),
                                         _mm256_mul_ps(dx, _mm256_broadcast_ss(Bt + n)));
        _mm256_store_ps(hg + n * 8, h);
        y = _mm256_fmadd_ps(_mm256_broadcast_ss(Ct + n), h, y);
      }
      y = _mm256_fmadd_ps(_mm256_load_ps(Dv + g * 8), xv, y);
      y = _mm256_mul_ps(y, silu256(zv));
      if (full) _mm256_storeu_ps(yr + g * 8, y);
      else _mm256_maskstore_ps(yr + g * 8, tail, y);
    }
  }

  if (a.states) {  // the final state back into [W, N]
    float* so = a.states[b] + c0 * N;
    for (int64_t w = 0; w < W; w++) {
      const int64_t base = w / 8 * N * 8 + w % 8;
      for (int64_t n = 0; n < N; n++) so[w * N + n] = Ht[base + n * 8];
    }
  }
}

// Decode: one token for sequences [b0, b1), channels [c0, c1) (at most kBlock).
__attribute__((target("avx2,fma"))) void step_block_avx2(const Mamba1Args& a, int64_t b0,
                                                         int64_t b1, int64_t c0, int64_t c1) {
  const int64_t N = a.N, W = c1 - c0, N8 = N / 8 * 8;
  float* A = t_scratch.get(size_t(2 * W * N), "mamba1_scan");
  neg_exp_avx2(a.A_log + c0 * N, W * N, A);
  float* zero_state = A + W * N;  // the state of a sequence that brings none
  const __m256i ntail = lane_mask(std::max<int64_t>(N - N8, 1));
  for (int64_t b = b0; b < b1; b++) {
    float* h = a.states ? a.states[b] + c0 * N : zero_state;
    if (!a.states) std::memset(zero_state, 0, size_t(W * N) * sizeof(float));
    const float* Bt = a.Bm + b * a.ldb;
    const float* Ct = a.Cm + b * a.ldc;
    for (int64_t w0 = 0; w0 < W; w0 += 8) {
      const int64_t nv = std::min<int64_t>(8, W - w0), c = c0 + w0;
      const __m256i cm = lane_mask(nv);
      const __m256 xv = _mm256_maskload_ps(a.x + b * a.ldx + c, cm);
      const __m256 dv = _mm256_maskload_ps(a.dt + b * a.lddt + c, cm);
      const __m256 zv = _mm256_maskload_ps(a.z + b * a.ldz + c, cm);
      const __m256 delta = softplus256(_mm256_add_ps(dv, _mm256_maskload_ps(a.dt_bias + c, cm)));
      alignas(32) float d8[8], dx8[8], y8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      _mm256_store_ps(d8, delta);
      _mm256_store_ps(dx8, _mm256_mul_ps(delta, xv));
      for (int64_t j = 0; j < nv; j++) {
        float* hc = h + (w0 + j) * N;
        const float* Ac = A + (w0 + j) * N;
        const __m256 vd = _mm256_set1_ps(d8[j]), vdx = _mm256_set1_ps(dx8[j]);
        __m256 acc = _mm256_setzero_ps();
        int64_t n = 0;
        for (; n < N8; n += 8) {
          const __m256 dA = exp_neg_avx2(_mm256_mul_ps(vd, _mm256_loadu_ps(Ac + n)));
          const __m256 s = _mm256_fmadd_ps(dA, _mm256_loadu_ps(hc + n),
                                           _mm256_mul_ps(vdx, _mm256_loadu_ps(Bt + n)));
          _mm256_storeu_ps(hc + n, s);
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(Ct + n), s, acc);
        }
        if (n < N) {  // masked lanes: A = 0, h = 0, B = C = 0, nothing stored
          const __m256 dA = exp_neg_avx2(_mm256_mul_ps(vd, _mm256_maskload_ps(Ac + n, ntail)));
          const __m256 s = _mm256_fmadd_ps(dA, _mm256_maskload_ps(hc + n, ntail),
                                           _mm256_mul_ps(vdx, _mm256_maskload_ps(Bt + n, ntail)));
          _mm256_maskstore_ps(hc + n, ntail, s);
          acc = _mm256_fmadd_ps(_mm256_maskload_ps(Ct + n, ntail), s, acc);
        }
        y8[j] = hsum256(acc);
      }
      __m256 y = _mm256_fmadd_ps(_mm256_maskload_ps(a.D + c, cm), xv, _mm256_load_ps(y8));
      y = _mm256_mul_ps(y, silu256(zv));
      _mm256_maskstore_ps(a.out + b * a.di + c, cm, y);
    }
  }
}
#endif  // TAIPAN_SSM_MATH_X86

// Channels per task: kBlock, halved (down to 8) while that leaves fewer than two tasks per
// thread, so that small models still use every thread.
int64_t block_width(int64_t di, int64_t tasks_per_block, int threads) {
  int64_t w = kBlock;
  while (w > 8 && tasks_per_block * ((di + w - 1) / w) < 2 * int64_t(threads)) w /= 2;
  return w;
}

}  // namespace

void mamba1_scan(ThreadPool& pool, const Mamba1Args& a) {
  if (a.B <= 0 || a.L <= 0 || a.di <= 0 || a.N <= 0) return;
  const int threads = pool.size();
#ifdef TAIPAN_SSM_MATH_X86
  if (use_avx2() && a.L == 1) {
    // Tasks are (channel block, run of sequences): a task's A is computed once for its run.
    // Runs split the batch only when there are too few channel blocks to go round.
    const int64_t W = block_width(a.di, 1, threads), nblk = (a.di + W - 1) / W;
    const int64_t runs = std::clamp<int64_t>((2 * threads + nblk - 1) / nblk, 1, a.B);
    const int64_t per_run = (a.B + runs - 1) / runs;
    pool.parallel_for(nblk * runs, [&](int64_t begin, int64_t end, int) {
      for (int64_t task = begin; task < end; task++) {
        const int64_t c0 = task / runs * W, b0 = task % runs * per_run;
        if (b0 < a.B) step_block_avx2(a, b0, std::min(a.B, b0 + per_run), c0, std::min(a.di, c0 + W));
      }
    });
    return;
  }
#endif
  const bool avx2 = use_avx2();
  const int64_t W = block_width(a.di, a.B, threads), nblk = (a.di + W - 1) / W;
  pool.parallel_for(a.B * nblk, [&](int64_t begin, int64_t end, int) {
    for (int64_t task = begin; task < end; task++) {
      const int64_t b = task / nblk, c0 = task % nblk * W, c1 = std::min(a.di, c0 + W);
#ifdef TAIPAN_SSM_MATH_X86
      if (avx2) {
        scan_block_avx2(a, b, c0, c1);
        continue;
      }
#endif
      (void)avx2;
      scan_block_portable(a, b, c0, c1);
    }
  });
}

}  // namespace taipan::cpu
