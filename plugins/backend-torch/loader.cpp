// backend-torch's plugin file: a light table the host can discover and score without loading
// LibTorch. Loading LibTorch costs every process that does it about 0.3 s and 150 MB resident
// (measured: dlopen of libtorch.so, RSS 3 MB -> 155 MB), and the host opens every plugin it
// finds, also in runs that train on another backend.
//
// initialize() opens the implementation, torch/liblyre-backend-torch-impl.so beside this file
// (a plugin in its own right, torch/plugin.cpp, built into a folder discovery does not look
// into), with RTLD_LOCAL, hands it the host table, and from then on every entry here forwards to
// it. Neither library is ever unloaded (-z nodelete): LibTorch keeps thread pools and the CPU
// allocator backend-torch installs.
#include <dlfcn.h>
#include <sys/stat.h>
#include <torch/version.h>

#include <string>

#include "lyre/plugin.hpp"

namespace lyre::torch_backend::loader {

namespace {

constexpr const char* kImplFile = "torch/liblyre-backend-torch-impl.so";

const LyrePluginApi* g_impl = nullptr;  // set by initialize, read by every forwarder

// <folder of this library>/torch/liblyre-backend-torch-impl.so
std::string impl_path() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&impl_path), &info) == 0 || info.dli_fname == nullptr) return kImplFile;
  std::string self = info.dli_fname;
  const size_t slash = self.rfind('/');
  return (slash == std::string::npos ? std::string() : self.substr(0, slash + 1)) + kImplFile;
}

LyreError* not_initialized(const char* entry) {
  return plugin::guard([&] {
    throw plugin::Error(LYRE_ERROR_FAILED_PRECONDITION,
                        std::string("backend-torch: ") + entry + " called before initialize (LibTorch is not loaded yet)");
  });
}

LyreError* missing(const char* entry) {
  return plugin::guard([&] {
    throw plugin::Error(LYRE_ERROR_UNIMPLEMENTED,
                        std::string("backend-torch: ") + entry + " is not implemented by " + kImplFile);
  });
}

// Checks the implementation speaks our ABI and fills the slots this table promises.
void check_impl(const LyrePluginApi* impl, const std::string& path) {
  plugin::require(impl != nullptr, path + ": lyre_plugin_init returned NULL");
  if (impl->abi_major != LYRE_ABI_MAJOR || impl->struct_size < sizeof(LyrePluginApi) || impl->backend == nullptr ||
      impl->model == nullptr || impl->optimizer == nullptr)
    throw plugin::Error(LYRE_ERROR_UNAVAILABLE,
                        path + ": not a backend-torch implementation of this build (ABI " +
                            std::to_string(impl->abi_major) + "." + std::to_string(impl->abi_minor) + ")");
}

LyreError* initialize(LyreInitialize_Args* args) {
  if (g_impl != nullptr) return g_impl->initialize ? g_impl->initialize(args) : nullptr;
  const std::string path = impl_path();
  const LyrePluginApi* impl = nullptr;
  LyreError* err = plugin::guard([&] {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw plugin::Error(LYRE_ERROR_UNAVAILABLE, std::string("cannot load LibTorch: ") + dlerror());
    auto init = reinterpret_cast<LyrePluginInitFn>(dlsym(handle, LYRE_PLUGIN_ENTRY_SYMBOL));
    if (init == nullptr) throw plugin::Error(LYRE_ERROR_UNAVAILABLE, path + ": no " + LYRE_PLUGIN_ENTRY_SYMBOL);
    impl = init(plugin::host());
    check_impl(impl, path);
  });
  if (err != nullptr) return err;
  if (impl->initialize != nullptr) {
    if (LyreError* e = impl->initialize(args)) return e;
  }
  g_impl = impl;
  return nullptr;
}

void shutdown() {
  if (g_impl != nullptr && g_impl->shutdown != nullptr) g_impl->shutdown();
}

