// Checks every CUDA kernel launcher (cuda/kernels.h, cuda/cuda_backend.h) against a plain
// host reference in double precision computed from the same bf16-rounded inputs.
// Runs on a real GPU (link with the nvcc-built cuda/*.o and -lcudart_static) or on the CPU
// emulator (cuda/emu/run_emu_tests.sh builds and runs it that way).
//   cuda_kernels_test [filter]   -- runs the tests whose name contains `filter`
// Exit status: 0 all passed, 1 a test failed, 2 no usable device (reason printed).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/dtype.h"
#include "../../cuda/cuda_backend.h"
#include "../../cuda/kernels.h"

using namespace taipan;
namespace tc = taipan::cuda;

namespace {

int g_failures = 0;
std::mt19937 g_rng(1234);

std::vector<float> randv(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); i++) o[i] = f32_to_bf16(v[i]);
  return o;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); i++) o[i] = bf16_to_f32(v[i]);
  return o;
}
// Values exactly representable in bf16 (so host and device see the same inputs).
std::vector<float> rand_bf(size_t n, float lo, float hi) { return from_bf16(to_bf16(randv(n, lo, hi))); }

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { p = static_cast<T*>(tc::device_malloc(count * sizeof(T))); }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { up(h); }
  ~Dev() { tc::device_free(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void up(const std::vector<T>& h) { tc::copy_to_device(p, h.data(), h.size() * sizeof(T), nullptr); }
  std::vector<T> down() const {
    std::vector<T> h(n);
    tc::copy_to_host(h.data(), p, n * sizeof(T), nullptr);
    return h;
  }
};

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }
double softplus_d(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }

// |got - ref| <= atol + rtol*|ref| elementwise; prints the worst case.
bool check(const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
           double atol, double rtol) {
  double worst = 0, worst_excess = -1;
  size_t wi = 0;
  bool ok = got.size() == ref.size();
  for (size_t i = 0; ok && i < got.size(); i++) {
    const double err = double(got[i]) == ref[i] ? 0.0 : std::fabs(double(got[i]) - ref[i]);  // inf == inf
    const double tol = atol + (std::isfinite(ref[i]) ? rtol * std::fabs(ref[i]) : 0.0);
    if (!(err <= tol)) ok = false;
    if (err - tol > worst_excess || std::isnan(err)) { worst_excess = err - tol; worst = err; wi = i; }
  }
  std::printf("    %-48s %s (n=%zu, worst |err|=%.3g at %zu: got %.6g ref %.6g)\n", what.c_str(),
              ok ? "ok  " : "FAIL", got.size(), worst, wi, got.empty() ? 0.0 : double(got[wi]),
              ref.empty() ? 0.0 : ref[wi]);
  if (!ok) g_failures++;
  return ok;
}
std::vector<double> to_d(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }
double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return v.empty() ? 0 : std::sqrt(s / v.size());
}
constexpr double kBf = 1.0 / 128;  // bf16 rounding (2^-8 relative) with margin

// ---- Tests ---------------------------------------------------------------------------------------

void test_elementwise() {
  for (int64_t n : {1003, 1024}) {
    auto f = randv(n, -12, 12);
    f[0] = 0.0f; f[1] = -0.0f; f[2] = 1e-30f; f[3] = 3.4e38f;
    Dev<float> df(f);
    Dev<uint16_t> db(n);
    tc::convert_f32_to_bf16(df.p, db.p, n, nullptr);
    auto b = db.down();
    std::vector<float> got(n);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; i++) { got[i] = bf16_to_f32(b[i]); ref[i] = bf16_to_f32(f32_to_bf16(f[i])); }
    check("f32->bf16 n=" + std::to_string(n), got, ref, 0, 0);
    Dev<float> back(n);
    tc::convert_bf16_to_f32(db.p, back.p, n, nullptr);
    check("bf16->f32 n=" + std::to_string(n), back.down(), ref, 0, 0);
    tc::silu_bf16(db.p, db.p, n, nullptr);  // in place
    b = db.down();
    for (int64_t i = 0; i < n; i++) { got[i] = bf16_to_f32(b[i]); ref[i] = silu_d(ref[i]); }
    check("silu_bf16 in place n=" + std::to_string(n), got, ref, 1e-6, kBf);
    std::vector<uint16_t> h(n);
    for (int64_t i = 0; i < n; i++) h[i] = f32_to_f16(f[i] / 4);
    Dev<uint16_t> dh(h);
    tc::convert_f16_to_bf16(dh.p, db.p, n, nullptr);
    b = db.down();
    for (int64_t i = 0; i < n; i++) { got[i] = bf16_to_f32(b[i]); ref[i] = bf16_to_f32(f32_to_bf16(f16_to_f32(h[i]))); }
    check("f16->bf16 n=" + std::to_string(n), got, ref, 0, 0);
  }
}

