// The Mamba-2 selective state space scan (SSD) on the CPU.
//
// Per head h (group g = h / (H/G)) the model defines the recurrence
//     S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T        S: [P, N]
//     y_t = S_t C_t + D x_t
// ssd_step runs it literally, one token per sequence (decode). ssd_scan (prefill) computes the
// same thing with the chunked SSD algorithm: the sequence is cut into chunks of Q tokens and,
// writing cs_l for the cumulative sum of dt*A inside a chunk (restarting at every chunk),
//     y_l = sum_{s<=l} (C_l . B_s) exp(cs_l - cs_s) dt_s x_s      1. intra-chunk (diagonal block)
//         + exp(cs_l) C_l . S_in                                   4. inter-chunk output
//     S_out = exp(cs_last) S_in                                    3. state passing
//           + sum_s exp(cs_last - cs_s) dt_s x_s B_s^T              2. chunk state
// Each step is a small dense matrix product, which the CPU runs at close to its peak FMA rate;
// the token-by-token recurrence instead streams the whole state through the cache per token.
//
// Layout of the work:
//  * Phase 1, parallel over (sequence, group, chunk): C B^T for the chunk, and B^T and C
//    packed contiguously, all shared by the heads of the group. Sequences are processed in
//    blocks, and long ones in windows of chunks, so this scratch stays bounded.
//  * Phase 2, chunk by chunk, parallel over (sequence, head): the four steps for that chunk.
//    The state carried between chunks is kept transposed ([N, P]) so that every product reads
//    its right-hand operand as contiguous rows.
//
// Precision: dt, the decays and all products are fp32, but the cumulative sums of dt*A are
// accumulated and kept in double, and every decay exponent cs_l - cs_s is formed in double
// before rounding to fp32 for exp(min(., 0)). With fp32 cumsums (as in mamba_ssm's kernels)
// the exponent carries an error of about an ulp of |cs|, which reaches hundreds within a
// chunk of 256: ~2e-4 relative error in y on realistic inputs, ~5e-3 with very large dt.
// This way y matches the recurrence to ~1e-5, for a few more instructions per exponential.
//
// All matrix products go through one routine, gemm(), whose AVX2 form is a register-blocked
// 6 x 16 FMA micro-kernel: c = beta*c + diag(row_scale) * A*B, where A is read by
// broadcasting single elements through arbitrary strides (so A needs no repacking, whichever
// way round it is stored) and B is row-major with a row length padded to a multiple of 8.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "kernels.h"
#include "scratch.h"
#include "ssm_math.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TAIPAN_SSD_X86 1
#endif

