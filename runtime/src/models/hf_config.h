// Typed access to a Hugging Face config.json, with errors that name the file
// and the key.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moert/error.h"

namespace moert {

class HfConfig {
 public:
  HfConfig(nlohmann::json json, std::string path)
      : json_(std::move(json)), path_(std::move(path)) {}
  static HfConfig read(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& key) const { return json_.contains(key) && !json_.at(key).is_null(); }

  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t fallback) const;
  double real(const std::string& key) const;
  double real(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> integers(const std::string& key) const;  // [] when absent
  // A nested object (rope_scaling, quantization_config); null when absent.
  const nlohmann::json& object(const std::string& key) const;
  const nlohmann::json& json() const { return json_; }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw Error(path_ + ": '" + key + "' " + message);
  }

 private:
  nlohmann::json json_;
  std::string path_;
};

}  // namespace moert
