// The ABI function table of an in-tree plugin, written once over the
// backend's traits B.  A plugin's glue file defines B and ends with
//   MOERT_KIT_PLUGIN(CpuBackend)
// which exports moert_backend_entry().  Besides the members the buffer and
// executable parts use (kit/buffers.h, kit/executable.h), B supplies:
//   static constexpr const char* kName, kVersion
//   static void init()                 throws; MOERT_ERR_NO_DEVICE: nothing to run on
//   static void shutdown()
//   static int32_t device_count()
//   static Device& device(int32_t)     throws for an index out of range
//   static void describe(Device&, DeviceDescription&)
// Its extensions (get_extension: diagnostics, the hooks of its tests) are
// registered next to their functions (kit/extension.h).
#pragma once

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "kit/buffers.h"
#include "kit/device.h"
#include "kit/executable.h"
#include "kit/extension.h"
#include "kit/kernel.h"

namespace moert::kit {

template <class B>
struct Plugin {
  using Device = typename B::Device;

  static moert_status init(moert_error* err) {
    return plugin::guarded(err, [] { B::init(); });
  }
  static void shutdown() { B::shutdown(); }
  static int32_t device_count() { return B::device_count(); }

  static moert_status device_info(int32_t index, moert_device_info* info, moert_error* err) {
    return plugin::guarded(err, [&] {
      DeviceDescription d;
      B::describe(B::device(index), d);
      const size_t size = info->struct_size;
      std::memset(info, 0, size);
      info->struct_size = size;
      std::snprintf(info->name, sizeof(info->name), "%s", d.name.c_str());
      info->kind = d.kind;
      info->total_memory = d.total_memory;
      info->free_memory = d.free_memory;
      if (MOERT_ABI_HAS_MEMBER(info, moert_device_info, capabilities)) {
        const std::string caps = (d.capabilities.empty() ? "" : d.capabilities + ", ") +
                                 "ops=" + KernelTable<B>::coverage();
        std::snprintf(info->capabilities, sizeof(info->capabilities), "%s", caps.c_str());
      }
    });
  }

  static moert_status supports_node(int32_t index, const moert_graph_desc* g, size_t node_index,
                                    int32_t* supported, moert_error* err) {
    return plugin::guarded(err, [&] {
      *supported = 0;
      const Device& d = B::device(index);
      plugin::require(node_index < g->num_nodes, "node index out of range");
      const std::string reason = unsupported_reason<B>(*g, node_index, &d);
      if (reason.empty())
        *supported = 1;
      else
        plugin::report(err, MOERT_OK, reason);
    });
  }

  static moert_status prepare(int32_t index, const moert_graph_desc* g, moert_executable* out,
                              moert_error* err) {
    return plugin::guarded(err, [&] {
      *out = nullptr;
      *out = std::make_unique<Executable<B>>(B::device(index), *g).release();
    });
  }

  static void executable_free(moert_executable exe) { delete exe; }

  static moert_status execute(moert_executable exe, const moert_execute_args* args,
                              moert_error* err) {
    return plugin::guarded(err, [&] { static_cast<Executable<B>*>(exe)->execute(*args); });
  }

  static moert_status synchronize(int32_t index, moert_error* err) {
    return plugin::guarded(err, [&] { B::finish(B::device(index)); });
  }

  static moert_extension_fn get_extension(const char* name) {
    return name ? Extensions<B>::find(name) : nullptr;
  }

  static const moert_backend_api* api() {
    static const moert_backend_api table = {
        sizeof(moert_backend_api),
        MOERT_ABI_MAJOR,
        MOERT_ABI_MINOR,
        B::kName,
        B::kVersion,
        init,
        shutdown,
        device_count,
        device_info,
        Buffers<B>::alloc,
        Buffers<B>::free,
        Buffers<B>::write,
        Buffers<B>::read,
        Buffers<B>::copy,
        supports_node,
        prepare,
        executable_free,
        execute,
        synchronize,
        get_extension,
    };
    return &table;
  }
};

}  // namespace moert::kit

// Exports the plugin's entry point for traits struct B.
#define MOERT_KIT_PLUGIN(B)                                                                    \
  extern "C" MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t major, \
                                                                               uint32_t) {     \
    return major == MOERT_ABI_MAJOR ? moert::kit::Plugin<B>::api() : nullptr;                  \
  }
