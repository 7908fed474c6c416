// Full causal attention of a chunk over each sequence's KV cache (the Transformer++ baseline,
// MODEL.md section 7), and kv_append, which then writes the chunk's keys and values into the
// caches. q, k, v and out are bf16 activations; the caches are fp32 (as the model creates
// them) or bf16; scores, softmax and accumulation are fp32.
//
// Work split of attention. A query "row" is a (chunk token t, query head h) pair. The query
// heads of one key/value head g (GQA: h / group == g) read the same keys, so a block takes
// the rows of one sequence b and one KV head g, ordered t-major (row = t*group + j for head
// g*group + j), in tiles of 4 rows per warp and up to 4 warps: grid = (tiles * splits, Hkv,
// B). The block streams its keys in blocks of 32 -- cache rows 0..start-1, then the chunk's
// own rows (not in the cache yet: kv_append runs after) -- converting each to fp32 into
// shared memory once for all its rows, so a key block is read from memory once per tile and
// KV head, not once per query head. Per key block, each warp:
//   1. scores: lane j takes key j of the block, dot products with the warp's 4 query rows
//      (queries pre-scaled by 1/sqrt(hd) in shared memory, read as broadcasts; the key tile
//      padded to an odd row stride so the 32 lanes hit 32 banks);
//   2. online softmax (FlashAttention-2 style): the causal mask (key <= start + t), the
//      block max by a warp reduction, rescaling of the running sum and context when the max
//      grows, p = exp(s - max) into shared memory;
//   3. context: lane c owns output columns c, c+32, ... (NC = ceil(hd/32) registers per row)
//      and adds p_j * v_j over the block's keys.
// No tensor cores: the fp32 caches would need converting anyway, and this keeps every step
// exact fp32 like the CPU op (csrc/cpu/attention.cpp, which uses the same online softmax).
//
// Decode (L = 1) has few rows per (sequence, KV head): blocks shrink to one warp (rows =
// group) and, when the batch gives too few blocks for the device, the keys are split: `splits`
// blocks per tile each take a contiguous range of the tile's keys and write their unnormalised
// context with its running max and sum to a workspace; a second kernel merges the splits
// (flash-decoding). The split count is chosen on the host from the caches' capacity (start
// is only known on the device): each split then takes ceil(keys / splits) keys of what is
// really there, and an empty split merges as zero. A long cache therefore runs on many SMs.
//
// start is device data written after the op was planned, so the kernels check that each
// sequence's chunk fits its cache (0 <= start, start + L <= capacity) and never read or write
// outside it: attention writes NaN into the out rows of a sequence that does not fit, and
// kv_append leaves its cache untouched (the CPU op throws; a kernel cannot, and the model
// always grows its caches before the chunk).
//
// kv_append: one block per chunk row (grid-stride), threads over the row's columns.
// Flags: see the comment at the top of runtime.cu.
#include <cmath>

#include "common.cuh"
#include "kernels.h"

