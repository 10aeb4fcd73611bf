// The bf16 tolerances, pinned on the CPU: error_measures.hpp sets them from an emulation of bf16
// (fp32 arithmetic on weights rounded to bf16's 8 significant bits, master weights and optimizer
// kept in fp32), and this test holds them to it. The emulated bf16 passes every case with room;
// the same emulation at 4 bits (16x bf16's rounding) fails logp, gradients, parameters and
// optimizer state alike, so no one tolerance is loose enough to let that through.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend_comparison.hpp"
#include "parity_backends.hpp"

namespace lyre::parity {
namespace {

// Round to nearest, ties to even, keeping `bits` significant bits (bf16: 8). Finite inputs only.
float round_to_bits(float x, int bits) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const int drop = 24 - bits;
  u += (1u << (drop - 1)) - 1 + ((u >> drop) & 1u);
  u &= ~((1u << drop) - 1);
  float y;
  std::memcpy(&y, &u, sizeof y);
  return y;
}

std::vector<float> round_to_bits(std::vector<float> w, int bits) {
  for (float& x : w) x = round_to_bits(x, bits);
  return w;
}

// The case's forward/backward with every weight rounded to `bits`.
ForwardBackwardResult rounded_forward_backward(const Side& side, CaseInputs inputs, int bits) {
  for (std::vector<float>& w : inputs.weights) w = round_to_bits(std::move(w), bits);
  return run_forward_backward(side, inputs);
}

// The case's AdamW steps as bf16 mode takes them: each forward/backward sees the master weights
// rounded to `bits`; each step updates the fp32 masters.
AdamwResult rounded_adamw_steps(const Side& side, const CaseInputs& inputs, int bits) {
  Model model(side.plugin, inputs.config_json, side.options_json);
  std::vector<std::vector<float>> master = inputs.weights;
  for (size_t i = 0; i < master.size(); ++i) model.write(i, master[i]);
  Optimizer optimizer(model, inputs.optimizer_json);
  std::vector<float> logp;
  for (size_t s = 0; s < inputs.batches.size(); ++s) {
    for (size_t i = 0; i < master.size(); ++i) model.write(i, round_to_bits(master[i], bits));
    model.zero_grad();
    model.forward(inputs.batches[s], LYRE_FORWARD_TRAIN, logp);
    model.backward(inputs.batches[s], inputs.step_dlogp[s]);
    for (size_t i = 0; i < master.size(); ++i) model.write(i, master[i]);  // the gradients stay
    optimizer.step(inputs.learning_rate, 1.0);
    for (size_t i = 0; i < master.size(); ++i) master[i] = model.read(i);
  }
  return {master, optimizer.read_state()};
}

}  // namespace

TEST_CASE("the bf16 tolerances pass emulated bf16 and fail an emulation at 16x its rounding") {
  const Reference reference = live_reference(torch_side("fp64"));
  const Side cpu = side_of("backend-cpu");
  const Tolerances tol = tolerances(Precision::bf16);

  for (const int bits : {8, 4}) {
    // Whether each quantity is out of tolerance in some case, and its worst margin.
    bool fails[4] = {false, false, false, false};
    const char* names[4] = {"logp", "gradient", "parameter", "optimizer state"};
    std::string worst[4];
    double worst_ratio[4] = {0, 0, 0, 0};
    for (const CaseRun& run : reference.runs) {
      const ForwardBackward fb =
          compare_forward_backward(rounded_forward_backward(cpu, run.inputs, bits), run, tol);
      const AdamwSteps steps = compare_adamw_steps(rounded_adamw_steps(cpu, run.inputs, bits), run, tol);
      REQUIRE(steps.layout_difference == "");
      const Comparison* quantities[4] = {&fb.logp, &fb.gradients, &steps.parameters, &steps.states};
      for (int q = 0; q < 4; ++q) {
        fails[q] = fails[q] || !quantities[q]->all_ok();
        const TensorError* w = quantities[q]->worst();
        if (w != nullptr && w->error / w->tolerance > worst_ratio[q]) {
          worst_ratio[q] = w->error / w->tolerance;
          const std::string& d = run.inputs.description;
          worst[q] = quantities[q]->summary() + " in " + d.substr(0, d.find(':'));
        }
      }
    }
    std::string report;
    for (int q = 0; q < 4; ++q) report += "\n  " + worst[q];
    WARN("weights rounded to " << bits << " significant bits, against " << reference.label << ":" << report);
    INFO("weights rounded to " << bits << " significant bits:" << report);
    for (int q = 0; q < 4; ++q) {
      INFO(names[q]);
      if (bits == 8) CHECK_FALSE(fails[q]);
      else CHECK(fails[q]);
    }
  }
}

}  // namespace lyre::parity
