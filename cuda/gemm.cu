// GEMM for the linear layers: y[m, n] (+)= sum_k x[m, k] * W[n, k]  (y = x W^T, nn.Linear).
// x and W are bf16, accumulation is fp32, y is bf16 (rounded RNE) or fp32 (optionally added to).
//
// Three kernels here, picked by gemm(), and a fourth in gemm_sm90.cu: on a compute capability
// 9.0 device (H100) with sm_90a code in the build, prefill shapes (M > kGemmSmallM) go to the
// Hopper kernel there (bulk tensor copies + wgmma, 128 x 256 tiles) instead of kernel 1.
//
// 1. Tensor-core kernel (M > kGemmSmallM: prefill). Block tile 128 x 128, K step 32, 256
//    threads = 8 warps as 2 (M) x 4 (N), each warp a 64 x 32 tile = 4 x 4 mma.sync
//    m16n8k16 (bf16 in, fp32 accumulators in registers: 64 per thread). Both operands are
//    K-contiguous (x row-major, W [N, K]), which is exactly mma's row.col layout, so fragments
//    come straight from shared memory with ldmatrix (no transposes). Tiles are staged through a
//    4-deep cp.async pipeline (16-byte copies, zero-filled past M, N, K), so global loads of
//    later K steps overlap the mma of the current one. A shared-memory tile row is 32 bf16 =
//    64 bytes = four 16-byte chunks; chunk c of row r is stored at chunk c ^ ((r >> 1) & 3),
//    which makes both the cp.async stores and every 8-row ldmatrix read conflict-free.
//    Grid (ceil(N/128), ceil(M/128)). Shared memory 64 KB (dynamic; the attribute is raised
//    once per device).
//    Needs: K % 8 == 0, ldx % 8 == 0, x and W 16-byte aligned (each 16-byte chunk is wholly
//    inside or outside the matrix). M, N arbitrary.
//
// 2. Small-M kernel (M <= kGemmSmallM: decode, small batches). Bound by reading W once, so it
//    streams W in 16-byte loads: each warp owns 2 output columns n (2 rows of W), its lanes
//    stride over K in chunks of 8, and it keeps MT (1, 2, 4 or 8) rows of x in flight, so one
//    pass over W serves MT rows; lanes are reduced with shuffles. x rows are read through the
//    read-only cache (every warp of the block reads the same x). 8 warps per block; grid
//    (ceil(N/16), ceil(M/MT)): for M > 8 each group of 8 rows re-reads W (mostly from L2).
//    Needs: K % 8 == 0, ldx % 8 == 0, x and W 16-byte aligned. M, N arbitrary.
//
// 3. Reference kernel: one thread per output, scalar loads; any shape and alignment. Used
//    when the alignment needs above are not met, and by tests as the ground truth.
//
// Row count on the device (gemm_count, the `count` of the linear op): every kernel takes a
// Rows argument and first works out how many rows it computes, M or clamp(*count, 0, M), and
// whole blocks past that return before touching memory. The launch still covers M rows, so
// no host step reads the count and the launch can be captured into a CUDA graph. gemm picks
// the small-M kernel for M <= kGemmSmallM, so with a count both kernels are launched, each
// limited to the counts it would have been picked for: the result is bit for bit that of
// gemm on the first count rows.
//
// Flags: see the comment at the top of runtime.cu (sm_80 and later: mma.sync, ldmatrix and
// cp.async are sm_80 instructions; the sm_90a build runs the same code on H100).
#include "common.cuh"
#include "gemm_out.cuh"
#include "gemm_sm90.h"
#include "kernels.h"
#ifdef TAIPAN_CUDA_EMU
#include "emu/emu_asm.h"
#endif

