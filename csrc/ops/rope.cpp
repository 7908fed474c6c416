// rope: rotary position embedding in place (rotate-half convention, absolute positions).
#include <algorithm>

#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// x [R, heads*head_dim] (rows may be strided), in place. Row r is chunk row index[r] (or r
// without index) of B = len(start) sequences of `length` tokens; its position is
// start[row / length] + row % length. Optional count [1]: only rows r < count (read when the
// work runs: it comes from an earlier op). Params head_dim, length, theta (default 10000).
Work plan_rope(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
  const Tensor& x = a.expect("x", {DType::F32}, {-1, -1});
  int64_t R = x.shape[0], cols = x.shape[1];
  const Tensor& start = a.expect("start", {DType::I32}, {-1});
  int64_t B = start.shape[0];
  int64_t hd = a.integer("head_dim");
  if (hd < 2 || hd % 2 != 0 || cols % hd != 0)
    a.fail("'head_dim' (" + std::to_string(hd) + ") must be even and divide the " + std::to_string(cols) + " columns of x");
  int64_t L = a.integer("length");
  if (L < 1) a.fail("'length' must be at least 1, got " + std::to_string(L));
  double theta = a.number("theta", 10000.0);
  if (theta <= 0) a.fail("'theta' must be positive");
  const Tensor* index = a.expect_optional("index", {DType::I32}, {R});
  // Without an index row r is chunk row r, which must have a sequence in start.
  if (!index && R > B * L)
    a.fail("x has " + std::to_string(R) + " rows, more than the " + std::to_string(B) + " x " + std::to_string(L) + " tokens of the chunk");
  const Tensor* count = a.expect_optional("count", {DType::I32}, {1});
  float* xp = x.ptr<float>();
  int64_t ldx = x.ld;
  const int32_t* ip = index ? index->ptr<int32_t>() : nullptr;
  const int32_t* sp = start.ptr<int32_t>();
  const int32_t* cp = count ? count->ptr<int32_t>() : nullptr;
  return [=](ExecContext& c) {
    int64_t rows = cp ? std::clamp<int64_t>(*cp, 0, R) : R;
    cpu::rope(*c.pool, rows, cols, hd, xp, ldx, ip, sp, B, L, theta);
  };
}

OpRegistrar reg({"rope", "rotary position embedding in place at each row's absolute position", plan_rope});

}  // namespace
}  // namespace taipan