// Score without LibTorch: the implementation must be there to be loaded later.
LyreError* score(LyreBackend_Score_Args* args) {
  return plugin::guard([&] {
    LYRE_REQUIRE_ARGS(args, reason, "backend-torch score");
    struct stat st {};
    static const std::string path = impl_path();
    const bool present = ::stat(path.c_str(), &st) == 0;
    args->score = present ? 10 : 0;
    args->reason = present ? "LibTorch " TORCH_VERSION
                             " on CPU: the numerical reference (autograd), fp32 or fp64; chosen only when asked for"
                           : "its LibTorch implementation (torch/liblyre-backend-torch-impl.so) is missing";
  });
}

#define LYRE_FORWARD(slot, entry, Args)                               \
  LyreError* slot##_##entry(Args* args) {                             \
    if (g_impl == nullptr) return not_initialized(#slot "." #entry);  \
    if (g_impl->slot->entry == nullptr) return missing(#slot "." #entry); \
    return g_impl->slot->entry(args);                                 \
  }

LYRE_FORWARD(backend, device_info, LyreBackend_DeviceInfo_Args)
LYRE_FORWARD(backend, synchronize, LyreBackend_Synchronize_Args)
LYRE_FORWARD(backend, all_reduce_gradients, LyreBackend_AllReduceGradients_Args)
LYRE_FORWARD(model, create, LyreModel_Create_Args)
LYRE_FORWARD(model, destroy, LyreModel_Destroy_Args)
LYRE_FORWARD(model, num_parameters, LyreModel_NumParameters_Args)
LYRE_FORWARD(model, parameter, LyreModel_Parameter_Args)
LYRE_FORWARD(model, read_tensor, LyreModel_ReadTensor_Args)
LYRE_FORWARD(model, write_tensor, LyreModel_WriteTensor_Args)
LYRE_FORWARD(model, forward, LyreModel_Forward_Args)
LYRE_FORWARD(model, backward, LyreModel_Backward_Args)
LYRE_FORWARD(model, zero_grad, LyreModel_ZeroGrad_Args)
LYRE_FORWARD(model, stats, LyreModel_Stats_Args)
LYRE_FORWARD(model, generate, LyreModel_Generate_Args)
LYRE_FORWARD(optimizer, create, LyreOptimizer_Create_Args)
LYRE_FORWARD(optimizer, destroy, LyreOptimizer_Destroy_Args)
LYRE_FORWARD(optimizer, grad_squared_norm, LyreOptimizer_GradSquaredNorm_Args)
LYRE_FORWARD(optimizer, step, LyreOptimizer_Step_Args)
LYRE_FORWARD(optimizer, num_states, LyreOptimizer_NumStates_Args)
LYRE_FORWARD(optimizer, state, LyreOptimizer_State_Args)
LYRE_FORWARD(optimizer, read_state, LyreOptimizer_StateTensor_Args)
LYRE_FORWARD(optimizer, write_state, LyreOptimizer_StateTensor_Args)
#undef LYRE_FORWARD

const LyreBackendApi kBackendApi = {sizeof(LyreBackendApi), score, backend_device_info, backend_synchronize,
                                    backend_all_reduce_gradients};
const LyreModelApi kModelApi = {sizeof(LyreModelApi), model_create,  model_destroy,     model_num_parameters,
                                model_parameter,      model_read_tensor, model_write_tensor, model_forward,
                                model_backward,       model_zero_grad,   model_stats,        model_generate};
const LyreOptimizerApi kOptimizerApi = {sizeof(LyreOptimizerApi), optimizer_create,     optimizer_destroy,
                                        optimizer_grad_squared_norm, optimizer_step,    optimizer_num_states,
                                        optimizer_state,            optimizer_read_state, optimizer_write_state};

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    "backend-torch",
    "0.1.0",
    "LibTorch reference backend: the same Llama with autograd, AdamW and SGD (loads LibTorch when chosen)",
    LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER,
    initialize,
    shutdown,
    &kBackendApi,
    &kModelApi,
    &kOptimizerApi,
    nullptr,
    nullptr,
};

}  // namespace

}  // namespace lyre::torch_backend::loader

LYRE_PLUGIN_ENTRY(lyre::torch_backend::loader::kPluginApi)
