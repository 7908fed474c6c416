// CPU kernels of the mixture-of-experts FFN (Jamba baseline, MODEL.md section 7).
//
// The router's softmax and top-k turn each row into per-expert lists of rows (compacted,
// increasing); each expert then runs its MLP on just its rows (gather_rows, linear, swiglu,
// linear with a run-time count) and moe_scatter adds the weighted result back. Arguments were
// validated by the op layer (csrc/ops/moe.cpp); counts read at run time are already clamped
// there, but index values come from data and are bounds-checked here.
#pragma once
#include <cstdint>

#include "thread_pool.h"

namespace taipan::cpu {

// For each row m < M (logits at logits + m*ld, E values): p = softmax in fp32, max-subtracted;
// the top_k experts by p (ties toward the lower expert index) get m appended to their list:
//   index[e*M + count[e]] = m, weight[e*M + count[e]] = p[e], count[e]++.
// Lists hold rows in increasing order; entries past count[e] are not written.
// A row with no defined softmax (a NaN or +Infinity logit, or every logit -Infinity) has
// p = NaN for every expert and goes to experts 0 .. top_k-1 with weight NaN, so the NaN
// reaches the FFN output instead of vanishing.
void moe_route(ThreadPool& pool, int64_t M, int64_t E, int64_t top_k, const float* logits,
               int64_t ld, int32_t* index, float* weight, int32_t* count);

// out[k] = x[index[k]] for k < n (n already clamped to [0, M]); x row i at x + i*ldx, out row
// k at out + k*ldo, d values each. An index outside [0, M) gives a row of zeros.
void gather_rows(ThreadPool& pool, int64_t M, int64_t d, int64_t n, const float* x, int64_t ldx,
                 const int32_t* index, float* out, int64_t ldo);

// r[index[k]] += weight[k] * y[k] for k < n (n already clamped to [0, M]), in increasing k;
// r row i at r + i*ldr, y row k at y + k*ldy. An index outside [0, M) is skipped. Repeated
// indices are allowed (they accumulate in order): threads split the columns, not the rows.
void moe_scatter(ThreadPool& pool, int64_t M, int64_t d, int64_t n, float* r, int64_t ldr,
                 const float* y, int64_t ldy, const int32_t* index, const float* weight);

}  // namespace taipan::cpu
