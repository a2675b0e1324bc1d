#include "moert/compare.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>

#include "moert/backend_registry.h"
#include "moert/error.h"

namespace moert {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int32_t argmax_last_row(const Tensor& logits) {
  const int64_t vocab = logits.dim(1);
  const float* row = logits.data_as<float>() + (logits.dim(0) - 1) * vocab;
  return static_cast<int32_t>(std::max_element(row, row + vocab) - row);
}

// The model on one device, ready to run.
struct Prepared {
  std::unique_ptr<Model> model;        // a directory
  std::unique_ptr<Executor> executor;  // a graph
  double load_s = 0;

  Executor& exe() { return model ? model->executor() : *executor; }
};

Prepared prepare(const CompareModel& m, const std::string& device, const CompareOptions& o) {
  check(m.directory.empty() != (m.graph == nullptr),
        "compare_devices: give a checkpoint directory or a graph");
  Prepared p;
  const Clock::time_point t0 = Clock::now();
  if (m.graph) {
    p.executor = std::make_unique<Executor>(*m.graph, ExecutorOptions{device, o.load.strict});
  } else {
    LoadOptions lo = o.load;
    lo.device = device;
    lo.progress = nullptr;
    p.model = Model::load(m.directory, lo);
  }
  p.load_s = seconds_since(t0);
  return p;
}

// Sets d's differences from the reference logits (the same rows, in order).
void compare_logits(const std::vector<Tensor>& got, const std::vector<Tensor>& want,
                    DeviceLatency& d) {
  check(got.size() == want.size(), "compare_devices: the runs gave different numbers of logits");
  for (size_t s = 0; s < got.size(); ++s) {
    const std::vector<double> a = got[s].to_doubles(), b = want[s].to_doubles();
    check(a.size() == b.size(), "compare_devices: logits " + got[s].describe() + " against " +
                                    want[s].describe() + " of the reference backend");
    const size_t vocab = static_cast<size_t>(want[s].dim(1));
    for (size_t row = 0; row + vocab <= b.size(); row += vocab) {
      double diff = 0, scale = 0;
      for (size_t i = row; i < row + vocab; ++i) {
        diff = std::max(diff, std::isnan(a[i]) ? INFINITY : std::fabs(a[i] - b[i]));
        scale = std::max(scale, std::fabs(b[i]));
      }
      d.max_abs_diff = std::max(d.max_abs_diff, diff);
      d.max_rel_error = std::max(d.max_rel_error, scale > 0 ? diff / scale : diff);
    }
  }
}

}  // namespace

LatencyRun measure_latency(Executor& executor, const LatencyOptions& o) {
  check(o.new_tokens >= 0 && o.repeat >= 0, "measure_latency: negative counts");
  check(!o.prompt.empty() || o.new_tokens > 0, "measure_latency: no prompt and no decode steps");
  check(!o.prompt.empty() || !o.feed.empty(), "measure_latency: greedy decoding needs a prompt");
  check(o.feed.empty() || static_cast<int64_t>(o.feed.size()) >= o.new_tokens,
        "measure_latency: feed has fewer than new_tokens tokens");
  LatencyRun r;
  const int64_t first = o.warmup ? -1 : 0;
  for (int64_t rep = first; rep < o.repeat; ++rep) {
    const bool timed = rep >= 0, last = rep == o.repeat - 1;
    executor.reset_state();
    std::vector<double> steps;
    std::vector<int32_t> inputs;
    Tensor logits;
    if (!o.prompt.empty()) {
      const Clock::time_point t = Clock::now();
      logits = run_decoder(executor, o.prompt, 0);
      if (timed) r.prefill_s.push_back(seconds_since(t));
      if (last && o.keep_logits) r.logits.push_back(logits);
    }
    int64_t past = static_cast<int64_t>(o.prompt.size());
    for (int64_t step = 0; step < o.new_tokens; ++step, ++past) {
      const int32_t next =
          o.feed.empty() ? argmax_last_row(logits) : o.feed[static_cast<size_t>(step)];
      inputs.push_back(next);
      const Clock::time_point t = Clock::now();
      logits = run_decoder(executor, {next}, past);
      steps.push_back(seconds_since(t));
      if (last && o.keep_logits) r.logits.push_back(logits);
    }
    if (timed) r.decode_s.push_back(std::move(steps));
    if (last) r.inputs = std::move(inputs);
  }
  return r;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::vector<int32_t> random_tokens(int64_t count, int64_t vocab, uint64_t seed) {
  check(count >= 0 && vocab > 0, "random_tokens: needs count >= 0 and vocab > 0");
  std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(count));
  for (int32_t& x : t) x = pick(rng);
  return t;
}

