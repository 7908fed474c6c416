// embedding: out[i] = table[ids[i]], with every id checked against the vocabulary when the
// op runs (ids are data, so they are checked where they are read).
#include "../cpu/kernels.h"
#include "op.h"

namespace taipan {
namespace {

Work plan_embedding(const OpArgs& a) {
  if (a.device != Device::CPU) a.fail("not implemented on the CUDA backend yet");
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
