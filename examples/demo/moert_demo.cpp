// moert-demo: lists the backends moert found (and the plugins that failed to
// load, with the reason), then runs an MoE model on every available device — a
// prefill followed by greedy decoding with the KV cache — and prints the
// latency of each next to its largest logit difference from the reference
// backend.  The model is a Hugging Face checkpoint directory (--model) or, by
// default, a small random MoE graph built in memory.
//
//   moert-demo [--model DIR] [--prompt N] [--new M] [--device NAME]...
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/executor.h"
#include "moert/model.h"
#include "tiny_moe.h"

using namespace moert;

namespace {

struct Result {
  std::string device;
  double prefill_ms = 0;
  std::vector<double> decode_ms;
  double max_abs_diff = 0;
  size_t fallbacks = 0;
  std::vector<int32_t> tokens;
  std::vector<Tensor> logits;  // per step
};

Tensor ints(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::i32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

int32_t argmax_last_row(const Tensor& logits) {
  int64_t vocab = logits.dim(1), row = logits.dim(0) - 1;
  const float* p = logits.data_as<float>() + row * vocab;
  return static_cast<int32_t>(std::max_element(p, p + vocab) - p);
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(
      std::min<double>(v.size() - 1, std::floor(q * (v.size() - 1) + 0.5)))];
}

// Runs prompt + greedy decoding.  With `forced` (the reference's tokens) the
// same tokens are fed, so that logits are comparable step by step.
// The model to run: a checkpoint directory, else the in-memory graph.
struct ModelSource {
  std::string directory;
  const Graph* graph = nullptr;
};

Result run_device(const ModelSource& source, const std::string& device,
                  const std::vector<int32_t>& prompt, int new_tokens, const Result* forced) {
  using clock = std::chrono::steady_clock;
  Result r;
  r.device = device;
  std::unique_ptr<Model> model;
  std::unique_ptr<Executor> own;
  if (!source.directory.empty()) {
    LoadOptions lo;
    lo.device = device;
    model = Model::load(source.directory, lo);
  } else {
    own = std::make_unique<Executor>(*source.graph, ExecutorOptions{device});
  }
  Executor& exe = model ? model->executor() : *own;
  r.fallbacks = exe.fallbacks().size();
  std::vector<int32_t> positions(prompt.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  // One untimed prefill first: it compiles the backend's kernels for these
  // shapes (oneDNN primitives, OpenCL programs) and lays out the memory plan.
  // It writes the same cache positions the timed prefill then overwrites.
  exe.run({ints(prompt), ints(positions)},
          SymbolValues::of(static_cast<int64_t>(prompt.size()), 0));
  auto t0 = clock::now();
  Tensor logits = exe.run({ints(prompt), ints(positions)},
                          SymbolValues::of(static_cast<int64_t>(prompt.size()), 0))[0];
  r.prefill_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  r.logits.push_back(logits);
  int64_t past = static_cast<int64_t>(prompt.size());
  for (int step = 0; step < new_tokens; ++step) {
    int32_t next = forced ? forced->tokens[static_cast<size_t>(step)] : argmax_last_row(logits);
    r.tokens.push_back(next);
    auto t1 = clock::now();
    logits =
        exe.run({ints({next}), ints({static_cast<int32_t>(past)})}, SymbolValues::of(1, past))[0];
    r.decode_ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t1).count());
    r.logits.push_back(logits);
    ++past;
  }
  if (forced) {
    for (size_t s = 0; s < r.logits.size(); ++s) {
      std::vector<double> a = r.logits[s].to_doubles(), b = forced->logits[s].to_doubles();
      for (size_t i = 0; i < a.size(); ++i)
        r.max_abs_diff =
            std::max(r.max_abs_diff, std::isnan(a[i]) ? INFINITY : std::fabs(a[i] - b[i]));
    }
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int prompt_len = 16, new_tokens = 16;
  std::vector<std::string> devices;
  ModelSource source;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--prompt" && i + 1 < argc)
      prompt_len = std::atoi(argv[++i]);
    else if (a == "--new" && i + 1 < argc)
      new_tokens = std::atoi(argv[++i]);
    else if (a == "--device" && i + 1 < argc)
      devices.push_back(argv[++i]);
    else if (a == "--model" && i + 1 < argc)
      source.directory = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--model DIR] [--prompt N] [--new M] [--device NAME]...\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    BackendRegistry& registry = BackendRegistry::global();
    std::printf("Backends\n%s\n", registry.describe().c_str());
    if (devices.empty())
      for (const auto& b : registry.backends())
        if (b->available())
          for (int32_t d = 0; d < b->device_count(); ++d)
            devices.push_back(b->name() + ":" + std::to_string(d));

    demo::TinyMoeConfig config;
    Graph g;
    int64_t vocab = config.vocab;
    if (source.directory.empty()) {
      g = demo::build_tiny_moe(config);
      source.graph = &g;
      std::printf(
          "Model: random in-memory MoE, %lld layers, hidden %lld, %lld experts (top-%lld), vocab "
          "%lld",
          static_cast<long long>(config.layers), static_cast<long long>(config.hidden),
          static_cast<long long>(config.experts), static_cast<long long>(config.top_k),
          static_cast<long long>(config.vocab));
    } else {
      ModelInfo info = Model::load(source.directory, {})->info();
      vocab = info.vocab_size;
      std::printf(
          "Model: %s (%s) from %s, %lld layers, hidden %lld, %lld experts (top-%lld), vocab %lld, "
          "weights %s",
          info.architecture.c_str(), info.model_type.c_str(), source.directory.c_str(),
          static_cast<long long>(info.num_layers), static_cast<long long>(info.hidden_size),
          static_cast<long long>(info.num_experts), static_cast<long long>(info.experts_per_token),
          static_cast<long long>(info.vocab_size), info.weight_dtype.c_str());
    }
    std::printf("; prompt %d tokens, then %d greedy decode steps\n\n", prompt_len, new_tokens);
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int i = 0; i < prompt_len; ++i)
      prompt[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 + 11) % vocab);

    Result reference = run_device(source, "reference", prompt, new_tokens, nullptr);
    std::printf("%-14s %12s %12s %14s %14s %10s %16s\n", "device", "prefill ms", "prefill t/s",
                "decode ms p50", "decode ms p95", "fallbacks", "max |dlogit|");
    bool all_ok = true;
    for (const std::string& device : devices) {
      try {
        Result r = run_device(source, device, prompt, new_tokens, &reference);
        std::printf("%-14s %12.3f %12.1f %14.3f %14.3f %10zu %16.3g\n", r.device.c_str(),
                    r.prefill_ms, prompt_len / (r.prefill_ms / 1000.0),
                    percentile(r.decode_ms, 0.5), percentile(r.decode_ms, 0.95), r.fallbacks,
                    r.max_abs_diff);
        if (!(r.max_abs_diff <= 1e-3)) all_ok = false;
      } catch (const Error& e) {
        std::printf("%-14s failed: %s\n", device.c_str(), e.what());
        all_ok = false;
      }
    }
    std::printf("\ngenerated tokens (reference):");
    for (int32_t t : reference.tokens) std::printf(" %d", t);
    std::printf("\n");
    return all_ok ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "moert-demo: %s\n", e.what());
    return 1;
  }
}
