// Embedding gather: one row of the table per token id, widened to fp32.
#include <cstring>

#include "kernels.h"

namespace taipan::cpu {

void embedding(ThreadPool& pool, const int32_t* ids, int64_t n, const void* E, DType edt,
               int64_t d, float* out) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      float* dst = out + i * d;
      size_t row = size_t(ids[i]) * size_t(d);
      if (edt == DType::F32) {
        std::memcpy(dst, static_cast<const float*>(E) + row, size_t(d) * 4);
      } else if (edt == DType::BF16) {
        const uint16_t* src = static_cast<const uint16_t*>(E) + row;
        for (int64_t j = 0; j < d; j++) dst[j] = bf16_to_f32(src[j]);
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(E) + row;
        for (int64_t j = 0; j < d; j++) dst[j] = f16_to_f32(src[j]);
      }
    }
  }, 16);
}

}  // namespace taipan::cpu
