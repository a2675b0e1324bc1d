// Runs every registered case on every available device (all backends but
// the reference one), one GoogleTest test per (device, op, case):
// Conformance/<device>.<op>__<case>.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "conformance.h"
#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/executor.h"
#include "moert/graph.h"

namespace moert::conformance {
namespace {

std::vector<std::pair<std::string, CaseGenerator>>& generators() {
  static std::vector<std::pair<std::string, CaseGenerator>> g;
  return g;
}

// The family of the backend contract tests (contract.cpp).
const char* const kContract = "contract";

std::vector<std::pair<std::string, ContractTest>>& contract_tests() {
  static std::vector<std::pair<std::string, ContractTest>> t;
  return t;
}

}  // namespace

CaseRegistration::CaseRegistration(const char* family, CaseGenerator generator) {
  generators().emplace_back(family, std::move(generator));
}

ContractRegistration::ContractRegistration(const char* name, ContractTest test) {
  contract_tests().emplace_back(name, std::move(test));
}

Slot absent() { return {}; }
Slot activation(DType dtype, Shape shape) {
  Slot s;
  s.kind = Slot::activation;
  s.dtype = dtype;
  s.shape = std::move(shape);
  return s;
}
Slot constant(Tensor data) {
  Slot s;
  s.kind = Slot::constant;
  s.dtype = data.dtype();
  s.shape = Shape::of(data.shape());
  s.constant_data = std::move(data);
  return s;
}
Slot state(DType dtype, std::vector<int64_t> shape) {
  Slot s;
  s.kind = Slot::state;
  s.dtype = dtype;
  s.shape = Shape::of(shape);
  return s;
}

Tensor random(DType dtype, std::vector<int64_t> shape, std::mt19937& rng, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  Tensor t = Tensor::empty(dtype, std::move(shape));
  void* p = t.data();  // once: data() is checked on each call
  for (int64_t i = 0; i < t.numel(); ++i)
    store_element(dtype, p, static_cast<size_t>(i), dist(rng));
  return t;
}

Tensor random_ints(DType dtype, std::vector<int64_t> shape, int64_t lo, int64_t hi,
                   std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  Tensor t = Tensor::empty(dtype, std::move(shape));
  void* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i)
    store_element(dtype, p, static_cast<size_t>(i), static_cast<double>(dist(rng)));
  return t;
}

double tolerance_for(DType out) {
  switch (out) {
    case DType::bf16:
      return 1e-2;
    case DType::f16:
      return 4e-3;
    default:
      return 1e-4;
  }
}

std::string why_for(DType out) {
  switch (out) {
    case DType::bf16:
      return "bf16 output: 8 significant bits, one rounding is up to 2^-9 ~ 2e-3, and an f32 "
             "result next to a rounding boundary may round the other way: 1e-2";
    case DType::f16:
      return "f16 output: 11 significant bits, a rounding is up to 2^-11 ~ 5e-4, doubled for a "
             "flip at a boundary, with f32 accumulation: 4e-3";
    default:
      return "f32 computation against f64: summation order over up to a few thousand terms "
             "costs ~1e-6 relative; 1e-4 of the output's scale";
  }
}

Case simple_case(std::string name, std::string op, std::vector<Tensor> inputs, Attributes attrs,
                 double tolerance, std::string why) {
  Case c;
  c.name = std::move(name);
  c.op = std::move(op);
  c.attrs = std::move(attrs);
  Step step;
  for (Tensor& t : inputs) {
    if (!t.defined()) {
      c.slots.push_back(absent());
      continue;
    }
    c.slots.push_back(activation(t.dtype(), Shape::of(t.shape())));
    step.inputs.push_back(std::move(t));
  }
  c.steps.push_back(std::move(step));
  c.tolerance = tolerance;
  c.why = std::move(why);
  return c;
}

