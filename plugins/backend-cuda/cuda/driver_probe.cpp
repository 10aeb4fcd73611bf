#include "driver_probe.hpp"

// For the driver API's types and enum values and the runtime's version number only: nothing of
// CUDA is linked. Every driver call goes through a pointer from dlsym.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace lyre::cuda {
namespace {

// bf16 tensor cores and the bf16 arithmetic the kernels use arrived with Ampere.
constexpr int kMinComputeCapability = 80;

// 13000 -> "13.0", 12040 -> "12.4"
std::string cuda_version_name(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// One entry of CMAKE_CUDA_ARCHITECTURES: "90" (SASS for sm_90 and PTX for compute_90), "90-real"
// (SASS only), "90-virtual" (PTX only), "90a" (arch-specific: that exact capability only), "100f"
// (family: the same major version).
struct BuiltArch {
  int cc = 0;  // 90 = 9.0
  bool sass = true, ptx = true;
  char suffix = 0;  // 'a', 'f' or 0

  // SASS runs on the same major version with a minor >= its own; PTX is compiled by the driver
  // for any capability >= its own. Arch-specific code runs on its capability only.
  bool runs_on(int device_cc) const {
    if (suffix == 'a') return device_cc == cc;
    const bool same_family = device_cc / 10 == cc / 10 && device_cc % 10 >= cc % 10;
    if (suffix == 'f') return same_family;
    return (sass && same_family) || (ptx && device_cc >= cc);
  }
};

// The architectures this build compiled device code for, from LYRE_CUDA_ARCHITECTURES (set by
// plugins/backend-cuda/CMakeLists.txt, ',' between entries). Empty when not known ("native",
// "all", or not passed): then any capability >= 8.0 is taken, and the runtime names the mismatch
// at the first launch.
std::vector<BuiltArch> built_architectures() {
#ifdef LYRE_CUDA_ARCHITECTURES
  const std::string list = LYRE_CUDA_ARCHITECTURES;
#else
  const std::string list;
#endif
  std::vector<BuiltArch> out;
  size_t begin = 0;
  while (begin < list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(begin, end - begin);
    begin = end + 1;
    size_t digits = 0;
    while (digits < item.size() && std::isdigit(static_cast<unsigned char>(item[digits]))) ++digits;
    if (digits == 0) return {};  // "native", "all", "all-major": not known here
    BuiltArch a;
    a.cc = std::atoi(item.substr(0, digits).c_str());
    std::string rest = item.substr(digits);
    if (!rest.empty() && (rest[0] == 'a' || rest[0] == 'f')) {
      a.suffix = rest[0];
      rest = rest.substr(1);
    }
    if (rest == "-real") a.ptx = false;
    else if (rest == "-virtual") a.sass = false;
    else if (!rest.empty()) return {};
    out.push_back(a);
  }
  return out;
}

std::string built_list() {
#ifdef LYRE_CUDA_ARCHITECTURES
  std::string s = LYRE_CUDA_ARCHITECTURES;
  for (char& c : s)
    if (c == ',') c = ';';
  return s;
#else
  return "?";
#endif
}

// The driver API entries the probe calls, looked up in libcuda.so.1.
struct DriverApi {
  CUresult (*get_error_name)(CUresult, const char**) = nullptr;
  CUresult (*get_error_string)(CUresult, const char**) = nullptr;
  CUresult (*init)(unsigned int) = nullptr;
  CUresult (*driver_get_version)(int*) = nullptr;
  CUresult (*device_get_count)(int*) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*device_get_attribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*device_get_name)(char*, int, CUdevice) = nullptr;
  CUresult (*device_total_mem)(size_t*, CUdevice) = nullptr;

  // "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)"
  std::string describe(CUresult status) const {
    const char* name = nullptr;
    const char* text = nullptr;
    if (get_error_name == nullptr || get_error_name(status, &name) != CUDA_SUCCESS || name == nullptr)
      return fallback_description(status);
    std::string s = name;
    if (get_error_string != nullptr && get_error_string(status, &text) == CUDA_SUCCESS && text != nullptr)
      s += std::string(" (") + text + ")";
    return s;
  }

  // Where the library cannot name its own results: the toolkit's stub libcuda (found on the
  // library path of a container or a build machine) answers every call, cuGetErrorName included,
  // with CUDA_ERROR_STUB_LIBRARY.
  static std::string fallback_description(CUresult status) {
    switch (status) {
      case CUDA_ERROR_STUB_LIBRARY:
        return "CUDA_ERROR_STUB_LIBRARY (this libcuda.so.1 is the CUDA toolkit's stub, not an NVIDIA driver)";
      case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
      case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
      default: return "CUresult " + std::to_string(static_cast<int>(status));
    }
  }
};

// Fills `fn` from the library; names the first symbol absent in `missing`.
template <typename Fn>
void resolve(void* library, const char* symbol, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(library, symbol));
  if (fn == nullptr && missing.empty()) missing = symbol;
}

