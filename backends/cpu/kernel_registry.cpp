#include <cstring>
#include <vector>

#include "kernel.h"

namespace moert::cpu {
namespace {

// A function-local static, so registrations from other files' static
// initialisers never run before the table exists.
std::vector<KernelDef>& table() {
  static std::vector<KernelDef> defs;
  return defs;
}

}  // namespace

void register_kernel(const KernelDef& def) { table().push_back(def); }

const KernelDef* find_kernel(const char* op) {
  for (const KernelDef& d : table())
    if (std::strcmp(d.op, op) == 0) return &d;
  return nullptr;
}

}  // namespace moert::cpu
