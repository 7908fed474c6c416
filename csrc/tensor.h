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
  // CUDA only: the size class of the cached block behind `data` (>= bytes) and its device.
  size_t block_bytes = 0;
  int device_index = 0;
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

// The CUDA caching allocator behind Storage::allocate(bytes, Device::CUDA).
//
// cudaMalloc and cudaFree are slow (cudaFree also waits for the whole device), and a decode
// step or a forward piece frees and allocates the same sizes again and again. So device
// blocks are rounded up to a size class (eighths of a power of two, at least 512 bytes: at
// most 12.5% waste) and a freed block goes back to its class's free list instead of to
// cudaFree; the next allocation of that class takes it without calling CUDA. Once warm, a
// decode loop therefore makes no cudaMalloc call.
//
// A block returns to the cache only when its last Storage reference is gone, which is after
// every op that used it has finished on the GPU: streams hold their ops' tensors until the
// CUDA stream has been synchronised (csrc/stream.cpp), and a failing CUDA op waits for its
// stream before the batch's tensors are dropped. So a cached block is idle and may be handed
// to any stream.
//
// When cudaMalloc runs out of memory, the cache is released and the allocation tried once
// more; if it still fails the error names the requested size and what is held. The cache is
// released by device_cache_release() (JavaScript: cudaReleaseCache()), and caching is off
// altogether with the environment variable TAIPAN_CUDA_CACHE=0 (every free is a cudaFree).
struct DeviceCacheStats {
  bool caching = true;
  size_t in_use_bytes = 0;    // blocks held by live tensors and workspaces (size-class bytes)
  size_t cached_bytes = 0;    // idle blocks kept for reuse
  size_t peak_bytes = 0;      // highest in_use + cached seen
  uint64_t device_mallocs = 0, device_frees = 0;  // cudaMalloc / cudaFree calls made
  uint64_t hits = 0, misses = 0;                  // allocations served from / not from the cache
};
DeviceCacheStats device_cache_stats();
// Frees every cached (idle) block with cudaFree; returns the bytes freed.
size_t device_cache_release();
// The size class a request of `bytes` is rounded up to.
size_t device_cache_block_size(size_t bytes);

}  // namespace taipan
