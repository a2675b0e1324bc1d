// Registration functions of each op family (one file per family in ops/).
#pragma once

#include "moert/op_registry.h"

namespace moert::ops {

void register_embedding(OpRegistry& r);    // embedding.cpp
void register_norm(OpRegistry& r);         // norm.cpp: rms_norm
void register_linear(OpRegistry& r);       // linear.cpp: linear, matmul
void register_elementwise(OpRegistry& r);  // elementwise.cpp: add, mul, silu, sigmoid, swiglu
void register_softmax(OpRegistry& r);      // softmax.cpp: softmax
void register_argmax(OpRegistry& r);       // argmax.cpp: argmax
void register_cast(OpRegistry& r);         // cast.cpp: cast
void register_layout(OpRegistry& r);       // layout.cpp: reshape, slice, transpose, repeat, concat
void register_rope(OpRegistry& r);         // rope.cpp: rope
void register_attention(OpRegistry& r);    // attention.cpp: attention, masked_softmax, cache_update
void register_router(OpRegistry& r);       // router.cpp: router
void register_moe(OpRegistry& r);          // moe.cpp: moe, routing_dense

}  // namespace moert::ops
