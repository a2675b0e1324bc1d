#include "moert/batch.h"

#include <algorithm>

#include "moert/error.h"

namespace moert {

BatchGenerator::BatchGenerator(Model& model, BatchOptions options)
    : model_(model), options_(options) {
  check(options_.step_tokens >= 1,
        "batch: step_tokens must be >= 1, got " + std::to_string(options_.step_tokens));
}

BatchGenerator::~BatchGenerator() {
  for (auto& [id, r] : running_) model_.close_sequence(r.sequence);
}

int64_t BatchGenerator::submit(std::vector<int32_t> prompt, GenerateOptions options) {
  const ModelInfo& info = model_.info();
  const int64_t n = static_cast<int64_t>(prompt.size());
  check(n > 0, "generate: the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i)
    check(prompt[i] >= 0 && prompt[i] < info.vocab_size,
          "token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
              " is outside the vocabulary [0, " + std::to_string(info.vocab_size) + ")");
  check(options.max_new_tokens >= 0,
        "generate: max_new_tokens must be >= 0, got " + std::to_string(options.max_new_tokens));
  check(n < info.max_context, "context overflow: the prompt's " + std::to_string(n) +
                                  " tokens leave no room for a new one within max_context " +
                                  std::to_string(info.max_context));
  const int64_t positions = std::min(n + options.max_new_tokens, info.max_context);
  check(positions <= info.kv_cache_tokens,
        "the request needs " + std::to_string(positions) +
            " cache positions (prompt + max_new_tokens) but the pool holds " +
            std::to_string(info.kv_cache_tokens) + " (load option kv_cache_tokens)");
  Sampler sampler(options.sampling);  // checks the sampling options
  const int64_t id = next_id_++;
  waiting_.emplace_back(id, Request{std::move(prompt), std::move(options), sampler});
  return id;
}

void BatchGenerator::cancel(int64_t request) {
  auto it = running_.find(request);
  if (it != running_.end()) {
    model_.close_sequence(it->second.sequence);
    running_.erase(it);
    cancelled_.push_back(request);
    return;
  }
  auto w = std::find_if(waiting_.begin(), waiting_.end(),
                        [&](const auto& entry) { return entry.first == request; });
  if (w != waiting_.end()) {
    waiting_.erase(w);
    cancelled_.push_back(request);
  }
}

int64_t BatchGenerator::prompt_tokens(int64_t request) const {
  auto it = running_.find(request);
  return it == running_.end() ? 0 : it->second.fed;
}

// Moves waiting requests in, in order, while a row and their blocks are free.
void BatchGenerator::admit() {
  const ModelInfo& info = model_.info();
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < info.max_sequences) {
    Request& r = waiting_.front().second;
    const int64_t positions = std::min(
        static_cast<int64_t>(r.prompt.size()) + r.options.max_new_tokens, info.max_context);
    if (positions > model_.free_kv_positions()) return;
    int64_t sequence = 0;
    try {
      sequence = model_.open_sequence();
    } catch (const Error&) {
      return;  // every row is taken (by sessions): wait
    }
    if (!model_.reserve(sequence, positions)) {
      model_.close_sequence(sequence);
      return;
    }
    r.sequence = sequence;
    running_.emplace(waiting_.front().first, std::move(r));
    waiting_.pop_front();
  }
}

void BatchGenerator::finish(int64_t id, std::vector<BatchEvent>& events,
                            std::optional<int32_t> token, const char* reason) {
  auto it = running_.find(id);
  model_.close_sequence(it->second.sequence);
  running_.erase(it);
  events.push_back({id, token, true, reason});
}

std::vector<BatchEvent> BatchGenerator::step() {
  std::vector<BatchEvent> events;
  for (int64_t id : cancelled_) events.push_back({id, std::nullopt, true, "cancelled"});
  cancelled_.clear();
  admit();
  // Requests asking for no tokens end as they join.
  for (auto it = running_.begin(); it != running_.end();) {
    const int64_t id = (it++)->first;
    if (running_.at(id).options.max_new_tokens == 0) finish(id, events, std::nullopt, "length");
  }
  std::vector<SequenceInput> inputs;
  std::vector<int64_t> ids;
  int64_t budget = options_.step_tokens;
  // Decode tokens first, then prompt chunks (the oldest request first).
  for (auto& [id, r] : running_)
    if (r.fed == static_cast<int64_t>(r.prompt.size())) {
      inputs.push_back({r.sequence, {r.last}, false});
      ids.push_back(id);
      --budget;
    }
  for (auto& [id, r] : running_) {
    const int64_t left = static_cast<int64_t>(r.prompt.size()) - r.fed;
    if (left == 0) continue;
    const int64_t take = std::min(left, std::max<int64_t>(budget, inputs.empty() ? 1 : 0));
    if (take <= 0) break;
    inputs.push_back(
        {r.sequence, {r.prompt.begin() + r.fed, r.prompt.begin() + r.fed + take}, false});
    ids.push_back(id);
    budget -= take;
  }
  if (inputs.empty()) {
    std::sort(events.begin(), events.end(),
              [](const BatchEvent& a, const BatchEvent& b) { return a.request < b.request; });
    return events;
  }
  const std::vector<Tensor> logits = model_.step(inputs);
  const int64_t vocab = model_.info().vocab_size, max_context = model_.info().max_context;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int64_t id = ids[i];
    Request& r = running_.at(id);
    const bool decoding = r.fed == static_cast<int64_t>(r.prompt.size());
    if (!decoding) {
      r.fed += static_cast<int64_t>(inputs[i].tokens.size());
      if (r.fed < static_cast<int64_t>(r.prompt.size())) continue;  // more prompt to come
    }
    const int32_t token = r.sampler.sample(logits[i].data_as<float>(), vocab);
    r.last = token;
    ++r.produced;
    const auto& stop = r.options.stop_tokens;
    if (std::find(stop.begin(), stop.end(), token) != stop.end())
      finish(id, events, token, "stop");
    else if (r.produced >= r.options.max_new_tokens ||
             model_.sequence_position(r.sequence) + 1 > max_context)
      finish(id, events, token, "length");
    else
      events.push_back({id, token, false, ""});
  }
  std::sort(events.begin(), events.end(),
            [](const BatchEvent& a, const BatchEvent& b) { return a.request < b.request; });
  return events;
}

std::vector<std::vector<int32_t>> generate_batch(Model& model,
                                                 const std::vector<std::vector<int32_t>>& prompts,
                                                 const std::vector<GenerateOptions>& options,
                                                 BatchOptions batch,
                                                 const std::function<bool()>& keep_going) {
  check(options.size() == 1 || options.size() == prompts.size(),
        "generate_batch: give one GenerateOptions, or one per prompt (" +
            std::to_string(prompts.size()) + "), got " + std::to_string(options.size()));
  BatchGenerator gen(model, batch);
  std::map<int64_t, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i)
    index[gen.submit(prompts[i], options[options.size() == 1 ? 0 : i])] = i;
  std::vector<std::vector<int32_t>> out(prompts.size());
  while (!gen.idle()) {
    for (const BatchEvent& e : gen.step())
      if (e.token) out[index.at(e.request)].push_back(*e.token);
    if (keep_going && !keep_going()) break;
  }
  return out;
}

}  // namespace moert
