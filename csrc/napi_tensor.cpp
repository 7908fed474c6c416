// The Tensor class seen from JavaScript, and the functions that create tensors.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "../cuda/cuda_backend.h"
#include "napi_util.h"

namespace taipan::js {

namespace {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:

  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Tensor", {
      InstanceAccessor<&TensorWrap::Shape>("shape"),
      InstanceAccessor<&TensorWrap::DTypeName>("dtype"),
      InstanceAccessor<&TensorWrap::DeviceName>("device"),
      InstanceAccessor<&TensorWrap::RowStride>("rowStride"),
      InstanceAccessor<&TensorWrap::Contiguous>("contiguous"),
      InstanceAccessor<&TensorWrap::ByteLength>("byteLength"),
      InstanceAccessor<&TensorWrap::Disposed>("disposed"),
      InstanceMethod<&TensorWrap::ToArray>("toArray"),
      InstanceMethod<&TensorWrap::Write>("write"),
      InstanceMethod<&TensorWrap::Rows>("rows"),
      InstanceMethod<&TensorWrap::Cols>("cols"),
      InstanceMethod<&TensorWrap::Reshape>("reshape"),
      InstanceMethod<&TensorWrap::Dispose>("dispose"),
      InstanceMethod<&TensorWrap::Describe>("toString"),
    });
    classes(env).tensor = Napi::Persistent(f);
    exports.Set("Tensor", f);
  }

  explicit TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
    if (info.Length() < 2 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Tensor cannot be constructed directly; use tensor(), empty() or fromFile()");
    // Take the reference out of the External: the External lives until the next garbage
    // collection, and a copy left in it would keep the memory (device memory too, which puts
    // no pressure on the collector) alive after dispose().
    t_ = std::move(*info[0].As<Napi::External<std::shared_ptr<Tensor>>>().Data());
    if (!t_) throw Napi::TypeError::New(info.Env(), "Tensor cannot be constructed directly; use tensor(), empty() or fromFile()");
    if (info[1].As<Napi::Boolean>().Value() && t_->device() == Device::CPU) {
      accounted_ = int64_t(t_->storage->bytes);
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), accounted_);
    }
  }

  ~TensorWrap() override { release(Env()); }

  const std::shared_ptr<Tensor>& get(Napi::Env env) const {
    if (!t_) throw Napi::Error::New(env, "Tensor was disposed");
    return t_;
  }

 private:
  void release(Napi::Env env) {
    if (accounted_) {
      Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
      accounted_ = 0;
    }
    t_.reset();  // memory goes when the last view and queued op let go of it
  }

  void check_idle(Napi::Env env, const char* what) const {
    if (get(env)->storage->in_use.load() != 0)
      throw Napi::Error::New(env, std::string("cannot ") + what + " a tensor that queued or running ops use; await stream.sync() first");
  }

  Napi::Value Shape(const Napi::CallbackInfo& info) {
    auto& t = get(info.Env());
    Napi::Array a = Napi::Array::New(info.Env(), t->shape.size());
    for (size_t i = 0; i < t->shape.size(); i++) a.Set(uint32_t(i), double(t->shape[i]));
    return a;
  }
  Napi::Value DTypeName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_name(get(info.Env())->dtype)); }
  Napi::Value DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_name(get(info.Env())->device())); }
  Napi::Value RowStride(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(get(info.Env())->ld)); }
  Napi::Value Contiguous(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), get(info.Env())->contiguous()); }
  Napi::Value ByteLength(const Napi::CallbackInfo& info) {
    auto& t = get(info.Env());
    return Napi::Number::New(info.Env(), double(t->numel() * int64_t(dtype_size(t->dtype))));
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !t_); }
  Napi::Value Describe(const Napi::CallbackInfo& info) {
    if (!t_) return Napi::String::New(info.Env(), "Tensor(disposed)");
    return Napi::String::New(info.Env(), "Tensor(" + t_->describe() + ")");
  }

  // Copy out to a new typed array: Float32Array for float dtypes (f16/bf16 widened),
  // Int32Array for i32. Strided views are gathered row by row.
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  // Copy a typed array (same rules as tensor()) into this tensor's memory.
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Rows(const Napi::CallbackInfo& info);
  Napi::Value Cols(const Napi::CallbackInfo& info);
  Napi::Value Reshape(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<Tensor> t_;
  int64_t accounted_ = 0;
};


