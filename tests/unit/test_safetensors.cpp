// safetensors reading: files written here byte by byte, read back exactly;
// sharded and plain checkpoint directories; and every way a hostile file or
// index can be wrong, each checked for an error that names what is at fault.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/safetensors.h"

namespace {

namespace fs = std::filesystem;
using moert::Checkpoint;
using moert::DType;
using moert::SafetensorsFile;
using moert::Tensor;
using ::testing::AllOf;
using ::testing::HasSubstr;

size_t itemsize(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "I64" || dtype == "F64") return 8;
  return 1;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xFF);
  return out;
}

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;  // empty: random bytes of the right length
};

std::string json_dims(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// A file's header JSON and data section before they are put together, so a
// test can corrupt either (or the length field) first.
struct Raw {
  std::string header;
  std::string data;
};

// A valid file holding `tensors`, laid out in the order given.
Raw make_raw(std::vector<TensorSpec> tensors, const std::map<std::string, std::string>& meta = {}) {
  Raw r;
  r.header = "{";
  if (!meta.empty()) {
    r.header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : meta) {
      r.header += (first ? "" : ",") + ("\"" + k + "\":\"" + v + "\"");
      first = false;
    }
    r.header += "}";
  }
  uint32_t seed = 1;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorSpec& t = tensors[i];
    if (t.bytes.empty()) {
      size_t n = itemsize(t.dtype);
      for (int64_t d : t.shape) n *= static_cast<size_t>(d);
      t.bytes = random_bytes(n, seed++);
    }
    size_t begin = r.data.size();
    r.data += t.bytes;
    r.header += (i || !meta.empty() ? "," : "") +
                ("\"" + t.name + "\":{\"dtype\":\"" + t.dtype +
                 "\",\"shape\":" + json_dims(t.shape) + ",\"data_offsets\":[" +
                 std::to_string(begin) + "," + std::to_string(r.data.size()) + "]}");
  }
  r.header += "}";
  return r;
}

// The file bytes: length, header padded with spaces to a multiple of 8 as the
// reference writer does, data.  `length` overrides the length field.
std::string assemble(const Raw& r, std::optional<uint64_t> length = std::nullopt) {
  std::string header = r.header;
  while (header.size() % 8) header += ' ';
  uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + r.data;
}

// A raw header (no tensors' data) with `entry` as the JSON of tensor "w".
Raw one_entry(const std::string& entry, std::string data = "") {
  return Raw{"{\"w\":" + entry + "}", std::move(data)};
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const moert::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moert::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected moert::Error, nothing was thrown";
  return "";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("moert_safetensors_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& name, const std::string& contents) {
    fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    EXPECT_TRUE(out.good()) << p;
    return p.string();
  }
  std::string write(const std::string& name, const Raw& r) { return write(name, assemble(r)); }

  // The error opening a file with these contents; the message must name it.
  std::string open_error(const std::string& contents) {
    std::string path = write("bad.safetensors", contents);
    std::string msg = error_of([&] { SafetensorsFile::open(path); });
    EXPECT_THAT(msg, HasSubstr(path));
    return msg;
  }
  std::string open_error(const Raw& r) { return open_error(assemble(r)); }

  std::string dir() const { return dir_.string(); }

  fs::path dir_;
};

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.data()), t.nbytes());
}

// --- valid files -------------------------------------------------------------

