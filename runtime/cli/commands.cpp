#include "commands.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "moert/backend_registry.h"
#include "moert/bandwidth.h"
#include "moert/compare.h"
#include "moert/error.h"

namespace moert::cli {

namespace {

const char* const kUsage =
    "usage: moert info [MODEL_DIR] [--backend NAME] [--quantize int8|int4|mxfp4] [--no-roofline]\n"
    "                  [--no-progress]\n"
    "       moert run MODEL_DIR [--backend NAME] [--prompt TEXT | --prompt-ids 1,2,3]\n"
    "                 [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                 [--stop IDS] [--dtype f32|bf16|f16] [--quantize int8|int4|mxfp4]\n"
    "                 [--precision fast|exact] [--kv-dtype f32|bf16|f16|fp8] [--max-context N]\n"
    "                 [--mla-cache latent|expanded] [--strict] [--logits-out FILE.npy]\n"
    "                 [--no-progress]\n";

// A mistake in the command line: reported with the usage, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename Number>
Number parse_number(const std::string& option, const std::string& value,
                    Number (*convert)(const std::string&, size_t*)) {
  try {
    size_t used = 0;
    const Number v = convert(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  throw UsageError("argument " + option + ": invalid value '" + value + "'");
}

int64_t parse_int(const std::string& option, const std::string& value) {
  return parse_number<long long>(
      option, value, [](const std::string& s, size_t* used) { return std::stoll(s, used); });
}

double parse_real(const std::string& option, const std::string& value) {
  return parse_number<double>(
      option, value, [](const std::string& s, size_t* used) { return std::stod(s, used); });
}

// --quantize's value: "int8", "int4" or "mxfp4".
std::string parse_quantize(const std::string& value) {
  if (value != "int8" && value != "int4" && value != "mxfp4")
    throw UsageError("argument --quantize: must be int8, int4 or mxfp4, got '" + value + "'");
  return value;
}

std::vector<int32_t> parse_ids(const std::string& option, const std::string& value) {
  std::vector<int32_t> out;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(static_cast<int32_t>(parse_int(option, item)));
  return out;
}

std::string format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

// The options of a command, one at a time: each flag, then its value.
class Arguments {
 public:
  Arguments(const std::vector<std::string>& args, size_t first) : args_(args), i_(first) {}
  bool done() const { return i_ >= args_.size(); }
  const std::string& next() { return args_[i_++]; }
  const std::string& value(const std::string& flag) {
    if (done()) throw UsageError("argument " + flag + ": expected one argument");
    return next();
  }

 private:
  const std::vector<std::string>& args_;
  size_t i_;
};

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

void print_info(std::ostream& out, const ModelInfo& i) {
  out << "model: " << i.architecture << " (" << i.model_type << "), " << i.num_layers
      << " layers, hidden " << i.hidden_size << ", vocab " << i.vocab_size;
  if (i.num_experts > 0)
    out << ", " << i.num_experts << " experts (top-" << i.experts_per_token << ")";
  out << ", weights " << i.weight_dtype << ", max context " << i.max_context << "\n";
  for (const std::string& note : i.notes) out << "note: " << note << "\n";
}

void print_tokens(std::ostream& out, const char* label, const std::vector<int32_t>& tokens) {
  out << label;
  for (int32_t t : tokens) out << " " << t;
  out << "\n";
}

int run(const std::vector<std::string>& args, std::ostream& out, const Hooks& hooks) {
  Arguments a(args, 1);
  if (a.done()) throw UsageError("run: MODEL_DIR is required");
  const std::string dir = a.next();
  LoadOptions load;
  GenerateOptions gen;
  std::vector<int32_t> prompt = {1};
  std::string prompt_flag, text, logits_out;
  bool progress = true;
  while (!a.done()) {
    const std::string flag = a.next();
    if (flag == "--prompt" || flag == "--prompt-ids") {
      if (!prompt_flag.empty() && prompt_flag != flag)
        throw UsageError("argument " + flag + ": not allowed with argument " + prompt_flag);
      prompt_flag = flag;
      if (flag == "--prompt")
        text = a.value(flag);
      else
        prompt = parse_ids(flag, a.value(flag));
    } else if (flag == "--backend") {
      load.device = a.value(flag);
    } else if (flag == "--max-new-tokens") {
      gen.max_new_tokens = parse_int(flag, a.value(flag));
    } else if (flag == "--temperature") {
      gen.sampling.temperature = parse_real(flag, a.value(flag));
    } else if (flag == "--top-k") {
      gen.sampling.top_k = parse_int(flag, a.value(flag));
    } else if (flag == "--top-p") {
      gen.sampling.top_p = parse_real(flag, a.value(flag));
    } else if (flag == "--seed") {
      gen.sampling.seed = static_cast<uint64_t>(parse_int(flag, a.value(flag)));
    } else if (flag == "--stop") {
      gen.stop_tokens = parse_ids(flag, a.value(flag));
    } else if (flag == "--max-context") {
      load.max_context = parse_int(flag, a.value(flag));
    } else if (flag == "--strict") {
      load.strict = true;
    } else if (flag == "--no-progress") {
      progress = false;
    } else if (flag == "--logits-out") {
      logits_out = a.value(flag);
    } else if (flag == "--quantize") {
      load.quantize = parse_quantize(a.value(flag));
    } else if (flag == "--precision") {
      load.precision = a.value(flag);
      if (load.precision != "fast" && load.precision != "exact")
        throw UsageError("argument --precision: must be fast or exact, got '" + load.precision +
                         "'");
    } else if (flag == "--mla-cache") {
      load.mla_cache = a.value(flag);
      if (load.mla_cache != "latent" && load.mla_cache != "expanded")
        throw UsageError("argument --mla-cache: must be latent or expanded, got '" +
                         load.mla_cache + "'");
    } else if (flag == "--kv-dtype") {
      load.kv_dtype = a.value(flag);
      if (load.kv_dtype != "f32" && load.kv_dtype != "bf16" && load.kv_dtype != "f16" &&
          load.kv_dtype != "fp8")
        throw UsageError("argument --kv-dtype: must be f32, bf16, f16 or fp8, got '" +
                         load.kv_dtype + "'");
    } else if (flag == "--dtype") {
      const std::string d = a.value(flag);
      const std::optional<DType> t = dtype_from_name(d);
      if (!t) throw UsageError("argument --dtype: unknown dtype '" + d + "'");
      load.dtype = *t;
    } else {
      throw UsageError("run: unknown option '" + flag + "'");
    }
  }
  const bool text_prompt = prompt_flag == "--prompt";
  if (text_prompt) {
    check(hooks.encode && hooks.decode,
          "--prompt needs a tokenizer: give token ids with --prompt-ids, or run `python -m "
          "moert run`, which reads the checkpoint's tokenizer.json");
    prompt = hooks.encode(dir, text);
  }
  if (progress) load.progress = hooks.progress;

  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model = Model::load(dir, load);
  const double load_ms = ms_since(t0);

  std::vector<float> rows;  // every logit row, for --logits-out
  TokenGenerator steps = model->generator(prompt, gen);
  std::vector<double> step_ms;
  std::vector<int32_t> tokens;
  while (true) {
    t0 = std::chrono::steady_clock::now();
    std::optional<int32_t> next = steps.next();
    if (!next) break;
    step_ms.push_back(ms_since(t0));
    tokens.push_back(*next);
    const Tensor& logits = steps.last_logits();
    rows.insert(rows.end(), logits.data_as<float>(), logits.data_as<float>() + logits.numel());
  }
  const double prefill_ms = step_ms.empty() ? 0 : step_ms.front();
  const std::vector<double> decode_ms(step_ms.begin() + (step_ms.empty() ? 0 : 1), step_ms.end());

  print_tokens(out, "tokens:", tokens);
  if (text_prompt) out << "text: " << hooks.decode(dir, tokens) << "\n";
  out << format("load %.1f ms; ", load_ms) << "prefill " << prompt.size() << " tokens "
      << format("%.2f ms (%.1f tok/s); ", prefill_ms,
                static_cast<double>(prompt.size()) / (prefill_ms / 1000.0))
      << "decode " << decode_ms.size() << " steps, "
      << format("%.3f ms/token p50", percentile(decode_ms, 0.5)) << " on " << load.device << "\n";
  print_info(out, model->info());
  if (!model->executor().fallbacks().empty()) out << model->executor().placement_report();
  if (!logits_out.empty()) {
    const int64_t vocab = model->info().vocab_size;
    write_npy(logits_out, rows, static_cast<int64_t>(rows.size()) / vocab, vocab);
  }
  return 0;
}

int info(const std::vector<std::string>& args, std::ostream& out, const Hooks& hooks) {
  std::string model_dir;
  LoadOptions load;
  load.progress = hooks.progress;
  bool roofline = true;
  for (Arguments a(args, 1); !a.done();) {
    const std::string arg = a.next();
    if (arg == "--no-roofline")
      roofline = false;
    else if (arg == "--backend")
      load.device = a.value(arg);
    else if (arg == "--quantize")
      load.quantize = parse_quantize(a.value(arg));
    else if (arg == "--no-progress")
      load.progress = nullptr;
    else if (arg.starts_with("-") || !model_dir.empty())
      throw UsageError("info: unexpected argument '" + arg + "'");
    else
      model_dir = arg;
  }
  const BackendRegistry& registry = BackendRegistry::global();
  out << registry.describe();
  for (const auto& b : registry.backends())
    for (int32_t d = 0; b->available() && d < b->device_count(); ++d) {
      const std::string supports = b->device_info(d).capabilities;
      if (!supports.empty()) out << b->name() << ":" << d << " supports: " << supports << "\n";
    }
  if (model_dir.empty()) {
    std::string types;
    for (const std::string& t : supported_model_types()) types += (types.empty() ? "" : ", ") + t;
    out << "model types: " << types << "\n";
    return 0;
  }
  std::unique_ptr<Model> model = Model::load(model_dir, load);
  print_info(out, model->info());
  const ModelSummary summary = model->summary();
  out << summary.str();
  if (roofline) out << summary.roofline_str(measure_read_bandwidth().bytes_per_second);
  return 0;
}

}  // namespace

int run_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
                const Hooks& hooks) {
  try {
    const std::string command = args.empty() ? "" : args[0];
    for (const std::string& arg : args)
      if (arg == "-h" || arg == "--help") {
        out << kUsage;
        return 0;
      }
    if (command == "run") return run(args, out, hooks);
    if (command == "info") return info(args, out, hooks);
    throw UsageError(command.empty() ? "a command is required"
                                     : "unknown command '" + command + "'");
  } catch (const UsageError& e) {
    out.flush();
    err << "moert: " << e.what() << "\n" << kUsage;
    return 2;
  }
}

}  // namespace moert::cli
