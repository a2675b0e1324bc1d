#include "options.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace moert::cuda {
namespace {

// "1", "on", "true", "yes" (any other value, or none, is `otherwise`).
bool env_flag(const char* name, bool otherwise) {
  const char* v = std::getenv(name);
  if (!v || !*v) return otherwise;
  for (const char* yes : {"1", "on", "true", "yes"})
    if (std::strcmp(v, yes) == 0) return true;
  for (const char* no : {"0", "off", "false", "no"})
    if (std::strcmp(v, no) == 0) return false;
  return otherwise;
}

}  // namespace

bool baseline_kernels() {
  static const bool on = env_flag("MOERT_CUDA_BASELINE_KERNELS", false);
  return on;
}

bool graphs_enabled() {
  static const bool on = !baseline_kernels() && env_flag("MOERT_CUDA_GRAPHS", true);
  return on;
}

}  // namespace moert::cuda
