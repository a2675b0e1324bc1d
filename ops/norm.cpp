// Placeholder, replaced by the op family's definitions.
#include "ops.h"

namespace moert::ops {

void register_norm(OpRegistry&) {}

}  // namespace moert::ops
