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
#include "online_softmax.h"

namespace taipan::cpu {

namespace {

constexpr int64_t kTileQueries = 16;
constexpr int64_t kKeyBlock = 64;

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
    std::vector<OnlineSoftmax> st(kTileQueries * per);
    auto attend = [&](int64_t n, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t slot) {
      float* q = qs.data() + slot * a.hd;
      float* ac = acc.data() + slot * a.hd;
      if (vec) attend_block_avx2(n, StridedRows{k, ldk}, StridedRows{v, ldv}, q, a.hd, s.data(), st[slot], ac);
      else attend_block(n, StridedRows{k, ldk}, StridedRows{v, ldv}, q, a.hd, s.data(), st[slot], ac);
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
        for (int64_t j = 0; j < nh; j++) st[i * per + j] = OnlineSoftmax();
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
