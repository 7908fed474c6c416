// CUDA runtime glue: device query, memory, streams, graphs and error reporting.
//
// Compiled (checked with nvcc 13.0.88: no warnings, also with -Xcompiler -Wall,-Wextra) as
//   nvcc -std=c++17 -O3 -Xcompiler -fPIC
//        --generate-code=arch=compute_80,code=sm_80
//        --generate-code=arch=compute_90a,code=sm_90a
//        --generate-code=arch=compute_90,code=compute_90
//        -c cuda/runtime.cu -o runtime.o
// (every cuda/*.cu file uses the same flags). Linked with the static runtime:
//   g++ ... runtime.o elementwise.o ... -L/usr/local/cuda/lib64 -lcudart_static -ldl -lpthread -lrt
// The static runtime opens the driver (libcuda.so.1) lazily, so a machine with no driver loads
// the addon and query() reports "no CUDA driver found (...)". Never link -lcuda.
#include <string>

#include "common.cuh"

namespace taipan::cuda {

// ---- Errors --------------------------------------------------------------------------------

static std::string error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

void throw_cuda_error(cudaError_t err, const std::string& what) {
  // Clear the runtime's last-error slot so a non-sticky error (e.g. out of memory) does not
  // resurface at the next check_launch. Sticky errors (a kernel fault) stay regardless.
  (void)cudaGetLastError();
  throw CudaError(what + ": " + error_text(err), int(err));
}

void throw_invalid(const std::string& msg) { throw CudaError(msg, -1); }

void check_launch(const char* kernel_name) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, std::string("launch of ") + kernel_name);
}

int current_sm_count() {
  constexpr int kMaxDevices = 64;
  static int cache[kMaxDevices] = {};  // 0 = not read yet; benign race (same value written)
  int dev = 0;
  TAIPAN_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < kMaxDevices && cache[dev] > 0) return cache[dev];
  int n = 0;
  TAIPAN_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev),
                    "cudaDeviceGetAttribute(multiProcessorCount)");
  if (n < 1) n = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev] = n;
  return n;
}

// ---- Query ---------------------------------------------------------------------------------

static std::string version_text(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

static Status query_impl() {
  Status s;
  s.compiled = true;
  if (cudaRuntimeGetVersion(&s.runtime_version) != cudaSuccess) s.runtime_version = 0;
  // Returns cudaSuccess with 0 when no driver is installed.
  if (cudaDriverGetVersion(&s.driver_version) != cudaSuccess) s.driver_version = 0;

  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    const std::string name = cudaGetErrorName(err);
    if (err == cudaErrorInsufficientDriver && s.driver_version == 0) {
      s.reason = "no CUDA driver found (" + name + ")";
    } else if (err == cudaErrorInsufficientDriver) {
      s.reason = "CUDA driver too old: it supports CUDA " + version_text(s.driver_version) +
                 ", this build needs " + version_text(s.runtime_version) + " (" + name + ")";
    } else if (err == cudaErrorNoDevice) {
      s.reason = "no CUDA device found (" + name + ")";
    } else {
      s.reason = "CUDA unavailable (" + error_text(err) + ")";
    }
    return s;
  }
  if (count == 0) {
    s.reason = "no CUDA device found";
    return s;
  }

  int previous = 0;
  const bool had_previous = cudaGetDevice(&previous) == cudaSuccess;
  std::string first_problem;
  for (int i = 0; i < count; i++) {
    DeviceInfo d;
    d.index = i;
    cudaDeviceProp p;
    err = cudaGetDeviceProperties(&p, i);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      if (first_problem.empty())
        first_problem = "device " + std::to_string(i) + ": " + error_text(err);
      continue;
    }
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.sm_count = p.multiProcessorCount;
    d.total_memory = p.totalGlobalMem;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      d.free_memory = free_b;
      if (total_b) d.total_memory = total_b;
    } else {
      (void)cudaGetLastError();
    }
    s.devices.push_back(std::move(d));
  }
  if (had_previous) (void)cudaSetDevice(previous);
  (void)cudaGetLastError();
  if (s.devices.empty()) {
    s.reason = "no usable CUDA device (" + first_problem + ")";
  } else {
    // The kernels are built for sm_80 and sm_90a (plus compute_90 PTX): older GPUs cannot run them.
    bool any = false;
    for (const auto& d : s.devices) any = any || d.cc_major >= 8;
    if (!any) s.reason = "no CUDA device of compute capability 8.0 or newer";
  }
  return s;
}

Status query() {
  try {
    return query_impl();
  } catch (const std::exception& e) {
    Status s;
    s.compiled = true;
    s.reason = std::string("CUDA query failed: ") + e.what();
    return s;
  } catch (...) {
    Status s;
    s.compiled = true;
    s.reason = "CUDA query failed";
    return s;
  }
}

