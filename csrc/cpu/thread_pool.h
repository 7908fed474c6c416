// A persistent pool of worker threads for the CPU backend.
//
// Ops call parallel_for(n, fn): the range [0, n) is split into contiguous blocks, one per
// thread, and fn(begin, end, thread_index) runs on each; the calling thread takes block 0.
// parallel_tasks(n, fn) instead hands out tasks one at a time, for uneven progress.
// Workers spin briefly, then sleep, so back-to-back ops (decode runs hundreds per token)
// do not pay a futex wake-up each. Only one parallel_for runs at a time (a mutex guards it),
// so several streams may share the pool safely. An exception thrown by fn on any thread is
// rethrown to the caller once the whole region has finished.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace taipan::cpu {

class ThreadPool {
 public:
  using Fn = std::function<void(int64_t begin, int64_t end, int thread)>;

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return nthreads_; }

  // Split [0, n) into at most size() blocks whose sizes are multiples of `grain`
  // (except the last) and run fn on each. Blocks with no work are not called.
  void parallel_for(int64_t n, const Fn& fn, int64_t grain = 1);

  // Run fn(task, thread) for every task in [0, n), handing the tasks out one at a time from a
  // shared counter. For work cut into more pieces than threads: on a VM one core often runs
  // a few percent slower than the other, and with fixed shares the faster one would wait.
  void parallel_tasks(int64_t n, const std::function<void(int64_t task, int thread)>& fn);

  // Run fn(thread, nthreads) once on every thread (for ops that partition work themselves).
  void run_on_all(const std::function<void(int thread, int nthreads)>& fn);

  // The process-wide pool; resized by set_threads (0 = hardware cores).
  static ThreadPool& global();
  static void set_threads(int n);
  static int default_threads();

 private:
  void worker(int index);
  void dispatch(const std::function<void(int)>& task);
  void run_task(const std::function<void(int)>& task, int index);

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel region at a time
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;  // the first exception a thread threw in the running region
};

}  // namespace taipan::cpu
