// The Mamba-2 selective state space scan (SSD), MODEL.md section 5 and NOTES traps 1, 2, 4.
//
// Per sequence b and head h (group g = h / (H/G), contiguous heads share a group):
//   dt_t = softplus(dt_raw_t + dt_bias_h)   (identity above 20),   A_h = -exp(A_log_h)
//   S_t  = exp(dt_t*A_h) S_{t-1} + dt_t x_t B_t^T         S: [P, N] fp32
//   y_t  = S_t C_t + D_h x_t
//
// ssd_scan (prefill) is the chunked SSD algorithm, exactly the recurrence reorganised into
// chunks of Q = dims.chunk tokens. With cs_l = sum_{s<=l} dt_s*A (an fp32 cumsum that restarts
// at every chunk) and S0_c the state entering chunk c:
//   1. chunk_cumsum:  dt_l and cs_l for every token (padding tokens past L get dt = 0, dA = 0).
//   2. chunk_state:   T_c[p,n]  = sum_l exp(min(cs_{Q-1} - cs_l, 0)) dt_l x_l[p] B_l[n]
//                     (the chunk's own contribution to the state at its end).
//   3. state_passing: S0_0 = state_in,  S0_{c+1} = exp(cs_{Q-1}) S0_c + T_c;  the last one is
//                     state_out. T_c is overwritten in place by S0_c.
//   4. bmm_chunk:     CB_c[l,s] = C_l . B_s   (per group, shared by the group's heads; only
//                     tiles on or below the diagonal are computed).
//   5. chunk_scan:    y_l[p] = exp(cs_l) sum_n C_l[n] S0_c[p,n]
//                            + sum_{s<=l} CB_c[l,s] exp(min(cs_l - cs_s, 0)) dt_s x_s[p]
//                            + D x_l[p]
// Decays are always exp of a difference of in-chunk cumsums clamped at 0 (never a difference
// of global cumsums), so they stay in [0, 1] and cannot overflow (trap 2).
//
// Work split: steps 2, 4 and 5 are small matrix products per (sequence, chunk, head or group).
// Each uses the same fp32 SIMT tiling: a block of 256 threads computes a 64x64 output tile,
// 4x4 outputs per thread (rows ty + 16i, columns tx + 16j), stepping through the reduction
// dimension 32 at a time through two shared-memory tiles [32][65] (the +1 pad makes the
// transposed stores conflict-free). Inputs are bf16 in global memory and fp32 in shared
// memory; states and accumulators are fp32. Step 1 is one warp per (sequence, chunk, head):
// each lane scans a run of ceil(Q/32) tokens, then a warp shuffle scan joins the runs.
// Step 3 is one thread per state element looping over the chunks in order.
// Grids: x = output tiles, y = chunk*heads (or chunk*groups), z = sequence.
//
// ssd_step (decode, one token): one warp per (sequence, head, row p of the state); lanes stride
// over n, so each warp streams one contiguous state row (coalesced, memory bound), updates it
// in place and reduces y with warp shuffles. 4 warps per block; grid (ceil(P/4), H, B).
// Flags: see the comment at the top of runtime.cu.
#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

// ---- Shared tiling for the small fp32 matrix products -------------------------------------
constexpr int kT = 64;         // output tile is kT x kT
constexpr int kTK = 32;        // reduction step
constexpr int kLd = kT + 1;    // shared-memory row stride (padding)
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

