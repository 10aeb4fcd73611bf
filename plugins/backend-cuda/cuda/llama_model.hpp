// The Llama decoder of backend-cpu (model/llama_model.hpp) on one GPU, over the kernels of
// kernels.hpp: same parameters (Hugging Face names, same order), same fused q/k/v and gate/up
// blocks, same checks of the batch, same FLOP count.
//
// Precision: the activations and matmul operands are T = bf16 ("precision": "bf16") or float
// ("fp32"); the residual stream, norm statistics, softmax, log-probs and every parameter gradient
// are float in both. The public entry points pick T once and run a templated body.
//
// Host/device: batches, log-probs and their gradients come and go as host arrays; ids travel
// through a pinned buffer and one asynchronous copy. Every kernel of the model (and of its
// optimizer) runs on the model's own non-blocking stream. forward returns once logp is on the
// host; backward returns with its work queued.
//
// Memory: a train forward keeps, per layer, its input x (float), the roped qkv, the attention
// output and its log-sum-exp, the residual after attention (float) and the gate/up activations;
// backward recomputes the two RMSNorm outputs and the SwiGLU output. Saved tensors live in one
// activation arena, everything else (per-layer temporaries, backward's gradients, the attention
// and log-prob head workspaces) in one scratch arena; both only grow, so a step of a shape seen
// before allocates nothing. Every carved pointer is 256-byte aligned.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

#include "common.hpp"
#include "device_memory.hpp"
#include "kernels.hpp"
#include "model/token_batch.hpp"
#include "model/llama_config.hpp"
#include "model/llama_parameters.hpp"
#include "model/token_sampler.hpp"
#include "options.hpp"
#include "parameter_store.hpp"

namespace lyre::cuda {

enum class ForwardMode { train, no_grad };

using cpu::TokenBatch;  // one micro-batch of host int32 arrays (model/token_batch.hpp)

class LlamaModel {
 public:
  // Creates the stream, the parameters (zero, norms one) and the cuBLASLt handle on the current
  // device.
  LlamaModel(const cpu::LlamaConfig& config, ModelOptions options);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const cpu::LlamaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  Precision precision() const { return options_.precision; }
  ParameterStore& params() { return params_; }
  const ParameterStore& params() const { return params_; }
  cudaStream_t stream() const { return stream_.get(); }
  int device() const { return device_; }

  // logp (rows*cols, host) = log-prob of each target, 0 where the target is < 0. Checks every
  // id and position on the host, throwing Error(INVALID_ARGUMENT) naming the tensor, row, column
  // and value. train keeps what backward needs (replacing any earlier train forward's
  // activations); no_grad touches none of it, so it may run between a train forward and its
  // backward (a DPO reference pass). Returns with logp written.
  void forward(const TokenBatch& batch, ForwardMode mode, float* logp);
  // dlogp (rows*cols, host) of the latest train forward -> adds into the gradients. Consumes the
  // saved activations: a second backward throws Error(FAILED_PRECONDITION), as does one without
  // a train forward. Returns with the work queued on stream().
  void backward(const float* dlogp);
  bool backward_ready() const { return pending_backward_; }
  void zero_grad() { params_.zero_grads(stream()); }

  // Autoregressive decoding with a KV cache (backend-cpu's semantics, model/llama_generate.cpp).
  // prompt (rows, prompt_cols) host, right-padded, row b holding prompt_lengths[b] tokens in
  // [1, prompt_cols]. Writes up to max_new_tokens ids per row into out_tokens (rows,
  // max_new_tokens), stopping a row after it writes eos_token_id (< 0: none); out_lengths (rows)
  // says how many; slots after the end are 0. Tokens are picked on the host from float logits by
  // backend-cpu's TokenSampler (greedy = lowest argmax).
  void generate(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                int32_t max_new_tokens, int32_t eos_token_id, const cpu::SamplingOptions& sampling,
                int32_t* out_tokens, int32_t* out_lengths);

  // Forward + backward FLOPs per token at seq_len: backend-cpu's count (6 per matmul parameter,
  // lm head included, plus 3 * 4*T*Hq*D per layer for attention; cpu::llama_train_flops_per_token).
  double train_flops_per_token(int64_t seq_len) const { return cpu::llama_train_flops_per_token(config_, seq_len); }
  int64_t num_parameters() const { return static_cast<int64_t>(params_.total_numel()); }

