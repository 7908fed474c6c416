// The Selective Attention Layer's own kernels (MODEL.md section 6) on the CUDA backend, the
// counterparts of csrc/cpu/sal.cpp: the gate with its feature pruning, the sliding-window
// attention of the selected tokens, the ring-buffer write and the mix. The projections, the
// rotary embedding and the MLP are the shared linear, rope and swiglu kernels.
//
// Selected rows travel compacted, as on the CPU: the gate writes the selected chunk rows'
// indices, increasing, and their number `count` to the device; every later kernel is launched
// for all M rows and reads count itself (rows at or past it return at once), so nothing goes
// back to the host and a decode step stays one CUDA graph.
//
// sal_gate, three launches:
//   1. one block per row (grid-stride): r += delta, x = r * rsqrt(mean(r^2) + eps) * norm, and
//      the two gate logits x . gw[c] from the fp32 x (before x is rounded to bf16, as the CPU
//      computes them); the decision s1 + b1 > s0 + b0 and sigmoid of the difference in double,
//      as the CPU does, so both backends pick the same rows unless the logits nearly tie;
//   2. one block of 1024 threads compacts the flags into index/count in row order: per tile of
//      1024 rows a warp prefix sum (shuffles) plus the warps' totals through shared memory;
//   3. gathered[k] = x[index[k]] for k < count, one block per row.
//
// sal_attention: block (query k, head h), 4 warps. The query's window is the positions
// max(0, p - W + 1) .. p of its sequence; a key before the chunk comes from the ring buffer
// (fp32) when its slot still holds that position, a key inside the chunk from the chunk's k/v
// rows (bf16) unless kv = "selected" and the row was not selected. Warp w takes every 4th key:
// lanes split the head's columns (coalesced row reads), the dot product is a warp sum, and an
// online softmax keeps the running max, sum and context in registers (fp32); the 4 partial
// results are merged through shared memory at the end. A query with no usable key gets zeros,
// as on the CPU. When the selected queries times the heads give too few blocks to fill the
// device (decode: one query per sequence), the window is split over `splits` blocks
// (flash-decoding, as attention.cu does): each split writes its unnormalised context with its
// max and sum to a workspace and sal_attention_combine_kernel merges them. Otherwise one key
// at a time per warp and no key tiles in shared memory; not yet measured on a GPU.
//
// sal_kv_write: one block per (sequence, one of its last min(L, W) tokens), threads over the
// columns: k and v widened to fp32 into slot p % W, and the slot's position; an unselected
// token under kv = "selected" empties its slot (position -1) instead.
//
// sal_mix: one block per selected row k < count, threads over the columns of chunk row
// index[k]: r = (1 - a) r + a o (mix "residual") or r += (1 - a) x + a o ("normalized").
// Flags: see the comment at the top of runtime.cu.
#include <algorithm>
#include <cmath>
#include <string>

#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

constexpr int kGateThreads = 256;
constexpr int kCompactThreads = 1024;
constexpr int kRowThreads = 128;  // gather, kv_write, mix: threads over a row's columns
constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = 32 * kAttnWarps;
constexpr int kAttnPerLane = int(kSalMaxHeadDim / 32);  // head columns per lane
constexpr int64_t kMaxGridY = 65535;
// Window splits: at least this many keys per split, and at most this many splits.
constexpr int64_t kMinKeysPerSplit = 64;
constexpr int64_t kMaxSplits = 64;

// ---- Gate ---------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kGateThreads)
    sal_gate_kernel(int64_t M, int64_t d, float* __restrict__ r, const uint16_t* __restrict__ delta,
                    const float* __restrict__ norm, const float* __restrict__ gw, const float* __restrict__ gb,
                    float eps, uint16_t* __restrict__ x, float* __restrict__ prob, int32_t* __restrict__ mask) {
  __shared__ float scratch[32];
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    float* row = r + m * d;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      float v = row[c];
      if (delta) {
        v += bf16_to_float(delta[m * d + c]);
        row[c] = v;
      }
      ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / float(d) + eps);
    float s0 = 0.0f, s1 = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float xv = row[c] * inv * norm[c];
      x[m * d + c] = float_to_bf16(xv);
      s0 += xv * gw[c];
      s1 += xv * gw[d + c];
    }
    s0 = block_sum(s0, scratch);
    s1 = block_sum(s1, scratch);
    if (threadIdx.x == 0) {
      const double diff = (double(s1) + double(gb[1])) - (double(s0) + double(gb[0]));
      mask[m] = diff > 0 ? 1 : 0;
      prob[m] = float(1.0 / (1.0 + exp(-diff)));
    }
  }
}

