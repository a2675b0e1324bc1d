// Fuzz target: quantization_config and the packed tensor layouts it
// declares — GPTQ (qweight / qzeros / scales / g_idx), AWQ (gemm), MXFP4
// (_blocks / _scales, per expert or GPT-OSS's fused experts) and fp8 — as
// check_quantization, CheckpointWeights and Model::load read them
// (runtime/src/models/quantization.h, weight_source.h).
//
// The input is a JSON description of a tiny checkpoint directory, written
// to a scratch directory for every input:
//   {
//     "config":  config.json: an object (dumped) or a string (written as is),
//     "tensors": {"<name>": {"dtype": "I32", "shape": [2, 8], "fill": F}, ...},
//     "probes":  [{"name": "<linear weight>", "out": N, "in": K},  (|sizes| <= 2^62)
//                 {"fused": "<prefix>", "experts": E, "inter": I, "hidden": H}],
//     "load":    {"quantize": "", "dtype": "f32", "precision": "exact",
//                 "forward": true}
//   }
// The tensors make model.safetensors, in name order, with values by F:
// absent or "random" (floats in [-1, 1), random integers), "bytes" (random
// bytes), "zeros", a number (every element), a list of numbers (repeated),
// or {"div": n} (element i is i / n: a GPTQ g_idx); random values repeat
// with a period of 251 elements.  Descriptions the
// harness cannot write cheaply (more than 4096 tensors, 16 MiB, rank 8) are
// rejected as uninteresting.
//
// Each input then runs: HfConfig::read, Checkpoint::open and
// check_quantization; CheckpointWeights::linear for each probe (or, without
// "probes", for every packed weight the tensor names imply, with the sizes
// their shapes imply, experts stacked and fused experts split); and
// Model::load on the reference backend (a 16-position KV cache) with a
// one-token forward whose logits must be [1, vocab].
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "json_mutator.h"
#include "models/hf_config.h"
#include "models/quantization.h"
#include "models/weight_source.h"
#include "moert/dtype.h"
#include "moert/model.h"
#include "moert/safetensors.h"

