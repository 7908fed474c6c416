#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <memory>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TAIPAN_PAUSE() _mm_pause()
#else
#define TAIPAN_PAUSE() std::this_thread::yield()
#endif

namespace taipan::cpu {

namespace {
// How long an idle worker polls for the next task before sleeping on the condition variable.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

ThreadPool::ThreadPool(int threads) : nthreads_(std::max(1, threads)) {
  for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto start = std::chrono::steady_clock::now();
    uint64_t gen;
    int polls = 0;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      TAIPAN_PAUSE();
      if (++polls % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
      }
    }
    seen = gen;
    if (stop_.load()) return;
    run_task(*task_, index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

// Runs one thread's share of a region. An exception (out of memory inside a kernel) must not
// leave the thread: the first one is kept and rethrown by dispatch once every thread is done.
void ThreadPool::run_task(const std::function<void(int)>& task, int index) {
  try {
    task(index);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::dispatch(const std::function<void(int)>& task) {
  std::lock_guard<std::mutex> region(run_mutex_);
  if (nthreads_ == 1) {
    task(0);
    return;
  }
  pending_.store(nthreads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    task_ = &task;
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  run_task(task, 0);
  // The workers still use `task` (and the caller's frame it refers to) until pending is 0.
  while (pending_.load(std::memory_order_acquire) != 0) TAIPAN_PAUSE();
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    std::swap(error, error_);
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, const Fn& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t units = (n + grain - 1) / grain;
  int parts = int(std::min<int64_t>(nthreads_, units));
  if (parts <= 1) {
    fn(0, n, 0);
    return;
  }
  dispatch([&](int t) {
    if (t >= parts) return;
    int64_t u0 = units * t / parts, u1 = units * (t + 1) / parts;
    int64_t b = u0 * grain, e = std::min(n, u1 * grain);
    if (b < e) fn(b, e, t);
  });
}

void ThreadPool::parallel_tasks(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  if (n == 1 || nthreads_ == 1) {
    for (int64_t i = 0; i < n; i++) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  dispatch([&](int t) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(i, t);
  });
}

void ThreadPool::run_on_all(const std::function<void(int, int)>& fn) {
  dispatch([&](int t) { fn(t, nthreads_); });
}

int ThreadPool::default_threads() {
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

namespace {
std::mutex g_pool_mutex;
std::unique_ptr<ThreadPool> g_pool;
}  // namespace

ThreadPool& ThreadPool::global() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_unique<ThreadPool>(default_threads());
  return *g_pool;
}

void ThreadPool::set_threads(int n) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (n <= 0) n = default_threads();
  if (g_pool && g_pool->size() == n) return;
  g_pool = std::make_unique<ThreadPool>(n);
}

}  // namespace taipan::cpu