namespace taipan::cuda {
namespace {

constexpr int kKeys = 32;        // keys per block of the key loop: one per lane for the scores
constexpr int kRowsPerWarp = 4;  // (token, query head) rows per warp
constexpr int kMaxWarps = 4;
constexpr int kMaxRows = kRowsPerWarp * kMaxWarps;
constexpr int64_t kMinKeysPerSplit = 128;
constexpr int64_t kMaxSplits = 64;
constexpr int kCombineThreads = 64;
constexpr int kAppendThreads = 128;
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr uint16_t kBf16NaN = 0x7fc0;

struct AttnParams {
  int64_t L, Hq, group, hd, HKV;  // HKV = Hkv * hd, a cache row
  const uint16_t *q, *k, *v;
  int64_t ldq, ldk, ldv;
  const int32_t* start;
  void* const* kc;
  void* const* vc;
  const int64_t* capacity;
  uint16_t* out;
  int64_t ldo;
  float scale;
  int rows;    // rows per block: kRowsPerWarp * warps
  int splits;  // blocks per tile along the keys
  float* part_acc;  // splits > 1: [B*L*Hq*splits, hd] unnormalised contexts
  float* part_ml;   // splits > 1: [B*L*Hq*splits, 2] running max and sum
};

// ---- Small helpers --------------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(uint16_t v) { return bf16_to_float(v); }
__device__ __forceinline__ void store_bf16_as(float* p, uint16_t v) { *p = bf16_to_float(v); }
__device__ __forceinline__ void store_bf16_as(uint16_t* p, uint16_t v) { *p = v; }

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The chunk lands inside the sequence's cache.
__device__ __forceinline__ bool fits(int64_t start, int64_t L, int64_t capacity) {
  return start >= 0 && start + L <= capacity;
}

// Row stride of the key tile in shared memory: odd, so lane j's row starts at bank j.
__host__ __device__ __forceinline__ int64_t key_stride(int64_t hd) { return hd | 1; }

// Shared memory: Q [rows][hd] | K [kKeys][key_stride] | V [kKeys][hd] | P [rows][kKeys].
__host__ __device__ __forceinline__ size_t smem_floats(int64_t rows, int64_t hd) {
  return size_t(rows * hd + kKeys * key_stride(hd) + kKeys * hd + rows * kKeys);
}

// ---- The attention kernel's steps -----------------------------------------------------------

// The tile's query rows, scaled, into Qs (rows past the tile are zeros).
__device__ void load_queries(const AttnParams& p, int64_t b, int64_t g, int64_t r0, int64_t nrows,
                             float* Qs) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  for (int r = warp; r < p.rows; r += nwarps) {
    float* qd = Qs + r * p.hd;
    if (r >= nrows) {
      for (int64_t c = lane; c < p.hd; c += 32) qd[c] = 0.0f;
      continue;
    }
    const int64_t row = r0 + r, t = row / p.group, h = g * p.group + row % p.group;
    const uint16_t* qs = p.q + (b * p.L + t) * p.ldq + h * p.hd;
    for (int64_t c = lane; c < p.hd; c += 32) qd[c] = bf16_to_float(qs[c]) * p.scale;
  }
}

// Keys and values kb .. kb+n-1 of sequence b, KV head g, as fp32 into Ks / Vs: key j < start
// is cache row j, key start + u is chunk row b*L + u.
template <class CacheT>
__device__ void load_keys(const AttnParams& p, int64_t b, int64_t g, int64_t start, int64_t kb,
                          int n, float* Ks, float* Vs) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int64_t ks = key_stride(p.hd);
  for (int j = warp; j < n; j += nwarps) {
    const int64_t key = kb + j;
    float* kd = Ks + j * ks;
    float* vd = Vs + j * p.hd;
    if (key < start) {
      const CacheT* kr = static_cast<const CacheT*>(p.kc[b]) + key * p.HKV + g * p.hd;
      const CacheT* vr = static_cast<const CacheT*>(p.vc[b]) + key * p.HKV + g * p.hd;
      for (int64_t c = lane; c < p.hd; c += 32) kd[c] = to_f32(kr[c]), vd[c] = to_f32(vr[c]);
    } else {
      const int64_t row = b * p.L + (key - start);
      const uint16_t* kr = p.k + row * p.ldk + g * p.hd;
      const uint16_t* vr = p.v + row * p.ldv + g * p.hd;
      for (int64_t c = lane; c < p.hd; c += 32) kd[c] = bf16_to_float(kr[c]), vd[c] = bf16_to_float(vr[c]);
    }
  }
}

// Per-warp state of its kRowsPerWarp rows: running max m, this lane's share of the running
// sum l (all lanes rescale by the same factors, so the shares add up at the end), and the
// unnormalised context of the lane's columns.
template <int NC>
struct RowState {
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][NC];
};