namespace {

namespace fs = std::filesystem;
using moert_fuzz::guarded;
using moert_fuzz::require;
using nlohmann::json;

constexpr size_t kMaxTensors = 4096;
constexpr uint64_t kMaxBytes = uint64_t{16} << 20;

volatile uint64_t g_sink = 0;

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Stores `v` as element i of an integer tensor of `width` bytes (two's
// complement, little-endian, truncated).
void store_int(char* data, size_t width, size_t i, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  for (size_t b = 0; b < width; ++b) data[i * width + b] = static_cast<char>((u >> (8 * b)) & 0xFF);
}

int64_t json_int(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (!v.is_number_float()) return 0;
  const double d = v.get<double>();
  if (!(d == d)) return 0;
  if (d >= 9.2e18) return INT64_MAX;
  if (d <= -9.2e18) return INT64_MIN;
  return static_cast<int64_t>(d);
}

double json_double(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  return 0;
}

// Stores element i of a float tensor through an aligned scratch: tensors lie
// at any offset of the data section.
void store_float(moert::DType dtype, char* data, size_t itemsize, size_t i, double v) {
  alignas(8) unsigned char scratch[8] = {};
  moert::store_element(dtype, scratch, 0, v);
  std::memcpy(data + i * itemsize, scratch, itemsize);
}

// Fills `count` elements of `dtype` (unknown: bytes) at `data` as `fill` says.
// Only {"div": n} is computed element by element (it fills g_idx, a short
// tensor); the other fills compute one period of at most kPeriod elements and
// repeat it, so that writing a checkpoint stays cheap next to loading it.
void fill_tensor(char* data, const std::optional<moert::DType>& dtype, size_t itemsize,
                 size_t count, const json& fill, const std::string& name) {
  constexpr size_t kPeriod = 251;
  uint64_t state = hash_name(name);
  const bool known = dtype.has_value();
  const bool is_float = known && moert::dtype_is_float(*dtype);
  auto put = [&](size_t i, const json& v) {
    if (!known)
      data[i] = static_cast<char>(json_int(v));
    else if (is_float)
      store_float(*dtype, data, itemsize, i, json_double(v));
    else
      store_int(data, itemsize, i, json_int(v));
  };
  size_t period = std::min(count, kPeriod);
  if (fill.is_object() && fill.contains("div")) {
    const int64_t d = json_int(fill["div"]);
    for (size_t i = 0; i < count; ++i)
      put(i, json(d > 0 ? static_cast<int64_t>(i) / d : static_cast<int64_t>(i)));
    return;
  }
  if (fill.is_string() && fill == "zeros") {
    std::memset(data, 0, count * itemsize);
    return;
  }
  if (fill.is_number() || fill.is_boolean()) {
    for (size_t i = 0; i < period; ++i) put(i, fill);
  } else if (fill.is_array() && !fill.empty()) {
    period = std::min(count, fill.size());
    for (size_t i = 0; i < period; ++i) put(i, fill[i]);
  } else if (is_float && !(fill.is_string() && fill == "bytes")) {
    for (size_t i = 0; i < period; ++i)
      store_float(*dtype, data, itemsize, i,
                  static_cast<double>(splitmix(state) >> 11) * 0x1.0p-52 - 1.0);
  } else {
    for (size_t i = 0; i < period * itemsize; ++i) data[i] = static_cast<char>(splitmix(state));
  }
  const size_t block = period * itemsize, total = count * itemsize;
  for (size_t done = block; block > 0 && done < total; done += block)
    std::memcpy(data + done, data, std::min(block, total - done));
}

struct Written {
  std::map<std::string, std::vector<int64_t>> shapes;
};

// Writes config.json and model.safetensors; false when the description is
// not one this harness writes.
bool write_checkpoint(const fs::path& dir, const json& in, Written& out) {
  const json config = in.value("config", json::object());
  moert_fuzz::write_file(dir / "config.json",
                         config.is_string() ? config.get<std::string>() : config.dump());
  const json tensors = in.value("tensors", json::object());
  if (!tensors.is_object() || tensors.size() > kMaxTensors) return false;
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  struct Pending {
    std::string name;
    std::optional<moert::DType> dtype;
    size_t itemsize, count;
    json fill;
  };
  std::vector<Pending> pending;
  uint64_t total = 0;
  for (const auto& [name, t] : tensors.items()) {
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array() || t["shape"].size() > 8)
      return false;
    const std::string dt = t["dtype"].get<std::string>();
    std::optional<moert::DType> dtype;
    try {
      dtype = moert::dtype_from_safetensors(dt);
    } catch (const moert::Error&) {
    }
    const size_t itemsize = dtype ? moert::dtype_size(*dtype) : 1;
    uint64_t count = 1;
    std::vector<int64_t> shape;
    for (const json& d : t["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > kMaxBytes) return false;
      count *= d.get<uint64_t>();
      if (count > kMaxBytes) return false;
      shape.push_back(d.get<int64_t>());
    }
    const uint64_t bytes = count * itemsize;
    if (total + bytes > kMaxBytes) return false;
    header[name] = {{"dtype", dt}, {"shape", t["shape"]}, {"data_offsets", {total, total + bytes}}};
    total += bytes;
    pending.push_back({name, dtype, itemsize, static_cast<size_t>(count), t.value("fill", json())});
    out.shapes[name] = shape;
  }
  std::string data(total, '\0');
  size_t pos = 0;
  for (const Pending& p : pending) {
    fill_tensor(data.data() + pos, p.dtype, p.itemsize, p.count, p.fill, p.name);
    pos += p.count * p.itemsize;
  }
  moert_fuzz::write_file(dir / "model.safetensors",
                         moert_fuzz::safetensors_bytes(header.dump(), data));
  return true;
}

void check_linear(const moert::LinearTensor& w, const std::string& name) {
  require(w.weight.defined(), "linear '" + name + "' has no weight");
  require(!w.packed() || (w.scale.defined() && w.block.size() == 2),
          "packed linear '" + name + "' has no scale or block");
  g_sink =
      g_sink + w.describe().size() + w.weight.nbytes() + (w.scale.defined() ? w.scale.nbytes() : 0);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The probes the tensor names imply: each packed weight with the sizes its
// shapes imply under `method`, the experts of a layer stacked, fused experts
// split.
json derived_probes(const Written& w, const std::string& method) {
  json probes = json::array();
  std::set<std::string> stacked;
  for (const auto& [name, shape] : w.shapes) {
    json p;
    if (ends_with(name, ".qweight") && shape.size() == 2) {
      const std::string base = name.substr(0, name.size() - 8) + ".weight";
      if (method == "awq")
        p = {{"name", base}, {"out", shape[1] * 8}, {"in", shape[0]}};
      else
        p = {{"name", base}, {"out", shape[1]}, {"in", shape[0] * 8}};
    } else if (ends_with(name, "gate_up_proj_blocks") && shape.size() == 4) {
      probes.push_back({{"fused", name.substr(0, name.size() - 19)},
                        {"experts", shape[0]},
                        {"inter", shape[1] / 2},
                        {"hidden", shape[2] * 32}});
      continue;
    } else if (ends_with(name, "gate_up_proj") && shape.size() == 3) {
      probes.push_back({{"fused", name.substr(0, name.size() - 12)},
                        {"experts", shape[0]},
                        {"inter", shape[2] / 2},
                        {"hidden", shape[1]}});
      continue;
    } else if (ends_with(name, "_blocks") && shape.size() == 3) {
      p = {{"name", name.substr(0, name.size() - 7)}, {"out", shape[0]}, {"in", shape[1] * 32}};
    } else if (ends_with(name, ".weight") && shape.size() == 2 &&
               w.shapes.count(name + "_scale_inv")) {
      p = {{"name", name}, {"out", shape[0]}, {"in", shape[1]}};
    } else {
      continue;
    }
    probes.push_back(p);
    // Expert 0 of a layer ("<prefix>.experts.0.<rest>"): stack every expert
    // of that layer.
    const std::string linear = p["name"].get<std::string>();
    const std::string marker = ".experts.0.";
    const size_t at = linear.rfind(marker);
    if (at == std::string::npos) continue;
    const std::string head = linear.substr(0, at + marker.size() - 2);
    const std::string tail = linear.substr(at + marker.size() - 1);
    if (!stacked.insert(head + "*" + tail).second) continue;
    json names = json::array();
    for (int e = 0; e < 1024; ++e) {
      const std::string n = head + std::to_string(e) + tail;
      const std::string b = ends_with(n, ".weight") ? n.substr(0, n.size() - 7) : n;
      if (!w.shapes.count(n) && !w.shapes.count(b + ".qweight") && !w.shapes.count(n + "_blocks"))
        break;
      names.push_back(n);
    }
    probes.push_back({{"stack", names}, {"out", p["out"]}, {"in", p["in"]}});
  }
  return probes;
}

void run_probe(moert::CheckpointWeights& weights, const json& p) {
  if (!p.is_object()) return;
  // Sizes as the decoder builder can ask for them: products of two
  // config.json integers (each within ±(2^31 - 1)), so within ±2^62.
  auto size = [&](const char* key) {
    return std::clamp<int64_t>(json_int(p.value(key, json(0))), -(int64_t{1} << 62),
                               int64_t{1} << 62);
  };
  if (p.contains("fused") && p["fused"].is_string()) {
    const std::string prefix = p["fused"].get<std::string>();
    guarded("fused_experts", [&] {
      moert::ExpertWeights w =
          weights.fused_experts(prefix, size("experts"), size("inter"), size("hidden"));
      check_linear(w.gate, prefix + "gate");
      check_linear(w.up, prefix + "up");
      check_linear(w.down, prefix + "down");
    });
  } else if (p.contains("stack") && p["stack"].is_array()) {
    std::vector<std::string> names;
    for (const json& n : p["stack"])
      if (n.is_string()) names.push_back(n.get<std::string>());
    guarded("stacked", [&] {
      moert::LinearTensor w = weights.stacked(names, size("out"), size("in"));
      check_linear(w, "stacked experts");
      require(w.weight.rank() >= 1 && w.weight.dim(0) == static_cast<int64_t>(names.size()),
              "stacked experts do not lead with the expert count");
    });
  } else if (p.contains("name") && p["name"].is_string()) {
    const std::string name = p["name"].get<std::string>();
    guarded("linear", [&] {
      moert::LinearTensor w =
          weights.linear(name, size("out"), size("in"), moert::WeightRole::linear);
      check_linear(w, name);
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dir = moert_fuzz::scratch_directory("quantization");
  json in = json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (!in.is_object()) return -1;
  Written written;
  if (!write_checkpoint(dir, in, written)) return -1;

  guarded("check_quantization", [&] {
    const moert::HfConfig config = moert::HfConfig::read((dir / "config.json").string());
    const moert::Checkpoint checkpoint = moert::Checkpoint::open(dir.string());
    moert::CheckpointQuant quant = moert::check_quantization(config, checkpoint);
    const std::string method = quant.method;
    moert::CheckpointWeights weights(checkpoint, std::move(quant));
    const json probes = in.contains("probes") && in["probes"].is_array()
                            ? in["probes"]
                            : derived_probes(written, method);
    for (const json& p : probes) run_probe(weights, p);
  });

  const json load = in.value("load", json::object());
  if (!load.is_object()) return 0;
  moert::LoadOptions options;
  options.device = "reference";
  options.max_sequences = 1;
  options.kv_cache_tokens = 16;
  options.prefill_chunk = 8;
  options.quantize = load.value("quantize", json("")).is_string()
                         ? load.value("quantize", json("")).get<std::string>()
                         : "";
  const json dt = load.value("dtype", json("f32"));
  const std::optional<moert::DType> dtype =
      dt.is_string() ? moert::dtype_from_name(dt.get<std::string>()) : std::nullopt;
  if (dtype) options.dtype = *dtype;
  const json precision = load.value("precision", json("exact"));
  options.precision = precision.is_string() ? precision.get<std::string>() : "exact";
  const bool forward = load.value("forward", json(true)) == json(true);
  guarded("Model::load", [&] {
    std::unique_ptr<moert::Model> model = moert::Model::load(dir.string(), options);
    const int64_t vocab = model->info().vocab_size;
    if (!forward) return;
    moert::Tensor logits = model->forward({0});
    require(logits.shape() == std::vector<int64_t>{1, vocab},
            "forward of one token gave " + logits.describe() + ", not [1, vocab]");
  });
  return 0;
}

// Half of the mutations edit the JSON document (json_mutator.h).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return moert_fuzz::mutate_json_input(data, size, max_size, seed);
}
