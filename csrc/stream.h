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
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
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
  };
  struct Batch {
    std::vector<EntryPtr> entries;
    uint64_t ticket = 0;
    std::string error;  // set when an op failed; later ops of the batch are skipped
  };

  explicit Stream(Device device);
  ~Stream();

  Device device() const { return device_; }
  size_t queued() const { return queue_.size(); }

  // JavaScript thread: validate and enqueue (throws ArgError for bad arguments); while
  // capturing, record instead.
  void enqueue(OpArgs args);
  // JavaScript thread: record the following enqueues into a graph instead of running them.
  void begin_capture();
  std::shared_ptr<Graph> end_capture();
  bool capturing() const { return capture_ != nullptr; }
  // JavaScript thread: enqueue every call of a captured graph.
  void launch(const Graph& g);
  // JavaScript thread: take everything queued so far.
  Batch take();
  // Any thread: run a taken batch after every earlier batch of this stream.
  void execute(Batch& batch);

 private:
  Device device_;
  void* cuda_stream_ = nullptr;
  std::vector<EntryPtr> queue_;
  std::shared_ptr<Graph> capture_;
  std::mutex mu_;
  std::condition_variable turn_;
  uint64_t next_ticket_ = 0;
  uint64_t done_ticket_ = 0;
};

// Resize the CPU thread pool; waits for running batches to finish first.
void set_cpu_threads(int n);
int cpu_threads();

}  // namespace taipan
