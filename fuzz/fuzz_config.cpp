// Fuzz target: config.json, read into an architecture spec for every model
// family (runtime/src/models/hf_config.h, architecture.h).
//
// The input is the file's text, read by HfConfig::read from an in-memory
// file; a config that parses goes through arch_from_config (which dispatches
// on model_type, or on architectures[0] without one) and check_sizes (what
// Model::random relies on instead of a checkpoint's shapes).  A spec that
// comes out must be self-consistent: per-layer lists as long as the layer
// count, sizes check_sizes accepted positive, routing that can pick its
// experts, rotary dims within the head.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "json_mutator.h"
#include "models/architecture.h"
#include "models/hf_config.h"

namespace {

using moert_fuzz::guarded;
using moert_fuzz::require;

volatile uint64_t g_sink = 0;

void check_spec(const moert::ArchSpec& a, bool sizes_checked) {
  require(a.layers > 0 && a.vocab > 0 && a.hidden > 0 && a.heads > 0,
          "arch_from_config accepted a non-positive layer, vocabulary, hidden or head count");
  require(a.layer_is_moe.size() == static_cast<size_t>(a.layers),
          "layer_is_moe has " + std::to_string(a.layer_is_moe.size()) + " entries for " +
              std::to_string(a.layers) + " layers");
  require(a.layer_is_sliding.empty() || a.layer_is_sliding.size() == static_cast<size_t>(a.layers),
          "layer_is_sliding has " + std::to_string(a.layer_is_sliding.size()) + " entries for " +
              std::to_string(a.layers) + " layers");
  require(a.kv_heads > 0 && a.heads % a.kv_heads == 0, "kv heads do not divide the heads");
  int64_t sliding = 0, moe = 0;
  for (int64_t l = 0; l < a.layers; ++l) {
    sliding += a.sliding(l) ? 1 : 0;
    moe += a.layer_is_moe[static_cast<size_t>(l)] ? 1 : 0;
  }
  g_sink = g_sink + static_cast<uint64_t>(sliding + moe) + a.notes.size();
  if (!sizes_checked) return;
  require(a.max_position_embeddings > 0, "check_sizes accepted max_position_embeddings <= 0");
  require(a.mla || a.head_dim > 0, "check_sizes accepted head_dim <= 0");
  require(a.rope.rotary_dim % 2 == 0, "check_sizes accepted an odd rotary dim");
  if (moe > 0) {
    require(a.experts > 0 && a.expert_intermediate > 0,
            "check_sizes accepted MoE layers without experts");
    require(a.router.top_k >= 1 && a.router.top_k <= a.experts,
            "check_sizes accepted top_k outside [1, experts]");
  }
  if (moe < a.layers) require(a.dense_intermediate > 0, "check_sizes accepted dense layers of 0");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moert_fuzz::MemFile file("moert-fuzz-config");
  file.write(data, size);
  guarded("config.json", [&] {
    const moert::HfConfig config = moert::HfConfig::read(file.path());
    const moert::ArchSpec arch = moert::arch_from_config(config);
    require(!arch.model_type.empty(), "arch_from_config left model_type empty");
    check_spec(arch, false);
    moert::check_sizes(config, arch);
    check_spec(arch, true);
  });
  return 0;
}

// Half of the mutations edit the JSON document (json_mutator.h).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return moert_fuzz::mutate_json_input(data, size, max_size, seed);
}
