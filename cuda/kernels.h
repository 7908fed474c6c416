// The CUDA backend's kernels: raw-pointer launch functions (plain C++, no CUDA types).
//
// They mirror csrc/cpu/kernels.h (same argument order and semantics, strides included) with
// the CUDA backend's storage types (MODEL.md section 10):
//   - activations between ops and the large weight matrices: bf16, stored as uint16_t;
//   - the residual stream r: fp32;
//   - small weights (norm weights, conv weight and bias, dt_bias, A_log, D): fp32, converted
//     at load as on the CPU backend;
//   - conv and SSM states: fp32; every reduction and accumulation: fp32.
// All pointers are device pointers on the current device; `stream` (a cudaStream_t, nullptr =
// legacy default stream) is last. Every launcher is asynchronous, never allocates and never
// synchronises, so a decode step can be captured into a CUDA graph. Sizes of 0 are no-ops.
// Launchers check only what they need to pick a code path (alignment, supported maxima) and
// throw CudaError for unsupported arguments; shapes and pointers are the caller's job (see the
// "Assumes" lines). Built without CUDA, every function throws (cuda/cuda_stub.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../csrc/dtype.h"

namespace taipan::cuda {

// ---- GEMM (gemm.cu) -------------------------------------------------------------------------
// y[m, n] (+)= sum_k x[m, k] * W[n, k] for m < M, n < N; fp32 accumulation.
// x: bf16, row m at x + m*ldx. W: bf16 [N, K] contiguous (nn.Linear layout).
// y: row m at y + m*ldy, of type ydt: DType::BF16 (uint16_t, rounded RNE) or DType::F32.
// accumulate = true (F32 only) adds to y instead of overwriting it (fuses a residual add).
// Paths: M <= kGemmSmallM uses a bandwidth-bound kernel (reads W once per 8 rows of x);
// larger M uses the tensor-core kernel (mma.sync m16n8k16 bf16, 128x128x32 tiles, cp.async
// 4-stage pipeline), or on H100 the Hopper kernel (gemm_wgmma below). All of them need
// K % 8 == 0, ldx % 8 == 0 and 16-byte aligned x and W; other shapes take a slow but general
// fallback kernel.
// Assumes: y does not overlap x or W; M, N < 2^31; K < 2^31.
constexpr int64_t kGemmSmallM = 16;
void gemm(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx, const uint16_t* W,
          void* y, int64_t ldy, DType ydt, bool accumulate, void* stream);
// The individual paths, for benchmarks and tests (same contract as gemm; each falls back to
// the general kernel when its alignment needs are not met). gemm_small_m accepts any M.
void gemm_tensor_core(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                      const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                      void* stream);
void gemm_small_m(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                  const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                  void* stream);
// The Hopper kernel (gemm_sm90.cu: bulk tensor copies, wgmma m64n256k16, warp-specialised),
// which gemm uses for M > kGemmSmallM when gemm_wgmma_unavailable_reason() is empty: the
// build has sm_90a code, the device is compute capability 9.0, the driver has
// cuTensorMapEncodeTiled and TAIPAN_CUDA_WGMMA is not "0". gemm_wgmma throws when not.
void gemm_wgmma(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate, void* stream);
std::string gemm_wgmma_unavailable_reason();
// gemm over the first n rows only, n = clamp(*count, 0, M) read by the kernels when they run
// (count: a DEVICE i32, e.g. how many rows an earlier op compacted to the top), so the host
// never reads it and the launch can be captured into a CUDA graph. Rows n..M-1 of y are not
// written. Results are bit for bit those of gemm(n, ...): for M > kGemmSmallM both paths are
// launched and each returns at once unless n is in its range (n <= kGemmSmallM: the small-M
// kernel, else the tensor-core kernel), the choice gemm makes from n.
void gemm_count(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                const int32_t* count, void* stream);
// The general kernel (no alignment needs; slow): a reference for tests.
void gemm_reference(int64_t M, int64_t N, int64_t K, const uint16_t* x, int64_t ldx,
                    const uint16_t* W, void* y, int64_t ldy, DType ydt, bool accumulate,
                    void* stream);

// ---- Embedding (embedding.cu) ---------------------------------------------------------------
// out[i, :] = E[ids[i], :] as fp32 (the residual stream). E: [rows, d] contiguous in edt
// (BF16, F16 or F32), rows >= vocab. ids: int32 on the device, checked by the kernel: an id
// outside [0, vocab) is clamped into it (nothing outside the table is read) and, when `error`
// (a DEVICE word) is not null, the lowest such position i is recorded there with atomicMin as
// embedding_error(i, ids[i]). The caller sets *error to kEmbeddingNoError beforehand and reads
// it after the stream has run the kernel: the check needs no host step, so the launch can be
// captured into a CUDA graph. out: [n, d] contiguous fp32.
// Assumes: 1 <= vocab <= 2^31 - 1, n < 2^31.
constexpr unsigned long long kEmbeddingNoError = ~0ull;
constexpr unsigned long long embedding_error(int64_t position, int32_t id) {
  return (static_cast<unsigned long long>(position) << 32) | static_cast<uint32_t>(id);
}
constexpr int64_t embedding_error_position(unsigned long long e) { return int64_t(e >> 32); }
constexpr int32_t embedding_error_id(unsigned long long e) { return int32_t(uint32_t(e & 0xffffffffu)); }
void embedding(const int32_t* ids, int64_t n, const void* E, DType edt, int64_t d, int64_t vocab,
               float* out, unsigned long long* error, void* stream);

// ---- Norms (norm.cu) ------------------------------------------------------------------------
// If delta != nullptr: r += delta (the residual add, in fp32; delta is bf16). Then
// out = bf16(r * rsqrt(mean(r^2) + eps) * w). r: fp32 [M, d] contiguous, updated in place;
// delta: bf16 [M, d] contiguous; w: fp32 [d]; out: bf16 [M, d] contiguous.
// Assumes: out does not alias r or delta.
void rmsnorm(int64_t M, int64_t d, float* r, const uint16_t* delta, const float* w, float eps,
             uint16_t* out, void* stream);
// Same norm without the residual update and with fp32 output (e.g. the SAL mix needs x in fp32):
// out = r * rsqrt(mean(r^2) + eps) * w; r, out fp32 [M, d] contiguous.
void rmsnorm_f32(int64_t M, int64_t d, const float* r, const float* w, float eps, float* out,
                 void* stream);
// out[m, :] = bf16(rms_g(y[m, :] * silu(z[m, :])) * w), RMS over each of G groups of d/G
// contiguous channels. y: bf16 [M, d] contiguous; z: bf16, row m at z + m*ldz; w: fp32 [d];
// out: bf16 [M, d] contiguous (may alias y).
// Assumes: d % G == 0.
void gated_rmsnorm(int64_t M, int64_t d, int64_t G, const uint16_t* y, const uint16_t* z,
                   int64_t ldz, const float* w, float eps, uint16_t* out, void* stream);

// ---- Causal depthwise conv1d + SiLU (conv.cu) -----------------------------------------------
// For each sequence b < B, token t < L, channel c < C:
//   out[b,t,c] = silu(bias[c] + sum_k w[c,k] * in(t - (K-1) + k, c))
// where in(s, c) = x[(b*L + s)*ldx + c] for s >= 0 and state_in[b, c, K-1+s] for s < 0
// (zeros when state_in is null). x: bf16; w: fp32 [C, K]; bias: fp32 [C];
// state_in/state_out: fp32 [B, C, K-1], the last K-1 raw inputs, oldest first (state_out may
// alias state_in; state_out may be null). out: bf16 [B, L, C] contiguous.
// Assumes: 2 <= K <= 8 (throws otherwise); out does not overlap x or the states.
void conv1d_silu(int64_t B, int64_t L, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                 const float* w, const float* bias, const float* state_in, uint16_t* out,
                 float* state_out, void* stream);
// One new token per sequence: x row b at x + b*ldx (bf16); state fp32 [B, C, K-1] updated in
// place; out bf16 [B, C] contiguous. Assumes: 2 <= K <= 8.
void conv1d_update(int64_t B, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                   const float* w, const float* bias, float* state, uint16_t* out, void* stream);
// The same for sequences whose states are separate allocations (one state per sequence, as
// the model keeps them): `states` is a DEVICE array of B device pointers, sequence b's state
// [C, K-1] fp32 at states[b]. One launch for the whole batch instead of one per sequence.
void conv1d_update_seqs(int64_t B, int64_t C, int64_t K, const uint16_t* x, int64_t ldx,
                        const float* w, const float* bias, float* const* states, uint16_t* out,
                        void* stream);

// ---- SSD: the Mamba-2 selective state space scan (ssd.cu) -----------------------------------
struct SsdDims {
  int64_t B;      // sequences
  int64_t L;      // tokens per sequence
  int64_t H;      // heads
  int64_t P;      // head dim
  int64_t G;      // groups (head h uses group h / (H / G))
  int64_t N;      // state dim
  int64_t chunk;  // chunk length for the chunked algorithm (256 by default)
};
// Token (b, t) is row b*L + t. x: bf16, H*P values at x + row*ldx (head-major h*P + p).
// Bm, Cm: bf16, G*N values at Bm + row*ldb, Cm + row*ldc (group-major g*N + n).
// dt_raw: bf16, H values at dt_raw + row*lddt. dt = softplus(dt_raw + dt_bias) (identity
// above 20), A = -exp(A_log); dt_bias, A_log, D: fp32 [H]. Recurrence per head h:
//   S_t = exp(dt_t*A) S_{t-1} + dt_t x_t B_t^T,   y_t = S_t C_t + D x_t.
// state_in/state_out: fp32 [B, H, P, N] (state_in null = zeros; state_out may alias
// state_in; state_out may be null). y: bf16 [B*L, H*P] contiguous.
// ssd_scan is the chunked SSD algorithm, five kernels: chunk cumsum (fp32 cumsum of dt*A
// restarting every chunk), chunk states, state passing, C.B^T per chunk, chunk scan (decays
// exp(min(cs_l - cs_s, 0))). It needs ssd_scan_workspace_bytes(dims) bytes of device
// workspace (256-byte aligned, contents ignored, not used after the call's kernels finish).
// Assumes: H % G == 0; 1 <= chunk <= 1024; B <= 65535; y does not overlap the inputs.
size_t ssd_scan_workspace_bytes(const SsdDims& dims);
void ssd_scan(const SsdDims& dims, const uint16_t* x, int64_t ldx, const uint16_t* Bm,
              int64_t ldb, const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw, int64_t lddt,
              const float* dt_bias, const float* A_log, const float* D, const float* state_in,
              uint16_t* y, float* state_out, void* workspace, void* stream);
// One token per sequence (dims.L must be 1): state fp32 [B, H, P, N] updated in place;
// y bf16 [B, H*P] contiguous. Assumes: H % G == 0; B <= 65535; H <= 65535.
void ssd_step(const SsdDims& dims, const uint16_t* x, int64_t ldx, const uint16_t* Bm,
              int64_t ldb, const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw, int64_t lddt,
              const float* dt_bias, const float* A_log, const float* D, float* state, uint16_t* y,
              void* stream);
// ssd_step for per-sequence state allocations: `states` is a DEVICE array of dims.B device
// pointers, sequence b's state [H, P, N] fp32 at states[b] (see conv1d_update_seqs).
void ssd_step_seqs(const SsdDims& dims, const uint16_t* x, int64_t ldx, const uint16_t* Bm,
                   int64_t ldb, const uint16_t* Cm, int64_t ldc, const uint16_t* dt_raw,
                   int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
                   float* const* states, uint16_t* y, void* stream);

// ---- Mamba-1 selective scan (mamba1.cu) -----------------------------------------------------
struct Mamba1Dims {
  int64_t B;   // sequences
  int64_t L;   // tokens per sequence (1 = decode)
  int64_t di;  // channels (d_inner)
  int64_t N;   // state size per channel
};
// Token (b, t) is row b*L + t. x, dt, z: bf16, di values at p + row*ld; Bm, Cm: bf16, N values
// at p + row*ld. dt_bias, D: fp32 [di]; A_log: fp32 [di, N]. Per channel c and state n:
//   delta = softplus(dt + dt_bias_c) (identity above 20),  A = -exp(A_log_c,n)
//   h_c,n = exp(delta*A) h_c,n + delta B_n x_c,   out_c = bf16((C.h_c + D_c x_c) silu(z_c))
// with h fp32. state: fp32 [B, di, N] updated in place, or null (start from zeros, final state
// discarded). out: bf16 [B*L, di] contiguous.
// Assumes: B <= 65535; 1 <= N <= kMamba1MaxState (N <= 16 is the fast path: the state in
// registers); out does not overlap the inputs or the state.
constexpr int64_t kMamba1MaxState = 256;
void mamba1_scan(const Mamba1Dims& dims, const uint16_t* x, int64_t ldx, const uint16_t* dt,
                 int64_t lddt, const uint16_t* Bm, int64_t ldb, const uint16_t* Cm, int64_t ldc,
                 const uint16_t* z, int64_t ldz, const float* dt_bias, const float* A_log,
                 const float* D, float* state, uint16_t* out, void* stream);
// The same for per-sequence state allocations: `states` is a DEVICE array of dims.B device
// pointers, sequence b's state [di, N] fp32 at states[b] (see conv1d_update_seqs).
void mamba1_scan_seqs(const Mamba1Dims& dims, const uint16_t* x, int64_t ldx, const uint16_t* dt,
                      int64_t lddt, const uint16_t* Bm, int64_t ldb, const uint16_t* Cm,
                      int64_t ldc, const uint16_t* z, int64_t ldz, const float* dt_bias,
                      const float* A_log, const float* D, float* const* states, uint16_t* out,
                      void* stream);

// ---- Rotary embedding and SwiGLU (rope.cu) ---------------------------------------------------
// rope: in place on rows r < n of x (bf16, row r at x + r*ldx, `cols` = heads*head_dim values),
// rotate-half convention, where n = clamp(*count, 0, R) when count (a DEVICE i32) is not null,
// else R. Row r is chunk row index[r] (index: DEVICE i32 [R], or null for r itself); a chunk
// row outside [0, B*L) is skipped. Its position is p = start[row / L] + row % L (start: DEVICE
// i32 [B]); for i < head_dim/2 the angle is p * freq[i] in double (freq: DEVICE double
// [head_dim/2], theta^(-2i/head_dim) computed by the caller), cos and sin are rounded to fp32
// and each head's pair (x_i, x_{i+half}) is rotated in fp32, as the CPU op does.
// Assumes: head_dim even, 2 <= head_dim <= kRopeMaxHeadDim, cols % head_dim == 0.
constexpr int64_t kRopeMaxHeadDim = 8192;
void rope(int64_t R, int64_t cols, int64_t head_dim, uint16_t* x, int64_t ldx,
          const int32_t* index, const int32_t* count, const int32_t* start, int64_t B, int64_t L,
          const double* freq, void* stream);
// swiglu: out[m, j] = bf16(up * silu(gate)), up = h[m, j], gate = h[m, F + j] (fp32 math), for
// rows m < n: n = clamp(*count, 0, M) when count (a DEVICE i32) is not null, else M; rows past
// n are not written. h: bf16, row m at h + m*ldh (2F values); out: bf16 [M, F] contiguous.
// The count is read by the kernel (no host step). Assumes: out does not overlap h.
void swiglu(int64_t M, int64_t F, const uint16_t* h, int64_t ldh, uint16_t* out,
            const int32_t* count, void* stream);

// ---- Causal attention over KV caches (attention.cu) -----------------------------------------
struct AttnDims {
  int64_t B;          // sequences
  int64_t L;          // new tokens per sequence (chunk row b*L + t is at position start[b] + t)
  int64_t Hq, Hkv;    // query and key/value heads; query head h reads key/value head h/(Hq/Hkv)
  int64_t hd;         // head dim
};
// The KV caches of a batch, all DEVICE arrays of B entries built by the caller: sequence b's
// key and value caches k[b], v[b] ([capacity[b], Hkv*hd] contiguous, row p = position p) in
// `dtype` (F32 or BF16), and capacity[b], the rows each holds.
struct KvCacheTable {
  void* const* k;
  void* const* v;
  const int64_t* capacity;
  DType dtype;
};
// attention: out[b*L + t, h*hd + c] = bf16(softmax over keys j <= start[b] + t of
// (q . k_j / sqrt(hd)) applied to v), where keys/values 0..start[b]-1 come from the caches and
// start[b] + u from chunk row b*L + u of k, v (the chunk is not in the caches yet: kv_append
// follows). q: bf16 rows at q + row*ldq (Hq*hd values); k, v: bf16 rows at ldk, ldv (Hkv*hd);
// out: bf16 rows at out + row*ldo; start: DEVICE i32 [B]. fp32 scores and online softmax.
// A sequence whose chunk does not fit its cache (start < 0 or start + L > capacity) gets NaN
// in all its out rows and nothing is read out of bounds (the CPU op throws instead; a kernel
// cannot). Long caches with few (sequence, head, query tile) blocks are split over the keys:
// that needs attention_workspace_bytes(dims, max_capacity) bytes of workspace (0 when no split
// is worth it; max_capacity = the largest capacity[b]); with a smaller workspace the launcher
// splits less. Assumes: Hq % Hkv == 0; 1 <= hd <= kAttnMaxHeadDim; B, Hkv <= 65535; out does
// not overlap q, k, v or the caches.
constexpr int64_t kAttnMaxHeadDim = 256;
size_t attention_workspace_bytes(const AttnDims& dims, int64_t max_capacity);
void attention(const AttnDims& dims, const uint16_t* q, int64_t ldq, const uint16_t* k,
               int64_t ldk, const uint16_t* v, int64_t ldv, const int32_t* start,
               const KvCacheTable& caches, int64_t max_capacity, uint16_t* out, int64_t ldo,
               void* workspace, size_t workspace_bytes, void* stream);
// kv_append: chunk row b*L + t of k, v (bf16, HD values at ldk, ldv) into cache row
// start[b] + t of sequence b (converted to the cache dtype; exact). A sequence whose chunk
// does not fit (start < 0 or start + L > capacity) is left untouched. Assumes: the caches do
// not overlap k or v.
void kv_append(int64_t B, int64_t L, int64_t HD, const uint16_t* k, int64_t ldk,
               const uint16_t* v, int64_t ldv, const int32_t* start, const KvCacheTable& caches,
               void* stream);

// ---- Selective Attention Layer (sal.cu) -----------------------------------------------------
// The counterparts of csrc/cpu/sal.cpp (MODEL.md section 6). Selected rows travel compacted:
// sal_gate writes their chunk rows, increasing, to index and their number to count (DEVICE
// i32), and the later launchers read count when they run (no host step, graph-capturable).

// sal_gate: for every row m < M: r += delta (bf16, when not null), x = bf16(r * rsqrt(mean(r^2)
// + eps) * norm), s_c = x . gw[c] (fp32 x), mask[m] = s_1 + gb[1] > s_0 + gb[0], prob[m] =
// sigmoid of that difference; then index[0..count) = the selected rows and gathered[k] =
// x[index[k]]. r, delta, x, gathered: [M, d] contiguous; gw: fp32 [2, d]; gb: fp32 [2].
// Assumes: x and gathered do not overlap r, delta or each other.
void sal_gate(int64_t M, int64_t d, float* r, const uint16_t* delta, const float* norm, const float* gw,
              const float* gb, float eps, uint16_t* x, float* prob, int32_t* mask, int32_t* index, int32_t* count,
              uint16_t* gathered, void* stream);

// Every sequence's ring buffers, DEVICE arrays of B entries built by the caller: k[b], v[b]
// fp32 [W, HD] (slot p % W holds position p) and pos[b] i32 [W] (the position a slot holds,
// -1 = none).
struct SalCacheTable {
  float* const* k;
  float* const* v;
  int32_t* const* pos;
};
struct SalAttnDims {
  int64_t M;   // chunk rows: B sequences of L tokens, row b*L + t at position start[b] + t
  int64_t B, L;
  int64_t W;   // window
  int64_t H, hd;
};
// sal_attention: for k < count, query row k of q (chunk row index[k], position p) attends, per
// head, over the positions max(0, p - W + 1) .. p: from the ring buffer for positions before
// start[b] (when the slot still holds them), else from chunk rows of k, v (only rows with
// mask set when mask is not null: kv = "selected"). out row k = bf16(softmax(q . k / sqrt(hd))
// v), zeros when no key is usable. q, k, v, out bf16 rows at their strides (H*hd values).
// When M*H blocks would not fill the device, the window is split over blocks: that needs
// sal_attention_workspace_bytes(dims) bytes of workspace (0 when no split is worth it); with
// a smaller workspace the launcher splits less. Assumes: 1 <= hd <= kSalMaxHeadDim;
// H <= 65535; out overlaps nothing else.
constexpr int64_t kSalMaxHeadDim = 256;
size_t sal_attention_workspace_bytes(const SalAttnDims& dims);
void sal_attention(const SalAttnDims& dims, const uint16_t* q, int64_t ldq, const int32_t* index,
                   const int32_t* count, const uint16_t* k, int64_t ldk, const uint16_t* v, int64_t ldv,
                   const int32_t* mask, const int32_t* start, const SalCacheTable& caches, uint16_t* out,
                   int64_t ldo, void* workspace, size_t workspace_bytes, void* stream);
// sal_kv_write (after sal_attention of the same chunk): each sequence's last min(L, W) chunk
// rows into slot p % W of its ring buffers (widened to fp32) with pos = p; a row whose mask is
// 0 (mask not null) sets pos = -1 instead. Rows at positions < 0 are skipped.
void sal_kv_write(int64_t B, int64_t L, int64_t W, int64_t HD, const uint16_t* k, int64_t ldk, const uint16_t* v,
                  int64_t ldv, const int32_t* mask, const int32_t* start, const SalCacheTable& caches, void* stream);
// sal_mix: for k < count, chunk row i = index[k] of r (fp32, row stride ldr), a = prob[i]:
// r_i = (1 - a) r_i + a o_k, or with `normalized` r_i += (1 - a) x_i + a o_k. o, x bf16.
void sal_mix(int64_t M, int64_t d, float* r, int64_t ldr, const uint16_t* o, int64_t ldo, const int32_t* index,
             const int32_t* count, const float* prob, const uint16_t* x, int64_t ldx, bool normalized, void* stream);

}  // namespace taipan::cuda
