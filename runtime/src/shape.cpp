#include "moert/shape.h"

#include "moert/error.h"

namespace moert {

int64_t Dim::resolve(const SymbolValues& s) const {
  int64_t v = fixed;
  for (uint32_t i = 0; i < MOERT_NUM_SYMBOLS; ++i)
    if (symbols & (1u << i)) v += s.values[i];
  return v;
}

std::string Dim::str() const {
  // Built with append: gcc 12 at -O3 warns falsely (-Wrestrict) on
  // operator+ of short literals here.
  std::string out;
  if (symbols & (1u << MOERT_SYM_PAST)) out.append("P");
  if (symbols & (1u << MOERT_SYM_TOKENS)) out.append(out.empty() ? "T" : "+T");
  if (symbols & (1u << MOERT_SYM_ROWS)) out.append(out.empty() ? "R" : "+R");
  if (out.empty()) return std::to_string(fixed);
  if (fixed > 0) out.append("+").append(std::to_string(fixed));
  if (fixed < 0) out.append(std::to_string(fixed));
  return out;
}

Shape Shape::of(const std::vector<int64_t>& dims) {
  std::vector<Dim> d(dims.begin(), dims.end());
  return Shape(std::move(d));
}

const Dim& Shape::at(int64_t i) const {
  int64_t r = static_cast<int64_t>(dims_.size());
  int64_t j = i < 0 ? i + r : i;
  check(j >= 0 && j < r, "dimension " + std::to_string(i) + " out of range for shape " + str());
  return dims_[static_cast<size_t>(j)];
}

bool Shape::is_static() const {
  for (const Dim& d : dims_)
    if (!d.is_static()) return false;
  return true;
}

std::vector<int64_t> Shape::resolve(const SymbolValues& s) const {
  std::vector<int64_t> out;
  out.reserve(dims_.size());
  for (const Dim& d : dims_) out.push_back(d.resolve(s));
  return out;
}

std::vector<int64_t> Shape::static_dims() const {
  check(is_static(), "shape " + str() + " is not static");
  return resolve(SymbolValues{});
}

std::string Shape::str() const {
  std::string out = "[";
  for (size_t i = 0; i < dims_.size(); ++i) out += (i ? ", " : "") + dims_[i].str();
  return out + "]";
}

int64_t num_elements(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string dims_str(const std::vector<int64_t>& dims) { return Shape::of(dims).str(); }

}  // namespace moert
