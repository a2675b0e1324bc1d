#include "quantization.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "moert/error.h"

namespace moert {

namespace {

const char* const kReads =
    "it reads 'fp8' (F8_E4M3 weights with 128x128 block scales), 'gptq' (4-bit, v1), 'awq' "
    "(4-bit, gemm) and 'mxfp4'";

bool any_name(const Checkpoint& c, const std::string& suffix) {
  for (const std::string& name : c.names())
    if (name.ends_with(suffix)) return true;
  return false;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// quantization_config[key] as an integer (the first of `keys` present), or
// `fallback` when none is.
int64_t int_of(const HfConfig& config, const nlohmann::json& q,
               std::initializer_list<const char*> keys, int64_t fallback) {
  for (const char* k : keys) {
    if (!q.contains(k) || q.at(k).is_null()) continue;
    if (!q.at(k).is_number_integer())
      config.fail(std::string("quantization_config.") + k,
                  "must be an integer, got " + q.at(k).dump());
    return q.at(k).get<int64_t>();
  }
  return fallback;
}

bool bool_of(const HfConfig& config, const nlohmann::json& q, const char* key, bool fallback) {
  if (!q.contains(key) || q.at(key).is_null()) return fallback;
  if (!q.at(key).is_boolean())
    config.fail(std::string("quantization_config.") + key,
                "must be true or false, got " + q.at(key).dump());
  return q.at(key).get<bool>();
}

std::string string_of(const HfConfig& config, const nlohmann::json& q,
                      std::initializer_list<const char*> keys, const std::string& fallback,
                      std::string* found_key = nullptr) {
  for (const char* k : keys) {
    if (!q.contains(k) || q.at(k).is_null()) continue;
    if (!q.at(k).is_string())
      config.fail(std::string("quantization_config.") + k,
                  "must be a string, got " + q.at(k).dump());
    if (found_key) *found_key = k;
    return q.at(k).get<std::string>();
  }
  return fallback;
}

void check_fp8(const HfConfig& config, const nlohmann::json& q, const Checkpoint& checkpoint) {
  const std::string key = "quantization_config";
  if (q.contains("fmt") && q.at("fmt") != "e4m3")
    config.fail(key + ".fmt", "is " + q.at("fmt").dump() + "; fp8 weights must be e4m3");
  if (q.contains("weight_block_size") && q.at("weight_block_size") != nlohmann::json({128, 128}))
    config.fail(key + ".weight_block_size",
                "is " + q.at("weight_block_size").dump() + "; moert reads [128, 128] blocks");
  for (const std::string& name : checkpoint.names())
    if (checkpoint.entry(name).dtype == DType::f8_e4m3) return;
  config.fail(key + ".quant_method", "is 'fp8' but no tensor of " + checkpoint.directory() +
                                         " is F8_E4M3: the config and the weights disagree");
}

// bits and group_size, shared by gptq and awq.
void read_int4_groups(const HfConfig& config, const nlohmann::json& q, const std::string& method,
                      CheckpointQuant& out) {
  const int64_t bits = int_of(config, q, {"bits", "w_bit"}, -1);
  if (bits != 4)
    config.fail(std::string("quantization_config.") + (q.contains("bits") ? "bits" : "w_bit"),
                bits < 0 ? "is missing; moert reads 4-bit " + method
                         : "is " + std::to_string(bits) + "; moert reads 4-bit " + method +
                               " only (packed 4-bit weights with f16 group scales)");
  // transformers' GPTQConfig and AwqConfig default to 128.
  out.group_size = int_of(config, q, {"group_size", "q_group_size"}, 128);
  // At most 2^31 - 1, the bound of config.json's integers (HfConfig::integer):
  // readers add it to K.
  if (out.group_size != -1 && (out.group_size <= 0 || out.group_size > (int64_t{1} << 31) - 1))
    config.fail(
        "quantization_config.group_size",
        "is " + std::to_string(out.group_size) + "; it must be positive (at most 2^31 - 1) or -1");
}

}  // namespace

CheckpointQuant check_quantization(const HfConfig& config, const Checkpoint& checkpoint) {
  CheckpointQuant out;
  out.config_path = config.path();
  const nlohmann::json& q = config.object("quantization_config");
  if (q.is_null()) return out;
  const std::string key = "quantization_config";
  if (!q.is_object()) config.fail(key, "must be an object, got " + q.dump());
  if (!q.contains("quant_method") || !q.at("quant_method").is_string())
    config.fail(key, "has no 'quant_method' string: " + q.dump());
  const std::string method = q.at("quant_method").get<std::string>();
  out.method = method;
  if (method == "fp8") {
    check_fp8(config, q, checkpoint);
  } else if (method == "gptq") {
    read_int4_groups(config, q, "GPTQ", out);
    out.sym = bool_of(config, q, "sym", true);
    out.desc_act = bool_of(config, q, "desc_act", false);
    std::string format_key = "checkpoint_format";
    const std::string format =
        string_of(config, q, {"checkpoint_format", "format"}, "gptq", &format_key);
    if (format != "gptq")
      config.fail(key + "." + format_key,
                  "is '" + format +
                      "'; moert reads the GPTQ v1 serialisation ('gptq': qweight, qzeros "
                      "holding zero - 1, scales, g_idx)");
    const std::string pack = string_of(config, q, {"pack_dtype"}, "int32");
    if (pack != "int32" && pack != "torch.int32")
      config.fail(key + ".pack_dtype", "is '" + pack + "'; moert reads int32-packed GPTQ");
    if (!any_name(checkpoint, ".qweight"))
      config.fail(key + ".quant_method", "is 'gptq' but no tensor of " + checkpoint.directory() +
                                             " is packed (no '*.qweight'): the config and the "
                                             "weights disagree");
  } else if (method == "awq") {
    read_int4_groups(config, q, "AWQ", out);
    out.sym = false;
    std::string version_key = "version";
    const std::string version = string_of(config, q, {"version"}, "gemm", &version_key);
    if (lower(version) != "gemm")
      config.fail(key + "." + version_key,
                  "is '" + version +
                      "'; moert reads AWQ's 'gemm' layout only (qweight [K, N/8] packed along N)");
    if (!bool_of(config, q, "zero_point", true))
      config.fail(key + ".zero_point", "is false; moert reads AWQ with zero points only");
    if (!any_name(checkpoint, ".qweight"))
      config.fail(key + ".quant_method", "is 'awq' but no tensor of " + checkpoint.directory() +
                                             " is packed (no '*.qweight'): the config and the "
                                             "weights disagree");
  } else if (method == "mxfp4") {
    if (!any_name(checkpoint, "_blocks"))
      config.fail(key + ".quant_method", "is 'mxfp4' but no tensor of " + checkpoint.directory() +
                                             " is packed (no '*_blocks'): the config and the "
                                             "weights disagree");
  } else {
    config.fail(key + ".quant_method",
                "is '" + method + "', which moert does not read (" + kReads +
                    "); running the packed tensors as plain weights would be wrong");
  }
  return out;
}

}  // namespace moert
