// Finding and loading backends.
//
// The reference backend is built in and always present.  Plugins are shared
// libraries named libmoert_backend_<name>.so, searched for in the directory
// that holds libmoert itself and then in every directory (or file) listed in
// MOERT_BACKEND_PATH (colon-separated).  A plugin that cannot be loaded — no
// entry point, wrong ABI major version, a duplicate name — is recorded in
// failures() with the file and the reason, and the others still load.  A
// plugin whose init() fails is listed in backends() as unavailable, with the
// reason.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "moert/backend_abi.h"

namespace moert {

struct DeviceInfo {
  std::string name;
  moert_device_kind kind = MOERT_DEVICE_OTHER;
  uint64_t total_memory = 0;
  uint64_t free_memory = 0;
  std::string capabilities;  // ABI 1.2; empty for older plugins
};
std::string device_kind_name(moert_device_kind kind);  // "cpu", "gpu", …

// Throws moert::Error("<context>: <status name>: <plugin message>") unless
// status is MOERT_OK.
void check_status(moert_status status, const moert_error& err, const std::string& context);
std::string status_name(moert_status status);  // "out of memory", …

// One loaded backend: its function table and the library that holds it.
class Backend {
 public:
  Backend(std::string path, void* library, const moert_backend_api* api);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }  // "(built-in)" for the reference backend
  // The function table, for its fields; calls go through call().
  const moert_backend_api& api() const { return *api_; }

  // The function table behind the backend's call lock, held until the end of
  // the full expression: backend->call()->execute(...).  The ABI promises a
  // plugin is never called from two threads at once (backend_abi.h), while
  // models on one backend may run in several threads; every call the runtime
  // makes into a plugin goes through here.
  class Call {
   public:
    explicit Call(const Backend& b) : lock_(b.call_mutex_), api_(b.api_) {}
    const moert_backend_api* operator->() const { return api_; }

   private:
    std::unique_lock<std::recursive_mutex> lock_;
    const moert_backend_api* api_;
  };
  Call call() const { return Call(*this); }
  uint32_t abi_minor() const { return api_->abi_minor; }

  // False when init() reported no usable device (the reason says why).
  bool available() const { return available_; }
  const std::string& unavailable_reason() const { return unavailable_reason_; }
  int32_t device_count() const;
  DeviceInfo device_info(int32_t device) const;

  // Runs init(); called once by the registry.
  void initialize();

 private:
  std::string path_;
  std::string name_;
  void* library_;  // dlopen handle, nullptr for a built-in backend
  const moert_backend_api* api_;
  // Serialises the calls into the plugin (see call()).  Recursive so that a
  // call made while one is in progress on the same thread cannot deadlock.
  mutable std::recursive_mutex call_mutex_;
  bool available_ = false;
  bool initialized_ = false;
  std::string unavailable_reason_;
};

struct PluginLoadFailure {
  std::string path;
  std::string reason;
  std::string str() const { return path + ": " + reason; }
};

// A backend and one of its devices, e.g. "cuda:1".
struct DeviceRef {
  Backend* backend = nullptr;
  int32_t device = 0;
  std::string str() const;
};

class BackendRegistry {
 public:
  // The process-wide registry: built-in reference backend + default search.
  static BackendRegistry& global();

  // search_paths: directories or plugin files to load, in order.  With
  // use_default_paths, the directory of libmoert and MOERT_BACKEND_PATH are
  // searched after them.
  explicit BackendRegistry(std::vector<std::string> search_paths = {},
                           bool use_default_paths = true);
  ~BackendRegistry();

  // Loads one plugin file.  On failure records it (see failures()) and
  // returns nullptr; never throws for a bad plugin.
  Backend* load_plugin(const std::string& path);

  const std::vector<std::unique_ptr<Backend>>& backends() const { return backends_; }
  const std::vector<PluginLoadFailure>& failures() const { return failures_; }
  // Every directory and file entry that was searched (missing ones too), for messages.
  const std::vector<std::string>& searched() const { return searched_; }

  Backend* find(const std::string& name) const;  // nullptr if not loaded
  Backend& reference() const;

  // "cpu", "cpu:0", "cuda:1", "reference": throws moert::Error naming the
  // backends (and devices) that are available when the spec does not resolve.
  DeviceRef resolve(const std::string& spec) const;

  // One line per backend and per failure, for `moert info`.
  std::string describe() const;

 private:
  void search(const std::string& path);
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<PluginLoadFailure> failures_;
  std::vector<std::string> searched_;
};

// The built-in reference backend's function table (runtime/src/reference_backend.cpp).
const moert_backend_api* reference_backend_api();

}  // namespace moert
