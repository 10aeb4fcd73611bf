// Row-major matmuls through cuBLASLt (column-major): C = alpha op(A) op(B) + beta C is computed as
// C^T = alpha op(B)^T op(A)^T + beta C^T, i.e. B goes in cuBLASLt's A slot and A in its B slot,
// each with its own transpose flag, and no data moves. Compute type CUBLAS_COMPUTE_32F, scale
// type float: float inputs run as true fp32 (never TF32), bf16 inputs on tensor cores with fp32
// accumulation.
//
// Every distinct call (types, transposes, shape, leading dimensions, pointer alignments) gets a
// plan on first sight: the matmul descriptor, the three layouts and the algorithm the heuristic
// picks. A training step of a shape seen before therefore makes no heuristic query and no
// allocation. Pointers need only be aligned to their element: the alignment each pointer has is
// told to the heuristic (which otherwise assumes 256 bytes) and is part of the plan's key, so an
// operand in the middle of a buffer gets an algorithm that can read it (a slower one where it is
// not 16-byte aligned, or where a leading dimension times the element size is not a multiple of
// 16 bytes).
//
// Empty products: M or N == 0 does nothing; K == 0 leaves C for beta == 1, zeroes it for
// beta == 0 and refuses any other beta. Not thread-safe, and the one workspace is shared:
// matmuls of one Gemm must not run on two streams at once, and a Gemm is destroyed only once its
// stream's work is done (its workspace goes back to the caching allocator at once).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "device_memory.hpp"
#include "kernels.hpp"

namespace lyre::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// Distinct plans kept before the cache starts over (shapes are few in training; generate with
// ever-new lengths must not grow it without bound).
constexpr size_t kMaxPlans = 4096;

template <typename T>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t data_type<bf16>() {
  return CUDA_R_16BF;
}

const char* type_name(cudaDataType_t t) { return t == CUDA_R_32F ? "float" : "bf16"; }

// The largest power of two dividing the address, up to 256 (what cuBLASLt assumes unless told
// otherwise). An algorithm chosen for a 256-aligned pointer may use vector loads a pointer into
// the middle of a buffer (a chunk of rows, an odd offset) cannot take, so the alignment is part of
// the plan's key and told to the heuristic.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 1;
  while (align < 256 && address % (2 * align) == 0) align *= 2;
  return align;
}

struct Key {
  cudaDataType_t in, out;
  bool trans_a, trans_b;
  int64_t M, N, K, lda, ldb, ldc;
  uint32_t align_a, align_b, align_c;

  auto tie() const {
    return std::tie(in, out, trans_a, trans_b, M, N, K, lda, ldb, ldc, align_a, align_b, align_c);
  }
  bool operator==(const Key& o) const { return tie() == o.tie(); }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(uint64_t(k.in) << 8 | uint64_t(k.out) << 4 | uint64_t(k.trans_a) << 1 | uint64_t(k.trans_b));
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) mix(uint64_t(v));
    mix(uint64_t(k.align_a) << 32 | uint64_t(k.align_b) << 16 | k.align_c);
    return size_t(h);
  }
};

std::string describe(const Key& k) {
  return std::string("matmul<") + type_name(k.in) + " -> " + type_name(k.out) + "> M=" + std::to_string(k.M) +
         " N=" + std::to_string(k.N) + " K=" + std::to_string(k.K) + " trans_a=" + (k.trans_a ? "1" : "0") +
         " trans_b=" + (k.trans_b ? "1" : "0") + " lda=" + std::to_string(k.lda) + " ldb=" + std::to_string(k.ldb) +
         " ldc=" + std::to_string(k.ldc) + " (pointer alignment A " + std::to_string(k.align_a) + ", B " +
         std::to_string(k.align_b) + ", C " + std::to_string(k.align_c) + " bytes)";
}

// One call's cuBLASLt objects. In cuBLASLt's (column-major) terms: m = N, n = M, k = K;
// its A is our B, its B is our A, its C/D is our C (C^T column-major is C row-major).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

