// CPU emulation of the inline-PTX helpers of cuda/gemm.cu (cp.async, ldmatrix, mma.sync),
// following the PTX ISA's fragment layouts, not the kernel's use of them, so the kernel's
// index arithmetic is actually checked. Test builds only (see cuda_runtime.h here).
#pragma once
#include <cassert>

#include "cuda_runtime.h"

namespace emu_asm {

inline unsigned char* smem_at(uint32_t addr) { return emu::smem_window() + addr; }

// cp.async.cg 16 bytes: done at once (the pipeline's waits become no-ops).
inline void cp_async16(uint32_t smem_addr, const void* gmem, bool valid) {
  if (smem_addr % 16 != 0 || reinterpret_cast<uintptr_t>(gmem) % 16 != 0) {
    std::fprintf(stderr, "emu: misaligned cp.async (smem %u, global %p)\n", smem_addr, gmem);
    std::abort();
  }
  if (valid) std::memcpy(smem_at(smem_addr), gmem, 16);
  else std::memset(smem_at(smem_addr), 0, 16);
}
inline void cp_async_commit() {}
template <int N> inline void cp_async_wait() {}

// ldmatrix.m8n8.x4.b16: lane 8j+i gives the address of row i of matrix j; lane t receives,
// for each matrix j, the 32-bit word at row t/4, columns 2*(t%4) and 2*(t%4)+1.
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem_addr) {
  if (smem_addr % 16 != 0) {
    std::fprintf(stderr, "emu: misaligned ldmatrix row address %u\n", smem_addr);
    std::abort();
  }
  const int lane = emu::lane_id();
  emu::xchg(lane)[0] = smem_addr;
  emu::warp_sync();
  for (int j = 0; j < 4; j++) {
    const uint32_t row_addr = emu::xchg(8 * j + lane / 4)[0];
    std::memcpy(&r[j], smem_at(row_addr + (lane % 4) * 4), 4);
  }
  emu::warp_sync();
}

inline float bf(uint32_t word, int half) {
  return __uint_as_float(half ? (word & 0xffff0000u) : (word << 16));
}

// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, d = a*b + d. Lane t = 4g + q holds
//   A: a0 (row g, k 2q..2q+1), a1 (row g+8, same k), a2 (row g, k 2q+8..), a3 (row g+8, k 2q+8..)
//   B: b0 (k 2q..2q+1, col g), b1 (k 2q+8.., col g)
//   D: d0,d1 (row g, cols 2q, 2q+1), d2,d3 (row g+8, cols 2q, 2q+1)
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = emu::lane_id();
  uint32_t* mine = emu::xchg(lane);
  for (int i = 0; i < 4; i++) mine[i] = a[i];
  mine[4] = b[0];
  mine[5] = b[1];
  emu::warp_sync();
  auto A = [](int row, int k) {
    const uint32_t* src = emu::xchg((row % 8) * 4 + (k % 8) / 2);
    return bf(src[(row / 8) + 2 * (k / 8)], k % 2);
  };
  auto B = [](int k, int col) {
    const uint32_t* src = emu::xchg(col * 4 + (k % 8) / 2);
    return bf(src[4 + k / 8], k % 2);
  };
  float out[4];
  for (int r = 0; r < 4; r++) {
    const int row = lane / 4 + 8 * (r >> 1), col = 2 * (lane % 4) + (r & 1);
    float s = d[r];
    for (int k = 0; k < 16; k++) s += A(row, k) * B(k, col);
    out[r] = s;
  }
  emu::warp_sync();
  for (int r = 0; r < 4; r++) d[r] = out[r];
}

}  // namespace emu_asm
