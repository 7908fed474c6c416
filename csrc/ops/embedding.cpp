// embedding: out[i] = table[ids[i]], with every id checked against the vocabulary when the
// op runs (ids are data, so they are checked where they are read).
#include <vector>

#include "../../cuda/op_support.h"
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

// ids i32 [n]; table f32, f16 or bf16 [V, d] contiguous; out fp32 [n, d] (the residual stream)
// contiguous; param vocab (default V): ids must lie in [0, vocab). Both backends.
struct EmbeddingArgs {
  const int32_t* ids;
  int64_t n, d, vocab;
  const void* table;
  DType tdt;
  float* out;
};

EmbeddingArgs check_embedding(const OpArgs& a) {
  const Tensor& ids = a.expect("ids", {DType::I32}, {-1});
  const Tensor& table = a.expect("table", {DType::F32, DType::F16, DType::BF16}, {-1, -1});
  a.expect_contiguous("table");
  int64_t n = ids.numel(), d = table.cols();
  const Tensor& out = a.expect("out", {DType::F32}, {n, d});
  a.expect_contiguous("out");
  int64_t vocab = a.integer("vocab", table.shape[0]);
  if (vocab < 1 || vocab > table.shape[0])
    a.fail("parameter 'vocab' (" + std::to_string(vocab) + ") must be in [1, " + std::to_string(table.shape[0]) + "]");
  return {ids.ptr<int32_t>(), n, d, vocab, table.data(), table.dtype, out.ptr<float>()};
}

// Host-visible ids, checked where they are read (they are data written after planning).
void check_ids(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw ArgError("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                     " is out of range [0, " + std::to_string(vocab) + ")");
}

Work plan_embedding_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "table", {DType::BF16, DType::F16, DType::F32}, "the embedding table may be bf16, f16 or f32");
  cuda_ops::dtype(a, "out", {DType::F32}, cuda_ops::kResidual);
  EmbeddingArgs e = check_embedding(a);
  return cuda_ops::work([e](void* stream) {
    if (e.n == 0 || e.d == 0) return;
    // The kernel reads table rows unchecked: copy the ids back and check them as the CPU op
    // does. This waits for the ops queued before it (usually none: the embedding starts a
    // forward), and it is the one host step of the CUDA Mamba-2 path (see cuda/README.md on
    // CUDA graphs).
    std::vector<int32_t> host(static_cast<size_t>(e.n));
    cuda::copy_to_host(host.data(), e.ids, size_t(e.n) * sizeof(int32_t), stream);
    check_ids(host.data(), e.n, e.vocab);
    cuda::embedding(e.ids, e.n, e.table, e.tdt, e.d, e.out, stream);
  });
}

Work plan_embedding(const OpArgs& a) {
  if (a.device == Device::CUDA) return plan_embedding_cuda(a);
  EmbeddingArgs e = check_embedding(a);
  return [e](ExecContext& c) {
    check_ids(e.ids, e.n, e.vocab);
    cpu::embedding(*c.pool, e.ids, e.n, e.table, e.tdt, e.d, e.out);
  };
}

OpRegistrar reg({"embedding", "out[i, :] = table[ids[i], :] as fp32", plan_embedding});

}  // namespace
}  // namespace taipan
