#include "quantization.h"

#include <string>

#include "moert/error.h"

namespace moert {

void check_quantization(const HfConfig& config, const Checkpoint& checkpoint) {
  const nlohmann::json& q = config.object("quantization_config");
  if (q.is_null()) return;
  const std::string key = "quantization_config";
  if (!q.is_object()) config.fail(key, "must be an object, got " + q.dump());
  if (!q.contains("quant_method") || !q.at("quant_method").is_string())
    config.fail(key, "has no 'quant_method' string: " + q.dump());
  const std::string method = q.at("quant_method").get<std::string>();
  if (method != "fp8")
    config.fail(key + ".quant_method",
                "is '" + method +
                    "', which moert does not read (it reads 'fp8': F8_E4M3 weights with 128x128 "
                    "block scales); running the packed tensors as plain weights would be wrong");
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

}  // namespace moert
