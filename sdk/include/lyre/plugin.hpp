// Header-only C++ helpers for lyre plugin authors: the export macro, the host handle, errors that
// become LyreError* at the boundary, checked tensor views over DLTensor, the checks every
// backend's Model slot makes of its arguments (and WriteTensor's 16-bit conversions), and
// profiler spans.
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
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

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

// "[2,3]": a shape as errors print it.
inline std::string shape_string(const int64_t* shape, int64_t ndim) {
  std::string s = "[";
  for (int64_t i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
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

  std::string shape_string() const { return plugin::shape_string(tensor_->shape, tensor_->ndim); }

 private:
  static std::string shape_string(std::initializer_list<int64_t> shape) {
    return plugin::shape_string(shape.begin(), static_cast<int64_t>(shape.size()));
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

// ---- The Model slot's arguments ----
// What abi.h asks of every backend's LyreModel entries, checked and worded alike in each: the
// parameter index and tensors of Parameter / ReadTensor / WriteTensor (whose sources may be
// float32, bfloat16 or float16), forward's batch and mode, generate's tensors.

// Throws Error(NOT_FOUND) unless `index` names one of the model's `count` parameters.
inline void require_parameter_index(size_t index, size_t count) {
  if (index >= count)
    throw Error(LYRE_ERROR_NOT_FOUND, "parameter index " + std::to_string(index) + " is out of range (the model has " +
                                          std::to_string(count) + ")");
}

// Fills the outputs of LyreModel_Parameter_Args; `name` must live as long as the model. The
// dtype is float32, what crosses ReadTensor and WriteTensor whatever the backend keeps inside.
inline void describe_parameter(LyreModel_Parameter_Args& args, const std::string& name, LyreParamKind kind,
                               bool trainable, const std::vector<int64_t>& shape) {
  args.name = name.c_str();
  args.kind = kind;
  args.trainable = trainable ? 1 : 0;
  args.ndim = static_cast<int32_t>(shape.size());
  for (int i = 0; i < 4; ++i) args.shape[i] = i < args.ndim ? shape[i] : 0;
  args.dtype = DType<float>::value;
}

// Throws Error(INVALID_ARGUMENT) unless `t` is a host, contiguous tensor of exactly `shape` with
// data (NULL only without elements); the dtype is the caller's to check. `what` begins every
// message ("write_tensor src for model.norm.weight"). Returns the data, byte_offset applied.
inline void* require_host_tensor(const DLTensor* t, const std::vector<int64_t>& shape, const std::string& what) {
  require(t != nullptr, what + " is NULL");
  require(t->device.device_type == kDLCPU, what + ": expected a host tensor");
  require(is_contiguous(*t), what + ": expected a contiguous tensor");
  bool same = static_cast<size_t>(t->ndim) == shape.size();
  for (size_t i = 0; same && i < shape.size(); ++i) same = t->shape[i] == shape[i];
  require(same, what + ": shape " + shape_string(t->shape, t->ndim) + ", expected " +
                    shape_string(shape.data(), static_cast<int64_t>(shape.size())));
  int64_t count = 1;
  for (int64_t s : shape) count *= s;
  require(t->data != nullptr || count == 0, what + ": data is NULL");
  return static_cast<char*>(t->data) + t->byte_offset;
}

// bfloat16 bits -> float, exactly: a bfloat16 is the upper half of a float.
inline float bfloat16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// IEEE binary16 bits -> float, exactly: signed zeros, subnormals, infinities and NaNs (payload
// kept) included.
inline float float16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: shift the mantissa up until its leading one becomes the implicit bit.
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Writes the first `count` elements of the host tensor `src` to `dst` as float: the dtypes every
// WriteTensor accepts, float32 copied, bfloat16 and float16 widened exactly. Any other dtype
// throws Error(INVALID_ARGUMENT) "<what>: dtype ... (accepted: ...)". Checks no shape or device:
// require_host_tensor first.
inline void copy_to_float(const DLTensor& src, float* dst, size_t count, const std::string& what) {
  const DLDataType t = src.dtype;
  const char* base = static_cast<const char*>(src.data) + src.byte_offset;
  if (same_dtype(t, DType<float>::value)) {
    if (count > 0) std::memcpy(dst, base, count * sizeof(float));
  } else if (t.code == kDLBfloat && t.bits == 16 && t.lanes == 1) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(base);
    for (size_t i = 0; i < count; ++i) dst[i] = bfloat16_to_float(h[i]);
  } else if (t.code == kDLFloat && t.bits == 16 && t.lanes == 1) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(base);
    for (size_t i = 0; i < count; ++i) dst[i] = float16_to_float(h[i]);
  } else {
    throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                what + ": dtype " + dtype_name(t) + " (accepted: float32, bfloat16, float16)");
  }
}