namespace taipan::cpu {
namespace {

// ---- Small helpers --------------------------------------------------------------------------

constexpr int64_t kMR = 6;  // rows of the micro-kernel tile (the decay matrix is built to match)

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Scratch memory for one call, uninitialised and 64-byte aligned: one block per calling
// thread, kept from call to call and grown when a call needs more. (Fresh pages cost a page
// fault each on first touch, a noticeable part of a short scan; blocks above 64 MiB are
// released after the call, the rest when the thread exits.)
class Arena {
 public:
  explicit Arena(size_t floats) { base_ = block_.get(floats, "ssd_scan"); }
  ~Arena() {
    if (block_.capacity() > (size_t(64) << 20)) block_.release();
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  // n values of T, 64-byte aligned (T is float or double).
  template <class T = float>
  T* take(int64_t n) {
    float* q = base_ + used_;
    used_ += size_t(round_up(n * int64_t(sizeof(T) / sizeof(float)), 16));
    assert(used_ * sizeof(float) <= block_.capacity());
    return reinterpret_cast<T*>(q);
  }
  // The floats take() hands out for the given requests, rounded as take() rounds them.
  static size_t size(std::initializer_list<int64_t> floats) {
    size_t total = 0;
    for (int64_t n : floats) total += size_t(round_up(n, 16));
    return total;
  }

 private:
  static thread_local ScratchBuffer block_;
  float* base_;
  size_t used_ = 0;
};
thread_local ScratchBuffer Arena::block_;

// Ask for the cache lines holding n floats at p ahead of their use.
inline void prefetch(const float* p, int64_t n, bool for_write) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * int64_t(sizeof(float));
  for (int64_t off = 0; off < bytes + 63; off += 64) {
    const char* a = c + std::min(off, bytes - 1);
    if (for_write)
      __builtin_prefetch(a, 1, 3);
    else
      __builtin_prefetch(a, 0, 3);
  }
#else
  (void)p, (void)n, (void)for_write;
#endif
}

// Which part of a product is needed (lets the triangular products skip dead work).
// row0 places the product's rows in the triangle: row i is row row0 + i of the chunk.
enum class Tri {
  kFull,
  kCausalA,  // A is lower triangular: row i of A is zero beyond column row0 + i (zero-filled
             // up to the end of its kMR-row panel), so a row panel only sums k up to its end.
  kLowerC,   // only c[i, j] with j <= i is wanted; tiles wholly above the diagonal are skipped
             // (row0 must be 0).
};

// ---- Portable kernels -----------------------------------------------------------------------

// c[i, j] = beta * c[i, j] + rs[i] * sum_k a[i*rsa + k*csa] * b[k*ldb + j], i < m, j < n.
// beta == 0 means c is not read. rs == nullptr means no row scale.
void gemm_portable(int64_t m, int64_t n, int64_t K, const float* a, int64_t rsa, int64_t csa,
                   const float* b, int64_t ldb, float* c, int64_t ldc, float beta,
                   const float* rs, Tri tri, int64_t row0) {
  for (int64_t i = 0; i < m; i++) {
    const int64_t ki = tri == Tri::kCausalA ? std::min(K, row0 + i + 1) : K;
    const int64_t ni = tri == Tri::kLowerC ? std::min(n, i + 1) : n;
    const float s = rs ? rs[i] : 1.f;
    float* ci = c + i * ldc;
    for (int64_t j = 0; j < ni; j++) ci[j] = beta == 0.f ? 0.f : beta * ci[j];
    for (int64_t k = 0; k < ki; k++) {
      const float aik = s * a[i * rsa + k * csa];
      const float* bk = b + k * ldb;
      for (int64_t j = 0; j < ni; j++) ci[j] += aik * bk[j];
    }
  }
}

// exp(min(d, 0)) for a decay exponent d formed in double (see the precision note on top).
inline float decay(double d) { return std::exp(std::min(float(d), 0.f)); }

// Rows [l0, l1) of the intra-chunk matrix of one head (row l stored at M + (l - l0)*ldm):
//   M[l, s] = (C_l . B_s) exp(min(cs_l - cs_s, 0)) dt_s   for s <= l,
// and zero for l < s < the end of l's kMR-row panel (what Tri::kCausalA reads).
// l0 is a multiple of kMR; l1 is too, or the chunk's length.
void build_decay_matrix_portable(int64_t l0, int64_t l1, const double* cs, const float* dt,
                                 const float* cb, int64_t ldcb, float* M, int64_t ldm, float*) {
  for (int64_t l = l0; l < l1; l++) {
    const float* cbl = cb + l * ldcb;
    float* ml = M + (l - l0) * ldm;
    for (int64_t s = 0; s <= l; s++) ml[s] = cbl[s] * decay(cs[l] - cs[s]) * dt[s];
    const int64_t end = std::min(l1, (l / kMR + 1) * kMR);
    for (int64_t s = l + 1; s < end; s++) ml[s] = 0.f;
  }
}

// e_s = exp(min(cs_s, 0)), the decay from the chunk start to s, and
// w_s = dt_s exp(min(cs_last - cs_s, 0)), dt_s times the decay from s to the chunk end.
void chunk_decays_portable(int64_t Lc, const double* cs, const float* dt, float* e, float* w) {
  for (int64_t s = 0; s < Lc; s++) {
    e[s] = decay(cs[s]);
    w[s] = dt[s] * decay(cs[Lc - 1] - cs[s]);
  }
}

// Decode for one (sequence, head): S = a S + (dt x) B^T and y = S C + D x in one pass.
void step_head_portable(int64_t P, int64_t N, float a, float dt, float Dh, const float* x,
                        const float* Bv, const float* Cv, float* S, float* y) {
  for (int64_t p = 0; p < P; p++) {
    float* r = S + p * N;
    const float dx = dt * x[p];
    float sum = 0.f;
    for (int64_t n = 0; n < N; n++) {
      r[n] = a * r[n] + dx * Bv[n];
      sum += r[n] * Cv[n];
    }
    y[p] = sum + Dh * x[p];
  }
}

// ---- AVX2 + FMA kernels ---------------------------------------------------------------------
#ifdef TAIPAN_SSD_X86

// One MR x (8*NV) tile of gemm(): the accumulators stay in registers for the whole k loop;
// each step loads NV vectors of a row of B and broadcasts MR elements of A (12 FMAs for 8
// loads at 6 x 16, which keeps both FMA pipes busy).
template <int MR, int NV>
__attribute__((target("avx2,fma"))) void tile_avx2(int64_t K, const float* a, int64_t rsa,
                                                   int64_t csa, const float* b, int64_t ldb,
                                                   float* c, int64_t ldc, float beta,
                                                   const float* rs) {
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
  const float* ar[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) ar[i] = a + i * rsa;
  int64_t ak = 0;
  for (int64_t k = 0; k < K; k++, ak += csa, b += ldb) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      const __m256 av = _mm256_broadcast_ss(ar[i] + ak);
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  const __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    const __m256 s = _mm256_set1_ps(rs ? rs[i] : 1.f);
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
      float* cp = c + i * ldc + 8 * v;
      __m256 r = _mm256_mul_ps(acc[i][v], s);
      if (beta != 0.f) r = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cp), r);
      _mm256_storeu_ps(cp, r);
    }
  }
}

using TileFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                        int64_t, float, const float*);
const TileFn kTiles[kMR + 1][3] = {
    {nullptr, nullptr, nullptr},
    {nullptr, tile_avx2<1, 1>, tile_avx2<1, 2>},
    {nullptr, tile_avx2<2, 1>, tile_avx2<2, 2>},
    {nullptr, tile_avx2<3, 1>, tile_avx2<3, 2>},
    {nullptr, tile_avx2<4, 1>, tile_avx2<4, 2>},
    {nullptr, tile_avx2<5, 1>, tile_avx2<5, 2>},
    {nullptr, tile_avx2<6, 1>, tile_avx2<6, 2>},
};

// Same contract as gemm_portable, with n a multiple of 8 (rows of B and c padded).
// Column panels outermost: a 16-wide panel of B (K x 16) stays in L1 while the row panels of
// A stream past it.
void gemm_avx2(int64_t m, int64_t n, int64_t K, const float* a, int64_t rsa, int64_t csa,
               const float* b, int64_t ldb, float* c, int64_t ldc, float beta, const float* rs,
               Tri tri, int64_t row0) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int nv = n - j0 >= 16 ? 2 : 1;
    // kLowerC: row panels lying wholly above column j0 need nothing from this column panel.
    const int64_t i_first = tri == Tri::kLowerC ? j0 / kMR * kMR : 0;
    for (int64_t i0 = i_first; i0 < m; i0 += kMR) {
      const int mr = int(std::min(kMR, m - i0));
      const int64_t ki = tri == Tri::kCausalA ? std::min(K, row0 + i0 + mr) : K;
      kTiles[mr][nv](ki, a + i0 * rsa, rsa, csa, b + j0, ldb, c + i0 * ldc + j0, ldc, beta,
                     rs ? rs + i0 : nullptr);
    }
  }
}

// exp_neg_avx2 (exp for x <= 0) and softplus256 are in ssm_math.h, shared with mamba1.cpp.

// exp(min(a - b, 0)) for 8 lanes, the difference a - b taken in double.
__attribute__((target("avx2,fma"))) inline __m256 decay8(__m256d a_lo, __m256d a_hi,
                                                         __m256d b_lo, __m256d b_hi) {
  const __m128 lo = _mm256_cvtpd_ps(_mm256_sub_pd(a_lo, b_lo));
  const __m128 hi = _mm256_cvtpd_ps(_mm256_sub_pd(a_hi, b_hi));
  const __m256 d = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
  return exp_neg_avx2(_mm256_min_ps(_mm256_setzero_ps(), d));
}
// cs_ref - cs[s..s+7] and cs[s..s+7] - cs_ref.
__attribute__((target("avx2,fma"))) inline __m256 decay_from(const double* cs, __m256d ref) {
  return decay8(ref, ref, _mm256_loadu_pd(cs), _mm256_loadu_pd(cs + 4));
}
__attribute__((target("avx2,fma"))) inline __m256 decay_to(const double* cs, __m256d ref) {
  return decay8(_mm256_loadu_pd(cs), _mm256_loadu_pd(cs + 4), ref, ref);
}