 private:
  // The model's stream, created first and destroyed last (after ~LlamaModel has synchronised it
  // and every buffer has gone back to the allocator).
  class OwnedStream {
   public:
    OwnedStream();
    ~OwnedStream();
    OwnedStream(const OwnedStream&) = delete;
    OwnedStream& operator=(const OwnedStream&) = delete;
    cudaStream_t get() const { return stream_; }

   private:
    cudaStream_t stream_ = nullptr;
  };

  // Lays tensors end to end from `base`, each on a 256-byte boundary. With base 0 it only
  // measures (the pointers are offsets and must not be used).
  class Carver {
   public:
    explicit Carver(char* base) : base_(reinterpret_cast<uintptr_t>(base)) {}
    template <typename U>
    U* take(int64_t count) {
      U* p = reinterpret_cast<U*>(base_ + used_);
      used_ += round_up(static_cast<size_t>(count) * sizeof(U));
      return p;
    }
    size_t used() const { return used_; }
    static size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

   private:
    uintptr_t base_;
    size_t used_ = 0;
  };

  // Declared right after a TraceSpan around GPU work. Kernels are asynchronous, so a bare span
  // times only their launches; while the host's profiler records, this waits for the stream at
  // the end of the scope (before the span ends), so the span times the work itself. Recorded
  // steps run slower for it; others pay one branch.
  class TraceSync {
   public:
    explicit TraceSync(cudaStream_t stream) : stream_(stream), on_(plugin::tracing()) {}
    ~TraceSync() {
      if (on_) cudaStreamSynchronize(stream_);  // an error resurfaces at the next checked call
    }
    TraceSync(const TraceSync&) = delete;
    TraceSync& operator=(const TraceSync&) = delete;

   private:
    cudaStream_t stream_;
    bool on_;
  };

  // What one layer's forward reads and writes for `rows` tokens. The residual entering the
  // layer is x_prev + delta_prev (delta_prev nullptr: x_prev alone): the previous block's output
  // projection is added inside this layer's input norm. x_in and x_mid may equal x_prev (in
  // place). On return `delta` holds the MLP's output, still to be added to x_mid.
  template <typename T>
  struct LayerIO {
    const float* x_prev;
    const T* delta_prev;
    float* x_in;   // (rows, d) float: x_prev + delta_prev
    T* qkv;        // (rows, qkv_dim) roped
    T* att;        // (rows, q_dim)
    float* lse;    // (rows, Hq)
    float* x_mid;  // (rows, d) float: x_in + attention block output
    T* gu;         // (rows, 2F)
    T* xn;         // (rows, d) temporaries: norm output, block outputs, SwiGLU output, rstd
    T* delta;
    T* h;          // (rows, F)
    float* rstd;   // (rows)
  };
  // attend(qkv, att, lse): the attention of the roped qkv (full sequence or KV cache).
  template <typename T>
  using Attend = std::function<void(T* qkv, T* att, float* lse)>;

  // The scratch arena for a batch of B x Tn tokens (N = B*Tn), shared by a no_grad forward, a
  // train forward's temporaries and backward (whose gradients reuse the forward-only slots:
  // x = dx, qkv = dqkv, att = datt, gu = dgu, delta = the T copy of dx).
  template <typename T>
  struct Scratch {
    float* x;       // (N, d) residual (no_grad) / d(residual) (backward)
    T* xn;          // (N, d) norm output
    T* delta;       // (N, d) block output / dx cast to T
    T* dnorm;       // (N, d) gradient of a norm's output
    float* rstd;    // (N)
    T* qkv;         // (N, qkv_dim)
    T* att;         // (N, q_dim)
    float* lse;     // (N, Hq)
    T* gu;          // (N, 2F)
    T* h;           // (N, F) SwiGLU output
    T* dh;          // (N, F)
    int32_t* ids;   // (4, N) tokens, targets, positions, segments of a no_grad batch
    float* logp;    // (N) logp out / dlogp in
    float* head_lse;  // (N) of a no_grad forward
    void* attention_workspace;
    void* head_workspace;
  };
  // A train forward's saved tensors: one layer's, and what follows the last layer (first in the
  // activation arena, then layer 0, 1, ...).
  template <typename T>
  struct SavedLayer {
    float* x_in;
    T* qkv;
    T* att;
    float* lse;
    float* x_mid;
    T* gu;
  };
  template <typename T>
  struct SavedFinal {
    float* x;        // (N, d) the final norm's input
    T* xn;           // (N, d) its output, the head's input
    float* rstd;     // (N)
    float* head_lse; // (N)
    int32_t* ids;    // (4, N) tokens, targets, positions, segments
  };

