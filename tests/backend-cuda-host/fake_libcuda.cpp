// A stand-in for the NVIDIA driver's libcuda.so.1 holding only the entries backend-cuda's score()
// calls (cuda/driver_probe.cpp), answering from the environment variable LYRE_FAKE_LIBCUDA:
//   "init=100;version=12040;count=1;cc=75;name=Tesla T4;memory=16106127360"
// Unset keys answer as a healthy NVIDIA H100 80GB HBM3 (81559 MiB) with a CUDA 13.0 driver. The
// loader tests put its folder first on LD_LIBRARY_PATH to drive every branch of the probe on a
// machine without a GPU. It has no context or memory entries: a probe that reached for one would
// fail to find it.
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

bool g_initialized = false;

// The value of `key` in LYRE_FAKE_LIBCUDA, or `fallback`.
std::string setting(const char* key, const char* fallback) {
  const char* env = std::getenv("LYRE_FAKE_LIBCUDA");
  const std::string all = env != nullptr ? env : "";
  const std::string want = std::string(key) + "=";
  size_t begin = 0;
  while (begin <= all.size()) {
    size_t end = all.find(';', begin);
    if (end == std::string::npos) end = all.size();
    if (all.compare(begin, want.size(), want) == 0) return all.substr(begin + want.size(), end - begin - want.size());
    begin = end + 1;
  }
  return fallback;
}

long long number(const char* key, const char* fallback) { return std::atoll(setting(key, fallback).c_str()); }

}  // namespace

extern "C" {

CUresult CUDAAPI cuGetErrorName(CUresult error, const char** str) {
  switch (error) {
    case CUDA_SUCCESS: *str = "CUDA_SUCCESS"; return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_INITIALIZED: *str = "CUDA_ERROR_NOT_INITIALIZED"; return CUDA_SUCCESS;
    case CUDA_ERROR_NO_DEVICE: *str = "CUDA_ERROR_NO_DEVICE"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE: *str = "CUDA_ERROR_INVALID_DEVICE"; return CUDA_SUCCESS;
    default: *str = nullptr; return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult CUDAAPI cuGetErrorString(CUresult error, const char** str) {
  switch (error) {
    case CUDA_SUCCESS: *str = "no error"; return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_INITIALIZED: *str = "initialization error"; return CUDA_SUCCESS;
    case CUDA_ERROR_NO_DEVICE: *str = "no CUDA-capable device is detected"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE: *str = "invalid device ordinal"; return CUDA_SUCCESS;
    default: *str = nullptr; return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult CUDAAPI cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  const CUresult result = static_cast<CUresult>(number("init", "0"));
  g_initialized = result == CUDA_SUCCESS;
  return result;
}

// Answers before cuInit, as the real driver does.
CUresult CUDAAPI cuDriverGetVersion(int* version) {
  *version = static_cast<int>(number("version", "13000"));
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int* count) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  *count = static_cast<int>(number("count", "1"));
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice* device, int ordinal) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (ordinal < 0 || ordinal >= number("count", "1")) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice device) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (device < 0 || device >= number("count", "1")) return CUDA_ERROR_INVALID_DEVICE;
  const int cc = static_cast<int>(number("cc", "90"));
  if (attribute == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) *value = cc / 10;
  else if (attribute == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) *value = cc % 10;
  else return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char* name, int length, CUdevice device) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (device < 0 || device >= number("count", "1")) return CUDA_ERROR_INVALID_DEVICE;
  if (length <= 0) return CUDA_ERROR_INVALID_VALUE;
  const std::string value = setting("name", "NVIDIA H100 80GB HBM3");
  std::strncpy(name, value.c_str(), static_cast<size_t>(length) - 1);
  name[length - 1] = '\0';
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (device < 0 || device >= number("count", "1")) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = static_cast<size_t>(number("memory", "85520809984"));
  return CUDA_SUCCESS;
}

}  // extern "C"
