// moert-bench: prompt-processing (pp) and token-generation (tg) throughput of
// a model on one or more backends, with the decode step's memory traffic set
// against the host's measured read bandwidth.  The model is a Hugging Face
// checkpoint (--model DIR) or random weights built in memory from a config
// (--config NAME of bench/models.json, or a config.json path).  Prints a table
// (one row per weight dtype × backend × thread count) and optionally writes
// every number, with the machine and command, as JSON.  bench/README.md
// describes the method and the columns.
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/bandwidth.h"
#include "moert/compare.h"
#include "moert/error.h"
#include "moert/executor.h"
#include "moert/model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const char* const kUsage = R"(usage: moert-bench (--model DIR | --config NAME|PATH) [options]

Model (one of):
  --model DIR           a Hugging Face checkpoint directory (weights as stored)
  --config NAME|PATH    random weights for an entry of models.json (e.g. bench-moe-s),
                        or for a config.json file
  --models-json PATH    where --config names are looked up
                        (default: ../shared/bench/models.json beside the source tree)
  --dtype LIST          random weights' storage: f32, bf16, f16, fp8, or int8, int4,
                        mxfp4 (bf16 weights packed at load as LoadOptions::quantize
                        packs them; default bf16), or <format>-experts: only the
                        routed experts packed, the rest bf16 (GPT-OSS's MXFP4
                        checkpoints); a comma list gives one row per dtype
  --seed N              random weights' seed (default 0)

What to run:
  --backend LIST        devices, comma separated: cpu, reference, opencl, cuda:0 ...
                        (default cpu); one row per backend
  -t, --threads LIST    CPU threads (MOERT_CPU_THREADS and OMP_NUM_THREADS); a comma
                        list runs each value in its own child process (default:
                        $MOERT_CPU_THREADS, else every hardware thread)
  --act-dtype D         activation dtype: f32, bf16, f16 (default f32)
  --kv-dtype D          KV cache dtype: f32, bf16, f16, fp8 (default: the activation dtype)
  --mla-cache M         DeepSeek's MLA cache: latent (default) or expanded
  --precision P         fast (default: bf16 products with narrow weights, as users run)
                        or exact (f32 products; LoadOptions::precision)
  -p N                  prompt tokens of the pp test (default 512; 0 skips it)
  -n N                  generated tokens of the tg test (default 32; 0 skips it)
  -d N                  KV depth: tokens prefilled before the tg test (default 0)
  -r N                  repetitions (default 3)
  -b LIST               batched decode: N sequences decoding together, comma list
                        (e.g. 1,4,8,16); each step runs one token of every sequence
                        in one execution (Model::step).  Reports aggregate and
                        per-sequence tok/s, and the ratio to 1 sequence measured
                        in the same run (1 is added when not listed)
  --no-strict           allow fallbacks to the reference backend (default: an error)
  --profile             per-op and per-node-class time of one prefill and one decode step
  --bandwidth-mib N     buffer of the read-bandwidth measurement (default 1024; 0 skips)

Output:
  --json FILE           every number, with the machine and command line, as JSON
  -h, --help            this text
)";

