// The `moert info` and `moert run` commands, written once: the moert binary
// (moert_cli.cpp) runs them as they are, and `python -m moert` runs them
// through its compiled module, adding what needs Python (text prompts through
// the checkpoint's tokenizer, a loading bar) as hooks.
//
//   moert info [MODEL_DIR] [--backend NAME] [--quantize int8|int4|mxfp4] [--no-roofline]
//              [--no-progress]
//       backends found (and plugins that failed), what each device supports; a
//       model's summary with the host CPU's decode roofline (weight bytes per
//       token / measured read bandwidth; --no-roofline skips the measurement)
//   moert run MODEL_DIR [options]
//       prefill a prompt, decode, print the tokens and the timings
//
// run options: --backend NAME (default reference)  --prompt TEXT | --prompt-ids 1,2,3
//   --max-new-tokens N  --temperature T  --top-k K  --top-p P  --seed S  --stop 2,7
//   --dtype f32|bf16|f16  --quantize int8|int4|mxfp4 (pack the float linear weights inside
//   the decoder layers at load, LoadOptions::quantize)  --precision fast|exact
//   (LoadOptions::precision)  --max-context N  --strict  --no-progress
//   --logits-out FILE.npy (every logit row: the prompt's, then one per decode step,
//   float32 [rows, vocab])
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "moert/model.h"

namespace moert::cli {

struct Hooks {
  // The token ids of `text` for the checkpoint in `directory`, and the text
  // of ids; unset, --prompt TEXT is refused.
  std::function<std::vector<int32_t>(const std::string& directory, const std::string& text)> encode;
  std::function<std::string(const std::string& directory, const std::vector<int32_t>& ids)> decode;
  // Sees the loading of a model, unless --no-progress.
  LoadProgress progress;
};

// Runs the command in args[0] ("info" or "run") with the arguments after it,
// writing its results to `out`.  A usage error (an unknown command or option,
// a malformed value) is written to `err` with the usage; it returns 2 then,
// 0 otherwise.  Errors of the runtime and of the hooks propagate.
int run_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
                const Hooks& hooks = {});

}  // namespace moert::cli
