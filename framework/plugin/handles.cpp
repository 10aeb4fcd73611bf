// The ABI glue behind Model, Optimizer and Objective: fill the Args struct, call the table entry,
// turn a returned LyreError into a PluginError that names the plugin and the call.
#include "plugin/handles.hpp"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <utility>

#include <spdlog/spdlog.h>

#include "plugin/error.hpp"

namespace lyre {
namespace {

constexpr DLDataType kFloat32{kDLFloat, 32, 1};
constexpr DLDataType kInt32{kDLInt, 32, 1};

// A contiguous host tensor over memory the caller owns; `shape` must outlive it.
DLTensor host_tensor(const void* data, DLDataType dtype, const int64_t* shape, int ndim) {
  DLTensor t{};
  t.data = const_cast<void*>(data);  // DLTensor has no const; the ABI says which side writes
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = ndim;
  t.dtype = dtype;
  t.shape = const_cast<int64_t*>(shape);
  t.strides = nullptr;
  t.byte_offset = 0;
  return t;
}

template <typename Args>
Args make_args() {
  Args args{};
  args.struct_size = sizeof(Args);
  return args;
}

// Options JSON: "" and "null" both mean "the plugin's defaults" (NULL across the ABI).
const char* optional_json(const std::string& json) {
  return json.empty() || json == "null" ? nullptr : json.c_str();
}

void expect_size(size_t got, int64_t expected, const char* what) {
  if (static_cast<int64_t>(got) != expected) {
    throw std::invalid_argument(std::string(what) + " has " + std::to_string(got) + " values, expected " +
                                std::to_string(expected) + " (batch_size x seq_len)");
  }
}

const LyreModelApi& model_table(const LoadedPlugin& plugin) {
  if (plugin.api().model == nullptr) {
    throw std::runtime_error("plugin " + plugin.name() + " (" + plugin.path() + ") has no model slot");
  }
  return *plugin.api().model;
}

}  // namespace

int64_t ParameterInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- BatchView ----

BatchView::BatchView(const Batch& batch) {
  const int64_t n = batch.batch_size * batch.seq_len;
  expect_size(batch.tokens.size(), n, "Batch.tokens");
  expect_size(batch.targets.size(), n, "Batch.targets");
  expect_size(batch.positions.size(), n, "Batch.positions");
  expect_size(batch.segment_ids.size(), n, "Batch.segment_ids");
  expect_size(batch.loss_mask.size(), n, "Batch.loss_mask");
  shape_[0] = batch.batch_size;
  shape_[1] = batch.seq_len;
  const std::vector<int32_t>* fields[5] = {&batch.tokens, &batch.targets, &batch.positions, &batch.segment_ids,
                                           &batch.loss_mask};
  for (int i = 0; i < 5; ++i) tensors_[i] = host_tensor(fields[i]->data(), kInt32, shape_, 2);
  batch_.struct_size = sizeof batch_;
  batch_.tokens = &tensors_[0];
  batch_.targets = &tensors_[1];
  batch_.positions = &tensors_[2];
  batch_.segment_ids = &tensors_[3];
  batch_.loss_mask = &tensors_[4];
}

// ---- Model ----

Model::Model(std::shared_ptr<LoadedPlugin> plugin, const std::string& hf_config_json,
             const std::string& options_json, int32_t device_index)
    : plugin_(std::move(plugin)) {
  const LyreModelApi& api = model_table(*plugin_);
  plugin_->initialize();  // no-op when the registry already did it; the ABI wants it first
  auto args = make_args<LyreModel_Create_Args>();
  args.config_json = hf_config_json.c_str();
  args.options_json = optional_json(options_json);
  args.lora_json = nullptr;
  args.device_index = device_index;
  check(api.create(&args), plugin_->name() + ": create model");
  if (args.model == nullptr) {
    throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": create model: returned no model and no error");
  }
  model_ = args.model;
  try {
    auto count = make_args<LyreModel_NumParameters_Args>();
    count.model = model_;
    check(api.num_parameters(&count), plugin_->name() + ": num_parameters");
    params_.reserve(count.num_parameters);
    for (size_t i = 0; i < count.num_parameters; ++i) {
      auto p = make_args<LyreModel_Parameter_Args>();
      p.model = model_;
      p.index = i;
      const std::string context = plugin_->name() + ": parameter " + std::to_string(i);
      check(api.parameter(&p), context);
      if (p.name == nullptr || p.ndim < 0 || p.ndim > 4) {
        throw PluginError(LYRE_ERROR_INTERNAL, context + ": " + (p.name == nullptr ? "name is NULL" : "ndim " +
                                                   std::to_string(p.ndim) + " outside [0, 4]"));
      }
      ParameterInfo info;
      info.index = i;
      info.name = p.name;
      info.kind = static_cast<LyreParamKind>(p.kind);
      info.trainable = p.trainable != 0;
      info.shape.assign(p.shape, p.shape + p.ndim);
      params_.push_back(std::move(info));
    }
  } catch (...) {
    // The destructor does not run for a half-made object: give the model back here.
    auto d = make_args<LyreModel_Destroy_Args>();
    d.model = model_;
    LyreError* err = api.destroy(&d);
    if (err != nullptr) delete err;
    throw;
  }
}