void convert(const void* src, DType sd, void* dst, DType dd, int64_t n) {
  if (sd == dd) {
    std::memcpy(dst, src, size_t(n) * dtype_size(sd));
    return;
  }
  if (sd == DType::I32 || dd == DType::I32)
    throw ArgError(std::string("cannot convert ") + dtype_name(sd) + " data to " + dtype_name(dd));
  auto load = [&](int64_t i) -> float {
    switch (sd) {
      case DType::F32: return static_cast<const float*>(src)[i];
      case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
      default: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    }
  };
  for (int64_t i = 0; i < n; i++) {
    float v = load(i);
    switch (dd) {
      case DType::F32: static_cast<float*>(dst)[i] = v; break;
      case DType::F16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(v); break;
      default: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v); break;
    }
  }
}

// What a typed array holds, as a source for a tensor of dtype `want`: Float32Array is f32
// values, Uint16Array the raw bits of `want` (f16 or bf16), Int32Array i32, Uint8Array raw bytes
// of `want`. Float64Array is accepted for float dtypes and narrowed.
struct Source {
  const void* data;
  DType dtype;
  int64_t count;
  std::vector<float> narrowed;  // for Float64Array
};

Source source_of(Napi::Env env, const Napi::Value& v, DType want) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(env, "expected a typed array (Float32Array, Uint16Array, Int32Array or Uint8Array)");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  const char* base = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  Source s{base, want, int64_t(ta.ElementLength()), {}};
  switch (ta.TypedArrayType()) {
    case napi_float32_array:
      if (want == DType::I32) throw Napi::TypeError::New(env, "an i32 tensor needs an Int32Array, got a Float32Array");
      s.dtype = DType::F32;
      break;
    case napi_float64_array: {
      if (want == DType::I32) throw Napi::TypeError::New(env, "an i32 tensor needs an Int32Array, got a Float64Array");
      const double* d = reinterpret_cast<const double*>(base);
      s.narrowed.assign(d, d + s.count);
      s.data = s.narrowed.data();
      s.dtype = DType::F32;
      break;
    }
    case napi_uint16_array:
      if (want != DType::F16 && want != DType::BF16)
        throw Napi::TypeError::New(env, std::string("a Uint16Array holds f16 or bf16 bits, but the tensor is ") + dtype_name(want));
      break;
    case napi_int32_array:
      if (want != DType::I32) throw Napi::TypeError::New(env, std::string("an Int32Array fills i32 tensors only, but the tensor is ") + dtype_name(want));
      break;
    case napi_uint8_array:
      if (s.count % int64_t(dtype_size(want)) != 0)
        throw Napi::TypeError::New(env, "a Uint8Array's length must be a multiple of the dtype size");
      s.count /= int64_t(dtype_size(want));
      break;
    default:
      throw Napi::TypeError::New(env, "unsupported typed array type for tensor data");
  }
  return s;
}

// Copy n elements from host memory (src, sd) into tensor t, converting to t's dtype.
void fill_tensor(const Tensor& t, const void* src, DType sd) {
  int64_t rows = t.rows(), cols = t.cols();
  size_t esz = dtype_size(t.dtype), ssz = dtype_size(sd);
  if (t.device() == Device::CPU) {
    for (int64_t r = 0; r < rows; r++)
      convert(static_cast<const char*>(src) + size_t(r * cols) * ssz, sd,
              static_cast<char*>(t.data()) + size_t(r * t.ld) * esz, t.dtype, cols);
    return;
  }
  // CUDA: convert on the host into a contiguous staging buffer, then one copy (a strided one
  // for a column view, which must leave the columns between its rows untouched).
  std::vector<char> staged(size_t(t.numel()) * esz);
  convert(src, sd, staged.data(), t.dtype, t.numel());
  if (t.contiguous()) cuda::copy_to_device(t.data(), staged.data(), staged.size(), nullptr);
  else cuda::copy_to_device_2d(t.data(), size_t(t.ld) * esz, staged.data(), size_t(cols) * esz,
                               size_t(cols) * esz, size_t(rows), nullptr);
}

