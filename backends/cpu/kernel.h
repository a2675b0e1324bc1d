// The CPU backend's kernel interface: the plugin kit's (backends/common/kit)
// over host memory.  Each op family is a file of ops/ (named as in the
// runtime's ops/) that registers a
// KernelDef: a check (can this node, with these dtypes, shapes and
// attributes, run here?) and a factory that builds the node's Kernel at
// prepare time, when it may read and pre-pack constant inputs (weights).
// At execute, Kernel::run() sees every input and output bound to host memory
// with its shape resolved for this call's T and P.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kit/host.h"
#include "kit/kernel.h"
#include "plugin_support.h"

namespace moert::cpu {

using namespace kit::names;

// The host: one device, "cpu:0".  Kernels share the OpenMP pool.
struct Device {};

// The CPU backend as the kit sees it (cpu_plugin.cpp defines the functions).
struct Backend : kit::HostMemory<Device> {
  static constexpr const char* kName = "cpu";
  static constexpr const char* kVersion = "oneDNN " MOERT_CPU_DNNL_VERSION;
  static void init();
  static void describe(Device&, kit::DeviceDescription& d);
  // An execute's nodes, on the calling thread's OpenMP pool sized to
  // MOERT_CPU_THREADS first when it is set: the size is a per-thread
  // setting, and models may run from threads other than the one that
  // initialised the plugin (a server's engine thread).
  template <typename Exe, typename Symbols>
  static void execute(Exe& e, const moert_execute_args& args, const Symbols& symbols,
                      double* times) {
    apply_thread_count();
    if (times) finish(*e.device);
    e.run_steps(args, symbols, 0, e.steps.size(), times);
  }
  static void apply_thread_count();
};

using Tensor = kit::HostTensor;
MOERT_KIT_KERNEL_NAMES(Backend)

}  // namespace moert::cpu
