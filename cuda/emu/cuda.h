// Stand-in for the driver API header <cuda.h> in emulator builds: the tensor-map types and
// cuTensorMapEncodeTiled, which here records the map's parameters for the emulated bulk tensor
// copy (emu_sm90.h) instead of encoding them for a GPU. TEST BUILDS ONLY (see cuda_runtime.h).
#pragma once
#include <cstdint>
#include <cstring>

using cuuint32_t = uint32_t;
using cuuint64_t = uint64_t;
enum CUresult { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1 };
enum CUtensorMapDataType { CU_TENSOR_MAP_DATA_TYPE_UINT16 = 1, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9 };
enum CUtensorMapInterleave { CU_TENSOR_MAP_INTERLEAVE_NONE = 0 };
enum CUtensorMapSwizzle {
  CU_TENSOR_MAP_SWIZZLE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_32B,
  CU_TENSOR_MAP_SWIZZLE_64B,
  CU_TENSOR_MAP_SWIZZLE_128B,
};
enum CUtensorMapL2promotion {
  CU_TENSOR_MAP_L2_PROMOTION_NONE = 0,
  CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
  CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
};
enum CUtensorMapFloatOOBfill { CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0 };
struct alignas(64) CUtensorMap { cuuint64_t opaque[16]; };

namespace emu_tmap {
// Where the emulated encoder keeps a 2-D map's parameters in CUtensorMap::opaque.
enum Field { kBase, kDim0, kDim1, kStride1, kBox0, kBox1, kElemBytes, kSwizzle, kMagic };
constexpr cuuint64_t kMagicValue = 0x7a1b0a2dull;
}  // namespace emu_tmap

// The checks of the real encoder that the kernels rely on (rank 2, 16-byte aligned base and
// row stride, box <= 256 per dimension and, with the 128-byte swizzle, an inner box of at most
// 128 bytes), then the parameters recorded as they are.
inline CUresult cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank,
                                       void* base, const cuuint64_t* dims, const cuuint64_t* strides,
                                       const cuuint32_t* box, const cuuint32_t* elem_strides,
                                       CUtensorMapInterleave, CUtensorMapSwizzle swizzle,
                                       CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  using namespace emu_tmap;
  const cuuint64_t elem = (type == CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 || type == CU_TENSOR_MAP_DATA_TYPE_UINT16) ? 2 : 0;
  if (!map || rank != 2 || elem == 0 || reinterpret_cast<uintptr_t>(base) % 16 != 0 ||
      strides[0] % 16 != 0 || box[0] == 0 || box[1] == 0 || box[0] > 256 || box[1] > 256 ||
      elem_strides[0] != 1 || elem_strides[1] != 1 ||
      (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && box[0] * elem > 128))
    return CUDA_ERROR_INVALID_VALUE;
  std::memset(map, 0, sizeof *map);
  map->opaque[kBase] = reinterpret_cast<uintptr_t>(base);
  map->opaque[kDim0] = dims[0];
  map->opaque[kDim1] = dims[1];
  map->opaque[kStride1] = strides[0];
  map->opaque[kBox0] = box[0];
  map->opaque[kBox1] = box[1];
  map->opaque[kElemBytes] = elem;
  map->opaque[kSwizzle] = swizzle;
  map->opaque[kMagic] = kMagicValue;
  return CUDA_SUCCESS;
}

// <cudaTypedefs.h>'s name for the encoder's type (the real build gets it from the driver).
using PFN_cuTensorMapEncodeTiled_v12000 = decltype(&cuTensorMapEncodeTiled);
