#include "moert/model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "models/architecture.h"
#include "models/decoder_builder.h"
#include "models/quantization.h"
#include "models/quantize_weights.h"
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

// What a constant of a decoder graph is to the node consuming it: a packed
// weight (its format label and its matrix's element count) or a scale.
struct ConstantRole {
  std::string label;     // "int4 g32" for a packed weight and its scale; "" otherwise
  bool scale = false;    // a block or group scale (not parameters)
  int64_t elements = 0;  // a packed weight's elements (its matrix's, not its bytes')
};

std::map<ValueId, ConstantRole> constant_roles(const Graph& g) {
  std::map<ValueId, ConstantRole> roles;
  auto input = [](const Node& n, size_t i) { return i < n.inputs.size() ? n.inputs[i] : kNoValue; };
  // Weight `w` [lead..., rows, stored] with `cols` columns and its scale `s`.
  auto mark = [&](ValueId w, ValueId s, const std::string& quant, const std::vector<int64_t>& block,
                  int64_t cols) {
    if (s != kNoValue) roles[s].scale = true;
    ops::WeightFormat f = ops::WeightFormat::none;
    if (w == kNoValue || !ops::weight_format_from(quant, &f) || f == ops::WeightFormat::none)
      return;
    const Tensor& t = g.value(w).data;
    const std::string label = packed_label(f, block);
    roles[w].label = label;
    roles[w].elements = t.numel() / std::max<int64_t>(t.dim(-1), 1) * cols;
    if (s != kNoValue) roles[s].label = label;
  };
  for (const Node& n : g.nodes()) {
    if (n.op == "linear") {
      const ValueId x = input(n, 0);
      const int64_t cols = g.value(x).shape.at(-1).fixed;
      mark(input(n, 1), input(n, 3), n.attrs.get_string("quant", "none"),
           n.attrs.get_ints("block_size", {128, 128}), cols);
    } else if (n.op == "moe") {
      const std::vector<int64_t> block = n.attrs.get_ints("block_size", {128, 128});
      const std::string routed = n.attrs.get_string("quant", "none"),
                        shared = n.attrs.get_string("shared_quant", "none");
      const int64_t hidden = g.value(input(n, 0)).shape.at(-1).fixed;
      const int64_t inter = g.value(input(n, 3)).shape[1].fixed;
      mark(input(n, 3), input(n, 6), routed, block, hidden);
      mark(input(n, 4), input(n, 7), routed, block, hidden);
      mark(input(n, 5), input(n, 8), routed, block, inter);
      if (input(n, 9) != kNoValue) {
        const int64_t shared_inter = g.value(input(n, 9)).shape[0].fixed;
        mark(input(n, 9), input(n, 12), shared, block, hidden);
        mark(input(n, 10), input(n, 13), shared, block, hidden);
        mark(input(n, 11), input(n, 14), shared, block, shared_inter);
      }
    }
  }
  return roles;
}

// The constants of a graph (its weights) by dtype, as "bf16" or the mix by
// share of bytes: "fp8 e4m3 61%, bf16 37%, f32 2%"; packed weights and their
// scales by format: "int4 g32 78%, bf16 22%".
std::string weight_dtype_of(const Graph& g) {
  const std::map<ValueId, ConstantRole> roles = constant_roles(g);
  std::map<std::string, uint64_t> bytes;
  uint64_t total = 0;
  for (size_t i = 0; i < g.values().size(); ++i) {
    const Value& v = g.values()[i];
    if (v.kind != ValueKind::constant) continue;
    auto r = roles.find(static_cast<ValueId>(i));
    std::string name = v.data.dtype() == DType::f8_e4m3 ? std::string("fp8 e4m3")
                                                        : std::string(dtype_name(v.data.dtype()));
    if (r != roles.end() && !r->second.label.empty()) name = r->second.label;
    bytes[name] += v.data.nbytes();
    total += v.data.nbytes();
  }
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [d, b] : bytes) order.emplace_back(b, d);
  std::sort(order.rbegin(), order.rend());
  if (order.size() == 1) return order[0].second;
  std::string out;
  for (const auto& [b, d] : order) {
    int pct = total ? static_cast<int>((100 * b + total / 2) / total) : 0;
    if (pct == 0) continue;
    out += (out.empty() ? "" : ", ") + d + " " + std::to_string(pct) + "%";
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

// The load option `quantize` (or random weights' packed dtype) as a source
// packing `inner`'s weights, or nothing.
std::unique_ptr<WeightSource> quantizing(WeightSource& inner, const std::string& where,
                                         ops::WeightFormat format, int64_t group, int threads) {
  if (format == ops::WeightFormat::none) return nullptr;
  return std::make_unique<QuantizingWeights>(inner, where, format, group, threads);
}

}  // namespace

