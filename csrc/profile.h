// Per-op wall-clock profile of executed work, off unless asked for (TAIPAN_PROFILE=1 or
// addon.setProfiling(true)), like llama.cpp's perf counters: where does a token's time go?
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace taipan::profile {

struct OpStats {
  uint64_t calls = 0;
  double seconds = 0;
};

bool enabled();
void set_enabled(bool on);
void record(const std::string& op, double seconds);
// A copy of the counters; `reset` clears them.
std::map<std::string, OpStats> snapshot(bool reset);

}  // namespace taipan::profile
