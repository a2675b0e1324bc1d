// The input slots of a moe node, in the order ops/moe.cpp's schema defines
// them; the in-tree plugins index a node's inputs with these names.
#pragma once

#include <cstddef>

namespace moert::plugin::moe_inputs {

enum : size_t {
  kX,          // [T, H] activations
  kIds,        // [T, k] chosen experts
  kWeights,    // [T, k] routing weights
  kGate,       // [E, I, H] routed experts
  kUp,         // [E, I, H]
  kDown,       // [E, H, I]
  kGateScale,  // f8_e4m3 block scales of the three
  kUpScale,
  kDownScale,
  kSharedGate,       // [Is, H] shared experts (optional)
  kSharedUp,         // [Is, H]
  kSharedDown,       // [H, Is]
  kSharedGateScale,  // their block scales
  kSharedUpScale,
  kSharedDownScale,
  kSharedExpertGate,  // [H] sigmoid gate of the shared output (optional)
  kGateBias,          // [E, I] routed experts' biases (version 3, optional,
  kUpBias,            // [E, I]  f32, bf16 or f16)
  kDownBias,          // [E, H]
};

}  // namespace moert::plugin::moe_inputs
