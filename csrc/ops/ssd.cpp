// ssd_scan (prefill, chunked SSD) and ssd_step (decode): the Mamba-2 state space model.
#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

// The shape checks both backends share. x [B*L, H*P], B and C [B*L, G*N], dt [B*L, H] (all may
// be column views of one matrix) in the activation dtype `act`; dt_bias, A_log, D fp32 [H];
// out [B*L, H*P] contiguous in `act`; state [B, H, P, N] or a list of B [H, P, N], fp32.
// Params: batch (B), groups (G), chunk (default 256).
struct SsdShape {
  int64_t B, L, H, P, G, N, chunk;
  const Tensor *x, *Bm, *Cm, *dt, *y;
  StateArg state;
};

SsdShape check_ssd_shape(const OpArgs& a, bool step, DType act) {
  SsdShape d;
  d.dt = &a.expect("dt", {act}, {-1, -1});
  int64_t rows = d.dt->shape[0];
  d.H = d.dt->shape[1];
  d.B = a.integer("batch", step ? rows : 1);
  if (d.B < 1 || rows % d.B != 0) a.fail("'batch' (" + std::to_string(d.B) + ") must divide the " + std::to_string(rows) + " rows");
  d.L = rows / d.B;
  if (step && d.L != 1) a.fail("ssd_step takes one token per sequence; got " + std::to_string(d.L));
  d.x = &a.expect("x", {act}, {rows, -1});
  if (d.H < 1 || d.x->shape[1] % d.H != 0) a.fail("x has " + std::to_string(d.x->shape[1]) + " columns, not a multiple of the " + std::to_string(d.H) + " heads of dt");
  d.P = d.x->shape[1] / d.H;
  d.G = a.integer("groups", 1);
  if (d.G < 1 || d.H % d.G != 0) a.fail("'groups' (" + std::to_string(d.G) + ") must divide the " + std::to_string(d.H) + " heads");
  d.Bm = &a.expect("B", {act}, {rows, -1});
  if (d.Bm->shape[1] % d.G != 0) a.fail("B has " + std::to_string(d.Bm->shape[1]) + " columns, not a multiple of groups");
  d.N = d.Bm->shape[1] / d.G;
  d.Cm = &a.expect("C", {act}, {rows, d.G * d.N});
  d.chunk = a.integer("chunk", 256);
  if (d.chunk < 1) a.fail("'chunk' must be positive");
  for (const char* n : {"dt_bias", "A_log", "D"}) a.expect(n, {DType::F32}, {d.H});
  d.y = &a.expect("out", {act}, {rows, d.H * d.P});
  a.expect_contiguous("out");
  for (const char* n : {"x", "B", "C", "dt"}) a.expect_no_overlap("out", n);
  d.state = resolve_state(a, "state", d.B, {d.H, d.P, d.N});
  if (step && !d.state.present) a.fail("ssd_step needs a 'state'");
  return d;
}

// ---- CUDA -----------------------------------------------------------------------------------
// x, B, C, dt bf16 (rows may be strided: column views of the conv output and of in_proj's
// output), dt_bias, A_log, D fp32 [H], out bf16 [B*L, H*P] contiguous, state fp32 as on the
// CPU. ssd_scan needs 1 <= chunk <= 1024 and ceil(L/chunk) * H <= 65535.
struct SsdCuda {
  cuda::SsdDims dims;
  const uint16_t *x, *Bm, *Cm, *dt;
  const float *dt_bias, *A_log, *D;
  int64_t ldx, ldb, ldc, lddt;
  uint16_t* y;
  StateArg state;
  std::shared_ptr<Storage> workspace;  // ssd_scan: ssd_scan_workspace_bytes of one call
  std::shared_ptr<Storage> table;      // ssd_step with a state list: device array of B pointers
};

