// The mixture-of-experts FFN's own ops (Jamba baseline, MODEL.md section 7): moe_route,
// gather_rows and moe_scatter. The router logits and the experts' MLPs go through `linear`
// (with its optional count) and `swiglu` (likewise).
//
// Per MoE layer the caller runs moe_route once, then for each expert e: gather_rows of its rows
// (index[e], count[e]) into a compact block, the expert's MLP on the first count[e] rows, and
// moe_scatter of the weighted result into the residual. count[e] is written by moe_route on the
// stream and read by each later op when it runs (as the SAL's count is), so the routing never
// goes back to JavaScript. CPU only for now.
#include <algorithm>
#include <cstdint>
#include <string>

#include "../cpu/moe.h"
#include "op.h"

namespace taipan {
namespace {

void expect_cpu(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
}

// The run-time count: written by our router, but clamped so that no value can index past M.
int64_t read_count(const int32_t* count, int64_t M) { return std::clamp<int64_t>(*count, 0, M); }

// Row indices are stored as i32.
void expect_i32_rows(const OpArgs& a, int64_t M) {
  if (M > INT32_MAX) a.fail(std::to_string(M) + " rows do not fit the i32 row indices");
}

// moe_route: logits [M, E] f32 (rows may be strided) -> index [E, M] i32, weight [E, M] f32,
// count [E] i32, all contiguous. Param top_k in [1, E]. See cpu/moe.h for the exact contract.
Work plan_route(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& logits = a.expect("logits", {DType::F32}, {-1, -1});
  int64_t M = logits.shape[0], E = logits.shape[1];
  if (E < 1) a.fail("tensor 'logits' has no experts (shape " + shape_str(logits.shape) + ")");
  expect_i32_rows(a, M);
  int64_t top_k = a.integer("top_k");
  if (top_k < 1 || top_k > E)
    a.fail("'top_k' must be in [1, " + std::to_string(E) + "] (the experts in logits), got " + std::to_string(top_k));
  a.expect("index", {DType::I32}, {E, M});
  a.expect("weight", {DType::F32}, {E, M});
  a.expect("count", {DType::I32}, {E});
  const char* outs[] = {"index", "weight", "count"};
  for (const char* n : outs) {
    a.expect_contiguous(n);
    a.expect_no_overlap(n, "logits");
  }
  a.expect_no_overlap("index", "weight");
  a.expect_no_overlap("index", "count");
  a.expect_no_overlap("weight", "count");
  const float* lp = logits.ptr<float>();
  int64_t ld = logits.ld;
  int32_t* ip = a.tensor("index").ptr<int32_t>();
  float* wp = a.tensor("weight").ptr<float>();
  int32_t* cp = a.tensor("count").ptr<int32_t>();
  return [=](ExecContext& c) { cpu::moe_route(*c.pool, M, E, top_k, lp, ld, ip, wp, cp); };
}

// gather_rows: x [M, d] f32, index [M] i32, count [1] i32 -> out [M, d] f32; x and out rows may
// be strided. out[k] = x[index[k]] for k < clamp(count, 0, M); an index outside [0, M) gives a
// row of zeros; rows of out past count are left as they were.
Work plan_gather(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& x = a.expect("x", {DType::F32}, {-1, -1});
  int64_t M = x.shape[0], d = x.shape[1];
  a.expect("index", {DType::I32}, {M});
  a.expect("count", {DType::I32}, {1});
  const Tensor& out = a.expect("out", {DType::F32}, {M, d});
  for (const char* n : {"x", "index", "count"}) a.expect_no_overlap("out", n);
  const float* xp = x.ptr<float>();
  int64_t ldx = x.ld, ldo = out.ld;
  const int32_t* ip = a.tensor("index").ptr<int32_t>();
  const int32_t* cp = a.tensor("count").ptr<int32_t>();
  float* op = out.ptr<float>();
  return [=](ExecContext& c) { cpu::gather_rows(*c.pool, M, d, read_count(cp, M), xp, ldx, ip, op, ldo); };
}

// moe_scatter: residual [M, d] f32 (in place), y [M, d] f32, index [M] i32, weight [M] f32,
// count [1] i32; residual and y rows may be strided. residual[index[k]] += weight[k] * y[k] for
// k < clamp(count, 0, M), in increasing k; an index outside [0, M) is skipped.
Work plan_scatter(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& r = a.expect("residual", {DType::F32}, {-1, -1});
  int64_t M = r.shape[0], d = r.shape[1];
  const Tensor& y = a.expect("y", {DType::F32}, {M, d});
  a.expect("index", {DType::I32}, {M});
  a.expect("weight", {DType::F32}, {M});
  a.expect("count", {DType::I32}, {1});
  for (const char* n : {"y", "index", "weight", "count"}) a.expect_no_overlap("residual", n);
  float* rp = r.ptr<float>();
  int64_t ldr = r.ld, ldy = y.ld;
  const float* yp = y.ptr<float>();
  const int32_t* ip = a.tensor("index").ptr<int32_t>();
  const float* wp = a.tensor("weight").ptr<float>();
  const int32_t* cp = a.tensor("count").ptr<int32_t>();
  return [=](ExecContext& c) { cpu::moe_scatter(*c.pool, M, d, read_count(cp, M), rp, ldr, yp, ldy, ip, wp); };
}

OpRegistrar r1({"moe_route", "softmax over the experts, top_k per row (unrenormalised), compacted into per-expert row lists", plan_route});
OpRegistrar r2({"gather_rows", "out[k] = x[index[k]] for the first count rows", plan_gather});
OpRegistrar r3({"moe_scatter", "residual[index[k]] += weight[k] * y[k] for the first count rows", plan_scatter});

}  // namespace
}  // namespace taipan
