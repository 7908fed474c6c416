// Small helpers shared by the N-API glue files.
#pragma once
#include <napi.h>

#include <exception>
#include <string>

#include "tensor.h"

namespace taipan::js {

// Run fn and turn C++ exceptions into JavaScript ones: ArgError -> TypeError (the caller
// passed something wrong), anything else -> Error. Napi::Error passes through.
template <typename F>
auto guard(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const ArgError& e) {
    throw Napi::TypeError::New(env, e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// Class constructors of this addon, one set per JavaScript environment (the main thread and
// every worker thread that loads the addon get their own), kept as the env's instance data.
struct Classes {
  Napi::FunctionReference tensor;
  Napi::FunctionReference graph;
};
Classes& classes(Napi::Env env);

DType parse_dtype(const Napi::Value& v);
Device parse_device(const Napi::Value& v);
std::vector<int64_t> parse_shape(const Napi::Value& v);

// Tensor objects (napi_tensor.cpp).
Napi::Object wrap_tensor(Napi::Env env, std::shared_ptr<Tensor> t, bool owns_memory);
std::shared_ptr<Tensor> unwrap_tensor(const Napi::Value& v, const char* what);
bool is_tensor(const Napi::Value& v);

void init_tensor(Napi::Env env, Napi::Object exports);
void init_stream(Napi::Env env, Napi::Object exports);

}  // namespace taipan::js
