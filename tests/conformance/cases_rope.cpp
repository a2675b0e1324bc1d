// rope: every activation dtype with both pairings, partial rotary_dim,
// linear and YaRN scaling (HF defaults, DeepSeek's mscale pair, an explicit
// attention_factor, truncate 0), i32 and i64 positions including large ones
// (angles of ~1e5 rad), and a symbolic T over steps.
//
// Tolerance: one rounding of the output (tolerance_for the dtype); angles
// are formed in double on both sides and only their cosine and sine are
// rounded to f32 (~6e-8), so f32 outputs differ by ~2e-7 of |x|.  Outputs
// that cancel to ~0 are judged against a floor of 0.05 (x is N(0, 1)).
#include <string>
#include <vector>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr double kFloor = 0.05;
const char* const kFloorWhy =
    "; rotated N(0,1) features, judged against a floor of 0.05 where u cos - v sin cancels";

Attributes attrs_of(std::initializer_list<std::pair<const char*, AttrValue>> list) {
  Attributes a;
  for (const auto& [k, v] : list) a.set(k, v);
  return a;
}

Case rope_case(const std::string& name, DType t, std::vector<int64_t> x_shape, DType pos_dtype,
               int64_t max_pos, Attributes attrs, std::mt19937& rng) {
  const int64_t tokens = x_shape[0];
  Case c = simple_case(
      name, "rope",
      {random(t, std::move(x_shape), rng), random_ints(pos_dtype, {tokens}, 0, max_pos, rng)},
      std::move(attrs), tolerance_for(t), why_for(t) + kFloorWhy);
  c.floor = kFloor;
  return c;
}

std::vector<Case> cases() {
  std::mt19937 rng(31);
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (const char* pairing : {"half", "interleaved"}) {
      const std::string name = std::string(dtype_name(t)) + "_" + pairing;
      out.push_back(rope_case(name, t, {7, 3, 40}, DType::i32, 5000,
                              attrs_of({{"theta", 10000.0}, {"pairing", std::string(pairing)}}),
                              rng));
      out.push_back(rope_case(
          name + "_partial16", t, {5, 2, 40}, DType::i64, 300,
          attrs_of(
              {{"theta", 10000.0}, {"pairing", std::string(pairing)}, {"rotary_dim", int64_t{16}}}),
          rng));
    }
  out.push_back(rope_case("f32_one_token_position0", DType::f32, {1, 4, 24}, DType::i32, 0,
                          attrs_of({{"theta", 500000.0}}), rng));
  out.push_back(rope_case("f32_large_positions", DType::f32, {9, 2, 64}, DType::i64, 100000,
                          attrs_of({{"theta", 1000000.0}}), rng));
  out.push_back(rope_case(
      "f32_linear", DType::f32, {6, 3, 32}, DType::i64, 100000,
      attrs_of({{"theta", 1000000.0}, {"scaling", std::string("linear")}, {"factor", 4.0}}), rng));
  out.push_back(rope_case("bf16_linear_interleaved", DType::bf16, {6, 3, 32}, DType::i32, 8000,
                          attrs_of({{"theta", 10000.0},
                                    {"scaling", std::string("linear")},
                                    {"factor", 2.0},
                                    {"pairing", std::string("interleaved")}}),
                          rng));
  // YaRN with the defaults (beta 32 / 1, mscale 1, truncate 1).
  out.push_back(rope_case("f32_yarn_defaults", DType::f32, {8, 2, 64}, DType::i32, 2000,
                          attrs_of({{"theta", 10000.0},
                                    {"scaling", std::string("yarn")},
                                    {"factor", 8.0},
                                    {"original_max_position_embeddings", int64_t{64}}}),
                          rng));
  // DeepSeek-V2/V3: interleaved, rope on 32 of 64 features, mscale pair.
  out.push_back(rope_case("bf16_yarn_deepseek", DType::bf16, {8, 4, 64}, DType::i64, 150000,
                          attrs_of({{"theta", 10000.0},
                                    {"scaling", std::string("yarn")},
                                    {"factor", 40.0},
                                    {"original_max_position_embeddings", int64_t{4096}},
                                    {"mscale", 0.707},
                                    {"mscale_all_dim", 1.0},
                                    {"rotary_dim", int64_t{32}},
                                    {"pairing", std::string("interleaved")}}),
                          rng));
  // GPT-OSS: explicit attention_factor, truncate 0, beta 32 / 1.
  out.push_back(rope_case("f16_yarn_attention_factor_no_truncate", DType::f16, {8, 4, 64},
                          DType::i32, 100000,
                          attrs_of({{"theta", 150000.0},
                                    {"scaling", std::string("yarn")},
                                    {"factor", 32.0},
                                    {"original_max_position_embeddings", int64_t{4096}},
                                    {"attention_factor", 1.2},
                                    {"truncate", int64_t{0}},
                                    {"beta_fast", 32.0},
                                    {"beta_slow", 1.0}}),
                          rng));
  out.push_back(rope_case("f32_yarn_narrow_ramp", DType::f32, {4, 2, 24}, DType::i32, 3000,
                          attrs_of({{"theta", 10000.0},
                                    {"scaling", std::string("yarn")},
                                    {"factor", 4.0},
                                    {"original_max_position_embeddings", int64_t{256}},
                                    {"beta_fast", 4.0},
                                    {"beta_slow", 2.0},
                                    {"mscale", 0.5}}),
                          rng));
  {  // Symbolic T: positions P .. P + T - 1 over steps 5, 1, 3.
    Case c;
    c.name = "symbolic_steps";
    c.op = "rope";
    c.attrs = attrs_of({{"theta", 10000.0}});
    c.slots = {activation(DType::bf16, Shape{Dim::tokens(), Dim(4), Dim(24)}),
               activation(DType::i64, Shape{Dim::tokens()})};
    int64_t past = 0;
    for (int64_t tokens : {5, 1, 3}) {
      Step s;
      s.tokens = tokens;
      s.inputs.push_back(random(DType::bf16, {tokens, 4, 24}, rng));
      s.inputs.push_back(random_ints(DType::i64, {tokens}, past, past, rng));
      Tensor& pos = s.inputs.back();
      for (int64_t i = 0; i < tokens; ++i) pos.data_as<int64_t>()[i] = past + i;
      c.steps.push_back(std::move(s));
      past += tokens;
    }
    c.tolerance = tolerance_for(DType::bf16);
    c.floor = kFloor;
    c.why = why_for(DType::bf16) + kFloorWhy;
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration registration("rope", cases);

}  // namespace
}  // namespace moert::conformance
