// Correctness check and benchmark for the CPU GEMM (csrc/cpu/gemm.cpp).
//
// Build and run (from the repository root):
//   g++ -O3 -std=c++17 -pthread -Icsrc csrc/cpu/gemm.cpp csrc/cpu/thread_pool.cpp csrc/cpu/cpu_features.cpp bench/native/gemm_bench.cpp -o /tmp/gemm_bench
//   /tmp/gemm_bench            # correctness, then the timing table
//   /tmp/gemm_bench --check    # correctness only (exit status 1 on any mismatch)
//   /tmp/gemm_bench --bench    # timing only
//   /tmp/gemm_bench --reps N   # timing repetitions per shape (default 15 prefill, 60 decode)
//   /tmp/gemm_bench --portable # also time the portable path (a few shapes)
//
// Correctness: gemm is compared with a float64 loop over the same (dtype-rounded) weights, for
// many edge shapes (M, N, K = 1, odd K, N not a multiple of any tile, ldx > K, ldy > N), all
// three weight dtypes and both the AVX2 and the portable path. The error bound is relative to
// sum_k |x_k * w_k| (the scale of fp32 rounding in a dot product). Padding columns of y past N
// must stay untouched, and NaN/Inf must reach exactly the outputs that depend on them.
//
// Timing: best and median over repetitions, on a ThreadPool of 2. Prefill shapes report
// GFLOP/s (2*M*N*K / time) and reuse one W buffer (reading it from DRAM instead would add a
// few percent at M = 512). Decode shapes report the weight-read bandwidth (bytes of W / time);
// they rotate through enough copies of W (>= 320 MB) that every call reads W from DRAM, not
// from the 32 MB L3. On a shared machine other processes inflate the medians; compare bests.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/kernels.h"

using taipan::DType;
using namespace taipan::cpu;

namespace {

// ---- Deterministic random data ------------------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return float(next() >> 40) / float(1 << 24) * 2.0f - 1.0f; }  // [-1, 1)
};

// Weights stored in dtype `dt`, plus the exact fp32 value of each stored weight.
struct Weights {
  DType dt;
  std::vector<uint8_t> raw;
  std::vector<float> f32;  // the stored values, widened
  const void* data() const { return raw.data(); }
};

Weights make_weights(DType dt, int64_t n, Rng& rng) {
  Weights w;
  w.dt = dt;
  w.raw.resize(size_t(n) * taipan::dtype_size(dt));
  w.f32.resize(size_t(n));
  for (int64_t i = 0; i < n; i++) {
    float v = rng.uniform();
    if (dt == DType::F32) {
      std::memcpy(&w.raw[size_t(i) * 4], &v, 4);
      w.f32[size_t(i)] = v;
    } else {
      uint16_t h = dt == DType::F16 ? taipan::f32_to_f16(v) : taipan::f32_to_bf16(v);
      std::memcpy(&w.raw[size_t(i) * 2], &h, 2);
      w.f32[size_t(i)] = dt == DType::F16 ? taipan::f16_to_f32(h) : taipan::bf16_to_f32(h);
    }
  }
  return w;
}

void set_weight(Weights& w, int64_t i, float v) {
  if (w.dt == DType::F32) {
    std::memcpy(&w.raw[size_t(i) * 4], &v, 4);
    w.f32[size_t(i)] = v;
  } else {
    uint16_t h = w.dt == DType::F16 ? taipan::f32_to_f16(v) : taipan::f32_to_bf16(v);
    std::memcpy(&w.raw[size_t(i) * 2], &h, 2);
    w.f32[size_t(i)] = w.dt == DType::F16 ? taipan::f16_to_f32(h) : taipan::bf16_to_f32(h);
  }
}

// ---- Correctness ----------------------------------------------------------------------------

struct Shape {
  int64_t M, N, K, ldx_pad, ldy_pad;
};

constexpr float kSentinel = -12345.0f;
constexpr double kTol = 1e-5;  // relative to sum_k |x_k w_k|