// acc[i][j] += sum_kk sA[kk][ty + 16i] * sB[kk][tx + 16j]
__device__ __forceinline__ void tile_fma(const float* sA, const float* sB, float (&acc)[4][4],
                                         int tx, int ty) {
#pragma unroll 8
  for (int kk = 0; kk < kTK; kk++) {
    float a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; i++) a[i] = sA[kk * kLd + ty + 16 * i];
#pragma unroll
    for (int j = 0; j < 4; j++) b[j] = sB[kk * kLd + tx + 16 * j];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

__device__ __forceinline__ void zero(float (&acc)[4][4]) {
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
}

// Workspace layout (fp32 arrays, each 256-byte aligned).
struct Layout {
  int64_t NC;                 // chunks per sequence
  size_t dt, cs, st, cb, total;  // byte offsets
};

size_t align256(size_t v) { return (v + 255) / 256 * 256; }

Layout layout(const SsdDims& d) {
  Layout o;
  o.NC = ceil_div(d.L, d.chunk);
  const size_t f = sizeof(float);
  const size_t per_tok = size_t(d.B) * d.H * o.NC * d.chunk * f;   // [B, H, NC, Q]
  const size_t states = size_t(d.B) * o.NC * d.H * d.P * d.N * f;  // [B, NC, H, P, N]
  const size_t cb = size_t(d.B) * o.NC * d.G * d.chunk * d.chunk * f;  // [B, NC, G, Q, Q]
  o.dt = 0;
  o.cs = align256(o.dt + per_tok);
  o.st = align256(o.cs + per_tok);
  o.cb = align256(o.st + states);
  o.total = align256(o.cb + cb);
  return o;
}

// ---- 1. chunk cumsum -------------------------------------------------------------------------
// grid (ceil(H/4), NC, B), block 128: warp w handles head blockIdx.x*4 + w.
// dtw, cs: [B, H, NC, Q].
__global__ void chunk_cumsum_kernel(int64_t L, int64_t H, int64_t NC, int64_t Q,
                                    const uint16_t* __restrict__ dt_raw, int64_t lddt,
                                    const float* __restrict__ dt_bias,
                                    const float* __restrict__ A_log, float* __restrict__ dtw,
                                    float* __restrict__ cs) {
  const int lane = threadIdx.x & 31;
  const int64_t h = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  if (h >= H) return;  // whole warp leaves together
  const int64_t c = blockIdx.y, b = blockIdx.z;
  const float A = -expf(A_log[h]);
  const float bias = dt_bias[h];
  const int64_t per = (Q + 31) / 32;
  const int64_t l0 = lane * per;
  const int64_t l1 = l0 + per < Q ? l0 + per : Q;
  auto dt_at = [&](int64_t l) -> float {
    const int64_t t = c * Q + l;
    if (t >= L) return 0.0f;
    return softplus_f(bf16_to_float(dt_raw[(b * L + t) * lddt + h]) + bias);
  };
  float sum = 0.0f;
  for (int64_t l = l0; l < l1; l++) sum += dt_at(l) * A;
  float incl = sum;  // inclusive scan of the lane sums
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  float run = incl - sum;  // exclusive prefix: the cumsum before this lane's run
  const int64_t base = ((b * H + h) * NC + c) * Q;
  for (int64_t l = l0; l < l1; l++) {
    const float dt = dt_at(l);
    run += dt * A;
    dtw[base + l] = dt;
    cs[base + l] = run;
  }
}

// ---- 2. chunk state ----------------------------------------------------------------------------
// grid (ceil(P/64) * ceil(N/64), NC*H, B). Output T_c[p, n] into st[b, c, h].
__global__ void __launch_bounds__(kThreads)
chunk_state_kernel(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, int64_t NC, int64_t Q,
                   const uint16_t* __restrict__ x, int64_t ldx, const uint16_t* __restrict__ Bm,
                   int64_t ldb, const float* __restrict__ dtw, const float* __restrict__ cs,
                   float* __restrict__ st) {
  __shared__ float sX[kTK * kLd];  // [l][p]
  __shared__ float sB[kTK * kLd];  // [l][n], scaled by exp(cs_last - cs_l) dt_l
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t ptiles = ceil_div(P, kT);
  const int64_t p0 = (blockIdx.x % ptiles) * kT, n0 = (blockIdx.x / ptiles) * kT;
  const int64_t c = blockIdx.y / H, h = blockIdx.y % H, b = blockIdx.z;
  const int64_t g = h / (H / G);
  const int64_t cbase = ((b * H + h) * NC + c) * Q;
  const float cs_last = cs[cbase + Q - 1];

  float acc[4][4];
  zero(acc);
  for (int64_t k0 = 0; k0 < Q; k0 += kTK) {
    __syncthreads();  // the previous step's reads of sX/sB are done
    for (int e = tid; e < kTK * kT; e += kThreads) {
      const int kk = e / kT, j = e % kT;
      const int64_t l = k0 + kk, t = c * Q + l;
      const bool tok = l < Q && t < L;
      const int64_t p = p0 + j, n = n0 + j;
      const int64_t row = b * L + t;
      sX[kk * kLd + j] = tok && p < P ? bf16_to_float(x[row * ldx + h * P + p]) : 0.0f;
      float bv = 0.0f;
      if (tok && n < N) {
        const float scale = expf(fminf(cs_last - cs[cbase + l], 0.0f)) * dtw[cbase + l];
        bv = bf16_to_float(Bm[row * ldb + g * N + n]) * scale;
      }
      sB[kk * kLd + j] = bv;
    }
    __syncthreads();
    tile_fma(sX, sB, acc, tx, ty);
  }
  float* out = st + ((b * NC + c) * H + h) * P * N;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t p = p0 + ty + 16 * i;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t n = n0 + tx + 16 * j;
      if (p < P && n < N) out[p * N + n] = acc[i][j];
    }
  }
}

