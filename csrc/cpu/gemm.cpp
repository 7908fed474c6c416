// CPU GEMM: y[m, n] = sum_k x[m, k] * W[n, k]  (x @ W^T, i.e. nn.Linear without bias).
//
// x is fp32 (row stride ldx), W is [N, K] contiguous in f32, f16 or bf16, y is fp32 (row
// stride ldy); every product is accumulated in fp32.
//
// The model runs this in two very different regimes, so there are two AVX2 algorithms:
//
//   * Decode and short inputs (M <= kGemvMaxM): for a few tokens the work is ~M FMAs per
//     weight, so the time is the time to read W from DRAM once. The threads take chunks of
//     W's rows from a shared counter; gemv_* reads a chunk as 6 parallel streams, converts
//     each weight to fp32 in registers, and applies it to every x row while it is in L1.
//
//   * Prefill (larger M): compute bound. gemm_packed_* is a GotoBLAS/BLIS-style blocked
//     GEMM: W is packed (and converted to fp32) into K-blocked panels of 16 columns, x into
//     panels of 6 rows, and a 6x16 register-tile micro-kernel does the FMAs. x is packed
//     once for all threads; the threads then take chunks of W's columns from a shared
//     counter, each packing its own chunk of W.
//
// A portable plain-C++ path (used when the CPU lacks AVX2/FMA/F16C or TAIPAN_CPU_PORTABLE is
// set) computes the same thing with simpler loops.
//
// Nothing here skips work on zeros: NaN/Inf anywhere in a row of x or W reaches the outputs
// that depend on it. Zero padding (packed panels past the edge of M or N) only feeds outputs
// that are thrown away.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "kernels.h"
#include "scratch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TAIPAN_GEMM_X86 1
#define TAIPAN_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define TAIPAN_GEMM_X86 0
#endif

namespace taipan::cpu {
namespace {

// ---- Tuning constants ---------------------------------------------------------------------

// Largest M handled by the GEMV path. The packed GEMM has the faster inner loop but first has
// to convert and transpose all of W, which only pays off once there are enough rows of x:
// with weights coming from DRAM (as in a real forward pass) the two cross over at M ~ 40-56
// for the model's shapes on Zen3.
constexpr int64_t kGemvMaxM = 48;
// Below this many multiply-adds one thread does the whole GEMM: waking the second thread
// costs a few microseconds, more than the work.
constexpr int64_t kSerialFmas = 1 << 15;

// Scalar load of weight W[i] as fp32 (the portable path, and the edges of the vector paths).
template <DType WT>
inline float load_w1(const void* W, int64_t i) {
  if constexpr (WT == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(W)[i]);
  else if constexpr (WT == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(W)[i]);
  else return static_cast<const float*>(W)[i];
}

// ============================================================================================
// Portable path
// ============================================================================================
//
// Blocks of 4 W rows are converted to fp32 once (a small thread-local buffer) and applied to
// a block of x rows that stays in cache. The dot product keeps 8 partial sums so that the
// compiler can vectorise it with whatever SIMD the target has by default (SSE2 on x86-64).

inline float dot_portable(const float* a, const float* b, int64_t K) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int j = 0; j < 8; j++) s[j] += a[k + j] * b[k + j];
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; k < K; k++) t += a[k] * b[k];
  return t;
}

template <DType WT>
void gemm_portable_range(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x,
                         int64_t ldx, const void* W, float* y, int64_t ldy) {
  constexpr int64_t kRows = 4;     // W rows converted at a time
  constexpr int64_t kMBlock = 64;  // x rows per pass over a W block: 64*K floats stay in L2
  static thread_local ScratchBuffer buf;
  float* wf = WT == DType::F32 ? nullptr : buf.get(size_t(kRows * K), "linear (weights widened to fp32)");
  for (int64_t m0 = 0; m0 < M; m0 += kMBlock) {
    const int64_t m1 = std::min(M, m0 + kMBlock);
    for (int64_t n = n0; n < n1; n += kRows) {
      const int64_t rows = std::min(kRows, n1 - n);
      const float* wr;
      if constexpr (WT == DType::F32) {
        wr = static_cast<const float*>(W) + n * K;
      } else {
        for (int64_t i = 0; i < rows * K; i++) wf[i] = load_w1<WT>(W, n * K + i);
        wr = wf;
      }
      for (int64_t m = m0; m < m1; m++)
        for (int64_t r = 0; r < rows; r++)
          y[m * ldy + n + r] = dot_portable(x + m * ldx, wr + r * K, K);
    }
  }
}

