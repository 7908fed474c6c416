// The Mamba-1 selective scan (Jamba's mixer), gated by silu(z); prefill and decode alike.
//
// Per sequence b, channel c and state index n, token by token:
//   delta = softplus(dt + dt_bias_c)  (identity above 20),  A_c,n = -exp(A_log_c,n)
//   h_c,n = exp(delta A_c,n) h_c,n + delta B_n x_c
//   out_c = bf16((sum_n C_n h_c,n + D_c x_c) silu(z_c))
// Activations bf16 in memory, everything else (h, A, sums) fp32.
//
// Work split: one thread per (sequence, channel) walks the tokens in order with the channel's
// N state values and decay rates in registers. Threads of a block are consecutive channels,
// so the loads of x, dt, z and the store of out coalesce across a warp, and the loads of a
// token's B and C are the same address for the whole warp (one broadcast each). N is a
// template bound: 4, 8 or 16 (fully unrolled, registers; Jamba has N = 16), or up to
// kMaxState with a run-time loop over arrays that live in local memory (slow, but any model
// with N <= kMaxState runs). grid = (ceil(di / kThreads), B).
//
// Prefill parallelism is only B * di threads, each walking its L tokens; a chunked form
// would expose more, but the recurrence is cheap per token (N exponentials) and this is the
// simple, exact baseline. Decode (L = 1) is bound by reading and writing the state once.
// The state is either one [B, di, N] tensor or, for per-sequence allocations, a DEVICE table
// of B pointers (mamba1_scan_seqs), as ssd_step_seqs takes it.
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

constexpr int kThreads = 64;         // channels per block (di = 8192 gives 128 blocks per sequence)
constexpr int64_t kMaxState = kMamba1MaxState;  // the run-time-loop variant's local arrays

template <int NMAX>
__global__ void __launch_bounds__(kThreads)
    mamba1_scan_kernel(int64_t L, int64_t di, int64_t N, const uint16_t* __restrict__ x,
                       int64_t ldx, const uint16_t* __restrict__ dt, int64_t lddt,
                       const uint16_t* __restrict__ Bm, int64_t ldb,
                       const uint16_t* __restrict__ Cm, int64_t ldc,
                       const uint16_t* __restrict__ z, int64_t ldz,
                       const float* __restrict__ dt_bias, const float* __restrict__ A_log,
                       const float* __restrict__ D, float* state, float* const* states,
                       uint16_t* __restrict__ out) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= di) return;
  const int64_t b = blockIdx.y;
  // This channel's state row: a per-sequence allocation, one [B, di, N] tensor, or none.
  float* st = states ? states[b] : state ? state + b * di * N : nullptr;
  if (st) st += c * N;
  constexpr bool kUnrolled = NMAX <= 16;
  const int64_t n_end = kUnrolled ? NMAX : N;  // loop bound; unrolled loops test n < N inside

  float h[NMAX], A[NMAX];
#pragma unroll
  for (int64_t n = 0; n < n_end; n++) {
    if (n < N) {
      A[n] = -expf(A_log[c * N + n]);
      h[n] = st ? st[n] : 0.0f;
    }
  }
  const float bias = dt_bias[c], Dc = D[c];
  for (int64_t t = 0; t < L; t++) {
    const int64_t row = b * L + t;
    const float delta = softplus_f(bf16_to_float(dt[row * lddt + c]) + bias);
    const float xv = bf16_to_float(x[row * ldx + c]);
    const float dx = delta * xv;
    const uint16_t* Bt = Bm + row * ldb;
    const uint16_t* Ct = Cm + row * ldc;
    float y = 0.0f;
#pragma unroll
    for (int64_t n = 0; n < n_end; n++) {
      if (n < N) {
        h[n] = fmaf(expf(delta * A[n]), h[n], dx * bf16_to_float(Bt[n]));
        y = fmaf(bf16_to_float(Ct[n]), h[n], y);
      }
    }
    y = fmaf(Dc, xv, y) * silu_f(bf16_to_float(z[row * ldz + c]));
    out[row * di + c] = float_to_bf16(y);
  }
  if (st) {
#pragma unroll
    for (int64_t n = 0; n < n_end; n++)
      if (n < N) st[n] = h[n];
  }
}

