// How messages about an op's attributes print a number: with every digit
// that tells one double from another (%.17g), so a message names exactly the
// value given.  Used by the headers ops/ and the plugins both include.
#pragma once

#include <cstdio>
#include <string>

namespace moert::ops {

inline std::string number_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace moert::ops