// ---- 3. state passing -------------------------------------------------------------------------
// grid (ceil(P*N/256), H, B), one thread per state element.
__global__ void state_passing_kernel(int64_t H, int64_t PN, int64_t NC, int64_t Q,
                                     const float* __restrict__ cs, float* __restrict__ st,
                                     const float* state_in, float* state_out) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= PN) return;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  float S = state_in ? state_in[(b * H + h) * PN + e] : 0.0f;
  for (int64_t c = 0; c < NC; c++) {
    const int64_t idx = ((b * NC + c) * H + h) * PN + e;
    const float contrib = st[idx];
    st[idx] = S;  // the state entering chunk c
    S = expf(cs[((b * H + h) * NC + c) * Q + Q - 1]) * S + contrib;
  }
  if (state_out) state_out[(b * H + h) * PN + e] = S;
}

// ---- 4. C . B^T per chunk and group -----------------------------------------------------------
// grid (ceil(Q/64)^2, NC*G, B). cb[b, c, g, l, s] = sum_n C_l[n] B_s[n] for tiles with s0 <= l0+63.
__global__ void __launch_bounds__(kThreads)
bmm_chunk_kernel(int64_t L, int64_t G, int64_t N, int64_t NC, int64_t Q,
                 const uint16_t* __restrict__ Cm, int64_t ldc, const uint16_t* __restrict__ Bm,
                 int64_t ldb, float* __restrict__ cb) {
  __shared__ float sC[kTK * kLd];  // [n][l]
  __shared__ float sB[kTK * kLd];  // [n][s]
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t qt = ceil_div(Q, kT);
  const int64_t l0 = (blockIdx.x / qt) * kT, s0 = (blockIdx.x % qt) * kT;
  if (s0 > l0 + kT - 1) return;  // entirely above the diagonal: never read
  const int64_t c = blockIdx.y / G, g = blockIdx.y % G, b = blockIdx.z;

  float acc[4][4];
  zero(acc);
  for (int64_t k0 = 0; k0 < N; k0 += kTK) {
    __syncthreads();
    // Transposed loads: a warp reads 32 consecutive n of one token row (coalesced) and stores
    // them down a column of the padded tile (conflict-free).
    for (int e = tid; e < kTK * kT; e += kThreads) {
      const int i = e / kTK, kk = e % kTK;
      const int64_t n = k0 + kk;
      const int64_t lt = c * Q + l0 + i, st_ = c * Q + s0 + i;
      const bool nok = n < N;
      sC[kk * kLd + i] = nok && l0 + i < Q && lt < L
                             ? bf16_to_float(Cm[(b * L + lt) * ldc + g * N + n]) : 0.0f;
      sB[kk * kLd + i] = nok && s0 + i < Q && st_ < L
                             ? bf16_to_float(Bm[(b * L + st_) * ldb + g * N + n]) : 0.0f;
    }
    __syncthreads();
    tile_fma(sC, sB, acc, tx, ty);
  }
  float* out = cb + ((b * NC + c) * G + g) * Q * Q;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t l = l0 + ty + 16 * i;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t s = s0 + tx + 16 * j;
      if (l < Q && s < Q) out[l * Q + s] = acc[i][j];
    }
  }
}