Napi::Value TensorWrap::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_idle(env, "read");
  auto& t = get(env);
  return guard(env, [&]() -> Napi::Value {
    int64_t n = t->numel(), rows = t->rows(), cols = t->cols();
    size_t esz = dtype_size(t->dtype);
    std::vector<char> host;
    const char* base = static_cast<const char*>(t->data());
    if (t->device() == Device::CUDA) {
      host.resize(t->span_bytes());
      cuda::copy_to_host(host.data(), t->data(), host.size(), nullptr);
      base = host.data();
    }
    DType out_dtype = t->dtype == DType::I32 ? DType::I32 : DType::F32;
    Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, size_t(n) * 4);
    for (int64_t r = 0; r < rows; r++)
      convert(base + size_t(r * t->ld) * esz, t->dtype, static_cast<char*>(buf.Data()) + size_t(r * cols) * 4, out_dtype, cols);
    if (out_dtype == DType::I32) return Napi::Int32Array::New(env, size_t(n), buf, 0);
    return Napi::Float32Array::New(env, size_t(n), buf, 0);
  });
}

Napi::Value TensorWrap::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_idle(env, "write");
  auto& t = get(env);
  Source s = source_of(env, info[0], t->dtype);
  if (s.count != t->numel())
    throw Napi::RangeError::New(env, "write: the array has " + std::to_string(s.count) + " elements but the tensor " + t->describe() + " holds " + std::to_string(t->numel()));
  guard(env, [&] { fill_tensor(*t, s.data, s.dtype); });
  return info.This();
}

// rows(start, end): slice of the first dimension (a view sharing memory).
Napi::Value TensorWrap::Rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& t = get(env);
  if (t->shape.empty()) throw Napi::TypeError::New(env, "rows(): a scalar tensor has no rows");
  int64_t n0 = t->shape[0];
  int64_t start = info[0].As<Napi::Number>().Int64Value();
  int64_t end = info.Length() > 1 && !info[1].IsUndefined() ? info[1].As<Napi::Number>().Int64Value() : n0;
  if (start < 0 || end > n0 || start > end)
    throw Napi::RangeError::New(env, "rows(" + std::to_string(start) + ", " + std::to_string(end) + ") is out of range for " + t->describe());
  auto v = std::make_shared<Tensor>(*t);
  // One step along dim 0 spans (rows per dim-0 index) rows of ld elements.
  int64_t rows_per = t->shape.size() == 1 ? 0 : t->rows() / std::max<int64_t>(n0, 1);
  int64_t step_elems = t->shape.size() == 1 ? 1 : rows_per * t->ld;
  v->offset += size_t(start * step_elems) * dtype_size(t->dtype);
  v->shape[0] = end - start;
  if (v->shape.size() == 1) v->ld = v->shape[0];
  return wrap_tensor(env, v, false);
}

// cols(start, end): slice of the last dimension; the view keeps the parent's row stride.
Napi::Value TensorWrap::Cols(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& t = get(env);
  if (t->shape.size() < 2) throw Napi::TypeError::New(env, "cols(): needs a tensor of at least 2 dimensions, got " + t->describe());
  int64_t nc = t->cols();
  int64_t start = info[0].As<Napi::Number>().Int64Value();
  int64_t end = info.Length() > 1 && !info[1].IsUndefined() ? info[1].As<Napi::Number>().Int64Value() : nc;
  if (start < 0 || end > nc || start > end)
    throw Napi::RangeError::New(env, "cols(" + std::to_string(start) + ", " + std::to_string(end) + ") is out of range for " + t->describe());
  auto v = std::make_shared<Tensor>(*t);
  v->offset += size_t(start) * dtype_size(t->dtype);
  v->shape.back() = end - start;
  return wrap_tensor(env, v, false);
}

