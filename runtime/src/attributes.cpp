#include "moert/attributes.h"

#include <sstream>

#include "moert/error.h"

namespace moert {

AttrType attr_type(const AttrValue& v) { return static_cast<AttrType>(v.index()); }

std::string attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::integer:
      return "int";
    case AttrType::real:
      return "float";
    case AttrType::string:
      return "string";
    case AttrType::integers:
      return "ints";
    case AttrType::reals:
      return "floats";
  }
  return "?";
}

std::string attr_value_str(const AttrValue& v) {
  std::ostringstream os;
  os.precision(9);
  switch (attr_type(v)) {
    case AttrType::integer:
      os << std::get<int64_t>(v);
      break;
    case AttrType::real:
      os << std::get<double>(v);
      break;
    case AttrType::string:
      os << '"' << std::get<std::string>(v) << '"';
      break;
    case AttrType::integers: {
      os << '[';
      const auto& xs = std::get<std::vector<int64_t>>(v);
      for (size_t i = 0; i < xs.size(); ++i) os << (i ? ", " : "") << xs[i];
      os << ']';
      break;
    }
    case AttrType::reals: {
      os << '[';
      const auto& xs = std::get<std::vector<double>>(v);
      for (size_t i = 0; i < xs.size(); ++i) os << (i ? ", " : "") << xs[i];
      os << ']';
      break;
    }
  }
  return os.str();
}

const AttrValue& Attributes::find(const std::string& name) const {
  auto it = map_.find(name);
  if (it == map_.end()) throw Error("missing attribute '" + name + "'");
  return it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& name, const AttrValue& v, AttrType want) {
  throw Error("attribute '" + name + "' is " + attr_type_name(attr_type(v)) + " " +
              attr_value_str(v) + ", expected " + attr_type_name(want));
}
}  // namespace

int64_t Attributes::get_int(const std::string& name) const {
  const AttrValue& v = find(name);
  if (const auto* p = std::get_if<int64_t>(&v)) return *p;
  wrong_type(name, v, AttrType::integer);
}
int64_t Attributes::get_int(const std::string& name, int64_t fallback) const {
  return has(name) ? get_int(name) : fallback;
}
double Attributes::get_float(const std::string& name) const {
  const AttrValue& v = find(name);
  if (const auto* p = std::get_if<double>(&v)) return *p;
  if (const auto* p = std::get_if<int64_t>(&v)) return static_cast<double>(*p);
  wrong_type(name, v, AttrType::real);
}
double Attributes::get_float(const std::string& name, double fallback) const {
  return has(name) ? get_float(name) : fallback;
}
std::string Attributes::get_string(const std::string& name) const {
  const AttrValue& v = find(name);
  if (const auto* p = std::get_if<std::string>(&v)) return *p;
  wrong_type(name, v, AttrType::string);
}
std::string Attributes::get_string(const std::string& name, const std::string& fallback) const {
  return has(name) ? get_string(name) : fallback;
}
std::vector<int64_t> Attributes::get_ints(const std::string& name) const {
  const AttrValue& v = find(name);
  if (const auto* p = std::get_if<std::vector<int64_t>>(&v)) return *p;
  wrong_type(name, v, AttrType::integers);
}
std::vector<int64_t> Attributes::get_ints(const std::string& name,
                                          const std::vector<int64_t>& fallback) const {
  return has(name) ? get_ints(name) : fallback;
}
std::vector<double> Attributes::get_floats(const std::string& name) const {
  const AttrValue& v = find(name);
  if (const auto* p = std::get_if<std::vector<double>>(&v)) return *p;
  if (const auto* p = std::get_if<std::vector<int64_t>>(&v))
    return std::vector<double>(p->begin(), p->end());
  wrong_type(name, v, AttrType::reals);
}

}  // namespace moert
