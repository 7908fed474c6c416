// linear: out = x @ weight^T, the nn.Linear of every projection and of the LM head.
#include <algorithm>
#include <cstdint>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// CUDA: weight bf16 [N, K] contiguous, x bf16 [M, K] (rows may be strided), out fp32 or bf16
// [M, N] (rows may be strided). `count` is honoured by the kernels, which read it from the
// device (cuda::gemm_count): no host step, so the Work can be captured into a CUDA graph.
Work plan_linear_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "weight", {DType::BF16}, cuda_ops::kMatrix);
  cuda_ops::dtype(a, "x", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "out", {DType::F32, DType::BF16}, "the output is fp32 (e.g. logits) or bf16 (an activation)");
  const Tensor& w = a.expect("weight", {DType::BF16}, {-1, -1});
  a.expect_contiguous("weight");
  int64_t N = w.shape[0], K = w.shape[1];
  const Tensor& x = a.expect("x", {DType::BF16}, {-1, K});
  int64_t M = x.shape[0];
  const Tensor& out = a.expect("out", {DType::F32, DType::BF16}, {M, N});
  const Tensor* count = a.expect_optional("count", {DType::I32}, {1});
  a.expect_no_overlap("out", "x");
  a.expect_no_overlap("out", "weight");
  constexpr int64_t kMax = int64_t(1) << 31;
  if (M >= kMax || N >= kMax || K >= kMax) a.fail("dimensions must be below 2^31 on the CUDA backend");
  // Unaligned operands take the general kernel, whose grid limits M (cuda/kernels.h).
  const bool fast = K % 8 == 0 && x.ld % 8 == 0 && reinterpret_cast<uintptr_t>(x.data()) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(w.data()) % 16 == 0;
  if (!fast && M > 1048560)
    a.fail("x has " + std::to_string(M) + " rows; with K % 8 != 0 or a misaligned x the CUDA kernel takes at most 1048560");
  // With a count the launch covers all M rows (the count is only known on the device), and
  // the tensor-core grid holds 65535 tiles of 128 rows.
  if (count && M > 65535 * 128)
    a.fail("x has " + std::to_string(M) + " rows; with 'count' the CUDA kernel takes at most " + std::to_string(65535 * 128));
  const uint16_t* xp = cuda_ops::bf16(x);
  const uint16_t* wp = cuda_ops::bf16(w);
  int64_t ldx = x.ld, ldy = out.ld;
  void* yp = out.data();
  DType ydt = out.dtype;
  const int32_t* cp = count ? count->ptr<int32_t>() : nullptr;
  return cuda_ops::launches([=](void* s) {
    if (M == 0) return;
    if (cp) cuda::gemm_count(M, N, K, xp, ldx, wp, yp, ldy, ydt, false, cp, s);
    else cuda::gemm(M, N, K, xp, ldx, wp, yp, ldy, ydt, false, s);
  });
}

// Optional `count` (i32 [1]): only rows [0, min(count, M)) are computed, the rest of out is
// left as it was. It holds how many rows an earlier op on the stream compacted to the top
// (the SAL's selected tokens), so it is read when the work runs, not now.
Work plan_linear(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_linear_cuda(a);
  const Tensor& w = a.expect("weight", {DType::F32, DType::F16, DType::BF16}, {-1, -1});
  a.expect_contiguous("weight");
  int64_t N = w.shape[0], K = w.shape[1];
  const Tensor& x = a.expect("x", {DType::F32}, {-1, K});
  int64_t M = x.shape[0];
  const Tensor& out = a.expect("out", {DType::F32}, {M, N});
  const Tensor* count = a.expect_optional("count", {DType::I32}, {1});
  a.expect_no_overlap("out", "x");
  const float* xp = x.ptr<float>();
  int64_t ldx = x.ld, ldy = out.ld;
  const void* wp = w.data();
  DType wdt = w.dtype;
  float* yp = out.ptr<float>();
  const int32_t* cp = count ? count->ptr<int32_t>() : nullptr;
  return [=](ExecContext& c) {
    int64_t rows = cp ? std::clamp<int64_t>(*cp, 0, M) : M;
    if (rows > 0) cpu::gemm(*c.pool, rows, N, K, xp, ldx, wp, wdt, yp, ldy);
  };
}

OpRegistrar reg({"linear", "out[M, N] = x[M, K] @ weight[N, K]^T (fp32 accumulation), optionally the first count rows only", plan_linear});

}  // namespace
}  // namespace taipan
