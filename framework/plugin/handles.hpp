// RAII handles over the ABI's Model, Optimizer and Objective objects: the C++ face the Trainer
// uses. Every failing call throws PluginError naming the plugin and the call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.hpp"
#include "lyre/abi.h"
#include "plugin/host_tensor.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre {

struct ParameterInfo {
  size_t index = 0;
  std::string name;
  LyreParamKind kind = LYRE_PARAM_MATRIX;
  bool trainable = true;
  std::vector<int64_t> shape;
  int64_t numel() const;
};

struct GenerateOptions {
  int32_t max_new_tokens = 32;
  int32_t eos_token_id = -1;
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

// DLTensor views of a Batch's five fields, valid while the Batch lives.
class BatchView {
 public:
  // Throws std::invalid_argument when a field does not hold batch_size * seq_len values.
  explicit BatchView(const Batch& batch);
  BatchView(const BatchView&) = delete;  // batch_ points into this object
  BatchView& operator=(const BatchView&) = delete;
  const LyreBatch* get() const { return &batch_; }
 private:
  int64_t shape_[2];
  DLTensor tensors_[5];
  LyreBatch batch_{};
};

class Model {
 public:
  Model(std::shared_ptr<LoadedPlugin> plugin, const std::string& hf_config_json,
        const std::string& options_json = "", int32_t device_index = 0);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<ParameterInfo>& parameters() const { return params_; }
  std::vector<float> read(size_t index, LyreTensorWhich which = LYRE_TENSOR_VALUE) const;
  // Into caller memory of numel() floats (a checkpoint's buffer): no intermediate copy.
  void read_into(size_t index, float* dst, LyreTensorWhich which = LYRE_TENSOR_VALUE) const;
  void write(size_t index, const std::vector<float>& values, LyreTensorWhich which = LYRE_TENSOR_VALUE);

  // logp is resized to B*T and filled.
  void forward(const Batch& batch, LyreForwardMode mode, std::vector<float>& logp);
  void backward(const Batch& batch, const std::vector<float>& dlogp);
  void zero_grad();
  LyreModel_Stats_Args stats(int64_t seq_len) const;
  bool can_generate() const;
  // prompts: one vector of ids per row. Returns the generated ids per row (eos included when hit).
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const GenerateOptions& options);

  LyreModel* raw() const { return model_; }
  const LoadedPlugin& plugin() const { return *plugin_; }
  std::shared_ptr<LoadedPlugin> plugin_ptr() const { return plugin_; }

 private:
  std::shared_ptr<LoadedPlugin> plugin_;
  LyreModel* model_ = nullptr;
  std::vector<ParameterInfo> params_;
};

class Optimizer {
 public:
  // config_json: the optimizer's JSON minus the host's own keys (learning rate, schedule).
  Optimizer(Model& model, const std::string& config_json);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  double grad_squared_norm() const;
  void step(double lr, double grad_scale);

  // The optimizer's state, for checkpoints: empty when the plugin has none to offer (its state
  // entries are NULL). Names as the plugin gives them ("model.norm.weight.exp_avg", "step").
  bool has_state() const;
  std::vector<HostTensor> read_state() const;
  // Writes states back by name; every state of this optimizer must be given, with its shape and
  // dtype (std::runtime_error naming the first difference otherwise).
  void write_state(const std::vector<HostTensor>& states);
  // Name, dtype and shape of each state, without the data.
  std::vector<HostTensor> state_layout() const;

 private:
  std::shared_ptr<LoadedPlugin> plugin_;
  LyreOptimizer* optimizer_ = nullptr;
};

struct ObjectiveResult {
  double loss = 0;
  std::vector<std::pair<std::string, double>> metrics;
};

class Objective {
 public:
  Objective(std::shared_ptr<LoadedPlugin> plugin, const std::string& config_json);
  ~Objective();
  Objective(const Objective&) = delete;
  Objective& operator=(const Objective&) = delete;

  bool needs_reference_logp() const { return needs_reference_; }
  bool needs_paired_rows() const { return needs_pairs_; }
  double normalizer(const Batch& batch) const;
  // dlogp is resized to B*T and filled. reference_logp may be nullptr.
  ObjectiveResult compute(const Batch& batch, const std::vector<float>& policy_logp,
                          const std::vector<float>* reference_logp, double normalizer,
                          std::vector<float>& dlogp);

 private:
  std::shared_ptr<LoadedPlugin> plugin_;
  LyreObjective* objective_ = nullptr;
  bool needs_reference_ = false;
  bool needs_pairs_ = false;
};

}  // namespace lyre
