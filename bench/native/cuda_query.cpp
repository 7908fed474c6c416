// Prints what taipan::cuda::query() sees, then exercises the memory, stream and elementwise
// path when a device is present (f32 -> bf16 -> silu -> f32 against a host reference).
// Works with cuda/*.cu (TAIPAN_WITH_CUDA) or cuda/cuda_stub.cpp linked in.
//   nvcc -std=c++17 -O3 -Xcompiler -fPIC <gencode flags> -c cuda/runtime.cu cuda/elementwise.cu
//   g++ -std=c++17 -O2 bench/native/cuda_query.cpp runtime.o elementwise.o
//       -L/usr/local/cuda/lib64 -lcudart_static -ldl -lpthread -lrt -o cuda_query
#include <cmath>
#include <cstdio>
#include <vector>

#include "../../csrc/dtype.h"
#include "../../cuda/cuda_backend.h"

using namespace taipan;

int main() {
  cuda::Status s = cuda::query();
  std::printf("compiled: %s\nruntime_version: %d\ndriver_version: %d\ndevices: %zu\n",
              s.compiled ? "yes" : "no", s.runtime_version, s.driver_version, s.devices.size());
  for (const auto& d : s.devices)
    std::printf("  [%d] %s  cc %d.%d  SMs %d  memory %.1f GiB (%.1f GiB free)\n", d.index,
                d.name.c_str(), d.cc_major, d.cc_minor, d.sm_count,
                d.total_memory / 1073741824.0, d.free_memory / 1073741824.0);
  std::printf("reason: %s\n", s.reason.empty() ? "(none: a device is usable)" : s.reason.c_str());

  if (s.devices.empty()) {
    // Show that the other entry points fail with a clear error instead of crashing.
    try {
      cuda::device_malloc(size_t(3) << 29);
      std::printf("device_malloc: unexpectedly succeeded\n");
    } catch (const cuda::CudaError& e) {
      std::printf("device_malloc threw CudaError (code %d): %s\n", e.code(), e.what());
    }
    return 0;
  }

  const int64_t n = 1000003;  // odd: takes the scalar path
  std::vector<float> h(n), back(n);
  for (int64_t i = 0; i < n; i++) h[i] = float(std::sin(0.001 * double(i)) * 8.0);
  void* stream = cuda::stream_create();
  float* d_f = static_cast<float*>(cuda::device_malloc(n * 4));
  uint16_t* d_b = static_cast<uint16_t*>(cuda::device_malloc(n * 2));
  cuda::copy_to_device(d_f, h.data(), n * 4, stream);
  cuda::convert_f32_to_bf16(d_f, d_b, n, stream);
  cuda::silu_bf16(d_b, d_b, n, stream);
  cuda::convert_bf16_to_f32(d_b, d_f, n, stream);
  cuda::copy_to_host(back.data(), d_f, n * 4, stream);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float v = bf16_to_f32(f32_to_bf16(h[i]));
    float ref = bf16_to_f32(f32_to_bf16(v / (1.0f + std::exp(-v))));
    if (std::fabs(back[i] - ref) > 1e-2f * (1.0f + std::fabs(ref))) bad++;
  }
  std::printf("elementwise check: %lld of %lld differ\n", (long long)bad, (long long)n);
  cuda::device_free(d_f);
  cuda::device_free(d_b);
  cuda::stream_destroy(stream);
  return bad ? 1 : 0;
}
