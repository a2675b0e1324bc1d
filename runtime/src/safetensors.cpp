#include "moert/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "moert/error.h"
#include "moert/shape.h"

namespace moert {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The reference reader refuses larger headers; a real one is at most a few MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Dimensions above this cannot describe bytes of a real file and would only
// invite overflow further on.
constexpr int64_t kMaxDim = int64_t{1} << 62;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

struct DTypeName {
  const char* safetensors;
  DType dtype;
};
constexpr DTypeName kDTypeNames[] = {
    {"F32", DType::f32},         {"F16", DType::f16}, {"BF16", DType::bf16},
    {"F8_E4M3", DType::f8_e4m3}, {"I8", DType::i8},   {"U8", DType::u8},
    {"I32", DType::i32},         {"I64", DType::i64}, {"BOOL", DType::boolean},
};

std::string q(const std::string& s) { return "'" + s + "'"; }

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// nlohmann::json keeps only the last of duplicate keys, which would let a
// file name one tensor twice and silently drop the first.  The parser
// callback sees every key before that happens, so it records the first
// duplicate, in any object, for the caller to report after the parse.
class DuplicateKeyDetector {
 public:
  // `top_noun` names what the outermost object's keys are ("tensor", "key").
  explicit DuplicateKeyDetector(std::string top_noun) : top_noun_(std::move(top_noun)) {}
  json parse(const char* begin, const char* end) {
    return json::parse(begin, end, [this](int, json::parse_event_t event, json& parsed) {
      on_event(event, parsed);
      return true;
    });
  }
  // Empty when every object's keys were unique.
  const std::string& duplicate() const { return duplicate_; }

 private:
  void on_event(json::parse_event_t event, const json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        keys_.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys_.empty()) keys_.pop_back();
        break;
      case json::parse_event_t::key: {
        if (keys_.empty() || !parsed.is_string()) break;
        const std::string& key = parsed.get_ref<const std::string&>();
        if (keys_.size() == 1) top_key_ = key;
        if (!keys_.back().insert(key).second && duplicate_.empty()) {
          duplicate_ = keys_.size() == 1 ? top_noun_ + " " + q(key) + " appears twice"
                                         : "key " + q(key) + " appears twice inside " + q(top_key_);
        }
        break;
      }
      default:
        break;
    }
  }

  std::string top_noun_;
  std::vector<std::set<std::string>> keys_;
  std::string top_key_;
  std::string duplicate_;
};

// Parses JSON text, turning parse errors and duplicate keys into moert::Error
// starting with `what` ("<file>: header", "<file>").
json parse_json(const char* begin, const char* end, const std::string& what,
                const std::string& top_noun) {
  DuplicateKeyDetector detector(top_noun);
  json j;
  try {
    j = detector.parse(begin, end);
  } catch (const json::exception& e) {
    throw Error(what + " is not valid JSON: " + e.what());
  }
  if (!detector.duplicate().empty()) throw Error(what + ": " + detector.duplicate());
  return j;
}

std::string json_type(const json& j) { return j.type_name(); }

// A JSON integer in [0, limit], or nullopt (negative, fractional, too large or
// not a number).
std::optional<uint64_t> json_uint(const json& j, uint64_t limit) {
  if (!j.is_number_unsigned()) return std::nullopt;
  uint64_t v = j.get<uint64_t>();
  if (v > limit) return std::nullopt;
  return v;
}

