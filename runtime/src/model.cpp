#include "moert/model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "models/architecture.h"
#include "models/decoder_builder.h"
#include "models/quantization.h"
#include "models/random_weights.h"
#include "moert/error.h"
#include "moert/safetensors.h"

namespace moert {

namespace {

Tensor ints(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::i32, {static_cast<int64_t>(v.size())});
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// The constants of a graph (its weights) by dtype, as "bf16" or the mix by
// share of bytes: "fp8 e4m3 61%, bf16 37%, f32 2%".
std::string weight_dtype_of(const Graph& g) {
  std::map<DType, uint64_t> bytes;
  uint64_t total = 0;
  for (const Value& v : g.values())
    if (v.kind == ValueKind::constant) {
      bytes[v.data.dtype()] += v.data.nbytes();
      total += v.data.nbytes();
    }
  std::vector<std::pair<uint64_t, DType>> order;
  for (const auto& [d, b] : bytes) order.emplace_back(b, d);
  std::sort(order.rbegin(), order.rend());
  auto name = [](DType d) {
    return d == DType::f8_e4m3 ? std::string("fp8 e4m3") : std::string(dtype_name(d));
  };
  if (order.size() == 1) return name(order[0].second);
  std::string out;
  for (const auto& [b, d] : order) {
    int pct = total ? static_cast<int>((100 * b + total / 2) / total) : 0;
    if (pct == 0) continue;
    out += (out.empty() ? "" : ", ") + name(d) + " " + std::to_string(pct) + "%";
  }
  return out;
}

// Bytes of every constant (the weights) of a graph.
uint64_t constant_bytes(const Graph& g) {
  uint64_t n = 0;
  for (const Value& v : g.values())
    if (v.kind == ValueKind::constant) n += v.data.nbytes();
  return n;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& directory, const LoadOptions& options) {
  namespace fs = std::filesystem;
  check(fs::is_directory(directory), directory + ": not a directory");
  HfConfig config = HfConfig::read((fs::path(directory) / "config.json").string());
  ArchSpec arch = arch_from_config(config);
  Checkpoint checkpoint = Checkpoint::open(directory);
  check_quantization(config, checkpoint);
  CheckpointWeights weights(checkpoint);
  return build(arch, config.path(), weights, options);
}

std::unique_ptr<Model> Model::random(const std::string& config_json, const RandomWeights& weights,
                                     const LoadOptions& options) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(config_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(weights.name + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), weights.name + ": the config must be a JSON object");
  HfConfig config(std::move(j), weights.name);
  ArchSpec arch = arch_from_config(config);
  check_sizes(config, arch);  // no stored shapes to check them against
  RandomWeightSource source(arch, weights);
  return build(arch, config.path(), source, options);
}

std::unique_ptr<Model> Model::build(const ArchSpec& arch, const std::string& name,
                                    WeightSource& weights, const LoadOptions& options) {
  check(
      options.dtype == DType::f32 || options.dtype == DType::bf16 || options.dtype == DType::f16,
      "load option dtype must be f32, bf16 or f16, got " + std::string(dtype_name(options.dtype)));
  BuildOptions build;
  build.activation_dtype = options.dtype;
  build.max_context = options.max_context > 0
                          ? options.max_context
                          : std::min<int64_t>(arch.max_position_embeddings, 4096);
  check(options.max_context <= 0 || options.max_context <= arch.max_position_embeddings ||
            arch.rope.scaling != "none",
        "max_context " + std::to_string(options.max_context) + " exceeds max_position_embeddings " +
            std::to_string(arch.max_position_embeddings) + " of " + name);

  const LoadProgress& progress = options.progress;
  std::unique_ptr<Model> m(new Model());
  weights.before_build(progress);
  m->graph_ = build_decoder(arch, weights, build);
  weights.after_build(progress);
  ExecutorOptions eo;
  eo.device = options.device;
  eo.strict = options.strict;
  const uint64_t bytes = progress ? constant_bytes(m->graph_) : 0;
  if (progress) progress("prepare", 0, bytes);
  m->executor_ = std::make_unique<Executor>(m->graph_, eo);
  if (progress) progress("prepare", bytes, bytes);
  m->device_ = options.device;
  ModelInfo& info = m->info_;
  info.architecture = arch.architecture;
  info.model_type = arch.model_type;
  info.vocab_size = arch.vocab;
  info.hidden_size = arch.hidden;
  info.num_layers = arch.layers;
  info.num_experts = arch.experts;
  info.experts_per_token = arch.experts > 0 ? arch.router.top_k : 0;
  info.max_context = build.max_context;
  info.weight_dtype = weight_dtype_of(m->graph_);
  return m;
}

void Model::to(const std::string& device, bool strict, const LoadProgress& progress) {
  ExecutorOptions eo;
  eo.device = device;
  eo.strict = strict;
  const uint64_t weights = progress ? constant_bytes(graph_) : 0;
  if (progress) progress("prepare", 0, weights);
  auto next = std::make_unique<Executor>(graph_, eo);  // throws before anything changes
  if (progress) progress("prepare", weights, weights);
  executor_ = std::move(next);
  device_ = device;
  ++generation_;  // sessions on the old executor end
}

Session Model::session() {
  executor_->reset_state();
  Session s(this);
  s.generation_ = ++generation_;
  return s;
}

Tensor Session::append(const std::vector<int32_t>& tokens) {
  check(generation_ == model_->generation_,
        "this session was replaced by a newer one (a model runs one sequence at a time)");
  check(!tokens.empty(), "append: no tokens");
  const int64_t t = static_cast<int64_t>(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < model_->info_.vocab_size,
          "token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
              " is outside the vocabulary [0, " + std::to_string(model_->info_.vocab_size) + ")");
  check(position_ + t <= model_->info_.max_context,
        "context overflow: " + std::to_string(position_) + " cached + " + std::to_string(t) +
            " new tokens exceed max_context " + std::to_string(model_->info_.max_context));
  Tensor logits = run_decoder(*model_->executor_, tokens, position_);
  position_ += t;
  return logits;
}

Tensor run_decoder(Executor& executor, const std::vector<int32_t>& tokens, int64_t past) {
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i)
    positions[i] = static_cast<int32_t>(past + static_cast<int64_t>(i));
  const int64_t t = static_cast<int64_t>(tokens.size());
  return executor.run({ints(tokens), ints(positions)}, SymbolValues::of(t, past))[0];
}

