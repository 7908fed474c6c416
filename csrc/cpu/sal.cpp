// The Selective Attention Layer's kernels (MODEL.md section 6): the gate with its feature
// pruning, rotary embeddings, the sparse sliding-window attention of the selected tokens,
// the ring-buffer write that carries keys and values to the next chunk, and the mix.
//
// Only ~15% of the tokens are selected, so everything after the gate works on the compacted
// list of selected rows (index[0..count)); count is data produced by an earlier op on the same
// stream, so the op layer reads it when the work runs, never when it is planned.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels.h"
#include "online_softmax.h"
#include "rms_row.h"
#include "vec_math.h"

namespace taipan::cpu {

namespace {

// ---- Gate -----------------------------------------------------------------------------------

// One row of the gate: r += delta, x = rms(r) * norm, s[c] = x . gw[c]. The portable path
// accumulates in double: it is also the precise one, as in norm.cpp.
void gate_row(int64_t d, float* r, const float* delta, const float* norm, const float* gw, float eps,
              float* x, double* s) {
  float inv = residual_inv_rms(d, r, delta, eps);
  double s0 = 0, s1 = 0;
  for (int64_t j = 0; j < d; j++) {
    x[j] = r[j] * inv * norm[j];
    s0 += double(x[j]) * gw[j];
    s1 += double(x[j]) * gw[d + j];
  }
  s[0] = s0;
  s[1] = s1;
}

__attribute__((target("avx2,fma"))) void gate_row_avx2(int64_t d, float* r, const float* delta, const float* norm,
                                                       const float* gw, float eps, float* x, double* s) {
  float inv = residual_inv_rms_avx2(d, r, delta, eps);
  int64_t j = 0;
  // x and both gate dot products in the same sweep, so each row is read once more, not three times.
  __m256 vinv = _mm256_set1_ps(inv), d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
  float t0 = 0, t1 = 0;
  for (; j + 8 <= d; j += 8) {
    __m256 xv = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(r + j), vinv), _mm256_loadu_ps(norm + j));
    _mm256_storeu_ps(x + j, xv);
    d0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(gw + j), d0);
    d1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(gw + d + j), d1);
  }
  for (; j < d; j++) {
    x[j] = r[j] * inv * norm[j];
    t0 += x[j] * gw[j];
    t1 += x[j] * gw[d + j];
  }
  s[0] = double(hsum256(d0) + t0);
  s[1] = double(hsum256(d1) + t1);
}

// ---- Attention --------------------------------------------------------------------------------
//
// Queries are processed in tiles: up to kTileQueries consecutive selected queries of one
// sequence, whose windows mostly overlap. A tile's keys (the union of its windows) are
// gathered once as lists of row pointers and positions, ring-buffer slots and chunk rows
// alike, so the inner loops never branch on where a key lives; each query's own window is a
// contiguous range of that list. The keys are consumed in blocks of kKeyBlock with an online
// softmax per (query, head): the block's scores, the block maximum, one rescale of the running
// sum and context when the maximum grows, and exp over the whole block at once (vectorised).
// For each block, every head and then every query of the tile reads the same rows while they
// are in L1/L2: a window is W * HD * 8 bytes (12 MB for W = 2048, HD = 768), so a query at a
// time would stream it from DRAM once per query.

constexpr int64_t kTileQueries = 8;
constexpr int64_t kKeyBlock = 64;

// The usable keys of sequence b at positions lo <= j <= hi (lo >= 0): from the ring buffer
// for j < start[b] (when the slot still holds j) and from the chunk otherwise (when kv = "all"
// or that row was selected), in increasing position. Returns how many were listed.
int64_t gather_keys(const SalAttnArgs& a, int64_t b, int64_t lo, int64_t hi, const float** kp, const float** vp,
                    int64_t* pos) {
  int64_t HD = a.H * a.hd, s0 = a.start[b], n = 0;
  const int32_t* cpos = a.cache_pos[b];
  for (int64_t j = lo; j <= hi; j++) {
    if (j < s0) {
      int64_t slot = j % a.W;
      if (cpos[slot] != j) continue;
      kp[n] = a.k_cache[b] + slot * HD;
      vp[n] = a.v_cache[b] + slot * HD;
    } else {
      int64_t r = b * a.L + (j - s0);
      if (a.mask && !a.mask[r]) continue;
      kp[n] = a.k + r * a.ldk;
      vp[n] = a.v + r * a.ldv;
    }
    pos[n++] = j;
  }
  return n;
}

// A tile: queries q[first .. first+n) of the compacted list (valid rows only), one sequence.
struct Tile {
  int64_t first, n;
};

}  // namespace

