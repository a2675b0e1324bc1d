#include <gtest/gtest.h>

#include "moert/dtype.h"

TEST(DType, Sizes) { EXPECT_EQ(moert::dtype_size(moert::DType::bf16), 2u); }