TEST_F(SafetensorsTest, EveryDTypeReadsBackExactly) {
  // Deliberately not in name order, and with a scalar and zero-size tensors.
  std::vector<TensorSpec> specs = {
      {"w.f32", "F32", {3, 5}, ""},      {"a.f16", "F16", {7}, ""},
      {"m.bf16", "BF16", {2, 3, 4}, ""}, {"e.f8", "F8_E4M3", {9}, ""},
      {"z.i8", "I8", {1, 11}, ""},       {"b.u8", "U8", {13}, ""},
      {"y.i32", "I32", {6}, ""},         {"c.i64", "I64", {2, 2}, ""},
      {"x.bool", "BOOL", {5}, ""},       {"scalar", "F32", {}, ""},
      {"empty", "BF16", {0, 4}, ""},     {"empty_end", "I64", {3, 0}, ""},
  };
  std::string path = write("model.safetensors", make_raw(specs));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->entries().size(), specs.size());
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_EQ(f->file_size(), fs::file_size(path));

  Raw expected = make_raw(specs);  // same seeds, same bytes
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {
    SCOPED_TRACE(s.name);
    ASSERT_TRUE(f->has(s.name));
    const moert::SafetensorsEntry& e = f->entries().at(s.name);
    EXPECT_EQ(e.name, s.name);
    EXPECT_EQ(moert::dtype_to_safetensors(e.dtype), s.dtype);
    EXPECT_EQ(e.shape, s.shape);
    EXPECT_EQ(e.begin, offset);
    size_t n = itemsize(s.dtype);
    for (int64_t d : s.shape) n *= static_cast<size_t>(d);
    EXPECT_EQ(e.end - e.begin, n);

    Tensor t = f->tensor(s.name);
    EXPECT_EQ(t.dtype(), e.dtype);
    EXPECT_EQ(t.shape(), s.shape);
    EXPECT_TRUE(t.on_host());
    EXPECT_EQ(bytes_of(t), expected.data.substr(offset, n));
    offset += n;
  }
  EXPECT_EQ(f->tensor("scalar").numel(), 1);
  EXPECT_EQ(f->tensor("empty").numel(), 0);
  EXPECT_EQ(f->entries().at("x.bool").dtype, DType::boolean);
  EXPECT_EQ(f->entries().at("e.f8").dtype, DType::f8_e4m3);
  EXPECT_THAT(error_of([&] { f->tensor("nope"); }), AllOf(HasSubstr(path), HasSubstr("'nope'")));
}

TEST_F(SafetensorsTest, NoTensorsAtAll) {
  auto f = SafetensorsFile::open(write("model.safetensors", Raw{"{}", ""}));
  EXPECT_TRUE(f->entries().empty());
}

TEST_F(SafetensorsTest, Metadata) {
  std::string path = write("model.safetensors",
                           make_raw({{"w", "BF16", {4}, ""}}, {{"format", "pt"}, {"note", "hi"}}));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hi"}}));
  EXPECT_EQ(f->entries().size(), 1u);
  EXPECT_FALSE(f->has("__metadata__"));
}

TEST_F(SafetensorsTest, DTypeNames) {
  for (DType t : moert::kAllDTypes)
    EXPECT_EQ(moert::dtype_from_safetensors(moert::dtype_to_safetensors(t)), t);
  EXPECT_EQ(moert::dtype_from_safetensors("F8_E4M3"), DType::f8_e4m3);
  for (const char* unknown : {"F8_E5M2", "F64", "bf16", ""}) {
    EXPECT_THAT(error_of([&] { moert::dtype_from_safetensors(unknown); }),
                AllOf(HasSubstr(std::string("'") + unknown + "'"), HasSubstr("BF16"),
                      HasSubstr("F8_E4M3"), HasSubstr("BOOL")));
  }
}

