// The op layer: named ops, their argument validation, and the work they enqueue.
//
// JavaScript calls stream.run(name, tensors, params). The op's plan() checks every tensor
// (dtype, shape, device, contiguity) and every parameter before any memory is touched,
// throwing an ArgError that names the op and the argument; then it returns the Work closure
// that the stream runs later on a worker thread. This split is what lets native code reject
// bad input with a clear JavaScript error and still keep the event loop free while it computes.
#pragma once
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../cpu/thread_pool.h"
#include "../tensor.h"

namespace taipan {

struct ExecContext {
  Device device = Device::CPU;
  cpu::ThreadPool* pool = nullptr;  // CPU backend
  void* cuda_stream = nullptr;      // CUDA backend
};

// What plan() returns: the closure the stream runs later, and two facts the stream needs
// about it. A plain lambda converts to a Work with neither (every CPU op).
struct Work {
  std::function<void(ExecContext&)> run;
  // True when run() only enqueues device work (kernel launches, device-to-device copies) on
  // ctx.cuda_stream whose arguments were all fixed at plan time: no host synchronisation, no
  // allocation, no host decision on device data. A launched graph made only of such Works is
  // recorded once into a CUDA graph and replayed (Stream::Graph); anything else runs as is.
  bool capturable = false;
  // Optional. Called after the batch's device work has finished (the stream was
  // synchronised), including when it ran as a CUDA graph: returns an error that the device
  // recorded while the work ran (e.g. an embedding id out of range), or "" when there is
  // none, and resets what it read so the next run starts clean.
  std::function<std::string(ExecContext&)> check;

  Work() = default;
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Work> &&
                                              std::is_invocable_v<F&, ExecContext&>>>
  Work(F fn) : run(std::move(fn)) {}
  void operator()(ExecContext& c) const { run(c); }
};

using TensorPtr = std::shared_ptr<Tensor>;

class OpArgs {
 public:
  std::string op;
  Device device = Device::CPU;
  std::map<std::string, TensorPtr> tensors;
  std::map<std::string, std::vector<TensorPtr>> lists;  // e.g. one state tensor per sequence
  std::map<std::string, double> numbers;
  std::map<std::string, std::string> strings;

  [[noreturn]] void fail(const std::string& msg) const;

  // Tensors. `expect` checks presence, device, dtype and shape (-1 = any size) and returns it.
  const Tensor& tensor(const std::string& name) const;
  const Tensor* optional(const std::string& name) const;
  const Tensor& expect(const std::string& name, std::initializer_list<DType> dtypes,
                       const std::vector<int64_t>& shape) const;
  const Tensor* expect_optional(const std::string& name, std::initializer_list<DType> dtypes,
                                const std::vector<int64_t>& shape) const;
  void expect_contiguous(const std::string& name) const;
  // A per-sequence list, or null when absent.
  const std::vector<TensorPtr>* list(const std::string& name) const;

  // Parameters.
  int64_t integer(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t fallback) const;
  double number(const std::string& name, double fallback) const;
  std::string string(const std::string& name, const std::string& fallback) const;

  // Every tensor (singles and list members), for lifetime and in-use tracking.
  std::vector<TensorPtr> all_tensors() const;

  // A tensor that is written must not be a view that overlaps another argument in a way the
  // kernel does not expect; ops call this for outputs that must not alias an input.
  void expect_no_overlap(const std::string& a, const std::string& b) const;
};

struct OpDef {
  const char* name;
  const char* summary;
  Work (*plan)(const OpArgs& args);
};

void register_op(const OpDef& def);
const OpDef* find_op(const std::string& name);
std::vector<const OpDef*> all_ops();

struct OpRegistrar {
  explicit OpRegistrar(const OpDef& def) { register_op(def); }
};

}  // namespace taipan
