// Scratch memory for the CPU kernels: a growable, uninitialised, 64-byte-aligned buffer.
//
// Kernels keep one as a thread_local and ask it for what a call needs: the pool threads live
// as long as the process, so the buffer is reused from call to call instead of allocating
// (and page-faulting in) megabytes per op. get() never returns null: when memory runs out it
// throws OutOfScratch, naming the kernel and the size. The thread pool carries an exception
// from any of its threads back to the op's caller, and the stream reports it as the op's
// error, so an out-of-memory inside a kernel rejects the sync() instead of ending the process.
//
// TAIPAN_TEST_SCRATCH_LIMIT=<bytes> (read once) makes every request above that size fail as
// if memory had run out: the tests use it to check that path in a child process.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

namespace taipan::cpu {

struct OutOfScratch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer() { release(); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least `count` values of T (contents undefined); `what` names the kernel for the error.
  template <class T = float>
  T* get(size_t count, const char* what) {
    return static_cast<T*>(bytes(count * sizeof(T), what));
  }
  size_t capacity() const { return cap_; }  // bytes
  void release();

 private:
  void* bytes(size_t n, const char* what);
  void* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace taipan::cpu