namespace {

// Compares one tensor; returns "" or a description of the worst element.
std::string compare(const std::string& what, const Tensor& got, const Tensor& want, const Case& c) {
  if (got.dtype() != want.dtype() || got.shape() != want.shape())
    return what + ": got " + got.describe() + ", want " + want.describe();
  const std::vector<double> g = got.to_doubles(), w = want.to_doubles();
  if (!dtype_is_float(want.dtype())) {
    for (size_t i = 0; i < g.size(); ++i)
      if (g[i] != w[i])
        return what + "[" + std::to_string(i) + "] = " + std::to_string(g[i]) + ", want " +
               std::to_string(w[i]);
    return "";
  }
  double scale = 0;
  for (double v : w)
    if (std::isfinite(v)) scale = std::max(scale, std::fabs(v));
  const double floor = c.floor >= 0 ? c.floor : 1e-3 * scale;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(w[i]) != std::isnan(g[i]))
      return what + "[" + std::to_string(i) + "] = " + std::to_string(g[i]) + ", want " +
             std::to_string(w[i]);
    if (std::isnan(w[i])) continue;
    if (std::isinf(w[i]) || std::isinf(g[i])) {
      if (g[i] != w[i])
        return what + "[" + std::to_string(i) + "] = " + std::to_string(g[i]) + ", want " +
               std::to_string(w[i]);
      continue;
    }
    const double e = std::fabs(g[i] - w[i]) / (std::fabs(w[i]) + floor + 1e-300);
    if (e > worst) {
      worst = e;
      at = i;
    }
  }
  if (worst <= c.tolerance) return "";
  std::ostringstream os;
  os << what << ": relative error " << worst << " > tolerance " << c.tolerance << " at [" << at
     << "]: got " << g[at] << ", want " << w[at] << " (floor " << floor << "; " << c.why << ")";
  return os.str();
}

void run_case(const std::string& device, const Case& c) {
  Graph g;
  std::vector<ValueId> ids;
  std::vector<std::string> state_names;
  for (size_t i = 0; i < c.slots.size(); ++i) {
    const Slot& s = c.slots[i];
    const std::string name = "in" + std::to_string(i);
    switch (s.kind) {
      case Slot::absent:
        ids.push_back(kNoValue);
        break;
      case Slot::activation:
        ids.push_back(g.add_input(name, s.dtype, s.shape));
        break;
      case Slot::constant:
        ids.push_back(g.add_constant(name, s.constant_data));
        break;
      case Slot::state: {
        std::vector<int64_t> dims;
        for (const Dim& d : s.shape.dims()) dims.push_back(d.fixed);
        ids.push_back(g.add_state(name, s.dtype, dims));
        state_names.push_back(name);
        break;
      }
    }
  }
  const std::vector<ValueId> outs = g.add_node(c.op, "node", ids, c.attrs);
  for (ValueId o : outs) g.mark_output(o);

  ExecutorOptions on_device;
  on_device.device = device;
  on_device.strict = true;
  on_device.decompose = false;
  on_device.poison = true;
  ExecutorOptions on_reference;
  on_reference.device = "reference";
  on_reference.poison = true;
  Executor dev(g, on_device);
  Executor ref(g, on_reference);

  int64_t past = 0;
  for (size_t s = 0; s < c.steps.size(); ++s) {
    const Step& step = c.steps[s];
    const SymbolValues symbols = SymbolValues::of(step.tokens, past, step.rows);
    const std::vector<Tensor> want = ref.run(step.inputs, symbols);
    const std::vector<Tensor> got = dev.run(step.inputs, symbols);
    ASSERT_EQ(got.size(), want.size());
    for (size_t o = 0; o < got.size(); ++o) {
      const std::string err =
          compare("step " + std::to_string(s) + " output " + std::to_string(o), got[o], want[o], c);
      EXPECT_EQ(err, "");
    }
    past += step.tokens;
  }
  for (const std::string& name : state_names) {
    const std::string err = compare("state " + name, dev.read_state(name), ref.read_state(name), c);
    EXPECT_EQ(err, "");
  }
}

