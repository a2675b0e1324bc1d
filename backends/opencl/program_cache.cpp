// Program builds and the on-disk binary cache (see program_cache.h).
#include "program_cache.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "device.h"

namespace moert::ocl {

namespace fs = std::filesystem;

namespace {

// Bumped when the cache file layout or the meaning of a key changes.
constexpr char kCacheFormat[] = "moert-opencl-cache-2";
constexpr char kMagic[8] = {'M', 'O', 'E', 'R', 'T', 'C', 'L', '1'};

uint64_t fnv1a(const std::string& s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// 128 bits from two FNV-1a passes with different offset bases: a cache key,
// not a security boundary (a colliding entry is still checked by the driver).
std::string cache_key(const Device& d, const std::string& source, const std::string& options) {
  std::string identity = kCacheFormat;
  for (const std::string* part : {&source, &options, &d.name(), &d.driver_version(),
                                  &d.device_version(), &d.platform_name()}) {
    identity.push_back('\0');
    identity += *part;
  }
  return hex64(fnv1a(identity, 0xcbf29ce484222325ull)) +
         hex64(fnv1a(identity, 0x84222325cbf29ce4ull));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string build_log(cl_program p, cl_device_id d) {
  size_t size = 0;
  if (clGetProgramBuildInfo(p, d, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size) != CL_SUCCESS)
    return "(no build log)";
  std::string log(size, '\0');
  clGetProgramBuildInfo(p, d, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n' || log.back() == ' '))
    log.pop_back();
  return log.empty() ? "(empty build log)" : log;
}

std::vector<unsigned char> program_binary(cl_program p) {
  size_t size = 0;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof(size), &size, nullptr) != CL_SUCCESS ||
      size == 0)
    return {};
  std::vector<unsigned char> bin(size);
  unsigned char* ptr = bin.data();
  if (clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof(ptr), &ptr, nullptr) != CL_SUCCESS) return {};
  return bin;
}

std::vector<unsigned char> read_entry(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  char magic[sizeof(kMagic)];
  uint64_t size = 0;
  if (!in.read(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) return {};
  if (!in.read(reinterpret_cast<char*>(&size), sizeof(size)) || size == 0 || size > (1ull << 30))
    return {};
  std::vector<unsigned char> bin(size);
  if (!in.read(reinterpret_cast<char*>(bin.data()), static_cast<std::streamsize>(size))) return {};
  return bin;
}

// Writes atomically (a temporary file renamed into place), so a concurrent
// reader never sees half an entry.  Failures are ignored: the cache is an
// optimisation.
bool write_entry(const fs::path& path, const std::vector<unsigned char>& bin) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    const uint64_t size = bin.size();
    out.write(kMagic, sizeof(kMagic));
    out.write(reinterpret_cast<const char*>(&size), sizeof(size));
    out.write(reinterpret_cast<const char*>(bin.data()), static_cast<std::streamsize>(size));
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      return false;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
  return !ec;
}

cl_program load_binary(Device& d, const std::vector<unsigned char>& bin,
                       const std::string& options) {
  const size_t size = bin.size();
  const unsigned char* ptr = bin.data();
  cl_device_id id = d.id();
  cl_int binary_status = CL_SUCCESS, status = CL_SUCCESS;
  cl_program p =
      clCreateProgramWithBinary(d.context(), 1, &id, &size, &ptr, &binary_status, &status);
  if (status != CL_SUCCESS || binary_status != CL_SUCCESS) {
    if (p) clReleaseProgram(p);
    return nullptr;
  }
  if (clBuildProgram(p, 1, &id, options.c_str(), nullptr, nullptr) != CL_SUCCESS) {
    clReleaseProgram(p);
    return nullptr;
  }
  return p;
}

}  // namespace

CacheStats& cache_stats() {
  static CacheStats stats;
  return stats;
}

std::string cache_directory() {
  if (const char* dir = std::getenv("MOERT_OPENCL_CACHE")) {
    const std::string s = dir;
    return s == "off" ? "" : s;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return (fs::path(xdg) / "moert" / "opencl").string();
  if (const char* home = std::getenv("HOME"); home && *home)
    return (fs::path(home) / ".cache" / "moert" / "opencl").string();
  return "";
}

cl_program build_program_from_source(Device& d, const std::string& label, const std::string& source,
                                     const std::string& options) {
  const auto start = std::chrono::steady_clock::now();
  const char* text = source.c_str();
  const size_t length = source.size();
  cl_int status = CL_SUCCESS;
  cl_program p = clCreateProgramWithSource(d.context(), 1, &text, &length, &status);
  check_cl(status, "creating the OpenCL program " + label);
  cl_device_id id = d.id();
  status = clBuildProgram(p, 1, &id, options.c_str(), nullptr, nullptr);
  cache_stats().build_seconds += seconds_since(start);
  cache_stats().source_builds++;
  if (status != CL_SUCCESS) {
    const std::string log = build_log(p, id);
    clReleaseProgram(p);
    plugin::fail("building the OpenCL program " + label + " for '" + d.name() + "' failed (" +
                     cl_status_name(status) + "), build log:\n" + log,
                 MOERT_ERR_DEVICE);
  }
  return p;
}

cl_program build_program(Device& d, const std::string& label, const std::string& source,
                         const std::string& options) {
  const std::string dir = cache_directory();
  fs::path entry;
  if (!dir.empty()) {
    std::string stem = label;
    if (const size_t dot = stem.rfind('.'); dot != std::string::npos) stem.resize(dot);
    entry = fs::path(dir) / (stem + "-" + cache_key(d, source, options) + ".bin");
    const std::vector<unsigned char> bin = read_entry(entry);
    if (!bin.empty()) {
      const auto start = std::chrono::steady_clock::now();
      cl_program p = load_binary(d, bin, options);
      cache_stats().build_seconds += seconds_since(start);
      if (p) {
        cache_stats().binary_loads++;
        return p;
      }
    }
  }
  cl_program p = build_program_from_source(d, label, source, options);
  if (!entry.empty()) {
    const std::vector<unsigned char> bin = program_binary(p);
    if (!bin.empty() && write_entry(entry, bin)) cache_stats().cache_writes++;
  }
  return p;
}

}  // namespace moert::ocl
