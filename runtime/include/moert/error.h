// moert's one exception type.  Every failure the user can cause (bad file,
// bad shape, missing plugin …) is reported as moert::Error with a message that
// names the file, tensor, node or parameter at fault.
#pragma once

#include <stdexcept>
#include <string>

namespace moert {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws moert::Error with `message` when `condition` is false.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace moert
