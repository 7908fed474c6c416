// Full causal attention over growing KV caches, the mixer of the Transformer++ baseline
// (MODEL.md section 7): attention, then kv_append of the same chunk.
//
// A chunk is B sequences of L new tokens, chunk row b*L + t at position start[b] + t; start[b]
// is also how many positions sequence b's cache already holds. The caches come as one tensor
// [B, capacity, Hkv*hd] or as a list of B tensors [capacity_b, Hkv*hd]: each sequence owns its
// cache, and the caller grows it (a bigger tensor) when it fills up, so the capacities of a
// batch may differ. start is data written after planning, so whether the chunk fits is
// checked when the work runs.
#include <string>
#include <vector>

#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

void expect_cpu(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
}

bool overlap(const Tensor& x, const Tensor& y) {
  if (x.storage != y.storage) return false;
  size_t x0 = x.offset, x1 = x0 + x.span_bytes(), y0 = y.offset, y1 = y0 + y.span_bytes();
  return x0 < y1 && y0 < x1;
}

// The chunk's shape from the batch parameter: B sequences of L = M / B tokens; start is [B].
void chunk_dims(const OpArgs& a, int64_t M, int64_t* B, int64_t* L) {
  *B = a.integer("batch", a.tensor("start").numel());
  if (*B < 1 || M % *B != 0)
    a.fail("'batch' (" + std::to_string(*B) + ") must divide the " + std::to_string(M) + " rows");
  *L = M / *B;
  a.expect("start", {DType::I32}, {*B});
}

// One sequence's cache rows and how many it has room for, for k_cache and v_cache alike.
struct KvCaches {
  std::vector<const Tensor*> tensors;  // to check overlaps: B list items, or the one batched tensor
  std::vector<float*> k, v;
  std::vector<int64_t> capacity;
};

// k_cache or v_cache: a list of B tensors [capacity_b, HD] or one tensor [B, capacity, HD],
// contiguous f32.
void resolve_cache(const OpArgs& a, const std::string& name, int64_t B, int64_t HD, KvCaches* c,
                   std::vector<float*>* rows, std::vector<int64_t>* capacity) {
  if (const auto* list = a.list(name)) {
    if (int64_t(list->size()) != B)
      a.fail("list '" + name + "' has " + std::to_string(list->size()) + " tensors for a batch of " + std::to_string(B));
    for (size_t i = 0; i < list->size(); i++) {
      std::string item = name + "[" + std::to_string(i) + "]";
      OpArgs probe;  // the shape/dtype checks, with the item's name
      probe.op = a.op;
      probe.device = a.device;
      probe.tensors[item] = (*list)[i];
      const Tensor& t = probe.expect(item, {DType::F32}, {-1, HD});
      probe.expect_contiguous(item);
      c->tensors.push_back(&t);
      rows->push_back(t.ptr<float>());
      capacity->push_back(t.shape[0]);
    }
    return;
  }
  const Tensor& t = a.expect(name, {DType::F32}, {B, -1, HD});
  a.expect_contiguous(name);
  c->tensors.push_back(&t);
  for (int64_t b = 0; b < B; b++) {
    rows->push_back(t.ptr<float>() + b * t.shape[1] * HD);
    capacity->push_back(t.shape[1]);
  }
}

KvCaches resolve_caches(const OpArgs& a, int64_t B, int64_t HD) {
  KvCaches c;
  std::vector<int64_t> vcap;
  resolve_cache(a, "k_cache", B, HD, &c, &c.k, &c.capacity);
  size_t nk = c.tensors.size();
  resolve_cache(a, "v_cache", B, HD, &c, &c.v, &vcap);
  for (int64_t b = 0; b < B; b++)
    if (c.capacity[b] != vcap[b])
      a.fail("sequence " + std::to_string(b) + ": k_cache holds " + std::to_string(c.capacity[b]) + " rows but v_cache " +
             std::to_string(vcap[b]));
  for (size_t i = 0; i < nk; i++)
    for (size_t j = nk; j < c.tensors.size(); j++)
      if (overlap(*c.tensors[i], *c.tensors[j])) a.fail("k_cache and v_cache overlap in memory");
  return c;
}

// The caches must not share memory with the named tensors (the op writes one or the other).
void expect_apart(const OpArgs& a, const KvCaches& c, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    const Tensor* t = a.optional(n);
    if (!t) continue;
    for (const Tensor* x : c.tensors)
      if (overlap(*x, *t)) a.fail(std::string("tensor '") + n + "' overlaps a KV cache in memory");
  }
}

