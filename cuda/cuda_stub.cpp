// Compiled INSTEAD of cuda/*.cu when nvcc was not found at build time (TAIPAN_WITH_CUDA is
// then not defined). query() reports that CUDA is not compiled in; every other function of
// cuda_backend.h and kernels.h throws CudaError, so callers that forget to check query()
// get a clear message rather than a link error or a crash.
#include <string>

#include "cuda_backend.h"
#include "kernels.h"

namespace taipan::cuda {
namespace {
const char* const kReason = "built without CUDA (nvcc was not found at build time)";

[[noreturn]] void unavailable(const char* fn) {
  throw CudaError(std::string("taipan::cuda::") + fn + ": CUDA backend unavailable: " + kReason);
}
}  // namespace

Status query() {
  Status s;
  s.compiled = false;
  s.reason = kReason;
  return s;
}

void set_device(int) { unavailable("set_device"); }
int get_device() { unavailable("get_device"); }
void* device_malloc(size_t) { unavailable("device_malloc"); }
void device_free(void*) noexcept {}  // nothing can have been allocated
void device_memset(void*, int, size_t, void*) { unavailable("device_memset"); }
void copy_to_device(void*, const void*, size_t, void*) { unavailable("copy_to_device"); }
void copy_to_host(void*, const void*, size_t, void*) { unavailable("copy_to_host"); }
void copy_device_to_device(void*, const void*, size_t, void*) {
  unavailable("copy_device_to_device");
}
void copy_to_device_2d(void*, size_t, const void*, size_t, size_t, size_t, void*) {
  unavailable("copy_to_device_2d");
}
void copy_device_to_device_2d(void*, size_t, const void*, size_t, size_t, size_t, void*) {
  unavailable("copy_device_to_device_2d");
}
void* stream_create() { unavailable("stream_create"); }
void stream_destroy(void*) noexcept {}
void stream_synchronize(void*) { unavailable("stream_synchronize"); }
void device_synchronize() { unavailable("device_synchronize"); }
void graph_capture_begin(void*) { unavailable("graph_capture_begin"); }
void* graph_capture_end(void*) { unavailable("graph_capture_end"); }
void graph_launch(void*, void*) { unavailable("graph_launch"); }
void graph_capture_abort(void*) noexcept {}
void graph_destroy(void*) noexcept {}

void convert_f32_to_bf16(const float*, uint16_t*, int64_t, void*) {
  unavailable("convert_f32_to_bf16");
}
void convert_bf16_to_f32(const uint16_t*, float*, int64_t, void*) {
  unavailable("convert_bf16_to_f32");
}
void convert_f16_to_bf16(const uint16_t*, uint16_t*, int64_t, void*) {
  unavailable("convert_f16_to_bf16");
}
void silu_bf16(const uint16_t*, uint16_t*, int64_t, void*) { unavailable("silu_bf16"); }

void gemm(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, void*, int64_t,
          DType, bool, void*) {
  unavailable("gemm");
}
void gemm_tensor_core(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*,
                      void*, int64_t, DType, bool, void*) {
  unavailable("gemm_tensor_core");
}
void gemm_wgmma(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, void*,
                int64_t, DType, bool, void*) {
  unavailable("gemm_wgmma");
}
std::string gemm_wgmma_unavailable_reason() { return kReason; }
void gemm_small_m(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, void*,
                  int64_t, DType, bool, void*) {
  unavailable("gemm_small_m");
}
void gemm_reference(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, void*,
                    int64_t, DType, bool, void*) {
  unavailable("gemm_reference");
}
void gemm_count(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, void*,
                int64_t, DType, bool, const int32_t*, void*) {
  unavailable("gemm_count");
}
void embedding(const int32_t*, int64_t, const void*, DType, int64_t, int64_t, float*,
               unsigned long long*, void*) {
  unavailable("embedding");
}
void rmsnorm(int64_t, int64_t, float*, const uint16_t*, const float*, float, uint16_t*, void*) {
  unavailable("rmsnorm");
}
void rmsnorm_f32(int64_t, int64_t, const float*, const float*, float, float*, void*) {
  unavailable("rmsnorm_f32");
}
void gated_rmsnorm(int64_t, int64_t, int64_t, const uint16_t*, const uint16_t*, int64_t,
                   const float*, float, uint16_t*, void*) {
  unavailable("gated_rmsnorm");
}
void conv1d_silu(int64_t, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const float*,
                 const float*, const float*, uint16_t*, float*, void*) {
  unavailable("conv1d_silu");
}
void conv1d_update(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const float*,
                   const float*, float*, uint16_t*, void*) {
  unavailable("conv1d_update");
}
void conv1d_update_seqs(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const float*,
                        const float*, float* const*, uint16_t*, void*) {
  unavailable("conv1d_update_seqs");
}
size_t ssd_scan_workspace_bytes(const SsdDims&) { unavailable("ssd_scan_workspace_bytes"); }
void ssd_scan(const SsdDims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
              const uint16_t*, int64_t, const uint16_t*, int64_t, const float*, const float*,
              const float*, const float*, uint16_t*, float*, void*, void*) {
  unavailable("ssd_scan");
}
void ssd_step(const SsdDims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
              const uint16_t*, int64_t, const uint16_t*, int64_t, const float*, const float*,
              const float*, float*, uint16_t*, void*) {
  unavailable("ssd_step");
}
void ssd_step_seqs(const SsdDims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
                   const uint16_t*, int64_t, const uint16_t*, int64_t, const float*,
                   const float*, const float*, float* const*, uint16_t*, void*) {
  unavailable("ssd_step_seqs");
}
void mamba1_scan(const Mamba1Dims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
                 const uint16_t*, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                 const float*, const float*, const float*, float*, uint16_t*, void*) {
  unavailable("mamba1_scan");
}
void mamba1_scan_seqs(const Mamba1Dims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
                      const uint16_t*, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                      const float*, const float*, const float*, float* const*, uint16_t*, void*) {
  unavailable("mamba1_scan_seqs");
}

void rope(int64_t, int64_t, int64_t, uint16_t*, int64_t, const int32_t*, const int32_t*,
          const int32_t*, int64_t, int64_t, const double*, void*) {
  unavailable("rope");
}
void swiglu(int64_t, int64_t, const uint16_t*, int64_t, uint16_t*, const int32_t*, void*) {
  unavailable("swiglu");
}
size_t attention_workspace_bytes(const AttnDims&, int64_t) {
  unavailable("attention_workspace_bytes");
}
void attention(const AttnDims&, const uint16_t*, int64_t, const uint16_t*, int64_t,
               const uint16_t*, int64_t, const int32_t*, const KvCacheTable&, int64_t, uint16_t*,
               int64_t, void*, size_t, void*) {
  unavailable("attention");
}
void kv_append(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
               const int32_t*, const KvCacheTable&, void*) {
  unavailable("kv_append");
}
void sal_gate(int64_t, int64_t, float*, const uint16_t*, const float*, const float*, const float*, float,
              uint16_t*, float*, int32_t*, int32_t*, int32_t*, uint16_t*, void*) {
  unavailable("sal_gate");
}
size_t sal_attention_workspace_bytes(const SalAttnDims&) {
  unavailable("sal_attention_workspace_bytes");
}
void sal_attention(const SalAttnDims&, const uint16_t*, int64_t, const int32_t*, const int32_t*,
                   const uint16_t*, int64_t, const uint16_t*, int64_t, const int32_t*, const int32_t*,
                   const SalCacheTable&, uint16_t*, int64_t, void*, size_t, void*) {
  unavailable("sal_attention");
}
void sal_kv_write(int64_t, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                  const int32_t*, const int32_t*, const SalCacheTable&, void*) {
  unavailable("sal_kv_write");
}
void sal_mix(int64_t, int64_t, float*, int64_t, const uint16_t*, int64_t, const int32_t*, const int32_t*,
             const float*, const uint16_t*, int64_t, bool, void*) {
  unavailable("sal_mix");
}

}  // namespace taipan::cuda