// The KV pool's bookkeeping: the free blocks, and each open sequence's
// blocks (its block-table row) and position.  Ids are never reused, so a
// closed sequence's id stays invalid.
//
// Sessions (Model::session) may be ended to make room: when a row or blocks
// are wanted and none are free, the least recently used session gives up
// its own, and its next use says why.  So one-sequence-at-a-time code keeps
// working at the default pool size (a newer session replaces an older one
// when both do not fit), while batched sequences (open_sequence) are never
// taken from.
struct Model::Sequences {
  struct Entry {
    int32_t row = 0;              // of the block table
    std::vector<int32_t> blocks;  // logical block b holds positions b * bs ..
    int64_t position = 0;         // positions written
    bool session = false;         // may be ended to make room
    uint64_t used = 0;            // when last stepped or opened
  };
  int64_t block_size = 64, columns = 0, rows = 0, blocks = 0, max_context = 0;
  std::vector<int32_t> free;  // free block ids, taken from the back
  std::vector<bool> row_used;
  std::map<int64_t, Entry> open;
  std::set<int64_t> replaced;  // sessions ended to make room
  int64_t next_id = 1;
  uint64_t clock = 0;

  void reset() {
    open.clear();
    replaced.clear();
    row_used.assign(static_cast<size_t>(rows), false);
    free.resize(static_cast<size_t>(blocks));
    // Taken from the back: block 0 first, so that one sequence's blocks
    // are the pool's first ones in order.
    for (int64_t b = 0; b < blocks; ++b)
      free[static_cast<size_t>(b)] = static_cast<int32_t>(blocks - 1 - b);
  }
  Entry& get(int64_t id) {
    auto it = open.find(id);
    if (it == open.end() && replaced.count(id))
      throw Error(
          "this session was replaced by a newer one: its KV cache positions were given "
          "to it (the pool holds " +
          std::to_string(blocks * block_size) +
          " positions, load option kv_cache_tokens; raise it to keep both)");
    check(it != open.end(), "sequence " + std::to_string(id) +
                                " is not open (it was closed, or ended when the model moved to "
                                "another device)");
    return it->second;
  }
  void close(std::map<int64_t, Entry>::iterator it) {
    free.insert(free.end(), it->second.blocks.rbegin(), it->second.blocks.rend());
    row_used[static_cast<size_t>(it->second.row)] = false;
    open.erase(it);
  }
  // Ends the least recently used sessions, other than those in `keep`, until
  // `blocks_wanted` blocks and `rows_wanted` rows are free (or none is left).
  void make_room(int64_t blocks_wanted, int64_t rows_wanted, const std::set<int64_t>& keep) {
    auto free_rows = [&] {
      return static_cast<int64_t>(std::count(row_used.begin(), row_used.end(), false));
    };
    while (static_cast<int64_t>(free.size()) < blocks_wanted || free_rows() < rows_wanted) {
      auto victim = open.end();
      for (auto it = open.begin(); it != open.end(); ++it)
        if (it->second.session && !keep.count(it->first) &&
            (victim == open.end() || it->second.used < victim->second.used))
          victim = it;
      if (victim == open.end()) return;
      replaced.insert(victim->first);
      close(victim);
    }
  }
  int64_t blocks_for(int64_t positions) const { return (positions + block_size - 1) / block_size; }
  // Blocks `e` must still take to hold `positions`.
  int64_t missing(const Entry& e, int64_t positions) const {
    return std::max<int64_t>(0, blocks_for(positions) - static_cast<int64_t>(e.blocks.size()));
  }
  void grow(Entry& e, int64_t positions) {
    for (int64_t n = missing(e, positions); n > 0; --n) {
      e.blocks.push_back(free.back());
      free.pop_back();
    }
  }
};

