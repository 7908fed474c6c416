// Full causal attention over growing KV caches, the mixer of the Transformer++ baseline
// (MODEL.md section 7): attention, then kv_append of the same chunk.
//
// A chunk is B sequences of L new tokens, chunk row b*L + t at position start[b] + t; start[b]
// is also how many positions sequence b's cache already holds. The caches come as one tensor
// [B, capacity, Hkv*hd] or as a list of B tensors [capacity_b, Hkv*hd]: each sequence owns its
// cache, and the caller grows it (a bigger tensor) when it fills up, so the capacities of a
// batch may differ. start is data written after planning, so whether the chunk fits is
// checked when the work runs.
//
// CUDA: q, k, v and out bf16 (activations), caches f32 (as the model creates them) or bf16,
// start i32 on the device. The caches reach the kernels through a device table of per-sequence
// pointers and capacities built here, at plan time, and held by the Work (with the key-split
// workspace of cuda::attention). Plan time also refuses a chunk longer than a cache. start is
// never copied back to the host: a sequence whose chunk does not fit its cache when the op
// runs gets NaN attention output and an untouched cache (see cuda/attention.cu), where the
// CPU op throws.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

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
  std::vector<void*> k, v;
  std::vector<int64_t> capacity;
  DType dtype = DType::F32;
};

constexpr const char* kKvCache = "KV caches are f32 (as the model creates them) or bf16 on CUDA";

