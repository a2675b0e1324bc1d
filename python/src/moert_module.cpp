// moert._moert: the Python bindings of the runtime (moert/model.h,
// moert/backend_registry.h, moert/compare.h) and of the `moert info/run`
// commands (runtime/cli/commands.h).  The package python/moert/ re-exports it.
//
// Threading: load, to, forward, append, generate and each step of a stream
// release the GIL while the runtime works (a load's progress callback takes it
// back for each call); a model runs one call at a time (a mutex per model),
// since it holds one KV cache.
#include <pybind11/iostream.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "moert/backend_registry.h"
#include "moert/bandwidth.h"
#include "moert/batch.h"
#include "moert/compare.h"
#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/model.h"
#include "moert/sampler.h"
#include "moert/tensor.h"

namespace py = pybind11;

namespace {

// One node's times summed over the runs of a profile.
struct NodeTotal {
  std::string node;
  std::string op;
  std::string device;
  int64_t calls = 0;
  double seconds = 0;
  bool timed = true;  // false when the backend did not time it in some run
};

// A loaded model shared by its Python object, its sessions and its streams.
struct ModelHandle {
  std::unique_ptr<moert::Model> model;
  std::string path;  // the checkpoint directory
  std::mutex mutex;  // one call on the model at a time

  // Profiling (Model.profile()): per-node times accumulated over every run
  // since it started, in the order nodes first ran.
  bool profiling = false;
  int64_t profiled_runs = 0;
  std::vector<NodeTotal> totals;
  std::map<std::pair<std::string, std::string>, size_t> total_of;  // (node, device) -> index

  int64_t vocab() const { return model->info().vocab_size; }

  // Adds the executor's timings of the run that just ended; called under the
  // mutex after each successful run.
  void record_run() {
    if (!profiling) return;
    ++profiled_runs;
    for (const moert::NodeTiming& t : model->executor().profile()) {
      auto [it, added] = total_of.try_emplace({t.node, t.device}, totals.size());
      if (added) totals.push_back({t.node, t.op, t.device, 0, 0.0, true});
      NodeTotal& n = totals[it->second];
      ++n.calls;
      if (t.seconds >= 0)
        n.seconds += t.seconds;
      else
        n.timed = false;
    }
  }
};

// Ctrl-C while the runtime works without the GIL.  poll() takes the GIL and
// runs Python's signal handlers; when one raised (KeyboardInterrupt for
// SIGINT), poll() keeps the exception and returns true from then on, so that
// the work stops at its next check; rethrow() raises it once the work
// unwound.  Python runs signal handlers in its main thread only, so poll()
// on another thread answers false without the GIL, and on the main thread it
// takes the GIL at most every kInterval: a decode loop polling at each token
// does not queue for the GIL behind other Python threads.
class SignalCheck {
 public:
  SignalCheck() : main_thread_(PyThread_get_thread_ident() == main_thread_ident()) {}

  bool poll() {
    if (error_) return true;
    if (!main_thread_) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < kInterval) return false;
    last_ = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() == 0) return false;
    try {
      throw py::error_already_set();
    } catch (...) {
      error_ = std::current_exception();
    }
    return true;
  }
  void rethrow() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  static constexpr std::chrono::milliseconds kInterval{20};
  // Called with the GIL held (SignalCheck is made in binding code).
  static unsigned long main_thread_ident() {
    static const unsigned long ident =
        py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    return ident;
  }
  bool main_thread_;
  std::chrono::steady_clock::time_point last_{};
  std::exception_ptr error_;
};

// A Python progress callable (stage, done, total) as the runtime's
// LoadProgress, and Ctrl-C as its LoadOptions::interrupted.  The runtime
// calls both from the loading thread with the GIL released; each call takes
// the GIL.  A Python exception aborts the load: it is kept and re-raised once
// the load unwound.
class ProgressCallback {
 public:
  explicit ProgressCallback(const py::object& fn) : fn_(fn) {
    if (!fn_.is_none() && !PyCallable_Check(fn_.ptr()))
      throw py::type_error("progress must be a callable (stage, done, total) or None, got " +
                           py::str(py::type::of(fn_).attr("__name__")).cast<std::string>());
  }

  moert::LoadProgress callback() {
    if (fn_.is_none()) return nullptr;
    return [this](const std::string& stage, uint64_t done, uint64_t total) {
      py::gil_scoped_acquire gil;
      try {
        fn_(stage, done, total);
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      } catch (...) {
        error_ = std::current_exception();
        throw moert::Error("interrupted by the progress callback");
      }
    };
  }
  std::function<bool()> interrupted() {
    return [this] { return signals_.poll(); };
  }

  // Runs `work` without the GIL; re-raises the callback's exception, or
  // KeyboardInterrupt, if either aborted the work.
  template <typename Work>
  void run(Work&& work) {
    try {
      py::gil_scoped_release release;
      work();
    } catch (...) {
      if (error_) std::rethrow_exception(error_);
      signals_.rethrow();
      throw;
    }
  }

 private:
  py::object fn_;
  std::exception_ptr error_;
  SignalCheck signals_;
};

// The host's read bandwidth in bytes/s, measured on the first call (up to
// about a second) and cached for the process.
double host_read_bandwidth() {
  static std::once_flag once;
  static double bytes_per_second = 0;
  py::gil_scoped_release release;
  std::call_once(once, [] { bytes_per_second = moert::measure_read_bandwidth().bytes_per_second; });
  return bytes_per_second;
}

