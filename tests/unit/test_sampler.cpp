#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moert/error.h"
#include "moert/sampler.h"

using moert::Sampler;
using moert::SamplingOptions;

TEST(Sampler, GreedyIsArgmaxLowestIndexOnTies) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  Sampler s({});
  EXPECT_EQ(s.sample(l.data(), 4), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> l = {0.1f, 0.3f, 3.0f, 0.2f};
  SamplingOptions k1{1.5, 1, 1.0, 3};
  SamplingOptions p{1.5, 0, 1e-6, 3};
  Sampler a(k1), b(p);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.sample(l.data(), 4), 2);
    EXPECT_EQ(b.sample(l.data(), 4), 2);
  }
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> l = {0.1f, 0.3f, 0.2f, 0.25f, 0.0f};
  SamplingOptions o{1.0, 0, 1.0, 1234};
  Sampler a(o), b(o);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(l.data(), 5), b.sample(l.data(), 5));
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  // Two tokens with logits 0 and ln 3 at temperature 1: probabilities 1/4, 3/4.
  std::vector<float> l = {0.0f, static_cast<float>(std::log(3.0))};
  Sampler s({1.0, 0, 1.0, 99});
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.sample(l.data(), 2);
  // Binomial stddev sqrt(n p q) ≈ 61; allow 5 sigma.
  EXPECT_NEAR(ones, 0.75 * n, 5 * 61.2);
}

TEST(Sampler, TopPKeepsTheNucleusOnly) {
  // Probabilities ≈ 0.6, 0.3, 0.1: top_p 0.8 keeps the first two only.
  std::vector<float> l = {static_cast<float>(std::log(0.6)), static_cast<float>(std::log(0.3)),
                          static_cast<float>(std::log(0.1))};
  Sampler s({1.0, 0, 0.8, 5});
  for (int i = 0; i < 2000; ++i) EXPECT_NE(s.sample(l.data(), 3), 2);
}

TEST(Sampler, BadOptionsAreErrors) {
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), moert::Error);
  EXPECT_THROW(Sampler({1.0, -2, 1.0, 0}), moert::Error);
  EXPECT_THROW(Sampler({1.0, 0, 0.0, 0}), moert::Error);
  EXPECT_THROW(Sampler({1.0, 0, 1.5, 0}), moert::Error);
}
