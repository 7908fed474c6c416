// rmsnorm (optionally fused with the residual add) and gated_rmsnorm.
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// rmsnorm: if delta is given, residual += delta first (in place); out = rms(residual) * weight.
Work plan_rmsnorm(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
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
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
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
