// Run-time detection of the instruction sets the CPU kernels can use.
#include <atomic>
#include <cstdlib>

#include "kernels.h"

namespace taipan::cpu {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.f16c = __builtin_cpu_supports("f16c");
#endif
    return r;
  }();
  return f;
}

namespace {
std::atomic<bool> g_force_portable{std::getenv("TAIPAN_CPU_PORTABLE") != nullptr};
}

bool use_avx2() {
  const CpuFeatures& f = cpu_features();
  return f.avx2 && f.fma && f.f16c && !g_force_portable.load(std::memory_order_relaxed);
}

bool set_force_portable(bool on) { return g_force_portable.exchange(on); }

}  // namespace taipan::cpu
