// Module entry: tensors, streams, the op list, thread control and backend information.
#include <functional>
#include <string>
#include <utility>

#include <napi.h>

#include "../cuda/cuda_backend.h"
#include "../cuda/kernels.h"
#include "cpu/kernels.h"
#include "napi_util.h"
#include "ops/op.h"
#include "profile.h"
#include "stream.h"
#include "tensor.h"

namespace taipan::js {

namespace {

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);

  const cpu::CpuFeatures& f = cpu::cpu_features();
  Napi::Object c = Napi::Object::New(env);
  c.Set("avx2", f.avx2);
  c.Set("fma", f.fma);
  c.Set("f16c", f.f16c);
  c.Set("path", cpu::use_avx2() ? "avx2" : "portable");
  c.Set("threads", cpu_threads());
  out.Set("cpu", c);

  cuda::Status st = cuda::query();
  Napi::Object g = Napi::Object::New(env);
  g.Set("compiled", st.compiled);
  g.Set("runtimeVersion", st.runtime_version);
  g.Set("driverVersion", st.driver_version);
  g.Set("reason", st.reason);
  Napi::Array devs = Napi::Array::New(env, st.devices.size());
  for (size_t i = 0; i < st.devices.size(); i++) {
    const auto& d = st.devices[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    o.Set("totalMemory", double(d.total_memory));
    o.Set("freeMemory", double(d.free_memory));
    o.Set("multiprocessors", d.sm_count);
    devs.Set(uint32_t(i), o);
  }
  g.Set("devices", devs);
  // Which kernel runs prefill GEMMs on the current device, and why not the Hopper one.
  if (st.reason.empty() && !st.devices.empty()) {
    std::string why;
    try {
      why = cuda::gemm_wgmma_unavailable_reason();
    } catch (const std::exception& e) {
      why = e.what();
    }
    g.Set("prefillGemm", why.empty() ? std::string("wgmma (sm_90a: bulk tensor copies, warpgroup MMA)")
                                     : "mma.sync (sm_80 tensor-core kernel; wgmma not used: " + why + ")");
  }
  out.Set("cuda", g);

  std::vector<const OpDef*> ops = all_ops();
  Napi::Array names = Napi::Array::New(env, ops.size());
  for (size_t i = 0; i < ops.size(); i++) names.Set(uint32_t(i), ops[i]->name);
  out.Set("ops", names);
  return out;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "setThreads(n): n must be a number (0 = one per core)");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 0 && n <= 1024) || n != double(int(n))) throw Napi::RangeError::New(env, "setThreads(n): n must be an integer from 0 to 1024");
  set_cpu_threads(int(n));
  return Napi::Number::New(env, cpu_threads());
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cpu_threads()); }

// Tests use this to run every kernel's portable path on an AVX2 machine.
Napi::Value SetPortable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cpu::set_force_portable(info[0].ToBoolean().Value()));
}

// setProfiling(on): time every executed op (also TAIPAN_PROFILE=1). Returns the previous value.
Napi::Value SetProfiling(const Napi::CallbackInfo& info) {
  bool was = profile::enabled();
  profile::set_enabled(info[0].ToBoolean().Value());
  return Napi::Boolean::New(info.Env(), was);
}

// opProfile(reset?): { [op]: { calls, seconds } } since the last reset.
Napi::Value OpProfile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [op, st] : profile::snapshot(info[0].ToBoolean().Value())) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("calls", double(st.calls));
    o.Set("seconds", st.seconds);
    out.Set(op, o);
  }
  return out;
}

// A promise of one machine measurement (cpuReadBandwidth, cpuFmaPeak), taken off the event
// loop on a libuv worker thread.
class MeasureWorker : public Napi::AsyncWorker {
 public:
  MeasureWorker(Napi::Env env, const char* name, std::function<double()> measure)
      : Napi::AsyncWorker(env, name),
        name_(name),
        measure_(std::move(measure)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      value_ = measure_();
    } catch (const std::exception& e) {
      SetError(name_ + ": " + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), value_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::string name_;
  std::function<double()> measure_;
  double value_ = 0;
  Napi::Promise::Deferred deferred_;
};

Napi::Value queue_measure(Napi::Env env, const char* name, std::function<double()> measure) {
  auto* w = new MeasureWorker(env, name, std::move(measure));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// cpuReadBandwidth(mib): a promise of the bytes/s at which the CPU threads read a buffer of
// `mib` MiB (best of 5 passes; see cpu/bandwidth.cpp).
Napi::Value CpuReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double mib = info[0].IsUndefined() ? 256 : info[0].ToNumber().DoubleValue();
  if (!(mib >= 1 && mib <= 16384) || mib != double(int64_t(mib)))
    throw Napi::RangeError::New(env, "cpuReadBandwidth(mib): mib must be an integer from 1 to 16384");
  const int64_t floats = int64_t(mib) * (1 << 20) / int64_t(sizeof(float));
  return queue_measure(env, "cpuReadBandwidth", [floats] {
    auto t = Tensor::empty({floats}, DType::F32, Device::CPU);
    float* x = t->ptr<float>();
    for (int64_t i = 0; i < floats; i++) x[i] = float(i % 1024) * (1.0f / 1024);  // touch every page
    return cpu::read_bandwidth(cpu::ThreadPool::global(), x, floats, 5);
  });
}

// cpuFmaPeak(): a promise of the fp32 FLOP/s of the CPU threads' fused multiply-adds (best of
// 5 runs of a few ms; see cpu/fma_peak.cpp).
Napi::Value CpuFmaPeak(const Napi::CallbackInfo& info) {
  return queue_measure(info.Env(), "cpuFmaPeak",
                       [] { return cpu::fma_peak(cpu::ThreadPool::global(), int64_t(1) << 21, 5); });
}

}  // namespace

Classes& classes(Napi::Env env) {
  Classes* c = env.GetInstanceData<Classes>();
  if (!c) {
    c = new Classes();
    env.SetInstanceData(c);  // deleted with the environment
  }
  return *c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_tensor(env, exports);
  init_stream(env, exports);
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo, "backendInfo"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads, "getThreads"));
  exports.Set("setPortable", Napi::Function::New(env, SetPortable, "setPortable"));
  exports.Set("setProfiling", Napi::Function::New(env, SetProfiling, "setProfiling"));
  exports.Set("opProfile", Napi::Function::New(env, OpProfile, "opProfile"));
  exports.Set("cpuReadBandwidth", Napi::Function::New(env, CpuReadBandwidth, "cpuReadBandwidth"));
  exports.Set("cpuFmaPeak", Napi::Function::New(env, CpuFmaPeak, "cpuFmaPeak"));
  return exports;
}

NODE_API_MODULE(taipan, Init)

}  // namespace taipan::js