void test_embedding() {
  const int64_t rows = 50;
  for (int64_t d : {12, 7}) {
    std::vector<int32_t> ids = {3, 0, 49, 17, 17, 5, 22, 8, 41};
    const int64_t n = int64_t(ids.size());
    auto E = rand_bf(rows * d, -2, 2);
    std::vector<double> ref(n * d);
    for (int64_t i = 0; i < n; i++)
      for (int64_t c = 0; c < d; c++) ref[i * d + c] = E[ids[i] * d + c];
    Dev<int32_t> dids(ids);
    Dev<float> out(n * d);
    {
      Dev<uint16_t> dE(to_bf16(E));
      tc::embedding(dids.p, n, dE.p, DType::BF16, d, rows, out.p, nullptr, nullptr);
      check("embedding bf16 d=" + std::to_string(d), out.down(), ref, 0, 0);
    }
    {
      Dev<float> dE(E);
      tc::embedding(dids.p, n, dE.p, DType::F32, d, rows, out.p, nullptr, nullptr);
      check("embedding f32 d=" + std::to_string(d), out.down(), ref, 0, 0);
    }
    {
      std::vector<uint16_t> h(E.size());
      for (size_t i = 0; i < E.size(); i++) h[i] = f32_to_f16(E[i]);
      std::vector<double> r16(n * d);
      for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) r16[i * d + c] = f16_to_f32(h[ids[i] * d + c]);
      Dev<uint16_t> dE(h);
      tc::embedding(dids.p, n, dE.p, DType::F16, d, rows, out.p, nullptr, nullptr);
      check("embedding f16 d=" + std::to_string(d), out.down(), r16, 0, 0);
    }
  }
  // Ids outside [0, vocab) are clamped into it and the lowest bad position is recorded.
  {
    const int64_t d = 8, vocab = 40;
    std::vector<int32_t> ids = {5, 39, 40, -3, 7, 1000};
    const int64_t n = int64_t(ids.size());
    auto E = rand_bf(rows * d, -2, 2);
    std::vector<double> ref(n * d);
    for (int64_t i = 0; i < n; i++) {
      const int64_t r = std::min<int64_t>(std::max<int32_t>(ids[i], 0), vocab - 1);
      for (int64_t c = 0; c < d; c++) ref[i * d + c] = E[r * d + c];
    }
    Dev<int32_t> dids(ids);
    Dev<float> dE(E), out(n * d);
    Dev<unsigned long long> err(std::vector<unsigned long long>{tc::kEmbeddingNoError});
    tc::embedding(dids.p, n, dE.p, DType::F32, d, vocab, out.p, err.p, nullptr);
    check("embedding bad ids clamped", out.down(), ref, 0, 0);
    const unsigned long long e = err.down()[0];
    const bool ok = e == tc::embedding_error(2, 40) && tc::embedding_error_position(e) == 2 &&
                    tc::embedding_error_id(e) == 40;
    std::printf("    %-48s %s (position %lld, id %d)\n", "embedding error word: first bad id", ok ? "ok  " : "FAIL",
                (long long)tc::embedding_error_position(e), tc::embedding_error_id(e));
    if (!ok) g_failures++;
    ids[2] = 3;
    dids.up(ids);
    err.up({tc::kEmbeddingNoError});
    tc::embedding(dids.p, n, dE.p, DType::F32, d, vocab, out.p, err.p, nullptr);
    const unsigned long long e2 = err.down()[0];
    const bool ok2 = tc::embedding_error_position(e2) == 3 && tc::embedding_error_id(e2) == -3;
    std::printf("    %-48s %s\n", "embedding error word: negative id", ok2 ? "ok  " : "FAIL");
    if (!ok2) g_failures++;
  }
}

