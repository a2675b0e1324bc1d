// embedding: every table dtype with i32 and i64 ids, the output dtype
// attribute (same dtype: rows copied; another: rows converted), ids of rank
// 0 to 3 and zero-sized, repeated ids, the first and last rows, the table as
// a constant (as the models have it), a symbolic T, and a table wide enough
// for the rows to be shared between threads.
//
// Tolerance 0: a row is copied, or each element rounded once to nearest even
// from its exact value, which is what the reference does.
#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr DType kActivations[] = {DType::f32, DType::bf16, DType::f16};
const char* const kExact = "rows are copied or rounded once from exact values: exact";

std::vector<Case> cases() {
  std::mt19937 rng(53);
  std::vector<Case> out;
  constexpr int64_t V = 50, H = 33;
  for (DType table : kActivations)
    for (DType ids : {DType::i32, DType::i64}) {
      const std::string base = std::string(dtype_name(table)) + "_" + std::string(dtype_name(ids));
      // Output dtype: absent (the table's), then each activation dtype.
      std::vector<std::pair<std::string, Attributes>> outs = {{"", {}}};
      for (DType o : kActivations)
        outs.push_back({std::string("_to_") + std::string(dtype_name(o)),
                        {{"dtype", std::string(dtype_name(o))}}});
      for (const auto& [suffix, attrs] : outs) {
        out.push_back(
            simple_case(base + "_ids7" + suffix, "embedding",
                        {random(table, {V, H}, rng), random_ints(ids, {7}, 0, V - 1, rng)}, attrs,
                        0.0, kExact));
        out.push_back(
            simple_case(base + "_ids_rank3" + suffix, "embedding",
                        {random(table, {V, H}, rng), random_ints(ids, {2, 3, 2}, 0, V - 1, rng)},
                        attrs, 0.0, kExact));
      }
      out.push_back(simple_case(base + "_scalar_id", "embedding",
                                {random(table, {V, H}, rng), random_ints(ids, {}, 0, V - 1, rng)},
                                {}, 0.0, kExact));
      out.push_back(simple_case(base + "_no_ids", "embedding",
                                {random(table, {V, H}, rng), random_ints(ids, {0}, 0, V - 1, rng)},
                                {}, 0.0, kExact));
      // Ends of the table and a repeated id.
      out.push_back(simple_case(
          base + "_ends_repeated", "embedding",
          {random(table, {V, H}, rng),
           Tensor::from_doubles(ids, {6}, {0, double(V - 1), 0, 17, 17, double(V - 1)})},
          {}, 0.0, kExact));
    }

  // The table as a constant, ids with a symbolic T (prefill, then decode).
  for (DType table : kActivations) {
    Case c;
    c.name = std::string(dtype_name(table)) + "_constant_table_symbolic";
    c.op = "embedding";
    c.attrs = {{"dtype", std::string("f32")}};
    c.slots = {constant(random(table, {512, 64}, rng)),
               activation(DType::i32, Shape{Dim::tokens()})};
    for (int64_t tokens : {7, 1, 1}) {
      Step s;
      s.tokens = tokens;
      s.inputs = {random_ints(DType::i32, {tokens}, 0, 511, rng)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = 0.0;
    c.why = kExact;
    out.push_back(std::move(c));
  }

  // The rows of an activation [T, H] picked by ids [R] (a decoder's last
  // hidden states of the tokens whose logits are wanted): symbolic T and R.
  for (DType table : kActivations) {
    Case c;
    c.name = std::string(dtype_name(table)) + "_activation_rows_symbolic";
    c.op = "embedding";
    c.slots = {activation(table, Shape{Dim::tokens(), Dim(96)}),
               activation(DType::i32, Shape{Dim::rows()})};
    for (auto [tokens, rows] : {std::pair<int64_t, int64_t>{40, 3}, {5, 5}, {1, 1}, {17, 0}}) {
      Step s;
      s.tokens = tokens;
      s.rows = rows;
      s.inputs = {random(table, {tokens, 96}, rng),
                  random_ints(DType::i32, {rows}, 0, tokens - 1, rng)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = 0.0;
    c.why = kExact;
    out.push_back(std::move(c));
  }

  // Wide rows, shared between threads within and across rows.
  out.push_back(simple_case(
      "bf16_wide", "embedding",
      {random(DType::bf16, {300, 8192}, rng), random_ints(DType::i64, {40}, 0, 299, rng)}, {}, 0.0,
      kExact));
  out.push_back(simple_case(
      "bf16_wide_to_f32", "embedding",
      {random(DType::bf16, {300, 8192}, rng), random_ints(DType::i32, {3}, 0, 299, rng)},
      {{"dtype", std::string("f32")}}, 0.0, kExact));
  return out;
}

const CaseRegistration registration("embedding", cases);

}  // namespace
}  // namespace moert::conformance
