// Elementwise ops (SiLU, softplus, add, SwiGLU) and copy.
#include <algorithm>
#include <cstring>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// softplus and add have no CUDA kernel: the Mamba-2 path does not use them (softplus is fused
// into the SSD kernels; add into rmsnorm).
void expect_cpu(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
}

// CUDA silu: x, out bf16, same shape, contiguous (out may be x).
Work plan_silu_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "x", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "out", {DType::BF16}, cuda_ops::kActivation);
  const Tensor& x = a.expect("x", {DType::BF16}, std::vector<int64_t>(a.tensor("x").shape.size(), -1));
  const Tensor& out = a.expect("out", {DType::BF16}, x.shape);
  a.expect_contiguous("x");
  a.expect_contiguous("out");
  cuda_ops::expect_same_or_disjoint(a, "out", "x");
  const uint16_t* xp = cuda_ops::bf16(x);
  uint16_t* op = cuda_ops::bf16_out(out);
  int64_t n = x.numel();
  return cuda_ops::launches([=](void* s) { cuda::silu_bf16(xp, op, n, s); });
}

// CUDA copy: device to device, any dtype, either side may be a strided view.
Work plan_copy_cuda(const OpArgs& a) {
  const Tensor& src = a.tensor("src");
  const Tensor& dst = a.expect("dst", {src.dtype}, src.shape);
  a.expect_no_overlap("src", "dst");
  const void* sp = src.data();
  void* dp = dst.data();
  size_t esz = dtype_size(src.dtype);
  size_t rows = size_t(src.rows()), row_bytes = size_t(src.cols()) * esz;
  size_t spitch = size_t(src.ld) * esz, dpitch = size_t(dst.ld) * esz;
  bool flat = src.contiguous() && dst.contiguous();
  return cuda_ops::launches([=](void* s) {
    if (flat) cuda::copy_device_to_device(dp, sp, rows * row_bytes, s);
    else cuda::copy_device_to_device_2d(dp, dpitch, sp, spitch, row_bytes, rows, s);
  });
}


// swiglu's shapes, the same on both devices (only the dtype differs): h [M, 2F] (rows may be
// strided), out [M, F] contiguous, optional count i32 [1].
struct SwigluArgs {
  const Tensor& h;
  const Tensor& out;
  const int32_t* count;
  int64_t M, F;
};

SwigluArgs check_swiglu(const OpArgs& a, DType dt) {
  const Tensor& out = a.expect("out", {dt}, {-1, -1});
  a.expect_contiguous("out");
  int64_t M = out.shape[0], F = out.shape[1];
  const Tensor& h = a.expect("h", {dt}, {M, 2 * F});
  const Tensor* count = a.expect_optional("count", {DType::I32}, {1});
  a.expect_no_overlap("out", "h");
  a.expect_no_overlap("out", "count");
  return {h, out, count ? count->ptr<int32_t>() : nullptr, M, F};
}

// CUDA swiglu: bf16 h and out; the count lives on the device and is read by the kernel (no host
// step: rows at or past count return at once), so rows past it are left as they were, as on
// the CPU.
Work plan_swiglu_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "h", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "out", {DType::BF16}, cuda_ops::kActivation);
  SwigluArgs w = check_swiglu(a, DType::BF16);
  const uint16_t* hp = cuda_ops::bf16(w.h);
  int64_t ldh = w.h.ld, M = w.M, F = w.F;
  uint16_t* op = cuda_ops::bf16_out(w.out);
  const int32_t* cp = w.count;
  return cuda_ops::launches([=](void* s) { cuda::swiglu(M, F, hp, ldh, op, cp, s); });
}

// x -> out, same shape, contiguous fp32.
template <void (*Kernel)(cpu::ThreadPool&, int64_t, const float*, float*)>
Work plan_unary(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& x = a.expect("x", {DType::F32}, std::vector<int64_t>(a.tensor("x").shape.size(), -1));
  const Tensor& out = a.expect("out", {DType::F32}, x.shape);
  a.expect_contiguous("x");
  a.expect_contiguous("out");
  const float* xp = x.ptr<float>();
  float* op = out.ptr<float>();
  int64_t n = x.numel();
  return [=](ExecContext& c) { Kernel(*c.pool, n, xp, op); };
}

Work plan_add(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& x = a.tensor("a");
  std::vector<int64_t> any(x.shape.size(), -1);
  a.expect("a", {DType::F32}, any);
  a.expect("b", {DType::F32}, x.shape);
  a.expect("out", {DType::F32}, x.shape);
  for (const char* n : {"a", "b", "out"}) a.expect_contiguous(n);
  const float* ap = x.ptr<float>();
  const float* bp = a.tensor("b").ptr<float>();
  float* op = a.tensor("out").ptr<float>();
  int64_t n = x.numel();
  return [=](ExecContext& c) { cpu::add(*c.pool, n, ap, bp, op); };
}

// copy: src -> dst of the same dtype and shape (either may be a strided view).
Work plan_copy(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_copy_cuda(a);
  const Tensor& src = a.tensor("src");
  const Tensor& dst = a.expect("dst", {src.dtype}, src.shape);
  a.expect_no_overlap("src", "dst");
  const char* sp = static_cast<const char*>(src.data());
  char* dp = static_cast<char*>(dst.data());
  int64_t rows = src.rows(), sld = src.ld, dld = dst.ld;
  size_t esz = dtype_size(src.dtype), row_bytes = size_t(src.cols()) * esz;
  return [=](ExecContext&) {
    for (int64_t r = 0; r < rows; r++) std::memcpy(dp + size_t(r * dld) * esz, sp + size_t(r * sld) * esz, row_bytes);
  };
}

// swiglu: h [M, 2F] (rows may be strided; up = first F columns, gate = last F, as fc1's rows
// are laid out) -> out [M, F] contiguous, out = up * silu(gate).
// Optional `count` (i32 [1]): only rows [0, min(count, M)) are computed, the rest of out is
// left as it was. Like linear's count, it is written by an earlier op on the stream (an MoE
// expert's row count from moe_route), so it is read when the work runs.
Work plan_swiglu(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_swiglu_cuda(a);
  SwigluArgs w = check_swiglu(a, DType::F32);
  const float* hp = w.h.ptr<float>();
  int64_t ldh = w.h.ld, M = w.M, F = w.F;
  float* op = w.out.ptr<float>();
  const int32_t* cp = w.count;
  return [=](ExecContext& c) {
    int64_t rows = cp ? std::clamp<int64_t>(*cp, 0, M) : M;
    cpu::swiglu(*c.pool, rows, F, hp, ldh, op);
  };
}

Work plan_silu(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_silu_cuda(a);
  return plan_unary<cpu::silu>(a);
}

OpRegistrar r1({"silu", "out = x * sigmoid(x)", plan_silu});
OpRegistrar r2({"softplus", "out = log(1 + exp(x)), identity above 20", plan_unary<cpu::softplus>});
OpRegistrar r3({"add", "out = a + b", plan_add});
OpRegistrar r4({"copy", "dst = src", plan_copy});
OpRegistrar r5({"swiglu", "out = h[:, :F] * silu(h[:, F:]), optionally the first count rows only", plan_swiglu});

}  // namespace
}  // namespace taipan