void test_norms() {
  const float eps = 1e-5f;
  for (int64_t d : {200, 768, 33}) {
    const int64_t M = 5;
    auto r = randv(M * d, -3, 3);
    auto delta = rand_bf(M * d, -1, 1);
    auto w = randv(d, 0.5f, 1.5f);
    Dev<float> dr(r), dw(w);
    Dev<uint16_t> ddelta(to_bf16(delta)), dout(M * d);
    tc::rmsnorm(M, d, dr.p, ddelta.p, dw.p, eps, dout.p, nullptr);
    std::vector<double> rref(M * d), oref(M * d);
    for (int64_t m = 0; m < M; m++) {
      double ss = 0;
      for (int64_t c = 0; c < d; c++) {
        const float v = r[m * d + c] + delta[m * d + c];  // fp32 add, as the kernel does
        rref[m * d + c] = v;
        ss += double(v) * v;
      }
      const double inv = 1.0 / std::sqrt(ss / d + eps);
      for (int64_t c = 0; c < d; c++) oref[m * d + c] = rref[m * d + c] * inv * w[c];
    }
    const std::string sd = " d=" + std::to_string(d);
    check("rmsnorm residual r += delta" + sd, dr.down(), rref, 0, 0);
    check("rmsnorm out (bf16)" + sd, from_bf16(dout.down()), oref, 1e-6, kBf);
    // No delta: normalises the updated r again (same reference output).
    tc::rmsnorm(M, d, dr.p, nullptr, dw.p, eps, dout.p, nullptr);
    check("rmsnorm without delta" + sd, from_bf16(dout.down()), oref, 1e-6, kBf);
    Dev<float> df(M * d);
    tc::rmsnorm_f32(M, d, dr.p, dw.p, eps, df.p, nullptr);
    check("rmsnorm_f32" + sd, df.down(), oref, 1e-6, 1e-5);
  }
  // Gated: G groups, z strided inside a wider row.
  for (int64_t G : {1, 3}) {
    const int64_t M = 4, d = 96, ldz = 150;
    auto y = rand_bf(M * d, -2, 2);
    auto z = rand_bf(M * ldz, -4, 4);
    auto w = randv(d, 0.5f, 1.5f);
    Dev<uint16_t> dy(to_bf16(y)), dz(to_bf16(z)), dout(M * d);
    Dev<float> dw(w);
    tc::gated_rmsnorm(M, d, G, dy.p, dz.p + 7, ldz, dw.p, eps, dout.p, nullptr);
    std::vector<double> ref(M * d);
    const int64_t gs = d / G;
    for (int64_t m = 0; m < M; m++)
      for (int64_t g = 0; g < G; g++) {
        double ss = 0;
        std::vector<double> v(gs);
        for (int64_t c = 0; c < gs; c++) {
          const int64_t ch = g * gs + c;
          v[c] = y[m * d + ch] * silu_d(z[m * ldz + 7 + ch]);
          ss += v[c] * v[c];
        }
        const double inv = 1.0 / std::sqrt(ss / gs + eps);
        for (int64_t c = 0; c < gs; c++) ref[m * d + g * gs + c] = v[c] * inv * w[g * gs + c];
      }
    check("gated_rmsnorm G=" + std::to_string(G), from_bf16(dout.down()), ref, 1e-6, kBf);
    // out aliasing y
    tc::gated_rmsnorm(M, d, G, dy.p, dz.p + 7, ldz, dw.p, eps, dy.p, nullptr);
    check("gated_rmsnorm in place G=" + std::to_string(G), from_bf16(dy.down()), ref, 1e-6, kBf);
  }
}

// Host reference for conv1d_silu (same contract as the CPU kernel).
void conv_ref(int64_t B, int64_t L, int64_t C, int64_t K, const std::vector<float>& x, int64_t ldx,
              int64_t xoff, const std::vector<float>& w, const std::vector<float>& bias,
              const std::vector<float>* state_in, std::vector<double>& out,
              std::vector<double>& state_out) {
  out.assign(B * L * C, 0);
  state_out.assign(B * C * (K - 1), 0);
  auto in = [&](int64_t b, int64_t s, int64_t c) -> double {
    if (s >= 0) return x[(b * L + s) * ldx + xoff + c];
    return state_in ? (*state_in)[(b * C + c) * (K - 1) + (K - 1 + s)] : 0.0;
  };
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) {
      for (int64_t t = 0; t < L; t++) {
        double acc = bias[c];
        for (int64_t k = 0; k < K; k++) acc += w[c * K + k] * in(b, t - (K - 1) + k, c);
        out[(b * L + t) * C + c] = silu_d(acc);
      }
      for (int64_t j = 0; j < K - 1; j++) state_out[(b * C + c) * (K - 1) + j] = in(b, L - (K - 1) + j, c);
    }
}

