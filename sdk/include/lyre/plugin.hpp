// Header-only C++ helpers for lyre plugin authors: the export macro, the host handle, errors that
// become LyreError* at the boundary, checked tensor views over DLTensor, and profiler spans.
//
// A plugin includes this header (and abi.h through it), never anything of the host.
//
//   LYRE_PLUGIN_ENTRY(my_api_table)          // defines lyre_plugin_init
//   LyreError* my_forward(LyreModel_Forward_Args* a) {
//     return lyre::plugin::guard([&] { ... throw lyre::plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "..."); });
//   }
//
// Profiler spans: a TraceSpan times the scope it lives in and reports it to the host's profiler
// (LyreHostApi.trace_span), attributed to the plugin's name from its LyrePluginApi table:
//
//   lyre::plugin::TraceSpan span("forward", "embedding");               // category, name
//   lyre::plugin::TraceSpan layer("forward", "layer %d attention", l);  // the name is a printf format
//
// Outside the steps the host records, a span costs one call to trace_enabled() and a branch: no
// clock read, no formatting. It is a no-op under a host older than ABI 1.1 (its struct_size
// does not reach the trace entries), without a host, or with those entries NULL. Make spans
// for work worth seeing on a timeline (a layer, a kernel launch), never per element. Spans may
// come from a plugin's own threads too: the host gives each thread its own track.
#ifndef LYRE_PLUGIN_HPP_
#define LYRE_PLUGIN_HPP_

#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "lyre/abi.h"

#define LYRE_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

// Defines the entry symbol: stores the host table and returns `api_table` (a LyrePluginApi).
#define LYRE_PLUGIN_ENTRY(api_table)                                                        \
  LYRE_PLUGIN_EXPORT const LyrePluginApi* lyre_plugin_init(const LyreHostApi* host) {       \
    ::lyre::plugin::detail::set_host(host);                                                 \
    ::lyre::plugin::detail::plugin_name_slot() = (api_table).name;                          \
    return &(api_table);                                                                    \
  }