template <DType WT>
void gemm_portable(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x,
                   int64_t ldx, const void* W, float* y, int64_t ldy) {
  if (M * N * K <= kSerialFmas || pool.size() == 1) {
    gemm_portable_range<WT>(M, 0, N, K, x, ldx, W, y, ldy);
    return;
  }
  pool.parallel_for(
      N,
      [&](int64_t b, int64_t e, int) { gemm_portable_range<WT>(M, b, e, K, x, ldx, W, y, ldy); },
      4);
}

#if TAIPAN_GEMM_X86
// ============================================================================================
// AVX2 building blocks
// ============================================================================================

// 8 consecutive weights W[i .. i+8) widened to fp32. bf16 is the top half of an fp32, so
// widening is a zero-extend and a 16-bit shift; f16 has a hardware converter (F16C).
template <DType WT>
TAIPAN_AVX2 inline __m256 load_w8(const void* W, int64_t i) {
  if constexpr (WT == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(W) + i);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(W) + i;
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (WT == DType::F16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

TAIPAN_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// In-place transpose of an 8x8 fp32 block held in 8 registers (r[i] = row i).
TAIPAN_AVX2 inline void transpose8x8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// ============================================================================================
// Decode: GEMV over a few x rows, W read once
// ============================================================================================
//
// gemv_tile computes an R x MB block of y (R rows of W against MB rows of x) as R*MB dot
// products over the full K. The MB x vectors for the current 8 k's sit in registers and each
// converted W vector is used MB times, so a tile needs R*MB accumulators + MB + 1 of the 16
// ymm registers. Shapes used (measured in L1 on Zen3, where FMA needs ~10 independent chains
// to reach its 2 per cycle): 6x1 and 6x2 for M <= 2 (memory bound anyway), 3x3 and 3x4 (9 or
// 12 accumulators, ~80% of FMA peak for f32; 2x4 reached only ~55%), so M = 5..8 (two x
// groups) stays near DRAM speed too. bf16 with M = 1 has its own 6x1 tile that widens 16
// weights per two instructions (gemv_tile_bf16x1).
//
// Memory: the time is the time to stream W from DRAM, and how fast that goes depends on how
// many independent sequential streams are in flight. A thread's rows [n0, n1) are therefore
// cut into kStreams equal regions, and a tile takes row i of every region (rows n0 + i,
// n0 + i + per, n0 + i + 2 per, ...): each region is read front to back as one long stream
// that the hardware prefetcher follows, and 6 of them run side by side. On the 2-core Zen3
// VM this read W 20-40% faster than 6 adjacent rows (one stream), and bf16, whose rows are
// only 1.5 KiB long, up to twice as fast; bench/native/gemv_streams.cpp measures the patterns
// (more than ~8 streams per core is slower again). All x row groups are applied to the
// current 6 rows while they are in L1/L2, so DRAM sees each weight once whatever M is.
//
// With more than one x group (M >= 5) the FMAs, not DRAM, set the pace and extra streams buy
// nothing; there the tiles take 6 adjacent rows, and since the hardware prefetcher falls
// behind such slow readers, the next 6 rows (one contiguous range) are software-prefetched
// in order, spread evenly over the current block's tiles.

// Spreads `lines` cache-line prefetches starting at `p` evenly over `steps` loop iterations
// (Bresenham style: no division in the loop).
struct PrefetchSpread {
  const char* p;
  int64_t lines, steps, acc = 0;  // lines >= 0, steps >= 1
  TAIPAN_AVX2 inline void step() {
    acc += lines;
    while (acc >= steps) {
      _mm_prefetch(p, _MM_HINT_T0);
      p += 64;
      acc -= steps;
    }
  }
};

constexpr int64_t kStreams = 6;

// Rows row0 + r * rs (r < R) of W against MB rows of x; y[m * ldy + r * rs] receives the
// result for x row m and tile row r. Meanwhile the tile prefetches `pf_lines` cache lines
// from `pf` on, spread over its loop.
template <DType WT, int R, int MB>
TAIPAN_AVX2 void gemv_tile(int64_t K, const float* x, int64_t ldx, const void* W, int64_t row0,
                           int64_t rs, float* y, int64_t ldy, const char* pf, int64_t pf_lines) {
  __m256 acc[R][MB];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++)
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) acc[r][m] = _mm256_setzero_ps();

  const int64_t kv = K & ~int64_t(7);  // the vectorised part of K
  PrefetchSpread prefetch{pf, pf_lines, std::max<int64_t>(1, kv / 8)};
  for (int64_t k = 0; k < kv; k += 8) {
    prefetch.step();
    __m256 xv[MB];
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) xv[m] = _mm256_loadu_ps(x + m * ldx + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
      const __m256 wv = load_w8<WT>(W, (row0 + r * rs) * K + k);
#pragma GCC unroll 16
      for (int m = 0; m < MB; m++) acc[r][m] = _mm256_fmadd_ps(wv, xv[m], acc[r][m]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) y[m * ldy + r * rs] = hsum8(acc[r][m]);
  }
  // K % 8 leftover products, in scalar.
  for (int r = 0; r < R; r++)
    for (int m = 0; m < MB; m++)
      for (int64_t kk = kv; kk < K; kk++)
        y[m * ldy + r * rs] += x[m * ldx + kk] * load_w1<WT>(W, (row0 + r * rs) * K + kk);
}

