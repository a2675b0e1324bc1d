// Tensors a writer left unaligned to their item size (a U8[1] before an
// F32, no padding): the kernels read elements through typed pointers, so
// such a tensor must come as an aligned copy of its bytes, while aligned ones
// stay views of the mapping.  Input found by fuzz/fuzz_quantization.cpp (a
// model whose every weight sat one byte off: misaligned float loads in the
// decoder builder and the embedding kernel).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "moert/safetensors.h"

namespace moert {
namespace {

namespace fs = std::filesystem;

TEST(SafetensorsAlignment, UnalignedTensorsAreAlignedCopies) {
  const fs::path path = fs::temp_directory_path() /
                        ("moert_alignment_" + std::to_string(::getpid()) + ".safetensors");
  // The header padded to a multiple of 8 as the reference writer pads it, so
  // the data section starts 8-aligned and "b" and "c" sit one byte off.
  std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                       R"("c":{"dtype":"I64","shape":[1],"data_offsets":[9,17]}})";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::string file(8, '\0');
  file[0] = static_cast<char>(header.size());
  file += header;
  const float b[2] = {1.5f, -2.0f};
  const int64_t c = -7;
  file += '\x07';
  file.append(reinterpret_cast<const char*>(b), sizeof(b));
  file.append(reinterpret_cast<const char*>(&c), sizeof(c));
  std::ofstream(path, std::ios::binary) << file;

  auto f = SafetensorsFile::open(path.string());
  const Tensor tb = f->tensor("b"), tc = f->tensor("c"), ta = f->tensor("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tb.data()) % 4, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tc.data()) % 8, 0u);
  EXPECT_EQ(tb.at(0), 1.5);
  EXPECT_EQ(tb.at(1), -2.0);
  EXPECT_EQ(tc.at(0), -7.0);
  EXPECT_EQ(ta.at(0), 7.0);
  // Copies are fresh each time; the aligned U8 tensor stays a view.
  EXPECT_NE(f->tensor("b").data(), tb.data());
  EXPECT_EQ(f->tensor("a").data(), ta.data());
  fs::remove(path);
}

}  // namespace
}  // namespace moert