// The AVX2 form of the intra-chunk matrix. Exponentials dominate building it, so away from
// the diagonal each decay is split at a token r between s and l (r = the row panel's first
// token rounded down to a multiple of 8):
//     exp(cs_l - cs_s) = exp(cs_l - cs_r) * exp(cs_r - cs_s)      for s < r <= l.
// Both factors are <= 1, so this is as stable as the direct form (a factor that underflows
// to 0 means the product is below fp32 range too), and it needs one exponential per token
// and panel plus one per row instead of one per element. Within 8 tokens of the diagonal
// the decay is computed directly as exp(min(cs_l - cs_s, 0)).
// u: scratch of round_up(l1, 8) floats.
__attribute__((target("avx2,fma"))) void build_decay_matrix_avx2(int64_t l0, int64_t l1,
                                                                 const double* cs,
                                                                 const float* dt,
                                                                 const float* cb, int64_t ldcb,
                                                                 float* M, int64_t ldm,
                                                                 float* u) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i0 = l0; i0 < l1; i0 += kMR) {
    const int64_t i1 = std::min(l1, i0 + kMR), r = i0 / 8 * 8;
    const __m256d csr = _mm256_set1_pd(cs[r]);
    // u_s = dt_s exp(cs_r - cs_s) for s < r, shared by the panel's rows.
    for (int64_t s = 0; s < r; s += 8)
      _mm256_storeu_ps(u + s, _mm256_mul_ps(_mm256_loadu_ps(dt + s), decay_from(cs + s, csr)));
    // f_l = exp(cs_l - cs_r) for the panel's rows (cs is padded, so 8 lanes can be read).
    alignas(32) float f[8];
    _mm256_store_ps(f, decay_to(cs + i0, csr));
    for (int64_t l = i0; l < i1; l++) {
      const float* cbl = cb + l * ldcb;
      float* ml = M + (l - l0) * ldm;
      const __m256 fl = _mm256_set1_ps(f[l - i0]);
      for (int64_t s = 0; s < r; s += 8)
        _mm256_storeu_ps(ml + s, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(cbl + s),
                                                             _mm256_loadu_ps(u + s)),
                                               fl));
      // Near the diagonal: whole vectors from r up to and including column l, the last one
      // masked to s <= l. cs, dt and the cb rows are padded to a multiple of 8, so the reads
      // past l stay in bounds (masked lanes may hold garbage; the mask clears them).
      const __m256d csl = _mm256_set1_pd(cs[l]);
      int64_t s = r;
      for (; s <= l; s += 8) {
        const __m256 v = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_loadu_ps(cbl + s), decay_from(cs + s, csl)),
            _mm256_loadu_ps(dt + s));
        const __m256i idx = _mm256_add_epi32(lane, _mm256_set1_epi32(int(s)));
        const __m256 keep =
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(l + 1)), idx));
        _mm256_storeu_ps(ml + s, _mm256_and_ps(v, keep));
      }
      for (; s < i1; s++) ml[s] = 0.f;  // the rest of the panel (read by Tri::kCausalA)
    }
  }
}

// e_s and w_s as in chunk_decays_portable; arrays padded to a multiple of 8.
__attribute__((target("avx2,fma"))) void chunk_decays_avx2(int64_t Lc, const double* cs,
                                                           const float* dt, float* e, float* w) {
  const __m256d zero = _mm256_setzero_pd(), last = _mm256_set1_pd(cs[Lc - 1]);
  for (int64_t s = 0; s < Lc; s += 8) {
    _mm256_storeu_ps(e + s, decay_to(cs + s, zero));
    _mm256_storeu_ps(w + s, _mm256_mul_ps(_mm256_loadu_ps(dt + s), decay_from(cs + s, last)));
  }
}

// out = softplus(v) for n values (padded to a multiple of 8), identity above 20.
__attribute__((target("avx2,fma"))) void softplus_avx2(int64_t n, const float* v, float* out) {
  for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(out + i, softplus256(_mm256_loadu_ps(v + i)));
}