// One x row against R bf16 rows, 16 weights at a time: unpacking a 256-bit load against zero
// interleaves each bf16 with 16 zero bits below it, which is its fp32 value, in 2 instructions
// per 16 weights instead of 4 (widen and shift, twice). The unpack works within 128-bit
// halves, so the 16 weights come out as k = {0-3, 8-11} and {4-7, 12-15}: xp holds x permuted
// the same way (see permute_x16). K must be a multiple of 16.
template <int R>
TAIPAN_AVX2 void gemv_tile_bf16x1(int64_t K, const float* xp, const void* W, int64_t row0,
                                  int64_t rs, float* y) {
  const uint16_t* w[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) w[r] = static_cast<const uint16_t*>(W) + (row0 + r * rs) * K;
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t k = 0; k < K; k += 16) {
    const __m256 xlo = _mm256_loadu_ps(xp + k), xhi = _mm256_loadu_ps(xp + k + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + k));
      acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v)), xlo, acc[r]);
      acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v)), xhi, acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) y[r * rs] = hsum8(acc[r]);
}

// x[0, K) in the order gemv_tile_bf16x1 multiplies it: per 16, k = 0-3, 8-11, 4-7, 12-15.
inline void permute_x16(const float* x, int64_t K, float* xp) {
  for (int64_t k = 0; k < K; k += 16)
    for (int q = 0; q < 4; q++) {
      const int64_t src = k + (q == 1 ? 8 : q == 2 ? 4 : q * 4);
      for (int i = 0; i < 4; i++) xp[k + 4 * q + i] = x[src + i];
    }
}

