// rmsnorm (optionally fused with the residual add) and gated_rmsnorm.
#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// CUDA: residual fp32 [M, d], delta bf16 [M, d] (optional), weight fp32 [d], out bf16 [M, d]
// (the next op's input), all contiguous. out may also be fp32 when there is no delta (the
// plain norm, e.g. for a caller that wants fp32 features).
Work plan_rmsnorm_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "residual", {DType::F32}, cuda_ops::kResidual);
  cuda_ops::dtype(a, "delta", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "weight", {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "out", {DType::BF16, DType::F32}, cuda_ops::kActivation);
  const Tensor& r = a.expect("residual", {DType::F32}, {-1, -1});
  int64_t M = r.shape[0], d = r.shape[1];
  const Tensor* delta = a.expect_optional("delta", {DType::BF16}, {M, d});
  const Tensor& w = a.expect("weight", {DType::F32}, {d});
  const Tensor& out = a.expect("out", {DType::BF16, DType::F32}, {M, d});
  for (const char* n : {"residual", "weight", "out"}) a.expect_contiguous(n);
  if (delta) {
    a.expect_contiguous("delta");
    a.expect_no_overlap("delta", "residual");
    a.expect_no_overlap("out", "delta");
  }
  a.expect_no_overlap("out", "residual");
  if (out.dtype == DType::F32 && delta)
    a.fail("on the CUDA backend the residual add ('delta') writes a bf16 'out'; an f32 'out' needs no 'delta'");
  float eps = float(a.number("eps", 1e-5));
  float* rp = r.ptr<float>();
  const uint16_t* dp = delta ? cuda_ops::bf16(*delta) : nullptr;
  const float* wp = w.ptr<float>();
  void* op = out.data();
  bool f32_out = out.dtype == DType::F32;
  return cuda_ops::launches([=](void* s) {
    if (f32_out) cuda::rmsnorm_f32(M, d, rp, wp, eps, static_cast<float*>(op), s);
    else cuda::rmsnorm(M, d, rp, dp, wp, eps, static_cast<uint16_t*>(op), s);
  });
}

// CUDA: x bf16 [M, d] contiguous, z bf16 [M, d] (rows may be strided), weight fp32 [d],
// out bf16 [M, d] contiguous (may be x itself).
Work plan_gated_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "x", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "z", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "weight", {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "out", {DType::BF16}, cuda_ops::kActivation);
  const Tensor& x = a.expect("x", {DType::BF16}, {-1, -1});
  int64_t M = x.shape[0], d = x.shape[1];
  const Tensor& z = a.expect("z", {DType::BF16}, {M, d});
  const Tensor& w = a.expect("weight", {DType::F32}, {d});
  const Tensor& out = a.expect("out", {DType::BF16}, {M, d});
  for (const char* n : {"x", "weight", "out"}) a.expect_contiguous(n);
  int64_t G = a.integer("groups", 1);
  if (G < 1 || d % G != 0) a.fail("'groups' (" + std::to_string(G) + ") must divide the width " + std::to_string(d));
  if (G > 65535) a.fail("'groups' (" + std::to_string(G) + ") must be at most 65535 on the CUDA backend");
  a.expect_no_overlap("out", "z");
  cuda_ops::expect_same_or_disjoint(a, "out", "x");
  float eps = float(a.number("eps", 1e-5));
  const uint16_t* xp = cuda_ops::bf16(x);
  const uint16_t* zp = cuda_ops::bf16(z);
  int64_t ldz = z.ld;
  const float* wp = w.ptr<float>();
  uint16_t* op = cuda_ops::bf16_out(out);
  return cuda_ops::launches([=](void* s) { cuda::gated_rmsnorm(M, d, G, xp, zp, ldz, wp, eps, op, s); });
}

// rmsnorm: if delta is given, residual += delta first (in place); out = rms(residual) * weight.
Work plan_rmsnorm(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_rmsnorm_cuda(a);
  const Tensor& r = a.expect("residual", {DType::F32}, {-1, -1});
  int64_t M = r.shape[0], d = r.shape[1];
  a.expect_optional("delta", {DType::F32}, {M, d});
  a.expect("weight", {DType::F32}, {d});
  a.expect("out", {DType::F32}, {M, d});
  for (const char* n : {"residual", "weight", "out"}) a.expect_contiguous(n);
  if (a.optional("delta")) {
    a.expect_contiguous("delta");
    a.expect_no_overlap("delta", "residual");
  }
  a.expect_no_overlap("out", "residual");
  float eps = float(a.number("eps", 1e-5));
  float* rp = r.ptr<float>();
  const float* dp = a.optional("delta") ? a.tensor("delta").ptr<float>() : nullptr;
  const float* wp = a.tensor("weight").ptr<float>();
  float* op = a.tensor("out").ptr<float>();
  return [=](ExecContext& c) { cpu::rmsnorm(*c.pool, M, d, rp, dp, wp, eps, op); };
}

// gated_rmsnorm: out = rms_g(x * silu(z)) * weight over `groups` groups of channels.
Work plan_gated(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_gated_cuda(a);
  const Tensor& x = a.expect("x", {DType::F32}, {-1, -1});
  int64_t M = x.shape[0], d = x.shape[1];
  const Tensor& z = a.expect("z", {DType::F32}, {M, d});
  a.expect("weight", {DType::F32}, {d});
  a.expect("out", {DType::F32}, {M, d});
  for (const char* n : {"x", "weight", "out"}) a.expect_contiguous(n);
  int64_t G = a.integer("groups", 1);
  if (G < 1 || d % G != 0) a.fail("'groups' (" + std::to_string(G) + ") must divide the width " + std::to_string(d));
  float eps = float(a.number("eps", 1e-5));
  const float* xp = x.ptr<float>();
  const float* zp = z.ptr<float>();
  int64_t ldz = z.ld;
  const float* wp = a.tensor("weight").ptr<float>();
  float* op = a.tensor("out").ptr<float>();
  return [=](ExecContext& c) { cpu::gated_rmsnorm(*c.pool, M, d, G, xp, zp, ldz, wp, eps, op); };
}

OpRegistrar r1({"rmsnorm", "residual += delta (optional); out = rms(residual) * weight", plan_rmsnorm});
OpRegistrar r2({"gated_rmsnorm", "out = rms_group(x * silu(z)) * weight", plan_gated});

}  // namespace
}  // namespace taipan
