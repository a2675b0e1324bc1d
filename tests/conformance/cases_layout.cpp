// reshape, slice, transpose, repeat, concat: every dtype (the floats, i8, u8,
// i32, i64 with arbitrary bit patterns, bool), scalars, size-1 and zero-sized
// axes, negative axes, ranks 0 to 5, every permutation pattern (inner runs
// kept, inner axis moved, batched, size-1 axes in between), symbolic T across
// steps, and tensors large enough to be split between threads.  Zero-sized
// tensors appear beside non-empty ones (a zero-length slice, a concat input
// of length 0): a graph whose every tensor is empty has no buffer to bind.
//
// Tolerance 0: these ops move elements without computing anything, so any
// difference from the reference is a wrong element.
#include <cstring>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr DType kAll[] = {DType::f32, DType::f16, DType::bf16, DType::f8_e4m3, DType::i8,
                          DType::u8,  DType::i32, DType::i64,  DType::boolean};
const char* const kExact = "layout ops copy elements unchanged: exact";

// Distinct-looking values of any dtype: normal floats, random bit patterns
// for the integers (the full range, i64 beyond 2^53 included), 0/1 for bool.
Tensor values(DType t, std::vector<int64_t> shape, std::mt19937& rng) {
  if (dtype_is_float(t)) return random(t, std::move(shape), rng, 3.0);
  if (t == DType::boolean) return random_ints(t, std::move(shape), 0, 1, rng);
  Tensor x = Tensor::empty(t, std::move(shape));
  auto* bytes = static_cast<unsigned char*>(x.data());
  for (size_t i = 0; i < x.nbytes(); ++i) bytes[i] = static_cast<unsigned char>(rng());
  return x;
}

Case exact(std::string name, std::string op, std::vector<Tensor> inputs, Attributes attrs) {
  return simple_case(std::move(name), std::move(op), std::move(inputs), std::move(attrs), 0.0,
                     kExact);
}

// A case whose every input has a leading symbolic T; one step per entry of
// `tokens`, inputs of shape [T, rest...].
Case symbolic(std::string name, std::string op, DType t,
              const std::vector<std::vector<int64_t>>& rests, Attributes attrs,
              std::vector<int64_t> tokens, std::mt19937& rng) {
  Case c;
  c.name = std::move(name);
  c.op = std::move(op);
  c.attrs = std::move(attrs);
  for (const auto& rest : rests) {
    std::vector<Dim> dims = {Dim::tokens()};
    for (int64_t r : rest) dims.emplace_back(r);
    c.slots.push_back(activation(t, Shape(dims)));
  }
  for (int64_t n : tokens) {
    Step s;
    s.tokens = n;
    for (const auto& rest : rests) {
      std::vector<int64_t> shape = {n};
      shape.insert(shape.end(), rest.begin(), rest.end());
      s.inputs.push_back(values(t, shape, rng));
    }
    c.steps.push_back(std::move(s));
  }
  c.tolerance = 0.0;
  c.why = kExact;
  return c;
}

using Ints = std::vector<int64_t>;

