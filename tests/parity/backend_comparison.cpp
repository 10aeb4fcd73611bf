#include "backend_comparison.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>

namespace lyre::parity {
namespace {

constexpr uint64_t kDlogpSeed = 0xd109'b000ull;

// "" when the model lists the reference's parameters (names, kinds, trainable, shapes, in order).
std::string parameter_list_difference(const std::vector<ParameterInfo>& pa,
                                      const std::vector<ParameterInfo>& pr) {
  for (size_t i = 0; i < std::max(pa.size(), pr.size()); ++i) {
    if (i >= pa.size()) return "parameter " + std::to_string(i) + " " + pr[i].name + " is missing";
    if (i >= pr.size()) return "parameter " + std::to_string(i) + " " + pa[i].name + " is extra";
    if (pa[i].name != pr[i].name || pa[i].kind != pr[i].kind || pa[i].trainable != pr[i].trainable ||
        pa[i].shape != pr[i].shape)
      return "parameter " + std::to_string(i) + ": " + pa[i].name + " kind " + std::to_string(pa[i].kind) +
             " shape " + shape_text(pa[i].shape) + (pa[i].trainable ? "" : " frozen") + ", reference " +
             pr[i].name + " kind " + std::to_string(pr[i].kind) + " shape " + shape_text(pr[i].shape) +
             (pr[i].trainable ? "" : " frozen");
  }
  return "";
}

// A fresh model of `side` for the inputs' config, holding the inputs' weights.
std::unique_ptr<Model> make_model(const Side& side, const CaseInputs& inputs) {
  auto model = std::make_unique<Model>(side.plugin, inputs.config_json, side.options_json);
  const std::string difference = parameter_list_difference(model->parameters(), inputs.parameters);
  if (!difference.empty())
    throw std::runtime_error(side.label() + " lists other parameters than the reference: " + difference);
  if (inputs.weights.size() != inputs.parameters.size())
    throw std::runtime_error("the inputs hold " + std::to_string(inputs.weights.size()) + " weights for " +
                             std::to_string(inputs.parameters.size()) + " parameters");
  for (size_t i = 0; i < inputs.weights.size(); ++i) model->write(i, inputs.weights[i]);
  return model;
}

// Every parameter's gradient (only the trainable ones are compared) or value, normwise.
Comparison compare_tensors(const std::vector<ParameterInfo>& params,
                           const std::vector<std::vector<float>>& test,
                           const std::vector<std::vector<float>>& reference, bool gradients,
                           const std::string& quantity, double tolerance) {
  Comparison out{quantity, {}};
  for (const ParameterInfo& p : params) {
    if (gradients && !p.trainable) continue;
    out.tensors.push_back({p.name, normwise_error(test.at(p.index), reference.at(p.index)), tolerance, ""});
  }
  return out;
}

std::string position_text(const Batch& b, int64_t flat) {
  if (flat < 0) return "";
  const int64_t row = flat / b.seq_len, col = flat % b.seq_len;
  return "at row " + std::to_string(row) + " column " + std::to_string(col) + " (position " +
         std::to_string(b.positions[flat]) + ", segment " + std::to_string(b.segment_ids[flat]) +
         ", target " + std::to_string(b.targets[flat]) + ")";
}

std::vector<float> state_values(const HostTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype.code == kDLFloat && t.dtype.bits == 32) {
    std::memcpy(out.data(), t.bytes.data(), out.size() * sizeof(float));
  } else if (t.dtype.code == kDLInt && t.dtype.bits == 64) {
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, t.bytes.data() + i * sizeof v, sizeof v);
      out[i] = static_cast<float>(v);  // step counts: small, exact in float
    }
  } else {
    throw std::runtime_error("optimizer state " + t.name + ": dtype " + dtype_text(t.dtype) +
                             " (the parity suite reads float32 and int64)");
  }
  return out;
}

// "" when both lists hold the same names with the same dtypes and shapes (order aside: a
// checkpoint's states are written back by name).
std::string layout_difference(const std::vector<HostTensor>& a, const std::vector<HostTensor>& r) {
  std::map<std::string, const HostTensor*> by_name;
  for (const HostTensor& t : r) by_name[t.name] = &t;
  std::string out;
  for (const HostTensor& t : a) {
    auto it = by_name.find(t.name);
    if (it == by_name.end()) {
      out += "state " + t.name + " is not in the reference; ";
      continue;
    }
    const HostTensor& ref = *it->second;
    if (t.dtype.code != ref.dtype.code || t.dtype.bits != ref.dtype.bits || t.dtype.lanes != ref.dtype.lanes ||
        t.shape != ref.shape)
      out += "state " + t.name + " is " + dtype_text(t.dtype) + " " + shape_text(t.shape) + ", reference " +
             dtype_text(ref.dtype) + " " + shape_text(ref.shape) + "; ";
    by_name.erase(it);
  }
  for (const auto& [name, t] : by_name) out += "reference state " + name + " is missing; ";
  return out;
}

}  // namespace

std::string Side::label() const {
  return plugin->name() + (options_json.empty() ? "" : " " + options_json);
}