// ---- 5. chunk scan -----------------------------------------------------------------------------
// grid (ceil(Q/64) * ceil(P/64), NC*H, B). Output rows l (tokens), columns p.
__global__ void __launch_bounds__(kThreads)
chunk_scan_kernel(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, int64_t NC, int64_t Q,
                  const uint16_t* __restrict__ x, int64_t ldx, const uint16_t* __restrict__ Cm,
                  int64_t ldc, const float* __restrict__ D, const float* __restrict__ dtw,
                  const float* __restrict__ cs, const float* __restrict__ st,
                  const float* __restrict__ cb, bool has_init, uint16_t* __restrict__ y) {
  __shared__ float sA[kTK * kLd];
  __shared__ float sB[kTK * kLd];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t ptiles = ceil_div(P, kT);
  const int64_t l0 = (blockIdx.x / ptiles) * kT, p0 = (blockIdx.x % ptiles) * kT;
  const int64_t c = blockIdx.y / H, h = blockIdx.y % H, b = blockIdx.z;
  const int64_t g = h / (H / G);
  const int64_t cbase = ((b * H + h) * NC + c) * Q;

  float acc[4][4];
  zero(acc);
  // Part A: the state entering the chunk, seen from token l: exp(cs_l) * (C_l . S0[p, :]).
  // Skipped (uniformly per block) when that state is zero.
  if (has_init || c > 0) {
    const float* S0 = st + ((b * NC + c) * H + h) * P * N;  // [P, N]
    for (int64_t k0 = 0; k0 < N; k0 += kTK) {
      __syncthreads();
      for (int e = tid; e < kTK * kT; e += kThreads) {
        const int i = e / kTK, kk = e % kTK;
        const int64_t n = k0 + kk, l = l0 + i, t = c * Q + l, p = p0 + i;
        sA[kk * kLd + i] = n < N && l < Q && t < L
                               ? bf16_to_float(Cm[(b * L + t) * ldc + g * N + n]) : 0.0f;
        sB[kk * kLd + i] = n < N && p < P ? S0[p * N + n] : 0.0f;
      }
      __syncthreads();
      tile_fma(sA, sB, acc, tx, ty);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int64_t l = l0 + ty + 16 * i;
      const float decay = l < Q ? expf(cs[cbase + l]) : 0.0f;
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] *= decay;
    }
  }
  // Part B: inside the chunk, s <= l:  CB[l,s] exp(min(cs_l - cs_s, 0)) dt_s x_s[p].
  const float* CB = cb + ((b * NC + c) * G + g) * Q * Q;
  const int64_t s_end = l0 + kT < Q ? l0 + kT : Q;  // causal: no s beyond the tile's last l
  for (int64_t k0 = 0; k0 < s_end; k0 += kTK) {
    __syncthreads();
    for (int e = tid; e < kTK * kT; e += kThreads) {
      {  // sA[s][l] = M[l, s]: transposed load of CB rows
        const int i = e / kTK, kk = e % kTK;
        const int64_t l = l0 + i, s = k0 + kk;
        float m = 0.0f;
        if (l < Q && s <= l) {
          m = CB[l * Q + s] * expf(fminf(cs[cbase + l] - cs[cbase + s], 0.0f)) * dtw[cbase + s];
        }
        sA[kk * kLd + i] = m;
      }
      {  // sB[s][p] = x_s[p]
        const int kk = e / kT, j = e % kT;
        const int64_t s = k0 + kk, t = c * Q + s, p = p0 + j;
        sB[kk * kLd + j] = s < Q && t < L && p < P
                               ? bf16_to_float(x[(b * L + t) * ldx + h * P + p]) : 0.0f;
      }
    }
    __syncthreads();
    tile_fma(sA, sB, acc, tx, ty);
  }
  const float Dh = D[h];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t l = l0 + ty + 16 * i, t = c * Q + l;
    if (l >= Q || t >= L) continue;
    const int64_t row = b * L + t;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t p = p0 + tx + 16 * j;
      if (p >= P) continue;
      const float xv = bf16_to_float(x[row * ldx + h * P + p]);
      y[row * (H * P) + h * P + p] = float_to_bf16(acc[i][j] + Dh * xv);
    }
  }
}

