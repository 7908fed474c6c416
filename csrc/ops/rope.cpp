// rope: rotary position embedding in place (rotate-half convention, absolute positions).
//
// CUDA: x bf16 (an activation; rows may be strided), start, index and count i32 on the
// device. The kernel reads start, index and count itself (no host step); the frequency table
// theta^(-2i/head_dim) is computed here in double exactly as the CPU kernel computes it and
// copied to the device at plan time, held by the Work.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// The checks both backends share; `act` is x's dtype (f32 on the CPU, bf16 on CUDA).
struct RopeShape {
  const Tensor* x;
  int64_t R, cols, B, hd, L;
  double theta;
  const Tensor *index, *count;
};

RopeShape check_rope(const OpArgs& a, DType act) {
  RopeShape s;
  s.x = &a.expect("x", {act}, {-1, -1});
  s.R = s.x->shape[0], s.cols = s.x->shape[1];
  const Tensor& start = a.expect("start", {DType::I32}, {-1});
  s.B = start.shape[0];
  s.hd = a.integer("head_dim");
  if (s.hd < 2 || s.hd % 2 != 0 || s.cols % s.hd != 0)
    a.fail("'head_dim' (" + std::to_string(s.hd) + ") must be even and divide the " + std::to_string(s.cols) + " columns of x");
  s.L = a.integer("length");
  if (s.L < 1) a.fail("'length' must be at least 1, got " + std::to_string(s.L));
  s.theta = a.number("theta", 10000.0);
  if (s.theta <= 0) a.fail("'theta' must be positive");
  s.index = a.expect_optional("index", {DType::I32}, {s.R});
  // Without an index row r is chunk row r, which must have a sequence in start.
  if (!s.index && s.R > s.B * s.L)
    a.fail("x has " + std::to_string(s.R) + " rows, more than the " + std::to_string(s.B) + " x " + std::to_string(s.L) + " tokens of the chunk");
  s.count = a.expect_optional("count", {DType::I32}, {1});
  return s;
}

Work plan_rope_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "x", {DType::BF16}, cuda_ops::kActivation);
  RopeShape s = check_rope(a, DType::BF16);
  if (s.hd > cuda::kRopeMaxHeadDim)
    a.fail("'head_dim' (" + std::to_string(s.hd) + ") exceeds " + std::to_string(cuda::kRopeMaxHeadDim) + " on the CUDA backend");
  // The same frequencies as cpu::rope, bit for bit.
  const int64_t half = s.hd / 2;
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; i++) freq[i] = std::pow(s.theta, -2.0 * double(i) / double(s.hd));
  std::shared_ptr<Storage> table = cuda_ops::device_buffer(freq.size() * sizeof(double));
  cuda::copy_to_device(table->data, freq.data(), freq.size() * sizeof(double), nullptr);
  uint16_t* xp = cuda_ops::bf16_out(*s.x);
  const int64_t R = s.R, cols = s.cols, hd = s.hd, ldx = s.x->ld, B = s.B, L = s.L;
  const int32_t* ip = s.index ? s.index->ptr<int32_t>() : nullptr;
  const int32_t* cp = s.count ? s.count->ptr<int32_t>() : nullptr;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();
  return cuda_ops::launches([=](void* st) {
    cuda::rope(R, cols, hd, xp, ldx, ip, cp, sp, B, L, static_cast<const double*>(table->data), st);
  });
}

// x [R, heads*head_dim] (rows may be strided), in place. Row r is chunk row index[r] (or r
// without index) of B = len(start) sequences of `length` tokens; its position is
// start[row / length] + row % length. Optional count [1]: only rows r < count (read when the
// work runs: it comes from an earlier op). Params head_dim, length, theta (default 10000).
Work plan_rope(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_rope_cuda(a);
  RopeShape s = check_rope(a, DType::F32);
  float* xp = s.x->ptr<float>();
  const int64_t R = s.R, cols = s.cols, hd = s.hd, ldx = s.x->ld, B = s.B, L = s.L;
  const double theta = s.theta;
  const int32_t* ip = s.index ? s.index->ptr<int32_t>() : nullptr;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();
  const int32_t* cp = s.count ? s.count->ptr<int32_t>() : nullptr;
  return [=](ExecContext& c) {
    int64_t rows = cp ? std::clamp<int64_t>(*cp, 0, R) : R;
    cpu::rope(*c.pool, rows, cols, hd, xp, ldx, ip, sp, B, L, theta);
  };
}

OpRegistrar reg({"rope", "rotary position embedding in place at each row's absolute position", plan_rope});

}  // namespace
}  // namespace taipan
