#include "llama_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

namespace lyre::cuda {

LlamaModel::OwnedStream::OwnedStream() {
  LYRE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

LlamaModel::OwnedStream::~OwnedStream() {
  if (stream_ == nullptr) return;
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

LlamaModel::LlamaModel(const cpu::LlamaConfig& config, ModelOptions options)
    : config_(config), options_(options), params_(options.precision) {
  LYRE_CUDA_CHECK(cudaGetDevice(&device_));
  if (options_.logprob_chunk_rows < 0)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                        "logprob_chunk_rows must be >= 1 (or 0 for the memory-budget default), got " +
                            std::to_string(options_.logprob_chunk_rows));
  if (config.head_dim > 256)
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: head_dim " + std::to_string(config.head_dim) +
                                                         " is not supported (the attention kernels take up to 256)");
  index_ = cpu::add_llama_parameters(params_, config);
  params_.allocate(stream());
  inv_freq_ = cpu::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling);
}

// Buffers go back to the allocator after this body, the stream last (OwnedStream): nothing
// queued may still use them by then.
LlamaModel::~LlamaModel() { cudaStreamSynchronize(stream()); }

void LlamaModel::ensure_rope(int64_t max_position) {
  const int64_t needed = max_position + 1;
  if (needed <= rope_rows_) return;
  // Grow in powers of two so that a run sees few rebuilds; never past the model's limit.
  int64_t rows = 256;
  while (rows < needed) rows *= 2;
  rows = std::max(needed, std::min(rows, config_.max_position_embeddings));
  const int64_t half = config_.head_dim / 2;
  std::vector<float> table(static_cast<size_t>(2 * rows * half));  // cos, then sin
  for (int64_t p = 0; p < rows; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq_[static_cast<size_t>(i)];
      table[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
      table[static_cast<size_t>((rows + p) * half + i)] = static_cast<float>(std::sin(angle));
    }
  // Queued kernels may read the old table (and its layout changes with rows).
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  rope_.reserve(table.size());
  LYRE_CUDA_CHECK(cudaMemcpyAsync(rope_.data(), table.data(), table.size() * sizeof(float), cudaMemcpyHostToDevice,
                                  stream()));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));  // `table` is pageable and about to go
  rope_rows_ = rows;
}

char* LlamaModel::grow(DeviceBuffer<char>& buffer, size_t bytes) {
  if (bytes > buffer.capacity()) {
    LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    buffer.reserve(bytes);
  }
  return buffer.data();
}

int64_t LlamaModel::head_chunk_rows(int64_t N) const {
  if (options_.logprob_chunk_rows > 0) return std::max<int64_t>(1, std::min(options_.logprob_chunk_rows, N));
  return logprob_head_chunk_rows(N, config_.vocab_size);
}

void LlamaModel::upload_ids(int32_t* device, std::initializer_list<HostIds> parts) {
  int64_t total = 0;
  for (const HostIds& p : parts) total += p.count;
  if (total == 0) return;
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  host_ids_.reserve(static_cast<size_t>(total));
  int32_t* dst = host_ids_.data();
  for (const HostIds& p : parts) {
    std::memcpy(dst, p.data, static_cast<size_t>(p.count) * sizeof(int32_t));
    dst += p.count;
  }
  LYRE_CUDA_CHECK(cudaMemcpyAsync(device, host_ids_.data(), static_cast<size_t>(total) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream()));
}

void LlamaModel::upload_floats(float* device, const float* host, int64_t count) {
  if (count == 0) return;
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  host_floats_.reserve(static_cast<size_t>(count));
  std::memcpy(host_floats_.data(), host, static_cast<size_t>(count) * sizeof(float));
  LYRE_CUDA_CHECK(cudaMemcpyAsync(device, host_floats_.data(), static_cast<size_t>(count) * sizeof(float),
                                  cudaMemcpyHostToDevice, stream()));
}

void LlamaModel::download_floats(float* host, const float* device, int64_t count) {
  if (count == 0) return;
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  host_floats_.reserve(static_cast<size_t>(count));
  LYRE_CUDA_CHECK(cudaMemcpyAsync(host_floats_.data(), device, static_cast<size_t>(count) * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream()));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  std::memcpy(host, host_floats_.data(), static_cast<size_t>(count) * sizeof(float));
}