struct Options {
  std::string model_dir;
  std::string config;  // --config as given
  std::string models_json =
      (fs::path(MOERT_SOURCE_DIR) / "../shared/bench/models.json").lexically_normal().string();
  std::vector<std::string> dtypes;
  uint64_t seed = 0;
  std::vector<std::string> backends = {"cpu"};
  std::vector<int> threads;
  moert::DType act_dtype = moert::DType::f32;
  std::string kv_dtype;  // "": the activation dtype
  std::string mla_cache = "latent";
  std::string precision = "fast";
  int64_t p = 512, n = 32, d = 0, r = 3;
  std::vector<int64_t> batches;  // -b: sequences decoding together
  bool strict = true;
  bool profile = false;
  int64_t bandwidth_mib = 1024;
  std::string json_path;
  std::string command;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "moert-bench: %s\n(moert-bench --help lists the options)\n",
               message.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

int64_t parse_int(const std::string& option, const std::string& value, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min)
    usage_error(option + " needs an integer >= " + std::to_string(min) + ", got '" + value + "'");
  return v;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_=+./,:@%") == std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + shell_quote(argv[i]);
  std::vector<std::string> dtypes;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool has_value = false;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--model") {
      o.model_dir = next();
    } else if (arg == "--config") {
      o.config = next();
    } else if (arg == "--models-json") {
      o.models_json = next();
    } else if (arg == "--dtype") {
      dtypes = split(next());
      for (const std::string& d : dtypes)
        if (d != "f32" && d != "bf16" && d != "f16" && d != "fp8" && d != "int8" && d != "int4" &&
            d != "mxfp4" && d != "int8-experts" && d != "int4-experts" && d != "mxfp4-experts")
          usage_error(
              "--dtype must be f32, bf16, f16, fp8, int8, int4, mxfp4 or int8-experts, "
              "int4-experts, mxfp4-experts (or a comma list), got '" +
              d + "'");
    } else if (arg == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(arg, next(), 0));
    } else if (arg == "--backend") {
      o.backends = split(next());
    } else if (arg == "-t" || arg == "--threads") {
      o.threads.clear();
      for (const std::string& t : split(next()))
        o.threads.push_back(static_cast<int>(parse_int(arg, t, 1)));
    } else if (arg == "--mla-cache") {
      o.mla_cache = next();
      if (o.mla_cache != "latent" && o.mla_cache != "expanded")
        usage_error("--mla-cache must be latent or expanded, got '" + o.mla_cache + "'");
    } else if (arg == "--kv-dtype") {
      o.kv_dtype = next();
      if (o.kv_dtype != "f32" && o.kv_dtype != "bf16" && o.kv_dtype != "f16" && o.kv_dtype != "fp8")
        usage_error("--kv-dtype must be f32, bf16, f16 or fp8, got '" + o.kv_dtype + "'");
    } else if (arg == "--act-dtype") {
      const std::string d = next();
      if (d == "f32")
        o.act_dtype = moert::DType::f32;
      else if (d == "bf16")
        o.act_dtype = moert::DType::bf16;
      else if (d == "f16")
        o.act_dtype = moert::DType::f16;
      else
        usage_error("--act-dtype must be f32, bf16 or f16, got '" + d + "'");
    } else if (arg == "--precision") {
      o.precision = next();
      if (o.precision != "fast" && o.precision != "exact")
        usage_error("--precision must be fast or exact, got '" + o.precision + "'");
    } else if (arg == "-p") {
      o.p = parse_int(arg, next(), 0);
    } else if (arg == "-n") {
      o.n = parse_int(arg, next(), 0);
    } else if (arg == "-d") {
      o.d = parse_int(arg, next(), 0);
    } else if (arg == "-r") {
      o.r = parse_int(arg, next(), 1);
    } else if (arg == "-b") {
      o.batches.clear();
      for (const std::string& b : split(next())) o.batches.push_back(parse_int(arg, b, 1));
      if (std::find(o.batches.begin(), o.batches.end(), 1) == o.batches.end())
        o.batches.insert(o.batches.begin(), 1);
    } else if (arg == "--strict") {
      o.strict = true;
    } else if (arg == "--no-strict") {
      o.strict = false;
    } else if (arg == "--profile") {
      o.profile = true;
    } else if (arg == "--bandwidth-mib") {
      o.bandwidth_mib = parse_int(arg, next(), 0);
    } else if (arg == "--json") {
      o.json_path = next();
    } else {
      usage_error("unknown option '" + arg + "'");
    }
  }
  if (o.model_dir.empty() == o.config.empty())
    usage_error("give one of --model DIR or --config NAME");
  if (!o.model_dir.empty() && !dtypes.empty())
    usage_error(
        "--dtype picks the storage of random weights; a checkpoint's weights stay as "
        "stored (--act-dtype sets the activations)");
  o.dtypes = dtypes.empty() ? std::vector<std::string>{o.model_dir.empty() ? "bf16" : ""} : dtypes;
  if (o.backends.empty()) usage_error("--backend needs at least one device");
  if (o.p == 0 && o.n == 0) usage_error("-p 0 and -n 0 leave nothing to measure");
  if (!o.batches.empty() && o.n == 0) usage_error("-b measures decoding: give -n > 0");
  if (o.threads.empty()) {
    const char* env = std::getenv("MOERT_CPU_THREADS");
    o.threads.push_back(env ? static_cast<int>(parse_int("MOERT_CPU_THREADS", env, 1))
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  return o;
}

// ---------------------------------------------------------------------------
// The model to benchmark.

struct ModelSpec {
  std::string name;         // "bench-moe-s", a path
  std::string config_json;  // random weights: the config body
  std::string directory;    // a checkpoint
};

ModelSpec resolve_model(const Options& o) {
  ModelSpec m;
  if (!o.model_dir.empty()) {
    m.directory = o.model_dir;
    m.name = fs::path(o.model_dir).lexically_normal().filename().string();
    if (m.name.empty()) m.name = o.model_dir;
    return m;
  }
  auto read_json = [](const std::string& path) {
    std::ifstream in(path);
    if (!in) throw moert::Error(path + ": cannot open");
    try {
      return json::parse(in);
    } catch (const json::exception& e) {
      throw moert::Error(path + ": invalid JSON: " + e.what());
    }
  };
  if (fs::is_regular_file(o.config) || o.config.ends_with(".json")) {
    m.name = o.config;
    m.config_json = read_json(o.config).dump();
    return m;
  }
  const json all = read_json(o.models_json);
  if (!all.is_object() || !all.contains(o.config) || o.config.starts_with("_")) {
    std::string names;
    if (all.is_object())
      for (const auto& [k, v] : all.items())
        if (!k.starts_with("_")) names += (names.empty() ? "" : ", ") + k;
    throw moert::Error(o.models_json + ": no model '" + o.config + "'; it has: " + names);
  }
  m.name = o.config;
  m.config_json = all.at(o.config).dump();
  return m;
}

// ---------------------------------------------------------------------------
// Measurements.

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

// Sample standard deviation (0 for fewer than two values).
double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

// VmHWM (the peak resident set) of this process, in bytes; 0 if unknown.
uint64_t peak_rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;
}