Model::Model() : sequences_(std::make_unique<Sequences>()) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& directory, const LoadOptions& options) {
  namespace fs = std::filesystem;
  check(fs::is_directory(directory), directory + ": not a directory");
  HfConfig config = HfConfig::read((fs::path(directory) / "config.json").string());
  ArchSpec arch = arch_from_config(config);
  Checkpoint checkpoint = Checkpoint::open(directory);
  const ops::WeightFormat format = quantize_format(options.quantize, "load option quantize");
  CheckpointQuant quant = check_quantization(config, checkpoint);
  // The float weights of a GPTQ / AWQ checkpoint take its groups, so that
  // they can share a moe node with its packed ones.
  const int64_t group =
      format != ops::WeightFormat::mxfp4 && (quant.method == "gptq" || quant.method == "awq")
          ? quant.group_size
          : 32;
  CheckpointWeights weights(checkpoint, std::move(quant));
  std::unique_ptr<WeightSource> packing =
      quantizing(weights, checkpoint.directory(), format, group, 0);
  return build(arch, config.path(), packing ? *packing : weights, options);
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
  // int8, int4, mxfp4: the bf16 weights, packed as quantize packs them, by
  // the source itself as it generates them (so the bf16 model is never held).
  ops::WeightFormat format = quantize_format(options.quantize, "load option quantize");
  ops::WeightFormat packed = ops::WeightFormat::none;
  if (weights.dtype != "none" && ops::weight_format_from(weights.dtype, &packed)) {
    check(format == ops::WeightFormat::none || format == packed,
          weights.name + ": random weights of dtype '" + weights.dtype +
              "' cannot be quantized to '" + options.quantize + "' as well");
    format = ops::WeightFormat::none;
  }
  RandomWeightSource source(arch, weights);
  std::unique_ptr<WeightSource> packing =
      quantizing(source, weights.name, format, 32, weights.threads);
  return build(arch, config.path(), packing ? *packing : source, options);
}

std::unique_ptr<Model> Model::build(const ArchSpec& arch, const std::string& name,
                                    WeightSource& weights, const LoadOptions& options) {
  check(
      options.dtype == DType::f32 || options.dtype == DType::bf16 || options.dtype == DType::f16,
      "load option dtype must be f32, bf16 or f16, got " + std::string(dtype_name(options.dtype)));
  check(options.precision == "fast" || options.precision == "exact",
        "load option precision must be \"fast\" or \"exact\", got \"" + options.precision + "\"");
  BuildOptions build;
  build.activation_dtype = options.dtype;
  build.kv_dtype = options.dtype;
  check(options.mla_cache == "latent" || options.mla_cache == "expanded",
        "load option mla_cache must be \"latent\" or \"expanded\", got \"" + options.mla_cache +
            "\"");
  build.mla_cache = options.mla_cache;
  std::vector<std::function<void()>> after_fill;
  build.after_fill = &after_fill;
  if (!options.kv_dtype.empty()) {
    const std::optional<DType> kv = options.kv_dtype == "fp8" ? std::optional<DType>(DType::f8_e4m3)
                                                              : dtype_from_name(options.kv_dtype);
    check(kv && (*kv == DType::f32 || *kv == DType::bf16 || *kv == DType::f16 ||
                 *kv == DType::f8_e4m3),
          "load option kv_dtype must be \"\" (the activation dtype), \"f32\", \"bf16\", "
          "\"f16\" or \"fp8\", got \"" +
              options.kv_dtype + "\"");
    build.kv_dtype = *kv;
  }
  build.bf16_products = options.precision == "fast";
  check(options.max_context >= 0,
        "load option max_context must be >= 0 (0: the config's max_position_embeddings, at most "
        "4096), got " +
            std::to_string(options.max_context));
  build.max_context = options.max_context > 0
                          ? options.max_context
                          : std::min<int64_t>(arch.max_position_embeddings, 4096);
  check(options.max_context <= 0 || options.max_context <= arch.max_position_embeddings ||
            arch.rope.scaling != "none",
        "max_context " + std::to_string(options.max_context) + " exceeds max_position_embeddings " +
            std::to_string(arch.max_position_embeddings) + " of " + name);
  check(options.max_sequences >= 1,
        "load option max_sequences must be >= 1, got " + std::to_string(options.max_sequences));
  check(options.kv_block_size >= 1,
        "load option kv_block_size must be >= 1, got " + std::to_string(options.kv_block_size));
  check(options.kv_cache_tokens >= 0,
        "load option kv_cache_tokens must be >= 0 (0: max_context), got " +
            std::to_string(options.kv_cache_tokens));
  check(options.prefill_chunk >= 1,
        "load option prefill_chunk must be >= 1, got " + std::to_string(options.prefill_chunk));
  // Blocks no longer than a (short) sequence.
  build.kv_block_size = std::min(options.kv_block_size, build.max_context);
  build.max_sequences = options.max_sequences;
  const int64_t pool = options.kv_cache_tokens > 0 ? options.kv_cache_tokens : build.max_context;
  build.kv_blocks = (pool + build.kv_block_size - 1) / build.kv_block_size;

  const LoadProgress& progress = options.progress;
  build.interrupted = options.interrupted;
  auto stop_if_interrupted = [&] {
    if (options.interrupted && options.interrupted()) throw Error("the load was interrupted");
  };
  std::unique_ptr<Model> m(new Model());
  stop_if_interrupted();
  weights.before_build(progress);
  stop_if_interrupted();
  m->graph_ = build_decoder(arch, weights, build);
  weights.after_build(progress);
  for (const std::function<void()>& fill : after_fill) fill();
  stop_if_interrupted();
  ExecutorOptions eo;
  eo.device = options.device;
  eo.strict = options.strict;
  const uint64_t bytes = progress ? constant_bytes(m->graph_) : 0;
  if (progress) progress("prepare", 0, bytes);
  BackendRegistry::global().resolve(options.device);  // an unknown device says so alone
  try {
    m->executor_ = std::make_unique<Executor>(m->graph_, eo);
  } catch (const Error& e) {
    throw Error(name + ": preparing the model on " + options.device + ": " + e.what());
  }
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
  info.max_sequences = build.max_sequences;
  info.kv_cache_tokens = build.kv_blocks * build.kv_block_size;
  m->prefill_chunk_ = options.prefill_chunk;
  Sequences& sq = *m->sequences_;
  sq.block_size = build.kv_block_size;
  sq.columns = (build.max_context + build.kv_block_size - 1) / build.kv_block_size;
  sq.rows = build.max_sequences;
  sq.blocks = build.kv_blocks;
  sq.max_context = build.max_context;
  sq.reset();
  info.weight_dtype = weight_dtype_of(m->graph_);
  info.notes = arch.notes;
  return m;
}