// ---- Memory plans ----

template <typename T>
LlamaModel::Scratch<T> LlamaModel::carve_scratch(Carver& c, int64_t B, int64_t Tn, int64_t chunk) const {
  const int64_t N = B * Tn, d = config_.hidden_size, F = config_.intermediate_size;
  const int64_t Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  Scratch<T> s;
  s.x = c.take<float>(N * d);
  s.xn = c.take<T>(N * d);
  s.delta = c.take<T>(N * d);
  s.dnorm = c.take<T>(N * d);
  s.rstd = c.take<float>(N);
  s.qkv = c.take<T>(N * config_.qkv_dim());
  s.att = c.take<T>(N * config_.q_dim());
  s.lse = c.take<float>(N * Hq);
  s.gu = c.take<T>(N * 2 * F);
  s.h = c.take<T>(N * F);
  s.dh = c.take<T>(N * F);
  s.ids = c.take<int32_t>(4 * N);
  s.logp = c.take<float>(N);
  s.head_lse = c.take<float>(N);
  s.attention_workspace = c.take<char>(static_cast<int64_t>(attention_backward_workspace(B, Tn, Hq, Hkv, D)));
  s.head_workspace = c.take<char>(
      static_cast<int64_t>(logprob_head_workspace(chunk, d, config_.vocab_size, sizeof(T))));
  return s;
}

template <typename T>
LlamaModel::Scratch<T> LlamaModel::scratch(int64_t B, int64_t Tn, int64_t chunk) {
  Carver measure(nullptr);
  carve_scratch<T>(measure, B, Tn, chunk);
  Carver c(grow(scratch_, measure.used()));
  return carve_scratch<T>(c, B, Tn, chunk);
}

template <typename T>
LlamaModel::SavedLayer<T> LlamaModel::carve_saved_layer(Carver& c, int64_t N) const {
  const int64_t d = config_.hidden_size;
  SavedLayer<T> s;
  s.x_in = c.take<float>(N * d);
  s.qkv = c.take<T>(N * config_.qkv_dim());
  s.att = c.take<T>(N * config_.q_dim());
  s.lse = c.take<float>(N * config_.num_attention_heads);
  s.x_mid = c.take<float>(N * d);
  s.gu = c.take<T>(N * 2 * config_.intermediate_size);
  return s;
}

template <typename T>
LlamaModel::SavedFinal<T> LlamaModel::carve_saved_final(Carver& c, int64_t N) const {
  SavedFinal<T> s;
  s.x = c.take<float>(N * config_.hidden_size);
  s.xn = c.take<T>(N * config_.hidden_size);
  s.rstd = c.take<float>(N);
  s.head_lse = c.take<float>(N);
  s.ids = c.take<int32_t>(4 * N);
  return s;
}

// The activation arena: what follows the last layer first, then layer 0, 1, ...
template <typename T>
size_t LlamaModel::saved_bytes(int64_t N) const {
  Carver final_part(nullptr), layer_part(nullptr);
  carve_saved_final<T>(final_part, N);
  carve_saved_layer<T>(layer_part, N);
  return final_part.used() + static_cast<size_t>(config_.num_hidden_layers) * layer_part.used();
}

template <typename T>
LlamaModel::SavedLayer<T> LlamaModel::saved_layer(int64_t layer, int64_t N) {
  Carver final_part(nullptr), layer_part(nullptr);
  carve_saved_final<T>(final_part, N);
  carve_saved_layer<T>(layer_part, N);
  Carver c(saved_.data() + final_part.used() + static_cast<size_t>(layer) * layer_part.used());
  return carve_saved_layer<T>(c, N);
}

template <typename T>
LlamaModel::SavedFinal<T> LlamaModel::saved_final(int64_t N) {
  Carver c(saved_.data());
  return carve_saved_final<T>(c, N);
}

// ---- Forward ----

