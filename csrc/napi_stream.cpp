// The Stream class seen from JavaScript: run(op, tensors, params) enqueues, sync() runs the
// queued work on a libuv worker thread and resolves a Promise, so the event loop stays free.
#include <memory>
#include <mutex>

#include "napi_util.h"
#include "stream.h"

namespace taipan::js {

namespace {

OpArgs parse_call(Napi::Env env, const Napi::CallbackInfo& info) {
  OpArgs a;
  if (!info[0].IsString()) throw ArgError("run(): the first argument must be an op name");
  a.op = info[0].As<Napi::String>().Utf8Value();
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Array keys = o.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = o.Get(k);
      if (v.IsNull() || v.IsUndefined()) continue;
      std::string what = a.op + ": argument '" + k + "'";
      if (v.IsArray()) {
        Napi::Array arr = v.As<Napi::Array>();
        std::vector<TensorPtr> list(arr.Length());
        for (uint32_t j = 0; j < arr.Length(); j++) list[j] = unwrap_tensor(arr.Get(j), (what + "[" + std::to_string(j) + "]").c_str());
        a.lists[k] = std::move(list);
      } else {
        a.tensors[k] = unwrap_tensor(v, what.c_str());
      }
    }
  }
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    Napi::Array keys = o.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = o.Get(k);
      if (v.IsNumber()) a.numbers[k] = v.As<Napi::Number>().DoubleValue();
      else if (v.IsBoolean()) a.numbers[k] = v.As<Napi::Boolean>().Value() ? 1 : 0;
      else if (v.IsString()) a.strings[k] = v.As<Napi::String>().Utf8Value();
      else if (!v.IsNull() && !v.IsUndefined()) throw ArgError(a.op + ": parameter '" + k + "' must be a number, boolean or string");
    }
  }
  return a;
}

