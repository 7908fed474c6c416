// conv1d_silu (prefill) and conv1d_update (decode): Mamba-2's causal depthwise convolution.
#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

// ---- CUDA -----------------------------------------------------------------------------------
// x bf16 [B*L, C] (rows may be strided: the xBC columns of in_proj's output), weight fp32
// [C, K] with 2 <= K <= 8, bias fp32 [C], out bf16 [B*L, C] contiguous, state fp32 as on the
// CPU ([B, C, K-1] or a list of B [C, K-1]).
struct ConvCuda {
  int64_t B, L, C, K;
  const uint16_t* x;
  int64_t ldx;
  const float *w, *bias;
  uint16_t* out;
  StateArg state;
  std::shared_ptr<Storage> table;  // conv1d_update with a state list: device array of B pointers
};

ConvCuda check_conv_cuda(const OpArgs& a, bool update) {
  cuda_ops::dtype(a, "x", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "out", {DType::BF16}, cuda_ops::kActivation);
  cuda_ops::dtype(a, "weight", {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "bias", {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "state", {DType::F32}, cuda_ops::kState);
  ConvCuda c;
  const Tensor& w = a.expect("weight", {DType::F32}, {-1, -1});
  a.expect_contiguous("weight");
  c.C = w.shape[0];
  c.K = w.shape[1];
  if (c.K < 2 || c.K > 8) a.fail("kernel width " + std::to_string(c.K) + " is outside [2, 8] (the CUDA kernels' range)");
  const Tensor& x = a.expect("x", {DType::BF16}, {-1, c.C});
  c.B = a.integer("batch", update ? x.shape[0] : 1);
  if (c.B < 1 || x.shape[0] % c.B != 0)
    a.fail("'batch' (" + std::to_string(c.B) + ") must divide the " + std::to_string(x.shape[0]) + " rows of x");
  c.L = x.shape[0] / c.B;
  if (update && c.L != 1) a.fail("conv1d_update takes one token per sequence; x has " + std::to_string(c.L));
  if (c.B > 65535) a.fail("at most 65535 sequences per call on the CUDA backend");
  if (c.L > 2097120) a.fail("at most 2097120 tokens per sequence per call on the CUDA backend; run the prompt in pieces");
  a.expect("bias", {DType::F32}, {c.C});
  const Tensor& out = a.expect("out", {DType::BF16}, {c.B * c.L, c.C});
  a.expect_contiguous("out");
  a.expect_no_overlap("out", "x");
  a.expect_no_overlap("out", "state");
  c.state = resolve_state(a, "state", c.B, {c.C, c.K - 1});
  if (update && !c.state.present) a.fail("conv1d_update needs a 'state'");
  c.x = cuda_ops::bf16(x);
  c.ldx = x.ld;
  c.w = w.ptr<float>();
  c.bias = a.tensor("bias").ptr<float>();
  c.out = cuda_ops::bf16_out(out);
  if (update && !c.state.batched) c.table = cuda_ops::pointer_table(c.state.raw);
  return c;
}

Work plan_conv_cuda(const OpArgs& a) {
  ConvCuda c = check_conv_cuda(a, false);
  return cuda_ops::launches([c](void* s) {
    if (!c.state.present || c.state.batched) {
      float* st = c.state.present ? c.state.per_seq[0] : nullptr;
      cuda::conv1d_silu(c.B, c.L, c.C, c.K, c.x, c.ldx, c.w, c.bias, st, c.out, st, s);
      return;
    }
    // Separate state per sequence: one launch per sequence (prefill is long, so the launch
    // count does not matter here; decode uses the pointer-table kernel).
    for (int64_t b = 0; b < c.B; b++)
      cuda::conv1d_silu(1, c.L, c.C, c.K, c.x + b * c.L * c.ldx, c.ldx, c.w, c.bias, c.state.per_seq[b],
                        c.out + b * c.L * c.C, c.state.per_seq[b], s);
  });
}

Work plan_update_cuda(const OpArgs& a) {
  ConvCuda c = check_conv_cuda(a, true);
  return cuda_ops::launches([c](void* s) {
    if (c.state.batched) cuda::conv1d_update(c.B, c.C, c.K, c.x, c.ldx, c.w, c.bias, c.state.per_seq[0], c.out, s);
    else cuda::conv1d_update_seqs(c.B, c.C, c.K, c.x, c.ldx, c.w, c.bias, static_cast<float* const*>(c.table->data), c.out, s);
  });
}

// ---- CPU ------------------------------------------------------------------------------------

struct ConvArgs {
  int64_t B, L, C, K;
  const float *x, *w, *bias;
  int64_t ldx;
  float* out;
  StateArg state;
};

ConvArgs check_conv(const OpArgs& a, bool update) {
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
  if (a.device == Device::CUDA) return plan_conv_cuda(a);
  ConvArgs c = check_conv(a, false);
  return [c](ExecContext& ctx) { run_conv(c, *ctx.pool); };
}

Work plan_update(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_update_cuda(a);
  ConvArgs c = check_conv(a, true);
  return [c](ExecContext& ctx) {
    cpu::conv1d_update(*ctx.pool, c.B, c.C, c.K, c.x, c.ldx, c.w, c.bias, c.state.per_seq.data(), c.out);
  };
}

OpRegistrar r1({"conv1d_silu", "causal depthwise conv1d + SiLU over [B, L] tokens, carrying the conv state", plan_conv});
OpRegistrar r2({"conv1d_update", "one token per sequence of conv1d + SiLU, state updated in place", plan_update});

}  // namespace
}  // namespace taipan
