// CPU emulation of the parts of the CUDA runtime API and the CUDA device language that
// cuda/*.cu use, so the kernels can run (slowly) on a machine with no GPU for testing.
// TEST BUILDS ONLY: cuda/emu/run_emu_tests.sh rewrites the `k<<<grid, block, smem, s>>>(args)`
// launches of cuda/*.cu into emu::Launch(...)(k, args), compiles them with g++ and
// -DTAIPAN_CUDA_EMU -Icuda/emu (so this file stands in for <cuda_runtime.h>), and links them
// with bench/native/cuda_kernels_test.cpp. The real build never sees this directory.
//
// Model: blocks run one after another; the threads of a block run concurrently as OS threads
// (a reused pool), so __syncthreads is a real barrier (std::barrier) and warp collectives
// (__shfl_*_sync, and ldmatrix / mma.sync in emu_asm.h) exchange values through a per-warp
// buffer between two warp barriers. `__shared__` becomes `static`, which is correct because
// only one block runs at a time. Device memory is host memory (cudaMalloc = aligned_alloc),
// streams are synchronous.
//
// Stream capture (CUDA graphs): while a stream captures, kernel launches, device copies and
// memsets issued on it are recorded as closures instead of run; cudaStreamEndCapture hands
// them over as a graph, cudaGraphInstantiate copies them and cudaGraphLaunch runs them in
// order. A thread capturing in global or thread-local mode may not allocate, free or
// synchronise (cudaErrorStreamCaptureUnsupported, and its captures are invalidated, as in
// CUDA), and here it also may not issue work on a stream that is not capturing, nor copy
// between host and device memory on any stream: CUDA allows some of that, but work that is
// not recorded does not happen when the graph is replayed, and a host copy depends on host
// memory that a replay does not rewrite. So a test fails where a captured step would
// silently go wrong on a GPU.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

// ---- Types -----------------------------------------------------------------------------------
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 { unsigned x, y, z; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorIllegalState = 401,
  cudaErrorNotSupported = 801,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
};
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
constexpr unsigned cudaStreamNonBlocking = 1;
namespace emu {
using Ops = std::vector<std::function<void()>>;
// A stream's capture in progress: what it recorded, who began it, and whether a refused
// call has invalidated it.
struct Capture {
  Ops ops;
  cudaStreamCaptureMode mode;
  std::thread::id thread;
  bool invalid = false;
};
}  // namespace emu
struct CUstream_st { std::unique_ptr<emu::Capture> capture; };
using cudaStream_t = CUstream_st*;
struct CUgraph_st { emu::Ops ops; };
struct CUgraphExec_st { emu::Ops ops; };
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraphExec_st*;
struct cudaDeviceProp {
  char name[256];
  int major, minor, multiProcessorCount;
  size_t totalGlobalMem;
};

namespace emu {
inline thread_local cudaError_t last_error = cudaSuccess;
inline cudaError_t fail(cudaError_t e) { last_error = e; return e; }
inline std::mutex& attr_mutex() { static std::mutex m; return m; }
inline std::map<const void*, int>& smem_attr() { static std::map<const void*, int> m; return m; }
constexpr int kEmuSms = 4;
}  // namespace emu

// ---- Runtime API -------------------------------------------------------------------------------
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported (CPU emulator)";
    case cudaErrorIllegalState: return "the resource is not in a valid state to perform the requested operation";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "emulated error";
  }
}
inline cudaError_t cudaGetLastError() { cudaError_t e = emu::last_error; emu::last_error = cudaSuccess; return e; }
inline cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int* v) { *v = 13000; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : emu::fail(cudaErrorInvalidValue); }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return emu::fail(cudaErrorInvalidValue);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "taipan CPU emulator");
  p->major = 9; p->minor = 0; p->multiProcessorCount = emu::kEmuSms;
  p->totalGlobalMem = size_t(8) << 30;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  if (a != cudaDevAttrMultiProcessorCount) return emu::fail(cudaErrorInvalidValue);
  *v = emu::kEmuSms;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* f, size_t* t) { *f = size_t(4) << 30; *t = size_t(8) << 30; return cudaSuccess; }