TEST_F(SafetensorsTest, ShardedCheckpointThroughIndex) {
  Raw s1 = make_raw({{"model.embed_tokens.weight", "BF16", {16, 8}, random_bytes(256, 11)},
                     {"model.norm.weight", "F32", {8}, random_bytes(32, 12)}});
  Raw s2 = make_raw({{"model.layers.0.mlp.experts.0.w1", "F8_E4M3", {4, 8}, random_bytes(32, 13)},
                     // Held by the shard but absent from the index: not part of the checkpoint.
                     {"stale.weight", "F32", {2}, random_bytes(8, 14)}});
  Raw s3 = make_raw({{"lm_head.weight", "BF16", {16, 8}, random_bytes(256, 15)}});
  write("model-00001-of-00003.safetensors", s1);
  write("model-00002-of-00003.safetensors", s2);
  write("model-00003-of-00003.safetensors", s3);
  write("model.safetensors.index.json",
        R"({"metadata": {"total_size": 576},
            "weight_map": {
              "lm_head.weight": "model-00003-of-00003.safetensors",
              "model.embed_tokens.weight": "model-00001-of-00003.safetensors",
              "model.layers.0.mlp.experts.0.w1": "model-00002-of-00003.safetensors",
              "model.norm.weight": "model-00001-of-00003.safetensors"}})");
  Checkpoint ck = Checkpoint::open(dir());
  EXPECT_EQ(ck.directory(), dir());
  EXPECT_EQ(ck.files().size(), 3u);
  EXPECT_EQ(ck.names(),
            (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight",
                                      "model.layers.0.mlp.experts.0.w1", "model.norm.weight"}));
  EXPECT_FALSE(ck.has("stale.weight"));
  EXPECT_EQ(ck.total_bytes(), 256u + 32u + 32u + 256u);

  EXPECT_EQ(bytes_of(ck.get("model.embed_tokens.weight")), random_bytes(256, 11));
  EXPECT_EQ(bytes_of(ck.get("model.norm.weight")), random_bytes(32, 12));
  EXPECT_EQ(bytes_of(ck.get("model.layers.0.mlp.experts.0.w1")), random_bytes(32, 13));
  EXPECT_EQ(bytes_of(ck.get("lm_head.weight")), random_bytes(256, 15));
  EXPECT_EQ(ck.get("lm_head.weight").shape(), (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(ck.entry("model.layers.0.mlp.experts.0.w1").dtype, DType::f8_e4m3);
  EXPECT_EQ(ck.file_of("lm_head.weight"), (dir_ / "model-00003-of-00003.safetensors").string());
}

TEST_F(SafetensorsTest, PlainDirectoryOfSeveralFiles) {
  write("b.safetensors", make_raw({{"y", "I32", {3}, random_bytes(12, 2)}}));
  write("a.safetensors", make_raw({{"x", "F16", {2, 2}, random_bytes(8, 1)}}));
  write("c.safetensors", make_raw({{"z", "U8", {5}, random_bytes(5, 3)}}));
  write("README.md", "not a checkpoint");
  Checkpoint ck = Checkpoint::open(dir());
  ASSERT_EQ(ck.files().size(), 3u);
  EXPECT_EQ(ck.files()[0]->path(), (dir_ / "a.safetensors").string());
  EXPECT_EQ(ck.files()[2]->path(), (dir_ / "c.safetensors").string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(bytes_of(ck.get("x")), random_bytes(8, 1));
  EXPECT_EQ(bytes_of(ck.get("y")), random_bytes(12, 2));
  EXPECT_EQ(bytes_of(ck.get("z")), random_bytes(5, 3));
  EXPECT_EQ(ck.total_bytes(), 25u);
}

TEST_F(SafetensorsTest, ModelSafetensorsIsPreferredOverOtherFiles) {
  // Some repositories ship a second, differently laid out copy beside it.
  write("model.safetensors", make_raw({{"w", "F32", {2}, random_bytes(8, 1)}}));
  write("consolidated.safetensors", make_raw({{"w", "F32", {2}, random_bytes(8, 2)}}));
  Checkpoint ck = Checkpoint::open(dir());
  EXPECT_EQ(ck.files().size(), 1u);
  EXPECT_EQ(bytes_of(ck.get("w")), random_bytes(8, 1));
}

TEST_F(SafetensorsTest, TensorOutlivesFileAndCheckpoint) {
  Tensor from_file, from_checkpoint;
  {
    std::string path =
        write("model.safetensors", make_raw({{"w", "F32", {4}, random_bytes(16, 7)}}));
    from_file = SafetensorsFile::open(path)->tensor("w");
    from_checkpoint = Checkpoint::open(dir()).get("w");
  }
  // Unlinking does not invalidate a mapping.
  fs::remove_all(dir_);
  EXPECT_EQ(bytes_of(from_file), random_bytes(16, 7));
  EXPECT_EQ(bytes_of(from_checkpoint), random_bytes(16, 7));
  EXPECT_EQ(from_checkpoint.to_doubles().size(), 4u);
}

// --- hostile files -----------------------------------------------------------

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
  EXPECT_THAT(open_error(""), HasSubstr("too short"));
  EXPECT_THAT(open_error(std::string("\x05\x00\x00", 3)), HasSubstr("3 bytes is too short"));
  EXPECT_THAT(open_error(std::string(7, '\0')), HasSubstr("too short"));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  Raw r = make_raw({{"w", "F32", {2}, ""}});
  std::string exact = assemble(r);
  EXPECT_THAT(open_error(assemble(r, exact.size())),
              AllOf(HasSubstr("header length " + std::to_string(exact.size())),
                    HasSubstr("past the end of the file (" + std::to_string(exact.size()))));
  EXPECT_THAT(open_error(std::string(8, '\0') + ""), HasSubstr("not valid JSON"));
  EXPECT_THAT(open_error(assemble(Raw{"", ""}, 1)), HasSubstr("past the end of the file"));
}

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
  Raw r = make_raw({{"w", "F32", {2}, ""}});
  EXPECT_THAT(open_error(assemble(r, 100'000'001)),
              AllOf(HasSubstr("header length 100000001"), HasSubstr("limit of 100000000")));
  EXPECT_THAT(open_error(assemble(r, UINT64_MAX)), HasSubstr("exceeds the limit"));
}