// One block: index[0 .. count) = the rows whose mask is set, increasing.
__global__ void __launch_bounds__(kCompactThreads)
    sal_compact_kernel(int64_t M, const int32_t* __restrict__ mask, int32_t* __restrict__ index,
                       int32_t* __restrict__ count) {
  __shared__ int32_t warp_total[kCompactThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t base = 0;
  for (int64_t m0 = 0; m0 < M; m0 += kCompactThreads) {
    const int64_t m = m0 + threadIdx.x;
    const int32_t flag = m < M && mask[m] != 0 ? 1 : 0;
    int32_t incl = flag;  // inclusive prefix sum within the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t up = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += up;
    }
    if (lane == 31) warp_total[warp] = incl;
    __syncthreads();
    int64_t before = 0, tile = 0;
    for (int w = 0; w < kCompactThreads / 32; w++) {
      if (w < warp) before += warp_total[w];
      tile += warp_total[w];
    }
    if (flag) index[base + before + incl - 1] = int32_t(m);
    base += tile;
    __syncthreads();  // warp_total is rewritten by the next tile
  }
  if (threadIdx.x == 0) *count = int32_t(base);
}

__global__ void __launch_bounds__(kRowThreads)
    sal_gather_kernel(int64_t M, int64_t d, const uint16_t* __restrict__ x, const int32_t* __restrict__ index,
                      const int32_t* __restrict__ count, uint16_t* __restrict__ gathered) {
  const int64_t n = rows_to_do(count, M);
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const int64_t i = index[k];
    if (i < 0 || i >= M) continue;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) gathered[k * d + c] = x[i * d + c];
  }
}

// ---- Attention ----------------------------------------------------------------------------------

struct SalAttnParams {
  SalAttnDims dims;
  const uint16_t* q;
  int64_t ldq;
  const int32_t *index, *count;
  const uint16_t* k;
  int64_t ldk;
  const uint16_t* v;
  int64_t ldv;
  const int32_t* mask;  // null: kv = "all"
  const int32_t* start;
  SalCacheTable caches;
  uint16_t* out;
  int64_t ldo;
  float scale;
  int splits;       // blocks per (query, head) along the window (gridDim.z)
  float* part_acc;  // splits > 1: [M*H*splits, hd] unnormalised contexts
  float* part_ml;   // splits > 1: [M*H*splits, 2] max (-inf: no usable key) and sum
};