void test_conv() {
  struct Case { int64_t B, L, C, K, ldx, xoff; bool state, alias; };
  const Case cases[] = {{2, 37, 70, 4, 100, 5, true, false}, {1, 64, 130, 4, 130, 0, false, false},
                        {2, 2, 33, 4, 40, 3, true, true},    {3, 5, 20, 2, 20, 0, true, true},
                        {1, 40, 9, 3, 12, 1, true, false},   {1, 70, 16, 8, 16, 0, true, false}};
  for (const Case& cs : cases) {
    const int64_t B = cs.B, L = cs.L, C = cs.C, K = cs.K;
    auto x = rand_bf(B * L * cs.ldx, -2, 2);
    auto w = randv(C * K, -0.5f, 0.5f);
    auto bias = randv(C, -0.2f, 0.2f);
    auto st = randv(B * C * (K - 1), -1, 1);
    std::vector<double> oref, sref;
    conv_ref(B, L, C, K, x, cs.ldx, cs.xoff, w, bias, cs.state ? &st : nullptr, oref, sref);
    Dev<uint16_t> dx(to_bf16(x)), dout(B * L * C);
    Dev<float> dw(w), db(bias), dst(st), dso(B * C * (K - 1));
    float* so = cs.alias ? dst.p : dso.p;
    tc::conv1d_silu(B, L, C, K, dx.p + cs.xoff, cs.ldx, dw.p, db.p, cs.state ? dst.p : nullptr,
                    dout.p, so, nullptr);
    char name[128];
    std::snprintf(name, sizeof name, "conv1d_silu B=%lld L=%lld C=%lld K=%lld%s%s", (long long)B,
                  (long long)L, (long long)C, (long long)K, cs.state ? " state" : "",
                  cs.alias ? " aliased" : "");
    check(name, from_bf16(dout.down()), oref, 1e-6, kBf);
    check(std::string(name) + " state_out", cs.alias ? dst.down() : dso.down(), sref, 0, 0);
  }
  // Prefill of L-3 tokens then 3 updates == prefill of L tokens.
  {
    const int64_t B = 2, L = 12, C = 50, K = 4, ldx = 64;
    auto x = rand_bf(B * L * ldx, -2, 2);
    auto w = randv(C * K, -0.5f, 0.5f);
    auto bias = randv(C, -0.2f, 0.2f);
    std::vector<double> oref, sref;
    conv_ref(B, L, C, K, x, ldx, 0, w, bias, nullptr, oref, sref);
    const int64_t L0 = L - 3;
    std::vector<float> x0(B * L0 * ldx);
    for (int64_t b = 0; b < B; b++)
      std::memcpy(&x0[b * L0 * ldx], &x[b * L * ldx], L0 * ldx * sizeof(float));
    Dev<uint16_t> dx0(to_bf16(x0)), dout(B * L0 * C), dstep(B * C);
    Dev<float> dw(w), db(bias), dst(B * C * (K - 1));
    tc::conv1d_silu(B, L0, C, K, dx0.p, ldx, dw.p, db.p, nullptr, dout.p, dst.p, nullptr);
    for (int64_t t = L0; t < L; t++) {
      std::vector<float> xt(B * ldx);
      for (int64_t b = 0; b < B; b++) std::memcpy(&xt[b * ldx], &x[(b * L + t) * ldx], ldx * sizeof(float));
      Dev<uint16_t> dxt(to_bf16(xt));
      tc::conv1d_update(B, C, K, dxt.p, ldx, dw.p, db.p, dst.p, dstep.p, nullptr);
      std::vector<double> r(B * C);
      for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) r[b * C + c] = oref[(b * L + t) * C + c];
      check("conv1d_update token " + std::to_string(t), from_bf16(dstep.down()), r, 1e-6, kBf);
    }
    check("conv1d_update final state", dst.down(), sref, 0, 0);
  }
}

// ---- SSD ---------------------------------------------------------------------------------------
struct SsdData {
  tc::SsdDims d;
  int64_t ld, lddt;  // x|B|C packed in rows of `ld` (like the conv output), dt_raw in rows of lddt
  std::vector<float> xbc, dt_raw, dt_bias, A_log, D, state;
};