namespace taipan::cuda {
namespace {

// Two bf16 packed in a 32-bit word -> two floats (low half is the lower address).
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  float s = bf_lo(a.x) * bf_lo(b.x);
  s = fmaf(bf_hi(a.x), bf_hi(b.x), s);
  s = fmaf(bf_lo(a.y), bf_lo(b.y), s);
  s = fmaf(bf_hi(a.y), bf_hi(b.y), s);
  s = fmaf(bf_lo(a.z), bf_lo(b.z), s);
  s = fmaf(bf_hi(a.z), bf_hi(b.z), s);
  s = fmaf(bf_lo(a.w), bf_lo(b.w), s);
  s = fmaf(bf_hi(a.w), bf_hi(b.w), s);
  return s;
}

// ---- 1. Tensor-core kernel ------------------------------------------------------------------
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 4, kTcThreads = 256;
constexpr int kTileBytes = kBM * kBK * 2;            // one operand tile: 8 KB (kBM == kBN)
constexpr int kStageBytes = 2 * kTileBytes;          // A and B
constexpr int kTcSmem = kStages * kStageBytes;       // 64 KB

// Element offset of (row, 16-byte chunk) in a swizzled [rows][32] bf16 tile.
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return uint32_t(row * kBK + ((chunk ^ ((row >> 1) & 3)) << 3));
}

#ifdef TAIPAN_CUDA_EMU
// CPU emulator test build (cuda/emu/): the same helpers implemented from the PTX ISA's
// definitions of their fragment layouts.
using emu_asm::cp_async16;
using emu_asm::cp_async_commit;
using emu_asm::cp_async_wait;
using emu_asm::ldmatrix_x4;
using emu_asm::mma_bf16;
#else
__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0 = zero-fill the 16 bytes, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr)
               : "memory");
}
// d += a * b, m16n8k16, bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

__global__ void __launch_bounds__(kTcThreads)
gemm_tc_kernel(int M, int N, int K, const uint16_t* __restrict__ x, int64_t ldx,
               const uint16_t* __restrict__ W, Out out, Rows rows) {
  M = rows.of(M);
  if (int(blockIdx.y) * kBM >= M) return;  // the whole block: no barrier is left waiting
  TAIPAN_DYNAMIC_SMEM(smem);
  const uint32_t smem_base = uint32_t(__cvta_generic_to_shared(smem));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;  // 2 x 4 warps
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int ktiles = (K + kBK - 1) / kBK;

  // Each thread copies 2 chunks of A and 2 of B per stage: chunk q = tid + 256*i,
  // row q / 4, 16-byte column chunk q % 4.
  auto load_stage = [&](int stage, int kt) {
    const uint32_t sa = smem_base + stage * kStageBytes;
    const uint32_t sb = sa + kTileBytes;
    const int k0 = kt * kBK;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int q = tid + i * kTcThreads, row = q >> 2, ch = q & 3;
      const int k = k0 + ch * 8;
      const bool kin = k < K;
      const int m = m0 + row, n = n0 + row;
      const bool va = kin && m < M, vb = kin && n < N;
      // Out-of-range chunks are zero-filled; their source address is clamped to a valid one.
      const uint16_t* ga = va ? x + int64_t(m) * ldx + k : x;
      const uint16_t* gb = vb ? W + int64_t(n) * K + k : W;
      cp_async16(sa + swz(row, ch) * 2, ga, va);
      cp_async16(sb + swz(row, ch) * 2, gb, vb);
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();  // always commit, so the group count stays in step with kt
  }

  for (int kt = 0; kt < ktiles; kt++) {
    cp_async_wait<kStages - 2>();  // tile kt has landed (for this thread's copies)
    __syncthreads();               // ... for every thread's; and stage kt-1 is free again
    {
      const int next = kt + kStages - 1;
      if (next < ktiles) load_stage(next % kStages, next);
      cp_async_commit();
    }
    const uint32_t sa = smem_base + (kt % kStages) * kStageBytes;
    const uint32_t sb = sa + kTileBytes;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; kk++) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {
        // lanes 0-15: rows 0-15 at k 0-7; lanes 16-31: rows 0-15 at k 8-15 -> a0..a3.
        const int row = warp_m * 64 + mi * 16 + (lane & 15);
        ldmatrix_x4(a[mi], sa + swz(row, kk * 2 + (lane >> 4)) * 2);
      }
#pragma unroll
      for (int nj = 0; nj < 2; nj++) {
        // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int row = warp_n * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t r[4];
        ldmatrix_x4(r, sb + swz(row, kk * 2 + ((lane >> 3) & 1)) * 2);
        b[2 * nj][0] = r[0];
        b[2 * nj][1] = r[1];
        b[2 * nj + 1][0] = r[2];
        b[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) mma_bf16(acc[mi][ni], a[mi], b[ni]);
    }
  }
  cp_async_wait<0>();  // no copies in flight when the block exits

  // Accumulator layout: c0, c1 at (row lane/4, cols 2*(lane%4) + 0/1), c2, c3 at row + 8.
