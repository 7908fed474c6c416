// Causal depthwise conv1d + SiLU over the x|B|C channels of the Mamba-2 mixer (MODEL.md
// section 5, NOTES trap 3):
//
//   out[b,t,c] = silu(bias[c] + sum_{k<K} w[c,k] * in(t-(K-1)+k, c))
//   in(s, c)   = x[(b*L+s)*ldx + c]          for s >= 0
//              = state_in[b, c, K-1+s]        for s < 0 (zero when state_in is null)
//
// w[c, K-1] multiplies the current token. The state [B, C, K-1] holds the last K-1 raw
// (pre-conv) inputs, oldest first, in fp32 (bf16 inputs are stored exactly).
//
// Work split (prefill): K is a template parameter (2..8) so the sliding window of the K-1
// previous inputs and the K weights live in registers. A thread owns one channel and a run of
// kTokens consecutive tokens: it loads the K-1 inputs before its run once, then reads each
// token's input once and shifts the window. Threads of a block are consecutive channels, so
// every load and store of a token row coalesces across the warp. grid = (ceil(C/128),
// ceil(L/kTokens), B). The final state is written by a second small kernel launched after the
// first, because state_out may alias state_in, which the first kernel reads.
// Decode (conv1d_update): one thread per (sequence, channel); reads the K-1 state entries and
// the new input, writes the output and the shifted state. conv1d_update_seqs is the same
// kernel reading each sequence's state address from a device table.
// Flags: see the comment at the top of runtime.cu.
#include <type_traits>

#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

constexpr int kThreads = 128;  // channels per block
constexpr int kTokens = 32;    // tokens per thread (prefill)

template <int K>
__global__ void conv1d_silu_kernel(int64_t L, int64_t C, const uint16_t* __restrict__ x,
                                   int64_t ldx, const float* __restrict__ w,
                                   const float* __restrict__ bias,
                                   const float* __restrict__ state_in, uint16_t* __restrict__ out) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.z;
  const int64_t t0 = int64_t(blockIdx.y) * kTokens;
  const int64_t t1 = t0 + kTokens < L ? t0 + kTokens : L;

  float wk[K];
#pragma unroll
  for (int k = 0; k < K; k++) wk[k] = w[c * K + k];
  const float bc = bias[c];

  // win[j] = in(t - (K-1) + j) for the next t to compute (initially t0).
  float win[K - 1];
#pragma unroll
  for (int j = 0; j < K - 1; j++) {
    const int64_t s = t0 - (K - 1) + j;
    if (s >= 0) win[j] = bf16_to_float(x[(b * L + s) * ldx + c]);
    else win[j] = state_in ? state_in[(b * C + c) * (K - 1) + (K - 1 + s)] : 0.0f;
  }
  for (int64_t t = t0; t < t1; t++) {
    const int64_t row = b * L + t;
    const float v = bf16_to_float(x[row * ldx + c]);
    float acc = bc + wk[K - 1] * v;
#pragma unroll
    for (int j = 0; j < K - 1; j++) acc += wk[j] * win[j];
    out[row * C + c] = float_to_bf16(silu_f(acc));
#pragma unroll
    for (int j = 0; j < K - 2; j++) win[j] = win[j + 1];
    win[K - 2] = v;
  }
}

// state_out[b, c, j] = in(L - (K-1) + j, c), j < K-1. Reads everything before writing, so
// state_out may alias state_in. grid = (ceil(C/128), B).
template <int K>
__global__ void conv1d_state_kernel(int64_t L, int64_t C, const uint16_t* __restrict__ x,
                                    int64_t ldx, const float* state_in, float* state_out) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.y;
  float v[K - 1];
#pragma unroll
  for (int j = 0; j < K - 1; j++) {
    const int64_t s = L - (K - 1) + j;
    if (s >= 0) v[j] = bf16_to_float(x[(b * L + s) * ldx + c]);
    else v[j] = state_in ? state_in[(b * C + c) * (K - 1) + (K - 1 + s)] : 0.0f;
  }
#pragma unroll
  for (int j = 0; j < K - 1; j++) state_out[(b * C + c) * (K - 1) + j] = v[j];
}

