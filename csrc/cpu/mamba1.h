// The Mamba-1 selective scan on the CPU (Jamba's mixer), fp32. See mamba1.cpp.
//
// Like the kernels of kernels.h, this assumes its arguments were validated by the op layer
// (csrc/ops/mamba1.cpp) and only computes.
#pragma once
#include <cstdint>

#include "thread_pool.h"

namespace taipan::cpu {

struct Mamba1Args {
  int64_t B;   // sequences
  int64_t L;   // tokens per sequence (>= 1); token (b, t) is row b*L + t
  int64_t di;  // channels (d_inner)
  int64_t N;   // state size per channel
  // Activations, di values per row at p + row*ld (B and C: N values per row).
  const float* x;
  int64_t ldx;
  const float* dt;  // dt_proj's output, before dt_bias
  int64_t lddt;
  const float* Bm;
  int64_t ldb;
  const float* Cm;
  int64_t ldc;
  const float* z;  // the gate
  int64_t ldz;
  // Parameters: dt_bias [di], A_log [di, N], D [di], contiguous.
  const float* dt_bias;
  const float* A_log;
  const float* D;
  float* out;            // [B*L, di] contiguous, not overlapping anything else
  float* const* states;  // B pointers to [di, N] states updated in place, or null: start from
                         // zeros and discard the final state
};

// For each sequence b, channel c, state n, token t in order:
//   delta = softplus(dt[t,c] + dt_bias[c])    (identity above 20)
//   h[c,n] = exp(delta * -exp(A_log[c,n])) h[c,n] + delta B[t,n] x[t,c]
//   out[t,c] = (sum_n C[t,n] h[c,n] + D[c] x[t,c]) * silu(z[t,c])
void mamba1_scan(ThreadPool& pool, const Mamba1Args& a);

}  // namespace taipan::cpu