std::string out_of_vocab(long long id, size_t position, int64_t vocab) {
  return "token id " + std::to_string(id) + " at position " + std::to_string(position) +
         " is outside the vocabulary [0, " + std::to_string(vocab) + ")";
}

// Token ids from a list/tuple/iterable of ints or a 1-D NumPy integer array.
// Ids beyond int32 are refused here with the runtime's message; the others
// are checked by the runtime itself.
std::vector<int32_t> token_ids(const py::handle& obj, int64_t vocab) {
  std::vector<long long> wide;
  if (py::isinstance<py::array>(obj)) {
    auto arr = py::reinterpret_borrow<py::array>(obj);
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
      throw py::type_error("token ids must be integers, got a NumPy array of dtype " +
                           py::str(arr.dtype()).cast<std::string>());
    if (arr.ndim() != 1)
      throw py::value_error("token ids must be a 1-D array, got " + std::to_string(arr.ndim()) +
                            " dimensions");
    auto as_i64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    const int64_t* p = as_i64.data();
    wide.assign(p, p + as_i64.size());
  } else {
    if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj))
      throw py::type_error("token ids must be a sequence of ints, got a string");
    for (const py::handle& item : py::iter(obj)) {
      if (py::isinstance<py::bool_>(item) || py::isinstance<py::float_>(item))
        throw py::type_error("token ids must be ints, got " +
                             py::str(py::type::of(item).attr("__name__")).cast<std::string>());
      PyObject* index = PyNumber_Index(item.ptr());
      if (!index) throw py::error_already_set();
      int overflow = 0;
      long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
      Py_DECREF(index);
      if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
      if (overflow != 0) v = overflow > 0 ? LLONG_MAX : LLONG_MIN;
      wide.push_back(v);
    }
  }
  std::vector<int32_t> ids(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) {
    if (wide[i] < INT32_MIN || wide[i] > INT32_MAX)
      throw moert::Error(out_of_vocab(wide[i], i, vocab));
    ids[i] = static_cast<int32_t>(wide[i]);
  }
  return ids;
}

// Copies f32 logits [rows, vocab] (any float dtype) into `dst`.
void copy_logits(const moert::Tensor& logits, float* dst, size_t rows, int64_t vocab) {
  moert::check(
      logits.rank() == 2 && logits.dim(0) == static_cast<int64_t>(rows) && logits.dim(1) == vocab,
      "unexpected logits " + logits.describe());
  if (logits.dtype() == moert::DType::f32) {
    std::memcpy(dst, logits.data(), logits.nbytes());
  } else {
    const size_t n = static_cast<size_t>(logits.numel());
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(logits.at(i));
  }
}

// Runs `run` (returning logits for `rows` tokens) without the GIL, under the
// model's mutex, and returns a fresh float32 array [rows, vocab].
template <typename Run>
py::array_t<float> logits_array(ModelHandle& h, size_t rows, Run&& run) {
  const int64_t vocab = h.vocab();
  py::array_t<float> out({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(vocab)});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(h.mutex);
    moert::Tensor logits = run();
    h.record_run();
    copy_logits(logits, dst, rows, vocab);
  }
  return out;
}

moert::GenerateOptions generate_options(int64_t max_new_tokens, double temperature, int64_t top_k,
                                        double top_p, uint64_t seed,
                                        const std::vector<int32_t>& stop) {
  moert::GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.sampling.temperature = temperature;
  o.sampling.top_k = top_k;
  o.sampling.top_p = top_p;
  o.sampling.seed = seed;
  o.stop_tokens = stop;
  return o;
}

class PySession {
 public:
  PySession(std::shared_ptr<ModelHandle> handle, moert::Session session)
      : handle_(std::move(handle)), session_(std::move(session)) {}
  PySession(PySession&&) = default;
  // Its cache positions go back to the pool under the model's lock.
  ~PySession() {
    if (!handle_ || !session_) return;
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    session_.reset();
  }

  py::array_t<float> append(const py::handle& tokens, bool all_logits) {
    std::vector<int32_t> ids = token_ids(tokens, handle_->vocab());
    return logits_array(*handle_, all_logits ? ids.size() : 1,
                        [&] { return session_->append(ids, all_logits); });
  }
  int64_t position() const {
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return session_->position();
  }

 private:
  std::shared_ptr<ModelHandle> handle_;
  std::optional<moert::Session> session_;
};

// moert.Engine: a BatchGenerator on a model (continuous batching), each
// call under the model's lock; step() runs without the GIL.
class PyEngine {
 public:
  PyEngine(std::shared_ptr<ModelHandle> handle, int64_t step_tokens) : handle_(std::move(handle)) {
    moert::BatchOptions o;
    o.step_tokens = step_tokens;
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    generator_ = std::make_unique<moert::BatchGenerator>(*handle_->model, o);
  }
  PyEngine(PyEngine&&) = default;
  ~PyEngine() {
    if (!handle_ || !generator_) return;
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    generator_.reset();
  }

  int64_t submit(const py::handle& prompt, int64_t max_new_tokens, double temperature,
                 int64_t top_k, double top_p, uint64_t seed, const py::handle& stop) {
    std::vector<int32_t> ids = token_ids(prompt, handle_->vocab());
    moert::GenerateOptions o = generate_options(max_new_tokens, temperature, top_k, top_p, seed,
                                                token_ids(stop, handle_->vocab()));
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return generator_->submit(std::move(ids), std::move(o));
  }