// One token: thread per (b, c). grid = (ceil(C/128), B). Sequence b's state is at
// states[b] when the table is given (per-sequence allocations), else inside `state`.
template <int K>
__global__ void conv1d_update_kernel(int64_t C, const uint16_t* __restrict__ x, int64_t ldx,
                                     const float* __restrict__ w, const float* __restrict__ bias,
                                     float* __restrict__ state, float* const* __restrict__ states,
                                     uint16_t* __restrict__ out) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.y;
  float* st = states ? states[b] + c * (K - 1) : state + (b * C + c) * (K - 1);
  float win[K - 1];
#pragma unroll
  for (int j = 0; j < K - 1; j++) win[j] = st[j];
  const float v = bf16_to_float(x[b * ldx + c]);
  float acc = bias[c] + w[c * K + K - 1] * v;
#pragma unroll
  for (int j = 0; j < K - 1; j++) acc += w[c * K + j] * win[j];
  out[b * C + c] = float_to_bf16(silu_f(acc));
#pragma unroll
  for (int j = 0; j < K - 2; j++) st[j] = win[j + 1];
  st[K - 2] = v;
}

// Calls f(std::integral_constant<int, K>) for the runtime K in 2..8.
template <class F>
void dispatch_k(const char* fn, int64_t K, F&& f) {
  switch (K) {
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    case 4: f(std::integral_constant<int, 4>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    case 6: f(std::integral_constant<int, 6>()); break;
    case 7: f(std::integral_constant<int, 7>()); break;
    case 8: f(std::integral_constant<int, 8>()); break;
    default:
      throw_invalid(std::string(fn) + ": d_conv = " + std::to_string(K) +
                    " is not supported (2..8)");
  }
}

}  // namespace

void conv1d_silu(int64_t B, int64_t L, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                 const float* w, const float* bias, const float* state_in, uint16_t* out,
                 float* state_out, void* stream) {
  if (B <= 0 || C <= 0) return;
  if (B > 65535) throw_invalid("conv1d_silu: at most 65535 sequences per call");
  if (ceil_div(L, kTokens) > 65535) throw_invalid("conv1d_silu: sequence too long for one call");
  cudaStream_t s = as_stream(stream);
  const unsigned cblocks = unsigned(ceil_div(C, kThreads));
  dispatch_k("conv1d_silu", K, [&](auto kc) {
    constexpr int KK = decltype(kc)::value;
    if (L > 0) {
      const dim3 grid{cblocks, unsigned(ceil_div(L, kTokens)), unsigned(B)};
      conv1d_silu_kernel<KK><<<grid, kThreads, 0, s>>>(L, C, x, ldx, w, bias, state_in, out);
      check_launch("conv1d_silu_kernel");
    }
    if (state_out) {
      const dim3 grid{cblocks, unsigned(B), 1};
      conv1d_state_kernel<KK><<<grid, kThreads, 0, s>>>(L, C, x, ldx, state_in, state_out);
      check_launch("conv1d_state_kernel");
    }
  });
}

static void conv1d_update_impl(const char* fn, int64_t B, int64_t C, int64_t K,
                               const uint16_t* x, int64_t ldx, const float* w, const float* bias,
                               float* state, float* const* states, uint16_t* out, void* stream) {
  if (B <= 0 || C <= 0) return;
  if (B > 65535) throw_invalid(std::string(fn) + ": at most 65535 sequences per call");
  cudaStream_t s = as_stream(stream);
  const dim3 grid{unsigned(ceil_div(C, kThreads)), unsigned(B), 1};
  dispatch_k(fn, K, [&](auto kc) {
    constexpr int KK = decltype(kc)::value;
    conv1d_update_kernel<KK><<<grid, kThreads, 0, s>>>(C, x, ldx, w, bias, state, states, out);
    check_launch("conv1d_update_kernel");
  });
}

void conv1d_update(int64_t B, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                   const float* w, const float* bias, float* state, uint16_t* out, void* stream) {
  conv1d_update_impl("conv1d_update", B, C, K, x, ldx, w, bias, state, nullptr, out, stream);
}

void conv1d_update_seqs(int64_t B, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                        const float* w, const float* bias, float* const* states, uint16_t* out,
                        void* stream) {
  if (B > 0 && !states) throw_invalid("conv1d_update_seqs: the state table is null");
  conv1d_update_impl("conv1d_update_seqs", B, C, K, x, ldx, w, bias, nullptr, states, out, stream);
}

}  // namespace taipan::cuda
