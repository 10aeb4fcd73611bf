// LlamaModel's contract beyond its gradients: float against double, packing, accumulation,
// order of calls, input checks, memory and FLOP accounting.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "lyre/plugin.hpp"
#include "model/memory_tracker.hpp"
#include "model_test_util.hpp"

namespace lyre::cpu::test {
namespace {

template <typename T>
std::vector<T> run_logp(LlamaModel<T>& model, const HostBatch& batch, ForwardMode mode) {
  std::vector<T> logp(batch.tokens.size(), T(-99));
  model.forward(batch.view(), mode, logp.data());
  return logp;
}

template <typename T>
std::vector<T> grads_of(const LlamaModel<T>& model) {
  const auto& ps = model.params();
  return std::vector<T>(ps.grads(), ps.grads() + ps.total_numel());
}

template <typename T>
std::vector<T> train_step_grads(LlamaModel<T>& model, const HostBatch& batch, const std::vector<T>& dlogp) {
  model.zero_grad();
  run_logp(model, batch, ForwardMode::train);
  model.backward(dlogp.data());
  return grads_of(model);
}

template <typename T>
std::vector<T> as(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// logp of document `doc` run alone must equal its slice of the packed batch.
template <typename T>
void check_packing(double tolerance) {
  LlamaModel<T> model(tiny_config(false));
  init_weights(model, 21);
  const HostBatch packed = packed_batch();
  const std::vector<T> all = run_logp(model, packed, ForwardMode::no_grad);
  struct Slice {
    const std::vector<int32_t>& doc;
    int64_t start;
  };
  for (const Slice& s : {Slice{kDocA, 0}, Slice{kDocB, 4}, Slice{kDocC, 7}}) {
    const std::vector<T> alone = run_logp(model, single_document(s.doc), ForwardMode::no_grad);
    for (size_t i = 0; i < s.doc.size(); ++i) {
      INFO("document starting at " << s.start << ", token " << i);
      CHECK(std::abs(double(alone[i]) - double(all[s.start + i])) <= tolerance);
    }
  }
  // Padding and the last token of each document have no target: logp is exactly 0.
  for (int64_t n : {3, 6, 11, 12, 13}) CHECK(all[n] == T(0));
  for (int64_t n : {0, 1, 2, 4, 5, 7, 8, 9, 10}) CHECK(all[n] < T(0));
}

bool error_has(const std::function<void()>& f, LyreErrorCode code, const std::string& text) {
  try {
    f();
  } catch (const plugin::Error& e) {
    INFO("message: " << e.what());
    CHECK(e.code() == code);
    CHECK_THAT(e.what(), Catch::Contains(text));
    return e.code() == code && std::string(e.what()).find(text) != std::string::npos;
  }
  FAIL("no error thrown");
  return false;
}

}  // namespace

TEST_CASE("a packed row's logp equals each document run alone (double 1e-10, float 1e-6)") {
  check_packing<double>(1e-10);
  check_packing<float>(1e-6);
}

TEST_CASE("packing holds at a realistic size in float: 256-token rows, documents at odd offsets") {
  // Larger than the tiny model, so attention's query blocks and oneDNN's row-count dependent
  // paths would show (a 9-token document alone is a 9-row GEMM). Attention blocks start at each
  // document and small GEMMs are padded to 16 rows, so the results agree to the bit; the issue
  // asks for 1e-6.
  LlamaModel<float> model(parse_llama_config(R"({"model_type": "llama", "hidden_size": 128,
      "intermediate_size": 344, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 512})"));
  init_weights(model, 23);
  auto& ps = model.params();
  for (size_t i = 0; i < ps.size(); ++i)  // std 0.1: activations of a trained model's size
    if (ps.info(i).kind != LYRE_PARAM_NORM)
      for (size_t j = 0; j < ps.info(i).numel; ++j) ps.value(i)[j] *= 0.2f;
  std::mt19937 rng(4);
  std::vector<std::vector<int32_t>> docs;
  for (int len : {37, 90, 9, 64, 120}) {
    docs.emplace_back(len);
    for (int32_t& t : docs.back()) t = static_cast<int32_t>(rng() % 300);
  }
  HostBatch packed(2, 256);
  const int64_t starts[] = {0, 37, 127, 256 + 0, 256 + 64};
  packed.place(0, 0, docs[0], 1);
  packed.place(0, 37, docs[1], 2);
  packed.place(0, 127, docs[2], 3);
  packed.place(1, 0, docs[3], 1);
  packed.place(1, 64, docs[4], 2);
  const std::vector<float> all = run_logp(model, packed, ForwardMode::no_grad);
  double worst = 0, worst_same_shape = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::vector<float> alone = run_logp(model, single_document(docs[d]), ForwardMode::no_grad);
    HostBatch padded(2, 256);
    padded.place(0, 0, docs[d], 1);
    const std::vector<float> alone_padded = run_logp(model, padded, ForwardMode::no_grad);
    for (size_t i = 0; i < alone.size(); ++i) {
      worst = std::max(worst, double(std::abs(alone[i] - all[starts[d] + i])));
      worst_same_shape = std::max(worst_same_shape, double(std::abs(alone_padded[i] - all[starts[d] + i])));
    }
  }
  INFO("largest difference " << worst << ", in a batch of the packed shape " << worst_same_shape);
  CHECK(worst <= 1e-6);
  CHECK(worst_same_shape <= 1e-6);
}

TEST_CASE("a packed row's gradient equals the sum of its documents' gradients") {
  LlamaModel<double> model(tiny_config(true));
  init_weights(model, 22);
  const HostBatch packed = packed_batch();
  const std::vector<double> w = random_weights(packed.tokens.size(), 8);
  const std::vector<double> g_packed = train_step_grads(model, packed, w);

  std::vector<double> g_sum(g_packed.size(), 0.0);
  for (auto [doc, start] : {std::pair{kDocA, 0}, std::pair{kDocB, 4}, std::pair{kDocC, 7}}) {
    const std::vector<double> wd(w.begin() + start, w.begin() + start + doc.size());
    const std::vector<double> g = train_step_grads(model, single_document(doc), wd);
    for (size_t i = 0; i < g.size(); ++i) g_sum[i] += g[i];
  }
  double worst = 0;
  for (size_t i = 0; i < g_sum.size(); ++i) worst = std::max(worst, std::abs(g_sum[i] - g_packed[i]));
  CHECK(worst < 1e-10);
}

TEST_CASE("the float model agrees with the double model on logp and every gradient") {
  for (bool tied : {false, true}) {
    LlamaModel<double> ref(tiny_config(tied));
    init_weights(ref, 31);
    LlamaModel<float> fast(tiny_config(tied));
    copy_weights(fast, ref);
    const HostBatch batch = packed_batch();
    const std::vector<double> w = random_weights(batch.tokens.size(), 9);

    const std::vector<double> gd = train_step_grads(ref, batch, w);
    const std::vector<float> gf = train_step_grads(fast, batch, as<float>(w));
    const std::vector<double> ld = run_logp(ref, batch, ForwardMode::no_grad);
    const std::vector<float> lf = run_logp(fast, batch, ForwardMode::no_grad);
    for (size_t i = 0; i < ld.size(); ++i) CHECK(std::abs(lf[i] - ld[i]) < 2e-5);

    for (size_t p = 0; p < ref.params().size(); ++p) {
      const ParameterInfo& info = ref.params().info(p);
      double diff = 0, norm = 0;
      for (size_t j = info.offset; j < info.offset + info.numel; ++j) {
        diff += (gf[j] - gd[j]) * (gf[j] - gd[j]);
        norm += gd[j] * gd[j];
      }
      INFO((tied ? "tied: " : "untied: ") << info.name << " relative error "
                                          << std::sqrt(diff / norm));
      CHECK(norm > 0);
      CHECK(std::sqrt(diff) <= 1e-4 * std::sqrt(norm));
    }
  }
}

TEST_CASE("gradients accumulate over micro-batches until zero_grad") {
  LlamaModel<double> model(tiny_config(false));
  init_weights(model, 41);
  const HostBatch a = packed_batch(), b = single_document(kDocC);
  const std::vector<double> wa = random_weights(a.tokens.size(), 1), wb = random_weights(b.tokens.size(), 2);
  const std::vector<double> ga = train_step_grads(model, a, wa);
  const std::vector<double> gb = train_step_grads(model, b, wb);

  model.zero_grad();
  run_logp(model, a, ForwardMode::train);
  model.backward(wa.data());
  run_logp(model, b, ForwardMode::train);
  model.backward(wb.data());
  const std::vector<double> both = grads_of(model);
  for (size_t i = 0; i < both.size(); ++i) CHECK(std::abs(both[i] - (ga[i] + gb[i])) < 1e-12);
}

TEST_CASE("a no_grad forward between a train forward and its backward changes nothing") {
  // DPO's reference pass may run between the policy's forward and backward, on another shape.
  LlamaModel<double> model(tiny_config(false));
  init_weights(model, 42);
  const HostBatch a = single_document(kDocA), big = packed_batch();
  const std::vector<double> w = random_weights(a.tokens.size(), 3);
  const std::vector<double> plain = train_step_grads(model, a, w);

  model.zero_grad();
  const std::vector<double> logp = run_logp(model, a, ForwardMode::train);
  run_logp(model, big, ForwardMode::no_grad);
  model.backward(w.data());
  CHECK(grads_of(model) == plain);
  CHECK(run_logp(model, a, ForwardMode::no_grad) == logp);
}

// Backward takes the head's last chunk of logits from the train forward when nothing used the
// head's workspace since. A no_grad forward of the same shape but other tokens overwrites it in
// place: were the stale logits reused, the gradients would differ.
template <typename T>
void check_head_reuse_is_safe(int64_t chunk_rows) {
  INFO("logprob_chunk_rows " << chunk_rows);
  ModelOptions options;
  options.logprob_chunk_rows = chunk_rows;
  LlamaModel<T> model(tiny_config(false), options);
  init_weights(model, 44);
  const HostBatch batch = packed_batch();
  HostBatch other = packed_batch();
  for (int32_t& t : other.tokens) t = (t * 5 + 3) % 13;
  const std::vector<T> w = as<T>(random_weights(batch.tokens.size(), 4));
  const std::vector<T> reused = train_step_grads(model, batch, w);

  model.zero_grad();
  run_logp(model, batch, ForwardMode::train);
  run_logp(model, other, ForwardMode::no_grad);
  model.backward(w.data());
  CHECK(grads_of(model) == reused);  // bit-identical: reuse changes no arithmetic

  // A train forward whose backward never came, then another: the second one's chunk is reused.
  model.zero_grad();
  run_logp(model, other, ForwardMode::train);
  run_logp(model, batch, ForwardMode::train);
  model.backward(w.data());
  CHECK(grads_of(model) == reused);
}

TEST_CASE("a no_grad forward between train forward and backward: no stale head logits reused") {
  // 0: the default, one chunk for the 9 target rows (backward recomputes nothing); then many.
  for (int64_t chunk_rows : {0, 9, 4, 2, 1}) {
    check_head_reuse_is_safe<double>(chunk_rows);
    check_head_reuse_is_safe<float>(chunk_rows);
  }
}

TEST_CASE("a forced logprob_chunk_rows gives the default's logp and gradients") {
  LlamaModel<double> whole(tiny_config(false));
  init_weights(whole, 45);
  const HostBatch batch = packed_batch();
  const std::vector<double> w = random_weights(batch.tokens.size(), 5);
  const std::vector<double> logp = run_logp(whole, batch, ForwardMode::no_grad);
  const std::vector<double> g = train_step_grads(whole, batch, w);
  for (int64_t chunk_rows : {1, 2, 5, 100}) {
    INFO("logprob_chunk_rows " << chunk_rows);
    ModelOptions options;
    options.logprob_chunk_rows = chunk_rows;
    LlamaModel<double> chunked(tiny_config(false), options);
    copy_weights(chunked, whole);
    const std::vector<double> lc = run_logp(chunked, batch, ForwardMode::no_grad);
    for (size_t i = 0; i < logp.size(); ++i) CHECK(std::abs(lc[i] - logp[i]) < 1e-12);
    const std::vector<double> gc = train_step_grads(chunked, batch, w);
    for (size_t i = 0; i < g.size(); ++i) CHECK(std::abs(gc[i] - g[i]) < 1e-12);
  }
}

TEST_CASE("the default head chunk allocates for the batch's target rows, not the whole budget") {
  std::string json = tiny_config_json(false);
  json.replace(json.find("\"vocab_size\": 13"), 16, "\"vocab_size\": 32000");
  LlamaModel<float> model(parse_llama_config(json));
  init_weights(model, 46);
  const HostBatch batch = packed_batch();  // 9 rows with a target
  std::vector<float> dlogp(batch.tokens.size(), 1.0f);
  const int64_t before = memory_usage().by_kind[int(MemoryKind::workspace)];
  run_logp(model, batch, ForwardMode::train);
  model.backward(dlogp.data());
  const int64_t added = memory_usage().by_kind[int(MemoryKind::workspace)] - before;
  const int64_t head = 9 * (32000 + 2 * 8) * int64_t(sizeof(float));
  CHECK(added >= head);
  CHECK(added < head + (int64_t(1) << 20));  // the rest is scratch of 14 rows and rope tables
}

TEST_CASE("backward needs a train forward, and consumes it") {
  LlamaModel<float> model(tiny_config(false));
  init_weights(model, 43);
  const HostBatch batch = packed_batch();
  std::vector<float> dlogp(batch.tokens.size(), 1.0f);
  CHECK(error_has([&] { model.backward(dlogp.data()); }, LYRE_ERROR_FAILED_PRECONDITION, "train forward"));
  run_logp(model, batch, ForwardMode::no_grad);
  CHECK(error_has([&] { model.backward(dlogp.data()); }, LYRE_ERROR_FAILED_PRECONDITION, "train forward"));
  run_logp(model, batch, ForwardMode::train);
  CHECK(model.backward_ready());
  model.backward(dlogp.data());
  CHECK_FALSE(model.backward_ready());
  CHECK(error_has([&] { model.backward(dlogp.data()); }, LYRE_ERROR_FAILED_PRECONDITION, "train forward"));
}

TEST_CASE("bad ids and positions are refused with their row, column and value") {
  LlamaModel<float> model(tiny_config(false));
  std::vector<float> logp(14);
  HostBatch batch = packed_batch();
  batch.tokens[1 * 7 + 3] = 40;
  CHECK(error_has([&] { model.forward(batch.view(), ForwardMode::train, logp.data()); },
                  LYRE_ERROR_INVALID_ARGUMENT, "tokens: value 40 at row 1, col 3"));
  CHECK_FALSE(model.backward_ready());
  batch = packed_batch();
  batch.tokens[5] = -2;
  CHECK(error_has([&] { model.forward(batch.view(), ForwardMode::no_grad, logp.data()); },
                  LYRE_ERROR_INVALID_ARGUMENT, "tokens: value -2 at row 0, col 5"));
  batch = packed_batch();
  batch.targets[8] = 13;
  CHECK(error_has([&] { model.forward(batch.view(), ForwardMode::no_grad, logp.data()); },
                  LYRE_ERROR_INVALID_ARGUMENT, "targets: value 13 at row 1, col 1"));
  batch = packed_batch();
  batch.positions[2] = 64;
  CHECK(error_has([&] { model.forward(batch.view(), ForwardMode::no_grad, logp.data()); },
                  LYRE_ERROR_INVALID_ARGUMENT, "positions: value 64 at row 0, col 2"));
}

TEST_CASE("parameters carry Hugging Face names, kinds and shapes, with q/k/v and gate/up adjacent") {
  LlamaModel<float> model(tiny_config(false));
  const auto& ps = model.params();
  const ParameterInfo& q = ps.info(ps.find("model.layers.1.self_attn.q_proj.weight"));
  const ParameterInfo& k = ps.info(ps.find("model.layers.1.self_attn.k_proj.weight"));
  const ParameterInfo& v = ps.info(ps.find("model.layers.1.self_attn.v_proj.weight"));
  CHECK(q.shape == std::vector<int64_t>{16, 8});
  CHECK(k.shape == std::vector<int64_t>{8, 8});
  CHECK(k.offset == q.offset + q.numel);
  CHECK(v.offset == k.offset + k.numel);
  const ParameterInfo& gate = ps.info(ps.find("model.layers.0.mlp.gate_proj.weight"));
  const ParameterInfo& up = ps.info(ps.find("model.layers.0.mlp.up_proj.weight"));
  CHECK(up.offset == gate.offset + gate.numel);
  CHECK(ps.info(ps.find("model.layers.0.self_attn.o_proj.weight")).shape == std::vector<int64_t>{8, 16});
  CHECK(ps.info(ps.find("model.layers.0.mlp.down_proj.weight")).shape == std::vector<int64_t>{8, 12});
  CHECK(ps.info(ps.find("model.norm.weight")).kind == LYRE_PARAM_NORM);
  CHECK(ps.info(ps.find("model.layers.0.post_attention_layernorm.weight")).kind == LYRE_PARAM_NORM);
  CHECK(ps.info(ps.find("lm_head.weight")).kind == LYRE_PARAM_EMBEDDING);
  CHECK(ps.info(ps.find("model.embed_tokens.weight")).kind == LYRE_PARAM_EMBEDDING);
  CHECK(ps.info(ps.find("model.layers.0.mlp.up_proj.weight")).kind == LYRE_PARAM_MATRIX);
  // Created zero, norms one: the host writes the initial weights.
  const float* norm = ps.value(ps.find("model.norm.weight"));
  CHECK(norm[0] == 1.0f);
  CHECK(ps.value(ps.find("lm_head.weight"))[5] == 0.0f);

  LlamaModel<float> tied(tiny_config(true));
  CHECK_THROWS_AS(tied.params().find("lm_head.weight"), plugin::Error);
}

TEST_CASE("steady-state train steps allocate nothing, and memory is accounted by kind") {
  const MemoryUsage before = memory_usage();
  {
    LlamaModel<float> model(tiny_config(false));
    init_weights(model, 51);
    const HostBatch batch = packed_batch();
    std::vector<float> dlogp(batch.tokens.size(), 0.5f);
    const MemoryUsage created = memory_usage();
    const int64_t param_bytes = static_cast<int64_t>(model.params().total_numel() * sizeof(float));
    CHECK(created.by_kind[int(MemoryKind::parameters)] - before.by_kind[int(MemoryKind::parameters)] ==
          param_bytes);
    CHECK(created.by_kind[int(MemoryKind::gradients)] - before.by_kind[int(MemoryKind::gradients)] ==
          param_bytes);

    auto step = [&] {
      model.zero_grad();
      run_logp(model, batch, ForwardMode::train);
      model.backward(dlogp.data());
      run_logp(model, batch, ForwardMode::no_grad);
    };
    step();
    const MemoryUsage first = memory_usage();
    CHECK(first.by_kind[int(MemoryKind::activations)] > before.by_kind[int(MemoryKind::activations)]);
    CHECK(first.by_kind[int(MemoryKind::workspace)] > before.by_kind[int(MemoryKind::workspace)]);
    for (int i = 0; i < 3; ++i) step();
    const MemoryUsage later = memory_usage();
    CHECK(later.current == first.current);
    CHECK(later.peak == first.peak);
    // A smaller batch reuses the buffers too.
    const HostBatch small = single_document(kDocB);
    std::vector<float> small_logp(3), small_d(3, 1.0f);
    model.forward(small.view(), ForwardMode::train, small_logp.data());
    model.backward(small_d.data());
    CHECK(memory_usage().current == first.current);
  }
  CHECK(memory_usage().current == before.current);  // everything given back
}

TEST_CASE("train FLOPs per token count every matmul six times plus attention at full length") {
  LlamaModel<float> model(tiny_config(false));
  // d 8, F 12, L 2, Hq*D 16, qkv 32, V 13
  const double matmul = 2 * (8 * 32 + 16 * 8 + 3 * 8 * 12) + 13 * 8;
  CHECK(model.train_flops_per_token(100) == Approx(6 * matmul + 2 * 12.0 * 100 * 16));
  CHECK(model.num_parameters() == 13 * 8 + 2 * (8 + 32 * 8 + 8 * 16 + 8 + 3 * 8 * 12) + 8 + 13 * 8);
}

}  // namespace lyre::cpu::test
