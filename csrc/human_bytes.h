// A byte count for error messages: "3.5 GiB", "256 MiB", "96 KiB", "12 bytes" (three
// significant digits).
#pragma once
#include <cstddef>
#include <sstream>
#include <string>

namespace taipan {

inline std::string human_bytes(size_t n) {
  std::ostringstream s;
  s.precision(3);
  if (n >= (size_t(1) << 30)) s << double(n) / double(size_t(1) << 30) << " GiB";
  else if (n >= (size_t(1) << 20)) s << double(n) / double(size_t(1) << 20) << " MiB";
  else if (n >= (size_t(1) << 10)) s << double(n) / double(size_t(1) << 10) << " KiB";
  else s << n << " bytes";
  return s.str();
}

}  // namespace taipan
