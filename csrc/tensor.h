// Tensors: typed, shaped views of a block of host or device memory.
//
// A Storage owns one allocation; a Tensor is (storage, byte offset, dtype, shape, row stride).
// All leading dimensions are flattened into "rows" of the last dimension ("cols"); rows are
// `ld` elements apart. A contiguous tensor has ld == cols; a column slice of a matrix
// (e.g. the z part of in_proj's output) keeps the parent's ld. That one stride is all the
// ops need, and it keeps every kernel's addressing trivial.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dtype.h"

namespace taipan {

enum class Device : int { CPU = 0, CUDA = 1 };
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// An error the JavaScript caller made (bad shape, bad value): surfaced as a TypeError/RangeError.
struct ArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  // Ops queued on a stream (or running) that read or write this storage. Host reads and
  // writes from JavaScript are refused while it is non-zero.
  std::atomic<int> in_use{0};

  static std::shared_ptr<Storage> allocate(size_t bytes, Device device);
  ~Storage();
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // bytes from storage->data
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t ld = 0;  // elements between consecutive rows

  static std::shared_ptr<Tensor> empty(const std::vector<int64_t>& shape, DType dtype,
                                       Device device);

  int64_t numel() const;
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
  bool contiguous() const { return shape.empty() || ld == cols() || rows() <= 1; }
  Device device() const { return storage->device; }
  void* data() const { return static_cast<char*>(storage->data) + offset; }
  template <typename T>
  T* ptr() const { return reinterpret_cast<T*>(data()); }
  // Bytes spanned from the first to one past the last element.
  size_t span_bytes() const;
  std::string describe() const;  // e.g. "f32[2, 64] (cpu)"
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace taipan
