// Timing of the CPU conv1d + SiLU kernels (csrc/cpu/conv.cpp) at the mamba2-130m shape:
// 1792 channels (x|B|C), 4 taps, read from rows of the in_proj output (3352 floats apart).
// Correctness is tested in test/ops.test.ts against the TypeScript reference.
//
// Build and run (from the repository root):
//   g++ -O3 -std=c++17 -pthread -Icsrc csrc/cpu/conv.cpp csrc/cpu/thread_pool.cpp
//       csrc/cpu/cpu_features.cpp bench/native/conv_bench.cpp -o /tmp/conv_bench   (one line)
//   /tmp/conv_bench
//
// Prefill: conv1d_silu over L tokens, best and median of 100 calls on 2 threads.
// Decode: conv1d_update of one token for each of 24 layers' states and weights, with 64 MB
// read between calls (a decode step streams megabytes of weights between two visits of a
// layer, so its taps and state are cold), and the same layer again and again (hot); per-call
// best and median of 10 rounds.
// On a shared machine other processes inflate the medians; compare bests, and alternate
// builds (A B B A) when comparing two.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "cold_cache.h"
#include "cpu/kernels.h"

using namespace taipan::cpu;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kC = 1792, kK = 4, kLd = 3352;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void report(const char* name, std::vector<double> ts) {
  std::sort(ts.begin(), ts.end());
  std::printf("%-34s %10.4f %10.4f\n", name, ts[0], ts[ts.size() / 2]);
}

void bench_prefill(ThreadPool& pool, int64_t L) {
  std::vector<float> x(size_t(L * kLd)), w(kC * kK), bias(kC), out(size_t(L * kC)), st(kC * (kK - 1));
  for (size_t i = 0; i < x.size(); i++) x[i] = float((i * 2654435761u) % 1000) / 500.f - 1.f;
  for (size_t i = 0; i < w.size(); i++) w[i] = float((i * 7919) % 100) / 100.f - 0.5f;
  std::vector<double> ts;
  for (int r = 0; r < 100; r++) {
    const auto t0 = Clock::now();
    conv1d_silu(pool, 1, L, kC, kK, x.data(), kLd, w.data(), bias.data(), st.data(), out.data(), st.data());
    ts.push_back(ms_since(t0));
  }
  char name[64];
  std::snprintf(name, sizeof name, "conv1d_silu L=%lld", (long long)L);
  report(name, ts);
}

// cold: 64 MB read between calls, as in a decode step. hot: one layer again and again, its
// data in L1/L2, which shows the kernel's own cost (the model sits in between: part of a
// layer's taps and state is still in the L3 when the next token comes).
void bench_decode(ThreadPool& pool, bool cold) {
  const int layers = 24;
  std::vector<std::vector<float>> w(layers, std::vector<float>(kC * kK, 0.1f));
  std::vector<std::vector<float>> st(layers, std::vector<float>(kC * (kK - 1), 0.2f));
  std::vector<float> bias(kC), x(kLd, 0.5f), out(kC);
  CacheEvictor evict;
  std::vector<double> ts;
  for (int r = 0; r < 10; r++) {
    double total = 0;
    for (int l = 0; l < layers; l++) {
      if (cold) evict(pool);
      float* s = st[size_t(cold ? l : 0)].data();
      const auto t0 = Clock::now();
      conv1d_update(pool, 1, kC, kK, x.data(), kLd, w[size_t(cold ? l : 0)].data(), bias.data(), &s, out.data());
      total += ms_since(t0);
    }
    ts.push_back(total / layers);
  }
  report(cold ? "conv1d_update, cold (per call)" : "conv1d_update, hot (per call)", ts);
}

}  // namespace

int main() {
  ThreadPool pool(2);
  std::printf("%-34s %10s %10s\n", "case (2 threads)", "best ms", "median ms");
  for (int64_t L : {512, 2048}) bench_prefill(pool, L);
  bench_decode(pool, false);
  bench_decode(pool, true);
  return 0;
}
