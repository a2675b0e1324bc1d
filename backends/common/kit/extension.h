// A plugin's extensions: functions beyond the ABI that a caller finds by name
// through moert_backend_api::get_extension (1.3), e.g. the hooks of the
// backend's own tests.  Each is registered next to its definition:
//   const kit::ExtensionRegistration<Backend> reg("moert_cuda_testing_pool", testing_pool);
// The caller casts what it gets to the function's documented type.
#pragma once

#include <cstring>
#include <vector>

#include "moert/backend_abi.h"

namespace moert::kit {

template <class B>
class Extensions {
 public:
  template <typename F>
  static void add(const char* name, F* fn) {
    table().push_back({name, reinterpret_cast<moert_extension_fn>(fn)});
  }
  // The extension named `name`, or nullptr.
  static moert_extension_fn find(const char* name) {
    for (const Entry& e : table())
      if (std::strcmp(e.name, name) == 0) return e.fn;
    return nullptr;
  }

 private:
  struct Entry {
    const char* name;
    moert_extension_fn fn;
  };
  static std::vector<Entry>& table() {
    static std::vector<Entry> entries;
    return entries;
  }
};

template <class B>
struct ExtensionRegistration {
  template <typename F>
  ExtensionRegistration(const char* name, F* fn) {
    Extensions<B>::add(name, fn);
  }
};

}  // namespace moert::kit