SsdCuda check_ssd_cuda(const OpArgs& a, bool step) {
  for (const char* n : {"x", "B", "C", "dt", "out"}) cuda_ops::dtype(a, n, {DType::BF16}, cuda_ops::kActivation);
  for (const char* n : {"dt_bias", "A_log", "D"}) cuda_ops::dtype(a, n, {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "state", {DType::F32}, cuda_ops::kState);
  SsdShape sh = check_ssd_shape(a, step, DType::BF16);
  a.expect_no_overlap("out", "state");
  SsdCuda s;
  cuda::SsdDims& d = s.dims;
  d = {sh.B, sh.L, sh.H, sh.P, sh.G, sh.N, sh.chunk};
  if (d.P < 1 || d.N < 1) a.fail("x and B need at least one column per head and group");
  if (!step && d.chunk > 1024) a.fail("'chunk' (" + std::to_string(d.chunk) + ") must be at most 1024 on the CUDA backend");
  if (d.B > 65535 || d.H > 65535) a.fail("at most 65535 sequences and 65535 heads per call on the CUDA backend");
  if (!step && (d.L + d.chunk - 1) / d.chunk * d.H > 65535)
    a.fail("ceil(L / chunk) * heads = " + std::to_string((d.L + d.chunk - 1) / d.chunk * d.H) +
           " exceeds 65535 on the CUDA backend; run the sequence in pieces or use a longer chunk");
  s.state = sh.state;
  const Tensor &x = *sh.x, &Bm = *sh.Bm, &Cm = *sh.Cm, &dt = *sh.dt, &y = *sh.y;
  s.x = cuda_ops::bf16(x); s.ldx = x.ld;
  s.Bm = cuda_ops::bf16(Bm); s.ldb = Bm.ld;
  s.Cm = cuda_ops::bf16(Cm); s.ldc = Cm.ld;
  s.dt = cuda_ops::bf16(dt); s.lddt = dt.ld;
  s.dt_bias = a.tensor("dt_bias").ptr<float>();
  s.A_log = a.tensor("A_log").ptr<float>();
  s.D = a.tensor("D").ptr<float>();
  s.y = cuda_ops::bf16_out(y);
  if (!step) {
    // A state list runs one sequence per call, one call after another on the same stream, so
    // they share one workspace sized for a single sequence.
    cuda::SsdDims one = d;
    if (s.state.present && !s.state.batched) one.B = 1;
    s.workspace = cuda_ops::device_buffer(cuda::ssd_scan_workspace_bytes(one));
  } else if (!s.state.batched) {
    s.table = cuda_ops::pointer_table(s.state.raw);
  }
  return s;
}

Work plan_scan_cuda(const OpArgs& a) {
  SsdCuda s = check_ssd_cuda(a, false);
  return cuda_ops::launches([s](void* st) {
    const cuda::SsdDims& d = s.dims;
    void* ws = s.workspace->data;
    if (!s.state.present || s.state.batched) {
      // No state: start from zeros and keep no final state (state_out null), as on the CPU.
      float* state = s.state.present ? s.state.per_seq[0] : nullptr;
      cuda::ssd_scan(d, s.x, s.ldx, s.Bm, s.ldb, s.Cm, s.ldc, s.dt, s.lddt, s.dt_bias, s.A_log, s.D,
                     state, s.y, state, ws, st);
      return;
    }
    cuda::SsdDims one = d;
    one.B = 1;
    for (int64_t b = 0; b < d.B; b++) {
      const int64_t r0 = b * d.L;
      cuda::ssd_scan(one, s.x + r0 * s.ldx, s.ldx, s.Bm + r0 * s.ldb, s.ldb, s.Cm + r0 * s.ldc, s.ldc,
                     s.dt + r0 * s.lddt, s.lddt, s.dt_bias, s.A_log, s.D, s.state.per_seq[b],
                     s.y + r0 * d.H * d.P, s.state.per_seq[b], ws, st);
    }
  });
}

Work plan_step_cuda(const OpArgs& a) {
  SsdCuda s = check_ssd_cuda(a, true);
  return cuda_ops::launches([s](void* st) {
    if (s.state.batched)
      cuda::ssd_step(s.dims, s.x, s.ldx, s.Bm, s.ldb, s.Cm, s.ldc, s.dt, s.lddt, s.dt_bias, s.A_log, s.D,
                     s.state.per_seq[0], s.y, st);
    else
      cuda::ssd_step_seqs(s.dims, s.x, s.ldx, s.Bm, s.ldb, s.Cm, s.ldc, s.dt, s.lddt, s.dt_bias, s.A_log,
                          s.D, static_cast<float* const*>(s.table->data), s.y, st);
  });
}

// ---- CPU ------------------------------------------------------------------------------------

struct SsdArgs {
  cpu::SsdDims dims;
  const float *x, *Bm, *Cm, *dt, *dt_bias, *A_log, *D;
  int64_t ldx, ldb, ldc, lddt;
  float* y;
  StateArg state;
};

// Shapes as check_ssd_shape says, every activation fp32.
SsdArgs check_ssd(const OpArgs& a, bool step) {
  SsdShape sh = check_ssd_shape(a, step, DType::F32);
  SsdArgs s;
  s.dims = {sh.B, sh.L, sh.H, sh.P, sh.G, sh.N, sh.chunk};
  s.state = sh.state;
  const Tensor &x = *sh.x, &Bm = *sh.Bm, &Cm = *sh.Cm, &dt = *sh.dt, &y = *sh.y;
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
  if (a.device == Device::CUDA) return plan_scan_cuda(a);
  SsdArgs s = check_ssd(a, false);
  return [s](ExecContext& c) { run_ssd(s, false, *c.pool); };
}

Work plan_step(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_step_cuda(a);
  SsdArgs s = check_ssd(a, true);
  return [s](ExecContext& c) { run_ssd(s, true, *c.pool); };
}

OpRegistrar r1({"ssd_scan", "Mamba-2 SSM over [B, L] tokens by the chunked SSD algorithm, carrying the state", plan_scan});
OpRegistrar r2({"ssd_step", "one token per sequence of the Mamba-2 SSM, state updated in place", plan_step});

}  // namespace
}  // namespace taipan