Model::~Model() {
  if (model_ == nullptr) return;
  auto args = make_args<LyreModel_Destroy_Args>();
  args.model = model_;
  try {
    check(model_table(*plugin_).destroy(&args), plugin_->name() + ": destroy model");
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());  // a destructor cannot throw; the plugin's complaint is still seen
  }
}

std::vector<float> Model::read(size_t index, LyreTensorWhich which) const {
  std::vector<float> values(static_cast<size_t>(params_.at(index).numel()));
  read_into(index, values.data(), which);
  return values;
}

void Model::read_into(size_t index, float* values, LyreTensorWhich which) const {
  const ParameterInfo& p = params_.at(index);
  const DLTensor dst = host_tensor(values, kFloat32, p.shape.data(), static_cast<int>(p.shape.size()));
  auto args = make_args<LyreModel_ReadTensor_Args>();
  args.model = model_;
  args.index = index;
  args.which = which;
  args.dst = &dst;
  check(model_table(*plugin_).read_tensor(&args), plugin_->name() + ": read_tensor '" + p.name + "'");
}

void Model::write(size_t index, const std::vector<float>& values, LyreTensorWhich which) {
  const ParameterInfo& p = params_.at(index);
  if (static_cast<int64_t>(values.size()) != p.numel()) {
    throw std::invalid_argument("write '" + p.name + "': " + std::to_string(values.size()) + " values, expected " +
                                std::to_string(p.numel()));
  }
  const DLTensor src = host_tensor(values.data(), kFloat32, p.shape.data(), static_cast<int>(p.shape.size()));
  auto args = make_args<LyreModel_WriteTensor_Args>();
  args.model = model_;
  args.index = index;
  args.which = which;
  args.src = &src;
  check(model_table(*plugin_).write_tensor(&args), plugin_->name() + ": write_tensor '" + p.name + "'");
}

void Model::forward(const Batch& batch, LyreForwardMode mode, std::vector<float>& logp) {
  const BatchView view(batch);
  logp.assign(static_cast<size_t>(batch.size()), 0.0f);
  const int64_t shape[2] = {batch.batch_size, batch.seq_len};
  const DLTensor out = host_tensor(logp.data(), kFloat32, shape, 2);
  auto args = make_args<LyreModel_Forward_Args>();
  args.model = model_;
  args.batch = view.get();
  args.mode = mode;
  args.logp = &out;
  check(model_table(*plugin_).forward(&args), plugin_->name() + ": forward");
}

void Model::backward(const Batch& batch, const std::vector<float>& dlogp) {
  expect_size(dlogp.size(), batch.size(), "dlogp");
  const int64_t shape[2] = {batch.batch_size, batch.seq_len};
  const DLTensor in = host_tensor(dlogp.data(), kFloat32, shape, 2);
  auto args = make_args<LyreModel_Backward_Args>();
  args.model = model_;
  args.dlogp = &in;
  check(model_table(*plugin_).backward(&args), plugin_->name() + ": backward");
}

void Model::zero_grad() {
  auto args = make_args<LyreModel_ZeroGrad_Args>();
  args.model = model_;
  check(model_table(*plugin_).zero_grad(&args), plugin_->name() + ": zero_grad");
}