__attribute__((target("avx2,fma"))) inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Decode for one (sequence, head), as step_head_portable, four rows of the state at a time so
// that four independent dot products overlap.
__attribute__((target("avx2,fma"))) void step_head_avx2(int64_t P, int64_t N, float a, float dt,
                                                        float Dh, const float* x,
                                                        const float* Bv, const float* Cv,
                                                        float* S, float* y) {
  const __m256 va = _mm256_set1_ps(a);
  const int64_t N8 = N / 8 * 8;
  // The state comes from DRAM (a decode step streams megabytes of weights between two visits
  // of a layer), and the hardware prefetcher only catches up with a head's 32 KiB partway
  // through: ask for its first 8 rows at once, then for the rows 8 ahead of the group being
  // computed. (bench/native/ssd_check, "24 layers cold": best 0.044 ms and median 0.055 per
  // call, was 0.072 and 0.084.)
  for (int64_t off = 0; off < std::min<int64_t>(P, 8) * N; off += 16)
    _mm_prefetch(reinterpret_cast<const char*>(S + off), _MM_HINT_T0);
  int64_t p = 0;
  for (; p + 4 <= P; p += 4) {
    float* r0 = S + p * N;
    const float dx[4] = {dt * x[p], dt * x[p + 1], dt * x[p + 2], dt * x[p + 3]};
    __m256 vdx[4], acc[4];
    for (int i = 0; i < 4; i++) vdx[i] = _mm256_set1_ps(dx[i]), acc[i] = _mm256_setzero_ps();
    if (p + 12 <= P)
      for (int64_t off = 0; off < 4 * N; off += 16)
        _mm_prefetch(reinterpret_cast<const char*>(r0 + 8 * N + off), _MM_HINT_T0);
    for (int64_t n = 0; n < N8; n += 8) {
      const __m256 b = _mm256_loadu_ps(Bv + n), cc = _mm256_loadu_ps(Cv + n);
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        float* sp = r0 + i * N + n;
        const __m256 s = _mm256_fmadd_ps(vdx[i], b, _mm256_mul_ps(va, _mm256_loadu_ps(sp)));
        _mm256_storeu_ps(sp, s);
        acc[i] = _mm256_fmadd_ps(s, cc, acc[i]);
      }
    }
    for (int i = 0; i < 4; i++) {
      float sum = hsum_avx2(acc[i]);
      float* ri = r0 + i * N;
      for (int64_t n = N8; n < N; n++) {
        ri[n] = a * ri[n] + dx[i] * Bv[n];
        sum += ri[n] * Cv[n];
      }
      y[p + i] = sum + Dh * x[p + i];
    }
  }
  if (p < P) step_head_portable(P - p, N, a, dt, Dh, x + p, Bv, Cv, S + p * N, y + p);
}
#endif  // TAIPAN_SSD_X86

// ---- Dispatch between the two paths ---------------------------------------------------------

struct Kernels {
  bool avx2;
  void gemm(int64_t m, int64_t n, int64_t K, const float* a, int64_t rsa, int64_t csa,
            const float* b, int64_t ldb, float* c, int64_t ldc, float beta, const float* rs,
            Tri tri = Tri::kFull, int64_t row0 = 0) const {
#ifdef TAIPAN_SSD_X86
    if (avx2) return gemm_avx2(m, n, K, a, rsa, csa, b, ldb, c, ldc, beta, rs, tri, row0);
#endif
    gemm_portable(m, n, K, a, rsa, csa, b, ldb, c, ldc, beta, rs, tri, row0);
  }
  void build_decay_matrix(int64_t l0, int64_t l1, const double* cs, const float* dt,
                          const float* cb, int64_t ldcb, float* M, int64_t ldm, float* u) const {
#ifdef TAIPAN_SSD_X86
    if (avx2) return build_decay_matrix_avx2(l0, l1, cs, dt, cb, ldcb, M, ldm, u);
#endif
    build_decay_matrix_portable(l0, l1, cs, dt, cb, ldcb, M, ldm, u);
  }
  void chunk_decays(int64_t Lc, const double* cs, const float* dt, float* e, float* w) const {
#ifdef TAIPAN_SSD_X86
    if (avx2) return chunk_decays_avx2(Lc, cs, dt, e, w);
#endif
    chunk_decays_portable(Lc, cs, dt, e, w);
  }
  void softplus(int64_t n, const float* v, float* out) const {
#ifdef TAIPAN_SSD_X86
    if (avx2) return softplus_avx2(n, v, out);
#endif
    for (int64_t i = 0; i < n; i++) out[i] = softplus_f(v[i]);
  }
  void step_head(int64_t P, int64_t N, float a, float dt, float Dh, const float* x,
                 const float* Bv, const float* Cv, float* S, float* y) const {
#ifdef TAIPAN_SSD_X86
    if (avx2) return step_head_avx2(P, N, a, dt, Dh, x, Bv, Cv, S, y);
#endif
    step_head_portable(P, N, a, dt, Dh, x, Bv, Cv, S, y);
  }
};

}  // namespace

// ---- ssd_scan: the chunked algorithm --------------------------------------------------------

