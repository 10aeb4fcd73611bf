#include "train/run_config.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <spdlog/spdlog.h>

#include "data/chat_template.hpp"
#include "data/dataloader.hpp"
#include "data/tokenizer.hpp"
#include "io/hf_model.hpp"
#include "plugin/error.hpp"
#include "plugin/plugin_host.hpp"
#include "train/exact_match.hpp"
#include "train/init_weights.hpp"
#include "util/config_reader.hpp"

namespace lyre {
namespace {

namespace fs = std::filesystem;

std::string resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

DataloaderConfig read_dataloader(ConfigReader r, const std::string& base_dir) {
  DataloaderConfig d;
  auto path = r.get_optional_string("path");
  if (!path) r.fail("path", "is required (a JSONL file, a text file or folder, or a token file)");
  d.path = resolve(base_dir, *path);
  d.format = r.get_string("format", d.format);
  if (d.format != "auto" && d.format != "jsonl" && d.format != "text" && d.format != "tokens")
    r.fail("format", "must be \"jsonl\", \"text\", \"tokens\" or \"auto\", got \"" + d.format + "\"");
  const nlohmann::json mapping = r.get_json("column_mapping");
  if (!mapping.is_null()) {
    if (!mapping.is_object()) r.fail("column_mapping", "must be an object of field -> column name");
    for (const auto& [field, column] : mapping.items()) {
      if (!column.is_string()) r.fail("column_mapping", "value of \"" + field + "\" must be a column name (string)");
      d.column_mapping[field] = column.get<std::string>();
    }
  }
  d.skip_invalid = r.get_bool("skip_invalid", d.skip_invalid);
  d.per_device_batch_size = r.get_int("per_device_batch_size", d.per_device_batch_size, 1);
  auto seq_len = r.get_optional_int("seq_len", 2);
  if (!seq_len) r.fail("seq_len", "is required (the row length in tokens)");
  d.seq_len = *seq_len;
  d.shuffle = r.get_bool("shuffle", d.shuffle);
  d.drop_last = r.get_bool("drop_last", d.drop_last);
  d.packing = r.get_bool("packing", d.packing);
  d.pack_window = r.get_int("pack_window", d.pack_window, 1);
  d.overlong = r.get_string("overlong", d.overlong);
  try {
    parse_overlong(d.overlong);
  } catch (const std::invalid_argument& e) {
    r.fail("overlong", e.what());
  }
  d.token_dtype = r.get_string("token_dtype", d.token_dtype);
  if (!d.token_dtype.empty() && d.token_dtype != "uint16" && d.token_dtype != "uint32")
    r.fail("token_dtype", "must be \"uint16\" or \"uint32\", got \"" + d.token_dtype + "\"");
  d.document_masking = r.get_bool("document_masking", d.document_masking);
  r.finish();
  return d;
}

}  // namespace

RunConfig parse_run_config(const nlohmann::json& config, const std::string& source) {
  RunConfig run;
  run.source = source;
  const std::string base_dir = fs::path(source).parent_path().string();
  ConfigReader r(config, source);

  run.seed = static_cast<uint64_t>(r.get_int("seed", 0, 0));
  run.tokenizer = r.get_string("tokenizer", run.tokenizer);
  if (run.tokenizer != "byte") run.tokenizer = resolve(base_dir, run.tokenizer);
  run.chat_template = r.get_string("chat_template", run.chat_template);
  if (!run.chat_template.empty()) {
    try {
      chat_template_by_name(run.chat_template);
    } catch (const std::exception& e) {
      r.fail("chat_template", e.what());
    }
  }
  run.backend = r.get_string("backend", run.backend);
  r.section("backend_options");  // checks it is an object; the backend checks its keys
  run.backend_options = r.get_json("backend_options");
  if (run.backend_options.is_null()) run.backend_options = nlohmann::json::object();

  {
    ConfigReader m = r.section("model");
    nlohmann::json hf = m.get_json("config");
    if (auto path = m.get_optional_string("path")) {
      // A pretrained Hugging Face directory: its config.json and weights.
      if (!hf.is_null()) m.fail("config", "and \"path\" are both set: \"path\" brings its own config.json");
      run.model_path = fs::absolute(resolve(base_dir, *path)).lexically_normal().string();
      try {
        run.model_config_text = read_hf_config(run.model_path);
      } catch (const std::exception& e) {
        m.fail("path", e.what());
      }
      run.model_config_source = (fs::path(run.model_path) / "config.json").string();
    } else if (hf.is_string()) {
      run.model_config_source = resolve(base_dir, hf.get<std::string>());
      std::ifstream in(run.model_config_source);
      if (!in) m.fail("config", "names " + run.model_config_source + ", which cannot be opened");
      std::stringstream text;
      text << in.rdbuf();
      run.model_config_text = text.str();
    } else if (hf.is_object()) {
      run.model_config_source = source + " (model.config)";
      run.model_config_text = hf.dump();
    } else if (run.model_path.empty()) {
      m.fail("config", "is required: a Hugging Face config.json path, or the object itself (or \"path\": a model directory)");
    }
    ConfigReader init = m.section("init");
    run.init_seed = static_cast<uint64_t>(init.get_int("seed", static_cast<int64_t>(run.seed), 0));
    nlohmann::json parsed = nlohmann::json::parse(run.model_config_text, nullptr, false);
    double fallback_std = 0.02;
    if (parsed.is_object() && parsed.contains("initializer_range") && parsed["initializer_range"].is_number()) {
      fallback_std = parsed["initializer_range"].get<double>();
    }
    run.init_std = init.get_number("std", fallback_std);
    init.finish();
    m.finish();
  }

  // A model directory brings its tokenizer unless the config names one.
  if (!run.model_path.empty() && !config.contains("tokenizer")) {
    for (const char* file : {"tokenizer.json", "tokenizer.model", "vocab.json"}) {
      if (fs::exists(fs::path(run.model_path) / file)) {
        run.tokenizer = run.model_path;
        break;
      }
    }
  }

  {
    ConfigReader o = r.section("objective");
    run.objective_name = o.get_string("name", run.objective_name);
    nlohmann::json rest = r.get_json("objective");
    run.objective_options = rest.is_object() ? rest : nlohmann::json::object();
    run.objective_options.erase("name");  // the rest belongs to the plugin, which checks it
  }

  {
    ConfigReader o = r.section("optimizer");
    TrainerOptions& t = run.trainer;
    t.schedule.learning_rate = o.get_number("learning_rate", 1e-4);
    if (t.schedule.learning_rate <= 0) o.fail("learning_rate", "must be positive");
    t.max_grad_norm = o.get_number("max_grad_norm", 1.0);
    if (t.max_grad_norm < 0) o.fail("max_grad_norm", "must be >= 0 (0 turns clipping off)");
    ConfigReader s = o.section("lr_schedule");
    try {
      t.schedule.type = parse_schedule_type(s.get_string("type", "constant"));
    } catch (const std::invalid_argument& e) {
      s.fail("type", e.what());
    }
    t.schedule.warmup_steps = s.get_int("warmup_steps", 0, 0);
    t.schedule.min_lr_ratio = s.get_number("min_lr_ratio", 0.0);
    if (t.schedule.min_lr_ratio < 0 || t.schedule.min_lr_ratio > 1) s.fail("min_lr_ratio", "must be in [0, 1]");
    s.finish();
    nlohmann::json rest = r.get_json("optimizer");
    run.optimizer_options = rest.is_object() ? rest : nlohmann::json::object();
    for (const char* host_key : {"learning_rate", "max_grad_norm", "lr_schedule"}) run.optimizer_options.erase(host_key);
    if (!run.optimizer_options.contains("type")) run.optimizer_options["type"] = "adamw";
  }

  if (!r.has("train_dataloader")) r.fail("train_dataloader", "is required");
  run.train = read_dataloader(r.section("train_dataloader"), base_dir);
  if (r.has("eval_dataloader")) {
    run.eval = read_dataloader(r.section("eval_dataloader"), base_dir);
    run.eval->shuffle = false;
    run.eval->drop_last = false;
  } else {
    r.get_json("eval_dataloader");
  }
  if (r.has("exact_match")) {
    ConfigReader e = r.section("exact_match");
    ExactMatchConfig x;
    auto path = e.get_optional_string("path");
    if (!path) e.fail("path", "is required (prompt/completion JSONL)");
    x.path = resolve(base_dir, *path);
    x.max_samples = e.get_int("max_samples", x.max_samples, 1);
    x.max_new_tokens = static_cast<int32_t>(e.get_int("max_new_tokens", x.max_new_tokens, 1));
    x.batch_size = e.get_int("batch_size", x.batch_size, 1);
    x.at_start = e.get_bool("at_start", x.at_start);
    e.finish();
    run.exact_match = x;
  } else {
    r.get_json("exact_match");
  }

  TrainerOptions& t = run.trainer;
  t.steps = r.get_optional_int("steps", 1);
  t.epochs = r.get_optional_int("epochs", 1);
  t.log_steps_interval = r.get_int("log_steps_interval", t.log_steps_interval, 1);
  t.eval_steps_interval = r.get_optional_int("eval_steps_interval", 1);
  t.eval_epochs_interval = r.get_optional_int("eval_epochs_interval", 1);
  t.max_eval_samples = r.get_optional_int("max_eval_samples", 1);
  t.gradient_accumulation_steps = r.get_int("gradient_accumulation_steps", 1, 1);

  if (auto dir = r.get_optional_string("tensorboard_dir")) t.tensorboard_dir = resolve(base_dir, *dir);
  if (r.has("profiler")) {
    ConfigReader p = r.section("profiler");
    ProfilerOptions o;
    auto out = p.get_optional_string("output_path");
    if (!out) p.fail("output_path", "is required (the trace file, or a folder for it)");
    o.output_path = resolve(base_dir, *out);
    if (!out->empty() && out->back() == '/') o.output_path += '/';  // "a folder" survives resolve()
    o.skip_first_n_steps = p.get_int("skip_first_n_steps", o.skip_first_n_steps, 0);
    o.max_profile_steps = p.get_int("max_profile_steps", o.max_profile_steps, 1);
    p.finish();
    t.profiler = o;
  } else {
    r.get_json("profiler");
  }
  if (r.has("checkpointer")) {
    ConfigReader c = r.section("checkpointer");
    CheckpointerConfig ck;
    ck.plugin = c.get_string("plugin", ck.plugin);
    auto dir = c.get_optional_string("save_dir");
    if (!dir) c.fail("save_dir", "is required (the folder checkpoints go to)");
    ck.save_dir = fs::absolute(resolve(base_dir, *dir)).lexically_normal().string();
    t.checkpoint.save_interval = c.get_optional_int("save_interval", 1);
    t.checkpoint.save_interval_epochs = c.get_optional_int("save_interval_epochs", 1);
    if (t.checkpoint.save_interval && t.checkpoint.save_interval_epochs)
      c.fail("save_interval_epochs", "and save_interval are both set: set only one");
    const nlohmann::json resume = c.get_json("resume");
    if (resume.is_string() && (resume == "auto" || resume == "never")) {
      t.checkpoint.resume = resume.get<std::string>();
    } else if (resume.is_number_integer() && resume.get<int64_t>() >= 1) {
      t.checkpoint.resume = std::to_string(resume.get<int64_t>());
    } else if (!resume.is_null()) {
      c.fail("resume", "must be \"auto\" (the newest complete checkpoint), \"never\", or a step number, got " + resume.dump());
    }
    // The rest belongs to the plugin, which checks its keys.
    ck.plugin_options = r.get_json("checkpointer");
    for (const char* host_key : {"plugin", "save_interval", "save_interval_epochs", "resume"}) ck.plugin_options.erase(host_key);
    ck.plugin_options["save_dir"] = ck.save_dir;
    run.checkpointer = ck;
  } else {
    r.get_json("checkpointer");
  }
  if (r.has("export")) {
    ConfigReader e = r.section("export");
    ExportConfig x;
    auto dir = e.get_optional_string("dir");
    if (!dir) e.fail("dir", "is required (the Hugging Face directory to write after training)");
    x.dir = resolve(base_dir, *dir);
    x.dtype = e.get_string("dtype", x.dtype);
    if (x.dtype != "auto" && x.dtype != "bf16" && x.dtype != "fp16" && x.dtype != "fp32")
      e.fail("dtype", "must be \"auto\", \"bf16\", \"fp16\" or \"fp32\", got \"" + x.dtype + "\"");
    x.max_shard_size = e.get_string("max_shard_size", x.max_shard_size);
    try {
      parse_byte_size(x.max_shard_size);
    } catch (const std::exception& ex) {
      e.fail("max_shard_size", ex.what());
    }
    e.finish();
    run.export_model = x;
  } else {
    r.get_json("export");
  }
  r.finish();
  run.raw = config;
  return run;
}

namespace {

struct DataContext {
  std::shared_ptr<const Tokenizer> tokenizer;
  std::shared_ptr<const ChatTemplate> chat_template;  // null until a messages data set asks
  std::string chat_template_name;                     // from the config; empty: recognise
  std::string unrecognised;  // why the tokenizer's own template could not be used
};

std::shared_ptr<Dataloader> make_loader(const DataloaderConfig& d, DataContext& data, uint64_t seed, const char* role) {
  DatasetOptions options;
  options.source.path = d.path;
  options.source.format = d.format;
  options.source.column_mapping = d.column_mapping;
  options.source.skip_invalid = d.skip_invalid;
  options.seq_len = d.seq_len;
  options.overlong = parse_overlong(d.overlong);
  options.token_dtype = d.token_dtype;
  options.document_masking = d.document_masking;
  if (!data.chat_template) {
    // Chosen up front: records are tokenized as the dataset opens. A name in the config wins;
    // otherwise the tokenizer's own template is recognised, and only a messages data set needs it.
    if (!data.chat_template_name.empty()) {
      data.chat_template = chat_template_by_name(data.chat_template_name);
    } else if (!data.tokenizer->info().chat_template.empty()) {
      try {
        data.chat_template = recognise_chat_template(data.tokenizer->info().chat_template, data.tokenizer->info().source);
      } catch (const std::exception& e) {
        data.unrecognised = e.what();  // an error only if the data has messages
      }
    } else {
      data.unrecognised = data.tokenizer->info().source + " has no chat_template; name one with \"chat_template\" in the config";
    }
  }
  std::shared_ptr<const Dataset> dataset;
  try {
    dataset = open_dataset(options, data.tokenizer, data.chat_template);
  } catch (const std::exception& e) {
    if (data.chat_template || data.unrecognised.empty()) throw;
    throw std::runtime_error(std::string(e.what()) + " (" + data.unrecognised + ")");
  }
  const DatasetStats& st = dataset->stats();
  spdlog::info("{} data {}: {} {} records -> {} samples, {} tokens{}", role, d.path, st.records,
               record_kind_name(dataset->kind()), dataset->size(), st.tokens,
               data.chat_template && dataset->kind() == RecordKind::messages ? fmt::format(" (chat template {})", data.chat_template->name()) : std::string());
  if (st.skipped > 0) spdlog::warn("{}: {} invalid lines skipped (skip_invalid)", d.path, st.skipped);
  if (st.truncated > 0)
    spdlog::warn("{}: {} of {} samples are longer than seq_len {} + 1 ids and were truncated", d.path, st.truncated,
                 st.records, d.seq_len);
  if (st.dropped > 0)
    spdlog::warn("{}: {} of {} samples are longer than seq_len {} + 1 ids and were dropped", d.path, st.dropped,
                 st.records, d.seq_len);
  if (st.split > 0)
    spdlog::info("{}: {} long samples were split into windows of seq_len {} + 1 ids", d.path, st.split, d.seq_len);
  DataloaderOptions o;
  o.per_device_batch_size = d.per_device_batch_size;
  o.seq_len = d.seq_len;
  o.shuffle = d.shuffle;
  o.drop_last = d.drop_last;
  o.packing = d.packing;
  o.pack_window = d.pack_window;
  o.seed = seed;
  o.rank = host_api()->rank;
  o.world_size = host_api()->world_size;
  o.pad_id = std::max(0, data.tokenizer->info().pad_id >= 0 ? data.tokenizer->info().pad_id : data.tokenizer->info().eos_id);
  return std::make_shared<Dataloader>(dataset, o);
}

void report_exact_match(const char* when, const ExactMatchResult& r) {
  spdlog::info("exact match {}: {}/{} = {:.1f}%", when, r.correct, r.samples, 100.0 * r.accuracy());
  for (const auto& ex : r.examples) {
    spdlog::info("  prompt \"{}\" expected \"{}\" got \"{}\"", ex[0], ex[1], ex[2]);
  }
}

}  // namespace

RunSummary run_training(const RunConfig& config, const std::vector<std::string>& plugin_dirs) {
  const auto start = std::chrono::steady_clock::now();
  RunSummary summary;
  PluginRegistry registry =
      plugin_dirs.empty() ? PluginRegistry::discover() : PluginRegistry::discover(plugin_dirs);
  std::shared_ptr<LoadedPlugin> backend = registry.backend(config.backend);
  std::shared_ptr<LoadedPlugin> objective_plugin = registry.objective(config.objective_name);

  nlohmann::json hf = nlohmann::json::parse(config.model_config_text, nullptr, false);
  if (hf.is_discarded()) throw ConfigError(config.model_config_source + ": invalid JSON");
  DataContext data;
  data.tokenizer = load_tokenizer(config.tokenizer);
  data.chat_template_name = config.chat_template;
  const Tokenizer& tokenizer = *data.tokenizer;
  if (hf.contains("vocab_size") && hf["vocab_size"].is_number_integer() &&
      hf["vocab_size"].get<int64_t>() < tokenizer.vocab_size()) {
    throw ConfigError(config.model_config_source + ": vocab_size " + std::to_string(hf["vocab_size"].get<int64_t>()) +
                      " is smaller than the tokenizer's " + std::to_string(tokenizer.vocab_size()) + " (" +
                      tokenizer.info().source + ")");
  }
  spdlog::info("tokenizer {}: {}, {} ids", tokenizer.info().source, tokenizer.info().kind, tokenizer.vocab_size());

  Model model(backend, config.model_config_text, config.backend_options.dump());
  if (!config.model_path.empty()) {
    const auto load_start = std::chrono::steady_clock::now();
    ImportReport report = import_hf_weights(model, config.model_path);
    spdlog::info("model: loaded {} tensors from {} in {:.1f}s", report.loaded, config.model_path,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
    if (!report.unused.empty()) {
      spdlog::warn("model: {} tensors of {} were not used, e.g. {}", report.unused.size(), config.model_path,
                   report.unused.front());
    }
  } else {
    init_weights(model, config.init_seed, config.init_std);
  }
  Optimizer optimizer(model, config.optimizer_options.dump());
  Objective objective(objective_plugin, config.objective_options.dump());

  std::shared_ptr<Dataloader> train = make_loader(config.train, data, config.seed, "train");
  std::shared_ptr<Dataloader> eval = config.eval ? make_loader(*config.eval, data, config.seed, "eval") : nullptr;

  LyreBackend_DeviceInfo_Args info{};
  info.struct_size = sizeof info;
  check(backend->api().backend->device_info(&info), backend->name() + ": device_info");
  const LyreModel_Stats_Args stats = model.stats(config.train.seq_len);
  spdlog::info("backend {} ({}) | model {:.2f}M parameters ({:.2f}M trainable) | {:.1f} MFLOP/token | train {} samples{}",
               backend->name(), info.name ? info.name : "", stats.num_parameters_total / 1e6,
               stats.num_parameters_trainable / 1e6, stats.train_flops_per_token / 1e6, train->dataset().size(),
               eval ? fmt::format(" | eval {} samples", eval->dataset().size()) : std::string());

  std::shared_ptr<const Dataset> exact_data;
  ExactMatchResult before;
  if (config.exact_match) {
    DatasetOptions x;
    x.source.path = config.exact_match->path;
    exact_data = open_dataset(x, data.tokenizer, data.chat_template);
    if (config.exact_match->at_start) {
      before = exact_match(model, *exact_data, tokenizer, config.exact_match->max_samples,
                           config.exact_match->max_new_tokens, config.exact_match->batch_size);
      report_exact_match("before training", before);
      summary.exact_match_before = before.accuracy();
    }
  }

  BackendProbe probe;
  const LyrePluginApi* api = &backend->api();
  probe.peak_flops = [api]() {
    LyreBackend_DeviceInfo_Args a{};
    a.struct_size = sizeof a;
    check(api->backend->device_info(&a), "device_info");
    return a.peak_flops;
  };
  probe.memory_used_bytes = [api]() {
    LyreBackend_DeviceInfo_Args a{};
    a.struct_size = sizeof a;
    check(api->backend->device_info(&a), "device_info");
    return a.memory_used_bytes;
  };
  TrainerOptions trainer_options = config.trainer;
  RunIdentity& identity = trainer_options.run;
  identity.config = config.raw;
  identity.model_config = hf;
  identity.tokenizer = config.tokenizer == "byte" ? config.tokenizer : fs::absolute(config.tokenizer).lexically_normal().string();
  identity.base_model = config.model_path;
  std::unique_ptr<Checkpointer> checkpointer;
  if (config.checkpointer) {
    checkpointer = std::make_unique<Checkpointer>(registry.checkpointer(config.checkpointer->plugin),
                                                  config.checkpointer->plugin_options.dump());
    spdlog::info("checkpointer {}: {}", checkpointer->plugin().name(), config.checkpointer->save_dir);
  }
  Trainer trainer(model, optimizer, objective, *train, eval.get(), trainer_options, probe, checkpointer.get());
  summary.train = trainer.train();
  checkpointer.reset();  // waits for the last save
  const TrainResult& result = summary.train;

  if (config.export_model) {
    ExportOptions options;
    options.out_dir = config.export_model->dir;
    options.dtype = config.export_model->dtype;
    options.max_shard_bytes = parse_byte_size(config.export_model->max_shard_size);
    options.tokenizer_source = identity.tokenizer;
    const ExportReport report = export_model(model, config.model_config_text, options);
    summary.exported_dir = options.out_dir;
    spdlog::info("export: wrote the trained model to {} (Hugging Face format): {} tensors, {} file(s), {:.1f} MiB of {}",
                 options.out_dir, report.tensors, report.shard_files.size(), report.tensor_bytes / (1024.0 * 1024.0),
                 torch_dtype_name(report.dtype));
  }

  if (config.exact_match) {
    ExactMatchResult after = exact_match(model, *exact_data, tokenizer, config.exact_match->max_samples,
                                         config.exact_match->max_new_tokens, config.exact_match->batch_size);
    report_exact_match("after training", after);
    summary.exact_match_after = after.accuracy();
    if (config.exact_match->at_start) {
      spdlog::info("held-out exact-match accuracy: {:.1f}% before training -> {:.1f}% after", 100.0 * before.accuracy(),
                   100.0 * after.accuracy());
    }
  }
  LyreBackend_DeviceInfo_Args end_info{};
  end_info.struct_size = sizeof end_info;
  check(backend->api().backend->device_info(&end_info), backend->name() + ": device_info");
  spdlog::info("done: {} steps in {:.1f}s, final loss {:.4f}, peak backend memory {:.1f}MiB", result.steps.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
               result.steps.empty() ? 0.0 : result.steps.back().loss, end_info.memory_peak_bytes / (1024.0 * 1024.0));
  return summary;
}

}  // namespace lyre
