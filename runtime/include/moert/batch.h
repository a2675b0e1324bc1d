// Continuous batching: many generation requests on one model.
//
//   moert::BatchGenerator batch(*model);
//   int64_t a = batch.submit({1, 2, 3}, {.max_new_tokens = 16});
//   int64_t b = batch.submit({4, 5}, {.max_new_tokens = 8});
//   while (!batch.idle())
//     for (const moert::BatchEvent& e : batch.step()) ...  // e.request, e.token, e.finished
//
// Each step() is one execution of the model (Model::step): every running
// request's next token, and chunks of the prompts of requests that joined,
// up to BatchOptions::step_tokens tokens in all.  A request joins when a
// sequence row and the cache blocks for its prompt plus max_new_tokens
// (capped at max_context) are free, in the order submitted; so a running
// request never finds the pool full, and one that cannot fit waits.
// Requests leave when they finish or are cancelled, and their blocks go to
// the next ones.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moert/model.h"
#include "moert/sampler.h"

namespace moert {

struct BatchOptions {
  // Tokens one step runs at most: the running requests' next tokens first,
  // then prompt chunks in the room left (at least one token of a prompt per
  // step, so prompts always progress).
  int64_t step_tokens = 512;
};

// What a step produced for one request.
struct BatchEvent {
  int64_t request = 0;
  std::optional<int32_t> token;  // the new token; absent for a request ended without one
  bool finished = false;
  // When finished: "stop" (a stop token, returned as the last token),
  // "length" (max_new_tokens, or the sequence reached max_context), or
  // "cancelled".
  std::string finish_reason;
};

class BatchGenerator {
 public:
  // `model` must outlive the generator; other sessions of it may be live.
  explicit BatchGenerator(Model& model, BatchOptions options = {});
  ~BatchGenerator();
  BatchGenerator(const BatchGenerator&) = delete;
  BatchGenerator& operator=(const BatchGenerator&) = delete;

  // Queues a request and returns its id.  Throws moert::Error, queuing
  // nothing, for an empty prompt, a token id outside the vocabulary,
  // max_new_tokens < 0, bad sampling options, a prompt that leaves no room
  // for a new token within max_context, or one that would need more cache
  // positions than the whole pool holds.
  int64_t submit(std::vector<int32_t> prompt, GenerateOptions options);
  // Ends a request: its finished event ("cancelled") comes with the next
  // step, and its cache blocks are returned.  Unknown or finished ids are
  // ignored.
  void cancel(int64_t request);
  // Runs one step; events in request order.  Empty when idle.
  std::vector<BatchEvent> step();

  bool idle() const { return running_.empty() && waiting_.empty() && cancelled_.empty(); }
  size_t running() const { return running_.size(); }
  size_t waiting() const { return waiting_.size(); }
  // Prompt tokens a request has been given so far (its cached prefix).
  int64_t prompt_tokens(int64_t request) const;

 private:
  struct Request {
    std::vector<int32_t> prompt;
    GenerateOptions options;
    Sampler sampler;
    int64_t sequence = 0;  // 0 until it joins
    int64_t fed = 0;       // prompt tokens run so far
    int64_t produced = 0;
    int32_t last = 0;  // the token to feed next once the prompt is in
  };
  void admit();
  void finish(int64_t id, std::vector<BatchEvent>& events, std::optional<int32_t> token,
              const char* reason);

  Model& model_;
  BatchOptions options_;
  int64_t next_id_ = 1;
  std::map<int64_t, Request> running_;
  std::deque<std::pair<int64_t, Request>> waiting_;
  std::vector<int64_t> cancelled_;  // ended, their events not yet given
};

// Every prompt's new tokens, generated together (a BatchGenerator run until
// idle); options[i] for prompt i, or options[0] for all when only one is
// given.  `keep_going` (optional) is asked after each step; false ends the
// generation there, with the tokens so far.
std::vector<std::vector<int32_t>> generate_batch(Model& model,
                                                 const std::vector<std::vector<int32_t>>& prompts,
                                                 const std::vector<GenerateOptions>& options,
                                                 BatchOptions batch = {},
                                                 const std::function<bool()>& keep_going = nullptr);

}  // namespace moert