void ssd_scan(ThreadPool& pool, const SsdDims& dims, const float* x, int64_t ldx,
              const float* Bm, int64_t ldb, const float* Cm, int64_t ldc, const float* dt_raw,
              int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
              const float* state_in, float* y, float* state_out) {
  const Kernels k{use_avx2()};
  const int64_t Bn = dims.B, L = dims.L, H = dims.H, P = dims.P, G = dims.G, N = dims.N;
  if (Bn <= 0 || H <= 0 || P <= 0 || N <= 0) return;
  if (L <= 0) {  // no tokens: the state passes through unchanged
    for (int64_t i = 0; i < Bn * H * P * N; i++) state_out[i] = state_in ? state_in[i] : 0.f;
    return;
  }
  // Tokens per chunk: the model's chunk_size, but at most dims.max_chunk (64). The chunked
  // algorithm equals the recurrence for any chunk length, and on the CPU a shorter chunk is
  // cheaper: the intra-chunk product costs Q*P/2 multiply-adds per token and head, growing
  // with the chunk Q, while the chunk state and the inter-chunk output cost N*P each whatever
  // Q is. At the mamba2-130m shape 64 instead of 256 removes a quarter of the arithmetic; in
  // the model the scan took about 20% less time, and 64 also beat 32 and 128. (The CUDA scan
  // keeps the model's chunk: there a chunk is the unit of parallel work.)
  const int64_t Q = std::min({std::max<int64_t>(dims.chunk, 1), std::max<int64_t>(dims.max_chunk, 1), L});
  const int64_t nchunks = (L + Q - 1) / Q;
  const int64_t heads_per_group = H / G;
  const int64_t ldq = round_up(Q, 8);  // row length of C B^T, B^T and the decay matrix
  const int64_t Pp = round_up(P, 8);   // row length of the packed x, of Y and of the state
  // The intra-chunk matrix is built kRowBlock rows at a time, so it stays in L1/L2.
  constexpr int64_t kRowBlock = 8 * kMR;

  // Phase 1's scratch (C B^T, B^T and C per sequence, group and chunk) is bounded to about
  // 16 MiB however many and long the sequences: they are processed in blocks of `nb`
  // sequences, and each block in windows of `window` chunks.
  const int64_t per_chunk = Q * ldq + N * ldq + Q * N;  // C B^T, then B^T, then C
  const int64_t budget = int64_t(4) << 20;              // floats
  const int64_t nb = std::clamp<int64_t>(budget / (G * per_chunk), 1, Bn);
  const int64_t window = std::clamp<int64_t>(budget / (nb * G * per_chunk), 1, nchunks);
  // Phase 2's scratch, per thread.
  struct Scratch {
    float *xc, *Y, *M, *dt, *e, *w, *u;
    double* cs;
  };
  const int nthreads = pool.size();
  const size_t per_thread = Arena::size({Q * Pp, Q * Pp, std::min(Q, kRowBlock) * ldq, ldq + 8,
                                         ldq, ldq, ldq, 2 * (ldq + 8)});
  Arena arena(Arena::size({nb * G * window * per_chunk, nb * H * N * Pp}) +
              size_t(nthreads) * per_thread);
  float* shared = arena.take(nb * G * window * per_chunk);
  // The state carried between chunks, per (sequence of the block, head), transposed to [N, Pp].
  float* states = arena.take(nb * H * N * Pp);
  std::vector<Scratch> scratch(static_cast<size_t>(nthreads));
  for (auto& s : scratch) {
    s.xc = arena.take(Q * Pp), s.Y = arena.take(Q * Pp);
    s.M = arena.take(std::min(Q, kRowBlock) * ldq), s.dt = arena.take(ldq + 8);
    s.e = arena.take(ldq), s.w = arena.take(ldq), s.u = arena.take(ldq);
    s.cs = arena.take<double>(ldq + 8);
  }

  // One chunk c of one (sequence b, head h): the four steps, carrying the state in `states`.
  // b0 is the first sequence of the block, c0 and nc the current window's chunks.
  auto chunk_step = [&](int64_t b, int64_t h, int64_t c, int64_t b0, int64_t c0, int64_t nc,
                        Scratch& sc) {
    const int64_t g = h / heads_per_group;
    const int64_t r0 = b * L + c * Q, Lc = std::min(Q, L - c * Q), Lp = round_up(Lc, 8);
    const float* cb = shared + (((b - b0) * G + g) * nc + (c - c0)) * per_chunk;
    const float* bt = cb + Q * ldq;
    const float* cc = bt + N * ldq;
    float* St = states + ((b - b0) * H + h) * N * Pp;
    float *xc = sc.xc, *Y = sc.Y, *M = sc.M, *dt = sc.dt, *e = sc.e, *w = sc.w, *u = sc.u;
    double* cs = sc.cs;

    // The first chunk starts from state_in (transposed), or from zero when it is null.
    const bool state_zero = c == 0 && state_in == nullptr;
    if (c == 0 && state_in != nullptr) {
      const float* S = state_in + (b * H + h) * P * N;
      for (int64_t n = 0; n < N; n++) {
        for (int64_t p = 0; p < P; p++) St[n * Pp + p] = S[p * N + n];
        for (int64_t p = P; p < Pp; p++) St[n * Pp + p] = 0.f;
      }
    }

    // dt = softplus(dt_raw + dt_bias) in fp32, and the cumulative sum of dt*A restarting at
    // 0 each chunk, so that the exponents cs_l - cs_s never span more than one chunk (a
    // global cumsum would lose them; see NOTES.md, Mamba-2 traps).
    const float A = -std::exp(A_log[h]);
    for (int64_t s = 0; s < Lc; s++) w[s] = dt_raw[(r0 + s) * lddt + h] + dt_bias[h];
    for (int64_t s = Lc; s < Lp; s++) w[s] = 0.f;
    k.softplus(Lp, w, dt);
    double run = 0.0;
    for (int64_t s = 0; s < Lc; s++) cs[s] = run += double(dt[s]) * double(A);
    for (int64_t s = Lc; s < Lp + 8; s++) dt[s] = 0.f, cs[s] = run;  // padding for SIMD reads
    k.chunk_decays(Lc, cs, dt, e, w);

    // This head's x, packed to [Lc, Pp]. Its slice of a row is a few cache lines in a long
    // row, which the hardware prefetcher does not follow from row to row: ask 8 rows ahead.
    for (int64_t s = 0; s < Lc; s++) {
      const float* xs = x + (r0 + s) * ldx + h * P;
      if (s + 8 < Lc) prefetch(xs + 8 * ldx, P, false);
      std::memcpy(xc + s * Pp, xs, size_t(P) * sizeof(float));
      for (int64_t p = P; p < Pp; p++) xc[s * Pp + p] = 0.f;
    }

    // Step 4 (inter-chunk output) comes first, as it needs the state entering the chunk,
    // which steps 2-3 replace: what that state contributes to each token,
    //   Y[l, :] = exp(cs_l) C_l . St.   Nothing while the state is still zero.
    if (state_zero)
      std::memset(Y, 0, size_t(Lc * Pp) * sizeof(float));
    else
      k.gemm(Lc, Pp, N, cc, N, 1, St, Pp, Y, Pp, 0.f, e);

    // Step 1 (intra-chunk, the diagonal block): each token acting on the later tokens of its
    // chunk, a causal attention-like product Y += (C B^T o decay o dt) X. The matrix is built
    // a block of rows at a time, just before its product, while it is still in cache.
    for (int64_t l0 = 0; l0 < Lc; l0 += kRowBlock) {
      const int64_t l1 = std::min(Lc, l0 + kRowBlock);
      k.build_decay_matrix(l0, l1, cs, dt, cb, ldq, M, ldq, u);
      k.gemm(l1 - l0, Pp, Lc, M, ldq, 1, xc, Pp, Y + l0 * Pp, Pp, 1.f, nullptr, Tri::kCausalA,
             l0);
    }

    // The chunk's output rows, with the skip connection D x.
    const float Dh = D[h];
    for (int64_t l = 0; l < Lc; l++) {
      float* yl = y + (r0 + l) * (H * P) + h * P;
      if (l + 8 < Lc) prefetch(yl + 8 * H * P, P, true);
      for (int64_t p = 0; p < P; p++) yl[p] = Y[l * Pp + p] + Dh * xc[l * Pp + p];
    }

    // Steps 2 and 3 (chunk state, state passing): the state leaving the chunk is the
    // entering state decayed over the whole chunk plus the chunk's own contributions,
    //   St = exp(cs_last) St + B^T (w o X).      (x is no longer needed: weight it in place)
    for (int64_t s = 0; s < Lc; s++)
      for (int64_t p = 0; p < P; p++) xc[s * Pp + p] *= w[s];
    k.gemm(N, Pp, Lc, bt, ldq, 1, xc, Pp, St, Pp, state_zero ? 0.f : decay(cs[Lc - 1]),
           nullptr);

    if (c == nchunks - 1) {  // the final state (state_out may alias state_in: read already)
      float* S = state_out + (b * H + h) * P * N;
      for (int64_t p = 0; p < P; p++)
        for (int64_t n = 0; n < N; n++) S[p * N + n] = St[n * Pp + p];
    }
  };

  for (int64_t b0 = 0; b0 < Bn; b0 += nb) {
    const int64_t nbb = std::min(nb, Bn - b0);
    for (int64_t c0 = 0; c0 < nchunks; c0 += window) {
      const int64_t nc = std::min(window, nchunks - c0);

      // Phase 1: per (sequence, group, chunk), pack B^T [N, Q] and C [Q, N] contiguously and
      // compute C B^T [Q, Q] (only its lower triangle is used). Every head of the group
      // reuses all three.
      pool.parallel_tasks(nbb * G * nc, [&](int64_t task, int) {
        const int64_t b = b0 + task / (G * nc), g = task / nc % G, c = c0 + task % nc;
        const int64_t r0 = b * L + c * Q, Lc = std::min(Q, L - c * Q), Lp = round_up(Lc, 8);
        float* cb = shared + task * per_chunk;
        float* bt = cb + Q * ldq;
        float* cc = bt + N * ldq;
        const float* Bc = Bm + r0 * ldb + g * N;
        const float* Cc = Cm + r0 * ldc + g * N;
        for (int64_t s0 = 0; s0 < Lc; s0 += 8) {  // in strips of 8 tokens
          const int64_t s1 = std::min(s0 + 8, Lc);
          for (int64_t s = s0; s < s1; s++) {
            if (s + 8 < Lc) {
              prefetch(Bc + (s + 8) * ldb, N, false);
              prefetch(Cc + (s + 8) * ldc, N, false);
            }
            std::memcpy(cc + s * N, Cc + s * ldc, size_t(N) * sizeof(float));
          }
          for (int64_t n = 0; n < N; n++)
            for (int64_t s = s0; s < s1; s++) bt[n * ldq + s] = Bc[s * ldb + n];
        }
        for (int64_t n = 0; n < N; n++)
          for (int64_t s = Lc; s < Lp; s++) bt[n * ldq + s] = 0.f;
        k.gemm(Lc, Lp, N, cc, N, 1, bt, ldq, cb, ldq, 0.f, nullptr, Tri::kLowerC);
      });

      // Phase 2: chunk by chunk, every (sequence, head) in parallel. Going chunk-major keeps
      // the chunk's rows of x, y, B and C (and their pages) in cache while all heads use them.
      for (int64_t c = c0; c < c0 + nc; c++)
        pool.parallel_tasks(nbb * H, [&](int64_t task, int thread) {
          chunk_step(b0 + task / H, task % H, c, b0, c0, nc, scratch[size_t(thread)]);
        });
    }
  }
}

