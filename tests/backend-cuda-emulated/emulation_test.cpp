// What only the emulation can check, beside model_test.cpp: backend-cuda's optimizer update by
// update against PyTorch's rules (SGD has no other test; the bf16 working copy is read straight
// from the fake device memory), the caching allocator's way out of memory, and the emulation's
// own strictness (a check it loses would let the model's mistakes through unseen).
#include <cuda_bf16.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "device_memory.hpp"
#include "emulated_device.hpp"
#include "kernels.hpp"
#include "llama_model.hpp"
#include "model/llama_config.hpp"
#include "optimizer.hpp"

namespace cuda = lyre::cuda;
namespace cpu = lyre::cpu;

namespace {

// vocab 1100 x d 64: the embedding (70400 elements) spans two optimizer chunks of 65536.
std::unique_ptr<cuda::LlamaModel> chunked_model(cuda::Precision precision) {
  const std::string config = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1100,
    "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": true})";
  cuda::ModelOptions options;
  options.precision = precision;
  return std::make_unique<cuda::LlamaModel>(cpu::parse_llama_config(config), options);
}

std::vector<float> normal(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// PyTorch's torch.optim.AdamW and SGD on one parameter, in double.
struct Reference {
  cpu::OptimizerConfig c;
  std::vector<double> p, m, v;
  bool decays = true;

  void step(int64_t t, const std::vector<float>& grad, double lr, double scale) {
    const double wd = decays ? c.weight_decay : 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = double(grad[i]) * scale;
      if (c.type == cpu::OptimizerConfig::Type::adamw) {
        p[i] *= 1.0 - lr * wd;
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
        const double bc1 = 1.0 - std::pow(c.beta1, double(t)), bc2 = 1.0 - std::pow(c.beta2, double(t));
        p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + c.eps);
      } else {
        g += wd * p[i];
        if (c.momentum > 0) {
          m[i] = t == 1 ? g : c.momentum * m[i] + (1.0 - c.dampening) * g;
          g = c.nesterov ? g + c.momentum * m[i] : m[i];
        }
        p[i] -= lr * g;
      }
    }
  }
};

// ||a - r|| / ||r||: float's rounding sits near 1e-7.
double relative_error(const std::vector<float>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - r[i]) * (double(a[i]) - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("AdamW and SGD update every parameter as PyTorch does, step after step", "[emulated][optimizer]") {
  const std::vector<std::string> configs = {
      R"({"type": "adamw", "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1})",
      R"({"type": "adamw", "weight_decay": 0.05, "no_decay_kinds": []})",
      R"({"type": "sgd", "weight_decay": 0.01})",
      R"({"type": "sgd", "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.02})",
      R"({"type": "sgd", "momentum": 0.8, "nesterov": true, "no_decay_kinds": ["embedding"], "weight_decay": 0.1})",
  };
  for (const cuda::Precision precision : {cuda::Precision::fp32, cuda::Precision::bf16}) {
    for (const std::string& json : configs) {
      INFO(cuda::precision_name(precision) << " " << json);
      auto model = chunked_model(precision);
      cuda::ParameterStore& params = model->params();
      const cudaStream_t s = model->stream();
      auto optimizer = cuda::make_optimizer(params, s, json);
      std::vector<Reference> ref(params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        const cuda::ParameterInfo& p = params.info(i);
        const std::vector<float> w = normal(p.numel, 100 + i, 0.5f);
        params.write_value(i, w.data(), s);
        ref[i].c = optimizer->config();
        ref[i].decays = optimizer->config().decays(p.kind);
        ref[i].p.assign(w.begin(), w.end());
        ref[i].m.assign(p.numel, 0.0);
        ref[i].v.assign(p.numel, 0.0);
      }
      const double lr = 0.01;
      for (int64_t t = 1; t <= 3; ++t) {
        double squares = 0;
        std::vector<std::vector<float>> grads;
        for (size_t i = 0; i < params.size(); ++i) {
          grads.push_back(normal(params.info(i).numel, 1000 * t + i, 0.1f));
          params.write_grad(i, grads.back().data(), s);
          for (float g : grads.back()) squares += double(g) * g;
        }
        CHECK(optimizer->grad_squared_norm() == Approx(squares).epsilon(1e-12));
        const double scale = t == 2 ? 0.5 : 1.0;  // clipping's scale, once
        optimizer->step(lr, scale);
        for (size_t i = 0; i < params.size(); ++i) ref[i].step(t, grads[i], lr, scale);
        CHECK(optimizer->step_count() == t);
        for (size_t i = 0; i < params.size(); ++i) {
          const cuda::ParameterInfo& p = params.info(i);
          INFO("step " << t << ", " << p.name);
          std::vector<float> value(p.numel), grad(p.numel);
          params.read_value(i, value.data(), s);
          params.read_grad(i, grad.data(), s);
          CHECK(relative_error(value, ref[i].p) < 1e-6);
          CHECK(grad == grads[i]);  // the scale is applied on the fly, the stored gradient kept
          if (precision == cuda::Precision::bf16) {
            // The working copy the matmuls read, refreshed in the same pass: exactly bf16(value).
            const cuda::bf16* lowp = params.lowp() + p.offset;
            size_t stale = 0;
            for (size_t k = 0; k < p.numel; ++k)
              if (__bfloat162float(lowp[k]) != __bfloat162float(__float2bfloat16_rn(value[k]))) ++stale;
            CHECK(stale == 0);
          }
        }
      }
      // The states hold what the reference holds, under backend-cpu's names.
      for (size_t k = 0; k < optimizer->states().size(); ++k) {
        const cuda::OptimizerPlan::State& st = optimizer->states()[k];
        INFO(st.name);
        if (st.buffer == cuda::OptimizerPlan::Buffer::step) {
          int64_t step = 0;
          optimizer->read_state(k, &step);
          CHECK(step == 3);
          continue;
        }
        const size_t i = params.find(st.name.substr(0, st.name.rfind('.')));
        std::vector<float> state(st.numel);
        optimizer->read_state(k, state.data());
        const bool second_moment = st.buffer == cuda::OptimizerPlan::Buffer::exp_avg_sq;
        CHECK(relative_error(state, second_moment ? ref[i].v : ref[i].m) < 1e-6);
      }
    }
  }
}