#pragma unroll
  for (int mi = 0; mi < 4; mi++) {
#pragma unroll
    for (int ni = 0; ni < 4; ni++) {
      const int rbase = m0 + warp_m * 64 + mi * 16 + (lane >> 2);
      const int cbase = n0 + warp_n * 32 + ni * 8 + (lane & 3) * 2;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = rbase + h * 8;
        if (m < M && cbase < N) out.store2(m, cbase, N, acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
      }
    }
  }
}

// ---- 2. Small-M kernel ------------------------------------------------------------------------
constexpr int kSmWarps = 8, kSmCols = 2;  // columns per warp

template <int MT>
__global__ void __launch_bounds__(kSmWarps * 32)
gemm_small_m_kernel(int M, int N, int K, const uint16_t* __restrict__ x, int64_t ldx,
                    const uint16_t* __restrict__ W, Out out, Rows rows) {
  M = rows.of(M);
  if (int(blockIdx.y) * MT >= M) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = (blockIdx.x * kSmWarps + warp) * kSmCols;
  if (n0 >= N) return;
  const int m0 = blockIdx.y * MT;
  const int kchunks = K / 8;
  const uint4* w[kSmCols];
#pragma unroll
  for (int c = 0; c < kSmCols; c++) {
    const int n = n0 + c < N ? n0 + c : N - 1;  // a duplicate column is computed, not stored
    w[c] = reinterpret_cast<const uint4*>(W + int64_t(n) * K);
  }
  const uint4* xr[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) {
    const int mm = m0 + m < M ? m0 + m : M - 1;
    xr[m] = reinterpret_cast<const uint4*>(x + int64_t(mm) * ldx);
  }
  float acc[MT][kSmCols];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int c = 0; c < kSmCols; c++) acc[m][c] = 0.0f;

#pragma unroll 4
  for (int kc = lane; kc < kchunks; kc += 32) {
    uint4 wv[kSmCols];
#pragma unroll
    for (int c = 0; c < kSmCols; c++) wv[c] = __ldg(w[c] + kc);
#pragma unroll
    for (int m = 0; m < MT; m++) {
      const uint4 xv = __ldg(xr[m] + kc);
#pragma unroll
      for (int c = 0; c < kSmCols; c++) acc[m][c] += dot8(xv, wv[c]);
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int c = 0; c < kSmCols; c++) acc[m][c] = warp_sum(acc[m][c]);
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int c = 0; c < kSmCols; c++)
        if (m0 + m < M && n0 + c < N) out.store(m0 + m, n0 + c, acc[m][c]);
  }
}

// ---- 3. Reference kernel ------------------------------------------------------------------------
// grid (ceil(N/16), ceil(M/16)), block 16 x 16: one output per thread.
__global__ void gemm_ref_kernel(int M, int N, int K, const uint16_t* __restrict__ x, int64_t ldx,
                                const uint16_t* __restrict__ W, Out out, Rows rows) {
  M = rows.of(M);
  const int n = blockIdx.x * 16 + threadIdx.x, m = blockIdx.y * 16 + threadIdx.y;
  if (m >= M || n >= N) return;
  const uint16_t* xr = x + int64_t(m) * ldx;
  const uint16_t* wr = W + int64_t(n) * K;
  float s = 0.0f;
  for (int k = 0; k < K; k++) s = fmaf(bf16_to_float(xr[k]), bf16_to_float(wr[k]), s);
  out.store(m, n, s);
}

