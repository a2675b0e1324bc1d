#include "moert/backend_registry.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <system_error>

#include "moert/error.h"

namespace moert {

namespace {

namespace fs = std::filesystem;

// The size of the function table as ABI 1.0 defined it: every plugin of this
// major version has at least these members, and the runtime reads no others
// without MOERT_ABI_HAS_MEMBER.
constexpr size_t kApiV1Size =
    offsetof(moert_backend_api, synchronize) + sizeof(moert_backend_api::synchronize);
// The members that identify the table; they are read before anything else to
// give a "wrong major version" answer in preference to a size complaint.
constexpr size_t kApiHeaderSize =
    offsetof(moert_backend_api, abi_minor) + sizeof(moert_backend_api::abi_minor);

constexpr const char* kPluginPrefix = "libmoert_backend_";
constexpr const char* kPluginSuffix = ".so";

// A moert_error ready to be handed to a plugin.
moert_error make_error() {
  moert_error err;
  std::memset(&err, 0, sizeof(err));
  err.struct_size = sizeof(err);
  return err;
}

// The plugin's message, bounded even if it forgot the terminator.
std::string error_message(const moert_error& err) {
  return std::string(err.message, strnlen(err.message, sizeof(err.message)));
}

bool is_plugin_file_name(const std::string& name) {
  const std::string prefix = kPluginPrefix, suffix = kPluginSuffix;
  return name.size() > prefix.size() + suffix.size() && name.starts_with(prefix) &&
         name.ends_with(suffix);
}

// The names of required 1.0 members that the plugin left NULL.
std::vector<std::string> missing_functions(const moert_backend_api& api) {
  std::vector<std::string> missing;
  auto require = [&](bool present, const char* name) {
    if (!present) missing.emplace_back(name);
  };
  require(api.init != nullptr, "init");
  require(api.shutdown != nullptr, "shutdown");
  require(api.device_count != nullptr, "device_count");
  require(api.device_info != nullptr, "device_info");
  require(api.buffer_alloc != nullptr, "buffer_alloc");
  require(api.buffer_free != nullptr, "buffer_free");
  require(api.buffer_write != nullptr, "buffer_write");
  require(api.buffer_read != nullptr, "buffer_read");
  require(api.buffer_copy != nullptr, "buffer_copy");
  require(api.supports_node != nullptr, "supports_node");
  require(api.prepare != nullptr, "prepare");
  require(api.executable_free != nullptr, "executable_free");
  require(api.execute != nullptr, "execute");
  require(api.synchronize != nullptr, "synchronize");
  return missing;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string plural(int64_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

std::string format_bytes(uint64_t bytes) {
  std::ostringstream s;
  s.precision(3);
  if (bytes >= (uint64_t{1} << 30))
    s << static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << 30) << " GiB";
  else
    s << static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << 20) << " MiB";
  return s.str();
}

// A backend's origin in parentheses, for messages: "(/usr/lib/libmoert_backend_cpu.so)" or
// "(built-in)".
std::string parenthesized(const std::string& path) {
  return path.starts_with("(") ? path : "(" + path + ")";
}

// The directory holding libmoert: plugins installed beside the runtime are
// found without any configuration, in the build tree as once installed.
std::string runtime_library_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&runtime_library_dir), &info) == 0 ||
      info.dli_fname == nullptr)
    return {};
  fs::path dir = fs::path(info.dli_fname).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

}  // namespace

// ---------------------------------------------------------------------------

std::string device_kind_name(moert_device_kind kind) {
  switch (kind) {
    case MOERT_DEVICE_CPU:
      return "cpu";
    case MOERT_DEVICE_GPU:
      return "gpu";
    case MOERT_DEVICE_ACCELERATOR:
      return "accelerator";
    case MOERT_DEVICE_OTHER:
      return "other";
  }
  return "unknown device kind " + std::to_string(static_cast<int>(kind));
}