class SyncWorker : public Napi::AsyncWorker {
 public:
  SyncWorker(Napi::Env env, std::shared_ptr<Stream> s, Stream::Batch b)
      : Napi::AsyncWorker(env, "taipan.sync"), stream_(std::move(s)), batch_(std::move(b)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    stream_->execute(batch_);
    if (!batch_.error.empty()) SetError(batch_.error);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::shared_ptr<Stream> stream_;
  Stream::Batch batch_;
  Napi::Promise::Deferred deferred_;
};

// A captured sequence of op calls (see Stream::Graph). It keeps its tensors alive until
// disposed or collected.
class GraphWrap : public Napi::ObjectWrap<GraphWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Graph", {
      InstanceAccessor<&GraphWrap::Ops>("ops"),
      InstanceAccessor<&GraphWrap::Disposed>("disposed"),
      InstanceAccessor<&GraphWrap::CudaGraph>("cudaGraph"),
      InstanceMethod<&GraphWrap::Dispose>("dispose"),
    });
    classes(env).graph = Napi::Persistent(f);
    exports.Set("Graph", f);
  }
  explicit GraphWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GraphWrap>(info) {}
  Stream::GraphPtr graph;

 private:
  Napi::Value Ops(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), graph ? double(graph->entries.size()) : 0);
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !graph); }
  // Whether its runs are replayed as a CUDA graph now (recorded at its second run on a CUDA
  // stream, see Stream::Graph).
  Napi::Value CudaGraph(const Napi::CallbackInfo& info) {
    bool on = false;
    if (graph) {
      std::lock_guard<std::mutex> lock(graph->mu);
      on = graph->cuda_exec != nullptr;
    }
    return Napi::Boolean::New(info.Env(), on);
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    graph.reset();  // launched copies hold their own references until they have run
    return info.Env().Undefined();
  }
};

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Stream", {
      InstanceAccessor<&StreamWrap::DeviceName>("device"),
      InstanceAccessor<&StreamWrap::Queued>("queued"),
      InstanceAccessor<&StreamWrap::Disposed>("disposed"),
      InstanceAccessor<&StreamWrap::GetCudaGraphs, &StreamWrap::SetCudaGraphs>("cudaGraphs"),
      InstanceMethod<&StreamWrap::Run>("run"),
      InstanceMethod<&StreamWrap::Sync>("sync"),
      InstanceMethod<&StreamWrap::SyncBlocking>("syncBlocking"),
      InstanceMethod<&StreamWrap::BeginCapture>("beginCapture"),
      InstanceMethod<&StreamWrap::EndCapture>("endCapture"),
      InstanceMethod<&StreamWrap::Launch>("launch"),
      InstanceMethod<&StreamWrap::Dispose>("dispose"),
    });
    exports.Set("Stream", f);
  }

  explicit StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      Device d = info.Length() > 0 && !info[0].IsUndefined() ? parse_device(info[0]) : Device::CPU;
      s_ = std::make_shared<Stream>(d);
    });
  }

 private:
  Stream& get(Napi::Env env) {
    if (!s_) throw Napi::Error::New(env, "Stream was disposed");
    return *s_;
  }
  Napi::Value DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_name(get(info.Env()).device())); }
  Napi::Value Queued(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(get(info.Env()).queued())); }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !s_); }
  // Whether launched graphs become CUDA graphs on this stream (always false on the CPU).
  Napi::Value GetCudaGraphs(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), get(info.Env()).cuda_graphs()); }
  void SetCudaGraphs(const Napi::CallbackInfo& info, const Napi::Value& v) {
    if (!v.IsBoolean()) throw Napi::TypeError::New(info.Env(), "cudaGraphs must be a boolean");
    get(info.Env()).set_cuda_graphs(v.As<Napi::Boolean>().Value());
  }

  Napi::Value Run(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    guard(env, [&] { s.enqueue(parse_call(env, info)); });
    return env.Undefined();
  }

  Napi::Value Sync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    auto* w = new SyncWorker(env, s_, s.take());
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  Napi::Value SyncBlocking(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    Stream::Batch b = s.take();
    s.execute(b);
    if (!b.error.empty()) throw Napi::Error::New(env, b.error);
    return env.Undefined();
  }

  Napi::Value BeginCapture(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    guard(env, [&] { s.begin_capture(); });
    return env.Undefined();
  }

  Napi::Value EndCapture(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    Stream::GraphPtr g;
    guard(env, [&] { g = s.end_capture(); });
    if (!g) return env.Undefined();  // guard threw a JS exception
    Napi::Object o = classes(env).graph.New({});
    GraphWrap::Unwrap(o)->graph = std::move(g);
    return o;
  }

  Napi::Value Launch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stream& s = get(env);
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(classes(env).graph.Value()))
      throw Napi::TypeError::New(env, "launch(graph): expected a Graph from endCapture()");
    GraphWrap* g = GraphWrap::Unwrap(info[0].As<Napi::Object>());
    if (!g->graph) throw Napi::Error::New(env, "launch(graph): the graph was disposed");
    guard(env, [&] { s.launch(g->graph); });
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    s_.reset();  // queued work is dropped; a running batch keeps its own reference
    return info.Env().Undefined();
  }

  std::shared_ptr<Stream> s_;
};

// cudaGraphStats(): process-wide counters of the CUDA graph path (see CudaGraphStats).
Napi::Value CudaGraphStatsJs(const Napi::CallbackInfo& info) {
  const CudaGraphStats st = cuda_graph_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("captures", Napi::Number::New(info.Env(), double(st.captures)));
  o.Set("launches", Napi::Number::New(info.Env(), double(st.launches)));
  o.Set("fallbacks", Napi::Number::New(info.Env(), double(st.fallbacks)));
  o.Set("lastFallback", Napi::String::New(info.Env(), st.last_fallback));
  return o;
}

}  // namespace

void init_stream(Napi::Env env, Napi::Object exports) {
  GraphWrap::Init(env, exports);
  StreamWrap::Init(env, exports);
  exports.Set("cudaGraphStats", Napi::Function::New(env, CudaGraphStatsJs, "cudaGraphStats"));
}

}  // namespace taipan::js