void sal_gate(ThreadPool& pool, int64_t M, int64_t d, float* r, const float* delta, const float* norm,
              const float* gw, const float* gb, float eps, float* x, float* prob, int32_t* mask, int32_t* index,
              int32_t* count, float* gathered) {
  bool vec = use_avx2();
  pool.parallel_for(M, [&](int64_t b, int64_t e, int) {
    for (int64_t m = b; m < e; m++) {
      double s[2];
      const float* dm = delta ? delta + m * d : nullptr;
      if (vec) gate_row_avx2(d, r + m * d, dm, norm, gw, eps, x + m * d, s);
      else gate_row(d, r + m * d, dm, norm, gw, eps, x + m * d, s);
      double diff = (s[1] + gb[1]) - (s[0] + gb[0]);
      mask[m] = diff > 0 ? 1 : 0;
      prob[m] = float(1.0 / (1.0 + std::exp(-diff)));
    }
  }, 4);
  // The compaction is a prefix sum over M flags: serial, it costs less than waking a thread.
  int32_t n = 0;
  for (int64_t m = 0; m < M; m++)
    if (mask[m]) index[n++] = int32_t(m);
  *count = n;
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; k++) std::memcpy(gathered + k * d, x + int64_t(index[k]) * d, size_t(d) * sizeof(float));
  }, 16);
}

void rope(ThreadPool& pool, int64_t R, int64_t cols, int64_t head_dim, float* x, int64_t ldx, const int32_t* index,
          const int32_t* start, int64_t B, int64_t L, double theta) {
  int64_t half = head_dim / 2, heads = cols / head_dim;
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; i++) freq[i] = std::pow(theta, -2.0 * double(i) / double(head_dim));
  pool.parallel_for(R, [&](int64_t b, int64_t e, int) {
    std::vector<float> cs(2 * half);
    for (int64_t r = b; r < e; r++) {
      int64_t row = index ? index[r] : r;
      if (row < 0 || row >= B * L) continue;
      // Positions reach 1e6 and beyond: in fp32 the angle would lose whole radians.
      double pos = double(start[row / L]) + double(row % L);
      for (int64_t i = 0; i < half; i++) {
        double ang = pos * freq[i];
        cs[i] = float(std::cos(ang));
        cs[half + i] = float(std::sin(ang));
      }
      float* xr = x + r * ldx;
      for (int64_t h = 0; h < heads; h++) {
        float* xh = xr + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
          float u = xh[i], w = xh[i + half];
          xh[i] = u * cs[i] - w * cs[half + i];
          xh[i + half] = w * cs[i] + u * cs[half + i];
        }
      }
    }
  }, 4);
}