SafetensorsEntry parse_entry(const std::string& file, const std::string& name, const json& j,
                             uint64_t data_bytes) {
  std::string where = file + ": tensor " + q(name) + ": ";
  check(j.is_object(), where + "header entry is a JSON " + json_type(j) + ", not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    check(j.contains(key), where + "header entry has no \"" + key + "\"");

  SafetensorsEntry e;
  e.name = name;

  const json& dt = j["dtype"];
  check(dt.is_string(), where + "\"dtype\" is a JSON " + json_type(dt) + ", not a string");
  try {
    e.dtype = dtype_from_safetensors(dt.get<std::string>());
  } catch (const Error& err) {
    throw Error(where + err.what());
  }

  const json& shape = j["shape"];
  check(shape.is_array(), where + "\"shape\" is a JSON " + json_type(shape) + ", not an array");
  for (const json& d : shape) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      throw Error(where + "negative dimension " + d.dump() + " in shape " + shape.dump());
    std::optional<uint64_t> v = json_uint(d, static_cast<uint64_t>(kMaxDim));
    check(v.has_value(), where + "dimension " + d.dump() + " in shape " + shape.dump() +
                             " is not an integer in [0, 2^62]");
    e.shape.push_back(static_cast<int64_t>(*v));
  }

  const json& off = j["data_offsets"];
  check(off.is_array() && off.size() == 2,
        where + "\"data_offsets\" is " + off.dump() + ", not an array [begin, end]");
  std::optional<uint64_t> b = json_uint(off[0], UINT64_MAX);
  std::optional<uint64_t> en = json_uint(off[1], UINT64_MAX);
  check(b && en, where + "data_offsets " + off.dump() + " are not non-negative integers");
  e.begin = *b;
  e.end = *en;
  check(e.begin <= e.end,
        where + "data_offsets " + range_str(e.begin, e.end) + " end before they begin");
  check(e.end <= data_bytes, where + "data_offsets " + range_str(e.begin, e.end) +
                                 " run past the end of the data section (" +
                                 std::to_string(data_bytes) + " bytes)");

  // The product is formed in the same order and type as num_elements() does
  // later, so no prefix of it can overflow there either.
  std::string type_str = dtype_to_safetensors(e.dtype) + dims_str(e.shape);
  int64_t elements = 1;
  for (int64_t d : e.shape)
    check(!__builtin_mul_overflow(elements, d, &elements),
          where + "shape " + type_str + " has more elements than fit in 64 bits");
  int64_t needed = 0;
  check(!__builtin_mul_overflow(elements, static_cast<int64_t>(dtype_size(e.dtype)), &needed),
        where + "shape " + type_str + " has more bytes than fit in 64 bits");
  uint64_t held = e.end - e.begin;
  check(held == static_cast<uint64_t>(needed), where + "data_offsets " + range_str(e.begin, e.end) +
                                                   " hold " + std::to_string(held) + " bytes but " +
                                                   type_str + " needs " + std::to_string(needed));
  return e;
}

// Sorted by (begin, end) as the reference reader does, the entries must tile
// the data section exactly: nothing unaccounted for, nothing shared.
void check_tiling(const std::string& file, const std::map<std::string, SafetensorsEntry>& entries,
                  uint64_t data_bytes) {
  std::vector<const SafetensorsEntry*> sorted;
  sorted.reserve(entries.size());
  for (const auto& [name, e] : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t pos = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry* e : sorted) {
    if (e->begin < pos)
      throw Error(file + ": tensor " + q(e->name) + ": data_offsets " +
                  range_str(e->begin, e->end) + " overlap tensor " + q(prev->name) + " at " +
                  range_str(prev->begin, prev->end));
    if (e->begin > pos)
      throw Error(file + ": bytes [" + std::to_string(pos) + ", " + std::to_string(e->begin) +
                  ") of the data section belong to no tensor (gap before tensor " + q(e->name) +
                  (prev ? " after tensor " + q(prev->name) : "") + ")");
    pos = e->end;
    prev = e;
  }
  if (pos != data_bytes)
    throw Error(file + ": bytes [" + std::to_string(pos) + ", " + std::to_string(data_bytes) +
                ") at the end of the data section belong to no tensor");
}

// Levenshtein distance, or limit+1 once it is certain to exceed `limit`;
// only a band of width 2*limit+1 around the diagonal is computed.
size_t bounded_edit_distance(const std::string& a, const std::string& b, size_t limit) {
  size_t n = a.size(), m = b.size();
  if ((n > m ? n - m : m - n) > limit) return limit + 1;
  const size_t big = limit + 1;
  std::vector<size_t> prev(m + 1, big), cur(m + 1, big);
  for (size_t j = 0; j <= std::min(m, limit); ++j) prev[j] = j;
  for (size_t i = 1; i <= n; ++i) {
    std::fill(cur.begin(), cur.end(), big);
    size_t lo = i > limit ? i - limit : 0;
    size_t hi = std::min(m, i + limit);
    if (lo == 0) cur[0] = i;
    size_t row_min = lo == 0 ? cur[0] : big;
    for (size_t j = std::max<size_t>(lo, 1); j <= hi; ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      size_t v = std::min({sub, prev[j] + 1, cur[j - 1] + 1});
      cur[j] = std::min(v, big);
      row_min = std::min(row_min, cur[j]);
    }
    if (row_min > limit) return big;
    std::swap(prev, cur);
  }
  return std::min(prev[m], big);
}

bool ends_with_component(const std::string& s, const std::string& tail) {
  return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0 &&
         s[s.size() - tail.size() - 1] == '.';
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path + ": read failed");
  return ss.str();
}

