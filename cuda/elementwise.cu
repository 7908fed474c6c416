// Elementwise kernels: dtype conversions and SiLU on bf16.
//
//   convert_f32_to_bf16: out[i] = bf16_rne(in[i])
//   convert_bf16_to_f32: out[i] = float(in[i])           (exact)
//   convert_f16_to_bf16: out[i] = bf16_rne(float(in[i])) (for loading f16 weights)
//   silu_bf16:           out[i] = bf16_rne(v / (1 + exp(-v))), v = float(in[i])
//
// Work split: a grid-stride loop, 256 threads per block, at most 32 blocks per SM. When n is a
// multiple of 4 and both pointers are aligned for 4-wide vectors (16 B for fp32, 8 B for 16-bit)
// each thread moves 4 elements per access (memory bound: wide accesses coalesce into fewer
// transactions); otherwise one element per access. Any n and alignment are accepted.
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"

namespace taipan::cuda {
namespace {

constexpr int kThreads = 256;

struct F32ToBf16 {
  using In = float;
  using Out = uint16_t;
  __device__ static Out op(In v) { return float_to_bf16(v); }
};
struct Bf16ToF32 {
  using In = uint16_t;
  using Out = float;
  __device__ static Out op(In v) { return bf16_to_float(v); }
};
struct F16ToBf16 {
  using In = uint16_t;
  using Out = uint16_t;
  __device__ static Out op(In v) { return float_to_bf16(f16_to_float(v)); }
};
struct SiluBf16 {
  using In = uint16_t;
  using Out = uint16_t;
  __device__ static Out op(In v) { return float_to_bf16(silu_f(bf16_to_float(v))); }
};

// Four elements of T as one aligned vector access.
template <class T> struct alignas(4 * sizeof(T)) Vec4 { T v[4]; };

template <class Op>
__global__ void map_scalar_kernel(const typename Op::In* __restrict__ in,
                                  typename Op::Out* __restrict__ out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = Op::op(in[i]);
}

// n4 = n / 4 vectors. in and out may alias (each thread reads a vector before writing it).
template <class Op>
__global__ void map_vec4_kernel(const Vec4<typename Op::In>* in, Vec4<typename Op::Out>* out,
                                int64_t n4) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) {
    Vec4<typename Op::In> a = in[i];
    Vec4<typename Op::Out> b;
#pragma unroll
    for (int j = 0; j < 4; j++) b.v[j] = Op::op(a.v[j]);
    out[i] = b;
  }
}

template <class Op>
void launch_map(const char* name, const typename Op::In* in, typename Op::Out* out, int64_t n,
                void* stream) {
  if (n <= 0) return;
  if (!in || !out) throw_invalid(std::string(name) + ": null pointer");
  using In = typename Op::In;
  using Out = typename Op::Out;
  const bool aligned = n % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(in) % sizeof(Vec4<In>) == 0 &&
                       reinterpret_cast<uintptr_t>(out) % sizeof(Vec4<Out>) == 0;
  if (aligned) {
    const int64_t n4 = n / 4;
    map_vec4_kernel<Op><<<grid_for(n4, kThreads), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const Vec4<In>*>(in), reinterpret_cast<Vec4<Out>*>(out), n4);
  } else {
    map_scalar_kernel<Op><<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(in, out, n);
  }
  check_launch(name);
}

}  // namespace

void convert_f32_to_bf16(const float* in, uint16_t* out, int64_t n, void* stream) {
  launch_map<F32ToBf16>("convert_f32_to_bf16", in, out, n, stream);
}
void convert_bf16_to_f32(const uint16_t* in, float* out, int64_t n, void* stream) {
  launch_map<Bf16ToF32>("convert_bf16_to_f32", in, out, n, stream);
}
void convert_f16_to_bf16(const uint16_t* in, uint16_t* out, int64_t n, void* stream) {
  launch_map<F16ToBf16>("convert_f16_to_bf16", in, out, n, stream);
}
void silu_bf16(const uint16_t* in, uint16_t* out, int64_t n, void* stream) {
  launch_map<SiluBf16>("silu_bf16", in, out, n, stream);
}

}  // namespace taipan::cuda
