// Reading safetensors checkpoints: one file, or shards listed by
// model.safetensors.index.json.  Files are memory-mapped read-only and
// tensors are borrowed views into the mapping (no copy); the mapping stays
// alive as long as any tensor from it does.  Such tensors must not be written
// (the pages are read-only).  A tensor the writer did not align to its item
// size (the reference writer does) is returned as an aligned copy instead,
// since kernels read elements through typed pointers.  Truncating a file
// while it is mapped makes later reads fault; no up-front check can prevent it.
//
// Everything a hostile file can break is validated when it is opened, and
// each failure is a moert::Error naming the file (and the tensor): header
// length past the end of the file or above 100,000,000 bytes, invalid JSON,
// an entry that is not an object, an unknown dtype, a negative dimension or a
// shape whose element count overflows, offsets out of range, overlapping or
// leaving gaps, a byte length that is not shape × itemsize, duplicate names
// (within a file, or in two opened files — even when the index picks one),
// __metadata__ values that are not strings, a shard named in the index but
// missing or outside the directory (absolute or ".."), an index naming a
// tensor its shard does not hold.  A tensor a shard holds but the index does
// not name is ignored; unknown keys inside an entry are ignored.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moert/tensor.h"

namespace moert {

// One tensor's header entry.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
};

// A single .safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`; throws moert::Error naming the file.
  static std::shared_ptr<const SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // A host tensor borrowing the mapped bytes; throws naming file and tensor.
  Tensor tensor(const std::string& name) const;
  uint64_t file_size() const { return size_; }

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const unsigned char* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;  // 8 + header length
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<const SafetensorsFile> self_;
};

// Every tensor of a checkpoint directory: model.safetensors.index.json with
// its shards when present, else model.safetensors, else every *.safetensors
// file of the directory (sorted; names must be unique across them).
class Checkpoint {
 public:
  static Checkpoint open(const std::string& directory);

  const std::string& directory() const { return directory_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Throws moert::Error naming the tensor and the directory when missing.
  Tensor get(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
  uint64_t total_bytes() const;  // sum of every tensor's bytes

 private:
  std::string directory_;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// The dtype of a safetensors dtype string ("BF16", "F8_E4M3" …); throws
// moert::Error listing the supported ones when unknown.
DType dtype_from_safetensors(const std::string& s);
std::string dtype_to_safetensors(DType t);

}  // namespace moert