void Model::to(const std::string& device, bool strict, const LoadProgress& progress) {
  ExecutorOptions eo;
  eo.device = device;
  eo.strict = strict;
  const uint64_t weights = progress ? constant_bytes(graph_) : 0;
  if (progress) progress("prepare", 0, weights);
  BackendRegistry::global().resolve(device);  // an unknown device says so alone
  std::unique_ptr<Executor> next;
  try {
    next = std::make_unique<Executor>(graph_, eo);  // throws before anything changes
  } catch (const Error& e) {
    throw Error("moving the model to " + device + ": " + e.what());
  }
  if (progress) progress("prepare", weights, weights);
  executor_ = std::move(next);
  device_ = device;
  sequences_->reset();  // the new executor's caches are empty: every sequence ends
}

int64_t Model::open_sequence() {
  Sequences& sq = *sequences_;
  auto row = std::find(sq.row_used.begin(), sq.row_used.end(), false);
  check(row != sq.row_used.end(),
        "all " + std::to_string(sq.rows) +
            " sequences of the model are open (load option max_sequences); close a session first");
  *row = true;
  const int64_t id = sq.next_id++;
  Sequences::Entry& e = sq.open[id];
  e.row = static_cast<int32_t>(row - sq.row_used.begin());
  e.used = ++sq.clock;
  return id;
}

void Model::close_sequence(int64_t sequence) {
  Sequences& sq = *sequences_;
  sq.replaced.erase(sequence);
  auto it = sq.open.find(sequence);
  if (it != sq.open.end()) sq.close(it);
}

int64_t Model::sequence_position(int64_t sequence) const {
  return sequences_->get(sequence).position;
}

int64_t Model::free_kv_positions() const {
  return static_cast<int64_t>(sequences_->free.size()) * sequences_->block_size;
}

int64_t Model::sequence_capacity(int64_t sequence) const {
  const Sequences& sq = *sequences_;
  const Sequences::Entry& e = sequences_->get(sequence);
  const int64_t held = static_cast<int64_t>(e.blocks.size() + sq.free.size()) * sq.block_size;
  return std::min(held, sq.max_context);
}

bool Model::reserve(int64_t sequence, int64_t positions) {
  Sequences& sq = *sequences_;
  Sequences::Entry& e = sq.get(sequence);
  if (positions > sq.max_context) return false;
  sq.make_room(sq.missing(e, positions), 0, {sequence});
  if (sq.missing(e, positions) > static_cast<int64_t>(sq.free.size())) return false;
  sq.grow(e, positions);
  return true;
}