// Steps 1-2 for one key block: scores of key kb + lane against the warp's rows, masked and
// folded into the online softmax; the probabilities go to Pw [kRowsPerWarp][kKeys].
template <int NC>
__device__ __forceinline__ void score_block(const float* Qw, const float* Ks, int64_t hd, int nr,
                                            int64_t key, int64_t k_end, const int64_t* limit,
                                            RowState<NC>& st, float* Pw) {
  const int lane = threadIdx.x & 31;
  const float* kr = Ks + lane * key_stride(hd);
  float s[kRowsPerWarp] = {};
  for (int64_t c = 0; c < hd; c++) {
    const float kv = kr[c];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; i++) s[i] = fmaf(Qw[i * hd + c], kv, s[i]);
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    if (i >= nr) break;  // warp-uniform
    const bool valid = key < k_end && key <= limit[i];
    const float si = valid ? s[i] : -INFINITY;
    const float bm = warp_max(si);
    if (bm > st.m[i]) {  // warp-uniform; never true while every key so far is masked
      const float corr = expf(st.m[i] - bm);  // 0 on the first keys (m = -inf)
      st.l[i] *= corr;
#pragma unroll
      for (int u = 0; u < NC; u++) st.acc[i][u] *= corr;
      st.m[i] = bm;
    }
    const float pr = valid ? expf(si - st.m[i]) : 0.0f;
    st.l[i] += pr;
    Pw[i * kKeys + lane] = pr;
  }
}

// Step 3: context += p_j v_j over the block's n keys, lane c on columns c + 32u.
template <int NC>
__device__ __forceinline__ void accumulate_block(const float* Vs, const float* Pw, int64_t hd,
                                                 int n, RowState<NC>& st) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < n; j++) {
    float pj[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; i++) pj[i] = Pw[i * kKeys + j];
    const float* vr = Vs + j * hd;
#pragma unroll
    for (int u = 0; u < NC; u++) {
      const int64_t c = lane + 32 * u;
      if (c >= hd) break;
      const float vv = vr[c];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; i++) st.acc[i][u] = fmaf(pj[i], vv, st.acc[i][u]);
    }
  }
}

// The warp's finished rows: normalised into out, or (split keys) partial results into the
// workspace for attention_combine_kernel.
template <int NC>
__device__ __forceinline__ void write_rows(const AttnParams& p, int64_t b, int64_t g,
                                           int64_t row0, int nr, int split, RowState<NC>& st) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    if (i >= nr) break;
    const float lsum = warp_sum(st.l[i]);
    const int64_t row = row0 + i, t = row / p.group, h = g * p.group + row % p.group;
    const int64_t orow = b * p.L + t;
    if (p.splits == 1) {
      const float inv = 1.0f / lsum;  // every query sees at least itself: lsum > 0
      uint16_t* o = p.out + orow * p.ldo + h * p.hd;
#pragma unroll
      for (int u = 0; u < NC; u++) {
        const int64_t c = lane + 32 * u;
        if (c < p.hd) o[c] = float_to_bf16(st.acc[i][u] * inv);
      }
    } else {
      const int64_t part = (orow * p.Hq + h) * p.splits + split;
      float* pa = p.part_acc + part * p.hd;
#pragma unroll
      for (int u = 0; u < NC; u++) {
        const int64_t c = lane + 32 * u;
        if (c < p.hd) pa[c] = st.acc[i][u];
      }
      if (lane == 0) p.part_ml[2 * part] = st.m[i], p.part_ml[2 * part + 1] = lsum;
    }
  }
}

// A sequence that does not fit its cache: NaN in the tile's out rows.
__device__ void poison_rows(const AttnParams& p, int64_t b, int64_t g, int64_t r0, int64_t nrows) {
  for (int64_t e = threadIdx.x; e < nrows * p.hd; e += blockDim.x) {
    const int64_t row = r0 + e / p.hd, c = e % p.hd;
    const int64_t t = row / p.group, h = g * p.group + row % p.group;
    p.out[(b * p.L + t) * p.ldo + h * p.hd + c] = kBf16NaN;
  }
}