std::vector<Case> cases() {
  std::mt19937 rng(31);
  std::vector<Case> out;
  for (DType t : kAll) {
    const std::string d(dtype_name(t));
    auto v = [&](std::vector<int64_t> shape) { return values(t, std::move(shape), rng); };

    out.push_back(exact(d + "_infer", "reshape", {v({3, 5, 7})}, {{"shape", Ints{5, -1}}}));
    out.push_back(
        exact(d + "_copy_dims", "reshape", {v({3, 5, 7})}, {{"shape", Ints{0, 0, 7, 1}}}));
    out.push_back(exact(d + "_scalar_up", "reshape", {v({})}, {{"shape", Ints{1, 1}}}));
    out.push_back(exact(d + "_to_scalar", "reshape", {v({1})}, {{"shape", Ints{}}}));

    out.push_back(exact(d + "_middle", "slice", {v({4, 9, 5})},
                        {{"axis", int64_t{1}}, {"start", int64_t{2}}, {"length", int64_t{5}}}));
    out.push_back(exact(d + "_last_negative_axis", "slice", {v({4, 9, 5})},
                        {{"axis", int64_t{-1}}, {"start", int64_t{4}}, {"length", int64_t{1}}}));
    out.push_back(exact(d + "_whole", "slice", {v({4, 3})},
                        {{"axis", int64_t{0}}, {"start", int64_t{0}}, {"length", int64_t{4}}}));
    out.push_back(exact(d + "_length0", "slice", {v({4, 3})},
                        {{"axis", int64_t{1}}, {"start", int64_t{3}}, {"length", int64_t{0}}}));
    out.push_back(exact(d + "_rank1", "slice", {v({11})},
                        {{"axis", int64_t{0}}, {"start", int64_t{3}}, {"length", int64_t{7}}}));

    out.push_back(exact(d + "_rotate", "transpose", {v({3, 5, 7})}, {{"perm", Ints{2, 0, 1}}}));
    out.push_back(exact(d + "_keep_inner", "transpose", {v({3, 5, 7})}, {{"perm", Ints{1, 0, 2}}}));
    out.push_back(exact(d + "_batched", "transpose", {v({3, 5, 7})}, {{"perm", Ints{0, 2, 1}}}));
    out.push_back(exact(d + "_2d", "transpose", {v({37, 45})}, {{"perm", Ints{1, 0}}}));
    out.push_back(exact(d + "_identity", "transpose", {v({4, 6})}, {{"perm", Ints{0, 1}}}));
    out.push_back(exact(d + "_rank1", "transpose", {v({9})}, {{"perm", Ints{0}}}));
    out.push_back(exact(d + "_rank0", "transpose", {v({})}, {{"perm", Ints{}}}));
    out.push_back(
        exact(d + "_size1_axes", "transpose", {v({1, 4, 1, 6})}, {{"perm", Ints{3, 2, 1, 0}}}));
    out.push_back(
        exact(d + "_size1_between", "transpose", {v({4, 1, 6, 5})}, {{"perm", Ints{3, 0, 1, 2}}}));
    out.push_back(
        exact(d + "_rank5", "transpose", {v({2, 3, 4, 5, 3})}, {{"perm", Ints{4, 2, 0, 3, 1}}}));

    out.push_back(exact(d + "_middle", "repeat", {v({3, 1, 5})},
                        {{"axis", int64_t{1}}, {"times", int64_t{4}}}));
    out.push_back(exact(d + "_interleave_last", "repeat", {v({2, 3})},
                        {{"axis", int64_t{-1}}, {"times", int64_t{3}}}));
    out.push_back(
        exact(d + "_first", "repeat", {v({2, 3})}, {{"axis", int64_t{0}}, {"times", int64_t{2}}}));
    out.push_back(
        exact(d + "_once", "repeat", {v({4})}, {{"axis", int64_t{0}}, {"times", int64_t{1}}}));
    out.push_back(exact(d + "_inner_odd", "repeat", {v({2, 3, 7})},
                        {{"axis", int64_t{1}}, {"times", int64_t{5}}}));

    out.push_back(
        exact(d + "_two_middle", "concat", {v({2, 3, 4}), v({2, 5, 4})}, {{"axis", int64_t{1}}}));
    out.push_back(exact(d + "_four", "concat",
                        {v({2, 3, 4}), v({2, 5, 4}), v({2, 1, 4}), v({2, 2, 4})},
                        {{"axis", int64_t{1}}}));
    out.push_back(exact(d + "_last_negative_axis", "concat", {v({3, 2}), v({3, 7})},
                        {{"axis", int64_t{-1}}}));
    out.push_back(exact(d + "_first", "concat", {v({2, 3}), v({4, 3})}, {{"axis", int64_t{0}}}));
    out.push_back(exact(d + "_c_absent_d_present", "concat",
                        {v({2, 3}), v({2, 1}), Tensor(), v({2, 2})}, {{"axis", int64_t{1}}}));
    out.push_back(exact(d + "_zero_length_input", "concat",
                        {v({2, 0, 4}), v({2, 3, 4}), v({2, 0, 4})}, {{"axis", int64_t{1}}}));
    out.push_back(exact(d + "_rank1", "concat", {v({5}), v({1}), v({3})}, {{"axis", int64_t{0}}}));
  }

  // Large tensors: the copies are shared between threads (whole runs, runs
  // split mid-way, transpose tiles).
  out.push_back(
      exact("f32_large", "reshape", {values(DType::f32, {300, 4099}, rng)}, {{"shape", Ints{-1}}}));
  out.push_back(exact("bf16_large", "slice", {values(DType::bf16, {64, 8192}, rng)},
                      {{"axis", int64_t{1}}, {"start", int64_t{100}}, {"length", int64_t{5000}}}));
  out.push_back(exact("f32_large_one_run", "slice", {values(DType::f32, {4, 300000}, rng)},
                      {{"axis", int64_t{0}}, {"start", int64_t{1}}, {"length", int64_t{2}}}));
  out.push_back(exact("f32_large_2d", "transpose", {values(DType::f32, {257, 1031}, rng)},
                      {{"perm", Ints{1, 0}}}));
  out.push_back(exact("bf16_large_keep_inner", "transpose",
                      {values(DType::bf16, {8, 300, 130}, rng)}, {{"perm", Ints{1, 0, 2}}}));
  out.push_back(exact("i8_large_reverse", "transpose", {values(DType::i8, {100, 70, 33}, rng)},
                      {{"perm", Ints{2, 1, 0}}}));
  out.push_back(exact("i64_large_batched", "transpose", {values(DType::i64, {6, 130, 150}, rng)},
                      {{"perm", Ints{0, 2, 1}}}));
  out.push_back(exact("bf16_large", "repeat", {values(DType::bf16, {64, 1, 2048}, rng)},
                      {{"axis", int64_t{1}}, {"times", int64_t{16}}}));
  out.push_back(exact("u8_large_interleave_last", "repeat", {values(DType::u8, {500, 300}, rng)},
                      {{"axis", int64_t{1}}, {"times", int64_t{3}}}));
  out.push_back(exact("f32_large", "concat",
                      {values(DType::f32, {3000, 128}, rng), values(DType::f32, {3000, 64}, rng)},
                      {{"axis", int64_t{1}}}));
  out.push_back(exact("i64_large", "concat",
                      {values(DType::i64, {20000, 3}, rng), values(DType::i64, {20000, 5}, rng)},
                      {{"axis", int64_t{-1}}}));

  // Symbolic T, one token and then several, as the decoder graphs use them.
  const std::vector<int64_t> tokens = {1, 6, 33};
  out.push_back(symbolic("bf16_symbolic_split_heads", "reshape", DType::bf16, {{12}},
                         {{"shape", Ints{0, 3, 4}}}, tokens, rng));
  out.push_back(symbolic("f32_symbolic_merge_heads", "reshape", DType::f32, {{3, 4}},
                         {{"shape", Ints{0, 12}}}, tokens, rng));
  out.push_back(symbolic("bf16_symbolic", "slice", DType::bf16, {{96}},
                         {{"axis", int64_t{1}}, {"start", int64_t{32}}, {"length", int64_t{64}}},
                         tokens, rng));
  out.push_back(symbolic("f32_symbolic_inner", "slice", DType::f32, {{4, 24}},
                         {{"axis", int64_t{-1}}, {"start", int64_t{16}}, {"length", int64_t{8}}},
                         tokens, rng));
  out.push_back(symbolic("f32_symbolic", "transpose", DType::f32, {{4, 16}},
                         {{"perm", Ints{1, 0, 2}}}, tokens, rng));
  out.push_back(symbolic("bf16_symbolic_inner_moves", "transpose", DType::bf16, {{5, 3}},
                         {{"perm", Ints{2, 1, 0}}}, tokens, rng));
  out.push_back(symbolic("bf16_symbolic_heads", "repeat", DType::bf16, {{1, 8}},
                         {{"axis", int64_t{1}}, {"times", int64_t{4}}}, tokens, rng));
  out.push_back(symbolic("f32_symbolic_rope_parts", "concat", DType::f32, {{2, 16}, {2, 8}},
                         {{"axis", int64_t{2}}}, tokens, rng));
  out.push_back(symbolic("i32_symbolic", "concat", DType::i32, {{3}, {3}}, {{"axis", int64_t{1}}},
                         tokens, rng));
  return out;
}

const CaseRegistration registration("layout", cases);

}  // namespace
}  // namespace moert::conformance
