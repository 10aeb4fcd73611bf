// A backend plugin whose file is a light loader of its implementation (header-only).
//
// The host opens every plugin it discovers to read its table. A backend built on a large library
// (LibTorch, the CUDA libraries) should not make every lyre process load that library, nor fail
// to load where the library is absent. The pattern: the plugin file the host discovers links
// nothing heavy; it answers score() itself (from cheap checks) and, when the host chooses it,
// initialize() opens the real plugin (a complete plugin of its own, in a subfolder discovery does
// not look into) with RTLD_LOCAL and from then on forwards every entry to it.
//
//   // loader.cpp of backend-foo, next to foo/liblyre-backend-foo-impl.so
//   #include "lyre/lazy_backend.hpp"
//   LyreError* score(LyreBackend_Score_Args* args) { ... cheap checks ... }
//   const LyrePluginApi kPluginApi = lyre::plugin::lazy::plugin_table<score>(
//       "backend-foo", "0.1.0", "what it is", "foo/liblyre-backend-foo-impl.so");
//   LYRE_PLUGIN_ENTRY(kPluginApi)
//
// Link the loader with -ldl (and -z nodelete when the implementation keeps threads or global
// state: it is never unloaded then). plugin::lazy::implementation_path() says where the
// implementation is expected, for score()'s "missing" reason.
#ifndef LYRE_LAZY_BACKEND_HPP_
#define LYRE_LAZY_BACKEND_HPP_

#include <dlfcn.h>

#include <string>

#include "lyre/plugin.hpp"