SsdData make_ssd(tc::SsdDims d, bool big_dt = false) {
  SsdData s;
  s.d = d;
  s.ld = d.H * d.P + 2 * d.G * d.N + 3;
  s.lddt = d.H + 2;
  const int64_t rows = d.B * d.L;
  s.xbc = rand_bf(rows * s.ld, -1, 1);
  s.dt_raw = rand_bf(rows * s.lddt, -3, 1);
  if (big_dt)
    for (int64_t r = 0; r < rows; r += 7) s.dt_raw[r * s.lddt + 0] = 24.0f;  // softplus identity branch
  s.dt_bias = randv(d.H, -1, 0.5f);
  s.A_log = randv(d.H, -1, 1.5f);
  s.D = randv(d.H, -1, 1);
  s.state = randv(d.B * d.H * d.P * d.N, -1, 1);
  return s;
}

// Token-by-token recurrence in double. Returns y [B*L, H*P]; updates state in place.
std::vector<double> ssd_ref(const SsdData& s, std::vector<double>& state) {
  const auto& d = s.d;
  std::vector<double> y(d.B * d.L * d.H * d.P);
  const int64_t xo = 0, bo = d.H * d.P, co = d.H * d.P + d.G * d.N;
  for (int64_t b = 0; b < d.B; b++)
    for (int64_t t = 0; t < d.L; t++) {
      const int64_t row = b * d.L + t;
      const float* r = &s.xbc[row * s.ld];
      for (int64_t h = 0; h < d.H; h++) {
        const int64_t g = h / (d.H / d.G);
        const double dt = softplus_d(double(s.dt_raw[row * s.lddt + h]) + s.dt_bias[h]);
        const double dA = std::exp(dt * -std::exp(double(s.A_log[h])));
        for (int64_t p = 0; p < d.P; p++) {
          const double xv = r[xo + h * d.P + p];
          double acc = 0;
          for (int64_t n = 0; n < d.N; n++) {
            double& S = state[((b * d.H + h) * d.P + p) * d.N + n];
            S = dA * S + dt * xv * r[bo + g * d.N + n];
            acc += S * r[co + g * d.N + n];
          }
          y[row * d.H * d.P + h * d.P + p] = acc + s.D[h] * xv;
        }
      }
    }
  return y;
}

void test_ssd_scan_case(const std::string& name, tc::SsdDims dims, bool with_state, bool alias,
                        bool big_dt = false) {
  SsdData s = make_ssd(dims, big_dt);
  const auto& d = s.d;
  std::vector<double> sref = with_state ? to_d(s.state) : std::vector<double>(s.state.size(), 0.0);
  const std::vector<double> yref = ssd_ref(s, sref);
  Dev<uint16_t> dxbc(to_bf16(s.xbc)), ddt(to_bf16(s.dt_raw)), dy(d.B * d.L * d.H * d.P);
  Dev<float> dbias(s.dt_bias), dalog(s.A_log), dD(s.D), dstate(s.state), dso(s.state.size());
  const size_t ws_bytes = tc::ssd_scan_workspace_bytes(d);
  void* ws = tc::device_malloc(ws_bytes);
  float* so = alias ? dstate.p : dso.p;
  const uint16_t* x = dxbc.p;
  const uint16_t* Bm = dxbc.p + d.H * d.P;
  const uint16_t* Cm = dxbc.p + d.H * d.P + d.G * d.N;
  tc::ssd_scan(d, x, s.ld, Bm, s.ld, Cm, s.ld, ddt.p, s.lddt, dbias.p, dalog.p, dD.p,
               with_state ? dstate.p : nullptr, dy.p, so, ws, nullptr);
  tc::device_free(ws);
  const auto y = from_bf16(dy.down());
  check(name + " y", y, yref, 2e-3 * rms(yref), kBf);
  check(name + " state_out", alias ? dstate.down() : dso.down(), sref, 1e-4 * rms(sref), 1e-4);
}

