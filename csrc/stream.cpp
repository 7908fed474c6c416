#include "stream.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>
#include <shared_mutex>

#include "../cuda/cuda_backend.h"
#include "profile.h"

namespace taipan {

namespace {
// Batches hold this shared while they run; resizing the thread pool holds it exclusively,
// so the pool is never replaced under a running op.
std::shared_mutex g_pool_guard;

struct GraphCounters {
  std::atomic<uint64_t> captures{0}, launches{0}, fallbacks{0};
  std::mutex mu;  // guards last_fallback
  std::string last_fallback;
};
GraphCounters& graph_counters() {
  static GraphCounters* c = new GraphCounters;  // leaked: read at any time, even at exit
  return *c;
}

void note_fallback(Stream::Graph& g, const std::string& why) {
  g.cuda_failed = true;
  GraphCounters& c = graph_counters();
  c.fallbacks++;
  std::lock_guard<std::mutex> lock(c.mu);
  c.last_fallback = why;
}

// TAIPAN_CUDA_GRAPHS=0 turns CUDA graphs off for streams created from then on (A/B runs).
bool cuda_graphs_default() {
  const char* v = std::getenv("TAIPAN_CUDA_GRAPHS");
  return !(v && std::string(v) == "0");
}
}  // namespace

CudaGraphStats cuda_graph_stats() {
  GraphCounters& c = graph_counters();
  CudaGraphStats s;
  s.captures = c.captures.load();
  s.launches = c.launches.load();
  s.fallbacks = c.fallbacks.load();
  std::lock_guard<std::mutex> lock(c.mu);
  s.last_fallback = c.last_fallback;
  return s;
}

Stream::Graph::~Graph() {
  if (cuda_exec) cuda::graph_destroy(cuda_exec);
}

void set_cpu_threads(int n) {
  std::unique_lock<std::shared_mutex> lock(g_pool_guard);
  cpu::ThreadPool::set_threads(n);
}

int cpu_threads() { return cpu::ThreadPool::global().size(); }

Stream::Stream(Device device) : device_(device) {
  if (device_ == Device::CUDA) cuda_stream_ = cuda::stream_create();
  set_cuda_graphs(cuda_graphs_default());
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

Stream::GraphPtr Stream::end_capture() {
  if (!capture_) throw ArgError("endCapture(): this stream is not capturing");
  GraphPtr g = std::move(capture_);
  g->capturable = device_ == Device::CUDA && !g->entries.empty() &&
                  std::all_of(g->entries.begin(), g->entries.end(), [](const EntryPtr& e) { return e->work.capturable; });
  return g;
}

void Stream::launch(const GraphPtr& g) {
  if (capture_) throw ArgError("launch(): cannot launch a graph while capturing");
  queued_graphs_.emplace_back(queue_.size(), g);
  for (const auto& e : g->entries) {
    for (auto& t : e->tensors) t->storage->in_use.fetch_add(1);
    queue_.push_back(e);
  }
}

Stream::Batch Stream::take() {
  Batch b;
  b.entries.swap(queue_);
  b.graphs.swap(queued_graphs_);
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
    run_batch(batch, ctx);
    if (device_ == Device::CUDA) finish_cuda(batch, ctx);
  }
  for (auto& e : batch.entries)
    for (auto& t : e->tensors) t->storage->in_use.fetch_sub(1);
  // Drop tensor (and graph) references on this thread, before waking the next batch.
  batch.entries.clear();
  batch.graphs.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ticket_++;
  }
  turn_.notify_all();
}

// The entries in order; a launched graph as one CUDA graph launch where it can be.
void Stream::run_batch(Batch& batch, ExecContext& ctx) {
  size_t next = 0;
  for (auto& [first, g] : batch.graphs) {
    run_entries(batch, next, first, ctx);
    next = first + g->entries.size();
    if (!batch.error.empty()) break;
    if (!replay_cuda_graph(*g, ctx, batch)) run_entries(batch, first, next, ctx);
  }
  run_entries(batch, next, batch.entries.size(), ctx);
}

void Stream::run_entries(Batch& batch, size_t begin, size_t end, ExecContext& ctx) {
  const bool profiling = profile::enabled();
  for (size_t i = begin; i < end; i++) {
    if (!batch.error.empty()) break;
    const Entry& e = *batch.entries[i];
    try {
      if (!profiling) {
        e.work(ctx);
      } else {
        // CPU work is synchronous, so wall time around it is the op's time. (On a CUDA
        // stream this measures the launch only.)
        auto t0 = std::chrono::steady_clock::now();
        e.work(ctx);
        profile::record(e.args.op, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    } catch (const std::bad_alloc&) {
      batch.error = e.args.op + " failed: out of memory";
    } catch (const std::exception& ex) {
      batch.error = e.args.op + " failed: " + ex.what();
    }
  }
}

// Runs g as one CUDA graph launch and returns true, or returns false when g must run op by
// op: not on CUDA, graphs off, a Work that is not capturable, profiling (which times each
// op), its first run, or a capture that failed before.
bool Stream::replay_cuda_graph(Graph& g, ExecContext& ctx, Batch& batch) {
  if (!g.capturable || !cuda_graphs() || profile::enabled()) return false;
  std::lock_guard<std::mutex> lock(g.mu);
  if (g.cuda_failed) return false;
  if (!g.cuda_exec) {
    // The first run goes op by op: one-time setup (a kernel's shared-memory limit, lazy
    // module loading) then happens outside capture, and a graph that is launched only once
    // (a prefill piece) never pays for capturing and instantiating.
    if (g.eager_runs++ == 0) return false;
    if (!capture_cuda_graph(g, ctx)) return false;
  }
  try {
    cuda::graph_launch(g.cuda_exec, cuda_stream_);
    graph_counters().launches++;
  } catch (const std::exception& ex) {
    batch.error = std::string("CUDA graph launch failed: ") + ex.what();
  }
  return true;
}

// Records g's Works into a CUDA graph (capture runs nothing). On failure (a Work that
// synchronised or allocated after all, or an error from the runtime) the capture is dropped
// and g runs op by op from then on, which also reports a genuine launch error as before.
bool Stream::capture_cuda_graph(Graph& g, ExecContext& ctx) {
  try {
    cuda::graph_capture_begin(cuda_stream_);
  } catch (const std::exception& ex) {
    note_fallback(g, std::string("capture could not begin: ") + ex.what());
    return false;
  }
  std::string op = "end of capture";
  try {
    for (const auto& e : g.entries) {
      op = e->args.op;
      e->work(ctx);
    }
    op = "end of capture";
    g.cuda_exec = cuda::graph_capture_end(cuda_stream_);
  } catch (const std::exception& ex) {
    cuda::graph_capture_abort(cuda_stream_);
    note_fallback(g, op + ": " + ex.what());
    return false;
  }
  graph_counters().captures++;
  return true;
}

// After the batch's work: wait for the stream, then collect the errors the device recorded.
// Every check runs (each resets what it read, so a failed batch leaves nothing behind for the
// next one); the batch reports the first error.
void Stream::finish_cuda(Batch& batch, ExecContext& ctx) {
  try {
    cuda::stream_synchronize(cuda_stream_);
  } catch (const std::exception& ex) {
    if (batch.error.empty()) batch.error = std::string("CUDA stream failed: ") + ex.what();
  }
  for (const auto& e : batch.entries) {
    if (!e->work.check) continue;
    std::string error;
    try {
      error = e->work.check(ctx);
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    if (!error.empty() && batch.error.empty()) batch.error = e->args.op + " failed: " + error;
  }
}

}  // namespace taipan