__global__ void __launch_bounds__(kAttnThreads) sal_attention_kernel(SalAttnParams a) {
  __shared__ float part_max[kAttnWarps], part_sum[kAttnWarps];
  __shared__ float part_ctx[kAttnWarps][kSalMaxHeadDim];
  const SalAttnDims& dm = a.dims;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t h = blockIdx.y, HD = dm.H * dm.hd;
  const int64_t n = rows_to_do(a.count, dm.M);
  for (int64_t qk = blockIdx.x; qk < n; qk += gridDim.x) {
    const int64_t row = a.index[qk];
    if (row < 0 || row >= dm.M) continue;  // never from our gate; skipped rather than trusted
    const int64_t b = row / dm.L, s0 = a.start[b], p = s0 + row % dm.L;
    float qv[kAttnPerLane], ctx[kAttnPerLane];
    const uint16_t* qrow = a.q + qk * a.ldq + h * dm.hd;
#pragma unroll
    for (int i = 0; i < kAttnPerLane; i++) {
      const int64_t c = lane + 32 * i;
      qv[i] = c < dm.hd ? bf16_to_float(qrow[c]) * a.scale : 0.0f;
      ctx[i] = 0.0f;
    }
    float run_max = -INFINITY, run_sum = 0.0f;
    // The window lo..p, and this block's share of it (split blockIdx.z of a.splits).
    const int64_t lo = p - dm.W + 1 > 0 ? p - dm.W + 1 : 0;
    const int64_t span = ceil_div(p - lo + 1, a.splits);
    const int64_t j_begin = lo + int64_t(blockIdx.z) * span;
    const int64_t j_end = j_begin + span - 1 < p ? j_begin + span - 1 : p;
    for (int64_t j = j_begin + warp; j <= j_end; j += kAttnWarps) {
      const float* kc = nullptr;
      const float* vc = nullptr;
      const uint16_t* kb = nullptr;
      const uint16_t* vb = nullptr;
      if (j < s0) {
        const int64_t slot = j % dm.W;
        if (a.caches.pos[b][slot] != j) continue;  // overwritten, empty, or unselected
        kc = a.caches.k[b] + slot * HD + h * dm.hd;
        vc = a.caches.v[b] + slot * HD + h * dm.hd;
      } else {
        const int64_t r = b * dm.L + (j - s0);
        if (a.mask && !a.mask[r]) continue;
        kb = a.k + r * a.ldk + h * dm.hd;
        vb = a.v + r * a.ldv + h * dm.hd;
      }
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kAttnPerLane; i++) {
        const int64_t c = lane + 32 * i;
        if (c < dm.hd) dot += qv[i] * (kc ? kc[c] : bf16_to_float(kb[c]));
      }
      const float s = warp_sum(dot);
      const float new_max = fmaxf(run_max, s);
      const float rescale = __expf(run_max - new_max);  // 0 for the first key
      const float w = __expf(s - new_max);
      run_sum = run_sum * rescale + w;
#pragma unroll
      for (int i = 0; i < kAttnPerLane; i++) {
        const int64_t c = lane + 32 * i;
        if (c < dm.hd) ctx[i] = ctx[i] * rescale + w * (vc ? vc[c] : bf16_to_float(vb[c]));
      }
      run_max = new_max;
    }
    if (lane == 0) part_max[warp] = run_max, part_sum[warp] = run_sum;
#pragma unroll
    for (int i = 0; i < kAttnPerLane; i++) {
      const int64_t c = lane + 32 * i;
      if (c < dm.hd) part_ctx[warp][c] = ctx[i];
    }
    __syncthreads();
    float top = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; w++) top = fmaxf(top, part_max[w]);
    float weight[kAttnWarps], total = 0.0f;  // each warp's share, rescaled to the common max
#pragma unroll
    for (int w = 0; w < kAttnWarps; w++) {
      weight[w] = part_sum[w] > 0.0f ? __expf(part_max[w] - top) : 0.0f;
      total += part_sum[w] * weight[w];
    }
    if (a.splits == 1) {
      const float inv = total > 0.0f ? 1.0f / total : 0.0f;  // no usable key: zeros
      uint16_t* orow = a.out + qk * a.ldo + h * dm.hd;
      for (int64_t c = threadIdx.x; c < dm.hd; c += blockDim.x) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < kAttnWarps; w++) o += part_ctx[w][c] * weight[w];
        orow[c] = float_to_bf16(o * inv);
      }
    } else {
      const int64_t part = (qk * dm.H + h) * a.splits + blockIdx.z;
      float* acc = a.part_acc + part * dm.hd;
      for (int64_t c = threadIdx.x; c < dm.hd; c += blockDim.x) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < kAttnWarps; w++) o += part_ctx[w][c] * weight[w];
        acc[c] = o;
      }
      if (threadIdx.x == 0) {
        a.part_ml[2 * part] = total > 0.0f ? top : -INFINITY;  // an empty split merges as nothing
        a.part_ml[2 * part + 1] = total;
      }
    }
    __syncthreads();  // the partial results are rewritten by the next query
  }
}

// Merges the window splits of each (selected query k < count, head blockIdx.y) into out;
// zeros when no split found a usable key.
__global__ void __launch_bounds__(kRowThreads) sal_attention_combine_kernel(SalAttnParams a) {
  const SalAttnDims& dm = a.dims;
  const int64_t h = blockIdx.y;
  const int64_t n = rows_to_do(a.count, dm.M);
  for (int64_t qk = blockIdx.x; qk < n; qk += gridDim.x) {
    const int64_t row = a.index[qk];
    if (row < 0 || row >= dm.M) continue;  // skipped by sal_attention_kernel too
    const int64_t part0 = (qk * dm.H + h) * a.splits;
    const float* ml = a.part_ml + 2 * part0;
    const float* acc = a.part_acc + part0 * dm.hd;
    float m = -INFINITY;
    for (int s = 0; s < a.splits; s++) m = fmaxf(m, ml[2 * s]);
    float den = 0.0f;
    for (int s = 0; s < a.splits; s++)
      if (ml[2 * s] > -INFINITY) den += ml[2 * s + 1] * __expf(ml[2 * s] - m);
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    uint16_t* orow = a.out + qk * a.ldo + h * dm.hd;
    for (int64_t c = threadIdx.x; c < dm.hd; c += blockDim.x) {
      float o = 0.0f;
      for (int s = 0; s < a.splits; s++)
        if (ml[2 * s] > -INFINITY) o += acc[s * dm.hd + c] * __expf(ml[2 * s] - m);
      orow[c] = float_to_bf16(o * inv);
    }
  }
}