void test_ssd() {
  // B, L, H, P, G, N, chunk
  test_ssd_scan_case("ssd_scan small partial chunks", {2, 150, 4, 16, 2, 24, 64}, true, false);
  test_ssd_scan_case("ssd_scan no initial state", {1, 100, 2, 8, 1, 16, 32}, false, false, true);
  test_ssd_scan_case("ssd_scan aliased state, L < chunk", {2, 45, 3, 20, 3, 40, 256}, true, true);
  test_ssd_scan_case("ssd_scan mamba2 tile sizes", {1, 300, 2, 64, 1, 128, 256}, true, true);
  test_ssd_scan_case("ssd_scan L=1", {2, 1, 2, 16, 1, 32, 256}, true, false);
  test_ssd_scan_case("ssd_scan odd chunk", {1, 77, 2, 8, 2, 8, 13}, true, false);

  // ssd_step over several tokens == recurrence.
  {
    tc::SsdDims d{3, 4, 4, 16, 2, 40, 256};
    SsdData s = make_ssd(d, true);
    std::vector<double> sref = to_d(s.state);
    const std::vector<double> yref = ssd_ref(s, sref);
    Dev<float> dbias(s.dt_bias), dalog(s.A_log), dD(s.D), dstate(s.state);
    tc::SsdDims one = d;
    one.L = 1;
    std::vector<double> ygot_ref;
    std::vector<float> ygot;
    for (int64_t t = 0; t < d.L; t++) {
      std::vector<float> xbc(d.B * s.ld), dt(d.B * s.lddt);
      for (int64_t b = 0; b < d.B; b++) {
        std::memcpy(&xbc[b * s.ld], &s.xbc[(b * d.L + t) * s.ld], s.ld * sizeof(float));
        std::memcpy(&dt[b * s.lddt], &s.dt_raw[(b * d.L + t) * s.lddt], s.lddt * sizeof(float));
      }
      Dev<uint16_t> dx(to_bf16(xbc)), ddt(to_bf16(dt)), dy(d.B * d.H * d.P);
      tc::ssd_step(one, dx.p, s.ld, dx.p + d.H * d.P, s.ld, dx.p + d.H * d.P + d.G * d.N, s.ld,
                   ddt.p, s.lddt, dbias.p, dalog.p, dD.p, dstate.p, dy.p, nullptr);
      const auto y = from_bf16(dy.down());
      for (int64_t b = 0; b < d.B; b++)
        for (int64_t i = 0; i < d.H * d.P; i++) {
          ygot.push_back(y[b * d.H * d.P + i]);
          ygot_ref.push_back(yref[(b * d.L + t) * d.H * d.P + i]);
        }
    }
    check("ssd_step 4 tokens y", ygot, ygot_ref, 2e-3 * rms(ygot_ref), kBf);
    check("ssd_step 4 tokens state", dstate.down(), sref, 1e-5 * rms(sref), 1e-5);
  }
}

// ---- GEMM --------------------------------------------------------------------------------------
using GemmFn = void (*)(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*,
                        void*, int64_t, DType, bool, void*);

void gemm_case(const char* path, GemmFn fn, int64_t M, int64_t N, int64_t K, int64_t ldx,
               int64_t ldy) {
  auto x = rand_bf(M * ldx, -1, 1);
  auto W = rand_bf(N * K, -1, 1);
  std::vector<double> ref(M * ldy, 0.0), bound(M * ldy, 0.0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < K; k++) {
        s += double(x[m * ldx + k]) * W[n * K + k];
        a += std::fabs(double(x[m * ldx + k]) * W[n * K + k]);
      }
      ref[m * ldy + n] = s;
      bound[m * ldy + n] = a;
    }
  Dev<uint16_t> dx(to_bf16(x)), dW(to_bf16(W));
  char name[160];
  // bf16 output (columns n >= N of each row are not written; compare the first N only).
  {
    Dev<uint16_t> dy(M * ldy);
    fn(M, N, K, dx.p, ldx, dW.p, dy.p, ldy, DType::BF16, false, nullptr);
    const auto y = from_bf16(dy.down());
    std::vector<float> got;
    std::vector<double> r;
    double atol = 0;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        got.push_back(y[m * ldy + n]);
        r.push_back(ref[m * ldy + n]);
        atol = std::max(atol, 1e-5 * bound[m * ldy + n]);
      }
    std::snprintf(name, sizeof name, "%s M=%lld N=%lld K=%lld bf16", path, (long long)M,
                  (long long)N, (long long)K);
    check(name, got, r, atol, kBf);
  }
  // f32 output accumulated onto existing values.
  {
    auto y0 = randv(M * ldy, -1, 1);
    Dev<float> dy(y0);
    fn(M, N, K, dx.p, ldx, dW.p, dy.p, ldy, DType::F32, true, nullptr);
    const auto y = dy.down();
    std::vector<float> got;
    std::vector<double> r;
    double atol = 0;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < ldy; n++) {
        got.push_back(y[m * ldy + n]);
        r.push_back(n < N ? y0[m * ldy + n] + ref[m * ldy + n] : y0[m * ldy + n]);
        atol = std::max(atol, 1e-5 * bound[m * ldy + n] + 1e-6);
      }
    std::snprintf(name, sizeof name, "%s M=%lld N=%lld K=%lld f32 accumulate", path, (long long)M,
                  (long long)N, (long long)K);
    check(name, got, r, atol, 1e-5);
  }
}

