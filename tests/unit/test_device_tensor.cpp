#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "moert/device_tensor.h"
#include "moert/error.h"
#include "support/op_runner.h"

using moert::DType;
using moert::Tensor;

TEST(DeviceTensor, RoundTripThroughTheReferenceDevice) {
  std::mt19937 rng(21);
  Tensor host = moert::testing::random_tensor(DType::bf16, {5, 7}, rng);
  moert::DeviceRef dev = moert::BackendRegistry::global().resolve("reference");
  Tensor on_dev = moert::to_device(host, dev);
  EXPECT_FALSE(on_dev.on_host());
  EXPECT_EQ(on_dev.describe(), "bf16[5, 7] on reference:0");
  EXPECT_THAT([&] { on_dev.data(); }, ::testing::Throws<moert::Error>());
  Tensor back = moert::to_host(on_dev);
  EXPECT_TRUE(back.on_host());
  EXPECT_EQ(back.to_doubles(), host.to_doubles());
}

TEST(DeviceTensor, SlicesOfDeviceTensorsReadTheirRows) {
  std::mt19937 rng(22);
  Tensor host = moert::testing::random_tensor(DType::f32, {6, 3}, rng);
  Tensor on_dev = moert::to_device(host, moert::BackendRegistry::global().resolve("reference"));
  EXPECT_EQ(moert::to_host(on_dev.slice0(2, 3)).to_doubles(), host.slice0(2, 3).to_doubles());
}