// R rows (stride rs) against x rows [0, M), in groups of up to 4 x rows; the groups share
// out the prefetch of `pf_lines` lines from `pf` on.
template <DType WT, int R>
TAIPAN_AVX2 void gemv_rows(int64_t K, const float* x, int64_t ldx, const void* W, int64_t row0,
                           int64_t rs, float* y, int64_t ldy, int64_t M, const char* pf,
                           int64_t pf_lines) {
  const int64_t groups = (M + 3) / 4;
  for (int64_t m = 0; m < M; m += 4) {
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    const int64_t g = m / 4, l0 = pf_lines * g / groups, l1 = pf_lines * (g + 1) / groups;
    const char* gpf = pf + l0 * 64;
    const int64_t gl = l1 - l0;
    switch (std::min<int64_t>(4, M - m)) {
      case 1: gemv_tile<WT, R, 1>(K, xm, ldx, W, row0, rs, ym, ldy, gpf, gl); break;
      case 2: gemv_tile<WT, R, 2>(K, xm, ldx, W, row0, rs, ym, ldy, gpf, gl); break;
      case 3: gemv_tile<WT, R, 3>(K, xm, ldx, W, row0, rs, ym, ldy, gpf, gl); break;
      default: gemv_tile<WT, R, 4>(K, xm, ldx, W, row0, rs, ym, ldy, gpf, gl); break;
    }
  }
}

// Rows [n0, n1) of W against all M rows of x (one thread's share).
template <DType WT>
TAIPAN_AVX2 void gemv_range(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x,
                            int64_t ldx, const void* W, float* y, int64_t ldy) {
  // M <= 4: tile i takes row i of each of kStreams regions; M >= 5: the 6 adjacent rows
  // starting at n0 + 6 i. Either way the tiles cover rows [n0, n0 + kStreams * per).
  const int64_t per = (n1 - n0) / kStreams;
  constexpr int64_t kElem = WT == DType::F32 ? 4 : 2;
  const bool streams = M <= 4;
  const int64_t rs = streams ? per : 1;         // row stride within a tile
  const int64_t step = streams ? 1 : kStreams;  // rows from one tile to the next
  // bf16, one x row: the unpacking tile, on x permuted to match.
  if constexpr (WT == DType::BF16) {
    if (M == 1 && K % 16 == 0 && per > 0) {
      static thread_local ScratchBuffer xbuf;
      float* xp = xbuf.get(size_t(K), "linear (permuted input row)");
      permute_x16(x, K, xp);
      for (int64_t i = 0; i < per; i++) gemv_tile_bf16x1<6>(K, xp, W, n0 + i, per, y + n0 + i);
      for (int64_t n = n0 + kStreams * per; n < n1; n++) gemv_tile_bf16x1<1>(K, xp, W, n, 0, y + n);
      return;
    }
  }
  for (int64_t i = 0; i < per; i++) {
    const int64_t row = n0 + i * step;
    if (M == 1) {
      gemv_tile<WT, 6, 1>(K, x, ldx, W, row, rs, y + row, ldy, nullptr, 0);
    } else if (M == 2) {
      gemv_tile<WT, 6, 2>(K, x, ldx, W, row, rs, y + row, ldy, nullptr, 0);
    } else {
      // Two halves of 3 rows, each applied to every x group before moving on: 3 rows of W
      // (up to 24 KiB of fp32 for K = 2048) stay in L1 while the x groups cycle through.
      // In the adjacent layout (M >= 5) the next block's 6 rows are one range, and each half
      // prefetches half of it; the stream layout (M = 3, 4) leaves them to the hardware.
      const char* next = static_cast<const char*>(W) + (row + kStreams) * K * kElem;
      const int64_t lines = streams || i + 1 == per ? 0 : kStreams * K * kElem / 64;
      gemv_rows<WT, 3>(K, x, ldx, W, row, rs, y + row, ldy, M, next, lines / 2);
      gemv_rows<WT, 3>(K, x, ldx, W, row + 3 * rs, rs, y + row + 3 * rs, ldy, M,
                       next + lines / 2 * 64, lines - lines / 2);
    }
  }
  // The last (n1 - n0) % kStreams rows, one at a time.
  for (int64_t n = n0 + kStreams * per; n < n1; n++)
    gemv_rows<WT, 1>(K, x, ldx, W, n, 0, y + n, ldy, M, nullptr, 0);
}

