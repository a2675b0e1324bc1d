// The quantization a checkpoint's config.json declares
// (`quantization_config`), checked against what moert reads and against the
// checkpoint's tensors, so that a quantized checkpoint is never run as if it
// were plain, nor a plain one as if it were quantized.
//
// Methods moert reads (CheckpointWeights repacks them at load, same bytes, into
// the row-major layouts of ops/weight_format.h):
//   fp8    F8_E4M3 weights with f32 128x128 block scales `<name>_scale_inv`
//          (DeepSeek-V3: fmt "e4m3", weight_block_size [128, 128]).
//   gptq   4-bit AutoGPTQ / GPTQModel v1 serialisation (checkpoint_format
//          "gptq"): `<module>.qweight` i32 [K/8, N], `.qzeros` i32 [K/g, N/8]
//          (zero - 1 stored), `.scales` f16 [K/g, N], optional `.g_idx` i32 [K]
//          that must be k / g (act-order checkpoints whose g_idx permutes the
//          groups are refused by name); group_size g from the config
//          (default 128 as in transformers; -1: the whole K); sym true or
//          false.
//   awq    4-bit AutoAWQ "gemm" (version "gemm", zero_point true):
//          `<module>.qweight` i32 [K, N/8] packed along N in AWQ's order
//          [0, 2, 4, 6, 1, 3, 5, 7], `.qzeros` i32 [K/g, N/8] (same order, zero
//          as is), `.scales` f16 [K/g, N].
//   mxfp4  OCP MXFP4 (GPT-OSS's storage): `<name>_blocks` u8 [..., N, K/32, 16]
//          (two e2m1 per byte, low nibble first) and `<name>_scales` u8 [...,
//          N, K/32] (e8m0, bias 127), <name> being the weight's name (per
//          expert: `...experts.{e}.gate_proj.weight_blocks`).  Linears stored
//          plain beside them (attention) stay plain.
// Anything else (another method, gptq with bits != 4 or another
// checkpoint_format, awq other than gemm) is refused naming the key.
#pragma once

#include <cstdint>
#include <string>

#include "hf_config.h"
#include "moert/safetensors.h"

namespace moert {

// What config.json declares about the checkpoint's weights.
struct CheckpointQuant {
  std::string method;      // "" (no quantization_config), "fp8", "gptq", "awq", "mxfp4"
  int64_t group_size = 0;  // gptq, awq: K elements per group; -1: the whole K
  bool sym = true;         // gptq
  bool desc_act = false;   // gptq
  std::string config_path;
};

// Checks quantization_config and returns what it declares.  Throws
// moert::Error naming config.json, the key and the value when:
//  - quant_method is one moert does not read, or a parameter of a method
//    it reads is one it does not (gptq bits 8, awq version "gemv" ...);
//  - the config declares a method but the checkpoint's tensors are plain
//    (no F8_E4M3 tensor for fp8, no `*.qweight` for gptq and awq, no
//    `*_blocks` for mxfp4);
//  - quantization_config is not an object, or quant_method is missing.
// No quantization_config: method "" (plain weights, or fp8 tensors whose
// block scales are found by name).
CheckpointQuant check_quantization(const HfConfig& config, const Checkpoint& checkpoint);

}  // namespace moert
