// For the native benchmarks of decode kernels: make the next call find its data in DRAM, as
// in a decode step, where the GEMVs stream megabytes of weights between two visits of a layer.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"

// Reads 64 MB (one float per 64-byte line) on the pool's threads: twice the 32 MB L3, so the
// next call's data comes from DRAM, not from the L3 (16 MB left part of it there, and made a
// decode kernel look about 1.4x faster than in the model).
class CacheEvictor {
 public:
  void operator()(taipan::cpu::ThreadPool& pool) {
    pool.parallel_for(int64_t(other_.size()), [&](int64_t b, int64_t e, int) {
      float acc = 0;
      for (int64_t i = b; i < e; i += 16) acc += other_[size_t(i)];
      sink_ = sink_ + acc;
    });
  }

 private:
  std::vector<float> other_ = std::vector<float>(size_t(16) << 20, 1.f);
  volatile float sink_ = 0;  // keeps the reads from being optimised away
};
