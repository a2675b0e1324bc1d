// Shapes whose dimensions may depend on the symbols of an execution:
// T (tokens processed now), P (tokens already in the KV cache) and R (the
// rows an execution produces output for: the logits of chosen tokens).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "moert/backend_abi.h"

namespace moert {

enum class Symbol : uint32_t {
  tokens = MOERT_SYM_TOKENS,
  past = MOERT_SYM_PAST,
  rows = MOERT_SYM_ROWS
};

// Concrete values of every symbol for one execution.
struct SymbolValues {
  std::array<int64_t, MOERT_NUM_SYMBOLS> values{0, 0, 0};
  int64_t tokens() const { return values[MOERT_SYM_TOKENS]; }
  int64_t past() const { return values[MOERT_SYM_PAST]; }
  int64_t rows() const { return values[MOERT_SYM_ROWS]; }
  static SymbolValues of(int64_t tokens, int64_t past = 0, int64_t rows = 0) {
    return {{tokens, past, rows}};
  }
};

// fixed + sum of the symbols in `symbols`.
struct Dim {
  int64_t fixed = 0;
  uint32_t symbols = 0;

  Dim() = default;
  Dim(int64_t v) : fixed(v) {}  // NOLINT: a plain number is a fixed dimension
  static Dim tokens(int64_t plus = 0) { return {plus, 1u << MOERT_SYM_TOKENS}; }
  static Dim rows(int64_t plus = 0) { return {plus, 1u << MOERT_SYM_ROWS}; }
  static Dim past_plus_tokens(int64_t plus = 0) {
    return {plus, (1u << MOERT_SYM_TOKENS) | (1u << MOERT_SYM_PAST)};
  }

  bool is_static() const { return symbols == 0; }
  int64_t resolve(const SymbolValues& s) const;
  bool operator==(const Dim& o) const { return fixed == o.fixed && symbols == o.symbols; }
  bool operator!=(const Dim& o) const { return !(*this == o); }
  std::string str() const;  // "64", "T", "P+T", "T+1", "R"

 private:
  Dim(int64_t f, uint32_t s) : fixed(f), symbols(s) {}
};

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<Dim> dims) : dims_(dims) {}
  explicit Shape(std::vector<Dim> dims) : dims_(std::move(dims)) {}
  static Shape of(const std::vector<int64_t>& dims);

  size_t rank() const { return dims_.size(); }
  const Dim& operator[](size_t i) const { return dims_[i]; }
  Dim& operator[](size_t i) { return dims_[i]; }
  // Negative indices count from the end, like Python.
  const Dim& at(int64_t i) const;
  const std::vector<Dim>& dims() const { return dims_; }
  bool is_static() const;
  std::vector<int64_t> resolve(const SymbolValues& s) const;
  std::vector<int64_t> static_dims() const;  // throws if symbolic
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "[T, 64]"

 private:
  std::vector<Dim> dims_;
};

int64_t num_elements(const std::vector<int64_t>& dims);
std::string dims_str(const std::vector<int64_t>& dims);

}  // namespace moert
