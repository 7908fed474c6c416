// cross_entropy: the negative log-likelihood of each row's target token, for evaluation.
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// logits [M, Vp] (rows may be strided), targets i32 [M] (-1 = nothing to score), out f32 [M].
// Param vocab: ids >= vocab are padding and take no part in the softmax.
Work plan_cross_entropy(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
  const Tensor& logits = a.expect("logits", {DType::F32}, {-1, -1});
  int64_t M = logits.shape[0], Vp = logits.shape[1];
  const Tensor& targets = a.expect("targets", {DType::I32}, {M});
  const Tensor& out = a.expect("out", {DType::F32}, {M});
  a.expect_contiguous("targets");
  a.expect_contiguous("out");
  int64_t vocab = a.integer("vocab", Vp);
  if (vocab < 1 || vocab > Vp)
    a.fail("parameter 'vocab' (" + std::to_string(vocab) + ") must be in [1, " + std::to_string(Vp) + "]");
  const float* lp = logits.ptr<float>();
  int64_t ld = logits.ld;
  const int32_t* tp = targets.ptr<int32_t>();
  float* op = out.ptr<float>();
  return [=](ExecContext& c) {
    // Targets are data: checked where they are read.
    for (int64_t i = 0; i < M; i++)
      if (tp[i] < -1 || tp[i] >= vocab)
        throw ArgError("target id " + std::to_string(tp[i]) + " at row " + std::to_string(i) +
                       " is out of range [0, " + std::to_string(vocab) + ")");
    cpu::cross_entropy(*c.pool, M, vocab, lp, ld, tp, op);
  };
}

OpRegistrar reg({"cross_entropy", "out[i] = logsumexp(logits[i, :vocab]) - logits[i, targets[i]]", plan_cross_entropy});

}  // namespace
}  // namespace taipan
