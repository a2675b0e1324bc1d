// Loading a Hugging Face checkpoint and running it.
//
//   auto model = moert::Model::load("path/to/checkpoint", {.device = "reference"});
//   moert::Tensor logits = model->forward({1, 2, 3});         // [3, vocab], fresh sequence
//   auto session = model->session();                          // KV-cached sequence
//   session.append({1, 2, 3}); session.append({4});          // logits of the appended tokens
//   std::vector<int32_t> out = model->generate({1, 2, 3}, {.max_new_tokens = 16});
//
// Many sequences share one model: each has its own positions in one KV cache
// pool (paged: blocks of positions handed out as sequences grow, returned
// when they end), and Model::step runs the tokens of several sequences in
// one execution, so a decode step reads each weight once for all of them.
// BatchGenerator (batch.h) schedules requests on top of it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moert/executor.h"
#include "moert/graph.h"
#include "moert/sampler.h"

namespace moert {

// Progress of Model::load and Model::to, stage by stage; done and total count
// bytes of weights, and each stage reports done from 0 up to total:
//   "read"     paging the checkpoint's tensors in, file by file (load only; skipped
//              when the checkpoint exceeds half of the physical memory)
//   "build"    building the graph with the weights (experts stacked)
//   "prepare"  preparing the graph and its weights on the device
// An exception thrown by the callback aborts the load (or the move) and propagates.
using LoadProgress = std::function<void(const std::string& stage, uint64_t done, uint64_t total)>;

struct LoadOptions {
  std::string device = "reference";
  // Activation dtype; weights stay as stored (bf16 stays bf16, fp8 stays fp8,
  // GPTQ / AWQ stay int4, MXFP4 mxfp4), unless `quantize` packs them.
  DType dtype = DType::f32;
  // Quantize on load: "" (no), "int8", "int4" or "mxfp4".  Every linear weight
  // inside the decoder layers (attention, dense MLPs, routed and shared
  // experts; not embeddings, lm_head, routers, norms) that is float or fp8 is
  // packed, round to nearest with groups of 32 along K: int8 symmetric (f16
  // scale amax / 127), int4 symmetric as llama.cpp's Q4_0, mxfp4 as the OCP
  // MX format (e8m0 shared exponents).  Weights a checkpoint stores packed
  // (GPTQ, AWQ, MXFP4) stay as they are; its remaining float ones take its
  // group size, so that they can share a moe node with the packed ones.
  std::string quantize;
  // How f32 activations meet narrower weights (bf16, f16, fp8, packed):
  //   "fast"  (default) the products are formed in bf16 where that is faster
  //           (a bf16 matrix unit: x and the weight rounded to bf16, 2^-9
  //           relative each, accumulated in f32) -- the residual stream,
  //           norms, attention and every sum stay f32; routers' logits stay
  //           exact.  Packed weights (int8, int4, mxfp4) may meet x
  //           quantised to int8 per block of 32 instead (scale max|x| /
  //           127), their products formed in integers.  As llama.cpp does.
  //   "exact" f32 products of the weights as stored: the reference the
  //           tests check backends against, slower for prompts.
  // Activations given as bf16/f16 (`dtype`) take bf16 products either way.
  std::string precision = "fast";
  // Positions of one sequence; 0 = min(max_position_embeddings, 4096).
  int64_t max_context = 0;
  // Sequences open at once (sessions, batched requests); each is one row of
  // the block table.
  int64_t max_sequences = 16;
  // Positions of the KV cache pool all sequences share, in blocks of
  // kv_block_size; 0 = max_context (one full-length sequence, or several
  // shorter ones).  The cache's memory is kv_cache_tokens x
  // ModelSummary::kv_bytes_per_token.
  int64_t kv_cache_tokens = 0;
  int64_t kv_block_size = 64;
  // Prompts longer than this run in chunks of this many tokens, so that
  // activation memory is bounded by the chunk, not the prompt.
  int64_t prefill_chunk = 512;
  // The KV cache's element type: "" (the activation dtype), "f32", "bf16",
  // "f16" or "fp8" (f8_e4m3: keys and values rounded to e4m3, saturating at
  // ±448, a quarter of f32's bytes; no scale).  Attention reads the cache in
  // its dtype and computes in f32.  ModelSummary::kv_bytes_per_token shows
  // what is allocated.
  std::string kv_dtype;
  // DeepSeek's multi-head latent attention (deepseek_v2, deepseek_v3):
  // "latent" (default) caches per position one compressed vector of
  // kv_lora_rank + qk_rope_head_dim values (and the kv_lora_rank values
  // attention reads as its value) and folds kv_b_proj into the query and the
  // output (the absorbed form); "expanded" caches every head's key and value,
  // as the model's code computes them.  The same logits up to summation order.
  std::string mla_cache = "latent";
  bool strict = false;  // a fallback to the reference backend is an error
  // Called while loading (see LoadProgress); with a callback the weights are
  // read up front, so that the disk reads show as the "read" stage.
  LoadProgress progress;
  // Asked between the stages of a load and after each layer of the graph is
  // built; true aborts the load with moert::Error "the load was interrupted"
  // (the Python binding answers whether Ctrl-C was pressed).  Optional.
  std::function<bool()> interrupted;
};

// Random weights for Model::random: every matrix, router and bias drawn
// from N(0, std²) (approximately: a bounded, Irwin–Hall shaped draw), norm
// weights 1.0.  The values depend only on the seed and each tensor's name, so
// one seed gives the same model on any thread count, and its f32, bf16, f16
// and fp8 variants are roundings of the same numbers.
struct RandomWeights {
  // Storage: "f32", "bf16" or "f16" for every tensor; "fp8": linear weights
  // inside decoder layers (attention, dense MLP, experts) f8_e4m3 with f32
  // 128x128 block scales, the rest bf16, as DeepSeek-V3 stores them; "int8",
  // "int4", "mxfp4": the bf16 model with those linear weights packed as
  // LoadOptions::quantize packs them (the same as dtype "bf16" with
  // quantize set); "int8-experts", "int4-experts", "mxfp4-experts": only the
  // routed experts packed, everything else bf16, as GPT-OSS's MXFP4
  // checkpoints store it.  DeepSeek-V3's e_score_correction_bias is f32 in
  // every mode.
  std::string dtype = "bf16";
  uint64_t seed = 0;
  double std = 0.02;
  // Names the config in error messages and ModelInfo ("bench-moe-s", a path).
  std::string name = "config";
  int threads = 0;  // generation threads; 0 = the hardware concurrency
};

// What the architecture builder read from config.json.
struct ModelInfo {
  std::string architecture;  // "MixtralForCausalLM"
  std::string model_type;    // "mixtral"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_experts = 0;  // 0 for dense models
  int64_t experts_per_token = 0;
  int64_t max_context = 0;  // positions of one sequence
  int64_t max_sequences = 0;
  int64_t kv_cache_tokens = 0;  // positions of the pool the sequences share
  // "bf16", or a mix by share of the weight bytes: "fp8 e4m3 61%, bf16 37%,
  // f32 2%"; packed weights count with their scales: "int4 g32 78%, bf16 22%"
  // (g: the op's group size along K, a row's K for GPTQ / AWQ group_size -1).
  std::string weight_dtype;
  // What the checkpoint holds that this load leaves out, one sentence each
  // (e.g. DeepSeek-V3's and GLM-4.5's multi-token-prediction layers).
  std::vector<std::string> notes;
};

// What sparsity buys: parameters and bytes touched per decoded token.
struct ModelSummary {
  // every weight element (block scales excluded; a packed weight counts its
  // matrix's elements, two per byte for int4 and mxfp4)
  int64_t total_params = 0;
  int64_t active_params = 0;     // per decoded token: all but unchosen experts, one embedding row
  uint64_t weight_bytes = 0;     // the weights as stored, packed ones and scales included
  uint64_t bytes_per_token = 0;  // weight bytes a decode step must read
  uint64_t kv_bytes_per_token = 0;  // KV cache bytes each position occupies
  std::string weight_dtype;         // as ModelInfo::weight_dtype: "int4 g32 78%, bf16 22%"
  std::string str() const;          // a few readable lines
  // A decode step reads bytes_per_token at least once, so at `read_bandwidth`
  // (bytes/s, e.g. measure_read_bandwidth()) it takes at least this long (0
  // when the bandwidth is unknown).
  double roofline_s_per_token(double read_bandwidth) const;
  // That bound as a line: "decode roofline (host CPU): ... ms/token (at most N tok/s)".
  std::string roofline_str(double read_bandwidth) const;
};

class Model;
struct ArchSpec;     // the architecture read from config.json (runtime/src/models)
class WeightSource;  // where the builder gets the weights (runtime/src/models)

// One sequence with its KV cache; its positions are returned to the pool
// when it is destroyed.  Several sessions of a model may be live at once (up
// to LoadOptions::max_sequences); a session must not outlive its model, and
// ends when the model moves to another device.
class Session {
 public:
  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Logits of the appended tokens: [tokens.size(), vocab], or with
  // all_logits false only the last token's [1, vocab].  Long inputs run in
  // chunks of LoadOptions::prefill_chunk.  Throws when the sequence would
  // exceed max_context or the pool has no room (the sequence is unchanged).
  Tensor append(const std::vector<int32_t>& tokens, bool all_logits = true);
  int64_t position() const;
  int64_t id() const { return sequence_; }