std::string status_name(moert_status status) {
  switch (status) {
    case MOERT_OK:
      return "ok";
    case MOERT_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case MOERT_ERR_UNSUPPORTED:
      return "unsupported";
    case MOERT_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case MOERT_ERR_DEVICE:
      return "device error";
    case MOERT_ERR_NO_DEVICE:
      return "no device";
    case MOERT_ERR_INTERNAL:
      return "internal error";
  }
  return "unknown status " + std::to_string(static_cast<int>(status));
}

void check_status(moert_status status, const moert_error& err, const std::string& context) {
  if (status == MOERT_OK) return;
  std::string message = context + ": " + status_name(status);
  std::string detail = error_message(err);
  if (!detail.empty()) message += ": " + detail;
  throw Error(message);
}

std::string DeviceRef::str() const {
  if (backend == nullptr) return "(no device)";
  return backend->name() + ":" + std::to_string(device);
}

// ---------------------------------------------------------------------------
// Backend

Backend::Backend(std::string path, void* library, const moert_backend_api* api)
    : path_(std::move(path)), library_(library), api_(api) {
  check(api_ != nullptr, path_ + ": backend has no function table");
  // Copied: the table's strings live in the library, which may be unloaded
  // before the last message naming the backend is printed.
  name_ = api_->name ? api_->name : "";
}

Backend::~Backend() {
  if (initialized_) api_->shutdown();
  if (library_ != nullptr) dlclose(library_);
}

void Backend::initialize() {
  if (initialized_ || !unavailable_reason_.empty()) return;  // init runs once
  moert_error err = make_error();
  moert_status status = api_->init(&err);
  if (status == MOERT_OK) {
    initialized_ = true;
    available_ = true;
    return;
  }
  // A failed init leaves nothing for shutdown() to undo: the plugin cleans up
  // after itself before returning an error.
  available_ = false;
  std::string message = error_message(err);
  if (status == MOERT_ERR_NO_DEVICE)
    unavailable_reason_ = message.empty() ? "no usable device" : message;
  else
    unavailable_reason_ = "init failed: " + (message.empty() ? status_name(status) : message);
}

int32_t Backend::device_count() const {
  if (!available_) return 0;
  return std::max<int32_t>(call()->device_count(), 0);
}

DeviceInfo Backend::device_info(int32_t device) const {
  int32_t count = device_count();
  check(device >= 0 && device < count, "device '" + name_ + ":" + std::to_string(device) + "'" +
                                           " does not exist: backend '" + name_ + "' has " +
                                           plural(count, "device") + " " + parenthesized(path_));
  moert_device_info raw;
  std::memset(&raw, 0, sizeof(raw));
  raw.struct_size = sizeof(raw);
  moert_error err = make_error();
  check_status(call()->device_info(device, &raw, &err), err,
               name_ + ":" + std::to_string(device) + ": device_info " + parenthesized(path_));
  DeviceInfo info;
  info.name = std::string(raw.name, strnlen(raw.name, sizeof(raw.name)));
  info.kind = raw.kind;
  info.total_memory = raw.total_memory;
  info.free_memory = raw.free_memory;
  info.capabilities =
      std::string(raw.capabilities, strnlen(raw.capabilities, sizeof(raw.capabilities)));
  return info;
}

// ---------------------------------------------------------------------------
// BackendRegistry

BackendRegistry& BackendRegistry::global() {
  static BackendRegistry registry;
  return registry;
}

BackendRegistry::BackendRegistry(std::vector<std::string> search_paths, bool use_default_paths) {
  backends_.push_back(std::make_unique<Backend>("(built-in)", nullptr, reference_backend_api()));
  backends_.back()->initialize();

  for (const std::string& path : search_paths) search(path);
  if (!use_default_paths) return;

  std::string own_dir = runtime_library_dir();
  if (!own_dir.empty()) search(own_dir);
  if (const char* env = std::getenv("MOERT_BACKEND_PATH")) {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      // Empty entries ("a::b", a trailing ':') are common in shell-built
      // lists and mean nothing.
      if (end > start) search(list.substr(start, end - start));
      start = end + 1;
    }
  }
}

