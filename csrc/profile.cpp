#include "profile.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace taipan::profile {
namespace {
std::atomic<bool> g_on{[] {
  const char* v = std::getenv("TAIPAN_PROFILE");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}()};
std::mutex g_mu;
std::map<std::string, OpStats> g_stats;
}  // namespace

bool enabled() { return g_on.load(std::memory_order_relaxed); }
void set_enabled(bool on) { g_on.store(on); }

void record(const std::string& op, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  OpStats& s = g_stats[op];
  s.calls++;
  s.seconds += seconds;
}

std::map<std::string, OpStats> snapshot(bool reset) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto copy = g_stats;
  if (reset) g_stats.clear();
  return copy;
}

}  // namespace taipan::profile
