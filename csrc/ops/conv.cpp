// conv1d_silu (prefill) and conv1d_update (decode): Mamba-2's causal depthwise convolution.
#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

// The shape checks both backends share (only the activation dtype and the kernel widths their
// kernels take differ). x [B*L, C] in `act` (rows may be strided: the xBC columns of in_proj's
// output), weight fp32 [C, K] contiguous, bias fp32 [C], out [B*L, C] contiguous in `act`,
// state (optional for conv1d_silu, read then overwritten) fp32 [B, C, K-1] or a list of B
// [C, K-1]. Param batch = B (default: 1 for conv1d_silu, one per row for conv1d_update).
struct KernelWidths {
  int64_t min, max;
  const char* range;  // how the error names [min, max]
};
constexpr KernelWidths kCpuKernelWidths{1, 16, "[1, 16]"};
constexpr KernelWidths kCudaKernelWidths{2, 8, "[2, 8] (the CUDA kernels' range)"};

struct ConvShape {
  int64_t B, L, C, K;
  const Tensor *x, *w, *out;
  StateArg state;
};

ConvShape check_conv_shape(const OpArgs& a, bool update, DType act, const KernelWidths& widths) {
  ConvShape c;
  c.w = &a.expect("weight", {DType::F32}, {-1, -1});
  a.expect_contiguous("weight");
  c.C = c.w->shape[0];
  c.K = c.w->shape[1];
  if (c.K < widths.min || c.K > widths.max) a.fail("kernel width " + std::to_string(c.K) + " is outside " + widths.range);
  c.x = &a.expect("x", {act}, {-1, c.C});
  c.B = a.integer("batch", update ? c.x->shape[0] : 1);
  if (c.B < 1 || c.x->shape[0] % c.B != 0)
    a.fail("'batch' (" + std::to_string(c.B) + ") must divide the " + std::to_string(c.x->shape[0]) + " rows of x");
  c.L = c.x->shape[0] / c.B;
  if (update && c.L != 1) a.fail("conv1d_update takes one token per sequence; x has " + std::to_string(c.L));
  a.expect("bias", {DType::F32}, {c.C});
  c.out = &a.expect("out", {act}, {c.B * c.L, c.C});
  a.expect_contiguous("out");
  a.expect_no_overlap("out", "x");
  c.state = resolve_state(a, "state", c.B, {c.C, c.K - 1});
  if (update && !c.state.present) a.fail("conv1d_update needs a 'state'");
  return c;
}

// ---- CUDA -----------------------------------------------------------------------------------
// Shapes as check_conv_shape says, x and out bf16, 2 <= K <= 8; then the CUDA grid's limits
// on B and L, and out must not overlap the state.
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
  ConvShape sh = check_conv_shape(a, update, DType::BF16, kCudaKernelWidths);
  if (sh.B > 65535) a.fail("at most 65535 sequences per call on the CUDA backend");
  if (sh.L > 2097120) a.fail("at most 2097120 tokens per sequence per call on the CUDA backend; run the prompt in pieces");
  a.expect_no_overlap("out", "state");
  ConvCuda c;
  c.B = sh.B, c.L = sh.L, c.C = sh.C, c.K = sh.K;
  c.state = sh.state;
  c.x = cuda_ops::bf16(*sh.x);
  c.ldx = sh.x->ld;
  c.w = sh.w->ptr<float>();
  c.bias = a.tensor("bias").ptr<float>();
  c.out = cuda_ops::bf16_out(*sh.out);
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

// Shapes as check_conv_shape says, x and out fp32.
ConvArgs check_conv(const OpArgs& a, bool update) {
  ConvShape sh = check_conv_shape(a, update, DType::F32, kCpuKernelWidths);
  ConvArgs c;
  c.B = sh.B, c.L = sh.L, c.C = sh.C, c.K = sh.K;
  c.state = sh.state;
  c.x = sh.x->ptr<float>();
  c.ldx = sh.x->ld;
  c.w = sh.w->ptr<float>();
  c.bias = a.tensor("bias").ptr<float>();
  c.out = sh.out->ptr<float>();
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