template <DType WT>
void gemv_avx2(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx,
               const void* W, float* y, int64_t ldy) {
  if (M * N * K <= kSerialFmas || pool.size() == 1) {
    gemv_range<WT>(M, 0, N, K, x, ldx, W, y, ldy);
    return;
  }
  // Chunks of rows (about 8 per thread, each read as kStreams streams) handed out one at a
  // time, so that a thread that falls behind (a busy core) does not hold the other up. With
  // fixed halves the caller spent ~12% of decode waiting for the other thread; the tokens/s
  // did not change on the quiet VM (the memory bus is the limit: the thread still running
  // gets it all), but a service sharing its cores no longer waits for a descheduled thread.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(8 * pool.size(), N / (2 * kStreams)));
  pool.parallel_tasks(chunks, [&](int64_t c, int) {
    const int64_t b = N * c / chunks / kStreams * kStreams;
    const int64_t e = c + 1 == chunks ? N : N * (c + 1) / chunks / kStreams * kStreams;
    gemv_range<WT>(M, b, e, K, x, ldx, W, y, ldy);
  });
}

// ============================================================================================
// Prefill: packed, cache-blocked GEMM
// ============================================================================================
//
// In BLAS terms C[M, N] = A[M, K] * B[K, N] with A = x and B = W^T.
//
// Micro-tile MR x NR = 6 x 16: 12 ymm accumulators, 2 ymm for the B row and 1 for the
// broadcast A value = 15 of the 16 ymm registers. Each k step does 2 vector loads + 6
// broadcasts for 12 FMAs, within Zen3's 2 FMA and 3 load ports per cycle, and the 12
// independent accumulators cover the FMA latency (measured: ~10 chains keep both FMA pipes
// busy). In isolation this kernel runs at ~88% of the FMA peak.
//
// Cache blocking (per core: 32 KiB L1d, 512 KiB L2; 32 MiB shared L3):
//   KC = 256: one packed B micro-panel (KC x 16 fp32 = 16 KiB) stays in L1 while the
//             micro-kernel sweeps it against every A micro-panel of the block.
//   MC = 144: an A block (MC x KC fp32 = 144 KiB) stays in L2 and is reused for every
//             16-column B micro-panel of the current column chunk.
// K is split into equal-sized blocks (rounded to 8) rather than 256,256,...,rest, so no
// block is tiny.
//
// Sharing the work: x is packed once, by all threads, into one shared buffer (every K block
// of up to kMaxPackedA bytes of rows at a time). Then the columns of W are cut into chunks of
// a few 16-column panels (at least 8 per thread), and the threads take chunks from a shared
// counter: each packs its chunk of W (KC x chunk, in L2) and computes those columns of y for
// every row. Handing out chunks rather than fixed halves matters on a VM, where one core
// often runs a few percent slower than the other: with fixed halves the faster thread waited
// ~6% of every prefill GEMM for the slower one.
constexpr int kMR = 6, kNR = 16;
constexpr int64_t kKC = 256, kMC = 144;
static_assert(kMC % kMR == 0, "blocks must hold whole micro-panels");
// The packed x of one pass (all K blocks of its rows); larger M runs in several passes.
constexpr int64_t kMaxPackedA = int64_t(8) << 20;

// Pack W[n0 .. n0+nc, k0 .. k0+kc) into panels of 16 columns: panel p holds, for each k, the
// 16 weights W[n0 + 16p + j, k0 + k] (j = 0..15) contiguously, converted to fp32; columns
// past nc are zero. Full panels are transposed 8x8 at a time in registers.
template <DType WT>
TAIPAN_AVX2 void pack_b(const void* W, int64_t K, int64_t n0, int64_t nc, int64_t k0, int64_t kc,
                        float* Bp) {
  constexpr int64_t kElem = WT == DType::F32 ? 4 : 2;
  const char* wbytes = static_cast<const char*>(W);
  for (int64_t p = 0; p < nc; p += kNR, Bp += kc * kNR) {
    const int64_t cols = std::min<int64_t>(kNR, nc - p);
    const int64_t row = n0 + p;  // first W row of this panel
    // W is read here in 16 short row segments at a time, which the hardware prefetcher
    // handles poorly; prefetch the same segments of the next panel's rows as we go.
    const bool prefetch_next = p + 2 * kNR <= nc;
    int64_t k = 0;
    if (cols == kNR) {
      for (; k + 8 <= kc; k += 8) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
          if (prefetch_next && ((k0 + k) * kElem) % 64 == 0) {
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
              _mm_prefetch(wbytes + ((row + kNR + h * 8 + i) * K + k0 + k) * kElem, _MM_HINT_T0);
          }
          __m256 r[8];
#pragma GCC unroll 8
          for (int i = 0; i < 8; i++) r[i] = load_w8<WT>(W, (row + h * 8 + i) * K + k0 + k);
          transpose8x8(r);
#pragma GCC unroll 8
          for (int i = 0; i < 8; i++) _mm256_store_ps(Bp + (k + i) * kNR + h * 8, r[i]);
        }
      }
    }
    for (; k < kc; k++)
      for (int64_t j = 0; j < kNR; j++)
        Bp[k * kNR + j] = j < cols ? load_w1<WT>(W, (row + j) * K + k0 + k) : 0.0f;
  }
}

