#include "optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lyre::cuda {

bool OptimizerPlan::uses(Buffer b) const {
  return std::any_of(states.begin(), states.end(), [b](const State& s) { return s.buffer == b; });
}

OptimizerPlan plan_optimizer(const std::vector<ParameterInfo>& params, const OptimizerConfig& config) {
  using Buffer = OptimizerPlan::Buffer;
  OptimizerPlan plan;
  for (const ParameterInfo& p : params) {
    if (!p.trainable) continue;
    const float weight_decay = config.decays(p.kind) ? static_cast<float>(config.weight_decay) : 0.0f;
    const int64_t numel = static_cast<int64_t>(p.numel);
    for (int64_t off = 0; off < numel; off += kOptimizerChunk) {
      const int64_t count = std::min(kOptimizerChunk, numel - off);
      plan.chunks.push_back({static_cast<int64_t>(p.offset) + off, count, weight_decay});
    }
  }
  // Interleaved per parameter for adamw, as backend-cpu lists them.
  for (const ParameterInfo& p : params) {
    if (!p.trainable) continue;
    if (config.type == OptimizerConfig::Type::adamw) {
      plan.states.push_back({p.name + ".exp_avg", p.shape, Buffer::exp_avg, p.offset, p.numel});
      plan.states.push_back({p.name + ".exp_avg_sq", p.shape, Buffer::exp_avg_sq, p.offset, p.numel});
    } else if (config.momentum > 0) {
      plan.states.push_back({p.name + ".momentum_buffer", p.shape, Buffer::momentum_buffer, p.offset, p.numel});
    }
  }
  plan.states.push_back({"step", {1}, Buffer::step, 0, 1});
  return plan;
}

Optimizer::Optimizer(ParameterStore& params, cudaStream_t stream, const OptimizerConfig& config)
    : params_(params), stream_(stream), config_(config), plan_(plan_optimizer(params.infos(), config)) {
  num_chunks_ = static_cast<int64_t>(plan_.chunks.size());
  if (num_chunks_ > 0) {
    chunks_.reserve(plan_.chunks.size());
    LYRE_CUDA_CHECK(cudaMemcpyAsync(chunks_.data(), plan_.chunks.data(), plan_.chunks.size() * sizeof(OptimizerChunk),
                                    cudaMemcpyHostToDevice, stream_));
  }
  norm_scratch_.reserve(static_cast<size_t>(num_chunks_) + 1);
  const size_t n = params.total_numel();
  for (OptimizerPlan::Buffer b : {OptimizerPlan::Buffer::exp_avg, OptimizerPlan::Buffer::exp_avg_sq,
                                  OptimizerPlan::Buffer::momentum_buffer}) {
    if (!plan_.uses(b) || n == 0) continue;
    buffer(b).reserve(n);
    LYRE_CUDA_CHECK(cudaMemsetAsync(buffer(b).data(), 0, n * sizeof(float), stream_));
  }
  // Errors of the copies surface here rather than at the first step.
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

DeviceBuffer<float>& Optimizer::buffer(OptimizerPlan::Buffer b) {
  switch (b) {
    case OptimizerPlan::Buffer::exp_avg: return exp_avg_;
    case OptimizerPlan::Buffer::exp_avg_sq: return exp_avg_sq_;
    case OptimizerPlan::Buffer::momentum_buffer: return momentum_buffer_;
    case OptimizerPlan::Buffer::step: break;
  }
  throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda optimizer: the step counter has no device buffer");
}

double Optimizer::grad_squared_norm() {
  if (num_chunks_ == 0) return 0.0;
  double* total = norm_scratch_.data() + num_chunks_;
  squared_norm(total, params_.grads(), chunks_.data(), num_chunks_, norm_scratch_.data(), stream_);
  double result = 0.0;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof result, cudaMemcpyDeviceToHost, stream_));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return result;
}

void Optimizer::step(double lr, double grad_scale) {
  const OptimizerConfig& c = config_;
  const bool first = step_ == 0;  // SGD: the momentum buffer starts as the first gradient
  const int64_t t = ++step_;
  // The bf16 working copy the matmuls read is rewritten from the new master weights in the same
  // pass; fp32 has none (the matmuls read the master weights).
  bf16* lowp = params_.precision() == Precision::bf16 ? params_.lowp() : nullptr;
  if (c.type == OptimizerConfig::Type::adamw) {
    // Scalars in double, as PyTorch computes them in Python, then rounded once.
    AdamwHyper h{};
    h.lr = static_cast<float>(lr);
    h.beta1 = c.beta1;
    h.beta2 = c.beta2;
    h.eps = static_cast<float>(c.eps);
    h.bias_correction1 = static_cast<float>(1.0 - std::pow(c.beta1, static_cast<double>(t)));
    h.bias_correction2 = static_cast<float>(1.0 - std::pow(c.beta2, static_cast<double>(t)));
    h.grad_scale = static_cast<float>(grad_scale);
    adamw_step<bf16>(params_.values(), lowp, params_.grads(), exp_avg_.data(), exp_avg_sq_.data(), chunks_.data(),
                     num_chunks_, h, stream_);
  } else {
    SgdHyper h{};
    h.lr = static_cast<float>(lr);
    h.momentum = static_cast<float>(c.momentum);
    h.dampening = static_cast<float>(c.dampening);
    h.nesterov = c.nesterov;
    h.first_step = first;
    h.grad_scale = static_cast<float>(grad_scale);
    sgd_step<bf16>(params_.values(), lowp, params_.grads(), c.momentum > 0 ? momentum_buffer_.data() : nullptr,
                   chunks_.data(), num_chunks_, h, stream_);
  }
}

void Optimizer::read_state(size_t index, void* host) {
  const OptimizerPlan::State& s = plan_.states.at(index);
  if (s.buffer == OptimizerPlan::Buffer::step) {
    std::memcpy(host, &step_, sizeof step_);
    return;
  }
  if (s.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(host, state_data(s), s.numel * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Optimizer::write_state(size_t index, const void* host) {
  const OptimizerPlan::State& s = plan_.states.at(index);
  if (s.buffer == OptimizerPlan::Buffer::step) {
    std::memcpy(&step_, host, sizeof step_);
    return;
  }
  if (s.numel == 0) return;
  LYRE_CUDA_CHECK(cudaMemcpyAsync(state_data(s), host, s.numel * sizeof(float), cudaMemcpyHostToDevice, stream_));
  LYRE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer is borrowed for the call only
}

std::unique_ptr<Optimizer> make_optimizer(ParameterStore& params, cudaStream_t stream, const std::string& json_text) {
  return std::make_unique<Optimizer>(params, stream, cpu::parse_optimizer_config(json_text));
}

}  // namespace lyre::cuda
