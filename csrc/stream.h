// A stream: an ordered queue of validated op calls, executed later off the JavaScript thread.
//
// Like a CUDA stream, enqueueing is cheap and checks arguments at once; work runs when the
// caller synchronises (await stream.sync()). A sync takes everything queued so far as one
// batch; batches of one stream run in the order they were taken, one at a time.
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
  };
  struct Batch {
    std::vector<Entry> entries;
    uint64_t ticket = 0;
    std::string error;  // set when an op failed; later ops of the batch are skipped
  };

  explicit Stream(Device device);
  ~Stream();

  Device device() const { return device_; }
  size_t queued() const { return queue_.size(); }

  // JavaScript thread: validate and enqueue (throws ArgError for bad arguments).
  void enqueue(OpArgs args);
  // JavaScript thread: take everything queued so far.
  Batch take();
  // Any thread: run a taken batch after every earlier batch of this stream.
  void execute(Batch& batch);

 private:
  Device device_;
  void* cuda_stream_ = nullptr;
  std::vector<Entry> queue_;
  std::mutex mu_;
  std::condition_variable turn_;
  uint64_t next_ticket_ = 0;
  uint64_t done_ticket_ = 0;
};

// Resize the CPU thread pool; waits for running batches to finish first.
void set_cpu_threads(int n);
int cpu_threads();

}  // namespace taipan