// "Device" memory is host memory here, so host code that wrongly dereferences a device pointer,
// or copies with the wrong direction, would go unnoticed. The emulator therefore records every
// cudaMalloc block and checks that copies and memsets name device memory where they should.
namespace emu {
inline std::mutex& alloc_mutex() { static std::mutex m; return m; }
inline std::map<uintptr_t, size_t>& allocs() { static auto* m = new std::map<uintptr_t, size_t>; return *m; }
// True when [p, p + n) lies inside one cudaMalloc block.
inline bool is_device(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lk(alloc_mutex());
  auto it = allocs().upper_bound(a);
  if (it == allocs().begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}
inline cudaError_t check_copy(void* d, const void* s, size_t n, cudaMemcpyKind k) {
  if (n == 0) return cudaSuccess;
  const bool dd = is_device(d, n), sd = is_device(s, n);
  const bool ok = k == cudaMemcpyHostToDevice ? dd && !sd
                : k == cudaMemcpyDeviceToHost ? !dd && sd
                : dd && sd;
  if (!ok) {
    std::fprintf(stderr, "emu: cudaMemcpy kind %d with a %s destination and a %s source (%zu bytes)\n",
                 int(k), dd ? "device" : "host", sd ? "device" : "host", n);
    return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

// ---- Stream capture ----
// Streams this thread is capturing in global or thread-local mode.
inline thread_local std::vector<cudaStream_t> tl_captures;

// A capture-unsafe call from a capturing thread: refused, and the thread's captures become
// invalid (cudaStreamEndCapture then fails), as CUDA does.
inline bool refuse_if_capturing() {
  if (tl_captures.empty()) return false;
  for (cudaStream_t s : tl_captures) s->capture->invalid = true;
  fail(cudaErrorStreamCaptureUnsupported);
  return true;
}
inline cudaError_t refuse_capture(cudaStream_t s) {
  s->capture->invalid = true;
  return fail(cudaErrorStreamCaptureUnsupported);
}

// Where a stream operation goes: recorded when s captures; refused from a capturing thread
// otherwise (it would not be part of the graph); else run now.
enum class Route { run, record, refused };
inline Route route(cudaStream_t s) {
  if (s && s->capture) return Route::record;
  return refuse_if_capturing() ? Route::refused : Route::run;
}
// Runs `op` now or records it on s; the error of a refused operation otherwise.
template <class F>
cudaError_t submit(cudaStream_t s, F&& op) {
  switch (route(s)) {
    case Route::record: s->capture->ops.emplace_back(std::forward<F>(op)); return cudaSuccess;
    case Route::refused: return cudaErrorStreamCaptureUnsupported;
    case Route::run: op(); return cudaSuccess;
  }
  return cudaSuccess;
}
// A copy that involves host memory cannot be recorded (a replay would read or write host
// memory as it is now): refused on a capturing stream or from a capturing thread.
inline bool refuse_host_copy(cudaStream_t s, cudaMemcpyKind k) {
  if (k == cudaMemcpyDeviceToDevice) return false;
  if (s && s->capture) { refuse_capture(s); return true; }
  return refuse_if_capturing();
}
}  // namespace emu
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (emu::refuse_if_capturing()) return cudaErrorStreamCaptureUnsupported;
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p) return emu::fail(cudaErrorMemoryAllocation);
  std::memset(*p, 0xff, bytes);  // garbage (NaN patterns), like uninitialised device memory
  std::lock_guard<std::mutex> lk(emu::alloc_mutex());
  emu::allocs()[reinterpret_cast<uintptr_t>(*p)] = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (emu::refuse_if_capturing()) return cudaErrorStreamCaptureUnsupported;
  {
    std::lock_guard<std::mutex> lk(emu::alloc_mutex());
    if (!emu::allocs().erase(reinterpret_cast<uintptr_t>(p))) return emu::fail(cudaErrorInvalidValue);
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t st) {
  if (n && !emu::is_device(p, n)) return emu::fail(cudaErrorInvalidValue);
  if (emu::submit(st, [=] { std::memset(p, v, n); })) return emu::fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
  if (cudaError_t e = emu::check_copy(d, s, n, k)) return e;
  if (emu::refuse_host_copy(st, k)) return cudaErrorStreamCaptureUnsupported;
  if (emu::submit(st, [=] { std::memmove(d, s, n); })) return emu::fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dpitch, const void* s, size_t spitch, size_t width,
                                     size_t height, cudaMemcpyKind k, cudaStream_t st) {
  if (width > dpitch || width > spitch) return emu::fail(cudaErrorInvalidValue);
  if (height == 0 || width == 0) return cudaSuccess;
  // Check the whole spans, then copy row by row.
  const size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
  const bool dd = emu::is_device(d, dspan), sd = emu::is_device(s, sspan);
  const bool ok = k == cudaMemcpyHostToDevice ? dd && !sd : k == cudaMemcpyDeviceToHost ? !dd && sd : dd && sd;
  if (!ok) return emu::fail(cudaErrorInvalidValue);
  if (emu::refuse_host_copy(st, k)) return cudaErrorStreamCaptureUnsupported;
  auto copy = [=] {
    for (size_t r = 0; r < height; r++)
      std::memmove(static_cast<char*>(d) + r * dpitch, static_cast<const char*>(s) + r * spitch, width);
  };
  if (emu::submit(st, copy)) return emu::fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
// Streams run their work at once, so there is nothing to wait for; but synchronising is
// capture-unsafe (and a capturing stream cannot be waited for).
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (s && s->capture) return emu::refuse_capture(s);
  return emu::refuse_if_capturing() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
  return emu::refuse_if_capturing() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = new CUstream_st(); return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  if (!s) return emu::fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream
  if (s->capture) return emu::fail(cudaErrorIllegalState);
  s->capture = std::make_unique<emu::Capture>();
  s->capture->mode = mode;
  s->capture->thread = std::this_thread::get_id();
  if (mode != cudaStreamCaptureModeRelaxed) emu::tl_captures.push_back(s);
  return cudaSuccess;
}
// Ends the capture whatever happened; an invalidated one yields no graph.
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!s || !s->capture) return emu::fail(cudaErrorIllegalState);
  if (s->capture->mode != cudaStreamCaptureModeRelaxed) {
    if (s->capture->thread != std::this_thread::get_id()) return emu::fail(cudaErrorStreamCaptureWrongThread);
    auto& mine = emu::tl_captures;
    mine.erase(std::remove(mine.begin(), mine.end(), s), mine.end());
  }
  std::unique_ptr<emu::Capture> c = std::move(s->capture);
  if (c->invalid) return emu::fail(cudaErrorStreamCaptureInvalidated);
  *graph = new CUgraph_st{std::move(c->ops)};
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return emu::fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) { delete graph; return cudaSuccess; }
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!exec) return emu::fail(cudaErrorInvalidValue);
  auto replay = [exec] { for (const auto& op : exec->ops) op(); };
  if (emu::submit(s, replay)) return emu::fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { delete exec; return cudaSuccess; }
