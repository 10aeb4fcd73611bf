#include "train/checkpoint_state.hpp"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include "io/checkpoint_layout.hpp"
#include "util/json_integer.hpp"

namespace lyre {
namespace {

using nlohmann::json;

constexpr DLDataType kFloat32{kDLFloat, 32, 1};

bool same_dtype(DLDataType a, DLDataType b) { return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes; }

// Keys of config.json that say nothing about the model's shape or numerics.
bool cosmetic_model_key(const std::string& key) {
  static const std::set<std::string> keys = {"_name_or_path", "transformers_version", "torch_dtype", "use_cache",
                                             "architectures"};
  return keys.count(key) > 0;
}

json step_json(const StepRecord& r) {
  return {{"step", r.step},       {"epoch", r.epoch},     {"loss", r.loss},
          {"learning_rate", r.learning_rate}, {"grad_norm", r.grad_norm}, {"tokens", r.tokens},
          {"positions", r.positions}, {"samples", r.samples}, {"step_seconds", r.step_seconds}};
}

// Fields of trainer_state.json, type-checked before conversion (an edited file may hold 3e20).
int64_t integer_field(const json& j, const char* key) {
  const json& v = j.at(key);
  const std::optional<int64_t> n = json_int64(v);
  if (!n) throw json::type_error::create(302, std::string("\"") + key + "\" is " + v.dump() + ", not an integer", &v);
  return *n;
}

double number_field(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_number()) throw json::type_error::create(302, std::string("\"") + key + "\" is " + v.dump() + ", not a number", &v);
  return v.get<double>();
}

StepRecord step_from_json(const json& j) {
  StepRecord r;
  r.step = integer_field(j, "step");
  r.epoch = integer_field(j, "epoch");
  r.loss = number_field(j, "loss");
  r.learning_rate = number_field(j, "learning_rate");
  r.grad_norm = number_field(j, "grad_norm");
  r.tokens = integer_field(j, "tokens");
  r.positions = integer_field(j, "positions");
  r.samples = integer_field(j, "samples");
  r.step_seconds = number_field(j, "step_seconds");
  return r;
}

json eval_json(const EvalRecord& e) {
  return {{"step", e.step}, {"loss", e.loss}, {"perplexity", e.perplexity}, {"samples", e.samples},
          {"loss_tokens", e.loss_tokens}};
}

EvalRecord eval_from_json(const json& j) {
  EvalRecord e;
  e.step = integer_field(j, "step");
  e.loss = number_field(j, "loss");
  e.perplexity = number_field(j, "perplexity");
  e.samples = integer_field(j, "samples");
  e.loss_tokens = integer_field(j, "loss_tokens");
  return e;
}

std::string shown(const json& v) { return v.is_null() ? "absent" : v.dump(); }

}  // namespace

std::string json_hash(const json& value) {
  // FNV-1a over the canonical dump (nlohmann sorts object keys): the same config, the same hash.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : value.dump()) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<HostTensor> checkpoint_tensors(const Model& model, const Optimizer& optimizer) {
  std::vector<HostTensor> tensors;
  const std::string model_prefix = std::string(checkpoint_layout::kModelGroup) + "/";
  for (const ParameterInfo& p : model.parameters()) {
    if (!p.trainable) continue;
    HostTensor t;
    t.name = model_prefix + p.name;
    t.dtype = kFloat32;
    t.shape = p.shape;
    t.bytes.resize(static_cast<size_t>(p.numel()) * sizeof(float));
    model.read_into(p.index, reinterpret_cast<float*>(t.bytes.data()));
    tensors.push_back(std::move(t));
  }
  const std::string optimizer_prefix = std::string(checkpoint_layout::kOptimizerGroup) + "/";
  for (HostTensor& s : optimizer.read_state()) {
    s.name = optimizer_prefix + s.name;
    tensors.push_back(std::move(s));
  }
  return tensors;
}

