#include "optimizer.hpp"

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"
#include "model.hpp"

namespace lyre::libtorch {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "optimizer config: " + message);
}

double number(const json& j, const char* key, double lo, bool lo_open, double hi, bool hi_open) {
  const json& v = j.at(key);
  const double x = v.is_number() ? v.get<double>() : NAN;
  const bool ok = v.is_number() && std::isfinite(x) && (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  if (!ok)
    fail(std::string("\"") + key + "\" must be a number in " + (lo_open ? "(" : "[") + std::to_string(lo) + ", " +
         (std::isinf(hi) ? std::string("inf") : std::to_string(hi)) + (hi_open ? ")" : "]") + ", got " + v.dump());
  return x;
}

LyreParamKind kind_from_name(const std::string& name) {
  if (name == "matrix") return LYRE_PARAM_MATRIX;
  if (name == "embedding") return LYRE_PARAM_EMBEDDING;
  if (name == "norm") return LYRE_PARAM_NORM;
  if (name == "bias") return LYRE_PARAM_BIAS;
  if (name == "adapter_a") return LYRE_PARAM_ADAPTER_A;
  if (name == "adapter_b") return LYRE_PARAM_ADAPTER_B;
  fail("\"no_decay_kinds\" names unknown kind \"" + name +
       "\" (kinds: matrix, embedding, norm, bias, adapter_a, adapter_b)");
}

// Restores the stored gradients that step() swapped for scaled copies, even when the update
// throws: the caller's gradients must survive a step unchanged.
class GradientSwap {
 public:
  GradientSwap(const std::vector<Parameter>& params, double scale) {
    if (scale == 1.0) return;
    for (const Parameter& p : params) {
      stored_.push_back({p.value, p.value.grad()});
      p.value.mutable_grad() = p.value.grad() * scale;
    }
  }
  ~GradientSwap() {
    for (auto& [value, grad] : stored_) value.mutable_grad() = grad;
  }
  GradientSwap(const GradientSwap&) = delete;
  GradientSwap& operator=(const GradientSwap&) = delete;

 private:
  std::vector<std::pair<at::Tensor, at::Tensor>> stored_;
};

}  // namespace

bool OptimizerConfig::decays(LyreParamKind kind) const {
  return std::find(no_decay_kinds.begin(), no_decay_kinds.end(), kind) == no_decay_kinds.end();
}

OptimizerConfig parse_optimizer_config(const std::string& json_text) {
  OptimizerConfig c;
  if (json_text.empty()) return c;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("expected a JSON object, got " + j.dump());
  if (j.contains("type")) {
    const json& t = j["type"];
    if (t == "adamw") c.type = OptimizerConfig::Type::adamw;
    else if (t == "sgd") c.type = OptimizerConfig::Type::sgd;
    else fail("\"type\" " + t.dump() + " is not supported (supported: \"adamw\", \"sgd\")");
  }
  const bool adamw = c.type == OptimizerConfig::Type::adamw;
  if (!adamw) c.weight_decay = 0.0;
  const std::set<std::string> common{"type", "weight_decay", "no_decay_kinds"};
  const std::set<std::string> adamw_keys{"betas", "eps"};
  const std::set<std::string> sgd_keys{"momentum", "dampening", "nesterov"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (common.count(k) || (adamw ? adamw_keys : sgd_keys).count(k)) continue;
    if ((adamw ? sgd_keys : adamw_keys).count(k)) fail("key \"" + k + "\" is not an option of " + (adamw ? "adamw" : "sgd"));
    fail("unknown key \"" + k + "\" (known: type, weight_decay, no_decay_kinds, " +
         (adamw ? "betas, eps" : "momentum, dampening, nesterov") + ")");
  }
  if (j.contains("weight_decay")) c.weight_decay = number(j, "weight_decay", 0, false, INFINITY, true);
  if (j.contains("no_decay_kinds")) {
    const json& kinds = j["no_decay_kinds"];
    if (!kinds.is_array()) fail("\"no_decay_kinds\" must be an array of kind names, got " + kinds.dump());
    c.no_decay_kinds.clear();
    for (const json& k : kinds) {
      if (!k.is_string()) fail("\"no_decay_kinds\" must hold strings, got " + k.dump());
      c.no_decay_kinds.push_back(kind_from_name(k.get<std::string>()));
    }
  }
  if (adamw) {
    if (j.contains("betas")) {
      const json& b = j["betas"];
      if (!b.is_array() || b.size() != 2) fail("\"betas\" must be [beta1, beta2], got " + b.dump());
      const json pair{{"beta1", b[0]}, {"beta2", b[1]}};
      c.beta1 = number(pair, "beta1", 0, false, 1, true);
      c.beta2 = number(pair, "beta2", 0, false, 1, true);
    }
    if (j.contains("eps")) c.eps = number(j, "eps", 0, true, INFINITY, true);
  } else {
    if (j.contains("momentum")) c.momentum = number(j, "momentum", 0, false, INFINITY, true);
    if (j.contains("dampening")) c.dampening = number(j, "dampening", 0, false, 1, false);
    if (j.contains("nesterov")) {
      if (!j["nesterov"].is_boolean()) fail("\"nesterov\" must be true or false, got " + j["nesterov"].dump());
      c.nesterov = j["nesterov"].get<bool>();
    }
    if (c.nesterov && (c.momentum <= 0 || c.dampening != 0)) fail("\"nesterov\" needs \"momentum\" > 0 and \"dampening\" 0");
  }
  return c;
}

