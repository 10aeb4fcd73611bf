#include "model/test_hooks.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lyre/plugin.hpp"

namespace lyre::cpu {

std::optional<WrongGrad> wrong_grad_hook(const char* variable,
                                         const std::vector<ParameterInfo>& params) {
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string spec = value;
  const std::string where = std::string(variable) + "=\"" + spec + "\"";
  const size_t colon = spec.rfind(':');  // parameter names hold no ':'
  const std::string name = spec.substr(0, colon);
  WrongGrad hook;
  if (colon != std::string::npos) {
    const std::string text = spec.substr(colon + 1);
    char* end = nullptr;
    errno = 0;
    const double factor = std::strtod(text.c_str(), &end);
    if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(factor))
      throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                          where + ": factor \"" + text + "\" is not a finite number");
    hook.factor = static_cast<float>(factor);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].name == name) {
      hook.index = i;
      return hook;
    }
  }
  throw plugin::Error(
      LYRE_ERROR_INVALID_ARGUMENT,
      where + ": the model has no parameter named \"" + name +
          "\" (expected <parameter name>[:<factor>], e.g. model.norm.weight:1.001)");
}

}  // namespace lyre::cpu