// ---- Decode: one token -----------------------------------------------------------------------
// grid (ceil(P/4), H, B), block 128: warp w updates state row p = blockIdx.x*4 + w.
__global__ void ssd_step_kernel(int64_t H, int64_t P, int64_t G, int64_t N,
                                const uint16_t* __restrict__ x, int64_t ldx,
                                const uint16_t* __restrict__ Bm, int64_t ldb,
                                const uint16_t* __restrict__ Cm, int64_t ldc,
                                const uint16_t* __restrict__ dt_raw, int64_t lddt,
                                const float* __restrict__ dt_bias, const float* __restrict__ A_log,
                                const float* __restrict__ D, float* __restrict__ state,
                                float* const* __restrict__ states, uint16_t* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t p = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  if (p >= P) return;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t g = h / (H / G);
  const float dt = softplus_f(bf16_to_float(dt_raw[b * lddt + h]) + dt_bias[h]);
  const float dA = expf(dt * -expf(A_log[h]));
  const float xv = bf16_to_float(x[b * ldx + h * P + p]);
  const float dtx = dt * xv;
  // Per-sequence allocations (states table) or one [B, H, P, N] tensor.
  float* S = states ? states[b] + (h * P + p) * N : state + ((b * H + h) * P + p) * N;
  const uint16_t* Bg = Bm + b * ldb + g * N;
  const uint16_t* Cg = Cm + b * ldc + g * N;
  float acc = 0.0f;
#pragma unroll 4
  for (int64_t n = lane; n < N; n += 32) {
    const float s = fmaf(dA, S[n], dtx * bf16_to_float(Bg[n]));
    S[n] = s;
    acc = fmaf(s, bf16_to_float(Cg[n]), acc);
  }
  acc = warp_sum(acc);
  if (lane == 0) y[b * H * P + h * P + p] = float_to_bf16(acc + D[h] * xv);
}

void check_dims(const char* fn, const SsdDims& d) {
  if (d.B < 0 || d.L < 0 || d.H <= 0 || d.P <= 0 || d.G <= 0 || d.N <= 0)
    throw_invalid(std::string(fn) + ": dimensions must be positive");
  if (d.H % d.G != 0) throw_invalid(std::string(fn) + ": H must be a multiple of G");
  if (d.B > 65535) throw_invalid(std::string(fn) + ": at most 65535 sequences per call");
}

}  // namespace

size_t ssd_scan_workspace_bytes(const SsdDims& dims) {
  if (dims.chunk <= 0 || dims.L <= 0 || dims.B <= 0) return 0;
  return layout(dims).total;
}