  void cancel(int64_t request) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    generator_->cancel(request);
  }

  py::list step() {
    std::vector<moert::BatchEvent> events;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(handle_->mutex);
      events = generator_->step();
      handle_->record_run();
    }
    py::list out;
    for (const moert::BatchEvent& e : events)
      out.append(py::make_tuple(e.request, e.token ? py::object(py::int_(*e.token)) : py::none(),
                                e.finished, e.finish_reason));
    return out;
  }

  bool idle() {
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return generator_->idle();
  }
  size_t running() {
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return generator_->running();
  }
  size_t waiting() {
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return generator_->waiting();
  }

 private:
  std::shared_ptr<ModelHandle> handle_;
  std::unique_ptr<moert::BatchGenerator> generator_;
};

// Model::generate one token at a time: the same sampler, the same stopping
// rules, so the tokens equal generate()'s.  Each step runs when the next
// token is asked for.
// Python iterator over moert::TokenGenerator, holding the model's lock
// while a step runs and releasing the GIL.
class TokenStream {
 public:
  TokenStream(std::shared_ptr<ModelHandle> handle, const std::vector<int32_t>& prompt,
              const moert::GenerateOptions& options)
      : handle_(std::move(handle)), generator_(make(*handle_, prompt, options)) {}

  // The next token, or nothing when generation has ended.
  std::optional<int32_t> next() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    std::optional<int32_t> token = generator_.next();
    if (token) handle_->record_run();  // every token comes from one run
    return token;
  }

 private:
  static moert::TokenGenerator make(ModelHandle& h, const std::vector<int32_t>& prompt,
                                    const moert::GenerateOptions& options) {
    py::gil_scoped_release release;  // never wait for the mutex holding the GIL
    std::lock_guard<std::mutex> lock(h.mutex);
    return h.model->generator(prompt, options);
  }
  std::shared_ptr<ModelHandle> handle_;
  moert::TokenGenerator generator_;
};

class PyModel {
 public:
  PyModel(std::unique_ptr<moert::Model> model, std::string path)
      : handle_(std::make_shared<ModelHandle>()) {
    handle_->model = std::move(model);
    handle_->path = std::move(path);
  }

  py::dict info() const {
    const moert::ModelInfo& i = handle_->model->info();
    py::dict d;
    d["architecture"] = i.architecture;
    d["model_type"] = i.model_type;
    d["vocab_size"] = i.vocab_size;
    d["hidden_size"] = i.hidden_size;
    d["num_layers"] = i.num_layers;
    d["num_experts"] = i.num_experts;
    d["experts_per_token"] = i.experts_per_token;
    d["max_context"] = i.max_context;
    d["max_sequences"] = i.max_sequences;
    d["kv_cache_tokens"] = i.kv_cache_tokens;
    d["weight_dtype"] = i.weight_dtype;
    d["notes"] = i.notes;
    return d;
  }

  py::dict summary(bool roofline) const {
    const moert::ModelSummary s = handle_->model->summary();
    py::dict d;
    d["total_params"] = s.total_params;
    d["active_params"] = s.active_params;
    d["weight_bytes"] = s.weight_bytes;
    d["bytes_per_token"] = s.bytes_per_token;
    d["kv_bytes_per_token"] = s.kv_bytes_per_token;
    d["weight_dtype"] = s.weight_dtype;
    std::string text = s.str();
    if (roofline) {
      const double bw = host_read_bandwidth();
      const double seconds = s.roofline_s_per_token(bw);
      d["read_bandwidth"] = bw;
      d["roofline_s_per_token"] = seconds;
      d["roofline_tok_s"] = seconds > 0 ? 1.0 / seconds : 0.0;
      text += s.roofline_str(bw);
    }
    d["text"] = text;
    return d;
  }

  py::array_t<float> forward(const py::handle& tokens) {
    std::vector<int32_t> ids = token_ids(tokens, handle_->vocab());
    return logits_array(*handle_, ids.size(), [&] { return handle_->model->forward(ids); });
  }

  PySession session() {
    py::gil_scoped_release release;  // never wait for the mutex holding the GIL
    std::lock_guard<std::mutex> lock(handle_->mutex);
    return PySession(handle_, handle_->model->session());
  }