template <typename T>
void LlamaModel::layer_forward(size_t layer, int64_t rows, const int32_t* positions, const LayerIO<T>& io,
                               const Attend<T>& attend, const char* span_category) {
  const cpu::LlamaLayerIndex& li = index_.layers[layer];
  const int64_t d = config_.hidden_size, F = config_.intermediate_size, D = config_.head_dim;
  const int64_t Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads;
  const int64_t qkvd = config_.qkv_dim(), qd = config_.q_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  cudaStream_t s = stream();
  {
    plugin::TraceSpan span(span_category, "layer %zu attention forward", layer);
    TraceSync sync(s);
    // x_in = x_prev + delta_prev: the previous layer's MLP output joins the residual here.
    residual_rmsnorm_forward<T>(io.x_in, io.xn, io.rstd, io.x_prev, io.delta_prev, params_.value(li.input_norm),
                                rows, d, eps, s);
    gemm_.linear_forward<T>(io.qkv, io.xn, params_.compute_weight<T>(li.q), rows, d, qkvd, s);
    rope_forward<T>(io.qkv, positions, rope_cos(), rope_sin(), rows, Hq, Hkv, D, s);
    attend(io.qkv, io.att, io.lse);
    gemm_.linear_forward<T>(io.delta, io.att, params_.compute_weight<T>(li.o), rows, qd, d, s);
  }
  plugin::TraceSpan span(span_category, "layer %zu mlp forward", layer);
  TraceSync sync(s);
  residual_rmsnorm_forward<T>(io.x_mid, io.xn, io.rstd, io.x_in, io.delta, params_.value(li.post_norm), rows, d,
                              eps, s);
  gemm_.linear_forward<T>(io.gu, io.xn, params_.compute_weight<T>(li.gate), rows, d, 2 * F, s);
  swiglu_forward<T>(io.h, io.gu, rows, F, s);
  gemm_.linear_forward<T>(io.delta, io.h, params_.compute_weight<T>(li.down), rows, F, d, s);
}

template <typename T>
void LlamaModel::forward_impl(const TokenBatch& b, ForwardMode mode, int64_t chunk, float* logp) {
  const int64_t B = b.rows, Tn = b.cols, N = B * Tn, d = config_.hidden_size, V = config_.vocab_size;
  const int64_t Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  cudaStream_t s = stream();
  const Scratch<T> sc = scratch<T>(B, Tn, chunk);
  const T* head = params_.compute_weight<T>(index_.lm_head);

  // Where the ids, the saved tensors and the final norm's output go: the scratch arena for a
  // no_grad forward (which must leave a pending train forward's activations alone), the
  // activation arena for a train forward.
  const bool train = mode == ForwardMode::train;
  int32_t* ids = sc.ids;
  float* x_final = sc.x;
  T* xn_final = sc.xn;
  float* rstd_final = sc.rstd;
  float* head_lse = sc.head_lse;
  if (train) {
    grow(saved_, saved_bytes<T>(N));
    const SavedFinal<T> fin = saved_final<T>(N);
    ids = fin.ids;
    x_final = fin.x;
    xn_final = fin.xn;
    rstd_final = fin.rstd;
    head_lse = fin.head_lse;
  }
  upload_ids(ids, {{b.tokens, N}, {b.targets, N}, {b.positions, N}, {b.segment_ids, N}});
  const int32_t *tokens = ids, *targets = ids + N, *positions = ids + 2 * N, *segments = ids + 3 * N;

  const int64_t L = config_.num_hidden_layers;
  float* x0 = !train ? sc.x : L > 0 ? saved_layer<T>(0, N).x_in : x_final;
  {
    plugin::TraceSpan span("forward", "embedding forward");
    TraceSync sync(s);
    embedding_forward<T>(x0, tokens, params_.compute_weight<T>(index_.embed), N, d, s);
  }
  const Attend<T> attend = [&](T* qkv, T* att, float* lse) {
    attention_forward<T>(att, lse, qkv, segments, B, Tn, Hq, Hkv, D, s);
  };
  const float* x_prev = x0;
  const T* delta_prev = nullptr;
  for (int64_t l = 0; l < L; ++l) {
    LayerIO<T> io;
    if (train) {
      const SavedLayer<T> sv = saved_layer<T>(l, N);
      io = LayerIO<T>{x_prev, delta_prev, sv.x_in, sv.qkv, sv.att, sv.lse, sv.x_mid, sv.gu,
                      sc.xn, sc.delta, sc.h, sc.rstd};
    } else {
      io = LayerIO<T>{x_prev, delta_prev, sc.x, sc.qkv, sc.att, sc.lse, sc.x, sc.gu, sc.xn, sc.delta, sc.h, sc.rstd};
    }
    layer_forward<T>(static_cast<size_t>(l), N, positions, io, attend, "forward");
    x_prev = io.x_mid;
    delta_prev = sc.delta;
  }
  {
    plugin::TraceSpan span("forward", "logprob head forward");
    TraceSync sync(s);
    residual_rmsnorm_forward<T>(x_final, xn_final, rstd_final, x_prev, delta_prev, params_.value(index_.final_norm), N,
                                d, eps, s);
    logprob_head_forward<T>(gemm_, sc.logp, head_lse, xn_final, head, targets, N, d, V, chunk, sc.head_workspace, s);
  }
  download_floats(logp, sc.logp, N);
}

