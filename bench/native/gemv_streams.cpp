// How fast can two threads stream a weight matrix from DRAM, depending on the access pattern?
// The experiment behind the decode GEMV's layout in csrc/cpu/gemm.cpp.
//
// Build and run (from the repository root):
//   g++ -O3 -mavx2 -mfma -pthread bench/native/gemv_streams.cpp -o /tmp/gemv_streams
//   /tmp/gemv_streams            # f32 weights, in_proj shape of mamba2-130m (3352 x 768)
//   /tmp/gemv_streams bf16       # bf16 weights
//   /tmp/gemv_streams f32 50288 768   # another N x K
//
// Each thread takes half of the rows and computes y = W x for them with one of these patterns:
//   sum          a plain sequential read of its half (no FMAs): what "streaming" reaches
//   R rows x G   tiles of R rows (one accumulator each), taken as G groups of R/G adjacent
//                rows from G equal regions of the half; G = 1 is R adjacent rows (one
//                stream), G = R is R rows from R different regions (R streams)
// It cycles through enough copies of W (>= 400 MB) that every read comes from DRAM, runs
// every pattern `rounds` times interleaved (a shared VM's bandwidth drifts within seconds)
// and prints the best and the mean bandwidth.
//
// On the 2-core Zen3 VM (2026-11-23), mean GB/s over 10 rounds:
//   f32:  sum 19.8   6 rows x 1: 17.8   6 x 2: 20.7   6 x 3: 21.6   6 x 6: 25.4   4 x 4: 23.1
//   bf16: sum 21.2   6 rows x 1: 10.8   6 x 2: 11.5   6 x 3: 12.8   6 x 6: 22.9   4 x 4: 22.7
// (12 or more streams per thread fall back again.)
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

int64_t N = 3352, K = 768;
bool bf16 = false;
std::vector<void*> copies;
std::vector<float> xv, yv;

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <bool BF16>
inline __m256 load8(const void* W, int64_t i) {
  if constexpr (BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(W) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(W) + i);
  }
}

size_t elem() { return bf16 ? 2 : 4; }

// Plain sequential read of rows [n0, n1).
void read_sum(const void* W, int64_t n0, int64_t n1) {
  const char* p = static_cast<const char*>(W) + n0 * K * elem();
  const char* e = static_cast<const char*>(W) + n1 * K * elem();
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (; p + 128 <= e; p += 128) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(reinterpret_cast<const float*>(p)));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(reinterpret_cast<const float*>(p + 32)));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(reinterpret_cast<const float*>(p + 64)));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(reinterpret_cast<const float*>(p + 96)));
  }
  yv[n0] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

// Tiles of R rows: G groups of R/G adjacent rows, one group per region of [n0, n1).
template <bool BF16, int R, int G>
void tiles(const void* W, int64_t n0, int64_t n1) {
  constexpr int C = R / G;
  const int64_t per = (n1 - n0) / G / C * C;  // rows per region, whole groups
  for (int64_t i = 0; i < per; i += C) {
    int64_t row[R];
    for (int g = 0; g < G; g++)
      for (int c = 0; c < C; c++) row[g * C + c] = n0 + g * per + i + c;
    __m256 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
      const __m256 x = _mm256_loadu_ps(xv.data() + k);
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(load8<BF16>(W, row[r] * K + k), x, acc[r]);
    }
    for (int r = 0; r < R; r++) yv[row[r]] = hsum(acc[r]);
  }
}

using Pattern = void (*)(const void*, int64_t, int64_t);

// A second thread that runs the current pattern on the upper half of the rows.
struct Helper {
  std::atomic<int> generation{0}, done{0};
  std::atomic<bool> quit{false};
  Pattern fn = nullptr;
  const void* W = nullptr;
  std::thread thread{[this] {
    int seen = 0;
    for (;;) {
      int g;
      while ((g = generation.load(std::memory_order_acquire)) == seen) {
        if (quit.load()) return;
        _mm_pause();
      }
      seen = g;
      fn(W, N / 2, N);
      done.fetch_add(1, std::memory_order_release);
    }
  }};
  ~Helper() {
    quit.store(true);
    thread.join();
  }
};

// GB/s of weights read for one pass over every copy.
double measure(Helper& helper, Pattern fn) {
  helper.fn = fn;
  const auto t0 = std::chrono::steady_clock::now();
  for (void* W : copies) {
    helper.W = W;
    helper.done.store(0);
    helper.generation.fetch_add(1, std::memory_order_release);
    fn(W, 0, N / 2);
    while (helper.done.load(std::memory_order_acquire) == 0) _mm_pause();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(copies.size()) * double(N * K * elem()) / s / 1e9;
}

template <bool BF16>
std::vector<std::pair<std::string, Pattern>> patterns() {
  return {{"sum", read_sum},
          {"6 rows x 1", tiles<BF16, 6, 1>},
          {"6 rows x 2", tiles<BF16, 6, 2>},
          {"6 rows x 3", tiles<BF16, 6, 3>},
          {"6 rows x 6", tiles<BF16, 6, 6>},
          {"4 rows x 4", tiles<BF16, 4, 4>},
          {"8 rows x 8", tiles<BF16, 8, 8>},
          {"12 rows x 12", tiles<BF16, 12, 12>}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) bf16 = std::string(argv[1]) == "bf16";
  if (argc > 3) N = std::atoll(argv[2]), K = std::atoll(argv[3]);
  if (N < 24 || K < 8 || K % 8 != 0) {
    std::fprintf(stderr, "usage: %s [f32|bf16] [N K]   (N >= 24, K a multiple of 8)\n", argv[0]);
    return 2;
  }
  const size_t bytes = size_t(N * K) * elem();
  const size_t count = std::max<size_t>(2, (size_t(400) << 20) / bytes);
  for (size_t i = 0; i < count; i++) {
    void* w = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    std::memset(w, 0x3c, bytes);  // small finite values in both dtypes
    copies.push_back(w);
  }
  xv.assign(size_t(K), 0.5f);
  yv.assign(size_t(N), 0.0f);

  const auto list = bf16 ? patterns<true>() : patterns<false>();
  std::vector<double> best(list.size(), 0), sum(list.size(), 0);
  const int rounds = 10;
  {
    Helper helper;
    for (int r = 0; r < rounds; r++)
      for (size_t i = 0; i < list.size(); i++) {
        const double g = measure(helper, list[i].second);
        best[i] = std::max(best[i], g);
        sum[i] += g;
      }
  }
  std::printf("%s W %lld x %lld, %zu copies, 2 threads, %d rounds\n", bf16 ? "bf16" : "f32",
              static_cast<long long>(N), static_cast<long long>(K), count, rounds);
  for (size_t i = 0; i < list.size(); i++)
    std::printf("  %-14s best %5.1f  mean %5.1f GB/s\n", list[i].first.c_str(), best[i], sum[i] / rounds);
  for (void* w : copies) std::free(w);
}