// ---- Devices and memory ----------------------------------------------------------------------

void set_device(int index) {
  TAIPAN_CUDA_CHECK(cudaSetDevice(index), "cudaSetDevice(" + std::to_string(index) + ")");
}

int get_device() {
  int d = 0;
  TAIPAN_CUDA_CHECK(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

void* device_malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  TAIPAN_CUDA_CHECK(cudaMalloc(&p, bytes), "cudaMalloc(" + human_bytes(bytes) + ")");
  return p;
}

// Never throws: called from destructors, and at process exit the runtime may already be
// unloading (cudaErrorCudartUnloading). After a sticky error the memory is gone anyway.
void device_free(void* p) noexcept {
  if (!p) return;
  if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

void device_memset(void* p, int value, size_t bytes, void* stream) {
  if (bytes == 0) return;
  TAIPAN_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, as_stream(stream)),
                    "cudaMemsetAsync(" + human_bytes(bytes) + ")");
}

void copy_to_device(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  cudaStream_t s = as_stream(stream);
  TAIPAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s),
                    "cudaMemcpyAsync(host to device, " + human_bytes(bytes) + ")");
  // src may be pinned memory, which the copy reads asynchronously: wait so the caller may
  // reuse or free it at once.
  TAIPAN_CUDA_CHECK(cudaStreamSynchronize(s), "cudaStreamSynchronize (after host to device copy)");
}

void copy_to_host(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  cudaStream_t s = as_stream(stream);
  TAIPAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s),
                    "cudaMemcpyAsync(device to host, " + human_bytes(bytes) + ")");
  TAIPAN_CUDA_CHECK(cudaStreamSynchronize(s), "cudaStreamSynchronize (after device to host copy)");
}

void copy_device_to_device(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  TAIPAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, as_stream(stream)),
                    "cudaMemcpyAsync(device to device, " + human_bytes(bytes) + ")");
}

void copy_to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch,
                       size_t row_bytes, size_t rows, void* stream) {
  if (row_bytes == 0 || rows == 0) return;
  cudaStream_t s = as_stream(stream);
  TAIPAN_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, row_bytes, rows,
                                      cudaMemcpyHostToDevice, s),
                    "cudaMemcpy2DAsync(host to device, " + std::to_string(rows) + " rows of " +
                        human_bytes(row_bytes) + ")");
  // Same reason as copy_to_device: the caller may free src as soon as this returns.
  TAIPAN_CUDA_CHECK(cudaStreamSynchronize(s), "cudaStreamSynchronize (after host to device copy)");
}

void copy_device_to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t row_bytes, size_t rows, void* stream) {
  if (row_bytes == 0 || rows == 0) return;
  TAIPAN_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, row_bytes, rows,
                                      cudaMemcpyDeviceToDevice, as_stream(stream)),
                    "cudaMemcpy2DAsync(device to device, " + std::to_string(rows) + " rows of " +
                        human_bytes(row_bytes) + ")");
}

// ---- Streams ---------------------------------------------------------------------------------

void* stream_create() {
  cudaStream_t s = nullptr;
  TAIPAN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return static_cast<void*>(s);
}

void stream_destroy(void* stream) noexcept {  // never throws (see device_free)
  if (!stream) return;
  if (cudaStreamDestroy(as_stream(stream)) != cudaSuccess) (void)cudaGetLastError();
}

void stream_synchronize(void* stream) {
  TAIPAN_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
}

void device_synchronize() {
  TAIPAN_CUDA_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

// ---- Graphs ----------------------------------------------------------------------------------

void graph_capture_begin(void* stream) {
  if (!stream) throw_invalid("graph_capture_begin: the legacy default stream cannot be captured");
  TAIPAN_CUDA_CHECK(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal),
                    "cudaStreamBeginCapture");
}

void* graph_capture_end(void* stream) {
  cudaGraph_t graph = nullptr;
  TAIPAN_CUDA_CHECK(cudaStreamEndCapture(as_stream(stream), &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) throw_cuda_error(err, "cudaGraphInstantiate");
  return static_cast<void*>(exec);
}

void graph_capture_abort(void* stream) noexcept {
  cudaGraph_t graph = nullptr;
  // Ends the capture whatever its state; an invalidated capture returns an error and no graph.
  if (cudaStreamEndCapture(as_stream(stream), &graph) != cudaSuccess) (void)cudaGetLastError();
  if (graph) cudaGraphDestroy(graph);
}

void graph_launch(void* graph_exec, void* stream) {
  TAIPAN_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec), as_stream(stream)),
                    "cudaGraphLaunch");
}

void graph_destroy(void* graph_exec) noexcept {  // never throws (see device_free)
  if (!graph_exec) return;
  if (cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph_exec)) != cudaSuccess)
    (void)cudaGetLastError();
}

}  // namespace taipan::cuda