// gemm_count: the first clamp(count, 0, M) rows exactly as gemm computes them (same bits),
// the rest of y untouched, for counts on both sides of kGemmSmallM.
void gemm_count_case(int64_t M, int64_t N, int64_t K, int64_t ldx) {
  auto x = rand_bf(M * ldx, -1, 1);
  auto W = rand_bf(N * K, -1, 1);
  Dev<uint16_t> dx(to_bf16(x)), dW(to_bf16(W));
  for (int32_t count : {-2, 0, 1, 3, 16, 17, int32_t(M), int32_t(M) + 9}) {
    if (count > M + 9) continue;
    const int64_t rows = std::min<int64_t>(std::max<int32_t>(count, 0), M);
    auto y0 = randv(M * N, -1, 1);
    Dev<float> want(y0), got(y0);
    Dev<int32_t> dc(std::vector<int32_t>{count});
    if (rows > 0) tc::gemm(rows, N, K, dx.p, ldx, dW.p, want.p, N, DType::F32, false, nullptr);
    tc::gemm_count(M, N, K, dx.p, ldx, dW.p, got.p, N, DType::F32, false, dc.p, nullptr);
    char name[96];
    std::snprintf(name, sizeof name, "gemm_count M=%lld N=%lld K=%lld count=%d", (long long)M,
                  (long long)N, (long long)K, count);
    check(name, got.down(), to_d(want.down()), 0, 0);
  }
}

void test_gemm() {
  gemm_case("gemm_tensor_core", tc::gemm_tensor_core, 130, 200, 72, 80, 210);
  gemm_case("gemm_tensor_core", tc::gemm_tensor_core, 256, 128, 256, 256, 128);
  gemm_case("gemm_tensor_core", tc::gemm_tensor_core, 17, 9, 8, 8, 9);
  for (int64_t M : {1, 2, 3, 5, 13})
    gemm_case("gemm_small_m", tc::gemm_small_m, M, 37, 264, 272, 40);
  // The Hopper kernel where the device runs it (the emulator does): tiles of 128 x 256 x 64,
  // so edges in every dimension, a K shorter than one step, row strides beyond K, odd N.
  if (const std::string why = tc::gemm_wgmma_unavailable_reason(); why.empty()) {
    gemm_case("gemm_wgmma", tc::gemm_wgmma, 130, 200, 72, 80, 210);
    gemm_case("gemm_wgmma", tc::gemm_wgmma, 256, 512, 256, 256, 512);
    gemm_case("gemm_wgmma", tc::gemm_wgmma, 17, 9, 8, 8, 9);
    gemm_case("gemm_wgmma", tc::gemm_wgmma, 300, 263, 328, 336, 264);
    gemm_case("gemm_wgmma K%8!=0 (general kernel)", tc::gemm_wgmma, 20, 33, 30, 31, 33);
  } else {
    std::printf("  gemm_wgmma: not run (%s)\n", why.c_str());
  }
  gemm_case("gemm (dispatch)", tc::gemm, 300, 263, 328, 336, 264);
  gemm_case("gemm (dispatch)", tc::gemm, 1, 300, 128, 128, 300);
  gemm_case("gemm (dispatch)", tc::gemm, 40, 70, 96, 96, 70);
  gemm_case("gemm fallback K%8!=0", tc::gemm, 20, 33, 30, 31, 33);
  gemm_case("gemm fallback small M", tc::gemm, 3, 33, 30, 30, 33);
  gemm_case("gemm_reference", tc::gemm_reference, 7, 19, 23, 23, 19);
  gemm_count_case(12, 40, 64, 64);
  gemm_count_case(40, 24, 96, 104);
  gemm_count_case(20, 17, 30, 30);  // K % 8 != 0: the general kernel
  gemm_count_case(300, 40, 64, 64);  // counts past kGemmSmallM: the prefill kernel, partial tiles
}

