#include "golden_files.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"

namespace lyre::parity {
namespace {

namespace st = lyre::safetensors;
using nlohmann::json;

constexpr const char* kFormat = "lyre parity golden";
constexpr int kVersion = 1;
constexpr const char* kIndexFile = "golden.json";

const std::pair<const char*, std::vector<int32_t> Batch::*> kBatchFields[] = {
    {"tokens", &Batch::tokens},           {"targets", &Batch::targets},
    {"positions", &Batch::positions},     {"segment_ids", &Batch::segment_ids},
    {"loss_mask", &Batch::loss_mask}};

std::string batch_tensor(size_t s, const std::string& field) {
  return "input.batch." + std::to_string(s) + "." + field;
}

std::string case_file(size_t i) { return "case-" + std::to_string(i) + ".safetensors"; }

// ---- writing ----

// The tensors of one case file, borrowing the run's data.
struct CaseTensors {
  std::vector<st::TensorRef> refs;

  void add(std::string name, st::Dtype dtype, std::vector<int64_t> shape, const void* data) {
    refs.push_back({std::move(name), dtype, std::move(shape), data});
  }
};

void write_case(const std::string& path, const CaseRun& run) {
  const CaseInputs& in = run.inputs;
  CaseTensors t;
  for (const ParameterInfo& p : in.parameters)
    t.add("input.weight/" + p.name, st::Dtype::F32, p.shape, in.weights.at(p.index).data());
  for (size_t s = 0; s < in.batches.size(); ++s) {
    const Batch& b = in.batches[s];
    const std::vector<int64_t> shape{b.batch_size, b.seq_len};
    for (const auto& [field, member] : kBatchFields)
      t.add(batch_tensor(s, field), st::Dtype::I32, shape, (b.*member).data());
    t.add(batch_tensor(s, "dlogp"), st::Dtype::F32, shape, in.step_dlogp.at(s).data());
  }
  const Batch& b0 = in.batches.at(0);
  t.add("input.dlogp", st::Dtype::F32, {b0.batch_size, b0.seq_len}, in.dlogp.data());
  t.add("reference.logp", st::Dtype::F32, {b0.batch_size, b0.seq_len}, run.forward_backward.logp.data());
  for (const ParameterInfo& p : in.parameters) {
    if (!p.trainable) continue;
    const std::vector<float>& g = run.forward_backward.gradients.at(p.index);
    t.add("reference.gradient/" + p.name, st::Dtype::F32, p.shape, g.data());
  }
  for (const ParameterInfo& p : in.parameters) {
    const std::vector<float>& w = run.adamw.parameters.at(p.index);
    t.add("reference.parameter_after_steps/" + p.name, st::Dtype::F32, p.shape, w.data());
  }
  for (const HostTensor& s : run.adamw.state) {
    st::Dtype dtype;
    if (s.dtype.code == kDLFloat && s.dtype.bits == 32 && s.dtype.lanes == 1) dtype = st::Dtype::F32;
    else if (s.dtype.code == kDLInt && s.dtype.bits == 64 && s.dtype.lanes == 1) dtype = st::Dtype::I64;
    else throw std::runtime_error(path + ": optimizer state " + s.name + " is " + dtype_text(s.dtype) +
                                  " (golden files hold float32 and int64)");
    t.add("reference.optimizer_state/" + s.name, dtype, s.shape, s.bytes.data());
  }
  st::write_file(path, t.refs, {{"format", kFormat}}, /*durable=*/false);
}

json case_index(const CaseRun& run, const std::string& file) {
  const CaseInputs& in = run.inputs;
  json params = json::array();
  for (const ParameterInfo& p : in.parameters)
    params.push_back(
        {{"name", p.name}, {"kind", static_cast<int>(p.kind)}, {"trainable", p.trainable}, {"shape", p.shape}});
  json batches = json::array();
  for (const Batch& b : in.batches)
    batches.push_back({{"batch_size", b.batch_size}, {"seq_len", b.seq_len}, {"num_samples", b.num_samples}});
  json states = json::array();
  for (const HostTensor& s : run.adamw.state) states.push_back(s.name);
  return {{"file", file},
          {"description", in.description},
          {"config_json", in.config_json},
          {"optimizer_json", in.optimizer_json},
          {"learning_rate", in.learning_rate},
          {"parameters", params},
          {"batches", batches},
          {"optimizer_state", states}};
}

// ---- reading ----

// One case file, opened and validated, from which tensors are read by name with the dtype and
// shape the index says.
class CaseFile {
 public:
  explicit CaseFile(const std::string& path) : file_(st::File::open(path)) {}

  template <typename T>
  std::vector<T> read(const std::string& name, st::Dtype dtype, const std::vector<int64_t>& shape) const {
    const st::TensorInfo& t = file_.at(name);
    if (t.dtype != dtype || t.shape != shape)
      throw std::runtime_error(file_.path() + ": tensor \"" + name + "\" is " + st::dtype_name(t.dtype) + " " +
                               shape_text(t.shape) + ", the index says " + st::dtype_name(dtype) + " " +
                               shape_text(shape));
    std::vector<T> out(static_cast<size_t>(t.numel()));
    std::memcpy(out.data(), file_.data(t), out.size() * sizeof(T));  // the bytes may be unaligned
    return out;
  }