template <class F>
cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v > 227 * 1024) return emu::fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(emu::attr_mutex());
  emu::smem_attr()[reinterpret_cast<const void*>(f)] = v;
  return cudaSuccess;
}

// ---- Block execution ---------------------------------------------------------------------------
namespace emu {

// A pool of worker threads reused for every block.
class Pool {
 public:
  void run(int n, const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> lk(m_);
    while (int(threads_.size()) < n) {
      const int idx = int(threads_.size());
      const uint64_t g = gen_;
      threads_.emplace_back([this, idx, g] { worker(idx, g); });
    }
    job_ = &job;
    active_ = n;
    remaining_ = n;
    gen_++;
    cv_.notify_all();
    done_.wait(lk, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void worker(int idx, uint64_t seen) {
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [&] { return gen_ != seen; });
      seen = gen_;
      if (idx >= active_) continue;
      const std::function<void(int)>* job = job_;
      lk.unlock();
      (*job)(idx);
      lk.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }
  std::mutex m_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t gen_ = 0;
  int active_ = 0, remaining_ = 0;
};
inline Pool& pool() { static Pool* p = new Pool; return *p; }  // leaked: workers never join

constexpr int kXchgWords = 16;  // per lane
struct BlockCtx {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint32_t> xchg;  // [warp][lane][kXchgWords]
};
inline thread_local BlockCtx* tl_ctx = nullptr;
inline thread_local int tl_tid = 0;

inline int lane_id() { return tl_tid & 31; }
inline int warp_id() { return tl_tid >> 5; }
inline void warp_sync() { tl_ctx->warps[warp_id()]->arrive_and_wait(); }
inline uint32_t* xchg(int lane) { return tl_ctx->xchg.data() + (size_t(warp_id()) * 32 + lane) * kXchgWords; }

constexpr size_t kSmemWindow = 228 * 1024;
inline unsigned char* smem_window() {
  alignas(1024) static unsigned char w[kSmemWindow];
  return w;
}
inline unsigned char* dynamic_smem() { return smem_window(); }

struct Launch {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  Launch(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}