Napi::Value TensorWrap::Reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& t = get(env);
  std::vector<int64_t> shape = guard(env, [&] { return parse_shape(info[0]); });
  int64_t n = 1;
  for (auto d : shape) n *= d;
  if (n != t->numel())
    throw Napi::RangeError::New(env, "reshape: " + shape_str(shape) + " does not have the " + std::to_string(t->numel()) + " elements of " + t->describe());
  if (!t->contiguous() && !(shape.size() >= 1 && shape.back() == t->cols()))
    throw Napi::TypeError::New(env, "reshape: a strided view can only change its leading dimensions, got " + t->describe());
  auto v = std::make_shared<Tensor>(*t);
  v->shape = shape;
  if (t->contiguous()) v->ld = v->cols();
  return wrap_tensor(env, v, false);
}

// tensor(data, shape, dtype = 'f32', device = 'cpu')
Napi::Value CreateFromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    std::vector<int64_t> shape = parse_shape(info[1]);
    DType dt = info.Length() > 2 && !info[2].IsUndefined() ? parse_dtype(info[2]) : DType::F32;
    Device dev = info.Length() > 3 && !info[3].IsUndefined() ? parse_device(info[3]) : Device::CPU;
    Source s = source_of(env, info[0], dt);
    auto t = Tensor::empty(shape, dt, dev);
    if (s.count != t->numel())
      throw Napi::RangeError::New(env, "tensor(): the array has " + std::to_string(s.count) + " elements but shape " + shape_str(shape) + " needs " + std::to_string(t->numel()));
    fill_tensor(*t, s.data, s.dtype);
    return wrap_tensor(env, t, true);
  });
}

// empty(shape, dtype = 'f32', device = 'cpu', zero = true)
Napi::Value CreateEmpty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    std::vector<int64_t> shape = parse_shape(info[0]);
    DType dt = info.Length() > 1 && !info[1].IsUndefined() ? parse_dtype(info[1]) : DType::F32;
    Device dev = info.Length() > 2 && !info[2].IsUndefined() ? parse_device(info[2]) : Device::CPU;
    bool zero = info.Length() <= 3 || info[3].IsUndefined() || info[3].ToBoolean().Value();
    auto t = Tensor::empty(shape, dt, dev);
    if (zero && t->storage->bytes) {
      if (dev == Device::CPU) {
        std::memset(t->data(), 0, t->storage->bytes);
      } else {
        // The legacy default stream does not order work on the (non-blocking) op streams:
        // wait here so no op can see the tensor before it is zero.
        cuda::device_memset(t->data(), 0, t->storage->bytes, nullptr);
        cuda::stream_synchronize(nullptr);
      }
    }
    return wrap_tensor(env, t, true);
  });
}

// fromFile(path, byteOffset, fileDtype, shape, dtype = fileDtype, device = 'cpu'):
// reads product(shape) elements of fileDtype at byteOffset, converting to dtype. The
// caller (the safetensors reader) has validated the header; this still checks the file size.
Napi::Value CreateFromFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    std::string path = info[0].As<Napi::String>().Utf8Value();
    int64_t offset = info[1].As<Napi::Number>().Int64Value();
    DType fdt = parse_dtype(info[2]);
    std::vector<int64_t> shape = parse_shape(info[3]);
    DType dt = info.Length() > 4 && !info[4].IsUndefined() ? parse_dtype(info[4]) : fdt;
    Device dev = info.Length() > 5 && !info[5].IsUndefined() ? parse_device(info[5]) : Device::CPU;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    size_t bytes = size_t(n) * dtype_size(fdt);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    struct FdCloser { int fd; ~FdCloser() { ::close(fd); } } closer{fd};
    struct stat st;
    if (::fstat(fd, &st) != 0) throw std::runtime_error("cannot stat " + path + ": " + std::strerror(errno));
    if (offset < 0 || int64_t(bytes) > int64_t(st.st_size) - offset)
      throw ArgError(path + " is truncated: a tensor needs bytes " + std::to_string(offset) + ".." + std::to_string(offset + int64_t(bytes)) + " but the file has " + std::to_string(st.st_size));
    auto t = Tensor::empty(shape, dt, dev);
    bool direct = dt == fdt && dev == Device::CPU;
    std::vector<char> staged(direct ? 0 : bytes);
    char* dst = direct ? static_cast<char*>(t->data()) : staged.data();
    size_t done = 0;
    while (done < bytes) {
      ssize_t r = ::pread(fd, dst + done, bytes - done, off_t(offset + int64_t(done)));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw std::runtime_error("read error in " + path + ": " + (r < 0 ? std::strerror(errno) : "unexpected end of file"));
      done += size_t(r);
    }
    if (!direct) fill_tensor(*t, staged.data(), fdt);
    return wrap_tensor(env, t, true);
  });
}

}  // namespace