// ---- ssd_step: the recurrence, one token per sequence ---------------------------------------

void ssd_step(ThreadPool& pool, const SsdDims& dims, const float* x, int64_t ldx,
              const float* Bm, int64_t ldb, const float* Cm, int64_t ldc, const float* dt_raw,
              int64_t lddt, const float* dt_bias, const float* A_log, const float* D,
              float* state, float* y) {
  const Kernels k{use_avx2()};
  const int64_t H = dims.H, P = dims.P, N = dims.N, heads_per_group = dims.H / dims.G;
  // One (sequence, head) is 4*P*N bytes of state (32 KiB for P=64, N=128), streamed once per
  // token: the step is bound by memory. Heads are handed out one at a time (see
  // parallel_tasks and the decode GEMV in gemm.cpp).
  pool.parallel_tasks(dims.B * H, [&](int64_t t, int) {
    const int64_t b = t / H, h = t % H, g = h / heads_per_group;
    const float dt = softplus_f(dt_raw[b * lddt + h] + dt_bias[h]);
    const float a = std::exp(dt * -std::exp(A_log[h]));
    k.step_head(P, N, a, dt, D[h], x + b * ldx + h * P, Bm + b * ldb + g * N,
                Cm + b * ldc + g * N, state + t * P * N, y + b * H * P + h * P);
  });
}

}  // namespace taipan::cpu
