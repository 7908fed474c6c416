// Helpers for the CUDA paths of the ops in csrc/ops/*.cpp (plain C++, no CUDA headers).
//
// An op's plan() runs on the JavaScript thread: it validates every argument for the CUDA
// kernels' storage types (MODEL.md section 10: bf16 activations between ops, fp32 residual
// stream and states, bf16 projection weights, fp32 small weights) and returns a Work that
// only launches kernels on the op stream (ExecContext::cuda_stream), marked capturable
// (`launches` below) so that a launched stream graph can become a CUDA graph. Works never
// allocate: what a launch needs beyond its tensors (the SSD workspace, per-sequence state
// tables, an error word) is allocated at plan time from the caching allocator and held by the
// Work, so a stream-level graph (Stream::begin_capture) replays with no allocation at all.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../csrc/ops/op.h"
#include "cuda_backend.h"
#include "kernels.h"

namespace taipan::cuda_ops {

// A Work from fn(stream), not capturable into a CUDA graph: for work that does something on
// the host when it runs (reads device data back, synchronises). If a launch throws, the
// stream is synchronised before the error propagates: the stream then skips the rest of the
// batch and drops its tensors at once, and their device blocks go back to the cache for
// reuse, so nothing launched earlier in the batch may still be running on them. (While a
// CUDA graph is being captured that synchronise fails, which is harmless: nothing ran.)
template <class F>
Work work(F fn) {
  return [fn](ExecContext& c) {
    try {
      fn(c.cuda_stream);
    } catch (...) {
      try {
        cuda::stream_synchronize(c.cuda_stream);
      } catch (...) {
        // A sticky device error: the context is unusable; report the original error.
      }
      throw;
    }
  };
}

// The usual CUDA Work: fn(stream) only launches kernels (and device-to-device copies) whose
// arguments fn captured at plan time, so the Work may be recorded into a CUDA graph once and
// replayed (Work::capturable). Device data such as a row count is read by the kernels, never
// by fn. The CPU emulator fails a host synchronisation or allocation made while capturing,
// so a test catches a Work that breaks this.
template <class F>
Work launches(F fn) {
  Work w = work(std::move(fn));
  w.capturable = true;
  return w;
}

inline std::string dtype_names(std::initializer_list<DType> dtypes) {
  std::string s;
  for (DType d : dtypes) s += (s.empty() ? "" : " or ") + std::string(dtype_name(d));
  return s;
}

// Dtype check with the CUDA backend's reason in the message (then a.expect checks the shape).
// An absent tensor passes (expect / expect_optional decide whether it is required).
inline void dtype(const OpArgs& a, const std::string& name, std::initializer_list<DType> ok,
                  const char* why) {
  const Tensor* t = a.optional(name);  // checks the device first
  if (!t || std::find(ok.begin(), ok.end(), t->dtype) != ok.end()) return;
  a.fail("on the CUDA backend tensor '" + name + "' must be " + dtype_names(ok) + ", got " +
         dtype_name(t->dtype) + " (" + why + ")");
}

// Reasons quoted in dtype errors.
constexpr const char* kActivation = "activations between ops are bf16 on CUDA";
constexpr const char* kResidual = "the residual stream is fp32";
constexpr const char* kSmallWeight = "norm, conv and SSM parameters are fp32";
constexpr const char* kMatrix = "projection weights are bf16 on CUDA: load the model with weightDtype 'bf16' or 'auto'";
constexpr const char* kState = "recurrent states are fp32";

// `out` and `in` are either the same elements (the kernel supports in-place) or disjoint.
inline void expect_same_or_disjoint(const OpArgs& a, const std::string& out, const std::string& in) {
  const Tensor* to = a.optional(out);
  const Tensor* ti = a.optional(in);
  if (!to || !ti || to->storage != ti->storage) return;
  if (to->offset == ti->offset && to->ld == ti->ld) return;
  a.expect_no_overlap(out, in);
}

// Device memory held by a Work (a workspace, a pointer table): from the caching allocator.
inline std::shared_ptr<Storage> device_buffer(size_t bytes) {
  return Storage::allocate(bytes, Device::CUDA);
}

// A device array of per-sequence state addresses for the *_seqs launchers, filled once now
// (the addresses do not change while the Work lives).
inline std::shared_ptr<Storage> pointer_table(const std::vector<void*>& ptrs) {
  auto table = device_buffer(ptrs.size() * sizeof(void*));
  cuda::copy_to_device(table->data, ptrs.data(), ptrs.size() * sizeof(void*), nullptr);
  return table;
}

inline const uint16_t* bf16(const Tensor& t) { return t.ptr<uint16_t>(); }
inline uint16_t* bf16_out(const Tensor& t) { return t.ptr<uint16_t>(); }

}  // namespace taipan::cuda_ops