// ---- Ring-buffer write and mix -----------------------------------------------------------------

__global__ void __launch_bounds__(kRowThreads)
    sal_kv_write_kernel(int64_t B, int64_t L, int64_t W, int64_t HD, int64_t t0, const uint16_t* __restrict__ k,
                        int64_t ldk, const uint16_t* __restrict__ v, int64_t ldv, const int32_t* __restrict__ mask,
                        const int32_t* __restrict__ start, SalCacheTable caches) {
  const int64_t nt = L - t0;
  for (int64_t it = blockIdx.x; it < B * nt; it += gridDim.x) {
    const int64_t b = it / nt, t = t0 + it % nt, row = b * L + t;
    const int64_t p = int64_t(start[b]) + t;
    if (p < 0) continue;
    const int64_t slot = p % W;
    if (mask && !mask[row]) {
      if (threadIdx.x == 0) caches.pos[b][slot] = -1;
      continue;
    }
    float* kc = caches.k[b] + slot * HD;
    float* vc = caches.v[b] + slot * HD;
    for (int64_t c = threadIdx.x; c < HD; c += blockDim.x) {
      kc[c] = bf16_to_float(k[row * ldk + c]);
      vc[c] = bf16_to_float(v[row * ldv + c]);
    }
    if (threadIdx.x == 0) caches.pos[b][slot] = int32_t(p);
  }
}

__global__ void __launch_bounds__(kRowThreads)
    sal_mix_kernel(int64_t M, int64_t d, float* __restrict__ r, int64_t ldr, const uint16_t* __restrict__ o,
                   int64_t ldo, const int32_t* __restrict__ index, const int32_t* __restrict__ count,
                   const float* __restrict__ prob, const uint16_t* __restrict__ x, int64_t ldx, bool normalized) {
  const int64_t n = rows_to_do(count, M);
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const int64_t i = index[k];
    if (i < 0 || i >= M) continue;
    const float a = prob[i], keep = 1.0f - a;
    float* ri = r + i * ldr;
    const uint16_t* ok = o + k * ldo;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      if (normalized) ri[c] += keep * bf16_to_float(x[i * ldx + c]) + a * bf16_to_float(ok[c]);
      else ri[c] = keep * ri[c] + a * bf16_to_float(ok[c]);
    }
  }
}


void check_attn_dims(const char* fn, const SalAttnDims& d) {
  if (d.hd < 1 || d.hd > kSalMaxHeadDim)
    throw_invalid(std::string(fn) + ": head_dim " + std::to_string(d.hd) + " is outside [1, " +
                  std::to_string(kSalMaxHeadDim) + "]");
  if (d.H > kMaxGridY) throw_invalid(std::string(fn) + ": more than 65535 heads");
}

// Window splits that fill the device when the queries alone (M of them at most, times the
// heads) give too few blocks: about 4 blocks per SM, at least kMinKeysPerSplit keys each.
int64_t plan_splits(const SalAttnDims& d) {
  const int64_t blocks = d.M * d.H, want = 4 * int64_t(current_sm_count());
  if (blocks >= want) return 1;
  return std::max<int64_t>(1, std::min({ceil_div(want, blocks), ceil_div(d.W, kMinKeysPerSplit), kMaxSplits}));
}

size_t split_bytes(const SalAttnDims& d) {  // workspace per split
  return size_t(d.M * d.H) * size_t(d.hd + 2) * sizeof(float);
}
}  // namespace