Optimizer::Optimizer(LlamaModel& model, const OptimizerConfig& config) : model_(model), config_(config) {
  const std::vector<Parameter>& params = model.params();
  std::vector<at::Tensor> decay, no_decay;
  for (const Parameter& p : params) (config.decays(p.kind) ? decay : no_decay).push_back(p.value);
  const bool adamw = config.type == OptimizerConfig::Type::adamw;
  // lr 0 until the first step sets it; the no-decay group differs only in its weight decay.
  auto group = [&](std::vector<at::Tensor> tensors, double weight_decay) -> torch::optim::OptimizerParamGroup {
    if (adamw) {
      torch::optim::AdamWOptions o(0.0);
      o.betas({config.beta1, config.beta2}).eps(config.eps).weight_decay(weight_decay);
      return {std::move(tensors), std::make_unique<torch::optim::AdamWOptions>(o)};
    }
    torch::optim::SGDOptions o(0.0);
    o.momentum(config.momentum).dampening(config.dampening).nesterov(config.nesterov).weight_decay(weight_decay);
    return {std::move(tensors), std::make_unique<torch::optim::SGDOptions>(o)};
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.push_back(group(std::move(decay), config.weight_decay));
  if (!no_decay.empty()) groups.push_back(group(std::move(no_decay), 0.0));
  if (adamw)
    torch_ = std::make_unique<torch::optim::AdamW>(std::move(groups), torch::optim::AdamWOptions(0.0));
  else
    torch_ = std::make_unique<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(0.0));

  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    if (adamw) {
      states_.push_back({p.name + ".exp_avg", p.shape, State::Kind::exp_avg, i});
      states_.push_back({p.name + ".exp_avg_sq", p.shape, State::Kind::exp_avg_sq, i});
    } else if (config.momentum > 0) {
      states_.push_back({p.name + ".momentum_buffer", p.shape, State::Kind::momentum_buffer, i});
    }
  }
  states_.push_back({"step", {1}, State::Kind::step, 0});
  fill_missing_state();  // listed (zeros) and writable before the first step, for a resume
}

Optimizer::~Optimizer() = default;

std::string Optimizer::key(size_t param) const {
  return c10::guts::to_string(model_.params()[param].value.unsafeGetTensorImpl());
}

void Optimizer::fill_missing_state() {
  auto& state = torch_->state();
  for (size_t i = 0; i < model_.params().size(); ++i) {
    if (state.count(key(i))) continue;
    const at::Tensor zeros = at::zeros_like(model_.params()[i].value, at::MemoryFormat::Preserve);
    if (config_.type == OptimizerConfig::Type::adamw) {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(step_);
      s->exp_avg(zeros);
      s->exp_avg_sq(at::zeros_like(zeros));
      state[key(i)] = std::move(s);
    } else if (config_.momentum > 0) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(zeros);
      state[key(i)] = std::move(s);
    }
  }
}

at::Tensor Optimizer::state_tensor(const State& s) const {
  if (s.kind == State::Kind::step) throw plugin::Error(LYRE_ERROR_INTERNAL, "optimizer state step has no tensor");
  auto& state = torch_->state();
  auto it = state.find(key(s.param));
  if (it == state.end()) throw plugin::Error(LYRE_ERROR_INTERNAL, "torch::optim holds no state for " + s.name);
  if (s.kind == State::Kind::momentum_buffer)
    return static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
  auto& adamw = static_cast<torch::optim::AdamWParamState&>(*it->second);
  return s.kind == State::Kind::exp_avg_sq ? adamw.exp_avg_sq() : adamw.exp_avg();
}

void Optimizer::set_step_count(int64_t step) {
  step_ = step;
  if (config_.type != OptimizerConfig::Type::adamw) return;
  for (auto& [name, state] : torch_->state()) static_cast<torch::optim::AdamWParamState&>(*state).step(step);
}

double Optimizer::grad_squared_norm() const {
  at::NoGradGuard no_grad;
  double total = 0;
  for (const Parameter& p : model_.params()) {
    const at::Tensor g = p.value.grad().to(at::kDouble);
    total += (g * g).sum().item<double>();
  }
  return total;
}

void Optimizer::step(double lr, double grad_scale) {
  at::NoGradGuard no_grad;
  for (torch::optim::OptimizerParamGroup& group : torch_->param_groups()) group.options().set_lr(lr);
  const GradientSwap swap(model_.params(), grad_scale);
  // PyTorch's SGD starts a momentum buffer as a copy of the first gradient, which it does only
  // when it finds no state: drop the zeros that stood for it before the first step.
  if (config_.type == OptimizerConfig::Type::sgd && step_ == 0) torch_->state().clear();
  try {
    torch_->step();
  } catch (...) {
    fill_missing_state();  // the states stay listed and readable after a failed step
    throw;
  }
  ++step_;
  // A state that torch::optim made under another key than key() would hide ours: refuse.
  const size_t expected = states_.size() > 1 ? model_.params().size() : 0;
  if (torch_->state().size() != expected)
    throw plugin::Error(LYRE_ERROR_INTERNAL, "torch::optim holds " + std::to_string(torch_->state().size()) +
                                                 " parameter states after a step, expected " + std::to_string(expected));
}

}  // namespace lyre::libtorch
