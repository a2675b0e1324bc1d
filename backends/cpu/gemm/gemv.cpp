// The GEMV scheduler (gemv.h): splits tasks into passes of at most
// kGemvMaxRows rows of x, prepares each pass's x in the kernels' layout, and
// gives each OpenMP thread one contiguous run of weight rows across all the
// passes, balanced by bytes of weights, so every thread streams its own
// region of memory once.
#include "gemv.h"

#include <algorithm>
#include <vector>

#include "gemv_kernels.h"
#include "isa.h"
#include "parallel.h"
#include "scratch.h"

namespace moert::cpu::gemm {
namespace {

// Below this many bytes of weights a single thread does the whole product:
// waking the others costs more than it saves.
constexpr size_t kSerialBytes = 96 * 1024;

// Rows of a thread's share are rounded to this, so row groups stay whole.
constexpr int64_t kRowAlign = 4;

struct Pass {
  GemvTask task;
  float* xp = nullptr;  // prepared x
  size_t row_bytes = 0;
  size_t begin = 0;  // bytes of all passes before this one
};

}  // namespace

void gemv(const GemvTask* tasks, size_t count) {
  const bool avx512 = use_avx512();
  // Reused between calls; a reference, so the OpenMP threads below see the
  // calling thread's list rather than their own thread_local instances.
  thread_local std::vector<Pass> pass_list;
  std::vector<Pass>& passes = pass_list;
  passes.clear();
  size_t x_floats = 0, total = 0;
  int64_t max_x = 0;
  for (size_t t = 0; t < count; ++t) {
    const GemvTask& task = tasks[t];
    if (task.m <= 0 || task.w->rows <= 0) continue;
    // Equal passes: 12 rows as 6 + 6 rather than 8 + 4.
    const int64_t count_passes = (task.m + kGemvMaxRows - 1) / kGemvMaxRows;
    const int64_t per_pass = (task.m + count_passes - 1) / count_passes;
    for (int64_t r = 0; r < task.m; r += per_pass) {
      Pass p;
      p.task = task;
      p.task.x = task.x + r * task.ldx;
      p.task.y = task.y + r * task.ldy;
      p.task.m = std::min(per_pass, task.m - r);
      p.row_bytes = task.w->stored_row_bytes() + 64;
      p.begin = total;
      total += p.row_bytes * static_cast<size_t>(task.w->rows);
      const int64_t xs = p.task.m * detail::gemv_x_stride(task.w->cols);
      x_floats += static_cast<size_t>(xs);
      if (task.w->scaled() || task.w->packed()) max_x = std::max(max_x, xs);
      passes.push_back(p);
    }
  }
  if (passes.empty()) return;

  // K == 0: every product is an empty sum.
  for (Pass& p : passes)
    if (p.task.w->cols == 0)
      for (int64_t r = 0; r < p.task.m; ++r)
        std::fill(p.task.y + r * p.task.ldy, p.task.y + r * p.task.ldy + p.task.w->rows, 0.0f);

  float* xp = scratch<float>(Slot::gemv_x, x_floats);
  for (Pass& p : passes) {
    p.xp = xp;
    if (p.task.int8_products && detail::gemv_int8_packed(*p.task.w))
      detail::gemv_prepare_x_int8(*p.task.w, p.task.x, p.task.ldx, p.task.m, p.xp);
    else if (avx512)
      detail::gemv_prepare_x_avx512(*p.task.w, p.task.x, p.task.ldx, p.task.m, p.xp);
    else
      detail::gemv_prepare_x_portable(*p.task.w, p.task.x, p.task.ldx, p.task.m, p.xp);
    xp += p.task.m * detail::gemv_x_stride(p.task.w->cols);
  }

  const int threads = total < kSerialBytes
                          ? 1
                          : static_cast<int>(std::min<size_t>(static_cast<size_t>(num_threads()),
                                                              total / (kSerialBytes / 2)));
  float* tmp_all = scratch<float>(Slot::gemv_thread, static_cast<size_t>(max_x) * threads);

  // Thread t's share starts at byte total * t / threads of the passes laid
  // end to end, moved to a row boundary of the pass it falls in.
  auto start_of = [&](int t, int nt, size_t& pass, int64_t& row) {
    const size_t at = total * static_cast<size_t>(t) / static_cast<size_t>(nt);
    pass = 0;
    while (pass + 1 < passes.size() && passes[pass + 1].begin <= at) ++pass;
    const Pass& p = passes[pass];
    row =
        static_cast<int64_t>((at - p.begin) / p.row_bytes + kRowAlign / 2) / kRowAlign * kRowAlign;
    if (t == 0) row = 0;
    if (row >= p.task.w->rows) {
      ++pass;
      row = 0;
    }
  };
  auto work = [&](int t, int nt) {
    size_t pass, end_pass;
    int64_t row, end_row;
    start_of(t, nt, pass, row);
    if (t + 1 == nt) {
      end_pass = passes.size();
      end_row = 0;
    } else {
      start_of(t + 1, nt, end_pass, end_row);
    }
    float* tmp = tmp_all + static_cast<size_t>(max_x) * static_cast<size_t>(t);
    for (; pass < passes.size() && (pass < end_pass || (pass == end_pass && row < end_row));
         ++pass, row = 0) {
      const Pass& p = passes[pass];
      const int64_t stop = pass == end_pass ? end_row : p.task.w->rows;
      if (row >= stop || p.task.w->cols == 0) continue;
      if (p.task.int8_products && detail::gemv_int8_packed(*p.task.w))
        detail::gemv_rows_int8(*p.task.w, p.xp, p.task.m, row, stop, p.task.y, p.task.ldy);
      else if (avx512)
        detail::gemv_rows_avx512(*p.task.w, p.xp, p.task.m, row, stop, p.task.y, p.task.ldy, tmp);
      else
        detail::gemv_rows_portable(*p.task.w, p.xp, p.task.m, row, stop, p.task.y, p.task.ldy, tmp);
    }
  };
  if (threads <= 1) {
    work(0, 1);
    return;
  }
#pragma omp parallel num_threads(threads)
  work(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace moert::cpu::gemm