void LlamaModel::forward(const TokenBatch& b, ForwardMode mode, float* logp) {
  const int64_t max_position = cpu::check_token_batch(b, config_, /*need_targets=*/true);
  plugin::require(logp != nullptr, "forward: logp is NULL");
  if (mode == ForwardMode::train) pending_backward_ = false;  // a failure below leaves nothing
  const int64_t chunk = head_chunk_rows(b.rows * b.cols);
  ensure_rope(max_position);
  if (precision() == Precision::bf16)
    forward_impl<bf16>(b, mode, chunk, logp);
  else
    forward_impl<float>(b, mode, chunk, logp);
  if (mode == ForwardMode::train) {
    saved_rows_ = b.rows;
    saved_cols_ = b.cols;
    saved_chunk_ = chunk;
    pending_backward_ = true;
  }
}

// ---- Backward ----

template <typename T>
void LlamaModel::backward_impl(const float* dlogp_host) {
  const int64_t B = saved_rows_, Tn = saved_cols_, N = B * Tn;
  const int64_t d = config_.hidden_size, F = config_.intermediate_size, V = config_.vocab_size;
  const int64_t D = config_.head_dim, Hq = config_.num_attention_heads, Hkv = config_.num_key_value_heads;
  const int64_t qkvd = config_.qkv_dim(), qd = config_.q_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  cudaStream_t s = stream();
  // Sized by the train forward already (a later no_grad forward may only have grown it).
  const Scratch<T> sc = scratch<T>(B, Tn, saved_chunk_);
  const SavedFinal<T> fin = saved_final<T>(N);
  const int32_t* ids = fin.ids;
  const int32_t *tokens = ids, *targets = ids + N, *positions = ids + 2 * N, *segments = ids + 3 * N;
  float* dx = sc.x;  // d(loss)/d(residual stream), float, walked back layer by layer
  // dx as the GEMMs' operand: itself in fp32, a T copy (in the forward-only slot delta) in bf16.
  auto dx_operand = [&]() -> const T* {
    if constexpr (std::is_same_v<T, float>) {
      return dx;
    } else {
      cast_from_float<T>(sc.delta, dx, N * d, s);
      return sc.delta;
    }
  };
  upload_floats(sc.logp, dlogp_host, N);

  {
    plugin::TraceSpan span("backward", "logprob head backward");
    TraceSync sync(s);
    LYRE_CUDA_CHECK(cudaMemsetAsync(dx, 0, static_cast<size_t>(N * d) * sizeof(float), s));
    // The head's gradient is the embedding's when tied: both uses add into it.
    logprob_head_backward<T>(gemm_, sc.dnorm, params_.grad(index_.lm_head), sc.logp, fin.xn,
                             params_.compute_weight<T>(index_.lm_head), targets, fin.head_lse, N, d, V, saved_chunk_,
                             sc.head_workspace, s);
    rmsnorm_backward<T>(dx, params_.grad(index_.final_norm), sc.dnorm, fin.x, params_.value(index_.final_norm),
                        fin.rstd, N, d, s);
  }

  for (int64_t l = config_.num_hidden_layers - 1; l >= 0; --l) {
    const cpu::LlamaLayerIndex& li = index_.layers[static_cast<size_t>(l)];
    const SavedLayer<T> sv = saved_layer<T>(l, N);
    T* dgu = sc.gu;
    T* datt = sc.att;
    T* dqkv = sc.qkv;
    {
      // MLP: x_out = x_mid + swiglu(rmsnorm(x_mid) Wgu^T) Wdown^T; the norm and SwiGLU outputs
      // are recomputed rather than kept (the norm rewrites x_mid with itself: delta nullptr).
      plugin::TraceSpan span("backward", "layer %lld mlp backward", static_cast<long long>(l));
      TraceSync sync(s);
      residual_rmsnorm_forward<T>(sv.x_mid, sc.xn, sc.rstd, sv.x_mid, nullptr, params_.value(li.post_norm), N, d, eps,
                                  s);
      swiglu_forward<T>(sc.h, sv.gu, N, F, s);
      gemm_.linear_backward<T>(sc.dh, params_.grad(li.down), dx_operand(), sc.h, params_.compute_weight<T>(li.down),
                               N, F, d, false, s);
      swiglu_backward<T>(dgu, sc.dh, sv.gu, N, F, s);
      gemm_.linear_backward<T>(sc.dnorm, params_.grad(li.gate), dgu, sc.xn, params_.compute_weight<T>(li.gate), N, d,
                               2 * F, false, s);
      rmsnorm_backward<T>(dx, params_.grad(li.post_norm), sc.dnorm, sv.x_mid, params_.value(li.post_norm), sc.rstd, N,
                          d, s);
    }
    // Attention: x_mid = x_in + attention(rope(rmsnorm(x_in) Wqkv^T)) Wo^T.
    plugin::TraceSpan span("backward", "layer %lld attention backward", static_cast<long long>(l));
    TraceSync sync(s);
    gemm_.linear_backward<T>(datt, params_.grad(li.o), dx_operand(), sv.att, params_.compute_weight<T>(li.o), N, qd, d,
                             false, s);
    attention_backward<T>(dqkv, datt, sv.att, sv.lse, sv.qkv, segments, B, Tn, Hq, Hkv, D, sc.attention_workspace, s);
    rope_backward<T>(dqkv, positions, rope_cos(), rope_sin(), N, Hq, Hkv, D, s);
    residual_rmsnorm_forward<T>(sv.x_in, sc.xn, sc.rstd, sv.x_in, nullptr, params_.value(li.input_norm), N, d, eps,
                                s);
    gemm_.linear_backward<T>(sc.dnorm, params_.grad(li.q), dqkv, sc.xn, params_.compute_weight<T>(li.q), N, d, qkvd,
                             false, s);
    rmsnorm_backward<T>(dx, params_.grad(li.input_norm), sc.dnorm, sv.x_in, params_.value(li.input_norm), sc.rstd, N,
                        d, s);
  }
  plugin::TraceSpan span("backward", "embedding backward");
  TraceSync sync(s);
  embedding_backward(params_.grad(index_.embed), dx, tokens, N, d, s);
}

void LlamaModel::backward(const float* dlogp) {
  if (!pending_backward_)
    throw plugin::Error(LYRE_ERROR_FAILED_PRECONDITION,
                        "backward needs a train forward first (its activations are consumed by one backward)");
  plugin::require(dlogp != nullptr, "backward: dlogp is NULL");
  pending_backward_ = false;
  if (precision() == Precision::bf16)
    backward_impl<bf16>(dlogp);
  else
    backward_impl<float>(dlogp);
}

// generate.cpp runs the layers too.
template void LlamaModel::layer_forward<float>(size_t, int64_t, const int32_t*, const LayerIO<float>&,
                                               const Attend<float>&, const char*);
template void LlamaModel::layer_forward<bf16>(size_t, int64_t, const int32_t*, const LayerIO<bf16>&,
                                              const Attend<bf16>&, const char*);

}  // namespace lyre::cuda
