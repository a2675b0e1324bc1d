#include "gemm.h"

#include <memory>
#include <string>

namespace moert::cuda {
namespace {

cudaDataType_t cuda_type(moert_dtype t) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      return CUDA_R_16BF;
    case MOERT_DTYPE_F16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// The largest power of two (up to 256) dividing every value: the alignment
// cuBLASLt may assume of an operand.
uint32_t alignment(const void* p, int64_t ld_bytes, int64_t stride_bytes) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | static_cast<uint64_t>(ld_bytes) |
               static_cast<uint64_t>(stride_bytes) | 256u;
  return static_cast<uint32_t>(v & (~v + 1));
}

template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtHandle {
  T h = nullptr;
  ~LtHandle() {
    if (h) Destroy(h);
  }
};
using Layout = LtHandle<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Desc = LtHandle<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Preference = LtHandle<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

void make_layout(Layout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                 int64_t batch, int64_t stride) {
  check_blas(cublasLtMatrixLayoutCreate(&l.h, type, static_cast<uint64_t>(rows),
                                        static_cast<uint64_t>(cols), ld),
             "creating a cuBLASLt layout");
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    check_blas(cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                sizeof(count)),
               "setting a cuBLASLt batch count");
    check_blas(cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                &stride, sizeof(stride)),
               "setting a cuBLASLt batch stride");
  }
}

}  // namespace

void gemm(Device& d, int64_t m, int64_t n, int64_t k, int64_t batch, const GemmOperand& a,
          const GemmOperand& b, bool b_transposed, float* y, int64_t ldy, int64_t y_batch_stride) {
  if (m == 0 || n == 0 || batch == 0) return;
  // Row-major y[m, n] is column-major y^T[n, m]: y^T = op(b)^T a^T, so
  // cuBLASLt's A is b (n x k: b [n, k] row-major is column-major k x n, read
  // transposed; b [k, n] row-major is column-major n x k as is) and its B is
  // a (column-major k x m).
  const cudaDataType_t type = cuda_type(a.dtype);
  const int64_t es = static_cast<int64_t>(plugin::dtype_size(a.dtype));
  GemmKey key;
  key.m = n;
  key.n = m;
  key.k = k;
  key.batch = batch;
  key.transpose_a = b_transposed;
  key.lda = b_transposed ? k : n;
  key.ldb = k;
  key.ldd = ldy;
  key.stride_a = b.batch_stride;
  key.stride_b = a.batch_stride;
  key.stride_d = y_batch_stride;
  key.a_type = key.b_type = static_cast<int32_t>(type);
  key.d_type = static_cast<int32_t>(CUDA_R_32F);
  key.compute = static_cast<int32_t>(CUBLAS_COMPUTE_32F);
  const uint32_t align_a = alignment(b.data, key.lda * es, key.stride_a * es);
  const uint32_t align_b = alignment(a.data, key.ldb * es, key.stride_b * es);
  const uint32_t align_d = alignment(y, ldy * 4, y_batch_stride * 4);
  // The alignments decide which kernels qualify: part of the key.
  key.a_type |= static_cast<int32_t>(align_a) << 16;
  key.b_type |= static_cast<int32_t>(align_b) << 16;
  key.d_type |= static_cast<int32_t>(align_d) << 16;

  Desc desc;
  check_blas(cublasLtMatmulDescCreate(&desc.h, CUBLAS_COMPUTE_32F, CUDA_R_32F),
             "creating a cuBLASLt matmul");
  const cublasOperation_t ta = b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
             "setting a cuBLASLt transpose");
  check_blas(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
             "setting a cuBLASLt transpose");
  Layout la, lb, ld;
  if (b_transposed)
    make_layout(la, type, k, n, key.lda, batch, key.stride_a);
  else
    make_layout(la, type, n, k, key.lda, batch, key.stride_a);
  make_layout(lb, type, k, m, key.ldb, batch, key.stride_b);
  make_layout(ld, CUDA_R_32F, n, m, ldy, batch, y_batch_stride);

  size_t workspace_bytes = 0;
  void* workspace = d.gemm_workspace(&workspace_bytes);
  const GemmPlan& plan = d.gemm_plans().get(key, [&] {
    Preference pref;
    check_blas(cublasLtMatmulPreferenceCreate(&pref.h), "creating a cuBLASLt preference");
    check_blas(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes, sizeof(workspace_bytes)),
        "setting the cuBLASLt workspace");
    for (auto [attr, value] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
                               std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
                               std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
                               std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}})
      check_blas(cublasLtMatmulPreferenceSetAttribute(pref.h, attr, &value, sizeof(value)),
                 "setting a cuBLASLt alignment");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    check_blas(cublasLtMatmulAlgoGetHeuristic(d.blas(), desc.h, la.h, lb.h, ld.h, ld.h, pref.h, 1,
                                              &result, &found),
               "asking cuBLASLt for an algorithm (" + key.str() + ")");
    GemmPlan p;
    p.found = found > 0;
    p.algo = result.algo;
    p.workspace = result.workspaceSize;
    return p;
  });
  if (!plan.found)
    plugin::fail("cuBLASLt has no algorithm for the GEMM " + key.str(), MOERT_ERR_UNSUPPORTED);
  const float one = 1.0f, zero = 0.0f;
  check_blas(cublasLtMatmul(d.blas(), desc.h, &one, b.data, la.h, a.data, lb.h, &zero, y, ld.h, y,
                            ld.h, &plan.algo, workspace, workspace_bytes, d.stream()),
             "running the GEMM " + key.str());
}

}  // namespace moert::cuda
