#include "backend_comparison.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>

#include "plugin/handles.hpp"
#include "plugin/host_tensor.hpp"

namespace lyre::parity {
namespace {

constexpr uint64_t kDlogpSeed = 0xd109'b000ull;

// "" when both models list the same parameters (names, kinds, trainable, shapes, in order).
std::string parameter_list_difference(const Model& a, const Model& r) {
  const auto& pa = a.parameters();
  const auto& pr = r.parameters();
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

// Both sides' models of a case, holding the same weights.
struct ModelPair {
  std::unique_ptr<Model> test, reference;

  ModelPair(const Side& t, const Side& r, const ParityCase& c) {
    const std::string config = c.config_json();
    test = std::make_unique<Model>(t.plugin, config, t.options_json);
    reference = std::make_unique<Model>(r.plugin, config, r.options_json);
    const std::string difference = parameter_list_difference(*test, *reference);
    if (!difference.empty())
      throw std::runtime_error(t.label() + " and " + r.label() + " list different parameters: " + difference);
    const auto weights = make_weights(reference->parameters(), c);
    for (size_t i = 0; i < weights.size(); ++i) {
      test->write(i, weights[i]);
      reference->write(i, weights[i]);
    }
  }
};

// Every trainable parameter's gradient (which = GRAD) or value, compared normwise.
Comparison compare_parameters(const ModelPair& m, LyreTensorWhich which, const std::string& quantity,
                              double tolerance) {
  Comparison out{quantity, {}};
  for (const ParameterInfo& p : m.reference->parameters()) {
    if (which == LYRE_TENSOR_GRAD && !p.trainable) continue;
    const double e = normwise_error(m.test->read(p.index, which), m.reference->read(p.index, which));
    out.tensors.push_back({p.name, e, tolerance, ""});
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

ForwardBackward compare_forward_backward(const Side& test, const Side& reference, const ParityCase& c,
                                         const Tolerances& tol) {
  ModelPair m(test, reference, c);
  const Batch batch = make_batch(c, 0);
  const std::vector<float> dlogp = make_dlogp(batch, c.seed ^ kDlogpSeed);
  std::vector<float> logp_test, logp_ref;
  for (Model* model : {m.test.get(), m.reference.get()}) model->zero_grad();
  m.test->forward(batch, LYRE_FORWARD_TRAIN, logp_test);
  m.reference->forward(batch, LYRE_FORWARD_TRAIN, logp_ref);
  m.test->backward(batch, dlogp);
  m.reference->backward(batch, dlogp);

  ForwardBackward out;
  const LogpError le = logp_error(logp_test, logp_ref);
  std::string detail = position_text(batch, le.worst_index);
  if (le.worst_index >= 0)
    detail += ": " + std::to_string(logp_test[le.worst_index]) + " vs " + std::to_string(logp_ref[le.worst_index]);
  out.logp = {"logp", {{"logp", le.error, tol.logp, detail}}};
  out.gradients = compare_parameters(m, LYRE_TENSOR_GRAD, "gradient", tol.gradient);
  return out;
}

AdamwSteps compare_adamw_steps(const Side& test, const Side& reference, const ParityCase& c,
                               const Tolerances& tol, int steps) {
  ModelPair m(test, reference, c);
  Optimizer opt_test(*m.test, kAdamwJson), opt_ref(*m.reference, kAdamwJson);
  AdamwSteps out;
  out.layout_difference = layout_difference(opt_test.state_layout(), opt_ref.state_layout());

  std::vector<float> logp;
  for (int s = 0; s < steps; ++s) {
    const Batch batch = make_batch(c, s);
    const std::vector<float> dlogp = make_dlogp(batch, c.seed ^ kDlogpSeed ^ static_cast<uint64_t>(s + 1));
    for (auto [model, opt] : {std::pair{m.test.get(), &opt_test}, std::pair{m.reference.get(), &opt_ref}}) {
      model->zero_grad();
      model->forward(batch, LYRE_FORWARD_TRAIN, logp);
      model->backward(batch, dlogp);
      opt->step(kLearningRate, 1.0);
    }
  }
  out.parameters = compare_parameters(m, LYRE_TENSOR_VALUE,
                                      "parameter after " + std::to_string(steps) + " AdamW steps", tol.parameter);
  out.states.quantity = "optimizer state after " + std::to_string(steps) + " AdamW steps";
  if (out.layout_difference.empty()) {
    std::map<std::string, HostTensor> ref_states;
    for (HostTensor& t : opt_ref.read_state()) ref_states[t.name] = std::move(t);
    for (const HostTensor& t : opt_test.read_state()) {
      const HostTensor& r = ref_states.at(t.name);
      const bool is_float = t.dtype.code == kDLFloat;
      out.states.tensors.push_back({t.name, normwise_error(state_values(t), state_values(r)),
                                    is_float ? tol.gradient : 0.0, ""});
    }
  }
  return out;
}

}  // namespace lyre::parity