BackendRegistry::~BackendRegistry() {
  // Reverse order of loading: a plugin loaded later may depend on state that
  // an earlier one set up (a shared driver, say).
  while (!backends_.empty()) backends_.pop_back();
}

void BackendRegistry::search(const std::string& path) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    searched_.push_back(path);
    failures_.push_back({path, "no such file or directory"});
    return;
  }
  if (!fs::is_directory(status)) {
    searched_.push_back(path);
    load_plugin(path);
    return;
  }
  // Searching one directory twice (MOERT_BACKEND_PATH naming libmoert's own
  // directory) would only report every plugin in it as a duplicate.
  fs::path canonical = fs::weakly_canonical(path, ec);
  for (const std::string& seen : searched_) {
    std::error_code seen_ec;
    if (!ec && fs::weakly_canonical(seen, seen_ec) == canonical && !seen_ec &&
        fs::is_directory(seen, seen_ec))
      return;
  }
  searched_.push_back(path);

  std::vector<std::string> files;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code file_ec;
    if (is_plugin_file_name(name) && !it->is_directory(file_ec)) files.push_back(name);
  }
  if (ec) {
    failures_.push_back({path, "cannot list directory: " + ec.message()});
    return;
  }
  std::sort(files.begin(), files.end());
  for (const std::string& name : files) load_plugin((fs::path(path) / name).string());
}

Backend* BackendRegistry::load_plugin(const std::string& path) {
  auto fail = [&](const std::string& reason) -> Backend* {
    failures_.push_back({path, reason});
    return nullptr;
  };

  dlerror();  // clear any stale message
  // RTLD_NODELETE: a plugin's runtime libraries (OpenMP, oneDNN, an OpenCL
  // driver) may keep worker threads alive past shutdown(); unmapping their
  // code under those threads at exit would crash the process.
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (library == nullptr) {
    const char* why = dlerror();
    return fail(std::string("dlopen failed: ") + (why ? why : "unknown error"));
  }
  // Every return below that does not hand the library to a Backend closes it.
  auto reject = [&](const std::string& reason) -> Backend* {
    dlclose(library);
    return fail(reason);
  };

  void* symbol = dlsym(library, MOERT_BACKEND_ENTRY_SYMBOL);
  if (symbol == nullptr)
    return reject(std::string("no entry point '") + MOERT_BACKEND_ENTRY_SYMBOL +
                  "' (not a moert backend?)");
  auto entry = reinterpret_cast<moert_backend_entry_fn>(symbol);

  const moert_backend_api* api = entry(MOERT_ABI_MAJOR, MOERT_ABI_MINOR);
  if (api == nullptr)
    return reject("plugin refused ABI " + std::to_string(MOERT_ABI_MAJOR) + "." +
                  std::to_string(MOERT_ABI_MINOR));

  auto too_small = [&]() {
    return reject("function table too small (" + std::to_string(api->struct_size) + " bytes; ABI " +
                  std::to_string(MOERT_ABI_MAJOR) + ".0 needs " + std::to_string(kApiV1Size) + ")");
  };
  if (api->struct_size < kApiHeaderSize) return too_small();
  if (api->abi_major != MOERT_ABI_MAJOR)
    return reject("ABI major version " + std::to_string(api->abi_major) + ", this runtime needs " +
                  std::to_string(MOERT_ABI_MAJOR));
  if (api->struct_size < kApiV1Size) return too_small();

  if (api->name == nullptr || api->name[0] == '\0') return reject("the plugin has no name");
  // Devices are written "<name>:<index>", so a name with a colon (or a space,
  // which no command line keeps intact) could never be selected.
  if (std::strpbrk(api->name, ": \t\n") != nullptr)
    return reject(std::string("invalid backend name '") + api->name +
                  "' (no ':' or whitespace allowed)");
  std::vector<std::string> missing = missing_functions(*api);
  if (!missing.empty()) return reject("missing required functions: " + join(missing, ", "));

  if (Backend* existing = find(api->name))
    return reject(std::string("duplicate backend '") + api->name + "' (already loaded from " +
                  existing->path() + ")");

  backends_.push_back(std::make_unique<Backend>(path, library, api));
  Backend* backend = backends_.back().get();
  backend->initialize();
  return backend;
}