  template <class... P, class... A>
  void operator()(void (*kernel)(P...), A&&... args) {
    const long nthreads = long(block.x) * block.y * block.z;
    if (nthreads < 1 || nthreads > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.y > 65535 || grid.z > 65535 || block.z > 64) {
      fail(cudaErrorInvalidConfiguration);
      return;
    }
    int limit = 48 * 1024;
    {
      std::lock_guard<std::mutex> lk(attr_mutex());
      auto it = smem_attr().find(reinterpret_cast<const void*>(kernel));
      if (it != smem_attr().end()) limit = std::max(limit, it->second);
    }
    if (smem > size_t(limit) || smem > kSmemWindow) {
      fail(cudaErrorInvalidValue);
      return;
    }
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    const int n = int(nthreads);
    const dim3 g = grid, b = block;
    // A capturing stream records the launch with its arguments as they are now.
    if (submit(stream, [=] { run_blocks(kernel, params, g, b, n); })) fail(cudaErrorStreamCaptureUnsupported);
  }

  template <class K, class T>
  static void run_blocks(K kernel, const T& params, dim3 g, dim3 b, int n) {
    const int nwarps = (n + 31) / 32;
    for (unsigned bz = 0; bz < g.z; bz++)
      for (unsigned by = 0; by < g.y; by++)
        for (unsigned bx = 0; bx < g.x; bx++) {
          BlockCtx ctx;
          ctx.block = std::make_unique<std::barrier<>>(n);
          for (int w = 0; w < nwarps; w++)
            ctx.warps.push_back(std::make_unique<std::barrier<>>(std::min(32, n - 32 * w)));
          ctx.xchg.assign(size_t(nwarps) * 32 * kXchgWords, 0);
          std::memset(smem_window(), 0xff, kSmemWindow);  // shared memory starts as garbage
          pool().run(n, [&](int tid) {
            tl_ctx = &ctx;
            tl_tid = tid;
            threadIdx = uint3{unsigned(tid) % b.x, (unsigned(tid) / b.x) % b.y, unsigned(tid) / (b.x * b.y)};
            blockIdx = uint3{bx, by, bz};
            blockDim = b;
            gridDim = g;
            std::apply(kernel, params);
            ctx.warps[tid >> 5]->arrive_and_drop();
            ctx.block->arrive_and_drop();
          });
        }
  }
};

}  // namespace emu

// ---- Device functions ------------------------------------------------------------------------------
inline void __syncthreads() { emu::tl_ctx->block->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }

template <class T>
T emu_shfl(T v, int src_lane, bool take) {
  static_assert(sizeof(T) <= 4 * emu::kXchgWords, "shuffle value too large");
  std::memcpy(emu::xchg(emu::lane_id()), &v, sizeof(T));
  emu::warp_sync();
  T r = v;
  if (take) std::memcpy(&r, emu::xchg(src_lane), sizeof(T));
  emu::warp_sync();
  return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { return emu_shfl(v, emu::lane_id() ^ m, true); }
template <class T> T __shfl_up_sync(unsigned, T v, int d) { return emu_shfl(v, emu::lane_id() - d, emu::lane_id() >= d); }
template <class T> T __shfl_down_sync(unsigned, T v, int d) { return emu_shfl(v, emu::lane_id() + d, emu::lane_id() + d < 32); }
template <class T> T __shfl_sync(unsigned, T v, int s) { return emu_shfl(v, s & 31, true); }

// The threads of a block run concurrently here, so atomics are real ones.
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::atomic_ref<unsigned long long> a(*p);
  unsigned long long old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

template <class T> inline T __ldg(const T* p) { return *p; }
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float __expf(float v) { return std::exp(v); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline size_t __cvta_generic_to_shared(const void* p) {
  return size_t(static_cast<const unsigned char*>(p) - emu::smem_window());
}
