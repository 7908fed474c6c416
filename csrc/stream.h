// A stream: an ordered queue of validated op calls, executed later off the JavaScript thread.
//
// Like a CUDA stream, enqueueing is cheap and checks arguments at once; work runs when the
// caller synchronises (await stream.sync()). A sync takes everything queued so far as one
// batch; batches of one stream run in the order they were taken, one at a time.
//
// Like a CUDA graph, a sequence of op calls can be captured once (begin_capture ..
// end_capture) and launched again and again: a decode step then costs one call from
// JavaScript instead of hundreds of validated op calls. A captured call reads its tensors'
// contents when it runs, so the caller rewrites inputs (token ids, positions) in place.
//
// On a CUDA stream a launched graph whose Works are all capturable (Work::capturable: they
// only launch kernels with arguments fixed at plan time) also becomes a real CUDA graph: its
// first run goes op by op, the second records the Works' launches with stream capture and
// instantiates them, and every run from then on is one cudaGraphLaunch. Errors the device
// records (an embedding id out of range) are read after the batch has synchronised
// (Work::check) and fail the batch with the op's message, as on the CPU. TAIPAN_CUDA_GRAPHS=0
// (read when a stream is created) or set_cuda_graphs(false) keeps every run op by op.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ops/op.h"

namespace taipan {

class Stream {
 public:
  struct Entry {
    OpArgs args;  // holds every tensor the work touches alive until it has run
    Work work;
    std::vector<TensorPtr> tensors;  // args.all_tensors(), for in-use accounting
  };
  using EntryPtr = std::shared_ptr<const Entry>;
  struct Graph {
    std::vector<EntryPtr> entries;
    bool capturable = false;  // on CUDA, every Work capturable: may become a CUDA graph

    // The CUDA graph, built and replayed by Stream::execute under `mu` (a graph may be
    // launched on several streams).
    std::mutex mu;
    uint64_t eager_runs = 0;    // runs op by op before the CUDA graph was captured
    void* cuda_exec = nullptr;  // the instantiated CUDA graph, once captured
    bool cuda_failed = false;   // capturing failed once: always run op by op

    Graph() = default;
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;
    ~Graph();
  };
  using GraphPtr = std::shared_ptr<Graph>;
  struct Batch {
    std::vector<EntryPtr> entries;
    // The launched graphs among the entries: graph g at `first` covers entries
    // [first, first + g->entries.size()).
    std::vector<std::pair<size_t, GraphPtr>> graphs;
    uint64_t ticket = 0;
    std::string error;  // set when an op failed; later ops of the batch are skipped
  };

  explicit Stream(Device device);
  ~Stream();

  Device device() const { return device_; }
  size_t queued() const { return queue_.size(); }
  // Whether launched graphs may become CUDA graphs on this stream (CUDA streams only).
  bool cuda_graphs() const { return cuda_graphs_.load(); }
  void set_cuda_graphs(bool on) { cuda_graphs_.store(on && device_ == Device::CUDA); }

  // JavaScript thread: validate and enqueue (throws ArgError for bad arguments); while
  // capturing, record instead.
  void enqueue(OpArgs args);
  // JavaScript thread: record the following enqueues into a graph instead of running them.
  void begin_capture();
  GraphPtr end_capture();
  bool capturing() const { return capture_ != nullptr; }
  // JavaScript thread: enqueue every call of a captured graph.
  void launch(const GraphPtr& g);
  // JavaScript thread: take everything queued so far.
  Batch take();
  // Any thread: run a taken batch after every earlier batch of this stream.
  void execute(Batch& batch);

 private:
  void run_batch(Batch& batch, ExecContext& ctx);
  void run_entries(Batch& batch, size_t begin, size_t end, ExecContext& ctx);
  bool replay_cuda_graph(Graph& g, ExecContext& ctx, Batch& batch);
  bool capture_cuda_graph(Graph& g, ExecContext& ctx);
  void finish_cuda(Batch& batch, ExecContext& ctx);

  Device device_;
  void* cuda_stream_ = nullptr;
  std::atomic<bool> cuda_graphs_{false};
  std::vector<EntryPtr> queue_;
  std::vector<std::pair<size_t, GraphPtr>> queued_graphs_;
  GraphPtr capture_;
  std::mutex mu_;
  std::condition_variable turn_;
  uint64_t next_ticket_ = 0;
  uint64_t done_ticket_ = 0;
};

// Process-wide counters of the CUDA graph path, for tests and benchmarks.
struct CudaGraphStats {
  uint64_t captures = 0;   // CUDA graphs recorded and instantiated
  uint64_t launches = 0;   // runs of a launched graph as one CUDA graph launch
  uint64_t fallbacks = 0;  // captures that failed (that graph then runs op by op)
  std::string last_fallback;  // why the last one failed
};
CudaGraphStats cuda_graph_stats();

// Resize the CPU thread pool; waits for running batches to finish first.
void set_cpu_threads(int n);
int cpu_threads();

}  // namespace taipan