std::vector<Tensor> Model::step(const std::vector<SequenceInput>& inputs) {
  Sequences& sq = *sequences_;
  check(!inputs.empty(), "step: no sequences given");
  const int64_t vocab = info_.vocab_size;
  int64_t tokens = 0, rows = 0, needed = 0;
  std::set<int64_t> seen;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const SequenceInput& in = inputs[i];
    const std::string which = "sequence " + std::to_string(in.sequence);
    Sequences::Entry& e = sq.get(in.sequence);
    check(seen.insert(in.sequence).second, "step: " + which + " is given twice");
    check(!in.tokens.empty(), "step: " + which + " has no tokens");
    for (size_t j = 0; j < in.tokens.size(); ++j)
      check(in.tokens[j] >= 0 && in.tokens[j] < vocab,
            which + ": token id " + std::to_string(in.tokens[j]) + " at position " +
                std::to_string(j) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                ")");
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    check(e.position + n <= sq.max_context,
          which + ": context overflow: " + std::to_string(e.position) + " cached + " +
              std::to_string(n) + " new tokens exceed max_context " +
              std::to_string(sq.max_context));
    needed += sq.missing(e, e.position + n);
    tokens += n;
    rows += in.all_logits ? n : 1;
  }
  sq.make_room(needed, 0, seen);
  check(needed <= static_cast<int64_t>(sq.free.size()),
        "KV cache full: the step needs " + std::to_string(needed) + " more blocks of " +
            std::to_string(sq.block_size) + " positions, " + std::to_string(sq.free.size()) +
            " are free (load option kv_cache_tokens = " +
            std::to_string(sq.blocks * sq.block_size) + ")");
  for (const SequenceInput& in : inputs) {
    Sequences::Entry& e = sq.get(in.sequence);
    sq.grow(e, e.position + static_cast<int64_t>(in.tokens.size()));
    e.used = ++sq.clock;
  }
  std::vector<int32_t> ids, positions, seqs, logit_rows;
  ids.reserve(static_cast<size_t>(tokens));
  for (const SequenceInput& in : inputs) {
    const Sequences::Entry& e = sq.get(in.sequence);
    const int64_t first = static_cast<int64_t>(ids.size()),
                  n = static_cast<int64_t>(in.tokens.size());
    for (int64_t j = 0; j < n; ++j) {
      ids.push_back(in.tokens[static_cast<size_t>(j)]);
      positions.push_back(static_cast<int32_t>(e.position + j));
      seqs.push_back(e.row);
      if (in.all_logits || j == n - 1) logit_rows.push_back(static_cast<int32_t>(first + j));
    }
  }
  Tensor table = Tensor::empty(DType::i32, {sq.rows, sq.columns});
  int32_t* bt = table.data_as<int32_t>();
  std::fill(bt, bt + sq.rows * sq.columns, -1);
  for (const auto& [id, e] : sq.open)
    std::copy(e.blocks.begin(), e.blocks.end(), bt + e.row * sq.columns);
  const Tensor logits =
      executor_->run({ints(ids), ints(positions), ints(seqs), table, ints(logit_rows)},
                     SymbolValues::of(tokens, 0, rows))[0];
  std::vector<Tensor> out;
  int64_t row = 0;
  for (const SequenceInput& in : inputs) {
    sq.get(in.sequence).position += static_cast<int64_t>(in.tokens.size());
    const int64_t n = in.all_logits ? static_cast<int64_t>(in.tokens.size()) : 1;
    Tensor t = Tensor::empty(DType::f32, {n, vocab});
    std::memcpy(t.data(), logits.data_as<float>() + row * vocab,
                static_cast<size_t>(n * vocab) * sizeof(float));
    row += n;
    out.push_back(std::move(t));
  }
  return out;
}

Session Model::session() {
  // A row for it, ending the least recently used session when none is free.
  sequences_->make_room(0, 1, {});
  const int64_t id = open_sequence();
  sequences_->open[id].session = true;
  return Session(this, id);
}

Session::Session(Session&& other) noexcept
    : model_(std::exchange(other.model_, nullptr)), sequence_(other.sequence_) {}

Session& Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    if (model_) model_->close_sequence(sequence_);
    model_ = std::exchange(other.model_, nullptr);
    sequence_ = other.sequence_;
  }
  return *this;
}

Session::~Session() {
  if (model_) model_->close_sequence(sequence_);
}

int64_t Session::position() const {
  check(model_ != nullptr, "this session was moved from");
  return model_->sequence_position(sequence_);
}