// Pack x[m0 .. m0+mc, k0 .. k0+kc) into panels of 6 rows: panel p holds, for each k, the 6
// values x[m0 + 6p + i, k0 + k] contiguously; rows past mc are zero. Full panels go through
// an 8x8 register transpose (rows 6 and 7 are don't-care): each transposed row is stored as
// 8 floats at a stride of 6, the 2 extra floats being overwritten by the next store. The last
// row of a panel is stored masked, so nothing is written past the panel (threads pack
// neighbouring panels of one buffer at the same time).
TAIPAN_AVX2 void pack_a(const float* x, int64_t ldx, int64_t m0, int64_t mc, int64_t k0,
                        int64_t kc, float* Ap) {
  const __m256i first6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
  for (int64_t p = 0; p < mc; p += kMR, Ap += kc * kMR) {
    const int64_t rows = std::min<int64_t>(kMR, mc - p);
    const float* xp = x + (m0 + p) * ldx + k0;
    int64_t k = 0;
    if (rows == kMR) {
      for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
#pragma GCC unroll 6
        for (int i = 0; i < kMR; i++) r[i] = _mm256_loadu_ps(xp + i * ldx + k);
        r[6] = r[7] = _mm256_setzero_ps();
        transpose8x8(r);
#pragma GCC unroll 7
        for (int i = 0; i < 7; i++) _mm256_storeu_ps(Ap + (k + i) * kMR, r[i]);
        _mm256_maskstore_ps(Ap + (k + 7) * kMR, first6, r[7]);
      }
    }
    for (; k < kc; k++)
      for (int64_t i = 0; i < kMR; i++) Ap[k * kMR + i] = i < rows ? xp[i * ldx + k] : 0.0f;
  }
}

TAIPAN_AVX2 inline __m256 add_loaded(__m256 v, const float* p) {
  return _mm256_add_ps(v, _mm256_loadu_ps(p));
}