void sal_attention(ThreadPool& pool, const SalAttnArgs& a) {
  int64_t HD = a.H * a.hd;
  // Valid queries (an index outside [0, M) never comes from our gate; it is skipped rather
  // than trusted), with their sequence and position, cut into tiles.
  std::vector<int64_t> qk, qb, qp;
  std::vector<Tile> tiles;
  for (int64_t k = 0; k < a.n; k++) {
    int64_t row = a.index[k];
    if (row < 0 || row >= a.M) continue;
    int64_t b = row / a.L, p = int64_t(a.start[b]) + row % a.L;
    int64_t q = int64_t(qk.size());
    // A new tile at another sequence, when the tile is full, or when its windows stop
    // overlapping (so that a tile's key list stays under 2W).
    if (tiles.empty() || qb[tiles.back().first] != b || tiles.back().n == kTileQueries || p - qp[tiles.back().first] >= a.W)
      tiles.push_back({q, 0});
    tiles.back().n++;
    qk.push_back(k), qb.push_back(b), qp.push_back(p);
  }
  int64_t nt = int64_t(tiles.size());
  if (nt == 0) return;
  // Few tiles (decode: one query per sequence) would leave threads idle: split the heads too.
  int64_t want = 4 * int64_t(pool.size());
  int64_t groups = nt >= want ? 1 : std::min(a.H, (want + nt - 1) / nt);
  int64_t per = (a.H + groups - 1) / groups;
  groups = (a.H + per - 1) / per;
  float scale = 1.0f / std::sqrt(float(a.hd));
  bool vec = use_avx2();
  pool.parallel_for(nt * groups, [&](int64_t ib, int64_t ie, int) {
    std::vector<const float*> kp(2 * a.W), vp(2 * a.W);
    std::vector<int64_t> kpos(2 * a.W), lo(kTileQueries), hi(kTileQueries);
    std::vector<float> qs(kTileQueries * HD), acc(kTileQueries * HD), s(kKeyBlock);
    std::vector<OnlineSoftmax> st(kTileQueries * a.H);
    int64_t listed = -1, nk = 0;
    for (int64_t it = ib; it < ie; it++) {
      // Tiles near the end of a chunk see more keys than those near its start (causal
      // window); folding the order (0, nt-1, 1, nt-2, ...) gives every thread's contiguous
      // range of items a similar amount of work.
      int64_t ti = it / groups, g = it % groups;
      const Tile& tile = tiles[(ti % 2 == 0) ? ti / 2 : nt - 1 - ti / 2];
      if (tile.first != listed) {
        listed = tile.first;
        int64_t p0 = qp[tile.first], p1 = qp[tile.first + tile.n - 1];
        nk = gather_keys(a, qb[tile.first], std::max<int64_t>(0, p0 - a.W + 1), p1, kp.data(), vp.data(), kpos.data());
        for (int64_t i = 0; i < tile.n; i++) {
          int64_t p = qp[tile.first + i];
          lo[i] = std::lower_bound(kpos.begin(), kpos.begin() + nk, p - a.W + 1) - kpos.begin();
          hi[i] = std::upper_bound(kpos.begin(), kpos.begin() + nk, p) - kpos.begin();
          const float* qr = a.q + qk[tile.first + i] * a.ldq;
          for (int64_t c = 0; c < HD; c++) qs[i * HD + c] = qr[c] * scale;
        }
      }
      int64_t h0 = g * per, h1 = std::min(a.H, h0 + per);
      for (int64_t i = 0; i < tile.n; i++) {
        for (int64_t h = h0; h < h1; h++) st[i * a.H + h] = OnlineSoftmax();
        std::fill(acc.begin() + i * HD + h0 * a.hd, acc.begin() + i * HD + h1 * a.hd, 0.0f);
      }
      for (int64_t j0 = lo[0]; j0 < nk; j0 += kKeyBlock) {
        for (int64_t h = h0; h < h1; h++) {
          int64_t off = h * a.hd;
          for (int64_t i = 0; i < tile.n; i++) {
            int64_t jb = std::max(j0, lo[i]), je = std::min(j0 + kKeyBlock, hi[i]);
            if (jb >= je) continue;
            float* qi = qs.data() + i * HD + off;
            float* ai = acc.data() + i * HD + off;
            if (vec) attend_block_avx2(je - jb, ListedRows{kp.data() + jb, off}, ListedRows{vp.data() + jb, off}, qi, a.hd, s.data(), st[i * a.H + h], ai);
            else attend_block(je - jb, ListedRows{kp.data() + jb, off}, ListedRows{vp.data() + jb, off}, qi, a.hd, s.data(), st[i * a.H + h], ai);
          }
        }
      }
      for (int64_t i = 0; i < tile.n; i++) {
        float* o = a.out + qk[tile.first + i] * a.ldo;
        for (int64_t h = h0; h < h1; h++) {
          // No usable key (only when a caller passes an unselected query under kv = "selected"):
          // an all-zero context rather than 0/0.
          const OnlineSoftmax& r = st[i * a.H + h];
          float inv = r.l > 0 ? 1.0f / r.l : 0.0f;
          for (int64_t c = h * a.hd; c < (h + 1) * a.hd; c++) o[c] = acc[i * HD + c] * inv;
        }
      }
    }
  });
}

void sal_kv_write(ThreadPool& pool, int64_t B, int64_t L, int64_t W, int64_t HD, const float* k, int64_t ldk,
                  const float* v, int64_t ldv, const int32_t* mask, const int32_t* start, float* const* k_cache,
                  float* const* v_cache, int32_t* const* cache_pos) {
  // Only the last W tokens of each sequence can be in a later query's window; they map to
  // distinct slots, so the items never write the same memory.
  int64_t t0 = std::max<int64_t>(0, L - W), nt = L - t0;
  size_t bytes = size_t(HD) * sizeof(float);
  pool.parallel_for(B * nt, [&](int64_t ib, int64_t ie, int) {
    for (int64_t it = ib; it < ie; it++) {
      int64_t b = it / nt, t = t0 + it % nt, row = b * L + t;
      int64_t p = int64_t(start[b]) + t;
      if (p < 0) continue;
      int64_t slot = p % W;
      if (mask && !mask[row]) {
        cache_pos[b][slot] = -1;
        continue;
      }
      std::memcpy(k_cache[b] + slot * HD, k + row * ldk, bytes);
      std::memcpy(v_cache[b] + slot * HD, v + row * ldv, bytes);
      cache_pos[b][slot] = int32_t(p);
    }
  }, 16);
}

void sal_mix(ThreadPool& pool, int64_t M, int64_t d, int64_t n, float* r, int64_t ldr, const float* o, int64_t ldo,
             const int32_t* index, const float* prob, const float* x, int64_t ldx, bool normalized) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; k++) {
      int64_t i = index[k];
      if (i < 0 || i >= M) continue;
      float a = prob[i], keep = 1.0f - a;
      float* ri = r + i * ldr;
      const float* ok = o + k * ldo;
      if (normalized) {
        const float* xi = x + i * ldx;
        for (int64_t c = 0; c < d; c++) ri[c] += keep * xi[c] + a * ok[c];
      } else {
        for (int64_t c = 0; c < d; c++) ri[c] = keep * ri[c] + a * ok[c];
      }
    }
  }, 4);
}

}  // namespace taipan::cpu