// Runs one case; returns the worst relative error seen (or +inf on a hard failure, which is
// also printed).
double check_case(ThreadPool& pool, const Shape& s, DType dt, bool special, uint64_t seed,
                  const char* path) {
  Rng rng(seed);
  const int64_t ldx = s.K + s.ldx_pad, ldy = s.N + s.ldy_pad;
  std::vector<float> x(size_t(s.M * ldx));
  for (auto& v : x) v = rng.uniform();
  Weights w = make_weights(dt, s.N * s.K, rng);
  if (special) {
    // A NaN in one x row, a +Inf and a -Inf in two W rows, and a zero x value against the +Inf
    // (0 * Inf = NaN must not be skipped).
    int64_t mn = s.M / 2, kn = s.K / 3;
    x[size_t(mn * ldx + kn)] = std::numeric_limits<float>::quiet_NaN();
    int64_t ni = s.N - 1, ki = (s.K * 2) / 3;
    set_weight(w, ni * s.K + ki, std::numeric_limits<float>::infinity());
    if (s.N > 2) set_weight(w, 1 * s.K + s.K - 1, -std::numeric_limits<float>::infinity());
    if (s.M > 1) x[size_t((s.M - 1) * ldx + ki)] = 0.0f;
  }
  std::vector<float> y(size_t(s.M * ldy), kSentinel);
  gemm(pool, s.M, s.N, s.K, x.data(), ldx, w.data(), dt, y.data(), ldy);

  double worst = 0;
  int reported = 0;
  auto fail = [&](int64_t m, int64_t n, double got, double want, const char* why) {
    if (reported++ < 3)
      std::printf("  FAIL %-8s %-4s M=%lld N=%lld K=%lld ldx=%lld ldy=%lld at [%lld,%lld]: "
                  "got %.9g want %.9g (%s)\n",
                  path, taipan::dtype_name(dt), (long long)s.M, (long long)s.N, (long long)s.K,
                  (long long)ldx, (long long)ldy, (long long)m, (long long)n, got, want, why);
    worst = std::numeric_limits<double>::infinity();
  };
  for (int64_t m = 0; m < s.M; m++) {
    for (int64_t n = 0; n < s.N; n++) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < s.K; k++) {
        double p = double(x[size_t(m * ldx + k)]) * double(w.f32[size_t(n * s.K + k)]);
        ref += p;
        mag += std::fabs(p);
      }
      const double got = y[size_t(m * ldy + n)];
      if (std::isnan(ref) || std::isinf(ref)) {
        bool ok = std::isnan(ref) ? std::isnan(got) : got == ref;
        if (!ok) fail(m, n, got, ref, "non-finite mismatch");
        continue;
      }
      const double err = std::fabs(got - ref) / std::max(mag, 1e-30);
      if (!(err <= kTol)) fail(m, n, got, ref, "error above tolerance");
      worst = std::max(worst, err);
    }
    for (int64_t n = s.N; n < ldy; n++)
      if (y[size_t(m * ldy + n)] != kSentinel)
        fail(m, n, y[size_t(m * ldy + n)], kSentinel, "wrote past N");
  }
  return worst;
}