TEST_F(SafetensorsTest, InvalidJson) {
  EXPECT_THAT(open_error(Raw{"{\"w\": {\"dtype\": ", ""}),
              AllOf(HasSubstr("header is not valid JSON"), HasSubstr("parse error")));
  EXPECT_THAT(open_error(Raw{"{\"w\": 1} trailing", ""}), HasSubstr("not valid JSON"));
  // Ill-formed UTF-8 in a tensor name.
  EXPECT_THAT(open_error(Raw{"{\"\xff\": 1}", ""}), HasSubstr("not valid JSON"));
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  EXPECT_THAT(open_error(Raw{"[1, 2]", ""}), HasSubstr("header is a JSON array, not an object"));
  EXPECT_THAT(open_error(Raw{"\"w\"", ""}), HasSubstr("not an object"));
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  EXPECT_THAT(open_error(one_entry("[1]")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("array, not an object")));
}

TEST_F(SafetensorsTest, EntryMissingField) {
  EXPECT_THAT(open_error(one_entry(R"({"shape": [1], "data_offsets": [0, 4]})", "abcd")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("no \"dtype\"")));
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "F32", "data_offsets": [0, 4]})", "abcd")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("no \"shape\"")));
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "F32", "shape": [1]})", "abcd")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("no \"data_offsets\"")));
}

TEST_F(SafetensorsTest, FieldsOfTheWrongType) {
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": 3, "shape": [1], "data_offsets": [0, 4]})", "abcd")),
      HasSubstr("\"dtype\" is a JSON number, not a string"));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "F32", "shape": 1, "data_offsets": [0, 4]})", "abcd")),
      HasSubstr("\"shape\" is a JSON number, not an array"));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})", "abcd")),
      HasSubstr("not an array [begin, end]"));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]})", "abcd")),
      HasSubstr("not non-negative integers"));
  EXPECT_THAT(open_error(Raw{R"({"__metadata__": {"format": 1}})", ""}),
              HasSubstr("\"__metadata__\" value of 'format' is a JSON number, not a string"));
  EXPECT_THAT(open_error(Raw{R"({"__metadata__": [1]})", ""}),
              HasSubstr("\"__metadata__\" is a JSON array"));
}

TEST_F(SafetensorsTest, UnknownDType) {
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]})",
                                   "abcd")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("'F8_E5M2'"), HasSubstr("F8_E4M3")));
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "F64", "shape": [1], "data_offsets": [0, 8]})",
                                   "abcdefgh")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("'F64'")));
}

TEST_F(SafetensorsTest, BadDimension) {
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "U8", "shape": [-1, 4], "data_offsets": [0, 0]})")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("negative dimension -1 in shape [-1,4]")));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "U8", "shape": [2.0], "data_offsets": [0, 2]})", "ab")),
      HasSubstr("dimension 2.0 in shape [2.0] is not an integer"));
  EXPECT_THAT(open_error(one_entry(
                  R"({"dtype": "U8", "shape": [4611686018427387905], "data_offsets": [0, 0]})")),
              HasSubstr("dimension 4611686018427387905"));
  EXPECT_THAT(open_error(one_entry(
                  R"({"dtype": "U8", "shape": [99999999999999999999], "data_offsets": [0, 0]})")),
              HasSubstr("is not an integer"));
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "U8", "shape": [8], "data_offsets": [0, 8]})", "abcd")),
      AllOf(HasSubstr("tensor 'w'"), HasSubstr("data_offsets [0, 8] run past the end"),
            HasSubstr("(4 bytes)")));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "U8", "shape": [4], "data_offsets": [4, 0]})", "abcd")),
      HasSubstr("data_offsets [4, 0] end before they begin"));
  EXPECT_THAT(
      open_error(one_entry(R"({"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]})", "abcd")),
      HasSubstr("not non-negative integers"));
  EXPECT_THAT(
      open_error(one_entry(
          R"({"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 0]})", "abcd")),
      HasSubstr("end before they begin"));
}

