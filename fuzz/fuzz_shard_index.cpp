// Fuzz target: model.safetensors.index.json, as Checkpoint::open reads a
// sharded checkpoint directory (runtime/include/moert/safetensors.h).
//
// The input is the index file's text.  A scratch directory made once per
// process holds what an index can point at:
//   model-00001-of-00002.safetensors   model.embed_tokens.weight F32[2, 2],
//                                      model.norm.weight BF16[2]
//   model-00002-of-00002.safetensors   lm_head.weight F16[2, 2],
//                                      model.layers.0.mlp.gate.weight I8[3]
//   sub/model-00003-of-00003.safetensors  extra U8[4] (a shard in a subdirectory)
//   dup.safetensors                    model.norm.weight again (a duplicate)
//   empty.safetensors                  no tensors
//   broken.safetensors                 not a safetensors file
//   dir.safetensors/                   a directory
//   link.safetensors                   a symlink to the first shard
//   dangling.safetensors               a symlink to nothing
// A checkpoint that opens must keep the index's promises: every name it
// lists is readable from the shard the index names, with the bytes of that
// shard's entry; a name it does not hold is refused with moert::Error (whose
// suggestions walk every name).
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "json_mutator.h"
#include "moert/safetensors.h"

namespace {

namespace fs = std::filesystem;
using moert_fuzz::guarded;
using moert_fuzz::require;

volatile uint64_t g_sink = 0;

struct Spec {
  const char* name;
  const char* dtype;
  const char* shape;
  size_t bytes;
};

std::string shard(const std::vector<Spec>& specs) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const Spec& s : specs) {
    const size_t begin = data.size();
    for (size_t i = 0; i < s.bytes; ++i) data += static_cast<char>((begin + i) * 7 + 1);
    header += ",\"" + std::string(s.name) + "\":{\"dtype\":\"" + s.dtype +
              "\",\"shape\":" + s.shape + ",\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(data.size()) + "]}";
  }
  return moert_fuzz::safetensors_bytes(header + "}", data);
}

fs::path make_directory() {
  fs::path dir = moert_fuzz::scratch_directory("shard-index");
  moert_fuzz::write_file(dir / "model-00001-of-00002.safetensors",
                         shard({{"model.embed_tokens.weight", "F32", "[2,2]", 16},
                                {"model.norm.weight", "BF16", "[2]", 4}}));
  moert_fuzz::write_file(dir / "model-00002-of-00002.safetensors",
                         shard({{"lm_head.weight", "F16", "[2,2]", 8},
                                {"model.layers.0.mlp.gate.weight", "I8", "[3]", 3}}));
  fs::create_directories(dir / "sub");
  moert_fuzz::write_file(dir / "sub" / "model-00003-of-00003.safetensors",
                         shard({{"extra", "U8", "[4]", 4}}));
  moert_fuzz::write_file(dir / "dup.safetensors", shard({{"model.norm.weight", "BF16", "[2]", 4}}));
  moert_fuzz::write_file(dir / "empty.safetensors", shard({}));
  moert_fuzz::write_file(dir / "broken.safetensors", std::string("\xff\xff\xff\xff not json"));
  fs::create_directories(dir / "dir.safetensors");
  fs::create_symlink("model-00001-of-00002.safetensors", dir / "link.safetensors");
  fs::create_symlink("nowhere", dir / "dangling.safetensors");
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dir = make_directory();
  moert_fuzz::write_file(dir / "model.safetensors.index.json", data, size);

  guarded("Checkpoint::open", [&] {
    moert::Checkpoint ck = moert::Checkpoint::open(dir.string());
    uint64_t total = 0;
    const std::vector<std::string> names = ck.names();
    for (const std::string& name : names) {
      require(ck.has(name), "has() denies listed tensor '" + name + "'");
      const moert::SafetensorsEntry& e = ck.entry(name);
      const std::string& file = ck.file_of(name);
      bool from_a_file = false;
      for (const auto& f : ck.files()) {
        if (f->path() != file) continue;
        from_a_file = true;
        require(f->has(name), "tensor '" + name + "' is not in the file it is said to be in");
      }
      require(from_a_file, "tensor '" + name + "' comes from a file the checkpoint did not open");
      moert::Tensor t = ck.get(name);
      require(t.nbytes() == e.end - e.begin, "tensor '" + name + "' has the wrong size");
      const auto* p = static_cast<const unsigned char*>(t.data());
      for (size_t i = 0; i < t.nbytes(); ++i) g_sink = g_sink + p[i];
      total += e.end - e.begin;
    }
    require(total == ck.total_bytes(), "total_bytes() is not the sum of the tensors' bytes");
    // Names the checkpoint does not hold: typos of listed ones (the error
    // suggests them) and one far from every name.  Lookups use names of the
    // length the decoder builder asks for.
    std::vector<std::string> missing = {"model.norm.weigth", "\x01"};
    if (!names.empty() && names.front().size() < 256) missing.push_back(names.front() + "x");
    for (const std::string& name : missing) {
      if (ck.has(name)) continue;
      bool refused = false;
      try {
        (void)ck.get(name);
      } catch (const moert::Error&) {
        refused = true;
      }
      require(refused, "get() of a missing name did not throw moert::Error");
    }
  });
  return 0;
}

// Half of the mutations edit the JSON document (json_mutator.h).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return moert_fuzz::mutate_json_input(data, size, max_size, seed);
}