Tensor Model::forward(const std::vector<int32_t>& tokens) { return session().append(tokens); }

ModelSummary Model::summary() const {
  ModelSummary s;
  const bool tied = graph_.find("lm_head.weight") == kNoValue;
  const double active_experts =
      info_.num_experts > 0
          ? static_cast<double>(info_.experts_per_token) / static_cast<double>(info_.num_experts)
          : 1.0;
  for (const Value& v : graph_.values()) {
    if (v.kind == ValueKind::state) {
      // A KV cache [capacity, heads, dim]: bytes per position.
      s.kv_bytes_per_token += static_cast<uint64_t>(num_elements(v.shape.static_dims())) *
                              dtype_size(v.dtype) / static_cast<uint64_t>(v.shape[0].fixed);
      continue;
    }
    if (v.kind != ValueKind::constant) continue;
    const bool scale = v.name.size() > 10 && v.name.ends_with("_scale_inv");
    const int64_t n = v.data.numel();
    const uint64_t bytes = v.data.nbytes();
    // Experts are stacked [E, out, in] (the builder names them "...experts.*...").
    double fraction = v.name.find(".experts.*.") != std::string::npos ? active_experts : 1.0;
    if (v.name == "model.embed_tokens.weight" && !tied)
      fraction = 1.0 / static_cast<double>(v.data.dim(0));
    if (!scale) {
      s.total_params += n;
      s.active_params += static_cast<int64_t>(static_cast<double>(n) * fraction + 0.5);
    }
    s.weight_bytes += bytes;
    s.bytes_per_token += static_cast<uint64_t>(static_cast<double>(bytes) * fraction + 0.5);
  }
  return s;
}

std::string ModelSummary::str() const {
  auto millions = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f M", v / 1e6);
    return std::string(b);
  };
  auto mb = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f MB", v / 1e6);
    return std::string(b);
  };
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.1f%%",
                total_params
                    ? 100.0 * static_cast<double>(active_params) / static_cast<double>(total_params)
                    : 0.0);
  return "parameters: " + millions(static_cast<double>(total_params)) + " total, " +
         millions(static_cast<double>(active_params)) + " active per token (" + pct + ")\n" +
         "weights: " + mb(static_cast<double>(weight_bytes)) + " stored, " +
         mb(static_cast<double>(bytes_per_token)) + " read per decoded token\n" +
         "KV cache: " + std::to_string(kv_bytes_per_token) + " bytes per position\n";
}

double ModelSummary::roofline_s_per_token(double read_bandwidth) const {
  return read_bandwidth > 0 ? static_cast<double>(bytes_per_token) / read_bandwidth : 0.0;
}

std::string ModelSummary::roofline_str(double read_bandwidth) const {
  const double seconds = roofline_s_per_token(read_bandwidth);
  char line[256];
  std::snprintf(line, sizeof line,
                "decode roofline (host CPU): %.2f MB per token / %.1f GB/s measured read "
                "bandwidth = %.4f ms/token (at most %.0f tok/s)\n",
                static_cast<double>(bytes_per_token) / 1e6, read_bandwidth / 1e9, seconds * 1e3,
                seconds > 0 ? 1.0 / seconds : 0.0);
  return line;
}

TokenGenerator::TokenGenerator(Model* model, std::vector<int32_t> prompt, GenerateOptions options)
    : model_(model),
      prompt_(std::move(prompt)),
      options_(std::move(options)),
      sampler_(options_.sampling) {
  check(!prompt_.empty(), "generate: the prompt is empty");
  check(options_.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
}

std::optional<int32_t> TokenGenerator::next() {
  if (done_) return std::nullopt;
  if (!session_) {
    session_.emplace(model_->session());
    if (options_.max_new_tokens == 0) {
      done_ = true;
      return std::nullopt;
    }
    logits_ = session_->append(prompt_);
  } else {
    logits_ = session_->append({last_});
  }
  const int64_t vocab = model_->info().vocab_size;
  last_ = sampler_.sample(logits_.data_as<float>() + (logits_.dim(0) - 1) * vocab, vocab);
  ++produced_;
  const auto& stop = options_.stop_tokens;
  if (std::find(stop.begin(), stop.end(), last_) != stop.end() ||
      produced_ >= options_.max_new_tokens || session_->position() + 1 > model_->info().max_context)
    done_ = true;
  return last_;
}

TokenGenerator Model::generator(const std::vector<int32_t>& prompt,
                                const GenerateOptions& options) {
  return TokenGenerator(this, prompt, options);
}

std::vector<int32_t> Model::generate(const std::vector<int32_t>& prompt,
                                     const GenerateOptions& options,
                                     const std::function<bool(int32_t)>& on_token) {
  TokenGenerator g = generator(prompt, options);
  std::vector<int32_t> out;
  while (std::optional<int32_t> t = g.next()) {
    out.push_back(*t);
    if (on_token && !on_token(*t)) break;
  }
  return out;
}

}  // namespace moert
