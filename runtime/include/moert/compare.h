// Latency of a model across devices: the measurement behind moert-demo,
// moert.compare() (`python -m moert bench`) and moert-bench's pp/tg tests.
//
//   moert::CompareOptions o;
//   o.prompt_tokens = 32;
//   o.new_tokens = 16;
//   moert::Comparison c = moert::compare_devices({.directory = "ckpt"}, {"cpu", "opencl"}, o);
//   for (const moert::DeviceLatency& d : c.devices)
//     std::printf("%s %.1f tok/s, %.3f ms p50\n", d.device.c_str(), d.prefill_tok_s(),
//                 d.decode_ms_p50());
//
// Two levels: measure_latency() times one executor (a prefill, then decode
// steps, repeated); compare_devices() runs it on each device and sets every
// device's logits against the reference backend's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moert/executor.h"
#include "moert/graph.h"
#include "moert/model.h"

namespace moert {

// ---------------------------------------------------------------------------
// One device.

// What measure_latency() runs in each repetition: a fresh sequence (the KV
// cache reset), `prompt` prefilled in one run, then `new_tokens` decode steps
// of one token each.
struct LatencyOptions {
  // May be empty when `feed` is given: decoding then starts at position 0.
  std::vector<int32_t> prompt;
  int64_t new_tokens = 16;
  // The input of decode step i is feed[i] (at least new_tokens of them);
  // empty: greedy, the argmax of the previous logits (lowest id on ties).
  std::vector<int32_t> feed;
  int64_t repeat = 1;        // timed repetitions
  bool warmup = true;        // one untimed repetition first: kernels built for these
                             // shapes, memory planned, weights touched
  bool keep_logits = false;  // keep the logits of the last repetition
};

struct LatencyRun {
  std::vector<double> prefill_s;              // per timed repetition; empty without a prompt
  std::vector<std::vector<double>> decode_s;  // per timed repetition, per step
  std::vector<int32_t> inputs;                // the decode inputs of the last repetition
  // With keep_logits: the prompt's logits [prompt, vocab] (when there is a
  // prompt), then each step's [1, vocab].
  std::vector<Tensor> logits;
};

// Times `executor`, whose graph takes ids i32[T] and positions i32[T] and
// gives logits f32[T, vocab] (the graphs of Model).  Seconds are wall-clock
// time around each run, logits copied to the host included.  Throws
// moert::Error from the executor (a context overflow, a device error) and for
// options that leave nothing to run.
LatencyRun measure_latency(Executor& executor, const LatencyOptions& options);

// The q-quantile of `values` (q in [0, 1]), interpolating linearly between
// the closest ranks; 0 for no values.
double percentile(std::vector<double> values, double q);

// `count` token ids drawn uniformly from [0, vocab); a function of the seed.
std::vector<int32_t> random_tokens(int64_t count, int64_t vocab, uint64_t seed);

// ---------------------------------------------------------------------------
// Several devices against the reference backend.

// The model compared: a checkpoint directory (Model::load on each device), or
// a graph built in memory (an Executor on each device; see measure_latency
// for its inputs and output).
struct CompareModel {
  std::string directory;
  const Graph* graph = nullptr;
};

struct CompareOptions {
  int64_t prompt_tokens = 32;  // random ids of `seed` ...
  uint64_t seed = 0;
  std::vector<int32_t> prompt;  // ... unless a prompt is given
  int64_t new_tokens = 16;      // greedy decode steps
  int64_t repeat = 3;           // timed repetitions, after one warm-up
  // A directory's activation dtype, max_context and strict; a graph uses
  // strict only.  dtype also picks the agreement tolerance (for a graph, set
  // it to the graph's activation dtype).  device and progress are not used.
  LoadOptions load;
};

// The largest max_rel_error of a device that agrees with the reference, by
// activation dtype and LoadOptions::precision: f32 activations with exact
// products differ by summation order only (1e-4); bf16 and f16 activations
// round every intermediate (2^-9, 2^-12 relative), and precision "fast"
// rounds the products' operands to bf16 (2^-9) or, for packed weights,
// quantises x per block of 32 (~1/440 of the block's max): either compounds
// through the layers to about 1e-2 of the logit scale (3e-2).  Beyond the
// exact mode a routed model may also pick other experts for a token whose
// router logits were near a tie: a disagreement no tolerance covers.
double agreement_tolerance(DType activations, const std::string& precision = "exact");

// One device's results.  The decode steps are fed the reference backend's
// greedy tokens, so that every step's logits are comparable.
struct DeviceLatency {
  std::string device;  // as asked: "cpu", "cuda:1"
  std::string error;   // why the device could not run; then nothing below is set
  std::string kind;    // "cpu", "gpu", ...
  double load_s = 0;   // Model::load, or preparing the graph
  int64_t prompt_tokens = 0;
  std::vector<double> prefill_s;  // one per repetition
  std::vector<double> decode_s;   // every step of every repetition
  size_t fallbacks = 0;           // nodes placed on the reference backend instead
  uint64_t peak_bytes = 0;        // activation arenas of the last run plus the KV caches
  uint64_t bytes_per_token = 0;   // weight bytes a decode step reads (0 for a graph)
  double max_abs_diff = 0;        // largest |logit - reference logit|, prompt rows and every step
  double max_rel_error = 0;  // per row: largest |difference| / largest |reference logit|; worst
  bool agrees = false;       // max_rel_error within the tolerance

  double prefill_ms() const;  // median over the repetitions
  double prefill_tok_s() const;
  double decode_ms_p50() const;
  double decode_ms_p95() const;
  double decode_tok_s() const;  // steps over their total time
};

struct Comparison {
  ModelInfo info;  // a directory's; for a graph only vocab_size is set
  std::vector<int32_t> prompt;
  std::vector<int32_t> reference_tokens;  // the reference backend's greedy tokens
  double tolerance = 0;                   // agreement_tolerance of the load options
  std::vector<DeviceLatency> devices;     // in the order asked
};

// Every device of every available backend: "reference:0", "cpu:0", ...
std::vector<std::string> available_devices();

// Runs the model on the reference backend once (its greedy tokens and
// logits), then on each of `devices` (empty: available_devices()).  A device
// that fails gets its error in its row and the others still run; an error
// on the reference backend throws moert::Error.
Comparison compare_devices(const CompareModel& model, std::vector<std::string> devices,
                           const CompareOptions& options);

}  // namespace moert
