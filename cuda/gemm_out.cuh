// What every GEMM kernel (gemm.cu, gemm_sm90.cu) shares: how a result is written (Out) and how
// many of a launch's rows it computes (Rows). nvcc only.
#pragma once
#include <cstdint>

#include "../csrc/dtype.h"
#include "common.cuh"

namespace taipan::cuda {

// ---- Output -------------------------------------------------------------------------------
struct Out {
  void* y;
  int64_t ldy;
  bool f32;
  bool accumulate;
  // Whether (m, n) and (m, n + 1) may be written as one 8-byte (f32) or 4-byte (bf16) store
  // for even n: ldy is even and y is aligned to two elements (make_out decides).
  bool pairs;
  __device__ __forceinline__ void store(int64_t m, int64_t n, float v) const {
    if (f32) {
      float* p = static_cast<float*>(y) + m * ldy + n;
      *p = accumulate ? *p + v : v;
    } else {
      static_cast<uint16_t*>(y)[m * ldy + n] = float_to_bf16(v);
    }
  }
  // (m, n) and, when n + 1 < N, (m, n + 1); n is even.
  __device__ __forceinline__ void store2(int64_t m, int64_t n, int64_t N, float v0, float v1) const {
    if (!pairs || n + 1 >= N) {
      store(m, n, v0);
      if (n + 1 < N) store(m, n + 1, v1);
    } else if (f32) {
      float2* p = reinterpret_cast<float2*>(static_cast<float*>(y) + m * ldy + n);
      if (accumulate) {
        const float2 old = *p;
        v0 += old.x;
        v1 += old.y;
      }
      *p = float2{v0, v1};
    } else {
      const uint32_t lo = float_to_bf16(v0), hi = float_to_bf16(v1);
      *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(y) + m * ldy + n) = lo | (hi << 16);
    }
  }
};

// How many of a launch's M rows it computes: all of them without a count; else
// n = clamp(*count, 0, M) when lo < n <= hi (the counts this launch is responsible for), 0
// otherwise. Every thread of a block gets the same answer, so a block can return as a whole.
struct Rows {
  const int32_t* count = nullptr;  // DEVICE i32 [1], or null
  int lo = -1, hi = INT32_MAX;
  __device__ __forceinline__ int of(int M) const {
    if (!count) return M;
    const int c = *count;
    const int n = c < 0 ? 0 : c > M ? M : c;
    return n > lo && n <= hi ? n : 0;
  }
};

// Validates the output's dtype and accumulate flag (throws with `fn` in the message).
Out make_out(const char* fn, void* y, int64_t ldy, DType ydt, bool accumulate);

}  // namespace taipan::cuda
