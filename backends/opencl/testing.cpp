// The plugin's extensions (moert_backend_api::get_extension): what the ABI
// does not expose (a program build outside the cache, the cache counters, the
// capabilities, the kernel table), for the backend's own tests
// (tests/unit/test_opencl_backend.cpp) and diagnostics.
#include <cstdio>
#include <cstring>

#include "kernel.h"
#include "kit/plugin.h"
#include "program_cache.h"

namespace {

using Registration = moert::kit::ExtensionRegistration<moert::ocl::Backend>;

int write_text(const std::string& text, char* out, size_t capacity) {
  if (out && capacity) std::snprintf(out, capacity, "%s", text.c_str());
  return 0;
}

// Builds `source` (after common.cl) for device `device` with its usual
// options, bypassing the cache.  Returns a moert_status; on failure `message`
// holds the error, compiler log included.
int moert_opencl_testing_build(int32_t device, const char* source, char* message, size_t capacity) {
  moert_error err{};
  err.struct_size = sizeof(err);
  const moert_status status = moert::plugin::guarded(&err, [&] {
    moert::ocl::Device& d = moert::ocl::device(device);
    cl_program p =
        moert::ocl::build_program_from_source(d, "testing.cl", source, d.build_options());
    clReleaseProgram(p);
  });
  write_text(err.message, message, capacity);
  return status;
}
const Registration build_reg("moert_opencl_testing_build", moert_opencl_testing_build);

// The program cache counters of this process.
void moert_opencl_testing_cache_stats(int64_t* source_builds, int64_t* binary_loads,
                                      int64_t* cache_writes, double* build_seconds) {
  const moert::ocl::CacheStats& s = moert::ocl::cache_stats();
  *source_builds = s.source_builds;
  *binary_loads = s.binary_loads;
  *cache_writes = s.cache_writes;
  *build_seconds = s.build_seconds;
}
const Registration cache_stats_reg("moert_opencl_testing_cache_stats",
                                   moert_opencl_testing_cache_stats);

// The cache directory in use ("" when off).
int moert_opencl_testing_cache_directory(char* out, size_t capacity) {
  return write_text(moert::ocl::cache_directory(), out, capacity);
}
const Registration cache_directory_reg("moert_opencl_testing_cache_directory",
                                       moert_opencl_testing_cache_directory);

// Device `device`'s capability summary and kernel style, or a message.
int moert_opencl_testing_capabilities(int32_t device, char* out, size_t capacity) {
  moert_error err{};
  err.struct_size = sizeof(err);
  std::string text;
  const moert_status status = moert::plugin::guarded(&err, [&] {
    const moert::ocl::Device& d = moert::ocl::device(device);
    text = d.caps().summary() + "; kernel style " +
           (d.style() == moert::ocl::KernelStyle::cpu ? "cpu" : "gpu");
  });
  write_text(status == MOERT_OK ? text : err.message, out, capacity);
  return status;
}
const Registration capabilities_reg("moert_opencl_testing_capabilities",
                                    moert_opencl_testing_capabilities);

// 1 when the backend has a kernel for `op`.
int moert_opencl_testing_has_kernel(const char* op) {
  return moert::kit::KernelTable<moert::ocl::Backend>::find(op) != nullptr ? 1 : 0;
}
const Registration has_kernel_reg("moert_opencl_testing_has_kernel",
                                  moert_opencl_testing_has_kernel);

}  // namespace
