// GEMM on Hopper (sm_90a): y[m, n] (+)= sum_k x[m, k] * W[n, k], the prefill path of gemm() on
// compute capability 9.0 devices. Same contract as gemm.cu's tensor-core kernel (bf16 x and W,
// fp32 accumulation, y bf16 or fp32, optionally added to, a device-side row count), built from
// the instructions that kernel cannot use: the bulk tensor copy engine (TMA) and warpgroup MMA.
//
// Block tile 128 (M) x 256 (N), K step 64, 4 stages of shared memory (48 KB each), 384 threads
// as three warpgroups with separate jobs (warp specialisation):
//   - warpgroup 0, the producer: one thread issues two bulk tensor copies per K step (the x
//     tile, 128 x 64, and the W tile, 256 x 64) into the next free stage. The copy engine
//     writes them with the 128-byte swizzle, zero-fills rows and columns outside the matrices
//     (no edge code anywhere) and signals the stage's `full` barrier when its bytes have landed.
//     The producer gives most of its registers away (setmaxnreg) since it needs almost none.
//   - warpgroups 1 and 2, the consumers: each owns 64 rows of the tile and all 256 columns,
//     128 fp32 accumulators per thread. Per K step it waits for `full`, issues four
//     wgmma.m64n256k16 straight from shared memory (descriptors, no ldmatrix, no registers for
//     A or B), and lets the tensor cores run while it waits for the previous step's group; then
//     it frees that step's stage by arriving on its `empty` barrier, which the producer waits for
//     before refilling it.
// So loads of later K steps, the MMAs of the current one and the bookkeeping all overlap, and
// the consumers' instruction stream is a handful of instructions per 4 MFLOP of MMA.
//
// Shared memory: stage s holds the x tile (16 KB) at s * 16 KB and the W tile (32 KB) after all
// x tiles; every tile is 1024-byte aligned, as the 128-byte swizzle needs (its pattern repeats
// every 8 rows of 128 bytes). Then the 2 x 4 barriers. Total 193 KB + 1 KB of alignment slack.
//
// Rows (gemm_count): the launch covers M rows; blocks past the row count return at once and
// the tiles' stores are limited to it, so every computed element is the same sum over k
// whatever the count, bit for bit as a gemm over count rows.
//
// Needs (checked by the host before launching): K % 8 == 0, ldx % 8 == 0, x and W 16-byte
// aligned (the tensor maps' row strides and bases); any M, N, K beyond that. Not run yet on a
// GPU at the time of writing: the CPU emulator (cuda/emu/emu_sm90.h) checks the barrier phases,
// the descriptors and the fragment indexing; test/cuda.test.ts and bench/native/
// cuda_kernels_test.cpp compare it with the reference on the device.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#ifndef TAIPAN_CUDA_EMU
#include <cuda.h>
#include <cudaTypedefs.h>
#endif

#include "common.cuh"
#include "gemm_out.cuh"
#include "gemm_sm90.h"
#include "kernels.h"
#include "sm90.cuh"

namespace taipan::cuda {
namespace {

constexpr int kBM = 128, kBN = 256, kBK = 64, kStages = 4;
constexpr int kThreads = 384;                          // producer + 2 consumer warpgroups
[[maybe_unused]] constexpr int kConsumers = 256;                       // threads arriving on `empty`
constexpr uint32_t kATile = kBM * kBK * 2;             // 16 KB
constexpr uint32_t kBTile = kBN * kBK * 2;             // 32 KB
constexpr uint32_t kStageBytes = kATile + kBTile;      // what one stage's copies deliver
constexpr uint32_t kBarrierBytes = 2 * kStages * 8;
constexpr int kSmem = kStages * kStageBytes + kBarrierBytes + 1024;  // + alignment slack

__global__ void __launch_bounds__(kThreads, 1)
gemm_wgmma_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                  int M, int N, int K, Out out, Rows rows) {
#if TAIPAN_SM90_DEVICE
  using namespace sm90;
  M = rows.of(M);
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN;
  if (m0 >= M) return;  // the whole block, before any barrier exists
  TAIPAN_DYNAMIC_SMEM(smem);
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem)) + 1023u) & ~1023u;
  auto a_tile = [&](int s) { return base + uint32_t(s) * kATile; };
  auto b_tile = [&](int s) { return base + kStages * kATile + uint32_t(s) * kBTile; };
  auto full = [&](int s) { return base + kStages * kStageBytes + uint32_t(s) * 8; };
  auto empty = [&](int s) { return base + kStages * kStageBytes + uint32_t(kStages + s) * 8; };

  const int tid = threadIdx.x, warpgroup = tid / 128;
  const int ktiles = (K + kBK - 1) / kBK;
  if (tid == 0) {
    for (int s = 0; s < kStages; s++) {
      mbar_init(full(s), 1);  // the producer's arrive_expect_tx, then the copies' bytes
      mbar_init(empty(s), kConsumers);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (warpgroup == 0) {
    regs_release<40>();
    if (tid == 0) {
      for (int kt = 0; kt < ktiles; kt++) {
        const int s = kt % kStages;
        // The stage's previous use (step kt - kStages) must have been consumed.
        if (kt >= kStages) mbar_wait(empty(s), uint32_t((kt / kStages - 1) & 1));
        mbar_arrive_expect_tx(full(s), kStageBytes);  // out-of-range parts count too (zeros)
        tma_load_2d(a_tile(s), &x_map, kt * kBK, m0, full(s));
        tma_load_2d(b_tile(s), &w_map, kt * kBK, n0, full(s));
      }
    }
    return;
  }

  regs_claim<232>();
  const int half = warpgroup - 1;  // rows [64 * half, 64 * half + 64) of the tile
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; i++) acc[i] = 0.0f;

  for (int kt = 0; kt < ktiles; kt++) {
    const int s = kt % kStages;
    mbar_wait(full(s), uint32_t((kt / kStages) & 1));
    __syncwarp();  // the wait loop may leave lanes apart; the .aligned wgmma needs them together
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; kk++) {
      // 16 columns of K = 32 bytes further along the tiles' 128-byte rows.
      const uint64_t da = desc_k_major_sw128(a_tile(s) + uint32_t(half) * 64 * 128 + kk * 32);
      const uint64_t db = desc_k_major_sw128(b_tile(s) + kk * 32);
      wgmma_m64n256k16(acc, da, db);
    }
    wgmma_commit();
    // Step kt-1's MMAs are done once at most one group (this step's) is in flight: its stage
    // can be refilled.
    wgmma_wait<1>();
    if (kt > 0) mbar_arrive(empty((kt - 1) % kStages));
  }
  wgmma_wait<0>();

  // Thread t of the warpgroup holds acc[4j + i] at row 16*(t/32) + (t%32)/4 + 8*(i/2),
  // column 8j + 2*(t%4) + i%2: two adjacent columns per (j, row).
  const int t = tid % 128;
  const int row = m0 + half * 64 + 16 * (t / 32) + (t % 32) / 4;
  const int col = n0 + 2 * (t % 4);