// The error for a tensor the checkpoint lacks, suggesting names a typo or a
// missing/extra prefix away.  On a large checkpoint this walks every name
// once, which is cheap next to having opened it.
[[noreturn]] void throw_missing(const std::string& name, const std::string& directory,
                                const std::map<std::string, size_t>& where) {
  std::vector<std::pair<size_t, std::string>> close;
  const size_t limit = std::max<size_t>(2, name.size() / 10);
  for (const auto& [other, idx] : where) {
    size_t d = bounded_edit_distance(name, other, limit);
    if (d <= limit)
      close.emplace_back(d, other);
    else if (ends_with_component(other, name) || ends_with_component(name, other))
      close.emplace_back(limit + 1, other);
  }
  std::sort(close.begin(), close.end());
  std::string msg = "tensor " + q(name) + " is not in checkpoint " + directory;
  if (!close.empty()) {
    msg += " (did you mean ";
    for (size_t i = 0; i < close.size() && i < 3; ++i) msg += (i ? ", " : "") + q(close[i].second);
    msg += "?)";
  }
  throw Error(msg);
}

// Shard names come from a file: keep them inside the checkpoint directory.
bool shard_name_is_safe(const std::string& shard) {
  if (shard.empty()) return false;
  fs::path p(shard);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const fs::path& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

DType dtype_from_safetensors(const std::string& s) {
  for (const DTypeName& d : kDTypeNames)
    if (s == d.safetensors) return d.dtype;
  std::string supported;
  for (const DTypeName& d : kDTypeNames)
    supported += (supported.empty() ? "" : ", ") + std::string(d.safetensors);
  throw Error("unsupported safetensors dtype " + q(s) + " (supported: " + supported + ")");
}

std::string dtype_to_safetensors(DType t) {
  for (const DTypeName& d : kDTypeNames)
    if (d.dtype == t) return d.safetensors;
  throw Error("dtype " + std::string(dtype_name(t)) + " has no safetensors name");
}

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  // Owned from the start so that the destructor unmaps on every error below.
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;

  // O_NONBLOCK: opening a FIFO by mistake must not hang; it is rejected below
  // and has no effect on a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": " + std::to_string(size) +
                " bytes is too short for a safetensors file (it starts with an 8-byte header "
                "length)");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  // The mapping keeps the file alive; the descriptor is no longer needed.
  ::close(fd);
  if (m == MAP_FAILED) throw Error(path + ": cannot mmap: " + std::strerror(map_err));
  f->map_ = static_cast<const unsigned char*>(m);
  f->size_ = size;

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | f->map_[i];
  check(header_bytes <= kMaxHeaderBytes, path + ": header length " + std::to_string(header_bytes) +
                                             " exceeds the limit of " +
                                             std::to_string(kMaxHeaderBytes) + " bytes");
  check(header_bytes <= size - 8, path + ": header length " + std::to_string(header_bytes) +
                                      " runs past the end of the file (" + std::to_string(size) +
                                      " bytes)");
  f->data_offset_ = 8 + header_bytes;
  uint64_t data_bytes = size - f->data_offset_;

  const char* text = reinterpret_cast<const char*>(f->map_ + 8);
  json header = parse_json(text, text + header_bytes, path + ": header", "tensor");
  check(header.is_object(), path + ": header is a JSON " + json_type(header) + ", not an object");

  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      check(value.is_object(), path + ": \"__metadata__\" is a JSON " + json_type(value) +
                                   ", not an object of strings");
      for (const auto& [key, v] : value.items()) {
        check(v.is_string(), path + ": \"__metadata__\" value of " + q(key) + " is a JSON " +
                                 json_type(v) + ", not a string");
        f->metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    f->entries_.emplace(name, parse_entry(path, name, value, data_bytes));
  }
  check_tiling(path, f->entries_, data_bytes);

  f->self_ = f;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  auto it = entries_.find(name);
  check(it != entries_.end(), path_ + ": no tensor " + q(name));
  const SafetensorsEntry& e = it->second;
  std::shared_ptr<const SafetensorsFile> keepalive = self_.lock();
  check(keepalive != nullptr, path_ + ": tensor " + q(name) + " requested while closing");
  // The mapping is read-only: writing through the tensor faults.  Tensor has
  // no const-storage notion, hence the cast.
  auto* data = const_cast<unsigned char*>(map_ + data_offset_ + e.begin);
  // A writer that does not align each tensor to its item size (the reference
  // writer does) leaves it at any offset, and the kernels read elements
  // through typed pointers: such a tensor is a copy in an aligned buffer
  // instead of a view.
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(e.dtype) != 0) {
    Tensor copy = Tensor::empty(e.dtype, e.shape);
    if (e.end > e.begin) std::memcpy(copy.data(), data, e.end - e.begin);
    return copy;
  }
  return Tensor::borrow(e.dtype, e.shape, data, std::move(keepalive));
}

