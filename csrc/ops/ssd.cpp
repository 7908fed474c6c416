// ssd_scan (prefill, chunked SSD) and ssd_step (decode): the Mamba-2 state space model.
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

struct SsdArgs {
  cpu::SsdDims dims;
  const float *x, *Bm, *Cm, *dt, *dt_bias, *A_log, *D;
  int64_t ldx, ldb, ldc, lddt;
  float* y;
  StateArg state;
};

// x [B*L, H*P], B and C [B*L, G*N], dt [B*L, H] (all may be column views of one matrix),
// dt_bias, A_log, D [H], out [B*L, H*P], state [B, H, P, N] or a list of B [H, P, N].
// Params: batch (B), groups (G), chunk (default 256).
SsdArgs check_ssd(const OpArgs& a, bool step) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
  SsdArgs s;
  cpu::SsdDims& d = s.dims;
  const Tensor& dt = a.expect("dt", {DType::F32}, {-1, -1});
  int64_t rows = dt.shape[0];
  d.H = dt.shape[1];
  d.B = a.integer("batch", step ? rows : 1);
  if (d.B < 1 || rows % d.B != 0) a.fail("'batch' (" + std::to_string(d.B) + ") must divide the " + std::to_string(rows) + " rows");
  d.L = rows / d.B;
  if (step && d.L != 1) a.fail("ssd_step takes one token per sequence; got " + std::to_string(d.L));
  const Tensor& x = a.expect("x", {DType::F32}, {rows, -1});
  if (d.H < 1 || x.shape[1] % d.H != 0) a.fail("x has " + std::to_string(x.shape[1]) + " columns, not a multiple of the " + std::to_string(d.H) + " heads of dt");
  d.P = x.shape[1] / d.H;
  d.G = a.integer("groups", 1);
  if (d.G < 1 || d.H % d.G != 0) a.fail("'groups' (" + std::to_string(d.G) + ") must divide the " + std::to_string(d.H) + " heads");
  const Tensor& Bm = a.expect("B", {DType::F32}, {rows, -1});
  if (Bm.shape[1] % d.G != 0) a.fail("B has " + std::to_string(Bm.shape[1]) + " columns, not a multiple of groups");
  d.N = Bm.shape[1] / d.G;
  const Tensor& Cm = a.expect("C", {DType::F32}, {rows, d.G * d.N});
  d.chunk = a.integer("chunk", 256);
  if (d.chunk < 1) a.fail("'chunk' must be positive");
  for (const char* n : {"dt_bias", "A_log", "D"}) a.expect(n, {DType::F32}, {d.H});
  const Tensor& y = a.expect("out", {DType::F32}, {rows, d.H * d.P});
  a.expect_contiguous("out");
  for (const char* n : {"x", "B", "C", "dt"}) a.expect_no_overlap("out", n);
  s.state = resolve_state(a, "state", d.B, {d.H, d.P, d.N});
  if (step && !s.state.present) a.fail("ssd_step needs a 'state'");
  s.x = x.ptr<float>(); s.ldx = x.ld;
  s.Bm = Bm.ptr<float>(); s.ldb = Bm.ld;
  s.Cm = Cm.ptr<float>(); s.ldc = Cm.ld;
  s.dt = dt.ptr<float>(); s.lddt = dt.ld;
  s.dt_bias = a.tensor("dt_bias").ptr<float>();
  s.A_log = a.tensor("A_log").ptr<float>();
  s.D = a.tensor("D").ptr<float>();
  s.y = y.ptr<float>();
  return s;
}

void run_ssd(const SsdArgs& s, bool step, cpu::ThreadPool& pool) {
  const cpu::SsdDims& d = s.dims;
  auto call = [&](const cpu::SsdDims& dd, int64_t row0, float* st) {
    const float* x = s.x + row0 * s.ldx;
    const float* Bm = s.Bm + row0 * s.ldb;
    const float* Cm = s.Cm + row0 * s.ldc;
    const float* dt = s.dt + row0 * s.lddt;
    float* y = s.y + row0 * d.H * d.P;
    if (step) cpu::ssd_step(pool, dd, x, s.ldx, Bm, s.ldb, Cm, s.ldc, dt, s.lddt, s.dt_bias, s.A_log, s.D, st, y);
    else cpu::ssd_scan(pool, dd, x, s.ldx, Bm, s.ldb, Cm, s.ldc, dt, s.lddt, s.dt_bias, s.A_log, s.D, st, y, st);
  };
  if (!s.state.present) {
    // No state given: start from zeros and discard the final state.
    std::vector<float> scratch(size_t(d.B * d.H * d.P * d.N), 0.0f);
    cpu::ssd_scan(pool, d, s.x, s.ldx, s.Bm, s.ldb, s.Cm, s.ldc, s.dt, s.lddt, s.dt_bias, s.A_log, s.D, nullptr, s.y, scratch.data());
    return;
  }
  if (s.state.batched) {
    call(d, 0, s.state.per_seq[0]);
    return;
  }
  cpu::SsdDims one = d;
  one.B = 1;
  for (int64_t b = 0; b < d.B; b++) call(one, b * d.L, s.state.per_seq[b]);
}

Work plan_scan(const OpArgs& a) {
  SsdArgs s = check_ssd(a, false);
  return [s](ExecContext& c) { run_ssd(s, false, *c.pool); };
}

Work plan_step(const OpArgs& a) {
  SsdArgs s = check_ssd(a, true);
  return [s](ExecContext& c) { run_ssd(s, true, *c.pool); };
}

OpRegistrar r1({"ssd_scan", "Mamba-2 SSM over [B, L] tokens by the chunked SSD algorithm, carrying the state", plan_scan});
OpRegistrar r2({"ssd_step", "one token per sequence of the Mamba-2 SSM, state updated in place", plan_step});

}  // namespace
}  // namespace taipan
