// Fuzz target: one safetensors file, as SafetensorsFile::open maps and
// validates it (runtime/include/moert/safetensors.h).
//
// Every input is tried twice, through an in-memory file (memfd) opened by
// path:
//  1. as the whole file, bytes as given (the 8-byte header length included);
//  2. framed: the bytes before the first NUL are the header JSON and the
//     bytes after it the data section; the file gets the matching header
//     length, so that mutations of the JSON keep reaching the parser instead
//     of tripping the length check.
// A file that opens must keep the promises of the header's contract: every
// tensor lies inside the data section and holds exactly shape × itemsize
// bytes, all of which are read here (the sum defeats the optimiser), along
// with each element through load_element, from memory aligned to the item
// size (a tensor the writer left unaligned comes as an aligned copy).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "json_mutator.h"
#include "moert/safetensors.h"
#include "moert/tensor.h"

namespace {

using moert_fuzz::guarded;
using moert_fuzz::require;

volatile uint64_t g_sink = 0;

void open_and_read(const moert_fuzz::MemFile& file, std::string_view bytes) {
  file.write(bytes.data(), bytes.size());
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0 && bytes.size() >= 8; --i)
    header_bytes = (header_bytes << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);

  guarded("SafetensorsFile::open", [&] {
    auto f = moert::SafetensorsFile::open(file.path());
    require(f->file_size() == bytes.size(), "file_size() is not the file's size");
    const uint64_t data_offset = 8 + header_bytes;
    require(data_offset <= bytes.size(), "a file opened whose header runs past its end");
    const unsigned char* data_section =
        reinterpret_cast<const unsigned char*>(bytes.data()) + data_offset;
    for (const auto& [key, value] : f->metadata()) g_sink = g_sink + key.size() + value.size();
    for (const auto& [name, e] : f->entries()) {
      require(e.name == name, "entry '" + name + "' carries another name");
      require(e.begin <= e.end && e.end <= bytes.size() - data_offset,
              "tensor '" + name + "' lies outside the data section");
      require(f->has(name), "has() denies tensor '" + name + "'");
      moert::Tensor t = f->tensor(name);
      require(t.dtype() == e.dtype && t.shape() == e.shape,
              "tensor '" + name + "' differs from its entry");
      require(t.nbytes() == e.end - e.begin,
              "tensor '" + name + "' holds " + std::to_string(e.end - e.begin) +
                  " bytes but its shape needs " + std::to_string(t.nbytes()));
      require(t.nbytes() == 0 || std::memcmp(t.data(), data_section + e.begin, t.nbytes()) == 0,
              "tensor '" + name + "' does not hold its own bytes");
      require(reinterpret_cast<uintptr_t>(t.data()) % moert::dtype_size(t.dtype()) == 0,
              "tensor '" + name + "' is not aligned to its item size");
      const auto* p = static_cast<const unsigned char*>(t.data());
      uint64_t sum = 0;
      for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      const int64_t n = t.numel();
      for (int64_t i = 0; i < n && i < 4096; ++i) {
        double v = t.at(static_cast<size_t>(i));
        sum += v == v ? 1 : 0;
      }
      g_sink = g_sink + sum + t.describe().size();
      require(moert::dtype_from_safetensors(moert::dtype_to_safetensors(e.dtype)) == e.dtype,
              "dtype names do not round-trip");
    }
    // A name the file does not hold is refused with moert::Error.
    bool refused = false;
    try {
      (void)f->tensor("\x01 not a tensor");
    } catch (const moert::Error&) {
      refused = true;
    }
    require(refused, "tensor() of a missing name did not throw moert::Error");
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moert_fuzz::MemFile file("moert-fuzz-safetensors");
  std::string_view input(reinterpret_cast<const char*>(data), size);
  open_and_read(file, input);

  const size_t nul = input.find('\0');
  if (nul != std::string_view::npos) {
    std::string framed =
        moert_fuzz::safetensors_bytes(std::string(input.substr(0, nul)), input.substr(nul + 1));
    open_and_read(file, framed);
  }
  return 0;
}

// Half of the mutations edit the header JSON (json_mutator.h) and keep the
// data: in a framed input the part before the first NUL, in a whole file
// the header the length prefix delimits (the prefix is rewritten to match).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  if (seed % 2 == 0) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    uint64_t n = 0;
    for (int i = 7; i >= 0 && size >= 8; --i) n = (n << 8) | data[i];
    std::string out;
    if (size > 8 && n > 0 && n <= size - 8 && input[8] == '{') {
      std::string header(input.substr(8, n));
      if (moert_fuzz::mutate_json(header, seed))
        out = moert_fuzz::safetensors_bytes(header, input.substr(8 + n));
    } else if (const size_t nul = input.find('\0'); nul != std::string_view::npos) {
      std::string header(input.substr(0, nul));
      if (moert_fuzz::mutate_json(header, seed))
        out = header + '\0' + std::string(input.substr(nul + 1));
    }
    if (!out.empty() && out.size() <= max_size) {
      std::memcpy(data, out.data(), out.size());
      return out.size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
