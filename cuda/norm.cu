// RMSNorm kernels (MODEL.md sections 4, 5, 10). Statistics and arithmetic are fp32.
//
// rmsnorm:       [r += delta]  then  out = bf16(r * rsqrt(mean(r^2) + eps) * w)
//                The residual stream r is fp32 and is updated in place (the residual add of
//                the previous layer is fused here); delta (a layer's output) and out are bf16.
// rmsnorm_f32:   out = r * rsqrt(mean(r^2) + eps) * w, all fp32, r untouched.
// gated_rmsnorm: v = y * silu(z);  out = bf16(v * rsqrt(mean_group(v^2) + eps) * w), where the
//                mean runs over each group of d/G contiguous channels (gate before norm,
//                mamba_ssm's norm_before_gate=False).
//
// Work split: one block per row (per row and group for the gated norm), 256 threads (fewer
// when the row is short) striding over the channels, so loads and stores coalesce. Pass 1
// computes the values and their sum of squares (block reduction through shared memory); pass 2
// re-reads them (each thread touches only the channels it handled in pass 1, so the in-place
// residual update and out aliasing y are safe) and writes the normalised output. A row is at
// most a few KB and stays in L1/L2 between the passes.
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

__device__ __forceinline__ void store_out(uint16_t* p, float v) { *p = float_to_bf16(v); }
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }

// HAS_DELTA: r += delta first (r written back). OutT: uint16_t (bf16) or float.
template <bool HAS_DELTA, class OutT>
__global__ void rmsnorm_kernel(int64_t d, float* __restrict__ r, const uint16_t* __restrict__ delta,
                               const float* __restrict__ w, float eps, OutT* __restrict__ out) {
  __shared__ float scratch[32];
  const int64_t m = blockIdx.x;
  float* row = r + m * d;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float v = row[c];
    if constexpr (HAS_DELTA) {
      v += bf16_to_float(delta[m * d + c]);
      row[c] = v;
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / float(d) + eps);
  OutT* orow = out + m * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) store_out(orow + c, row[c] * inv * w[c]);
}

// grid (M, G): block (m, g) normalises channels [g*gs, (g+1)*gs) of row m, gs = d / G.
__global__ void gated_rmsnorm_kernel(int64_t d, int64_t gs, const uint16_t* y,
                                     const uint16_t* __restrict__ z, int64_t ldz,
                                     const float* __restrict__ w, float eps, uint16_t* out) {
  __shared__ float scratch[32];
  const int64_t m = blockIdx.x;
  const int64_t c0 = int64_t(blockIdx.y) * gs;
  const uint16_t* yrow = y + m * d + c0;
  const uint16_t* zrow = z + m * ldz + c0;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < gs; c += blockDim.x) {
    const float v = bf16_to_float(yrow[c]) * silu_f(bf16_to_float(zrow[c]));
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / float(gs) + eps);
  uint16_t* orow = out + m * d + c0;
  for (int64_t c = threadIdx.x; c < gs; c += blockDim.x) {
    const float v = bf16_to_float(yrow[c]) * silu_f(bf16_to_float(zrow[c]));
    orow[c] = float_to_bf16(v * inv * w[c0 + c]);
  }
}

int threads_for(int64_t n) { return int(std::min<int64_t>(256, std::max<int64_t>(32, ceil_div(n, 32) * 32))); }

void check_rows(const char* fn, int64_t M) {
  if (M > int64_t(INT32_MAX)) throw_invalid(std::string(fn) + ": too many rows");
}

}  // namespace

void rmsnorm(int64_t M, int64_t d, float* r, const uint16_t* delta, const float* w, float eps,
             uint16_t* out, void* stream) {
  if (M <= 0 || d <= 0) return;
  check_rows("rmsnorm", M);
  const int t = threads_for(d);
  if (delta)
    rmsnorm_kernel<true, uint16_t><<<unsigned(M), t, 0, as_stream(stream)>>>(d, r, delta, w, eps, out);
  else
    rmsnorm_kernel<false, uint16_t><<<unsigned(M), t, 0, as_stream(stream)>>>(d, r, nullptr, w, eps, out);
  check_launch("rmsnorm_kernel");
}

void rmsnorm_f32(int64_t M, int64_t d, const float* r, const float* w, float eps, float* out,
                 void* stream) {
  if (M <= 0 || d <= 0) return;
  check_rows("rmsnorm_f32", M);
  // HAS_DELTA = false never writes r, so dropping const is safe.
  rmsnorm_kernel<false, float><<<unsigned(M), threads_for(d), 0, as_stream(stream)>>>(
      d, const_cast<float*>(r), nullptr, w, eps, out);
  check_launch("rmsnorm_kernel");
}

void gated_rmsnorm(int64_t M, int64_t d, int64_t G, const uint16_t* y, const uint16_t* z,
                   int64_t ldz, const float* w, float eps, uint16_t* out, void* stream) {
  if (M <= 0 || d <= 0) return;
  check_rows("gated_rmsnorm", M);
  if (G <= 0 || G > 65535 || d % G != 0)
    throw_invalid("gated_rmsnorm: d must be a multiple of G (1 <= G <= 65535)");
  const int64_t gs = d / G;
  const dim3 grid{unsigned(M), unsigned(G), 1};
  gated_rmsnorm_kernel<<<grid, threads_for(gs), 0, as_stream(stream)>>>(d, gs, y, z, ldz, w, eps, out);
  check_launch("gated_rmsnorm_kernel");
}

}  // namespace taipan::cuda