double agreement_tolerance(DType activations, const std::string& precision) {
  return activations == DType::f32 && precision == "exact" ? 1e-4 : 3e-2;
}

double DeviceLatency::prefill_ms() const { return percentile(prefill_s, 0.5) * 1e3; }

double DeviceLatency::prefill_tok_s() const {
  const double s = percentile(prefill_s, 0.5);
  return s > 0 ? static_cast<double>(prompt_tokens) / s : 0;
}

double DeviceLatency::decode_ms_p50() const { return percentile(decode_s, 0.5) * 1e3; }

double DeviceLatency::decode_ms_p95() const { return percentile(decode_s, 0.95) * 1e3; }

double DeviceLatency::decode_tok_s() const {
  double total = 0;
  for (double s : decode_s) total += s;
  return total > 0 ? static_cast<double>(decode_s.size()) / total : 0;
}

std::vector<std::string> available_devices() {
  std::vector<std::string> out;
  for (const auto& b : BackendRegistry::global().backends())
    if (b->available())
      for (int32_t d = 0; d < b->device_count(); ++d)
        out.push_back(b->name() + ":" + std::to_string(d));
  return out;
}

Comparison compare_devices(const CompareModel& model, std::vector<std::string> devices,
                           const CompareOptions& options) {
  check(!options.prompt.empty() || options.prompt_tokens > 0,
        "compare_devices: prompt_tokens must be positive");
  check(options.repeat > 0, "compare_devices: repeat must be positive");
  if (devices.empty()) devices = available_devices();
  Comparison c;
  c.tolerance = agreement_tolerance(options.load.dtype, options.load.precision);

  // The reference backend: the prompt, the greedy tokens and the logits every
  // device is held to.
  LatencyRun want;
  {
    Prepared ref = prepare(model, "reference", options);
    if (ref.model) {
      c.info = ref.model->info();
    } else {
      const Value& logits = model.graph->value(model.graph->outputs().at(0));
      check(logits.shape.rank() == 2 && logits.shape[1].is_static(),
            "compare_devices: the graph's output must be logits [T, vocab]");
      c.info.vocab_size = logits.shape[1].fixed;
    }
    c.prompt = options.prompt.empty()
                   ? random_tokens(options.prompt_tokens, c.info.vocab_size, options.seed)
                   : options.prompt;
    LatencyOptions lo;
    lo.prompt = c.prompt;
    lo.new_tokens = options.new_tokens;
    lo.warmup = false;
    lo.keep_logits = true;
    want = measure_latency(ref.exe(), lo);
    c.reference_tokens = want.inputs;
  }

  LatencyOptions lo;
  lo.prompt = c.prompt;
  lo.new_tokens = options.new_tokens;
  lo.feed = c.reference_tokens;
  lo.repeat = options.repeat;
  lo.keep_logits = true;
  for (const std::string& device : devices) {
    DeviceLatency& d = c.devices.emplace_back();
    d.device = device;
    d.prompt_tokens = static_cast<int64_t>(c.prompt.size());
    try {
      Prepared p = prepare(model, device, options);
      Executor& exe = p.exe();
      const DeviceRef ref = BackendRegistry::global().resolve(device);
      d.kind = device_kind_name(ref.backend->device_info(ref.device).kind);
      d.load_s = p.load_s;
      d.fallbacks = exe.fallbacks().size();
      LatencyRun run = measure_latency(exe, lo);
      d.prefill_s = run.prefill_s;
      for (const std::vector<double>& steps : run.decode_s)
        d.decode_s.insert(d.decode_s.end(), steps.begin(), steps.end());
      const MemoryReport mem = exe.memory();
      d.peak_bytes = mem.state_bytes;
      for (const auto& [dev, bytes] : mem.arena_bytes) d.peak_bytes += bytes;
      if (p.model) d.bytes_per_token = p.model->summary().bytes_per_token;
      compare_logits(run.logits, want.logits, d);
      d.agrees = d.max_rel_error <= c.tolerance;
    } catch (const Error& e) {
      d = DeviceLatency{};
      d.device = device;
      d.error = e.what();
    }
  }
  return c;
}

}  // namespace moert
