// Placeholder, replaced by the op family's definitions.
#include "ops.h"

namespace moert::ops {

void register_argmax(OpRegistry&) {}

}  // namespace moert::ops