// Resets VmHWM to the current resident set, so that each row's peak is its
// own; false when the kernel refuses (the peak then covers the whole run).
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj"; other numbered
// segments (experts, decomposition steps) become "*".
std::string node_class(const std::string& name) {
  std::string s = name;
  const std::string layers = "model.layers.";
  if (s.rfind(layers, 0) == 0) {
    size_t i = layers.size();
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i < s.size() && s[i] == '.') s = s.substr(i + 1);
  }
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const bool segment_start = i == 0 || s[i - 1] == '.' || s[i - 1] == '/';
    size_t j = i;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    if (segment_start && j > i && (j == s.size() || s[j] == '.' || s[j] == '/')) {
      out += '*';
      i = j;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// One profiled run, aggregated by op and by node class.
json aggregate_profile(const std::vector<moert::NodeTiming>& timings, double wall_s) {
  std::map<std::string, std::pair<double, int>> by_op, by_class;
  double total = 0;
  bool timed = true;
  for (const moert::NodeTiming& t : timings) {
    if (t.seconds < 0) {
      timed = false;
      continue;
    }
    by_op[t.op].first += t.seconds;
    by_op[t.op].second += 1;
    by_class[node_class(t.node)].first += t.seconds;
    by_class[node_class(t.node)].second += 1;
    total += t.seconds;
  }
  auto rows = [&](const std::map<std::string, std::pair<double, int>>& m, const char* key) {
    std::vector<std::pair<double, std::string>> order;
    for (const auto& [k, v] : m) order.emplace_back(v.first, k);
    std::sort(order.rbegin(), order.rend());
    json out = json::array();
    for (const auto& [s, k] : order)
      out.push_back({{key, k},
                     {"ms", s * 1e3},
                     {"percent", total > 0 ? 100 * s / total : 0},
                     {"nodes", m.at(k).second}});
    return out;
  };
  std::map<std::string, int> devices;
  for (const moert::NodeTiming& t : timings) devices[t.device] += 1;
  return {{"wall_ms", wall_s * 1e3},
          {"node_ms", total * 1e3},
          {"nodes", timings.size()},
          {"all_nodes_timed", timed},
          {"nodes_per_device", devices},
          {"by_op", rows(by_op, "op")},
          {"by_class", rows(by_class, "class")}};
}

// ---------------------------------------------------------------------------
// One row: a model on one backend.

// Progress on stderr, so that stdout holds only the results.
void note(const std::string& message) {
  std::fprintf(stderr, "moert-bench: %s\n", message.c_str());
  std::fflush(stderr);
}

// -b: for each batch size b, b sequences prefilled with the depth (untimed),
// then o.n steps each running one token of every sequence in one execution;
// a warm-up run, then o.r timed runs.  Aggregate tok/s = b * n / time, per
// sequence n / time; speedup: aggregate over the same run's b = 1 rate.
json batched_decode(moert::Model& model, const Options& o, const std::vector<int32_t>& depth,
                    const std::vector<int32_t>& generated) {
  json out = json::array();
  double single = 0;
  for (int64_t b : o.batches) {
    std::vector<double> rates, steps_ms;
    for (int64_t run = 0; run <= o.r; ++run) {
      std::vector<int64_t> seqs;
      for (int64_t i = 0; i < b; ++i) seqs.push_back(model.open_sequence());
      if (o.d > 0)
        for (int64_t s : seqs) model.step({{s, depth, false}});
      double total = 0;
      for (int64_t step = 0; step < o.n; ++step) {
        std::vector<moert::SequenceInput> inputs;
        for (int64_t i = 0; i < b; ++i)
          inputs.push_back({seqs[static_cast<size_t>(i)],
                            {generated[static_cast<size_t>((step + i) % o.n)]},
                            false});
        const Clock::time_point t = Clock::now();
        model.step(inputs);
        const double sec = seconds_since(t);
        total += sec;
        if (run > 0) steps_ms.push_back(sec * 1e3);
      }
      for (int64_t s : seqs) model.close_sequence(s);
      if (run > 0) rates.push_back(static_cast<double>(b * o.n) / total);
    }
    const double agg = mean(rates);
    if (b == 1) single = agg;
    out.push_back({{"sequences", b},
                   {"tok_s", rates},
                   {"mean_tok_s", agg},
                   {"stddev_tok_s", stddev(rates)},
                   {"per_sequence_tok_s", agg / static_cast<double>(b)},
                   {"step_ms_p50", moert::percentile(steps_ms, 0.5)},
                   {"step_ms_p95", moert::percentile(steps_ms, 0.95)},
                   {"speedup", single > 0 ? agg / single : 0.0}});
  }
  return out;
}

json bench_backend(const Options& o, const ModelSpec& spec, const std::string& dtype,
                   const std::string& backend, int threads, const json& bandwidth) {
  json row = {
      {"model", spec.name},
      {"backend", backend},
      {"threads", threads},
      {"weights", spec.directory.empty() ? "random " + dtype : "checkpoint"},
      {"activation_dtype", std::string(moert::dtype_name(o.act_dtype))},
      {"kv_dtype", o.kv_dtype.empty() ? std::string(moert::dtype_name(o.act_dtype)) : o.kv_dtype},
      {"precision", o.precision},
      {"mla_cache", o.mla_cache},
      {"strict", o.strict}};
  const std::string label =
      backend + " " + (dtype.empty() ? "" : dtype + " ") + "t=" + std::to_string(threads);
  try {
    // The device, as the registry names it.
    moert::DeviceRef dev = moert::BackendRegistry::global().resolve(backend);
    row["device"] = dev.str();
    row["device_name"] = dev.backend->device_info(dev.device).name;

    const bool rss_reset = reset_peak_rss();
    row["peak_rss_is_per_row"] = rss_reset;
    moert::LoadOptions lo;
    lo.device = backend;
    lo.dtype = o.act_dtype;
    lo.kv_dtype = o.kv_dtype;
    lo.mla_cache = o.mla_cache;
    lo.precision = o.precision;
    lo.strict = o.strict;
    // Room for the longest sequence: the pp prompt plus one decode step
    // (warm-up, profile) or the depth plus the generated tokens.
    lo.max_context = std::max<int64_t>({o.p + 1, o.d + o.n, o.d + 1, 2});
    // -b: a sequence row and the cache positions for each batched sequence.
    if (!o.batches.empty()) {
      const int64_t most = *std::max_element(o.batches.begin(), o.batches.end());
      lo.max_sequences = std::max<int64_t>(lo.max_sequences, most);
      lo.kv_cache_tokens = std::max(lo.max_context, most * (o.d + o.n));
    }
    Clock::time_point prepare_start{}, prepare_end{};
    lo.progress = [&](const std::string& stage, uint64_t done, uint64_t total) {
      if (stage != "prepare") return;
      if (done == 0) prepare_start = Clock::now();
      if (done == total) prepare_end = Clock::now();
    };
    note(label + ": loading " + spec.name);
    const Clock::time_point t0 = Clock::now();
    std::unique_ptr<moert::Model> model;
    if (spec.directory.empty()) {
      moert::RandomWeights w;
      w.dtype = dtype;
      w.seed = o.seed;
      w.name = spec.name;
      model = moert::Model::random(spec.config_json, w, lo);
    } else {
      model = moert::Model::load(spec.directory, lo);
    }
    const double load_s = seconds_since(t0);
    const double prepare_s = std::chrono::duration<double>(prepare_end - prepare_start).count();
    row["load_s"] = load_s;
    row["prepare_s"] = prepare_s;
    row["build_s"] = load_s - prepare_s;

    const moert::ModelInfo& info = model->info();
    const moert::ModelSummary sum = model->summary();
    row["architecture"] = info.architecture;
    row["weight_dtype"] = info.weight_dtype;
    row["params"] = sum.total_params;
    row["active_params"] = sum.active_params;
    row["weight_bytes"] = sum.weight_bytes;
    row["bytes_per_token"] = sum.bytes_per_token;
    row["kv_bytes_per_token"] = sum.kv_bytes_per_token;
    row["max_context"] = info.max_context;
    moert::Executor& ex = model->executor();
    row["fallbacks"] = ex.fallbacks().size();
    json partitions = json::array();
    for (const moert::PartitionInfo& p : ex.partitions())
      partitions.push_back({{"device", p.device}, {"nodes", p.num_nodes}});
    row["partitions"] = partitions;

    const int64_t vocab = info.vocab_size;
    const std::vector<int32_t> prompt = moert::random_tokens(o.p, vocab, 1);
    const std::vector<int32_t> depth = moert::random_tokens(o.d, vocab, 2);
    const std::vector<int32_t> generated =
        moert::random_tokens(std::max<int64_t>(o.n, 1), vocab, 3);

    // Each test by moert::measure_latency: one untimed warm-up run
    // (first-touch of the weights, lazily built kernels, the memory plans of
    // every shape), then o.r timed runs, each on a fresh sequence.
    if (o.p > 0) {
      note(label + ": pp" + std::to_string(o.p) + ", warm-up and " + std::to_string(o.r) + " runs");
      moert::LatencyOptions pp;
      pp.prompt = prompt;
      pp.new_tokens = 0;
      pp.repeat = o.r;
      const std::vector<double> secs = moert::measure_latency(ex, pp).prefill_s;
      std::vector<double> rates;
      for (double s : secs) rates.push_back(static_cast<double>(o.p) / s);
      row["pp"] = {{"tokens", o.p},
                   {"seconds", secs},
                   {"tok_s", rates},
                   {"mean_tok_s", mean(rates)},
                   {"stddev_tok_s", stddev(rates)}};
    }
    if (o.n > 0) {
      note(label + ": tg" + std::to_string(o.n) + ", warm-up and " + std::to_string(o.r) + " runs");
      // The depth is prefilled (its time unused), then n steps are fed the
      // generated tokens.
      moert::LatencyOptions tg;
      tg.prompt = depth;
      tg.new_tokens = o.n;
      tg.feed = generated;
      tg.repeat = o.r;
      std::vector<double> rates, steps_ms;
      for (const std::vector<double>& steps : moert::measure_latency(ex, tg).decode_s) {
        double total = 0;
        for (double s : steps) {
          total += s;
          steps_ms.push_back(s * 1e3);
        }
        rates.push_back(static_cast<double>(o.n) / total);
      }
      row["tg"] = {{"tokens", o.n},
                   {"depth", o.d},
                   {"tok_s", rates},
                   {"mean_tok_s", mean(rates)},
                   {"stddev_tok_s", stddev(rates)},
                   {"step_ms", steps_ms},
                   {"ms_per_token_p50", moert::percentile(steps_ms, 0.5)},
                   {"ms_per_token_p95", moert::percentile(steps_ms, 0.95)}};
      const double implied = static_cast<double>(sum.bytes_per_token) * mean(rates);
      row["implied_bytes_per_s"] = implied;
      const double measured = bandwidth.value("bytes_per_s", 0.0);
      if (measured > 0) row["bandwidth_fraction"] = implied / measured;
    }
    row["read_bandwidth_bytes_per_s"] = bandwidth.value("bytes_per_s", 0.0);
    if (!o.batches.empty()) {
      note(label + ": batched decode, " + std::to_string(o.batches.size()) +
           " batch sizes, warm-up and " + std::to_string(o.r) + " runs each");
      row["batch"] = batched_decode(*model, o, depth, generated);
    }

    if (o.profile) {
      note(label + ": profile");
      ex.set_profiling(true);
      json prof;
      // Each profiled run twice, the second counted (the first may plan).
      for (int pass = 0; pass < 2; ++pass) {
        moert::Session s = model->session();
        if (o.d > 0) s.append(depth);
        const Clock::time_point t = Clock::now();
        s.append({generated[0]});
        prof["decode"] = aggregate_profile(ex.profile(), seconds_since(t));
        prof["decode"]["depth"] = o.d;
      }
      if (o.p > 0)
        for (int pass = 0; pass < 2; ++pass) {
          moert::Session s = model->session();
          const Clock::time_point t = Clock::now();
          s.append(prompt);
          prof["prefill"] = aggregate_profile(ex.profile(), seconds_since(t));
          prof["prefill"]["tokens"] = o.p;
        }
      ex.set_profiling(false);
      row["profile"] = prof;
    }
    row["peak_rss_bytes"] = peak_rss();
  } catch (const std::exception& e) {
    row["error"] = e.what();
    note(label + ": error: " + e.what());
  }
  return row;
}

// Every row of one thread count (this process's MOERT_CPU_THREADS).
json bench_threads(const Options& o, const ModelSpec& spec, int threads) {
  const std::string t = std::to_string(threads);
  // Read by the CPU plugin's init, i.e. when the registry first loads plugins
  // (below, at the first resolve): set before that, once per process.
  setenv("MOERT_CPU_THREADS", t.c_str(), 1);
  setenv("OMP_NUM_THREADS", t.c_str(), 1);
  json bandwidth = {{"threads", threads}};
  if (o.bandwidth_mib > 0) {
    note("measuring the read bandwidth with " + t + " threads");
    const moert::BandwidthMeasurement bw =
        moert::measure_read_bandwidth(static_cast<uint64_t>(o.bandwidth_mib) << 20, threads, 10);
    bandwidth["bytes_per_s"] = bw.bytes_per_second;
    bandwidth["buffer_bytes"] = bw.buffer_bytes;
  }
  json rows = json::array();
  for (const std::string& dtype : o.dtypes)
    for (const std::string& backend : o.backends)
      rows.push_back(bench_backend(o, spec, dtype, backend, threads, bandwidth));
  json backends = json::array();
  for (const auto& b : moert::BackendRegistry::global().backends()) {
    json d = {{"name", b->name()}, {"path", b->path()}, {"available", b->available()}};
    if (!b->available()) d["reason"] = b->unavailable_reason();
    backends.push_back(d);
  }
  return {{"threads", threads}, {"bandwidth", bandwidth}, {"rows", rows}, {"backends", backends}};
}

// Runs bench_threads in a child process (the thread count of the CPU
// backend is fixed once per process) and returns what it wrote.
json bench_threads_in_child(const Options& o, const ModelSpec& spec, int threads) {
  char path[] = "/tmp/moert-bench-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) throw moert::Error("cannot create a temporary file in /tmp");
  close(fd);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw moert::Error("fork failed");
  if (pid == 0) {
    int code = 0;
    try {
      std::ofstream(path) << bench_threads(o, spec, threads).dump();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "moert-bench: %s\n", e.what());
      code = 1;
    }
    std::fflush(stderr);
    _exit(code);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  json out;
  std::ifstream in(path);
  try {
    if (in) out = json::parse(in);
  } catch (const json::exception&) {
  }
  std::remove(path);
  if (out.is_object()) return out;
  std::string why = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                        : "exit status " + std::to_string(WEXITSTATUS(status));
  json rows = json::array();
  for (const std::string& dtype : o.dtypes)
    for (const std::string& backend : o.backends)
      rows.push_back({{"model", spec.name},
                      {"backend", backend},
                      {"threads", threads},
                      {"weights", dtype.empty() ? "checkpoint" : "random " + dtype},
                      {"error", "the benchmark process for " + std::to_string(threads) +
                                    " threads ended without results (" + why + ")"}});
  return {{"threads", threads}, {"bandwidth", {{"threads", threads}}}, {"rows", rows}};
}

// ---------------------------------------------------------------------------
// The machine, the table, the JSON.

std::string run_command(const std::string& cmd) {
  std::string out;
  if (FILE* f = popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

json machine_info() {
  json m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      m["cpu"] = line.substr(line.find_first_not_of(' ', line.find(':') + 1));
      break;
    }
  // The instruction-set extensions the kernels care about.
  cpuinfo.clear();
  cpuinfo.seekg(0);
  while (std::getline(cpuinfo, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      json flags = json::array();
      for (std::string w; words >> w;)
        if (w == "avx2" || w == "fma" || w == "f16c" || w == "avx512f" || w == "avx512bw" ||
            w == "avx512_vnni" || w == "avx512_bf16" || w == "avx512_fp16" || w == "amx_bf16" ||
            w == "amx_int8" || w == "amx_tile")
          flags.push_back(w);
      m["cpu_flags"] = flags;
      break;
    }
  m["hardware_threads"] = std::thread::hardware_concurrency();
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) m["memory_bytes"] = static_cast<uint64_t>(pages) * page;
  struct utsname u {};
  if (uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  if (std::getline(thp, line)) m["transparent_hugepages"] = line;
  return m;
}

json source_info() {
  json s = {{"version", MOERT_VERSION}};
  const std::string git = "git -C " + shell_quote(MOERT_SOURCE_DIR) + " ";
  const std::string commit = run_command(git + "rev-parse HEAD 2>/dev/null");
  if (!commit.empty()) {
    s["git_commit"] = commit;
    s["git_dirty"] =
        !run_command(git + "status --porcelain --untracked-files=no 2>/dev/null").empty();
  }
  return s;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Rows of text, columns padded to their widest cell (first column left-aligned).
void print_table(const std::vector<std::vector<std::string>>& cells, size_t left_columns) {
  std::vector<size_t> width;
  for (const auto& row : cells)
    for (size_t c = 0; c < row.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], row[c].size());
    }
  for (const auto& row : cells) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      line += (c ? "  " : "") + (c < left_columns ? row[c] + pad : pad + row[c]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void print_results(const json& report, const Options& o) {
  const json& m = report["machine"];
  std::printf("moert-bench %s: %s, %s\n", report["source"].value("version", "").c_str(),
              m.value("cpu", std::string("unknown CPU")).c_str(),
              (std::to_string(m.value("hardware_threads", 0)) + " hardware threads").c_str());
  for (const json& b : report["bandwidth"])
    if (b.contains("bytes_per_s"))
      std::printf("read bandwidth, %d thread%s: %.1f GB/s\n", b["threads"].get<int>(),
                  b["threads"].get<int>() == 1 ? "" : "s", b["bytes_per_s"].get<double>() / 1e9);
  // One line per model variant.
  std::map<std::string, bool> shown;
  for (const json& r : report["results"]) {
    if (!r.contains("params")) continue;
    const std::string key = r["model"].get<std::string>() + r["weight_dtype"].get<std::string>();
    if (shown[key]) continue;
    shown[key] = true;
    std::printf(
        "model %s (%s): %s weights, %.1f M params (%.1f M active), %.1f MB stored, "
        "%.1f MB read per token\n",
        r["model"].get<std::string>().c_str(), r["architecture"].get<std::string>().c_str(),
        r["weight_dtype"].get<std::string>().c_str(), r["params"].get<double>() / 1e6,
        r["active_params"].get<double>() / 1e6, r["weight_bytes"].get<double>() / 1e6,
        r["bytes_per_token"].get<double>() / 1e6);
  }
  std::printf("\n");

  const std::string pp = (o.p > 0 ? "pp" + std::to_string(o.p) : std::string("pp")) + " t/s";
  const std::string tg = (o.n > 0 ? "tg" + std::to_string(o.n) : std::string("tg")) +
                         (o.d > 0 ? "@d" + std::to_string(o.d) : "") + " t/s";
  std::vector<std::vector<std::string>> cells = {{"backend", "weights", "thr", "load s", "prep s",
                                                  pp, tg, "ms/tok p50", "p95", "MB/tok", "GB/s",
                                                  "% bw", "peak RSS MB"}};
  std::vector<std::string> errors;
  for (const json& r : report["results"]) {
    // Random weights by their dtype ("fp8"), a checkpoint's by its mix.
    std::string weights = r["weights"].get<std::string>();
    if (weights.rfind("random ", 0) == 0)
      weights = weights.substr(7);
    else if (r.contains("weight_dtype"))
      weights = r["weight_dtype"].get<std::string>();
    std::vector<std::string> row = {r["backend"].get<std::string>(), weights,
                                    std::to_string(r["threads"].get<int>())};
    if (r.contains("error")) {
      errors.push_back(r["backend"].get<std::string>() + " (" + row[1] + ", " + row[2] +
                       " threads): " + r["error"].get<std::string>());
      row.push_back("error (below)");
      cells.push_back(row);
      continue;
    }
    row.push_back(fmt("%.2f", r["load_s"].get<double>()));
    row.push_back(fmt("%.2f", r["prepare_s"].get<double>()));
    auto rate = [&](const char* k) {
      if (!r.contains(k)) return std::string("-");
      return fmt("%.2f", r[k]["mean_tok_s"].get<double>()) + " ± " +
             fmt("%.2f", r[k]["stddev_tok_s"].get<double>());
    };
    row.push_back(rate("pp"));
    row.push_back(rate("tg"));
    if (r.contains("tg")) {
      row.push_back(fmt("%.2f", r["tg"]["ms_per_token_p50"].get<double>()));
      row.push_back(fmt("%.2f", r["tg"]["ms_per_token_p95"].get<double>()));
    } else {
      row.insert(row.end(), {"-", "-"});
    }
    row.push_back(fmt("%.1f", r["bytes_per_token"].get<double>() / 1e6));
    row.push_back(r.contains("implied_bytes_per_s")
                      ? fmt("%.1f", r["implied_bytes_per_s"].get<double>() / 1e9)
                      : "-");
    row.push_back(r.contains("bandwidth_fraction")
                      ? fmt("%.0f%%", 100 * r["bandwidth_fraction"].get<double>())
                      : "-");
    row.push_back(fmt("%.0f", r["peak_rss_bytes"].get<double>() / 1e6));
    cells.push_back(row);
  }
  print_table(cells, 3);
  for (const std::string& e : errors) std::printf("error: %s\n", e.c_str());

  for (const json& r : report["results"]) {
    if (!r.contains("batch")) continue;
    std::printf("\nbatched decode: %s, %s weights, %d threads, depth %lld, %lld steps\n",
                r["backend"].get<std::string>().c_str(),
                r["weight_dtype"].get<std::string>().c_str(), r["threads"].get<int>(),
                static_cast<long long>(o.d), static_cast<long long>(o.n));
    std::vector<std::vector<std::string>> t = {
        {"  sequences", "aggregate t/s", "per sequence t/s", "step ms p50", "p95", "x 1 seq"}};
    for (const json& e : r["batch"])
      t.push_back({"  " + std::to_string(e["sequences"].get<int64_t>()),
                   fmt("%.2f", e["mean_tok_s"].get<double>()) + " ± " +
                       fmt("%.2f", e["stddev_tok_s"].get<double>()),
                   fmt("%.2f", e["per_sequence_tok_s"].get<double>()),
                   fmt("%.2f", e["step_ms_p50"].get<double>()),
                   fmt("%.2f", e["step_ms_p95"].get<double>()),
                   fmt("%.2f", e["speedup"].get<double>())});
    print_table(t, 1);
  }

  for (const json& r : report["results"]) {
    if (!r.contains("profile")) continue;
    for (const char* phase : {"decode", "prefill"}) {
      if (!r["profile"].contains(phase)) continue;
      const json& p = r["profile"][phase];
      std::printf(
          "\nprofile: %s, %s weights, %d threads: %s", r["backend"].get<std::string>().c_str(),
          r["weight_dtype"].get<std::string>().c_str(), r["threads"].get<int>(),
          std::string(phase) == "decode"
              ? ("one decode step at depth " + std::to_string(p["depth"].get<int64_t>())).c_str()
              : ("prefill of " + std::to_string(p["tokens"].get<int64_t>()) + " tokens").c_str());
      std::printf(" — %.2f ms wall, %.2f ms in %zu nodes%s\n", p["wall_ms"].get<double>(),
                  p["node_ms"].get<double>(), p["nodes"].get<size_t>(),
                  p["all_nodes_timed"].get<bool>() ? "" : " (some nodes untimed by their backend)");
      for (const char* by : {"by_op", "by_class"}) {
        std::vector<std::vector<std::string>> t = {
            {std::string(by) == "by_op" ? "op" : "node class", "ms", "%", "nodes"}};
        double rest_ms = 0, rest_pct = 0;
        int rest_nodes = 0, shown_rows = 0;
        for (const json& e : p[by]) {
          if (++shown_rows > 16) {
            rest_ms += e["ms"].get<double>();
            rest_pct += e["percent"].get<double>();
            rest_nodes += e["nodes"].get<int>();
            continue;
          }
          t.push_back({"  " + e[std::string(by) == "by_op" ? "op" : "class"].get<std::string>(),
                       fmt("%.3f", e["ms"].get<double>()), fmt("%.1f", e["percent"].get<double>()),
                       std::to_string(e["nodes"].get<int>())});
        }
        if (rest_nodes > 0)
          t.push_back({"  (the rest)", fmt("%.3f", rest_ms), fmt("%.1f", rest_pct),
                       std::to_string(rest_nodes)});
        t[0][0] = "  " + t[0][0];
        print_table(t, 1);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const ModelSpec spec = resolve_model(o);
    json report = {{"tool", "moert-bench"},
                   {"date", utc_now()},
                   {"command", o.command},
                   {"machine", machine_info()},
                   {"source", source_info()}};
    report["settings"] = {{"p", o.p},
                          {"n", o.n},
                          {"d", o.d},
                          {"r", o.r},
                          {"threads", o.threads},
                          {"backends", o.backends},
                          {"activation_dtype", std::string(moert::dtype_name(o.act_dtype))},
                          {"strict", o.strict},
                          {"seed", o.seed},
                          {"model", spec.name}};
    if (!spec.config_json.empty()) report["settings"]["config"] = json::parse(spec.config_json);
    json results = json::array(), bandwidth = json::array(), backends;
    for (int t : o.threads) {
      const json part =
          o.threads.size() == 1 ? bench_threads(o, spec, t) : bench_threads_in_child(o, spec, t);
      for (const json& r : part["rows"]) results.push_back(r);
      bandwidth.push_back(part["bandwidth"]);
      if (part.contains("backends") && backends.is_null()) backends = part["backends"];
    }
    report["results"] = results;
    report["bandwidth"] = bandwidth;
    report["backends"] = backends;
    print_results(report, o);
    if (!o.json_path.empty()) {
      std::ofstream out(o.json_path);
      out << report.dump(2) << "\n";
      if (!out) throw moert::Error(o.json_path + ": cannot write");
      std::printf("\nwrote %s\n", o.json_path.c_str());
    }
    for (const json& r : results)
      if (r.contains("error")) return 1;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moert-bench: %s\n", e.what());
    return 1;
  }
}
