// Building OpenCL programs, with an on-disk cache of program binaries.
//
// A program is keyed by a hash of its source, its build options, and the
// device's name, driver and OpenCL versions; the binary the driver returns
// after a source build is stored under that key in the cache directory:
//   $MOERT_OPENCL_CACHE if set (empty or "off" disables the cache),
//   else $XDG_CACHE_HOME/moert/opencl, else ~/.cache/moert/opencl.
// A later build (in any process) loads the binary instead of compiling the
// source.  A missing, unreadable or rejected cache entry falls back to the
// source build; a cache directory that cannot be written is not an error.
#pragma once

#include <CL/cl.h>

#include <cstdint>
#include <string>

namespace moert::ocl {

class Device;

// Counters over the life of the process (for tests and diagnostics).
struct CacheStats {
  int64_t source_builds = 0;  // programs compiled from source
  int64_t binary_loads = 0;   // programs loaded from the disk cache
  int64_t cache_writes = 0;   // binaries stored
  double build_seconds = 0;   // wall time in clBuildProgram, both kinds
};
CacheStats& cache_stats();

// The cache directory, or "" when caching is off.
std::string cache_directory();

// Builds `source` with `options` for `device`, through the cache.  `label`
// names the program in messages ("softmax.cl").  A compile error throws a
// plugin::Failure whose message carries the compiler's build log.
cl_program build_program(Device& device, const std::string& label, const std::string& source,
                         const std::string& options);

// Builds from source only, bypassing the cache (used by the tests to check
// how a broken kernel is reported).
cl_program build_program_from_source(Device& device, const std::string& label,
                                     const std::string& source, const std::string& options);

}  // namespace moert::ocl