TEST_F(SafetensorsTest, OverlappingEntries) {
  Raw r{R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
        random_bytes(12, 1)};
  EXPECT_THAT(open_error(r),
              AllOf(HasSubstr("tensor 'b'"), HasSubstr("[4, 12] overlap tensor 'a'")));
  // A zero-size tensor inside another one overlaps it too.
  Raw z{R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
        random_bytes(8, 1)};
  EXPECT_THAT(open_error(z), HasSubstr("tensor 'e': data_offsets [4, 4] overlap tensor 'a'"));
  // Two names for the same bytes.
  Raw same{R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
           random_bytes(8, 1)};
  EXPECT_THAT(open_error(same), HasSubstr("overlap tensor 'a'"));
}

TEST_F(SafetensorsTest, GapsInTheDataSection) {
  Raw r{R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}})",
        random_bytes(24, 1)};
  EXPECT_THAT(open_error(r), AllOf(HasSubstr("bytes [8, 16)"), HasSubstr("belong to no tensor"),
                                   HasSubstr("'b'"), HasSubstr("'a'")));
  Raw lead = one_entry(R"({"dtype": "U8", "shape": [2], "data_offsets": [2, 4]})", "abcd");
  EXPECT_THAT(open_error(lead), HasSubstr("bytes [0, 2)"));
  Raw tail = make_raw({{"w", "F32", {2}, ""}});
  tail.data += "xy";
  EXPECT_THAT(open_error(tail), HasSubstr("bytes [8, 10) at the end of the data section"));
  EXPECT_THAT(open_error(Raw{"{}", "abc"}), HasSubstr("bytes [0, 3) at the end"));
}

TEST_F(SafetensorsTest, ByteLengthIsNotShapeTimesItemsize) {
  Raw r{R"({"model.embed_tokens.weight":
            {"dtype": "BF16", "shape": [8, 8], "data_offsets": [0, 100]}})",
        random_bytes(100, 1)};
  EXPECT_THAT(open_error(r), HasSubstr(": tensor 'model.embed_tokens.weight': data_offsets [0, "
                                       "100] hold 100 bytes but BF16[8, 8] needs 128"));
  EXPECT_THAT(open_error(one_entry(R"({"dtype": "F32", "shape": [], "data_offsets": [0, 0]})")),
              HasSubstr("hold 0 bytes but F32[] needs 4"));
}

TEST_F(SafetensorsTest, ShapeProductOverflow) {
  // 2^62 * 4 = 2^64.
  EXPECT_THAT(open_error(one_entry(
                  R"({"dtype": "U8", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]})")),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("more elements than fit in 64 bits")));
  // 2^62 * 2 * 0: the prefix product already overflows a signed 64-bit count.
  EXPECT_THAT(
      open_error(one_entry(
          R"({"dtype": "U8", "shape": [4611686018427387904, 2, 0], "data_offsets": [0, 0]})")),
      HasSubstr("more elements than fit"));
  // 2^62 elements of 8 bytes.
  EXPECT_THAT(open_error(one_entry(
                  R"({"dtype": "I64", "shape": [4611686018427387904], "data_offsets": [0, 0]})")),
              HasSubstr("more bytes than fit in 64 bits"));
  // Wraps to exactly the bytes held when computed modulo 2^64.
  EXPECT_THAT(
      open_error(one_entry(
          R"({"dtype": "U8", "shape": [4294967296, 4294967296, 1], "data_offsets": [0, 0]})")),
      HasSubstr("more elements than fit"));
}