// The arrays of LyreModel_Forward_Args, checked: the batch's tokens [B,T] and its targets,
// positions and segment_ids of that shape, all host int32; its loss_mask likewise when given
// (the objective's business, but it must be well formed); logp host float32 [B,T]. The ids
// themselves are the model's to check.
struct ForwardTensors {
  const int32_t* tokens;
  const int32_t* targets;
  const int32_t* positions;
  const int32_t* segment_ids;
  float* logp;
  int64_t rows, cols;  // B, T
};

// `plugin_name` begins the error of a batch struct too small ("backend-cpu forward batch: ...").
inline ForwardTensors forward_tensors(const LyreModel_Forward_Args& args, const std::string& plugin_name) {
  const LyreBatch* b = args.batch;
  require(b != nullptr, "forward: batch is NULL");
  LYRE_REQUIRE_ARGS(b, segment_ids, (plugin_name + " forward batch").c_str());
  TensorView<int32_t> tokens(b->tokens, "batch.tokens");
  require(tokens.ndim() == 2, "batch.tokens: expected [B,T], got " + tokens.shape_string());
  const int64_t B = tokens.dim(0), T = tokens.dim(1);
  TensorView<int32_t> targets(b->targets, "batch.targets");
  TensorView<int32_t> positions(b->positions, "batch.positions");
  TensorView<int32_t> segments(b->segment_ids, "batch.segment_ids");
  targets.expect_shape({B, T});
  positions.expect_shape({B, T});
  segments.expect_shape({B, T});
  if (b->struct_size >= offsetof(LyreBatch, loss_mask) + sizeof(void*) && b->loss_mask != nullptr)
    TensorView<int32_t>(b->loss_mask, "batch.loss_mask").expect_shape({B, T});
  TensorView<float> logp(args.logp, "logp");
  logp.expect_shape({B, T});
  return {tokens.data(), targets.data(), positions.data(), segments.data(), logp.data(), B, T};
}

// Whether LyreModel_Forward_Args.mode asks for a train forward, to a backend without adapters
// (for which ADAPTERS_OFF is the NO_GRAD pass). Throws Error(INVALID_ARGUMENT) for any other value.
inline bool is_train_forward(int32_t mode) {
  switch (mode) {
    case LYRE_FORWARD_TRAIN: return true;
    case LYRE_FORWARD_NO_GRAD:
    case LYRE_FORWARD_ADAPTERS_OFF: return false;
    default:
      throw Error(LYRE_ERROR_INVALID_ARGUMENT, "forward: mode " + std::to_string(mode) +
                                                   " (expected 0 = train, 1 = no_grad, 2 = adapters_off)");
  }
}

// The arrays of LyreModel_Generate_Args, checked: prompt host int32 [B,Tp], prompt_lengths [B],
// out_tokens [B, max_new_tokens] (max_new_tokens >= 0), out_lengths [B]; and the sampling
// parameters, greedy ones (temperature 0, top_k 0, top_p 1, seed 0) when NULL. The lengths and
// ids themselves are the model's to check.
struct GenerateTensors {
  const int32_t* prompt;
  const int32_t* prompt_lengths;
  int32_t* out_tokens;
  int32_t* out_lengths;
  int64_t rows, prompt_cols;  // B, Tp
  LyreSamplingParams sampling;
};

// `plugin_name` begins the error of a sampling struct too small ("backend-cpu generate sampling: ...").
inline GenerateTensors generate_tensors(const LyreModel_Generate_Args& args, const std::string& plugin_name) {
  TensorView<int32_t> prompt(args.prompt, "prompt");
  require(prompt.ndim() == 2, "prompt: expected [B,Tp], got " + prompt.shape_string());
  const int64_t B = prompt.dim(0), Tp = prompt.dim(1);
  require(args.max_new_tokens >= 0,
          "generate: max_new_tokens must be >= 0, got " + std::to_string(args.max_new_tokens));
  TensorView<int32_t> lengths(args.prompt_lengths, "prompt_lengths");
  lengths.expect_shape({B});
  TensorView<int32_t> out_tokens(args.out_tokens, "out_tokens");
  out_tokens.expect_shape({B, args.max_new_tokens});
  TensorView<int32_t> out_lengths(args.out_lengths, "out_lengths");
  out_lengths.expect_shape({B});
  LyreSamplingParams sampling{sizeof(LyreSamplingParams), 0.0f, 0, 1.0f, 0};
  if (args.sampling != nullptr) {
    LYRE_REQUIRE_ARGS(args.sampling, seed, (plugin_name + " generate sampling").c_str());
    sampling.temperature = args.sampling->temperature;
    sampling.top_k = args.sampling->top_k;
    sampling.top_p = args.sampling->top_p;
    sampling.seed = args.sampling->seed;
  }
  return {prompt.data(), lengths.data(), out_tokens.data(), out_lengths.data(), B, Tp, sampling};
}

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
