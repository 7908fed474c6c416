// embedding: out[i] = table[ids[i]], with every id checked against the vocabulary when the
// op runs (ids are data, so they are checked where they are read).
#include <vector>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// CUDA: table bf16, f16 or f32 [V, d] contiguous; ids i32 [n] on the device; out fp32 [n, d]
// (the residual stream) contiguous.
Work plan_embedding_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "table", {DType::BF16, DType::F16, DType::F32}, "the embedding table may be bf16, f16 or f32");
  cuda_ops::dtype(a, "out", {DType::F32}, cuda_ops::kResidual);
  const Tensor& ids = a.expect("ids", {DType::I32}, {-1});
  const Tensor& table = a.expect("table", {DType::F32, DType::F16, DType::BF16}, {-1, -1});
  a.expect_contiguous("table");
  int64_t n = ids.numel(), d = table.cols();
  const Tensor& out = a.expect("out", {DType::F32}, {n, d});
  a.expect_contiguous("out");
  int64_t vocab = a.integer("vocab", table.shape[0]);
  if (vocab < 1 || vocab > table.shape[0])
    a.fail("parameter 'vocab' (" + std::to_string(vocab) + ") must be in [1, " + std::to_string(table.shape[0]) + "]");
  const int32_t* ip = ids.ptr<int32_t>();
  const void* tp = table.data();
  DType tdt = table.dtype;
  float* op = out.ptr<float>();
  return cuda_ops::work([=](void* stream) {
    if (n == 0 || d == 0) return;
    // The kernel reads table rows unchecked, and ids are data written after planning: copy
    // them back and check them as the CPU op does. This waits for the ops queued before it
    // (usually none: the embedding starts a forward), and it is the one host step of the
    // CUDA Mamba-2 path (see cuda/README.md on CUDA graphs).
    std::vector<int32_t> host(static_cast<size_t>(n));
    cuda::copy_to_host(host.data(), ip, size_t(n) * sizeof(int32_t), stream);
    for (int64_t i = 0; i < n; i++)
      if (host[i] < 0 || host[i] >= vocab)
        throw ArgError("token id " + std::to_string(host[i]) + " at position " + std::to_string(i) +
                       " is out of range [0, " + std::to_string(vocab) + ")");
    cuda::embedding(ip, n, tp, tdt, d, op, stream);
  });
}

Work plan_embedding(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_embedding_cuda(a);
  const Tensor& ids = a.expect("ids", {DType::I32}, {-1});
  const Tensor& table = a.expect("table", {DType::F32, DType::F16, DType::BF16}, {-1, -1});
  a.expect_contiguous("table");
  int64_t n = ids.numel(), d = table.cols();
  const Tensor& out = a.expect("out", {DType::F32}, {n, d});
  a.expect_contiguous("out");
  int64_t vocab = a.integer("vocab", table.shape[0]);
  if (vocab < 1 || vocab > table.shape[0])
    a.fail("parameter 'vocab' (" + std::to_string(vocab) + ") must be in [1, " + std::to_string(table.shape[0]) + "]");
  const int32_t* ip = ids.ptr<int32_t>();
  const void* tp = table.data();
  DType tdt = table.dtype;
  float* op = out.ptr<float>();
  return [=](ExecContext& c) {
    for (int64_t i = 0; i < n; i++)
      if (ip[i] < 0 || ip[i] >= vocab)
        throw ArgError("token id " + std::to_string(ip[i]) + " at position " + std::to_string(i) +
                       " is out of range [0, " + std::to_string(vocab) + ")");
    cpu::embedding(*c.pool, ip, n, tp, tdt, d, op);
  };
}

OpRegistrar reg({"embedding", "out[i, :] = table[ids[i], :] as fp32", plan_embedding});

}  // namespace
}  // namespace taipan