  HostTensor read_state(const std::string& name) const {
    const st::TensorInfo& t = file_.at("reference.optimizer_state/" + name);
    HostTensor out;
    out.name = name;
    out.shape = t.shape;
    if (t.dtype == st::Dtype::F32) out.dtype = {kDLFloat, 32, 1};
    else if (t.dtype == st::Dtype::I64) out.dtype = {kDLInt, 64, 1};
    else throw std::runtime_error(file_.path() + ": optimizer state \"" + name + "\" is " +
                                  st::dtype_name(t.dtype) + " (golden files hold F32 and I64)");
    out.bytes.assign(file_.data(t), file_.data(t) + t.nbytes());
    return out;
  }

 private:
  st::File file_;
};

CaseRun read_case(const std::string& dir, const json& index) {
  CaseRun run;
  CaseInputs& in = run.inputs;
  in.description = index.at("description").get<std::string>();
  in.config_json = index.at("config_json").get<std::string>();
  in.optimizer_json = index.at("optimizer_json").get<std::string>();
  in.learning_rate = index.at("learning_rate").get<double>();
  for (const json& p : index.at("parameters")) {
    ParameterInfo info;
    info.index = in.parameters.size();
    info.name = p.at("name").get<std::string>();
    info.kind = static_cast<LyreParamKind>(p.at("kind").get<int>());
    info.trainable = p.at("trainable").get<bool>();
    info.shape = p.at("shape").get<std::vector<int64_t>>();
    in.parameters.push_back(std::move(info));
  }
  const json& batches = index.at("batches");
  if (batches.empty()) throw std::invalid_argument("\"batches\" is empty (the forward/backward runs batch 0)");

  const CaseFile file((std::filesystem::path(dir) / index.at("file").get<std::string>()).string());
  for (const ParameterInfo& p : in.parameters)
    in.weights.push_back(file.read<float>("input.weight/" + p.name, st::Dtype::F32, p.shape));
  for (size_t s = 0; s < batches.size(); ++s) {
    Batch b(batches[s].at("batch_size").get<int64_t>(), batches[s].at("seq_len").get<int64_t>());
    b.num_samples = batches[s].at("num_samples").get<int64_t>();
    const std::vector<int64_t> shape{b.batch_size, b.seq_len};
    for (const auto& [field, member] : kBatchFields)
      b.*member = file.read<int32_t>(batch_tensor(s, field), st::Dtype::I32, shape);
    in.step_dlogp.push_back(file.read<float>(batch_tensor(s, "dlogp"), st::Dtype::F32, shape));
    in.batches.push_back(std::move(b));
  }
  const std::vector<int64_t> bt{in.batches[0].batch_size, in.batches[0].seq_len};
  in.dlogp = file.read<float>("input.dlogp", st::Dtype::F32, bt);

  run.forward_backward.logp = file.read<float>("reference.logp", st::Dtype::F32, bt);
  run.forward_backward.gradients.resize(in.parameters.size());
  for (const ParameterInfo& p : in.parameters) {
    if (p.trainable)
      run.forward_backward.gradients[p.index] =
          file.read<float>("reference.gradient/" + p.name, st::Dtype::F32, p.shape);
    run.adamw.parameters.push_back(
        file.read<float>("reference.parameter_after_steps/" + p.name, st::Dtype::F32, p.shape));
  }
  for (const json& name : index.at("optimizer_state"))
    run.adamw.state.push_back(file.read_state(name.get<std::string>()));
  return run;
}

}  // namespace

std::vector<std::string> write_golden(const std::string& dir, const Reference& reference) {
  std::filesystem::create_directories(dir);
  std::vector<std::string> written;
  json index = {
      {"format", kFormat}, {"version", kVersion}, {"reference", reference.label}, {"cases", json::array()}};
  for (size_t i = 0; i < reference.runs.size(); ++i) {
    written.push_back((std::filesystem::path(dir) / case_file(i)).string());
    write_case(written.back(), reference.runs[i]);
    index["cases"].push_back(case_index(reference.runs[i], case_file(i)));
  }
  written.push_back((std::filesystem::path(dir) / kIndexFile).string());
  std::ofstream out(written.back());
  out << index.dump(1) << "\n";
  out.close();
  if (!out) throw std::runtime_error(written.back() + ": cannot write");
  return written;
}

Reference read_golden(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kIndexFile).string();
  std::ifstream f(path);
  if (!f)
    throw std::runtime_error(path + ": cannot open (is " + dir + " a folder parity_golden_writer wrote?)");
  json index;
  try {
    index = json::parse(f);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": not JSON: " + e.what());
  }
  Reference out;
  std::string where;  // "case 3: " while a case is read
  try {
    if (!index.is_object()) throw std::invalid_argument("not a JSON object");
    if (index.value("format", json()) != kFormat || index.value("version", json()) != kVersion)
      throw std::invalid_argument("format " + index.value("format", json()).dump() + " version " +
                                  index.value("version", json()).dump() + ", this test reads \"" + kFormat +
                                  "\" version " + std::to_string(kVersion));
    out.label = "golden files " + dir + " (" + index.at("reference").get<std::string>() + ")";
    const json& cases = index.at("cases");
    for (size_t i = 0; i < cases.size(); ++i) {
      where = "case " + std::to_string(i) + ": ";
      out.runs.push_back(read_case(dir, cases[i]));
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": " + where + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": " + where + e.what());
  }
  if (out.runs.empty()) throw std::runtime_error(path + ": holds no case");
  return out;
}

}  // namespace lyre::parity
