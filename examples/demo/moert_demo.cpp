// moert-demo: lists the backends moert found (and the plugins that failed to
// load, with the reason), then runs an MoE model on every available device — a
// prefill followed by greedy decoding with the KV cache — and prints the
// latency of each next to its largest logit difference from the reference
// backend.  The model is a Hugging Face checkpoint directory (--model) or, by
// default, a small random MoE graph built in memory.
//
//   moert-demo [--model DIR] [--prompt N] [--new M] [--repeat R] [--device NAME]...
//
// The measurement is moert::compare_devices (moert/compare.h); this file
// picks the model and prints the table.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/compare.h"
#include "moert/error.h"
#include "tiny_moe.h"

using namespace moert;

int main(int argc, char** argv) {
  CompareOptions options;
  options.prompt_tokens = 16;
  options.new_tokens = 16;
  options.repeat = 1;
  std::vector<std::string> devices;
  CompareModel model;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--prompt" && i + 1 < argc)
      options.prompt_tokens = std::atoi(argv[++i]);
    else if (a == "--new" && i + 1 < argc)
      options.new_tokens = std::atoi(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc)
      options.repeat = std::atoi(argv[++i]);
    else if (a == "--device" && i + 1 < argc)
      devices.push_back(argv[++i]);
    else if (a == "--model" && i + 1 < argc)
      model.directory = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--model DIR] [--prompt N] [--new M] [--repeat R] [--device "
                   "NAME]...\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    std::printf("Backends\n%s\n", BackendRegistry::global().describe().c_str());
    if (devices.empty()) devices = available_devices();

    demo::TinyMoeConfig config;
    Graph g;
    if (model.directory.empty()) {
      g = demo::build_tiny_moe(config);
      model.graph = &g;
    }
    const Comparison c = compare_devices(model, devices, options);
    if (model.graph) {
      std::printf(
          "Model: random in-memory MoE, %lld layers, hidden %lld, %lld experts (top-%lld), vocab "
          "%lld",
          static_cast<long long>(config.layers), static_cast<long long>(config.hidden),
          static_cast<long long>(config.experts), static_cast<long long>(config.top_k),
          static_cast<long long>(config.vocab));
    } else {
      const ModelInfo& info = c.info;
      std::printf(
          "Model: %s (%s) from %s, %lld layers, hidden %lld, %lld experts (top-%lld), vocab %lld, "
          "weights %s",
          info.architecture.c_str(), info.model_type.c_str(), model.directory.c_str(),
          static_cast<long long>(info.num_layers), static_cast<long long>(info.hidden_size),
          static_cast<long long>(info.num_experts), static_cast<long long>(info.experts_per_token),
          static_cast<long long>(info.vocab_size), info.weight_dtype.c_str());
    }
    std::printf("; prompt %zu tokens, then %lld greedy decode steps\n\n", c.prompt.size(),
                static_cast<long long>(options.new_tokens));

    std::printf("%-14s %12s %12s %14s %14s %10s %16s\n", "device", "prefill ms", "prefill t/s",
                "decode ms p50", "decode ms p95", "fallbacks", "max |dlogit|");
    bool all_ok = true;
    for (const DeviceLatency& d : c.devices) {
      if (!d.error.empty()) {
        std::printf("%-14s failed: %s\n", d.device.c_str(), d.error.c_str());
        all_ok = false;
        continue;
      }
      std::printf("%-14s %12.3f %12.1f %14.3f %14.3f %10zu %16.3g\n", d.device.c_str(),
                  d.prefill_ms(), d.prefill_tok_s(), d.decode_ms_p50(), d.decode_ms_p95(),
                  d.fallbacks, d.max_abs_diff);
      if (!d.agrees) all_ok = false;
    }
    std::printf("\ngenerated tokens (reference):");
    for (int32_t t : c.reference_tokens) std::printf(" %d", t);
    std::printf("\n");
    return all_ok ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "moert-demo: %s\n", e.what());
    return 1;
  }
}
