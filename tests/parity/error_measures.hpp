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
};

// fp32: the numbers. fp32's unit roundoff is 6e-8; a forward through a few layers of
// d <= 96 dot products and a vocab <= 257 logsumexp stays well inside 1e-5; backward adds
// accumulation over tokens and the cancellations of the chain rule, hence 1e-4 (still 10x below
// a 0.1% wrong gradient). After three steps the parameters are mostly their identical starting
// values: with lr 1e-3 and weight std >= 0.02 the updates move a tensor by up to ~5% per step,
// so 1e-5 asks the updates to agree to ~1e-4 relative (with AdamW's eps chosen so that fp32
// itself stays inside it: see kAdamwJson in backend_comparison.hpp).
// bf16 (backend-cuda: bf16 compute, fp32 master weights and optimizer): bf16's unit roundoff is
// 2^-9 = 2e-3; ~10 roundings along a forward give logp 2e-2, backward's longer chains gradients
// 5e-2; the parameters carry bf16 error only in their updates, 1e-2. Untested until
// backend-cuda exists.
Tolerances tolerances(Precision precision);
const char* precision_name(Precision precision);

// The precision a backend trains in, by plugin name: backend-cuda bf16, every other fp32 (the
// strictest, for a backend this table does not know yet).
Precision training_precision(const std::string& plugin_name);

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
