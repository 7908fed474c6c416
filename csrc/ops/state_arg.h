// Recurrent state arguments (conv state, SSM state) come either as one tensor holding the
// whole batch, [B, ...], or as a list of B per-sequence tensors, [...] each, so that each
// sequence can own its state. This resolves either form to one pointer per sequence.
#pragma once
#include <vector>

#include "op.h"

namespace taipan {

struct StateArg {
  bool present = false;
  bool batched = false;            // one [B, ...] tensor: kernels can take the batch at once
  std::vector<float*> per_seq;     // B pointers
};

// `inner` is the per-sequence shape, e.g. {C, K-1} or {H, P, N}.
inline StateArg resolve_state(const OpArgs& a, const std::string& name, int64_t B, std::vector<int64_t> inner) {
  StateArg s;
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
      probe.expect(item, {DType::F32}, inner);
      probe.expect_contiguous(item);
      s.per_seq.push_back(t.ptr<float>());
    }
    s.present = true;
    return s;
  }
  std::vector<int64_t> shape{B};
  shape.insert(shape.end(), inner.begin(), inner.end());
  const Tensor* t = a.expect_optional(name, {DType::F32}, shape);
  if (!t) return s;
  a.expect_contiguous(name);
  int64_t per = 1;
  for (auto d : inner) per *= d;
  for (int64_t b = 0; b < B; b++) s.per_seq.push_back(t->ptr<float>() + b * per);
  s.present = true;
  s.batched = true;
  return s;
}

}  // namespace taipan