Tensor Session::append(const std::vector<int32_t>& tokens, bool all_logits) {
  check(model_ != nullptr, "this session was moved from");
  check(!tokens.empty(), "append: no tokens");
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = model_->info_.vocab_size;
  const int64_t position = model_->sequence_position(sequence_);
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < vocab,
          "token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  check(position + n <= model_->info_.max_context,
        "context overflow: " + std::to_string(position) + " cached + " + std::to_string(n) +
            " new tokens exceed max_context " + std::to_string(model_->info_.max_context));
  // The whole input's blocks first, so that a later chunk cannot find the
  // pool full after earlier ones ran.
  check(model_->reserve(sequence_, position + n),
        "KV cache full: " + std::to_string(position + n) + " positions do not fit beside the " +
            "other open sequences (" + std::to_string(model_->free_kv_positions()) +
            " positions free; load option kv_cache_tokens = " +
            std::to_string(model_->info_.kv_cache_tokens) + ")");
  const int64_t chunk = model_->prefill_chunk_;
  if (n <= chunk) return model_->step({{sequence_, tokens, all_logits}})[0];
  Tensor out = Tensor::empty(DType::f32, {all_logits ? n : 1, vocab});
  for (int64_t at = 0; at < n; at += chunk) {
    const int64_t len = std::min(chunk, n - at);
    const bool last = at + len == n;
    if (!all_logits && !last) {
      // Only the cache matters here; one row of logits is the least a step gives.
      model_->step({{sequence_, {tokens.begin() + at, tokens.begin() + at + len}, false}});
      continue;
    }
    Tensor part = model_->step(
        {{sequence_, {tokens.begin() + at, tokens.begin() + at + len}, all_logits}})[0];
    std::memcpy(out.data_as<float>() + (all_logits ? at * vocab : 0), part.data(), part.nbytes());
  }
  return out;
}

Tensor run_decoder(Executor& executor, const std::vector<int32_t>& tokens, int64_t past) {
  const int64_t t = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> positions(tokens.size()), rows(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i) {
    positions[i] = static_cast<int32_t>(past + static_cast<int64_t>(i));
    rows[i] = static_cast<int32_t>(i);
  }
  const Graph& g = executor.placed_graph();
  // A graph of ids and positions only (caches indexed by P).
  if (g.inputs().size() == 2)
    return executor.run({ints(tokens), ints(positions)}, SymbolValues::of(t, past))[0];
  const Shape table_shape = g.value(g.inputs().at(3)).shape;
  const std::vector<int64_t> dims = table_shape.static_dims();
  Tensor table = Tensor::empty(DType::i32, dims);
  int32_t* bt = table.data_as<int32_t>();
  std::fill(bt, bt + table.numel(), -1);
  for (int64_t b = 0; b < dims[1]; ++b) bt[b] = static_cast<int32_t>(b);
  return executor.run({ints(tokens), ints(positions), ints(std::vector<int32_t>(tokens.size(), 0)),
                       table, ints(rows)},
                      SymbolValues::of(t, past, t))[0];
}

Tensor Model::forward(const std::vector<int32_t>& tokens) { return session().append(tokens); }

ModelSummary Model::summary() const {
  ModelSummary s;
  const std::map<ValueId, ConstantRole> roles = constant_roles(graph_);
  s.weight_dtype = info_.weight_dtype;
  const bool tied = graph_.find("lm_head.weight") == kNoValue;
  const double active_experts =
      info_.num_experts > 0
          ? static_cast<double>(info_.experts_per_token) / static_cast<double>(info_.num_experts)
          : 1.0;
  for (size_t i = 0; i < graph_.values().size(); ++i) {
    const Value& v = graph_.values()[i];
    if (v.kind == ValueKind::state) {
      // A KV cache [capacity, heads, dim]: bytes per position.
      s.kv_bytes_per_token += static_cast<uint64_t>(num_elements(v.shape.static_dims())) *
                              dtype_size(v.dtype) / static_cast<uint64_t>(v.shape[0].fixed);
      continue;
    }
    if (v.kind != ValueKind::constant) continue;
    auto role = roles.find(static_cast<ValueId>(i));
    const bool scale = role != roles.end() && role->second.scale;
    const int64_t n =
        role != roles.end() && role->second.elements > 0 ? role->second.elements : v.data.numel();
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
         "weights: " + mb(static_cast<double>(weight_bytes)) + " stored" +
         (weight_dtype.empty() ? std::string() : " (" + weight_dtype + ")") + ", " +
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