 private:
  friend class Model;
  Session(Model* model, int64_t sequence) : model_(model), sequence_(sequence) {}
  Model* model_ = nullptr;
  int64_t sequence_ = 0;
};

// Tokens appended to one sequence in a Model::step.
struct SequenceInput {
  int64_t sequence = 0;  // Model::open_sequence()
  std::vector<int32_t> tokens;
  bool all_logits = false;  // logits of every token, else of the last one
};

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;          // temperature 0 = greedy
  std::vector<int32_t> stop_tokens;  // generation ends after producing one
};

// Pull-based generation: each next() runs one step (the prompt's prefill on
// the first call, one cached decode step after) and returns the sampled
// token, or nothing once generation has ended (max_new_tokens reached, a stop
// token produced — it is returned first — or the context full).
class TokenGenerator {
 public:
  std::optional<int32_t> next();
  // The logits of the last step: one row, the last prompt token's after the
  // first call, then the decode step's.
  const Tensor& last_logits() const { return logits_; }
  const Session& session() const { return *session_; }

 private:
  friend class Model;
  TokenGenerator(Model* model, std::vector<int32_t> prompt, GenerateOptions options);
  Model* model_;
  std::vector<int32_t> prompt_;
  GenerateOptions options_;
  Sampler sampler_;
  std::optional<Session> session_;
  Tensor logits_;
  int32_t last_ = 0;
  int64_t produced_ = 0;
  bool done_ = false;
};

