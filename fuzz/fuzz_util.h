// What every moert fuzz target shares: the outcome contract and scratch
// files.
//
// The contract: code under test may refuse an input only with moert::Error
// (a clear message naming the file, tensor or field).  Any other exception
// escaping it — std::bad_alloc or std::length_error from a size taken from
// the input, a nlohmann::json exception, anything else — is a finding, and so
// is a crash, a sanitizer report or a hang.  guarded() turns such an
// exception into an abort with its type and message, which libFuzzer reports
// as a crash and saves the input of.
#pragma once

#include <cxxabi.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>

#include "moert/error.h"

namespace moert_fuzz {

// The demangled type of the exception being handled.
inline std::string current_exception_type() {
  std::type_info* t = abi::__cxa_current_exception_type();
  if (!t) return "unknown";
  int status = 0;
  char* name = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : t->name();
  std::free(name);
  return out;
}

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\n==moert-fuzz== FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs `fn`; returns true when it finished, false when it threw moert::Error
// (an expected refusal, printed when MOERT_FUZZ_VERBOSE is set, to see how
// far a seed gets); aborts on any other exception.
template <typename Fn>
bool guarded(const char* stage, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const moert::Error& e) {
    static const bool verbose = std::getenv("MOERT_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "moert-fuzz: %s refused: %s\n", stage, e.what());
    return false;
  } catch (const std::bad_alloc& e) {
    finding(std::string(stage) + ": " + current_exception_type() + " (" + e.what() +
            "): a size taken from the input was allocated instead of refused with moert::Error");
  } catch (const std::exception& e) {
    finding(std::string(stage) + ": uncaught " + current_exception_type() + ": " + e.what());
  } catch (...) {
    finding(std::string(stage) + ": uncaught exception of type " + current_exception_type());
  }
}

// Aborts with `what` unless `condition` holds: an invariant of a successful
// result.
inline void require(bool condition, const std::string& what) {
  if (!condition) finding("invariant violated: " + what);
}

// An anonymous in-memory file reused for every input, reachable by path as
// /proc/self/fd/N so that code opening a path reads it.
class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = ::memfd_create(name, MFD_CLOEXEC);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  // Replaces the contents with `size` bytes at `data`.
  void write(const void* data, size_t size) const {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    const char* p = static_cast<const char*>(data);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A directory private to this process (tmpfs when there is one), removed at
// exit.
inline std::filesystem::path scratch_directory(const char* tag) {
  const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/moert-fuzz-" + tag + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    std::abort();
  }
  static std::string dir;
  dir = tmpl;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  });
  return dir;
}

// Writes `size` bytes to `path`, replacing it.
inline void write_file(const std::filesystem::path& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::abort();
  }
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

inline void write_file(const std::filesystem::path& path, std::string_view text) {
  write_file(path, text.data(), text.size());
}

// A safetensors file of `header` (the JSON text) and `data`: the 8-byte
// little-endian header length, the header padded with spaces to a multiple
// of 8 as the reference writer pads it, then the data section.
inline std::string safetensors_bytes(std::string header, std::string_view data) {
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += header;
  out.append(data.data(), data.size());
  return out;
}

}  // namespace moert_fuzz
