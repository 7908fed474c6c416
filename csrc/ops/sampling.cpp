// sample: draw the next token of each sequence from its row of logits (MODEL.md §9).
//
// Tensors: logits f32 [B, Vp] (read only; rows may be strided), params f32 [B, 5] =
// (temperature, top_k, top_p, min_p, repetition_penalty) per sequence, seeds i32 [B] (read as
// uint32), steps i32 [B] (the index of the token being generated), optional seen i32 [B, S]
// (ids to penalise, -1 = padding); outputs tokens i32 [B], optional logprobs f32 [B].
// Param vocab (default Vp): ids >= vocab are padding and never drawn.
//
// params, seeds, steps and seen are small host tensors that the caller fills right before the
// call (lib/sampler.ts), so plan() reads and checks them here and the work keeps its own copy:
// a bad setting is a TypeError at the call naming the sequence and field, not a failed sync.
// The logits are produced by earlier queued ops, so they are checked when the work runs.
#include <cmath>
#include <stdexcept>
#include <vector>

#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

std::string num(double v) {
  std::string s = std::to_string(v);
  // to_string prints six decimals; trim the zeros so "0.500000" reads "0.5".
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

// One row of params, checked field by field.
cpu::SamplingRow read_row(const OpArgs& a, int64_t b, const float* v) {
  auto bad = [&](const char* field, const char* rule, float got) {
    a.fail("sequence " + std::to_string(b) + ": " + field + " must be " + rule + ", got " + num(got));
  };
  float temperature = v[0], top_k = v[1], top_p = v[2], min_p = v[3], penalty = v[4];
  // Comparisons are written so that NaN fails every one of them.
  if (!(std::isfinite(temperature) && temperature >= 0)) bad("temperature", "a finite number >= 0", temperature);
  if (!(std::isfinite(top_k) && top_k >= 0 && top_k == std::floor(top_k))) bad("top_k", "an integer >= 0", top_k);
  if (!(top_p > 0 && top_p <= 1)) bad("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0 && min_p <= 1)) bad("min_p", "in [0, 1]", min_p);
  if (!(std::isfinite(penalty) && penalty > 0)) bad("repetition_penalty", "a finite number > 0", penalty);
  cpu::SamplingRow r;
  r.temperature = temperature;
  r.top_k = int64_t(top_k);
  r.top_p = top_p;
  r.min_p = min_p;
  r.repetition_penalty = penalty;
  r.seed = 0;
  r.step = 0;
  return r;
}

Work plan_sample(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
  const Tensor& logits = a.expect("logits", {DType::F32}, {-1, -1});
  int64_t B = logits.shape[0], Vp = logits.shape[1];
  const Tensor& params = a.expect("params", {DType::F32}, {B, 5});
  const Tensor& seeds = a.expect("seeds", {DType::I32}, {B});
  const Tensor& steps = a.expect("steps", {DType::I32}, {B});
  const Tensor* seen = a.expect_optional("seen", {DType::I32}, {B, -1});
  const Tensor& tokens = a.expect("tokens", {DType::I32}, {B});
  const Tensor* logprobs = a.expect_optional("logprobs", {DType::F32}, {B});
  for (const char* n : {"params", "seeds", "steps", "tokens"}) a.expect_contiguous(n);
  if (seen) a.expect_contiguous("seen");
  if (logprobs) a.expect_contiguous("logprobs");
  for (const char* in : {"logits", "params", "seeds", "steps", "seen"}) {
    a.expect_no_overlap("tokens", in);
    a.expect_no_overlap("logprobs", in);
  }
  a.expect_no_overlap("tokens", "logprobs");
  int64_t vocab = a.integer("vocab", Vp);
  if (vocab < 1 || vocab > Vp)
    a.fail("parameter 'vocab' (" + std::to_string(vocab) + ") must be in [1, " + std::to_string(Vp) + "]");

  std::vector<cpu::SamplingRow> rows(B);
  const float* pp = params.ptr<float>();
  const int32_t* sp = seeds.ptr<int32_t>();
  const int32_t* tp = steps.ptr<int32_t>();
  for (int64_t b = 0; b < B; b++) {
    rows[b] = read_row(a, b, pp + b * 5);
    rows[b].seed = uint32_t(sp[b]);  // any 32-bit pattern is a seed
    if (tp[b] < 0) a.fail("sequence " + std::to_string(b) + ": step must be >= 0, got " + std::to_string(tp[b]));
    rows[b].step = uint32_t(tp[b]);
  }

  int64_t S = seen ? seen->shape[1] : 0;
  std::vector<int32_t> seen_ids(seen ? seen->ptr<int32_t>() : nullptr,
                                seen ? seen->ptr<int32_t>() + B * S : nullptr);
  for (int64_t i = 0; i < B * S; i++)
    if (seen_ids[i] < -1 || seen_ids[i] >= Vp)
      a.fail("sequence " + std::to_string(i / S) + ": seen id " + std::to_string(seen_ids[i]) +
             " is out of range [0, " + std::to_string(Vp) + ") (use -1 for padding)");

  const float* lp = logits.ptr<float>();
  int64_t ld = logits.ld;
  int32_t* op = tokens.ptr<int32_t>();
  float* lpo = logprobs ? logprobs->ptr<float>() : nullptr;
  return [=](ExecContext& c) {
    cpu::SampleFailure f = cpu::sample(*c.pool, B, vocab, lp, ld, S ? seen_ids.data() : nullptr, S,
                                       rows.data(), op, lpo);
    if (f.what)
      throw std::runtime_error("sequence " + std::to_string(f.row) + ": " + f.what +
                               (f.id >= 0 ? " (id " + std::to_string(f.id) + ")" : ""));
  };
}

OpRegistrar reg({"sample", "tokens[b] = a draw from softmax(penalised logits[b] / T), truncated by top-k, top-p, min-p", plan_sample});

}  // namespace
}  // namespace taipan