// ---- Host side ----------------------------------------------------------------------------------

bool check_shape(const char* fn, int64_t M, int64_t N, int64_t K) {
  if (M < 0 || N < 0 || K < 0) throw_invalid(std::string(fn) + ": negative dimension");
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
    throw_invalid(std::string(fn) + ": dimension too large (>= 2^31)");
  return M > 0 && N > 0;
}

// The 16-byte paths need whole, aligned 16-byte chunks of x rows and W rows.
bool vector_ok(int64_t K, const uint16_t* x, int64_t ldx, const uint16_t* W) {
  return K % 8 == 0 && ldx % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(W) % 16 == 0;
}

void launch_ref(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s) {
  if (ceil_div(M, 16) > 65535) throw_invalid("gemm_reference: M too large");
  const dim3 grid{unsigned(ceil_div(N, 16)), unsigned(ceil_div(M, 16)), 1};
  gemm_ref_kernel<<<grid, dim3{16, 16, 1}, 0, s>>>(int(M), int(N), int(K), x, ldx, W, out, rows);
  check_launch("gemm_ref_kernel");
}

// The tensor-core path (the general kernel when its needs are not met).
void launch_tc(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
               const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s) {
  if (!vector_ok(K, x, ldx, W) || ceil_div(M, kBM) > 65535) {
    launch_ref(M, N, K, x, ldx, W, out, rows, s);
    return;
  }
  raise_smem_limit<gemm_tc_kernel>(kTcSmem, "gemm_tc_kernel");
  const dim3 grid{unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, kBM)), 1};
  gemm_tc_kernel<<<grid, kTcThreads, kTcSmem, s>>>(int(M), int(N), int(K), x, ldx, W, out, rows);
  check_launch("gemm_tc_kernel");
}

// The prefill path: the Hopper kernel where the device runs it (gemm_sm90.cu), else the
// tensor-core kernel above (each the general kernel when its needs are not met).
void launch_large_m(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                    const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s) {
  if (vector_ok(K, x, ldx, W) && wgmma_gemm_available() && launch_wgmma(M, N, K, x, ldx, W, out, rows, s))
    return;
  launch_tc(M, N, K, x, ldx, W, out, rows, s);
}

// The small-M path (the general kernel when its needs are not met). Each row's sum does not
// depend on MT (the rows kept in flight), only on the lanes' order over K, so launching for
// more rows than a count leaves gives the same bits.
void launch_small_m(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                    const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s) {
  const int mt = M == 1 ? 1 : M == 2 ? 2 : M <= 4 ? 4 : 8;
  if (!vector_ok(K, x, ldx, W) || ceil_div(M, mt) > 65535) {
    launch_ref(M, N, K, x, ldx, W, out, rows, s);
    return;
  }
  const dim3 grid{unsigned(ceil_div(N, kSmWarps * kSmCols)), unsigned(ceil_div(M, mt)), 1};
  const int threads = kSmWarps * 32;
  const int m = int(M), n = int(N), k = int(K);
  switch (mt) {
    case 1: gemm_small_m_kernel<1><<<grid, threads, 0, s>>>(m, n, k, x, ldx, W, out, rows); break;
    case 2: gemm_small_m_kernel<2><<<grid, threads, 0, s>>>(m, n, k, x, ldx, W, out, rows); break;
    case 4: gemm_small_m_kernel<4><<<grid, threads, 0, s>>>(m, n, k, x, ldx, W, out, rows); break;
    default: gemm_small_m_kernel<8><<<grid, threads, 0, s>>>(m, n, k, x, ldx, W, out, rows); break;
  }
  check_launch("gemm_small_m_kernel");
}

}  // namespace