void ssd_scan(const SsdDims& d, const uint16_t* x, int64_t ldx, const uint16_t* Bm, int64_t ldb,
              const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw, int64_t lddt,
              const float* dt_bias, const float* A_log, const float* D, const float* state_in,
              uint16_t* y, float* state_out, void* workspace, void* stream) {
  check_dims("ssd_scan", d);
  if (d.chunk < 1 || d.chunk > 1024) throw_invalid("ssd_scan: chunk must be in 1..1024");
  if (d.B == 0) return;
  cudaStream_t s = as_stream(stream);
  const int64_t PN = d.P * d.N;
  if (d.L == 0) {  // nothing to scan: the state passes through unchanged
    if (state_out && state_out != state_in) {
      const size_t bytes = size_t(d.B * d.H * PN) * sizeof(float);
      if (state_in)
        TAIPAN_CUDA_CHECK(cudaMemcpyAsync(state_out, state_in, bytes, cudaMemcpyDeviceToDevice, s),
                          "ssd_scan: state copy");
      else
        TAIPAN_CUDA_CHECK(cudaMemsetAsync(state_out, 0, bytes, s), "ssd_scan: state clear");
    }
    return;
  }
  if (!workspace) throw_invalid("ssd_scan: workspace is null (see ssd_scan_workspace_bytes)");
  const Layout lay = layout(d);
  const int64_t NC = lay.NC, Q = d.chunk;
  if (NC * d.H > 65535 || NC * d.G > 65535)
    throw_invalid("ssd_scan: too many chunks x heads for one call (split the sequence)");
  char* ws = static_cast<char*>(workspace);
  float* dtw = reinterpret_cast<float*>(ws + lay.dt);
  float* cs = reinterpret_cast<float*>(ws + lay.cs);
  float* st = reinterpret_cast<float*>(ws + lay.st);
  float* cb = reinterpret_cast<float*>(ws + lay.cb);
  const unsigned B = unsigned(d.B);

  chunk_cumsum_kernel<<<dim3{unsigned(ceil_div(d.H, 4)), unsigned(NC), B}, 128, 0, s>>>(
      d.L, d.H, NC, Q, dt_raw, lddt, dt_bias, A_log, dtw, cs);
  check_launch("chunk_cumsum_kernel");

  const unsigned pn_tiles = unsigned(ceil_div(d.P, kT) * ceil_div(d.N, kT));
  chunk_state_kernel<<<dim3{pn_tiles, unsigned(NC * d.H), B}, kThreads, 0, s>>>(
      d.L, d.H, d.P, d.G, d.N, NC, Q, x, ldx, Bm, ldb, dtw, cs, st);
  check_launch("chunk_state_kernel");

  state_passing_kernel<<<dim3{unsigned(ceil_div(PN, 256)), unsigned(d.H), B}, 256, 0, s>>>(
      d.H, PN, NC, Q, cs, st, state_in, state_out);
  check_launch("state_passing_kernel");

  const unsigned qt = unsigned(ceil_div(Q, kT));
  bmm_chunk_kernel<<<dim3{qt * qt, unsigned(NC * d.G), B}, kThreads, 0, s>>>(
      d.L, d.G, d.N, NC, Q, Cm, ldc, Bm, ldb, cb);
  check_launch("bmm_chunk_kernel");

  const unsigned lp_tiles = unsigned(ceil_div(Q, kT) * ceil_div(d.P, kT));
  chunk_scan_kernel<<<dim3{lp_tiles, unsigned(NC * d.H), B}, kThreads, 0, s>>>(
      d.L, d.H, d.P, d.G, d.N, NC, Q, x, ldx, Cm, ldc, D, dtw, cs, st, cb, state_in != nullptr,
      y);
  check_launch("chunk_scan_kernel");
}

static void ssd_step_impl(const char* fn, const SsdDims& d, const uint16_t* x, int64_t ldx,
                          const uint16_t* Bm, int64_t ldb, const uint16_t* Cm, int64_t ldc,
                          const uint16_t* dt_raw, int64_t lddt, const float* dt_bias,
                          const float* A_log, const float* D, float* state,
                          float* const* states, uint16_t* y, void* stream) {
  check_dims(fn, d);
  if (d.L != 1) throw_invalid(std::string(fn) + ": dims.L must be 1");
  if (d.H > 65535) throw_invalid(std::string(fn) + ": at most 65535 heads");
  if (d.B == 0) return;
  const dim3 grid{unsigned(ceil_div(d.P, 4)), unsigned(d.H), unsigned(d.B)};
  ssd_step_kernel<<<grid, 128, 0, as_stream(stream)>>>(d.H, d.P, d.G, d.N, x, ldx, Bm, ldb, Cm,
                                                      ldc, dt_raw, lddt, dt_bias, A_log, D,
                                                      state, states, y);
  check_launch("ssd_step_kernel");
}

void ssd_step(const SsdDims& d, const uint16_t* x, int64_t ldx, const uint16_t* Bm, int64_t ldb,
              const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw, int64_t lddt,
              const float* dt_bias, const float* A_log, const float* D, float* state, uint16_t* y,
              void* stream) {
  ssd_step_impl("ssd_step", d, x, ldx, Bm, ldb, Cm, ldc, dt_raw, lddt, dt_bias, A_log, D, state,
                nullptr, y, stream);
}

void ssd_step_seqs(const SsdDims& d, const uint16_t* x, int64_t ldx, const uint16_t* Bm,
                   int64_t ldb, const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw,
                   int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
                   float* const* states, uint16_t* y, void* stream) {
  if (d.B > 0 && !states) throw_invalid("ssd_step_seqs: the state table is null");
  ssd_step_impl("ssd_step_seqs", d, x, ldx, Bm, ldb, Cm, ldc, dt_raw, lddt, dt_bias, A_log, D,
                nullptr, states, y, stream);
}

}  // namespace taipan::cuda
