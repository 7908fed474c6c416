// embedding: out[i] = table[ids[i]], with every id checked against the vocabulary when the
// op runs (ids are data, so they are checked where they are read).
#include <climits>
#include <memory>
#include <string>

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

std::string bad_id_message(int32_t id, int64_t position, int64_t vocab) {
  return "token id " + std::to_string(id) + " at position " + std::to_string(position) +
         " is out of range [0, " + std::to_string(vocab) + ")";
}

// Host-visible ids, checked where they are read (they are data written after planning).
void check_ids(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab) throw ArgError(bad_id_message(ids[i], i, vocab));
}

// The CUDA kernel checks the ids itself (cuda/kernels.h): it clamps a bad id and records the
// lowest bad position in an error word that the Work owns, which the stream reads back after
// the batch has run (Work::check) and reports as the same error as check_ids. No host step,
// so the Work can be captured into a CUDA graph. Unlike the CPU op, the ops after it in the
// batch have run by then (on the clamped row).
class EmbeddingErrorWord {
 public:
  explicit EmbeddingErrorWord(int64_t vocab)
      : vocab_(vocab), word_(cuda_ops::device_buffer(sizeof(unsigned long long))) {
    reset(nullptr);
  }
  unsigned long long* device() const { return static_cast<unsigned long long*>(word_->data); }
  // After the stream has synchronised: the error message, or "" (and the word reset).
  std::string take(void* stream) const {
    unsigned long long e = cuda::kEmbeddingNoError;
    cuda::copy_to_host(&e, device(), sizeof e, stream);
    if (e == cuda::kEmbeddingNoError) return "";
    reset(stream);
    return bad_id_message(cuda::embedding_error_id(e), cuda::embedding_error_position(e), vocab_);
  }

 private:
  void reset(void* stream) const {
    const unsigned long long none = cuda::kEmbeddingNoError;
    cuda::copy_to_device(word_->data, &none, sizeof none, stream);  // waits: `none` is local
  }
  int64_t vocab_;
  std::shared_ptr<Storage> word_;
};

Work plan_embedding_cuda(const OpArgs& a) {
  cuda_ops::dtype(a, "table", {DType::BF16, DType::F16, DType::F32}, "the embedding table may be bf16, f16 or f32");
  cuda_ops::dtype(a, "out", {DType::F32}, cuda_ops::kResidual);
  EmbeddingArgs e = check_embedding(a);
  if (e.n > INT32_MAX) a.fail("at most 2^31 - 1 ids on the CUDA backend");
  auto word = std::make_shared<const EmbeddingErrorWord>(e.vocab);
  Work w = cuda_ops::launches([e, word](void* stream) {
    cuda::embedding(e.ids, e.n, e.table, e.tdt, e.d, e.vocab, e.out, word->device(), stream);
  });
  w.check = [word](ExecContext& c) { return word->take(c.cuda_stream); };
  return w;
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