bool run_checks() {
  // Edge shapes: tiny, odd K, N and M around every tile/block boundary (GEMV row block 6 with
  // x groups of 4, micro-tile 6x16, blocks MC=144 / KC=256), the GEMV/packed switch at
  // M = 48/49, small N with large M (the packed path then splits M between threads), K up to
  // 4000 (x packed in two passes), and the model's own shapes.
  const std::vector<Shape> shapes = {
      {1, 1, 1, 0, 0},       {1, 1, 7, 3, 0},        {1, 5, 9, 0, 2},      {2, 3, 17, 1, 1},
      {3, 17, 33, 0, 0},     {4, 4, 8, 0, 0},        {5, 31, 15, 2, 3},    {7, 33, 100, 0, 0},
      {8, 64, 64, 5, 7},     {9, 16, 16, 0, 0},      {1, 1000, 2048, 0, 0}, {2, 257, 2048, 4, 1},
      {8, 129, 769, 0, 0},   {6, 16, 256, 0, 0},     {7, 17, 257, 0, 0},   {13, 47, 129, 1, 1},
      {16, 100, 300, 0, 0},  {31, 40, 257, 0, 5},    {48, 37, 100, 0, 0},  {49, 33, 77, 2, 0},
      {63, 65, 511, 0, 0},   {64, 128, 768, 3, 0},   {100, 37, 1000, 0, 0}, {200, 8, 64, 0, 0},
      {150, 1, 33, 0, 1},    {145, 33, 513, 7, 9},   {37, 129, 2048, 0, 0}, {12, 4100, 20, 0, 0},
      {2, 4100, 3, 0, 0},    {300, 300, 1, 0, 0},    {1, 3352, 768, 0, 0}, {16, 768, 1536, 0, 0},
      {70, 3352, 768, 0, 0},  {700, 40, 4000, 0, 0},
  };
  const DType dts[] = {DType::F32, DType::F16, DType::BF16};
  ThreadPool pool2(2), pool1(1), pool3(3);
  bool ok = true;
  const bool has_avx2 = use_avx2();
  if (!has_avx2)
    std::printf("note: AVX2/FMA/F16C not available; only the portable path is checked\n");
  for (int portable = 0; portable < 2; portable++) {
    if (!portable && !has_avx2) continue;
    set_force_portable(portable != 0);
    const char* path = portable ? "portable" : "avx2";
    for (DType dt : dts) {
      double worst = 0;
      int cases = 0;
      uint64_t seed = 1;
      for (const Shape& s : shapes) {
        for (int special = 0; special < 2; special++) {
          ThreadPool& pool = (seed % 5 == 3) ? pool3 : (seed % 5 == 4) ? pool1 : pool2;
          worst = std::max(worst, check_case(pool, s, dt, special != 0, seed++, path));
          cases++;
        }
      }
      const bool pass = worst <= kTol;
      ok = ok && pass;
      std::printf("check %-8s %-4s %3d cases  max rel err %.2e  %s\n", path, taipan::dtype_name(dt),
                  cases, worst, pass ? "ok" : "FAILED");
    }
  }
  set_force_portable(false);
  return ok;
}

// ---- Timing ---------------------------------------------------------------------------------

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  double best_ms, median_ms;
};