LyreModel_Stats_Args Model::stats(int64_t seq_len) const {
  auto args = make_args<LyreModel_Stats_Args>();
  args.model = model_;
  args.seq_len = seq_len;
  check(model_table(*plugin_).stats(&args), plugin_->name() + ": stats");
  return args;
}

bool Model::can_generate() const {
  const LyreModelApi& api = model_table(*plugin_);
  return api.struct_size >= offsetof(LyreModelApi, generate) + sizeof(void*) && api.generate != nullptr;
}

std::vector<std::vector<int32_t>> Model::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerateOptions& options) {
  if (!can_generate()) {
    throw PluginError(LYRE_ERROR_UNIMPLEMENTED,
                      plugin_->name() + ": generate: this backend cannot generate (its model table has no generate "
                                        "entry); choose another backend for generation");
  }
  if (prompts.empty()) return {};
  if (options.max_new_tokens <= 0) return std::vector<std::vector<int32_t>>(prompts.size());
  const int64_t rows = static_cast<int64_t>(prompts.size());
  int64_t width = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw std::invalid_argument("generate: prompt " + std::to_string(b) + " is empty");
    width = std::max<int64_t>(width, static_cast<int64_t>(prompts[b].size()));
  }
  std::vector<int32_t> prompt(static_cast<size_t>(rows * width), 0), lengths(static_cast<size_t>(rows));
  for (int64_t b = 0; b < rows; ++b) {
    std::copy(prompts[b].begin(), prompts[b].end(), prompt.begin() + b * width);
    lengths[b] = static_cast<int32_t>(prompts[b].size());
  }
  const int64_t max_new = options.max_new_tokens;
  std::vector<int32_t> out_tokens(static_cast<size_t>(rows * max_new), 0), out_lengths(static_cast<size_t>(rows), 0);

  const int64_t prompt_shape[2] = {rows, width}, rows_shape[1] = {rows}, out_shape[2] = {rows, max_new};
  const DLTensor prompt_t = host_tensor(prompt.data(), kInt32, prompt_shape, 2);
  const DLTensor lengths_t = host_tensor(lengths.data(), kInt32, rows_shape, 1);
  const DLTensor out_t = host_tensor(out_tokens.data(), kInt32, out_shape, 2);
  const DLTensor out_lengths_t = host_tensor(out_lengths.data(), kInt32, rows_shape, 1);
  auto sampling = make_args<LyreSamplingParams>();
  sampling.temperature = options.temperature;
  sampling.top_k = options.top_k;
  sampling.top_p = options.top_p;
  sampling.seed = options.seed;

  auto args = make_args<LyreModel_Generate_Args>();
  args.model = model_;
  args.prompt = &prompt_t;
  args.prompt_lengths = &lengths_t;
  args.max_new_tokens = options.max_new_tokens;
  args.eos_token_id = options.eos_token_id;
  args.sampling = &sampling;
  args.out_tokens = &out_t;
  args.out_lengths = &out_lengths_t;
  check(model_table(*plugin_).generate(&args), plugin_->name() + ": generate");

  std::vector<std::vector<int32_t>> generated(prompts.size());
  for (int64_t b = 0; b < rows; ++b) {
    const int32_t n = out_lengths[b];
    if (n < 0 || n > max_new) {
      throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": generate: row " + std::to_string(b) + " length " +
                                                 std::to_string(n) + " outside [0, " + std::to_string(max_new) + "]");
    }
    generated[b].assign(out_tokens.begin() + b * max_new, out_tokens.begin() + b * max_new + n);
  }
  return generated;
}

// ---- Optimizer ----

Optimizer::Optimizer(Model& model, const std::string& config_json) : plugin_(model.plugin_ptr()) {
  const LyreOptimizerApi* api = plugin_->api().optimizer;
  if (api == nullptr) {
    throw std::runtime_error("plugin " + plugin_->name() + " (" + plugin_->path() + ") has no optimizer slot");
  }
  auto args = make_args<LyreOptimizer_Create_Args>();
  args.model = model.raw();
  // The optimizer's config is required by the ABI: an empty one is the empty object.
  const std::string config = config_json.empty() || config_json == "null" ? "{}" : config_json;
  args.config_json = config.c_str();
  check(api->create(&args), plugin_->name() + ": create optimizer");
  if (args.optimizer == nullptr) {
    throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": create optimizer: returned no optimizer and no error");
  }
  optimizer_ = args.optimizer;
}

