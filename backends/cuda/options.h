// Switches of the CUDA backend read once from the environment.  The fast
// kernels (vectorised GEMV loads, tensor-core expert tiles, tiled prefill
// attention, CUDA-graph replay of decode steps) each have a simple form
// that came first; MOERT_CUDA_BASELINE_KERNELS=1 selects the simple forms
// everywhere, so a GPU run can check the fast forms against them and time
// one against the other (scripts/gpu-check.sh runs the conformance suite
// both ways).
#pragma once

namespace moert::cuda {

// MOERT_CUDA_BASELINE_KERNELS=1: only the simple kernels, and no graphs.
bool baseline_kernels();
// MOERT_CUDA_GRAPHS=0: decode steps are launched node by node instead of
// being captured and replayed as a CUDA graph (also off under baseline).
bool graphs_enabled();

}  // namespace moert::cuda