void sal_gate(int64_t M, int64_t d, float* r, const uint16_t* delta, const float* norm, const float* gw,
              const float* gb, float eps, uint16_t* x, float* prob, int32_t* mask, int32_t* index, int32_t* count,
              uint16_t* gathered, void* stream) {
  if (M <= 0 || d <= 0) return;
  cudaStream_t s = as_stream(stream);
  const int threads = d >= kGateThreads ? kGateThreads : int(ceil_div(d, 32) * 32);
  sal_gate_kernel<<<grid_for(M, 1), threads, 0, s>>>(M, d, r, delta, norm, gw, gb, eps, x, prob, mask);
  check_launch("sal_gate_kernel");
  sal_compact_kernel<<<1, kCompactThreads, 0, s>>>(M, mask, index, count);
  check_launch("sal_compact_kernel");
  sal_gather_kernel<<<grid_for(M, 1), kRowThreads, 0, s>>>(M, d, x, index, count, gathered);
  check_launch("sal_gather_kernel");
}

size_t sal_attention_workspace_bytes(const SalAttnDims& dims) {
  if (dims.M <= 0 || dims.H <= 0) return 0;
  check_attn_dims("sal_attention_workspace_bytes", dims);
  const int64_t splits = plan_splits(dims);
  return splits > 1 ? size_t(splits) * split_bytes(dims) : 0;
}

void sal_attention(const SalAttnDims& dims, const uint16_t* q, int64_t ldq, const int32_t* index,
                   const int32_t* count, const uint16_t* k, int64_t ldk, const uint16_t* v, int64_t ldv,
                   const int32_t* mask, const int32_t* start, const SalCacheTable& caches, uint16_t* out,
                   int64_t ldo, void* workspace, size_t workspace_bytes, void* stream) {
  if (dims.M <= 0 || dims.H <= 0) return;
  check_attn_dims("sal_attention", dims);
  // Split only as far as the workspace allows.
  int64_t splits = std::min<int64_t>(plan_splits(dims), workspace ? int64_t(workspace_bytes / split_bytes(dims)) : 1);
  if (splits < 2) splits = 1;
  SalAttnParams a{dims, q, ldq, index, count, k, ldk, v, ldv, mask, start, caches, out, ldo,
                  1.0f / std::sqrt(float(dims.hd)), int(splits), nullptr, nullptr};
  if (splits > 1) {
    a.part_acc = static_cast<float*>(workspace);
    a.part_ml = a.part_acc + dims.M * dims.H * splits * dims.hd;
  }
  cudaStream_t s = as_stream(stream);
  const dim3 grid{grid_for(dims.M, 1), unsigned(dims.H), unsigned(splits)};
  sal_attention_kernel<<<grid, kAttnThreads, 0, s>>>(a);
  check_launch("sal_attention_kernel");
  if (splits > 1) {
    sal_attention_combine_kernel<<<dim3{grid_for(dims.M, 1), unsigned(dims.H)}, kRowThreads, 0, s>>>(a);
    check_launch("sal_attention_combine_kernel");
  }
}

void sal_kv_write(int64_t B, int64_t L, int64_t W, int64_t HD, const uint16_t* k, int64_t ldk, const uint16_t* v,
                  int64_t ldv, const int32_t* mask, const int32_t* start, const SalCacheTable& caches, void* stream) {
  if (B <= 0 || L <= 0 || W <= 0 || HD <= 0) return;
  const int64_t t0 = L > W ? L - W : 0;  // only the last W tokens can reach a later window
  sal_kv_write_kernel<<<grid_for(B * (L - t0), 1), kRowThreads, 0, as_stream(stream)>>>(B, L, W, HD, t0, k, ldk, v, ldv,
                                                                                       mask, start, caches);
  check_launch("sal_kv_write_kernel");
}

void sal_mix(int64_t M, int64_t d, float* r, int64_t ldr, const uint16_t* o, int64_t ldo, const int32_t* index,
             const int32_t* count, const float* prob, const uint16_t* x, int64_t ldx, bool normalized, void* stream) {
  if (M <= 0 || d <= 0) return;
  sal_mix_kernel<<<grid_for(M, 1), kRowThreads, 0, as_stream(stream)>>>(M, d, r, ldr, o, ldo, index, count, prob, x,
                                                                        ldx, normalized);
  check_launch("sal_mix_kernel");
}

}  // namespace taipan::cuda