namespace lyre::plugin::lazy {

namespace detail {
struct State {
  const char* name = "";       // the loader's plugin name, for messages
  const char* impl_file = "";  // relative to the loader's folder
  const LyrePluginApi* impl = nullptr;
};
inline State& state() {
  static State s;
  return s;
}
}  // namespace detail

// <folder of the loader's library>/<impl_file>
inline std::string implementation_path() {
  Dl_info info{};
  const std::string file = detail::state().impl_file;
  if (dladdr(reinterpret_cast<const void*>(&implementation_path), &info) == 0 || info.dli_fname == nullptr)
    return file;
  const std::string self = info.dli_fname;
  const size_t slash = self.rfind('/');
  return (slash == std::string::npos ? std::string() : self.substr(0, slash + 1)) + file;
}

// The implementation's table once initialize() loaded it, else nullptr.
inline const LyrePluginApi* implementation() { return detail::state().impl; }

namespace detail {

inline LyreError* not_initialized(const char* entry) {
  return guard([&] {
    throw Error(LYRE_ERROR_FAILED_PRECONDITION, std::string(state().name) + ": " + entry +
                                                    " called before initialize (its implementation is not loaded yet)");
  });
}

inline LyreError* missing(const char* entry) {
  return guard([&] {
    throw Error(LYRE_ERROR_UNIMPLEMENTED,
                std::string(state().name) + ": " + entry + " is not implemented by " + state().impl_file);
  });
}

inline LyreError* initialize(LyreInitialize_Args* args) {
  State& s = state();
  if (s.impl != nullptr) return s.impl->initialize ? s.impl->initialize(args) : nullptr;
  const std::string path = implementation_path();
  const LyrePluginApi* impl = nullptr;
  LyreError* err = guard([&] {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
      throw Error(LYRE_ERROR_UNAVAILABLE, std::string(s.name) + ": cannot load its implementation: " + dlerror());
    auto init = reinterpret_cast<LyrePluginInitFn>(dlsym(handle, LYRE_PLUGIN_ENTRY_SYMBOL));
    if (init == nullptr) throw Error(LYRE_ERROR_UNAVAILABLE, path + ": no " + LYRE_PLUGIN_ENTRY_SYMBOL);
    impl = init(host());
    require(impl != nullptr, path + ": lyre_plugin_init returned NULL");
    if (impl->abi_major != LYRE_ABI_MAJOR || impl->struct_size < sizeof(LyrePluginApi) || impl->backend == nullptr ||
        impl->model == nullptr || impl->optimizer == nullptr)
      throw Error(LYRE_ERROR_UNAVAILABLE, path + ": not an implementation of " + s.name + " for this build (ABI " +
                                              std::to_string(impl->abi_major) + "." +
                                              std::to_string(impl->abi_minor) + ")");
  });
  if (err != nullptr) return err;
  if (impl->initialize != nullptr) {
    if (LyreError* e = impl->initialize(args)) return e;
  }
  s.impl = impl;
  return nullptr;
}

inline void shutdown() {
  if (state().impl != nullptr && state().impl->shutdown != nullptr) state().impl->shutdown();
}

#define LYRE_LAZY_FORWARD(slot, entry, Args)                                        \
  inline LyreError* slot##_##entry(Args* args) {                                    \
    const LyrePluginApi* impl = state().impl;                                       \
    if (impl == nullptr) return not_initialized(#slot "." #entry);                  \
    if (impl->slot->entry == nullptr) return missing(#slot "." #entry);             \
    return impl->slot->entry(args);                                                 \
  }
LYRE_LAZY_FORWARD(backend, device_info, LyreBackend_DeviceInfo_Args)
LYRE_LAZY_FORWARD(backend, synchronize, LyreBackend_Synchronize_Args)
LYRE_LAZY_FORWARD(backend, all_reduce_gradients, LyreBackend_AllReduceGradients_Args)
LYRE_LAZY_FORWARD(model, create, LyreModel_Create_Args)
LYRE_LAZY_FORWARD(model, destroy, LyreModel_Destroy_Args)
LYRE_LAZY_FORWARD(model, num_parameters, LyreModel_NumParameters_Args)
LYRE_LAZY_FORWARD(model, parameter, LyreModel_Parameter_Args)
LYRE_LAZY_FORWARD(model, read_tensor, LyreModel_ReadTensor_Args)
LYRE_LAZY_FORWARD(model, write_tensor, LyreModel_WriteTensor_Args)
LYRE_LAZY_FORWARD(model, forward, LyreModel_Forward_Args)
LYRE_LAZY_FORWARD(model, backward, LyreModel_Backward_Args)
LYRE_LAZY_FORWARD(model, zero_grad, LyreModel_ZeroGrad_Args)
LYRE_LAZY_FORWARD(model, stats, LyreModel_Stats_Args)
LYRE_LAZY_FORWARD(model, generate, LyreModel_Generate_Args)
LYRE_LAZY_FORWARD(optimizer, create, LyreOptimizer_Create_Args)
LYRE_LAZY_FORWARD(optimizer, destroy, LyreOptimizer_Destroy_Args)
LYRE_LAZY_FORWARD(optimizer, grad_squared_norm, LyreOptimizer_GradSquaredNorm_Args)
LYRE_LAZY_FORWARD(optimizer, step, LyreOptimizer_Step_Args)
LYRE_LAZY_FORWARD(optimizer, num_states, LyreOptimizer_NumStates_Args)
LYRE_LAZY_FORWARD(optimizer, state, LyreOptimizer_State_Args)
LYRE_LAZY_FORWARD(optimizer, read_state, LyreOptimizer_StateTensor_Args)
LYRE_LAZY_FORWARD(optimizer, write_state, LyreOptimizer_StateTensor_Args)
#undef LYRE_LAZY_FORWARD

template <LyreError* (*Score)(LyreBackend_Score_Args*)>
inline const LyreBackendApi kBackendApi = {sizeof(LyreBackendApi), Score, backend_device_info, backend_synchronize,
                                           backend_all_reduce_gradients};
inline const LyreModelApi kModelApi = {sizeof(LyreModelApi), model_create,   model_destroy,  model_num_parameters,
                                       model_parameter,      model_read_tensor, model_write_tensor, model_forward,
                                       model_backward,       model_zero_grad,   model_stats,        model_generate};
inline const LyreOptimizerApi kOptimizerApi = {
    sizeof(LyreOptimizerApi), optimizer_create,    optimizer_destroy,    optimizer_grad_squared_norm,
    optimizer_step,           optimizer_num_states, optimizer_state,     optimizer_read_state,
    optimizer_write_state};

}  // namespace detail

// The loader's table: Backend, Model and Optimizer slots whose entries forward to the
// implementation at `impl_file` (relative to the loader's folder), except score, which is the
// loader's own. All strings must be static.
template <LyreError* (*Score)(LyreBackend_Score_Args*)>
LyrePluginApi plugin_table(const char* name, const char* version, const char* description, const char* impl_file) {
  detail::state().name = name;
  detail::state().impl_file = impl_file;
  return LyrePluginApi{sizeof(LyrePluginApi),
                       LYRE_ABI_MAJOR,
                       LYRE_ABI_MINOR,
                       name,
                       version,
                       description,
                       LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER,
                       detail::initialize,
                       detail::shutdown,
                       &detail::kBackendApi<Score>,
                       &detail::kModelApi,
                       &detail::kOptimizerApi,
                       nullptr,
                       nullptr};
}

}  // namespace lyre::plugin::lazy

#endif  // LYRE_LAZY_BACKEND_HPP_