Optimizer::~Optimizer() {
  if (optimizer_ == nullptr) return;
  auto args = make_args<LyreOptimizer_Destroy_Args>();
  args.optimizer = optimizer_;
  try {
    check(plugin_->api().optimizer->destroy(&args), plugin_->name() + ": destroy optimizer");
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
}

double Optimizer::grad_squared_norm() const {
  auto args = make_args<LyreOptimizer_GradSquaredNorm_Args>();
  args.optimizer = optimizer_;
  check(plugin_->api().optimizer->grad_squared_norm(&args), plugin_->name() + ": grad_squared_norm");
  return args.squared_norm;
}

void Optimizer::step(double lr, double grad_scale) {
  auto args = make_args<LyreOptimizer_Step_Args>();
  args.optimizer = optimizer_;
  args.lr = lr;
  args.grad_scale = grad_scale;
  check(plugin_->api().optimizer->step(&args), plugin_->name() + ": optimizer step");
}

bool Optimizer::has_state() const {
  const LyreOptimizerApi& api = *plugin_->api().optimizer;
  return api.num_states != nullptr && api.state != nullptr && api.read_state != nullptr && api.write_state != nullptr;
}

std::vector<HostTensor> Optimizer::state_layout() const {
  std::vector<HostTensor> layout;
  if (!has_state()) return layout;
  const LyreOptimizerApi& api = *plugin_->api().optimizer;
  auto count = make_args<LyreOptimizer_NumStates_Args>();
  count.optimizer = optimizer_;
  check(api.num_states(&count), plugin_->name() + ": optimizer num_states");
  for (size_t i = 0; i < count.num_states; ++i) {
    auto args = make_args<LyreOptimizer_State_Args>();
    args.optimizer = optimizer_;
    args.index = i;
    check(api.state(&args), plugin_->name() + ": optimizer state " + std::to_string(i));
    if (args.name == nullptr || args.ndim < 0 || args.ndim > 4) {
      throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": optimizer state " + std::to_string(i) +
                                                 " has no name or a rank outside [0, 4]");
    }
    HostTensor t;
    t.name = args.name;
    t.dtype = args.dtype;
    t.shape.assign(args.shape, args.shape + args.ndim);
    layout.push_back(std::move(t));
  }
  return layout;
}

std::vector<HostTensor> Optimizer::read_state() const {
  std::vector<HostTensor> states = state_layout();
  for (size_t i = 0; i < states.size(); ++i) {
    HostTensor& t = states[i];
    t.bytes.resize(static_cast<size_t>(t.numel()) * (t.dtype.bits / 8u) * t.dtype.lanes);
    const DLTensor dst = host_tensor(t.bytes.data(), t.dtype, t.shape.data(), static_cast<int>(t.shape.size()));
    auto args = make_args<LyreOptimizer_StateTensor_Args>();
    args.optimizer = optimizer_;
    args.index = i;
    args.tensor = &dst;
    check(plugin_->api().optimizer->read_state(&args), plugin_->name() + ": read optimizer state '" + t.name + "'");
  }
  return states;
}

void Optimizer::write_state(const std::vector<HostTensor>& states) {
  const std::vector<HostTensor> layout = state_layout();
  for (size_t i = 0; i < layout.size(); ++i) {
    const HostTensor& want = layout[i];
    auto it = std::find_if(states.begin(), states.end(), [&](const HostTensor& t) { return t.name == want.name; });
    if (it == states.end()) throw std::runtime_error("optimizer state '" + want.name + "' is missing");
    const bool same_dtype = it->dtype.code == want.dtype.code && it->dtype.bits == want.dtype.bits && it->dtype.lanes == want.dtype.lanes;
    if (!same_dtype || it->shape != want.shape) {
      throw std::runtime_error("optimizer state '" + want.name + "' is " + dtype_text(it->dtype) + " " +
                               shape_text(it->shape) + ", this optimizer's is " + dtype_text(want.dtype) + " " +
                               shape_text(want.shape));
    }
    const DLTensor src = host_tensor(it->bytes.data(), it->dtype, it->shape.data(), static_cast<int>(it->shape.size()));
    auto args = make_args<LyreOptimizer_StateTensor_Args>();
    args.optimizer = optimizer_;
    args.index = i;
    args.tensor = &src;
    check(plugin_->api().optimizer->write_state(&args), plugin_->name() + ": write optimizer state '" + want.name + "'");
  }
}