  std::vector<int32_t> generate(const py::handle& prompt, int64_t max_new_tokens,
                                double temperature, int64_t top_k, double top_p, uint64_t seed,
                                const py::handle& stop) {
    std::vector<int32_t> ids = token_ids(prompt, handle_->vocab());
    moert::GenerateOptions o = generate_options(max_new_tokens, temperature, top_k, top_p, seed,
                                                token_ids(stop, handle_->vocab()));
    SignalCheck signals;
    std::vector<int32_t> out;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(handle_->mutex);
      // Each token comes from one run: record its profile before the next.
      // Ctrl-C stops the generation after the token in progress.
      out = handle_->model->generate(ids, o, [&](int32_t) {
        handle_->record_run();
        return !signals.poll();
      });
    }
    signals.rethrow();
    return out;
  }

  // Model.generate_batch: prompt i sampled with seed + i.
  std::vector<std::vector<int32_t>> generate_batch(const py::list& prompts, int64_t max_new_tokens,
                                                   double temperature, int64_t top_k, double top_p,
                                                   uint64_t seed, const py::handle& stop,
                                                   int64_t step_tokens) {
    std::vector<std::vector<int32_t>> ids;
    std::vector<moert::GenerateOptions> options;
    const std::vector<int32_t> stops = token_ids(stop, handle_->vocab());
    for (size_t i = 0; i < prompts.size(); ++i) {
      ids.push_back(token_ids(prompts[i], handle_->vocab()));
      options.push_back(
          generate_options(max_new_tokens, temperature, top_k, top_p, seed + i, stops));
    }
    if (ids.empty()) return {};
    moert::BatchOptions b;
    b.step_tokens = step_tokens;
    SignalCheck signals;
    std::vector<std::vector<int32_t>> out;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(handle_->mutex);
      // Ctrl-C stops the generation after the step in progress.
      out =
          moert::generate_batch(*handle_->model, ids, options, b, [&] { return !signals.poll(); });
    }
    signals.rethrow();
    return out;
  }

  PyEngine engine(int64_t step_tokens) { return PyEngine(handle_, step_tokens); }

  TokenStream stream(const py::handle& prompt, int64_t max_new_tokens, double temperature,
                     int64_t top_k, double top_p, uint64_t seed, const py::handle& stop) {
    std::vector<int32_t> ids = token_ids(prompt, handle_->vocab());
    return TokenStream(handle_, std::move(ids),
                       generate_options(max_new_tokens, temperature, top_k, top_p, seed,
                                        token_ids(stop, handle_->vocab())));
  }

  py::list fallbacks() const {
    py::list out;
    for (const moert::Fallback& f : handle_->model->executor().fallbacks()) {
      py::dict d;
      d["node"] = f.node;
      d["op"] = f.op;
      d["reason"] = f.reason;
      out.append(d);
    }
    return out;
  }

  std::string placement_report() const { return handle_->model->executor().placement_report(); }

  void to(const std::string& backend, bool strict, const py::object& progress) {
    ProgressCallback cb(progress);
    cb.run([&] {
      std::lock_guard<std::mutex> lock(handle_->mutex);
      handle_->model->to(backend, strict, cb.callback());
      if (handle_->profiling) handle_->model->executor().set_profiling(true);
    });
  }

  std::string device() const { return handle_->model->device(); }
  const std::string& path() const { return handle_->path; }

  void profile_start() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(handle_->mutex);
    moert::check(!handle_->profiling, "a profile of this model is already running");
    handle_->profiling = true;
    handle_->profiled_runs = 0;
    handle_->totals.clear();
    handle_->total_of.clear();
    handle_->model->executor().set_profiling(true);
  }

  py::dict profile_stop() {
    std::vector<NodeTotal> totals;
    int64_t runs = 0;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(handle_->mutex);
      handle_->model->executor().set_profiling(false);
      handle_->profiling = false;
      totals.swap(handle_->totals);
      handle_->total_of.clear();
      runs = handle_->profiled_runs;
    }
    py::list nodes;
    for (const NodeTotal& n : totals) {
      py::dict d;
      d["node"] = n.node;
      d["op"] = n.op;
      d["device"] = n.device;
      d["calls"] = n.calls;
      d["seconds"] = n.timed ? py::object(py::float_(n.seconds)) : py::object(py::none());
      nodes.append(d);
    }
    py::dict out;
    out["runs"] = runs;
    out["nodes"] = nodes;
    return out;
  }

  py::dict memory() const {
    const moert::MemoryReport r = handle_->model->executor().memory();
    py::dict arenas;
    for (const auto& [device, bytes] : r.arena_bytes) arenas[py::str(device)] = bytes;
    py::dict d;
    d["arena_bytes"] = arenas;
    d["naive_bytes"] = r.naive_bytes;
    d["state_bytes"] = r.state_bytes;
    return d;
  }

  std::string repr() const {
    const moert::ModelInfo& i = handle_->model->info();
    return "<moert.Model " + i.architecture + " (" + i.model_type + "), " +
           std::to_string(i.num_layers) + " layers, vocab " + std::to_string(i.vocab_size) +
           ", max_context " + std::to_string(i.max_context) + ">";
  }

 private:
  std::shared_ptr<ModelHandle> handle_;
};

py::list backends() {
  py::list out;
  for (const auto& b : moert::BackendRegistry::global().backends()) {
    py::list devices;
    for (int32_t d = 0; d < b->device_count(); ++d) {
      moert::DeviceInfo info = b->device_info(d);
      py::dict dev;
      dev["name"] = info.name;
      dev["kind"] = moert::device_kind_name(info.kind);
      dev["total_memory"] = info.total_memory;
      dev["free_memory"] = info.free_memory;
      dev["capabilities"] = info.capabilities;
      devices.append(dev);
    }
    py::dict e;
    e["name"] = b->name();
    e["available"] = b->available();
    e["reason"] = b->unavailable_reason();
    e["path"] = b->path();
    e["devices"] = devices;
    out.append(e);
  }
  return out;
}

py::list plugin_failures() {
  py::list out;
  for (const moert::PluginLoadFailure& f : moert::BackendRegistry::global().failures()) {
    py::dict d;
    d["path"] = f.path;
    d["reason"] = f.reason;
    out.append(d);
  }
  return out;
}

moert::LoadOptions load_options(const std::string& what, const std::string& backend,
                                const std::string& dtype, int64_t max_context, bool strict,
                                const std::string& quantize, const std::string& precision,
                                const std::string& kv_dtype, const std::string& mla_cache,
                                int64_t max_sequences, int64_t kv_cache_tokens,
                                int64_t prefill_chunk) {
  moert::LoadOptions o;
  o.max_sequences = max_sequences;
  o.kv_cache_tokens = kv_cache_tokens;
  o.prefill_chunk = prefill_chunk;
  o.device = backend;
  std::optional<moert::DType> t = moert::dtype_from_name(dtype);
  moert::check(t.has_value(), what + ": unknown dtype '" + dtype + "' (expected f32, bf16 or f16)");
  o.dtype = *t;
  o.max_context = max_context;
  o.strict = strict;
  o.quantize = quantize;
  o.precision = precision;
  o.kv_dtype = kv_dtype;
  o.mla_cache = mla_cache;
  return o;
}

