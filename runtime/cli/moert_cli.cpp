// moert: the command-line front end.
//
//   moert info [MODEL_DIR] [--no-roofline]
//                                   backends found (and plugins that failed), a model's summary
//                                   with the host CPU's decode roofline (weight bytes per token
//                                   / measured read bandwidth; --no-roofline skips the ~1 s
//                                   measurement)
//   moert run MODEL_DIR [options]   prefill a prompt, decode, print tokens and timings
//
// run options: --backend NAME (default reference)  --prompt-ids 1,2,3  --max-new-tokens N
//   --temperature T --top-k K --top-p P --seed S --stop 2,7  --dtype f32|bf16|f16
//   --max-context N  --strict  --logits-out FILE.npy (every logit row: the prompt's, then one
//   per decode step, float32 [rows, vocab])
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "moert/bandwidth.h"
#include "moert/error.h"
#include "moert/model.h"

using namespace moert;

namespace {

std::vector<int32_t> parse_ids(const std::string& s, const char* flag) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      out.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw Error(std::string(flag) + ": '" + item + "' is not an integer");
    }
  }
  return out;
}

// NumPy .npy (format 1.0) of a float32 matrix.
void write_npy(const std::string& path, const std::vector<float>& data, int64_t rows,
               int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  check(out.good(), path + ": cannot write");
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(float)));
  check(out.good(), path + ": write failed");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void print_info(const ModelInfo& i) {
  std::printf("model: %s (%s), %lld layers, hidden %lld, vocab %lld", i.architecture.c_str(),
              i.model_type.c_str(), static_cast<long long>(i.num_layers),
              static_cast<long long>(i.hidden_size), static_cast<long long>(i.vocab_size));
  if (i.num_experts > 0)
    std::printf(", %lld experts (top-%lld)", static_cast<long long>(i.num_experts),
                static_cast<long long>(i.experts_per_token));
  std::printf(", weights %s, max context %lld\n", i.weight_dtype.c_str(),
              static_cast<long long>(i.max_context));
}

int run(int argc, char** argv) {
  if (argc < 1) throw Error("run: MODEL_DIR is required");
  std::string dir = argv[0];
  LoadOptions load;
  GenerateOptions gen;
  std::vector<int32_t> prompt = {1};
  std::string logits_out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--backend")
      load.device = value();
    else if (a == "--prompt-ids")
      prompt = parse_ids(value(), "--prompt-ids");
    else if (a == "--max-new-tokens")
      gen.max_new_tokens = std::stoll(value());
    else if (a == "--temperature")
      gen.sampling.temperature = std::stod(value());
    else if (a == "--top-k")
      gen.sampling.top_k = std::stoll(value());
    else if (a == "--top-p")
      gen.sampling.top_p = std::stod(value());
    else if (a == "--seed")
      gen.sampling.seed = std::stoull(value());
    else if (a == "--stop")
      gen.stop_tokens = parse_ids(value(), "--stop");
    else if (a == "--max-context")
      load.max_context = std::stoll(value());
    else if (a == "--strict")
      load.strict = true;
    else if (a == "--logits-out")
      logits_out = value();
    else if (a == "--dtype") {
      std::string d = value();
      auto t = dtype_from_name(d);
      if (!t) throw Error("--dtype: unknown dtype '" + d + "'");
      load.dtype = *t;
    } else {
      throw Error("run: unknown option '" + a + "'");
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model = Model::load(dir, load);
  double load_ms = ms_since(t0);
  print_info(model->info());
  if (!model->executor().fallbacks().empty())
    std::printf("%s", model->executor().placement_report().c_str());

  const int64_t vocab = model->info().vocab_size;
  std::vector<float> rows;  // every logit row, for --logits-out
  TokenGenerator gen_steps = model->generator(prompt, gen);
  std::vector<double> step_ms;
  std::vector<int32_t> out;
  while (true) {
    t0 = std::chrono::steady_clock::now();
    std::optional<int32_t> next = gen_steps.next();
    if (!next) break;
    step_ms.push_back(ms_since(t0));
    out.push_back(*next);
    const Tensor& logits = gen_steps.last_logits();
    rows.insert(rows.end(), logits.data_as<float>(), logits.data_as<float>() + logits.numel());
  }
  double prefill_ms = step_ms.empty() ? 0 : step_ms.front();
  std::vector<double> decode_ms(step_ms.begin() + (step_ms.empty() ? 0 : 1), step_ms.end());
  std::printf("tokens:");
  for (int32_t t : out) std::printf(" %d", t);
  std::printf("\n");
  std::sort(decode_ms.begin(), decode_ms.end());
  double p50 = decode_ms.empty() ? 0 : decode_ms[decode_ms.size() / 2];
  std::printf(
      "load %.1f ms; prefill %zu tokens %.2f ms (%.1f tok/s); decode %zu steps, %.3f ms/token p50 "
      "on %s\n",
      load_ms, prompt.size(), prefill_ms, prompt.size() / (prefill_ms / 1000.0), decode_ms.size(),
      p50, load.device.c_str());
  if (!logits_out.empty())
    write_npy(logits_out, rows, static_cast<int64_t>(rows.size()) / vocab, vocab);
  return 0;
}

int info(int argc, char** argv) {
  std::string model_dir;
  bool roofline = true;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-roofline") == 0)
      roofline = false;
    else if (argv[i][0] == '-' || !model_dir.empty())
      throw Error(std::string("info: unexpected argument '") + argv[i] + "'");
    else
      model_dir = argv[i];
  }
  std::printf("%s", BackendRegistry::global().describe().c_str());
  if (!model_dir.empty()) {
    std::unique_ptr<Model> model = Model::load(model_dir, {});
    print_info(model->info());
    const ModelSummary summary = model->summary();
    std::printf("%s", summary.str().c_str());
    if (roofline) {
      // A decode step reads its weights at least once: bytes per token over
      // the host's read bandwidth bounds the CPU's time per token from below.
      const double bw = measure_read_bandwidth().bytes_per_second;
      const double seconds = bw > 0 ? static_cast<double>(summary.bytes_per_token) / bw : 0.0;
      std::printf(
          "decode roofline (host CPU): %.2f MB per token / %.1f GB/s measured read bandwidth = "
          "%.4f ms/token (at most %.0f tok/s)\n",
          static_cast<double>(summary.bytes_per_token) / 1e6, bw / 1e9, seconds * 1e3,
          seconds > 0 ? 1.0 / seconds : 0.0);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (std::strcmp(argv[1], "run") != 0 && std::strcmp(argv[1], "info") != 0)) {
    std::fprintf(stderr,
                 "usage: moert info [MODEL_DIR] [--no-roofline]\n       moert run MODEL_DIR "
                 "[--backend NAME] "
                 "[--prompt-ids 1,2,3] [--max-new-tokens N] [--temperature T] [--top-k K]\n"
                 "                 [--top-p P] [--seed S] [--stop IDS] [--dtype f32|bf16|f16] "
                 "[--max-context N] [--strict] [--logits-out FILE.npy]\n");
    return 2;
  }
  try {
    return std::strcmp(argv[1], "run") == 0 ? run(argc - 2, argv + 2) : info(argc - 2, argv + 2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moert: %s\n", e.what());
    return 1;
  }
}
