// Node attributes: a small typed dictionary.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace moert {

using AttrValue =
    std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

enum class AttrType { integer, real, string, integers, reals };

AttrType attr_type(const AttrValue& v);
std::string attr_type_name(AttrType t);
std::string attr_value_str(const AttrValue& v);

class Attributes {
 public:
  Attributes() = default;
  Attributes(std::initializer_list<std::pair<const std::string, AttrValue>> init) : map_(init) {}

  void set(const std::string& name, AttrValue v) { map_[name] = std::move(v); }
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  const std::map<std::string, AttrValue>& items() const { return map_; }

  // Typed getters.  `get_*` without a default throw moert::Error when the
  // attribute is missing or has another type.  An integer attribute is
  // accepted where a real is asked for.
  int64_t get_int(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_float(const std::string& name) const;
  double get_float(const std::string& name, double fallback) const;
  std::string get_string(const std::string& name) const;
  std::string get_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const std::string& name) const;
  std::vector<int64_t> get_ints(const std::string& name,
                                const std::vector<int64_t>& fallback) const;
  std::vector<double> get_floats(const std::string& name) const;

  bool operator==(const Attributes& o) const { return map_ == o.map_; }

 private:
  const AttrValue& find(const std::string& name) const;
  std::map<std::string, AttrValue> map_;
};

}  // namespace moert