TEST_F(SafetensorsTest, DuplicateNamesInOneFile) {
  // A plain JSON parse would keep only the second "w", leaving its first
  // entry's bytes unaccounted for or silently shadowed.
  Raw r{R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "w": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
        "abcd"};
  EXPECT_THAT(open_error(r), HasSubstr("header: tensor 'w' appears twice"));
  Raw nested =
      one_entry(R"({"dtype": "U8", "dtype": "U8", "shape": [2], "data_offsets": [0, 2]})", "ab");
  EXPECT_THAT(open_error(nested), HasSubstr("key 'dtype' appears twice inside 'w'"));
}

TEST_F(SafetensorsTest, NotARegularFile) {
  fs::create_directories(dir_ / "sub.safetensors");
  std::string path = (dir_ / "sub.safetensors").string();
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(path); }),
              AllOf(HasSubstr(path), HasSubstr("not a regular file")));
  // A FIFO would block a plain open() until someone writes to it.
  std::string fifo = (dir_ / "fifo.safetensors").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(fifo); }),
              AllOf(HasSubstr(fifo), HasSubstr("not a regular file")));
  std::string missing = (dir_ / "missing.safetensors").string();
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(missing); }),
              AllOf(HasSubstr(missing), HasSubstr("cannot open")));
}

// A file filling whole pages exactly: reading one byte past its end would
// touch the page after the mapping.
TEST_F(SafetensorsTest, FileEndingOnAPageBoundary) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::string unterminated = "{\"w\": \"" + std::string(page - 8 - 7, 'a');
  EXPECT_THAT(open_error(assemble(Raw{unterminated, ""}, page - 8)), HasSubstr("not valid JSON"));

  size_t k = 1;
  std::string contents;
  for (int i = 0; i < 3 && contents.size() != page; ++i) {
    contents = assemble(make_raw({{"w", "U8", {static_cast<int64_t>(k)}, ""}}));
    k += page - contents.size();
  }
  ASSERT_EQ(contents.size(), page);
  std::string path = write("page.safetensors", contents);
  Tensor t = SafetensorsFile::open(path)->tensor("w");
  EXPECT_EQ(bytes_of(t), contents.substr(page - t.nbytes()));
}

// Every truncation and many single-byte corruptions of a valid file either
// open or fail with moert::Error; none may read outside the file.
TEST_F(SafetensorsTest, TruncationsAndCorruptionsNeverCrash) {
  std::string good = assemble(make_raw({{"a", "BF16", {2, 3}, ""}, {"b", "F32", {}, ""}}));
  for (size_t n = 0; n < good.size(); ++n) {
    std::string path = write("t.safetensors", good.substr(0, n));
    EXPECT_THROW(SafetensorsFile::open(path), moert::Error) << "truncated to " << n;
  }
  std::mt19937 rng(5);
  for (size_t i = 0; i < good.size(); ++i) {
    for (int k = 0; k < 4; ++k) {
      std::string bad = good;
      bad[i] = static_cast<char>(rng() & 0xFF);
      std::string path = write("c.safetensors", bad);
      try {
        auto f = SafetensorsFile::open(path);
        for (const auto& [name, e] : f->entries()) bytes_of(f->tensor(name));
      } catch (const moert::Error&) {
      }
    }
  }
}

// --- checkpoint directories --------------------------------------------------

TEST_F(SafetensorsTest, NameInTwoFilesOfAPlainDirectory) {
  std::string a = write("a.safetensors", make_raw({{"x", "F32", {1}, ""}}));
  std::string b = write("b.safetensors", make_raw({{"y", "F32", {1}, ""}, {"x", "F32", {1}, ""}}));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr("tensor 'x'"), HasSubstr(a), HasSubstr(b)));
}

TEST_F(SafetensorsTest, NameInTwoShards) {
  std::string s1 = write("s1.safetensors", make_raw({{"a", "F32", {1}, ""}}));
  std::string s2 =
      write("s2.safetensors", make_raw({{"b", "F32", {1}, ""}, {"a", "F32", {1}, ""}}));
  write("model.safetensors.index.json",
        R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr("tensor 'a'"), HasSubstr(s1), HasSubstr(s2)));
}

