#include "hf_config.h"

#include <fstream>

namespace moert {

HfConfig HfConfig::read(const std::string& path) {
  std::ifstream in(path);
  check(in.good(), path + ": cannot open (is this a Hugging Face checkpoint directory?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), path + ": the top level must be a JSON object");
  return HfConfig(std::move(j), path);
}

namespace {

// Every integer moert reads from config.json is a size, a count or a layer
// index: values beyond ±(2^31 - 1) are refused, so that sums and products of
// two of them cannot overflow 64 bits.
constexpr int64_t kMaxInteger = (int64_t{1} << 31) - 1;

}  // namespace

int64_t HfConfig::integer(const std::string& key) const {
  if (!has(key)) fail(key, "is missing");
  const auto& v = json_.at(key);
  if (!v.is_number_integer()) fail(key, "must be an integer, got " + v.dump());
  const bool in_range = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= static_cast<uint64_t>(kMaxInteger)
                            : v.get<int64_t>() >= -kMaxInteger && v.get<int64_t>() <= kMaxInteger;
  if (!in_range)
    fail(key, "must be an integer in [-2^31 + 1, 2^31 - 1] (a size, count or layer index), got " +
                  v.dump());
  return v.get<int64_t>();
}

int64_t HfConfig::integer(const std::string& key, int64_t fallback) const {
  return has(key) ? integer(key) : fallback;
}

double HfConfig::real(const std::string& key) const {
  if (!has(key)) fail(key, "is missing");
  const auto& v = json_.at(key);
  if (!v.is_number()) fail(key, "must be a number, got " + v.dump());
  return v.get<double>();
}

double HfConfig::real(const std::string& key, double fallback) const {
  return has(key) ? real(key) : fallback;
}

bool HfConfig::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_boolean()) fail(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string HfConfig::string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_string()) fail(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

std::vector<int64_t> HfConfig::integers(const std::string& key) const {
  if (!has(key)) return {};
  const auto& v = json_.at(key);
  if (!v.is_array()) fail(key, "must be a list of integers, got " + v.dump());
  std::vector<int64_t> out;
  for (const auto& x : v) {
    if (!x.is_number_integer()) fail(key, "must be a list of integers, got " + v.dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}

const nlohmann::json& HfConfig::object(const std::string& key) const {
  static const nlohmann::json null_json;
  if (!has(key)) return null_json;
  const auto& v = json_.at(key);
  if (!v.is_object()) fail(key, "must be an object, got " + v.dump());
  return v;
}

}  // namespace moert
