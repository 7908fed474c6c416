// Times the CUDA kernels on the mamba2-130m / taipan-190m shapes (d 768, d_inner 1536,
// H 24, P 64, N 128, G 1, conv_dim 1792, d_in_proj 3352) so the dispatch thresholds
// (kGemmSmallM) and the decode floor (NOTES.md: ~0.125 ms/token for 190M) can be checked.
//   cuda_bench [L (prefill tokens, default 2048)]
// Timing is host wall clock around `iters` launches followed by one stream_synchronize.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "../../csrc/dtype.h"
#include "../../cuda/cuda_backend.h"
#include "../../cuda/kernels.h"

using namespace taipan;
namespace tc = taipan::cuda;

namespace {
void* g_stream = nullptr;
using GemmFn = void (*)(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*,
                        void*, int64_t, DType, bool, void*);

double time_us(const std::function<void()>& f, int iters) {
  f();  // warm-up (and the one-time shared-memory attribute)
  tc::stream_synchronize(g_stream);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; i++) f();
  tc::stream_synchronize(g_stream);
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / iters;
}

void* fill_bf16(size_t n, float scale) {
  std::vector<uint16_t> h(n);
  uint32_t s = 12345;
  for (auto& v : h) {
    s = s * 1664525u + 1013904223u;
    v = f32_to_bf16(((s >> 8) / 16777216.0f - 0.5f) * scale);
  }
  void* d = tc::device_malloc(n * 2);
  tc::copy_to_device(d, h.data(), n * 2, g_stream);
  return d;
}
void* fill_f32(size_t n, float value) {
  std::vector<float> h(n, value);
  void* d = tc::device_malloc(n * 4);
  tc::copy_to_device(d, h.data(), n * 4, g_stream);
  return d;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t L = argc > 1 ? std::atoll(argv[1]) : 2048;
  tc::Status st = tc::query();
  if (!st.reason.empty() || st.devices.empty()) {
    std::printf("no usable CUDA device: %s\n", st.reason.c_str());
    return 2;
  }
  std::printf("device: %s\n", st.devices[0].name.c_str());
  g_stream = tc::stream_create();
  const int64_t d = 768, di = 1536, H = 24, P = 64, N = 128, G = 1, cd = di + 2 * G * N,
                dip = 2 * di + 2 * G * N + H, vocab = 50288;

  auto* Win = static_cast<uint16_t*>(fill_bf16(dip * d, 0.05f));
  auto* Wout = static_cast<uint16_t*>(fill_bf16(d * di, 0.05f));
  auto* E = static_cast<uint16_t*>(fill_bf16(vocab * d, 0.05f));
  auto* x = static_cast<uint16_t*>(fill_bf16(L * di, 1.0f));
  auto* zx = static_cast<uint16_t*>(fill_bf16(L * dip, 1.0f));
  auto* xbc = static_cast<uint16_t*>(fill_bf16(L * cd, 1.0f));
  void* y = tc::device_malloc(L * dip * 4);
  void* logits = tc::device_malloc(16 * vocab * 4);
  auto* bias = static_cast<float*>(fill_f32(H, -1.0f));
  auto* alog = static_cast<float*>(fill_f32(H, 0.5f));
  auto* Dp = static_cast<float*>(fill_f32(H, 1.0f));
  auto* state = static_cast<float*>(fill_f32(H * P * N, 0.0f));
  auto* ys = static_cast<uint16_t*>(tc::device_malloc(L * di * 2));

  std::printf("\nGEMM (us per call; TFLOP/s or GB/s of weight reads)\n");
  const std::string no_wgmma = tc::gemm_wgmma_unavailable_reason();
  if (!no_wgmma.empty()) std::printf("  (gemm_wgmma not timed: %s)\n", no_wgmma.c_str());
  const char* names[3] = {"small_m", "tensor_core", "wgmma"};
  const GemmFn fns[3] = {tc::gemm_small_m, tc::gemm_tensor_core, tc::gemm_wgmma};
  for (int64_t M : std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, L}) {
    for (int which = 0; which < 3; which++) {
      if ((which == 0 && M > 64) || (which == 2 && (M <= 16 || !no_wgmma.empty()))) continue;
      const double us = time_us([&] { fns[which](M, dip, d, x, d, Win, y, dip, DType::BF16, false, g_stream); }, 50);
      std::printf("  in_proj  M=%-5lld %-12s %8.1f us  %7.1f TFLOP/s  %7.1f GB/s\n", (long long)M,
                  names[which], us, 2.0 * M * dip * d / us / 1e6, 2.0 * dip * d / us / 1e3);
    }
  }
  // Square bf16 GEMMs (bf16 out): the tensor-core kernels against the dense peak.
  for (int64_t S : {2048, 4096, 8192}) {
    auto* a = static_cast<uint16_t*>(fill_bf16(S * S, 1.0f));
    auto* b = static_cast<uint16_t*>(fill_bf16(S * S, 0.02f));
    void* c = tc::device_malloc(S * S * 2);
    for (int which = 1; which < 3; which++) {
      if (which == 2 && !no_wgmma.empty()) continue;
      const double us = time_us([&] { fns[which](S, S, S, a, S, b, c, S, DType::BF16, false, g_stream); }, 10);
      std::printf("  square   %5lld^3 %-12s %8.1f us  %7.1f TFLOP/s\n", (long long)S, names[which], us,
                  2.0 * S * S * S / us / 1e6);
    }
    tc::device_free(a);
    tc::device_free(b);
    tc::device_free(c);
  }
  for (int64_t M : {int64_t(1), L}) {
    const double us = time_us([&] { tc::gemm(M, d, di, x, di, Wout, y, d, DType::F32, true, g_stream); }, 50);
    std::printf("  out_proj M=%-5lld %8.1f us  %7.1f TFLOP/s  %7.1f GB/s\n", (long long)M, us,
                2.0 * M * d * di / us / 1e6, 2.0 * d * di / us / 1e3);
  }
  for (int64_t M : {1, 8}) {
    const double us = time_us([&] { tc::gemm(M, vocab, d, x, d, E, logits, vocab, DType::F32, false, g_stream); }, 20);
    std::printf("  lm_head  M=%-5lld %8.1f us  %7.1f GB/s\n", (long long)M, us, 2.0 * vocab * d / us / 1e3);
  }

  std::printf("\nSSD (H=%lld P=%lld N=%lld)\n", (long long)H, (long long)P, (long long)N);
  tc::SsdDims dims{1, L, H, P, G, N, 256};
  const size_t ws_bytes = tc::ssd_scan_workspace_bytes(dims);
  void* ws = tc::device_malloc(ws_bytes);
  const double scan_us = time_us([&] {
    tc::ssd_scan(dims, xbc, cd, xbc + di, cd, xbc + di + G * N, cd, zx + 2 * di + 2 * G * N, dip,
                 bias, alog, Dp, nullptr, ys, state, ws, g_stream);
  }, 10);
  std::printf("  ssd_scan L=%lld: %.1f us (%.2f us/token), workspace %.1f MiB\n", (long long)L, scan_us,
              scan_us / L, ws_bytes / 1048576.0);
  tc::SsdDims one{1, 1, H, P, G, N, 256};
  const double step_us = time_us([&] {
    tc::ssd_step(one, xbc, cd, xbc + di, cd, xbc + di + G * N, cd, zx + 2 * di + 2 * G * N, dip,
                 bias, alog, Dp, state, ys, g_stream);
  }, 200);
  std::printf("  ssd_step: %.1f us (%.0f GB/s of state traffic)\n", step_us,
              2.0 * H * P * N * 4 / step_us / 1e3);
  tc::device_synchronize();
  return 0;
}
