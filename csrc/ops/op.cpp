#include "op.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace taipan {

void OpArgs::fail(const std::string& msg) const { throw ArgError(op + ": " + msg); }

const Tensor& OpArgs::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end() || !it->second) fail("missing tensor argument '" + name + "'");
  if (it->second->device() != device)
    fail("tensor '" + name + "' is on " + device_name(it->second->device()) + " but the stream runs on " + device_name(device));
  return *it->second;
}

const Tensor* OpArgs::optional(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end() || !it->second) return nullptr;
  return &tensor(name);
}

static std::string dtype_list(std::initializer_list<DType> dtypes) {
  std::string s;
  for (DType d : dtypes) s += (s.empty() ? "" : " or ") + std::string(dtype_name(d));
  return s;
}

static void check_tensor(const OpArgs& a, const std::string& name, const Tensor& t,
                         std::initializer_list<DType> dtypes, const std::vector<int64_t>& shape) {
  if (std::find(dtypes.begin(), dtypes.end(), t.dtype) == dtypes.end())
    a.fail("tensor '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected " + dtype_list(dtypes));
  bool ok = t.shape.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); i++) ok = shape[i] < 0 || shape[i] == t.shape[i];
  if (!ok) {
    std::ostringstream want;
    want << "[";
    for (size_t i = 0; i < shape.size(); i++) {
      want << (i ? ", " : "");
      if (shape[i] < 0) want << "*"; else want << shape[i];
    }
    want << "]";
    a.fail("tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + want.str());
  }
}

const Tensor& OpArgs::expect(const std::string& name, std::initializer_list<DType> dtypes,
                             const std::vector<int64_t>& shape) const {
  const Tensor& t = tensor(name);
  check_tensor(*this, name, t, dtypes, shape);
  return t;
}

const Tensor* OpArgs::expect_optional(const std::string& name, std::initializer_list<DType> dtypes,
                                      const std::vector<int64_t>& shape) const {
  const Tensor* t = optional(name);
  if (t) check_tensor(*this, name, *t, dtypes, shape);
  return t;
}

void OpArgs::expect_contiguous(const std::string& name) const {
  const Tensor& t = tensor(name);
  if (!t.contiguous()) fail("tensor '" + name + "' must be contiguous, got " + t.describe());
}

const std::vector<TensorPtr>* OpArgs::list(const std::string& name) const {
  auto it = lists.find(name);
  if (it == lists.end()) return nullptr;
  for (size_t i = 0; i < it->second.size(); i++) {
    if (!it->second[i]) fail("list '" + name + "' has no tensor at index " + std::to_string(i));
    if (it->second[i]->device() != device)
      fail("tensor '" + name + "[" + std::to_string(i) + "]' is on " + device_name(it->second[i]->device()) +
           " but the stream runs on " + device_name(device));
  }
  return &it->second;
}

int64_t OpArgs::integer(const std::string& name) const {
  auto it = numbers.find(name);
  if (it == numbers.end()) fail("missing parameter '" + name + "'");
  double v = it->second;
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.0e15)
    fail("parameter '" + name + "' must be an integer, got " + std::to_string(v));
  return int64_t(v);
}

int64_t OpArgs::integer(const std::string& name, int64_t fallback) const {
  return numbers.count(name) ? integer(name) : fallback;
}

double OpArgs::number(const std::string& name, double fallback) const {
  auto it = numbers.find(name);
  if (it == numbers.end()) return fallback;
  if (!std::isfinite(it->second)) fail("parameter '" + name + "' must be a finite number");
  return it->second;
}

std::string OpArgs::string(const std::string& name, const std::string& fallback) const {
  auto it = strings.find(name);
  return it == strings.end() ? fallback : it->second;
}

std::vector<TensorPtr> OpArgs::all_tensors() const {
  std::vector<TensorPtr> out;
  for (auto& [k, t] : tensors)
    if (t) out.push_back(t);
  for (auto& [k, l] : lists)
    for (auto& t : l)
      if (t) out.push_back(t);
  return out;
}

void OpArgs::expect_no_overlap(const std::string& a, const std::string& b) const {
  const Tensor* ta = optional(a);
  const Tensor* tb = optional(b);
  if (!ta || !tb || ta->storage != tb->storage) return;
  size_t a0 = ta->offset, a1 = a0 + ta->span_bytes();
  size_t b0 = tb->offset, b1 = b0 + tb->span_bytes();
  if (a0 < b1 && b0 < a1) fail("tensors '" + a + "' and '" + b + "' overlap in memory");
}

namespace {
std::map<std::string, OpDef>& registry() {
  static std::map<std::string, OpDef> r;
  return r;
}
}  // namespace

void register_op(const OpDef& def) { registry()[def.name] = def; }

const OpDef* find_op(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

std::vector<const OpDef*> all_ops() {
  std::vector<const OpDef*> out;
  for (auto& [k, d] : registry()) out.push_back(&d);
  return out;
}

}  // namespace taipan