PyModel load(const std::string& path, const std::string& backend, const std::string& dtype,
             int64_t max_context, bool strict, const py::object& progress,
             const std::string& quantize, const std::string& precision, const std::string& kv_dtype,
             const std::string& mla_cache, int64_t max_sequences, int64_t kv_cache_tokens,
             int64_t prefill_chunk) {
  moert::LoadOptions o =
      load_options("load", backend, dtype, max_context, strict, quantize, precision, kv_dtype,
                   mla_cache, max_sequences, kv_cache_tokens, prefill_chunk);
  ProgressCallback cb(progress);
  o.progress = cb.callback();
  o.interrupted = cb.interrupted();
  std::unique_ptr<moert::Model> model;
  cb.run([&] { model = moert::Model::load(path, o); });
  return PyModel(std::move(model), path);
}

// moert.random_model(): Model::random from a config.json body.
PyModel random_model(const std::string& config_json, const std::string& weights, uint64_t seed,
                     double std_dev, const std::string& name, const std::string& backend,
                     const std::string& dtype, int64_t max_context, bool strict,
                     const std::string& quantize, const py::object& progress,
                     const std::string& precision, const std::string& kv_dtype,
                     const std::string& mla_cache, int64_t max_sequences, int64_t kv_cache_tokens,
                     int64_t prefill_chunk) {
  moert::LoadOptions o =
      load_options("random_model", backend, dtype, max_context, strict, quantize, precision,
                   kv_dtype, mla_cache, max_sequences, kv_cache_tokens, prefill_chunk);
  moert::RandomWeights w;
  w.dtype = weights;
  w.seed = seed;
  w.std = std_dev;
  w.name = name;
  ProgressCallback cb(progress);
  o.progress = cb.callback();
  o.interrupted = cb.interrupted();
  std::unique_ptr<moert::Model> model;
  cb.run([&] { model = moert::Model::random(config_json, w, o); });
  return PyModel(std::move(model), name);
}

// moert.compare()'s measurement (moert/compare.h): the prompt, the reference
// tokens and a dict per device.
py::dict compare_devices(const std::string& path, const std::vector<std::string>& devices,
                         int64_t prompt_tokens, int64_t new_tokens, int64_t repeat,
                         const std::string& dtype, uint64_t seed, const std::string& quantize,
                         const std::string& precision) {
  moert::CompareOptions o;
  o.prompt_tokens = prompt_tokens;
  o.new_tokens = new_tokens;
  o.repeat = repeat;
  o.seed = seed;
  std::optional<moert::DType> t = moert::dtype_from_name(dtype);
  moert::check(t.has_value(), "compare: unknown dtype '" + dtype + "' (expected f32, bf16 or f16)");
  o.load.dtype = *t;
  o.load.quantize = quantize;
  o.load.precision = precision;
  moert::CompareModel model;
  model.directory = path;
  moert::Comparison c;
  {
    py::gil_scoped_release release;
    c = moert::compare_devices(model, devices, o);
  }
  py::list rows;
  for (const moert::DeviceLatency& d : c.devices) {
    py::dict r;
    r["device"] = d.device;
    if (!d.error.empty()) {
      r["error"] = d.error;
      rows.append(r);
      continue;
    }
    r["kind"] = d.kind;
    r["load_s"] = d.load_s;
    r["prefill_s"] = d.prefill_s;
    r["decode_s"] = d.decode_s;
    r["prefill_tok_s"] = d.prefill_tok_s();
    r["decode_tok_s"] = d.decode_tok_s();
    r["decode_ms_p50"] = d.decode_ms_p50();
    r["decode_ms_p95"] = d.decode_ms_p95();
    r["fallbacks"] = d.fallbacks;
    r["peak_bytes"] = d.peak_bytes;
    r["bytes_per_token"] = d.bytes_per_token;
    r["max_abs_diff"] = d.max_abs_diff;
    r["max_rel_error"] = d.max_rel_error;
    r["agrees"] = d.agrees;
    rows.append(r);
  }
  py::dict out;
  out["prompt"] = c.prompt;
  out["reference_tokens"] = c.reference_tokens;
  out["tolerance"] = c.tolerance;
  out["rows"] = rows;
  return out;
}

// `moert info` / `moert run` (runtime/cli/commands.h) with Python hooks:
// encode(directory, text) -> ids, decode(directory, ids) -> str and a load
// progress callable (each may be None).  Output goes to sys.stdout and
// sys.stderr; returns the exit status.
int command_line(const std::vector<std::string>& args, const py::object& encode,
                 const py::object& decode, const py::object& progress) {
  moert::cli::Hooks hooks;
  if (!encode.is_none())
    hooks.encode = [&encode](const std::string& directory, const std::string& text) {
      py::gil_scoped_acquire gil;
      return encode(directory, text).cast<std::vector<int32_t>>();
    };
  if (!decode.is_none())
    hooks.decode = [&decode](const std::string& directory, const std::vector<int32_t>& ids) {
      py::gil_scoped_acquire gil;
      return decode(directory, ids).cast<std::string>();
    };
  ProgressCallback cb(progress);
  hooks.progress = cb.callback();
  py::scoped_ostream_redirect out;
  py::scoped_estream_redirect err;
  int status = 0;
  cb.run([&] { status = moert::cli::run_command(args, std::cout, std::cerr, hooks); });
  return status;
}

