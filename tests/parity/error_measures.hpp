// How far a backend's numbers may be from backend-torch's: the two error measures, the tolerance
// table keyed by the backend's training precision, and the per-tensor results a comparison
// returns (which tests REQUIRE to be all within tolerance, or inspect).
//
// The measures (r = the reference, backend-torch; a = the backend under test):
//
//   logp     max over tokens of |a - r| / max(|r|, 1).
//            log-probs are <= 0 and computed as logit - logsumexp, whose rounding error is
//            absolute (a few ulp of the logsumexp, itself ~log(vocab)); a token the model is sure
//            of has logp near 0, where a purely relative error would divide that absolute error
//            by ~0. So: relative where |r| >= 1, absolute below.
//
//   tensors  ||a - r||_2 / ||r||_2 over the whole tensor (normwise relative error; 0/0 = 0).
//            A gradient entry is a sum over tokens that can cancel to ~0, and an element-wise
//            relative error there measures only rounding noise divided by ~0. The normwise error
//            is the relative error of the tensor as the optimizer uses it, insensitive to where
//            the entries happen to vanish. Used for gradients, for parameters after optimizer
//            steps and for optimizer state.
//
// A NaN error (a NaN or inf in either side) is never within tolerance.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lyre::parity {

enum class Precision { fp32, bf16 };

struct Tolerances {
  double logp = 0;        // logp measure
  double gradient = 0;    // normwise, each parameter's gradient after one backward
  double parameter = 0;   // normwise, each parameter after three AdamW steps
  double state = 0;       // normwise, each float optimizer state after three AdamW steps
};

// fp32: the numbers. fp32's unit roundoff is 6e-8; a forward through a few layers of
// d <= 96 dot products and a vocab <= 257 logsumexp stays well inside 1e-5; backward adds
// accumulation over tokens and the cancellations of the chain rule, hence 1e-4 (still 10x below
// a 0.1% wrong gradient). After three steps the parameters are mostly their identical starting
// values: with lr 1e-3 and weight std >= 0.02 the updates move a tensor by up to ~5% per step,
// so 1e-5 asks the updates to agree to ~1e-4 relative (with AdamW's eps chosen so that fp32
// itself stays inside it: see kAdamwJson in backend_comparison.hpp). The optimizer state gets
// the gradient's 1e-4 (exp_avg is linear in the gradients, exp_avg_sq quadratic). Measured
// against backend-torch at fp64, backend-cpu and backend-torch fp32 stay under logp 3e-7,
// gradients 2e-6, parameters 2e-6 and states 3e-6 over the nine cases: a GPU's fp32, which
// differs only in summation order (and fuses more multiply-adds), has the same room.
//
// bf16 (backend-cuda's default: bf16 matmul operands and activations, fp32 master weights,
// gradients and optimizer), set before any GPU run from an emulation on the CPU
// (bf16_tolerances_test.cpp): fp32 arithmetic on weights rounded to bf16's 8 significant bits,
// which is bf16's rounding of the matmul weight operands alone, reaches logp 2.4e-3, gradients
// 1.7e-2 (the q/k projections: their small gradients are differences of attention scores),
// parameters 3.7e-3 and states 2.2e-2. bf16 also rounds activations and backward's signals,
// some 4-5 roundings of that size per value, so expect ~2-2.5x those (parameters ~1.5x, see
// below). The tolerances lie 2-4x above that, and each quantity fails, by about 2x, where the
// emulated weights keep 4 bits (16x bf16's rounding):
//   logp 2e-2, gradients 1e-1;
//   parameters 1e-2: AdamW's first updates are lr * sign(g), so a gradient error moves a
//     parameter only where it flips a small entry's sign: error ~ sqrt(flipped fraction) * lr /
//     weight std, growing like the square root of the gradient error;
//   states 2e-1: exp_avg_sq is quadratic in the gradient, twice its relative error.
// bf16 mode checks bf16's handling; the math itself is judged in fp32 mode.
Tolerances tolerances(Precision precision);
const char* precision_name(Precision precision);

// The precision a backend trains in with these model options: backend-cuda bf16 unless its
// options say {"precision": "fp32"}, every other backend fp32 (the strictest, for a backend this
// table does not know yet). Throws std::invalid_argument when options_json is not JSON.
Precision training_precision(const std::string& plugin_name, const std::string& options_json);

// The logp measure above, with the flat index of the worst token; [B*T] each.
struct LogpError {
  double error = 0;
  int64_t worst_index = -1;
};
LogpError logp_error(const std::vector<float>& a, const std::vector<float>& r);

// The normwise measure above.
double normwise_error(const std::vector<float>& a, const std::vector<float>& r);

struct TensorError {
  std::string name;    // parameter or state name, or "logp"
  double error = 0;
  double tolerance = 0;
  std::string detail;  // e.g. where the worst logp token is; may be empty
  bool ok() const { return error <= tolerance; }  // false for NaN
};

// One quantity compared over all its tensors.
struct Comparison {
  std::string quantity;  // "logp", "gradient", "parameter after 3 AdamW steps", ...
  std::vector<TensorError> tensors;

  bool all_ok() const;
  std::vector<std::string> failing() const;  // names of the tensors out of tolerance
  // The tensor with the largest error relative to its tolerance; nullptr when there is none.
  const TensorError* worst() const;
  // "gradient: worst model.norm.weight 3.1e-07 (tolerance 1e-04) of 12 tensors".
  std::string summary() const;
  // One line per tensor out of tolerance: "gradient of <name>: error 1.0e-03 > tolerance 1e-04".
  std::string failures() const;
};

}  // namespace lyre::parity
