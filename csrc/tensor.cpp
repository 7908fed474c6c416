#include "tensor.h"

#include <cstdlib>
#include <sstream>

#include "../cuda/cuda_backend.h"

namespace taipan {

namespace {
constexpr size_t kHostAlignment = 64;  // a cache line, and enough for any SIMD load

std::string human_bytes(size_t n) {
  std::ostringstream s;
  s.precision(3);
  if (n >= (size_t(1) << 30)) s << double(n) / double(size_t(1) << 30) << " GiB";
  else if (n >= (size_t(1) << 20)) s << double(n) / double(size_t(1) << 20) << " MiB";
  else s << n << " bytes";
  return s.str();
}
}  // namespace

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
  auto s = std::make_shared<Storage>();
  s->bytes = bytes;
  s->device = device;
  if (bytes == 0) return s;
  if (device == Device::CPU) {
    size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    s->data = std::aligned_alloc(kHostAlignment, rounded);
    if (!s->data) throw std::runtime_error("out of memory: could not allocate " + human_bytes(bytes) + " of host memory");
  } else {
    s->data = cuda::device_malloc(bytes);  // throws with the CUDA error name
  }
  return s;
}

Storage::~Storage() {
  if (!data) return;
  if (device == Device::CPU) std::free(data);
  else cuda::device_free(data);
}

std::shared_ptr<Tensor> Tensor::empty(const std::vector<int64_t>& shape, DType dtype, Device device) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ArgError("tensor shape " + shape_str(shape) + " has a negative dimension");
    if (d > 0 && n > (int64_t(1) << 40) / d) throw ArgError("tensor shape " + shape_str(shape) + " is too large");
    n *= d;
  }
  auto t = std::make_shared<Tensor>();
  t->storage = Storage::allocate(size_t(n) * dtype_size(dtype), device);
  t->dtype = dtype;
  t->shape = shape;
  t->ld = t->cols();
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t Tensor::span_bytes() const {
  if (numel() == 0) return 0;
  return size_t((rows() - 1) * ld + cols()) * dtype_size(dtype);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); i++) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

std::string Tensor::describe() const {
  std::ostringstream s;
  s << dtype_name(dtype) << shape_str(shape) << " (" << device_name(device());
  if (!contiguous()) s << ", row stride " << ld;
  s << ")";
  return s.str();
}

}  // namespace taipan