namespace lyre::plugin {

namespace detail {
inline const LyreHostApi*& host_slot() {
  static const LyreHostApi* host = nullptr;
  return host;
}
// Keeps the host table only when it speaks our major: the host refuses us otherwise anyway.
inline void set_host(const LyreHostApi* host) {
  if (host != nullptr && host->abi_major == LYRE_ABI_MAJOR) host_slot() = host;
}
// The plugin's name (LyrePluginApi.name) that its trace spans carry; set by LYRE_PLUGIN_ENTRY.
inline const char*& plugin_name_slot() {
  static const char* name = nullptr;
  return name;
}
}  // namespace detail

// The host's services; nullptr before lyre_plugin_init (or under another ABI major).
inline const LyreHostApi* host() { return detail::host_slot(); }

// Thrown inside a plugin; guard() turns it into a LyreError* with this code.
class Error : public std::runtime_error {
 public:
  Error(LyreErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  LyreErrorCode code() const { return code_; }

 private:
  LyreErrorCode code_;
};

// Makes a host-owned error. Falls back to stderr when no host is set (unit tests of a plugin's
// internals without a host), where nullptr would read as success, so it aborts instead.
inline LyreError* make_error(LyreErrorCode code, const std::string& message) {
  const LyreHostApi* h = host();
  if (h == nullptr || h->error_new == nullptr) {
    std::fprintf(stderr, "lyre plugin error without a host: %s\n", message.c_str());
    std::abort();
  }
  return h->error_new(static_cast<int32_t>(code), message.c_str());
}

inline void log(LyreLogLevel level, const char* plugin_name, const std::string& message) {
  const LyreHostApi* h = host();
  if (h != nullptr && h->log != nullptr) {
    h->log(static_cast<int32_t>(level), plugin_name, message.c_str());
  } else {
    std::fprintf(stderr, "[%s] %s\n", plugin_name ? plugin_name : "plugin", message.c_str());
  }
}

// Runs `body` and converts every exception into a LyreError*: nothing crosses the C boundary.
template <typename Body>
LyreError* guard(Body&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const Error& e) {
    return make_error(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return make_error(LYRE_ERROR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return make_error(LYRE_ERROR_INTERNAL, e.what());
  } catch (...) {
    return make_error(LYRE_ERROR_INTERNAL, "unknown exception inside plugin");
  }
}

// Throws Error(INVALID_ARGUMENT) unless `cond`.
inline void require(bool cond, const std::string& message) {
  if (!cond) throw Error(LYRE_ERROR_INVALID_ARGUMENT, message);
}

// Refuses a struct from a caller built against an older header that lacks a field we need.
template <typename Args>
void require_struct(const Args* args, size_t min_size, const char* what) {
  if (args == nullptr) throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(what) + ": args is NULL");
  if (args->struct_size < min_size)
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(what) + ": struct_size " +
                                                 std::to_string(args->struct_size) + " too small");
}

// The usual form of the check above: the caller's struct must reach past `last_field`, the last
// field this entry reads.   LYRE_REQUIRE_ARGS(args, logp, "forward");
#define LYRE_REQUIRE_ARGS(args, last_field, what)                                                \
  ::lyre::plugin::require_struct(                                                                \
      args,                                                                                      \
      offsetof(std::remove_cv_t<std::remove_pointer_t<decltype(args)>>, last_field) +            \
          sizeof((args)->last_field),                                                            \
      what)

template <typename T>
struct DType;
template <> struct DType<float> { static constexpr DLDataType value{kDLFloat, 32, 1}; };
template <> struct DType<double> { static constexpr DLDataType value{kDLFloat, 64, 1}; };
template <> struct DType<int32_t> { static constexpr DLDataType value{kDLInt, 32, 1}; };
template <> struct DType<int64_t> { static constexpr DLDataType value{kDLInt, 64, 1}; };
template <> struct DType<uint8_t> { static constexpr DLDataType value{kDLUInt, 8, 1}; };

inline bool same_dtype(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

inline std::string dtype_name(DLDataType t) {
  const char* base = t.code == kDLFloat ? "float" : t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint"
                     : t.code == kDLBfloat ? "bfloat" : "other";
  return std::string(base) + std::to_string(t.bits);
}

inline int64_t numel(const DLTensor& t) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

inline bool is_contiguous(const DLTensor& t) {
  if (t.strides == nullptr) return true;
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

// A checked, contiguous, host view of a DLTensor as T. `what` names the tensor in errors.
template <typename T>
class TensorView {
 public:
  TensorView(const DLTensor* t, const char* what) : what_(what) {
    require(t != nullptr, std::string(what) + ": tensor is NULL");
    require(same_dtype(t->dtype, DType<T>::value),
            std::string(what) + ": expected " + dtype_name(DType<T>::value) + ", got " + dtype_name(t->dtype));
    require(t->device.device_type == kDLCPU, std::string(what) + ": expected a host (kDLCPU) tensor");
    require(is_contiguous(*t), std::string(what) + ": expected a contiguous tensor");
    require(t->data != nullptr || numel(*t) == 0, std::string(what) + ": data is NULL");
    tensor_ = t;
    data_ = reinterpret_cast<T*>(static_cast<char*>(t->data) + t->byte_offset);
  }

  T* data() const { return data_; }
  int ndim() const { return tensor_->ndim; }
  int64_t dim(int i) const { return tensor_->shape[i]; }
  int64_t size() const { return numel(*tensor_); }

  // Throws unless the shape is exactly `shape`.
  const TensorView& expect_shape(std::initializer_list<int64_t> shape) const {
    bool ok = static_cast<size_t>(tensor_->ndim) == shape.size();
    int i = 0;
    for (int64_t s : shape) ok = ok && tensor_->shape[i++] == s;
    require(ok, std::string(what_) + ": expected shape " + shape_string(shape) + ", got " + shape_string());
    return *this;
  }

  std::string shape_string() const {
    std::string s = "[";
    for (int i = 0; i < tensor_->ndim; ++i) s += (i ? "," : "") + std::to_string(tensor_->shape[i]);
    return s + "]";
  }

 private:
  static std::string shape_string(std::initializer_list<int64_t> shape) {
    std::string s = "[";
    int i = 0;
    for (int64_t v : shape) s += (i++ ? "," : "") + std::to_string(v);
    return s + "]";
  }

  const DLTensor* tensor_ = nullptr;
  T* data_ = nullptr;
  const char* what_;
};

// A DLTensor describing memory the caller owns (shape storage included); for handing views out.
struct OwnedShapeTensor {
  DLTensor tensor{};
  int64_t shape[4]{};

  OwnedShapeTensor(void* data, DLDataType dtype, std::initializer_list<int64_t> dims) {
    int i = 0;
    for (int64_t d : dims) shape[i++] = d;
    tensor.data = data;
    tensor.device = DLDevice{kDLCPU, 0};
    tensor.ndim = i;
    tensor.dtype = dtype;
    tensor.shape = shape;
    tensor.strides = nullptr;
    tensor.byte_offset = 0;
  }
  OwnedShapeTensor(const OwnedShapeTensor&) = delete;
  OwnedShapeTensor& operator=(const OwnedShapeTensor&) = delete;
  const DLTensor* get() const { return &tensor; }
};

// ---- Profiler spans ----

// The host's trace entries when it has them (ABI >= 1.1 and both set), else nullptr.
inline const LyreHostApi* trace_host() {
  const LyreHostApi* h = host();
  if (h == nullptr || h->struct_size < offsetof(LyreHostApi, trace_span) + sizeof(h->trace_span)) return nullptr;
  if (h->trace_enabled == nullptr || h->trace_span == nullptr) return nullptr;
  return h;
}

// True while the host's profiler records: check it before preparing anything for a span.
inline bool tracing() {
  const LyreHostApi* h = trace_host();
  return h != nullptr && h->trace_enabled() != 0;
}

// Times its scope and reports it through LyreHostApi.trace_span when it ends (see the top of
// this file). `category` must outlive the span (a string literal); the formatted name is copied
// into the span, cut at 95 bytes.
class TraceSpan {
 public:
  // The name is a printf format ('%%' for a percent sign), formatted only while the host records.
  __attribute__((format(printf, 3, 4))) TraceSpan(const char* category, const char* format, ...) noexcept
      : host_(active_host()) {
    if (host_ == nullptr) return;
    category_ = category;
    std::va_list args;
    va_start(args, format);
    std::vsnprintf(name_, sizeof name_, format, args);
    va_end(args);
    begin_ns_ = now_ns();
  }
  ~TraceSpan() {
    if (host_ != nullptr) host_->trace_span(detail::plugin_name_slot(), category_, name_, begin_ns_, now_ns());
  }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

  // The host's clock for spans: CLOCK_MONOTONIC nanoseconds, as LyreHostApi.trace_span expects.
  static int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

 private:
  static const LyreHostApi* active_host() noexcept {
    const LyreHostApi* h = trace_host();
    return h != nullptr && h->trace_enabled() != 0 ? h : nullptr;
  }

  const LyreHostApi* host_;  // nullptr: not recording, nothing to report
  const char* category_ = nullptr;
  int64_t begin_ns_ = 0;
  char name_[96];
};

}  // namespace lyre::plugin

#endif  // LYRE_PLUGIN_HPP_
