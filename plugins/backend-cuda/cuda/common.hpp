// What every file of backend-cuda uses: CUDA and cuBLAS status checks that become
// lyre::plugin::Error (naming the call, the file and the line), the bf16 type, and the
// activation dtype switch.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "lyre/plugin.hpp"

namespace lyre::cuda {

using bf16 = __nv_bfloat16;

// What the model computes in: bf16 activations and matmul operands with fp32 master weights,
// gradients and optimizer state (Kithara's mixed_bfloat16), or fp32 throughout.
enum class Precision { bf16, fp32 };
inline const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace lyre::cuda

// CUDA_CHECK(cudaMemcpyAsync(...)); throws Error(INTERNAL, or OUT_OF_MEMORY for
// cudaErrorMemoryAllocation) "cudaMemcpyAsync(...) failed at llama_model.cpp:120: <reason>".
#define LYRE_CUDA_CHECK(call)                                                      \
  do {                                                                             \
    const cudaError_t lyre_status_ = (call);                                       \
    if (lyre_status_ != cudaSuccess)                                               \
      ::lyre::cuda::throw_cuda_error(lyre_status_, #call, __FILE__, __LINE__);     \
  } while (0)

#define LYRE_CUBLAS_CHECK(call)                                                    \
  do {                                                                             \
    const cublasStatus_t lyre_status_ = (call);                                    \
    if (lyre_status_ != CUBLAS_STATUS_SUCCESS)                                     \
      ::lyre::cuda::throw_cublas_error(lyre_status_, #call, __FILE__, __LINE__);   \
  } while (0)

// After every kernel launch: a bad launch configuration shows up here, not three calls later.
#define LYRE_CUDA_CHECK_LAUNCH() LYRE_CUDA_CHECK(cudaGetLastError())