template <int NC, class CacheT>
__global__ void __launch_bounds__(kMaxWarps * 32) attention_kernel(AttnParams p) {
  TAIPAN_DYNAMIC_SMEM(smem);
  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int tile = int(blockIdx.x) / p.splits, split = int(blockIdx.x) % p.splits;
  const int64_t r0 = int64_t(tile) * p.rows;
  const int64_t nrows = min64(p.rows, p.L * p.group - r0);
  const int64_t start = p.start[b];
  if (!fits(start, p.L, p.capacity[b])) {
    if (p.splits == 1) poison_rows(p, b, g, r0, nrows);  // else the combine kernel does it
    return;
  }
  float* Qs = reinterpret_cast<float*>(smem);
  float* Ks = Qs + p.rows * p.hd;
  float* Vs = Ks + kKeys * key_stride(p.hd);
  float* Ps = Vs + kKeys * p.hd;
  load_queries(p, b, g, r0, nrows, Qs);

  // This warp's rows and how far each may look: keys 0 .. start + t.
  const int warp = threadIdx.x >> 5;
  const int nr = int(max64(0, min64(kRowsPerWarp, nrows - warp * kRowsPerWarp)));
  const int64_t row0 = r0 + warp * kRowsPerWarp;
  int64_t limit[kRowsPerWarp];
  RowState<NC> st;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    limit[i] = start + (row0 + i) / p.group;
    st.m[i] = -INFINITY;
    st.l[i] = 0.0f;
#pragma unroll
    for (int u = 0; u < NC; u++) st.acc[i][u] = 0.0f;
  }

  // The tile's keys (up to its last token's position), this split's share of them.
  const int64_t nk = start + (r0 + nrows - 1) / p.group + 1;
  const int64_t span = ceil_div(ceil_div(nk, p.splits), kKeys) * kKeys;
  const int64_t k_begin = split * span, k_end = min64(nk, k_begin + span);
  const float* Qw = Qs + warp * kRowsPerWarp * p.hd;
  float* Pw = Ps + warp * kRowsPerWarp * kKeys;
  for (int64_t kb = k_begin; kb < k_end; kb += kKeys) {
    const int n = int(min64(kKeys, k_end - kb));
    __syncthreads();  // the previous key block is consumed (and Qs written, the first time)
    load_keys<CacheT>(p, b, g, start, kb, n, Ks, Vs);
    __syncthreads();
    if (nr == 0) continue;
    score_block<NC>(Qw, Ks, p.hd, nr, kb + (threadIdx.x & 31), k_end, limit, st, Pw);
    __syncwarp();
    accumulate_block<NC>(Vs, Pw, p.hd, n, st);
  }
  write_rows<NC>(p, b, g, row0, nr, split, st);
}

// Merges the splits of one (chunk row, query head): blockIdx.x = row * Hq + h.
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(AttnParams p) {
  const int64_t rh = blockIdx.x, row = rh / p.Hq, h = rh % p.Hq, b = row / p.L;
  uint16_t* o = p.out + row * p.ldo + h * p.hd;
  if (!fits(p.start[b], p.L, p.capacity[b])) {
    for (int64_t c = threadIdx.x; c < p.hd; c += blockDim.x) o[c] = kBf16NaN;
    return;
  }
  const float* ml = p.part_ml + rh * p.splits * 2;
  const float* pa = p.part_acc + rh * p.splits * p.hd;
  float m = -INFINITY;
  for (int s = 0; s < p.splits; s++) m = fmaxf(m, ml[2 * s]);
  float den = 0.0f;
  for (int s = 0; s < p.splits; s++)
    if (ml[2 * s] > -INFINITY) den += ml[2 * s + 1] * expf(ml[2 * s] - m);
  const float inv = 1.0f / den;  // the split holding key 0 is never empty: den > 0
  for (int64_t c = threadIdx.x; c < p.hd; c += blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < p.splits; s++)
      if (ml[2 * s] > -INFINITY) sum += pa[s * p.hd + c] * expf(ml[2 * s] - m);
    o[c] = float_to_bf16(sum * inv);
  }
}