// Times `reps` calls, each on the next W copy in rotation (copies.size() == 1 means hot).
Timing time_gemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* x,
                 const std::vector<const void*>& copies, DType dt, float* y, int reps) {
  size_t c = 0;
  for (int i = 0; i < 2; i++) {  // warm-up: page faults, thread wake-up, buffers
    gemm(pool, M, N, K, x, K, copies[c], dt, y, N);
    c = (c + 1) % copies.size();
  }
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    double t0 = now_s();
    gemm(pool, M, N, K, x, K, copies[c], dt, y, N);
    t.push_back((now_s() - t0) * 1e3);
    c = (c + 1) % copies.size();
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// `copies` buffers of W in dtype dt, filled with small random values.
std::vector<std::vector<uint8_t>> make_copies(DType dt, int64_t elems, int copies) {
  std::vector<std::vector<uint8_t>> out(static_cast<size_t>(copies));
  Rng rng(7);
  const size_t es = taipan::dtype_size(dt);
  for (auto& buf : out) {
    buf.resize(size_t(elems) * es);
    for (int64_t i = 0; i < elems; i++) {
      float v = rng.uniform() * 0.05f;
      if (dt == DType::F32) {
        std::memcpy(&buf[size_t(i) * 4], &v, 4);
      } else {
        uint16_t h = dt == DType::F16 ? taipan::f32_to_f16(v) : taipan::f32_to_bf16(v);
        std::memcpy(&buf[size_t(i) * 2], &h, 2);
      }
    }
  }
  return out;
}

void run_bench(int reps_prefill, int reps_decode, bool portable_too) {
  ThreadPool pool(2);
  const DType dts[] = {DType::F32, DType::BF16, DType::F16};
  std::printf("\n%-10s %-22s %-5s %10s %10s %12s %12s\n", "regime", "M x N x K", "dtype",
              "best ms", "median ms", "best", "median");

  // Prefill: compute bound; report GFLOP/s. The model's in_proj (3352 x 768), a 1536 x 768
  // projection and out_proj (768 x 1536).
  struct P { int64_t M, N, K; };
  const P prefill[] = {{512, 1536, 768},  {512, 3352, 768},  {512, 768, 1536},
                       {2048, 3352, 768}, {2048, 768, 1536}, {64, 3352, 768}};
  for (int portable = 0; portable < (portable_too ? 2 : 1); portable++) {
    set_force_portable(portable != 0);
    for (const P& p : prefill) {
      if (portable && p.M == 2048) continue;
      Rng rng(3);
      std::vector<float> x(size_t(p.M * p.K)), y(size_t(p.M * p.N));
      for (auto& v : x) v = rng.uniform();
      for (DType dt : dts) {
        auto copies = make_copies(dt, p.N * p.K, 1);
        Timing t = time_gemm(pool, p.M, p.N, p.K, x.data(), {copies[0].data()}, dt, y.data(),
                             portable ? 3 : reps_prefill);
        const double gf = 2.0 * double(p.M) * double(p.N) * double(p.K) * 1e-9;
        char shape[64];
        std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)p.M, (long long)p.N,
                      (long long)p.K);
        std::printf("%-10s %-22s %-5s %10.3f %10.3f %7.1f GF/s %7.1f GF/s\n",
                    portable ? "prefill-p" : "prefill", shape, taipan::dtype_name(dt), t.best_ms,
                    t.median_ms, gf / (t.best_ms * 1e-3), gf / (t.median_ms * 1e-3));
      }
    }
  }
  set_force_portable(false);

  // Decode: memory bound; report GB/s of weights read, with W cold (rotating copies).
  struct D { int64_t M, N, K; };
  const D decode[] = {{1, 3352, 768}, {2, 3352, 768}, {4, 3352, 768},  {8, 3352, 768},
                      {16, 3352, 768}, {1, 768, 1536}, {4, 768, 1536}, {8, 768, 1536},
                      {16, 768, 1536}, {1, 50288, 768}, {8, 50288, 768}};
  for (int portable = 0; portable < (portable_too ? 2 : 1); portable++) {
    set_force_portable(portable != 0);
    for (DType dt : dts) {
      for (const D& d : decode) {
        if (portable && d.M != 1) continue;
        const double bytes = double(d.N) * double(d.K) * double(taipan::dtype_size(dt));
        const int ncopies = int(std::max(2.0, std::ceil(320e6 / bytes)));
        auto copies = make_copies(dt, d.N * d.K, ncopies);
        std::vector<const void*> ptrs;
        for (auto& c : copies) ptrs.push_back(c.data());
        Rng rng(5);
        std::vector<float> x(size_t(d.M * d.K)), y(size_t(d.M * d.N));
        for (auto& v : x) v = rng.uniform();
        const int reps = portable ? 10 : std::max(reps_decode, 2 * ncopies);
        Timing t = time_gemm(pool, d.M, d.N, d.K, x.data(), ptrs, dt, y.data(), reps);
        char shape[64];
        std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)d.M, (long long)d.N,
                      (long long)d.K);
        const double gf = 2.0 * double(d.M) * double(d.N) * double(d.K) * 1e-9;
        std::printf("%-10s %-22s %-5s %10.3f %10.3f %7.1f GB/s %7.1f GB/s  (best %.1f GF/s)\n",
                    portable ? "decode-p" : "decode", shape, taipan::dtype_name(dt), t.best_ms,
                    t.median_ms, bytes * 1e-9 / (t.best_ms * 1e-3),
                    bytes * 1e-9 / (t.median_ms * 1e-3), gf / (t.best_ms * 1e-3));
      }
    }
  }
  set_force_portable(false);
}

}  // namespace

int main(int argc, char** argv) {
  bool check = true, bench = true, portable_too = false;
  int reps_prefill = 15, reps_decode = 60;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--check") bench = false;
    else if (a == "--bench") check = false;
    else if (a == "--portable") portable_too = true;
    else if (a == "--reps" && i + 1 < argc) reps_prefill = reps_decode = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--check | --bench] [--portable] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  bool ok = true;
  if (check) {
    ok = run_checks();
    std::printf("%s\n", ok ? "all checks passed" : "CHECKS FAILED");
  }
  if (bench) run_bench(reps_prefill, reps_decode, portable_too);
  return ok ? 0 : 1;
}
