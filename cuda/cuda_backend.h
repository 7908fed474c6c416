// The CUDA backend's host interface: plain C++ (no CUDA headers), so g++-compiled code can
// include it whether or not CUDA was compiled in.
//
// Build: when nvcc is found the build compiles cuda/*.cu and defines TAIPAN_WITH_CUDA=1;
// otherwise it compiles cuda/cuda_stub.cpp instead, where query() reports compiled=false and
// every other function throws CudaError("... built without CUDA ...").
//
// The addon links the static CUDA runtime (cudart_static), which loads the driver (libcuda)
// lazily at the first call; with no driver installed query() still works and says why there
// is no device. Nothing here links libcuda directly.
//
// Conventions:
//   - `stream` is a cudaStream_t passed as void*; nullptr means the legacy default stream.
//   - Device pointers are plain void* / typed pointers into device memory.
//   - bf16 values are stored as uint16_t (the top 16 bits of an IEEE float; see csrc/dtype.h).
//   - Every failure throws CudaError (except the three *_free/*_destroy functions), whose message names the CUDA call and the error, e.g.
//     "cudaMalloc(1.5 GiB): cudaErrorMemoryAllocation: out of memory".
//   - The kernels (cuda/kernels.h) operate on the device that is current for the calling
//     thread (set_device); all pointers and the stream must belong to that device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace taipan::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;  // compute capability, e.g. 9.0 for H100
  size_t total_memory = 0, free_memory = 0;  // bytes
  int sm_count = 0;
};

struct Status {
  bool compiled = false;    // CUDA support compiled into this build
  int runtime_version = 0;  // e.g. 13000 for CUDA 13.0 (the runtime linked in); 0 if not compiled
  int driver_version = 0;   // highest CUDA version the installed driver supports; 0 = no driver
  std::vector<DeviceInfo> devices;
  // Empty when at least one device is usable; otherwise why not, e.g.
  // "no CUDA driver found (cudaErrorInsufficientDriver)" or "built without CUDA ...".
  std::string reason;
};

class CudaError : public std::runtime_error {
 public:
  explicit CudaError(const std::string& msg, int code = -1)
      : std::runtime_error(msg), code_(code) {}
  // The cudaError_t value (as int), or -1 when the error did not come from the CUDA runtime
  // (e.g. invalid arguments to a launcher, or a build without CUDA).
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// Never throws; safe to call with no driver and no device. Creates a context on each device
// (to read its free memory) and restores the calling thread's current device afterwards.
Status query();

// Device selection for the calling thread (cudaSetDevice / cudaGetDevice).
void set_device(int index);
int get_device();

// Device memory. device_malloc(0) returns nullptr; device_free(nullptr) is a no-op.
// device_free, stream_destroy and graph_destroy never throw (they run in destructors and at
// process exit); their errors are dropped.
void* device_malloc(size_t bytes);
void device_free(void* p) noexcept;
// Fills `bytes` bytes at p with the byte `value`, asynchronously on `stream`.
void device_memset(void* p, int value, size_t bytes, void* stream);

// Copies. copy_to_device returns once `src` may be reused (it waits for the copy);
// copy_to_host returns once `dst` holds the data (it waits for the stream).
// copy_device_to_device is asynchronous on `stream`.
void copy_to_device(void* dst, const void* src, size_t bytes, void* stream);
void copy_to_host(void* dst, const void* src, size_t bytes, void* stream);
void copy_device_to_device(void* dst, const void* src, size_t bytes, void* stream);
// Strided copies (cudaMemcpy2DAsync): `rows` rows of `row_bytes` bytes, row r read at
// src + r*spitch and written at dst + r*dpitch (pitches >= row_bytes). They wait like their
// plain counterparts above: copy_to_device_2d returns once src may be reused,
// copy_device_to_device_2d is asynchronous on `stream`. For views with a row stride.
void copy_to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch,
                       size_t row_bytes, size_t rows, void* stream);
void copy_device_to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t row_bytes, size_t rows, void* stream);

// Streams (non-blocking with respect to the legacy default stream).
void* stream_create();
void stream_destroy(void* stream) noexcept;
void stream_synchronize(void* stream);
// Waits for every device operation (all streams) on the current device.
void device_synchronize();

// CUDA graphs, for decode: capture a sequence of launches on `stream` once, replay it per
// token (csrc/stream.cpp does this for launched stream graphs). Capture is thread-local
// (cudaStreamCaptureModeThreadLocal): between capture_begin and capture_end the calling thread
// may not allocate, free or synchronise (the runtime fails such a call and invalidates the
// capture), while other threads (the JavaScript thread allocating tensors) are unaffected.
// The launchers in kernels.h never allocate (they take workspace from the caller), so they
// can be captured. graph_capture_end instantiates the captured graph and returns the
// executable graph handle; it must be called on the thread that began the capture.
// graph_capture_abort ends a capture and drops what it recorded (after a failure while
// capturing; never throws).
void graph_capture_begin(void* stream);
void* graph_capture_end(void* stream);
void graph_capture_abort(void* stream) noexcept;
void graph_launch(void* graph_exec, void* stream);
void graph_destroy(void* graph_exec) noexcept;

// One elementwise family to prove the path (cuda/elementwise.cu). All asynchronous on
// `stream`; n may be 0. Any alignment works (a 4-wide vector path is used when aligned).
void convert_f32_to_bf16(const float* in, uint16_t* out, int64_t n, void* stream);  // RNE
void convert_bf16_to_f32(const uint16_t* in, float* out, int64_t n, void* stream);
void convert_f16_to_bf16(const uint16_t* in, uint16_t* out, int64_t n, void* stream);  // RNE
// out = silu(in) = in / (1 + exp(-in)), computed in fp32, rounded to bf16. out may alias in.
void silu_bf16(const uint16_t* in, uint16_t* out, int64_t n, void* stream);

}  // namespace taipan::cuda
