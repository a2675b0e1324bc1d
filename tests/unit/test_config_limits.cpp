// config.json values that are well-formed JSON but not a model moert can
// hold: each must be refused with moert::Error naming the file and the key,
// before any size taken from it is allocated, walked or multiplied.  Inputs
// found by fuzz/fuzz_config.cpp and fuzz/fuzz_quantization.cpp; what each one
// did before it was refused is said beside it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "models/architecture.h"
#include "models/hf_config.h"
#include "models/quantization.h"
#include "moert/error.h"
#include "moert/model.h"
#include "moert/safetensors.h"
#include "support/tiny_configs.h"

namespace moert {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

HfConfig config(nlohmann::json j) { return HfConfig(std::move(j), "config.json"); }

// The message of the moert::Error that arch_from_config throws for `j`.
std::string arch_error(const nlohmann::json& j) {
  try {
    (void)arch_from_config(config(j));
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "arch_from_config accepted " << j.dump();
  return "";
}

TEST(ConfigLimits, RopeScalingTypeMustBeAString) {
  // Threw nlohmann::json's type_error out of arch_from_config.
  nlohmann::json j = testing::tiny_mixtral();
  j["rope_scaling"] = {{"type", 5}, {"factor", 2.0}};
  EXPECT_THAT(arch_error(j), HasSubstr("config.json: 'rope_scaling.type' must be a string, got 5"));
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", nlohmann::json::array()}};
  EXPECT_THAT(arch_error(j), HasSubstr("'rope_parameters.rope_type' must be a string, got []"));
  // null is as if absent.
  j["rope_parameters"] = {{"rope_type", nullptr}, {"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(arch_from_config(config(j)).rope.scaling, "linear");
}

TEST(ConfigLimits, LayerCountIsBounded) {
  // Allocated and walked 2^31 layers (seconds, a quarter of a GB).
  nlohmann::json j = testing::tiny_qwen2_moe();
  j["num_hidden_layers"] = (int64_t{1} << 31) - 1;
  EXPECT_THAT(arch_error(j),
              HasSubstr("'num_hidden_layers' must be at most 65536, got 2147483647"));
  j["num_hidden_layers"] = 65536;
  EXPECT_EQ(arch_from_config(config(j)).layer_is_moe.size(), 65536u);
}

TEST(ConfigLimits, IntegersBeyond31BitsAreRefused) {
  const std::string range = "must be an integer in [-2^31 + 1, 2^31 - 1]";
  // Asked std::vector for 2^62 layers (std::length_error / bad_alloc).
  nlohmann::json j = testing::tiny_mixtral();
  j["num_hidden_layers"] = int64_t{1} << 62;
  EXPECT_THAT(arch_error(j), HasSubstr("'num_hidden_layers' " + range +
                                       " (a size, count or layer "
                                       "index), got 4611686018427387904"));
  // Wrapped to -1 and was reported as not positive.
  j = testing::tiny_mixtral();
  j["vocab_size"] = std::numeric_limits<uint64_t>::max();
  EXPECT_THAT(arch_error(j), HasSubstr("'vocab_size' " + range));
  // DeepSeek: qk_nope_head_dim + qk_rope_head_dim overflowed; so did
  // num_hidden_layers + num_nextn_predict_layers and moe_intermediate_size x
  // n_shared_experts.
  j = testing::tiny_deepseek_v3();
  j["qk_nope_head_dim"] = std::numeric_limits<int64_t>::min();
  EXPECT_THAT(arch_error(j), HasSubstr("'qk_nope_head_dim' " + range));
  j = testing::tiny_deepseek_v3();
  j["num_nextn_predict_layers"] = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(arch_error(j), HasSubstr("'num_nextn_predict_layers' " + range));
  j = testing::tiny_deepseek_v3();
  j["n_shared_experts"] = int64_t{1} << 62;
  EXPECT_THAT(arch_error(j), HasSubstr("'n_shared_experts' " + range));
  // The bounds themselves are accepted.
  j = testing::tiny_deepseek_v3();
  j["num_nextn_predict_layers"] = (int64_t{1} << 31) - 1;
  j["n_shared_experts"] = (int64_t{1} << 31) - 1;
  const ArchSpec a = arch_from_config(config(j));
  EXPECT_EQ(a.shared_intermediate, a.expert_intermediate * ((int64_t{1} << 31) - 1));
}

class ConfigLimitsDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moert_config_limits_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // One tensor, enough for Checkpoint::open.
    const std::string header = R"({"a.qweight":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
    std::string file(8, '\0');
    file[0] = static_cast<char>(header.size());
    std::ofstream(dir_ / "model.safetensors", std::ios::binary) << file << header << "\1\2\3\4";
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_config(const nlohmann::json& j) { std::ofstream(dir_ / "config.json") << j.dump(); }
  fs::path dir_;
};

TEST_F(ConfigLimitsDir, MaxPositionEmbeddingsMustBePositive) {
  // Model::load divided by a KV block size of 0 (min(64, max_context = 0)).
  nlohmann::json j = testing::tiny_mixtral();
  j["max_position_embeddings"] = 0;
  write_config(j);
  try {
    (void)Model::load(dir_.string());
    FAIL() << "Model::load accepted max_position_embeddings 0";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("config.json: 'max_position_embeddings' must be positive, got 0"));
  }
  j["max_position_embeddings"] = -5;
  EXPECT_THAT(arch_error(j), HasSubstr("'max_position_embeddings' must be positive, got -5"));
}

TEST_F(ConfigLimitsDir, GroupSizeIsBounded) {
  // (K + group_size - 1) / group_size overflowed while reading GPTQ / AWQ
  // weights.
  const Checkpoint ck = Checkpoint::open(dir_.string());
  for (const char* method : {"gptq", "awq"}) {
    nlohmann::json j = testing::tiny_mixtral();
    j["quantization_config"] = {
        {"quant_method", method}, {"bits", 4}, {"group_size", std::numeric_limits<int64_t>::max()}};
    try {
      (void)check_quantization(config(j), ck);
      FAIL() << method << ": group_size 2^63 - 1 accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("'quantization_config.group_size' is 9223372036854775807; it "
                                      "must be positive (at most 2^31 - 1) or -1"));
    }
    j["quantization_config"]["group_size"] = (int64_t{1} << 31) - 1;
    EXPECT_EQ(check_quantization(config(j), ck).group_size, (int64_t{1} << 31) - 1);
  }
}

}  // namespace
}  // namespace moert
