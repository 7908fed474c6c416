// conv1d_silu (prefill) and conv1d_update (decode): Mamba-2's causal depthwise convolution.
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

struct ConvArgs {
  int64_t B, L, C, K;
  const float *x, *w, *bias;
  int64_t ldx;
  float* out;
  StateArg state;
};

ConvArgs check_conv(const OpArgs& a, bool update) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
  ConvArgs c;
  const Tensor& w = a.expect("weight", {DType::F32}, {-1, -1});
  a.expect_contiguous("weight");
  c.C = w.shape[0];
  c.K = w.shape[1];
  if (c.K < 1 || c.K > 16) a.fail("kernel width " + std::to_string(c.K) + " is outside [1, 16]");
  const Tensor& x = a.expect("x", {DType::F32}, {-1, c.C});
  c.B = a.integer("batch", update ? x.shape[0] : 1);
  if (c.B < 1 || x.shape[0] % c.B != 0)
    a.fail("'batch' (" + std::to_string(c.B) + ") must divide the " + std::to_string(x.shape[0]) + " rows of x");
  c.L = x.shape[0] / c.B;
  if (update && c.L != 1) a.fail("conv1d_update takes one token per sequence; x has " + std::to_string(c.L));
  a.expect("bias", {DType::F32}, {c.C});
  const Tensor& out = a.expect("out", {DType::F32}, {c.B * c.L, c.C});
  a.expect_contiguous("out");
  a.expect_no_overlap("out", "x");
  c.state = resolve_state(a, "state", c.B, {c.C, c.K - 1});
  if (update && !c.state.present) a.fail("conv1d_update needs a 'state'");
  c.x = x.ptr<float>();
  c.ldx = x.ld;
  c.w = w.ptr<float>();
  c.bias = a.tensor("bias").ptr<float>();
  c.out = out.ptr<float>();
  return c;
}

void run_conv(const ConvArgs& c, cpu::ThreadPool& pool) {
  if (!c.state.present || c.state.batched) {
    float* st = c.state.present ? c.state.per_seq[0] : nullptr;
    cpu::conv1d_silu(pool, c.B, c.L, c.C, c.K, c.x, c.ldx, c.w, c.bias, st, c.out, st);
    return;
  }
  for (int64_t b = 0; b < c.B; b++)
    cpu::conv1d_silu(pool, 1, c.L, c.C, c.K, c.x + b * c.L * c.ldx, c.ldx, c.w, c.bias, c.state.per_seq[b],
                     c.out + b * c.L * c.C, c.state.per_seq[b]);
}

// x: [B*L, C] (rows may be strided), weight [C, K], bias [C], out [B*L, C], state (optional,
// read then overwritten): [B, C, K-1] or a list of B tensors [C, K-1]. Param batch = B.
Work plan_conv(const OpArgs& a) {
  ConvArgs c = check_conv(a, false);
  return [c](ExecContext& ctx) { run_conv(c, *ctx.pool); };
}

Work plan_update(const OpArgs& a) {
  ConvArgs c = check_conv(a, true);
  return [c](ExecContext& ctx) {
    cpu::conv1d_update(*ctx.pool, c.B, c.C, c.K, c.x, c.ldx, c.w, c.bias, c.state.per_seq.data(), c.out);
  };
}

OpRegistrar r1({"conv1d_silu", "causal depthwise conv1d + SiLU over [B, L] tokens, carrying the conv state", plan_conv});
OpRegistrar r2({"conv1d_update", "one token per sequence of conv1d + SiLU, state updated in place", plan_update});

}  // namespace
}  // namespace taipan