Backend* BackendRegistry::find(const std::string& name) const {
  for (const auto& backend : backends_)
    if (backend->name() == name) return backend.get();
  return nullptr;
}

Backend& BackendRegistry::reference() const { return *backends_.front(); }

DeviceRef BackendRegistry::resolve(const std::string& spec) const {
  std::string name = spec;
  int32_t device = 0;
  if (size_t colon = spec.find(':'); colon != std::string::npos) {
    name = spec.substr(0, colon);
    std::string index = spec.substr(colon + 1);
    bool digits =
        !index.empty() && index.size() <= 9 &&
        std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; });
    check(digits, "invalid device '" + spec +
                      "': expected <backend> or <backend>:<index> with a non-negative index");
    device = std::stoi(index);
  }

  Backend* backend = find(name);
  if (backend == nullptr) {
    std::vector<std::string> available, unavailable, failed;
    for (const auto& b : backends_) {
      if (b->available())
        available.push_back(b->name() + " (" + plural(b->device_count(), "device") + ")");
      else
        unavailable.push_back(b->name() + " (" + b->unavailable_reason() + "; " + b->path() + ")");
    }
    for (const PluginLoadFailure& f : failures_) failed.push_back(f.str());
    std::string message = "unknown backend '" + name + "' in device '" + spec +
                          "'; available: " + (available.empty() ? "none" : join(available, ", "));
    if (!unavailable.empty()) message += "; unavailable: " + join(unavailable, ", ");
    if (!failed.empty()) message += "; failed to load: " + join(failed, "; ");
    message += "; searched: " + (searched_.empty() ? "nothing" : join(searched_, ", "));
    throw Error(message);
  }
  check(backend->available(), "backend '" + name +
                                  "' is unavailable: " + backend->unavailable_reason() + " " +
                                  parenthesized(backend->path()));
  int32_t count = backend->device_count();
  check(device < count,
        "device '" + spec + "' does not exist: backend '" + name + "' has " +
            plural(count, "device") +
            (count > 0 ? " (" + name + ":0.." + name + ":" + std::to_string(count - 1) + ")"
                       : std::string()) +
            " " + parenthesized(backend->path()));
  return DeviceRef{backend, device};
}

std::string BackendRegistry::describe() const {
  size_t width = 0;
  for (const auto& b : backends_) width = std::max(width, b->name().size());
  std::ostringstream out;
  for (const auto& b : backends_) {
    out << b->name() << std::string(width - b->name().size() + 2, ' ');
    if (!b->available()) {
      out << "unavailable  " << b->unavailable_reason() << " " << parenthesized(b->path()) << "\n";
      continue;
    }
    int32_t count = b->device_count();
    out << "available  " << plural(count, "device");
    for (int32_t d = 0; d < count; ++d) {
      out << (d == 0 ? ": " : ", ");
      try {
        DeviceInfo info = b->device_info(d);
        out << info.name << " [" << device_kind_name(info.kind);
        if (info.total_memory) out << ", " << format_bytes(info.total_memory);
        out << "]";
      } catch (const Error& e) {
        out << "(" << e.what() << ")";
      }
    }
    const char* version = b->api().version;
    if (version && *version) out << "  version " << version;
    out << " " << parenthesized(b->path()) << "\n";
  }
  for (const PluginLoadFailure& f : failures_) out << "failed  " << f.str() << "\n";
  return out.str();
}

}  // namespace moert
