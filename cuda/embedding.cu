// Embedding lookup into the fp32 residual stream (MODEL.md section 4: r = E[ids]).
//
//   out[i, c] = float(E[ids[i], c])   for i < n, c < d
//
// E may be bf16, f16 or f32 (the CUDA backend keeps it bf16: it doubles as the tied LM head).
// Ids are data written after the op was planned, so the kernel checks them where it reads
// them: an id outside [0, vocab) is clamped into the range (no read outside the table) and
// thread 0 of the block records the lowest bad position in the caller's error word with
// atomicMin. The host learns of it after the stream has run, with no host step in between, so
// a decode step that starts with this kernel can be replayed as a CUDA graph.
// Work split: one block per token (grid-stride over tokens), threads across the d channels so
// that reads of the embedding row and writes of the output row coalesce. When d % 4 == 0 and
// both pointers are aligned for 4-wide vectors each thread moves 4 channels per access (8 B of
// bf16 in, 16 B of fp32 out); otherwise one channel per access.
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

__device__ __forceinline__ float load_float(const uint16_t* p, DType t) {
  return t == DType::BF16 ? bf16_to_float(*p) : f16_to_float(*p);
}

// T = uint16_t (bf16 or f16, told apart by is_bf16) or float. VEC = 1 or 4 channels per access.
// The table row for token i: ids[i] clamped into [0, vocab). A bad id is recorded as
// (i << 32) | uint32(id) (kernels.h: embedding_error), so atomicMin keeps the lowest position.
__device__ __forceinline__ int64_t checked_row(const int32_t* ids, int64_t i, int64_t vocab,
                                               unsigned long long* error) {
  const int32_t id = ids[i];
  if (id >= 0 && id < vocab) return id;
  if (error && threadIdx.x == 0)
    atomicMin(error, (static_cast<unsigned long long>(i) << 32) | static_cast<uint32_t>(id));
  return id < 0 ? 0 : vocab - 1;
}

template <class T, int VEC>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, int64_t n,
                                 const T* __restrict__ E, bool is_bf16, int64_t d, int64_t vocab,
                                 float* __restrict__ out, unsigned long long* error) {
  const int64_t nvec = d / VEC;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const T* row = E + checked_row(ids, i, vocab, error) * d;
    float* orow = out + i * d;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float f[VEC];
      if constexpr (sizeof(T) == 4) {
        if constexpr (VEC == 4) {
          const float4 a = reinterpret_cast<const float4*>(row)[v];
          f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
        } else {
          f[0] = row[v];
        }
      } else {
        const DType t = is_bf16 ? DType::BF16 : DType::F16;
        if constexpr (VEC == 4) {
          const uint2 a = reinterpret_cast<const uint2*>(row)[v];
          f[0] = load_float(reinterpret_cast<const uint16_t*>(&a.x), t);
          f[1] = load_float(reinterpret_cast<const uint16_t*>(&a.x) + 1, t);
          f[2] = load_float(reinterpret_cast<const uint16_t*>(&a.y), t);
          f[3] = load_float(reinterpret_cast<const uint16_t*>(&a.y) + 1, t);
        } else {
          f[0] = load_float(row + v, t);
        }
      }
      if constexpr (VEC == 4) {
        reinterpret_cast<float4*>(orow)[v] = make_float4(f[0], f[1], f[2], f[3]);
      } else {
        orow[v] = f[0];
      }
    }
  }
}

template <class T>
void launch(const int32_t* ids, int64_t n, const T* E, bool is_bf16, int64_t d, int64_t vocab,
            float* out, unsigned long long* error, cudaStream_t s) {
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(E) % (4 * sizeof(T)) == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t per_row = vec ? d / 4 : d;
  int threads = int(std::min<int64_t>(256, ceil_div(per_row, 32) * 32));
  const unsigned blocks = unsigned(std::min<int64_t>(n, int64_t(1) << 30));
  if (vec) embedding_kernel<T, 4><<<blocks, threads, 0, s>>>(ids, n, E, is_bf16, d, vocab, out, error);
  else embedding_kernel<T, 1><<<blocks, threads, 0, s>>>(ids, n, E, is_bf16, d, vocab, out, error);
}

}  // namespace

void embedding(const int32_t* ids, int64_t n, const void* E, DType edt, int64_t d, int64_t vocab,
               float* out, unsigned long long* error, void* stream) {
  if (n <= 0 || d <= 0) return;
  if (vocab < 1 || vocab > INT32_MAX || n > INT32_MAX)
    throw_invalid("embedding: vocab must be in [1, 2^31) and n below 2^31");
  cudaStream_t s = as_stream(stream);
  switch (edt) {
    case DType::BF16:
      launch(ids, n, static_cast<const uint16_t*>(E), true, d, vocab, out, error, s);
      break;
    case DType::F16:
      launch(ids, n, static_cast<const uint16_t*>(E), false, d, vocab, out, error, s);
      break;
    case DType::F32:
      launch(ids, n, static_cast<const float*>(E), false, d, vocab, out, error, s);
      break;
    default:
      throw_invalid(std::string("embedding: unsupported table dtype ") + dtype_name(edt));
  }
  check_launch("embedding_kernel");
}

}  // namespace taipan::cuda
