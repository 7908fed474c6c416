// mamba1_scan: the Mamba-1 selective scan (Jamba's mixer), gated by silu(z). One op serves
// prefill (L tokens per sequence) and decode (L == 1), carrying the state in place.
//
// Tensors: x, dt, z [B*L, di] and B, C [B*L, N] (rows may be strided: column views of the
// projections' outputs); dt_bias [di], A_log [di, N], D [di] fp32 contiguous; out [B*L, di]
// contiguous, overlapping nothing else; state (optional) [B, di, N] or a list of B [di, N],
// fp32 (absent: start from zeros, final state discarded). Param batch (B, default 1) must
// divide the rows. Activations are fp32 on the CPU, bf16 on CUDA.
#include <string>
#include <utility>
#include <vector>

#include "../../cuda/op_support.h"
#include "../cpu/mamba1.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

constexpr const char* kInputs[] = {"x", "dt", "B", "C", "z", "dt_bias", "A_log", "D"};

struct Mamba1Shape {
  int64_t B, L, di, N;
  const Tensor *x, *dt, *Bm, *Cm, *z, *out;
  StateArg state;
};

bool overlap(const Tensor& p, const Tensor& q) {
  if (p.storage != q.storage) return false;
  const size_t p0 = p.offset, p1 = p0 + p.span_bytes(), q0 = q.offset, q1 = q0 + q.span_bytes();
  return p0 < q1 && q0 < p1;
}

// The state is written in place while every input is read, and the sequences run in
// parallel: a state sharing memory with an input, the output or another sequence's state
// would give garbage rather than an error, so refuse it here.
void expect_state_apart(const OpArgs& a) {
  std::vector<std::pair<std::string, const Tensor*>> states;
  if (const auto* list = a.list("state")) {
    for (size_t i = 0; i < list->size(); i++) states.emplace_back("state[" + std::to_string(i) + "]", (*list)[i].get());
  } else if (const Tensor* t = a.optional("state")) {
    states.emplace_back("state", t);
  }
  for (size_t i = 0; i < states.size(); i++) {
    const auto& [name, st] = states[i];
    for (const char* n : kInputs)
      if (overlap(*st, a.tensor(n))) a.fail("tensors '" + name + "' and '" + n + "' overlap in memory");
    if (overlap(*st, a.tensor("out"))) a.fail("tensors 'out' and '" + name + "' overlap in memory");
    for (size_t j = 0; j < i; j++)
      if (overlap(*st, *states[j].second))
        a.fail("tensors '" + states[j].first + "' and '" + name + "' overlap in memory");
  }
}

// The checks both backends share; `act` is the activation dtype (f32 on the CPU, bf16 on CUDA).
Mamba1Shape check_shape(const OpArgs& a, DType act) {
  Mamba1Shape s;
  s.x = &a.expect("x", {act}, {-1, -1});
  const int64_t rows = s.x->shape[0];
  s.di = s.x->shape[1];
  if (s.di < 1) a.fail("tensor 'x' has no columns (d_inner must be positive)");
  s.B = a.integer("batch", 1);
  if (s.B < 1 || rows % s.B != 0)
    a.fail("'batch' (" + std::to_string(s.B) + ") must divide the " + std::to_string(rows) + " rows of 'x'");
  s.L = rows / s.B;
  if (s.L < 1) a.fail("tensor 'x' has no rows: the scan needs at least one token per sequence");
  s.dt = &a.expect("dt", {act}, {rows, s.di});
  s.z = &a.expect("z", {act}, {rows, s.di});
  s.Bm = &a.expect("B", {act}, {rows, -1});
  s.N = s.Bm->shape[1];
  if (s.N < 1) a.fail("tensor 'B' has no columns (the state size N must be positive)");
  s.Cm = &a.expect("C", {act}, {rows, s.N});
  a.expect("dt_bias", {DType::F32}, {s.di});
  a.expect("A_log", {DType::F32}, {s.di, s.N});
  a.expect("D", {DType::F32}, {s.di});
  for (const char* n : {"dt_bias", "A_log", "D"}) a.expect_contiguous(n);
  s.out = &a.expect("out", {act}, {rows, s.di});
  a.expect_contiguous("out");
  for (const char* n : kInputs) a.expect_no_overlap("out", n);
  s.state = resolve_state(a, "state", s.B, {s.di, s.N});
  expect_state_apart(a);
  return s;
}