template <class CacheT>
__global__ void __launch_bounds__(kAppendThreads)
    kv_append_kernel(int64_t B, int64_t L, int64_t HD, const uint16_t* __restrict__ k,
                     int64_t ldk, const uint16_t* __restrict__ v, int64_t ldv,
                     const int32_t* start, KvCacheTable caches) {
  for (int64_t row = blockIdx.x; row < B * L; row += gridDim.x) {
    const int64_t b = row / L, t = row - b * L, s0 = start[b];
    if (!fits(s0, L, caches.capacity[b])) continue;
    CacheT* kd = static_cast<CacheT*>(caches.k[b]) + (s0 + t) * HD;
    CacheT* vd = static_cast<CacheT*>(caches.v[b]) + (s0 + t) * HD;
    const uint16_t* ks = k + row * ldk;
    const uint16_t* vs = v + row * ldv;
    for (int64_t c = threadIdx.x; c < HD; c += kAppendThreads) {
      store_bf16_as(kd + c, ks[c]);
      store_bf16_as(vd + c, vs[c]);
    }
  }
}

// ---- Launch configuration -------------------------------------------------------------------

struct AttnLaunch {
  int warps, rows;
  int64_t tiles, splits;
};

// Warps per block (fewer for decode-sized tiles), tiles per (sequence, KV head), and the key
// splits that fill the device when the batch alone gives too few blocks.
AttnLaunch plan_launch(const AttnDims& d, int64_t max_capacity) {
  AttnLaunch c;
  const int64_t rows_total = d.L * (d.Hq / d.Hkv);
  c.warps = int(std::min<int64_t>(kMaxWarps, ceil_div(std::min<int64_t>(rows_total, kMaxRows), kRowsPerWarp)));
  c.rows = c.warps * kRowsPerWarp;
  c.tiles = ceil_div(rows_total, c.rows);
  const int64_t blocks = d.B * d.Hkv * c.tiles, want = 4 * int64_t(current_sm_count());
  c.splits = 1;
  if (blocks < want) {
    c.splits = std::min({ceil_div(want, blocks), ceil_div(max_capacity, kMinKeysPerSplit), kMaxSplits});
    c.splits = std::max<int64_t>(c.splits, 1);
  }
  return c;
}

size_t split_bytes(const AttnDims& d) {  // workspace per split
  return size_t(d.B * d.L * d.Hq) * size_t(d.hd + 2) * sizeof(float);
}

// The largest instantiation for NC needs more than the default 48 KB of shared memory when
// hd > 128: raise its limit once per device.
template <int NC, class CacheT>
void allow_smem() {
  const size_t need = smem_floats(kMaxRows, 32 * NC) * sizeof(float);
  if (need > kDefaultSmem) raise_smem_limit<attention_kernel<NC, CacheT>>(int(need), "attention_kernel");
}

template <int NC, class CacheT>
void launch_attention(const AttnParams& p, dim3 grid, int threads, size_t smem, cudaStream_t s) {
  allow_smem<NC, CacheT>();
  attention_kernel<NC, CacheT><<<grid, threads, smem, s>>>(p);
  check_launch("attention_kernel");
}

template <class CacheT>
void launch_attention_for(const AttnParams& p, dim3 grid, int threads, size_t smem, cudaStream_t s) {
  const int64_t nc = ceil_div(p.hd, 32);
  if (nc <= 1) launch_attention<1, CacheT>(p, grid, threads, smem, s);
  else if (nc <= 2) launch_attention<2, CacheT>(p, grid, threads, smem, s);
  else if (nc <= 4) launch_attention<4, CacheT>(p, grid, threads, smem, s);
  else launch_attention<8, CacheT>(p, grid, threads, smem, s);
}

void check_dims(const char* fn, const AttnDims& d) {
  if (d.B < 0 || d.L < 0 || d.Hq < 1 || d.Hkv < 1 || d.Hq % d.Hkv != 0)
    throw_invalid(std::string(fn) + ": heads must be positive with Hq a multiple of Hkv");
  if (d.hd < 1 || d.hd > kAttnMaxHeadDim)
    throw_invalid(std::string(fn) + ": head_dim " + std::to_string(d.hd) + " is outside [1, " +
                  std::to_string(kAttnMaxHeadDim) + "]");
  if (d.B > 65535 || d.Hkv > 65535)
    throw_invalid(std::string(fn) + ": at most 65535 sequences and 65535 key/value heads");
}