json trainer_state_json(const RunIdentity& run, const Model& model, const Optimizer& optimizer, int64_t step,
                        int64_t epoch, const DataloaderState& data, int64_t total_steps, double learning_rate,
                        const std::vector<StepRecord>& history, const std::vector<EvalRecord>& evals) {
  json parameters = json::array();
  for (const ParameterInfo& p : model.parameters()) {
    parameters.push_back({{"name", p.name}, {"shape", p.shape}, {"trainable", p.trainable}});
  }
  json states = json::array();
  for (const HostTensor& s : optimizer.state_layout()) {
    states.push_back({{"name", s.name}, {"dtype", dtype_text(s.dtype)}, {"shape", s.shape}});
  }
  json log_history = json::array();
  for (const StepRecord& r : history) log_history.push_back(step_json(r));
  json eval_history = json::array();
  for (const EvalRecord& e : evals) eval_history.push_back(eval_json(e));
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return {
      {"format", checkpoint_layout::kFormat},
      {"format_version", checkpoint_layout::kFormatVersion},
      {"lyre_version", LYRE_VERSION},
      {"saved_at", now},
      {"step", step},
      {"epoch", epoch},
      {"total_steps", total_steps},
      {"learning_rate", learning_rate},
      {"data", data.to_json()},
      // The loop's only random stream is the data order, a pure function of (seed, epoch).
      {"rng", {{"shuffle_seed", std::to_string(data.seed)}, {"shuffle_epoch", data.epoch}}},
      {"config_hash", json_hash(run.config)},
      {"config", run.config},
      {"model_config", run.model_config},
      {"tokenizer", run.tokenizer},
      {"base_model", run.base_model.empty() ? json(nullptr) : json(run.base_model)},
      {"parameters", parameters},
      {"optimizer_states", states},
      {"log_history", log_history},
      {"eval_history", eval_history},
  };
}