// ---- CUDA -----------------------------------------------------------------------------------
// x, dt, B, C, z, out bf16; dt_bias, A_log, D fp32; state fp32. The launcher takes a device
// table of per-sequence state pointers when the state is a list (allocated and filled here,
// at plan time, and held by the Work), else the [B, di, N] tensor or nothing.
struct Mamba1Cuda {
  cuda::Mamba1Dims dims;
  const uint16_t *x, *dt, *Bm, *Cm, *z;
  int64_t ldx, lddt, ldb, ldc, ldz;
  const float *dt_bias, *A_log, *D;
  uint16_t* out;
  float* state = nullptr;              // [B, di, N], or null
  std::shared_ptr<Storage> table;      // a state list: device array of B pointers
};

Work plan_cuda(const OpArgs& a) {
  for (const char* n : {"x", "dt", "B", "C", "z", "out"}) cuda_ops::dtype(a, n, {DType::BF16}, cuda_ops::kActivation);
  for (const char* n : {"dt_bias", "A_log", "D"}) cuda_ops::dtype(a, n, {DType::F32}, cuda_ops::kSmallWeight);
  cuda_ops::dtype(a, "state", {DType::F32}, cuda_ops::kState);
  Mamba1Shape sh = check_shape(a, DType::BF16);
  if (sh.B > 65535) a.fail("at most 65535 sequences per call on the CUDA backend");
  if (sh.N > cuda::kMamba1MaxState)
    a.fail("state size N = " + std::to_string(sh.N) + " exceeds " + std::to_string(cuda::kMamba1MaxState) +
           " on the CUDA backend");
  Mamba1Cuda s;
  s.dims = {sh.B, sh.L, sh.di, sh.N};
  s.x = cuda_ops::bf16(*sh.x), s.ldx = sh.x->ld;
  s.dt = cuda_ops::bf16(*sh.dt), s.lddt = sh.dt->ld;
  s.Bm = cuda_ops::bf16(*sh.Bm), s.ldb = sh.Bm->ld;
  s.Cm = cuda_ops::bf16(*sh.Cm), s.ldc = sh.Cm->ld;
  s.z = cuda_ops::bf16(*sh.z), s.ldz = sh.z->ld;
  s.dt_bias = a.tensor("dt_bias").ptr<float>();
  s.A_log = a.tensor("A_log").ptr<float>();
  s.D = a.tensor("D").ptr<float>();
  s.out = cuda_ops::bf16_out(*sh.out);
  if (sh.state.present && sh.state.batched) s.state = sh.state.per_seq[0];
  if (sh.state.present && !sh.state.batched) s.table = cuda_ops::pointer_table(sh.state.raw);
  return cuda_ops::launches([s](void* st) {
    if (s.table)
      cuda::mamba1_scan_seqs(s.dims, s.x, s.ldx, s.dt, s.lddt, s.Bm, s.ldb, s.Cm, s.ldc, s.z, s.ldz, s.dt_bias,
                             s.A_log, s.D, static_cast<float* const*>(s.table->data), s.out, st);
    else
      cuda::mamba1_scan(s.dims, s.x, s.ldx, s.dt, s.lddt, s.Bm, s.ldb, s.Cm, s.ldc, s.z, s.ldz, s.dt_bias,
                        s.A_log, s.D, s.state, s.out, st);
  });
}

// ---- CPU ------------------------------------------------------------------------------------

Work plan(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_cuda(a);
  Mamba1Shape sh = check_shape(a, DType::F32);
  cpu::Mamba1Args k;
  k.B = sh.B, k.L = sh.L, k.di = sh.di, k.N = sh.N;
  k.x = sh.x->ptr<float>(), k.ldx = sh.x->ld;
  k.dt = sh.dt->ptr<float>(), k.lddt = sh.dt->ld;
  k.Bm = sh.Bm->ptr<float>(), k.ldb = sh.Bm->ld;
  k.Cm = sh.Cm->ptr<float>(), k.ldc = sh.Cm->ld;
  k.z = sh.z->ptr<float>(), k.ldz = sh.z->ld;
  k.dt_bias = a.tensor("dt_bias").ptr<float>();
  k.A_log = a.tensor("A_log").ptr<float>();
  k.D = a.tensor("D").ptr<float>();
  k.out = sh.out->ptr<float>();
  k.states = nullptr;  // pointed at the Work's own copy of the table when it runs
  std::vector<float*> states = sh.state.per_seq;
  return [k, states](ExecContext& c) mutable {
    k.states = states.empty() ? nullptr : states.data();
    cpu::mamba1_scan(*c.pool, k);
  };
}

OpRegistrar reg({"mamba1_scan",
                 "Mamba-1 selective scan over [B, L] tokens gated by silu(z), carrying the [di, N] state (L = 1: decode)",
                 plan});

}  // namespace
}  // namespace taipan
