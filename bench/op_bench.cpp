// moert-opbench: the GEMM and GEMV behind every linear layer, timed alone on
// each backend.  One graph of a single `linear` node (x [M, K] times a
// random weight [N, K] stored in f32, bf16, f16 or f8_e4m3 with 128x128
// block scales) runs on every requested device; the node's own time comes
// from the executor's per-node profiling, so copies of x and y to and from
// the device are not counted.  Reported: best and median node time over the
// repetitions, GFLOP/s (2·M·N·K / time), weight GB/s (the weight bytes /
// time: the figure that matters for decode, M = 1) and that as a fraction of
// the host's read bandwidth measured in the same run.  bench/README.md has
// the method.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "moert/bandwidth.h"
#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/executor.h"
#include "moert/graph.h"

namespace {

using json = nlohmann::json;

const char* const kUsage = R"(usage: moert-opbench [options]

  --backend LIST   devices, e.g. cpu,opencl,cuda:0 (default cpu)
  --dtype LIST     weight storage: f32, bf16, f16, fp8, int8, int4, mxfp4 (groups of 32)
                   (default f32)
  --m LIST         rows of x, e.g. 1,512,2048 (default 1,2048)
  --n N, --k K     weight [N, K] (default 2048 x 2048)
  --products P     the linear's products attribute: exact (default), bf16 or int8
  -r N             timed repetitions after one warm-up run (default 5)
  --bandwidth-mib N  buffer of the read-bandwidth measurement (default 1024; 0 skips it)
  --json FILE      every figure as JSON
)";

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int64_t parse_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0' || n <= 0)
    throw moert::Error(flag + ": expected a positive integer, got '" + v + "'");
  return n;
}

struct Options {
  std::vector<std::string> backends{"cpu"};
  std::vector<std::string> dtypes{"f32"};
  std::string products = "exact";
  std::vector<int64_t> ms{1, 2048};
  int64_t n = 2048, k = 2048;
  int repeat = 5;
  int64_t bandwidth_mib = 1024;
  std::string json_path;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw moert::Error(a + ": missing value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--backend") {
      o.backends = split(next());
    } else if (a == "--dtype") {
      o.dtypes = split(next());
    } else if (a == "--products") {
      o.products = next();
      if (o.products != "exact" && o.products != "bf16" && o.products != "int8")
        throw moert::Error("--products: '" + o.products + "' is not exact, bf16 or int8");
    } else if (a == "--m") {
      o.ms.clear();
      for (const std::string& m : split(next())) o.ms.push_back(parse_int("--m", m));
    } else if (a == "--n") {
      o.n = parse_int(a, next());
    } else if (a == "--k") {
      o.k = parse_int(a, next());
    } else if (a == "-r") {
      o.repeat = static_cast<int>(parse_int(a, next()));
    } else if (a == "--bandwidth-mib") {
      const std::string v = next();
      o.bandwidth_mib = v == "0" ? 0 : parse_int(a, v);
    } else if (a == "--json") {
      o.json_path = next();
    } else {
      throw moert::Error("unknown argument '" + a + "' (--help lists the options)");
    }
  }
  for (const std::string& d : o.dtypes)
    if (d != "f32" && d != "bf16" && d != "f16" && d != "fp8" && d != "int8" && d != "int4" &&
        d != "mxfp4")
      throw moert::Error("--dtype: '" + d +
                         "' is not one of f32, bf16, f16, fp8, int8, int4, mxfp4");
  return o;
}

// A weight [n, k] of N(0, 0.02²) values in `dtype` (fp8: e4m3 with the
// per-128x128-block scale amax / 448, as DeepSeek-V3 stores them).
struct Weight {
  moert::Tensor w, scale;
  std::string quant;  // packed format, or empty
  uint64_t bytes = 0;
};

