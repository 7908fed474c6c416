// CPU emulation of cuda/sm90.cuh (mbarriers, the bulk tensor copy, wgmma), from the PTX ISA's
// definitions rather than from the kernel's use of them, so a kernel's barrier phases,
// descriptors and fragment indexing are actually checked. TEST BUILDS ONLY.
//
// Timing is made as unfavourable as the hardware allows, so ordering bugs show up as wrong
// results: a bulk copy lands at once (early), while wgmma reads its shared-memory operands and
// updates its accumulators only when a wgmma_wait retires its group (as late as possible). A
// kernel that lets the producer refill a stage before the MMAs reading it have been waited
// for, or that reads accumulators before waiting, gets the wrong numbers here. A barrier wait
// that makes no progress for 20 s aborts (a deadlock would otherwise hang the test).
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cuda.h"
#include "cuda_runtime.h"

#define __grid_constant__

namespace emu_sm90 {

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "emu: %s\n", what);
  std::abort();
}

// ---- mbarrier --------------------------------------------------------------------------------
struct Barrier {
  uint32_t count = 0, pending = 0;
  int64_t tx = 0;      // bytes announced and not yet landed
  uint32_t phase = 0;  // completed phases
};
inline std::mutex& bar_mutex() { static std::mutex m; return m; }
inline std::unordered_map<uint32_t, Barrier>& bars() { static std::unordered_map<uint32_t, Barrier> b; return b; }

inline Barrier& bar_at(uint32_t bar) {
  auto it = bars().find(bar);
  if (it == bars().end()) die("mbarrier used before mbarrier.init");
  return it->second;
}
// Under the lock: completes the phase when every arrival and every byte is in.
inline void maybe_complete(Barrier& b) {
  if (b.pending == 0 && b.tx == 0) {
    b.phase++;
    b.pending = b.count;
  }
}
inline void mbar_init(uint32_t bar, uint32_t count) {
  if (bar % 8 != 0) die("misaligned mbarrier");
  std::lock_guard<std::mutex> lk(bar_mutex());
  bars()[bar] = Barrier{count, count, 0, 0};
}
inline void mbar_init_fence() {}
inline void arrive(uint32_t bar, int64_t tx) {
  std::lock_guard<std::mutex> lk(bar_mutex());
  Barrier& b = bar_at(bar);
  if (b.pending == 0) die("mbarrier: more arrivals than its count in one phase");
  b.tx += tx;
  b.pending--;
  maybe_complete(b);
}
inline void mbar_arrive(uint32_t bar) { arrive(bar, 0); }
inline void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) { arrive(bar, bytes); }
inline void complete_tx(uint32_t bar, int64_t bytes) {
  std::lock_guard<std::mutex> lk(bar_mutex());
  Barrier& b = bar_at(bar);
  b.tx -= bytes;
  maybe_complete(b);
}
// try_wait.parity(p) succeeds once the current phase's parity differs from p, i.e. the phase
// of parity p has completed.
inline void mbar_wait(uint32_t bar, uint32_t parity) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(bar_mutex());
      if ((bar_at(bar).phase & 1) != (parity & 1)) return;
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(20))
      die("mbarrier wait made no progress for 20 s (a deadlock in the kernel?)");
    std::this_thread::yield();
  }
}

// ---- Bulk tensor copy --------------------------------------------------------------------------
// The 128-byte swizzle permutes the 16-byte chunks of each 128-byte row by the row's index in
// its 8-row (1024-byte) group: byte address bits [4:6] ^= bits [7:9].
inline uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7) << 4); }

inline void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  using namespace emu_tmap;
  const cuuint64_t* f = map->opaque;
  if (f[kMagic] != kMagicValue) die("bulk tensor copy with a tensor map the encoder did not make");
  if (f[kSwizzle] != CU_TENSOR_MAP_SWIZZLE_128B) die("only the 128-byte swizzle is emulated");
  if (dst % 1024 != 0) die("bulk tensor copy with the 128-byte swizzle needs a 1024-byte aligned destination");
  const int64_t elem = int64_t(f[kElemBytes]), box0 = int64_t(f[kBox0]), box1 = int64_t(f[kBox1]);
  const auto* base = reinterpret_cast<const unsigned char*>(uintptr_t(f[kBase]));
  unsigned char* smem = emu::smem_window();
  for (int64_t r = 0; r < box1; r++)
    for (int64_t e = 0; e < box0; e++) {
      const int64_t i0 = int64_t(c0) + e, i1 = int64_t(c1) + r;
      const uint32_t at = swizzle128(dst + uint32_t((r * box0 + e) * elem));
      if (i0 >= 0 && i1 >= 0 && uint64_t(i0) < f[kDim0] && uint64_t(i1) < f[kDim1])
        std::memcpy(smem + at, base + i1 * int64_t(f[kStride1]) + i0 * elem, size_t(elem));
      else
        std::memset(smem + at, 0, size_t(elem));  // outside the tensor: zero
    }
  complete_tx(bar, box0 * box1 * elem);
}

// ---- Register budget ---------------------------------------------------------------------------
template <int N> inline void regs_release() {}
template <int N> inline void regs_claim() {}

// ---- Warpgroup MMA -------------------------------------------------------------------------------
struct MmaOp {
  float* d;
  uint64_t desc_a, desc_b;
};
inline thread_local std::vector<MmaOp> open_ops;
inline thread_local std::deque<std::vector<MmaOp>> committed;

// Element (row, k) of a K-major bf16 operand described by `desc` (128-byte swizzle only).
inline float operand(uint64_t desc, int row, int k) {
  if ((desc >> 62) != 1) die("wgmma: only K-major operands with the 128-byte swizzle are emulated");
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4;
  const uint32_t stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const uint32_t addr = start + uint32_t(row / 8) * stride + uint32_t(row % 8) * 128 + uint32_t(k) * 2;
  uint16_t v;
  std::memcpy(&v, emu::smem_window() + swizzle128(addr), 2);
  return __uint_as_float(uint32_t(v) << 16);
}

// d[64 x 256] += A[64 x 16] B[256 x 16]^T for this thread's fragment (see sm90.cuh).
inline void run(const MmaOp& op) {
  const int t = emu::tl_tid % 128, w = t / 32, lane = t % 32;
  for (int j = 0; j < 32; j++)
    for (int i = 0; i < 4; i++) {
      const int row = 16 * w + lane / 4 + 8 * (i / 2), col = 8 * j + 2 * (lane % 4) + (i % 2);
      float s = 0;
      for (int k = 0; k < 16; k++) s += operand(op.desc_a, row, k) * operand(op.desc_b, col, k);
      op.d[4 * j + i] += s;
    }
}

inline void wgmma_fence() {}
inline void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  open_ops.push_back(MmaOp{d, desc_a, desc_b});
}
inline void wgmma_commit() {
  committed.push_back(std::move(open_ops));
  open_ops.clear();
}
template <int N> inline void wgmma_wait() {
  while (committed.size() > size_t(N)) {
    for (const MmaOp& op : committed.front()) run(op);
    committed.pop_front();
  }
}

}  // namespace emu_sm90