CaseInputs make_inputs(const ParityCase& c, const std::vector<ParameterInfo>& parameters, int steps) {
  CaseInputs in;
  in.description = c.describe();
  in.config_json = c.config_json();
  in.parameters = parameters;
  in.weights = make_weights(parameters, c);
  for (int s = 0; s < steps; ++s) {
    in.batches.push_back(make_batch(c, s));
    in.step_dlogp.push_back(make_dlogp(in.batches.back(), c.seed ^ kDlogpSeed ^ static_cast<uint64_t>(s + 1)));
  }
  in.dlogp = make_dlogp(in.batches.at(0), c.seed ^ kDlogpSeed);
  return in;
}

ForwardBackwardResult run_forward_backward(const Side& side, const CaseInputs& inputs) {
  const std::unique_ptr<Model> model = make_model(side, inputs);
  ForwardBackwardResult out;
  model->zero_grad();
  model->forward(inputs.batches.at(0), LYRE_FORWARD_TRAIN, out.logp);
  model->backward(inputs.batches.at(0), inputs.dlogp);
  out.gradients.resize(inputs.parameters.size());
  for (const ParameterInfo& p : inputs.parameters)
    if (p.trainable) out.gradients[p.index] = model->read(p.index, LYRE_TENSOR_GRAD);
  return out;
}

AdamwResult run_adamw_steps(const Side& side, const CaseInputs& inputs) {
  if (inputs.step_dlogp.size() != inputs.batches.size())
    throw std::runtime_error("the inputs hold " + std::to_string(inputs.step_dlogp.size()) + " dlogp for " +
                             std::to_string(inputs.batches.size()) + " batches");
  const std::unique_ptr<Model> model = make_model(side, inputs);
  Optimizer optimizer(*model, inputs.optimizer_json);
  std::vector<float> logp;
  for (size_t s = 0; s < inputs.batches.size(); ++s) {
    model->zero_grad();
    model->forward(inputs.batches[s], LYRE_FORWARD_TRAIN, logp);
    model->backward(inputs.batches[s], inputs.step_dlogp[s]);
    optimizer.step(inputs.learning_rate, 1.0);
  }
  AdamwResult out;
  for (const ParameterInfo& p : inputs.parameters) out.parameters.push_back(model->read(p.index));
  out.state = optimizer.read_state();
  return out;
}

CaseRun run_reference(const Side& reference, const ParityCase& c) {
  CaseRun run;
  run.inputs = make_inputs(c, Model(reference.plugin, c.config_json(), reference.options_json).parameters());
  run.forward_backward = run_forward_backward(reference, run.inputs);
  run.adamw = run_adamw_steps(reference, run.inputs);
  return run;
}

Reference live_reference(const Side& reference) {
  Reference out{reference.label(), {}};
  for (const ParityCase& c : parity_cases()) out.runs.push_back(run_reference(reference, c));
  return out;
}

ForwardBackward compare_forward_backward(const Side& test, const CaseRun& reference, const Tolerances& tol) {
  return compare_forward_backward(run_forward_backward(test, reference.inputs), reference, tol);
}

ForwardBackward compare_forward_backward(const ForwardBackwardResult& t, const CaseRun& reference,
                                         const Tolerances& tol) {
  const ForwardBackwardResult& r = reference.forward_backward;
  const Batch& batch = reference.inputs.batches.at(0);

  ForwardBackward out;
  const LogpError le = logp_error(t.logp, r.logp);
  std::string detail = position_text(batch, le.worst_index);
  if (le.worst_index >= 0)
    detail += ": " + std::to_string(t.logp[le.worst_index]) + " vs " + std::to_string(r.logp[le.worst_index]);
  out.logp = {"logp", {{"logp", le.error, tol.logp, detail}}};
  out.gradients = compare_tensors(reference.inputs.parameters, t.gradients, r.gradients, /*gradients=*/true,
                                  "gradient", tol.gradient);
  return out;
}

AdamwSteps compare_adamw_steps(const Side& test, const CaseRun& reference, const Tolerances& tol) {
  return compare_adamw_steps(run_adamw_steps(test, reference.inputs), reference, tol);
}

AdamwSteps compare_adamw_steps(const AdamwResult& t, const CaseRun& reference, const Tolerances& tol) {
  const AdamwResult& r = reference.adamw;
  const std::string steps = std::to_string(reference.inputs.batches.size());

  AdamwSteps out;
  out.layout_difference = layout_difference(t.state, r.state);
  out.parameters = compare_tensors(reference.inputs.parameters, t.parameters, r.parameters, /*gradients=*/false,
                                   "parameter after " + steps + " AdamW steps", tol.parameter);
  out.states.quantity = "optimizer state after " + steps + " AdamW steps";
  if (out.layout_difference.empty()) {
    std::map<std::string, const HostTensor*> ref_states;
    for (const HostTensor& s : r.state) ref_states[s.name] = &s;
    for (const HostTensor& s : t.state) {
      const bool is_float = s.dtype.code == kDLFloat;
      const double e = normwise_error(state_values(s), state_values(*ref_states.at(s.name)));
      out.states.tensors.push_back({s.name, e, is_float ? tol.state : 0.0, ""});
    }
  }
  return out;
}

}  // namespace lyre::parity
