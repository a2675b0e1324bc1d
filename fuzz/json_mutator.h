// A JSON-aware mutation for libFuzzer's custom mutator hook.
//
// Byte-level mutations of a JSON document mostly break its syntax; the
// values the code under test branches on (sizes, type names, nested
// objects) are rarely reached.  mutate_json parses the document, changes a
// few values — a number to a boundary value or a multiple of itself, a
// string or key to another string of the document or a dictionary word, any
// value to another JSON type, an object or array entry removed, duplicated
// or renamed — and writes it back.  Targets use it for half of their
// mutations and libFuzzer's own byte mutations for the rest, so syntax
// errors stay covered too.  The dictionary is the libFuzzer dictionary file
// named by MOERT_FUZZ_DICT (scripts/fuzz.sh passes the one fuzz/make_corpus.py
// writes for the target, also as -dict).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace moert_fuzz {

namespace detail {

using nlohmann::json;

inline void collect(json& j, std::vector<json*>& out) {
  out.push_back(&j);
  if (j.is_object() || j.is_array())
    for (json& child : j) collect(child, out);
}

inline void collect_strings(const json& j, std::vector<std::string>& out) {
  if (j.is_string()) out.push_back(j.get<std::string>());
  if (j.is_object())
    for (const auto& [key, value] : j.items()) {
      out.push_back(key);
      collect_strings(value, out);
    }
  if (j.is_array())
    for (const json& v : j) collect_strings(v, out);
}

inline json interesting_number(std::mt19937_64& rng) {
  static const int64_t ints[] = {0,
                                 -1,
                                 1,
                                 2,
                                 3,
                                 7,
                                 8,
                                 15,
                                 16,
                                 31,
                                 32,
                                 33,
                                 64,
                                 127,
                                 128,
                                 255,
                                 256,
                                 4096,
                                 65535,
                                 65536,
                                 (int64_t{1} << 31) - 1,
                                 int64_t{1} << 31,
                                 int64_t{1} << 32,
                                 int64_t{1} << 40,
                                 int64_t{1} << 53,
                                 int64_t{1} << 62,
                                 std::numeric_limits<int64_t>::max(),
                                 std::numeric_limits<int64_t>::min(),
                                 -(int64_t{1} << 31)};
  static const double reals[] = {0.5, -0.5, 1.5, 1e-30, 1e30, 1e308, -1e308, -0.0, 0.999999};
  const size_t n_ints = sizeof(ints) / sizeof(ints[0]);
  const size_t n_reals = sizeof(reals) / sizeof(reals[0]);
  const size_t pick = rng() % (n_ints + n_reals + 1);
  if (pick < n_ints) return ints[pick];
  if (pick < n_ints + n_reals) return reals[pick - n_ints];
  return std::numeric_limits<uint64_t>::max();
}

inline json another_type(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return nullptr;
    case 1:
      return rng() % 2 == 0;
    case 2:
      return "";
    case 3:
      return json::array();
    case 4:
      return json::object();
    default:
      return interesting_number(rng);
  }
}

inline void mutate_value(json& root, json& node, std::mt19937_64& rng,
                         const std::vector<std::string>& words) {
  auto word = [&]() -> std::string { return words.empty() ? "x" : words[rng() % words.size()]; };
  const unsigned op = static_cast<unsigned>(rng() % 8);
  if (op == 0) {
    node = another_type(rng);
    return;
  }
  if (node.is_number()) {
    if (op < 4) {
      node = interesting_number(rng);
    } else if (node.is_number_integer()) {
      // Wrapping arithmetic: the mutator itself must not overflow.
      const int64_t v = node.get<int64_t>();
      const uint64_t u = static_cast<uint64_t>(v);
      const uint64_t deltas[] = {1, ~uint64_t{0}, 8, ~uint64_t{7}};
      switch (op) {
        case 4:
          node = static_cast<int64_t>(u + deltas[rng() % 4]);
          break;
        case 5:
          node = v / 2;
          break;
        case 6:
          node = v > (int64_t{1} << 40) || v < -(int64_t{1} << 40) ? v : v * 2;
          break;
        default:
          node = static_cast<int64_t>(0 - u);
          break;
      }
    } else {
      node = node.get<double>() * (op % 2 ? 2.0 : -1.0);
    }
  } else if (node.is_string()) {
    if (op < 5)
      node = word();
    else if (op == 5)
      node = "";
    else
      node = node.get<std::string>() + word();
  } else if (node.is_boolean()) {
    node = !node.get<bool>();
  } else if (node.is_object() && !node.empty()) {
    auto it = node.begin();
    std::advance(it, static_cast<long>(rng() % node.size()));
    const std::string key = it.key();
    if (op < 3) {
      node.erase(key);
    } else if (op < 6) {
      node[word()] = *it;
    } else {
      json copy = *it;
      node.erase(key);
      node[key + word()] = std::move(copy);
    }
  } else if (node.is_array() && !node.empty()) {
    const size_t i = rng() % node.size();
    if (op < 3)
      node.erase(i);
    else if (op < 6)
      node.push_back(node[i]);
    else
      node = json::array();
  } else if (node.is_object()) {
    node[word()] = another_type(rng);
  } else if (node.is_array()) {
    node.push_back(another_type(rng));
  } else if (&node != &root) {
    node = interesting_number(rng);
  }
}

// The quoted words of the libFuzzer dictionary named by MOERT_FUZZ_DICT
// (lines `"word"` or `name="word"`, \\ \" and \xNN escapes), read once.
inline const std::vector<std::string>& dictionary_words() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> out;
    const char* path = std::getenv("MOERT_FUZZ_DICT");
    if (!path) return out;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      const size_t first = line.find('"'), last = line.rfind('"');
      if (line.empty() || line[0] == '#' || first == std::string::npos || last <= first) continue;
      std::string word;
      for (size_t i = first + 1; i < last; ++i) {
        if (line[i] == '\\' && i + 1 < last && line[i + 1] == 'x' && i + 3 < last) {
          word += static_cast<char>(std::stoi(line.substr(i + 2, 2), nullptr, 16));
          i += 3;
        } else if (line[i] == '\\' && i + 1 < last) {
          word += line[++i];
        } else {
          word += line[i];
        }
      }
      out.push_back(word);
    }
    return out;
  }();
  return words;
}

}  // namespace detail

// Mutates the JSON document `text` in place; false when it does not parse.
inline bool mutate_json(std::string& text, unsigned seed) {
  using nlohmann::json;
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return false;
  std::mt19937_64 rng(seed);
  std::vector<std::string> words = detail::dictionary_words();
  detail::collect_strings(doc, words);
  const int rounds = 1 + static_cast<int>(rng() % 3);
  for (int r = 0; r < rounds; ++r) {
    std::vector<json*> nodes;
    detail::collect(doc, nodes);
    detail::mutate_value(doc, *nodes[rng() % nodes.size()], rng, words);
  }
  text = doc.dump(rng() % 4 == 0 ? 1 : -1, ' ', false, json::error_handler_t::replace);
  return true;
}

// The custom mutator of a target whose input is one JSON document: a JSON
// mutation half of the time (when the input parses and the result fits),
// libFuzzer's byte mutations otherwise.
inline size_t mutate_json_input(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  if (seed % 2 == 0) {
    std::string text(reinterpret_cast<const char*>(data), size);
    if (mutate_json(text, seed) && text.size() <= max_size) {
      std::memcpy(data, text.data(), text.size());
      return text.size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

}  // namespace moert_fuzz
