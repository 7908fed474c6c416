#include "stream.h"

#include <chrono>
#include <shared_mutex>

#include "../cuda/cuda_backend.h"
#include "profile.h"

namespace taipan {

namespace {
// Batches hold this shared while they run; resizing the thread pool holds it exclusively,
// so the pool is never replaced under a running op.
std::shared_mutex g_pool_guard;
}  // namespace

void set_cpu_threads(int n) {
  std::unique_lock<std::shared_mutex> lock(g_pool_guard);
  cpu::ThreadPool::set_threads(n);
}

int cpu_threads() { return cpu::ThreadPool::global().size(); }

Stream::Stream(Device device) : device_(device) {
  if (device_ == Device::CUDA) cuda_stream_ = cuda::stream_create();
}

Stream::~Stream() {
  for (auto& e : queue_)
    for (auto& t : e->tensors) t->storage->in_use.fetch_sub(1);
  if (cuda_stream_) cuda::stream_destroy(cuda_stream_);
}

void Stream::enqueue(OpArgs args) {
  const OpDef* def = find_op(args.op);
  if (!def) throw ArgError("unknown op '" + args.op + "'");
  args.device = device_;
  auto e = std::make_shared<Entry>();
  e->args = std::move(args);
  e->work = def->plan(e->args);
  e->tensors = e->args.all_tensors();
  if (capture_) {
    capture_->entries.push_back(std::move(e));
    return;
  }
  for (auto& t : e->tensors) t->storage->in_use.fetch_add(1);
  queue_.push_back(std::move(e));
}

void Stream::begin_capture() {
  if (capture_) throw ArgError("beginCapture(): this stream is already capturing");
  capture_ = std::make_shared<Graph>();
}

std::shared_ptr<Stream::Graph> Stream::end_capture() {
  if (!capture_) throw ArgError("endCapture(): this stream is not capturing");
  return std::move(capture_);
}

void Stream::launch(const Graph& g) {
  if (capture_) throw ArgError("launch(): cannot launch a graph while capturing");
  for (const auto& e : g.entries) {
    for (auto& t : e->tensors) t->storage->in_use.fetch_add(1);
    queue_.push_back(e);
  }
}

Stream::Batch Stream::take() {
  Batch b;
  b.entries.swap(queue_);
  std::lock_guard<std::mutex> lock(mu_);
  b.ticket = next_ticket_++;
  return b;
}

void Stream::execute(Batch& batch) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    turn_.wait(lock, [&] { return done_ticket_ == batch.ticket; });
  }
  {
    std::shared_lock<std::shared_mutex> pool_lock(g_pool_guard);
    ExecContext ctx;
    ctx.device = device_;
    ctx.pool = &cpu::ThreadPool::global();
    ctx.cuda_stream = cuda_stream_;
    const bool profiling = profile::enabled();
    for (auto& e : batch.entries) {
      if (!batch.error.empty()) break;
      try {
        if (!profiling) {
          e->work(ctx);
        } else {
          // CPU work is synchronous, so wall time around it is the op's time. (On a CUDA
          // stream this measures the launch only.)
          auto t0 = std::chrono::steady_clock::now();
          e->work(ctx);
          profile::record(e->args.op, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
      } catch (const std::exception& ex) {
        batch.error = e->args.op + " failed: " + ex.what();
      }
    }
    if (batch.error.empty() && device_ == Device::CUDA) {
      try {
        cuda::stream_synchronize(cuda_stream_);
      } catch (const std::exception& ex) {
        batch.error = std::string("CUDA stream failed: ") + ex.what();
      }
    }
  }
  for (auto& e : batch.entries)
    for (auto& t : e->tensors) t->storage->in_use.fetch_sub(1);
  batch.entries.clear();  // drop tensor references on this thread, before waking the next batch
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ticket_++;
  }
  turn_.notify_all();
}

}  // namespace taipan
