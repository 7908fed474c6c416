#include "tensor.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include "../cuda/cuda_backend.h"
#include "human_bytes.h"

namespace taipan {

namespace {
constexpr size_t kHostAlignment = 64;  // a cache line, and enough for any SIMD load

// Large host buffers (weights, above all) start on a 2 MiB boundary and ask Linux for
// transparent huge pages. Decode streams every weight once per token as a dozen parallel
// streams (csrc/cpu/gemm.cpp); with 4 KiB pages each stream needs a new TLB entry every
// 4 KiB, and on the 2-core Zen3 VM huge pages read the weights up to ~25% faster
// (bench/native/gemv_streams.cpp with HUGE=1). The advice only changes how memory is mapped;
// where THP is off, or the kernel has no huge page to give, nothing else changes.
constexpr size_t kHugePage = size_t(2) << 20;

void* allocate_host(size_t bytes) {
  const size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  if (rounded < kHugePage) return std::aligned_alloc(kHostAlignment, rounded);
  // posix_memalign does not need the size to be a multiple of the alignment: no memory is
  // added past the buffer's end (the partial last 2 MiB stays in small pages).
  void* p = nullptr;
  if (posix_memalign(&p, kHugePage, rounded) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, rounded, MADV_HUGEPAGE);  // advice only: a failure just means small pages
#endif
  return p;
}

// ---- The CUDA caching allocator (see tensor.h) ------------------------------------------------

// cudaErrorMemoryAllocation: the one cudaMalloc failure worth a retry after emptying the cache.
constexpr int kCudaOutOfMemory = 2;

struct DeviceCache {
  std::mutex mu;
  std::map<std::pair<int, size_t>, std::vector<void*>> idle;  // (device, size class) -> blocks
  DeviceCacheStats st;
};

DeviceCache& device_cache() {
  // Never destroyed: tensors can still be released while the process exits, after static
  // destructors have run; the driver reclaims device memory at exit anyway.
  static DeviceCache* c = [] {
    auto* d = new DeviceCache;
    const char* env = std::getenv("TAIPAN_CUDA_CACHE");
    d->st.caching = !(env && std::string(env) == "0");
    return d;
  }();
  return *c;
}

// cudaFree on the block's own device (the calling thread may have another one current).
void free_block(void* p, int device) noexcept {
  try {
    const int current = cuda::get_device();
    if (current != device) {
      cuda::set_device(device);
      cuda::device_free(p);
      cuda::set_device(current);
      return;
    }
  } catch (...) {
    // The runtime is unusable (e.g. unloading at exit): device_free below drops the error.
  }
  cuda::device_free(p);
}

void* device_cache_acquire(size_t bytes, size_t* block_bytes, int* device_index) {
  const size_t cls = device_cache_block_size(bytes);
  const int dev = cuda::get_device();  // throws a clear error when CUDA is unavailable
  DeviceCache& c = device_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.idle.find({dev, cls});
    if (it != c.idle.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.st.cached_bytes -= cls;
      c.st.in_use_bytes += cls;
      c.st.hits++;
      *block_bytes = cls;
      *device_index = dev;
      return p;
    }
    c.st.misses++;
  }
  void* p = nullptr;
  try {
    p = cuda::device_malloc(cls);
  } catch (const cuda::CudaError& first) {
    if (first.code() != kCudaOutOfMemory) throw;
    // Idle cached blocks of other sizes may be what is missing: give them back and retry.
    const size_t released = device_cache_release();
    try {
      p = cuda::device_malloc(cls);
    } catch (const cuda::CudaError& again) {
      if (again.code() != kCudaOutOfMemory) throw;
      const DeviceCacheStats st = device_cache_stats();
      throw cuda::CudaError(
          "out of CUDA memory: cannot allocate " + human_bytes(bytes) + " (" + std::to_string(bytes) +
              " bytes, a block of " + human_bytes(cls) + ") on device " + std::to_string(dev) + "; tensors and workspaces hold " +
              human_bytes(st.in_use_bytes) + ", and " + human_bytes(released) +
              " of cached blocks were released before retrying (" + again.what() + ")",
          again.code());
    }
  }
  std::lock_guard<std::mutex> lock(c.mu);
  c.st.device_mallocs++;
  c.st.in_use_bytes += cls;
  c.st.peak_bytes = std::max(c.st.peak_bytes, c.st.in_use_bytes + c.st.cached_bytes);
  *block_bytes = cls;
  *device_index = dev;
  return p;
}

void device_cache_put(void* p, size_t cls, int dev) noexcept {
  DeviceCache& c = device_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.st.in_use_bytes -= cls;
    if (c.st.caching) {
      try {
        c.idle[{dev, cls}].push_back(p);
        c.st.cached_bytes += cls;
        return;
      } catch (...) {
        // No host memory for the list entry: free the block instead.
      }
    }
    c.st.device_frees++;
  }
  free_block(p, dev);
}
}  // namespace

size_t device_cache_block_size(size_t bytes) {
  constexpr size_t kMinBlock = 512;
  if (bytes <= kMinBlock) return kMinBlock;
  // 2^e <= bytes - 1 < 2^(e+1); steps of 2^(e-3) split that range into eighths.
  int e = 0;
  for (size_t v = bytes - 1; v > 1; v >>= 1) e++;
  const size_t step = std::max(kMinBlock, size_t(1) << (e >= 3 ? e - 3 : 0));
  return (bytes + step - 1) / step * step;
}

DeviceCacheStats device_cache_stats() {
  DeviceCache& c = device_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.st;
}

size_t device_cache_release() {
  DeviceCache& c = device_cache();
  std::vector<std::pair<void*, int>> blocks;
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto& [key, list] : c.idle) {
      for (void* p : list) blocks.emplace_back(p, key.first);
      bytes += key.second * list.size();
    }
    c.idle.clear();
    c.st.cached_bytes = 0;
    c.st.device_frees += blocks.size();
  }
  for (auto& [p, dev] : blocks) free_block(p, dev);
  return bytes;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
  auto s = std::make_shared<Storage>();
  s->bytes = bytes;
  s->device = device;
  if (bytes == 0) return s;
  if (device == Device::CPU) {
    s->data = allocate_host(bytes);
    if (!s->data) throw std::runtime_error("out of memory: could not allocate " + human_bytes(bytes) + " of host memory");
  } else {
    s->data = device_cache_acquire(bytes, &s->block_bytes, &s->device_index);  // throws with the CUDA error
  }
  return s;
}

Storage::~Storage() {
  if (!data) return;
  if (device == Device::CPU) std::free(data);
  else device_cache_put(data, block_bytes, device_index);
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
