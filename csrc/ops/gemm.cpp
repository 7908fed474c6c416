// linear: out = x @ weight^T, the nn.Linear of every projection and of the LM head.
#include <algorithm>

#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// Optional `count` (i32 [1]): only rows [0, min(count, M)) are computed, the rest of out is
// left as it was. It holds how many rows an earlier op on the stream compacted to the top
// (the SAL's selected tokens), so it is read when the work runs, not now.
Work plan_linear(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
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