// k_cache or v_cache: a list of B tensors [capacity_b, HD] or one tensor [B, capacity, HD],
// contiguous; f32 (on CUDA f32 or bf16).
void resolve_cache(const OpArgs& a, const std::string& name, int64_t B, int64_t HD, KvCaches* c,
                   std::vector<void*>* rows, std::vector<int64_t>* capacity) {
  const bool cuda = a.device == Device::CUDA;
  auto expect = [cuda](const OpArgs& x, const std::string& n, const std::vector<int64_t>& shape) -> const Tensor& {
    return cuda ? x.expect(n, {DType::F32, DType::BF16}, shape) : x.expect(n, {DType::F32}, shape);
  };
  if (const auto* list = a.list(name)) {
    if (int64_t(list->size()) != B)
      a.fail("list '" + name + "' has " + std::to_string(list->size()) + " tensors for a batch of " + std::to_string(B));
    for (size_t i = 0; i < list->size(); i++) {
      std::string item = name + "[" + std::to_string(i) + "]";
      OpArgs probe;  // the shape/dtype checks, with the item's name
      probe.op = a.op;
      probe.device = a.device;
      probe.tensors[item] = (*list)[i];
      if (cuda) cuda_ops::dtype(probe, item, {DType::F32, DType::BF16}, kKvCache);
      const Tensor& t = expect(probe, item, {-1, HD});
      probe.expect_contiguous(item);
      c->tensors.push_back(&t);
      rows->push_back(t.data());
      capacity->push_back(t.shape[0]);
    }
    return;
  }
  if (cuda) cuda_ops::dtype(a, name, {DType::F32, DType::BF16}, kKvCache);
  const Tensor& t = expect(a, name, {B, -1, HD});
  a.expect_contiguous(name);
  c->tensors.push_back(&t);
  const size_t per_seq = size_t(t.shape[1] * HD) * dtype_size(t.dtype);
  for (int64_t b = 0; b < B; b++) {
    rows->push_back(static_cast<char*>(t.data()) + size_t(b) * per_seq);
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
  c.dtype = c.tensors[0]->dtype;
  for (const Tensor* t : c.tensors)
    if (t->dtype != c.dtype)
      a.fail(std::string("the KV caches must all have one dtype, got ") + dtype_name(c.dtype) + " and " + dtype_name(t->dtype));
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

// The shape checks both backends share; `act` is the activation dtype (f32 on the CPU, bf16 on
// CUDA).
struct AttnShape {
  int64_t M, B, L, Hq, Hkv, hd, HQ, HKV;
  const Tensor *q, *k, *v, *out;
  KvCaches caches;
};

AttnShape check_attention(const OpArgs& a, DType act) {
  AttnShape s;
  s.q = &a.expect("q", {act}, {-1, -1});
  s.M = s.q->shape[0], s.HQ = s.q->shape[1];
  chunk_dims(a, s.M, &s.B, &s.L);
  s.hd = a.integer("head_dim");
  if (s.hd < 1 || s.HQ % s.hd != 0)
    a.fail("'head_dim' (" + std::to_string(s.hd) + ") must divide the " + std::to_string(s.HQ) + " columns of q");
  s.k = &a.expect("k", {act}, {s.M, -1});
  s.HKV = s.k->shape[1];
  if (s.HKV % s.hd != 0 || s.HKV == 0)
    a.fail("'head_dim' (" + std::to_string(s.hd) + ") must divide the " + std::to_string(s.HKV) + " columns of k");
  s.Hq = s.HQ / s.hd, s.Hkv = s.HKV / s.hd;
  if (s.Hq % s.Hkv != 0)
    a.fail("q has " + std::to_string(s.Hq) + " heads, not a multiple of the " + std::to_string(s.Hkv) + " key/value heads of k");
  s.v = &a.expect("v", {act}, {s.M, s.HKV});
  s.out = &a.expect("out", {act}, {s.M, s.HQ});
  for (const char* n : {"q", "k", "v"}) a.expect_no_overlap("out", n);
  s.caches = resolve_caches(a, s.B, s.HKV);
  expect_apart(a, s.caches, {"out"});
  return s;
}

// ---- CUDA -----------------------------------------------------------------------------------

// The caches as the kernels take them: one device buffer holding B key-cache pointers, B
// value-cache pointers and B capacities (int64), filled now; the Work keeps it alive.
struct CudaCaches {
  std::shared_ptr<Storage> buffer;
  cuda::KvCacheTable table{};
  int64_t max_capacity = 0;
};

CudaCaches device_caches(const KvCaches& c) {
  const size_t B = c.k.size(), ptrs = B * sizeof(void*);
  std::vector<char> host(2 * ptrs + B * sizeof(int64_t));
  std::memcpy(host.data(), c.k.data(), ptrs);
  std::memcpy(host.data() + ptrs, c.v.data(), ptrs);
  std::memcpy(host.data() + 2 * ptrs, c.capacity.data(), B * sizeof(int64_t));
  CudaCaches d;
  d.buffer = cuda_ops::device_buffer(host.size());
  cuda::copy_to_device(d.buffer->data, host.data(), host.size(), nullptr);
  auto* base = static_cast<char*>(d.buffer->data);
  d.table.k = reinterpret_cast<void* const*>(base);
  d.table.v = reinterpret_cast<void* const*>(base + ptrs);
  d.table.capacity = reinterpret_cast<const int64_t*>(base + 2 * ptrs);
  d.table.dtype = c.dtype;
  for (int64_t cap : c.capacity) d.max_capacity = std::max(d.max_capacity, cap);
  return d;
}

// What plan time can tell about the fit: start >= 0, so a chunk longer than a cache never fits.
void expect_room(const OpArgs& a, const KvCaches& c, int64_t L) {
  for (size_t b = 0; b < c.capacity.size(); b++)
    if (L > c.capacity[b])
      a.fail("sequence " + std::to_string(b) + "'s KV cache holds " + std::to_string(c.capacity[b]) + " rows, fewer than the " +
             std::to_string(L) + " new tokens of the chunk; grow the cache first");
}

Work plan_attention_cuda(const OpArgs& a) {
  for (const char* n : {"q", "k", "v", "out"}) cuda_ops::dtype(a, n, {DType::BF16}, cuda_ops::kActivation);
  AttnShape s = check_attention(a, DType::BF16);
  if (s.hd > cuda::kAttnMaxHeadDim)
    a.fail("'head_dim' (" + std::to_string(s.hd) + ") exceeds " + std::to_string(cuda::kAttnMaxHeadDim) + " on the CUDA backend");
  if (s.B > 65535 || s.Hkv > 65535) a.fail("at most 65535 sequences and 65535 key/value heads per call on the CUDA backend");
  expect_room(a, s.caches, s.L);
  const cuda::AttnDims dims{s.B, s.L, s.Hq, s.Hkv, s.hd};
  CudaCaches caches = device_caches(s.caches);
  const size_t ws_bytes = cuda::attention_workspace_bytes(dims, caches.max_capacity);
  std::shared_ptr<Storage> ws = ws_bytes ? cuda_ops::device_buffer(ws_bytes) : nullptr;
  const uint16_t *q = cuda_ops::bf16(*s.q), *k = cuda_ops::bf16(*s.k), *v = cuda_ops::bf16(*s.v);
  const int64_t ldq = s.q->ld, ldk = s.k->ld, ldv = s.v->ld, ldo = s.out->ld;
  uint16_t* out = cuda_ops::bf16_out(*s.out);
  const int32_t* start = a.tensor("start").ptr<int32_t>();
  return cuda_ops::launches([=](void* st) {
    cuda::attention(dims, q, ldq, k, ldk, v, ldv, start, caches.table, caches.max_capacity, out, ldo,
                    ws ? ws->data : nullptr, ws_bytes, st);
  });
}

// ---- CPU ------------------------------------------------------------------------------------

// attention: q [M, Hq*hd] (this chunk, after RoPE; rows may be strided), k, v [M, Hkv*hd]
// (likewise), start [B], the caches -> out [M, Hq*hd]. Params batch (default len(start)),
// head_dim. Query head h reads key/value head h / (Hq / Hkv).
Work plan_attention(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_attention_cuda(a);
  AttnShape sh = check_attention(a, DType::F32);
  const int64_t B = sh.B, L = sh.L;
  cpu::AttnArgs s{};
  s.B = B, s.L = L, s.Hq = sh.Hq, s.Hkv = sh.Hkv, s.hd = sh.hd;
  s.q = sh.q->ptr<float>(), s.ldq = sh.q->ld;
  s.k = sh.k->ptr<float>(), s.ldk = sh.k->ld;
  s.v = sh.v->ptr<float>(), s.ldv = sh.v->ld;
  s.start = a.tensor("start").ptr<int32_t>();
  s.out = sh.out->ptr<float>(), s.ldo = sh.out->ld;
  // The per-sequence pointer arrays live in the closure; the kernel's args point into them.
  std::vector<const float*> kc, vc;
  for (void* p : sh.caches.k) kc.push_back(static_cast<const float*>(p));
  for (void* p : sh.caches.v) vc.push_back(static_cast<const float*>(p));
  std::vector<int64_t> capacity = sh.caches.capacity;
  return [=](ExecContext& c) {
    check_fit(s.start, B, L, capacity);
    cpu::AttnArgs r = s;
    r.k_cache = kc.data(), r.v_cache = vc.data();
    cpu::attention(*c.pool, r);
  };
}

// kv_append: after attention of the same chunk, its k, v [M, HD] rows into the caches at rows
// start[b] .. start[b] + L - 1. Param batch (default len(start)). k, v f32 on the CPU, bf16 on
// CUDA.
struct KvAppendShape {
  int64_t B, L, HD;
  const Tensor *k, *v;
  KvCaches caches;
};

KvAppendShape check_kv_append(const OpArgs& a, DType act) {
  KvAppendShape s;
  s.k = &a.expect("k", {act}, {-1, -1});
  int64_t M = s.k->shape[0];
  s.HD = s.k->shape[1];
  chunk_dims(a, M, &s.B, &s.L);
  s.v = &a.expect("v", {act}, {M, s.HD});
  s.caches = resolve_caches(a, s.B, s.HD);
  expect_apart(a, s.caches, {"k", "v"});
  return s;
}

Work plan_kv_append_cuda(const OpArgs& a) {
  for (const char* n : {"k", "v"}) cuda_ops::dtype(a, n, {DType::BF16}, cuda_ops::kActivation);
  KvAppendShape s = check_kv_append(a, DType::BF16);
  expect_room(a, s.caches, s.L);
  CudaCaches caches = device_caches(s.caches);
  const uint16_t *k = cuda_ops::bf16(*s.k), *v = cuda_ops::bf16(*s.v);
  const int64_t B = s.B, L = s.L, HD = s.HD, ldk = s.k->ld, ldv = s.v->ld;
  const int32_t* start = a.tensor("start").ptr<int32_t>();
  return cuda_ops::launches([=](void* st) { cuda::kv_append(B, L, HD, k, ldk, v, ldv, start, caches.table, st); });
}

Work plan_kv_append(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_kv_append_cuda(a);
  KvAppendShape sh = check_kv_append(a, DType::F32);
  const int64_t B = sh.B, L = sh.L, HD = sh.HD;
  const float* kp = sh.k->ptr<float>();
  const float* vp = sh.v->ptr<float>();
  int64_t ldk = sh.k->ld, ldv = sh.v->ld;
  const int32_t* sp = a.tensor("start").ptr<int32_t>();
  std::vector<float*> kc, vc;
  for (void* p : sh.caches.k) kc.push_back(static_cast<float*>(p));
  for (void* p : sh.caches.v) vc.push_back(static_cast<float*>(p));
  std::vector<int64_t> capacity = sh.caches.capacity;
  return [=](ExecContext& c) {
    check_fit(sp, B, L, capacity);
    cpu::kv_append(*c.pool, B, L, HD, kp, ldk, vp, ldv, sp, kc.data(), vc.data());
  };
}

OpRegistrar r1({"attention", "causal attention of a chunk over each sequence's KV cache and the chunk itself (GQA)", plan_attention});
OpRegistrar r2({"kv_append", "a chunk's keys and values into the KV caches at rows start .. start+L-1", plan_kv_append});

}  // namespace
}  // namespace taipan