std::string test_name(std::string s) {
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

class CaseTest : public ::testing::Test {
 public:
  CaseTest(std::string device, std::shared_ptr<const Case> c)
      : device_(std::move(device)), case_(std::move(c)) {}
  void TestBody() override {
    try {
      run_case(device_, *case_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }

 private:
  std::string device_;
  std::shared_ptr<const Case> case_;
};

class ContractCase : public ::testing::Test {
 public:
  ContractCase(std::string device, ContractTest test)
      : device_(std::move(device)), test_(std::move(test)) {}
  void TestBody() override {
    try {
      test_(device_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }

 private:
  std::string device_;
  ContractTest test_;
};

class NoDevice : public ::testing::Test {
 public:
  explicit NoDevice(std::string why) : why_(std::move(why)) {}
  void TestBody() override { GTEST_SKIP() << why_; }

 private:
  std::string why_;
};

}  // namespace
}  // namespace moert::conformance

// Options after GoogleTest's own (ctest runs one process per backend and
// family, so that a process generates only the cases it runs):
//   --backend=NAME        only this backend's devices; exits with kSkipped
//                         (ctest's SKIP_RETURN_CODE) when it has none available
//   --family=NAME         only this family's cases; "contract" is the backend
//                         contract (contract.cpp), which runs on the reference
//                         backend's device too
//   --families=A,B,...    exits 1 unless these are exactly the registered
//                         families (keeps the ctest list in step with the code)
constexpr int kSkipped = 77;

int main(int argc, char** argv) {
  using namespace moert::conformance;
  ::testing::InitGoogleTest(&argc, argv);
  std::string only_backend, only_family, expect_families;
  bool check_families = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) {
      return a.rfind(flag, 0) == 0 ? a.substr(flag.size()) : std::string();
    };
    if (a.rfind("--backend=", 0) == 0) {
      only_backend = value("--backend=");
    } else if (a.rfind("--family=", 0) == 0) {
      only_family = value("--family=");
    } else if (a.rfind("--families=", 0) == 0) {
      expect_families = value("--families=");
      check_families = true;
    } else {
      std::fprintf(stderr, "conformance: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  if (check_families) {
    std::set<std::string> registered{kContract}, expected;
    for (const auto& entry : generators()) registered.insert(entry.first);
    std::stringstream in(expect_families);
    for (std::string f; std::getline(in, f, ',');)
      if (!f.empty()) expected.insert(f);
    bool same = registered == expected;
    for (const std::string& f : registered)
      if (!expected.count(f)) std::fprintf(stderr, "family '%s' is not in the list\n", f.c_str());
    for (const std::string& f : expected)
      if (!registered.count(f)) std::fprintf(stderr, "family '%s' is not registered\n", f.c_str());
    if (same) std::printf("%zu families, as listed\n", registered.size());
    return same ? 0 : 1;
  }
  if (!only_family.empty()) {
    bool known = only_family == kContract;
    for (const auto& entry : generators()) known = known || entry.first == only_family;
    if (!known) {
      std::fprintf(stderr, "conformance: no family '%s'\n", only_family.c_str());
      return 2;
    }
  }

  std::vector<std::string> devices;
  std::string unavailable;
  bool backend_found = only_backend.empty();
  const moert::BackendRegistry& registry = moert::BackendRegistry::global();
  // The reference backend is the oracle of the case families, but bound by
  // the contract like every other.
  const bool contract_only = only_family == kContract;
  for (const auto& backend : registry.backends()) {
    if (backend->name() == "reference" && !(contract_only || only_backend == "reference")) continue;
    if (!only_backend.empty() && backend->name() != only_backend) continue;
    backend_found = true;
    if (!backend->available()) {
      unavailable += " " + backend->name() + ": " + backend->unavailable_reason() + ";";
      continue;
    }
    for (int32_t i = 0; i < backend->device_count(); ++i)
      devices.push_back(backend->name() + ":" + std::to_string(i));
  }
  for (const auto& f : registry.failures()) unavailable += " " + f.str() + ";";
  if (!only_backend.empty() && devices.empty()) {
    // A skip, not a pass: ctest reports it as skipped with this reason.
    std::printf("SKIPPED: backend '%s' has no available device:%s\n", only_backend.c_str(),
                backend_found ? unavailable.c_str() : " its plugin was not loaded;");
    return kSkipped;
  }
  if (devices.empty()) {
    const std::string why =
        "no backend device besides the reference one is available, so "
        "there is nothing to check against it." +
        unavailable;
    ::testing::RegisterTest("Conformance", "NoDevice", nullptr, nullptr, __FILE__, __LINE__,
                            [why]() -> ::testing::Test* { return new NoDevice(why); });
  }
  if (only_family.empty() || contract_only)
    for (const auto& [name, test] : contract_tests())
      for (const std::string& device : devices)
        ::testing::RegisterTest(("Contract_" + test_name(device)).c_str(), name.c_str(), nullptr,
                                nullptr, __FILE__, __LINE__, [device, test]() -> ::testing::Test* {
                                  return new ContractCase(device, test);
                                });
  for (const auto& [family, generate] : generators()) {
    if (!only_family.empty() && family != only_family) continue;
    if (only_backend == "reference") break;  // the oracle is not checked against itself
    std::map<std::string, int> seen;
    for (Case& c : generate()) {
      auto shared = std::make_shared<const Case>(std::move(c));
      const std::string name = test_name(shared->op + "__" + shared->name);
      if (seen[name]++) {
        std::fprintf(stderr, "conformance: duplicate case %s in family %s\n", name.c_str(),
                     family.c_str());
        return 2;
      }
      for (const std::string& device : devices)
        ::testing::RegisterTest(
            ("Conformance_" + test_name(device)).c_str(), name.c_str(), nullptr, nullptr, __FILE__,
            __LINE__,
            [device, shared]() -> ::testing::Test* { return new CaseTest(device, shared); });
    }
  }
  return RUN_ALL_TESTS();
}