Checkpoint Checkpoint::open(const std::string& directory) {
  Checkpoint ck;
  ck.directory_ = directory;
  std::error_code ec;
  check(fs::is_directory(directory, ec), directory + ": not a directory");

  fs::path dir(directory);
  fs::path index_path = dir / kIndexName;
  fs::path single_path = dir / kSingleName;

  // Every tensor of every opened file, for the uniqueness check.
  std::map<std::string, size_t> held;
  auto add_file = [&](const fs::path& p) {
    ck.files_.push_back(SafetensorsFile::open(p.string()));
    size_t idx = ck.files_.size() - 1;
    for (const auto& [name, e] : ck.files_[idx]->entries()) {
      auto [it, inserted] = held.emplace(name, idx);
      check(inserted, directory + ": tensor " + q(name) + " is in both " +
                          ck.files_[it->second]->path() + " and " + ck.files_[idx]->path());
    }
  };

  if (fs::exists(index_path, ec)) {
    std::string ipath = index_path.string();
    std::string text = read_text_file(ipath);
    json index = parse_json(text.data(), text.data() + text.size(), ipath, "key");
    check(index.is_object(), ipath + ": index is a JSON " + json_type(index) + ", not an object");
    check(index.contains("weight_map"), ipath + ": index has no \"weight_map\"");
    const json& wm = index["weight_map"];
    check(wm.is_object(),
          ipath + ": \"weight_map\" is a JSON " + json_type(wm) + ", not an object");
    if (index.contains("metadata"))
      check(index["metadata"].is_object(),
            ipath + ": \"metadata\" is a JSON " + json_type(index["metadata"]) + ", not an object");

    // shard file name -> one tensor mapped to it, for the error messages.
    std::map<std::string, std::string> shards;
    for (const auto& [name, v] : wm.items()) {
      check(v.is_string(), ipath + ": weight_map entry " + q(name) + " is a JSON " + json_type(v) +
                               ", not a file name");
      const std::string& shard = v.get_ref<const std::string&>();
      check(shard_name_is_safe(shard), ipath + ": weight_map entry " + q(name) + " names shard " +
                                           q(shard) + ", which is not a path inside the directory");
      shards.emplace(shard, name);
    }
    for (const auto& [shard, tensor] : shards) {
      fs::path p = dir / shard;
      check(fs::exists(p, ec),
            ipath + ": shard " + p.string() + " (holding tensor " + q(tensor) + ") does not exist");
    }
    std::map<std::string, size_t> shard_index;
    for (const auto& [shard, tensor] : shards) {
      add_file(dir / shard);
      shard_index[shard] = ck.files_.size() - 1;
    }
    for (const auto& [name, v] : wm.items()) {
      size_t idx = shard_index.at(v.get_ref<const std::string&>());
      check(ck.files_[idx]->has(name), ipath + ": maps tensor " + q(name) + " to " +
                                           ck.files_[idx]->path() + ", which does not hold it");
      // Tensors a shard holds beyond the index are not part of the checkpoint.
      ck.where_[name] = idx;
    }
  } else if (fs::exists(single_path, ec)) {
    add_file(single_path);
    ck.where_ = std::move(held);
  } else {
    std::vector<fs::path> found;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".safetensors" && it->is_regular_file(ec))
        found.push_back(it->path());
    }
    check(!ec, directory + ": cannot list: " + ec.message());
    check(!found.empty(), directory + ": no checkpoint found (looked for " + kIndexName + ", " +
                              kSingleName + " and *.safetensors)");
    std::sort(found.begin(), found.end());
    for (const fs::path& p : found) add_file(p);
    ck.where_ = std::move(held);
  }
  return ck;
}

Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw_missing(name, directory_, where_);
  return files_[it->second]->tensor(name);
}

const SafetensorsEntry& Checkpoint::entry(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw_missing(name, directory_, where_);
  return files_[it->second]->entries().at(name);
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw_missing(name, directory_, where_);
  return files_[it->second]->path();
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, idx] : where_) out.push_back(name);
  return out;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, idx] : where_) {
    const SafetensorsEntry& e = files_[idx]->entries().at(name);
    total += e.end - e.begin;
  }
  return total;
}

}  // namespace moert
