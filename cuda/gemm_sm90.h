// The Hopper GEMM kernel (gemm_sm90.cu) as gemm.cu's dispatch sees it. nvcc only.
#pragma once
#include <cstdint>

#include "gemm_out.cuh"

namespace taipan::cuda {

// Whether gemm_wgmma_kernel can run on the current device (cached per device; see
// gemm_wgmma_unavailable_reason in kernels.h for why not).
bool wgmma_gemm_available();
// Launches it for y = x W^T over M rows (the caller has checked availability and the 16-byte
// needs: K % 8 == 0, ldx % 8 == 0, x and W 16-byte aligned). Returns false, launching nothing,
// when the shape is beyond its grid or the driver refuses the tensor maps.
bool launch_wgmma(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                  const uint16_t* W, const Out& out, const Rows& rows, cudaStream_t s);

}  // namespace taipan::cuda