DriverProbe ask_driver() {
  DriverProbe p;
  dlerror();
  // Never closed: the CUDA runtime opens the same library again when backend-cuda is chosen, and
  // a driver that ran cuInit is not unloaded safely.
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = dlerror();
    p.reason = std::string("no NVIDIA driver: libcuda.so.1 cannot be loaded (") + (why ? why : "not found") + ")";
    return p;
  }
  DriverApi api;
  std::string missing;
  // cuDeviceTotalMem is a macro for cuDeviceTotalMem_v2 in cuda.h: the symbol is the _v2 one.
  resolve(library, "cuGetErrorName", api.get_error_name, missing);
  resolve(library, "cuGetErrorString", api.get_error_string, missing);
  resolve(library, "cuInit", api.init, missing);
  resolve(library, "cuDriverGetVersion", api.driver_get_version, missing);
  resolve(library, "cuDeviceGetCount", api.device_get_count, missing);
  resolve(library, "cuDeviceGet", api.device_get, missing);
  resolve(library, "cuDeviceGetAttribute", api.device_get_attribute, missing);
  resolve(library, "cuDeviceGetName", api.device_get_name, missing);
  resolve(library, "cuDeviceTotalMem_v2", api.device_total_mem, missing);
  if (!missing.empty()) {
    p.reason = "libcuda.so.1 has no " + missing + ": the NVIDIA driver is broken or far too old";
    return p;
  }

  if (const CUresult status = api.init(0); status != CUDA_SUCCESS) {
    p.reason = "cuInit failed: " + api.describe(status) +
               (status == CUDA_ERROR_NO_DEVICE ? visible_devices_note() : std::string());
    return p;
  }
  int driver_version = 0;
  if (const CUresult status = api.driver_get_version(&driver_version); status != CUDA_SUCCESS) {
    p.reason = "cuDriverGetVersion failed: " + api.describe(status);
    return p;
  }
  // CUDA's minor version compatibility: a runtime of major version N runs on any driver for N.x
  // (the device code is SASS, or PTX of a capability the driver knows); an older major does not.
  const std::string driver = cuda_version_name(driver_version), runtime = cuda_version_name(CUDART_VERSION);
  if (driver_version / 1000 < CUDART_VERSION / 1000) {
    p.reason = "the NVIDIA driver is too old: it supports CUDA " + driver + ", this build of backend-cuda needs CUDA " +
               runtime + " (update the driver)";
    return p;
  }
  int count = 0;
  if (const CUresult status = api.device_get_count(&count); status != CUDA_SUCCESS) {
    p.reason = "cuDeviceGetCount failed: " + api.describe(status);
    return p;
  }
  if (count <= 0) {
    p.reason = "no CUDA device is visible" + visible_devices_note();
    return p;
  }

  CUdevice device = 0;
  int major = 0, minor = 0;
  char name_buffer[256] = {};
  size_t total_bytes = 0;
  CUresult status = api.device_get(&device, 0);
  if (status == CUDA_SUCCESS)
    status = api.device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device);
  if (status == CUDA_SUCCESS)
    status = api.device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device);
  if (status == CUDA_SUCCESS) status = api.device_get_name(name_buffer, sizeof name_buffer - 1, device);
  if (status == CUDA_SUCCESS) status = api.device_total_mem(&total_bytes, device);
  if (status != CUDA_SUCCESS) {
    p.reason = "cannot query CUDA device 0: " + api.describe(status);
    return p;
  }
  const std::string name = name_buffer;
  const int cc = major * 10 + minor;
  const std::string sm = "sm_" + std::to_string(cc);
  if (cc < kMinComputeCapability) {
    p.reason = "CUDA device 0, " + name + ", has compute capability " + std::to_string(major) + "." +
               std::to_string(minor) + " (" + sm + "): backend-cuda needs 8.0 or newer (Ampere or later) for bf16";
    return p;
  }
  const std::vector<BuiltArch> built = built_architectures();
  bool runs = built.empty();
  for (const BuiltArch& a : built) runs = runs || a.runs_on(cc);
  if (!runs) {
    p.reason = "CUDA device 0, " + name + " (" + sm + "), has no device code in this build (CMAKE_CUDA_ARCHITECTURES " +
               built_list() + "): rebuild with -DCMAKE_CUDA_ARCHITECTURES=\"" + built_list() + ";" +
               std::to_string(cc) + "\"";
    return p;
  }

  char gib[32];
  std::snprintf(gib, sizeof gib, "%.1f GiB", static_cast<double>(total_bytes) / double(1ull << 30));
  p.usable = true;
  p.reason = name + " (" + sm + ", " + gib + (count > 1 ? "; device 0 of " + std::to_string(count) : "") +
             "), driver " + driver + ", CUDA " + runtime;
  return p;
}

}  // namespace

std::string visible_devices_note() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v == nullptr ? std::string() : std::string(" (CUDA_VISIBLE_DEVICES=\"") + v + "\")";
}

const DriverProbe& probe_driver() {
  static const DriverProbe probe = ask_driver();
  return probe;
}

}  // namespace lyre::cuda
