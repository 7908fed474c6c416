// Rotary position embedding (in place) and the SwiGLU activation: the two elementwise steps of
// the Transformer++ block (MODEL.md section 7), on bf16 activations.
//
// rope: one block per row (a grid-stride loop over rows; blocks never outnumber 32 per SM).
// A row's half = head_dim/2 cos/sin pairs depend only on its position, so the block computes
// them once into shared memory (threads over i < half) and then rotates every head's pairs
// with them (threads over heads*half pairs, consecutive threads on consecutive columns, so the
// loads and stores of a row coalesce). The angle is computed exactly as the CPU op does: the
// frequencies theta^(-2i/head_dim) come precomputed in double from the host (the same table
// the CPU op builds), the angle pos * freq is a double product and cos/sin are evaluated in
// double, then rounded to fp32. In fp32 a position of 1e6 would lose whole radians; a few
// double sin/cos per row and column pair are cheap next to the row's memory traffic. Only the
// rotation itself is fp32, as on the CPU. The optional index (which chunk row each row of x
// is) and count (how many rows of x to process) are DEVICE tensors written by earlier ops:
// the kernel reads them, so nothing goes back to the host and the launch is graph-capturable.
//
// swiglu: out = up * silu(gate), up and gate the two halves of each row of h. A 2-D grid:
// x over 256-column blocks of a row, y over rows (a grid-stride loop past 65535 rows). The
// optional count is read by every thread from device memory (one cached load); rows at or
// past it return at once, so the launch covers M rows whatever count turns out to be.
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

constexpr int kRopeThreads = 128;
constexpr int kSwigluThreads = 256;
constexpr int64_t kMaxGridY = 65535;

struct RopeArgs {
  int64_t R, heads, half;  // rows of x, heads per row, head_dim / 2
  uint16_t* x;
  int64_t ldx;
  const int32_t *index, *count, *start;
  int64_t B, L;
  const double* freq;  // [half]
};

// cs[i] = cos(pos * freq[i]), cs[half + i] = sin(pos * freq[i]), rounded to fp32.
__device__ void rope_angles(const RopeArgs& a, double pos, float* cs) {
  for (int64_t i = threadIdx.x; i < a.half; i += blockDim.x) {
    const double ang = pos * a.freq[i];
    cs[i] = float(cos(ang));
    cs[a.half + i] = float(sin(ang));
  }
}

// Every head of row xr rotated by the angles in cs.
__device__ void rope_rotate(const RopeArgs& a, uint16_t* xr, const float* cs) {
  const int64_t hd = 2 * a.half;
  for (int64_t e = threadIdx.x; e < a.heads * a.half; e += blockDim.x) {
    const int64_t h = e / a.half, i = e - h * a.half;
    uint16_t* xh = xr + h * hd;
    const float u = bf16_to_float(xh[i]), w = bf16_to_float(xh[i + a.half]);
    const float c = cs[i], s = cs[a.half + i];
    xh[i] = float_to_bf16(u * c - w * s);
    xh[i + a.half] = float_to_bf16(w * c + u * s);
  }
}

__global__ void __launch_bounds__(kRopeThreads) rope_kernel(RopeArgs a) {
  TAIPAN_DYNAMIC_SMEM(smem);
  float* cs = reinterpret_cast<float*>(smem);  // [2 * half]
  const int64_t n = rows_to_do(a.count, a.R);
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    // Uniform over the block: the same row for every thread, so skipping it keeps the
    // barriers below matched.
    const int64_t row = a.index ? int64_t(a.index[r]) : r;
    if (row < 0 || row >= a.B * a.L) continue;
    const double pos = double(a.start[row / a.L]) + double(row % a.L);
    __syncthreads();  // the previous row's rotation has finished reading cs
    rope_angles(a, pos, cs);
    __syncthreads();
    rope_rotate(a, a.x + r * a.ldx, cs);
  }
}

__global__ void __launch_bounds__(kSwigluThreads)
    swiglu_kernel(int64_t M, int64_t F, const uint16_t* __restrict__ h, int64_t ldh,
                  uint16_t* __restrict__ out, const int32_t* count) {
  const int64_t j = int64_t(blockIdx.x) * kSwigluThreads + threadIdx.x;
  if (j >= F) return;
  const int64_t n = rows_to_do(count, M);
  for (int64_t m = blockIdx.y; m < n; m += gridDim.y) {
    const uint16_t* hr = h + m * ldh;
    const float up = bf16_to_float(hr[j]), gate = bf16_to_float(hr[F + j]);
    out[m * F + j] = float_to_bf16(up * silu_f(gate));
  }
}

}  // namespace

void rope(int64_t R, int64_t cols, int64_t head_dim, uint16_t* x, int64_t ldx,
          const int32_t* index, const int32_t* count, const int32_t* start, int64_t B, int64_t L,
          const double* freq, void* stream) {
  if (head_dim < 2 || head_dim % 2 != 0 || head_dim > kRopeMaxHeadDim || cols % head_dim != 0)
    throw_invalid("rope: head_dim " + std::to_string(head_dim) + " must be even, at most " +
                  std::to_string(kRopeMaxHeadDim) + " and divide the " + std::to_string(cols) +
                  " columns");
  if (L < 1 || B < 0) throw_invalid("rope: L must be positive and B not negative");
  if (R <= 0 || cols == 0 || B == 0) return;
  RopeArgs a{R, cols / head_dim, head_dim / 2, x, ldx, index, count, start, B, L, freq};
  const size_t smem = size_t(head_dim) * sizeof(float);
  rope_kernel<<<grid_for(R, 1), kRopeThreads, smem, as_stream(stream)>>>(a);
  check_launch("rope_kernel");
}

void swiglu(int64_t M, int64_t F, const uint16_t* h, int64_t ldh, uint16_t* out,
            const int32_t* count, void* stream) {
  if (M <= 0 || F <= 0) return;
  const dim3 grid{unsigned(ceil_div(F, kSwigluThreads)), unsigned(std::min(M, kMaxGridY))};
  swiglu_kernel<<<grid, kSwigluThreads, 0, as_stream(stream)>>>(M, F, h, ldh, out, count);
  check_launch("swiglu_kernel");
}

}  // namespace taipan::cuda