Weight random_weight(const std::string& dtype, int64_t n, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> v(static_cast<size_t>(n * k));
  for (float& x : v) x = dist(rng);
  Weight out;
  if (dtype == "int8" || dtype == "int4" || dtype == "mxfp4") {
    // Packed codes drawn uniformly with groups of 32 along K; their values
    // do not change the time.
    out.quant = dtype;
    const bool nibbles = dtype != "int8";
    const int64_t stored = nibbles ? (k + 1) / 2 : k, groups = (k + 31) / 32;
    out.w = moert::Tensor::empty(nibbles ? moert::DType::u8 : moert::DType::i8, {n, stored});
    std::uniform_int_distribution<int> byte(0, 255);
    for (int64_t i = 0; i < out.w.numel(); ++i)
      out.w.data_as<uint8_t>()[i] = static_cast<uint8_t>(byte(rng));
    if (dtype == "mxfp4") {
      out.scale = moert::Tensor::empty(moert::DType::u8, {n, groups});
      for (int64_t i = 0; i < out.scale.numel(); ++i) out.scale.data_as<uint8_t>()[i] = 120;
    } else {
      out.scale = moert::Tensor::empty(moert::DType::f16, {n, groups});
      for (int64_t i = 0; i < out.scale.numel(); ++i)
        out.scale.data_as<uint16_t>()[i] = moert::f32_to_f16(0.002f);
    }
  } else if (dtype == "f32") {
    out.w = moert::Tensor::empty(moert::DType::f32, {n, k});
    std::copy(v.begin(), v.end(), out.w.data_as<float>());
  } else if (dtype == "bf16" || dtype == "f16") {
    const bool bf = dtype == "bf16";
    out.w = moert::Tensor::empty(bf ? moert::DType::bf16 : moert::DType::f16, {n, k});
    auto* p = out.w.data_as<uint16_t>();
    for (size_t i = 0; i < v.size(); ++i)
      p[i] = bf ? moert::f32_to_bf16(v[i]) : moert::f32_to_f16(v[i]);
  } else {
    const int64_t bn = (n + 127) / 128, bk = (k + 127) / 128;
    out.w = moert::Tensor::empty(moert::DType::f8_e4m3, {n, k});
    out.scale = moert::Tensor::empty(moert::DType::f32, {bn, bk});
    auto* q = out.w.data_as<uint8_t>();
    auto* s = out.scale.data_as<float>();
    for (int64_t b0 = 0; b0 < bn; ++b0)
      for (int64_t b1 = 0; b1 < bk; ++b1) {
        float amax = 0;
        for (int64_t r = b0 * 128; r < std::min(n, b0 * 128 + 128); ++r)
          for (int64_t c = b1 * 128; c < std::min(k, b1 * 128 + 128); ++c)
            amax = std::max(amax, std::fabs(v[static_cast<size_t>(r * k + c)]));
        const float scale = amax > 0 ? amax / 448.0f : 1.0f;
        s[b0 * bk + b1] = scale;
        for (int64_t r = b0 * 128; r < std::min(n, b0 * 128 + 128); ++r)
          for (int64_t c = b1 * 128; c < std::min(k, b1 * 128 + 128); ++c)
            q[r * k + c] = moert::f32_to_e4m3(v[static_cast<size_t>(r * k + c)] / scale);
      }
  }
  out.bytes = out.w.nbytes() + (out.scale.defined() ? out.scale.nbytes() : 0);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int run(const Options& o) {
  double bandwidth = 0;
  if (o.bandwidth_mib > 0) {
    bandwidth = moert::measure_read_bandwidth(static_cast<uint64_t>(o.bandwidth_mib) << 20, 0, 10)
                    .bytes_per_second;
    std::printf("read bandwidth: %.1f GB/s\n", bandwidth / 1e9);
  }
  std::printf("%-10s %-5s %6s %6s %6s  %9s %9s  %8s  %8s  %5s\n", "backend", "w", "M", "N", "K",
              "best ms", "median ms", "GFLOP/s", "w GB/s", "% bw");
  json rows = json::array();
  std::mt19937 rng(1);
  int failures = 0;
  for (const std::string& dtype : o.dtypes) {
    const Weight weight = random_weight(dtype, o.n, o.k, rng);
    for (int64_t m : o.ms) {
      moert::Graph g;
      const auto x = g.add_input("x", moert::DType::f32, moert::Shape{m, o.k});
      const auto w = g.add_constant("w", weight.w);
      std::vector<moert::ValueId> ins{x, w};
      if (weight.scale.defined()) {
        ins.push_back(moert::kNoValue);
        ins.push_back(g.add_constant("w_scale", weight.scale));
      }
      moert::Attributes attrs;
      if (o.products != "exact") attrs.set("products", o.products);
      if (!weight.quant.empty()) {
        attrs.set("quant", weight.quant);
        attrs.set("block_size", std::vector<int64_t>{1, 32});
      }
      g.mark_output(g.add("linear", "linear", ins, attrs));
      std::normal_distribution<float> dist(0.0f, 1.0f);
      moert::Tensor input = moert::Tensor::empty(moert::DType::f32, {m, o.k});
      for (int64_t i = 0; i < input.numel(); ++i) input.data_as<float>()[i] = dist(rng);

      for (const std::string& device : o.backends) {
        json row{{"backend", device}, {"dtype", dtype}, {"m", m}, {"n", o.n}, {"k", o.k}};
        try {
          moert::Executor exe(g, {.device = device, .strict = true});
          exe.set_profiling(true);
          std::vector<double> times;
          for (int r = 0; r <= o.repeat; ++r) {
            exe.run({input}, moert::SymbolValues::of(m));
            double node_s = 0;
            for (const auto& t : exe.profile()) node_s += t.seconds;
            if (r > 0) times.push_back(node_s);  // the first run warms up
          }
          const double best = *std::min_element(times.begin(), times.end());
          const double gflops = 2.0 * static_cast<double>(m * o.n * o.k) / best / 1e9;
          const double wgbs = static_cast<double>(weight.bytes) / best / 1e9;
          const double frac = bandwidth > 0 ? wgbs * 1e9 / bandwidth : 0;
          std::printf("%-10s %-5s %6lld %6lld %6lld  %9.3f %9.3f  %8.1f  %8.1f  %4.0f%%\n",
                      device.c_str(), dtype.c_str(), static_cast<long long>(m),
                      static_cast<long long>(o.n), static_cast<long long>(o.k), best * 1e3,
                      median(times) * 1e3, gflops, wgbs, frac * 100);
          row["seconds"] = times;
          row["best_s"] = best;
          row["gflops"] = gflops;
          row["weight_gb_s"] = wgbs;
          row["fraction_of_read_bandwidth"] = frac;
        } catch (const std::exception& e) {
          std::printf("%-10s %-5s %6lld  error: %s\n", device.c_str(), dtype.c_str(),
                      static_cast<long long>(m), e.what());
          row["error"] = e.what();
          ++failures;
        }
        std::fflush(stdout);
        rows.push_back(row);
      }
    }
  }
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << json{{"read_bandwidth_bytes_s", bandwidth}, {"rows", rows}}.dump(2) << "\n";
    if (!out) throw moert::Error(o.json_path + ": could not be written");
  }
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moert-opbench: %s\n", e.what());
    return 2;
  }
}