// Run time: every sequence's chunk must land inside its cache. (The stream prefixes the op's
// name to the message: "attention failed: ...".)
void check_fit(const int32_t* start, int64_t B, int64_t L, const std::vector<int64_t>& capacity) {
  for (int64_t b = 0; b < B; b++) {
    int64_t s = start[b];
    if (s < 0) throw ArgError("sequence " + std::to_string(b) + " has start " + std::to_string(s) + " < 0");
    if (s + L > capacity[b])
      throw ArgError("sequence " + std::to_string(b) + " needs " + std::to_string(s + L) + " cache rows (start " +
                     std::to_string(s) + " + " + std::to_string(L) + " new tokens) but its KV cache holds " +
                     std::to_string(capacity[b]) + "; grow the cache first");
  }
}

// attention: q [M, Hq*hd] (this chunk, after RoPE; rows may be strided), k, v [M, Hkv*hd]
// (likewise), start [B], the caches -> out [M, Hq*hd]. Params batch (default len(start)),
// head_dim. Query head h reads key/value head h / (Hq / Hkv).
Work plan_attention(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& q = a.expect("q", {DType::F32}, {-1, -1});
  int64_t M = q.shape[0], HQ = q.shape[1];
  int64_t B, L;
  chunk_dims(a, M, &B, &L);
  int64_t hd = a.integer("head_dim");
  if (hd < 1 || HQ % hd != 0) a.fail("'head_dim' (" + std::to_string(hd) + ") must divide the " + std::to_string(HQ) + " columns of q");
  const Tensor& k = a.expect("k", {DType::F32}, {M, -1});
  int64_t HKV = k.shape[1];
  if (HKV % hd != 0 || HKV == 0) a.fail("'head_dim' (" + std::to_string(hd) + ") must divide the " + std::to_string(HKV) + " columns of k");
  int64_t Hq = HQ / hd, Hkv = HKV / hd;
  if (Hq % Hkv != 0)
    a.fail("q has " + std::to_string(Hq) + " heads, not a multiple of the " + std::to_string(Hkv) + " key/value heads of k");
  const Tensor& v = a.expect("v", {DType::F32}, {M, HKV});
  const Tensor& out = a.expect("out", {DType::F32}, {M, HQ});
  for (const char* n : {"q", "k", "v"}) a.expect_no_overlap("out", n);
  KvCaches caches = resolve_caches(a, B, HKV);
  expect_apart(a, caches, {"out"});

  cpu::AttnArgs s{};
  s.B = B, s.L = L, s.Hq = Hq, s.Hkv = Hkv, s.hd = hd;
  s.q = q.ptr<float>(), s.ldq = q.ld;
  s.k = k.ptr<float>(), s.ldk = k.ld;
  s.v = v.ptr<float>(), s.ldv = v.ld;
  s.start = a.tensor("start").ptr<int32_t>();
  s.out = out.ptr<float>(), s.ldo = out.ld;
  // The per-sequence pointer arrays live in the closure; the kernel's args point into them.
  std::vector<const float*> kc(caches.k.begin(), caches.k.end()), vc(caches.v.begin(), caches.v.end());
  std::vector<int64_t> capacity = caches.capacity;
  return [=](ExecContext& c) {
    check_fit(s.start, B, L, capacity);
    cpu::AttnArgs r = s;
    r.k_cache = kc.data(), r.v_cache = vc.data();
    cpu::attention(*c.pool, r);
  };
}

// kv_append: after attention of the same chunk, its k, v [M, HD] rows into the caches at rows
// start[b] .. start[b] + L - 1. Param batch (default len(start)).
Work plan_kv_append(const OpArgs& a) {
  expect_cpu(a);
  const Tensor& k = a.expect("k", {DType::F32}, {-1, -1});
  int64_t M = k.shape[0], HD = k.shape[1];
  int64_t B, L;
  chunk_dims(a, M, &B, &L);
  const Tensor& v = a.expect("v", {DType::F32}, {M, HD});
  KvCaches caches = resolve_caches(a, B, HD);
  expect_apart(a, caches, {"k", "v"});
  const float* kp = k.ptr<float>();
  const float* vp = v.ptr<float>();
  int64_t ldk = k.ld, ldv = v.ld;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();
  std::vector<float*> kc = caches.k, vc = caches.v;
  std::vector<int64_t> capacity = caches.capacity;
  return [=](ExecContext& c) {
    check_fit(sp, B, L, capacity);
    cpu::kv_append(*c.pool, B, L, HD, kp, ldk, vp, ldv, sp, kc.data(), vc.data());
  };
}

OpRegistrar r1({"attention", "causal attention of a chunk over each sequence's KV cache and the chunk itself (GQA)", plan_attention});
OpRegistrar r2({"kv_append", "a chunk's keys and values into the KV caches at rows start .. start+L-1", plan_kv_append});

}  // namespace
}  // namespace taipan