Out make_out(const char* fn, void* y, int64_t ldy, DType ydt, bool accumulate) {
  if (ydt != DType::F32 && ydt != DType::BF16)
    throw_invalid(std::string(fn) + ": output dtype must be f32 or bf16, got " + dtype_name(ydt));
  if (accumulate && ydt != DType::F32)
    throw_invalid(std::string(fn) + ": accumulate needs an f32 output");
  const size_t pair_bytes = ydt == DType::F32 ? 8 : 4;
  const bool pairs = ldy % 2 == 0 && reinterpret_cast<uintptr_t>(y) % pair_bytes == 0;
  return Out{y, ldy, ydt == DType::F32, accumulate, pairs};
}

void gemm_reference(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                    const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                    void* stream) {
  const Out out = make_out("gemm_reference", y, ldy, ydt, accumulate);
  if (!check_shape("gemm_reference", M, N, K)) return;
  launch_ref(M, N, K, x, ldx, W, out, Rows{}, as_stream(stream));
}

void gemm_tensor_core(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                      const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                      void* stream) {
  const Out out = make_out("gemm_tensor_core", y, ldy, ydt, accumulate);
  if (!check_shape("gemm_tensor_core", M, N, K)) return;
  launch_tc(M, N, K, x, ldx, W, out, Rows{}, as_stream(stream));
}

void gemm_wgmma(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate, void* stream) {
  const Out out = make_out("gemm_wgmma", y, ldy, ydt, accumulate);
  if (const std::string why = gemm_wgmma_unavailable_reason(); !why.empty())
    throw_invalid("gemm_wgmma: the Hopper kernel cannot run here: " + why);
  if (!check_shape("gemm_wgmma", M, N, K)) return;
  cudaStream_t s = as_stream(stream);
  if (!vector_ok(K, x, ldx, W)) launch_ref(M, N, K, x, ldx, W, out, Rows{}, s);
  else if (!launch_wgmma(M, N, K, x, ldx, W, out, Rows{}, s))
    throw_invalid("gemm_wgmma: the driver refused the tensor maps for this shape");
}

void gemm_small_m(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                  const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                  void* stream) {
  const Out out = make_out("gemm_small_m", y, ldy, ydt, accumulate);
  if (!check_shape("gemm_small_m", M, N, K)) return;
  launch_small_m(M, N, K, x, ldx, W, out, Rows{}, as_stream(stream));
}

void gemm(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx, const uint16_t* W,
          void* y, int64_t ldy, DType ydt, bool accumulate, void* stream) {
  if (M <= kGemmSmallM) gemm_small_m(M, N, K, x, ldx, W, y, ldy, ydt, accumulate, stream);
  else {
    const Out out = make_out("gemm", y, ldy, ydt, accumulate);
    if (check_shape("gemm", M, N, K)) launch_large_m(M, N, K, x, ldx, W, out, Rows{}, as_stream(stream));
  }
}

void gemm_count(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                const int32_t* count, void* stream) {
  if (!count) return gemm(M, N, K, x, ldx, W, y, ldy, ydt, accumulate, stream);
  const Out out = make_out("gemm_count", y, ldy, ydt, accumulate);
  if (!check_shape("gemm_count", M, N, K)) return;
  cudaStream_t s = as_stream(stream);
  const int small = int(std::min<int64_t>(M, kGemmSmallM));
  // Counts 1..kGemmSmallM: the small-M kernel, launched for at most kGemmSmallM rows.
  launch_small_m(small, N, K, x, ldx, W, out, Rows{count, 0, small}, s);
  // Larger counts (only possible when M > kGemmSmallM): the prefill kernel gemm would pick.
  if (M > kGemmSmallM) launch_large_m(M, N, K, x, ldx, W, out, Rows{count, int(kGemmSmallM), INT32_MAX}, s);
}

}  // namespace taipan::cuda
