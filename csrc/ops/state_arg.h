// Recurrent state arguments (conv state, SSM state, SAL ring buffers) come either as one tensor
// holding the whole batch, [B, ...], or as a list of B per-sequence tensors, [...] each, so
// that each sequence can own its state. This resolves either form to one pointer per sequence.
#pragma once
#include <vector>

#include "op.h"

namespace taipan {

struct StateArg {
  bool present = false;
  bool batched = false;            // one [B, ...] tensor: kernels can take the batch at once
  std::vector<float*> per_seq;     // B pointers, for f32 states (empty for other dtypes)
  std::vector<void*> raw;          // B pointers, whatever the dtype

  template <typename T>
  std::vector<T*> as() const {
    std::vector<T*> out;
    for (void* p : raw) out.push_back(static_cast<T*>(p));
    return out;
  }
};

// `inner` is the per-sequence shape, e.g. {C, K-1} or {H, P, N}; `dtype` the element type
// (i32 for e.g. the positions held by a ring buffer).
inline StateArg resolve_state(const OpArgs& a, const std::string& name, int64_t B, std::vector<int64_t> inner,
                              DType dtype = DType::F32) {
  StateArg s;
  size_t esz = dtype_size(dtype);
  auto add = [&](void* p) {
    s.raw.push_back(p);
    if (dtype == DType::F32) s.per_seq.push_back(static_cast<float*>(p));
  };
  if (const auto* list = a.list(name)) {
    if (int64_t(list->size()) != B)
      a.fail("list '" + name + "' has " + std::to_string(list->size()) + " tensors for a batch of " + std::to_string(B));
    for (size_t i = 0; i < list->size(); i++) {
      std::string item = name + "[" + std::to_string(i) + "]";
      const Tensor& t = *(*list)[i];
      OpArgs probe;  // reuse the shape/dtype checks with the item's name
      probe.op = a.op;
      probe.device = a.device;
      probe.tensors[item] = (*list)[i];
      probe.expect(item, {dtype}, inner);
      probe.expect_contiguous(item);
      add(t.data());
    }
    s.present = true;
    return s;
  }
  std::vector<int64_t> shape{B};
  shape.insert(shape.end(), inner.begin(), inner.end());
  const Tensor* t = a.expect_optional(name, {dtype}, shape);
  if (!t) return s;
  a.expect_contiguous(name);
  int64_t per = 1;
  for (auto d : inner) per *= d;
  for (int64_t b = 0; b < B; b++) add(static_cast<char*>(t->data()) + size_t(b * per) * esz);
  s.present = true;
  s.batched = true;
  return s;
}

}  // namespace taipan