TEST_CASE("the caching allocator returns its cached blocks and retries once before running out of memory",
          "[emulated][memory]") {
  constexpr size_t kMiB = size_t(1) << 20;
  // One cached block of 4 MiB: freed by the backend, still held from the driver (the fake runtime).
  cuda::device_release_cached();
  cuda::device_free(cuda::device_allocate(4 * kMiB, cuda::MemoryKind::activations));
  const cuda::MemoryUsage before = cuda::memory_usage();
  REQUIRE(before.reserved == before.current + int64_t(4 * kMiB));
  // Room for 2 MiB more: a 6 MiB block fits only once the cached block goes back.
  lyre::cuda::emulated::set_device_memory_limit(lyre::cuda::emulated::device_bytes_held() + 2 * kMiB);
  void* p = cuda::device_allocate(6 * kMiB, cuda::MemoryKind::activations);
  CHECK(p != nullptr);
  const cuda::MemoryUsage after = cuda::memory_usage();
  CHECK(after.reserved == before.current + int64_t(6 * kMiB));
  CHECK(after.current == before.current + int64_t(6 * kMiB));
  CHECK(after.by_kind[int(cuda::MemoryKind::activations)] ==
        before.by_kind[int(cuda::MemoryKind::activations)] + int64_t(6 * kMiB));
  // Then nothing is cached to give back: OUT_OF_MEMORY naming the size, the kind and the tally.
  try {
    cuda::device_allocate(1024 * kMiB, cuda::MemoryKind::optimizer_state);
    FAIL("a 1 GiB block fitted in 2 MiB");
  } catch (const lyre::plugin::Error& e) {
    CHECK(e.code() == LYRE_ERROR_OUT_OF_MEMORY);
    CHECK_THAT(e.what(), Catch::Contains("1024 MiB") && Catch::Contains("optimizer state") &&
                             Catch::Contains("the backend holds"));
  }
  cuda::device_free(p);
  lyre::cuda::emulated::set_device_memory_limit(0);
}

TEST_CASE("the emulation refuses what kernels.hpp does not allow", "[emulated][strictness]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  const int64_t N = 4, C = 8;
  auto take = [](size_t bytes) { return cuda::device_allocate(bytes, cuda::MemoryKind::workspace); };
  auto* x = static_cast<float*>(take(N * C * sizeof(float)));  // blocks of 512 bytes (the allocator's)
  auto* out = static_cast<float*>(take(N * C * sizeof(float)));
  auto* weight = static_cast<float*>(take(C * sizeof(float)));
  auto* rstd = static_cast<float*>(take(N * sizeof(float)));
  std::vector<float> host(N * C, 1.0f);
  REQUIRE(cudaMemcpy(x, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(weight, host.data(), C * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  auto refused = [](auto&& call, const std::vector<std::string>& parts) {
    try {
      call();
      FAIL("the emulation accepted it");
    } catch (const lyre::plugin::Error& e) {
      CHECK(e.code() == LYRE_ERROR_INTERNAL);
      for (const std::string& part : parts) CHECK_THAT(e.what(), Catch::Contains(part));
    }
  };
  // An output overlapping an input (norm_out over x_in), where only x_out may alias x_in.
  refused([&] { cuda::residual_rmsnorm_forward<float>(out, x + 4, rstd, x, nullptr, weight, N, C, 1e-5f, s); },
          {"residual_rmsnorm_forward<float>", "norm_out", "x_in", "overlap"});
  cuda::residual_rmsnorm_forward<float>(x, out, rstd, x, nullptr, weight, N, C, 1e-5f, s);  // x_out == x_in
  // Host memory handed to a kernel.
  refused([&] { cuda::add_inplace(out, host.data(), N * C, s); }, {"add_inplace", "in", "host memory"});
  // Past the end of a block.
  refused([&] { cuda::add_inplace(out, x, 200, s); }, {"add_inplace", "out", "past the end"});
  // A position past the end of the RoPE tables (cos rows run into the sin rows).
  auto* positions = static_cast<int32_t*>(take(N * sizeof(int32_t)));
  const std::vector<int32_t> pos = {0, 1, 2, 3};
  REQUIRE(cudaMemcpy(positions, pos.data(), N * sizeof(int32_t), cudaMemcpyHostToDevice) == cudaSuccess);
  // qkv (4, (1 + 2) * 2) in `out`; tables of 2 rows x 1 in `x`: cos rows 0-1, sin rows at x + 2.
  refused([&] { cuda::rope_forward<float>(out, positions, x, x + 2, N, 1, 1, 2, s); },
          {"rope_forward<float>", "past the end of the tables"});
  // Copies the wrong way round, a destroyed stream.
  CHECK(cudaMemcpy(host.data(), x, 16, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(cudaMemsetAsync(x, 0, 16, s) == cudaErrorInvalidResourceHandle);
  refused([&] { cuda::add_inplace(out, x, N * C, s); }, {"add_inplace", "stream"});
  cudaGetLastError();
  for (void* p : std::initializer_list<void*>{x, out, weight, rstd, positions}) cuda::device_free(p);
}