#pragma unroll
  for (int j = 0; j < 32; j++) {
    const int n = col + 8 * j;
    if (n >= N) break;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int m = row + 8 * h;
      if (m < M) out.store2(m, n, N, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
    }
  }
#else
  __trap();  // never launched: the host checks that the device runs sm_90a code
#endif
}

// ---- Host side ------------------------------------------------------------------------------

// The driver's tensor-map encoder, found through the runtime (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
#ifdef TAIPAN_CUDA_EMU
  return &cuTensorMapEncodeTiled;
#else
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky; leave no error behind for the next check_launch
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
#endif
}

// A 2-D bf16 matrix of `rows` rows of `cols` elements, `ld` elements apart, read in boxes of
// kBK columns x box_rows rows with the 128-byte swizzle.
bool encode(CUtensorMap* map, const uint16_t* p, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(ld) * 2};
  const cuuint32_t box[2] = {cuuint32_t(kBK), cuuint32_t(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  return tensor_map_encoder()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<uint16_t*>(p),
                              dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Why the kernel cannot run on device `dev` ("" when it can).
std::string reason_for(int dev) {
#if !defined(TAIPAN_CUDA_SM90A) && !defined(TAIPAN_CUDA_EMU)
  (void)dev;
  return "this build has no sm_90a code (TAIPAN_CUDA_ARCHS lacks 90a)";
#else
  const char* env = std::getenv("TAIPAN_CUDA_WGMMA");
  if (env && std::strcmp(env, "0") == 0) return "turned off by TAIPAN_CUDA_WGMMA=0";
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    cudaGetLastError();
    return "cannot read the device's properties";
  }
  if (prop.major != 9 || prop.minor != 0)
    return "the device is compute capability " + std::to_string(prop.major) + "." +
           std::to_string(prop.minor) + ", not 9.0";
  if (!tensor_map_encoder()) return "the CUDA driver has no cuTensorMapEncodeTiled";
  return "";
#endif
}

// Per device, once: why the kernel cannot run there ("" when it can).
const std::string& cached_reason() {
  constexpr int kMaxDevices = 64;
  static std::string reasons[kMaxDevices];
  static std::atomic<bool> done[kMaxDevices];
  static const std::string no_device = "no current device";
  const int dev = get_device();
  if (dev < 0 || dev >= kMaxDevices) return no_device;
  if (!done[dev].load(std::memory_order_acquire)) {
    reasons[dev] = reason_for(dev);  // benign race: every thread writes the same string before `done`
    done[dev].store(true, std::memory_order_release);
  }
  return reasons[dev];
}

}  // namespace

bool wgmma_gemm_available() { return cached_reason().empty(); }

bool launch_wgmma(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                  const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s) {
  if (ceil_div(M, kBM) > 65535) return false;  // grid.y
  CUtensorMap x_map, w_map;
  if (!encode(&x_map, x, M, K, ldx, kBM) || !encode(&w_map, W, N, K, K, kBN)) return false;
  raise_smem_limit<gemm_wgmma_kernel>(kSmem, "gemm_wgmma_kernel");
  const dim3 grid{unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, kBM)), 1};
  gemm_wgmma_kernel<<<grid, kThreads, kSmem, s>>>(x_map, w_map, int(M), int(N), int(K), out, rows);
  check_launch("gemm_wgmma_kernel");
  return true;
}

std::string gemm_wgmma_unavailable_reason() { return cached_reason(); }

}  // namespace taipan::cuda
