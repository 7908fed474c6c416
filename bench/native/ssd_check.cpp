// Correctness check and timing for the CPU SSD scan (csrc/cpu/ssd.cpp).
//
// Build and run (from the repository root):
//   g++ -O3 -std=c++17 -pthread -Icsrc csrc/cpu/ssd.cpp csrc/cpu/thread_pool.cpp
//       csrc/cpu/cpu_features.cpp bench/native/ssd_check.cpp -o /tmp/ssd_check
//   (one line)
//   /tmp/ssd_check            # checks, then the timing table
//   /tmp/ssd_check --check    # checks only
//   /tmp/ssd_check --bench    # timing only
//   (ssd_step "cold": 64 MB of other memory is read between calls, as in a decode step, so the
//   state comes from DRAM; compare builds by their best, alternating A B B A)
//
// Checks ssd_scan and ssd_step against a float64 run of the literal recurrence
//   S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,  y_t = S_t C_t + D x_t
// on random inputs of realistic magnitude, over many shapes, chunk lengths, with and without
// an initial state (also aliased with the final state), strided inputs, and both the AVX2 and
// the portable path. Errors are max |got - ref| / RMS(ref), per output tensor. Every check and
// timing runs the chunk it names (max_chunk = chunk); the model's scan cuts chunks to 64.
// Exit status is non-zero if any check fails.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cold_cache.h"
#include "cpu/kernels.h"

using namespace taipan::cpu;