std::unique_ptr<Plan> make_plan(cublasLtHandle_t handle, const Key& k) {
  auto plan = std::make_unique<Plan>();
  LYRE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Our B (K, N) row-major is B^T (N, K) column-major: op N gives op(B)^T. Our B^T case, (N, K)
  // row-major, reads as (K, N) column-major and needs op T. Likewise for A with (K, M).
  const cublasOperation_t op_b = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LYRE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)));
  LYRE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)));
  LYRE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, k.in, uint64_t(k.trans_b ? k.K : k.N),
                                               uint64_t(k.trans_b ? k.N : k.K), k.ldb));
  LYRE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, k.in, uint64_t(k.trans_a ? k.M : k.K),
                                               uint64_t(k.trans_a ? k.K : k.M), k.lda));
  LYRE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, k.out, uint64_t(k.N), uint64_t(k.M), k.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  const uint64_t workspace = kWorkspaceBytes;
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                         sizeof(workspace)));
  // cuBLASLt's A is our B and vice versa; D is C.
  const uint32_t align_a = k.align_b, align_b = k.align_a, align_c = k.align_c;
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                         sizeof(align_a)));
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                         sizeof(align_b)));
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                         sizeof(align_c)));
  LYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                         sizeof(align_c)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  LYRE_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1,
                                                   &result, &found));
  if (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda: cuBLASLt has no algorithm for this matmul");
  plan->algo = result.algo;
  return plan;
}

void check_arguments(const Key& k) {
  auto fail = [&k](const std::string& what) {
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: " + what + " in " + describe(k));
  };
  if (k.M < 0 || k.N < 0 || k.K < 0) fail("negative dimension");
  // Leading dimensions hold a row of the row-major matrix as stored (and are >= 1, as cuBLAS asks).
  if (k.lda < std::max<int64_t>(1, k.trans_a ? k.M : k.K)) fail("lda too small");
  if (k.ldb < std::max<int64_t>(1, k.trans_b ? k.K : k.N)) fail("ldb too small");
  if (k.ldc < std::max<int64_t>(1, k.N)) fail("ldc too small");
}

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans;

  ~Impl() {
    plans.clear();
    if (workspace != nullptr) device_free(workspace);
    if (handle != nullptr) cublasLtDestroy(handle);
  }
};

Gemm::Gemm() : impl_(new Impl) {
  try {
    LYRE_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
    impl_->workspace = device_allocate(kWorkspaceBytes, MemoryKind::workspace);
  } catch (...) {
    delete impl_;
    throw;
  }
}

Gemm::~Gemm() { delete impl_; }

template <typename TIn, typename TOut>
void Gemm::matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const TIn* A,
                  int64_t lda, const TIn* B, int64_t ldb, float beta, TOut* C, int64_t ldc, cudaStream_t stream) {
  static_assert(std::is_same_v<TOut, float> || std::is_same_v<TOut, TIn>, "C is float or the input type");
  const Key key{data_type<TIn>(), data_type<TOut>(), trans_a, trans_b, M, N, K, lda, ldb, ldc,
                alignment_of(A), alignment_of(B), alignment_of(C)};
  check_arguments(key);
  if (M == 0 || N == 0) return;
  try {
    if (K == 0) {
      // op(A) op(B) is an empty sum: C = beta C.
      if (beta == 1.0f) return;
      if (beta != 0.0f)
        throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                            "backend-cuda: K == 0 with beta other than 0 or 1 is not supported");
      LYRE_CUDA_CHECK(
          cudaMemset2DAsync(C, size_t(ldc) * sizeof(TOut), 0, size_t(N) * sizeof(TOut), size_t(M), stream));
      return;
    }
    auto it = impl_->plans.find(key);
    if (it == impl_->plans.end()) {
      if (impl_->plans.size() >= kMaxPlans) impl_->plans.clear();
      it = impl_->plans.emplace(key, make_plan(impl_->handle, key)).first;
    }
    const Plan& plan = *it->second;
    LYRE_CUBLAS_CHECK(cublasLtMatmul(impl_->handle, plan.op, &alpha, B, plan.a, A, plan.b, &beta, C, plan.c, C, plan.c,
                                     &plan.algo, impl_->workspace, kWorkspaceBytes, stream));
  } catch (const plugin::Error& e) {
    throw plugin::Error(e.code(), std::string(e.what()) + " in " + describe(key));
  }
}

template void Gemm::matmul<float, float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                         const float*, int64_t, float, float*, int64_t, cudaStream_t);
template void Gemm::matmul<bf16, bf16>(bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t,
                                       const bf16*, int64_t, float, bf16*, int64_t, cudaStream_t);
template void Gemm::matmul<bf16, float>(bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t,
                                        const bf16*, int64_t, float, float*, int64_t, cudaStream_t);

}  // namespace lyre::cuda