class Model {
 public:
  ~Model();
  // Reads config.json, picks the architecture builder, maps the weights and
  // prepares the graph on options.device.  Throws moert::Error naming the
  // file, tensor or parameter at fault (unknown architectures list the
  // supported ones).
  static std::unique_ptr<Model> load(const std::string& directory, const LoadOptions& options = {});
  // A model with random weights, built from the body of a Hugging Face
  // config.json (`config_json`, e.g. an entry of bench/models.json) without
  // any file: the weights are generated in memory, once, in parallel.  The
  // same architectures as load(); options as for load() (progress sees
  // "build", counting the bytes generated, and "prepare").  Throws
  // moert::Error naming weights.name and the config field at fault.
  static std::unique_ptr<Model> random(const std::string& config_json,
                                       const RandomWeights& weights = {},
                                       const LoadOptions& options = {});

  const ModelInfo& info() const { return info_; }
  ModelSummary summary() const;
  const Graph& graph() const { return graph_; }
  Executor& executor() { return *executor_; }

  // Moves the model to another device without re-reading the checkpoint (the
  // weights stay mapped; the new backend prepares them).  The current
  // sequence ends.  On failure the model stays where it was.  `progress`
  // (optional) sees the "prepare" stage.
  void to(const std::string& device, bool strict = false, const LoadProgress& progress = nullptr);
  const std::string& device() const { return device_; }

  // A new sequence (throws when max_sequences are open).
  Session session();
  // Logits of every position of a fresh sequence: [tokens.size(), vocab].
  Tensor forward(const std::vector<int32_t>& tokens);
  // New tokens after `prompt`; `on_token` (optional) sees each as it comes
  // and may return false to stop.
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                const std::function<bool(int32_t)>& on_token = nullptr);
  // The same generation, one token per next() (starts a new session).
  TokenGenerator generator(const std::vector<int32_t>& prompt, const GenerateOptions& options);

  // Sequences, for batching (Session wraps one).  open_sequence throws when
  // max_sequences are open; close_sequence returns its cache blocks.
  int64_t open_sequence();
  void close_sequence(int64_t sequence);
  int64_t sequence_position(int64_t sequence) const;
  // Positions the pool can still hand out (whole free blocks).
  int64_t free_kv_positions() const;
  // Positions `sequence` could grow to with the free blocks: its position
  // plus what its blocks and the free ones hold, capped at max_context.
  int64_t sequence_capacity(int64_t sequence) const;
  // Gives `sequence` the blocks for `positions` positions now, so that later
  // steps cannot find the pool full; false (nothing taken) when the pool
  // lacks them.
  bool reserve(int64_t sequence, int64_t positions);
  // One execution over the tokens of several sequences (each at most once):
  // logits per input, [n, vocab] with all_logits, else [1, vocab].  Every
  // input is checked before anything runs (token ids, open sequences,
  // max_context, free blocks); on an error no sequence changes.
  std::vector<Tensor> step(const std::vector<SequenceInput>& inputs);

 private:
  friend class Session;
  struct Sequences;  // the pool's bookkeeping (model.cpp)
  Model();
  // What load() and random() share: the graph of `arch` with the weights
  // `weights` gives, prepared on options.device.  `name` (the config's path
  // or name) goes into error messages.
  static std::unique_ptr<Model> build(const ArchSpec& arch, const std::string& name,
                                      WeightSource& weights, const LoadOptions& options);
  ModelInfo info_;
  Graph graph_;
  std::unique_ptr<Executor> executor_;
  std::string device_;
  int64_t prefill_chunk_ = 512;
  std::unique_ptr<Sequences> sequences_;
};

// One run of a decoder graph (as Model builds them: see decoder_builder.h;
// or a graph of inputs ids and positions only, its caches indexed by P)
// on `tokens` at positions past, past + 1, ... of the block table's first
// sequence, whose blocks are the pool's first ones in order: logits
// f32[T, vocab] of every token.  For tests and comparisons of executors.
Tensor run_decoder(Executor& executor, const std::vector<int32_t>& tokens, int64_t past);

// Architectures Model::load understands (model_type values).
std::vector<std::string> supported_model_types();

}  // namespace moert