namespace {

// Observed worst errors are ~1e-5. The tolerances leave room for other seeds but would catch
// an fp32 cumsum of dt*A (~2e-4 on the normal inputs at chunk 256, ~5e-3 with extreme dt,
// where the in-chunk cumsum reaches ~1e5 and an fp32 ulp of it is ~0.008).
constexpr double kTol = 5e-5;         // scan / step vs float64 reference
constexpr double kTolSelf = 5e-5;     // scan(L) vs scan(L-k) + k steps (both fp32)
constexpr double kTolExtreme = 5e-5;  // dt ~ softplus(N(4, 8^2)): huge decays, identity softplus

// One set of inputs laid out as the model lays them out: x, B and C side by side in one row
// per token (the conv output, row stride ld), dt_raw in another strided buffer. The checks
// add odd gaps between the parts (so nothing is aligned or contiguous); the timings use the
// model's exact layout.
struct Inputs {
  SsdDims d;
  int64_t ld, lddt, off_b, off_c;
  std::vector<float> xbc, dt_raw, dt_bias, A_log, D, state;  // state: [B, H, P, N]
  const float* x() const { return xbc.data(); }
  const float* Bm() const { return xbc.data() + off_b; }
  const float* Cm() const { return xbc.data() + off_c; }
};

Inputs make_inputs(const SsdDims& d, uint64_t seed, bool extreme = false, bool gaps = true) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nrm(0.f, 1.f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  Inputs in;
  in.d = d;
  in.off_b = d.H * d.P + (gaps ? 3 : 0);
  in.off_c = in.off_b + d.G * d.N + (gaps ? 1 : 0);
  in.ld = in.off_c + d.G * d.N + (gaps ? 5 : 0);
  in.lddt = gaps ? d.H + 3 : d.H;
  int64_t rows = d.B * d.L;
  in.xbc.resize(size_t(rows * in.ld));
  for (auto& v : in.xbc) v = nrm(rng);
  in.dt_raw.resize(size_t(rows * in.lddt));
  for (auto& v : in.dt_raw) v = extreme ? 8.f * nrm(rng) + 4.f : nrm(rng) - 2.f;
  in.dt_bias.resize(size_t(d.H));
  in.A_log.resize(size_t(d.H));
  in.D.resize(size_t(d.H));
  for (int64_t h = 0; h < d.H; h++) {
    in.dt_bias[size_t(h)] = uni(rng) - 0.5f;
    in.A_log[size_t(h)] = std::log(1.f + 15.f * uni(rng));
    in.D[size_t(h)] = nrm(rng);
  }
  in.state.resize(size_t(d.B * d.H * d.P * d.N));
  for (auto& v : in.state) v = nrm(rng);
  return in;
}

// The literal recurrence in float64, tokens [t0, t1) of every sequence; S: [B, H, P, N].
void reference(const Inputs& in, int64_t t0, int64_t t1, std::vector<double>& S,
               std::vector<double>& y) {
  const SsdDims& d = in.d;
  y.assign(size_t(d.B * d.L * d.H * d.P), 0.0);
  for (int64_t b = 0; b < d.B; b++)
    for (int64_t h = 0; h < d.H; h++) {
      int64_t g = h / (d.H / d.G);
      double A = -std::exp(double(in.A_log[size_t(h)]));
      double* s = S.data() + (b * d.H + h) * d.P * d.N;
      for (int64_t t = t0; t < t1; t++) {
        int64_t row = b * d.L + t;
        double v = double(in.dt_raw[size_t(row * in.lddt + h)]) + in.dt_bias[size_t(h)];
        double dt = v > 20 ? v : std::log1p(std::exp(v));
        double a = std::exp(dt * A);
        const float* xr = in.x() + row * in.ld + h * d.P;
        const float* Br = in.Bm() + row * in.ld + g * d.N;
        const float* Cr = in.Cm() + row * in.ld + g * d.N;
        for (int64_t p = 0; p < d.P; p++) {
          double acc = 0;
          for (int64_t n = 0; n < d.N; n++) {
            double& sv = s[p * d.N + n];
            sv = a * sv + dt * xr[p] * Br[n];
            acc += sv * Cr[n];
          }
          y[size_t(row * d.H * d.P + h * d.P + p)] = acc + in.D[size_t(h)] * xr[p];
        }
      }
    }
}

// max |got - ref| / RMS(ref) over the n values (ref given as double or float).
template <class R>
double rel_err(const float* got, const R* ref, size_t n) {
  double ss = 0, mx = 0;
  for (size_t i = 0; i < n; i++) ss += double(ref[i]) * double(ref[i]);
  double rms = std::sqrt(ss / double(std::max<size_t>(n, 1)));
  for (size_t i = 0; i < n; i++) {
    double e = std::fabs(double(got[i]) - double(ref[i]));
    if (!(e <= mx)) mx = e;  // NaN propagates
  }
  return rms > 0 ? mx / rms : mx;
}

// Worst errors seen; "other" collects the self-consistency and extreme-dt checks.
struct Tally {
  int cases = 0, failed = 0;
  double worst_y = 0, worst_s = 0, worst_other = 0;
  void add(const char* what, const std::string& desc, double ey, double es, double tol,
           bool other = false) {
    cases++;
    if (other) {
      worst_other = std::max(worst_other, std::max(ey, es));
    } else {
      worst_y = std::max(worst_y, ey);
      worst_s = std::max(worst_s, es);
    }
    if (!(ey <= tol && es <= tol)) {
      failed++;
      if (failed <= 20)
        std::printf("FAIL %s %s: y err %.3g, state err %.3g (tol %.1g)\n", what, desc.c_str(), ey,
                    es, tol);
    }
  }
};

void run_scan(ThreadPool& pool, const Inputs& in, const SsdDims& d, const float* state_in,
              float* y, float* state_out) {
  ssd_scan(pool, d, in.x(), in.ld, in.Bm(), in.ld, in.Cm(), in.ld, in.dt_raw.data(), in.lddt,
           in.dt_bias.data(), in.A_log.data(), in.D.data(), state_in, y, state_out);
}

// Token t of every sequence through ssd_step; y_step: [B, H*P].
void run_step(ThreadPool& pool, const Inputs& in, int64_t t, float* state, float* y_step) {
  SsdDims d1 = in.d;
  d1.L = 1;
  // Row b of the step's inputs is row b*L + t of the scan's: the stride is L rows.
  int64_t off = t * in.ld, step = in.d.L;
  ssd_step(pool, d1, in.x() + off, step * in.ld, in.Bm() + off, step * in.ld, in.Cm() + off,
           step * in.ld, in.dt_raw.data() + t * in.lddt, step * in.lddt, in.dt_bias.data(),
           in.A_log.data(), in.D.data(), state, y_step);
}

void check_shape(ThreadPool& pool, Tally& tally, int64_t H, int64_t P, int64_t N, int64_t L,
                 int64_t Bn, int64_t G, const std::vector<int64_t>& chunks, bool extreme,
                 uint64_t seed) {
  SsdDims d{Bn, L, H, P, G, N, 256};
  Inputs in = make_inputs(d, seed, extreme);
  const size_t ny = size_t(Bn * L * H * P), ns = in.state.size();
  for (int with_state = 0; with_state < 2; with_state++) {
    std::vector<double> S_ref(ns, 0.0), y_ref;
    if (with_state) std::copy(in.state.begin(), in.state.end(), S_ref.begin());
    reference(in, 0, L, S_ref, y_ref);
    for (int64_t chunk : chunks)
      for (int portable = 0; portable < 2; portable++) {
        set_force_portable(portable != 0);
        for (int alias = 0; alias < (with_state ? 2 : 1); alias++) {
          d.chunk = d.max_chunk = chunk;
          std::vector<float> y(ny, NAN), s_out(ns, NAN), s_io(in.state);
          const float* sin = with_state ? (alias ? s_io.data() : in.state.data()) : nullptr;
          float* sout = alias ? s_io.data() : s_out.data();
          run_scan(pool, in, d, sin, y.data(), sout);
          char desc[160];
          std::snprintf(desc, sizeof desc,
                        "H=%lld P=%lld N=%lld L=%lld B=%lld G=%lld chunk=%lld state=%s %s%s",
                        (long long)H, (long long)P, (long long)N, (long long)L, (long long)Bn,
                        (long long)G, (long long)chunk,
                        with_state ? (alias ? "aliased" : "given") : "null",
                        portable ? "portable" : "avx2", extreme ? " extreme-dt" : "");
          tally.add("scan", desc, rel_err(y.data(), y_ref.data(), ny),
                    rel_err(sout, S_ref.data(), ns), extreme ? kTolExtreme : kTol, extreme);
        }
      }
  }
  set_force_portable(false);
}

// scan(L) == scan(L-k) then k ssd_steps, and the steps match the float64 reference.
void check_steps(ThreadPool& pool, Tally& tally, int64_t H, int64_t P, int64_t N, int64_t L,
                 int64_t Bn, int64_t G, int64_t k, int64_t chunk, uint64_t seed) {
  SsdDims d{Bn, L, H, P, G, N, chunk, chunk};
  Inputs in = make_inputs(d, seed);
  const size_t ns = in.state.size(), nrow = size_t(H * P);
  std::vector<double> S_ref(in.state.begin(), in.state.end()), y_ref;
  reference(in, 0, L, S_ref, y_ref);
  for (int portable = 0; portable < 2; portable++) {
    set_force_portable(portable != 0);
    std::vector<float> y_full(size_t(Bn * L) * nrow), s_full(ns);
    run_scan(pool, in, d, in.state.data(), y_full.data(), s_full.data());
    // The prefix: a scan over the first L-k tokens, reading the same strided buffers.
    SsdDims dp = d;
    dp.L = L - k;
    std::vector<float> state(in.state), y_pre(size_t(Bn * (L - k)) * nrow);
    if (L - k > 0) {
      // The prefix scan sees rows b*(L-k) + t, so copy each sequence's first L-k rows.
      Inputs pre = in;
      pre.d = dp;
      pre.xbc.resize(size_t(Bn * (L - k) * in.ld));
      pre.dt_raw.resize(size_t(Bn * (L - k) * in.lddt));
      for (int64_t b = 0; b < Bn; b++) {
        std::memcpy(pre.xbc.data() + b * (L - k) * in.ld, in.xbc.data() + b * L * in.ld,
                    size_t((L - k) * in.ld) * 4);
        std::memcpy(pre.dt_raw.data() + b * (L - k) * in.lddt,
                    in.dt_raw.data() + b * L * in.lddt, size_t((L - k) * in.lddt) * 4);
      }
      run_scan(pool, pre, dp, state.data(), y_pre.data(), state.data());
    }
    double e_self = 0, e_ref = 0;
    std::vector<float> y_step(size_t(Bn) * nrow);
    std::vector<double> yr(size_t(Bn) * nrow);
    std::vector<float> ys(size_t(Bn) * nrow);
    for (int64_t t = L - k; t < L; t++) {
      run_step(pool, in, t, state.data(), y_step.data());
      for (int64_t b = 0; b < Bn; b++)
        for (size_t i = 0; i < nrow; i++) {
          yr[b * nrow + i] = y_ref[(b * L + t) * nrow + i];
          ys[b * nrow + i] = y_full[(b * L + t) * nrow + i];
        }
      e_ref = std::max(e_ref, rel_err(y_step.data(), yr.data(), yr.size()));
      e_self = std::max(e_self, rel_err(y_step.data(), ys.data(), ys.size()));
    }
    char desc[160];
    std::snprintf(desc, sizeof desc,
                  "H=%lld P=%lld N=%lld L=%lld B=%lld G=%lld k=%lld chunk=%lld %s", (long long)H,
                  (long long)P, (long long)N, (long long)L, (long long)Bn, (long long)G,
                  (long long)k, (long long)chunk, portable ? "portable" : "avx2");
    tally.add("step-vs-ref", desc, e_ref, rel_err(state.data(), S_ref.data(), ns), kTol);
    tally.add("scan==prefix+steps", desc, e_self, rel_err(state.data(), s_full.data(), ns),
              kTolSelf, true);
  }
  set_force_portable(false);
}

int run_checks(ThreadPool& pool) {
  Tally tally;
  uint64_t seed = 1;
  const std::vector<int64_t> Ls = {1, 2, 3, 4, 63, 255, 256, 257, 1000};
  const std::vector<int64_t> chunks = {256, 64, 7};
  // Small heads (fast reference), then sizes off the SIMD widths, then the real head shape.
  struct Hd { int64_t H, P, N; };
  for (Hd hd : {Hd{4, 16, 32}, Hd{6, 12, 20}})
    for (int64_t L : Ls)
      for (int64_t Bn : {1, 3})
        for (int64_t G : {1, 2})
          check_shape(pool, tally, hd.H, hd.P, hd.N, L, Bn, G, chunks, false, seed++);
  for (int64_t L : {1, 5, 257, 600})
    check_shape(pool, tally, 24, 64, 128, L, 1, 1, chunks, false, seed++);
  check_shape(pool, tally, 8, 64, 128, 300, 2, 2, chunks, false, seed++);
  // Chunks of one token; then shapes whose scratch needs several windows of chunks (20
  // chunks of 256) or one sequence at a time (chunks of 1024 with two groups).
  for (int64_t L : {1, 5, 100}) check_shape(pool, tally, 4, 16, 32, L, 3, 2, {1}, false, seed++);
  check_shape(pool, tally, 4, 16, 128, 5000, 3, 1, {256}, false, seed++);
  check_shape(pool, tally, 4, 16, 128, 2500, 3, 2, {1024}, false, seed++);
  // Large, wild dt (crossing softplus's identity threshold, decays far below fp32 range).
  for (int64_t L : {257, 1000}) check_shape(pool, tally, 4, 16, 32, L, 3, 2, chunks, true, seed++);
  std::printf("scan: worst y err %.3g, worst state err %.3g; extreme dt: worst %.3g\n",
              tally.worst_y, tally.worst_s, tally.worst_other);

  Tally st;
  for (int64_t L : {1, 2, 5, 257, 300})
    for (int64_t k : {1, 3})
      for (int64_t Bn : {1, 3})
        for (int64_t G : {1, 2}) {
          if (k > L) continue;
          check_steps(pool, st, 4, 16, 32, L, Bn, G, k, L == 300 ? 64 : 256, seed++);
          check_steps(pool, st, 6, 12, 20, L, Bn, G, k, 7, seed++);
        }
  check_steps(pool, st, 24, 64, 128, 300, 2, 1, 3, 256, seed++);
  std::printf("step: worst y err vs float64 %.3g, worst state err %.3g; "
              "scan(L) vs scan(L-k)+k steps: worst %.3g\n",
              st.worst_y, st.worst_s, st.worst_other);
  int cases = tally.cases + st.cases, failed = tally.failed + st.failed;
  std::printf("%d checks, %d failed\n", cases, failed);
  return failed == 0 ? 0 : 1;
}

// ---- Timing ---------------------------------------------------------------------------------

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

template <class Fn>
void time_it(Fn fn, int reps, double& best, double& median) {
  fn();  // warm up
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    double t0 = now_ms();
    fn();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  best = t.front();
  median = t[t.size() / 2];
}

void run_bench() {
  std::printf("\nTiming (mamba2-130m layer shape: H=24 P=64 N=128 G=1, B=1, inputs in the model's\n"
              "layout, state_in given; best / median ms; GFLOP/s = 2 x the chunked algorithm's\n"
              "multiply-adds / best time)\n");
  std::printf("%-44s %10s %10s %12s\n", "case", "best", "median", "GFLOP/s");
  const int64_t H = 24, P = 64, N = 128, G = 1;
  for (int threads : {2, 1}) {
    ThreadPool pool(threads);
    for (int64_t L : {512, 2048})
      for (int64_t chunk : {256, 128, 64, 32}) {
        if (threads == 1 && chunk != 256 && chunk != 64) continue;
        SsdDims d{1, L, H, P, G, N, chunk, chunk};
        Inputs in = make_inputs(d, 99, false, false);
        std::vector<float> y(size_t(L * H * P)), s(in.state.size());
        for (int portable = 0; portable < (chunk == 256 && threads == 2 ? 2 : 1); portable++) {
          set_force_portable(portable != 0);
          double best, med;
          time_it([&] { run_scan(pool, in, d, in.state.data(), y.data(), s.data()); },
                  portable ? 3 : 21, best, med);
          // Multiply-adds of the chunked algorithm: intra Q^2/2*P, chunk state and inter
          // output N*P per token each, C B^T Q^2/2*N per group.
          double Q = double(std::min(chunk, L));
          double fma = double(L) * (H * (Q / 2 * P + 2.0 * N * P) + G * Q / 2 * N);
          char name[96];
          std::snprintf(name, sizeof name, "ssd_scan L=%lld chunk=%lld %d thr%s", (long long)L,
                        (long long)chunk, threads, portable ? " portable" : "");
          std::printf("%-44s %10.3f %10.3f %12.1f\n", name, best, med, 2 * fma / best / 1e6);
        }
        set_force_portable(false);
      }
    // Decode: one token per sequence per call. "hot" reuses one layer's state; "24 layers"
    // rotates through 24 states (the real decode working set, mostly out of cache).
    for (int64_t Bn : {1, 8})
      for (int layers : {1, 24}) {
        SsdDims d{Bn, 1, H, P, G, N, 256};
        Inputs in = make_inputs(d, 7, false, false);
        std::vector<std::vector<float>> states(size_t(layers), in.state);
        std::vector<float> y(size_t(Bn * H * P));
        const int iters = 240;
        double best, med;
        time_it(
            [&] {
              for (int i = 0; i < iters; i++)
                ssd_step(pool, d, in.x(), in.ld, in.Bm(), in.ld, in.Cm(), in.ld,
                         in.dt_raw.data(), in.lddt, in.dt_bias.data(), in.A_log.data(),
                         in.D.data(), states[size_t(i % layers)].data(), y.data());
            },
            9, best, med);
        char name[96];
        std::snprintf(name, sizeof name, "ssd_step B=%lld %s %d thr (per call)", (long long)Bn,
                      layers == 1 ? "hot" : "24 layers", threads);
        std::printf("%-44s %10.4f %10.4f %12s\n", name, best / iters, med / iters, "");
      }
    // "cold": as in a decode step, 64 MB of other memory (a GEMV's weights) is read between two
    // calls, so each call finds its layer's state in DRAM. Only the calls are timed.
    {
      SsdDims d{1, 1, H, P, G, N, 256};
      Inputs in = make_inputs(d, 7, false, false);
      std::vector<std::vector<float>> states(24, in.state);
      std::vector<float> y(size_t(H * P));
      CacheEvictor evict;
      std::vector<double> per_call;
      for (int round = 0; round < 10; round++) {
        double total = 0;
        for (auto& st : states) {
          evict(pool);
          const double t0 = now_ms();
          ssd_step(pool, d, in.x(), in.ld, in.Bm(), in.ld, in.Cm(), in.ld, in.dt_raw.data(),
                   in.lddt, in.dt_bias.data(), in.A_log.data(), in.D.data(), st.data(), y.data());
          total += now_ms() - t0;
        }
        per_call.push_back(total / double(states.size()));
      }
      std::sort(per_call.begin(), per_call.end());
      char name[96];
      std::snprintf(name, sizeof name, "ssd_step B=1 24 layers cold %d thr (per call)", threads);
      std::printf("%-44s %10.4f %10.4f %12s\n", name, per_call.front(), per_call[per_call.size() / 2], "");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool check = true, bench = true;
  if (argc > 1 && std::strcmp(argv[1], "--check") == 0) bench = false;
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) check = false;
  std::printf("AVX2+FMA path available: %s\n", use_avx2() ? "yes" : "no");
  int rc = 0;
  if (check) {
    ThreadPool pool(2);
    rc = run_checks(pool);
  }
  if (bench) run_bench();
  return rc;
}
