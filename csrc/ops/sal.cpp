// The Selective Attention Layer's own ops (MODEL.md section 6): sal_gate, sal_attention,
// sal_kv_write and sal_mix. The projections go through `linear` (with its optional count),
// the rotary embedding through `rope`, the MLP through `linear` and `swiglu`.
//
// A chunk is B sequences of L tokens, chunk row b*L + t. The gate writes the selected rows'
// indices (increasing) to `index` and their number to `count`; the ops after it read count
// when they run, since it does not exist yet when they are planned. Each sequence's decode
// state is a ring buffer of the last `window` positions: k_cache and v_cache [W, HD] and
// cache_pos [W], the position each slot holds (-1 = empty), given batched or as a list.
//
// CUDA (cuda/sal.cu): the activations (x, gathered, q, k, v, the attention output, o, delta)
// are bf16, the residual stream, gate parameters, prob and the ring buffers fp32. The ring
// buffers reach the kernels through a device table of per-sequence pointers built at plan time
// and held by the Work; count is read by the kernels, so every Work only launches kernels.
#include <algorithm>
#include <cstring>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"
#include "state_arg.h"

namespace taipan {
namespace {

bool on_cuda(const OpArgs& a) { return a.device == Device::CUDA; }

// The activation dtype: f32 on the CPU, bf16 on CUDA (checked first there, with the reason).
DType activation(const OpArgs& a, std::initializer_list<const char*> names) {
  if (!on_cuda(a)) return DType::F32;
  for (const char* n : names) cuda_ops::dtype(a, n, {DType::BF16}, cuda_ops::kActivation);
  return DType::BF16;
}

// On CUDA, the fp32 tensors' dtype errors also say why.
void fp32_on_cuda(const OpArgs& a, std::initializer_list<const char*> names, const char* why) {
  if (!on_cuda(a)) return;
  for (const char* n : names) cuda_ops::dtype(a, n, {DType::F32}, why);
}

constexpr const char* kRing = "the SAL ring buffers are fp32";
constexpr const char* kGate = "the gate and its probabilities are fp32";

// The run-time count: data from our own gate, but clamped so that no value can index past M.
int64_t read_count(const int32_t* count, int64_t M) { return std::clamp<int64_t>(*count, 0, M); }

// kv = "all" (every chunk row is a key) or "selected" (only rows whose mask is set).
bool kv_selected(const OpArgs& a) {
  std::string kv = a.string("kv", "all");
  if (kv != "all" && kv != "selected") a.fail("parameter 'kv' must be \"all\" or \"selected\", got \"" + kv + "\"");
  return kv == "selected";
}

// The chunk's shape from the batch parameter: B sequences of L = M / B tokens; start is [B].
void chunk_dims(const OpArgs& a, int64_t M, int64_t* B, int64_t* L) {
  *B = a.integer("batch", a.tensor("start").numel());
  if (*B < 1 || M % *B != 0)
    a.fail("'batch' (" + std::to_string(*B) + ") must divide the " + std::to_string(M) + " rows");
  *L = M / *B;
  a.expect("start", {DType::I32}, {*B});
}

int64_t window(const OpArgs& a) {
  int64_t W = a.integer("window");
  if (W < 1) a.fail("'window' must be at least 1, got " + std::to_string(W));
  return W;
}

// What sal_attention and sal_kv_write both check first, in this order: k [M, HD] (every chunk
// row, in the activation dtype `act`), the chunk's B sequences of L tokens (chunk_dims) and the
// window.
struct SalChunk {
  const Tensor& k;
  int64_t M, HD, B, L, W;
  DType act;
};
SalChunk check_sal_chunk(const OpArgs& a, std::initializer_list<const char*> activations) {
  const DType act = activation(a, activations);
  const Tensor& k = a.expect("k", {act}, {-1, -1});
  SalChunk c{k, k.shape[0], k.shape[1], 0, 0, 0, act};
  chunk_dims(a, c.M, &c.B, &c.L);
  c.W = window(a);
  return c;
}

// The three ring buffers of every sequence; all must be given.
struct Caches {
  StateArg k, v, pos;
};
Caches resolve_caches(const OpArgs& a, int64_t B, int64_t W, int64_t HD) {
  fp32_on_cuda(a, {"k_cache", "v_cache"}, kRing);
  Caches c{resolve_state(a, "k_cache", B, {W, HD}), resolve_state(a, "v_cache", B, {W, HD}),
           resolve_state(a, "cache_pos", B, {W}, DType::I32)};
  if (!c.k.present) a.fail("missing state argument 'k_cache'");
  if (!c.v.present) a.fail("missing state argument 'v_cache'");
  if (!c.pos.present) a.fail("missing state argument 'cache_pos'");
  return c;
}

// The ring buffers as the CUDA kernels take them: one device buffer of B key, B value and B
// position pointers, filled now; the Work keeps it alive.
struct CudaRing {
  std::shared_ptr<Storage> buffer;
  cuda::SalCacheTable table{};
};
CudaRing device_ring(const Caches& c) {
  std::vector<void*> ptrs;
  for (float* p : c.k.per_seq) ptrs.push_back(p);
  for (float* p : c.v.per_seq) ptrs.push_back(p);
  for (void* p : c.pos.raw) ptrs.push_back(p);
  CudaRing r;
  r.buffer = cuda_ops::pointer_table(ptrs);
  const size_t B = c.k.per_seq.size();
  auto* base = static_cast<void**>(r.buffer->data);
  r.table.k = reinterpret_cast<float* const*>(base);
  r.table.v = reinterpret_cast<float* const*>(base + B);
  r.table.pos = reinterpret_cast<int32_t* const*>(base + 2 * B);
  return r;
}

// sal_gate: residual [M, d] (+= delta [M, d] when given), norm [d], gate_weight [2, d],
// gate_bias [2] -> x [M, d], prob [M], mask [M] i32, index [M] i32, count [1] i32,
// gathered [M, d] (the selected rows of x, compacted). Param eps.
Work plan_gate(const OpArgs& a) {
  fp32_on_cuda(a, {"residual"}, cuda_ops::kResidual);
  fp32_on_cuda(a, {"norm", "gate_weight", "gate_bias", "prob"}, kGate);
  const DType act = activation(a, {"delta", "x", "gathered"});
  const Tensor& r = a.expect("residual", {DType::F32}, {-1, -1});
  int64_t M = r.shape[0], d = r.shape[1];
  const Tensor* delta = a.expect_optional("delta", {act}, {M, d});
  a.expect("norm", {DType::F32}, {d});
  a.expect("gate_weight", {DType::F32}, {2, d});
  a.expect("gate_bias", {DType::F32}, {2});
  a.expect("x", {act}, {M, d});
  a.expect("prob", {DType::F32}, {M});
  a.expect("mask", {DType::I32}, {M});
  a.expect("index", {DType::I32}, {M});
  a.expect("count", {DType::I32}, {1});
  a.expect("gathered", {act}, {M, d});
  for (const char* n : {"residual", "norm", "gate_weight", "x", "gathered"}) a.expect_contiguous(n);
  if (delta) {
    a.expect_contiguous("delta");
    a.expect_no_overlap("delta", "residual");
  }
  for (const char* n : {"x", "gathered"}) {
    a.expect_no_overlap(n, "residual");
    a.expect_no_overlap(n, "delta");
  }
  a.expect_no_overlap("x", "gathered");
  a.expect_no_overlap("mask", "index");
  float eps = float(a.number("eps", 1e-5));
  float* rp = r.ptr<float>();
  const float* np = a.tensor("norm").ptr<float>();
  const float* gw = a.tensor("gate_weight").ptr<float>();
  const float* gb = a.tensor("gate_bias").ptr<float>();
  float* pp = a.tensor("prob").ptr<float>();
  int32_t* mp = a.tensor("mask").ptr<int32_t>();
  int32_t* ip = a.tensor("index").ptr<int32_t>();
  int32_t* cp = a.tensor("count").ptr<int32_t>();
  if (on_cuda(a)) {
    const uint16_t* dp = delta ? cuda_ops::bf16(*delta) : nullptr;
    uint16_t* xp = cuda_ops::bf16_out(a.tensor("x"));
    uint16_t* gp = cuda_ops::bf16_out(a.tensor("gathered"));
    return cuda_ops::launches([=](void* st) { cuda::sal_gate(M, d, rp, dp, np, gw, gb, eps, xp, pp, mp, ip, cp, gp, st); });
  }
  const float* dp = delta ? delta->ptr<float>() : nullptr;
  float* xp = a.tensor("x").ptr<float>();
  float* gp = a.tensor("gathered").ptr<float>();
  return [=](ExecContext& c) { cpu::sal_gate(*c.pool, M, d, rp, dp, np, gw, gb, eps, xp, pp, mp, ip, cp, gp); };
}

// sal_attention: q [M, HD] (query k for chunk row index[k], k < count), index [M], count [1],
// k, v [M, HD] (every chunk row), mask [M] (needed for kv = "selected"), start [B], the ring
// buffers -> out [M, HD] (rows k < count). Params batch, window, head_dim, kv.
Work plan_attention(const OpArgs& a) {
  const SalChunk chunk = check_sal_chunk(a, {"q", "k", "v", "out"});
  const Tensor& k = chunk.k;
  const int64_t M = chunk.M, HD = chunk.HD, B = chunk.B, L = chunk.L, W = chunk.W;
  const DType act = chunk.act;
  int64_t hd = a.integer("head_dim");
  if (hd < 1 || HD % hd != 0) a.fail("'head_dim' (" + std::to_string(hd) + ") must divide the " + std::to_string(HD) + " columns of k");
  bool selected = kv_selected(a);
  const Tensor& q = a.expect("q", {act}, {M, HD});
  const Tensor& v = a.expect("v", {act}, {M, HD});
  a.expect("index", {DType::I32}, {M});
  a.expect("count", {DType::I32}, {1});
  const Tensor* mask = selected ? &a.expect("mask", {DType::I32}, {M}) : a.expect_optional("mask", {DType::I32}, {M});
  const Tensor& out = a.expect("out", {act}, {M, HD});
  for (const char* n : {"q", "k", "v"}) a.expect_no_overlap("out", n);
  Caches caches = resolve_caches(a, B, W, HD);
  for (const char* n : {"k_cache", "v_cache"}) a.expect_no_overlap("out", n);
  const int32_t* ip = a.tensor("index").ptr<int32_t>();
  const int32_t* cp = a.tensor("count").ptr<int32_t>();
  const int32_t* mp = selected ? mask->ptr<int32_t>() : nullptr;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();

  if (on_cuda(a)) {
    if (hd > cuda::kSalMaxHeadDim)
      a.fail("'head_dim' (" + std::to_string(hd) + ") exceeds " + std::to_string(cuda::kSalMaxHeadDim) + " on the CUDA backend");
    if (HD / hd > 65535) a.fail("at most 65535 heads on the CUDA backend");
    const cuda::SalAttnDims dims{M, B, L, W, HD / hd, hd};
    CudaRing ring = device_ring(caches);
    // Decode-sized calls split the window over blocks, which needs a workspace.
    const size_t ws_bytes = cuda::sal_attention_workspace_bytes(dims);
    std::shared_ptr<Storage> ws = ws_bytes ? cuda_ops::device_buffer(ws_bytes) : nullptr;
    const uint16_t *qp = cuda_ops::bf16(q), *kp = cuda_ops::bf16(k), *vp = cuda_ops::bf16(v);
    const int64_t ldq = q.ld, ldk = k.ld, ldv = v.ld, ldo = out.ld;
    uint16_t* op = cuda_ops::bf16_out(out);
    return cuda_ops::launches([=](void* st) {
      cuda::sal_attention(dims, qp, ldq, ip, cp, kp, ldk, vp, ldv, mp, sp, ring.table, op, ldo,
                          ws ? ws->data : nullptr, ws_bytes, st);
    });
  }

  cpu::SalAttnArgs s{};
  s.M = M, s.B = B, s.L = L, s.W = W, s.H = HD / hd, s.hd = hd;
  s.q = q.ptr<float>(), s.ldq = q.ld;
  s.index = ip;
  s.k = k.ptr<float>(), s.ldk = k.ld;
  s.v = v.ptr<float>(), s.ldv = v.ld;
  s.mask = mp;
  s.start = sp;
  s.out = out.ptr<float>(), s.ldo = out.ld;
  // The per-sequence pointer arrays live in the closure; the kernel's args point into them.
  std::vector<const float*> kc(caches.k.per_seq.begin(), caches.k.per_seq.end());
  std::vector<const float*> vc(caches.v.per_seq.begin(), caches.v.per_seq.end());
  std::vector<int32_t*> pc = caches.pos.as<int32_t>();
  return [=](ExecContext& c) {
    cpu::SalAttnArgs r = s;
    r.n = read_count(cp, M);
    r.k_cache = kc.data(), r.v_cache = vc.data(), r.cache_pos = pc.data();
    cpu::sal_attention(*c.pool, r);
  };
}

// sal_kv_write: after sal_attention of the same chunk, move the last min(L, W) positions of
// every sequence into its ring buffers (unselected ones, under kv = "selected", empty their
// slot). k, v [M, HD], mask [M], start [B]. Params batch, window, kv.
Work plan_kv_write(const OpArgs& a) {
  const SalChunk chunk = check_sal_chunk(a, {"k", "v"});
  const Tensor& k = chunk.k;
  const int64_t M = chunk.M, HD = chunk.HD, B = chunk.B, L = chunk.L, W = chunk.W;
  bool selected = kv_selected(a);
  const Tensor& v = a.expect("v", {chunk.act}, {M, HD});
  const Tensor* mask = selected ? &a.expect("mask", {DType::I32}, {M}) : a.expect_optional("mask", {DType::I32}, {M});
  Caches caches = resolve_caches(a, B, W, HD);
  for (const char* n : {"k_cache", "v_cache"}) {
    a.expect_no_overlap(n, "k");
    a.expect_no_overlap(n, "v");
  }
  int64_t ldk = k.ld, ldv = v.ld;
  const int32_t* mp = selected ? mask->ptr<int32_t>() : nullptr;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();
  if (on_cuda(a)) {
    CudaRing ring = device_ring(caches);
    const uint16_t *kp = cuda_ops::bf16(k), *vp = cuda_ops::bf16(v);
    return cuda_ops::launches([=](void* st) { cuda::sal_kv_write(B, L, W, HD, kp, ldk, vp, ldv, mp, sp, ring.table, st); });
  }
  const float* kp = k.ptr<float>();
  const float* vp = v.ptr<float>();
  std::vector<float*> kc = caches.k.per_seq, vc = caches.v.per_seq;
  std::vector<int32_t*> pc = caches.pos.as<int32_t>();
  return [=](ExecContext& c) {
    cpu::sal_kv_write(*c.pool, B, L, W, HD, kp, ldk, vp, ldv, mp, sp, kc.data(), vc.data(), pc.data());
  };
}

// sal_mix: residual [M, d] updated in place at the selected rows from o [M, d] (row k for
// chunk row index[k], k < count), prob [M] and, for mix = "normalized", x [M, d].
Work plan_mix(const OpArgs& a) {
  fp32_on_cuda(a, {"residual"}, cuda_ops::kResidual);
  fp32_on_cuda(a, {"prob"}, kGate);
  const DType act = activation(a, {"o", "x"});
  const Tensor& r = a.expect("residual", {DType::F32}, {-1, -1});
  int64_t M = r.shape[0], d = r.shape[1];
  std::string mix = a.string("mix", "residual");
  if (mix != "residual" && mix != "normalized")
    a.fail("parameter 'mix' must be \"residual\" or \"normalized\", got \"" + mix + "\"");
  bool normalized = mix == "normalized";
  const Tensor& o = a.expect("o", {act}, {M, d});
  a.expect("index", {DType::I32}, {M});
  a.expect("count", {DType::I32}, {1});
  a.expect("prob", {DType::F32}, {M});
  const Tensor* x = normalized ? &a.expect("x", {act}, {M, d}) : a.expect_optional("x", {act}, {M, d});
  for (const char* n : {"o", "x"}) a.expect_no_overlap("residual", n);
  float* rp = r.ptr<float>();
  int64_t ldr = r.ld, ldo = o.ld, ldx = x ? x->ld : 0;
  const int32_t* ip = a.tensor("index").ptr<int32_t>();
  const int32_t* cp = a.tensor("count").ptr<int32_t>();
  const float* pp = a.tensor("prob").ptr<float>();
  if (on_cuda(a)) {
    const uint16_t* op = cuda_ops::bf16(o);
    const uint16_t* xp = normalized ? cuda_ops::bf16(*x) : nullptr;
    return cuda_ops::launches([=](void* st) { cuda::sal_mix(M, d, rp, ldr, op, ldo, ip, cp, pp, xp, ldx, normalized, st); });
  }
  const float* op = o.ptr<float>();
  const float* xp = x ? x->ptr<float>() : nullptr;
  return [=](ExecContext& c) {
    cpu::sal_mix(*c.pool, M, d, read_count(cp, M), rp, ldr, op, ldo, ip, pp, xp, ldx, normalized);
  };
}

OpRegistrar r1({"sal_gate", "residual += delta; x = rms(residual) * norm; gate, selection mask and the compacted selected rows", plan_gate});
OpRegistrar r2({"sal_attention", "sliding-window attention of the selected queries over the chunk and the ring buffers", plan_attention});
OpRegistrar r3({"sal_kv_write", "the last window positions of each sequence into its ring buffers", plan_kv_write});
OpRegistrar r4({"sal_mix", "residual update of the selected rows with the attention output", plan_mix});

}  // namespace
}  // namespace taipan
