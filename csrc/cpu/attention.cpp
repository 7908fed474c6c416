// Full causal attention over a growing KV cache (the Transformer++ baseline, MODEL.md section 7)
// and the append that grows the cache by a chunk.
//
// A query at position p attends to every position 0..p of its sequence: the cached rows
// 0..start-1, then the chunk's own rows up to itself. Queries are processed in tiles of
// kTileQueries consecutive tokens of one sequence, which share all their keys but the last
// few; the keys stream through in blocks of kKeyBlock, and for each block every query head of
// the KV head and then every query of the tile reads the same rows while they are in L1/L2,
// so a tile reads its keys from memory once, not once per query. Each (query, head) keeps an
// online softmax (running max, running sum, unnormalised context) in fp32.
//
// Work items are (tile, KV head, slice of that KV head's query heads), taken from a shared
// counter, latest tiles first: under the causal mask the last tiles of a sequence see the
// most keys, and starting them first keeps the threads busy to the end.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels.h"
#include "vec_math.h"

namespace taipan::cpu {

namespace {

constexpr int64_t kTileQueries = 16;
constexpr int64_t kKeyBlock = 64;

// The softmax state of one (query, head): max score so far and the sum of exp(score - max).
struct Online {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0;
};

// Portable: n consecutive keys (row i at k + i*ldk, value at v + i*ldv) for one query head;
// q is already scaled by 1/sqrt(hd); s is scratch for n scores.
void attend_keys(int64_t n, const float* k, int64_t ldk, const float* v, int64_t ldv, const float* q, int64_t hd,
                 float* s, Online& st, float* acc) {
  float bm = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; i++) {
    const float* kr = k + i * ldk;
    float dot = 0;
    for (int64_t c = 0; c < hd; c++) dot += q[c] * kr[c];
    s[i] = dot;
    bm = std::max(bm, dot);
  }
  if (bm > st.m) {
    float corr = std::exp(st.m - bm);  // 0 on the first block (m = -inf)
    st.l *= corr;
    for (int64_t c = 0; c < hd; c++) acc[c] *= corr;
    st.m = bm;
  }
  for (int64_t i = 0; i < n; i++) {
    float p = std::exp(s[i] - st.m);
    st.l += p;
    const float* vr = v + i * ldv;
    for (int64_t c = 0; c < hd; c++) acc[c] += p * vr[c];
  }
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), s1);
  }
  for (; c + 8 <= n; c += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
  float t = hsum256(_mm256_add_ps(s0, s1));
  for (; c < n; c++) t += a[c] * b[c];
  return t;
}

__attribute__((target("avx2,fma"))) void attend_keys_avx2(int64_t n, const float* k, int64_t ldk, const float* v,
                                                          int64_t ldv, const float* q, int64_t hd, float* s,
                                                          Online& st, float* acc) {
  // Scores, four keys at a time: four independent FMA chains hide the FMA latency.
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float *k0 = k + i * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t c = 0;
    for (; c + 8 <= hd; c += 8) {
      __m256 qv = _mm256_loadu_ps(q + c);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + c), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + c), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + c), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + c), a3);
    }
    float d0 = hsum256(a0), d1 = hsum256(a1), d2 = hsum256(a2), d3 = hsum256(a3);
    for (; c < hd; c++) {
      d0 += q[c] * k0[c];
      d1 += q[c] * k1[c];
      d2 += q[c] * k2[c];
      d3 += q[c] * k3[c];
    }
    s[i] = d0, s[i + 1] = d1, s[i + 2] = d2, s[i + 3] = d3;
  }
  for (; i < n; i++) s[i] = dot_avx2(q, k + i * ldk, hd);
  float bm = -std::numeric_limits<float>::infinity();
  for (i = 0; i < n; i++) bm = std::max(bm, s[i]);
  if (bm > st.m) {
    float corr = std::exp(st.m - bm);
    st.l *= corr;
    __m256 vc = _mm256_set1_ps(corr);
    int64_t c = 0;
    for (; c + 8 <= hd; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(_mm256_loadu_ps(acc + c), vc));
    for (; c < hd; c++) acc[c] *= corr;
    st.m = bm;
  }
  // The block's probabilities in one vectorised sweep.
  __m256 vm = _mm256_set1_ps(st.m), vsum = _mm256_setzero_ps();
  float tsum = 0;
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
    _mm256_storeu_ps(s + i, p);
    vsum = _mm256_add_ps(vsum, p);
  }
  for (; i < n; i++) {
    s[i] = std::exp(s[i] - st.m);
    tsum += s[i];
  }
  st.l += hsum256(vsum) + tsum;
  // acc += sum_i p_i v_i, 32 columns at a time with the keys inside: four accumulators stay
  // in registers for the whole block.
  int64_t c = 0;
  for (; c + 32 <= hd; c += 32) {
    __m256 a0 = _mm256_loadu_ps(acc + c), a1 = _mm256_loadu_ps(acc + c + 8);
    __m256 a2 = _mm256_loadu_ps(acc + c + 16), a3 = _mm256_loadu_ps(acc + c + 24);
    for (i = 0; i < n; i++) {
      const float* vr = v + i * ldv + c;
      __m256 p = _mm256_set1_ps(s[i]);
      a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr), a0);
      a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8), a1);
      a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 16), a2);
      a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 24), a3);
    }
    _mm256_storeu_ps(acc + c, a0);
    _mm256_storeu_ps(acc + c + 8, a1);
    _mm256_storeu_ps(acc + c + 16, a2);
    _mm256_storeu_ps(acc + c + 24, a3);
  }
  for (; c + 8 <= hd; c += 8) {
    __m256 a = _mm256_loadu_ps(acc + c);
    for (i = 0; i < n; i++) a = _mm256_fmadd_ps(_mm256_set1_ps(s[i]), _mm256_loadu_ps(v + i * ldv + c), a);
    _mm256_storeu_ps(acc + c, a);
  }
  for (; c < hd; c++) {
    float a = acc[c];
    for (i = 0; i < n; i++) a += s[i] * v[i * ldv + c];
    acc[c] = a;
  }
}

}  // namespace