void check_cache_dtype(const char* fn, DType dt) {
  if (dt != DType::F32 && dt != DType::BF16)
    throw_invalid(std::string(fn) + ": KV caches must be F32 or BF16");
}

}  // namespace

size_t attention_workspace_bytes(const AttnDims& d, int64_t max_capacity) {
  check_dims("attention_workspace_bytes", d);
  if (d.B == 0 || d.L == 0) return 0;
  const AttnLaunch c = plan_launch(d, max_capacity);
  return c.splits > 1 ? size_t(c.splits) * split_bytes(d) : 0;
}

void attention(const AttnDims& d, const uint16_t* q, int64_t ldq, const uint16_t* k, int64_t ldk,
               const uint16_t* v, int64_t ldv, const int32_t* start, const KvCacheTable& caches,
               int64_t max_capacity, uint16_t* out, int64_t ldo, void* workspace,
               size_t workspace_bytes, void* stream) {
  check_dims("attention", d);
  check_cache_dtype("attention", caches.dtype);
  if (d.B == 0 || d.L == 0) return;
  AttnLaunch c = plan_launch(d, max_capacity);
  // Split only as far as the workspace allows.
  c.splits = std::min<int64_t>(c.splits, workspace ? int64_t(workspace_bytes / split_bytes(d)) : 1);
  if (c.splits < 2) c.splits = 1;
  if (c.tiles * c.splits > 0x7fffffff) throw_invalid("attention: too many query rows for one launch");
  AttnParams p{};
  p.L = d.L, p.Hq = d.Hq, p.group = d.Hq / d.Hkv, p.hd = d.hd, p.HKV = d.Hkv * d.hd;
  p.q = q, p.k = k, p.v = v, p.ldq = ldq, p.ldk = ldk, p.ldv = ldv;
  p.start = start, p.kc = caches.k, p.vc = caches.v, p.capacity = caches.capacity;
  p.out = out, p.ldo = ldo;
  p.scale = 1.0f / std::sqrt(float(d.hd));  // as the CPU op computes it
  p.rows = c.rows, p.splits = int(c.splits);
  if (c.splits > 1) {
    p.part_acc = static_cast<float*>(workspace);
    p.part_ml = p.part_acc + d.B * d.L * d.Hq * c.splits * d.hd;
  }
  const dim3 grid{unsigned(c.tiles * c.splits), unsigned(d.Hkv), unsigned(d.B)};
  const size_t smem = smem_floats(c.rows, d.hd) * sizeof(float);
  cudaStream_t s = as_stream(stream);
  if (caches.dtype == DType::F32) launch_attention_for<float>(p, grid, 32 * c.warps, smem, s);
  else launch_attention_for<uint16_t>(p, grid, 32 * c.warps, smem, s);
  if (c.splits > 1) {
    const int64_t n = d.B * d.L * d.Hq;
    if (n > 0x7fffffff) throw_invalid("attention: too many query rows for the split merge");
    attention_combine_kernel<<<unsigned(n), kCombineThreads, 0, s>>>(p);
    check_launch("attention_combine_kernel");
  }
}

void kv_append(int64_t B, int64_t L, int64_t HD, const uint16_t* k, int64_t ldk,
               const uint16_t* v, int64_t ldv, const int32_t* start, const KvCacheTable& caches,
               void* stream) {
  check_cache_dtype("kv_append", caches.dtype);
  if (B <= 0 || L <= 0 || HD <= 0) return;
  const unsigned grid = grid_for(B * L, 1);
  cudaStream_t s = as_stream(stream);
  if (caches.dtype == DType::F32)
    kv_append_kernel<float><<<grid, kAppendThreads, 0, s>>>(B, L, HD, k, ldk, v, ldv, start, caches);
  else
    kv_append_kernel<uint16_t><<<grid, kAppendThreads, 0, s>>>(B, L, HD, k, ldk, v, ldv, start, caches);
  check_launch("kv_append_kernel");
}

}  // namespace taipan::cuda