// A CUDA graph: launches captured on a stream run nothing until the graph is launched, then
// replay with the inputs as they are at each launch.
void test_graph() {
  const int64_t M = 3, N = 24, K = 32, V = 10;
  auto E = rand_bf(V * K, -1, 1);
  auto W = rand_bf(N * K, -1, 1);
  Dev<float> dE(E), emb(M * K);
  Dev<uint16_t> dW(to_bf16(W)), xb(M * K);
  Dev<float> y(M * N);
  Dev<int32_t> ids(std::vector<int32_t>{1, 2, 3});
  Dev<unsigned long long> err(std::vector<unsigned long long>{tc::kEmbeddingNoError});
  void* s = tc::stream_create();
  auto step = [&] {
    tc::embedding(ids.p, M, dE.p, DType::F32, K, V, emb.p, err.p, s);
    tc::convert_f32_to_bf16(emb.p, xb.p, M * K, s);
    tc::gemm(M, N, K, xb.p, K, dW.p, y.p, N, DType::F32, false, s);
  };
  auto expected = [&](const std::vector<int32_t>& t) {
    std::vector<double> r(M * N);
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        float acc = 0;
        for (int64_t k = 0; k < K; k++) acc += E[t[m] * K + k] * W[n * K + k];  // exact inputs
        r[m * N + n] = acc;
      }
    return r;
  };
  tc::graph_capture_begin(s);
  step();
  void* exec = tc::graph_capture_end(s);
  for (const std::vector<int32_t>& t : {std::vector<int32_t>{4, 0, 9}, std::vector<int32_t>{7, 7, 2}}) {
    ids.up(t);
    tc::graph_launch(exec, s);
    tc::stream_synchronize(s);
    const auto ref = expected(t);
    double atol = 0;
    for (double v : ref) atol = std::max(atol, 1e-5 * std::fabs(v) + 1e-5);
    check("graph replay ids " + std::to_string(t[0]) + "," + std::to_string(t[1]) + "," + std::to_string(t[2]),
          y.down(), ref, atol, 1e-5);
  }
  tc::graph_destroy(exec);
  // While capturing, the capturing thread may not read device memory back (a synchronising
  // host step) nor allocate; either invalidates the capture, which then yields no graph.
  auto refused = [&](const char* what, const std::function<void()>& fn) {
    tc::graph_capture_begin(s);
    step();
    bool threw = false, end_threw = false;
    try {
      fn();
    } catch (const tc::CudaError&) {
      threw = true;
    }
    try {
      tc::graph_destroy(tc::graph_capture_end(s));
    } catch (const tc::CudaError&) {
      end_threw = true;
    }
    const bool ok = threw && end_threw;
    std::printf("    %-48s %s\n", what, ok ? "ok  " : "FAIL");
    if (!ok) g_failures++;
  };
  refused("capture refuses copy_to_host", [&] {
    int32_t h[3];
    tc::copy_to_host(h, ids.p, sizeof h, s);
  });
  refused("capture refuses device_malloc", [&] { tc::device_free(tc::device_malloc(64)); });
  // The stream works normally after a failed capture.
  ids.up({1, 2, 3});
  step();
  tc::stream_synchronize(s);
  const auto ref = expected({1, 2, 3});
  double atol = 0;
  for (double v : ref) atol = std::max(atol, 1e-5 * std::fabs(v) + 1e-5);
  check("stream after a failed capture", y.down(), ref, atol, 1e-5);
  tc::stream_destroy(s);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  tc::Status st = tc::query();
  if (st.devices.empty() || !st.reason.empty()) {
    std::printf("no usable CUDA device: %s\n", st.reason.c_str());
    return 2;
  }
  std::printf("device: %s (cc %d.%d, %d SMs)\n", st.devices[0].name.c_str(), st.devices[0].cc_major,
              st.devices[0].cc_minor, st.devices[0].sm_count);
  struct T { const char* name; std::function<void()> fn; };
  const T tests[] = {{"elementwise", test_elementwise}, {"embedding", test_embedding},
                     {"norm", test_norms},              {"conv", test_conv},
                     {"ssd", test_ssd},                 {"gemm", test_gemm},
                     {"graph", test_graph}};
  for (const T& t : tests) {
    if (!filter.empty() && std::string(t.name).find(filter) == std::string::npos) continue;
    std::printf("[%s]\n", t.name);
    try {
      t.fn();
      tc::device_synchronize();
    } catch (const std::exception& e) {
      std::printf("    EXCEPTION: %s\n", e.what());
      g_failures++;
    }
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