void attention(ThreadPool& pool, const AttnArgs& a) {
  if (a.B == 0 || a.L == 0) return;
  const int64_t HKV = a.Hkv * a.hd, group = a.Hq / a.Hkv;
  const int64_t tiles_per_seq = (a.L + kTileQueries - 1) / kTileQueries, nt = a.B * tiles_per_seq;
  // Few tiles (decode: one query per sequence) would leave threads idle: split each KV head's
  // query heads into slices too (a slice re-reads the keys, so only as far as needed).
  const int64_t want = 4 * int64_t(pool.size());
  int64_t slices = nt * a.Hkv >= want ? 1 : std::min(group, (want + nt * a.Hkv - 1) / (nt * a.Hkv));
  const int64_t per = (group + slices - 1) / slices;
  slices = (group + per - 1) / per;
  const int64_t items = nt * a.Hkv * slices;
  const float scale = 1.0f / std::sqrt(float(a.hd));
  const bool vec = use_avx2();
  std::atomic<int64_t> next{0};

  pool.run_on_all([&](int, int) {
    std::vector<float> qs(kTileQueries * per * a.hd), acc(kTileQueries * per * a.hd), s(kKeyBlock);
    std::vector<Online> st(kTileQueries * per);
    auto attend = [&](int64_t n, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t slot) {
      float* q = qs.data() + slot * a.hd;
      float* ac = acc.data() + slot * a.hd;
      if (vec) attend_keys_avx2(n, k, ldk, v, ldv, q, a.hd, s.data(), st[slot], ac);
      else attend_keys(n, k, ldk, v, ldv, q, a.hd, s.data(), st[slot], ac);
    };
    for (int64_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
      // Items run from the last tile of every sequence back to the first.
      int64_t tile_rank = it / (a.Hkv * slices), rest = it % (a.Hkv * slices);
      int64_t g = rest / slices, sl = rest % slices;
      int64_t ti = tiles_per_seq - 1 - tile_rank / a.B, b = tile_rank % a.B;
      int64_t t0 = ti * kTileQueries, n = std::min(kTileQueries, a.L - t0);
      int64_t h0 = g * group + sl * per, h1 = std::min(g * group + group, h0 + per), nh = h1 - h0;
      int64_t s0 = a.start[b];
      // Slot (i, j) is query i of the tile and head h0 + j.
      for (int64_t i = 0; i < n; i++) {
        const float* qr = a.q + (b * a.L + t0 + i) * a.ldq + h0 * a.hd;
        for (int64_t c = 0; c < nh * a.hd; c++) qs[i * per * a.hd + c] = qr[c] * scale;
        for (int64_t j = 0; j < nh; j++) st[i * per + j] = Online();
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      const int64_t off = g * a.hd;  // the KV head's columns
      // The cache: every query of the tile sees all of positions 0..s0-1.
      const float* kc = a.k_cache[b] + off;
      const float* vc = a.v_cache[b] + off;
      for (int64_t j0 = 0; j0 < s0; j0 += kKeyBlock) {
        int64_t nk = std::min(kKeyBlock, s0 - j0);
        for (int64_t j = 0; j < nh; j++)
          for (int64_t i = 0; i < n; i++) attend(nk, kc + j0 * HKV, HKV, vc + j0 * HKV, HKV, i * per + j);
      }
      // The chunk: query i (chunk row t0 + i) sees chunk rows 0..t0+i.
      const float* kb = a.k + b * a.L * a.ldk + off;
      const float* vb = a.v + b * a.L * a.ldv + off;
      for (int64_t j0 = 0; j0 < t0 + n; j0 += kKeyBlock) {
        for (int64_t j = 0; j < nh; j++)
          for (int64_t i = 0; i < n; i++) {
            int64_t nk = std::min(j0 + kKeyBlock, t0 + i + 1) - j0;
            if (nk > 0) attend(nk, kb + j0 * a.ldk, a.ldk, vb + j0 * a.ldv, a.ldv, i * per + j);
          }
      }
      for (int64_t i = 0; i < n; i++) {
        float* o = a.out + (b * a.L + t0 + i) * a.ldo + h0 * a.hd;
        for (int64_t j = 0; j < nh; j++) {
          // Every query sees at least itself, so l > 0.
          float inv = 1.0f / st[i * per + j].l;
          const float* ac = acc.data() + (i * per + j) * a.hd;
          for (int64_t c = 0; c < a.hd; c++) o[j * a.hd + c] = ac[c] * inv;
        }
      }
    }
  });
}

void kv_append(ThreadPool& pool, int64_t B, int64_t L, int64_t HD, const float* k, int64_t ldk, const float* v,
               int64_t ldv, const int32_t* start, float* const* k_cache, float* const* v_cache) {
  size_t bytes = size_t(HD) * sizeof(float);
  pool.parallel_for(B * L, [&](int64_t ib, int64_t ie, int) {
    for (int64_t row = ib; row < ie; row++) {
      int64_t b = row / L, p = int64_t(start[b]) + row % L;
      std::memcpy(k_cache[b] + p * HD, k + row * ldk, bytes);
      std::memcpy(v_cache[b] + p * HD, v + row * ldv, bytes);
    }
  }, 16);
}

}  // namespace taipan::cpu