  // Cos/sin tables on the device covering positions [0, max_position]; grows only.
  void ensure_rope(int64_t max_position);
  const float* rope_cos() const { return rope_.data(); }
  const float* rope_sin() const { return rope_.data() + rope_rows_ * (config_.head_dim / 2); }
  // Grows `buffer` to `bytes` (waiting for the stream first: queued kernels may still read the
  // old block) and returns its start.
  char* grow(DeviceBuffer<char>& buffer, size_t bytes);
  // The head's rows per chunk for N rows: the forced option, else logprob_head_chunk_rows.
  int64_t head_chunk_rows(int64_t N) const;

  template <typename T>
  Scratch<T> carve_scratch(Carver& c, int64_t B, int64_t Tn, int64_t chunk) const;
  template <typename T>
  Scratch<T> scratch(int64_t B, int64_t Tn, int64_t chunk);  // grows the scratch arena
  template <typename T>
  SavedLayer<T> carve_saved_layer(Carver& c, int64_t N) const;
  template <typename T>
  SavedFinal<T> carve_saved_final(Carver& c, int64_t N) const;
  template <typename T>
  size_t saved_bytes(int64_t N) const;
  template <typename T>
  SavedLayer<T> saved_layer(int64_t layer, int64_t N);
  template <typename T>
  SavedFinal<T> saved_final(int64_t N);

  // Host <-> device through the pinned buffers. Each first waits for the stream (the pinned
  // memory may still be the source of an earlier asynchronous copy). Uploads are asynchronous;
  // download_floats returns with `host` written.
  struct HostIds {
    const int32_t* data;
    int64_t count;
  };
  void upload_ids(int32_t* device, std::initializer_list<HostIds> parts);  // back to back
  void upload_floats(float* device, const float* host, int64_t count);
  void download_floats(float* host, const float* device, int64_t count);

  template <typename T>
  void layer_forward(size_t layer, int64_t rows, const int32_t* positions, const LayerIO<T>& io,
                     const Attend<T>& attend, const char* span_category);
  template <typename T>
  void forward_impl(const TokenBatch& batch, ForwardMode mode, int64_t chunk, float* logp);
  template <typename T>
  void backward_impl(const float* dlogp);
  template <typename T>
  void generate_impl(const int32_t* prompt, const int32_t* prompt_lengths, int64_t rows, int64_t prompt_cols,
                     int32_t max_new_tokens, int32_t eos_token_id, const cpu::SamplingOptions& sampling,
                     int32_t* out_tokens, int32_t* out_lengths);

  OwnedStream stream_;  // first member: destroyed last
  int device_ = 0;
  cpu::LlamaConfig config_;
  ModelOptions options_;
  ParameterStore params_;
  cpu::LlamaParameterIndex index_;  // where each parameter is in params_
  Gemm gemm_;

  std::vector<double> inv_freq_;
  DeviceBuffer<float> rope_{MemoryKind::workspace};  // cos (rope_rows_, D/2), then sin
  int64_t rope_rows_ = 0;

  DeviceBuffer<char> scratch_{MemoryKind::workspace};
  DeviceBuffer<char> saved_{MemoryKind::activations};
  PinnedBuffer<int32_t> host_ids_;
  PinnedBuffer<float> host_floats_;  // logp out, dlogp in, generate's logits

  // The saved train forward: its shape and head chunk; pending_backward_ until backward.
  int64_t saved_rows_ = 0, saved_cols_ = 0, saved_chunk_ = 0;
  bool pending_backward_ = false;
};

}  // namespace lyre::cuda