constexpr const char* kSamplingArgs = R"doc(
    max_new_tokens: how many tokens to generate at most.
    temperature: 0 picks the most likely token (greedy, lowest id on ties);
        otherwise logits are divided by it before sampling.
    top_k: sample among the k most likely tokens only (0: no limit).
    top_p: nucleus sampling, the smallest set of tokens whose probability
        reaches top_p (1.0: no limit).
    seed: seed of the sampler's random generator; the same seed gives the
        same tokens.
    stop: token ids that end generation; the stop token is included in the
        result.
)doc";

}  // namespace

PYBIND11_MODULE(_moert, m) {
  m.doc() = "moert: an inference runtime for Mixture-of-Experts language models.";
  m.attr("__version__") = MOERT_VERSION;

  auto& error = py::register_exception<moert::Error>(m, "Error", PyExc_RuntimeError);
  error.attr("__doc__") =
      "An error reported by the moert runtime (bad checkpoint, unknown backend, token out of "
      "range, context overflow ...); str(e) is the runtime's message.";

  m.def("backends", &backends, R"doc(The backends the runtime found.

Returns a list of dicts, one per backend (the built-in "reference" first):
    name: the backend's name, as used in load(..., backend=name).
    available: whether it has a usable device.
    reason: why it is unavailable ("" when available).
    path: the plugin file, or "(built-in)".
    devices: a list of dicts {name, kind, total_memory, free_memory, capabilities}
        (memory in bytes; kind is "cpu", "gpu", ...).

Plugins are searched in the directory holding libmoert, then in the
directories or files listed in MOERT_BACKEND_PATH (colon-separated).)doc");

  m.def("plugin_failures", &plugin_failures, R"doc(Plugin files that could not be loaded.

Returns a list of dicts {path, reason}: no entry point, another ABI major
version, a duplicate name ...  The other plugins still load.)doc");

  m.def("load", &load, py::arg("path"), py::arg("backend") = "reference", py::arg("dtype") = "f32",
        py::arg("max_context") = 0, py::arg("strict") = false, py::arg("progress") = py::none(),
        py::arg("quantize") = "", py::arg("precision") = "fast", py::arg("kv_dtype") = "",
        py::arg("mla_cache") = "latent", py::arg("max_sequences") = 16,
        py::arg("kv_cache_tokens") = 0, py::arg("prefill_chunk") = 512,
        R"doc(Loads a Hugging Face checkpoint directory and returns a Model.

The package's moert.load() wraps this one (progress bars on stderr, and the
moert.Model class with text and profiling helpers).

Args:
    path: directory with config.json and model.safetensors (or the shards
        listed in model.safetensors.index.json).
    backend: device to run on: "reference", "cpu", "cuda:1", ...
        (see backends()).
    dtype: activation dtype, "f32", "bf16" or "f16"; weights stay as stored.
    max_context: KV cache positions; 0 means min(max_position_embeddings,
        4096).
    strict: when True, an op the backend cannot run is an error instead of
        a fallback to the reference backend.
    progress: None, or a callable progress(stage, done, total) called while
        loading: stage "read" (the checkpoint paged in, file by file), then
        "build" and "prepare"; done and total count bytes of weights, done
        rises from 0 to total in each stage.  An exception it raises (or
        Ctrl-C) aborts the load and propagates.  It must not use the model.
    quantize: "" (weights as stored), "int8", "int4" or "mxfp4": pack every
        float or fp8 linear weight inside the decoder layers at load (round
        to nearest, groups of 32 along K).
    precision: "fast" (the default): with f32 activations, products with
        weights narrower than f32 may be formed in bf16 (x and the weight
        rounded to bf16, accumulated in f32; routers stay exact), as
        llama.cpp forms them; "exact": f32 products of the weights as
        stored, the checking mode.
    kv_dtype: the KV cache's element type: "" (the activation dtype),
        "f32", "bf16", "f16" or "fp8" (e4m3, a quarter of f32's bytes);
        summary()["kv_bytes_per_token"] shows what is allocated.
    mla_cache: DeepSeek's latent attention: "latent" (the default) caches one
        compressed vector per position, kv_b_proj folded into the query and
        output; "expanded" caches every head's key and value.
    max_sequences: sequences open at once (sessions, batched requests).
    kv_cache_tokens: positions of the KV cache pool the sequences share; 0
        means max_context.
    prefill_chunk: prompts longer than this run in chunks of this many tokens.

Raises:
    moert.Error: naming the file, tensor or parameter at fault (an unknown
        backend lists the available ones; an unknown model_type lists the
        supported ones).)doc");

  m.def("random_model", &random_model, py::arg("config_json"), py::arg("weights") = "bf16",
        py::arg("seed") = 0, py::arg("std") = 0.02, py::arg("name") = "config",
        py::arg("backend") = "reference", py::arg("dtype") = "f32", py::arg("max_context") = 0,
        py::arg("strict") = false, py::arg("quantize") = "", py::arg("progress") = py::none(),
        py::arg("precision") = "fast", py::arg("kv_dtype") = "", py::arg("mla_cache") = "latent",
        py::arg("max_sequences") = 16, py::arg("kv_cache_tokens") = 0,
        py::arg("prefill_chunk") = 512,
        R"doc(A Model with random weights built from a config.json body (a JSON str).

The package's moert.random_model() wraps this one.  weights: their storage,
"f32", "bf16", "f16", "fp8", or "int8", "int4", "mxfp4" (the bf16 weights
packed as quantize packs them); seed and std: the draw (N(0, std²), norms
1.0); name: names the config in errors and is the model's path.  backend,
dtype, max_context, strict, quantize, progress, precision, kv_dtype, mla_cache,
max_sequences, kv_cache_tokens, prefill_chunk: as for load().)doc");

  m.def("read_bandwidth", &host_read_bandwidth,
        R"doc(The host's memory read bandwidth in bytes per second.

Measured on the first call by streaming through a 512 MiB buffer with every
hardware thread (best of 5 passes, up to about a second) and cached for the
rest of the process.  It is the ceiling of a memory-bound decode step on the CPU.)doc");

  m.def("compare_devices", &compare_devices, py::arg("path"), py::arg("devices"),
        py::arg("prompt_tokens") = 32, py::arg("new_tokens") = 16, py::arg("repeat") = 3,
        py::arg("dtype") = "f32", py::arg("seed") = 0, py::arg("quantize") = "",
        py::arg("precision") = "fast",
        R"doc(Latency of a checkpoint on each device against the reference backend.

The measurement behind moert.compare() (moert/compare.h): a prompt of
prompt_tokens random ids (seed) and new_tokens greedy decode steps, after one
warm-up, repeat times, on each of `devices` (empty: every available one); the
decode steps are fed the reference backend's tokens, so that every logit row is
compared.  Returns {prompt, reference_tokens, tolerance, rows}: a row per
device, {device, error} when it failed, else {device, kind, load_s, prefill_s,
decode_s (seconds), prefill_tok_s, decode_tok_s, decode_ms_p50, decode_ms_p95,
fallbacks, peak_bytes, bytes_per_token, max_abs_diff, max_rel_error, agrees}.)doc");

  m.def("command_line", &command_line, py::arg("args"), py::arg("encode") = py::none(),
        py::arg("decode") = py::none(), py::arg("progress") = py::none(),
        R"doc(Runs `moert info ...` or `moert run ...` (args without the program name).

The same commands as the moert binary; encode(directory, text) -> ids and
decode(directory, ids) -> str enable --prompt TEXT, progress(stage, done,
total) sees the loading (unless --no-progress).  Writes to sys.stdout and
sys.stderr and returns the exit status (2: a usage error); runtime errors raise
moert.Error.)doc");

  m.def("supported_model_types", &moert::supported_model_types,
        "The model_type values (config.json) that load() understands.");

  py::class_<PySession>(m, "Session", R"doc(One sequence with its KV cache, from Model.session().

Sessions share the model's KV cache pool (kv_cache_tokens positions, up to
max_sequences sequences); a session's positions return to the pool when it
is garbage-collected.  When a new session needs room the pool lacks, the
least recently used session gives up its positions, and appending to it
then raises moert.Error ("replaced by a newer one").)doc")
      .def("append", &PySession::append, py::arg("token_ids"), py::arg("all_logits") = true,
           R"doc(Appends tokens to the sequence and returns their logits.

Args:
    token_ids: a list (or 1-D NumPy integer array) of token ids.
    all_logits: False returns only the last token's row (what generation
        needs; long inputs then never hold every row's logits).

Returns:
    numpy.ndarray of float32, shape [len(token_ids), vocab_size] (or
    [1, vocab_size] with all_logits=False).

Raises:
    moert.Error: a token id outside the vocabulary, a context overflow
        (position + len(token_ids) > max_context), or no room in the KV
        cache pool; the sequence is unchanged.)doc")
      .def_property_readonly("position", &PySession::position,
                             "Number of tokens in the sequence so far (cached in the KV cache).")
      .def("__repr__", [](const PySession& s) {
        return "<moert.Session position " + std::to_string(s.position()) + ">";
      });

  py::class_<PyEngine>(m, "Engine", R"doc(Continuous batching on one model, from Model.engine().

submit() queues a request and returns its id; each step() runs one
execution over every running request (their next tokens, and chunks of new
prompts) and returns the events it produced; cancel() ends a request.  A
request joins when a sequence and the KV cache positions for its prompt plus
max_new_tokens are free, in the order submitted.)doc")
      .def("submit", &PyEngine::submit, py::arg("prompt_ids"), py::arg("max_new_tokens") = 16,
           py::arg("temperature") = 0.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("seed") = 0, py::arg("stop") = py::tuple(),
           R"doc(Queues a request; returns its id (an int).

Raises moert.Error, queuing nothing, for an empty prompt, token ids outside
the vocabulary, max_new_tokens < 0, bad sampling options, a prompt with no
room for a new token within max_context, or a request larger than the
whole KV cache pool.)doc")
      .def("step", &PyEngine::step,
           R"doc(Runs one step; returns a list of (request, token, finished, reason) tuples.

token is the new token id, or None for a request that ended without one
(cancelled, or max_new_tokens=0); reason is "" while running, then "stop",
"length" or "cancelled".)doc")
      .def("cancel", &PyEngine::cancel, py::arg("request"),
           "Ends a request; its (request, None, True, \"cancelled\") event comes with the next "
           "step.")
      .def_property_readonly("idle", &PyEngine::idle, "No request running, waiting or to report.")
      .def_property_readonly("running", &PyEngine::running, "Requests in the batch.")
      .def_property_readonly("waiting", &PyEngine::waiting, "Requests queued for room.");

  py::class_<TokenStream>(m, "TokenStream", R"doc(Iterator over the tokens of Model.stream().

Each step runs the model when the next token is asked for; the tokens equal
those of Model.generate() with the same arguments.)doc")
      .def("__iter__", [](py::object self) { return self; })
      .def(
          "__next__",
          [](TokenStream& s) {
            std::optional<int32_t> t = s.next();
            if (!t) throw py::stop_iteration();
            return *t;
          },
          "The next generated token id.");

  const std::string generate_doc =
      std::string(R"doc(Generates tokens after a prompt; returns the new token ids (a list of int).

Args:
    prompt_ids: the prompt, a non-empty list or 1-D NumPy array of token ids.)doc") +
      kSamplingArgs + R"doc(
