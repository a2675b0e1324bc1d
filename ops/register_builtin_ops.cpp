#include "ops.h"

namespace moert {

void register_builtin_ops(OpRegistry& r) {
  ops::register_embedding(r);
  ops::register_norm(r);
  ops::register_linear(r);
  ops::register_elementwise(r);
  ops::register_softmax(r);
  ops::register_argmax(r);
  ops::register_cast(r);
  ops::register_layout(r);
  ops::register_rope(r);
  ops::register_attention(r);
  ops::register_router(r);
  ops::register_moe(r);
}

}  // namespace moert
