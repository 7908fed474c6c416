#include "scratch.h"

#include <cstdint>
#include <cstdlib>

#include "../human_bytes.h"

namespace taipan::cpu {

namespace {
constexpr size_t kAlign = 64;  // a cache line, and enough for any SIMD load

size_t test_limit() {
  static const size_t limit = [] {
    const char* v = std::getenv("TAIPAN_TEST_SCRATCH_LIMIT");
    return v && *v ? size_t(std::strtoull(v, nullptr, 10)) : SIZE_MAX;
  }();
  return limit;
}
}  // namespace

void ScratchBuffer::release() {
  std::free(p_);
  p_ = nullptr, cap_ = 0;
}

void* ScratchBuffer::bytes(size_t n, const char* what) {
  if (n <= cap_ && p_) return p_;
  release();
  const size_t rounded = n == 0 ? kAlign : (n + kAlign - 1) / kAlign * kAlign;
  if (n > test_limit() || rounded < n || !(p_ = std::aligned_alloc(kAlign, rounded)))
    throw OutOfScratch(std::string("out of memory: ") + what + " needs " + human_bytes(n) + " of scratch");
  cap_ = rounded;
  return p_;
}

}  // namespace taipan::cpu
