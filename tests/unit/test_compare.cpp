// The latency engine (moert/compare.h): what measure_latency runs and
// returns, and compare_devices against the reference backend, on a tiny
// random Mixtral.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "moert/compare.h"
#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_configs.h"

using moert::CompareModel;
using moert::CompareOptions;
using moert::LatencyOptions;
using moert::LatencyRun;
using moert::Model;
using ::testing::HasSubstr;

namespace {

std::unique_ptr<Model> tiny_model() {
  moert::RandomWeights w;
  w.dtype = "f32";
  w.seed = 5;
  return Model::random(moert::testing::tiny_mixtral().dump(), w);
}

TEST(Compare, PercentileInterpolatesBetweenRanks) {
  EXPECT_EQ(moert::percentile({}, 0.5), 0.0);
  EXPECT_EQ(moert::percentile({3, 1, 2}, 0.5), 2.0);
  EXPECT_DOUBLE_EQ(moert::percentile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(moert::percentile({0, 10}, 0.95), 9.5);
}

TEST(Compare, RandomTokensDependOnTheSeedOnly) {
  const std::vector<int32_t> a = moert::random_tokens(50, 7, 3);
  EXPECT_EQ(a, moert::random_tokens(50, 7, 3));
  EXPECT_NE(a, moert::random_tokens(50, 7, 4));
  for (int32_t t : a) EXPECT_TRUE(t >= 0 && t < 7);
}

TEST(Compare, GreedyRunMatchesGenerate) {
  auto m = tiny_model();
  LatencyOptions o;
  o.prompt = {3, 1, 4, 1, 5};
  o.new_tokens = 4;
  o.repeat = 2;
  o.keep_logits = true;
  const LatencyRun r = moert::measure_latency(m->executor(), o);
  ASSERT_EQ(r.prefill_s.size(), 2u);
  ASSERT_EQ(r.decode_s.size(), 2u);
  EXPECT_EQ(r.decode_s[1].size(), 4u);
  ASSERT_EQ(r.logits.size(), 5u);  // the prompt's, then one per step
  EXPECT_EQ(r.logits[0].dim(0), 5);
  // Step i's input is the argmax of the logits before it: generate()'s tokens
  // but the last (whose logits no step consumes).
  moert::GenerateOptions g;
  g.max_new_tokens = 5;
  const std::vector<int32_t> greedy = m->generate(o.prompt, g);
  EXPECT_EQ(r.inputs, std::vector<int32_t>(greedy.begin(), greedy.end() - 1));
}

TEST(Compare, FedRunNeedsNoPrompt) {
  auto m = tiny_model();
  LatencyOptions o;
  o.new_tokens = 3;
  o.feed = {7, 8, 9};
  o.warmup = false;
  const LatencyRun r = moert::measure_latency(m->executor(), o);
  EXPECT_TRUE(r.prefill_s.empty());
  EXPECT_EQ(r.inputs, o.feed);
  o.feed.clear();
  EXPECT_THAT([&] { moert::measure_latency(m->executor(), o); },
              ::testing::ThrowsMessage<moert::Error>(HasSubstr("greedy decoding needs a prompt")));
}

TEST(Compare, DevicesAgainstTheReference) {
  auto m = tiny_model();
  CompareModel model;
  model.graph = &m->graph();
  CompareOptions o;
  o.prompt_tokens = 6;
  o.new_tokens = 3;
  o.repeat = 2;
  const moert::Comparison c = moert::compare_devices(model, {"reference:0", "nowhere"}, o);
  EXPECT_EQ(c.prompt, moert::random_tokens(6, 512, 0));
  EXPECT_EQ(c.reference_tokens.size(), 3u);
  ASSERT_EQ(c.devices.size(), 2u);
  const moert::DeviceLatency& ok = c.devices[0];
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.kind, "cpu");
  EXPECT_EQ(ok.prefill_s.size(), 2u);
  EXPECT_EQ(ok.decode_s.size(), 6u);
  EXPECT_GT(ok.prefill_tok_s(), 0);
  EXPECT_GT(ok.decode_tok_s(), 0);
  EXPECT_LE(ok.decode_ms_p50(), ok.decode_ms_p95());
  EXPECT_GT(ok.peak_bytes, 0u);
  EXPECT_EQ(ok.max_abs_diff, 0.0);
  EXPECT_TRUE(ok.agrees);
  EXPECT_THAT(c.devices[1].error, HasSubstr("unknown backend 'nowhere'"));
  EXPECT_FALSE(c.devices[1].agrees);
}

}  // namespace