ResumePoint restore_checkpoint(const LoadedCheckpoint& checkpoint, const std::string& where, const RunIdentity& run,
                               Model& model, Optimizer& optimizer) {
  auto fail = [&](const std::string& what) -> void {
    throw std::runtime_error("checkpoint " + where + ": " + what);
  };
  json meta = json::parse(checkpoint.metadata_json, nullptr, false);
  if (!meta.is_object()) fail(std::string(checkpoint_layout::kTrainerState) + " is not a JSON object");
  if (meta.value("format", std::string()) != checkpoint_layout::kFormat) {
    fail(std::string(checkpoint_layout::kTrainerState) + ": \"format\" is " + shown(meta.value("format", json())) +
         ", expected \"" + checkpoint_layout::kFormat + "\"");
  }
  if (!meta.contains("format_version") || !meta["format_version"].is_number_integer() ||
      meta["format_version"].get<int64_t>() > checkpoint_layout::kFormatVersion) {
    fail("format_version " + shown(meta.value("format_version", json())) + " is newer than this lyre reads (" +
         std::to_string(checkpoint_layout::kFormatVersion) + ")");
  }

  // The model: the same architecture, and every trainable parameter with its shape.
  const json& saved_model = meta.value("model_config", json::object());
  std::set<std::string> keys;
  for (const auto& [k, v] : saved_model.items()) keys.insert(k);
  for (const auto& [k, v] : run.model_config.items()) keys.insert(k);
  for (const std::string& k : keys) {
    if (cosmetic_model_key(k)) continue;
    const json a = saved_model.contains(k) ? saved_model[k] : json();
    const json b = run.model_config.contains(k) ? run.model_config[k] : json();
    if (a != b) {
      fail("the model differs: config.json \"" + k + "\" is " + shown(a) + " in the checkpoint and " + shown(b) +
           " in this run");
    }
  }
  std::map<std::string, const HostTensor*> saved_params, saved_states;
  const std::string model_prefix = std::string(checkpoint_layout::kModelGroup) + "/";
  const std::string optimizer_prefix = std::string(checkpoint_layout::kOptimizerGroup) + "/";
  for (const HostTensor& t : checkpoint.tensors) {
    if (t.name.rfind(model_prefix, 0) == 0) {
      saved_params[t.name.substr(model_prefix.size())] = &t;
    } else if (t.name.rfind(optimizer_prefix, 0) == 0) {
      saved_states[t.name.substr(optimizer_prefix.size())] = &t;
    } else {
      fail("unexpected tensor \"" + t.name + "\" (neither model/ nor optimizer/)");
    }
  }
  std::set<std::string> trained;
  for (const ParameterInfo& p : model.parameters()) {
    if (!p.trainable) continue;
    trained.insert(p.name);
    auto it = saved_params.find(p.name);
    if (it == saved_params.end()) fail("parameter " + p.name + " of this model is not in the checkpoint");
    if (!same_dtype(it->second->dtype, kFloat32) || it->second->shape != p.shape ||
        it->second->bytes.size() != static_cast<size_t>(p.numel()) * sizeof(float)) {
      fail("parameter " + p.name + " is " + dtype_text(it->second->dtype) + " " + shape_text(it->second->shape) +
           " in the checkpoint and float32 " + shape_text(p.shape) + " in this model");
    }
  }
  for (const auto& [name, t] : saved_params) {
    if (!trained.count(name)) fail("the checkpoint has parameter " + name + ", which this model does not train");
  }

  // The optimizer: the same state tensors (names encode the algorithm: exp_avg, momentum ...).
  const std::vector<HostTensor> layout = optimizer.state_layout();
  std::set<std::string> state_names;
  for (const HostTensor& s : layout) {
    state_names.insert(s.name);
    auto it = saved_states.find(s.name);
    if (it == saved_states.end()) {
      fail("the optimizer differs: its state " + s.name + " is not in the checkpoint (was it saved by another optimizer type?)");
    }
    if (!same_dtype(it->second->dtype, s.dtype) || it->second->shape != s.shape) {
      fail("the optimizer differs: state " + s.name + " is " + dtype_text(it->second->dtype) + " " +
           shape_text(it->second->shape) + " in the checkpoint and " + dtype_text(s.dtype) + " " + shape_text(s.shape) +
           " in this run");
    }
  }
  for (const auto& [name, t] : saved_states) {
    if (!state_names.count(name)) fail("the optimizer differs: the checkpoint has state " + name + ", which this optimizer does not");
  }

  ResumePoint point;
  try {
    point.step = integer_field(meta, "step");
    point.data = DataloaderState::from_json(meta.at("data"), "checkpoint " + where + " \"data\"");
    for (const json& r : meta.at("log_history")) point.history.push_back(step_from_json(r));
    for (const json& e : meta.value("eval_history", json::array())) point.evals.push_back(eval_from_json(e));
  } catch (const json::exception& e) {
    fail(std::string(checkpoint_layout::kTrainerState) + ": " + e.what());
  }
  if (point.step != checkpoint.step) {
    fail(std::string(checkpoint_layout::kTrainerState) + " says step " + std::to_string(point.step) +
         ", the directory step " + std::to_string(checkpoint.step));
  }
  if (static_cast<int64_t>(point.history.size()) != point.step) {
    fail("log_history has " + std::to_string(point.history.size()) + " steps, expected " + std::to_string(point.step));
  }

  const json saved_config = meta.value("config", json::object());
  std::set<std::string> config_keys;
  for (const auto& [k, v] : saved_config.items()) config_keys.insert(k);
  for (const auto& [k, v] : run.config.items()) config_keys.insert(k);
  for (const std::string& k : config_keys) {
    if (saved_config.value(k, json()) != run.config.value(k, json())) point.config_changes.push_back(k);
  }

  // Everything fits: only now write into the backend.
  for (const ParameterInfo& p : model.parameters()) {
    if (!p.trainable) continue;
    const HostTensor& t = *saved_params.at(p.name);
    std::vector<float> values(static_cast<size_t>(p.numel()));
    std::memcpy(values.data(), t.bytes.data(), values.size() * sizeof(float));
    model.write(p.index, values);
  }
  std::vector<HostTensor> states;
  states.reserve(saved_states.size());
  for (const auto& [name, t] : saved_states) {
    HostTensor s = *t;
    s.name = name;
    states.push_back(std::move(s));
  }
  optimizer.write_state(states);
  return point;
}

}  // namespace lyre