DType parse_dtype(const Napi::Value& v) {
  DType d;
  if (!v.IsString() || !dtype_from_name(v.As<Napi::String>().Utf8Value(), &d))
    throw ArgError("dtype must be one of 'f32', 'f16', 'bf16', 'i32', got " + (v.IsString() ? "'" + v.As<Napi::String>().Utf8Value() + "'" : std::string("a non-string")));
  return d;
}

Device parse_device(const Napi::Value& v) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") {
#ifndef TAIPAN_WITH_CUDA
    throw ArgError("device 'cuda' is not available: this addon was built without CUDA");
#else
    // Checked once per process (query() creates a context on every device): with no driver or
    // no device, every CUDA tensor and stream is refused here with the reason, instead of
    // failing later inside some CUDA call.
    static const std::string unavailable = [] {
      cuda::Status st = cuda::query();
      return st.devices.empty() ? (st.reason.empty() ? std::string("no CUDA device found") : st.reason) : std::string();
    }();
    if (!unavailable.empty()) throw std::runtime_error("device 'cuda' is not available: " + unavailable);
#endif
    return Device::CUDA;
  }
  throw ArgError("device must be 'cpu' or 'cuda', got '" + s + "'");
}

std::vector<int64_t> parse_shape(const Napi::Value& v) {
  if (!v.IsArray()) throw ArgError("shape must be an array of non-negative integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> shape(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != double(int64_t(d)) || d > 9e15) throw ArgError("shape must be an array of non-negative integers");
    shape[i] = int64_t(d);
  }
  return shape;
}

Napi::Object wrap_tensor(Napi::Env env, std::shared_ptr<Tensor> t, bool owns_memory) {
  auto* holder = new std::shared_ptr<Tensor>(std::move(t));
  auto ext = Napi::External<std::shared_ptr<Tensor>>::New(env, holder, [](Napi::Env, std::shared_ptr<Tensor>* p) { delete p; });
  return classes(env).tensor.New({ext, Napi::Boolean::New(env, owns_memory)});
}

bool is_tensor(const Napi::Value& v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(classes(v.Env()).tensor.Value());
}

std::shared_ptr<Tensor> unwrap_tensor(const Napi::Value& v, const char* what) {
  if (!is_tensor(v)) throw ArgError(std::string(what) + " is not a Tensor");
  return TensorWrap::Unwrap(v.As<Napi::Object>())->get(v.Env());
}

namespace {

// cudaMemory(): the CUDA caching allocator's counters (see DeviceCacheStats in tensor.h).
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceCacheStats st = device_cache_stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("caching", st.caching);
  o.Set("inUseBytes", double(st.in_use_bytes));
  o.Set("cachedBytes", double(st.cached_bytes));
  o.Set("peakBytes", double(st.peak_bytes));
  o.Set("deviceMallocs", double(st.device_mallocs));
  o.Set("deviceFrees", double(st.device_frees));
  o.Set("hits", double(st.hits));
  o.Set("misses", double(st.misses));
  return o;
}

// cudaReleaseCache(): cudaFree every idle cached block; returns the bytes released.
Napi::Value CudaReleaseCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&] { return Napi::Number::New(env, double(device_cache_release())); });
}

}  // namespace

void init_tensor(Napi::Env env, Napi::Object exports) {
  TensorWrap::Init(env, exports);
  exports.Set("tensor", Napi::Function::New(env, CreateFromArray, "tensor"));
  exports.Set("empty", Napi::Function::New(env, CreateEmpty, "empty"));
  exports.Set("fromFile", Napi::Function::New(env, CreateFromFile, "fromFile"));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory, "cudaMemory"));
  exports.Set("cudaReleaseCache", Napi::Function::New(env, CudaReleaseCache, "cudaReleaseCache"));
}

}  // namespace taipan::js
