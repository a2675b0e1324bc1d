// The quantization a checkpoint's config.json declares
// (`quantization_config`), checked against what moert reads and against the
// checkpoint's tensors, so that a quantized checkpoint is never run as if it
// were plain, nor a plain one as if it were quantized.
#pragma once

#include "hf_config.h"
#include "moert/safetensors.h"

namespace moert {

// Throws moert::Error naming config.json, the key and the value when:
//  - quant_method is one moert does not read (every method but "fp8", the
//    F8_E4M3 weights with 128x128 block scales of DeepSeek-V3: fmt "e4m3",
//    weight_block_size [128, 128]);
//  - the config declares fp8 but no tensor of the checkpoint is F8_E4M3;
//  - quantization_config is not an object, or quant_method is missing.
// No quantization_config: nothing to check (plain weights, or fp8 tensors
// whose block scales are found by name).
void check_quantization(const HfConfig& config, const Checkpoint& checkpoint);

}  // namespace moert