Generation also ends when the KV cache is full (max_context).)doc";
  const std::string stream_doc =
      std::string(
          R"doc(Like generate(), but returns an iterator yielding each token as it is produced.

Args:
    prompt_ids: the prompt, a non-empty list or 1-D NumPy array of token ids.)doc") +
      kSamplingArgs;

  py::class_<PyModel>(m, "Model", R"doc(A checkpoint loaded on a device, from moert.load().

Holds one KV-cached sequence: forward, session, generate and stream each
start a new one.  Model(other) is another handle on the same loaded model
(same weights, same sequence).)doc")
      .def(py::init<const PyModel&>(), py::arg("model"))
      .def("summary", &PyModel::summary, py::arg("roofline") = true,
           R"doc(What sparsity buys, as a dict:
    total_params, active_params: every weight element, and those a decoded
        token uses (unchosen experts excluded).
    weight_bytes, bytes_per_token: the weights as stored, and the bytes a
        decode step must read.
    kv_bytes_per_token: KV-cache bytes per position.
    weight_dtype: the weights' formats by share of bytes, as info's
        ("int4 g32 78%, bf16 22%": packed weights with their scales).
    read_bandwidth, roofline_s_per_token, roofline_tok_s (with roofline):
        the host's measured read bandwidth (read_bandwidth(), measured once
        per process) and the decode time per token it implies on the CPU,
        bytes_per_token / read_bandwidth, a lower bound.
    text: a readable rendering of the above.)doc")
      .def_property_readonly("info", &PyModel::info,
                             R"doc(What was read from config.json, as a dict:
architecture, model_type, vocab_size, hidden_size, num_layers, num_experts
(0 for dense models), experts_per_token, max_context (KV cache capacity of
this load) and weight_dtype ("bf16", or a mix such as "fp8 e4m3 61%, ..." or
"int4 g32 78%, bf16 22%": packed weights counted with their scales), and
notes: what the checkpoint holds that this load leaves out, one sentence each
(the multi-token-prediction layers of DeepSeek-V3 and GLM-4.5).)doc")
      .def("forward", &PyModel::forward, py::arg("token_ids"),
           R"doc(Logits of every position of a fresh sequence.

Args:
    token_ids: a list (or 1-D NumPy integer array) of token ids.

Returns:
    numpy.ndarray of float32, shape [len(token_ids), vocab_size].)doc")
      .def("session", &PyModel::session,
           "Starts a new sequence (an empty KV cache) and returns its Session.")
      .def("generate", &PyModel::generate, py::arg("prompt_ids"), py::arg("max_new_tokens") = 16,
           py::arg("temperature") = 0.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("seed") = 0, py::arg("stop") = py::tuple(), generate_doc.c_str())
      .def("stream", &PyModel::stream, py::arg("prompt_ids"), py::arg("max_new_tokens") = 16,
           py::arg("temperature") = 0.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("seed") = 0, py::arg("stop") = py::tuple(), stream_doc.c_str())
      .def("generate_batch", &PyModel::generate_batch, py::arg("prompts"),
           py::arg("max_new_tokens") = 16, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop") = py::tuple(),
           py::arg("step_tokens") = 512,
           R"doc(Generates after every prompt at once (continuous batching); returns a list of
token-id lists, one per prompt.

Each step runs the next token of every running prompt (and prompt chunks) in
one execution, so the weights are read once per step for all of them.
Prompts join as the KV cache pool has room for their prompt plus
max_new_tokens.  Sampling options as for generate(); prompt i is sampled
with seed + i.  step_tokens bounds the tokens of one step.)doc")
      .def("engine", &PyModel::engine, py::arg("step_tokens") = 512,
           R"doc(A batching Engine on this model: submit requests, step, cancel.)doc")
      .def_property_readonly("fallbacks", &PyModel::fallbacks,
                             R"doc(Nodes that run on the reference backend instead of the chosen
device: a list of dicts {node, op, reason}.)doc")
      .def(
          "to",
          [](py::object self, const std::string& backend, bool strict, const py::object& progress) {
            self.cast<PyModel&>().to(backend, strict, progress);
            return self;
          },
          py::arg("backend"), py::arg("strict") = false, py::arg("progress") = py::none(),
          "Moves the model to another backend without re-reading the checkpoint and returns "
          "it. The current sequence ends. On error (moert.Error) the model stays where it was. "
          "progress: None or a callable (stage, done, total), called for the 'prepare' stage.")
      .def_property_readonly("device", &PyModel::device, "The device the model runs on.")
      .def_property_readonly("path", &PyModel::path, "The checkpoint directory it was loaded from.")
      .def("_profile_start", &PyModel::profile_start,
           "Starts accumulating per-node times over every run (see moert.Model.profile).")
      .def("_profile_stop", &PyModel::profile_stop,
           "Stops profiling; returns {runs, nodes: [{node, op, device, calls, seconds}]} "
           "(seconds None where the backend does not time nodes).")
      .def("memory", &PyModel::memory,
           "Device memory of the last run: arena_bytes per device (activations, after the "
           "liveness planner), naive_bytes (without reuse) and state_bytes (KV caches).")
      .def("placement_report", &PyModel::placement_report,
           "A readable summary of placement, partitions, fallbacks and memory.")
      .def("__repr__", &PyModel::repr);
}