void launch(const char* fn, const Mamba1Dims& d, const uint16_t* x, int64_t ldx,
            const uint16_t* dt, int64_t lddt, const uint16_t* Bm, int64_t ldb, const uint16_t* Cm,
            int64_t ldc, const uint16_t* z, int64_t ldz, const float* dt_bias, const float* A_log,
            const float* D, float* state, float* const* states, uint16_t* out, void* stream) {
  if (d.B < 0 || d.L < 0 || d.di < 0 || d.N <= 0)
    throw_invalid(std::string(fn) + ": dimensions must be positive");
  if (d.N > kMaxState)
    throw_invalid(std::string(fn) + ": state size N = " + std::to_string(d.N) + " exceeds " +
                  std::to_string(kMaxState));
  if (d.B > 65535) throw_invalid(std::string(fn) + ": at most 65535 sequences per call");
  if (d.B == 0 || d.L == 0 || d.di == 0) return;
  const dim3 grid{unsigned(ceil_div(d.di, kThreads)), unsigned(d.B)};
  cudaStream_t s = as_stream(stream);
  if (d.N <= 4)
    mamba1_scan_kernel<4><<<grid, kThreads, 0, s>>>(d.L, d.di, d.N, x, ldx, dt, lddt, Bm, ldb, Cm,
                                                    ldc, z, ldz, dt_bias, A_log, D, state, states, out);
  else if (d.N <= 8)
    mamba1_scan_kernel<8><<<grid, kThreads, 0, s>>>(d.L, d.di, d.N, x, ldx, dt, lddt, Bm, ldb, Cm,
                                                    ldc, z, ldz, dt_bias, A_log, D, state, states, out);
  else if (d.N <= 16)
    mamba1_scan_kernel<16><<<grid, kThreads, 0, s>>>(d.L, d.di, d.N, x, ldx, dt, lddt, Bm, ldb, Cm,
                                                     ldc, z, ldz, dt_bias, A_log, D, state, states, out);
  else
    mamba1_scan_kernel<kMaxState><<<grid, kThreads, 0, s>>>(d.L, d.di, d.N, x, ldx, dt, lddt, Bm, ldb,
                                                            Cm, ldc, z, ldz, dt_bias, A_log, D, state,
                                                            states, out);
  check_launch("mamba1_scan_kernel");
}

}  // namespace

void mamba1_scan(const Mamba1Dims& d, const uint16_t* x, int64_t ldx, const uint16_t* dt,
                 int64_t lddt, const uint16_t* Bm, int64_t ldb, const uint16_t* Cm, int64_t ldc,
                 const uint16_t* z, int64_t ldz, const float* dt_bias, const float* A_log,
                 const float* D, float* state, uint16_t* out, void* stream) {
  launch("mamba1_scan", d, x, ldx, dt, lddt, Bm, ldb, Cm, ldc, z, ldz, dt_bias, A_log, D, state,
         nullptr, out, stream);
}

void mamba1_scan_seqs(const Mamba1Dims& d, const uint16_t* x, int64_t ldx, const uint16_t* dt,
                      int64_t lddt, const uint16_t* Bm, int64_t ldb, const uint16_t* Cm,
                      int64_t ldc, const uint16_t* z, int64_t ldz, const float* dt_bias,
                      const float* A_log, const float* D, float* const* states, uint16_t* out,
                      void* stream) {
  if (d.B > 0 && !states) throw_invalid("mamba1_scan_seqs: the state table is null");
  launch("mamba1_scan_seqs", d, x, ldx, dt, lddt, Bm, ldb, Cm, ldc, z, ldz, dt_bias, A_log, D,
         nullptr, states, out, stream);
}

}  // namespace taipan::cuda