// The 6x16 micro-kernel: C[0..6, 0..16) (+)= Ap-panel * Bp-panel over kc steps. With
// accumulate = false C is overwritten (first K block), else added to.
TAIPAN_AVX2 void micro_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                            bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  // The C tile (6 rows of 64 bytes, up to 2 lines each) usually lives in L3 by the time we
  // come back to it; start fetching it now so the update at the end does not stall.
  if (accumulate) {
#pragma GCC unroll 6
    for (int i = 0; i < kMR; i++) {
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + kNR - 1), _MM_HINT_T0);
    }
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(Ap + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(Ap + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(Ap + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(Ap + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(Ap + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(Ap + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    Ap += kMR;
    Bp += kNR;
  }
  if (accumulate) {
    c00 = add_loaded(c00, C + 0 * ldc), c01 = add_loaded(c01, C + 0 * ldc + 8);
    c10 = add_loaded(c10, C + 1 * ldc), c11 = add_loaded(c11, C + 1 * ldc + 8);
    c20 = add_loaded(c20, C + 2 * ldc), c21 = add_loaded(c21, C + 2 * ldc + 8);
    c30 = add_loaded(c30, C + 3 * ldc), c31 = add_loaded(c31, C + 3 * ldc + 8);
    c40 = add_loaded(c40, C + 4 * ldc), c41 = add_loaded(c41, C + 4 * ldc + 8);
    c50 = add_loaded(c50, C + 5 * ldc), c51 = add_loaded(c51, C + 5 * ldc + 8);
  }
  _mm256_storeu_ps(C + 0 * ldc, c00), _mm256_storeu_ps(C + 0 * ldc + 8, c01);
  _mm256_storeu_ps(C + 1 * ldc, c10), _mm256_storeu_ps(C + 1 * ldc + 8, c11);
  _mm256_storeu_ps(C + 2 * ldc, c20), _mm256_storeu_ps(C + 2 * ldc + 8, c21);
  _mm256_storeu_ps(C + 3 * ldc, c30), _mm256_storeu_ps(C + 3 * ldc + 8, c31);
  _mm256_storeu_ps(C + 4 * ldc, c40), _mm256_storeu_ps(C + 4 * ldc + 8, c41);
  _mm256_storeu_ps(C + 5 * ldc, c50), _mm256_storeu_ps(C + 5 * ldc + 8, c51);
}

// The K blocking: equal blocks of at most kKC, rounded up to 8.
inline int64_t k_block(int64_t K) {
  const int64_t kblocks = (K + kKC - 1) / kKC;
  return std::min(K, ((K + kblocks - 1) / kblocks + 7) / 8 * 8);
}

// y[m0..m1, n0..n1) = x W^T for those rows and columns. Ap holds x's rows [a0, ...) packed by
// pack_a, K block after K block (the block starting at column pc is Mp x kc floats at
// Ap + Mp * pc); Bp has room for one packed K block of the columns. Loop order (outer to
// inner) pc, ic, jr, ir, as in BLIS, so each packed panel is reused from the cache level it
// was sized for.
template <DType WT>
TAIPAN_AVX2 void gemm_packed_tile(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                                  int64_t kc_max, const float* Ap, int64_t a0, int64_t Mp,
                                  const void* W, float* Bp, float* y, int64_t ldy) {
  alignas(32) float edge[kMR * kNR];
  const int64_t nc = n1 - n0;
  for (int64_t pc = 0; pc < K; pc += kc_max) {
    const int64_t kc = std::min(kc_max, K - pc);
    const bool accumulate = pc > 0;
    pack_b<WT>(W, K, n0, nc, pc, kc, Bp);
    const float* Ablock = Ap + Mp * pc;
    for (int64_t ic = m0; ic < m1; ic += kMC) {
      const int64_t mc = std::min(kMC, m1 - ic);
      for (int64_t jr = 0; jr < nc; jr += kNR) {
        const int64_t nr = std::min<int64_t>(kNR, nc - jr);
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          const int64_t mr = std::min<int64_t>(kMR, mc - ir);
          const float* Apanel = Ablock + (ic + ir - a0) * kc;
          float* C = y + (ic + ir) * ldy + n0 + jr;
          if (mr == kMR && nr == kNR) {
            micro_6x16(kc, Apanel, Bp + jr * kc, C, ldy, accumulate);
          } else {  // edge tile: compute the full tile aside, keep the valid part
            micro_6x16(kc, Apanel, Bp + jr * kc, edge, kNR, false);
            for (int64_t i = 0; i < mr; i++)
              for (int64_t j = 0; j < nr; j++) {
                const float v = edge[i * kNR + j];
                C[i * ldy + j] = accumulate ? C[i * ldy + j] + v : v;
              }
          }
        }
      }
    }
  }
}

template <DType WT>
void gemm_packed(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx,
                 const void* W, float* y, int64_t ldy) {
  static thread_local ScratchBuffer a_buf;  // the caller's: shared by the threads of one call
  const int nt = M * N * K <= kSerialFmas ? 1 : pool.size();
  const int64_t kc_max = k_block(K);
  // Column chunks: whole panels, at least 8 chunks per thread, at most 256 columns (whose
  // packed K block, 256 KiB, stays in L2).
  const int64_t npanels = (N + kNR - 1) / kNR;
  const int64_t chunk = kNR * std::clamp<int64_t>(npanels / (8 * nt), 1, 256 / kNR);
  const int64_t nchunks = (N + chunk - 1) / chunk;
  // Rows per pass: as many 6-row panels as fit kMaxPackedA; with few column chunks, also
  // split the rows into parts so that every thread has tasks.
  const int64_t pass_rows = std::max<int64_t>(kMC, kMaxPackedA / int64_t(sizeof(float)) / K / kMR * kMR);
  for (int64_t m0 = 0; m0 < M; m0 += pass_rows) {
    const int64_t m1 = std::min(M, m0 + pass_rows), mpanels = (m1 - m0 + kMR - 1) / kMR;
    const int64_t Mp = mpanels * kMR;
    float* Ap = a_buf.get(size_t(Mp * K), "linear (packed input rows)");
    const int64_t mparts = std::min(mpanels, std::max<int64_t>(1, (4 * nt + nchunks - 1) / nchunks));
    const int64_t tasks = nchunks * mparts;

    auto pack_rows = [&](int64_t p0, int64_t p1) {  // 6-row panels [p0, p1) of this pass
      const int64_t r0 = m0 + p0 * kMR, r1 = std::min(m1, m0 + p1 * kMR);
      for (int64_t pc = 0; pc < K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, K - pc);
        pack_a(x, ldx, r0, r1 - r0, pc, kc, Ap + Mp * pc + p0 * kMR * kc);
      }
    };
    auto run_task = [&](int64_t t) {
      static thread_local ScratchBuffer b_buf;
      const int64_t c = t / mparts, part = t % mparts;
      const int64_t n0 = c * chunk, n1 = std::min(N, n0 + chunk);
      const int64_t r0 = m0 + mpanels * part / mparts * kMR;
      const int64_t r1 = std::min(m1, m0 + mpanels * (part + 1) / mparts * kMR);
      float* Bp = b_buf.get(size_t(kc_max * chunk), "linear (packed weight panels)");
      gemm_packed_tile<WT>(r0, r1, n0, n1, K, kc_max, Ap, m0, Mp, W, Bp, y, ldy);
    };

    if (nt == 1) {
      pack_rows(0, mpanels);
      for (int64_t t = 0; t < tasks; t++) run_task(t);
      continue;
    }
    pool.parallel_for(mpanels, [&](int64_t b, int64_t e, int) { pack_rows(b, e); });
    pool.parallel_tasks(tasks, [&](int64_t t, int) { run_task(t); });
  }
}

template <DType WT>
void gemm_avx2(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx,
               const void* W, float* y, int64_t ldy) {
  if (M <= kGemvMaxM) gemv_avx2<WT>(pool, M, N, K, x, ldx, W, y, ldy);
  else gemm_packed<WT>(pool, M, N, K, x, ldx, W, y, ldy);
}
#endif  // TAIPAN_GEMM_X86

}  // namespace

void gemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx,
          const void* W, DType wdt, float* y, int64_t ldy) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // empty sum
    for (int64_t m = 0; m < M; m++) std::fill(y + m * ldy, y + m * ldy + N, 0.0f);
    return;
  }
#if TAIPAN_GEMM_X86
  if (use_avx2()) {
    switch (wdt) {
      case DType::F16: gemm_avx2<DType::F16>(pool, M, N, K, x, ldx, W, y, ldy); return;
      case DType::BF16: gemm_avx2<DType::BF16>(pool, M, N, K, x, ldx, W, y, ldy); return;
      default: gemm_avx2<DType::F32>(pool, M, N, K, x, ldx, W, y, ldy); return;
    }
  }
#endif
  switch (wdt) {
    case DType::F16: gemm_portable<DType::F16>(pool, M, N, K, x, ldx, W, y, ldy); return;
    case DType::BF16: gemm_portable<DType::BF16>(pool, M, N, K, x, ldx, W, y, ldy); return;
    default: gemm_portable<DType::F32>(pool, M, N, K, x, ldx, W, y, ldy); return;
  }
}

}  // namespace taipan::cpu