TEST_F(SafetensorsTest, NameTwiceInTheIndex) {
  write("s1.safetensors", make_raw({{"a", "F32", {1}, ""}}));
  write("s2.safetensors", make_raw({{"b", "F32", {1}, ""}}));
  std::string index = write("model.safetensors.index.json",
                            R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors",
                                               "b": "s2.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(index), HasSubstr("'a' appears twice inside 'weight_map'")));
}

TEST_F(SafetensorsTest, ShardNamedInIndexButMissing) {
  write("model-00001-of-00002.safetensors", make_raw({{"a", "F32", {1}, ""}}));
  write("model.safetensors.index.json",
        R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                           "layers.1.w": "model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr((dir_ / "model-00002-of-00002.safetensors").string()),
                    HasSubstr("'layers.1.w'"), HasSubstr("does not exist")));
}

TEST_F(SafetensorsTest, IndexNamesTensorNotInItsShard) {
  std::string s1 = write("s1.safetensors", make_raw({{"a", "F32", {1}, ""}}));
  write("s2.safetensors", make_raw({{"b", "F32", {1}, ""}}));
  std::string index = write("model.safetensors.index.json",
                            R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors",
                                               "c": "s1.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(index), HasSubstr("tensor 'c'"), HasSubstr(s1),
                    HasSubstr("does not hold it")));
}

TEST_F(SafetensorsTest, BadIndex) {
  write("s1.safetensors", make_raw({{"a", "F32", {1}, ""}}));
  std::string index = write("model.safetensors.index.json", R"({"weight_map": {"a": )");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(index), HasSubstr("not valid JSON")));
  write("model.safetensors.index.json", R"([])");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(index), HasSubstr("not an object")));
  write("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }), HasSubstr("no \"weight_map\""));
  write("model.safetensors.index.json", R"({"weight_map": ["s1.safetensors"]})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              HasSubstr("\"weight_map\" is a JSON array, not an object"));
  write("model.safetensors.index.json", R"({"weight_map": {"a": 1}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              HasSubstr("weight_map entry 'a' is a JSON number, not a file name"));
  write("model.safetensors.index.json", R"({"weight_map": {"a": "../s1.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              HasSubstr("not a path inside the directory"));
  write("model.safetensors.index.json", R"({"weight_map": {"a": "/etc/passwd"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              HasSubstr("not a path inside the directory"));
}

TEST_F(SafetensorsTest, BadShardIsNamed) {
  std::string s1 = write("s1.safetensors", "\x02");
  write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(s1), HasSubstr("too short")));
}

TEST_F(SafetensorsTest, DirectoryWithoutCheckpoint) {
  write("config.json", "{}");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              AllOf(HasSubstr(dir()), HasSubstr("model.safetensors.index.json"),
                    HasSubstr("model.safetensors"), HasSubstr("*.safetensors")));
  std::string missing = (dir_ / "nope").string();
  EXPECT_THAT(error_of([&] { Checkpoint::open(missing); }),
              AllOf(HasSubstr(missing), HasSubstr("not a directory")));
}

TEST_F(SafetensorsTest, MissingTensor) {
  write("model.safetensors", make_raw({{"model.layers.0.self_attn.q_proj.weight", "BF16", {2}, ""},
                                       {"model.norm.weight", "BF16", {2}, ""}}));
  Checkpoint ck = Checkpoint::open(dir());
  EXPECT_THAT(error_of([&] { ck.get("model.layers.0.self_attn.q_proj.wieght"); }),
              AllOf(HasSubstr("'model.layers.0.self_attn.q_proj.wieght'"), HasSubstr(dir()),
                    HasSubstr("did you mean 'model.layers.0.self_attn.q_proj.weight'")));
  EXPECT_THAT(error_of([&] { ck.get("norm.weight"); }),
              HasSubstr("did you mean 'model.norm.weight'"));
  std::string msg = error_of([&] { ck.entry("lm_head.weight"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("'lm_head.weight'"), HasSubstr(dir())));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("did you mean")));
  EXPECT_THAT(error_of([&] { ck.file_of("x"); }), HasSubstr("'x'"));
}

}  // namespace
