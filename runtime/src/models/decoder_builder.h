// Builds the moert graph of a Hugging Face decoder (any ArchSpec) with the
// weights of a checkpoint, or of any other WeightSource, as constants.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "architecture.h"
#include "moert/graph.h"
#include "moert/safetensors.h"
#include "weight_source.h"

namespace moert {

struct BuildOptions {
  DType activation_dtype = DType::f32;
  DType kv_dtype = DType::f32;  // the KV caches' element type
  int64_t max_context = 0;      // positions of one sequence
  // The KV cache is one pool of kv_blocks blocks of kv_block_size positions
  // that up to max_sequences sequences share (paged attention): each
  // sequence's block_table row lists its blocks.
  int64_t kv_block_size = 64;
  int64_t kv_blocks = 0;  // 0: enough for max_context
  int64_t max_sequences = 1;
  // Products in the weights' precision (LoadOptions::precision "fast"): with
  // f32 activations, every linear and moe node whose weights are narrower
  // than f32 gets the attribute products = "bf16" (ops/linear.cpp), or
  // "int8" when they are packed (x quantised per block of 32, as llama.cpp
  // meets Q4_0/Q8_0 weights), except the routers' linears, whose near-ties
  // between experts a rounding of the hidden state could flip.
  bool bf16_products = false;
  // DeepSeek's MLA: "latent" caches the normalised c_kv and the roped k_pe
  // of each position (one KV head of kv_lora_rank + qk_rope_head_dim) and
  // attends with W_UK folded into the query and W_UV applied after;
  // "expanded" caches every head's full key and value.
  std::string mla_cache = "latent";
  // Filled by the builder when the weight source fills its tensors only
  // after the build (random weights): work to run once it has (constants
  // derived from others).  Run by the caller after WeightSource::after_build.
  std::vector<std::function<void()>>* after_fill = nullptr;
  // LoadOptions::interrupted, asked after each layer (optional).
  std::function<bool()> interrupted;
};

// Graph inputs: ids i32[T], positions i32[T] (each token's position in its
// sequence), sequences i32[T] (each token's row of the block table),
// block_table i32[max_sequences, ceil(max_context / kv_block_size)] and
// logit_rows i32[R] (the tokens whose logits are wanted); output: logits
// f32[R, vocab], row i for token logit_rows[i].
// Missing or wrongly shaped tensors throw moert::Error naming the tensor, the
// shape expected from config.json and the checkpoint directory.
Graph build_decoder(const ArchSpec& arch, const Checkpoint& checkpoint,
                    const BuildOptions& options);
// The same graph with the weights `weights` gives (see weight_source.h).
Graph build_decoder(const ArchSpec& arch, WeightSource& weights, const BuildOptions& options);

}  // namespace moert
