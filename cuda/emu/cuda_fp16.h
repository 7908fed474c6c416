// CPU emulation stand-in for <cuda_fp16.h> (test builds only; see cuda_runtime.h here).
#pragma once
#include "cuda_runtime.h"
#include "../../csrc/dtype.h"
struct __half { uint16_t x; };
inline __half __ushort_as_half(uint16_t v) { return __half{v}; }
inline float __half2float(__half h) { return taipan::f16_to_f32(h.x); }
