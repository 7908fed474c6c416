// Shared helpers for the .cu files of the CUDA backend (nvcc only; never included by g++ code).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "../csrc/human_bytes.h"
#include "cuda_backend.h"

namespace taipan::cuda {

// ---- Errors (defined in runtime.cu) --------------------------------------------------------
// Throws CudaError("<what>: <cudaErrorName>: <description>").
[[noreturn]] void throw_cuda_error(cudaError_t err, const std::string& what);
// Throws CudaError(msg) with code -1 (bad arguments to a launcher).
[[noreturn]] void throw_invalid(const std::string& msg);
// After a kernel launch: throws if the launch failed (bad configuration, no device, ...).
void check_launch(const char* kernel_name);

#define TAIPAN_CUDA_CHECK(expr, what)                                  \
  do {                                                                 \
    cudaError_t taipan_err_ = (expr);                                  \
    if (taipan_err_ != cudaSuccess) ::taipan::cuda::throw_cuda_error(taipan_err_, (what)); \
  } while (0)

// Dynamic shared memory of a kernel (the CPU emulator in cuda/emu/ provides its own).
#ifdef TAIPAN_CUDA_EMU
#define TAIPAN_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
#else
#define TAIPAN_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Raises `Kernel`'s dynamic shared-memory limit to `bytes` on the current device, once per
// device (a kernel launched with more than the default 48 KB needs it); later calls cost one
// atomic load. One cache per kernel, since the kernel is a template argument.
template <auto Kernel>
void raise_smem_limit(int bytes, const char* kernel_name) {
  constexpr int kMaxDevices = 64;
  static std::atomic<bool> done[kMaxDevices];
  const int dev = get_device();
  if (dev >= 0 && dev < kMaxDevices && done[dev].load(std::memory_order_acquire)) return;
  TAIPAN_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
                    std::string("cudaFuncSetAttribute(") + kernel_name + ", " + human_bytes(size_t(bytes)) +
                        " shared memory)");
  if (dev >= 0 && dev < kMaxDevices) done[dev].store(true, std::memory_order_release);
}

// Number of SMs of the current device (cached per device; used to size grid-stride launches).
int current_sm_count();

// Blocks for a grid-stride loop over `work` items with `per_block` items per block per pass.
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  const int64_t cap = int64_t(current_sm_count()) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return unsigned(blocks);
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows a launch sized for R rows processes: min(max(*count, 0), R), where count is a DEVICE
// i32 an earlier op wrote (how many rows it compacted to the top), or R without a count.
__device__ __forceinline__ int64_t rows_to_do(const int32_t* count, int64_t R) {
  if (!count) return R;
  const int64_t n = *count;
  return n < 0 ? 0 : n > R ? R : n;
}

// ---- Device-side numeric helpers ------------------------------------------------------------
__device__ __forceinline__ float bf16_to_float(uint16_t v) {
  return __uint_as_float(uint32_t(v) << 16);
}
// Round to nearest even (NaN stays NaN), same as taipan::f32_to_bf16 on the host.
__device__ __forceinline__ uint16_t float_to_bf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ float f16_to_float(uint16_t v) {
  return __half2float(__ushort_as_half(v));
}
__device__ __forceinline__ float silu_f(float v) { return v / (1.0f + __expf(-v)); }
// softplus(v) = log(1 + exp(v)), identity above 20 (mamba_ssm's threshold).
__device__ __forceinline__ float softplus_f(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the
// result. `scratch` is __shared__ float[32]. Contains __syncthreads(): call from all threads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

}  // namespace taipan::cuda