std::string dtype_text(DLDataType dtype) {
  const char* base = dtype.code == kDLFloat ? "float" : dtype.code == kDLInt ? "int" : dtype.code == kDLUInt ? "uint"
                     : dtype.code == kDLBfloat ? "bfloat" : "dtype";
  std::string text = base + std::to_string(dtype.bits);
  if (dtype.lanes != 1) text += "x" + std::to_string(dtype.lanes);
  return text;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// ---- Objective ----

Objective::Objective(std::shared_ptr<LoadedPlugin> plugin, const std::string& config_json)
    : plugin_(std::move(plugin)) {
  const LyreObjectiveApi* api = plugin_->api().objective;
  if (api == nullptr) {
    throw std::runtime_error("plugin " + plugin_->name() + " (" + plugin_->path() + ") has no objective slot");
  }
  plugin_->initialize();
  auto args = make_args<LyreObjective_Create_Args>();
  args.config_json = optional_json(config_json);
  check(api->create(&args), plugin_->name() + ": create objective");
  if (args.objective == nullptr) {
    throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": create objective: returned no objective and no error");
  }
  objective_ = args.objective;
  needs_reference_ = args.needs_reference_logp != 0;
  needs_pairs_ = args.needs_paired_rows != 0;
}

Objective::~Objective() {
  if (objective_ == nullptr) return;
  auto args = make_args<LyreObjective_Destroy_Args>();
  args.objective = objective_;
  try {
    check(plugin_->api().objective->destroy(&args), plugin_->name() + ": destroy objective");
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
}

double Objective::normalizer(const Batch& batch) const {
  const BatchView view(batch);
  auto args = make_args<LyreObjective_Normalizer_Args>();
  args.objective = objective_;
  args.batch = view.get();
  check(plugin_->api().objective->normalizer(&args), plugin_->name() + ": normalizer");
  return args.normalizer;
}

ObjectiveResult Objective::compute(const Batch& batch, const std::vector<float>& policy_logp,
                                   const std::vector<float>* reference_logp, double normalizer,
                                   std::vector<float>& dlogp) {
  const BatchView view(batch);
  expect_size(policy_logp.size(), batch.size(), "policy_logp");
  if (reference_logp != nullptr) expect_size(reference_logp->size(), batch.size(), "reference_logp");
  if (needs_reference_ && reference_logp == nullptr) {
    throw std::invalid_argument(plugin_->name() + ": compute: this objective needs reference_logp");
  }
  dlogp.assign(static_cast<size_t>(batch.size()), 0.0f);
  const int64_t shape[2] = {batch.batch_size, batch.seq_len};
  const DLTensor policy = host_tensor(policy_logp.data(), kFloat32, shape, 2);
  const DLTensor reference =
      host_tensor(reference_logp != nullptr ? reference_logp->data() : nullptr, kFloat32, shape, 2);
  const DLTensor grad = host_tensor(dlogp.data(), kFloat32, shape, 2);

  auto args = make_args<LyreObjective_Compute_Args>();
  args.objective = objective_;
  args.batch = view.get();
  args.policy_logp = &policy;
  args.reference_logp = reference_logp != nullptr ? &reference : nullptr;
  args.normalizer = normalizer;
  args.dlogp = &grad;
  const std::string context = plugin_->name() + ": compute";
  check(plugin_->api().objective->compute(&args), context);
  if (args.num_metrics > 0 && args.metrics == nullptr) {
    throw PluginError(LYRE_ERROR_INTERNAL, context + ": num_metrics is " + std::to_string(args.num_metrics) +
                                               " but metrics is NULL");
  }
  ObjectiveResult result;
  result.loss = args.loss;
  result.metrics.reserve(args.num_metrics);
  for (size_t i = 0; i < args.num_metrics; ++i) {
    const LyreMetric& m = args.metrics[i];
    result.metrics.emplace_back(m.name != nullptr ? m.name : "", m.value);
  }
  return result;
}

}  // namespace lyre
